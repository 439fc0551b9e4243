//! Tiled op costs on cache-based GPUs (H800 first).
//!
//! A GEMM is cut into `tile_m x tile_n` output tiles walking K in 128-byte
//! steps through a multi-stage shared-memory pipeline (the layout DeepGEMM
//! and CUTLASS use on Hopper). The tile is the one with the fewest waves
//! over the SMs, then the fullest last wave, then the larger M and smaller N
//! side; a thread-block pair shares (multicasts) an operand tile when M is
//! large and one group is computed. Per tile, the SM either computes
//! (tensor rate at the sustained clock, plus the exposed FP8 accumulator
//! promotion) or waits for shared memory to fill from L2 (the per-SM port,
//! or the latency the in-flight stages cannot cover), plus a pipeline fill
//! and an epilogue of one load latency each. Waves of tiles make the SM
//! side; HBM bytes follow from L2 blocking; the two combine as
//! `(t_sm^p + t_hbm^p)^(1/p)`.

use crate::error::ModelError;
use crate::hardware::device::{DeviceSpec, Dtype, Fp8Emulation};

use super::{
    combine, gemm_hbm_bytes, gemm_out_bytes, keys_seen, AttentionShape, Bound, GemmLayout, GemmShape, Op, OpCost,
    OpOptions, Pass, TierBytes, TileInfo,
};

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b.max(1))
}

/// What every GPU op needs from the device.
struct Sm {
    /// SMs the kernel is launched on.
    sms: u32,
    clock_hz: f64,
    /// Per-SM fill rate from L2, bytes/s.
    port: f64,
    /// Load latency under load, seconds.
    latency_s: f64,
    l2_bytes: f64,
    hbm: f64,
}

fn sm_side(device: &DeviceSpec, options: &OpOptions) -> Result<Sm, ModelError> {
    let l2 = device.effective_l2()?;
    let clock_hz = device.sm_clock_hz();
    // A slower (or faster) L2 than the one the latency was measured with
    // shifts every load's latency by the difference.
    let shift_ns = match (l2.latency_ns, device.l2_latency_ns) {
        (Some(now), Some(built)) => now - built,
        _ => 0.0,
    };
    Ok(Sm {
        sms: options.sms.unwrap_or(device.sms).clamp(1, device.sms),
        clock_hz,
        port: device.l2_bytes_per_clk_per_sm * clock_hz * l2.bandwidth_factor,
        latency_s: (device.mem_latency_ns + shift_ns).max(1.0) * 1e-9,
        l2_bytes: l2.bytes,
        hbm: device.hbm_bytes_per_s(),
    })
}

pub(crate) fn op_cost(device: &DeviceSpec, op: &Op, options: &OpOptions) -> Result<OpCost, ModelError> {
    let sm = sm_side(device, options)?;
    match op {
        Op::Gemm(shape) => gemm(device, &sm, shape, options),
        Op::Attention(a) => attention(device, &sm, a),
        Op::Norm { tokens, hidden, dtype, pass } => {
            let elems = (*tokens * *hidden) as f64;
            // Forward reads x and writes y; backward reads x and dy, writes dx.
            let (rw, flops) = match pass {
                Pass::Forward => (2.0, 4.0 * elems),
                Pass::Backward => (3.0, 8.0 * elems),
            };
            Ok(streaming(device, &sm, flops, rw * elems * dtype.bytes()))
        }
        Op::Elementwise { read_bytes, write_bytes, flops } => {
            Ok(streaming(device, &sm, *flops, read_bytes + write_bytes))
        }
    }
}

