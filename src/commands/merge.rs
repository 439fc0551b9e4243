//! `moesim merge DIR... --out DIR`: joins the folders of a sharded sweep
//! (`moesim sweep --shard I/N`, or a Slurm / Kubernetes array) into the
//! folder the unsharded sweep writes, byte for byte: the same results file,
//! `sweep.csv` and charts, all built from the shards' results.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

use crate::diagnostics::Source;
use crate::sweep::results::{self, PointLine};
use crate::AppError;

/// Arguments of `moesim merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// The shards' output folders (each with a results.jsonl).
    #[arg(required = true)]
    pub dirs: Vec<PathBuf>,
    /// The merged folder.
    #[arg(long)]
    pub out: PathBuf,
    /// Replace --out even if it is a non-empty folder moesim did not write.
    #[arg(long)]
    pub force: bool,
}

fn input(place: String, m: String) -> AppError {
    AppError::Input(vec![Source::new(place, "").plain(m)])
}

/// Runs `moesim merge`.
pub fn execute(args: MergeArgs) -> Result<ExitCode, AppError> {
    let mut header: Option<(Value, PathBuf)> = None;
    let mut done: BTreeMap<usize, PointLine> = BTreeMap::new();
    for dir in &args.dirs {
        let (h, lines) = results::read_dir(dir)?;
        match &header {
            None => header = Some((h, dir.clone())),
            Some((first, from)) if *first != h => {
                return Err(input(
                    dir.display().to_string(),
                    format!("its results are of another sweep than {}'s (the headers differ)", from.display()),
                ))
            }
            Some(_) => {}
        }
        for (i, line) in lines {
            if let Some(old) = done.get(&i) {
                if *old != line {
                    return Err(input(
                        dir.display().to_string(),
                        format!("point {i} differs from the same point in another folder; were they run with different versions?"),
                    ));
                }
            }
            done.insert(i, line);
        }
    }
    let (header, _) = header.expect("clap requires a folder");
    let strings = |k: &str| -> Vec<String> {
        header[k]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    let (keys, metrics) = (strings("keys"), strings("metrics"));
    let label = header["scenario"].as_str().unwrap_or("").to_owned();
    let total = header["points"].as_array().map_or(0, Vec::len);
    let missing: Vec<usize> = (0..total).filter(|i| !done.contains_key(i)).collect();
    if !missing.is_empty() {
        let first: Vec<String> = missing.iter().take(8).map(usize::to_string).collect();
        return Err(input(
            "moesim merge".into(),
            format!(
                "{} of the sweep's {total} points are in none of the folders (points {}{}): run or rerun their shards first",
                missing.len(),
                first.join(", "),
                if missing.len() > 8 { ", ..." } else { "" }
            ),
        ));
    }
    let table = results::table(&keys, &done);
    let shown = if table.rows.iter().any(|r| r.error.is_none()) {
        crate::sweep::shown_metrics(&table, &metrics)?
    } else {
        Vec::new()
    };
    results::prepare_dir(&args.out, args.force)?;
    let written = results::finish(&args.out, &header, &label, &done, Some((&table, &shown)))?;
    println!("merged {total} points from {} folders", args.dirs.len());
    for p in written {
        println!("  wrote {}", p.display());
    }
    Ok(ExitCode::SUCCESS)
}
