//! Request-level serving: the real traces in `../shared/data` read as
//! published, a serving run end to end (percentiles, throughput, cost,
//! per-request CSV and CDF plots), determinism, and the capacity search.

use moesim::workloads::traces::{read_trace, TraceFormat};

use crate::common::*;

const MOONCAKE: &str = "../shared/data/kvcache-ai+Mooncake/FAST25-release/traces/conversation_trace.jsonl";
const AZURE_CONV: &str = "../shared/data/Azure+AzurePublicDataset/data/AzureLLMInferenceTrace_conv.csv";
const AZURE_CODE: &str = "../shared/data/Azure+AzurePublicDataset/data/AzureLLMInferenceTrace_code.csv";

fn f(v: &serde_json::Value, k: &str) -> f64 {
    v[k].as_f64().unwrap_or_else(|| panic!("no metric {k} in {v}"))
}

fn path(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `moesim run deepseek-v3-serving-h800` on the Mooncake trace's own
/// arrivals, with `sets` (each `key=value`) on top.
fn serve_mooncake(sets: &[&str]) -> serde_json::Value {
    let trace = format!("workload.trace={}", path(MOONCAKE).display());
    let mut args = vec!["deepseek-v3-serving-h800", "--set", &trace, "--set", "workload.arrivals=trace"];
    for s in sets {
        args.extend(["--set", s]);
    }
    run_json(&args)
}

#[test]
fn the_shared_traces_read_as_published() {
    let conv = read_trace(&path(AZURE_CONV), None).unwrap();
    let code = read_trace(&path(AZURE_CODE), None).unwrap();
    let moon = read_trace(&path(MOONCAKE), None).unwrap();
    assert_eq!((conv.rows.len(), code.rows.len(), moon.rows.len()), (19_366, 8_819, 12_031));
    assert_eq!(conv.format, TraceFormat::AzureCsv);
    // About an hour each, starting at 0.
    for t in [&conv, &code, &moon] {
        let last = t.rows.last().unwrap().timestamp_s;
        assert_eq!(t.rows[0].timestamp_s, 0.0);
        assert!((3400.0..3600.0).contains(&last), "{}: {last}", t.origin);
    }
    // Mooncake: the last request at 3,536,999 ms; one 512-token block id per started block.
    assert!((moon.rows.last().unwrap().timestamp_s - 3536.999).abs() < 1e-9);
    assert!(moon.rows.iter().all(|r| r.block_ids.len() as u64 == r.input_len.div_ceil(512)));
    let input: u64 = moon.rows.iter().map(|r| r.input_len).sum();
    let share = |blocks: Option<usize>| {
        let cached: u64 = moon.cached_tokens(blocks.and_then(std::num::NonZeroUsize::new)).iter().sum();
        cached as f64 / input as f64
    };
    let unbounded = share(None);
    assert!((0.3..0.5).contains(&unbounded), "prefix-cache share {unbounded}");
    // A bounded (LRU) cache finds less, more as it grows, and all of it
    // once it holds every block the hour stores.
    let bounded: Vec<f64> = [1_000, 10_000, 100_000, 10_000_000].into_iter().map(|b| share(Some(b))).collect();
    assert!(bounded[0] < 0.5 * unbounded, "{bounded:?}");
    assert!(bounded.windows(2).all(|w| w[0] <= w[1]), "{bounded:?}");
    assert_eq!(bounded[3], unbounded);
}

#[test]
fn serving_reports_percentiles_throughput_cost_and_writes_requests_and_cdfs() {
    let dir = scratch("serving_out");
    let o = moesim(&[
        "run",
        "deepseek-v3-serving-h800",
        "--set",
        "workload.duration_s=30",
        "--out",
        dir.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let m: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for k in ["ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p90_ms", "tpot_p99_ms"] {
        assert!(f(&m, k) > 0.0, "{k}");
    }
    assert!(f(&m, "ttft_p50_ms") <= f(&m, "ttft_p90_ms") && f(&m, "ttft_p90_ms") <= f(&m, "ttft_p99_ms"));
    assert!((0.0..=1.0).contains(&f(&m, "slo_attainment")));
    let requests = f(&m, "requests");
    assert!((requests - 6000.0).abs() < 300.0, "Poisson at 200/s for 30 s: {requests}");
    // Throughput per node: tokens over the run over the nodes.
    let span = f(&m, "makespan_s");
    assert!((f(&m, "output_tokens_per_s_per_decode_node") - requests * 1100.0 / span / 18.0).abs() < 1.0);
    // Cost: GPU-hours x price per million output tokens.
    let gpu_hours = (4.0 * 32.0 + 144.0) * span / 3600.0;
    assert!((f(&m, "gpu_hours") / gpu_hours - 1.0).abs() < 1e-6);
    let usd = gpu_hours * 2.0 / (requests * 1100.0 / 1e6);
    assert!((f(&m, "usd_per_million_output_tokens") / usd - 1.0).abs() < 1e-6);
    let csv = std::fs::read_to_string(dir.join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count() as f64, requests + 1.0);
    assert!(csv.starts_with("request,arrival_ms,"));
    for name in ["ttft_cdf.png", "ttft_cdf.svg", "tpot_cdf.png", "tpot_cdf.svg"] {
        assert!(std::fs::metadata(dir.join(name)).unwrap().len() > 1000, "{name}");
    }
}

#[test]
fn a_trace_serves_its_own_arrivals_and_block_id_cache_hits() {
    let m = serve_mooncake(&["workload.duration_s=300", "workload.prefill_units=8"]);
    let moon = read_trace(&path(MOONCAKE), None).unwrap();
    let arrived = moon.rows.iter().filter(|r| r.timestamp_s <= 300.0).count();
    // Requests longer than the model's context are left out with a warning.
    let too_long = moon.rows.iter().filter(|r| r.timestamp_s <= 300.0 && r.input_len + r.output_len > 131_072).count();
    assert_eq!(f(&m, "requests") as usize, arrived - too_long);
    assert!(f(&m, "cached_input_fraction") > 0.2, "{m}");
    // 100 GiB of KV holds 2,984 of V3's 34.3 MiB blocks: fewer hits.
    let small =
        serve_mooncake(&["workload.duration_s=300", "workload.prefill_units=8", "workload.prefix_cache_gib=100"]);
    assert!(f(&small, "cached_input_fraction") < 0.5 * f(&m, "cached_input_fraction"), "{small}");
    // Less than one block is an error naming the key.
    let trace = format!("workload.trace={}", path(MOONCAKE).display());
    let o = moesim(&["run", "deepseek-v3-serving-h800", "--set", &trace, "--set", "workload.prefix_cache_gib=0.01"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("workload.prefix_cache_gib: 0.01 GiB holds no 512-token block"), "{}", stderr(&o));
}

#[test]
fn serving_is_deterministic() {
    let args = ["deepseek-v3-serving-h800", "--set", "workload.duration_s=20"];
    let mut a = run_json(&args);
    let mut b = run_json(&args);
    a.as_object_mut().unwrap().remove("wall_s");
    b.as_object_mut().unwrap().remove("wall_s");
    assert_eq!(a, b);
    // A trace with every scheduler option on: time-bounded chunks, context
    // parallelism, a bounded prefix cache.
    let sets = [
        "workload.duration_s=120",
        "workload.prefill.chunking=time",
        "workload.prefill.context_parallel=4",
        "workload.prefix_cache_gib=300",
    ];
    let mut a = serve_mooncake(&sets);
    let mut b = serve_mooncake(&sets);
    a.as_object_mut().unwrap().remove("wall_s");
    b.as_object_mut().unwrap().remove("wall_s");
    assert_eq!(a, b);
}

#[test]
fn plan_finds_the_fewest_nodes_and_prints_its_frontier() {
    let o = moesim(&[
        "plan",
        "deepseek-v3-serving-h800",
        "--rate",
        "100",
        "--ttft-p99-ms",
        "3000",
        "--tpot-p99-ms",
        "60",
        "--duration-s",
        "60",
        "--format",
        "json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let best = &p["best"];
    assert!(best["meets"].as_bool().unwrap());
    let nodes = best["nodes"].as_u64().unwrap();
    assert_eq!(nodes, best["prefill_units"].as_u64().unwrap() * 4 + best["decode_units"].as_u64().unwrap() * 18);
    // No explored point that meets the targets has fewer nodes.
    for pt in p["explored"].as_array().unwrap() {
        if pt["meets"].as_bool().unwrap() {
            assert!(pt["nodes"].as_u64().unwrap() >= nodes, "{pt}");
        }
    }
    // One unit fewer of either kind misses (when it exists).
    let (pu, du) = (best["prefill_units"].as_u64().unwrap(), best["decode_units"].as_u64().unwrap());
    for pt in p["explored"].as_array().unwrap() {
        let (a, b) = (pt["prefill_units"].as_u64().unwrap(), pt["decode_units"].as_u64().unwrap());
        if (a + 1 == pu && b == du) || (a == pu && b + 1 == du) {
            assert!(!pt["meets"].as_bool().unwrap(), "{pt}");
        }
    }
}

#[test]
fn more_prefill_units_never_lengthen_the_first_token() {
    // DeepSeek's day-6 average load (1,718 requests/s) for 20 s: with the
    // scheduler sending each request where its first token comes soonest,
    // p99 TTFT falls as prefill units are added, down to about one
    // small-batch iteration (~0.3 s).
    let ttft = |units: u32| {
        let pu = format!("workload.prefill_units={units}");
        let m = run_json(&[
            "deepseek-v3-serving-h800",
            "--set",
            "workload.rate_per_s=1718",
            "--set",
            "workload.duration_s=20",
            "--set",
            "workload.output_len=64",
            "--set",
            "workload.decode_units=4",
            "--set",
            &pu,
        ]);
        f(&m, "ttft_p99_ms")
    };
    let p99: Vec<f64> = [16, 24, 48].into_iter().map(ttft).collect();
    assert!(p99.windows(2).all(|w| w[1] <= w[0] * 1.02), "{p99:?}");
    assert!(p99[2] < 700.0, "{p99:?}");
}

#[test]
fn time_bounded_chunking_serves_a_long_prompt_trace_faster_at_saturation() {
    // The first 300 s of the Mooncake trace (927 requests, prompts up to
    // 126K tokens) arriving 50 times faster on one prefill unit. Chunked by
    // tokens alone, a 16K chunk deep in a long prompt holds the unit's 32
    // GPUs for seconds at every layer; bounded in time it is cut shorter.
    let run = |chunking: &str| {
        let chunking = format!("workload.prefill.chunking={chunking}");
        serve_mooncake(&["workload.time_scale=0.02", "workload.duration_s=6", "workload.prefill_units=1", &chunking])
    };
    let (tokens, time) = (run("tokens"), run("time"));
    assert_eq!(f(&tokens, "requests"), f(&time, "requests"));
    assert_eq!(f(&tokens, "input_tokens"), f(&time, "input_tokens"));
    // Both saturate the unit; bounded in time it gets through the same
    // prompts in much less time (measured: 10.5k vs 19.3k input tokens/s
    // per prefill node, p50 TTFT 135 vs 53 s).
    assert!(f(&tokens, "prefill_busy_fraction") > 0.95 && f(&time, "prefill_busy_fraction") > 0.9);
    let k = "input_tokens_per_s_per_prefill_node";
    assert!(f(&time, k) > 1.5 * f(&tokens, k), "{} vs {}", f(&time, k), f(&tokens, k));
    assert!(f(&time, "ttft_p50_ms") < 0.5 * f(&tokens, "ttft_p50_ms"));
}

#[test]
fn trace_lengths_scale_and_only_with_a_trace() {
    // The Azure conversation trace's first minute, as it is and with
    // prompts x2 and outputs x3: the same requests, the tokens scaled
    // (each length rounded on its own).
    let run = |sets: &[&str]| {
        let trace = format!("workload.trace={}", path(AZURE_CONV).display());
        let mut args = vec!["deepseek-v3-serving-h800", "--set", &trace, "--set", "workload.duration_s=60"];
        for s in sets {
            args.extend(["--set", s]);
        }
        run_json(&args)
    };
    let (plain, scaled) = (run(&[]), run(&["workload.input_scale=2", "workload.output_scale=3"]));
    assert_eq!(f(&plain, "requests"), f(&scaled, "requests"));
    assert_eq!(f(&scaled, "input_tokens"), 2.0 * f(&plain, "input_tokens"));
    assert_eq!(f(&scaled, "output_tokens"), 3.0 * f(&plain, "output_tokens"));
    // Busy prefill time grows with the prompts: capacity per node stays near.
    let k = "prefill_capacity_input_tokens_per_s_per_node";
    assert!(f(&scaled, k) > 0.0 && f(&scaled, k) >= f(&scaled, "input_tokens_per_s_per_prefill_node"));
    let o = moesim(&["run", "deepseek-v3-serving-h800", "--set", "workload.input_scale=2"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("workload.input_scale: scales a trace's lengths"), "{}", stderr(&o));
}
