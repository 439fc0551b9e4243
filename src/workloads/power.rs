//! Sustained clocks under the power cap (issue #15): a run of a sustained
//! kind on a device with a power model is simulated at the preset's clock,
//! each simulated GPU's activity is measured (its kernels' arithmetic time,
//! busy time and HBM bytes), the clock at which the busiest GPU's power
//! while busy meets `hardware.power_cap_w` is solved
//! ([`moesim_models::hardware::power`]), and the run is simulated again at
//! that clock, at most [`MAX_RUNS`] times in all. Compute-bound kernels scale
//! with the clock (the cost models' `sustained_clock_mhz`), memory-bound ones
//! do not. The summary gets `sm_clock_mhz`, `avg_power_w` and the energy per
//! step and per token.

use moesim_models::hardware::device::SustainedClocks;
use moesim_models::hardware::power::{Activity, PowerModel};
use moesim_models::DeviceSpec;
use moesim_sim::{Observer, TaskKind};

use super::{num, Outcome, RunFailure, RunOptions, Workload};
use crate::setup::Setup;

/// Simulations at most per run: the first at the preset's clock, then at
/// most two at a solved clock.
pub const MAX_RUNS: usize = 3;

/// A solved clock this close to the one simulated (relative) is kept.
pub const CLOCK_TOLERANCE: f64 = 0.005;

/// The kinds a GPU runs for long enough to settle at its power-capped clock
/// (`sustained_clocks = "auto"`), with the metrics that give a step's time
/// (and its scale to seconds) and the tokens per second per GPU.
const SUSTAINED: &[(&str, &str, f64, &str)] = &[
    ("training", "step_time_s", 1.0, "tokens_per_s_per_gpu"),
    ("prefill", "iteration_time_ms", 1e-3, "tokens_per_s_per_gpu"),
    ("decode", "iteration_time_ms", 1e-3, "tokens_per_s_per_gpu"),
    ("grpo", "iteration_time_s", 1.0, "tokens_per_s_per_gpu"),
    ("local", "decode_step_ms", 1e-3, "decode_tokens_per_s"),
];

/// Whether a run of `kind` on `device` solves its clock.
pub fn applies(device: &DeviceSpec, kind: &str) -> bool {
    PowerModel::of(device).is_some()
        && match device.sustained_clocks {
            SustainedClocks::Off => false,
            SustainedClocks::On => true,
            SustainedClocks::Auto => SUSTAINED.iter().any(|s| s.0 == kind),
        }
}

