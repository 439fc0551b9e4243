//! Fixtures for the room's unit tests: fixed iteration times and a small
//! deployment (one prefill unit and one decode unit of two GPUs each).

use super::{IterationTimes, PrefillChunking, ServingConfig};

/// Fixed iteration times: prefill `a + b x tokens`, decode `c`.
pub(super) struct Linear {
    pub(super) a: f64,
    pub(super) b: f64,
    pub(super) c: f64,
}
impl IterationTimes for Linear {
    fn prefill_s(&mut self, new_tokens: u64, _keys: f64, _fill: f64) -> f64 {
        self.a + self.b * new_tokens as f64
    }
    fn decode_s(&mut self, _batch: u64, _context: f64) -> f64 {
        self.c
    }
}

pub(super) fn config() -> ServingConfig {
    ServingConfig {
        prefill_units: 1,
        prefill_gpus_per_unit: 2,
        prefill_tokens_per_gpu: 1000,
        prefill_chunking: PrefillChunking::Tokens,
        prefill_context_parallel: 1,
        decode_units: 1,
        decode_gpus_per_unit: 2,
        max_batch_per_gpu: 4,
        kv_capacity_tokens_per_gpu: 100_000,
        kv_bytes_per_token: 1000.0,
        kv_transfer_bytes_per_s: 1e9,
        kv_transfer_latency_s: 0.0,
        mtp_acceptance: None,
        seed: 1,
    }
}
