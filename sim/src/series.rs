//! Each link's throughput history (`RunResult::link_series`), recorded on
//! request and bounded whatever the simulated time.
//!
//! Only physical links are recorded ([`LinkKind::is_physical`]): no output
//! reads the modelling constructs (the per-GPU SM ports that bound DeepEP's
//! kernels, the HBM links), and on the every-rank DeepSeek-V3 step at 256
//! GPUs they were 60 % of the samples.
//!
//! A link's history starts exact: one [`LinkSample`] per change of its
//! aggregate rate (equal times merge, repeats are skipped). All links
//! together may take [`LINK_SERIES_BUDGET_BYTES`] (an [`EngineOptions`]
//! setting); a run whose history fits keeps every sample. Past it, each
//! link may keep at most `cap` samples, where `cap` starts at the whole
//! budget's worth and halves (never below [`MIN_LINK_SERIES_SAMPLES`])
//! while the history is over budget. A link with more changes than `cap`
//! is *coarsened*: its rate is kept as time-averaged bins of equal width
//! from time 0, each holding the exact integral of the rate over it (the
//! bytes the link carried), and when the bins would reach `cap` pairs merge
//! and the width doubles. A coarsened link therefore keeps at least
//! `cap / 2` >= 512 equal bins from time 0 to its last rate change (a bin
//! is at most 1/512 of the run), and its bytes stay exact: the integral of
//! the returned series is the integral of the exact one, to f64 rounding.
//!
//! So the history, while recorded and as returned, takes at most
//! max(budget, links carrying traffic x [`MIN_LINK_SERIES_SAMPLES`] x 16
//! bytes): 256 MiB up to 16,384 physical links carrying traffic (the
//! 2,048-GPU multi-plane fat-tree), 16 KiB per link beyond. (A bin takes 8
//! bytes while recording but is charged 16, the sample it becomes.)
//!
//! A coarsened series is returned as samples like an exact one (one per
//! bin with the bin's mean rate, repeats skipped, then the rate in force
//! from the last change on), so readers need not know which they got.
//!
//! [`EngineOptions`]: crate::result::EngineOptions

use crate::platform::LinkResource;
use crate::result::LinkSample;
use crate::time::SimTime;

/// Bytes the link series of one run may take in all before they are
/// coarsened: 256 MiB.
pub const LINK_SERIES_BUDGET_BYTES: u64 = 256 << 20;

/// Samples a link may always keep: a coarsened link keeps at least half as
/// many bins.
pub const MIN_LINK_SERIES_SAMPLES: usize = 1024;

const SAMPLE_BYTES: u64 = std::mem::size_of::<LinkSample>() as u64;
/// What a bin is charged: the sample it becomes in the result (it takes 8
/// bytes while recording), so the returned series fit the budget too.
const BIN_BYTES: u64 = SAMPLE_BYTES;

/// One link's history.
#[derive(Debug)]
enum History {
    /// Not recorded (not a physical link).
    Off,
    /// Every change of rate.
    Exact(Vec<LinkSample>),
    Binned(Bins),
}

/// A coarsened history: equal bins from time 0 up to `since`, then `rate`.
#[derive(Debug)]
struct Bins {
    /// Picoseconds per bin.
    width: u64,
    /// Per bin, the integral of the rate over it (bytes per second x
    /// picoseconds); bin `k` covers `[k x width, (k + 1) x width)`, the last
    /// one up to `since`.
    sums: Vec<f64>,
    since: u64,
    /// Bytes per second from `since` on.
    rate: f64,
}

impl Bins {
    /// Empty bins about `cap / 2` to a time span of `span_ps`.
    fn for_span(span_ps: u64, cap: usize) -> Bins {
        Bins { width: (span_ps / (cap as u64 / 2)).max(1), sums: Vec::with_capacity(cap - 1), since: 0, rate: 0.0 }
    }

    /// The exact series `s`, binned up to `until` (at or after its last
    /// sample, whose rate holds from then on).
    fn from_exact(s: &[LinkSample], until: u64, cap: usize) -> Bins {
        let mut b = Bins::for_span(until, cap);
        for smp in s {
            b.advance(smp.time.0, cap);
            b.rate = smp.bytes_per_s;
        }
        b.advance(until, cap);
        b
    }