/// A memory-bound pass over `bytes` with CUDA-core arithmetic on the SMs
/// it is launched on.
///
/// Its memory rate is what its SMs keep in flight: each SM of a streaming
/// kernel holds a bounded number of loads outstanding, so by Little's law
/// the rate is proportional to the SMs (`stream_hbm_efficiency` of HBM peak
/// on every SM of the device, a proportional share of it on fewer). DeepSeek's
/// profile shows it: its casts, norms and elementwise kernels take 1.20-1.24x
/// their time beside a DeepEP kernel that holds 20 of the 132 SMs (132 / 112
/// = 1.18) and 1.06x beside the notify kernels, whose CTAs mostly exit at
/// once (README, "Kernel by kernel against the profile").
fn streaming(device: &DeviceSpec, sm: &Sm, flops: f64, bytes: f64) -> OpCost {
    let n = sm.sms as f64;
    let share = n / device.sms as f64;
    let vector_s = flops / (device.fp32_tflops * 1e12 * share);
    let feed_s = bytes / (sm.port * n);
    let sm_s = vector_s.max(feed_s) + 2.0 * sm.latency_s;
    let hbm_s = bytes / (sm.hbm * device.stream_hbm_efficiency * share);
    let kernel_s = combine(device, sm_s, hbm_s);
    let bound = if hbm_s >= sm_s {
        Bound::Hbm
    } else if vector_s >= feed_s {
        Bound::Vector
    } else {
        Bound::L2
    };
    let tiers = TierBytes { smem_bytes: bytes, l2_bytes: bytes, hbm_bytes: bytes, ..Default::default() };
    OpCost::from_parts(device, flops, kernel_s, bound, sm.sms, tiers, TileInfo::default())
}

/// A GEMM tiling and what it takes.
#[derive(Debug, Clone, Copy)]
struct GemmTiling {
    bm: u64,
    bn: u64,
    /// K elements per pipeline stage (128 bytes of the input type).
    bk: u64,
    stages: u32,
    /// Operand tiles shared by a pair of SMs: (A, B) divisors.
    multicast: (f64, f64),
}

const MAX_STAGES: u32 = 8;
const MIN_STAGES: u32 = 3;

/// The operand formats a GEMM tiling is sized for.
#[derive(Debug, Clone, Copy)]
struct Operands {
    /// K elements per pipeline stage.
    bk: u64,
    k: u64,
    in_b: f64,
    out_b: f64,
    fp8: bool,
}

impl Operands {
    /// Shared memory a tiling needs: the output staging tile plus `stages`
    /// buffers of A and B (and their FP8 scales).
    fn smem_bytes(&self, bm: u64, bn: u64, stages: u32) -> f64 {
        let per_stage = (bm + bn) as f64 * self.bk as f64 * self.in_b + if self.fp8 { bm as f64 * 4.0 } else { 0.0 };
        let scales_b = if self.fp8 { ceil_div(self.k, 128) as f64 * 4.0 * 2.0 } else { 0.0 };
        bm as f64 * bn as f64 * self.out_b + stages as f64 * (per_stage + 16.0) + scales_b
    }

    fn fit_stages(&self, bm: u64, bn: u64, smem: f64) -> Option<u32> {
        (MIN_STAGES..=MAX_STAGES).rev().find(|&st| self.smem_bytes(bm, bn, st) <= smem)
    }
}

/// `(waves, -last wave fill, -tile_m, tile_n)`: smaller is better.
type TileRank = (u64, i64, i64, u64);

