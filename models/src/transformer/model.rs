//! Transformer model configs (`ModelConfig`) and the embedded presets
//! (`presets/models/*.toml`, each value with its source): DeepSeek-V3/V2/V2-Lite
//! and Mixtral (MoE), Llama 3.1 405B and Qwen2.5-72B (dense, for comparison).
//!
//! From a config come the counts capacity planning needs: parameters (total
//! and activated per token), FLOPs per token, KV-cache bytes per token, and the
//! per-layer shapes the op lowering uses.

use serde::{Deserialize, Serialize};

use moesim_topologies::ConfigProblem;

use crate::error::ModelError;

/// Attention variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttentionKind {
    /// Multi-head latent attention (DeepSeek-V2/V3): low-rank compressed KV.
    Mla,
    /// Grouped-query attention (Llama, Mixtral, Qwen): `kv_heads` shared K/V heads.
    Gqa,
}

/// The attention block of every layer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttentionConfig {
    pub kind: AttentionKind,
    /// Attention (query) heads.
    pub heads: u32,
    /// MLA: rank of the query compression (0 = queries not compressed).
    #[serde(default)]
    pub q_lora_rank: u32,
    /// MLA: rank of the joint key/value compression (the cached latent).
    #[serde(default)]
    pub kv_lora_rank: u32,
    /// MLA: per-head query/key dimension without RoPE.
    #[serde(default)]
    pub qk_nope_head_dim: u32,
    /// MLA: decoupled RoPE dimension (one shared key per token).
    #[serde(default)]
    pub qk_rope_head_dim: u32,
    /// MLA: per-head value dimension.
    #[serde(default)]
    pub v_head_dim: u32,
    /// GQA: key/value heads.
    #[serde(default)]
    pub kv_heads: u32,
    /// GQA: per-head dimension.
    #[serde(default)]
    pub head_dim: u32,
    /// GQA: biases on the Q, K and V projections (Qwen).
    #[serde(default)]
    pub qkv_bias: bool,
}

/// The activation of the feed-forward blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum FfnActivation {
    /// Gate, up and down projections; `silu(gate) * up` (Llama, DeepSeek, Qwen, Mixtral).
    #[default]
    Swiglu,
    /// Up and down projections with GeLU between them (GPT-2/3, Megatron-LM's GPT).
    Gelu,
}

/// Dense feed-forward layers (SwiGLU: gate, up and down projections; GeLU:
/// up and down).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FfnConfig {
    /// The first `dense_layers` layers are dense; the rest are MoE (if `[moe]`).
    pub dense_layers: u32,
    /// Intermediate size of the dense FFN layers.
    pub dense_intermediate: u32,
    #[serde(default)]
    pub activation: FfnActivation,
}

/// Mixture-of-experts layers.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MoeConfig {
    /// Routed experts per MoE layer.
    pub routed_experts: u32,
    /// Shared experts every token goes through, per MoE layer.
    pub shared_experts: u32,
    /// Intermediate size of one expert.
    pub expert_intermediate: u32,
    /// Routed experts activated per token.
    pub topk: u32,
    /// Experts are split evenly into this many groups ...
    pub groups: u32,
    /// ... and a token's routed experts come from at most this many.
    pub group_limit: u32,
}

/// A decoder-only transformer.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Preset name.
    pub name: String,
    /// The published model it describes.
    pub product: String,
    /// Transformer layers (dense and MoE).
    pub layers: u32,
    /// Hidden size (model dimension).
    pub hidden: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// Whether the output layer reuses the input embedding's weights.
    pub tie_embeddings: bool,
    /// Longest context the model supports, tokens.
    pub max_context: u64,
    /// Multi-token-prediction modules (DeepSeek-V3: 1), each one extra layer
    /// sharing the embedding and output head.
    #[serde(default)]
    pub mtp_modules: u32,
    /// Dropout after attention and the FFN (GPT-3 style): its masks are
    /// stored for the backward pass (1 byte per element, Korthikanti et al.
    /// 2022 §4.1). Off for today's LLMs.
    #[serde(default)]
    pub dropout: bool,
    pub attention: AttentionConfig,
    pub ffn: FfnConfig,
    pub moe: Option<MoeConfig>,
}

