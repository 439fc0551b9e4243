//! Engine benchmarks: event rate on delay/kernel chains, and the flow solver
//! on an all-to-all over a synthetic rail-optimised fat-tree.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
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
    }
    group.finish();
}

criterion_group!(benches, event_rate, flow_solver);
criterion_main!(benches);
