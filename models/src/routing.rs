//! MoE token routing sampled from named random streams: top-k of n routed
//! experts with node-limited routing (keep the `group_limit` groups whose
//! best expert scores highest, then the top-k experts inside them), and an
//! optional Zipf skew of expert popularity — the gate DeepSeek-V3 describes
//! and DeepEP's benchmarks sample (random scores, groups = nodes).

use rand::Rng;

use crate::error::ModelError;
use crate::rng;

/// Expert popularity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skew {
    /// Every expert equally likely.
    Balanced,
    /// Expert i (in a seeded random order) has weight 1/(i+1)^s.
    Zipf(f64),
}

/// What to sample.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoutingSpec {
    pub tokens: u32,
    pub experts: u32,
    pub topk: u32,
    /// Experts are split evenly into this many groups.
    pub groups: u32,
    /// A token's experts come from at most this many groups.
    pub group_limit: u32,
    pub skew: Skew,
}

/// A sampler for one routing spec.
#[derive(Debug, Clone)]
pub struct TokenRouter {
    spec: RoutingSpec,
    /// Per expert, a score multiplier (all 1 when balanced).
    weight: Vec<f64>,
    seed: u64,
}

impl TokenRouter {
    pub fn new(spec: RoutingSpec, seed: u64) -> Result<TokenRouter, ModelError> {
        let bad = |k: &str, m: String| Err(ModelError::invalid(k, m));
        if spec.experts == 0 || spec.topk == 0 || spec.groups == 0 || spec.group_limit == 0 {
            return bad("workload", "experts, topk, groups and the group limit must be at least 1".into());
        }
        if !spec.experts.is_multiple_of(spec.groups) {
            return bad(
                "workload.experts",
                format!("expected a multiple of the {} groups, found {}", spec.groups, spec.experts),
            );
        }
        let limit = spec.group_limit.min(spec.groups);
        let reachable = spec.experts / spec.groups * limit;
        if spec.topk > reachable {
            return bad(
                "workload.topk",
                format!("expected at most {reachable} (the experts of {limit} groups), found {}", spec.topk),
            );
        }
        let mut weight = vec![1.0; spec.experts as usize];
        if let Skew::Zipf(s) = spec.skew {
            // A seeded permutation decides which experts are popular.
            let mut order: Vec<usize> = (0..weight.len()).collect();
            let mut r = rng::stream(seed, "moe-routing-popularity", 0);
            for i in (1..order.len()).rev() {
                order.swap(i, r.gen_range(0..=i));
            }
            for (rank, &e) in order.iter().enumerate() {
                weight[e] = 1.0 / ((rank + 1) as f64).powf(s);
            }
        }
        Ok(TokenRouter { spec: RoutingSpec { group_limit: limit, ..spec }, weight, seed })
    }

