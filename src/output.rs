//! Writing a run's output directory: `summary.json`, `summary.md`,
//! `scenario.resolved.toml`, `timeline.csv`, `resources.csv`,
//! `trace.json.gz` (gzip with no name or time in its header, so the bytes
//! are deterministic), the workload's plots (`NAME.png`, `NAME.svg`) and its
//! further files (e.g. `requests.csv`); or any named files (a sweep's). The
//! trace and the timeline hold the tasks of an [`EventWindow`]
//! (`--trace-window`, by default the earliest 100,000 tasks) and the summary
//! says what was left out. The folder is checked before the run
//! ([`OutDir::prepare`]) and replaced as a whole after it: files are written
//! into a hidden staging folder beside it that is swapped in only when all
//! succeeded, so a failed run never leaves files that look complete and two
//! runs never mix.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use moesim_reports::window::{EventWindow, WindowRequest};

use crate::diagnostics::Source;
use crate::setup::Setup;
use crate::workloads::{OutFile, Outcome};
use crate::AppError;

/// The deterministic part of a run's summary (no wall-clock figures), with
/// its provenance.
pub fn summary(setup: &Setup, kind: &str, outcome: &Outcome) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("scenario".into(), Value::from(setup.name.clone()));
    m.insert("workload".into(), Value::from(kind));
    m.insert("seed".into(), Value::from(setup.seed));
    m.insert("provenance".into(), crate::provenance::summary_object(setup));
    m.insert("sim_time_s".into(), crate::workloads::num(outcome.result.end.as_secs_f64()));
    m.insert("events".into(), Value::from(outcome.result.events));
    m.insert("tasks".into(), Value::from(outcome.graph.task_count() as u64));
    for (k, v) in &outcome.metrics {
        m.insert(k.clone(), v.clone());
    }
    m.insert("notes".into(), Value::from(outcome.notes.clone()));
    m
}

/// The name of the marker file in every folder moesim writes: a folder
/// holding it is moesim's to replace.
pub const MARKER: &str = ".moesim-output";

/// An `--out` folder, checked before the run and replaced as a whole after
/// it: the files are written into a staging folder beside it, which is then
/// swapped in, so the folder never mixes two runs and a failed run changes
/// nothing.
#[derive(Debug, Clone)]
pub struct OutDir {
    dir: PathBuf,
    staging: PathBuf,
}

