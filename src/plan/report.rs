//! How a training plan search is shown: the frontier as a table, the counts,
//! where the scenario's own plan lands, and `plan_frontier.png/.svg` (every
//! evaluated plan a dot at its time to train and cost, simulated ones at
//! their simulated figures, the others at their lower bounds and marked
//! with why they were not simulated or cannot run).

use std::fmt::Write;

use super::training::{Evaluated, Status, TrainingPlan};
use moesim_reports::plot::{color, render, Axis, LegendPosition, RenderedFigure, Series, SeriesStyle, XyChart};

/// The frontier table and the verdict, as text.
pub fn text(plan: &TrainingPlan, title: &str, wall_s: f64) -> String {
    let mut out = String::new();
    let n = plan.evaluated.len();
    let _ = writeln!(out, "plan {title}: {:.3e} tokens", plan.tokens);
    let _ = writeln!(
        out,
        "  {n} candidate plans: {} invalid, {} do not fit in memory, {} pruned by the lower bound, {} simulated ({:.1} s wall, {:.1} plans/s)",
        plan.invalid,
        plan.no_fit,
        plan.pruned,
        plan.simulated,
        wall_s,
        n as f64 / wall_s.max(1e-9)
    );
    let _ = writeln!(out, "  Pareto frontier (time to train against cost), fastest first:");
    let _ = writeln!(
        out,
        "  {:>5} {:>5} {:>3} {:>3} {:>4} {:>4} {:>16} {:>3} {:>5} {:>24} {:>8} {:>8} {:>10} {:>11} {:>6} {:>8}",
        "nodes",
        "gpus",
        "tp",
        "pp",
        "dp",
        "ep",
        "schedule",
        "mb",
        "zero",
        "recompute",
        "step_s",
        "days",
        "gpu_hours",
        "cost_usd",
        "mfu_bf16",
        "mem_gib"
    );
    for &i in &plan.frontier {
        let _ = writeln!(out, "{}", row(&plan.evaluated[i]));
    }
    if let Some(b) = plan.best {
        let _ = writeln!(out, "  best: {}", describe(&plan.evaluated[b]));
    } else {
        let _ = writeln!(out, "  no plan fits (and meets the deadline)");
    }
    if let Some(r) = plan.reference {
        let _ = writeln!(out, "  the scenario's own plan: {}", where_reference(plan, r));
    }
    out
}

fn row(e: &Evaluated) -> String {
    let c = &e.candidate;
    let Status::Simulated { step_s, days, gpu_hours, cost_usd, mfu, memory_gib } = e.status else {
        return String::new();
    };
    format!(
        "  {:>5} {:>5} {:>3} {:>3} {:>4} {:>4} {:>16} {:>3} {:>5} {:>24} {:>8.2} {:>8.2} {:>10.0} {:>11.0} {:>6.3} {:>8.1}",
        c.nodes,
        e.gpus,
        c.tp,
        c.pp,
        c.dp,
        c.ep,
        c.schedule.as_str(),
        c.micro_batch,
        c.zero,
        super::training::recompute_label(c.recompute),
        step_s,
        days,
        gpu_hours,
        cost_usd,
        mfu,
        memory_gib
    )
}

fn describe(e: &Evaluated) -> String {
    match e.status {
        Status::Simulated { step_s, days, gpu_hours, cost_usd, .. } => format!(
            "{}: step {step_s:.2} s, {days:.1} days, {gpu_hours:.0} GPU-hours, ${cost_usd:.0}",
            e.candidate.name()
        ),
        _ => e.candidate.name(),
    }
}

