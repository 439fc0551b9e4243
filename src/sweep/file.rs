//! Sweep files (`moesim sweep SWEEP.toml`): a base scenario with overrides,
//! grid axes (every combination) and zipped axes (advancing together), the
//! metrics to show and an output folder, resolved into a [`SweepDef`]: the
//! ordered list of points every later step (running, resuming, sharding,
//! merging) indexes. `--vary KEY=V1,V2,...` builds the same definition from
//! the command line.
//!
//! ```toml
//! scenario = "allreduce-8xh800"      # a built-in name, or a path relative to this file
//! set = ["topology.nodes=1"]         # overrides applied to every point
//! metrics = ["busbw_gb_per_s"]       # default: the workload's headline metrics
//! out = "sweep-out"                  # relative to the current folder; --out overrides
//!
//! [[grid]]                           # every combination of the grid axes, in order
//! key = "hardware.device"
//! values = ["h800", "h100"]
//!
//! [[zip]]                            # zipped axes advance together (equal lengths),
//! key = "workload.bytes"             # one more axis after the grid ones
//! values = [1048576, 67108864]
//! [[zip]]
//! key = "workload.algorithm"
//! values = ["ring", "tree"]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use super::{check, points, Vary, MAX_POINTS};
use crate::diagnostics::Source;
use crate::{AppError, ScenarioRef};

/// One axis of a sweep file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AxisText {
    key: String,
    values: Vec<toml::Value>,
}

/// A sweep file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SweepText {
    scenario: String,
    #[serde(default)]
    set: Vec<String>,
    #[serde(default)]
    metrics: Vec<String>,
    #[serde(default)]
    out: Option<PathBuf>,
    #[serde(default)]
    grid: Vec<AxisText>,
    #[serde(default)]
    zip: Vec<AxisText>,
}

/// A resolved sweep: what every point runs.
#[derive(Debug, Clone)]
pub struct SweepDef {
    pub scenario: ScenarioRef,
    /// How the scenario is named in headers and chart titles.
    pub label: String,
    /// Overrides applied to every point before its own values.
    pub sets: Vec<String>,
    /// The varied keys, grid axes first, then the zipped ones.
    pub keys: Vec<String>,
    /// Every point's values (one per key), in sweep order.
    pub points: Vec<Vec<String>>,
    /// Metrics asked for (empty: the headline ones).
    pub metrics: Vec<String>,
    /// The output folder the file names, if any.
    pub out: Option<PathBuf>,
    /// The sweep file, when there is one (for `--emit`).
    pub file: Option<PathBuf>,
}

impl SweepDef {
    /// A sweep from `--vary` axes on a scenario.
    pub fn from_varies(scenario: ScenarioRef, sets: &[String], varies: &[Vary]) -> Result<SweepDef, AppError> {
        check(varies)?;
        Ok(SweepDef {
            label: label(&scenario),
            scenario,
            sets: sets.to_vec(),
            keys: varies.iter().map(|v| v.key.clone()).collect(),
            points: points(varies),
            metrics: Vec::new(),
            out: None,
            file: None,
        })
    }

    /// The `--set` overrides of point `i`: the base ones, then its values.
    pub fn sets_of(&self, i: usize) -> Vec<String> {
        let mut all = self.sets.clone();
        all.extend(self.keys.iter().zip(&self.points[i]).map(|(k, v)| format!("{k}={v}")));
        all
    }

    /// The header line of a results file: everything that identifies the
    /// sweep, so a resumed or merged run can check it is the same one.
    pub fn header(&self) -> Value {
        let mut m = Map::new();
        m.insert("moesim_sweep".into(), Value::from(1));
        m.insert("scenario".into(), Value::from(self.label.clone()));
        m.insert("sets".into(), Value::from(self.sets.clone()));
        m.insert("keys".into(), Value::from(self.keys.clone()));
        m.insert("metrics".into(), Value::from(self.metrics.clone()));
        m.insert("points".into(), Value::from(self.points.iter().map(|p| Value::from(p.clone())).collect::<Vec<_>>()));
        Value::Object(m)
    }
}

