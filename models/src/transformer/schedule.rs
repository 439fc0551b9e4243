//! Pipeline-parallel schedules: 1F1B, interleaved 1F1B, ZB1P (ZB-H1), DualPipe and DualPipeV,
//! generated as per-device op orders with the data dependencies between ops
//! and the points where the p2p transfers leave and are awaited.
//!
//! Sources of the op orders (re-implemented here, not copied):
//! - 1F1B: Megatron-LM's non-interleaved schedule (stage `s` of `p` runs
//!   `min(p-s-1, m)` warm-up forwards, then one forward / one backward, then the
//!   remaining backwards).
//! - ZB1P: ZB-H1 of Qi et al., "Zero Bubble Pipeline Parallelism" (ICLR 2024),
//!   as its repository's hand schedule (`efficiency.py`, `warmup_c = 1`): the
//!   1F1B order with every backward split into B (input gradient) and W
//!   (weight gradient), stage `s` starting its W passes `s` backwards late and
//!   finishing the `s` it owes at the end.
//! - DualPipe and DualPipeV: deepseek-ai/DualPipe (`dualpipe.py`,
//!   `dualpipev.py`), whose eight steps per rank are replayed below, including
//!   where each rank posts its sends and receives: the reference appends p2p
//!   ops to a list and commits them (`batch_isend_irecv` + wait) at the start
//!   of its next chunk, so a send leaves when the op *before* that commit ends
//!   (sometimes one op after the op that produced it) and a receive is awaited
//!   by the op *after* the commit (sometimes before the op that consumes it).
//!
//! Stages are model stages (`PP` of the DualPipe README table). Micro-batches
//! are numbered `0..m`; in DualPipe micro-batches `0..m/2` flow from device 0
//! (direction 0) and `m/2..m` from device `PP-1` (direction 1).

use std::collections::{BTreeMap, VecDeque};

use moesim_sim::{SimDuration, TaskClass, TaskGraph, TaskId, TaskKind};
use serde::Deserialize;

use crate::error::ModelError;

/// Which pipeline schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, schemars::JsonSchema)]
pub enum ScheduleKind {
    #[serde(rename = "1f1b")]
    OneFOneB,
    #[serde(rename = "zb1p")]
    Zb1p,
    #[serde(rename = "dualpipe")]
    DualPipe,
    #[serde(rename = "dualpipev")]
    DualPipeV,
    /// Megatron-LM's interleaved 1F1B (Narayanan et al., SC'21 §2.2.2):
    /// each device holds `virtual_stages` model chunks (stage `v * pp + d`
    /// on device `d`); built by [`build_interleaved`].
    #[serde(rename = "interleaved-1f1b")]
    Interleaved1F1B,
}

impl ScheduleKind {
    pub const ALL: [ScheduleKind; 4] =
        [ScheduleKind::OneFOneB, ScheduleKind::Zb1p, ScheduleKind::DualPipe, ScheduleKind::DualPipeV];

    /// The name a scenario uses.
    pub fn as_str(self) -> &'static str {
        match self {
            ScheduleKind::OneFOneB => "1f1b",
            ScheduleKind::Zb1p => "zb1p",
            ScheduleKind::DualPipe => "dualpipe",
            ScheduleKind::DualPipeV => "dualpipev",
            ScheduleKind::Interleaved1F1B => "interleaved-1f1b",
        }
    }

    pub fn from_name(name: &str) -> Option<ScheduleKind> {
        Self::ALL.into_iter().chain([ScheduleKind::Interleaved1F1B]).find(|k| k.as_str() == name)
    }
}

/// One stage of one micro-batch (a "chunk").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkRef {
    pub microbatch: u32,
    /// Model stage, `0..stages`.
    pub stage: u32,
}

/// One op a device runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PipeOp {
    /// Forward of one stage for one micro-batch.
    F(ChunkRef),
    /// Backward: the input gradient only when the chunk has a `W` op
    /// ([`PipelineSchedule::backward_includes_weight`] is false), else the
    /// full backward.
    B(ChunkRef),
    /// The weight-gradient part of a backward whose `B` excluded it.
    W(ChunkRef),
    /// DualPipe's overlapped pair: a forward chunk and a (full) backward
    /// chunk of other micro-batches, run together.
    FB { f: ChunkRef, b: ChunkRef },
}

impl PipeOp {
    /// A short label such as `F3.1` (micro-batch 3, stage 1) or `F3.1+B0.2`.
    pub fn label(&self) -> String {
        match self {
            PipeOp::F(c) => format!("F{}.{}", c.microbatch, c.stage),
            PipeOp::B(c) => format!("B{}.{}", c.microbatch, c.stage),
            PipeOp::W(c) => format!("W{}.{}", c.microbatch, c.stage),
            PipeOp::FB { f, b } => format!("F{}.{}+B{}.{}", f.microbatch, f.stage, b.microbatch, b.stage),
        }
    }
}

/// Which half of an op a dependency attaches to: `Whole` for F, B and W ops;
/// `Forward` or `Backward` for the halves of an [`PipeOp::FB`] op.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum OpPart {
    Whole,
    Forward,
    Backward,
}

/// An op (or a half of an FB op) in a schedule: `ops[device][index]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct OpRef {
    pub device: u32,
    pub index: u32,
    pub part: OpPart,
}

/// A data dependency between stages on different devices, with when the data
/// leaves and when it is waited for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Transfer {
    /// The op (half) computing the data: a forward's activation or a
    /// backward's input gradient.
    pub producer: OpRef,
    /// The op (half) using it.
    pub consumer: OpRef,
    /// Index in `ops[producer.device]` of the op at whose end the send is
    /// committed (`>= producer.index`).
    pub sent_after: u32,
    /// Index in `ops[consumer.device]` of the op that waits for the data
    /// before it starts (`<= consumer.index`).
    pub awaited_before: u32,
}

/// A generated schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct PipelineSchedule {
    pub kind: ScheduleKind,
    /// Model stages (`PP` of the DualPipe README table).
    pub stages: u32,
    /// Devices: `stages`, except DualPipeV: `stages / 2`.
    pub devices: u32,
    pub microbatches: u32,
    /// `device_of_stage[stage][direction]`: the device holding that stage for
    /// micro-batches of that direction. Only DualPipe has two directions
    /// (device `s` for direction 0, device `stages-1-s` for direction 1);
    /// elsewhere both entries are equal. DualPipeV puts stage `s` on device
    /// `min(s, stages-1-s)`.
    pub device_of_stage: Vec<[u32; 2]>,
    /// Per device, in execution order.
    pub ops: Vec<Vec<PipeOp>>,
    /// Whether some backward excludes its weight gradient (then that chunk
    /// has a `W` op). True for ZB1P (every chunk), DualPipe and DualPipeV
    /// (the chunks the reference runs with zero-bubble enabled).
    pub splits_weight: bool,
    /// `split[microbatch * stages + stage]`: the chunk has a W op.
    split: Vec<bool>,
    transfers: Vec<Transfer>,
}

