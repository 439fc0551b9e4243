//! `moesim calibrate`: DeepSeek's profile of a training F&B chunk pair
//! (profile-data `train.json`, read by the trace-replay importer) against
//! the model of the same chunk pair (`deepseek-v3-chunk-256xh800`), kernel
//! class by kernel class: the time the profile measured, the model's
//! kernels each alone (standalone) and the model's kernels as they ran in
//! the simulated step (in situ); how busy each stream is (and the
//! computation streams together); the profile's memory-bound kernels beside
//! each kind of DeepEP kernel against the same op with none beside it, the
//! check of the rule that such kernels run on the SMs DeepEP leaves; then
//! DeepEP's notify barriers against the computation, where the default of
//! `workload.ep_lateness` comes from; then the gaps between consecutive
//! kernels of the profile's compute stream by class, where the defaults of
//! `[workload.launch_gaps]` come from.
//!
//! DeepEP's standalone time is the model's DeepEP benchmark run of the same
//! exchange (`deepep-dispatch-ep64`, `deepep-combine-ep64`: EP64, 4,096
//! tokens, the benchmark's 24 SMs, the chunk pair's `deepep_rdma`), once per
//! exchange of the chunk pair.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::replay::classify::KernelClass;
use crate::replay::graph::RankGraph;
use crate::workloads::training::TrainingWorkload;
use crate::workloads::RunOptions;
use crate::{AppError, ScenarioRef};

/// The profile read by default (under the data folder, `$MOESIM_DATA`).
pub const DEFAULT_TRACE: &str = "../shared/data/deepseek-ai+profile-data/train.json";
/// The model of the profile's chunk pair.
pub const CHUNK_SCENARIO: &str = "deepseek-v3-chunk-256xh800";

/// Arguments of `moesim calibrate`.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// DeepSeek's profile of one F&B chunk pair (Kineto JSON, plain or .gz); default: profile-data's
    /// train.json in the data folder ($MOESIM_DATA, or shared/data beside the checkout).
    #[arg(long)]
    pub trace: Option<PathBuf>,
}

/// The rows of the table, in order: (label, the class name the model and
/// [`trace_row`] give it).
const ROWS: [(&str, &str); 7] = [
    ("GEMMs (plain and grouped)", "gemm"),
    ("attention", "attention"),
    ("casts and norms", "cast-norm"),
    ("DeepEP dispatch", "deepep-dispatch"),
    ("DeepEP combine", "deepep-combine"),
    ("DeepEP notify and layout", "deepep-notify"),
    ("others (elementwise, reductions, copies)", "other"),
];

/// The table row of a profile's GPU op.
pub fn trace_row(class: KernelClass, name: &str) -> &'static str {
    let n = name.to_ascii_lowercase();
    match class {
        KernelClass::Gemm | KernelClass::GroupedGemm => "gemm",
        KernelClass::Attention => "attention",
        KernelClass::Norm | KernelClass::Cast => "cast-norm",
        KernelClass::DeepEpNormal | KernelClass::DeepEpLowLatency => {
            if n.contains("notify") || n.contains("layout") {
                "deepep-notify"
            } else if n.contains("combine") {
                "deepep-combine"
            } else if n.contains("dispatch") {
                "deepep-dispatch"
            } else {
                "deepep-notify"
            }
        }
        _ => "other",
    }
}

