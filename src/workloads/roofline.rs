//! The roofline plot of a device with a run's op placed on it: one roof per
//! memory tier the op's traffic crosses (HBM, L2 -> shared memory or the
//! AI core's DMA paths) under the ceilings of the op's own number format
//! (peak and sustained clock), and the op drawn at its arithmetic intensity against each tier.

use moesim_models::hardware::ops::{Op, OpCost};
use moesim_models::DeviceSpec;
use moesim_reports::plot::{color, Axis, LegendPosition, RenderedFigure, Series, SeriesStyle, TextMark, XyChart};

use super::RunFailure;
use crate::setup::Setup;

/// `(tier label, bandwidth bytes/s, bytes the op moves through it)`.
fn tiers(device: &DeviceSpec, cost: &OpCost) -> Vec<(&'static str, f64, f64)> {
    let sms = device.sms as f64;
    let mut out = vec![("HBM", device.hbm_bytes_per_s(), cost.tiers.hbm_bytes)];
    match &device.buffers {
        None => {
            let port = device.l2_bytes_per_clk_per_sm * device.sm_clock_hz() * sms;
            out.push(("L2 -> shared memory", port, cost.tiers.smem_bytes));
        }
        Some(b) => {
            let clk = b.clock_mhz * 1e6;
            out.push((
                "GM -> L1 (MTE2)",
                b.gm_to_l1_bytes_per_clk * clk * sms,
                cost.tiers.l1_bytes.max(cost.tiers.ub_bytes),
            ));
            out.push((
                "L1 -> L0A/L0B (MTE1)",
                b.l1_to_l0_bytes_per_clk * clk * sms,
                cost.tiers.l0a_bytes + cost.tiers.l0b_bytes,
            ));
        }
    }
    out.retain(|t| t.2 > 0.0);
    out
}

/// The compute ceiling of an op, TFLOP/s, and its name: the tensor rate of
/// the op's own number format (a BF16 GEMM is drawn under the BF16 roof, not
/// FP8's), or the FP32 vector rate for ops without tensor work.
fn ceiling(device: &DeviceSpec, op: &Op) -> (f64, String) {
    match op.tensor_dtype() {
        Some(dtype) => {
            let rate = device.tensor_flops_per_s(dtype).map_or(device.bf16_tflops, |r| r / 1e12);
            (rate, format!("{} tensor peak", dtype.as_str().to_uppercase()))
        }
        None => (device.fp32_tflops, "FP32 vector peak".to_owned()),
    }
}

/// Draws the roofline for one costed op, captioned with what it ran on.
pub fn figure(setup: &Setup, op: &Op, cost: &OpCost, label: &str) -> Result<RenderedFigure, RunFailure> {
    let device = &setup.device;
    let (peak, peak_name) = ceiling(device, op);
    let sustained = peak * device.throttle();
    let achieved = cost.tflops();
    let tiers = tiers(device, cost);
    let intensities: Vec<f64> = tiers.iter().map(|t| cost.flops / t.2).collect();
    let lo = intensities.iter().cloned().fold(1.0f64, f64::min).min(1.0) / 4.0;
    let hi = intensities.iter().cloned().fold(1e4f64, f64::max) * 4.0;
    let ymin = (achieved.min(sustained) / 100.0).min(1.0);
    let mut chart = XyChart::new(
        "roofline",
        format!("{} on {}: {:.0} TFLOP/s, bound by {}", label, device.name, achieved, cost.bound.as_str()),
        Axis::log("arithmetic intensity, FLOP per byte of the tier").with_range(lo, hi),
        Axis::log("TFLOP/s").with_range(10f64.powf(ymin.log10().floor()), 10f64.powf((peak * 1.5).log10().ceil())),
    );
    chart.legend = LegendPosition::LowerRight;
    let xs: Vec<f64> = (0..=60).map(|i| lo * (hi / lo).powf(i as f64 / 60.0)).collect();
    chart.series.push(Series {
        name: format!("{peak_name} {peak:.0} TFLOP/s"),
        color: color(7),
        style: SeriesStyle::Dashed { width: 1 },
        points: vec![(lo, peak), (hi, peak)],
        in_legend: true,
    });
    if device.throttle() < 1.0 {
        chart.series.push(Series {
            name: format!("sustained clock {sustained:.0} TFLOP/s"),
            color: color(7),
            style: SeriesStyle::Line { width: 1 },
            points: vec![(lo, sustained), (hi, sustained)],
            in_legend: true,
        });
    }
    for (i, (name, bw, _)) in tiers.iter().enumerate() {
        chart.series.push(Series {
            name: format!("{name} {:.0} GB/s", bw / 1e9),
            color: color(i),
            style: SeriesStyle::Line { width: 2 },
            points: xs.iter().map(|&x| (x, (x * bw / 1e12).min(sustained))).collect(),
            in_legend: true,
        });
    }
    for (i, ((name, _, _), x)) in tiers.iter().zip(&intensities).enumerate() {
        chart.series.push(Series {
            name: format!("op vs {name}"),
            color: color(i),
            style: SeriesStyle::Points { radius: 6 },
            points: vec![(*x, achieved)],
            in_legend: false,
        });
        let dy = if i % 2 == 0 { 1.15 } else { 0.62 };
        chart.texts.push(TextMark {
            x: *x * 1.15,
            y: achieved * dy,
            text: format!("{name}: {x:.0} FLOP/B"),
            color: color(i),
        });
    }
    super::draw(setup, chart)
}
