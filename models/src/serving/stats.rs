//! Helpers the workload uses around a run: Poisson arrival times (from
//! their own random stream, drawn as needed by [`PoissonArrivals`]),
//! generation lengths drawn from a log-normal (RL rollouts) and
//! nearest-rank quantiles of the outcomes: exact ([`quantile`]), or, past
//! [`EXACT_VALUES`] values, from a log-bucketed sketch whose answer is
//! within [`SKETCH_RELATIVE_ERROR`] of the exact one ([`Quantiles`], the
//! DDSketch construction of Masson, Rim and Lee, VLDB 2019: mergeable,
//! bounded memory, a relative error bound at every quantile).

use rand_distr::{Distribution, Exp, LogNormal};

use crate::rng;

/// Arrival times (seconds) of a Poisson process at `rate_per_s` over
/// `duration_s`, from stream (seed, "serving-arrivals", 0).
pub fn poisson_arrivals(rate_per_s: f64, duration_s: f64, seed: u64) -> Vec<f64> {
    PoissonArrivals::new(rate_per_s, duration_s, seed).collect()
}

/// The arrival times of [`poisson_arrivals`], drawn one at a time.
pub struct PoissonArrivals {
    rng: rand::rngs::SmallRng,
    /// `None`: no (more) arrivals.
    gap: Option<Exp<f64>>,
    duration_s: f64,
    t: f64,
}

impl PoissonArrivals {
    pub fn new(rate_per_s: f64, duration_s: f64, seed: u64) -> PoissonArrivals {
        // Exponential inter-arrival times: `rate_per_s` must be positive and
        // finite (an infinite rate would draw zero gaps forever).
        let ok = rate_per_s > 0.0 && duration_s > 0.0 && rate_per_s.is_finite();
        PoissonArrivals {
            rng: rng::stream(seed, "serving-arrivals", 0),
            gap: if ok { Exp::new(rate_per_s).ok() } else { None },
            duration_s,
            t: 0.0,
        }
    }
}