/// The most stage-micro-batches a schedule may have (it lists each as ops).
pub const MAX_CHUNKS: u64 = 10_000_000;

/// Checks the sizes and builds a schedule.
pub fn build(kind: ScheduleKind, stages: u32, microbatches: u32) -> Result<PipelineSchedule, ModelError> {
    check_sizes(kind, stages, microbatches)?;
    let (p, m) = (stages, microbatches);
    match kind {
        ScheduleKind::OneFOneB => Ok(linear(kind, p, m, one_f_one_b(p, m), false)),
        ScheduleKind::Zb1p => Ok(linear(kind, p, m, zb_h1(p, m), true)),
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => dual(kind, p, m),
        ScheduleKind::Interleaved1F1B => build_interleaved(p, 1, m),
    }
}

/// The size rules of [`build_interleaved`]: Megatron-LM's (`schedules.py`)
/// micro-batches a multiple of the devices when `virtual_stages > 1`, and at
/// least one of each.
pub fn check_interleaved(devices: u32, virtual_stages: u32, microbatches: u32) -> Result<(), ModelError> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(moesim_topologies::ConfigProblem { key: key.to_owned(), message });
    };
    if devices < 1 {
        bad("workload.stages", "expected at least 1 pipeline stage for interleaved-1f1b, found 0".into());
    }
    if virtual_stages < 1 {
        bad("parallel.virtual_stages", "expected an integer >= 1, found 0".into());
    }
    if microbatches < 1 {
        bad("workload.microbatches", "expected at least 1 micro-batch for interleaved-1f1b, found 0".into());
    } else if devices >= 1 && virtual_stages > 1 && !microbatches.is_multiple_of(devices) {
        let fix = microbatches.div_ceil(devices) as u64 * devices as u64;
        bad(
            "workload.microbatches",
            format!(
                "interleaved-1f1b with virtual stages runs micro-batches in groups of the {devices} pipeline devices \
                 (Megatron-LM): expected a multiple of {devices}, found {microbatches}; {fix} would work"
            ),
        );
    }
    let chunks = devices as u64 * virtual_stages as u64 * microbatches as u64;
    if chunks > MAX_CHUNKS {
        bad("workload.microbatches", format!("expected at most {MAX_CHUNKS} stage-micro-batches, found {chunks}"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Invalid { problems })
    }
}

/// Megatron-LM's interleaved 1F1B on `p` devices with `v` model chunks each
/// (`forward_backward_pipelining_with_interleaving`): forward `k` of a
/// device runs chunk `(k mod p v) / p` of micro-batch `(k / p v) p + k mod
/// p`, backwards the chunks in reverse; device `d` warms up with `2 (p - d -
/// 1) + (v - 1) p` forwards, then alternates one forward and one backward.
/// Model stage `c p + d` is chunk `c` of device `d`. With `v = 1` it is 1F1B.
pub fn build_interleaved(p: u32, v: u32, m: u32) -> Result<PipelineSchedule, ModelError> {
    check_interleaved(p, v, m)?;
    if v == 1 {
        let mut s = linear(ScheduleKind::Interleaved1F1B, p, m, one_f_one_b(p, m), false);
        s.kind = ScheduleKind::Interleaved1F1B;
        return Ok(s);
    }
    let total = m * v;
    let group = p * v;
    let ops = (0..p)
        .map(|d| {
            let chunk = |k: u32, forward: bool| {
                let c = (k % group) / p;
                let c = if forward { c } else { v - 1 - c };
                ChunkRef { microbatch: (k / group) * p + k % p, stage: c * p + d }
            };
            let warmup = ((p - d - 1) * 2 + (v - 1) * p).min(total);
            let mut ops: Vec<PipeOp> = (0..warmup).map(|k| PipeOp::F(chunk(k, true))).collect();
            for i in 0..total - warmup {
                ops.push(PipeOp::F(chunk(warmup + i, true)));
                ops.push(PipeOp::B(chunk(i, false)));
            }
            ops.extend((total - warmup..total).map(|k| PipeOp::B(chunk(k, false))));
            ops
        })
        .collect();
    let stages = p * v;
    let mut schedule = PipelineSchedule {
        kind: ScheduleKind::Interleaved1F1B,
        stages,
        devices: p,
        microbatches: m,
        device_of_stage: (0..stages).map(|s| [s % p, s % p]).collect(),
        ops,
        splits_weight: false,
        split: vec![false; (stages * m) as usize],
        transfers: Vec::new(),
    };
    schedule.transfers = schedule
        .dependencies()
        .into_iter()
        .filter(|(a, b)| a.device != b.device)
        .map(|(producer, consumer)| Transfer {
            producer,
            consumer,
            sent_after: producer.index,
            awaited_before: consumer.index,
        })
        .collect();
    Ok(schedule)
}

