//! Helpers the workload uses around a run: Poisson arrival times (from
//! their own random stream), generation lengths drawn from a log-normal
//! (RL rollouts) and nearest-rank quantiles of the outcomes.

use rand_distr::{Distribution, Exp, LogNormal};

use crate::rng;

/// Arrival times (seconds) of a Poisson process at `rate_per_s` over
/// `duration_s`, from stream (seed, "serving-arrivals", 0).
pub fn poisson_arrivals(rate_per_s: f64, duration_s: f64, seed: u64) -> Vec<f64> {
    let mut rng = rng::stream(seed, "serving-arrivals", 0);
    let mut out = Vec::new();
    if !(rate_per_s > 0.0 && duration_s > 0.0) {
        return out;
    }
    // Exponential inter-arrival times: `rate_per_s` is positive and finite
    // here (checked above; an infinite rate would draw zero gaps forever).
    let Ok(gap) = Exp::new(rate_per_s) else { return out };
    if !rate_per_s.is_finite() {
        return out;
    }
    let mut t = 0.0;
    loop {
        t += gap.sample(&mut rng);
        if t > duration_s {
            return out;
        }
        out.push(t);
    }
}

/// `n` generation lengths, tokens, from a log-normal of mean `mean` and
/// shape `sigma` (the standard deviation of the log), cut at `max` (a
/// generation that reaches the cap stops there, as a rollout's
/// `max_new_tokens` does), at least 1; from stream (seed, "rollout-lengths",
/// 0). `None` when the parameters make no distribution.
pub fn lognormal_lengths(n: usize, mean: f64, sigma: f64, max: u64, seed: u64) -> Option<Vec<u64>> {
    if !(mean >= 1.0 && mean.is_finite() && sigma >= 0.0 && sigma.is_finite() && max >= 1) {
        return None;
    }
    // E[X] = exp(mu + sigma^2 / 2).
    let mu = mean.ln() - sigma * sigma / 2.0;
    let dist = LogNormal::new(mu, sigma).ok()?;
    let mut rng = rng::stream(seed, "rollout-lengths", 0);
    Some((0..n).map(|_| (dist.sample(&mut rng).round().max(1.0) as u64).min(max)).collect())
}

/// The `q`-quantile (0..=1) of `values` by nearest rank (sorts in place).
pub fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), 50.0);
        assert_eq!(quantile(&mut v, 0.99), 99.0);
        assert_eq!(quantile(&mut v, 1.0), 100.0);
    }

    #[test]
    fn lognormal_lengths_have_their_mean_and_stop_at_the_cap() {
        let l = lognormal_lengths(20_000, 1000.0, 0.6, 1_000_000, 1).unwrap();
        let mean = l.iter().sum::<u64>() as f64 / l.len() as f64;
        assert!((mean - 1000.0).abs() < 20.0, "{mean}");
        assert_eq!(l, lognormal_lengths(20_000, 1000.0, 0.6, 1_000_000, 1).unwrap());
        let capped = lognormal_lengths(20_000, 1000.0, 0.6, 1500, 1).unwrap();
        assert_eq!(*capped.iter().max().unwrap(), 1500);
        assert!(lognormal_lengths(10, 1000.0, 0.0, 5000, 1).unwrap().iter().all(|&x| x == 1000));
        assert!(lognormal_lengths(10, 0.0, 0.6, 5000, 1).is_none());
    }
}
