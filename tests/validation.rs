//! The validation table (shared with `moesim validate`): every case within its
//! tolerance of the published figure.

use moesim::validate::{builtin_cases, check_scenarios, run_cases, Case, FILES};

/// The built-in cases (the embedded `validation/*.toml`), in table order.
fn cases() -> Vec<Case> {
    builtin_cases().unwrap_or_else(|problems| panic!("{problems:#?}"))
}

#[test]
fn every_validation_case_is_within_tolerance_and_known_gaps_still_miss() {
    // One run of the whole table: every case within tolerance, every known
    // gap still missing (when one starts passing, the mechanism it lacked is
    // in: make it a real case), and the README's tables built from these rows.
    let mut failures = Vec::new();
    let all = cases();
    let results = run_cases(&all);
    for (case, r) in all.iter().zip(&results) {
        eprintln!(
            "{:<40} published {:>8.1} simulated {:>8.1?} error {:>6.1?}%",
            r.case, r.published, r.simulated, r.error_pct
        );
        if case.known_gap().is_some() {
            if r.simulated.is_none() {
                failures.push(format!("{}: known gap not computed: {:?}", r.case, r.failure));
            } else if r.pass {
                failures.push(format!("{} now passes: promote it to a real case", r.case));
            }
        } else if !r.pass {
            failures
                .push(format!("{}: published {} simulated {:?} ({:?})", r.case, r.published, r.simulated, r.failure));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    crate::readme::check_validation_regions(&all, &results);
}

#[test]
fn at_most_one_fitted_case_per_medium() {
    // One fitted case per parameter: the NVLink and the InfiniBand efficiency
    // (on DeepEP's line-rate kernels), and the per-SM channel rate of its
    // first (IBRC) kernels.
    let all = cases();
    let fitted: Vec<(&str, &str)> =
        all.iter().filter(|c| c.fitted()).map(|c| (c.metric.as_str(), c.name.as_str())).collect();
    let count =
        |metric: &str, prefix: &str| fitted.iter().filter(|(m, n)| *m == metric && n.starts_with(prefix)).count();
    assert_eq!(count("nvlink_gb_per_s", ""), 1);
    assert_eq!(count("rdma_gb_per_s", ""), 2);
    assert_eq!(count("rdma_gb_per_s", "deepep-normal-"), 1);
    assert_eq!(count("rdma_gb_per_s", "deepep-ibrc-"), 1);
}

#[test]
fn vidur_figures_match_the_measurements_in_shared_data() {
    // The published values of the vidur cases are the medians in the CSV,
    // read here in place (never copied into the repository).
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/microsoft+vidur/data/profiling/network/h100_dgx/all_reduce.csv"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: tests read ../shared beside the checkout");
    };
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (size, workers, median) = (col("size"), col("num_workers"), col("time_stats.all_reduce.median"));
    for case in cases().iter().filter(|c| c.name.starts_with("nccl-allreduce-8xh100")) {
        let bytes: f64 = case.sets.iter().find_map(|s| s.strip_prefix("workload.bytes=")).unwrap().parse().unwrap();
        let row = rdr_rows(&text)
            .into_iter()
            .find(|r| r[workers] == *"8" && r[size].parse::<f64>().unwrap() == bytes)
            .unwrap();
        let ms: f64 = row[median].parse().unwrap();
        let busbw = bytes / (ms * 1e-3) / 1e9 * 2.0 * 7.0 / 8.0;
        assert!((busbw - case.published).abs() < 0.01, "{}: CSV gives {busbw}", case.name);
    }
}

#[test]
fn day6_replay_scales_come_from_the_trace_and_day6() {
    // The day-6 prefill replay scales the Azure conversation trace's prompt
    // and output lengths by a and b so that (1) input:output tokens = 608B :
    // 168B and (2) the KV length per output token, sum o (a p + b o / 2) /
    // sum o, is 4,989 (o's own tokens counted half, as they arrive). Read
    // in place; the case's factors must be these.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/Azure+AzurePublicDataset/data/AzureLLMInferenceTrace_conv.csv"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: tests read ../shared beside the checkout");
    };
    let rows = rdr_rows(&text);
    let (mut sp, mut so, mut sop, mut soo) = (0.0, 0.0, 0.0, 0.0);
    for r in &rows {
        let (p, o): (f64, f64) = (r[1].parse().unwrap(), r[2].parse().unwrap());
        (sp, so, sop, soo) = (sp + p, so + o, sop + o * p, soo + o * o);
    }
    // The nearest ratio of the three traces (Mooncake 35, Azure code 73).
    assert!((sp / so - 5.47).abs() < 0.01, "{}", sp / so);
    let ratio = 608.0 / 168.0 * so / sp; // a / b
    let b = 4989.0 / (ratio * sop / so + soo / so / 2.0);
    let a = ratio * b;
    let all = cases();
    let case = all.iter().find(|c| c.name == "deepseek-v3-day6-prefill-tokens-per-node").unwrap();
    let set = |key: &str| -> f64 { case.sets.iter().find_map(|s| s.strip_prefix(key)).unwrap().parse().unwrap() };
    assert!((set("workload.input_scale=") - a).abs() < 5e-4, "a = {a}, b = {b}");
    assert!((set("workload.output_scale=") - b).abs() < 5e-4, "b = {b}");
    assert_eq!(set("workload.cache_hit_ratio="), 0.563);
}

