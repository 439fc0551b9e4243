//! `moesim plan` on a training scenario: the search's counts add up, every
//! simulated plan's step is at least its lower bound, the best plan's
//! scenario file runs to the step the search reported, and the frontier is
//! plotted.

use crate::common::{moesim, run_json, scratch, stderr};

const SMALL: &str = r#"name = "v2lite-16xh800"
seed = 1
[hardware]
device = "h800"
[topology]
preset = "h800-cluster"
nodes = 2
[model]
preset = "deepseek-v2-lite"
[parallel]
tp = 1
pp = 2
ep = 8
zero = 1
schedule = "1f1b"
[workload]
kind = "training"
seq_len = 2048
global_batch = 32
precision = "bf16"
# Not the defaults: the search simulates with the scenario's own (the best
# plan's file, which keeps them, runs to the step the search reported).
ep_lateness = 0.3
[workload.launch_gaps]
other_us = 5.0
"#;

#[test]
fn training_plan_search_prunes_simulates_and_writes_the_best_plan() {
    let dir = scratch("plan_training");
    let file = dir.join("small.toml");
    std::fs::write(&file, SMALL).unwrap();
    let out = dir.join("out");
    let o = moesim(&[
        "plan",
        file.to_str().unwrap(),
        "--tokens",
        "1e9",
        "--max-gpus",
        "8",
        "--format",
        "json",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let n = |k: &str| v[k].as_u64().unwrap();
    assert!(n("candidates") >= 500, "{v}");
    let csv = std::fs::read_to_string(out.join("plans.csv")).unwrap();
    let rows: Vec<Vec<&str>> = csv.lines().skip(1).map(|l| l.split(',').collect()).collect();
    assert_eq!(rows.len() as u64, n("candidates"));
    let status = |s: &str| rows.iter().filter(|r| r[11] == s).count() as u64;
    assert!(status("simulated") > 0 && status("simulated") <= n("simulated"), "{v}");
    assert_eq!(status("invalid"), n("invalid"));
    assert!(n("pruned") > 0 && n("invalid") > 0, "{v}");
    // A simulated step is never shorter than its bound.
    for r in rows.iter().filter(|r| r[11] == "simulated") {
        let (bound, step): (f64, f64) = (r[12].parse().unwrap(), r[14].parse().unwrap());
        assert!(bound > 0.0 && step >= bound * (1.0 - 1e-9), "{r:?}");
    }
    // The best plan's file runs to the step the search reported.
    let best = &v["best"];
    let ran = run_json(&[out.join("plan_best.toml").to_str().unwrap()]);
    assert_eq!(ran["step_time_s"].as_f64(), best["step_s"].as_f64());
    assert_eq!(ran["gpus"].as_f64(), best["gpus"].as_f64());
    // The scenario's own plan (16 GPUs) was simulated as the reference.
    assert_eq!(v["reference"]["gpus"], 16);
    assert!(v["reference"]["step_s"].as_f64().is_some(), "{}", v["reference"]);
    assert!(std::fs::metadata(out.join("plan_frontier.png")).unwrap().len() > 10_000);
    assert!(std::fs::read_to_string(out.join("plan_frontier.svg")).unwrap().contains("Pareto frontier"));
    // Bad input names what is wrong.
    let o = moesim(&["plan", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--tokens"), "{}", stderr(&o));
    let o = moesim(&["plan", file.to_str().unwrap(), "--tokens=-1"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("positive number of tokens"), "{}", stderr(&o));
}
