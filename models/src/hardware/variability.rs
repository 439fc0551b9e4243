//! GPU-to-GPU variability: the speed at which one GPU of many runs its
//! kernels when GPUs of the same SKU differ (manufacturing and power
//! management; Sinha et al., "Not All GPUs Are Created Equal", SC'22).
//!
//! A GPU's speed is min(1, 1 + spread x z), z a standard normal drawn per
//! GPU: the device preset is the median GPU, and no GPU runs above it (its
//! boost clock is the ceiling, so variability shows as GPUs running below
//! it). z is clipped to +-[`Z_CLIP`] so a speed stays positive for any
//! spread up to [`MAX_SPREAD`].
//!
//! Also the lateness of ranks at a barrier: how far behind a typical member
//! the latest of a group arrives when each is late by a half-normal number
//! of scales ([`latest_beyond_typical`], [`lateness_beyond_typical`]).

use rand::Rng;

/// Largest spread accepted (a standard deviation of 20 % of the device's
/// speed; with z clipped the slowest GPU still runs at 20 %).
pub const MAX_SPREAD: f64 = 0.2;

/// The normal deviate is clipped to +-this many standard deviations.
pub const Z_CLIP: f64 = 4.0;

/// GPU `rank`'s speed as a fraction of the device's (random stream
/// "gpu-speed", index: the rank; the same rank and seed give the same speed
/// whatever else is drawn).
pub fn gpu_speed(seed: u64, rank: u32, spread: f64) -> f64 {
    let z: f64 = crate::rng::stream(seed, "gpu-speed", rank as u64).sample(rand_distr::StandardNormal);
    (1.0 + spread * z.clamp(-Z_CLIP, Z_CLIP)).min(1.0)
}

/// E|z| for a standard normal z: sqrt(2 / pi), the typical member's
/// lateness in scales.
pub const HALF_NORMAL_MEAN: f64 = 0.797_884_560_802_865_4;

/// How many scales after a typical member the latest of `n` arrives when
/// each member is late by |z| scales (z a standard normal): the expected
/// positive part of (max of n |z|) less E|z| (2: 0.43, 8: 0.99, 64: 1.80).
/// Integrates P(max > x) = 1 - erf(x / sqrt 2)^n from E|z| to 12 (the tail
/// past 12 is below 1e-30 for any n up to 1e6) by the trapezoid rule in
/// steps of 1e-3.
pub fn latest_beyond_typical(n: u32) -> f64 {
    const STEP: f64 = 1e-3;
    let steps = ((12.0 - HALF_NORMAL_MEAN) / STEP).ceil() as u32;
    let tail = |k: u32| 1.0 - libm::erf((HALF_NORMAL_MEAN + k as f64 * STEP) / std::f64::consts::SQRT_2).powi(n as i32);
    let inner: f64 = (1..steps).map(tail).sum();
    STEP * (inner + 0.5 * (tail(0) + tail(steps)))
}

/// Rank `rank`'s lateness at its `exchange`-th exchange beyond a typical
/// member's, in scales: (|z| - E|z|)+, z a standard normal (random stream
/// "ep-lateness", index `rank << 32 | exchange`) clipped to [`Z_CLIP`]. The
/// latest of a group's draws is [`latest_beyond_typical`] in expectation.
pub fn lateness_beyond_typical(seed: u64, rank: u32, exchange: u32) -> f64 {
    let index = (rank as u64) << 32 | exchange as u64;
    let z: f64 = crate::rng::stream(seed, "ep-lateness", index).sample(rand_distr::StandardNormal);
    (z.abs().min(Z_CLIP) - HALF_NORMAL_MEAN).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_of_a_group_is_the_half_normal_order_statistic() {
        // One member is never beyond itself on average by more than E(|z| - E|z|)+.
        let one: f64 = (0..20_000u32).map(|t| lateness_beyond_typical(5, 0, t)).sum::<f64>() / 20_000.0;
        assert!((latest_beyond_typical(1) - one).abs() < 0.02, "{one}");
        // Groups: the mean latest of seeded draws, as the every-rank lowering draws them.
        for n in [8u32, 64] {
            let trials = 4_000u32;
            let mean =
                (0..trials).map(|t| (0..n).map(|r| lateness_beyond_typical(3, r, t)).fold(0.0, f64::max)).sum::<f64>()
                    / trials as f64;
            let e = latest_beyond_typical(n);
            assert!((mean - e).abs() < 0.03 * e, "n {n}: sampled {mean}, expected {e}");
        }
        // E[max of 64 |z|] = 2.596 (the half-normal order statistic), less E|z|.
        assert!((latest_beyond_typical(64) - (2.5961 - HALF_NORMAL_MEAN)).abs() < 0.001);
        assert!((HALF_NORMAL_MEAN - (2.0 / std::f64::consts::PI).sqrt()).abs() < 1e-15);
    }

    #[test]
    fn half_the_gpus_run_at_the_preset_and_the_rest_below() {
        let speeds: Vec<f64> = (0..10_000).map(|r| gpu_speed(1, r, 0.02)).collect();
        let at_preset = speeds.iter().filter(|&&s| s == 1.0).count();
        assert!((4_800..5_200).contains(&at_preset), "{at_preset} of 10,000 at the preset");
        let min = speeds.iter().cloned().fold(1.0, f64::min);
        assert!((1.0 - 0.02 * Z_CLIP..0.94).contains(&min), "slowest {min}");
        // The slower half is the lower half of N(1, 0.02): its mean is 1 - 0.02 x sqrt(2 / pi).
        let slow: Vec<f64> = speeds.iter().cloned().filter(|&s| s < 1.0).collect();
        let mean = slow.iter().sum::<f64>() / slow.len() as f64;
        assert!((mean - (1.0 - 0.02 * (2.0 / std::f64::consts::PI).sqrt())).abs() < 0.0005, "mean {mean}");
        assert_eq!(gpu_speed(1, 7, 0.02), gpu_speed(1, 7, 0.02));
        assert_eq!(gpu_speed(1, 7, 0.0), 1.0);
    }
}