#[test]
fn vidur_send_recv_figures_match_the_measurements_in_shared_data() {
    // 2 GPUs of one node: bytes over the mean of the matching rows' median
    // times, read in place.
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/microsoft+vidur/data/profiling/network/h100_dgx/send_recv.csv"
    );
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: tests read ../shared beside the checkout");
    };
    let rows = rdr_rows(&text);
    for case in cases().iter().filter(|c| c.name.starts_with("nccl-sendrecv-2xh100")) {
        let bytes: f64 = case.sets.iter().find_map(|s| s.strip_prefix("workload.bytes=")).unwrap().parse().unwrap();
        // Columns: index, min, max, mean, median, std, rank, num_workers, size, collective, devices_per_node.
        let ms: Vec<f64> = rows
            .iter()
            .filter(|r| &r[7] == "2" && &r[10] == "2" && r[8].parse::<f64>().unwrap() == bytes)
            .map(|r| r[4].parse().unwrap())
            .collect();
        assert!(!ms.is_empty(), "{}: no rows", case.name);
        let gbps = bytes / (ms.iter().sum::<f64>() / ms.len() as f64 * 1e-3) / 1e9;
        assert!((gbps - case.published).abs() < 0.01, "{}: CSV gives {gbps}", case.name);
    }
}

fn rdr_rows(text: &str) -> Vec<csv::StringRecord> {
    csv::Reader::from_reader(text.as_bytes()).records().map(|r| r.unwrap()).collect()
}

#[test]
fn profile_figure_matches_the_trace_in_shared_data() {
    // The F&B chunk pair's GPU time is the span of the kernels in DeepSeek's
    // profile, read here in place.
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data/deepseek-ai+profile-data/train.json");
    let Ok(text) = std::fs::read_to_string(path) else {
        panic!("{path} is missing: tests read ../shared beside the checkout");
    };
    let trace: serde_json::Value = serde_json::from_str(&text).unwrap();
    let kernels: Vec<(f64, f64)> = trace["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["cat"] == "kernel")
        .map(|e| (e["ts"].as_f64().unwrap(), e["dur"].as_f64().unwrap()))
        .collect();
    let start = kernels.iter().map(|k| k.0).fold(f64::MAX, f64::min);
    let end = kernels.iter().map(|k| k.0 + k.1).fold(f64::MIN, f64::max);
    let all = cases();
    let case = all.iter().find(|c| c.name == "deepseek-v3-profile-fb-chunk-pair-ms").unwrap();
    assert!(((end - start) / 1e3 - case.published).abs() < 0.001, "trace span {} ms", (end - start) / 1e3);
}

#[test]
fn every_embedded_case_file_parses_and_names_are_unique() {
    // builtin_cases checks names across files; each file on its own too, so
    // that a broken file is named.
    for (name, text) in FILES {
        let cases = moesim::validate::parse_case_file(&format!("validation/{name}"), text, None, true)
            .unwrap_or_else(|problems| panic!("validation/{name}: {problems:#?}"));
        assert!(!cases.is_empty(), "validation/{name} has no cases");
    }
    let all = cases();
    let mut names: Vec<&str> = all.iter().map(|c| c.name.as_str()).collect();
    let n = names.len();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), n, "case names repeat");
    // The table keeps its order: DeepEP's normal kernels first, then the files in `FILES` order, the
    // Chakra comparisons with ASTRA-sim (issue 12) last.
    assert_eq!(all.first().unwrap().name, "deepep-normal-ep8-dispatch-nvlink");
    let first_chakra = all.iter().position(|c| c.name.starts_with("chakra-")).unwrap();
    assert!(all[first_chakra..].iter().all(|c| c.name.starts_with("chakra-")), "chakra.toml comes last");
}

#[test]
fn every_embedded_case_loads_its_scenario_with_its_overrides() {
    let problems = check_scenarios(&cases());
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_day6_replay_names_its_trace_as_data() {
    // The skip logic reads `data`; the trace the run reads must be in it.
    for case in cases() {
        for set in case.sets.iter().filter_map(|s| s.strip_prefix("workload.trace=")) {
            assert!(case.data.iter().any(|d| d.to_str() == Some(set)), "{}: {set} not in data", case.name);
        }
    }
}
