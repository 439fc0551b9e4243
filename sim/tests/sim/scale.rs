//! Timing of the large all-to-all (ignored by default; run in release):
//! `MOESIM_A2A_GPUS=4096 cargo test -p moesim-sim --release -- --ignored --nocapture`.

use std::time::Instant;

use moesim_sim::*;

use crate::fabric::{peak_rss_kib, Fabric};

#[test]
#[ignore]
fn all_to_all_at_scale() {
    let gpus: u32 = std::env::var("MOESIM_A2A_GPUS").ok().and_then(|s| s.parse().ok()).unwrap_or(4096);
    let t0 = Instant::now();
    let fabric = Fabric::new(gpus);
    let graph = fabric.all_to_all(256.0);
    let built = t0.elapsed();
    let t1 = Instant::now();
    let r = run(&fabric.platform, &graph, &EngineOptions::default(), &mut Quiet).expect("run");
    let ran = t1.elapsed();
    let flows = graph.flows().len();
    eprintln!(
        "all-to-all {gpus} GPUs, {flows} flows, {} links: build {:.2} s, run {:.2} s, {} events, end {}, peak RSS {} MiB",
        fabric.platform.links.len(),
        built.as_secs_f64(),
        ran.as_secs_f64(),
        r.events,
        r.end,
        peak_rss_kib().unwrap_or(0) / 1024
    );
    let total: f64 = graph.flows().iter().map(|f| f.bytes * graph.path(f.path).len() as f64).sum();
    let carried: f64 = r.links.iter().map(|l| l.bytes).sum();
    assert!((total - carried).abs() <= 1e-9 * total);
}
