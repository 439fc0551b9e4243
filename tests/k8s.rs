//! The Kubernetes manifest of `moesim sweep --emit k8s` checked offline
//! against Kubernetes' API: it must deserialize into a batch/v1 Job of the
//! pinned `k8s-openapi` types (generated from Kubernetes' OpenAPI schema)
//! and serialize back to the same JSON, so no field is unknown to the
//! schema, misspelt or of the wrong type.

use k8s_openapi::api::batch::v1::Job;

use crate::common::{moesim, scratch, stderr};
use crate::sweep_files::QUICK_SWEEP;

/// Whether `manifest` is a batch/v1 Job with nothing the schema lacks.
fn strict_job(manifest: &serde_json::Value) -> Result<Job, String> {
    let job: Job = serde_json::from_value(manifest.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&job).map_err(|e| e.to_string())?;
    if back != *manifest {
        return Err(format!("fields the schema does not know were dropped:\n{back:#}\nvs\n{manifest:#}"));
    }
    Ok(job)
}

#[test]
fn emitted_k8s_manifest_is_a_valid_indexed_job() {
    let dir = scratch("k8s_emit");
    let file = dir.join("quick.toml");
    std::fs::write(&file, QUICK_SWEEP).unwrap();
    let o = moesim(&[
        "sweep",
        file.to_str().unwrap(),
        "--emit",
        "k8s",
        "--image",
        "registry.example.com/moesim:0.1.0",
        "--shards",
        "3",
        "--claim",
        "sweeps",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let manifest: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let job = strict_job(&manifest).unwrap_or_else(|e| panic!("{e}"));
    let spec = job.spec.unwrap();
    assert_eq!(spec.completion_mode.as_deref(), Some("Indexed"));
    assert_eq!((spec.completions, spec.parallelism), (Some(3), Some(3)));
    let pod = spec.template.spec.unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some("registry.example.com/moesim:0.1.0"));
    let env = c.env.as_ref().unwrap();
    assert!(env.iter().any(|e| e.name == "MOESIM_SHARDS" && e.value.as_deref() == Some("3")));
    let args = c.args.as_ref().unwrap();
    assert_eq!(args[..2], ["sweep".to_string(), "/results/quick.toml".to_string()]);
    assert_eq!(args.last().unwrap(), "/results/shard-$(JOB_COMPLETION_INDEX)");
    let volume = &pod.volumes.as_ref().unwrap()[0];
    assert_eq!(volume.persistent_volume_claim.as_ref().unwrap().claim_name, "sweeps");
    // The check fails on what Kubernetes would reject or ignore.
    let mut typo = manifest.clone();
    typo["spec"]["completionMod"] = "Indexed".into();
    assert!(strict_job(&typo).is_err());
    let mut wrong = manifest.clone();
    wrong["spec"]["completions"] = "three".into();
    assert!(strict_job(&wrong).is_err());
}
