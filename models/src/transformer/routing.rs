//! MoE token routing sampled from named random streams: top-k of n routed
//! experts with node-limited routing (keep the `group_limit` groups whose
//! best expert scores highest, then the top-k experts inside them), and an
//! optional Zipf skew of expert popularity — the gate DeepSeek-V3 describes
//! and DeepEP's benchmarks sample (random scores, groups = nodes).
//!
//! Sampling is lazy. The gate only depends on the *ranking* of the experts'
//! scores: the chosen groups are the first `group_limit` groups to appear in
//! the ranking, and the chosen experts the first `topk` of the ranking that
//! fall in chosen groups. So instead of drawing every expert's score, the
//! sampler draws the ranking from the top, one expert at a time, until it has
//! `topk` experts — about a dozen draws per token instead of one per expert.
//! With balanced routing (i.i.d. scores) the ranking is a uniform random
//! permutation, so this is exactly the gate above. With skew the ranking is a
//! Plackett–Luce ranking: each next expert is drawn among those not yet drawn
//! with probability proportional to its popularity weight.

use rand::Rng;
use rand_distr::{Distribution, Zipf};

use crate::error::ModelError;
use crate::rng;
use crate::transformer::model::MoeConfig;

/// Which direction an MoE exchange moves tokens (DeepEP dispatch or combine).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoePhase {
    /// Tokens to experts, FP8 with one FP32 scale per 128 channels.
    Dispatch,
    /// Expert outputs back to their tokens, BF16.
    Combine,
}

/// Expert popularity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Skew {
    /// Every expert equally likely.
    Balanced,
    /// Expert i (in a seeded random order) has popularity weight 1/(i+1)^s.
    Zipf(f64),
}

impl Skew {
    /// A scenario's `skew` key: 0 is balanced, anything else a Zipf exponent.
    pub fn from_exponent(s: f64) -> Skew {
        if s == 0.0 {
            Skew::Balanced
        } else {
            Skew::Zipf(s)
        }
    }
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

impl RoutingSpec {
    /// A model's gate over an expert-parallel group of `ep` ranks with
    /// `gpus_per_node` to a node: node-limited over the group's nodes when
    /// the model limits a token's expert groups and its experts divide into
    /// the nodes (DeepSeek-V3: 8 groups, one per node of EP64, at most 4 per
    /// token); otherwise unconstrained.
    pub fn model_gate(moe: &MoeConfig, ep: u32, gpus_per_node: u32, tokens: u32, skew: Skew) -> RoutingSpec {
        let g = gpus_per_node.min(ep).max(1);
        let nodes = ep.div_ceil(g);
        let limited = nodes > 1 && moe.routed_experts.is_multiple_of(nodes) && moe.group_limit < moe.groups;
        let (groups, group_limit) = if limited { (nodes, moe.group_limit.min(nodes).max(1)) } else { (1, 1) };
        RoutingSpec { tokens, experts: moe.routed_experts, topk: moe.topk, groups, group_limit, skew }
    }
}

/// Expert popularity under a Zipf skew: the popularity rank drawn from
/// `rand_distr::Zipf` (rank k with probability proportional to 1/k^s), mapped
/// to its expert by a seeded permutation.
#[derive(Debug, Clone)]
struct Popularity {
    ranks: Zipf<f64>,
    /// The expert of each rank (0-based).
    expert_of_rank: Vec<u32>,
}

impl Popularity {
    fn draw(&self, r: &mut impl Rng) -> usize {
        let rank = self.ranks.sample(r) as usize;
        self.expert_of_rank[rank.clamp(1, self.expert_of_rank.len()) - 1] as usize
    }
}

/// Draws in a row that find no new eligible expert before a token's
/// remaining experts are drawn directly from what is left.
const MAX_MISSES: u32 = 64;

/// A sampler for one routing spec.
#[derive(Debug, Clone)]
pub struct TokenRouter {
    spec: RoutingSpec,
    /// The Zipf popularity draw (`None` when balanced).
    popularity: Option<Popularity>,
    /// The same weights as given (empty when balanced), for drawing from
    /// what is left once rejection stops finding new experts.
    weights: Vec<f64>,
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
        let popularity = match spec.skew {
            Skew::Zipf(s) if s != 0.0 => {
                if !(s.is_finite() && s > 0.0) {
                    return bad("workload.skew", format!("expected a non-negative Zipf exponent, found {s}"));
                }
                // A seeded permutation decides which experts are popular.
                let mut order: Vec<usize> = (0..spec.experts as usize).collect();
                let mut r = rng::stream(seed, "moe-routing-popularity", 0);
                for i in (1..order.len()).rev() {
                    order.swap(i, r.gen_range(0..=i));
                }
                let mut weight = vec![0.0; order.len()];
                for (rank, &e) in order.iter().enumerate() {
                    weight[e] = 1.0 / ((rank + 1) as f64).powf(s);
                }
                let ranks = match Zipf::new(spec.experts as u64, s) {
                    Ok(z) => z,
                    Err(e) => return bad("workload.skew", format!("expected a usable Zipf exponent, found {s}: {e}")),
                };
                Some((Popularity { ranks, expert_of_rank: order.iter().map(|&e| e as u32).collect() }, weight))
            }
            _ => None,
        };
        let (popularity, weights) = match popularity {
            Some((p, w)) => (Some(p), w),
            None => (None, Vec::new()),
        };
        Ok(TokenRouter { spec: RoutingSpec { group_limit: limit, ..spec }, popularity, weights, seed })
    }

