//! The workload registry: every `[workload] kind` a scenario may name, with
//! the function that reads its table. A new kind is one file in this folder
//! (its table, `impl Workload`) and one line in [`KINDS`].

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::inference::IterationWorkload;
use super::{collective, gemm, inference, moe_comm, op, pipeline, replay, serving, training, Workload};

/// One registered kind.
pub struct Kind {
    /// The `kind` value that selects it.
    pub name: &'static str,
    /// Reads the `[workload]` table out of a whole scenario file's text (so
    /// that errors carry the file's own line and column).
    pub parse: fn(&str) -> Result<Box<dyn Workload>, toml::de::Error>,
}

/// Every kind, in the order error messages list them.
pub const KINDS: &[Kind] = &[
    Kind { name: "collective", parse: table::<collective::CollectiveWorkload> },
    Kind { name: "moe-dispatch", parse: table::<moe_comm::MoeCommWorkload> },
    Kind { name: "moe-combine", parse: table::<moe_comm::MoeCommWorkload> },
    Kind { name: "gemm", parse: table::<gemm::GemmWorkload> },
    Kind { name: "pipeline", parse: table::<pipeline::PipelineWorkload> },
    Kind { name: "training", parse: table::<training::TrainingWorkload> },
    Kind { name: "op", parse: table::<op::OpWorkload> },
    Kind {
        name: "prefill",
        parse: |t| read::<inference::PrefillWorkload>(t).map(|w| boxed(IterationWorkload::Prefill(w))),
    },
    Kind {
        name: "decode",
        parse: |t| read::<inference::DecodeWorkload>(t).map(|w| boxed(IterationWorkload::Decode(w))),
    },
    Kind { name: "serving", parse: table::<serving::ServingWorkload> },
    Kind { name: "replay", parse: table::<replay::ReplayWorkload> },
];

/// The kind named `name`.
pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Every kind's name.
pub fn names() -> Vec<&'static str> {
    KINDS.iter().map(|k| k.name).collect()
}

/// The `[workload]` table of a file; the other tables are the scenario's
/// and checked there.
#[derive(Deserialize)]
struct WorkloadTable<W> {
    workload: W,
}

fn read<W: DeserializeOwned>(text: &str) -> Result<W, toml::de::Error> {
    toml::from_str::<WorkloadTable<W>>(text).map(|t| t.workload)
}

fn boxed<W: Workload + 'static>(w: W) -> Box<dyn Workload> {
    Box::new(w)
}

/// Reads a kind whose table type is its workload.
fn table<W: Workload + DeserializeOwned + 'static>(text: &str) -> Result<Box<dyn Workload>, toml::de::Error> {
    read::<W>(text).map(boxed)
}