/// The size rules [`build`] applies, without building: problems under the
/// keys `workload.stages` and `workload.microbatches`, with messages that do
/// not name a key (callers remap the keys, e.g. to `parallel.pp`).
///
/// - 1F1B and ZB1P: at least one stage and one micro-batch. (The README
///   closed forms assume a full steady state, `microbatches >= stages`; with
///   fewer, 1F1B still matches its closed form and ZB1P does not.)
/// - DualPipe: `stages` even and >= 2; `microbatches` even and >= 2 x
///   `stages` (`dualpipe.py`: `assert num_ranks % 2 == 0` and `assert
///   num_chunks > 0 and num_chunks % 2 == 0 and num_chunks >= num_ranks * 2`).
/// - DualPipeV: `stages` even and >= 2 (two per device); `microbatches >=
///   stages` (`dualpipev.py`: `assert num_chunks > 0 and num_chunks >=
///   num_ranks * 2`, with `num_ranks` = devices = `stages / 2`).
pub fn check_sizes(kind: ScheduleKind, stages: u32, microbatches: u32) -> Result<(), ModelError> {
    let mut problems = Vec::new();
    let mut bad = |key: &str, message: String| {
        problems.push(moesim_topologies::ConfigProblem { key: key.to_owned(), message });
    };
    let name = kind.as_str();
    match kind {
        ScheduleKind::OneFOneB | ScheduleKind::Zb1p | ScheduleKind::Interleaved1F1B => {
            if stages < 1 {
                bad("workload.stages", format!("expected at least 1 pipeline stage for {name}, found 0"));
            }
            if microbatches < 1 {
                bad("workload.microbatches", format!("expected at least 1 micro-batch for {name}, found 0"));
            }
        }
        ScheduleKind::DualPipe | ScheduleKind::DualPipeV => {
            if stages < 2 || stages % 2 == 1 {
                let fix =
                    if stages < 2 { "2".to_owned() } else { format!("{} or {}", stages as u64 - 1, stages as u64 + 1) };
                bad(
                    "workload.stages",
                    format!(
                        "{name} needs an even number of pipeline stages >= 2 (each device holds a stage from each \
                         end of the pipeline), found {stages}; {fix} would work"
                    ),
                );
            } else if kind == ScheduleKind::DualPipe && (microbatches % 2 == 1 || microbatches / 2 < stages) {
                // dualpipe.py: `assert num_chunks > 0 and num_chunks % 2 == 0 and num_chunks >= num_ranks * 2`
                // with num_ranks = stages.
                let least = 2 * stages as u64;
                let fix = (least.max(microbatches as u64) + 1) & !1;
                bad(
                    "workload.microbatches",
                    format!(
                        "dualpipe needs an even number of micro-batches (half enter at each end) and at least twice \
                         the stages ({least}), found {microbatches}; {fix} would work"
                    ),
                );
            } else if kind == ScheduleKind::DualPipeV && microbatches < stages {
                // dualpipev.py: `assert num_chunks > 0 and num_chunks >= num_ranks * 2` with num_ranks =
                // devices = stages / 2.
                bad(
                    "workload.microbatches",
                    format!(
                        "dualpipev needs at least as many micro-batches as stages ({stages}: twice its {} devices), \
                         found {microbatches}; {stages} would work",
                        stages / 2
                    ),
                );
            }
        }
    }
    let chunks = stages as u64 * microbatches as u64;
    if chunks > MAX_CHUNKS {
        bad(
            "workload.microbatches",
            format!(
                "expected at most {MAX_CHUNKS} stage-micro-batches (every one is an op of the schedule), found \
                 {stages} stages x {microbatches} micro-batches = {chunks}"
            ),
        );
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ModelError::Invalid { problems })
    }
}

/// 1F1B on `p` stages, one per device.
fn one_f_one_b(p: u32, m: u32) -> Vec<Vec<PipeOp>> {
    (0..p)
        .map(|s| {
            let c = |mb| ChunkRef { microbatch: mb, stage: s };
            let warmup = (p - s - 1).min(m);
            let mut ops: Vec<PipeOp> = (0..warmup).map(|mb| PipeOp::F(c(mb))).collect();
            for i in 0..m - warmup {
                ops.push(PipeOp::F(c(warmup + i)));
                ops.push(PipeOp::B(c(i)));
            }
            ops.extend((m - warmup..m).map(|mb| PipeOp::B(c(mb))));
            ops
        })
        .collect()
}

/// ZB-H1 on `p` stages: 1F1B's F/B order, stage `s` runs W of a micro-batch
/// after the backward `s` places later (FIFO), the last `min(s, m)` at the end.
fn zb_h1(p: u32, m: u32) -> Vec<Vec<PipeOp>> {
    (0..p)
        .map(|s| {
            let c = |mb| ChunkRef { microbatch: mb, stage: s };
            let warmup = (p - s - 1).min(m);
            let mut ops: Vec<PipeOp> = (0..warmup).map(|mb| PipeOp::F(c(mb))).collect();
            let mut next_w = 0;
            for i in 0..m {
                if warmup + i < m {
                    ops.push(PipeOp::F(c(warmup + i)));
                }
                ops.push(PipeOp::B(c(i)));
                if i >= s {
                    ops.push(PipeOp::W(c(next_w)));
                    next_w += 1;
                }
            }
            ops.extend((next_w..m).map(|mb| PipeOp::W(c(mb))));
            ops
        })
        .collect()
}

/// A one-direction schedule with stage `s` on device `s`; transfers leave at
/// the end of their producer and are awaited by their consumer.
fn linear(kind: ScheduleKind, p: u32, m: u32, ops: Vec<Vec<PipeOp>>, splits: bool) -> PipelineSchedule {
    let mut schedule = PipelineSchedule {
        kind,
        stages: p,
        devices: p,
        microbatches: m,
        device_of_stage: (0..p).map(|s| [s, s]).collect(),
        ops,
        splits_weight: splits,
        split: vec![splits; (p * m) as usize],
        transfers: Vec::new(),
    };
    schedule.transfers = schedule
        .dependencies()
        .into_iter()
        .filter(|(a, b)| a.device != b.device)
        .map(|(producer, consumer)| Transfer {
            producer,
            consumer,
            sent_after: producer.index,
            awaited_before: consumer.index,
        })
        .collect();
    schedule
}

/// A message between stages, named by the chunk that consumes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Message {
    /// A forward's output, the input of the forward of this chunk.
    Activation(ChunkRef),
    /// A backward's input gradient, the output gradient of this chunk.
    Gradient(ChunkRef),
}

/// One device's program while the DualPipe reference's steps are replayed.
/// Phase 0 is the device's early stage, phase 1 its late stage (for
/// DualPipe: the stage of the direction entering at this half of the
/// pipeline, and the other).
struct Program<'a> {
    stages: u32,
    ops: Vec<PipeOp>,
    /// Model stage of each phase.
    stage: [u32; 2],
    /// First micro-batch of each phase's direction.
    first_microbatch: [u32; 2],
    /// Device of each (stage, direction).
    device_of_stage: &'a [[u32; 2]],
    direction: [usize; 2],
    device: u32,
    next_f: [u32; 2],
    next_b: [u32; 2],
    next_send_f: [u32; 2],
    next_send_b: [u32; 2],
    next_recv_f: [u32; 2],
    next_recv_b: [u32; 2],
    /// Backwards whose W is deferred, in order (the reference's FIFO).
    deferred_w: VecDeque<ChunkRef>,
    split: Vec<ChunkRef>,
    /// (message, index of the op at whose end it leaves)
    sends: Vec<(Message, u32)>,
    /// (message, index of the op that waits for it)
    receives: Vec<(Message, u32)>,
}

