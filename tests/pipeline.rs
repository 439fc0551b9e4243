//! The `pipeline` workload and the schedules behind it: the DualPipe README
//! table reproduced exactly (integer picoseconds) under its assumptions, where
//! and why each schedule departs from it with other op times, and the CLI's
//! keys and errors.
//!
//! README table (PP stages, F forward, B full backward, W weight backward,
//! F&B an overlapped forward + backward): bubble 1F1B (PP-1)(F+B), ZB1P
//! (PP-1)(F+B-2W), DualPipe and DualPipeV (PP/2-1)(F&B+B-3W); parameters 1x,
//! 1x, 2x, 2x; activations PP, PP, PP+1, PP+1 micro-batches. Its assumptions:
//! F = t, B = 2t, W = t, F&B = 3t.

use moesim::workloads::pipeline::run_schedule;
use moesim::workloads::RunOptions;
use moesim_models::transformer::schedule::{build, OpDurations, PipeOp, PipelineSchedule, ScheduleKind};
use moesim_sim::{Quiet, SimDuration};

use crate::common::*;

/// Op times in picoseconds.
fn times(f: u64, b: u64, w: u64, fb: u64) -> OpDurations {
    OpDurations {
        forward: SimDuration(f),
        backward: SimDuration(b),
        weight: SimDuration(w),
        overlapped: SimDuration(fb),
    }
}

/// Step time and per-device bubble, picoseconds.
fn run(s: &PipelineSchedule, d: &OpDurations) -> (u64, Vec<u64>) {
    let r = run_schedule(s, d, &RunOptions::default(), &mut Quiet).expect("the schedule runs");
    (r.step_ps, r.bubble_ps)
}

fn is_dual(kind: ScheduleKind) -> bool {
    matches!(kind, ScheduleKind::DualPipe | ScheduleKind::DualPipeV)
}

/// Micro-batch counts to try: from the smallest the schedule (or, for 1F1B
/// and ZB1P, the closed form) accepts, over a contiguous range.
fn microbatch_counts(kind: ScheduleKind, p: u32) -> Vec<u32> {
    match kind {
        ScheduleKind::OneFOneB | ScheduleKind::Zb1p | ScheduleKind::Interleaved1F1B => (p..=p + 8).collect(),
        ScheduleKind::DualPipe => (2 * p..=2 * p + 12).step_by(2).collect(),
        ScheduleKind::DualPipeV => (p..=p + 8).collect(),
    }
}

/// Overlapped pairs per device.
fn pairs(s: &PipelineSchedule) -> Vec<u64> {
    s.ops.iter().map(|ops| ops.iter().filter(|op| matches!(op, PipeOp::FB { .. })).count() as u64).collect()
}

#[test]
fn readme_table_is_reproduced_exactly() {
    // t in picoseconds: 1 us, an odd 7.300001 us, and 333 ps.
    for t in [1_000_000u64, 7_300_001, 333] {
        let d = times(t, 2 * t, t, 3 * t);
        for p in (1..=12).chain([16]) {
            for kind in ScheduleKind::ALL {
                if is_dual(kind) && p % 2 == 1 {
                    continue;
                }
                let pp = p as u64;
                let (bubble, copies, activations) = match kind {
                    ScheduleKind::OneFOneB | ScheduleKind::Interleaved1F1B => ((pp - 1) * 3 * t, 1, p),
                    ScheduleKind::Zb1p => ((pp - 1) * t, 1, p),
                    ScheduleKind::DualPipe | ScheduleKind::DualPipeV => ((pp / 2 - 1) * 2 * t, 2, p + 1),
                };
                for m in microbatch_counts(kind, p) {
                    let s = build(kind, p, m).unwrap();
                    let (step, bubbles) = run(&s, &d);
                    let what = format!("{kind:?} PP={p} m={m} t={t}ps");
                    // Every device idles exactly the table's bubble ...
                    assert!(bubbles.iter().all(|&b| b == bubble), "{what}: {bubbles:?}, expected {bubble}");
                    // ... on top of its m forwards and m backwards per stage it holds.
                    let stages_per_device = u64::from(kind == ScheduleKind::DualPipeV) + 1;
                    assert_eq!(step, stages_per_device * m as u64 * 3 * t + bubble, "{what}");
                    assert_eq!(s.readme_bubble_ps(&d), bubble as i128, "{what}");
                    assert_eq!(s.parameter_copies(), copies, "{what}");
                    assert_eq!(s.peak_activation_microbatches().into_iter().max(), Some(activations), "{what}");
                    assert_eq!(s.devices, if kind == ScheduleKind::DualPipeV { p / 2 } else { p });
                }
            }
        }
    }
}