/// Where the reference plan lands against the frontier, in words.
pub fn where_reference(plan: &TrainingPlan, r: usize) -> String {
    let e = &plan.evaluated[r];
    let Some((days, cost)) = e.outcome() else {
        return format!("{}: {}", e.candidate.name(), why(&e.status));
    };
    if plan.frontier.contains(&r) {
        return format!("{} is on the frontier", describe(e));
    }
    // The frontier's cheapest plan at least as fast, and its fastest at
    // most as dear.
    let f: Vec<(f64, f64)> = plan.frontier.iter().filter_map(|&i| plan.evaluated[i].outcome()).collect();
    let cheaper = f.iter().filter(|o| o.0 <= days).map(|o| o.1).fold(f64::INFINITY, f64::min);
    let faster = f.iter().filter(|o| o.1 <= cost).map(|o| o.0).fold(f64::INFINITY, f64::min);
    let mut s = format!("{}; off the frontier:", describe(e));
    if cheaper.is_finite() {
        let _ = write!(s, " a frontier plan as fast costs {:.1} % less", 100.0 * (1.0 - cheaper / cost));
    }
    if faster.is_finite() {
        let _ = write!(s, "; one as cheap is {:.1} % faster", 100.0 * (1.0 - faster / days));
    }
    s
}

/// Why a plan was not simulated or cannot run.
pub fn why(s: &Status) -> String {
    match s {
        Status::Invalid { why } => format!("invalid ({why})"),
        Status::NoFit { memory_gib, hbm_gib } => format!("needs {memory_gib:.1} GiB per GPU of {hbm_gib:.0}"),
        Status::MissesDeadline => "its lower bound misses the deadline".into(),
        Status::Pruned => "pruned: a simulated plan beats its lower bound on time and cost".into(),
        Status::SameAsZero1 => "pruned: ZeRO-1 of this plan fits and communicates the same, so the same step".into(),
        Status::Simulated { .. } => "simulated".into(),
    }
}

/// `plan_frontier.png/.svg`.
pub fn frontier_figure(
    plan: &TrainingPlan,
    title: &str,
    caption: &str,
) -> Result<RenderedFigure, moesim_reports::plot::PlotError> {
    let mut chart = XyChart::new("plan_frontier", title, Axis::log("time to train (days)"), Axis::log("cost (USD)"))
        .with_caption(caption);
    let pts = |f: &dyn Fn(&Evaluated) -> bool, bound: bool| -> Vec<(f64, f64)> {
        plan.evaluated
            .iter()
            .filter(|e| f(e) && e.bound_step_s > 0.0)
            .map(|e| match (bound, e.outcome()) {
                (false, Some(o)) => o,
                _ => (e.bound_days, e.bound_cost_usd),
            })
            .collect()
    };
    type Group<'a> = (&'a str, Vec<(f64, f64)>, usize, u32);
    let groups: [Group; 4] = [
        ("does not fit in memory (at its bound)", pts(&|e| matches!(e.status, Status::NoFit { .. }), true), 7, 2),
        (
            "pruned by the bound (at its bound)",
            pts(&|e| matches!(e.status, Status::Pruned | Status::MissesDeadline | Status::SameAsZero1), true),
            2,
            2,
        ),
        ("simulated", pts(&|e| e.outcome().is_some(), false), 0, 3),
        ("Pareto frontier", plan.frontier.iter().filter_map(|&i| plan.evaluated[i].outcome()).collect(), 3, 5),
    ];
    for (name, points, c, radius) in groups {
        if points.is_empty() {
            continue;
        }
        chart.series.push(Series {
            name: format!("{name}: {}", points.len()),
            color: color(c),
            style: SeriesStyle::Points { radius },
            points,
            in_legend: true,
        });
    }
    let frontier: Vec<(f64, f64)> = plan.frontier.iter().filter_map(|&i| plan.evaluated[i].outcome()).collect();
    if frontier.len() > 1 {
        chart.series.push(Series {
            name: "frontier".into(),
            color: color(3),
            style: SeriesStyle::Line { width: 2 },
            points: frontier,
            in_legend: false,
        });
    }
    if let Some(r) = plan.reference.and_then(|r| plan.evaluated[r].outcome()) {
        chart.series.push(Series {
            name: "the scenario's own plan".into(),
            color: color(1),
            style: SeriesStyle::Points { radius: 8 },
            points: vec![r],
            in_legend: true,
        });
    }
    // Plans cost more the longer they run on the same GPUs: the data runs
    // from lower left to upper right, leaving the upper left free.
    chart.legend = LegendPosition::UpperLeft;
    render(&chart)
}