impl Program<'_> {
    fn chunk(&self, phase: usize, count: u32) -> ChunkRef {
        ChunkRef { microbatch: self.first_microbatch[phase] + count, stage: self.stage[phase] }
    }
    fn remote(&self, phase: usize, stage: i64) -> bool {
        stage >= 0
            && stage < self.stages as i64
            && self.device_of_stage[stage as usize][self.direction[phase]] != self.device
    }
    fn recv_forward(&mut self, phase: usize) {
        if self.remote(phase, self.stage[phase] as i64 - 1) {
            let c = self.chunk(phase, self.next_recv_f[phase]);
            self.next_recv_f[phase] += 1;
            self.receives.push((Message::Activation(c), self.ops.len() as u32));
        }
    }
    fn recv_backward(&mut self, phase: usize) {
        if self.remote(phase, self.stage[phase] as i64 + 1) {
            let c = self.chunk(phase, self.next_recv_b[phase]);
            self.next_recv_b[phase] += 1;
            self.receives.push((Message::Gradient(c), self.ops.len() as u32));
        }
    }
    fn send_forward(&mut self, phase: usize) {
        if self.remote(phase, self.stage[phase] as i64 + 1) {
            let c = self.chunk(phase, self.next_send_f[phase]);
            self.next_send_f[phase] += 1;
            let to = ChunkRef { stage: c.stage + 1, ..c };
            self.sends.push((Message::Activation(to), self.ops.len() as u32 - 1));
        }
    }
    fn send_backward(&mut self, phase: usize) {
        if self.remote(phase, self.stage[phase] as i64 - 1) {
            let c = self.chunk(phase, self.next_send_b[phase]);
            self.next_send_b[phase] += 1;
            let to = ChunkRef { stage: c.stage - 1, ..c };
            self.sends.push((Message::Gradient(to), self.ops.len() as u32 - 1));
        }
    }
    fn take_f(&mut self, phase: usize) -> ChunkRef {
        let c = self.chunk(phase, self.next_f[phase]);
        self.next_f[phase] += 1;
        c
    }
    fn take_b(&mut self, phase: usize) -> ChunkRef {
        let c = self.chunk(phase, self.next_b[phase]);
        self.next_b[phase] += 1;
        c
    }
    fn forward(&mut self, phase: usize, recv: bool, send: bool) {
        if recv {
            self.recv_forward(phase);
        }
        let c = self.take_f(phase);
        self.ops.push(PipeOp::F(c));
        if send {
            self.send_forward(phase);
        }
    }
    /// `zero_bubble`: the weight gradient is deferred to a later W op.
    fn backward(&mut self, phase: usize, zero_bubble: bool, send: bool) {
        self.recv_backward(phase);
        let c = self.take_b(phase);
        self.ops.push(PipeOp::B(c));
        if zero_bubble {
            self.deferred_w.push_back(c);
            self.split.push(c);
        }
        if send {
            self.send_backward(phase);
        }
    }
    fn forward_backward(&mut self, f_phase: usize, b_phase: usize, recv_f: bool) {
        if recv_f {
            self.recv_forward(f_phase);
        }
        self.recv_backward(b_phase);
        let f = self.take_f(f_phase);
        let b = self.take_b(b_phase);
        self.ops.push(PipeOp::FB { f, b });
        self.send_forward(f_phase);
        self.send_backward(b_phase);
    }
    fn weight(&mut self) -> Result<(), ModelError> {
        let c = self.deferred_w.pop_front().ok_or_else(|| internal("a W op with no deferred backward"))?;
        self.ops.push(PipeOp::W(c));
        Ok(())
    }
}

fn internal(what: &str) -> ModelError {
    ModelError::Unsupported(format!("internal error in the DualPipe schedule generator: {what}"))
}