    pub fn spec(&self) -> &RoutingSpec {
        &self.spec
    }

    /// Calls `f` with each token's selected experts (ascending) for the tokens
    /// of `source` (a rank), drawn from stream (seed, "moe-routing", source).
    pub fn for_each_token(&self, source: u32, f: impl FnMut(&[u32])) {
        self.for_each_token_in(source as u64, f)
    }

    /// As [`TokenRouter::for_each_token`] for an arbitrary stream index (e.g.
    /// a (layer, micro-batch, rank) key).
    pub fn for_each_token_in(&self, stream: u64, mut f: impl FnMut(&[u32])) {
        let s = &self.spec;
        let per_group = s.experts / s.groups;
        let mut r = rng::stream(self.seed, "moe-routing", stream);
        let words = (s.experts as usize).div_ceil(64);
        let mut drawn = vec![0u64; words];
        let mut chosen_groups: Vec<u32> = Vec::with_capacity(s.group_limit as usize);
        let mut out: Vec<u32> = Vec::with_capacity(s.topk as usize);
        for _ in 0..s.tokens {
            drawn.iter_mut().for_each(|w| *w = 0);
            chosen_groups.clear();
            out.clear();
            let mut misses = 0u32;
            while out.len() < s.topk as usize {
                let e = if misses < MAX_MISSES {
                    match &self.popularity {
                        None => r.gen_range(0..s.experts) as usize,
                        Some(p) => p.draw(&mut r),
                    }
                } else {
                    self.draw_left(&mut r, &drawn, &chosen_groups)
                };
                let (word, bit) = (e / 64, 1u64 << (e % 64));
                if drawn[word] & bit != 0 {
                    misses += 1;
                    continue;
                }
                drawn[word] |= bit;
                let g = e as u32 / per_group;
                if chosen_groups.contains(&g) {
                    out.push(e as u32);
                } else if chosen_groups.len() < s.group_limit as usize {
                    chosen_groups.push(g);
                    out.push(e as u32);
                } else {
                    misses += 1;
                }
            }
            out.sort_unstable();
            f(&out);
        }
    }

    /// One expert drawn from those still eligible (not drawn yet, and in a
    /// chosen group or while groups may still be chosen), in proportion to
    /// their weights: the distribution rejection sampling converges to, drawn
    /// directly once rejection stops finding new experts (steep Zipf skews,
    /// where the last experts of a token are rare).
    fn draw_left(&self, r: &mut impl Rng, drawn: &[u64], chosen_groups: &[u32]) -> usize {
        let s = &self.spec;
        let per_group = s.experts / s.groups;
        let open = chosen_groups.len() < s.group_limit as usize;
        let eligible = |e: usize| {
            drawn[e / 64] & (1u64 << (e % 64)) == 0 && (open || chosen_groups.contains(&(e as u32 / per_group)))
        };
        let weight = |e: usize| self.weights.get(e).copied().unwrap_or(1.0);
        let total: f64 = (0..s.experts as usize).filter(|&e| eligible(e)).map(weight).sum();
        let candidates = (0..s.experts as usize).filter(|&e| eligible(e));
        if total > 0.0 && total.is_finite() {
            let mut u = r.gen::<f64>() * total;
            let mut last = None;
            for e in candidates {
                last = Some(e);
                u -= weight(e);
                if u < 0.0 {
                    return e;
                }
            }
            last.expect("a spec that passed TokenRouter::new leaves an eligible expert")
        } else {
            // Every remaining weight underflowed to zero: uniform among them.
            let all: Vec<usize> = candidates.collect();
            all[r.gen_range(0..all.len())]
        }
    }
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

