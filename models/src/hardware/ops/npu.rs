//! Op costs on AI cores with explicitly managed buffers (Ascend Da Vinci).
//!
//! A GEMM tile `m x n` walks K in `k`-deep steps. Each step is a pipeline of
//! stages simulated by [`pipeline_time`]: MTE2 copies the A and B panels
//! from global memory (L2 / HBM) into L1, MTE1 copies them into L0A / L0B,
//! the cube unit multiplies them into L0C (16 x 16 x 16 per clock); at the
//! end of a tile FixPipe writes L0C out. With double buffering every buffer
//! holds two slots, so a step's loads overlap the previous step's compute.
//! Every buffer must hold its slots: a tile that does not fit is an error
//! naming the buffer, never a silent slowdown. Norms, elementwise passes
//! and the softmax run on the vector units through the Unified Buffer
//! (MTE2 in, vector, MTE3 out). Tiles are spread over the cores in waves;
//! HBM bytes follow from L2 blocking as on GPUs.

use crate::error::ModelError;
use crate::hardware::device::{DeviceSpec, ExplicitBuffers};

use super::pipeline::pipeline_time;
use super::{
    combine, gemm_hbm_bytes, gemm_out_bytes, keys_seen, AttentionShape, Bound, GemmShape, Op, OpCost, OpOptions, Pass,
    TierBytes, TileInfo,
};

const KIB: f64 = 1024.0;

struct Cores {
    cores: u32,
    clock_hz: f64,
    slots: u32,
    l2_bytes: f64,
    hbm: f64,
    /// Per-core share of global-memory bandwidth when every core streams.
    gm_rate: f64,
}

fn cores(device: &DeviceSpec, b: &ExplicitBuffers, options: &OpOptions) -> Result<Cores, ModelError> {
    let l2 = device.effective_l2()?;
    let cores = options.sms.unwrap_or(device.sms).clamp(1, device.sms);
    let clock_hz = b.clock_mhz * 1e6;
    Ok(Cores {
        cores,
        clock_hz,
        slots: if b.double_buffer { 2 } else { 1 },
        l2_bytes: l2.bytes,
        hbm: device.hbm_bytes_per_s(),
        gm_rate: b.gm_to_l1_bytes_per_clk * clock_hz * l2.bandwidth_factor,
    })
}

pub(crate) fn op_cost(
    device: &DeviceSpec,
    b: &ExplicitBuffers,
    op: &Op,
    options: &OpOptions,
) -> Result<OpCost, ModelError> {
    let c = cores(device, b, options)?;
    match op {
        Op::Gemm(s) => gemm(device, b, &c, s, options),
        Op::Attention(a) => attention(device, b, &c, a),
        Op::Norm { tokens, hidden, dtype, pass } => {
            let elems = (*tokens * *hidden) as f64;
            let (rw, ops) = match pass {
                Pass::Forward => (2.0, 4.0),
                Pass::Backward => (3.0, 8.0),
            };
            vector_pass(device, b, &c, elems * dtype.bytes() * (rw - 1.0), elems * dtype.bytes(), elems * ops)
        }
        Op::Elementwise { read_bytes, write_bytes, flops } => {
            vector_pass(device, b, &c, *read_bytes, *write_bytes, *flops)
        }
    }
}

/// Does an `m x n x k` tile (FP32 accumulators) fit every buffer with
/// `slots` slots each? The first buffer that does not fit, with what it needs.
fn tile_misfit(
    b: &ExplicitBuffers,
    m: u64,
    n: u64,
    k: u64,
    in_b: f64,
    slots: u32,
) -> Option<(&'static str, f64, f64, String)> {
    let s = slots as f64;
    let (mf, nf, kf) = (m as f64, n as f64, k as f64);
    let checks = [
        ("L0A", mf * kf * in_b * s, b.l0a_kib, format!("{m} x {k} x {in_b} B x {slots} slots")),
        ("L0B", kf * nf * in_b * s, b.l0b_kib, format!("{k} x {n} x {in_b} B x {slots} slots")),
        ("L0C", mf * nf * 4.0, b.l0c_kib, format!("{m} x {n} x 4 B FP32 accumulators")),
        ("L1", (mf + nf) * kf * in_b * s, b.l1_kib, format!("({m} + {n}) x {k} x {in_b} B x {slots} slots")),
    ];
    checks.into_iter().find(|(_, need, have, _)| *need > have * KIB)
}

