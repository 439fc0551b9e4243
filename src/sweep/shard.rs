//! Sharding a sweep across the jobs of a scheduler: `--shard I/N` runs the
//! points `i` with `i % N == I` (interleaved, so each shard gets a fair mix of
//! cheap and dear points). Without `--shard`, a Slurm job array task
//! (`SLURM_ARRAY_TASK_ID` and `SLURM_ARRAY_TASK_COUNT`) or a Kubernetes
//! Indexed Job pod (`JOB_COMPLETION_INDEX`, with the count in
//! `MOESIM_SHARDS`, which the manifest `--emit k8s` prints sets) is its own
//! shard. `--emit slurm` / `--emit k8s` print the job that runs every shard.

use std::path::Path;

use serde_json::{json, Value};

use crate::diagnostics::Source;
use crate::AppError;

/// One slice of a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

fn bad(place: &str, m: String) -> AppError {
    AppError::Input(vec![Source::new(place, "").plain(m)])
}

impl Shard {
    /// Parses `I/N` (0 <= I < N).
    pub fn parse(place: &str, text: &str) -> Result<Shard, AppError> {
        let parsed = text.split_once('/').and_then(|(i, n)| Some((i.trim().parse().ok()?, n.trim().parse().ok()?)));
        match parsed {
            Some((index, count)) if count >= 1 && index < count => Ok(Shard { index, count }),
            _ => Err(bad(place, format!("expected I/N with 0 <= I < N (e.g. 0/4), found {text:?}"))),
        }
    }

    /// The shard a scheduler's environment names, if any: Slurm's job array
    /// (`SLURM_ARRAY_TASK_ID` / `SLURM_ARRAY_TASK_COUNT`), else a Kubernetes
    /// Indexed Job's `JOB_COMPLETION_INDEX` with `MOESIM_SHARDS`.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Shard>, AppError> {
        for (id, count) in
            [("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"), ("JOB_COMPLETION_INDEX", "MOESIM_SHARDS")]
        {
            let Some(i) = get(id) else { continue };
            let Some(n) = get(count) else {
                return Err(bad(id, format!("{id} is set ({i}) but {count} is not: set it to the number of shards")));
            };
            return Shard::parse(&format!("{id}/{count}"), &format!("{i}/{n}")).map(Some);
        }
        Ok(None)
    }

    /// Whether point `i` is this shard's.
    pub fn owns(&self, i: usize) -> bool {
        i % self.count == self.index
    }
}

/// A single-quoted shell word.
fn sh(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// An `sbatch` job-array script: task `I` of `0..shards` runs its shard of
/// the sweep into `OUT/shard-I` (its own results file, so tasks never write
/// the same file); `moesim merge OUT/shard-* --out OUT/merged` joins them.
pub fn slurm_script(moesim: &Path, sweep_file: &Path, out: &Path, shards: usize, name: &str) -> String {
    let (bin, file, out) = (moesim.display().to_string(), sweep_file.display().to_string(), out.display().to_string());
    format!(
        "#!/bin/bash\n\
         # moesim sweep as a Slurm job array: {shards} tasks, one shard each.\n\
         # Submit: sbatch THIS_FILE (logs: slurm-JOB_TASK.out in the folder you submit from); when all are done: {bin} merge {out}/shard-* --out {out}/merged\n\
         #SBATCH --job-name={name}\n\
         #SBATCH --array=0-{last}\n\
         #SBATCH --ntasks=1\n\
         #SBATCH --cpus-per-task=1\n\
         set -euo pipefail\n\
         # moesim reads its shard from SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT.\n\
         exec {bin} sweep {file} --out {out}/shard-\"$SLURM_ARRAY_TASK_ID\"\n",
        last = shards - 1,
        bin = sh(&bin),
        file = sh(&file),
        out = sh(&out),
    )
}

/// A Kubernetes Indexed Job (batch/v1) running `shards` pods, pod `I`
/// writing its shard to `/results/shard-I` on the claimed volume, where the
/// sweep file (and any scenario file it names) is expected too.
pub fn k8s_job(image: &str, claim: &str, sweep_name: &str, shards: usize, name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name, "labels": { "app.kubernetes.io/name": "moesim-sweep" } },
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            "backoffLimit": shards * 2,
            "template": {
                "metadata": { "labels": { "app.kubernetes.io/name": "moesim-sweep" } },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "moesim",
                        "image": image,
                        "workingDir": "/results",
                        "command": ["moesim"],
                        "args": ["sweep", format!("/results/{sweep_name}"), "--out", "/results/shard-$(JOB_COMPLETION_INDEX)"],
                        "env": [{ "name": "MOESIM_SHARDS", "value": shards.to_string() }],
                        "resources": { "requests": { "cpu": "1", "memory": "4Gi" } },
                        "volumeMounts": [{ "name": "results", "mountPath": "/results" }]
                    }],
                    "volumes": [{ "name": "results", "persistentVolumeClaim": { "claimName": claim } }]
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_interleave() {
        let s = Shard::parse("--shard", "1/3").unwrap();
        assert_eq!((0..7).filter(|&i| s.owns(i)).collect::<Vec<_>>(), [1, 4]);
        for t in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(Shard::parse("--shard", t).is_err(), "{t}");
        }
    }

    #[test]
    fn the_environment_names_the_shard() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        assert_eq!(Shard::from_env(env(&[])).unwrap(), None);
        let slurm = env(&[("SLURM_ARRAY_TASK_ID", "2"), ("SLURM_ARRAY_TASK_COUNT", "4")]);
        assert_eq!(Shard::from_env(slurm).unwrap(), Some(Shard { index: 2, count: 4 }));
        let k8s = env(&[("JOB_COMPLETION_INDEX", "0"), ("MOESIM_SHARDS", "5")]);
        assert_eq!(Shard::from_env(k8s).unwrap(), Some(Shard { index: 0, count: 5 }));
        let e = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")])).unwrap_err().to_string();
        assert!(e.contains("MOESIM_SHARDS"), "{e}");
    }
}
