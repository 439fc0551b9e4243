//! Model presets against their published parameter counts, KV-cache sizes and
//! training FLOPs per token.
//!
//! A published count is checked to 1 % when it has three significant digits
//! (671B, 236B, 15.7B, 46.7B, 12.9B, 405B, 8.03B, 72.7B). DeepSeek's activated
//! counts have two (37B, 21B, 2.4B) and can only be checked to about a unit of
//! their last digit: they are held to 2.5 % (V3 comes out -1.0 %, V2 -0.7 %,
//! V2-Lite +2.1 %). DeepSeek counts activated parameters without the input
//! embedding table (a lookup), Mistral with it; each figure is compared under
//! its publisher's convention.

use moesim_models::ModelConfig;

/// Allowed absolute error for a published figure given with `digits` significant digits.
fn tolerance(published: f64, digits: u32) -> f64 {
    if digits >= 3 {
        0.01 * published
    } else {
        0.025 * published
    }
}

fn check(what: &str, computed: f64, published: f64, digits: u32) {
    let err = (computed - published) / published * 100.0;
    let tol = tolerance(published, digits);
    println!("{what}: computed {:.3}B, published {:.3}B, error {err:+.2}%", computed / 1e9, published / 1e9);
    assert!(
        (computed - published).abs() <= tol,
        "{what}: computed {computed:.4e}, published {published:.4e} ({err:+.2}%)"
    );
}

#[test]
fn parameter_counts_match_the_published_ones() {
    // (model, total, digits, active, digits, active includes the embedding table)
    let cases = [
        ("deepseek-v3", 671e9, 3, 37e9, 2, false),
        ("deepseek-v2", 236e9, 3, 21e9, 2, false),
        ("deepseek-v2-lite", 15.7e9, 3, 2.4e9, 2, false),
        ("mixtral-8x7b", 46.7e9, 3, 12.9e9, 3, true),
        ("llama-3.1-405b", 405e9, 3, 405e9, 3, false),
        // Meta's model card: 8.03B.
        ("llama-3.1-8b", 8.03e9, 3, 8.03e9, 3, false),
        ("qwen-2.5-72b", 72.7e9, 3, 72.7e9, 3, false),
    ];
    for (name, total, td, active, ad, with_embedding) in cases {
        let p = ModelConfig::preset(name).unwrap().params();
        check(&format!("{name} total"), p.total, total, td);
        let a = if with_embedding { p.active_incl_embedding } else { p.active };
        // Dense models: every parameter is active (compare the total).
        let a = if p.routed_experts == 0.0 { p.active_incl_embedding } else { a };
        check(&format!("{name} active"), a, active, ad);
    }
}

#[test]
fn deepseek_v3_exact_counts() {
    let p = ModelConfig::preset("deepseek-v3").unwrap().params();
    // 61 attention blocks of 187,121,664, 3 dense FFNs of 396,361,728, 58 MoE
    // layers of 257 experts x 44,040,192 + a 256 x 7168 gate, embedding and
    // head of 129,280 x 7168, final norm 7168.
    let attn = 61.0 * 187_121_664.0;
    let total = attn + 3.0 * 396_361_728.0 + 58.0 * (257.0 * 44_040_192.0 + 1_835_008.0) + 2.0 * 926_679_040.0 + 7168.0;
    assert_eq!(p.total, total);
    // The MTP module adds ~14B as published (V3-TR §4.2 / model card: 671B + 14B)
    // of which ~11.6B are its own and the rest the shared embedding and head copies.
    // 13.46B: "14B" is given to two digits; hold it to 5 %.
    assert!((p.mtp + p.embedding + p.head - 14e9).abs() < 0.05 * 14e9, "{}", p.mtp);
}

#[test]
fn kv_cache_bytes_per_token_match_isca25_table1() {
    for (name, bytes) in [("deepseek-v3", 70_272.0), ("qwen-2.5-72b", 327_680.0), ("llama-3.1-405b", 516_096.0)] {
        assert_eq!(ModelConfig::preset(name).unwrap().kv_cache_bytes_per_token(2.0), bytes, "{name}");
    }
}

#[test]
fn deepseek_v3_training_flops_per_token_match_isca25() {
    // ISCA25 Table 2: ~250 GFLOP per training token (sequence 4096).
    let f = ModelConfig::preset("deepseek-v3").unwrap().training_flops_per_token(4096);
    println!("deepseek-v3 training: {:.1} GFLOP/token", f / 1e9);
    assert!((f - 250e9).abs() / 250e9 < 0.05, "{f:.4e}");
}
