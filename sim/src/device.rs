//! Compute devices: kernels share units and memory bandwidth as fluids.
//!
//! Each active kernel has a remaining fraction `f` of its work. Units go first
//! to `Hold(n)` kernels and communication holds, in start order (a late one
//! gets what is left, possibly nothing); the rest are water-filled among
//! `Share { max_units }` kernels (equal shares capped at `max_units`). A kernel
//! with compute time `C` (at all `units`) on `s` units progresses at
//! `s / (units * C)` per picosecond unless memory-bound: its memory demand at
//! that rate is `mem_bytes * rate`, memory bandwidth is shared max-min fairly
//! by demand, and the kernel runs at `min(compute rate, share / mem_bytes)`.
//! Rates change only when a kernel starts or ends; the device then advances
//! every kernel to the present, recomputes, and keeps one pending completion
//! (stale ones are recognised by a version number).
//!
//! A device with a memory link (`Platform::memory_links`) also shares its
//! memory with the communication flows that cross that link (a flow reads
//! its bytes at the source GPU and writes them at the destination). The
//! kernels as one class and the communication as the other share the
//! bandwidth `B` max-min fairly, weighted by the units each holds: a memory
//! system serves the requests outstanding, and each SM keeps a bounded number
//! in flight (Little's law), so under saturation a class's share is its SMs'
//! share. With `D` the kernels' demand at their compute-limited rates, `w_c`
//! the units communication holds and `w_k` those memory-using kernels have,
//! the link's capacity is `max(B w_c / (w_c + w_k), B - D)` (at least 1 % of
//! `B`: a copy engine holds no SMs but is never starved), and the kernels
//! share what the flows then leave, `B - r_c` (at least 1 % of `B`). Since `D` does not depend on
//! `r_c`, one pass (units, capacity, flows, memory) is the two-class fixed
//! point. The kernels see `r_c` as of the device's last recompute (its own
//! kernels' and communication holds' starts and ends), not every change of
//! the flows elsewhere.

use std::collections::VecDeque;

use crate::flow::ceil_ps;
use crate::graph::UnitDemand;
use crate::platform::DeviceResource;
use crate::result::DeviceStats;
use crate::time::PS_PER_S;

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Demand {
    Share(u32),
    Hold(u32),
    /// Units held by a communication task until it completes; no work.
    CommHold(u32),
}