/// How a scenario is named in a sweep's header and charts.
pub fn label(scenario: &ScenarioRef) -> String {
    match scenario {
        ScenarioRef::Builtin(n) => n.to_string(),
        ScenarioRef::Path(p) => p.display().to_string(),
    }
}

/// Whether a file given as `moesim sweep FILE` is a sweep file (it has
/// `grid` or `zip` axes) rather than a scenario.
pub fn is_sweep_file(path: &Path) -> bool {
    let Ok(text) = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES) else { return false };
    let Ok(table) = text.parse::<toml::Table>() else { return false };
    table.contains_key("grid") || table.contains_key("zip")
}

/// A TOML value as a `--set` value.
fn set_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Reads and resolves a sweep file; every problem names the file and key.
pub fn load(path: &Path) -> Result<SweepDef, AppError> {
    let origin = path.display().to_string();
    let text = crate::files::read_text(path, crate::files::MAX_CONFIG_BYTES)
        .map_err(|e| AppError::Input(vec![Source::new(origin.clone(), "").plain(e)]))?;
    parse(path, &text)
}

/// Resolves the text of the sweep file at `path` (scenario paths are
/// relative to its folder).
pub fn parse(path: &Path, text: &str) -> Result<SweepDef, AppError> {
    let origin = path.display().to_string();
    let source = Source::new(origin.clone(), text.to_owned());
    let parsed: SweepText = toml::from_str(text).map_err(|e| {
        AppError::Input(vec![source.plain(format!(
            "{}; a sweep file has scenario = \"NAME-or-PATH\", [[grid]] / [[zip]] axes of key and values, and optional set, metrics, out",
            e.message()
        ))])
    })?;
    let at = |key: &str, m: String| AppError::Input(vec![source.at_key(key, m)]);
    let base = path.parent().unwrap_or(Path::new("."));
    let scenario = if builtin_name(&parsed.scenario) {
        ScenarioRef::parse(&parsed.scenario)?
    } else {
        let p = base.join(&parsed.scenario);
        if !p.exists() {
            return Err(at(
                "scenario",
                format!("{}: no such file (relative to the sweep file), and not a built-in scenario", parsed.scenario),
            ));
        }
        ScenarioRef::Path(p)
    };
    if parsed.grid.is_empty() && parsed.zip.is_empty() {
        return Err(at("grid", "nothing to vary: give at least one [[grid]] or [[zip]] axis (key and values)".into()));
    }
    let mut varies: Vec<Vary> = Vec::new();
    for (table, axes) in [("grid", &parsed.grid), ("zip", &parsed.zip)] {
        for (i, a) in axes.iter().enumerate() {
            let place = format!("{table}[{i}]");
            if a.key.trim().is_empty() {
                return Err(at(&format!("{place}.key"), "expected a dotted scenario key, found an empty one".into()));
            }
            if a.values.is_empty() {
                return Err(at(&format!("{place}.values"), format!("{}: expected at least one value", a.key)));
            }
            let values = a
                .values
                .iter()
                .map(|v| {
                    set_value(v).ok_or_else(|| {
                        at(
                            &format!("{place}.values"),
                            format!("{}: expected strings, numbers or booleans, found {v}", a.key),
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if varies.iter().any(|v| v.key == a.key) {
                return Err(at(&format!("{place}.key"), format!("{} is varied twice", a.key)));
            }
            varies.push(Vary { key: a.key.trim().to_owned(), values });
        }
    }
    if let Some(first) = parsed.zip.first() {
        if let Some((i, bad)) = parsed.zip.iter().enumerate().find(|(_, a)| a.values.len() != first.values.len()) {
            return Err(at(
                &format!("zip[{i}].values"),
                format!(
                    "{}: zipped axes advance together and need equal lengths; {} has {} values, this {}",
                    bad.key,
                    first.key,
                    first.values.len(),
                    bad.values.len()
                ),
            ));
        }
    }
    let grid = &varies[..parsed.grid.len()];
    let zipped = &varies[parsed.grid.len()..];
    // Count before building: a product of a few long axes would not fit in memory.
    let zip_len = zipped.first().map_or(1, |z| z.values.len());
    let count = grid.iter().try_fold(zip_len, |n, v| n.checked_mul(v.values.len()));
    if count.is_none_or(|n| n > MAX_POINTS) {
        let n = count.map_or_else(|| "more than 2^64".to_owned(), |n| n.to_string());
        return Err(at("grid", format!("{n} points; a sweep runs at most {MAX_POINTS}")));
    }
    let mut pts = points(grid);
    if let Some(z) = zipped.first() {
        pts = pts
            .into_iter()
            .flat_map(|p| {
                (0..z.values.len()).map(move |j| {
                    let mut q = p.clone();
                    q.extend(zipped.iter().map(|a| a.values[j].clone()));
                    q
                })
            })
            .collect();
    }
    if pts.len() > MAX_POINTS {
        return Err(at("grid", format!("{} points; a sweep runs at most {MAX_POINTS}", pts.len())));
    }
    Ok(SweepDef {
        label: match &scenario {
            ScenarioRef::Builtin(n) => n.to_string(),
            ScenarioRef::Path(_) => parsed.scenario.clone(),
        },
        scenario,
        sets: parsed.set,
        keys: varies.iter().map(|v| v.key.clone()).collect(),
        points: pts,
        metrics: parsed.metrics,
        out: parsed.out,
        file: Some(path.to_path_buf()),
    })
}

fn builtin_name(name: &str) -> bool {
    crate::builtin::SCENARIOS.iter().any(|(n, _)| *n == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("moesim-sweepfile-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("sweep.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn grid_then_zip_in_order() {
        let p = write(
            "order",
            "scenario = \"allreduce-8xh800\"\n[[grid]]\nkey = \"hardware.device\"\nvalues = [\"h800\", \"h100\"]\n\
             [[zip]]\nkey = \"workload.bytes\"\nvalues = [1024, 2048, 4096]\n[[zip]]\nkey = \"workload.algorithm\"\n\
             values = [\"ring\", \"tree\", \"ring\"]\n",
        );
        let d = load(&p).unwrap();
        assert_eq!(d.keys, ["hardware.device", "workload.bytes", "workload.algorithm"]);
        assert_eq!(d.points.len(), 6);
        assert_eq!(d.points[0], ["h800", "1024", "ring"]);
        assert_eq!(d.points[1], ["h800", "2048", "tree"]);
        assert_eq!(d.points[3], ["h100", "1024", "ring"]);
        assert_eq!(d.sets_of(1), ["hardware.device=h800", "workload.bytes=2048", "workload.algorithm=tree"]);
    }

    #[test]
    fn bad_files_name_the_key() {
        for (text, want) in [
            ("scenario = \"allreduce-8xh800\"\n", "nothing to vary"),
            ("scenario = \"nope.toml\"\n[[grid]]\nkey = \"a\"\nvalues = [1]\n", "no such file"),
            ("scenario = \"allreduce-8xh800\"\n[[grid]]\nkey = \"a\"\nvalues = []\n", "at least one value"),
            ("scenario = \"allreduce-8xh800\"\n[[zip]]\nkey = \"a\"\nvalues = [1]\n[[zip]]\nkey = \"b\"\nvalues = [1, 2]\n", "equal lengths"),
            ("scenario = \"allreduce-8xh800\"\n[[grid]]\nkey = \"a\"\nvalues = [[1]]\n", "strings, numbers"),
            ("scenario = \"allreduce-8xh800\"\ngird = 1\n", "unknown field"),
        ] {
            let e = load(&write("bad", text)).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
    }
}