    /// Calls `f` with each token's selected experts (ascending) for the tokens
    /// of `source` (a rank), drawn from stream (seed, "moe-routing", source).
    pub fn for_each_token(&self, source: u32, mut f: impl FnMut(&[u32])) {
        let s = &self.spec;
        let per_group = (s.experts / s.groups) as usize;
        let mut r = rng::stream(self.seed, "moe-routing", source as u64);
        let mut scores = vec![0.0f64; s.experts as usize];
        let mut group_best = vec![0.0f64; s.groups as usize];
        let mut chosen_groups: Vec<usize> = Vec::with_capacity(s.group_limit as usize);
        let mut top: Vec<(f64, u32)> = Vec::with_capacity(s.topk as usize);
        let mut out: Vec<u32> = Vec::with_capacity(s.topk as usize);
        for _ in 0..s.tokens {
            for (e, sc) in scores.iter_mut().enumerate() {
                *sc = r.gen::<f64>() * self.weight[e];
            }
            for (g, best) in group_best.iter_mut().enumerate() {
                *best = scores[g * per_group..(g + 1) * per_group].iter().copied().fold(f64::MIN, f64::max);
            }
            chosen_groups.clear();
            for _ in 0..s.group_limit {
                let g = (0..group_best.len())
                    .filter(|g| !chosen_groups.contains(g))
                    .max_by(|&a, &b| group_best[a].total_cmp(&group_best[b]).then(b.cmp(&a)))
                    .expect("group_limit <= groups");
                chosen_groups.push(g);
            }
            // Top-k by replacement of the current minimum (rarely needed
            // after the first few candidates).
            top.clear();
            let (mut min_at, mut min_score) = (0usize, f64::MIN);
            for &g in &chosen_groups {
                let first = g * per_group;
                for (e, &sc) in scores[first..first + per_group].iter().enumerate().map(|(i, s)| (first + i, s)) {
                    if top.len() < s.topk as usize {
                        top.push((sc, e as u32));
                        if top.len() == s.topk as usize {
                            (min_at, min_score) = min_of(&top);
                        }
                    } else if sc > min_score {
                        top[min_at] = (sc, e as u32);
                        (min_at, min_score) = min_of(&top);
                    }
                }
            }
            out.clear();
            out.extend(top.iter().map(|&(_, e)| e));
            out.sort_unstable();
            f(&out);
        }
    }
}

/// Index and value of the lowest score.
fn min_of(top: &[(f64, u32)]) -> (usize, f64) {
    top.iter().enumerate().fold((0, f64::MAX), |(bi, bs), (i, &(s, _))| if s < bs { (i, s) } else { (bi, bs) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(groups: u32, limit: u32, skew: Skew) -> RoutingSpec {
        RoutingSpec { tokens: 2000, experts: 256, topk: 8, groups, group_limit: limit, skew }
    }

    #[test]
    fn tokens_get_topk_distinct_experts_within_the_group_limit() {
        let r = TokenRouter::new(spec(8, 4, Skew::Balanced), 3).unwrap();
        let mut n = 0;
        r.for_each_token(0, |experts| {
            n += 1;
            assert_eq!(experts.len(), 8);
            assert!(experts.windows(2).all(|w| w[0] < w[1]));
            let mut groups: Vec<u32> = experts.iter().map(|e| e / 32).collect();
            groups.dedup();
            assert!(groups.len() <= 4, "{experts:?}");
        });
        assert_eq!(n, 2000);
    }

    #[test]
    fn balanced_routing_is_uniform_and_zipf_is_skewed() {
        let count = |skew| {
            let r = TokenRouter::new(spec(1, 1, skew), 5).unwrap();
            let mut c = vec![0u32; 256];
            r.for_each_token(0, |es| es.iter().for_each(|&e| c[e as usize] += 1));
            c
        };
        let flat = count(Skew::Balanced);
        let (lo, hi) = (*flat.iter().min().unwrap(), *flat.iter().max().unwrap());
        // 16000 picks over 256 experts: mean 62.5.
        assert!(lo > 30 && hi < 100, "{lo}..{hi}");
        let skewed = count(Skew::Zipf(1.2));
        assert!(*skewed.iter().max().unwrap() > 3 * hi);
    }

    #[test]
    fn routing_is_reproducible_per_seed_and_source() {
        let r = TokenRouter::new(spec(8, 4, Skew::Balanced), 9).unwrap();
        let collect = |src| {
            let mut v = Vec::new();
            r.for_each_token(src, |es| v.extend_from_slice(es));
            v
        };
        assert_eq!(collect(1), collect(1));
        assert_ne!(collect(1), collect(2));
    }

    #[test]
    fn impossible_specs_are_rejected() {
        let e = TokenRouter::new(RoutingSpec { topk: 40, ..spec(8, 1, Skew::Balanced) }, 1).unwrap_err();
        assert!(e.to_string().contains("at most 32"), "{e}");
        let e = TokenRouter::new(RoutingSpec { experts: 250, ..spec(8, 4, Skew::Balanced) }, 1).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
    }
}