    /// Integrates the current rate up to `to` (>= `since`), merging bins
    /// while they would be `cap` or more.
    fn advance(&mut self, to: u64, cap: usize) {
        let mut need = to.div_ceil(self.width) as usize;
        while need >= cap {
            self.merge();
            need = to.div_ceil(self.width) as usize;
        }
        if self.sums.len() < need {
            self.sums.resize(need, 0.0);
        }
        if self.rate != 0.0 {
            let mut t = self.since;
            while t < to {
                let bin = t / self.width;
                let stop = ((bin + 1) * self.width).min(to);
                self.sums[bin as usize] += self.rate * (stop - t) as f64;
                t = stop;
            }
        }
        self.since = to;
    }

    /// Merges pairs of bins: the width doubles.
    fn merge(&mut self) {
        let n = self.sums.len().div_ceil(2);
        for j in 0..n {
            self.sums[j] = self.sums[2 * j] + self.sums.get(2 * j + 1).copied().unwrap_or(0.0);
        }
        self.sums.truncate(n);
        self.width *= 2;
    }

    /// As samples: each bin's mean rate, then the rate from `since` on.
    fn into_samples(self) -> Vec<LinkSample> {
        let mut out = Vec::with_capacity(self.sums.len() + 1);
        for (k, &sum) in self.sums.iter().enumerate() {
            let start = k as u64 * self.width;
            let end = (start + self.width).min(self.since);
            push_sample(&mut out, start, sum / (end - start) as f64);
        }
        push_sample(&mut out, self.since, self.rate);
        out
    }
}

/// The histories of a run's links and what they take.
#[derive(Debug)]
pub(crate) struct SeriesRecorder {
    links: Vec<History>,
    /// Most samples (or bins + 1) a link keeps, at least
    /// [`MIN_LINK_SERIES_SAMPLES`].
    cap: usize,
    /// Bytes the histories have allocated.
    bytes: u64,
    budget: u64,
}

impl SeriesRecorder {
    /// Records the physical ones of `links` within `budget_bytes`.
    pub(crate) fn new(links: &[LinkResource], budget_bytes: u64) -> SeriesRecorder {
        let whole = usize::try_from(budget_bytes / SAMPLE_BYTES).unwrap_or(usize::MAX);
        SeriesRecorder {
            links: links
                .iter()
                .map(|l| if l.kind.is_physical() { History::Exact(Vec::new()) } else { History::Off })
                .collect(),
            cap: whole.max(MIN_LINK_SERIES_SAMPLES),
            bytes: 0,
            budget: budget_bytes,
        }
    }

    /// Link `li`'s aggregate rate is `bytes_per_s` from `time` on (not
    /// before its previous change).
    pub(crate) fn record(&mut self, li: usize, time: u64, bytes_per_s: f64) {
        let cap = self.cap;
        match &mut self.links[li] {
            History::Off => {}
            History::Binned(b) => {
                if time > b.since {
                    b.advance(time, cap);
                }
                b.rate = bytes_per_s;
            }
            History::Exact(s) => {
                if !appends(s, time, bytes_per_s) {
                    push_sample(s, time, bytes_per_s);
                    return;
                }
                if s.len() < s.capacity() {
                    s.push(LinkSample { time: SimTime(time), bytes_per_s });
                    return;
                }
                if s.len() >= cap {
                    let mut b = Bins::from_exact(s, time, cap);
                    b.rate = bytes_per_s;
                    self.bytes = self.bytes - SAMPLE_BYTES * s.capacity() as u64 + BIN_BYTES * b.sums.capacity() as u64;
                    self.links[li] = History::Binned(b);
                    return;
                }
                let old = s.capacity();
                s.reserve_exact((2 * s.len()).clamp(4, cap) - s.len());
                s.push(LinkSample { time: SimTime(time), bytes_per_s });
                self.bytes += SAMPLE_BYTES * (s.capacity() - old) as u64;
                if self.bytes > self.budget {
                    self.tighten();
                }
            }
        }
    }

