//! `moesim sweep`: one scenario run at every combination of values of the
//! varied keys (`--vary KEY=V1,V2,...`, repeatable: a grid), the points in
//! parallel and reported in grid order (the last key varies fastest), so
//! the output is the same bytes whatever the thread count. Each point is an
//! ordinary run with the values as `--set` overrides after the user's own.
//! Sweep files ([`file`]) define richer sweeps; [`results`] makes them
//! resumable and [`shard`] splits them across scheduler jobs.

pub mod file;
pub mod results;
pub mod shard;

use serde_json::{Map, Value};

use crate::diagnostics::Source;
use crate::workloads::RunOptions;
use crate::{run_scenario_observed, AppError};
use file::SweepDef;
use moesim_reports::sweep::SweepTable;

/// Most points one sweep may run.
pub const MAX_POINTS: usize = 1000;

/// One varied key and its values, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vary {
    pub key: String,
    pub values: Vec<String>,
}

fn bad(message: String) -> AppError {
    AppError::Input(vec![Source::new("--vary", "").plain(message)])
}

/// Parses `KEY=V1,V2,...`.
pub fn parse_vary(arg: &str) -> Result<Vary, AppError> {
    let Some((key, list)) = arg.split_once('=') else {
        return Err(bad(format!("{arg}: expected KEY=V1,V2,... (e.g. hardware.device=h800,h20)")));
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(bad(format!("{arg}: the key is empty; expected KEY=V1,V2,...")));
    }
    let values: Vec<String> = list.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(bad(format!("{arg}: an empty value; expected KEY=V1,V2,... with no empty entry")));
    }
    Ok(Vary { key: key.to_owned(), values })
}

/// Checks a set of varied keys: at least one, none twice, at most
/// [`MAX_POINTS`] points.
pub fn check(varies: &[Vary]) -> Result<(), AppError> {
    if varies.is_empty() {
        return Err(bad("nothing to vary: give --vary KEY=V1,V2,...".into()));
    }
    for (i, v) in varies.iter().enumerate() {
        if varies[..i].iter().any(|w| w.key == v.key) {
            return Err(bad(format!("{} is varied twice; give its values in one --vary", v.key)));
        }
    }
    let n = varies.iter().try_fold(1usize, |n, v| n.checked_mul(v.values.len())).unwrap_or(usize::MAX);
    if n > MAX_POINTS {
        return Err(bad(format!("{n} points; a sweep runs at most {MAX_POINTS}")));
    }
    Ok(())
}

/// Every combination of values, the last key varying fastest.
pub fn points(varies: &[Vary]) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new()];
    for v in varies {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                v.values.iter().map(move |value| {
                    let mut p = prefix.clone();
                    p.push(value.clone());
                    p
                })
            })
            .collect();
    }
    out
}

/// Runs point `i` of a sweep: its results-file line, with the run's
/// summary, or with the input error that kept it from running (a plan that
/// does not tile the cluster, say). Any other failure is the sweep's.
pub fn run_point(
    def: &SweepDef,
    i: usize,
    options: &RunOptions,
    observer: &mut dyn moesim_sim::Observer,
) -> Result<(Map<String, Value>, Option<AppError>), AppError> {
    let mut line = Map::new();
    line.insert("point".into(), Value::from(i));
    line.insert("values".into(), Value::from(def.points[i].clone()));
    match run_scenario_observed(&def.scenario, &def.sets_of(i), options, observer) {
        Ok((summary, _)) => {
            line.insert("summary".into(), Value::Object(summary));
            Ok((line, None))
        }
        Err(AppError::Failed(m)) => Err(AppError::Failed(format!("{}: {m}", point_name(&def.keys, &def.points[i])))),
        Err(input) => {
            let message = input.to_string().lines().next().unwrap_or("").trim_start_matches("error: ").to_owned();
            line.insert("error".into(), Value::from(message));
            Ok((line, Some(input)))
        }
    }
}

fn point_name(keys: &[String], values: &[String]) -> String {
    keys.iter().zip(values).map(|(k, x)| format!("{k}={x}")).collect::<Vec<_>>().join(", ")
}

/// The metrics shown when none is asked for: the headline figures of each
/// workload kind, those the runs reported, at most six.
pub const HEADLINE: &[&str] = &[
    "step_time_s",
    "tokens_per_s_per_gpu",
    "mfu_bf16_peak",
    "exposed_comm_s",
    "memory_gib_per_gpu",
    "fits",
    "iteration_time_ms",
    "tokens_per_s_per_node",
    "tpot_ms",
    "ttft_p99_ms",
    "tpot_p99_ms",
    "slo_attainment",
    "output_tokens_per_s_per_node",
    "usd_per_million_output_tokens",
    "time_us",
    "busbw_gb_per_s",
    "tflops",
    "step_time_us",
    "bubble_us",
];

/// The metrics to show: those asked for (each must be one the runs
/// reported), else the headline ones present.
pub fn shown_metrics(table: &SweepTable, asked: &[String]) -> Result<Vec<String>, AppError> {
    if asked.is_empty() {
        let mut out: Vec<String> =
            HEADLINE.iter().filter(|m| table.metrics.iter().any(|x| x == *m)).map(|m| m.to_string()).collect();
        out.truncate(6);
        return Ok(out);
    }
    for m in asked {
        if !table.metrics.contains(m) {
            return Err(AppError::Input(vec![Source::new("--metric", "")
                .plain(format!("{m}: not a metric of these runs; they report {}", table.metrics.join(", ")))]));
        }
    }
    Ok(asked.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vary_parses_and_rejects_what_it_cannot_use() {
        let v = parse_vary("hardware.device=h800, h20").unwrap();
        assert_eq!(v, Vary { key: "hardware.device".into(), values: vec!["h800".into(), "h20".into()] });
        assert!(parse_vary("hardware.device").is_err());
        assert!(parse_vary("=1,2").is_err());
        assert!(parse_vary("a=1,,2").is_err());
        let twice = [parse_vary("a=1").unwrap(), parse_vary("a=2").unwrap()];
        assert!(check(&twice).is_err());
        assert!(check(&[]).is_err());
        let big: Vec<Vary> = (0..4).map(|i| parse_vary(&format!("k{i}=1,2,3,4,5,6")).unwrap()).collect();
        assert!(check(&big).is_err(), "1296 points");
    }

    #[test]
    fn points_are_the_grid_with_the_last_key_fastest() {
        let v = [parse_vary("a=1,2").unwrap(), parse_vary("b=x,y,z").unwrap()];
        let p = points(&v);
        assert_eq!(p.len(), 6);
        assert_eq!(p[0], ["1", "x"]);
        assert_eq!(p[1], ["1", "y"]);
        assert_eq!(p[3], ["2", "x"]);
    }
}