/// The gaps before the kernels of a profile's compute stream (the stream
/// with the most ops), µs, by the table row of the kernel after the gap:
/// each gap with whether a cross-stream wait explains it (the op waits for
/// an op of another stream that ended after its predecessor on the stream,
/// or has a measured wait no edge explains).
pub fn compute_stream_gaps_us(rank: &RankGraph) -> Vec<(&'static str, Vec<(f64, bool)>)> {
    let mut per_stream = vec![0usize; rank.streams.len()];
    for op in &rank.ops {
        per_stream[op.stream as usize] += 1;
    }
    let compute = per_stream.iter().enumerate().max_by_key(|&(i, n)| (*n, std::cmp::Reverse(i))).map_or(0, |(i, _)| i);
    let ops: Vec<usize> = (0..rank.ops.len()).filter(|&i| rank.ops[i].stream as usize == compute).collect();
    let mut out: Vec<(&'static str, Vec<(f64, bool)>)> = ROWS.iter().map(|&(_, r)| (r, Vec::new())).collect();
    for w in ops.windows(2) {
        let (prev, op) = (&rank.ops[w[0]], &rank.ops[w[1]]);
        let waited = op.residual_wait_ns > 0
            || op.waits_on.iter().any(|&d| {
                let dep = &rank.ops[d as usize];
                dep.stream != op.stream && dep.end_ns() > prev.end_ns()
            });
        let gap_ns = (op.start_ns - prev.end_ns()).max(0);
        let row = trace_row(op.class, &op.name);
        if let Some((_, v)) = out.iter_mut().find(|(r, _)| *r == row) {
            v.push((gap_ns as f64 / 1e3, waited));
        }
    }
    out
}

/// What ran beside a kernel on the DeepEP stream, for
/// [`streaming_beside_deepep`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beside {
    Nothing,
    Dispatch,
    Combine,
    Notify,
}

/// One op of the profile's layers: (annotation name, kernel name, grid,
/// occurrence of that name and grid inside its annotation range).
type Place<'a> = (&'a str, &'a str, [u32; 3], usize);

/// Shortest memory-bound kernel [`streaming_beside_deepep`] compares, ns:
/// below it launch and tail effects, not bandwidth, decide the time.
const MIN_STREAMING_NS: i64 = 20_000;

/// The profile's memory-bound kernels (casts, norms, elementwise passes,
/// reductions, copies; at least 20 µs) beside a DeepEP kernel against the
/// same kernel with none beside it: for each kind of DeepEP kernel, the
/// number of pairs and the median ratio of their times. Two kernels are the
/// same when they have the same name and grid, are launched inside
/// `user_annotation` ranges of the same name (DeepSeek's `attn(F)`,
/// `mlp(B)`, ... once per layer) and are the same occurrence of that name
/// and grid inside their range: one op of the four layers. A kernel is
/// beside a kind when at least 80 % of its time overlaps kernels of that
/// kind, and beside nothing when under 20 % overlaps any; others are left
/// out. Empty when the trace has no annotations.
pub fn streaming_beside_deepep(rank: &RankGraph) -> Vec<(Beside, usize, f64)> {
    use std::collections::BTreeMap;
    let deepep: Vec<(i64, i64, Beside)> = rank
        .ops
        .iter()
        .filter_map(|o| {
            let kind = match trace_row(o.class, &o.name) {
                "deepep-dispatch" => Beside::Dispatch,
                "deepep-combine" => Beside::Combine,
                "deepep-notify" => Beside::Notify,
                _ => return None,
            };
            Some((o.start_ns, o.end_ns(), kind))
        })
        .collect();
    // Each op's place: (annotation name, op name, grid, occurrence), counted
    // over every op of its annotation range in start order.
    let mut order: Vec<usize> = (0..rank.ops.len()).filter(|&i| rank.ops[i].annotation.is_some()).collect();
    order.sort_by_key(|&i| (rank.ops[i].start_ns, i));
    let mut seen: BTreeMap<(u32, &str, [u32; 3]), usize> = BTreeMap::new();
    let mut groups: BTreeMap<Place, Vec<(Beside, f64)>> = BTreeMap::new();
    for i in order {
        let op = &rank.ops[i];
        let a = op.annotation.expect("filtered");
        let n = seen.entry((a, op.name.as_str(), op.grid)).or_insert(0);
        let place = (rank.annotations[a as usize].name.as_str(), op.name.as_str(), op.grid, *n);
        *n += 1;
        if !matches!(trace_row(op.class, &op.name), "cast-norm" | "other") || op.dur_ns < MIN_STREAMING_NS {
            continue;
        }
        let mut overlap = [0i64; 4];
        for &(start, end, kind) in &deepep {
            overlap[kind as usize] += (end.min(op.end_ns()) - start.max(op.start_ns)).max(0);
        }
        let total: i64 = overlap.iter().sum();
        let (k, most) = overlap.iter().enumerate().max_by_key(|&(k, v)| (*v, std::cmp::Reverse(k))).expect("four");
        let beside = if 5 * total < op.dur_ns {
            Beside::Nothing
        } else if 5 * most >= 4 * op.dur_ns {
            [Beside::Nothing, Beside::Dispatch, Beside::Combine, Beside::Notify][k]
        } else {
            continue;
        };
        groups.entry(place).or_default().push((beside, op.dur_ns as f64));
    }
    [Beside::Dispatch, Beside::Combine, Beside::Notify]
        .into_iter()
        .filter_map(|kind| {
            let mut logs: Vec<f64> = Vec::new();
            for list in groups.values() {
                for &(_, t) in list.iter().filter(|e| e.0 == kind) {
                    logs.extend(list.iter().filter(|e| e.0 == Beside::Nothing).map(|&(_, alone)| (t / alone).ln()));
                }
            }
            logs.sort_by(|a, b| a.total_cmp(b));
            (!logs.is_empty()).then(|| (kind, logs.len(), logs[logs.len() / 2].exp()))
        })
        .collect()
}