#[test]
fn one_f_one_b_matches_its_closed_form_for_any_f_and_b_and_any_microbatch_count() {
    // 1F1B never splits W nor overlaps chunks, so W and F&B are irrelevant,
    // and the (PP-1)(F+B) bubble holds even with fewer micro-batches than stages.
    for (f, b) in [(1_000_000u64, 1_000_000u64), (3_700_000, 1_100_000), (1, 12_345_678), (250_000, 9_999_999)] {
        let d = times(f, b, b / 3, f + b / 2);
        for p in [1u32, 2, 3, 5, 8] {
            for m in 1..=2 * p + 1 {
                let s = build(ScheduleKind::OneFOneB, p, m).unwrap();
                let (step, bubbles) = run(&s, &d);
                let bubble = (p as u64 - 1) * (f + b);
                assert!(bubbles.iter().all(|&x| x == bubble), "PP={p} m={m} F={f} B={b}: {bubbles:?}");
                assert_eq!(step, m as u64 * (f + b) + bubble);
            }
        }
    }
}

#[test]
fn zb1p_departs_from_its_closed_form_when_w_does_not_fit_the_gap() {
    // ZB-H1 fills each stage's gap of F + (B-W) with one W. When W is longer
    // than F or than B-W, the W itself delays the next pass, and the bubble
    // becomes (PP-1) x max(F + B - 2W, F, B - W): the README's (PP-1)(F+B-2W)
    // holds exactly when W <= F and W <= B - W.
    let us = 1_000_000u64;
    let mut departed = 0;
    for f in [us / 2, us, 3 * us / 2, 3 * us] {
        for bi in [us / 2, us, 2 * us] {
            for w in [0, us / 2, us, 3 * us / 2, 3 * us] {
                let d = times(f, bi + w, w, f + bi + w);
                for (p, m) in [(4u32, 4u32), (4, 9), (7, 12)] {
                    let s = build(ScheduleKind::Zb1p, p, m).unwrap();
                    let (_, bubbles) = run(&s, &d);
                    let (f, bi, w, pp) = (f as i128, bi as i128, w as i128, p as i128);
                    let expected = (pp - 1) * (f + bi - w).max(f).max(bi);
                    let worst = *bubbles.iter().max().unwrap() as i128;
                    assert_eq!(worst, expected, "PP={p} m={m} F={f} B-W={bi} W={w}: {bubbles:?}");
                    let readme = s.readme_bubble_ps(&d);
                    assert_eq!(worst == readme, w <= f && w <= bi, "PP={p} m={m} F={f} B-W={bi} W={w}");
                    departed += usize::from(worst != readme);
                }
            }
        }
    }
    assert!(departed > 0);
}

#[test]
fn zb1p_with_fewer_microbatches_than_stages_idles_one_w_per_missing_microbatch() {
    // The closed form assumes a full steady state (m >= PP). With m < PP the
    // stages past the m-th have no later backwards to hide their W behind:
    // at the README's times the bubble grows by (PP - m) W.
    let t = 1_000_000u64;
    let d = times(t, 2 * t, t, 3 * t);
    for p in [2u32, 3, 5, 8, 12] {
        for m in 1..p {
            let s = build(ScheduleKind::Zb1p, p, m).unwrap();
            let (_, bubbles) = run(&s, &d);
            let expected = s.readme_bubble_ps(&d) as u64 + (p - m) as u64 * t;
            assert!(bubbles.iter().all(|&b| b == expected), "PP={p} m={m}: {bubbles:?}, expected {expected}");
        }
    }
}

