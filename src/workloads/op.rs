//! `kind = "op"`: one non-GEMM kernel on one device (fused attention,
//! RMSNorm, an elementwise pass) through the tiled cost models, with the
//! same per-tier report and roofline as `kind = "gemm"`.
//!
//! ```toml
//! [workload]
//! kind = "op"
//! op = "attention"        # attention | norm | elementwise
//! batch = 128             # attention: sequences
//! q_len = 1               # queries per sequence
//! kv_len = 4096           # keys per sequence
//! heads = 128
//! kv_heads = 1            # absorbed MLA decode: 1 latent KV head
//! qk_dim = 576
//! v_dim = 512
//! causal = true
//! pass = "forward"        # forward | backward
//! dtype = "bf16"
//! ```

use moesim_models::hardware::device::Dtype;
use moesim_models::hardware::ops::{AttentionShape, Op, OpOptions, Pass};
use moesim_sim::Observer;
use moesim_topologies::ConfigProblem;
use serde::Deserialize;
use serde_json::Value;

use super::gemm::{option_problems, run_op};
use super::{problem, Context, Outcome, RunFailure, RunOptions, Workload};
use crate::setup::Setup;

/// Which op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum OpName {
    Attention,
    Norm,
    Elementwise,
}

/// Forward or backward (the file's spelling of [`Pass`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum PassName {
    #[default]
    Forward,
    Backward,
}

/// The `[workload]` table of one op.
#[derive(Debug, Clone, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpWorkload {
    pub kind: String,
    pub op: OpName,
    #[serde(default = "bf16")]
    pub dtype: Dtype,
    #[serde(default)]
    pub pass: PassName,
    // attention
    /// Sequences in the batch.
    pub batch: Option<u64>,
    /// Query tokens per sequence (1 for decode).
    pub q_len: Option<u64>,
    /// Key/value tokens per sequence.
    pub kv_len: Option<u64>,
    /// Query heads.
    pub heads: Option<u64>,
    /// Key/value heads (1 for MLA's shared latent; fewer than heads for GQA).
    pub kv_heads: Option<u64>,
    /// Query/key head dimension.
    pub qk_dim: Option<u64>,
    /// Value head dimension.
    pub v_dim: Option<u64>,
    /// Causal mask (each query attends to keys up to its own position).
    #[serde(default)]
    pub causal: bool,
    // norm
    /// Rows (tokens) the norm runs over.
    pub tokens: Option<u64>,
    /// Elements per row.
    pub hidden: Option<u64>,
    // elementwise
    /// Bytes the elementwise pass reads.
    pub read_bytes: Option<f64>,
    /// Bytes the elementwise pass writes.
    pub write_bytes: Option<f64>,
    /// Non-tensor arithmetic of the pass, FLOP.
    pub flops: Option<f64>,
    /// SMs (or AI cores) the kernel may use (default: all).
    pub sms: Option<u32>,
    /// Tile shape [M, N, K] (default: the cost model's choice).
    pub tile: Option<[u32; 3]>,
}

fn bf16() -> Dtype {
    Dtype::Bf16
}

impl OpWorkload {
    fn required(&self) -> Vec<(&'static str, bool)> {
        match self.op {
            OpName::Attention => vec![
                ("workload.batch", self.batch.is_some()),
                ("workload.q_len", self.q_len.is_some()),
                ("workload.kv_len", self.kv_len.is_some()),
                ("workload.heads", self.heads.is_some()),
                ("workload.qk_dim", self.qk_dim.is_some()),
                ("workload.v_dim", self.v_dim.is_some()),
            ],
            OpName::Norm => {
                vec![("workload.tokens", self.tokens.is_some()), ("workload.hidden", self.hidden.is_some())]
            }
            OpName::Elementwise => {
                vec![
                    ("workload.read_bytes", self.read_bytes.is_some()),
                    ("workload.write_bytes", self.write_bytes.is_some()),
                ]
            }
        }
    }

    /// The op, once the table has what it needs.
    fn op(&self) -> Option<Op> {
        let pass = match self.pass {
            PassName::Forward => Pass::Forward,
            PassName::Backward => Pass::Backward,
        };
        Some(match self.op {
            OpName::Attention => Op::Attention(AttentionShape {
                batch: self.batch?,
                q_len: self.q_len?,
                kv_len: self.kv_len?,
                heads: self.heads?,
                kv_heads: self.kv_heads.or(self.heads)?,
                qk_dim: self.qk_dim?,
                v_dim: self.v_dim?,
                causal: self.causal,
                dtype: self.dtype,
                pass,
            }),
            OpName::Norm => Op::Norm { tokens: self.tokens?, hidden: self.hidden?, dtype: self.dtype, pass },
            OpName::Elementwise => Op::Elementwise {
                read_bytes: self.read_bytes?,
                write_bytes: self.write_bytes?,
                flops: self.flops.unwrap_or(0.0),
            },
        })
    }