impl OutDir {
    /// Checks `dir` before anything runs: it must be a folder (or absent)
    /// whose parent can hold a staging folder, and empty or written by moesim
    /// unless `force`. Removes staging folders of runs that died.
    pub fn prepare(dir: &Path, force: bool) -> Result<OutDir, AppError> {
        let bad = |m: String| AppError::Input(vec![Source::new(format!("--out {}", dir.display()), "").plain(m)]);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).filter(|n| n != "." && n != "..");
        let Some(name) = name else {
            return Err(bad("expected a folder name (not `.`, `..` or a root)".into()));
        };
        if dir.exists() {
            if !dir.is_dir() {
                return Err(bad("exists and is not a folder".into()));
            }
            let mut entries = fs::read_dir(dir).map_err(|e| bad(format!("cannot read: {e}")))?;
            let empty = entries.next().is_none();
            if !empty && !dir.join(MARKER).exists() && !force {
                return Err(bad(
                    "not empty, and not a folder moesim wrote: choose another folder, or pass --force to replace it \
                     (its contents are deleted)"
                        .into(),
                ));
            }
        }
        let parent = match dir.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).map_err(|e| bad(format!("cannot create {}: {e}", parent.display())))?;
        remove_stale_staging(&parent, &name);
        let staging = parent.join(format!(".{name}.moesim-staging-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::create_dir(&staging).map_err(|e| bad(format!("cannot write in {}: {e}", parent.display())))?;
        let _ = fs::remove_dir(&staging);
        Ok(OutDir { dir: dir.to_path_buf(), staging })
    }

    /// Writes every output file of a run, the trace and timeline cut to
    /// `window`; adds to `summary` (and its notes) what they hold.
    pub fn write_run(
        &self,
        summary: &mut Map<String, Value>,
        outcome: &mut Outcome,
        window: WindowRequest,
    ) -> Result<Vec<PathBuf>, String> {
        let chosen = EventWindow::choose(&outcome.result, window);
        let mut w = Map::new();
        w.insert("start_us".into(), crate::workloads::num(chosen.start_ps as f64 / 1e6));
        w.insert("end_us".into(), crate::workloads::num(chosen.end_ps as f64 / 1e6));
        w.insert("tasks_written".into(), Value::from(chosen.tasks.len() as u64));
        w.insert("tasks_total".into(), Value::from(chosen.total as u64));
        w.insert("tasks_left_out".into(), Value::from(chosen.left_out() as u64));
        summary.insert("trace_window".into(), Value::Object(w));
        if let Some(Value::Array(notes)) = summary.get_mut("notes") {
            notes.push(Value::from(chosen.describe()));
        }
        let spooled: Vec<(String, crate::workloads::SpooledFile)> = std::mem::take(&mut outcome.files)
            .into_iter()
            .filter_map(|(name, f)| match f {
                OutFile::Spooled(s) => Some((name, s)),
                OutFile::Bytes(b) => {
                    outcome.files.push((name, OutFile::Bytes(b)));
                    None
                }
            })
            .collect();
        let outcome = &*outcome;
        self.write_staged(|staging| {
            let mut names = write_all(staging, summary, outcome, &chosen)?;
            for (name, file) in spooled {
                file.move_to(&staging.join(&name)).map_err(|e| werr(&name, e))?;
                names.push(name);
            }
            Ok(names)
        })
    }

    /// Where a run streams its large files before they move in: a hidden
    /// folder beside the output folder (the same file system), removed with
    /// its last file and, after a run that died, by the next `prepare`.
    pub fn spool_dir(&self) -> PathBuf {
        self.staging.to_string_lossy().replace("moesim-staging", "moesim-spool").into()
    }

    /// Writes named files, all or none.
    pub fn write_files(&self, files: &[(String, Vec<u8>)]) -> Result<Vec<PathBuf>, String> {
        self.write_staged(|staging| {
            for (name, bytes) in files {
                fs::write(staging.join(name), bytes).map_err(|e| werr(name, e))?;
            }
            Ok(files.iter().map(|(name, _)| name.clone()).collect())
        })
    }

    /// Runs `write` into the staging folder, then swaps it in for the
    /// folder (moving any old one aside first and deleting it after).
    fn write_staged(&self, write: impl FnOnce(&Path) -> Result<Vec<String>, String>) -> Result<Vec<PathBuf>, String> {
        let staging = &self.staging;
        let _ = fs::remove_dir_all(staging);
        fs::create_dir_all(staging).map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        let written = write(staging).and_then(|names| {
            fs::write(staging.join(MARKER), "written by moesim; `moesim ... --out` replaces this folder as a whole\n")
                .map_err(|e| werr(MARKER, e))?;
            Ok(names)
        });
        let names = match written {
            Ok(names) => names,
            Err(e) => {
                let _ = fs::remove_dir_all(staging);
                return Err(e);
            }
        };
        let old = staging.with_file_name(
            staging
                .file_name()
                .map(|n| n.to_string_lossy().replace("moesim-staging", "moesim-old"))
                .unwrap_or_default(),
        );
        let _ = fs::remove_dir_all(&old);
        if self.dir.exists() {
            fs::rename(&self.dir, &old)
                .map_err(|e| format!("cannot move the old {} aside: {e}", self.dir.display()))?;
        }
        if let Err(e) = fs::rename(staging, &self.dir) {
            let _ = fs::rename(&old, &self.dir);
            let _ = fs::remove_dir_all(staging);
            return Err(format!("cannot move the new files into {}: {e}", self.dir.display()));
        }
        let _ = fs::remove_dir_all(&old);
        Ok(names.into_iter().map(|n| self.dir.join(n)).collect())
    }
}

