//! Whole-run benchmarks: the default DeepSeek-V3 step on 2,048 H800 (load,
//! lower, simulate, summarise) and the small profile-conditions step.
//! `cargo bench --bench training_step`.

use criterion::{criterion_group, criterion_main, Criterion};
use moesim::{run_scenario, ScenarioRef};

fn steps(c: &mut Criterion) {
    let mut g = c.benchmark_group("training_step");
    g.sample_size(10);
    for name in ["deepseek-v3-chunk-256xh800", "deepseek-v3-pretrain-2048xh800"] {
        g.bench_function(name, |b| {
            b.iter(|| run_scenario(&ScenarioRef::Builtin(name), &[], &Default::default()).expect("runs"))
        });
    }
    g.finish();
}

criterion_group!(benches, steps);
criterion_main!(benches);
