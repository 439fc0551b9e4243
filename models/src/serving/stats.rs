//! Helpers the workload uses around a run: Poisson arrival times (from
//! their own random stream) and nearest-rank quantiles of the outcomes.

use rand_distr::{Distribution, Exp};

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
}