fn gemm(device: &DeviceSpec, sm: &Sm, s: &GemmShape, options: &OpOptions) -> Result<OpCost, ModelError> {
    let rate = device.tensor_flops_per_s(s.dtype)? * device.throttle();
    let native_fp8 =
        s.dtype == Dtype::Fp8 && !(device.fp8_tflops.is_none() && device.fp8_emulation == Fp8Emulation::Bf16);
    let in_b = s.dtype.bytes();
    let out_b = gemm_out_bytes(s.dtype);
    let bk = (128.0 / in_b) as u64;
    // One usable KiB per SM is reserved by the runtime.
    let smem = (device.smem_kib_per_sm - 1.0).max(1.0) * 1024.0;
    let fp8 = s.dtype == Dtype::Fp8;
    let ops = Operands { bk, k: s.k, in_b, out_b, fp8 };
    // The heuristic sees a contiguous grouped GEMM as one tall GEMM (each
    // group's rows padded to the tile), a masked one as `groups` GEMMs.
    let (m_h, groups_h) = match s.layout {
        GemmLayout::Contiguous if s.groups > 1 => (ceil_div(s.m, 128) * 128 * s.groups, 1),
        _ => (s.m, s.groups),
    };
    let tiles_of = |bm: u64, bn: u64| ceil_div(s.m, bm) * ceil_div(s.n, bn) * s.groups;
    let n_sms = sm.sms as u64;

    let tiling = if let Some([tm, tn, tk]) = options.tile {
        let (bm, bn, bk_user) = (tm as u64, tn as u64, tk as u64);
        let user = Operands { bk: bk_user, ..ops };
        let need = user.smem_bytes(bm, bn, MIN_STAGES);
        let Some(stages) = user.fit_stages(bm, bn, smem) else {
            return Err(ModelError::invalid(
                "workload.tile",
                format!(
                    "tile {bm}x{bn}x{bk_user} does not fit shared memory: {MIN_STAGES} pipeline stages need {:.0} KiB, \
                     the SM has {:.0} KiB usable",
                    need / 1024.0,
                    smem / 1024.0
                ),
            ));
        };
        GemmTiling { bm, bn, bk: bk_user, stages, multicast: (1.0, 1.0) }
    } else {
        let bms: &[u64] = if s.layout == GemmLayout::Contiguous && s.groups > 1 {
            &[128]
        } else if m_h <= 64 {
            &[64]
        } else {
            &[128]
        };
        let bns: Vec<u64> = (2..=16).map(|i| i * 8).chain([144, 160]).collect();
        let mut best: Option<(TileRank, u64, u64, u32)> = None;
        for &bm in bms {
            for &bn in &bns {
                let Some(stages) = ops.fit_stages(bm, bn, smem) else { continue };
                let tiles = tiles_of(bm, bn);
                let waves = ceil_div(tiles, n_sms);
                let last = match tiles % n_sms {
                    0 => n_sms,
                    r => r,
                };
                let key = (waves, -(last as i64), -(bm as i64), bn);
                if best.as_ref().is_none_or(|b| key < b.0) {
                    best = Some((key, bm, bn, stages));
                }
            }
        }
        let Some((_, bm, bn, stages)) = best else {
            return Err(ModelError::invalid(
                "hardware.smem_kib_per_sm",
                format!(
                    "no GEMM tile fits {:.0} KiB of shared memory ({MIN_STAGES} stages of a 64x16 tile need {:.0} KiB)",
                    smem / 1024.0,
                    ops.smem_bytes(64, 16, MIN_STAGES) / 1024.0
                ),
            ));
        };
        // A pair of SMs shares the larger tile side's operand when M is
        // large, one group is computed and the shape divides evenly.
        let mut multicast = (1.0, 1.0);
        if m_h >= 512 && groups_h == 1 && n_sms.is_multiple_of(2) {
            let a_ok = s.n.is_multiple_of(2 * bn);
            let b_ok = m_h.is_multiple_of(2 * bm);
            let order = if bm > bn {
                [(a_ok, (2.0, 1.0)), (b_ok, (1.0, 2.0))]
            } else {
                [(b_ok, (1.0, 2.0)), (a_ok, (2.0, 1.0))]
            };
            if let Some((_, mc)) = order.into_iter().find(|(ok, _)| *ok) {
                multicast = mc;
            }
        }
        GemmTiling { bm, bn, bk, stages, multicast }
    };

    let GemmTiling { bm, bn, bk, stages, multicast } = tiling;
    let tiles = tiles_of(bm, bn);
    let waves = ceil_div(tiles, n_sms);
    let ctas = ceil_div(tiles, waves) as u32;
    let (k, bmf, bnf) = (s.k as f64, bm as f64, bn as f64);

    // Per tile: tensor arithmetic, FP8 promotion, shared-memory fill.
    let per_sm_rate = rate / device.sms as f64;
    let mma_s = 2.0 * bmf * bnf * k / per_sm_rate;
    let promo_s = if native_fp8 {
        device.fp8_promotion_exposed * bmf * bnf * ceil_div(s.k, 128) as f64 / (device.fp32_lanes_per_sm * sm.clock_hz)
    } else {
        0.0
    };
    let stage_bytes = (bmf + bnf) * bk as f64 * in_b;
    let in_flight = stages as f64 * stage_bytes;
    let feed = sm.port.min(in_flight / sm.latency_s);
    let tile_in_bytes = (bmf + bnf) * k * in_b;
    let load_s = tile_in_bytes / feed;
    let busy_s = (mma_s + promo_s).max(load_s);
    let sm_s = waves as f64 * (busy_s + 2.0 * sm.latency_s);

    // Tiers: shared memory fills, L2 traffic (multicast halves the shared
    // operand's reads; outputs are written through L2), HBM.
    let smem_total = tiles as f64 * tile_in_bytes;
    let out_bytes = s.groups as f64 * s.m as f64 * s.n as f64 * out_b;
    let l2_total = tiles as f64 * (bmf / multicast.0 + bnf / multicast.1) * k * in_b + out_bytes;
    // Two bounds on operand re-reads, the lower holds: L2 keeps whole-K
    // panels of a block of rows and columns (`gemm_hbm_bytes`), or each wave
    // of concurrent tiles (the most square block of them) reads its row and
    // column panels once as the tiles stream K together — what matters when K
    // is so long that no whole-K panel block fits L2 (e.g. an LM head's dgrad).
    let l2_block = gemm_hbm_bytes(s.m as f64, s.n as f64, k, in_b, out_b, sm.l2_bytes);
    let per_group_tiles = ceil_div(s.m, bm) * ceil_div(s.n, bn);
    let per_group_waves = (waves as f64 / s.groups as f64).max(1.0);
    let (rows_t, cols_t) = (ceil_div(s.m, bm) as f64, ceil_div(s.n, bn) as f64);
    let wave_tiles = (per_group_tiles as f64).min(ctas as f64);
    let r = (wave_tiles * bnf / bmf).sqrt().clamp(1.0, rows_t).min(wave_tiles);
    let c = (wave_tiles / r).ceil().min(cols_t);
    let streamed = per_group_waves * (r * bmf + c * bnf) * k * in_b + s.m as f64 * s.n as f64 * out_b;
    let floor = (s.m as f64 + s.n as f64) * k * in_b + s.m as f64 * s.n as f64 * out_b;
    let hbm_bytes = s.groups as f64 * l2_block.min(streamed.max(floor));
    let hbm_s = hbm_bytes / sm.hbm;
    let kernel_s = combine(device, sm_s, hbm_s);
    let bound = if hbm_s > sm_s {
        Bound::Hbm
    } else if mma_s + promo_s >= load_s {
        if mma_s >= promo_s {
            Bound::Compute
        } else {
            Bound::Vector
        }
    } else if feed < sm.port {
        Bound::Latency
    } else {
        Bound::L2
    };
    let flops = 2.0 * s.m as f64 * s.n as f64 * k * s.groups as f64;
    let tiers = TierBytes { smem_bytes: smem_total, l2_bytes: l2_total, hbm_bytes, ..Default::default() };
    let tile = TileInfo { tile_m: bm as u32, tile_n: bn as u32, tile_k: bk as u32, stages, tiles, waves };
    Ok(OpCost::from_parts(device, flops, kernel_s, bound, ctas, tiers, tile))
}

