//! Helpers shared by the integration tests: running the `moesim` binary and
//! writing scratch scenario files.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Runs `moesim` with `args`.
pub fn moesim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_moesim")).args(args).output().expect("moesim runs")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs moesim, expects exit 2 (a clear input error) without a panic, and
/// returns stderr.
pub fn input_error(args: &[&str]) -> String {
    let o = moesim(args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "moesim {args:?}: expected exit 2, stderr: {err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A fresh scratch directory under the target dir.
pub fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `text` to `name` in a scratch dir and returns its path.
pub fn scenario_file(test: &str, text: &str) -> PathBuf {
    let path = scratch(test).join("scenario.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `moesim run FILE --format json` and parses stdout.
pub fn run_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let o = moesim(&all);
    assert!(o.status.success(), "moesim {all:?} failed: {}", stderr(&o));
    serde_json::from_slice(&o.stdout).expect("one JSON object on stdout")
}

/// A small valid collective scenario to break in tests.
pub const ALLREDUCE: &str = r#"name = "t"
seed = 1

[hardware]
device = "h800"

[topology]
preset = "h800-cluster"
nodes = 2

[workload]
kind = "collective"
op = "all-reduce"
ranks = 16
bytes = 67108864
algorithm = "ring"
"#;