/// `(core time, tile, slowest DMA step, cube step, FixPipe, tiles, waves)`.
type Candidate = (f64, [u64; 3], f64, f64, f64, u64, u64);

fn gemm(
    device: &DeviceSpec,
    b: &ExplicitBuffers,
    c: &Cores,
    s: &GemmShape,
    options: &OpOptions,
) -> Result<OpCost, ModelError> {
    // The cube's rate for this dtype relative to its FP16 rate (FP8 only
    // with fp8_emulation = "bf16", at the FP16 rate).
    let rate = device.tensor_flops_per_s(s.dtype)?;
    let slowdown = (device.bf16_tflops * 1e12 / rate).max(1.0);
    let in_b = s.dtype.bytes();
    let out_b = gemm_out_bytes(s.dtype);
    let candidates: Vec<[u64; 3]> = match options.tile {
        Some([m, n, k]) => {
            if let Some((name, need, have, how)) = tile_misfit(b, m as u64, n as u64, k as u64, in_b, c.slots) {
                return Err(ModelError::invalid(
                    "workload.tile",
                    format!(
                        "tile {m}x{n}x{k} does not fit {name}: needs {:.1} KiB ({how}), {name} has {have} KiB \
                         (hardware.buffers.{}_kib)",
                        need / KIB,
                        name.to_lowercase()
                    ),
                ));
            }
            vec![[m as u64, n as u64, k as u64]]
        }
        None => {
            let sides = [16u64, 32, 64, 96, 128, 192, 256];
            let depths = [16u64, 32, 64, 128, 256];
            let mut v = Vec::new();
            for &m in &sides {
                for &n in &sides {
                    for &k in &depths {
                        if tile_misfit(b, m, n, k, in_b, c.slots).is_none() {
                            v.push([m, n, k]);
                        }
                    }
                }
            }
            if v.is_empty() {
                let (name, need, have, how) =
                    tile_misfit(b, 16, 16, 16, in_b, c.slots).unwrap_or(("L0A", 0.0, 0.0, String::new()));
                return Err(ModelError::invalid(
                    format!("hardware.buffers.{}_kib", name.to_lowercase()),
                    format!(
                        "not even a 16x16x16 tile fits {name}: needs {:.2} KiB ({how}), has {have} KiB",
                        need / KIB
                    ),
                ));
            }
            v
        }
    };
    let mut best: Option<Candidate> = None;
    for [tm, tn, tk] in candidates {
        let tiles = s.m.div_ceil(tm) * s.n.div_ceil(tn) * s.groups;
        let waves = tiles.div_ceil(c.cores as u64);
        let steps = s.k.div_ceil(tk);
        let step_bytes = (tm + tn) as f64 * tk as f64 * in_b;
        let mte2 = step_bytes / c.gm_rate;
        let mte1 = step_bytes / (b.l1_to_l0_bytes_per_clk * c.clock_hz);
        let cube = (tm.div_ceil(b.cube_m as u64) * tn.div_ceil(b.cube_n as u64) * tk.div_ceil(b.cube_k as u64)) as f64
            * slowdown
            / c.clock_hz;
        let fixpipe = tm as f64 * tn as f64 * out_b / (b.l0c_out_bytes_per_clk * c.clock_hz);
        let body = pipeline_time(&[mte2, mte1, cube], steps, c.slots);
        // L0C has one slot: the write-out follows the tile's last step.
        let tile_s = body + fixpipe;
        let core_s = waves as f64 * tile_s;
        let key = core_s;
        if best.as_ref().is_none_or(|bst| key < bst.0 - 1e-15) {
            best = Some((key, [tm, tn, tk], mte2.max(mte1), cube, fixpipe, tiles, waves));
        }
    }
    let (core_s, [tm, tn, tk], dma_step, cube_step, _fix, tiles, waves) = best.expect("at least one candidate");
    let (m, n, k, g) = (s.m as f64, s.n as f64, s.k as f64, s.groups as f64);
    let steps = s.k.div_ceil(tk) as f64;
    let hbm_bytes = g * gemm_hbm_bytes(m, n, k, in_b, out_b, c.l2_bytes);
    let hbm_s = hbm_bytes / c.hbm;
    let kernel_s = combine(device, core_s, hbm_s);
    let bound = if hbm_s > core_s {
        Bound::Hbm
    } else if dma_step > cube_step {
        Bound::Dma
    } else {
        Bound::Compute
    };
    let tf = tiles as f64;
    let l1_bytes = tf * steps * (tm + tn) as f64 * tk as f64 * in_b;
    let tiers = TierBytes {
        l0a_bytes: tf * steps * tm as f64 * tk as f64 * in_b,
        l0b_bytes: tf * steps * tk as f64 * tn as f64 * in_b,
        l0c_bytes: tf * tm as f64 * tn as f64 * 4.0,
        l1_bytes,
        l2_bytes: l1_bytes + g * m * n * out_b,
        hbm_bytes,
        ..Default::default()
    };
    let ctas = tiles.min(c.cores as u64) as u32;
    let tile = TileInfo { tile_m: tm as u32, tile_n: tn as u32, tile_k: tk as u32, stages: c.slots, tiles, waves };
    Ok(OpCost::from_parts(device, 2.0 * m * n * k * g, kernel_s, bound, ctas, tiers, tile))
}

