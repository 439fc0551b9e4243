//! Engine benchmarks: the event rate on delay/kernel chains (events per
//! second), and the flow solver on an all-to-all over a synthetic
//! rail-optimised fat-tree, through the engine (flows per second) and alone
//! (the solver driven directly: starts, recomputes, completions), plus an
//! all-to-all whose ranks start one after another, so every start merges a
//! rank's flows into the running component (full recomputes of runs), and
//! rounds of small exchanges whose flows all have different sizes, so they
//! finish one by one and each completion re-fills a small component (the
//! every-rank training step's many small recomputes).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moesim_sim::flow::FlowSolver;
use moesim_sim::*;

#[path = "../tests/sim/fabric.rs"]
#[allow(dead_code)]
mod fabric;

/// 100k tasks: on each of 8 devices a stream alternating delays and kernels,
/// with a dependency to the next device's stream every 16 tasks.
fn chains(tasks: u32) -> (Platform, TaskGraph) {
    let mut p = Platform::default();
    let devices: Vec<DeviceId> = (0..8)
        .map(|i| p.add_device(DeviceResource { name: format!("gpu{i}"), units: 132, mem_bytes_per_s: 3.35e12 }))
        .collect();
    let mut g = TaskGraph::new();
    let streams: Vec<(StreamId, StreamId)> =
        (0..8).map(|i| (g.add_stream(i, "compute"), g.add_stream(i, "comm"))).collect();
    let mut last = [None; 8];
    for i in 0..tasks {
        let d = (i % 8) as usize;
        let (compute, comm) = streams[d];
        let t = if i % 2 == 0 {
            g.add_delay(compute, "launch", SimDuration::from_ns(2))
        } else {
            let units = if i % 6 == 1 { UnitDemand::Hold(20) } else { UnitDemand::Share { max_units: 132 } };
            let stream = if i % 6 == 1 { comm } else { compute };
            let kernel =
                Kernel { device: devices[d], compute: SimDuration::from_ns(5 + (i % 7) as u64), mem_bytes: 1e4, units };
            g.add_kernel(stream, "k", TaskClass::Compute, kernel)
        };
        if i % 16 == 0 {
            if let Some(prev) = last[(d + 7) % 8] {
                g.add_dep(prev, t);
            }
        }
        last[d] = Some(t);
    }
    (p, g)
}

fn event_rate(c: &mut Criterion) {
    let (p, g) = chains(100_000);
    let events = run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap().events;
    let mut group = c.benchmark_group("engine");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function("delay_kernel_chains_100k", |b| {
        b.iter(|| run(&p, &g, &EngineOptions::default(), &mut Quiet).unwrap())
    });
    group.finish();
}

/// Runs every flow of `g` from time zero on the solver alone; returns how
/// many finished.
fn solve_alone(p: &Platform, g: &TaskGraph) -> usize {
    let n = g.flows().len();
    let mut solver = FlowSolver::new(p, n, false);
    for (f, flow) in g.flows().iter().enumerate() {
        solver.start_flow(g, f as u32, flow.bytes);
    }
    let mut dues = Vec::new();
    solver.recompute(g, 0, &mut dues);
    let (mut finished, mut done) = (0, Vec::new());
    while let Some(due) = dues.pop() {
        done.clear();
        solver.complete_due(g, due, due.time, &mut done);
        finished += done.len();
        solver.recompute(g, due.time, &mut dues);
    }
    finished
}

/// The all-to-all of `f` with rank `r`'s sends starting at `r` x 100 ns.
fn staggered_all_to_all(f: &fabric::Fabric, bytes: f64) -> TaskGraph {
    let mut g = TaskGraph::new();
    let mut route = Vec::new();
    for src in 0..f.gpus {
        let s = g.add_stream(src, "comm");
        g.add_delay(s, "wait", SimDuration::from_ns(100 * u64::from(src)));
        let flows: Vec<Flow> = (0..f.gpus)
            .filter(|&d| d != src)
            .map(|dst| {
                f.route(src, dst, &mut route);
                Flow { path: g.add_path(&route), bytes }
            })
            .collect();
        g.add_comm(s, "all-to-all", flows, None);
    }
    g
}

/// `rounds` rounds, one after another on each GPU's stream, of all-to-alls
/// within groups of 8 GPUs of `f`; every flow of a round has its own size
/// (1-2 x `bytes`), so the flows of a group finish one by one.
fn small_exchanges(f: &fabric::Fabric, rounds: u32, bytes: f64) -> TaskGraph {
    let mut g = TaskGraph::new();
    let mut route = Vec::new();
    let streams: Vec<StreamId> = (0..f.gpus).map(|src| g.add_stream(src, "comm")).collect();
    for round in 0..rounds {
        for src in 0..f.gpus {
            // Groups shift with the round so they cross nodes differently.
            let base = (src / 8) * 8;
            let flows: Vec<Flow> = (0..8)
                .map(|k| base + (k + round) % 8)
                .filter(|&dst| dst != src)
                .map(|dst| {
                    f.route(src, dst, &mut route);
                    let size = 1.0 + f64::from((src * 31 + dst * 17 + round * 7) % 97) / 97.0;
                    Flow { path: g.add_path(&route), bytes: bytes * size }
                })
                .collect();
            g.add_comm(streams[src as usize], "exchange", flows, None);
        }
    }
    g
}

fn flow_solver(c: &mut Criterion) {
    let mut group = c.benchmark_group("flow_solver");
    group.sample_size(10);
    for gpus in [256u32, 1024] {
        let f = fabric::Fabric::new(gpus);
        let g = f.all_to_all(4096.0);
        group.throughput(Throughput::Elements(g.flows().len() as u64));
        group.bench_with_input(BenchmarkId::new("all_to_all", gpus), &g, |b, g| {
            b.iter(|| run(&f.platform, g, &EngineOptions::default(), &mut Quiet).unwrap())
        });
        group.bench_with_input(BenchmarkId::new("all_to_all_solver_alone", gpus), &g, |b, g| {
            b.iter(|| assert_eq!(solve_alone(&f.platform, g), g.flows().len()))
        });
    }
    let f = fabric::Fabric::new(128);
    let g = staggered_all_to_all(&f, 4096.0);
    group.throughput(Throughput::Elements(g.flows().len() as u64));
    group.bench_with_input(BenchmarkId::new("all_to_all_staggered", 128), &g, |b, g| {
        b.iter(|| run(&f.platform, g, &EngineOptions::default(), &mut Quiet).unwrap())
    });
    let f = fabric::Fabric::new(256);
    let g = small_exchanges(&f, 8, 1_048_576.0);
    group.throughput(Throughput::Elements(g.flows().len() as u64));
    group.bench_with_input(BenchmarkId::new("small_exchanges_one_by_one", 256), &g, |b, g| {
        b.iter(|| run(&f.platform, g, &EngineOptions::default(), &mut Quiet).unwrap())
    });
    group.finish();
}

criterion_group!(benches, event_rate, flow_solver);
criterion_main!(benches);