/// DualPipe (`stages` devices, two directions) or DualPipeV (`stages / 2`
/// devices, a V: stage `d` down and stage `stages-1-d` up on device `d`).
fn dual(kind: ScheduleKind, p: u32, m: u32) -> Result<PipelineSchedule, ModelError> {
    let v = kind == ScheduleKind::DualPipeV;
    let devices = if v { p / 2 } else { p };
    let device_of_stage: Vec<[u32; 2]> =
        (0..p).map(|s| if v { [s.min(p - 1 - s); 2] } else { [s, p - 1 - s] }).collect();
    let mut programs = Vec::with_capacity(devices as usize);
    for d in 0..devices {
        // `rank` in the step counts: DualPipe's half_rank, DualPipeV's rank.
        let (rank, ranks, chunks) = if v { (d, devices, m) } else { (d.min(p - 1 - d), p / 2, m / 2) };
        let second_half = !v && d >= p / 2;
        let direction = if second_half { [1, 0] } else { [0, 1] };
        let mut prog = Program {
            stages: p,
            ops: Vec::new(),
            stage: [rank, p - 1 - rank],
            first_microbatch: if v { [0, 0] } else { [direction[0] as u32 * m / 2, direction[1] as u32 * m / 2] },
            device_of_stage: &device_of_stage,
            direction: if v { [0, 0] } else { direction },
            device: d,
            next_f: [0; 2],
            next_b: [0; 2],
            next_send_f: [0; 2],
            next_send_b: [0; 2],
            next_recv_f: [0; 2],
            next_recv_b: [0; 2],
            deferred_w: VecDeque::new(),
            split: Vec::new(),
            sends: Vec::new(),
            receives: Vec::new(),
        };
        // DualPipe's middle ranks and DualPipeV's last rank sit at the turn of
        // the pipeline.
        let turn = rank == ranks - 1;
        let before_turn = ranks - rank - 1;
        // Step 1: forwards of the early stage.
        for _ in 0..2 * before_turn {
            prog.forward(0, true, true);
        }
        // Step 2: early and late forwards alternate; sends of the early
        // forward wait until after the late one (except at the turn).
        prog.recv_forward(0);
        for i in 0..rank + 1 {
            prog.forward(0, false, turn && !v);
            prog.recv_forward(0);
            prog.forward(1, true, !turn || i < rank);
            if !turn || v {
                prog.send_forward(0);
            }
        }
        // Step 3: late backward (W deferred), its W, late forward.
        for _ in 0..before_turn {
            prog.backward(1, true, true);
            prog.recv_forward(1);
            prog.weight()?;
            prog.forward(1, false, true);
        }
        // Step 4: the steady state of overlapped pairs.
        let steady = chunks + rank + 1 - 2 * ranks;
        for i in 0..steady {
            if i == 0 {
                if turn {
                    // The reference does not overlap this pair, to cut the bubble.
                    prog.forward(0, false, false);
                    prog.send_forward(1);
                    prog.backward(1, false, false);
                    prog.send_forward(0);
                    prog.send_backward(1);
                } else {
                    prog.forward_backward(0, 1, false);
                }
            } else {
                prog.forward_backward(0, 1, true);
            }
            prog.forward_backward(1, 0, true);
        }
        // Step 5: late backward, then a pair.
        for _ in 0..before_turn {
            prog.backward(1, false, true);
            prog.forward_backward(1, 0, true);
        }
        // Step 6: backwards of both stages; the second half defer their W.
        let mut zero_bubble = false;
        let count = rank + 1;
        for i in 0..count {
            if i == count / 2 && rank % 2 == 1 {
                zero_bubble = true;
            }
            prog.backward(1, zero_bubble, true);
            if i == count / 2 && rank % 2 == 0 {
                zero_bubble = true;
            }
            prog.backward(0, zero_bubble, true);
        }
        // Step 7: a W, then an early backward with its W deferred.
        for _ in 0..before_turn {
            prog.weight()?;
            prog.backward(0, true, true);
        }
        // Step 8: the remaining W.
        for _ in 0..rank + 1 {
            prog.weight()?;
        }
        if !prog.deferred_w.is_empty() {
            return Err(internal("deferred weight gradients left at the end"));
        }
        programs.push(prog);
    }

    let mut split = vec![false; (p * m) as usize];
    let mut ops = Vec::with_capacity(devices as usize);
    let mut sent: BTreeMap<Message, u32> = BTreeMap::new();
    let mut received: BTreeMap<Message, u32> = BTreeMap::new();
    for prog in programs {
        for c in &prog.split {
            split[(c.microbatch * p + c.stage) as usize] = true;
        }
        sent.extend(prog.sends.iter().copied());
        received.extend(prog.receives.iter().copied());
        ops.push(prog.ops);
    }
    let mut schedule = PipelineSchedule {
        kind,
        stages: p,
        devices,
        microbatches: m,
        device_of_stage,
        ops,
        splits_weight: split.iter().any(|&s| s),
        split,
        transfers: Vec::new(),
    };
    if sent.len() != received.len() {
        return Err(internal("sends and receives do not pair up"));
    }
    let mut transfers = Vec::new();
    for (producer, consumer) in schedule.dependencies() {
        if producer.device == consumer.device {
            continue;
        }
        let message = match schedule.op(consumer).and_then(|op| op_chunk(op, consumer.part)) {
            Some((false, c)) => Message::Activation(c),
            Some((true, c)) => Message::Gradient(c),
            None => return Err(internal("a dependency names no op")),
        };
        let (Some(&sent_after), Some(&awaited_before)) = (sent.get(&message), received.get(&message)) else {
            return Err(internal("a transfer between devices with no send or no receive"));
        };
        transfers.push(Transfer { producer, consumer, sent_after, awaited_before });
    }
    schedule.transfers = transfers;
    Ok(schedule)
}

/// The chunk an op (half) works on and whether it is a backward (B or W).
fn op_chunk(op: &PipeOp, part: OpPart) -> Option<(bool, ChunkRef)> {
    match (op, part) {
        (PipeOp::F(c), OpPart::Whole) => Some((false, *c)),
        (PipeOp::B(c) | PipeOp::W(c), OpPart::Whole) => Some((true, *c)),
        (PipeOp::FB { f, .. }, OpPart::Forward) => Some((false, *f)),
        (PipeOp::FB { b, .. }, OpPart::Backward) => Some((true, *b)),
        _ => None,
    }
}

/// Where each pass of each chunk runs: `[F, B, W]` per chunk.
type Placement = Vec<[Option<OpRef>; 3]>;

impl PipelineSchedule {
    /// The op an [`OpRef`] names.
    pub fn op(&self, at: OpRef) -> Option<&PipeOp> {
        self.ops.get(at.device as usize)?.get(at.index as usize)
    }

    /// The direction of a micro-batch: 1 for DualPipe's second half, else 0.
    pub fn direction(&self, microbatch: u32) -> u32 {
        u32::from(self.kind == ScheduleKind::DualPipe && microbatch >= self.microbatches / 2)
    }

    /// The device running a chunk.
    pub fn device_of(&self, chunk: ChunkRef) -> u32 {
        self.device_of_stage[chunk.stage as usize][self.direction(chunk.microbatch) as usize]
    }

    /// Whether the chunk's `B` op is the full backward (no `W` op of its own).
    pub fn backward_includes_weight(&self, chunk: ChunkRef) -> bool {
        !self.split[(chunk.microbatch * self.stages + chunk.stage) as usize]
    }

    fn placement(&self) -> Placement {
        let mut at: Placement = vec![[None; 3]; (self.microbatches * self.stages) as usize];
        let slot = |c: &ChunkRef| (c.microbatch * self.stages + c.stage) as usize;
        for (d, ops) in self.ops.iter().enumerate() {
            for (i, op) in ops.iter().enumerate() {
                let r = |part| OpRef { device: d as u32, index: i as u32, part };
                match op {
                    PipeOp::F(c) => at[slot(c)][0] = Some(r(OpPart::Whole)),
                    PipeOp::B(c) => at[slot(c)][1] = Some(r(OpPart::Whole)),
                    PipeOp::W(c) => at[slot(c)][2] = Some(r(OpPart::Whole)),
                    PipeOp::FB { f, b } => {
                        at[slot(f)][0] = Some(r(OpPart::Forward));
                        at[slot(b)][1] = Some(r(OpPart::Backward));
                    }
                }
            }
        }
        at
    }

    /// Data dependencies between ops (not stream order), as (producer,
    /// consumer): the forward of stage s needs the forward of s-1 of the same
    /// micro-batch; the backward of s needs the backward of s+1 and the
    /// forward of s (for the last stage that is the loss); W needs its B.
    /// For an FB op the part says which half the dependency attaches to.
    /// Sorted by consumer, then producer.
    pub fn dependencies(&self) -> Vec<(OpRef, OpRef)> {
        let at = self.placement();
        let p = self.stages;
        let mut deps = Vec::new();
        for mb in 0..self.microbatches {
            for s in 0..p {
                let here = at[(mb * p + s) as usize];
                let mut dep = |from: Option<OpRef>, to: Option<OpRef>| {
                    if let (Some(a), Some(b)) = (from, to) {
                        deps.push((a, b));
                    }
                };
                if s > 0 {
                    dep(at[(mb * p + s - 1) as usize][0], here[0]);
                }
                dep(here[0], here[1]);
                if s + 1 < p {
                    dep(at[(mb * p + s + 1) as usize][1], here[1]);
                }
                dep(here[1], here[2]);
            }
        }
        deps.sort_by_key(|&(a, b)| (b, a));
        deps
    }