/// Runs `moesim calibrate`.
pub fn execute(args: CalibrateArgs) -> Result<ExitCode, AppError> {
    let path = args.trace.unwrap_or_else(|| crate::files::data_path(DEFAULT_TRACE, None));
    let rank = crate::replay::import(&path, 0).map_err(|e| {
        AppError::Input(vec![crate::diagnostics::Source::new(e.origin.clone(), "").plain(e.message.clone())])
    })?;
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    let text = calibration_text(&rank, &name)?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// The tables `moesim calibrate` prints for a profile already read.
pub fn calibration_text(rank: &RankGraph, trace: &str) -> Result<String, AppError> {
    let scenario = crate::load_scenario(&ScenarioRef::Builtin(CHUNK_SCENARIO), &[])?;
    let text = crate::builtin::scenario(CHUNK_SCENARIO).expect("a built-in");
    let table: toml::Table = toml::from_str(text).map_err(|e| AppError::Failed(e.to_string()))?;
    let workload: TrainingWorkload = table
        .get("workload")
        .cloned()
        .ok_or_else(|| AppError::Failed("no [workload]".into()))?
        .try_into()
        .map_err(|e: toml::de::Error| AppError::Failed(e.to_string()))?;
    let (outcome, classes) = workload.run_with_classes(&scenario.setup, &RunOptions::default())?;
    let model = |row: &str| classes.iter().find(|c| c.class == row);
    // DeepEP alone: the model's benchmark run of each exchange (DeepEP's
    // 24 SMs), with the transport the chunk pair's kernels use.
    let rdma = scenario.setup.parallel.as_ref().map(|p| p.deepep_rdma).unwrap_or_default();
    let sets = [format!("workload.deepep_rdma={}", rdma.as_str())];
    let alone_us = |name: &'static str| -> Result<f64, AppError> {
        let (summary, _) = crate::run_scenario(&ScenarioRef::Builtin(name), &sets, &RunOptions::default())?;
        summary.get("time_us").and_then(|v| v.as_f64()).ok_or_else(|| AppError::Failed(format!("{name}: no time_us")))
    };
    let dispatch_us = alone_us("deepep-dispatch-ep64")?;
    let combine_us = alone_us("deepep-combine-ep64")?;

    // The profile: kernels and summed time per row.
    let mut measured: Vec<(u64, f64)> = vec![(0, 0.0); ROWS.len()];
    for op in &rank.ops {
        let row = trace_row(op.class, &op.name);
        let i = ROWS.iter().position(|&(_, r)| r == row).expect("a row");
        measured[i].0 += 1;
        measured[i].1 += op.dur_ns.max(0) as f64 / 1e6;
    }
    let ms = |v: f64| format!("{v:.1}");
    let mut s = String::new();
    s.push_str(&format!(
        "One F&B chunk pair (4 MoE layers, EP64, 4,096 tokens), kernel class by kernel class: {trace} against \
         {CHUNK_SCENARIO} (the mean over its steady-state F&B chunk pairs); ms of kernel time summed per class\n\n"
    ));
    s.push_str("| class | kernels, trace | kernels, model | measured ms | standalone model ms | in-situ model ms |\n");
    s.push_str("|---|---:|---:|---:|---:|---:|\n");
    let (mut sum_m, mut sum_alone, mut sum_in) = (0.0, 0.0, 0.0);
    for (i, &(label, row)) in ROWS.iter().enumerate() {
        let (kernels, measured_ms) = measured[i];
        let m = model(row);
        let alone = match row {
            "deepep-dispatch" => m.map(|c| c.kernels_per_pair * dispatch_us / 1e3),
            "deepep-combine" => m.map(|c| c.kernels_per_pair * combine_us / 1e3),
            _ => m.and_then(|c| c.standalone_ms),
        };
        let in_situ = m.map(|c| c.in_situ_ms);
        sum_m += measured_ms;
        sum_alone += alone.unwrap_or(0.0);
        sum_in += in_situ.unwrap_or(0.0);
        s.push_str(&format!(
            "| {label} | {kernels} | {} | {} | {} | {} |\n",
            m.map_or("—".into(), |c| format!("{:.0}", c.kernels_per_pair)),
            ms(measured_ms),
            alone.map_or("—".into(), ms),
            in_situ.map_or("—".into(), ms),
        ));
    }
    s.push_str(&format!(
        "| sum | {} | {:.0} | {} | {} | {} |\n",
        rank.ops.len(),
        classes.iter().map(|c| c.kernels_per_pair).sum::<f64>(),
        ms(sum_m),
        ms(sum_alone),
        ms(sum_in)
    ));
    let metric = |k: &str| outcome.metrics.get(k).and_then(|v| v.as_f64()).unwrap_or(f64::NAN);
    s.push_str(&format!(
        "\nchunk pair: {:.1} ms in the model (overlapped_chunk_ms), EP hidden under compute {:.1} %\n",
        metric("overlapped_chunk_ms"),
        100.0 * metric("ep_hidden_fraction_chunk_pair")
    ));

    s.push_str(&stream_busy_text(rank, &classes, metric("overlapped_chunk_ms")));

    // DeepEP's notify barriers: how far behind the group's latest rank
    // arrives, per unit of computation, where `workload.ep_lateness` comes from.
    let ep = scenario.setup.parallel.as_ref().map_or(1, |p| p.ep);
    if let Some(l) = notify_lateness(rank, ep) {
        let in_situ = model("deepep-notify").map_or(0.0, |c| c.in_situ_ms);
        s.push_str(&format!(
            "\nDeepEP notify barriers: the profile's {} notify kernels hold the communication stream {:.1} ms while \
             its computation streams run {:.1} ms (their union), {:.3} of it. A notify's barrier holds until every \
             rank of the EP group has arrived (DeepEP issue #94); with each of {ep} ranks behind by |z| scales of its \
             work (z a standard normal), the latest arrives {:.3} scales after a typical rank, so the scale is {:.3} \
             / {:.3} = {:.3} (`workload.ep_lateness`, default {}). The model's notify barriers in its chunk pair: \
             {in_situ:.1} ms.\n",
            l.kernels,
            l.notify_ms,
            l.compute_ms,
            l.share(),
            l.latest,
            l.share(),
            l.latest,
            l.scale(),
            moesim_models::lowering::training::DEEPEP_LATENESS
        ));
    }

    // Memory-bound kernels beside DeepEP: the profile's pairs against the
    // model's rule (their bandwidth follows the SMs left to them).
    let sms = scenario.setup.device.sms;
    let held = scenario.setup.parallel.as_ref().map_or(0, |p| p.comm_sms);
    let model_ratio = sms as f64 / sms.saturating_sub(held).max(1) as f64;
    let pairs = streaming_beside_deepep(rank);
    if !pairs.is_empty() {
        s.push_str(&format!(
            "\nMemory-bound kernels (casts, norms, elementwise, reductions, copies; at least 20 µs) beside a DeepEP \
             kernel against the same kernel at the same place of another layer with no DeepEP kernel beside it (pairs \
             by the profile's user annotations); the model's kernels beside a DeepEP kernel holding {held} of the \
             {sms} SMs run on the rest:\n\n\
             | beside | pairs | median time ratio, profile | model |\n|---|---:|---:|---:|\n"
        ));
        for (kind, n, ratio) in pairs {
            let (label, model) = match kind {
                Beside::Dispatch => ("a dispatch", format!("{model_ratio:.2}")),
                Beside::Combine => ("a combine", format!("{model_ratio:.2}")),
                // The model's notify barriers hold no SMs.
                _ => ("a notify or layout kernel", "1.00".to_owned()),
            };
            s.push_str(&format!("| {label} | {n} | {ratio:.2} | {model} |\n"));
        }
    }

    s.push_str(
        "\nGaps before each kernel of the profile's compute stream, by the class of the kernel after the gap (µs; the \
         trace's timestamps are whole µs), and those no cross-stream wait explains:\n\n",
    );
    s.push_str(
        "| class | gaps | median µs | p90 µs | mean µs | no wait explains | their median µs |\n\
         |---|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut all = Vec::new();
    for (row, gaps) in compute_stream_gaps_us(rank) {
        let label = ROWS.iter().find(|&&(_, r)| r == row).map_or(row, |&(l, _)| l);
        all.extend_from_slice(&gaps);
        if !gaps.is_empty() {
            s.push_str(&gap_row(label, &gaps));
        }
    }
    s.push_str(&gap_row("all", &all));
    Ok(s)
}

/// How busy each stream of the profile is over its span (kernel time
/// summed, ms, and the share of the span; the DeepEP notify and layout
/// kernels apart), beside the model's compute and DeepEP kernel time in its
/// chunk pair: which side of the chunk pair is the bottleneck.
fn stream_busy_text(
    rank: &RankGraph,
    classes: &[crate::workloads::training::ChunkPairClass],
    model_pair_ms: f64,
) -> String {
    let span_ms = rank.gpu_span_ns() as f64 / 1e6;
    let mut s = format!(
        "\nBusy time per stream of the profile over its {span_ms:.1} ms span (kernel time summed; a stream's kernels do \
         not overlap), and the model's kernel time in its {model_pair_ms:.1} ms chunk pair:\n\n\
         | stream | kernels | busy ms | share of the span | of it DeepEP notify and layout ms |\n|---|---:|---:|---:|---:|\n"
    );
    for (i, stream) in rank.streams.iter().enumerate() {
        let ops: Vec<_> = rank.ops.iter().filter(|o| o.stream as usize == i).collect();
        if ops.is_empty() {
            continue;
        }
        let busy = ops.iter().map(|o| o.dur_ns.max(0) as f64).sum::<f64>() / 1e6;
        let notify = ops
            .iter()
            .filter(|o| trace_row(o.class, &o.name) == "deepep-notify")
            .fold(0.0, |a, o| a + o.dur_ns.max(0) as f64)
            / 1e6;
        s.push_str(&format!(
            "| profile: {} | {} | {busy:.1} | {:.1} % | {notify:.1} |\n",
            stream.label,
            ops.len(),
            100.0 * busy / span_ms
        ));
    }
    // The computation streams together: the weight-gradient GEMMs of a side
    // stream mostly run in the compute stream's gaps, so the union of their
    // busy intervals, not one stream's sum, is how long computation held the
    // GPU.
    let compute_union = computation_union_ms(rank);
    s.push_str(&format!(
        "| profile: every stream but DeepEP's, together (union of busy intervals) | | {compute_union:.1} | {:.1} % | — |\n",
        100.0 * compute_union / span_ms
    ));
    let sum = |ep: bool| -> f64 {
        classes.iter().filter(|c| c.class.starts_with("deepep") == ep).map(|c| c.in_situ_ms).sum()
    };
    for (label, ms) in [("model: every class but DeepEP", sum(false)), ("model: DeepEP kernels", sum(true))] {
        s.push_str(&format!("| {label} | | {ms:.1} | {:.1} % | — |\n", 100.0 * ms / model_pair_ms));
    }
    s
}

/// A profile's DeepEP notify kernels against its computation: what
/// `workload.ep_lateness` is measured from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NotifyLateness {
    /// Notify kernels (`notify_dispatch`, `cached_notify`).
    pub kernels: usize,
    /// Their time, summed, ms.
    pub notify_ms: f64,
    /// The union of every non-DeepEP kernel's interval, ms.
    pub compute_ms: f64,
    /// E[(max of ep |z| - E|z|)+]: how many scales the group's latest rank
    /// arrives after a typical one.
    pub latest: f64,
}

