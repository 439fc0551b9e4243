//! Works from anywhere: built-in scenarios and validation cases that read the
//! real data (`../shared/data/...`) find it from any working directory, via
//! `$MOESIM_DATA` or, unset, the data folder beside the source tree; a
//! validation case skipped for want of its data fails `moesim validate`
//! unless `--allow-skip`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{scratch, stderr};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/data");
const CHAKRA: &str = "astra-sim+astra-sim/examples/workload/microbenchmarks/all_reduce/8npus_1MB/all_reduce.0.et";

/// `moesim ARGS` run in `cwd` with `MOESIM_DATA` set to `data` (or unset).
fn moesim_in(cwd: &Path, data: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moesim"));
    c.current_dir(cwd).args(args);
    match data {
        Some(d) => c.env("MOESIM_DATA", d),
        None => c.env_remove("MOESIM_DATA"),
    };
    c.output().expect("moesim runs")
}

fn have_data() -> bool {
    let there = Path::new(DATA).join(CHAKRA).exists();
    if !there {
        eprintln!("skipped: {DATA} is not there");
    }
    there
}

#[test]
fn builtin_scenarios_find_the_shared_data_from_any_directory() {
    if !have_data() {
        return;
    }
    let cwd = scratch("data-paths-cwd");
    let empty = scratch("data-paths-empty");
    // Unset: the data beside the source tree moesim was built from.
    let o = moesim_in(&cwd, None, &["run", "chakra-allreduce-8npus-switch", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Set: that folder, and only it.
    let o = moesim_in(&cwd, Some(Path::new(DATA)), &["run", "chakra-allreduce-8npus-switch", "--format", "json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["traces"][0].as_str().unwrap().starts_with(DATA), "{}", v["traces"]);
    let o = moesim_in(&cwd, Some(&empty), &["run", "chakra-allreduce-8npus-switch"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let expected: PathBuf = empty.join(CHAKRA);
    assert!(stderr(&o).contains(&expected.display().to_string()), "{}", stderr(&o));
}

#[test]
fn a_user_scenario_reads_its_trace_beside_itself_from_any_directory() {
    let dir = scratch("data-paths-user");
    let cwd = scratch("data-paths-user-cwd");
    std::fs::write(dir.join("t.csv"), "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.5,100,10\n")
        .unwrap();
    let file = dir.join("s.toml");
    let builtin = moesim_in(&cwd, None, &["scenarios", "show", "deepseek-v3-serving-h800"]);
    assert!(builtin.status.success(), "{}", stderr(&builtin));
    std::fs::write(&file, &builtin.stdout).unwrap();
    let o = moesim_in(
        &cwd,
        None,
        &[
            "run",
            file.to_str().unwrap(),
            "--set",
            "workload.trace=t.csv",
            "--set",
            "workload.arrivals=trace",
            "--format",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["requests"], 1, "{v}");
}

#[test]
fn validate_fails_on_cases_skipped_for_missing_data() {
    let cwd = scratch("data-paths-validate");
    let empty = scratch("data-paths-validate-empty");
    let o = moesim_in(&cwd, Some(&empty), &["validate", "--format", "json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let skipped: Vec<&serde_json::Value> = rows.iter().filter(|r| !r["skipped"].is_null()).collect();
    assert!(skipped.len() >= 5, "{skipped:?}");
    for r in &skipped {
        let why = r["skipped"].as_str().unwrap();
        assert!(why.contains(&empty.display().to_string()) && why.contains("MOESIM_DATA"), "{why}");
    }
    // Everything that did run passed (or is a known gap): only the skips fail it.
    assert!(rows.iter().all(|r| r["pass"] == true || !r["known_gap"].is_null() || !r["skipped"].is_null()));
}
