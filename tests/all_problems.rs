//! All problems at once: independent problems in a scenario file, its
//! `--set`s and the device file it names are reported in one pass, each at
//! its own line or `--set` (never at the built-in file's line for a value a
//! `--set` gave).

use crate::common::{moesim, scratch, stderr};

/// The `error:` lines of a failed run (exit 2).
fn errors(args: &[&str]) -> Vec<String> {
    let o = moesim(args);
    assert_eq!(o.status.code(), Some(2), "moesim {args:?}: {}", stderr(&o));
    assert!(o.stdout.is_empty());
    stderr(&o).lines().filter(|l| l.starts_with("error: ")).map(str::to_owned).collect()
}

fn has(errors: &[String], needle: &str) {
    assert!(errors.iter().any(|e| e.contains(needle)), "no error with {needle:?} in {errors:#?}");
}

#[test]
fn type_errors_and_unknown_keys_in_every_table_are_reported_together() {
    let dir = scratch("all-problems-file");
    let file = dir.join("s.toml");
    std::fs::write(
        &file,
        "name = \"t\"\n\n[hardware]\ndevice = \"h800\"\nbogus = 1\n\n[topology]\npreset = \"h800-cluster\"\nnodes = \"two\"\nwhatever = 3\n\n[parallel]\ntp = \"x\"\n\n[workload]\nkind = \"collective\"\nop = \"all-reduce\"\nranks = \"16\"\nbytes = 1e6\nextra = 1\n",
    )
    .unwrap();
    let e = errors(&["run", file.to_str().unwrap()]);
    let f = file.to_str().unwrap();
    has(&e, &format!("{f}:5:9: hardware.bogus: unknown key"));
    has(&e, &format!("{f}:9:9: topology.nodes: invalid type"));
    has(&e, &format!("{f}:10:1: topology.whatever: unknown field"));
    has(&e, &format!("{f}:13:6: parallel.tp: invalid type"));
    has(&e, &format!("{f}:18:9: workload.ranks: invalid type"));
    has(&e, &format!("{f}:20:1: workload.extra: unknown field"));
    assert_eq!(e.len(), 6, "{e:#?}");
}

#[test]
fn every_bad_set_is_reported_at_its_set_beside_the_workload_problems() {
    let e = errors(&[
        "run",
        "allreduce-8xh800",
        "--set",
        "hardware.sms=-3",
        "--set",
        "hardware.hbm_gib=x",
        "--set",
        "workload.bytes=-1",
        "--set",
        "workload.nope=1",
    ]);
    has(&e, "builtin:allreduce-8xh800: --set hardware.sms=-3: hardware.sms: invalid value");
    has(&e, "builtin:allreduce-8xh800: --set hardware.hbm_gib=x: hardware.hbm_gib: invalid type");
    has(&e, "builtin:allreduce-8xh800: --set workload.nope=1: workload.nope: unknown field");
    let at_file_line = |l: &String| {
        l.split("builtin:allreduce-8xh800:").nth(1).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    };
    assert!(!e.iter().any(at_file_line), "a --set blamed on the file: {e:#?}");
    assert_eq!(e.len(), 3, "{e:#?}");
    // Without the type errors, the workload's own check is reported beside
    // the device's.
    let e = errors(&["run", "allreduce-8xh800", "--set", "hardware.sms=-3", "--set", "workload.bytes=-1"]);
    has(&e, "--set hardware.sms=-3: hardware.sms:");
    has(&e, "--set workload.bytes=-1: workload.bytes: expected a positive number of bytes");
}

#[test]
fn a_bad_device_file_is_located_in_that_file_beside_the_scenario_problems() {
    let dir = scratch("all-problems-device");
    let device = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/presets/devices/h800.toml"))
        .unwrap()
        .replacen("\nsms = 132", "\nsms = \"many\"", 1);
    assert!(device.contains("sms = \"many\""));
    std::fs::write(dir.join("dev.toml"), device).unwrap();
    let scenario = moesim(&["scenarios", "show", "allreduce-8xh800"]).stdout;
    let scenario = String::from_utf8(scenario).unwrap().replace("device = \"h800\"", "device = \"dev.toml\"");
    std::fs::write(dir.join("s.toml"), scenario).unwrap();
    let e = errors(&["run", dir.join("s.toml").to_str().unwrap(), "--set", "workload.bytes=0"]);
    has(&e, &format!("{}:", dir.join("dev.toml").display()));
    has(&e, "sms: invalid type: string \"many\"");
    has(&e, "--set workload.bytes=0: workload.bytes:");
}

#[test]
fn plan_and_sweep_arguments_are_reported_with_the_scenario_problems() {
    let e = errors(&[
        "plan",
        "deepseek-v3-serving-h800",
        "--rate=-1",
        "--ttft-p99-ms",
        "0",
        "--tpot-p99-ms",
        "50",
        "--set",
        "hardware.sms=x",
    ]);
    has(&e, "moesim plan: --rate: expected a positive number, found -1");
    has(&e, "moesim plan: --ttft-p99-ms: expected a positive number, found 0");
    has(&e, "--set hardware.sms=x: hardware.sms: invalid type");
    let e = errors(&["sweep", "allreduce-8xh800", "--vary", "nope", "--vary", "x=", "--max-memory-gib=-1"]);
    has(&e, "--vary: nope: expected KEY=V1,V2,...");
    has(&e, "--vary: x=: an empty value");
    has(&e, "--max-memory-gib: expected a positive number of GiB");
    // No point can run: each --set's problem once, not the first point's only.
    let e = errors(&[
        "sweep",
        "allreduce-8xh800",
        "--vary",
        "workload.bytes=1,2",
        "--set",
        "workload.algorithm=3",
        "--set",
        "hardware.sms=x",
    ]);
    assert_eq!(e.len(), 2, "{e:#?}");
    has(&e, "--set workload.algorithm=3: workload.algorithm: invalid type");
    has(&e, "--set hardware.sms=x: hardware.sms: invalid type");
}