/// What a layer's feed-forward block is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FfnKind {
    Dense,
    Moe,
}

/// `(name, TOML text)` of every embedded model preset, sorted by name.
const PRESETS: &[(&str, &str)] = &[
    ("deepseek-v2", include_str!("../../presets/models/deepseek-v2.toml")),
    ("deepseek-v2-lite", include_str!("../../presets/models/deepseek-v2-lite.toml")),
    ("deepseek-v3", include_str!("../../presets/models/deepseek-v3.toml")),
    ("gpt-1.7b", include_str!("../../presets/models/gpt-1.7b.toml")),
    ("gpt-145b", include_str!("../../presets/models/gpt-145b.toml")),
    ("gpt-175b", include_str!("../../presets/models/gpt-175b.toml")),
    ("gpt-18b", include_str!("../../presets/models/gpt-18b.toml")),
    ("gpt-1t", include_str!("../../presets/models/gpt-1t.toml")),
    ("gpt-22b", include_str!("../../presets/models/gpt-22b.toml")),
    ("gpt-3.6b", include_str!("../../presets/models/gpt-3.6b.toml")),
    ("gpt-310b", include_str!("../../presets/models/gpt-310b.toml")),
    ("gpt-39b", include_str!("../../presets/models/gpt-39b.toml")),
    ("gpt-530b", include_str!("../../presets/models/gpt-530b.toml")),
    ("gpt-7.5b", include_str!("../../presets/models/gpt-7.5b.toml")),
    ("gpt-76b", include_str!("../../presets/models/gpt-76b.toml")),
    ("llama-3.1-405b", include_str!("../../presets/models/llama-3.1-405b.toml")),
    ("llama-3.1-8b", include_str!("../../presets/models/llama-3.1-8b.toml")),
    ("mixtral-8x7b", include_str!("../../presets/models/mixtral-8x7b.toml")),
    ("qwen-2.5-72b", include_str!("../../presets/models/qwen-2.5-72b.toml")),
];

/// Parameter counts, split the way memory and compute need them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ParamCounts {
    /// Every parameter of the main model (MTP modules excluded, as published).
    pub total: f64,
    /// Parameters a token's forward pass multiplies by: everything but the
    /// routed experts it was not sent to and the input embedding table (a
    /// lookup). DeepSeek's published "activated" counts use this convention.
    pub active: f64,
    /// `active` plus the input embedding table (Mistral's convention).
    pub active_incl_embedding: f64,
    /// Routed-expert parameters (sharded by expert parallelism).
    pub routed_experts: f64,
    /// The MTP modules' own parameters (their embedding and head are shared).
    pub mtp: f64,
    pub embedding: f64,
    pub head: f64,
}