    /// The dependencies between devices, with the op at whose end each send
    /// leaves and the op that waits for it. In 1F1B and ZB1P those are the
    /// producer and the consumer; DualPipe and DualPipeV follow the reference's
    /// commit points.
    pub fn transfers(&self) -> &[Transfer] {
        &self.transfers
    }

    /// Copies of a stage's parameters a device holds, relative to one stage:
    /// 1 for 1F1B and ZB1P, 2 for DualPipe and DualPipeV.
    pub fn parameter_copies(&self) -> u32 {
        let mut per_device = vec![0u32; self.devices as usize];
        for devs in &self.device_of_stage {
            let copies: &[u32] = if self.kind == ScheduleKind::DualPipe { devs } else { &devs[..1] };
            for &d in copies {
                per_device[d as usize] += 1;
            }
        }
        per_device.into_iter().max().unwrap_or(0)
    }

    /// Peak activations each device holds, in stage-micro-batches (the
    /// activations one stage keeps for one micro-batch). Convention: a chunk
    /// holds its activations from the start of its forward until the end of
    /// its backward pass that frees them: its W when the weight gradient is
    /// split off (W still reads the stage's inputs), else its B. The count is
    /// taken at the start of each op, after the op's forward has allocated and
    /// before anything it frees is released, so an FB op counts the
    /// forward's new chunk and the backward's chunk together.
    pub fn peak_activation_microbatches(&self) -> Vec<u32> {
        self.ops
            .iter()
            .map(|ops| {
                let (mut live, mut peak) = (0u32, 0u32);
                for op in ops {
                    let (allocates, frees) = match op {
                        PipeOp::F(_) => (1, 0),
                        PipeOp::B(c) => (0, u32::from(self.backward_includes_weight(*c))),
                        PipeOp::W(_) => (0, 1),
                        PipeOp::FB { b, .. } => (1, u32::from(self.backward_includes_weight(*b))),
                    };
                    live += allocates;
                    peak = peak.max(live);
                    live -= frees;
                }
                peak
            })
            .collect()
    }
}

/// How long each kind of op takes, for lowering a schedule to fixed delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpDurations {
    /// A forward chunk (F).
    pub forward: SimDuration,
    /// A full backward chunk (B of the README table: input and weight gradients).
    pub backward: SimDuration,
    /// The weight-gradient part of a backward (W); a split-off B takes
    /// `backward - weight`.
    pub weight: SimDuration,
    /// A forward and a backward chunk overlapped (F&B).
    pub overlapped: SimDuration,
}

impl PipelineSchedule {
    /// How long `op` takes: F = forward; B = backward - weight when the chunk
    /// has a W op, else backward; W = weight; FB = overlapped (its backward
    /// half is always a full backward in DualPipe).
    pub fn op_duration(&self, op: &PipeOp, d: &OpDurations) -> SimDuration {
        match op {
            PipeOp::F(_) => d.forward,
            PipeOp::B(c) if self.backward_includes_weight(*c) => d.backward,
            PipeOp::B(_) => SimDuration(d.backward.0.saturating_sub(d.weight.0)),
            PipeOp::W(_) => d.weight,
            PipeOp::FB { .. } => d.overlapped,
        }
    }

    /// Busy time of each device: the sum of its ops' durations.
    pub fn busy(&self, d: &OpDurations) -> Vec<SimDuration> {
        self.ops
            .iter()
            .map(|ops| SimDuration(ops.iter().fold(0u64, |acc, op| acc.saturating_add(self.op_duration(op, d).0))))
            .collect()
    }

    /// The bubble the DualPipe README table gives for this kind and number of
    /// stages, in picoseconds (with PP = stages, B the full backward, F&B the
    /// overlapped pair): 1F1B (PP-1)(F+B); ZB1P (PP-1)(F+B-2W); DualPipe and
    /// DualPipeV (PP/2-1)(F&B+B-3W). It can come out negative for durations
    /// far from the table's assumptions.
    pub fn readme_bubble_ps(&self, d: &OpDurations) -> i128 {
        let (f, b, w, fb) = (d.forward.0 as i128, d.backward.0 as i128, d.weight.0 as i128, d.overlapped.0 as i128);
        let p = self.stages as i128;
        match self.kind {
            ScheduleKind::OneFOneB => (p - 1) * (f + b),
            // Megatron: (p - 1) / v of a device's F + B = p - 1 chunk pairs.
            ScheduleKind::Interleaved1F1B => (self.devices as i128 - 1) * (f + b),
            ScheduleKind::Zb1p => (p - 1) * (f + b - 2 * w),
            ScheduleKind::DualPipe | ScheduleKind::DualPipeV => (p / 2 - 1) * (fb + b - 3 * w),
        }
    }

