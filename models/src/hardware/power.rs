//! A device's power model and the SM clock its power cap allows under a
//! sustained load (issue #15).
//!
//! Power while kernels run is `idle + u * sm_dynamic * (f / f_boost)^3 +
//! hbm_bytes_per_s * e_hbm`, where `u` is the SM array's activity (the
//! arithmetic time of the kernels that ran, counted with every SM, over the
//! time some kernel ran) and `f` the SM clock. Dynamic CMOS power is
//! `a C V^2 f`; over a GPU's DVFS range the voltage rises about linearly
//! with the clock, so at a fixed activity per cycle it grows with `f^3`
//! (the cube law of DVFS studies, e.g. Mei et al., "A survey and
//! measurement study of GPU DVFS on energy conservation", 2017). HBM energy
//! depends on the bytes moved, not on the SM clock.
//!
//! The power limiter acts within milliseconds, faster than a step's compute
//! phases last, so the clock is set by the power while kernels run (over
//! the device's busy time), not by the average over a step that also waits
//! on communication: gaps do not buy headroom. With `u` held (compute-bound
//! work slows with the clock as the busy time does), `P(f) = cap` has the
//! closed form in [`PowerModel::capped_clock_mhz`]; the caller re-simulates
//! at that clock and solves again from the new activity.

use crate::hardware::device::DeviceSpec;

/// The lowest clock the model throttles to, as a fraction of boost (Hopper's
/// lowest P0 clocks are a few hundred MHz; below that the cap is not met).
pub const MIN_CLOCK_FRACTION: f64 = 0.2;

/// A device's power model (present when its preset gives the cap, the idle
/// power, the SM array's dynamic power and the boost clock).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PowerModel {
    pub cap_w: f64,
    pub idle_w: f64,
    /// Dynamic power of every SM computing at boost, W.
    pub sm_dynamic_w: f64,
    /// Energy per HBM byte, joules.
    pub hbm_j_per_byte: f64,
    pub boost_mhz: f64,
}

/// What one device did over a run, measured from it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Activity {
    /// Arithmetic time of its kernels with every SM (the kernels' compute
    /// side), seconds.
    pub compute_s: f64,
    /// Time during which some kernel ran, seconds.
    pub busy_s: f64,
    /// Bytes moved to and from its HBM by kernels and communication.
    pub hbm_bytes: f64,
    /// The run's length, seconds.
    pub span_s: f64,
}

impl Activity {
    /// The SM array's activity while busy, in [0, 1].
    pub fn busy_activity(&self) -> f64 {
        if self.busy_s > 0.0 {
            (self.compute_s / self.busy_s).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }
}

impl PowerModel {
    /// The device's power model, if its preset has one. The clock scale is
    /// `boost_clock_mhz`, else the cost models' nominal clock
    /// ([`DeviceSpec::rated_clock_mhz`]).
    pub fn of(device: &DeviceSpec) -> Option<PowerModel> {
        Some(PowerModel {
            cap_w: device.power_cap_w?,
            idle_w: device.idle_power_w?,
            sm_dynamic_w: device.sm_dynamic_power_w?,
            hbm_j_per_byte: device.hbm_pj_per_byte.unwrap_or(0.0) * 1e-12,
            boost_mhz: device.rated_clock_mhz(),
        })
    }

    fn scale(&self, clock_mhz: f64) -> f64 {
        (clock_mhz / self.boost_mhz).powi(3)
    }

    /// Power while kernels run, at `clock_mhz`, with the activity measured.
    pub fn busy_power_w(&self, a: &Activity, clock_mhz: f64) -> f64 {
        let hbm_w = if a.busy_s > 0.0 { a.hbm_bytes * self.hbm_j_per_byte / a.busy_s } else { 0.0 };
        self.idle_w + a.busy_activity() * self.sm_dynamic_w * self.scale(clock_mhz) + hbm_w
    }