/// A pass over global memory on the vector units: chunks of half the UB
/// (double buffered) move in by MTE2, are computed, and move out by MTE3.
fn vector_pass(
    device: &DeviceSpec,
    b: &ExplicitBuffers,
    c: &Cores,
    read_bytes: f64,
    write_bytes: f64,
    ops: f64,
) -> Result<OpCost, ModelError> {
    let vcores = b.vector_cores.max(1) as f64;
    let total = read_bytes + write_bytes;
    let chunk = b.ub_kib * KIB / c.slots as f64;
    let chunks = (read_bytes.max(1.0) / chunk).ceil().max(1.0);
    let per_core_chunks = (chunks / vcores).ceil().max(1.0);
    let in_s = chunk / c.gm_rate;
    let out_s = chunk * (write_bytes / read_bytes.max(1.0)) / (b.ub_out_bytes_per_clk * c.clock_hz);
    let vec_s = (ops / chunks) / (b.vector_lanes * c.clock_hz);
    let core_s = pipeline_time(&[in_s, vec_s, out_s], per_core_chunks as u64, c.slots);
    let hbm_s = total / c.hbm;
    let kernel_s = combine(device, core_s, hbm_s);
    let bound = if hbm_s > core_s {
        Bound::Hbm
    } else if vec_s > in_s.max(out_s) {
        Bound::Vector
    } else {
        Bound::Dma
    };
    let tiers = TierBytes { ub_bytes: total, l2_bytes: total, hbm_bytes: total, ..Default::default() };
    let tile = TileInfo { stages: c.slots, tiles: chunks as u64, waves: per_core_chunks as u64, ..Default::default() };
    Ok(OpCost::from_parts(device, ops, kernel_s, bound, device.sms, tiers, tile))
}