    /// Lowers the schedule into `graph`: one stream per device (rank =
    /// device), each op a compute-class delay, and for every transfer a
    /// dependency from the op at whose end it is sent to the op that awaits
    /// it (sends take no time). Returns the task of each op, per device.
    pub fn lower_delays(&self, durations: &OpDurations, graph: &mut TaskGraph) -> Vec<Vec<TaskId>> {
        let tasks: Vec<Vec<TaskId>> = self
            .ops
            .iter()
            .enumerate()
            .map(|(d, ops)| {
                let stream = graph.add_stream(d as u32, "pipeline");
                ops.iter()
                    .map(|op| {
                        let label = graph.label(&op.label());
                        let kind = TaskKind::Delay(self.op_duration(op, durations));
                        graph.add_task(stream, label, TaskClass::Compute, kind)
                    })
                    .collect()
            })
            .collect();
        for t in &self.transfers {
            graph.add_dep(
                tasks[t.producer.device as usize][t.sent_after as usize],
                tasks[t.consumer.device as usize][t.awaited_before as usize],
            );
        }
        tasks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moesim_sim::{EngineOptions, Platform, Quiet};
    use proptest::prelude::*;

    fn order(s: &PipelineSchedule, device: usize) -> String {
        s.ops[device].iter().map(|op| op.label()).collect::<Vec<_>>().join(" ")
    }

    #[test]
    fn one_f_one_b_matches_megatron_order() {
        let s = build(ScheduleKind::OneFOneB, 4, 6).unwrap();
        assert_eq!(order(&s, 0), "F0.0 F1.0 F2.0 F3.0 B0.0 F4.0 B1.0 F5.0 B2.0 B3.0 B4.0 B5.0");
        assert_eq!(order(&s, 3), "F0.3 B0.3 F1.3 B1.3 F2.3 B2.3 F3.3 B3.3 F4.3 B4.3 F5.3 B5.3");
        assert!(!s.splits_weight);
        // Fewer micro-batches than stages: the warm-up is cut to m.
        let s = build(ScheduleKind::OneFOneB, 4, 2).unwrap();
        assert_eq!(order(&s, 0), "F0.0 F1.0 B0.0 B1.0");
    }

    #[test]
    fn zb_h1_delays_w_by_the_stage_index() {
        let s = build(ScheduleKind::Zb1p, 4, 6).unwrap();
        assert_eq!(
            order(&s, 0),
            "F0.0 F1.0 F2.0 F3.0 B0.0 W0.0 F4.0 B1.0 W1.0 F5.0 B2.0 W2.0 B3.0 W3.0 B4.0 W4.0 B5.0 W5.0"
        );
        assert_eq!(
            order(&s, 3),
            "F0.3 B0.3 F1.3 B1.3 F2.3 B2.3 F3.3 B3.3 W0.3 F4.3 B4.3 W1.3 F5.3 B5.3 W2.3 W3.3 W4.3 W5.3"
        );
        assert!(s.splits_weight && !s.backward_includes_weight(ChunkRef { microbatch: 2, stage: 1 }));
    }

    #[test]
    fn sizes_are_checked_with_key_free_messages() {
        for (kind, p, m, key, fix) in [
            (ScheduleKind::OneFOneB, 0, 4, "workload.stages", "found 0"),
            (ScheduleKind::Zb1p, 4, 0, "workload.microbatches", "found 0"),
            (ScheduleKind::DualPipe, 3, 12, "workload.stages", "2 or 4 would work"),
            (ScheduleKind::DualPipe, 0, 12, "workload.stages", "2 would work"),
            (ScheduleKind::DualPipe, 4, 9, "workload.microbatches", "10 would work"),
            (ScheduleKind::DualPipe, 4, 6, "workload.microbatches", "8 would work"),
            (ScheduleKind::DualPipeV, 4, 3, "workload.microbatches", "4 would work"),
            (ScheduleKind::DualPipe, u32::MAX, 8, "workload.stages", "4294967294 or 4294967296"),
            (ScheduleKind::Zb1p, 4_000_000_000, 8, "workload.microbatches", "at most 10000000"),
            (ScheduleKind::DualPipe, 2_000_000_000, 3_000_000_000, "workload.microbatches", "4000000000 would work"),
            (ScheduleKind::DualPipeV, 5, 30, "workload.stages", "4 or 6 would work"),
        ] {
            let Err(ModelError::Invalid { problems }) = build(kind, p, m) else {
                panic!("{kind:?} {p} {m} accepted");
            };
            assert_eq!(problems[0].key, key);
            assert!(problems[0].message.contains(fix), "{}", problems[0].message);
            assert!(!problems[0].message.contains("workload"), "{}", problems[0].message);
        }
        assert!(build(ScheduleKind::DualPipe, 4, 8).is_ok());
        assert!(build(ScheduleKind::DualPipeV, 4, 4).is_ok());
        assert!(build(ScheduleKind::DualPipeV, 4, 5).is_ok(), "dualpipev takes odd micro-batch counts");
        assert!(build(ScheduleKind::OneFOneB, 1, 1).is_ok());
    }

    #[test]
    fn dualpipe_pp8_m20_matches_the_reference_figure() {
        // deepseek-ai/DualPipe README figure (8 ranks, 20 micro-batches; the
        // reverse direction is 10..20 here): device 0 runs 7 forwards, then
        // F B W of the reverse direction three times, then overlapped pairs,
        // and ends with B W pairs of its own direction.
        let s = build(ScheduleKind::DualPipe, 8, 20).unwrap();
        let d0 = order(&s, 0);
        assert!(
            d0.starts_with(
                "F0.0 F1.0 F2.0 F3.0 F4.0 F5.0 F6.0 F10.7 B10.7 W10.7 F11.7 B11.7 W11.7 F12.7 B12.7 W12.7 F13.7 \
                 F7.0+B13.7 F14.7+B0.0"
            ),
            "{d0}"
        );
        assert!(d0.ends_with("B6.0 W6.0 B7.0 W7.0 B8.0 W8.0 B9.0 W9.0"), "{d0}");
        // Device 7 mirrors it for the reverse direction.
        assert!(order(&s, 7).starts_with("F10.0 F11.0 F12.0 F13.0 F14.0 F15.0 F16.0 F0.7 B0.7 W0.7"));
        // A middle device: its first steady pair is not overlapped.
        assert!(order(&s, 3).contains("F4.3 B10.4 F14.4+B0.3"), "{}", order(&s, 3));
        // Every device runs m forwards and m backwards.
        for ops in &s.ops {
            let f = ops.iter().filter(|o| matches!(o, PipeOp::F(_) | PipeOp::FB { .. })).count();
            let b = ops.iter().filter(|o| matches!(o, PipeOp::B(_) | PipeOp::FB { .. })).count();
            assert_eq!((f, b), (20, 20));
        }
        // The reference defers the send of an early forward in its step 2
        // past the following late forward, and prefetches a receive one op
        // early in step 3 (the W waits for the next forward's input).
        let t = s.transfers();
        assert!(t.iter().any(|t| t.sent_after > t.producer.index));
        assert!(t.iter().any(|t| t.awaited_before < t.consumer.index));
    }

    #[test]
    fn dualpipev_is_dualpipe_cut_in_half() {
        // Device d of DualPipeV runs the ops of DualPipe's device d for the
        // first half of the micro-batch count, with the reverse direction's
        // micro-batches renumbered.
        let v = build(ScheduleKind::DualPipeV, 8, 10).unwrap();
        let d = build(ScheduleKind::DualPipe, 8, 20).unwrap();
        let rename = |c: ChunkRef| ChunkRef { microbatch: c.microbatch % 10, stage: c.stage };
        for dev in 0..4 {
            let renamed: Vec<PipeOp> = d.ops[dev]
                .iter()
                .map(|op| match *op {
                    PipeOp::F(c) => PipeOp::F(rename(c)),
                    PipeOp::B(c) => PipeOp::B(rename(c)),
                    PipeOp::W(c) => PipeOp::W(rename(c)),
                    PipeOp::FB { f, b } => PipeOp::FB { f: rename(f), b: rename(b) },
                })
                .collect();
            assert_eq!(renamed, v.ops[dev], "device {dev}");
        }
        assert_eq!(v.devices, 4);
        assert_eq!(v.device_of(ChunkRef { microbatch: 0, stage: 5 }), 2);
    }

    #[test]
    fn parameter_copies_and_activation_peaks_match_the_readme_table() {
        for p in [2u32, 4, 6, 8, 16] {
            for (kind, m, copies, act) in [
                (ScheduleKind::OneFOneB, 2 * p, 1, p),
                (ScheduleKind::Zb1p, 2 * p, 1, p),
                (ScheduleKind::DualPipe, 2 * p, 2, p + 1),
                (ScheduleKind::DualPipeV, 2 * p, 2, p + 1),
                (ScheduleKind::DualPipe, 2 * p + 6, 2, p + 1),
                (ScheduleKind::DualPipeV, p + 3, 2, p + 1),
            ] {
                let s = build(kind, p, m).unwrap();
                assert_eq!(s.parameter_copies(), copies, "{kind:?} PP={p}");
                let peak = s.peak_activation_microbatches();
                assert_eq!(peak.iter().max(), Some(&act), "{kind:?} PP={p}: {peak:?}");
            }
        }
        // 1F1B: stage s holds PP - s micro-batches at its peak.
        assert_eq!(build(ScheduleKind::OneFOneB, 4, 8).unwrap().peak_activation_microbatches(), [4, 3, 2, 1]);
        // ZB-H1: W keeps a chunk alive, and stage s defers W by s backwards:
        // every stage peaks at PP.
        assert_eq!(build(ScheduleKind::Zb1p, 4, 8).unwrap().peak_activation_microbatches(), [4, 4, 4, 4]);
    }

    /// A schedule kind with valid sizes, and durations in picoseconds.
    fn any_case() -> impl Strategy<Value = (PipelineSchedule, OpDurations)> {
        (0usize..4, 1u32..=6, 0u32..=10, 1u64..2000, 1u64..2000, 0u64..2000, 1u64..4000).prop_map(
            |(kind, half, extra, f, bi, w, fb)| {
                let kind = ScheduleKind::ALL[kind];
                let (p, m) = match kind {
                    ScheduleKind::OneFOneB | ScheduleKind::Zb1p | ScheduleKind::Interleaved1F1B => {
                        (half * 2 - (extra % 2), 1 + extra * half / 2)
                    }
                    ScheduleKind::DualPipe => (2 * half, 4 * half + 2 * (extra / 2)),
                    ScheduleKind::DualPipeV => (2 * half, 2 * half + extra),
                };
                let d = OpDurations {
                    forward: SimDuration(f),
                    backward: SimDuration(bi + w),
                    weight: SimDuration(w),
                    overlapped: SimDuration(fb),
                };
                (build(kind, p, m).expect("valid sizes"), d)
            },
        )
    }

    proptest! {
        #[test]
        fn every_pass_runs_once_where_its_stage_lives_and_after_its_inputs((s, d) in any_case()) {
            let (p, m) = (s.stages, s.microbatches);
            // [F, B, W] count per chunk, and each pass on the chunk's device.
            let mut seen = vec![[0u32; 3]; (p * m) as usize];
            for (dev, ops) in s.ops.iter().enumerate() {
                for op in ops {
                    let passes: Vec<(usize, ChunkRef)> = match *op {
                        PipeOp::F(c) => vec![(0, c)],
                        PipeOp::B(c) => vec![(1, c)],
                        PipeOp::W(c) => vec![(2, c)],
                        PipeOp::FB { f, b } => vec![(0, f), (1, b)],
                    };
                    for (pass, c) in passes {
                        prop_assert!(c.microbatch < m && c.stage < p);
                        prop_assert_eq!(s.device_of(c), dev as u32, "{} on the wrong device", op.label());
                        seen[(c.microbatch * p + c.stage) as usize][pass] += 1;
                    }
                    if let PipeOp::FB { b, .. } = op {
                        prop_assert!(s.backward_includes_weight(*b), "an FB's backward is full");
                    }
                }
            }
            for mb in 0..m {
                for st in 0..p {
                    let c = ChunkRef { microbatch: mb, stage: st };
                    let w = u32::from(!s.backward_includes_weight(c));
                    prop_assert_eq!(seen[(mb * p + st) as usize], [1, 1, w], "chunk {:?}", c);
                }
            }
            prop_assert_eq!(s.splits_weight, s.kind != ScheduleKind::OneFOneB);

            // Same-device dependencies follow stream order; transfers leave at
            // or after their producer and are awaited at or before their consumer.
            let deps = s.dependencies();
            let cross: Vec<_> = deps.iter().filter(|(a, b)| a.device != b.device).collect();
            for (a, b) in &deps {
                if a.device == b.device {
                    prop_assert!(a.index < b.index, "{:?} -> {:?}", a, b);
                }
            }
            prop_assert_eq!(s.transfers().len(), cross.len());
            for t in s.transfers() {
                prop_assert!(t.sent_after >= t.producer.index && t.awaited_before <= t.consumer.index, "{:?}", t);
                prop_assert!((t.sent_after as usize) < s.ops[t.producer.device as usize].len());
                prop_assert!(cross.contains(&&(t.producer, t.consumer)));
            }

            // Run it: no deadlock, every dependency respected in time, and the
            // step is at least each device's busy time.
            let mut graph = TaskGraph::new();
            let tasks = s.lower_delays(&d, &mut graph);
            let result = moesim_sim::run(&Platform::default(), &graph, &EngineOptions::default(), &mut Quiet)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            let span = |r: &OpRef| result.spans[tasks[r.device as usize][r.index as usize].0 as usize];
            for (a, b) in &deps {
                prop_assert!(span(a).end <= span(b).start, "{:?} ends after {:?} starts", a, b);
            }
            for busy in s.busy(&d) {
                prop_assert!(busy.0 <= result.end.0);
            }
            let peak = s.peak_activation_microbatches();
            prop_assert!(peak.iter().all(|&x| x >= 1 && x <= m * 2));
        }
    }
}