/// Runs `workload`, at the power-capped clock where [`applies`].
pub fn run(
    workload: &dyn Workload,
    setup: &Setup,
    options: &RunOptions,
    observer: &mut dyn Observer,
) -> Result<Outcome, RunFailure> {
    let kind = workload.kind_name();
    let device = &setup.device;
    let (Some(model), true) = (PowerModel::of(device), applies(device, kind)) else {
        let mut outcome = workload.run(setup, options, observer)?;
        if PowerModel::of(device).is_none()
            && device.sustained_clocks == SustainedClocks::Auto
            && SUSTAINED.iter().any(|s| s.0 == kind)
        {
            outcome.notes.push(format!(
                "sustained clocks: {} has no power model (power_cap_w, idle_power_w, sm_dynamic_power_w): not throttled, no energy figures",
                device.name
            ));
        }
        if kind == "serving" && PowerModel::of(device).is_some() && device.sustained_clocks != SustainedClocks::Off {
            outcome.notes.push(format!(
                "sustained clocks: not solved for serving runs (their iterations are timed apart from one engine run); kernels run at {:.0} MHz",
                ceiling_mhz(device)
            ));
        }
        return Ok(outcome);
    };
    let ceiling = ceiling_mhz(device);
    let mut clock = ceiling;
    let mut current = setup.clone();
    let mut runs = 0;
    let (outcome, activity) = loop {
        let outcome = workload.run(&current, options, observer)?;
        runs += 1;
        let activity = activities(&current.device, &outcome);
        let solved = activity.iter().map(|a| model.capped_clock_mhz(a, ceiling)).fold(ceiling, f64::min);
        if (solved - clock).abs() <= CLOCK_TOLERANCE * clock || runs == MAX_RUNS {
            break (outcome, activity);
        }
        clock = solved;
        current.device = device.at_clock(clock);
    };
    let mut outcome = outcome;
    let gpus = activity.len().max(1) as f64;
    let energy: f64 = activity.iter().map(|a| model.energy_j(a, clock)).sum::<f64>() / gpus;
    let span = activity.iter().map(|a| a.span_s).fold(0.0, f64::max).max(1e-12);
    let avg_w = energy / span;
    let busy_w = activity.iter().map(|a| model.busy_power_w(a, clock)).fold(0.0, f64::max);
    let m = &mut outcome.metrics;
    m.insert("sm_clock_mhz".into(), num(clock));
    m.insert("avg_power_w".into(), num(avg_w));
    m.insert("busy_power_w".into(), num(busy_w));
    m.insert("power_cap_w".into(), num(model.cap_w));
    if let Some(&(_, step_key, scale, tokens_key)) = SUSTAINED.iter().find(|s| s.0 == kind) {
        let job_gpus = m.get("gpus").and_then(|v| v.as_f64()).unwrap_or(1.0);
        if let Some(step_s) = m.get(step_key).and_then(|v| v.as_f64()).map(|v| v * scale) {
            m.insert("energy_j_per_step".into(), num(avg_w * step_s * job_gpus));
        }
        if let Some(tps) = m.get(tokens_key).and_then(|v| v.as_f64()).filter(|t| *t > 0.0) {
            m.insert("energy_j_per_token".into(), num(avg_w / tps));
        }
    }
    let throttled = clock < ceiling * (1.0 - 1e-9);
    let law = "P = idle + activity x SM dynamic x (f/boost)^3 + HBM bytes/s x pJ/byte, over the time kernels run";
    outcome.notes.push(if throttled {
        format!(
            "sustained clocks: throttled to {clock:.0} MHz from {ceiling:.0} MHz by the {:.0} W power cap ({law}; {runs} simulations; {:.0} W while busy, {avg_w:.0} W on average)",
            model.cap_w, busy_w
        )
    } else {
        format!(
            "sustained clocks: not throttled: {busy_w:.0} W while busy at {clock:.0} MHz is within the {:.0} W power cap ({law}); {avg_w:.0} W on average",
            model.cap_w
        )
    });
    if kind == "grpo" {
        outcome.notes.push("sustained clocks: the clock and power are the policy update's (the simulated part), applied to the whole iteration's energy".into());
    }
    Ok(outcome)
}

/// The clock a run starts from and never exceeds: the preset's measured
/// sustained clock, else boost.
fn ceiling_mhz(device: &DeviceSpec) -> f64 {
    device.sustained_clock_mhz.or(device.boost_clock_mhz).unwrap_or(1600.0)
}

/// Each simulated GPU's activity: the devices that ran kernels (a local
/// deployment's CPU sockets are not the GPU: only the device named after it
/// counts there).
pub fn activities(device: &DeviceSpec, outcome: &Outcome) -> Vec<Activity> {
    let (platform, graph, result) = (&outcome.platform, &outcome.graph, &outcome.result);
    let n = platform.devices.len();
    let mut compute_ps = vec![0.0f64; n];
    let mut has_kernels = vec![false; n];
    for t in graph.tasks() {
        if let TaskKind::Kernel(k) = &t.kind {
            let d = k.device.0 as usize;
            compute_ps[d] += k.compute.0 as f64;
            has_kernels[d] = true;
        }
    }
    let mut comm_bytes = vec![0.0f64; n];
    for &(d, l) in &platform.memory_links {
        comm_bytes[d.0 as usize] += result.links.get(l.0 as usize).map_or(0.0, |s| s.bytes);
    }
    let named = platform.devices.iter().any(|d| d.name == device.name);
    let span_s = result.end.as_secs_f64();
    (0..n)
        .filter(|&d| has_kernels[d] && (!named || platform.devices[d].name == device.name))
        .map(|d| {
            let s = &result.devices[d];
            Activity {
                compute_s: compute_ps[d] * 1e-12,
                busy_s: s.busy_ps as f64 * 1e-12,
                hbm_bytes: s.mem_bytes + comm_bytes[d],
                span_s,
            }
        })
        .collect()
}