    /// Halves the cap, coarsening the links over it, until the histories
    /// fit the budget or the cap is [`MIN_LINK_SERIES_SAMPLES`].
    fn tighten(&mut self) {
        while self.bytes > self.budget && self.cap / 2 >= MIN_LINK_SERIES_SAMPLES {
            self.cap /= 2;
            let cap = self.cap;
            let mut bytes = 0;
            for h in &mut self.links {
                match h {
                    History::Off => {}
                    History::Exact(s) if s.len() > cap => {
                        let last = s[s.len() - 1];
                        let mut b = Bins::from_exact(&s[..s.len() - 1], last.time.0, cap);
                        b.rate = last.bytes_per_s;
                        bytes += BIN_BYTES * b.sums.capacity() as u64;
                        *h = History::Binned(b);
                    }
                    History::Exact(s) => {
                        s.shrink_to(cap);
                        bytes += SAMPLE_BYTES * s.capacity() as u64;
                    }
                    History::Binned(b) => {
                        while b.sums.len() >= cap {
                            b.merge();
                        }
                        b.sums.shrink_to(cap - 1);
                        bytes += BIN_BYTES * b.sums.capacity() as u64;
                    }
                }
            }
            self.bytes = bytes;
        }
    }

    /// Each link's series (empty for links not recorded).
    pub(crate) fn finish(self) -> Vec<Vec<LinkSample>> {
        self.links
            .into_iter()
            .map(|h| match h {
                History::Off => Vec::new(),
                History::Exact(s) => s,
                History::Binned(b) => b.into_samples(),
            })
            .collect()
    }
}

/// Whether [`push_sample`] would append a sample (rather than merge with
/// the last, skip a repeat or a leading zero).
fn appends(s: &[LinkSample], time: u64, bytes_per_s: f64) -> bool {
    match s.last() {
        Some(last) => last.time.0 != time && last.bytes_per_s != bytes_per_s,
        None => bytes_per_s != 0.0,
    }
}