/// Every evaluated plan, one CSV row each, in candidate order.
pub fn csv(plan: &TrainingPlan) -> String {
    let mut out = String::from(
        "nodes,gpus,tp,pp,dp,ep,schedule,virtual_stages,micro_batch,zero,recompute,status,bound_step_s,bound_days,\
         step_s,days,gpu_hours,cost_usd,mfu_bf16_peak,memory_gib,frontier,reference,why\n",
    );
    for (i, e) in plan.evaluated.iter().enumerate() {
        let c = &e.candidate;
        let (status, sim) = match &e.status {
            Status::Simulated { step_s, days, gpu_hours, cost_usd, mfu, memory_gib } => {
                ("simulated", format!("{step_s},{days},{gpu_hours},{cost_usd},{mfu},{memory_gib}"))
            }
            Status::Invalid { .. } => ("invalid", ",,,,,".into()),
            Status::NoFit { memory_gib, .. } => ("no-fit", format!(",,,,,{memory_gib}")),
            Status::MissesDeadline => ("misses-deadline", ",,,,,".into()),
            Status::Pruned => ("pruned", ",,,,,".into()),
            Status::SameAsZero1 => ("same-as-zero-1", ",,,,,".into()),
        };
        let why = why(&e.status).replace('"', "'");
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{status},{},{},{sim},{},{},\"{why}\"",
            c.nodes,
            e.gpus,
            c.tp,
            c.pp,
            c.dp,
            c.ep,
            c.schedule.as_str(),
            c.virtual_stages,
            c.micro_batch,
            c.zero,
            super::training::recompute_label(c.recompute),
            e.bound_step_s,
            e.bound_days,
            plan.frontier.contains(&i),
            e.reference
        );
    }
    out
}

/// The search as one JSON document: counts, the frontier, the best and the
/// reference plan.
pub fn json(plan: &TrainingPlan) -> String {
    use serde_json::{json, Value};
    let one = |e: &Evaluated| -> Value {
        let c = &e.candidate;
        let mut v = json!({
            "nodes": c.nodes, "gpus": e.gpus, "tp": c.tp, "pp": c.pp, "dp": c.dp, "ep": c.ep,
            "schedule": c.schedule.as_str(), "virtual_stages": c.virtual_stages, "micro_batch": c.micro_batch,
            "zero": c.zero, "recompute": super::training::recompute_label(c.recompute),
            "bound_step_s": e.bound_step_s, "bound_days": e.bound_days, "why": why(&e.status),
        });
        if let Status::Simulated { step_s, days, gpu_hours, cost_usd, mfu, memory_gib } = e.status {
            v["step_s"] = json!(step_s);
            v["days"] = json!(days);
            v["gpu_hours"] = json!(gpu_hours);
            v["cost_usd"] = json!(cost_usd);
            v["mfu_bf16_peak"] = json!(mfu);
            v["memory_gib"] = json!(memory_gib);
        }
        v
    };
    let doc = json!({
        "tokens": plan.tokens,
        "candidates": plan.evaluated.len(),
        "invalid": plan.invalid,
        "no_fit": plan.no_fit,
        "pruned": plan.pruned,
        "simulated": plan.simulated,
        "frontier": plan.frontier.iter().map(|&i| one(&plan.evaluated[i])).collect::<Vec<_>>(),
        "best": plan.best.map(|i| one(&plan.evaluated[i])),
        "reference": plan.reference.map(|i| {
            let mut v = one(&plan.evaluated[i]);
            v["on_frontier"] = json!(plan.frontier.contains(&i));
            v["verdict"] = json!(where_reference(plan, i));
            v
        }),
    });
    doc.to_string()
}