#[test]
fn dualpipe_with_overlap_shorter_than_f_plus_b_keeps_the_formula_on_its_middle_devices() {
    // When F&B < F + B a device's work is m(F+B) less (F+B - F&B) per
    // overlapped pair it runs, and the devices near the ends of the pipeline
    // run fewer pairs than the middle ones: the bubble is no longer uniform.
    // At the README's F, B, W the largest bubble (the middle devices') is
    // still exactly (PP/2-1)(F&B+B-3W) for B <= F&B <= F+B; with F&B < B
    // (an overlapped pair faster than its backward alone) it is larger.
    let t = 1_000_000u64;
    for kind in [ScheduleKind::DualPipe, ScheduleKind::DualPipeV] {
        for (p, extra) in [(2u32, 0u32), (4, 0), (4, 6), (6, 2), (8, 4), (12, 0)] {
            let m = if kind == ScheduleKind::DualPipe { 2 * p + extra } else { p + extra };
            let s = build(kind, p, m).unwrap();
            let n = pairs(&s);
            let most = *n.iter().max().unwrap();
            for fb in [3 * t, 29 * t / 10, 5 * t / 2, 2 * t, 18 * t / 10, t] {
                let d = times(t, 2 * t, t, fb);
                let (step, bubbles) = run(&s, &d);
                let what = format!("{kind:?} PP={p} m={m} F&B={fb}: {bubbles:?}");
                // The busy-time identity behind the spread.
                let per_stage = m as u64 * 3 * t * (u64::from(kind == ScheduleKind::DualPipeV) + 1);
                for (dev, busy) in s.busy(&d).iter().enumerate() {
                    assert_eq!(busy.as_ps(), per_stage - n[dev] * (3 * t - fb), "{what}");
                    assert_eq!(bubbles[dev], step - busy.as_ps());
                }
                let worst = *bubbles.iter().max().unwrap();
                for (dev, &b) in bubbles.iter().enumerate() {
                    assert_eq!(b, worst - (most - n[dev]) * (3 * t - fb), "{what}");
                }
                let readme = s.readme_bubble_ps(&d);
                if fb >= 2 * t || p == 2 {
                    assert_eq!(worst as i128, readme, "{what}");
                } else {
                    assert!(worst as i128 > readme, "{what}");
                }
            }
        }
    }
}

#[test]
fn dualpipe_design_example_departs_because_w_is_shorter_than_f() {
    // The built-in scenario's times (F 10, B 20, W 8, F&B 25 us) on 8 stages
    // and 20 micro-batches. The schedule gives 47/52/57 us of bubble from the
    // ends to the middle (one overlapped pair more per step inwards, 5 us
    // each) against the README's 63 us. The formula counts a W as long as an
    // F: with W = F = 10 us and everything else the same it is exact (45 us).
    let us = 1_000_000u64;
    let s = build(ScheduleKind::DualPipe, 8, 20).unwrap();
    let d = times(10 * us, 20 * us, 8 * us, 25 * us);
    let (step, bubbles) = run(&s, &d);
    assert_eq!(step, 602 * us);
    assert_eq!(bubbles, [47, 52, 57, 57, 57, 57, 52, 47].map(|b| b * us));
    assert_eq!(pairs(&s), [9, 10, 11, 11, 11, 11, 10, 9]);
    assert_eq!(s.readme_bubble_ps(&d), 63 * us as i128);

    let d = times(10 * us, 20 * us, 10 * us, 25 * us);
    let (_, bubbles) = run(&s, &d);
    assert_eq!(*bubbles.iter().max().unwrap() as i128, s.readme_bubble_ps(&d));
    assert_eq!(s.readme_bubble_ps(&d), 45 * us as i128);
}

#[test]
fn pipeline_workload_reports_the_documented_keys() {
    let v = run_json(&["pipeline-dualpipe"]);
    for key in [
        "step_time_us",
        "bubble_us",
        "bubble_us_per_device",
        "readme_bubble_us",
        "parameter_copies",
        "activation_microbatches",
        "schedule",
        "stages",
        "devices",
        "microbatches",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["step_time_us"], 602);
    assert_eq!(v["bubble_us"], 57);
    assert_eq!(v["bubble_us_per_device"], serde_json::json!([47, 52, 57, 57, 57, 57, 52, 47]));
    assert_eq!(v["readme_bubble_us"], 63);
    assert_eq!((v["parameter_copies"].as_u64(), v["activation_microbatches"].as_u64()), (Some(2), Some(9)));

    // The README's times through the CLI, for each schedule.
    let readme = ["--set", "workload.weight_us=10", "--set", "workload.overlapped_us=30"];
    for (schedule, devices, bubble_us, copies, act) in
        [("1f1b", 8, 210, 1, 8), ("zb1p", 8, 70, 1, 8), ("dualpipe", 8, 60, 2, 9), ("dualpipev", 4, 60, 2, 9)]
    {
        let set = format!("workload.schedule={schedule}");
        let mut args = vec!["pipeline-dualpipe", "--set", set.as_str()];
        args.extend_from_slice(&readme);
        let v = run_json(&args);
        assert_eq!(v["devices"], devices, "{schedule}");
        assert_eq!(v["bubble_us"], bubble_us, "{schedule}");
        assert_eq!(v["readme_bubble_us"], bubble_us, "{schedule}");
        assert_eq!(v["parameter_copies"], copies, "{schedule}");
        assert_eq!(v["activation_microbatches"], act, "{schedule}");
        assert_eq!(v["schedule"], schedule);
    }
    let v = run_json(&["pipeline-1f1b"]);
    assert_eq!((v["step_time_us"].as_u64(), v["bubble_us"].as_u64()), (Some(810), Some(210)));
}