/// Fused attention (FlashAttention-3 forward/backward; FlashMLA-style
/// split-KV decode when query heads share KV heads): query tiles of 64 or
/// 128 rows, key blocks of 64 or 128, scores through the tensor cores and
/// the softmax on CUDA cores (exp on the special-function units) not
/// overlapped with them.
fn attention(device: &DeviceSpec, sm: &Sm, a: &AttentionShape) -> Result<OpCost, ModelError> {
    let rate = device.tensor_flops_per_s(a.dtype)? * device.throttle();
    let n = sm.sms as f64;
    let per_sm_rate = rate / device.sms as f64;
    let share = a.heads / a.kv_heads;
    // Query heads that share a KV head are packed into one tile's rows.
    let packed = share > 1;
    let (rows, problems) = if packed { (a.q_len * share, a.batch * a.kv_heads) } else { (a.q_len, a.batch * a.heads) };
    let decode = packed && rows <= 256;
    let (bm, bn) = if decode { (64u64, 64u64) } else { (128, 128) };
    let m_tiles = ceil_div(rows, bm);
    let seen = keys_seen(a);
    let (dqk, dv) = (a.qk_dim as f64, a.v_dim as f64);
    let e = a.dtype.bytes();
    // Executed work: every row of every query tile (padding included).
    let scores = problems as f64 * m_tiles as f64 * bm as f64 * seen;
    let useful_scores = a.batch as f64 * a.heads as f64 * a.q_len as f64 * seen;
    let (flop_factor, score_passes, fp32_per_score) = match a.pass {
        // scale, max, subtract, sum, convert, and the output rescale
        // amortised over the key block.
        Pass::Forward => (1.0, 1.0, 5.0 + dv / bn as f64),
        // recompute P, then dP and dS elementwise.
        Pass::Backward => (2.5, 2.0, 8.0 + dv / bn as f64),
    };
    let tensor_s = flop_factor * scores * 2.0 * (dqk + dv) / (per_sm_rate * n);
    let vector_s =
        score_passes * scores * (1.0 / device.sfu_per_clk_per_sm + fp32_per_score / device.fp32_lanes_per_sm)
            / (sm.clock_hz * n);
    // Work items: split-KV decode spreads key blocks over every SM evenly;
    // otherwise one (problem, query tile) per CTA in waves.
    let (items, quantisation) = if decode {
        let blocks = problems * m_tiles * ceil_div(a.kv_len, bn);
        (blocks, 1.0)
    } else {
        let items = problems * m_tiles;
        let waves = ceil_div(items, sm.sms as u64);
        (items, (waves * sm.sms as u64) as f64 / items as f64)
    };
    let ctas = items.min(sm.sms as u64) as u32;
    // Each query tile streams its problem's K and V through shared memory;
    // absorbed MLA keeps V inside the latent K (qk_dim > v_dim, one KV head).
    let kv_width = if packed && dqk > dv { dqk } else { dqk + dv };
    let kv_per_problem = seen.min(a.kv_len as f64) * kv_width * e;
    let q_bytes = a.batch as f64 * a.q_len as f64 * a.heads as f64 * dqk * e;
    let o_bytes = a.batch as f64 * a.q_len as f64 * a.heads as f64 * dv * e;
    let kv_bytes = problems as f64 * a.kv_len as f64 * kv_width * e;
    let smem_bytes = problems as f64 * m_tiles as f64 * kv_per_problem * score_passes + q_bytes;
    let feed_s = smem_bytes / (sm.port * n);
    let busy = (tensor_s + vector_s).max(feed_s);
    let sm_s = busy * quantisation + 2.0 * sm.latency_s;
    let hbm_bytes = match a.pass {
        Pass::Forward => q_bytes + kv_bytes + o_bytes,
        Pass::Backward => 2.0 * (q_bytes + kv_bytes) + 2.0 * o_bytes,
    };
    let hbm_s = hbm_bytes / sm.hbm;
    let kernel_s = combine(device, sm_s, hbm_s);
    let bound = if hbm_s > sm_s {
        Bound::Hbm
    } else if feed_s > tensor_s + vector_s {
        Bound::L2
    } else if vector_s > tensor_s {
        Bound::Vector
    } else {
        Bound::Compute
    };
    let flops = flop_factor * useful_scores * 2.0 * (dqk + dv);
    let tiers = TierBytes { smem_bytes, l2_bytes: smem_bytes + o_bytes, hbm_bytes, ..Default::default() };
    let tile = TileInfo {
        tile_m: bm as u32,
        tile_n: bn as u32,
        tile_k: a.qk_dim as u32,
        stages: 2,
        tiles: items,
        waves: ceil_div(items, sm.sms as u64),
    };
    Ok(OpCost::from_parts(device, flops, kernel_s, bound, ctas, tiers, tile))
}