/// Appends a sample unless it repeats the last value; samples at equal times
/// merge (the later wins).
fn push_sample(s: &mut Vec<LinkSample>, time: u64, bytes_per_s: f64) {
    if let Some(last) = s.last_mut() {
        if last.time.0 == time {
            last.bytes_per_s = bytes_per_s;
            let n = s.len();
            let repeats = if n >= 2 { s[n - 2].bytes_per_s == bytes_per_s } else { bytes_per_s == 0.0 };
            if repeats {
                s.pop();
            }
            return;
        }
        if last.bytes_per_s == bytes_per_s {
            return;
        }
    } else if bytes_per_s == 0.0 {
        return;
    }
    s.push(LinkSample { time: SimTime(time), bytes_per_s });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::LinkKind;
    use crate::time::SimDuration;

    fn link(kind: LinkKind) -> LinkResource {
        LinkResource { name: "l".into(), kind, bytes_per_s: 1e12, latency: SimDuration::ZERO }
    }

    /// Bytes under a series up to `end` (bytes per second x picoseconds).
    fn integral(s: &[LinkSample], end: u64) -> f64 {
        s.iter()
            .enumerate()
            .map(|(k, x)| x.bytes_per_s * (s.get(k + 1).map_or(end, |n| n.time.0) - x.time.0) as f64)
            .sum()
    }

    /// `n` changes: times advance by 1-20 ps (some repeat a time), rates
    /// take one of five values (zero among them), drawn by an LCG.
    fn changes(n: usize, seed: u64) -> Vec<(u64, f64)> {
        let (mut x, mut t) = (seed, 0u64);
        (0..n)
            .map(|_| {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                t += (x >> 33) % 21;
                (t, [0.0, 1e9, 2.5e9, 4e9, 7.75e9][((x >> 40) % 5) as usize])
            })
            .collect()
    }

    /// The exact series of `changes`.
    fn exact(changes: &[(u64, f64)]) -> Vec<LinkSample> {
        let mut s = Vec::new();
        for &(t, r) in changes {
            push_sample(&mut s, t, r);
        }
        s
    }

    /// The allocated bytes the recorder should be charging.
    fn allocated(r: &SeriesRecorder) -> u64 {
        r.links
            .iter()
            .map(|h| match h {
                History::Off => 0,
                History::Exact(s) => SAMPLE_BYTES * s.capacity() as u64,
                History::Binned(b) => BIN_BYTES * b.sums.capacity() as u64,
            })
            .sum()
    }

    #[test]
    fn samples_merge_and_skip_repeats() {
        let mut s = Vec::new();
        push_sample(&mut s, 0, 0.0);
        assert!(s.is_empty());
        push_sample(&mut s, 5, 2.0);
        push_sample(&mut s, 5, 3.0);
        push_sample(&mut s, 7, 3.0);
        push_sample(&mut s, 9, 1.0);
        push_sample(&mut s, 9, 3.0);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].time.0, s[0].bytes_per_s), (5, 3.0));
    }

    #[test]
    fn a_history_within_budget_is_exact_and_constructs_are_not_recorded() {
        let links = [link(LinkKind::Physical("nvlink")), link(LinkKind::Construct("sm-port"))];
        let mut r = SeriesRecorder::new(&links, LINK_SERIES_BUDGET_BYTES);
        let ch = changes(5000, 1);
        for &(t, x) in &ch {
            r.record(0, t, x);
            r.record(1, t, x);
        }
        assert_eq!(r.bytes, allocated(&r));
        let out = r.finish();
        assert_eq!(out[0], exact(&ch));
        assert!(out[0].len() > 2000, "the test exercises a long series: {}", out[0].len());
        assert!(out[1].is_empty());
    }

    #[test]
    fn a_long_history_keeps_the_cap_in_bins_with_exact_bytes() {
        // A budget of the minimum cap for one link: 1024 samples.
        let links = [link(LinkKind::Physical("nvlink"))];
        let mut r = SeriesRecorder::new(&links, SAMPLE_BYTES * MIN_LINK_SERIES_SAMPLES as u64);
        let ch = changes(200_000, 2);
        for &(t, x) in &ch {
            r.record(0, t, x);
            assert!(r.bytes <= r.budget);
        }
        let History::Binned(b) = &r.links[0] else { panic!("not coarsened") };
        let (bins, width, since) = (b.sums.len(), b.width, b.since);
        assert!((MIN_LINK_SERIES_SAMPLES / 2..MIN_LINK_SERIES_SAMPLES).contains(&bins), "{bins} bins");
        assert_eq!(since, ch[ch.len() - 1].0);
        assert!(width * 512 <= since, "a bin ({width} ps) is at most 1/512 of {since} ps");
        let want = exact(&ch);
        let out = r.finish().swap_remove(0);
        assert!(out.len() <= MIN_LINK_SERIES_SAMPLES, "{} samples", out.len());
        assert!(out.len() > 500, "the bins differ: {} samples", out.len());
        let end = since + 1000;
        let (got, want) = (integral(&out, end), integral(&want, end));
        assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        // Every sample but the last sits on a bin boundary.
        assert!(out[..out.len() - 1].iter().all(|s| s.time.0 % width == 0));
    }

    #[test]
    fn over_budget_the_cap_halves_and_short_links_stay_exact() {
        // 4,096 samples' worth for three links: two long ones push the cap
        // down (to 1,024: their vectors' spare room counts); the short one
        // keeps its samples.
        let links = [link(LinkKind::Physical("ib")), link(LinkKind::Physical("ib")), link(LinkKind::Physical("ib"))];
        let mut r = SeriesRecorder::new(&links, SAMPLE_BYTES * 4096);
        let long = [changes(3000, 3), changes(3000, 4)];
        let short = changes(300, 5);
        for (k, (&(t0, x0), &(t1, x1))) in long[0].iter().zip(&long[1]).enumerate() {
            r.record(0, t0, x0);
            r.record(1, t1, x1);
            if let Some(&(t, x)) = short.get(k) {
                r.record(2, t, x);
            }
            assert_eq!(r.bytes, allocated(&r));
            assert!(r.bytes <= r.budget, "{} bytes after change {k}", r.bytes);
        }
        let cap = r.cap;
        assert_eq!(cap, MIN_LINK_SERIES_SAMPLES);
        assert!(matches!(r.links[0], History::Binned(_)) && matches!(r.links[1], History::Binned(_)));
        let out = r.finish();
        assert_eq!(out[2], exact(&short));
        for (s, ch) in out.iter().zip(&long) {
            assert!(s.len() <= cap);
            let end = ch[ch.len() - 1].0 + 10;
            let (got, want) = (integral(s, end), integral(&exact(ch), end));
            assert!((got - want).abs() <= 1e-9 * want, "{got} vs {want}");
        }
    }
}