impl From<UnitDemand> for Demand {
    fn from(u: UnitDemand) -> Self {
        match u {
            UnitDemand::Share { max_units } => Demand::Share(max_units),
            UnitDemand::Hold(n) => Demand::Hold(n),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct ActiveKernel {
    pub task: u32,
    pub demand: Demand,
    pub compute_ps: f64,
    pub mem_bytes: f64,
    /// Remaining fraction of the work.
    pub f: f64,
    /// Fraction per picosecond.
    pub rate: f64,
    pub alloc: f64,
}

#[derive(Debug)]
pub(crate) struct DeviceState {
    units: f64,
    /// Bytes per picosecond.
    mem_bw: f64,
    active: Vec<ActiveKernel>,
    since: u64,
    pub version: u32,
    units_in_use: f64,
    pub dirty: bool,
    pub stats: DeviceStats,
    order: Vec<(f64, u32)>,
    /// Memory demand of the kernels at their compute-limited rates, bytes
    /// per picosecond (set by [`DeviceState::allocate_units`]).
    kernel_demand: f64,
    /// Units held by communication, and units of memory-using kernels.
    comm_units: f64,
    kernel_units: f64,
}

impl DeviceState {
    pub fn new(d: &DeviceResource) -> Self {
        DeviceState {
            units: d.units as f64,
            mem_bw: d.mem_bytes_per_s / PS_PER_S,
            active: Vec::new(),
            since: 0,
            version: 0,
            units_in_use: 0.0,
            dirty: false,
            stats: DeviceStats::default(),
            order: Vec::new(),
            kernel_demand: 0.0,
            comm_units: 0.0,
            kernel_units: 0.0,
        }
    }

    /// Brings every kernel's progress to `now`; kernels that are done leave
    /// the device and their tasks are pushed onto `finished`.
    pub fn advance(&mut self, now: u64, finished: &mut VecDeque<u32>) {
        let dt = now.saturating_sub(self.since);
        if dt > 0 {
            self.stats.unit_ps += self.units_in_use * dt as f64;
            if !self.active.is_empty() {
                self.stats.busy_ps += dt;
            }
        }
        self.since = now;
        let mut any_done = false;
        for k in &mut self.active {
            if matches!(k.demand, Demand::CommHold(_)) || k.rate <= 0.0 {
                continue;
            }
            if ceil_ps(k.f / k.rate) <= dt || k.f - k.rate * dt as f64 <= 1e-12 {
                k.f = 0.0;
                any_done = true;
            } else {
                k.f -= k.rate * dt as f64;
            }
        }
        if any_done {
            self.active.retain(|k| {
                let done = k.f == 0.0 && !matches!(k.demand, Demand::CommHold(_));
                if done {
                    finished.push_back(k.task);
                }
                !done
            });
        }
    }

    /// Adds a kernel (call [`DeviceState::advance`] first).
    pub fn start(&mut self, task: u32, demand: Demand, compute_ps: f64, mem_bytes: f64) {
        self.stats.mem_bytes += mem_bytes;
        self.active.push(ActiveKernel { task, demand, compute_ps, mem_bytes, f: 1.0, rate: 0.0, alloc: 0.0 });
    }

    /// Removes the communication hold of `task` (call `advance` first).
    pub fn release_hold(&mut self, task: u32) {
        self.active.retain(|k| !(k.task == task && matches!(k.demand, Demand::CommHold(_))));
    }

    /// First half of a recompute: units and compute-limited rates, and the
    /// kernels' memory demand at those rates.
    pub fn allocate_units(&mut self) {
        self.dirty = false;
        let mut free = self.units;
        self.order.clear();
        for (i, k) in self.active.iter_mut().enumerate() {
            match k.demand {
                Demand::Hold(n) | Demand::CommHold(n) => {
                    k.alloc = (n as f64).min(free);
                    free -= k.alloc;
                }
                Demand::Share(cap) => {
                    k.alloc = 0.0;
                    self.order.push((cap as f64, i as u32));
                }
            }
        }
        // Water-fill the free units among sharing kernels, smallest cap first.
        self.order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut left = self.order.len();
        for &(cap, i) in &self.order {
            let a = cap.min(free.max(0.0) / left as f64);
            self.active[i as usize].alloc = a;
            free -= a;
            left -= 1;
        }
        // Compute-limited rates and memory demands.
        self.order.clear();
        let mut in_use = 0.0;
        let (mut demand_sum, mut comm_units, mut kernel_units) = (0.0, 0.0, 0.0);
        for (i, k) in self.active.iter_mut().enumerate() {
            in_use += k.alloc;
            if matches!(k.demand, Demand::CommHold(_)) {
                k.rate = 0.0;
                comm_units += k.alloc;
                continue;
            }
            k.rate = if k.compute_ps == 0.0 { f64::INFINITY } else { k.alloc / (self.units * k.compute_ps) };
            if k.mem_bytes > 0.0 {
                let demand = if k.rate == 0.0 { 0.0 } else { k.mem_bytes * k.rate };
                self.order.push((demand, i as u32));
                demand_sum += demand;
                if demand > 0.0 {
                    kernel_units += k.alloc;
                }
            }
        }
        self.units_in_use = in_use;
        self.kernel_demand = demand_sum;
        self.comm_units = comm_units;
        self.kernel_units = kernel_units;
    }

    /// The memory bandwidth communication may take now, bytes per
    /// picosecond (after [`DeviceState::allocate_units`]; see the module doc).
    pub fn comm_memory_cap(&self) -> f64 {
        let b = self.mem_bw;
        let weights = self.comm_units + self.kernel_units;
        let by_units = if weights > 0.0 { b * self.comm_units / weights } else { b };
        by_units.max(b - self.kernel_demand).max(0.01 * b).min(b)
    }

    /// Second half of a recompute: the kernels share the memory bandwidth
    /// communication leaves (`comm` bytes per picosecond in use by flows);
    /// returns the time of the next completion, if any.
    pub fn share_memory(&mut self, comm: f64) -> Option<u64> {
        // Max-min fair memory bandwidth by demand.
        self.order.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let mut bw = (self.mem_bw - comm).max(0.01 * self.mem_bw);
        let mut left = self.order.len();
        for &(demand, i) in &self.order {
            let give = demand.min(bw.max(0.0) / left as f64);
            bw -= give;
            left -= 1;
            let k = &mut self.active[i as usize];
            k.rate = k.rate.min(give / k.mem_bytes);
        }
        self.version = self.version.wrapping_add(1);
        let mut next = u64::MAX;
        for k in &self.active {
            if k.rate > 0.0 && !matches!(k.demand, Demand::CommHold(_)) {
                next = next.min(ceil_ps(k.f / k.rate));
            }
        }
        (next != u64::MAX).then(|| self.since.saturating_add(next))
    }
}
