//! Full-scale benchmarks through the whole program (load, lower, simulate,
//! summarise): the direct 1 MiB all-to-all on DeepSeek's multi-plane
//! fat-tree, with throughput in flows (criterion's elements/s; the run's
//! flows re-rated and rate recomputations are printed once before it), and
//! the every-rank (`simulate = "all"`) DeepSeek-V3 step.
//!
//! `cargo bench --bench full_scale` runs the all-to-all at 1,024 GPUs only.
//! The long ones are behind environment variables:
//! - `MOESIM_BENCH_A2A_GPUS=1024,4096` — all-to-all sizes (multiples of 8);
//! - `MOESIM_BENCH_A2A_GROUPED_GPUS=4096,16384` — the same all-to-all with
//!   `workload.flow_grouping = "node-pair"` (weighted flows) at those sizes;
//! - `MOESIM_BENCH_ALL_RANKS_NODES=4` — the every-rank step of
//!   `deepseek-v3-chunk-256xh800` cut to that many 8-GPU nodes (EP16, PP2,
//!   4 layers, 1,024-token sequences, as `tests/training.rs`), and the
//!   representative-rank step beside it;
//! - `MOESIM_BENCH_ALL_RANKS_TOLERANCE=0.01` — those steps with
//!   `workload.flow_finish_tolerance` (default 0: exact).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use moesim::{run_scenario, ScenarioRef};

fn sizes(var: &str, default: &[u32]) -> Vec<u32> {
    match std::env::var(var) {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => default.to_vec(),
    }
}

fn alltoall(c: &mut Criterion) {
    alltoall_group(c, "alltoall_multi_plane_fat_tree", "MOESIM_BENCH_A2A_GPUS", &[1024], "exact");
    alltoall_group(c, "alltoall_multi_plane_fat_tree_grouped", "MOESIM_BENCH_A2A_GROUPED_GPUS", &[], "node-pair");
}

fn alltoall_group(c: &mut Criterion, name: &str, var: &str, default: &[u32], grouping: &str) {
    let gpus_list = sizes(var, default);
    if gpus_list.is_empty() {
        return;
    }
    let mut g = c.benchmark_group(name);
    g.sample_size(10);
    for gpus in gpus_list {
        let mut sets = vec![
            "topology.preset=multi-plane-fat-tree".to_owned(),
            format!("topology.nodes={}", gpus / 8),
            format!("workload.ranks={gpus}"),
        ];
        if grouping != "exact" {
            sets.push(format!("workload.flow_grouping=\"{grouping}\""));
        }
        let builtin = ScenarioRef::Builtin("alltoall-512xh800");
        let (_, outcome) = run_scenario(&builtin, &sets, &Default::default()).expect("runs");
        let r = &outcome.result;
        eprintln!(
            "all-to-all {gpus} GPUs ({grouping}): {} events, {} flows, {} rate recomputations, {} flows re-rated",
            r.events, r.flows_started, r.flow_recomputes, r.flows_rerated
        );
        g.throughput(Throughput::Elements(r.flows_started));
        g.bench_with_input(BenchmarkId::from_parameter(gpus), &sets, |b, sets| {
            b.iter(|| run_scenario(&builtin, sets, &Default::default()).expect("runs"))
        });
    }
    g.finish();
}

fn all_ranks(c: &mut Criterion) {
    let nodes = sizes("MOESIM_BENCH_ALL_RANKS_NODES", &[]);
    if nodes.is_empty() {
        return;
    }
    let tolerance = std::env::var("MOESIM_BENCH_ALL_RANKS_TOLERANCE").unwrap_or_else(|_| "0".into());
    let mut g = c.benchmark_group("training_step_all_ranks");
    g.sample_size(10);
    for n in nodes {
        for simulate in ["all", "representative"] {
            let sets: Vec<String> = [
                format!("topology.nodes={n}"),
                "model.layers=4".into(),
                "parallel.pp=2".into(),
                "parallel.ep=16".into(),
                "workload.seq_len=1024".into(),
                format!("workload.global_batch={}", 4 * n * 8 / 2),
                format!("workload.simulate={simulate}"),
                format!("workload.flow_finish_tolerance={tolerance}"),
            ]
            .into();
            let builtin = ScenarioRef::Builtin("deepseek-v3-chunk-256xh800");
            g.bench_with_input(BenchmarkId::new(simulate, n * 8), &sets, |b, sets| {
                b.iter(|| run_scenario(&builtin, sets, &Default::default()).expect("runs"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, alltoall, all_ranks);
criterion_main!(benches);