/// Removes `.NAME.moesim-staging-PID`, `.NAME.moesim-old-PID` and
/// `.NAME.moesim-spool-PID` folders in
/// `parent` left by runs that are no longer alive (on Linux, no
/// `/proc/PID`; elsewhere, untouched for an hour).
fn remove_stale_staging(parent: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(parent) else { return };
    let me = std::process::id();
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = file.strip_prefix(&format!(".{name}.")) else { continue };
        let Some(pid) = rest
            .strip_prefix("moesim-staging-")
            .or_else(|| rest.strip_prefix("moesim-old-"))
            .or_else(|| rest.strip_prefix("moesim-spool-"))
        else {
            continue;
        };
        let Ok(pid) = pid.parse::<u32>() else { continue };
        let dead = if cfg!(target_os = "linux") {
            !Path::new("/proc").join(pid.to_string()).exists()
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age.as_secs() > 3600)
        };
        if pid != me && dead {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The trace's file name.
pub const TRACE_FILE: &str = "trace.json.gz";

fn create(dir: &Path, name: &str) -> Result<BufWriter<fs::File>, String> {
    let path = dir.join(name);
    fs::File::create(&path).map(BufWriter::new).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn werr(name: &str, e: impl std::fmt::Display) -> String {
    format!("writing {name}: {e}")
}

fn write_all(
    dir: &Path,
    summary: &Map<String, Value>,
    outcome: &Outcome,
    window: &EventWindow,
) -> Result<Vec<String>, String> {
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
    for note in summary.get("notes").and_then(Value::as_array).into_iter().flatten() {
        writeln!(w, "\n- {}", note.as_str().unwrap_or_default()).map_err(|e| werr("summary.md", e))?;
    }
    w.flush().map_err(|e| werr("summary.md", e))?;

    let mut w = create(dir, "timeline.csv")?;
    moesim_reports::timeline::write_csv(&mut w, &outcome.graph, &outcome.platform, &outcome.result, window)
        .map_err(|e| werr("timeline.csv", e))?;
    w.flush().map_err(|e| werr("timeline.csv", e))?;

    let mut w = create(dir, "resources.csv")?;
    moesim_reports::resources::write_csv(&mut w, &outcome.platform, &outcome.graph, &outcome.result, outcome.job_gpus)
        .map_err(|e| werr("resources.csv", e))?;
    w.flush().map_err(|e| werr("resources.csv", e))?;

    let w = create(dir, TRACE_FILE)?;
    // No file name and mtime 0 in the header: the same run, the same bytes.
    let mut gz = flate2::GzBuilder::new().mtime(0).write(w, flate2::Compression::new(6));
    moesim_reports::trace::write_chrome_trace(&mut gz, &outcome.graph, &outcome.platform, &outcome.result, window)
        .map_err(|e| werr(TRACE_FILE, e))?;
    gz.finish().and_then(|mut w| w.flush()).map_err(|e| werr(TRACE_FILE, e))?;
    let mut names: Vec<String> =
        ["summary.json", "summary.md", "timeline.csv", "resources.csv", TRACE_FILE].map(String::from).to_vec();
    for fig in &outcome.figures {
        for (name, bytes) in [(fig.png_name(), &fig.png), (fig.svg_name(), &fig.svg)] {
            fs::write(dir.join(&name), bytes).map_err(|e| werr(&name, e))?;
            names.push(name);
        }
    }
    for (name, file) in &outcome.files {
        match file {
            OutFile::Bytes(bytes) => fs::write(dir.join(name), bytes).map_err(|e| werr(name, e))?,
            OutFile::Spooled(_) => {} // moved in by `OutDir::write_run`
        }
        names.push(name.clone());
    }
    Ok(names)
}
