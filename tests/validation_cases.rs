//! `moesim validate --cases`: a user's own case files run after the built-in
//! table with the same columns and exit status, and bad case files are exit 2
//! naming file:line.

use std::path::{Path, PathBuf};

use crate::common::*;

/// A scratch folder under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("moesim-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One case: a 64 MiB all-reduce on one H800 node (auto: NVLS; moesim: 188.0 GB/s busbw).
const NODE_CASE: &str = r#"# An all-reduce measured on our node.
[[case]]
name = "our-allreduce-8xh800-64mib"
source = "nccl-tests on our node"
scenario = "allreduce-8xh800"
sets = ["workload.bytes=67108864"]
metric = "busbw_gb_per_s"
unit = "GB/s"
published = 188.0
tolerance = 0.05
"#;

#[test]
fn user_cases_from_a_folder_pass_and_follow_the_built_in_rows() {
    let dir = TempDir::new("validate-user-pass");
    // Sorted by file name: a-cluster.toml before b-node.toml. Its scenario is
    // a file relative to the case file's folder (a subfolder, so that it is
    // not read as a case file).
    dir.write("scenarios/two-nodes.toml", ALLREDUCE);
    dir.write(
        "a-cluster.toml",
        r#"[sources]
ours = "nccl-tests across our two nodes"

[[case]]
name = "our-allreduce-2x8xh800-64mib"
source = "ours"
scenario = "scenarios/two-nodes.toml"
metric = "busbw_gb_per_s"
unit = "GB/s"
published = 43.5
tolerance = 0.05
conditions = "16 ranks, 64 MiB, 400 Gb/s NICs"
"#,
    );
    dir.write("b-node.toml", NODE_CASE);
    let o = moesim(&["validate", "--cases", dir.path().to_str().unwrap(), "--format", "json", "--allow-skip"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let builtin = moesim::validate::builtin_cases().unwrap();
    assert_eq!(rows.len(), builtin.len() + 2);
    for (row, case) in rows.iter().zip(&builtin) {
        assert_eq!(row["case"], case.name.as_str());
    }
    let (a, b) = (&rows[builtin.len()], &rows[builtin.len() + 1]);
    assert_eq!(a["case"], "our-allreduce-2x8xh800-64mib");
    assert_eq!(a["source"], "nccl-tests across our two nodes");
    assert_eq!(b["case"], "our-allreduce-8xh800-64mib");
    for row in [a, b] {
        assert_eq!(row["pass"], true, "{row}");
        assert_eq!(row["tolerance_pct"], 5.0);
        assert_eq!(row["unit"], "GB/s");
    }
    assert!((b["simulated"].as_f64().unwrap() - 188.0).abs() < 1.0, "{b}");
}

#[test]
fn a_failing_user_case_exits_1_with_its_row_in_the_table() {
    let dir = TempDir::new("validate-user-fail");
    let file = dir.write("my-cluster.toml", &NODE_CASE.replace("published = 188.0", "published = 262.0"));
    let o = moesim(&["validate", "--cases", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    let row = out.lines().find(|l| l.starts_with("our-allreduce-8xh800-64mib")).expect("the user's row");
    assert!(row.contains("262.0 GB/s") && row.contains("FAIL") && row.contains("nccl-tests on our node"), "{row}");
    let n = moesim::validate::builtin_cases().unwrap().len() + 1;
    assert!(out.contains(&format!("of {n} cases within tolerance")), "{out}");
}

#[test]
fn bad_user_cases_exit_2_naming_file_line_and_key() {
    let dir = TempDir::new("validate-user-bad");
    // (what is wrong, the file's text, the line and key stderr must name)
    let bad = [
        ("unknown-scenario", NODE_CASE.replace("\"allreduce-8xh800\"", "\"allreduce-8xh900\""), 5, "scenario"),
        ("unknown-key", NODE_CASE.replace("workload.bytes=", "workload.byts="), 6, "sets"),
        ("unknown-metric", NODE_CASE.replace("\"busbw_gb_per_s\"", "\"busbw_gbps\""), 7, "metric"),
        ("unknown-field", NODE_CASE.replace("unit = ", "units = "), 8, "unknown field `units`"),
        ("malformed", NODE_CASE.replace("published = 188.0", "published = = 188.0"), 9, "invalid"),
        ("zero-tolerance", NODE_CASE.replace("tolerance = 0.05", "tolerance = 0.0"), 10, "tolerance"),
        ("missing-field", NODE_CASE.replace("metric = \"busbw_gb_per_s\"\n", ""), 2, "missing field `metric`"),
        ("gap-without-reason", format!("{NODE_CASE}status = \"known-gap\"\n"), 11, "reason"),
    ];
    for (what, text, line, key) in bad {
        let file = dir.write(&format!("{what}.toml"), &text);
        let o = moesim(&["validate", "--cases", file.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{what}: {err}");
        assert!(!err.contains("panicked"), "{what}: {err}");
        assert!(err.contains(&format!("{}:{line}:", file.display())), "{what}: expected line {line}: {err}");
        assert!(err.contains(key), "{what}: expected `{key}`: {err}");
        assert!(o.stdout.is_empty(), "{what}: no table for bad input");
    }
    // A name used twice, and a path that is not there.
    let file = dir.write("twice.toml", &format!("{NODE_CASE}\n{NODE_CASE}"));
    let o = moesim(&["validate", "--cases", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&format!("{}:14:", file.display())) && stderr(&o).contains("already defined"));
    let o = moesim(&["validate", "--cases", dir.path().join("absent.toml").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no such file"), "{}", stderr(&o));
}