impl Iterator for PoissonArrivals {
    type Item = f64;
    fn next(&mut self) -> Option<f64> {
        let gap = self.gap.as_ref()?;
        self.t += gap.sample(&mut self.rng);
        if self.t > self.duration_s {
            self.gap = None;
            return None;
        }
        Some(self.t)
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

/// Values [`Quantiles`] keeps exactly before it turns to its sketch
/// (8 MiB of them).
pub const EXACT_VALUES: usize = 1 << 20;

/// The sketch's bound: its quantile is within this share of the exact
/// nearest-rank quantile (0.1 %).
pub const SKETCH_RELATIVE_ERROR: f64 = 0.001;

/// A sample's mean and nearest-rank quantiles in bounded memory: exact up to
/// [`EXACT_VALUES`] values, then a sketch ([`SKETCH_RELATIVE_ERROR`]). Values
/// are positive (latencies); zero and below share one bucket.
#[derive(Debug, Clone)]
pub struct Quantiles {
    exact: Vec<f64>,
    sketch: Option<Sketch>,
    count: u64,
    sum: f64,
    exact_limit: usize,
}

impl Default for Quantiles {
    fn default() -> Quantiles {
        Quantiles::with_exact_limit(EXACT_VALUES)
    }
}

impl Quantiles {
    /// Exact up to `limit` values (0: the sketch from the first).
    pub fn with_exact_limit(limit: usize) -> Quantiles {
        Quantiles { exact: Vec::new(), sketch: None, count: 0, sum: 0.0, exact_limit: limit }
    }

    pub fn push(&mut self, x: f64) {
        self.count += 1;
        self.sum += x;
        match &mut self.sketch {
            Some(s) => s.add(x),
            None => {
                self.exact.push(x);
                if self.exact.len() > self.exact_limit {
                    let mut s = Sketch::default();
                    for &v in &self.exact {
                        s.add(v);
                    }
                    self.sketch = Some(s);
                    self.exact = Vec::new();
                }
            }
        }
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Whether [`Quantiles::quantile`] is exact (else within
    /// [`SKETCH_RELATIVE_ERROR`]).
    pub fn is_exact(&self) -> bool {
        self.sketch.is_none()
    }

    /// The mean (summed in push order: exact either way).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.sum / self.count as f64
        }
    }

    /// The `q`-quantile by nearest rank (NaN when empty).
    pub fn quantile(&mut self, q: f64) -> f64 {
        match &self.sketch {
            Some(s) => s.quantile(q, self.count),
            None => quantile(&mut self.exact, q),
        }
    }

    /// The empirical CDF as (value, fraction at or below) points, at most
    /// about 2,000 and the last at fraction 1.
    pub fn cdf_points(&mut self) -> Vec<(f64, f64)> {
        let n = self.count as usize;
        let mut pts = Vec::new();
        match &self.sketch {
            None => {
                let values = &mut self.exact;
                values.sort_by(f64::total_cmp);
                let step = (n / 2000).max(1);
                pts.extend((0..n).step_by(step).map(|i| (values[i], (i + 1) as f64 / n as f64)));
                if let Some(&last) = values.last() {
                    pts.push((last, 1.0));
                }
            }
            Some(s) => {
                let mut below = 0u64;
                for (value, count) in s.buckets() {
                    below += count;
                    pts.push((value, below as f64 / n as f64));
                }
            }
        }
        pts
    }
}

/// Log-spaced buckets: bucket `i` holds values in (g^(i-1), g^i], g =
/// (1 + a) / (1 - a), and answers 2 g^i / (g + 1), within a (relative) of
/// any value in it.
#[derive(Debug, Clone, Default)]
struct Sketch {
    /// Counts of buckets `offset..offset + len`.
    counts: Vec<u64>,
    offset: i32,
    /// Values at or below zero (or below the smallest positive f64 bucket).
    zeros: u64,
}

impl Sketch {
    fn gamma_ln() -> f64 {
        ((1.0 + SKETCH_RELATIVE_ERROR) / (1.0 - SKETCH_RELATIVE_ERROR)).ln()
    }

    fn add(&mut self, x: f64) {
        if x.is_nan() || x <= 0.0 || x.is_infinite() {
            // Latencies are positive and finite; anything else counts as zero.
            self.zeros += 1;
            return;
        }
        let i = (x.ln() / Self::gamma_ln()).ceil() as i32;
        if self.counts.is_empty() {
            self.offset = i;
        }
        if i < self.offset {
            let grow = (self.offset - i) as usize;
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset = i;
        }
        let k = (i - self.offset) as usize;
        if k >= self.counts.len() {
            self.counts.resize(k + 1, 0);
        }
        self.counts[k] += 1;
    }

    fn value_of(i: i32) -> f64 {
        let g = (1.0 + SKETCH_RELATIVE_ERROR) / (1.0 - SKETCH_RELATIVE_ERROR);
        2.0 * (i as f64 * Self::gamma_ln()).exp() / (g + 1.0)
    }

    /// (bucket value, count) in increasing value, the zero bucket first.
    fn buckets(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        let zeros = (self.zeros > 0).then_some((0.0, self.zeros));
        zeros.into_iter().chain(
            self.counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(k, &c)| (Self::value_of(self.offset + k as i32), c)),
        )
    }

    fn quantile(&self, q: f64, count: u64) -> f64 {
        if count == 0 {
            return f64::NAN;
        }
        let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
        let mut below = 0;
        let mut last = f64::NAN;
        for (value, c) in self.buckets() {
            below += c;
            last = value;
            if below >= rank {
                break;
            }
        }
        last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_arrivals_are_the_listed_ones() {
        let listed = poisson_arrivals(50.0, 20.0, 7);
        assert!(listed.len() > 800);
        assert_eq!(PoissonArrivals::new(50.0, 20.0, 7).collect::<Vec<_>>(), listed);
        assert_eq!(PoissonArrivals::new(0.0, 20.0, 7).count(), 0);
    }

    #[test]
    fn past_the_exact_limit_quantiles_stay_within_the_stated_error() {
        // Log-normal-ish latencies spanning four decades, more than the
        // exact limit, so the sketch answers.
        use rand::Rng;
        let mut rng = rng::stream(3, "test", 0);
        let values: Vec<f64> = (0..EXACT_VALUES + 50_000).map(|_| 10f64.powf(rng.gen_range(-1.0..3.0))).collect();
        let mut q = Quantiles::default();
        for &v in &values {
            q.push(v);
        }
        assert!(!q.is_exact());
        let mut exact = values.clone();
        for p in [0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let (a, e) = (q.quantile(p), quantile(&mut exact, p));
            assert!((a - e).abs() <= SKETCH_RELATIVE_ERROR * e, "p{p}: sketch {a}, exact {e}");
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        assert_eq!(q.mean(), mean);
        let cdf = q.cdf_points();
        assert_eq!(cdf.last().map(|p| p.1), Some(1.0));
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn below_the_exact_limit_quantiles_are_exact() {
        let mut q = Quantiles::default();
        for v in (1..=100).rev() {
            q.push(f64::from(v));
        }
        assert!(q.is_exact());
        assert_eq!((q.quantile(0.5), q.quantile(0.99), q.len()), (50.0, 99.0, 100));
    }

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
