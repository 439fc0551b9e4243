//! Entry points for the fuzz targets in `fuzz/` (and their regression
//! tests): each takes arbitrary text through one user-facing parser the way
//! the CLI does, and must return (an error is fine) without panicking,
//! hanging or allocating without bound. Nothing here runs a simulation.

use crate::diagnostics::Source;
use crate::scenario::Scenario;
use crate::workloads::traces::{parse_trace, TraceFormat};
use crate::workloads::{footprints, serving::ServingWorkload, Workload};

/// A scenario file with `sets` applied: parsed, resolved, checked and its
/// memory estimated.
pub fn scenario(text: &str, sets: &[String]) {
    let Ok(source) = Source::new("fuzz.toml", text).with_overrides(sets) else { return };
    if let Ok(s) = Scenario::parse(source) {
        let total: f64 = footprints(s.workload.as_ref(), &s.setup).iter().map(|f| f.bytes).sum();
        assert!(!total.is_nan(), "a footprint is NaN");
        if let Some(w) = s.workload.as_serving() {
            requests_if_small(w, &s);
        }
    }
}

/// Overrides on built-in scenario number `pick` (modulo their count).
pub fn overrides(pick: u8, sets: &[String]) {
    let (_, text) = crate::builtin::SCENARIOS[pick as usize % crate::builtin::SCENARIOS.len()];
    scenario(text, sets);
}

/// A trace's text in `format`, parsed, with its prefix-cache hits.
pub fn trace(text: &str, format: TraceFormat) {
    if let Ok(t) = parse_trace("fuzz-trace", text, format) {
        let cached = t.cached_tokens(None);
        assert_eq!(cached.len(), t.rows.len());
    }
}

/// A validation cases file, parsed and checked (its scenarios loaded with
/// their overrides), not run.
pub fn validation_cases(text: &str) {
    if let Ok(cases) = crate::validate::parse_case_file("fuzz-cases.toml", text, None, false) {
        let _ = crate::validate::check_scenarios(&cases);
    }
}

/// A Kineto trace's bytes (JSON or gzip), read and rebuilt into a rank's
/// graph.
pub fn kineto(data: &[u8]) {
    let source = std::io::Cursor::new(data.to_vec());
    if let Ok(trace) = crate::replay::kineto::read_from("fuzz.json", source) {
        if let Ok(rank) = crate::replay::graph::reconstruct(&trace, 0) {
            assert!(rank.ops.iter().all(|o| (o.stream as usize) < rank.streams.len()), "an op on no stream");
        }
    }
}

/// A Chakra `.et` file's bytes, decoded and checked: every dependency points
/// to an earlier node.
pub fn chakra(data: &[u8]) {
    if let Ok(trace) = crate::replay::chakra::parse("fuzz.0.et", data, 0) {
        for (i, node) in trace.nodes.iter().enumerate() {
            assert!(node.deps.iter().all(|&d| (d as usize) < i), "node {} depends on a later node", node.id);
        }
    }
}

/// A sweep file's text, resolved into its points (a scenario path in it is
/// looked up beside a folder that does not exist).
pub fn sweep_file(text: &str) {
    let path = std::path::Path::new("/nonexistent-moesim-fuzz/sweep.toml");
    if let Ok(def) = crate::sweep::file::parse(path, text) {
        assert!(def.points.len() <= crate::sweep::MAX_POINTS, "{} points", def.points.len());
        assert!(def.points.iter().all(|p| p.len() == def.keys.len()), "a point without a value per key");
        if !def.points.is_empty() {
            let _ = def.sets_of(def.points.len() - 1);
        }
    }
}

/// A `[topology]` table's text (presets, generated fabrics or a fabric
/// written out with `[[switch]]` / `[[link]]`), resolved and built, and
/// one route between its first and last GPU.
pub fn topology(text: &str) {
    let Ok(config) = toml::from_str::<moesim_topologies::TopologyConfig>(text) else { return };
    let defaults = moesim_topologies::LinkDefaults { nvlink_gb_per_s: 200.0, nic_gbit_per_s: 400.0 };
    let Ok(spec) = config.resolve(defaults) else { return };
    if let Ok(topo) = moesim_topologies::build(&spec) {
        let gpus = topo.gpu_count();
        // Routing tables grow as GPUs x nodes: route on small fabrics only.
        if (2..=4096).contains(&gpus) {
            let router = moesim_topologies::Router::new(&topo, 0);
            let mut path = Vec::new();
            router.route(&topo, 0, gpus - 1, 0, &mut path);
            assert!(!path.is_empty(), "no route between GPUs 0 and {}", gpus - 1);
        }
    }
}

/// Generates a serving scenario's requests when there are few (no trace
/// file is read: a fuzzed path is refused or absent).
fn requests_if_small(w: &ServingWorkload, s: &Scenario) {
    let few = w.footprint(&s.setup).is_some_and(|f| f.bytes < 1e7);
    if few && w.trace.is_none() {
        let _ = w.requests(&s.setup);
    }
}