/// Attention on an AI core pair: per key block, MTE2 brings K/V into L1,
/// the cube computes scores and the weighted values, the vector unit runs
/// the softmax in the UB; double buffering overlaps consecutive blocks.
fn attention(device: &DeviceSpec, b: &ExplicitBuffers, c: &Cores, a: &AttentionShape) -> Result<OpCost, ModelError> {
    let rate = device.tensor_flops_per_s(a.dtype)?;
    let slowdown = (device.bf16_tflops * 1e12 / rate).max(1.0);
    let e = a.dtype.bytes();
    let share = a.heads / a.kv_heads;
    let packed = share > 1;
    let (rows, problems) = if packed { (a.q_len * share, a.batch * a.kv_heads) } else { (a.q_len, a.batch * a.heads) };
    let (dqk, dv) = (a.qk_dim as f64, a.v_dim as f64);
    let kv_width = if packed && dqk > dv { dqk } else { dqk + dv };
    // Query tile and key block sized so the score block (FP32 in L0C) and
    // the K block (L0B, two slots) fit.
    let bm = 64u64.min(rows.next_power_of_two().max(16));
    let mut bn = 128u64;
    while bn > 16
        && (bn as f64 * dqk.min(256.0) * e * c.slots as f64 > b.l0b_kib * KIB
            || (bm * bn) as f64 * 4.0 > b.l0c_kib * KIB)
    {
        bn /= 2;
    }
    if (bm * bn) as f64 * 4.0 > b.l0c_kib * KIB {
        return Err(ModelError::invalid(
            "hardware.buffers.l0c_kib",
            format!("an attention score block of {bm}x{bn} FP32 needs {:.1} KiB of L0C", (bm * bn * 4) as f64 / KIB),
        ));
    }
    let m_tiles = rows.div_ceil(bm);
    let seen = keys_seen(a);
    let blocks = (seen / bn as f64).ceil().max(1.0) as u64;
    let mte2 = bn as f64 * kv_width * e / c.gm_rate;
    let cube = ((bm.div_ceil(16) * bn.div_ceil(16)) as f64 * ((dqk + dv) / 16.0).ceil()) * slowdown / c.clock_hz;
    let vector_ops_per_score = 6.0 + dv / bn as f64;
    let vec_cores_per_core = (b.vector_cores as f64 / device.sms as f64).max(1.0);
    let vec = (bm * bn) as f64 * vector_ops_per_score / (b.vector_lanes * vec_cores_per_core * c.clock_hz);
    let factor = match a.pass {
        Pass::Forward => 1.0,
        Pass::Backward => 2.5,
    };
    let per_item = pipeline_time(&[mte2, cube * factor, vec * factor], blocks, c.slots);
    let items = problems * m_tiles;
    let waves = items.div_ceil(c.cores as u64);
    let core_s = waves as f64 * per_item;
    let q_bytes = a.batch as f64 * a.q_len as f64 * a.heads as f64 * dqk * e;
    let o_bytes = a.batch as f64 * a.q_len as f64 * a.heads as f64 * dv * e;
    let kv_bytes = problems as f64 * a.kv_len as f64 * kv_width * e;
    let hbm_bytes = factor.ceil() * (q_bytes + kv_bytes + o_bytes);
    let hbm_s = hbm_bytes / c.hbm;
    let kernel_s = combine(device, core_s, hbm_s);
    let bound = if hbm_s > core_s {
        Bound::Hbm
    } else if vec > cube && vec > mte2 {
        Bound::Vector
    } else if mte2 > cube {
        Bound::Dma
    } else {
        Bound::Compute
    };
    let flops = factor * 2.0 * a.batch as f64 * a.heads as f64 * a.q_len as f64 * seen * (dqk + dv);
    let l1 = items as f64 * blocks as f64 * bn as f64 * kv_width * e;
    let scores = items as f64 * blocks as f64 * (bm * bn) as f64;
    let tiers = TierBytes {
        l0a_bytes: q_bytes * blocks as f64,
        l0b_bytes: l1,
        l0c_bytes: scores * 4.0,
        l1_bytes: l1,
        ub_bytes: scores * 2.0 * e,
        l2_bytes: l1 + o_bytes,
        hbm_bytes,
        ..Default::default()
    };
    let tile = TileInfo {
        tile_m: bm as u32,
        tile_n: bn as u32,
        tile_k: a.qk_dim as u32,
        stages: c.slots,
        tiles: items,
        waves,
    };
    Ok(OpCost::from_parts(device, flops, kernel_s, bound, items.min(c.cores as u64) as u32, tiers, tile))
}
