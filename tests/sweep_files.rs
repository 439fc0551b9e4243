//! Sweep files, resumable results, shards and `moesim merge`: a killed
//! sweep resumed, and a sharded one merged, end with the bytes of an
//! uninterrupted run.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{moesim, scratch, stderr};

/// Every file of a folder (recursively) and its bytes.
pub fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if p.is_dir() {
            for (k, v) in files(&p) {
                out.insert(format!("{name}/{k}"), v);
            }
        } else {
            out.insert(name, std::fs::read(&p).unwrap());
        }
    }
    out
}

pub const QUICK_SWEEP: &str = r#"scenario = "allreduce-8xh800"
metrics = ["busbw_gb_per_s", "time_us"]

[[grid]]
key = "hardware.device"
values = ["h800", "h100"]

[[zip]]
key = "workload.bytes"
values = [1048576, 16777216, 67108864]
[[zip]]
key = "workload.algorithm"
values = ["ring", "ring", "tree"]
"#;

#[test]
fn sharded_sweep_merges_into_the_unsharded_bytes() {
    let dir = scratch("sweepfile_shards");
    let file = dir.join("quick.toml");
    std::fs::write(&file, QUICK_SWEEP).unwrap();
    let f = file.to_str().unwrap();
    let whole = dir.join("whole");
    let o = moesim(&["sweep", f, "--out", whole.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let csv = std::fs::read_to_string(whole.join("sweep.csv")).unwrap();
    assert!(csv.starts_with("hardware.device,workload.bytes,workload.algorithm,"), "{csv}");
    assert_eq!(csv.lines().count(), 7);
    assert!(whole.join("sweep_busbw_gb_per_s.png").exists() && whole.join("sweep_time_us.svg").exists());
    let mut shard_dirs = Vec::new();
    for i in 0..4 {
        let d = dir.join(format!("shard-{i}"));
        let o = moesim(&["sweep", f, "--shard", &format!("{i}/4"), "--out", d.to_str().unwrap()]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(!d.join("sweep.csv").exists(), "a shard alone builds no table");
        shard_dirs.push(d.to_str().unwrap().to_owned());
    }
    // Three shards are not the whole sweep.
    let merged = dir.join("merged");
    let mut args = vec!["merge"];
    args.extend(shard_dirs[..3].iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = moesim(&args);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("1 of the sweep's 6 points are in none of the folders (points 3)"), "{}", stderr(&o));
    let mut args = vec!["merge"];
    args.extend(shard_dirs.iter().map(String::as_str));
    args.extend(["--out", merged.to_str().unwrap()]);
    let o = moesim(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files(&merged), files(&whole));
    // A folder of another sweep is refused by name.
    let other = dir.join("other");
    let o = moesim(&["sweep", "allreduce-8xh800", "--vary", "workload.bytes=1024", "--out", other.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = moesim(&["merge", &shard_dirs[0], other.to_str().unwrap(), "--out", merged.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("another sweep"), "{}", stderr(&o));
}

#[test]
fn shard_comes_from_the_scheduler_environment() {
    let dir = scratch("sweepfile_env");
    let file = dir.join("quick.toml");
    std::fs::write(&file, QUICK_SWEEP).unwrap();
    let run = |vars: &[(&str, &str)], out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_moesim"));
        c.args(["sweep", file.to_str().unwrap(), "--format", "json", "--out", dir.join(out).to_str().unwrap()]);
        for v in ["SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "JOB_COMPLETION_INDEX", "MOESIM_SHARDS"] {
            c.env_remove(v);
        }
        c.envs(vars.iter().copied());
        c.output().unwrap()
    };
    let o = run(&[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "3")], "slurm");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    // Points 1 and 4 of 6: (h800, 16 MiB) and (h100, 16 MiB).
    let pts = v["points"].as_array().unwrap();
    assert_eq!(pts.len(), 2);
    assert_eq!((pts[0]["hardware.device"].as_str(), pts[1]["hardware.device"].as_str()), (Some("h800"), Some("h100")));
    assert!(pts.iter().all(|p| p["workload.bytes"] == "16777216"));
    let o = run(&[("JOB_COMPLETION_INDEX", "2"), ("MOESIM_SHARDS", "3")], "k8s");
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["points"].as_array().unwrap()[0]["workload.bytes"], "67108864");
    let o = run(&[("JOB_COMPLETION_INDEX", "2")], "bad");
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("MOESIM_SHARDS"), "{}", stderr(&o));
}

#[test]
fn a_killed_sweep_resumes_to_the_same_bytes() {
    let dir = scratch("sweepfile_resume");
    let file = dir.join("slow.toml");
    // Six points of about half a second each (debug build, one thread).
    std::fs::write(
        &file,
        "scenario = \"pipeline-1f1b\"\nmetrics = [\"step_time_us\"]\n[[grid]]\nkey = \"workload.microbatches\"\n\
         values = [16000, 16001, 16002, 16003, 16004, 16005]\n",
    )
    .unwrap();
    let sweep = |out: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_moesim"));
        c.args(["sweep", file.to_str().unwrap(), "--out", out.to_str().unwrap()]).env("RAYON_NUM_THREADS", "1");
        c
    };
    let whole = dir.join("whole");
    let o = sweep(&whole).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let resumed = dir.join("resumed");
    let mut child = sweep(&resumed).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let results = resumed.join("results.jsonl");
    let started = Instant::now();
    loop {
        let lines = std::fs::read_to_string(&results).map(|t| t.lines().count()).unwrap_or(0);
        if lines >= 2 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "no point finished in 2 minutes");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let text = std::fs::read_to_string(&results).unwrap();
    let finished = text.lines().count() - 1;
    assert!((1..6).contains(&finished), "killed after {finished} points");
    assert!(!resumed.join("sweep.csv").exists());
    // A write torn by the kill: half a line at the end.
    std::fs::write(&results, format!("{text}{{\"point\":5,\"values\":[\"160")).unwrap();
    let o = sweep(&resumed).output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let ran = String::from_utf8_lossy(&o.stderr).matches(" done (").count();
    assert_eq!(ran, 6 - finished, "only the unfinished points run again: {}", stderr(&o));
    assert_eq!(files(&resumed), files(&whole));
    // Run again on a finished folder: nothing to do, same bytes.
    let o = sweep(&resumed).output().unwrap();
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stderr).matches(" done (").count(), 0);
    assert_eq!(files(&resumed), files(&whole));
}

