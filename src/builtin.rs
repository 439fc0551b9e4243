//! Built-in scenarios, embedded in the binary so `moesim run NAME` works from
//! any directory. The files live in `scenarios/`.

/// `(name, TOML text)` of every built-in scenario, sorted by name.
pub const SCENARIOS: &[(&str, &str)] = &[
    ("allreduce-8xh800", include_str!("../scenarios/allreduce-8xh800.toml")),
    ("alltoall-16xh800-explicit", include_str!("../scenarios/alltoall-16xh800-explicit.toml")),
    ("alltoall-4096xh800", include_str!("../scenarios/alltoall-4096xh800.toml")),
    ("alltoall-512xh800", include_str!("../scenarios/alltoall-512xh800.toml")),
    ("chakra-allreduce-8npus-fullyconnected", include_str!("../scenarios/chakra-allreduce-8npus-fullyconnected.toml")),
    ("chakra-allreduce-8npus-ring", include_str!("../scenarios/chakra-allreduce-8npus-ring.toml")),
    ("chakra-allreduce-8npus-switch", include_str!("../scenarios/chakra-allreduce-8npus-switch.toml")),
    ("deepep-combine-ep64", include_str!("../scenarios/deepep-combine-ep64.toml")),
    ("deepep-dispatch-ep64", include_str!("../scenarios/deepep-dispatch-ep64.toml")),
    ("deepep-dispatch-ep72-nvl72", include_str!("../scenarios/deepep-dispatch-ep72-nvl72.toml")),
    ("deepep-dispatch-ep8", include_str!("../scenarios/deepep-dispatch-ep8.toml")),
    ("deepep-low-latency-ep256", include_str!("../scenarios/deepep-low-latency-ep256.toml")),
    ("deepseek-v2-lite-ascend-310", include_str!("../scenarios/deepseek-v2-lite-ascend-310.toml")),
    ("deepseek-v3-chunk-256xh800", include_str!("../scenarios/deepseek-v3-chunk-256xh800.toml")),
    ("deepseek-v3-decode-144xh800", include_str!("../scenarios/deepseek-v3-decode-144xh800.toml")),
    ("deepseek-v3-decode-72xh100", include_str!("../scenarios/deepseek-v3-decode-72xh100.toml")),
    ("deepseek-v3-grpo", include_str!("../scenarios/deepseek-v3-grpo.toml")),
    ("deepseek-v3-local-4090d", include_str!("../scenarios/deepseek-v3-local-4090d.toml")),
    ("deepseek-v3-prefill-32xh800", include_str!("../scenarios/deepseek-v3-prefill-32xh800.toml")),
    ("deepseek-v3-pretrain-2048xh800", include_str!("../scenarios/deepseek-v3-pretrain-2048xh800.toml")),
    ("deepseek-v3-serving-h800", include_str!("../scenarios/deepseek-v3-serving-h800.toml")),
    ("flashmla-decode-h800", include_str!("../scenarios/flashmla-decode-h800.toml")),
    ("gemm-ascend-910b", include_str!("../scenarios/gemm-ascend-910b.toml")),
    ("gemm-h800", include_str!("../scenarios/gemm-h800.toml")),
    ("gpt-1t-pretrain-3072xa100", include_str!("../scenarios/gpt-1t-pretrain-3072xa100.toml")),
    ("grouped-gemm-masked-h800", include_str!("../scenarios/grouped-gemm-masked-h800.toml")),
    ("llama-3.1-405b-pretrain-8192xh100", include_str!("../scenarios/llama-3.1-405b-pretrain-8192xh100.toml")),
    ("llama-3.1-8b-grpo-16xh100", include_str!("../scenarios/llama-3.1-8b-grpo-16xh100.toml")),
    ("pipeline-1f1b", include_str!("../scenarios/pipeline-1f1b.toml")),
    ("pipeline-dualpipe", include_str!("../scenarios/pipeline-dualpipe.toml")),
    ("replay-deepseek-train-h800", include_str!("../scenarios/replay-deepseek-train-h800.toml")),
];

/// What `moesim run` runs with no scenario.
pub const DEFAULT_SCENARIO: &str = "deepseek-v3-pretrain-2048xh800";

/// The text of a built-in scenario.
pub fn scenario(name: &str) -> Option<&'static str> {
    SCENARIOS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// The first comment line of a scenario, as its one-line description.
pub fn description(text: &str) -> String {
    text.lines()
        .take_while(|l| l.starts_with('#'))
        .map(|l| l.trim_start_matches('#').trim())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_are_sorted_and_unique_and_default_exists() {
        let names: Vec<&str> = super::SCENARIOS.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(super::scenario(super::DEFAULT_SCENARIO).is_some());
    }
}