    /// The gate as DeepSeek-V3 writes it: score every expert, keep the
    /// `limit` groups with the highest maximum, take the top-k inside them.
    fn reference_gate(r: &mut impl Rng, experts: usize, groups: usize, limit: usize, topk: usize) -> Vec<usize> {
        let per = experts / groups;
        let scores: Vec<f64> = (0..experts).map(|_| r.gen::<f64>()).collect();
        let mut by_max: Vec<usize> = (0..groups).collect();
        let best = |g: usize| scores[g * per..(g + 1) * per].iter().copied().fold(f64::MIN, f64::max);
        by_max.sort_by(|&a, &b| best(b).total_cmp(&best(a)));
        let mut cand: Vec<usize> = by_max[..limit].iter().flat_map(|&g| g * per..(g + 1) * per).collect();
        cand.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
        cand.truncate(topk);
        cand
    }

    #[test]
    fn lazy_ranking_matches_the_score_based_gate_in_distribution() {
        // Histogram of the number of distinct groups a token's experts span:
        // the statistic that sets RDMA traffic under node-limited routing.
        let tokens = 20_000;
        let r = TokenRouter::new(RoutingSpec { tokens, ..spec(8, 4, Skew::Balanced) }, 11).unwrap();
        let mut lazy = [0u32; 9];
        r.for_each_token(0, |es| {
            let mut g: Vec<u32> = es.iter().map(|e| e / 32).collect();
            g.dedup();
            lazy[g.len()] += 1;
        });
        let mut reference = [0u32; 9];
        let mut rr = rng::stream(99, "test-reference-gate", 0);
        for _ in 0..tokens {
            let mut g: Vec<usize> = reference_gate(&mut rr, 256, 8, 4, 8).iter().map(|e| e / 32).collect();
            g.sort_unstable();
            g.dedup();
            reference[g.len()] += 1;
        }
        for k in 1..=4 {
            let (a, b) = (lazy[k] as f64 / tokens as f64, reference[k] as f64 / tokens as f64);
            // Binomial standard error at 20k samples is under 0.004.
            assert!((a - b).abs() < 0.015, "{k} groups: lazy {a:.4}, reference {b:.4} ({lazy:?} vs {reference:?})");
        }
        assert_eq!(lazy[5..].iter().sum::<u32>(), 0);
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
    fn the_model_gate_limits_nodes_only_for_grouped_models() {
        let v3 = crate::ModelConfig::preset("deepseek-v3").unwrap().moe.unwrap();
        let mixtral = crate::ModelConfig::preset("mixtral-8x7b").unwrap().moe.unwrap();
        // EP64 over 8 nodes: V3's tokens reach at most 4 of the 8 node groups.
        let g = RoutingSpec::model_gate(&v3, 64, 8, 4096, Skew::Balanced);
        assert_eq!((g.groups, g.group_limit, g.experts, g.topk), (8, 4, 256, 8));
        // Inside one node, or for a model without groups: no limit.
        assert_eq!(RoutingSpec::model_gate(&v3, 8, 8, 4096, Skew::Balanced).groups, 1);
        let m = RoutingSpec::model_gate(&mixtral, 16, 8, 4096, Skew::Balanced);
        assert_eq!((m.groups, m.group_limit), (1, 1));
    }

    #[test]
    fn impossible_specs_are_rejected() {
        let e = TokenRouter::new(RoutingSpec { topk: 40, ..spec(8, 1, Skew::Balanced) }, 1).unwrap_err();
        assert!(e.to_string().contains("at most 32"), "{e}");
        let e = TokenRouter::new(RoutingSpec { experts: 250, ..spec(8, 4, Skew::Balanced) }, 1).unwrap_err();
        assert!(e.to_string().contains("multiple"), "{e}");
        let e = TokenRouter::new(spec(8, 4, Skew::Zipf(-1.0)), 1).unwrap_err();
        assert!(e.to_string().contains("skew"), "{e}");
    }
}