    /// The highest clock at most `ceiling_mhz` at which the busy power is at
    /// most the cap, activity held.
    pub fn capped_clock_mhz(&self, a: &Activity, ceiling_mhz: f64) -> f64 {
        let floor = self.boost_mhz * MIN_CLOCK_FRACTION;
        if self.busy_power_w(a, ceiling_mhz) <= self.cap_w {
            return ceiling_mhz;
        }
        let hbm_w = if a.busy_s > 0.0 { a.hbm_bytes * self.hbm_j_per_byte / a.busy_s } else { 0.0 };
        let room = self.cap_w - self.idle_w - hbm_w;
        let sm_w = a.busy_activity() * self.sm_dynamic_w;
        if room <= 0.0 || sm_w <= 0.0 {
            return floor.min(ceiling_mhz);
        }
        (self.boost_mhz * (room / sm_w).cbrt()).clamp(floor.min(ceiling_mhz), ceiling_mhz)
    }

    /// Energy over the run at `clock_mhz`: idle power over the whole span,
    /// the SM array's dynamic energy for its arithmetic time, HBM per byte.
    pub fn energy_j(&self, a: &Activity, clock_mhz: f64) -> f64 {
        self.idle_w * a.span_s
            + a.compute_s * self.sm_dynamic_w * self.scale(clock_mhz)
            + a.hbm_bytes * self.hbm_j_per_byte
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h100_like() -> PowerModel {
        PowerModel { cap_w: 700.0, idle_w: 100.0, sm_dynamic_w: 900.0, hbm_j_per_byte: 30e-12, boost_mhz: 1800.0 }
    }

    #[test]
    fn full_activity_above_the_cap_settles_where_power_meets_it() {
        // Every SM busy, no HBM traffic: 100 + 900 (f/1800)^3 = 700 -> f = 1800 (2/3)^(1/3).
        let a = Activity { compute_s: 1.0, busy_s: 1.0, hbm_bytes: 0.0, span_s: 1.0 };
        let m = h100_like();
        let f = m.capped_clock_mhz(&a, 1800.0);
        assert!((f - 1800.0 * (2.0f64 / 3.0).cbrt()).abs() < 1e-9, "{f}");
        assert!((m.busy_power_w(&a, f) - 700.0).abs() < 1e-6);
        // HBM traffic takes its share of the cap: 1 TB/s x 30 pJ = 30 W more -> a lower clock.
        let b = Activity { hbm_bytes: 1e12, ..a };
        let g = m.capped_clock_mhz(&b, 1800.0);
        assert!((g - 1800.0 * (570.0f64 / 900.0).cbrt()).abs() < 1e-9, "{g}");
    }

    #[test]
    fn below_the_cap_the_clock_stays_at_its_ceiling() {
        // Half the SMs' time busy: 100 + 450 = 550 W at boost < 700 W.
        let a = Activity { compute_s: 0.5, busy_s: 1.0, hbm_bytes: 0.0, span_s: 2.0 };
        assert_eq!(h100_like().capped_clock_mhz(&a, 1800.0), 1800.0);
        assert_eq!(h100_like().capped_clock_mhz(&a, 1600.0), 1600.0);
    }

    #[test]
    fn a_lower_cap_gives_a_lower_clock_and_energy_adds_up() {
        let a = Activity { compute_s: 0.9, busy_s: 1.0, hbm_bytes: 5e11, span_s: 1.25 };
        let m = h100_like();
        let low = PowerModel { cap_w: 500.0, ..m };
        assert!(low.capped_clock_mhz(&a, 1800.0) < m.capped_clock_mhz(&a, 1800.0));
        // 100 W x 1.25 s + 0.9 s x 900 W x (1/8) + 5e11 B x 30 pJ = 125 + 101.25 + 15.
        let e = m.energy_j(&a, 900.0);
        assert!((e - 241.25).abs() < 1e-9, "{e}");
    }
}
