//! MoE token routing sampled from named random streams: top-k of n routed
//! experts with node/group-limited routing (pick the best `group_limit`
//! groups by their highest expert score, then the top-k experts inside them)
//! and optional skew, as DeepSeek-V3's gate and DeepEP's benchmarks do.