impl NotifyLateness {
    /// Notify time per unit of computation.
    pub fn share(&self) -> f64 {
        self.notify_ms / self.compute_ms
    }
    /// The lateness scale that gives that share in a group of `ep`.
    pub fn scale(&self) -> f64 {
        self.share() / self.latest
    }
}

/// The profile's notify kernels against its computation, in an EP group of
/// `ep` ranks; `None` without notify kernels or computation.
pub fn notify_lateness(rank: &RankGraph, ep: u32) -> Option<NotifyLateness> {
    let notify: Vec<_> = rank
        .ops
        .iter()
        .filter(|o| trace_row(o.class, &o.name) == "deepep-notify" && o.name.to_ascii_lowercase().contains("notify"))
        .collect();
    let notify_ms = notify.iter().map(|o| o.dur_ns.max(0) as f64).sum::<f64>() / 1e6;
    let compute_ms = computation_union_ms(rank);
    (notify_ms > 0.0 && compute_ms > 0.0).then(|| NotifyLateness {
        kernels: notify.len(),
        notify_ms,
        compute_ms,
        latest: moesim_models::hardware::variability::latest_beyond_typical(ep),
    })
}

/// How long the profile's computation held the GPU, ms: the union of every
/// non-DeepEP kernel's interval, all streams together.
fn computation_union_ms(rank: &RankGraph) -> f64 {
    busy_union_ms(rank.ops.iter().filter(|o| !trace_row(o.class, &o.name).starts_with("deepep")))
}