#[test]
fn emitted_jobs_name_every_shard() {
    let dir = scratch("sweepfile_emit");
    let file = dir.join("quick.toml");
    std::fs::write(&file, QUICK_SWEEP).unwrap();
    let f = file.to_str().unwrap();
    let o = moesim(&["sweep", f, "--emit", "slurm", "--shards", "4", "--out", dir.join("o").to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let script = String::from_utf8(o.stdout).unwrap();
    assert!(script.starts_with("#!/bin/bash\n") && script.contains("#SBATCH --array=0-3\n"), "{script}");
    assert!(script.contains("/shard-\"$SLURM_ARRAY_TASK_ID\""), "{script}");
    for (args, want) in [
        (vec!["--emit", "slurm"], "--emit slurm needs the folder"),
        (vec!["--emit", "k8s"], "--image"),
        (vec!["--emit", "k8s", "--image", "x", "--shards", "7"], "expected 1 to 6"),
    ] {
        let mut all = vec!["sweep", f];
        all.extend(args);
        let o = moesim(&all);
        assert_eq!(o.status.code(), Some(2), "{all:?}");
        assert!(stderr(&o).contains(want), "{all:?}: {}", stderr(&o));
    }
    let o = moesim(&["sweep", "allreduce-8xh800", "--vary", "workload.bytes=1024", "--emit", "k8s", "--image", "x"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("expected a sweep file"), "{}", stderr(&o));
}