impl ModelConfig {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// The embedded preset's TOML text (with its source comments).
    pub fn preset_text(name: &str) -> Result<&'static str, ModelError> {
        PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ModelError::UnknownPreset {
            what: "model",
            name: name.to_owned(),
            known: Self::preset_names().iter().map(|s| s.to_string()).collect(),
        })
    }

    /// Parses and checks an embedded preset.
    pub fn preset(name: &str) -> Result<ModelConfig, ModelError> {
        let text = Self::preset_text(name)?;
        let bad = |message: String| ModelError::BadPreset { name: name.to_owned(), message };
        let model: ModelConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = model.problems().first() {
            return Err(bad(format!("{}: {}", p.key, p.message)));
        }
        Ok(model)
    }

    /// Every impossible value, keys relative to the model table.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        let mut at_least_one = |key: &str, v: u64| {
            if v == 0 {
                out.push(ConfigProblem { key: key.into(), message: "expected an integer >= 1, found 0".into() });
            }
        };
        at_least_one("layers", self.layers as u64);
        at_least_one("hidden", self.hidden as u64);
        at_least_one("vocab", self.vocab as u64);
        at_least_one("max_context", self.max_context);
        at_least_one("attention.heads", self.attention.heads as u64);
        let a = &self.attention;
        match a.kind {
            AttentionKind::Mla => {
                at_least_one("attention.kv_lora_rank", a.kv_lora_rank as u64);
                at_least_one("attention.qk_nope_head_dim", a.qk_nope_head_dim as u64);
                at_least_one("attention.v_head_dim", a.v_head_dim as u64);
            }
            AttentionKind::Gqa => {
                at_least_one("attention.kv_heads", a.kv_heads as u64);
                at_least_one("attention.head_dim", a.head_dim as u64);
            }
        }
        if a.kind == AttentionKind::Gqa && a.kv_heads > 0 && !a.heads.is_multiple_of(a.kv_heads) {
            out.push(ConfigProblem {
                key: "attention.kv_heads".into(),
                message: format!("expected a divisor of the {} heads, found {}", a.heads, a.kv_heads),
            });
        }
        if self.ffn.activation == FfnActivation::Gelu && self.moe.is_some() {
            out.push(ConfigProblem {
                key: "ffn.activation".into(),
                message: "experts are SwiGLU here: \"gelu\" is for dense models".into(),
            });
        }
        if self.ffn.dense_layers > self.layers {
            out.push(ConfigProblem {
                key: "ffn.dense_layers".into(),
                message: format!("expected at most the {} layers, found {}", self.layers, self.ffn.dense_layers),
            });
        }
        if self.ffn.dense_layers > 0 && self.ffn.dense_intermediate == 0 {
            out.push(ConfigProblem {
                key: "ffn.dense_intermediate".into(),
                message: "expected an integer >= 1, found 0".into(),
            });
        }
        match &self.moe {
            Some(m) => {
                for (k, v) in [
                    ("moe.routed_experts", m.routed_experts),
                    ("moe.expert_intermediate", m.expert_intermediate),
                    ("moe.topk", m.topk),
                    ("moe.groups", m.groups),
                    ("moe.group_limit", m.group_limit),
                ] {
                    if v == 0 {
                        out.push(ConfigProblem { key: k.into(), message: "expected an integer >= 1, found 0".into() });
                    }
                }
                if m.groups > 0 && !m.routed_experts.is_multiple_of(m.groups) {
                    out.push(ConfigProblem {
                        key: "moe.groups".into(),
                        message: format!(
                            "expected a divisor of the {} routed experts, found {}",
                            m.routed_experts, m.groups
                        ),
                    });
                }
                if m.group_limit > m.groups {
                    out.push(ConfigProblem {
                        key: "moe.group_limit".into(),
                        message: format!("expected at most the {} groups, found {}", m.groups, m.group_limit),
                    });
                }
                let reachable =
                    m.routed_experts.checked_div(m.groups).map_or(0, |per| per * m.group_limit.min(m.groups));
                if m.topk > reachable && m.groups > 0 {
                    out.push(ConfigProblem {
                        key: "moe.topk".into(),
                        message: format!(
                            "expected at most {reachable} (the experts of group_limit groups), found {}",
                            m.topk
                        ),
                    });
                }
            }
            None if self.ffn.dense_layers < self.layers => out.push(ConfigProblem {
                key: "ffn.dense_layers".into(),
                message: format!(
                    "a model without a [moe] table must have every layer dense: expected {}, found {}",
                    self.layers, self.ffn.dense_layers
                ),
            }),
            None => {}
        }
        out
    }

    /// The feed-forward kind of layer `i` (0-based).
    pub fn ffn_kind(&self, layer: u32) -> FfnKind {
        if layer < self.ffn.dense_layers || self.moe.is_none() {
            FfnKind::Dense
        } else {
            FfnKind::Moe
        }
    }

    /// Number of MoE layers in the main model.
    pub fn moe_layers(&self) -> u32 {
        if self.moe.is_some() {
            self.layers - self.ffn.dense_layers
        } else {
            0
        }
    }

    /// Per-head query/key and value dimensions as attention computes them in
    /// training and prefill (MLA decompressed to full heads).
    pub fn attention_head_dims(&self) -> (u32, u32) {
        let a = &self.attention;
        match a.kind {
            AttentionKind::Mla => (a.qk_nope_head_dim + a.qk_rope_head_dim, a.v_head_dim),
            AttentionKind::Gqa => (a.head_dim, a.head_dim),
        }
    }

    /// Matrix shapes `(k, n)` of the attention block's projections, in order.
    pub fn attention_projections(&self) -> Vec<(&'static str, u64, u64)> {
        let a = &self.attention;
        let h = self.hidden as u64;
        let heads = a.heads as u64;
        match a.kind {
            AttentionKind::Mla => {
                let qk = (a.qk_nope_head_dim + a.qk_rope_head_dim) as u64;
                let mut v = Vec::new();
                if a.q_lora_rank > 0 {
                    v.push(("q_a_proj", h, a.q_lora_rank as u64));
                    v.push(("q_b_proj", a.q_lora_rank as u64, heads * qk));
                } else {
                    v.push(("q_proj", h, heads * qk));
                }
                v.push(("kv_a_proj", h, (a.kv_lora_rank + a.qk_rope_head_dim) as u64));
                v.push(("kv_b_proj", a.kv_lora_rank as u64, heads * (a.qk_nope_head_dim + a.v_head_dim) as u64));
                v.push(("o_proj", heads * a.v_head_dim as u64, h));
                v
            }
            AttentionKind::Gqa => {
                let d = a.head_dim as u64;
                vec![("qkv_proj", h, (heads + 2 * a.kv_heads as u64) * d), ("o_proj", heads * d, h)]
            }
        }
    }

    /// Parameters of one attention block (projections, biases, its norms).
    pub fn attention_params(&self) -> f64 {
        let a = &self.attention;
        let mut p: f64 = self.attention_projections().iter().map(|&(_, k, n)| (k * n) as f64).sum();
        match a.kind {
            AttentionKind::Mla => p += (a.q_lora_rank + a.kv_lora_rank) as f64, // q_a and kv_a norms
            AttentionKind::Gqa if a.qkv_bias => p += ((a.heads + 2 * a.kv_heads) * a.head_dim) as f64,
            AttentionKind::Gqa => {}
        }
        p + 2.0 * self.hidden as f64 // input and post-attention RMSNorm
    }

    /// Parameters of one expert / FFN of intermediate size `inter`.
    pub fn ffn_params(&self, inter: u32) -> f64 {
        self.ffn_matrices() as f64 * self.hidden as f64 * inter as f64
    }

    /// Weight matrices of an FFN: 3 for SwiGLU, 2 for GeLU.
    pub fn ffn_matrices(&self) -> u32 {
        match self.ffn.activation {
            FfnActivation::Swiglu => 3,
            FfnActivation::Gelu => 2,
        }
    }

    /// Parameter counts of the whole model.
    pub fn params(&self) -> ParamCounts {
        let h = self.hidden as f64;
        let attn = self.attention_params();
        let embedding = self.vocab as f64 * h;
        let head = if self.tie_embeddings { 0.0 } else { embedding };
        let dense = self.ffn.dense_layers.min(self.layers) as f64 * self.ffn_params(self.ffn.dense_intermediate);
        let (moe_total, moe_active, routed) = match &self.moe {
            Some(m) => {
                let expert = self.ffn_params(m.expert_intermediate);
                let gate = m.routed_experts as f64 * h;
                let n = self.moe_layers() as f64;
                (
                    n * ((m.routed_experts + m.shared_experts) as f64 * expert + gate),
                    n * ((m.topk + m.shared_experts) as f64 * expert + gate),
                    n * m.routed_experts as f64 * expert,
                )
            }
            None => (0.0, 0.0, 0.0),
        };
        let body = self.layers as f64 * attn + dense + h; // + final norm
        let mtp_layer = attn
            + match &self.moe {
                Some(m) => {
                    (m.routed_experts + m.shared_experts) as f64 * self.ffn_params(m.expert_intermediate)
                        + m.routed_experts as f64 * h
                }
                None => self.ffn_params(self.ffn.dense_intermediate),
            };
        // Each MTP module: one layer, a 2h -> h projection and two norms.
        let mtp = self.mtp_modules as f64 * (mtp_layer + 2.0 * h * h + 2.0 * h);
        let active = body + moe_active + head;
        ParamCounts {
            total: body + moe_total + embedding + head,
            active,
            active_incl_embedding: active + embedding,
            routed_experts: routed,
            mtp,
            embedding,
            head,
        }
    }

    /// KV-cache bytes per token over all layers at `bytes_per_value` (2 for
    /// BF16): MLA caches the latent and the RoPE key; GQA caches K and V.
    pub fn kv_cache_bytes_per_token(&self, bytes_per_value: f64) -> f64 {
        let a = &self.attention;
        let per_layer = match a.kind {
            AttentionKind::Mla => (a.kv_lora_rank + a.qk_rope_head_dim) as f64,
            AttentionKind::Gqa => 2.0 * a.kv_heads as f64 * a.head_dim as f64,
        };
        self.layers as f64 * per_layer * bytes_per_value
    }

    /// Forward FLOPs of the matrix multiplications per token (2 per activated
    /// weight, the input embedding excluded), without the attention scores.
    pub fn matmul_flops_per_token(&self) -> f64 {
        2.0 * self.params().active
    }

    /// Forward FLOPs of attention scores and weighted values per token for a
    /// token that attends to `keys` keys (MLA at training shapes).
    pub fn attention_flops_per_token(&self, keys: f64) -> f64 {
        let (qk, v) = self.attention_head_dims();
        2.0 * self.layers as f64 * self.attention.heads as f64 * (qk + v) as f64 * keys
    }

    /// Training FLOPs per token (forward + backward = 3x forward) for causal
    /// sequences of `seq_len` tokens, MTP excluded.
    pub fn training_flops_per_token(&self, seq_len: u64) -> f64 {
        let keys = (seq_len as f64 + 1.0) / 2.0;
        3.0 * (self.matmul_flops_per_token() + self.attention_flops_per_token(keys))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_is_consistent() {
        for name in ModelConfig::preset_names() {
            let m = ModelConfig::preset(name).unwrap();
            assert_eq!(m.name, name);
            assert!(m.params().active <= m.params().total);
        }
    }

    #[test]
    fn deepseek_v3_layer_kinds_and_dims() {
        let m = ModelConfig::preset("deepseek-v3").unwrap();
        assert_eq!(m.ffn_kind(2), FfnKind::Dense);
        assert_eq!(m.ffn_kind(3), FfnKind::Moe);
        assert_eq!(m.moe_layers(), 58);
        assert_eq!(m.attention_head_dims(), (192, 128));
        // q_a, q_b, kv_a, kv_b, o: 187,105,280 weights + 2048 norm + 2 x 7168.
        let weights: u64 = m.attention_projections().iter().map(|(_, k, n)| k * n).sum();
        assert_eq!(weights, 11_010_048 + 37_748_736 + 4_128_768 + 16_777_216 + 117_440_512);
    }

    #[test]
    fn problems_name_the_key() {
        let mut m = ModelConfig::preset("deepseek-v3").unwrap();
        m.moe.as_mut().unwrap().groups = 7;
        m.layers = 0;
        let keys: Vec<String> = m.problems().into_iter().map(|p| p.key).collect();
        assert!(keys.contains(&"moe.groups".to_owned()) && keys.contains(&"layers".to_owned()), "{keys:?}");
    }
}
