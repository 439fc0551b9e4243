//! Writing a run's output directory: `summary.json`, `summary.md`,
//! `timeline.csv`, `resources.csv`, `trace.json`, the workload's plots
//! (`NAME.png`, `NAME.svg`) and its further files (e.g. `requests.csv`); or
//! any named files (a sweep's). Files are written into a
//! hidden staging folder and moved into place only when all succeeded, so a
//! failed run never leaves files that look complete.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::workloads::Outcome;

/// The deterministic part of a run's summary (no wall-clock figures).
pub fn summary(scenario: &str, kind: &str, seed: u64, outcome: &Outcome) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), Value::from(scenario));
    m.insert("workload".into(), Value::from(kind));
    m.insert("seed".into(), Value::from(seed));
    m.insert("sim_time_s".into(), crate::workloads::num(outcome.result.end.as_secs_f64()));
    m.insert("events".into(), Value::from(outcome.result.events));
    m.insert("tasks".into(), Value::from(outcome.graph.tasks().len() as u64));
    for (k, v) in &outcome.metrics {
        m.insert(k.clone(), v.clone());
    }
    m.insert("notes".into(), Value::from(outcome.notes.clone()));
    m
}

/// Writes every output file into `dir` (created if missing).
pub fn write_dir(dir: &Path, summary: &Map<String, Value>, outcome: &Outcome) -> Result<Vec<PathBuf>, String> {
    write_staged(dir, |staging| write_all(staging, summary, outcome))
}

/// Writes named files into `dir` (created if missing), all or none.
pub fn write_files(dir: &Path, files: &[(String, Vec<u8>)]) -> Result<Vec<PathBuf>, String> {
    write_staged(dir, |staging| {
        for (name, bytes) in files {
            fs::write(staging.join(name), bytes).map_err(|e| werr(name, e))?;
        }
        Ok(files.iter().map(|(name, _)| name.clone()).collect())
    })
}

/// Runs `write` into a hidden staging folder inside `dir` and moves the
/// files it names into `dir` only when it succeeded.
fn write_staged(dir: &Path, write: impl FnOnce(&Path) -> Result<Vec<String>, String>) -> Result<Vec<PathBuf>, String> {
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let staging = dir.join(format!(".moesim-partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    fs::create_dir_all(&staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let names = match write(&staging) {
        Ok(names) => names,
        Err(e) => {
            let _ = fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    let mut written = Vec::new();
    for name in names {
        let to = dir.join(&name);
        fs::rename(staging.join(&name), &to).map_err(|e| format!("cannot move {name} into {}: {e}", dir.display()))?;
        written.push(to);
    }
    let _ = fs::remove_dir_all(&staging);
    Ok(written)
}

fn create(dir: &Path, name: &str) -> Result<BufWriter<fs::File>, String> {
    let path = dir.join(name);
    fs::File::create(&path).map(BufWriter::new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn werr(name: &str, e: impl std::fmt::Display) -> String {
    format!("writing {name}: {e}")
}

fn write_all(dir: &Path, summary: &Map<String, Value>, outcome: &Outcome) -> Result<Vec<String>, String> {
    let mut w = create(dir, "summary.json")?;
    serde_json::to_writer_pretty(&mut w, summary).map_err(|e| werr("summary.json", e))?;
    writeln!(w).and_then(|_| w.flush()).map_err(|e| werr("summary.json", e))?;

    let mut w = create(dir, "summary.md")?;
    let title = summary.get("scenario").and_then(Value::as_str).unwrap_or("run");
    let rows: Vec<(String, String)> = summary
        .iter()
        .filter(|(k, _)| k.as_str() != "notes")
        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
        .collect();
    moesim_reports::summary::write_markdown(&mut w, title, &rows).map_err(|e| werr("summary.md", e))?;
    for note in &outcome.notes {
        writeln!(w, "\n- {note}").map_err(|e| werr("summary.md", e))?;
    }
    w.flush().map_err(|e| werr("summary.md", e))?;

    let mut w = create(dir, "timeline.csv")?;
    moesim_reports::timeline::write_csv(&mut w, &outcome.graph, &outcome.platform, &outcome.result)
        .map_err(|e| werr("timeline.csv", e))?;
    w.flush().map_err(|e| werr("timeline.csv", e))?;

    let mut w = create(dir, "resources.csv")?;
    moesim_reports::resources::write_csv(&mut w, &outcome.platform, &outcome.result)
        .map_err(|e| werr("resources.csv", e))?;
    w.flush().map_err(|e| werr("resources.csv", e))?;

    let mut w = create(dir, "trace.json")?;
    moesim_reports::trace::write_chrome_trace(&mut w, &outcome.graph, &outcome.platform, &outcome.result)
        .map_err(|e| werr("trace.json", e))?;
    w.flush().map_err(|e| werr("trace.json", e))?;
    let mut names: Vec<String> =
        ["summary.json", "summary.md", "timeline.csv", "resources.csv", "trace.json"].map(String::from).to_vec();
    for fig in &outcome.figures {
        for (name, bytes) in [(fig.png_name(), &fig.png), (fig.svg_name(), &fig.svg)] {
            fs::write(dir.join(&name), bytes).map_err(|e| werr(&name, e))?;
            names.push(name);
        }
    }
    for (name, bytes) in &outcome.files {
        fs::write(dir.join(name), bytes).map_err(|e| werr(name, e))?;
        names.push(name.clone());
    }
    Ok(names)
}