/// How long at least one of `ops` ran, ms (the union of their intervals).
fn busy_union_ms<'a>(ops: impl Iterator<Item = &'a crate::replay::graph::GpuOp>) -> f64 {
    // Times are relative to the rank's origin, the first op's start: never negative.
    let mut spans: Vec<(u64, u64)> = ops.map(|o| (o.start_ns.max(0) as u64, o.end_ns().max(0) as u64)).collect();
    moesim_sim::analysis::union_length(&mut spans) as f64 / 1e6
}

/// One row of the gap table: count, median, 90th percentile, mean; the
/// count and median of those no wait explains.
fn gap_row(label: &str, gaps: &[(f64, bool)]) -> String {
    let quantile = |mut v: Vec<f64>, p: f64| -> f64 {
        v.sort_by(|a, b| a.total_cmp(b));
        v.get(((p * (v.len().max(1) - 1) as f64).round() as usize).min(v.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let every: Vec<f64> = gaps.iter().map(|g| g.0).collect();
    let free: Vec<f64> = gaps.iter().filter(|g| !g.1).map(|g| g.0).collect();
    format!(
        "| {label} | {} | {:.1} | {:.1} | {:.2} | {} | {:.1} |\n",
        every.len(),
        quantile(every.clone(), 0.5),
        quantile(every.clone(), 0.9),
        every.iter().sum::<f64>() / every.len().max(1) as f64,
        free.len(),
        quantile(free.clone(), 0.5),
    )
}
