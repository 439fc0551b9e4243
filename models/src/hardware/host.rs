//! The host of a local deployment: its CPU sockets as a compute device
//! (cores, the vector and AMX matrix throughput per core), its DRAM as a
//! memory tier (channels, transfer rate, capacity per socket, the sustained
//! fraction), the link between its sockets (UPI) and the PCIe link to the
//! GPU. Presets are TOML files in `presets/hosts/` with a source per value;
//! every value lies in a `Plausible` range.

use moesim_topologies::{ConfigProblem, Plausible};
use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// A host: CPU sockets with their DRAM, the socket link and the GPU's PCIe slot.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Preset name.
    pub name: String,
    /// What it is, in words.
    #[serde(default)]
    pub product: String,
    /// CPU sockets on the board (a deployment may use fewer).
    pub sockets: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// All-core clock under sustained vector / matrix load, GHz.
    pub vector_clock_ghz: f64,
    /// INT8 operations per clock per core of the vector units (AVX-512 VNNI: 256).
    pub int8_ops_per_clk_per_core: f64,
    /// INT8 operations per clock per core of the matrix unit (AMX: 2048; 0 without one).
    #[serde(default)]
    pub amx_int8_ops_per_clk_per_core: f64,
    /// DRAM channels per socket.
    pub memory_channels_per_socket: u32,
    /// DRAM transfer rate, MT/s (8 bytes per transfer and channel).
    pub memory_mt_per_s: f64,
    /// DRAM capacity per socket, GiB.
    pub memory_gib_per_socket: f64,
    /// Sustained fraction of the channels' peak a streaming read reaches.
    pub stream_efficiency: f64,
    /// Socket-to-socket bandwidth per direction, all links together, GB/s.
    pub upi_gb_per_s: f64,
    /// Host <-> GPU bandwidth per direction for pinned buffers, GB/s.
    pub pcie_gb_per_s: f64,
    /// Host -> GPU bandwidth from a pageable (mmap'd) buffer, staged through a pinned one, GB/s.
    pub pageable_copy_gb_per_s: f64,
}

const PRESETS: &[(&str, &str)] = &[("xeon-gold-6454s", include_str!("../../presets/hosts/xeon-gold-6454s.toml"))];

const GHZ: Plausible = Plausible::new(0.1, 10.0, "GHz");
const OPS_PER_CLK: Plausible = Plausible::new(1.0, 1e5, "ops per clock");
const MT_PER_S: Plausible = Plausible::new(100.0, 2e4, "MT/s");
const GIB: Plausible = Plausible::new(1e-3, 1e5, "GiB");
const FRACTION: Plausible = Plausible::new(0.01, 1.0, "(a fraction)");
const GB_PER_S: Plausible = Plausible::new(1e-3, 1e4, "GB/s");

impl HostSpec {
    /// Names of the embedded presets.
    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|(n, _)| *n).collect()
    }

    /// Parses and checks an embedded preset.
    pub fn preset(name: &str) -> Result<HostSpec, ModelError> {
        let text =
            PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t).ok_or_else(|| ModelError::UnknownPreset {
                what: "host",
                name: name.to_owned(),
                known: Self::preset_names().iter().map(|s| s.to_string()).collect(),
            })?;
        let bad = |message: String| ModelError::BadPreset { name: name.to_owned(), message };
        let spec: HostSpec = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        if let Some(p) = spec.problems().first() {
            return Err(bad(format!("{}: {}", p.key, p.message)));
        }
        Ok(spec)
    }

    /// Every impossible value, keys relative to the host table.
    pub fn problems(&self) -> Vec<ConfigProblem> {
        let mut out = Vec::new();
        for (key, v, hi) in [
            ("sockets", self.sockets, 16),
            ("cores_per_socket", self.cores_per_socket, 1024),
            ("memory_channels_per_socket", self.memory_channels_per_socket, 64),
        ] {
            if !(1..=hi).contains(&v) {
                out.push(ConfigProblem {
                    key: key.into(),
                    message: format!("expected an integer in [1, {hi}], found {v}"),
                });
            }
        }
        let mut check = |key: &str, v: f64, range: Plausible, zero_ok: bool| {
            if zero_ok && v == 0.0 {
                return;
            }
            if let Some(p) = range.problem(key, v) {
                out.push(p);
            }
        };
        check("vector_clock_ghz", self.vector_clock_ghz, GHZ, false);
        check("int8_ops_per_clk_per_core", self.int8_ops_per_clk_per_core, OPS_PER_CLK, false);
        check("amx_int8_ops_per_clk_per_core", self.amx_int8_ops_per_clk_per_core, OPS_PER_CLK, true);
        check("memory_mt_per_s", self.memory_mt_per_s, MT_PER_S, false);
        check("memory_gib_per_socket", self.memory_gib_per_socket, GIB, false);
        check("stream_efficiency", self.stream_efficiency, FRACTION, false);
        check("upi_gb_per_s", self.upi_gb_per_s, GB_PER_S, false);
        check("pcie_gb_per_s", self.pcie_gb_per_s, GB_PER_S, false);
        check("pageable_copy_gb_per_s", self.pageable_copy_gb_per_s, GB_PER_S, false);
        out
    }

    /// Peak DRAM bandwidth of one socket, bytes/s (channels x MT/s x 8 bytes).
    pub fn socket_peak_bytes_per_s(&self) -> f64 {
        self.memory_channels_per_socket as f64 * self.memory_mt_per_s * 1e6 * 8.0
    }

    /// Sustained streaming read bandwidth of one socket, bytes/s.
    pub fn socket_stream_bytes_per_s(&self) -> f64 {
        self.socket_peak_bytes_per_s() * self.stream_efficiency
    }

    /// Peak INT8 operations per second of one socket's vector units (or of
    /// its matrix units with `amx`).
    pub fn socket_int8_ops_per_s(&self, amx: bool) -> f64 {
        let per_clk = if amx { self.amx_int8_ops_per_clk_per_core } else { self.int8_ops_per_clk_per_core };
        self.cores_per_socket as f64 * self.vector_clock_ghz * 1e9 * per_clk
    }

    /// DRAM capacity of one socket, bytes.
    pub fn socket_memory_bytes(&self) -> f64 {
        self.memory_gib_per_socket * (1u64 << 30) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_is_plausible() {
        for name in HostSpec::preset_names() {
            HostSpec::preset(name).unwrap();
        }
    }

    #[test]
    fn ddr5_4800_socket_peak_is_channels_times_rate() {
        let h = HostSpec::preset("xeon-gold-6454s").unwrap();
        // 8 channels x 4800 MT/s x 8 bytes = 307.2 GB/s.
        assert!((h.socket_peak_bytes_per_s() / 1e9 - 307.2).abs() < 1e-9);
        // 32 cores x 2.2 GHz x 256 = 18.02 TOP/s of AVX-512 VNNI INT8.
        assert!((h.socket_int8_ops_per_s(false) / 1e12 - 18.0224).abs() < 1e-9);
    }

    #[test]
    fn an_unknown_preset_names_the_known_ones() {
        let e = HostSpec::preset("nope").unwrap_err().to_string();
        assert!(e.contains("xeon-gold-6454s"), "{e}");
    }
}
