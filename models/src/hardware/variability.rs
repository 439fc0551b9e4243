//! GPU-to-GPU variability: the speed at which one GPU of many runs its
//! kernels when GPUs of the same SKU differ (manufacturing and power
//! management; Sinha et al., "Not All GPUs Are Created Equal", SC'22).
//!
//! A GPU's speed is min(1, 1 + spread x z), z a standard normal drawn per
//! GPU: the device preset is the median GPU, and no GPU runs above it (its
//! boost clock is the ceiling, so variability shows as GPUs running below
//! it). z is clipped to +-[`Z_CLIP`] so a speed stays positive for any
//! spread up to [`MAX_SPREAD`].

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

#[cfg(test)]
mod tests {
    use super::*;

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
