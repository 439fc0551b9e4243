//! The resources a task graph runs on: compute devices and directed links.
//!
//! The engine knows a device only as "N identical compute units sharing one
//! memory bandwidth" and a link only as "a capacity in bytes per second and a
//! latency". What the units are (SMs, AI cores) and where the numbers come
//! from (presets, efficiencies) is the business of the crates above.

use crate::error::SimError;
use crate::time::SimDuration;

/// Index of a device in [`Platform::devices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(pub u32);

/// Index of a directed link in [`Platform::links`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkId(pub u32);

/// A compute device: `units` identical compute units (SMs) sharing one memory
/// bandwidth.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResource {
    pub name: String,
    /// Number of compute units (SMs, AI cores).
    pub units: u32,
    /// Main-memory bandwidth shared by the kernels running on the device.
    pub mem_bytes_per_s: f64,
}

/// What a link stands for, for reports and errors only (the engine treats
/// every link alike): a physical link of some class (`nvlink`, `pcie`,
/// `infiniband`), or a modelling construct (`sm-port`: the per-GPU send and
/// receive capacity of the SMs a communication kernel holds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkKind {
    Physical(&'static str),
    Construct(&'static str),
}

impl LinkKind {
    pub fn label(self) -> &'static str {
        match self {
            LinkKind::Physical(s) | LinkKind::Construct(s) => s,
        }
    }
    pub fn is_physical(self) -> bool {
        matches!(self, LinkKind::Physical(_))
    }
}

/// One direction of a link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkResource {
    pub name: String,
    pub kind: LinkKind,
    /// Capacity a flow can use, in bytes per second (nominal x efficiency).
    pub bytes_per_s: f64,
    /// Latency added once per traversal of this link.
    pub latency: SimDuration,
}

/// Everything the engine can run tasks on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Platform {
    pub devices: Vec<DeviceResource>,
    pub links: Vec<LinkResource>,
    /// Devices whose memory is shared between their kernels and the
    /// communication flows that read or write it: (device, the construct
    /// link those flows cross). See [`crate::device`] for the sharing rule.
    pub memory_links: Vec<(DeviceId, LinkId)>,
}

impl Platform {
    /// A device whose memory runs at `speed` times its bandwidth (with
    /// [`crate::TaskGraph::slow_devices_kernels`]: a device that is slow as a
    /// whole).
    pub fn slow_device(&mut self, device: DeviceId, speed: f64) {
        if let Some(d) = self.devices.get_mut(device.0 as usize) {
            d.mem_bytes_per_s *= speed;
        }
    }
    pub fn add_device(&mut self, device: DeviceResource) -> DeviceId {
        self.devices.push(device);
        DeviceId(self.devices.len() as u32 - 1)
    }
    pub fn add_link(&mut self, link: LinkResource) -> LinkId {
        self.links.push(link);
        LinkId(self.links.len() as u32 - 1)
    }
    /// Makes `link` stand for the memory of `device`: flows crossing it
    /// take memory bandwidth from the device's kernels and the other way
    /// round (its capacity is set by the engine as the kernels run).
    pub fn attach_memory_link(&mut self, device: DeviceId, link: LinkId) {
        self.memory_links.push((device, link));
    }
    pub fn device(&self, id: DeviceId) -> &DeviceResource {
        &self.devices[id.0 as usize]
    }
    pub fn link(&self, id: LinkId) -> &LinkResource {
        &self.links[id.0 as usize]
    }

    /// Checks every capacity is finite and positive and every device has at
    /// least one unit.
    pub fn validate(&self) -> Result<(), SimError> {
        for d in &self.devices {
            if d.units == 0 {
                return Err(SimError::BadResource(format!("device {} has no compute units", d.name)));
            }
            if !(d.mem_bytes_per_s.is_finite() && d.mem_bytes_per_s > 0.0) {
                return Err(SimError::BadResource(format!(
                    "device {} memory bandwidth must be positive, found {}",
                    d.name, d.mem_bytes_per_s
                )));
            }
        }
        let mut seen = vec![false; self.devices.len()];
        for &(d, l) in &self.memory_links {
            if d.0 as usize >= self.devices.len() || l.0 as usize >= self.links.len() {
                return Err(SimError::BadResource(format!("memory link {} of device {} does not exist", l.0, d.0)));
            }
            if std::mem::replace(&mut seen[d.0 as usize], true) {
                return Err(SimError::BadResource(format!(
                    "device {} has more than one memory link",
                    self.devices[d.0 as usize].name
                )));
            }
        }
        for l in &self.links {
            if !(l.bytes_per_s.is_finite() && l.bytes_per_s > 0.0) {
                return Err(SimError::BadResource(format!(
                    "link {} bandwidth must be positive, found {}",
                    l.name, l.bytes_per_s
                )));
            }
        }
        Ok(())
    }
}
