//! The workload registry: every `[workload] kind` a scenario may name, with
//! the function that reads its table. A new kind is one file in this folder
//! (its table, `impl Workload`) and one line in [`KINDS`].

use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::inference::IterationWorkload;
use super::{collective, gemm, grpo, inference, local, moe_comm, op, pipeline, replay, serving, training, Workload};

/// One registered kind.
pub struct Kind {
    /// The `kind` value that selects it.
    pub name: &'static str,
    /// Reads the `[workload]` table out of a whole scenario file's text (so
    /// that errors carry the file's own line and column).
    pub parse: fn(&str) -> Result<Box<dyn Workload>, toml::de::Error>,
    /// The JSON Schema of its table (from the same struct `parse` reads).
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// What it runs, in a line (`moesim keys`).
    pub about: &'static str,
}

/// Every kind, in the order error messages list them.
pub const KINDS: &[Kind] = &[
    Kind {
        name: "collective",
        parse: table::<collective::CollectiveWorkload>,
        schema: schema_of::<collective::CollectiveWorkload>,
        about: "One collective (all-reduce, all-gather, reduce-scatter, all-to-all) as nccl-tests runs it.",
    },
    Kind {
        name: "moe-dispatch",
        parse: table::<moe_comm::MoeCommWorkload>,
        schema: schema_of::<moe_comm::MoeCommWorkload>,
        about: "One MoE dispatch (tokens to experts, DeepEP-style) across the expert-parallel group.",
    },
    Kind {
        name: "moe-combine",
        parse: table::<moe_comm::MoeCommWorkload>,
        schema: schema_of::<moe_comm::MoeCommWorkload>,
        about: "One MoE combine (expert outputs back to their tokens) across the expert-parallel group.",
    },
    Kind {
        name: "gemm",
        parse: table::<gemm::GemmWorkload>,
        schema: schema_of::<gemm::GemmWorkload>,
        about: "One GEMM on one device (roofline with the device's efficiency).",
    },
    Kind {
        name: "pipeline",
        parse: table::<pipeline::PipelineWorkload>,
        schema: schema_of::<pipeline::PipelineWorkload>,
        about: "A pipeline-parallel schedule of forward/backward passes.",
    },
    Kind {
        name: "training",
        parse: table::<training::TrainingWorkload>,
        schema: schema_of::<training::TrainingWorkload>,
        about: "Training steps of a model under a parallel plan.",
    },
    Kind {
        name: "op",
        parse: table::<op::OpWorkload>,
        schema: schema_of::<op::OpWorkload>,
        about: "One operator (attention, MoE layer, ...) on one device.",
    },
    Kind {
        name: "prefill",
        parse: |t| read::<inference::PrefillWorkload>(t).map(|w| boxed(IterationWorkload::Prefill(w))),
        schema: schema_of::<inference::PrefillWorkload>,
        about: "One prefill iteration of a model on a serving unit.",
    },
    Kind {
        name: "decode",
        parse: |t| read::<inference::DecodeWorkload>(t).map(|w| boxed(IterationWorkload::Decode(w))),
        schema: schema_of::<inference::DecodeWorkload>,
        about: "One decode iteration of a model on a serving unit.",
    },
    Kind {
        name: "serving",
        parse: table::<serving::ServingWorkload>,
        schema: schema_of::<serving::ServingWorkload>,
        about: "Prefill/decode disaggregated serving of a request stream (Poisson or a trace).",
    },
    Kind {
        name: "local",
        parse: table::<local::LocalWorkload>,
        schema: schema_of::<local::LocalWorkload>,
        about: "A model on one machine: a GPU or SoC beside CPU sockets with large DRAM (KTransformers, llama.cpp).",
    },
    Kind {
        name: "replay",
        parse: table::<replay::ReplayWorkload>,
        schema: schema_of::<replay::ReplayWorkload>,
        about: "Real traces (Kineto JSON or Chakra ET) replayed on modelled hardware.",
    },
    Kind {
        name: "grpo",
        parse: table::<grpo::GrpoWorkload>,
        schema: schema_of::<grpo::GrpoWorkload>,
        about: "One GRPO post-training iteration: rollout, scoring, policy update, weight sync (colocated or disaggregated).",
    },
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

/// The schema of a kind's table type, inline.
fn schema_of<W: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    W::json_schema(generator)
}
