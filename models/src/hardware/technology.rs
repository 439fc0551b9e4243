//! Memory technologies of on-chip tiers (SRAM, eDRAM, STT-MRAM): density,
//! latency, bandwidth and static power, from the embedded preset
//! `presets/memory-technologies.toml` (each value with its source there).

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::error::ModelError;

/// One technology row.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryTechnology {
    pub name: String,
    pub cell: String,
    pub transistors_per_bit: u32,
    /// Bit-cell area in F^2, array overhead included.
    pub cell_area_f2: f64,
    /// Access latency relative to SRAM of the same capacity.
    pub latency_factor: f64,
    /// Array bandwidth relative to SRAM of the same area.
    pub bandwidth_factor: f64,
    /// Static power per MiB, milliwatts.
    pub static_mw_per_mib: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TechnologyFile {
    technology: Vec<MemoryTechnology>,
}

/// The embedded technology table's text.
pub const PRESET_TEXT: &str = include_str!("../../presets/memory-technologies.toml");

impl MemoryTechnology {
    /// Every embedded technology, in file order.
    pub fn all() -> Vec<MemoryTechnology> {
        Self::table().to_vec()
    }

    /// The embedded table, parsed once (every kernel's cost asks for its
    /// device's L2 technology).
    fn table() -> &'static [MemoryTechnology] {
        static TABLE: OnceLock<Vec<MemoryTechnology>> = OnceLock::new();
        // The embedded file is checked by a test; a broken one yields no rows.
        TABLE.get_or_init(|| toml::from_str::<TechnologyFile>(PRESET_TEXT).map(|f| f.technology).unwrap_or_default())
    }

    /// The technology called `name`, or an error listing the known ones.
    pub fn named(name: &str) -> Result<MemoryTechnology, ModelError> {
        let all = Self::table();
        all.iter().find(|t| t.name == name).cloned().ok_or_else(|| {
            ModelError::Unsupported(format!(
                "unknown memory technology `{name}`; expected one of {}",
                all.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Bits per area of this technology relative to `other`.
    pub fn density_relative_to(&self, other: &MemoryTechnology) -> f64 {
        other.cell_area_f2 / self.cell_area_f2
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_parses_and_edram_is_four_to_six_times_denser_than_sram() {
        let file: TechnologyFile = toml::from_str(PRESET_TEXT).unwrap();
        assert_eq!(file.technology.len(), 3);
        let sram = MemoryTechnology::named("sram").unwrap();
        let edram = MemoryTechnology::named("edram").unwrap();
        let d = edram.density_relative_to(&sram);
        assert!((4.0..=6.0).contains(&d), "{d}");
        let e = MemoryTechnology::named("dram3d").unwrap_err().to_string();
        assert!(e.contains("dram3d") && e.contains("stt-mram"), "{e}");
    }
}