/// Runs the built-in DualPipe scenario with `sets`, expects exit 2 and
/// returns stderr.
fn rejected(sets: &[&str]) -> String {
    let mut args = vec!["run", "pipeline-dualpipe"];
    for s in sets {
        args.extend_from_slice(&["--set", s]);
    }
    let o = moesim(&args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_pipeline_sizes_and_times_say_what_would_work() {
    let err = rejected(&["workload.stages=7"]);
    assert!(
        err.contains("workload.stages: dualpipe needs an even number") && err.contains("6 or 8 would work"),
        "{err}"
    );
    let err = rejected(&["workload.microbatches=15"]);
    assert!(err.contains("workload.microbatches") && err.contains("16 would work"), "{err}");
    let err = rejected(&["workload.schedule=dualpipev", "workload.microbatches=7"]);
    assert!(err.contains("workload.microbatches: dualpipev needs at least") && err.contains("8 would work"), "{err}");
    let err = rejected(&["workload.schedule=1f1b", "workload.microbatches=0"]);
    assert!(err.contains("workload.microbatches: expected at least 1 micro-batch"), "{err}");
    let err = rejected(&["workload.weight_us=25"]);
    assert!(err.contains("workload.weight_us: expected at most backward_us (20)"), "{err}");
    let err = rejected(&["workload.overlapped_us=0", "workload.forward_us=-1"]);
    assert!(err.contains("workload.forward_us") && err.contains("workload.overlapped_us"), "{err}");
    let err = rejected(&["workload.schedule=gpipe"]);
    assert!(err.contains("workload.schedule") && err.contains("`dualpipev`"), "{err}");
}

#[test]
fn a_scenario_file_locates_a_bad_pipeline_value() {
    let text = builtin_text("pipeline-dualpipe").replace("stages = 8", "stages = 9");
    let path = scenario_file("pipeline_bad_stages", &text);
    let o = moesim(&["run", path.to_str().unwrap()]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("scenario.toml:10:") && err.contains("workload.stages"), "{err}");
}

fn builtin_text(name: &str) -> String {
    moesim::builtin::scenario(name).expect("a built-in").to_owned()
}

/// Megatron-LM's interleaved 1F1B (Narayanan et al., SC'21 §2.2.2): with `v`
/// model chunks per device the bubble is `(p - 1) / v` of a device's F + B,
/// i.e. `(p - 1)` chunk pairs, and the first device keeps at most `(p - 1) 2
/// + (v - 1) p + 1` chunks' activations (Megatron's warm-up plus one).
#[test]
fn interleaved_1f1b_cuts_the_bubble_by_the_virtual_stages() {
    use moesim_models::transformer::schedule::build_interleaved;
    let (f, b) = (1_200_000u64, 2_400_000u64);
    for p in [2u32, 4] {
        for v in [1u32, 2, 3] {
            for m in [p, 2 * p, 3 * p] {
                let s = build_interleaved(p, v, m).unwrap();
                assert_eq!((s.devices, s.stages), (p, p * v));
                // Chunk times: a device's layers split in v chunks.
                let d = times(f / v as u64, b / v as u64, 0, 0);
                let (step, bubbles) = run(&s, &d);
                let bubble = (p as u64 - 1) * (f + b) / v as u64;
                assert!(bubbles.iter().all(|&x| x == bubble), "p={p} v={v} m={m}: {bubbles:?} vs {bubble}");
                assert_eq!(step, m as u64 * (f + b) + bubble);
                let peak = s.peak_activation_microbatches()[0];
                assert!(peak <= ((p - 1) * 2 + (v - 1) * p + 1).min(m * v), "p={p} v={v} m={m}: peak {peak}");
            }
        }
    }
    assert!(build_interleaved(4, 2, 6).is_err(), "micro-batches in groups of the 4 devices");
}