    fn op_name(&self) -> &'static str {
        match self.op {
            OpName::Attention => "attention",
            OpName::Norm => "norm",
            OpName::Elementwise => "elementwise",
        }
    }
}

impl Workload for OpWorkload {
    fn kind_name(&self) -> &str {
        "op"
    }

    fn problems(&self, cx: Context) -> Vec<ConfigProblem> {
        let device = cx.device;
        let mut out = Vec::new();
        for (key, given) in self.required() {
            if !given {
                out.push(problem(key, format!("missing; op = \"{}\" needs it", self.op_name())));
            }
        }
        for (key, v) in [
            ("workload.batch", self.batch),
            ("workload.q_len", self.q_len),
            ("workload.kv_len", self.kv_len),
            ("workload.heads", self.heads),
            ("workload.kv_heads", self.kv_heads),
            ("workload.qk_dim", self.qk_dim),
            ("workload.v_dim", self.v_dim),
            ("workload.tokens", self.tokens),
            ("workload.hidden", self.hidden),
        ] {
            if v == Some(0) {
                out.push(problem(key, "expected an integer >= 1, found 0".into()));
            }
        }
        if let (Some(h), Some(kv)) = (self.heads, self.kv_heads) {
            if kv > 0 && h % kv != 0 {
                out.push(problem("workload.kv_heads", format!("expected a divisor of heads ({h}), found {kv}")));
            }
        }
        for (key, v) in [
            ("workload.read_bytes", self.read_bytes),
            ("workload.write_bytes", self.write_bytes),
            ("workload.flops", self.flops),
        ] {
            if let Some(v) = v {
                if !(v.is_finite() && v >= 0.0) {
                    out.push(problem(key, format!("expected a non-negative number, found {v}")));
                }
            }
        }
        if self.op == OpName::Attention {
            if let Some(Err(e)) = device.map(|d| d.tensor_flops_per_s(self.dtype)) {
                out.push(problem("workload.dtype", e.to_string()));
            }
        }
        out.extend(option_problems(self.sms, self.tile, device));
        out
    }

    fn run(&self, setup: &Setup, options: &RunOptions, observer: &mut dyn Observer) -> Result<Outcome, RunFailure> {
        let Some(op) = self.op() else {
            return Err(RunFailure::Input(vec![setup.source.at_key("workload.op", "incomplete op table")]));
        };
        let label = match &op {
            Op::Attention(a) => format!(
                "attention b{} q{} kv{} h{}/{} d{}/{} {}",
                a.batch,
                a.q_len,
                a.kv_len,
                a.heads,
                a.kv_heads,
                a.qk_dim,
                a.v_dim,
                if self.pass == PassName::Backward { "bwd" } else { "fwd" }
            ),
            Op::Norm { tokens, hidden, .. } => format!("rmsnorm {tokens}x{hidden}"),
            _ => "elementwise".to_owned(),
        };
        let mut outcome = run_op(setup, &op, &OpOptions { sms: self.sms, tile: self.tile }, &label, options, observer)?;
        outcome.metrics.insert("op".into(), Value::from(self.op_name()));
        outcome.metrics.insert("dtype".into(), Value::from(self.dtype.as_str()));
        if let Op::Attention(a) = &op {
            // FlashMLA counts the KV cache, Q and O once.
            let kv_width = if a.kv_heads < a.heads && a.qk_dim > a.v_dim { a.qk_dim } else { a.qk_dim + a.v_dim };
            let bytes = (a.batch * a.kv_len * a.kv_heads * kv_width
                + a.batch * a.q_len * a.heads * (a.qk_dim + a.v_dim)) as f64
                * a.dtype.bytes();
            let kernel_us = outcome.metrics.get("kernel_us").and_then(Value::as_f64).unwrap_or(1.0);
            outcome.metrics.insert("io_gb_per_s".into(), super::num(bytes / (kernel_us * 1e-6) / 1e9));
        }
        Ok(outcome)
    }
}
