//! Serving speed and memory at DeepSeek's scale: day 6's average load
//! (1,718 requests/s of 4,096 + 1,100 tokens) on DeepSeek's deployment (24
//! prefill units of 4 nodes, 8 decode units of 18 nodes), for
//! `MOESIM_BENCH_SERVING_HOURS` simulated hours (default 1; 24 is the whole
//! day, about 148M requests), with `requests.csv` streamed to a scratch file
//! (removed after) unless `MOESIM_BENCH_SERVING_CSV=0`. Prints wall time,
//! requests and events per second, the most requests in the system at once
//! and the process's peak resident memory (Linux). Env-gated, not criterion:
//! one run is minutes.
//!
//! `cargo bench --bench serving_day`
//! `MOESIM_BENCH_SERVING_HOURS=24 cargo bench --bench serving_day`

use std::path::Path;
use std::time::Instant;

use moesim::workloads::RunOptions;
use moesim::ScenarioRef;

fn main() {
    let hours: f64 = std::env::var("MOESIM_BENCH_SERVING_HOURS").ok().and_then(|v| v.parse().ok()).unwrap_or(1.0);
    let csv = std::env::var("MOESIM_BENCH_SERVING_CSV").map_or(true, |v| v != "0");
    let sets: Vec<String> = [
        "workload.rate_per_s=1718".to_owned(),
        format!("workload.duration_s={}", hours * 3600.0),
        "workload.prefill_units=24".to_owned(),
        "workload.decode_units=8".to_owned(),
    ]
    .to_vec();
    let options = RunOptions {
        figures: csv,
        spool_dir: Some(Path::new(env!("CARGO_TARGET_TMPDIR")).join("serving-day-spool")),
        ..RunOptions::default()
    };
    let scenario = ScenarioRef::parse("deepseek-v3-serving-h800").unwrap_or_else(|_| panic!("built in"));
    let t0 = Instant::now();
    let (summary, outcome) = moesim::run_scenario(&scenario, &sets, &options).unwrap_or_else(|_| panic!("runs"));
    let wall_s = t0.elapsed().as_secs_f64();
    let get = |k: &str| summary.get(k).and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
    let requests = get("requests");
    let rss = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .unwrap_or_else(|| "VmHWM: unknown".into());
    println!(
        "serving_day: {hours} h at 1,718 req/s on 24 + 8 units: {requests:.0} requests, {} events in {wall_s:.1} s \
         wall ({:.0} requests/s); peak {:.0} requests in the system; p99 TTFT {:.1} ms, p99 TPOT {:.2} ms; \
         requests.csv {}; peak memory {}",
        outcome.result.events,
        requests / wall_s,
        get("peak_requests_in_system"),
        get("ttft_p99_ms"),
        get("tpot_p99_ms"),
        if csv { "streamed" } else { "not written" },
        rss.trim_start_matches("VmHWM:").trim()
    );
}
