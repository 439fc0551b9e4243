//! Simulated time: integer picoseconds in newtypes.
//!
//! `SimTime` is an instant since the start of a run, `SimDuration` a span. Both
//! are `u64` picoseconds (about 213 days of range); floating point appears only
//! at the edges (`from_secs_f64`, `as_us_f64`, ...), never in event ordering.

use std::fmt;
use std::ops::{Add, AddAssign, Sub};

/// Picoseconds per second.
pub const PS_PER_S: f64 = 1e12;

/// An instant of simulated time, in picoseconds since the run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SimTime(pub u64);

/// A span of simulated time, in picoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SimDuration(pub u64);

impl SimTime {
    pub const ZERO: SimTime = SimTime(0);
    /// The end of the range; arithmetic saturates here, so a computed time
    /// equal to it means the range was overrun.
    pub const MAX: SimTime = SimTime(u64::MAX);
    /// The range in seconds (about 213.5 days).
    pub const RANGE_S: f64 = u64::MAX as f64 / PS_PER_S;

    pub fn as_ps(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / PS_PER_S
    }
    pub fn as_us_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
    /// The span from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: SimTime) -> SimDuration {
        SimDuration(self.0.saturating_sub(earlier.0))
    }
}

impl SimDuration {
    pub const ZERO: SimDuration = SimDuration(0);

    pub fn from_ps(ps: u64) -> Self {
        SimDuration(ps)
    }
    pub fn from_ns(ns: u64) -> Self {
        SimDuration(ns * 1_000)
    }
    /// Rounds to the nearest picosecond; negative or NaN inputs give zero,
    /// values beyond the range saturate.
    pub fn from_secs_f64(s: f64) -> Self {
        Self::from_ps_f64(s * PS_PER_S)
    }
    pub fn from_us_f64(us: f64) -> Self {
        Self::from_ps_f64(us * 1e6)
    }
    pub fn from_ps_f64(ps: f64) -> Self {
        if ps.is_nan() || ps <= 0.0 {
            SimDuration(0)
        } else if ps >= u64::MAX as f64 {
            SimDuration(u64::MAX)
        } else {
            SimDuration(ps.round() as u64)
        }
    }
    pub fn as_ps(self) -> u64 {
        self.0
    }
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / PS_PER_S
    }
    pub fn as_us_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }
}

impl Add<SimDuration> for SimTime {
    type Output = SimTime;
    fn add(self, d: SimDuration) -> SimTime {
        SimTime(self.0.saturating_add(d.0))
    }
}
impl AddAssign<SimDuration> for SimTime {
    fn add_assign(&mut self, d: SimDuration) {
        self.0 = self.0.saturating_add(d.0);
    }
}
impl Add for SimDuration {
    type Output = SimDuration;
    fn add(self, d: SimDuration) -> SimDuration {
        SimDuration(self.0.saturating_add(d.0))
    }
}
impl AddAssign for SimDuration {
    fn add_assign(&mut self, d: SimDuration) {
        self.0 = self.0.saturating_add(d.0);
    }
}
impl Sub for SimTime {
    type Output = SimDuration;
    fn sub(self, earlier: SimTime) -> SimDuration {
        self.since(earlier)
    }
}

impl fmt::Display for SimTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} us", self.as_us_f64())
    }
}
impl fmt::Display for SimDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.3} us", self.as_us_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conversions_round_trip() {
        assert_eq!(SimDuration::from_us_f64(1.5).as_ps(), 1_500_000);
        assert_eq!(SimDuration::from_secs_f64(-1.0), SimDuration::ZERO);
        assert_eq!(SimDuration::from_secs_f64(f64::NAN), SimDuration::ZERO);
        assert_eq!(SimDuration::from_secs_f64(1e30).as_ps(), u64::MAX);
        let t = SimTime::ZERO + SimDuration::from_ns(3);
        assert_eq!(t.as_ps(), 3_000);
        assert_eq!(t - SimTime(1_000), SimDuration(2_000));
        assert_eq!(SimTime(5) - SimTime(9), SimDuration::ZERO);
    }
}
