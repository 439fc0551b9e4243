//! Reading a user's files: regular files only (a device such as
//! `/dev/zero`, a FIFO or a folder is refused before it is opened, so
//! nothing blocks or reads without end) and at most a bounded size; and
//! where a data path (a trace) a scenario or case names is found.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most a configuration file (scenario, device, model, validation cases)
/// may hold.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most a request trace may hold.
pub const MAX_TRACE_BYTES: u64 = 4 << 30;

/// How built-in scenarios and validation cases name the real data: a path
/// under the `shared/data` folder beside the checkout.
pub const SHARED_DATA_PREFIX: &str = "../shared/data/";

/// The environment variable naming the data folder (what
/// [`SHARED_DATA_PREFIX`] stands for), so that moesim finds the data from
/// any working directory.
pub const DATA_ENV: &str = "MOESIM_DATA";

/// Where a data file named in a scenario or a validation case is: an
/// absolute path as written; a path under [`SHARED_DATA_PREFIX`] inside
/// `$MOESIM_DATA` when that is set; else beside the file that names it
/// (`beside`: the scenario's or case file's folder) if it is there; else
/// relative to the working directory if it is there; else, for a path under
/// [`SHARED_DATA_PREFIX`], in the data folder beside the source tree moesim
/// was built from. A path found nowhere is returned as written (and the
/// error reading it names it).
pub fn data_path(path: &str, beside: Option<&Path>) -> PathBuf {
    data_path_in(path, beside, std::env::var_os(DATA_ENV).map(PathBuf::from))
}

fn data_path_in(path: &str, beside: Option<&Path>, data_env: Option<PathBuf>) -> PathBuf {
    let p = Path::new(path);
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let shared = path.strip_prefix(SHARED_DATA_PREFIX);
    if let (Some(rest), Some(root)) = (shared, data_env.filter(|r| !r.as_os_str().is_empty())) {
        return root.join(rest);
    }
    if let Some(b) = beside.map(|b| b.join(p)).filter(|b| b.exists()) {
        return b;
    }
    if p.exists() {
        return p.to_path_buf();
    }
    if let Some(rest) = shared {
        let built = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHARED_DATA_PREFIX).join(rest);
        if built.exists() {
            return built;
        }
    }
    p.to_path_buf()
}

/// A regular file of at most `max_bytes`, opened for streaming, and its
/// size; or why not (checked before opening, so a FIFO never blocks).
pub fn open_regular(path: &Path, max_bytes: u64) -> Result<(fs::File, u64), String> {
    let meta = fs::metadata(path).map_err(|e| format!("cannot read: {e}"))?;
    if !meta.is_file() {
        let what = if meta.is_dir() { "a folder" } else { "not a regular file (a device, FIFO or socket)" };
        return Err(format!("cannot read: {what}"));
    }
    if meta.len() > max_bytes {
        return Err(format!("cannot read: {} bytes, more than the {max_bytes} allowed", meta.len()));
    }
    let file = fs::File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    Ok((file, meta.len()))
}

/// The bytes of a regular file of at most `max_bytes`, or why not.
pub fn read_regular(path: &Path, max_bytes: u64) -> Result<Vec<u8>, String> {
    let (file, len) = open_regular(path, max_bytes)?;
    let mut bytes = Vec::with_capacity(len as usize);
    file.take(max_bytes + 1).read_to_end(&mut bytes).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("cannot read: grew past the {max_bytes} bytes allowed while being read"));
    }
    Ok(bytes)
}

/// The UTF-8 text of a regular file of at most `max_bytes`, or why not.
pub fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    String::from_utf8(read_regular(path, max_bytes)?)
        .map_err(|e| format!("not UTF-8 text (invalid byte at offset {})", e.utf8_error().valid_up_to()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_files_and_folders_are_refused_before_reading() {
        #[cfg(unix)]
        {
            let e = read_regular(Path::new("/dev/zero"), 1 << 20).unwrap_err();
            assert!(e.contains("not a regular file"), "{e}");
        }
        let e = read_regular(Path::new(env!("CARGO_MANIFEST_DIR")), 1 << 20).unwrap_err();
        assert!(e.contains("a folder"), "{e}");
        let e = read_regular(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")), 10).unwrap_err();
        assert!(e.contains("more than the 10 allowed"), "{e}");
        assert!(read_text(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")), 1 << 20).is_ok());
    }

    #[test]
    fn shared_data_paths_follow_moesim_data_then_the_file_then_the_build() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let named = "../shared/data/x/trace.csv";
        assert_eq!(data_path_in(named, None, Some("/data".into())), Path::new("/data/x/trace.csv"));
        // Beside the naming file when it is there (src/../shared/... is not).
        assert_eq!(data_path_in("Cargo.toml", Some(root), None), root.join("Cargo.toml"));
        assert_eq!(data_path_in("/abs/t.csv", Some(root), Some("/data".into())), Path::new("/abs/t.csv"));
        // Not found anywhere: as written.
        assert_eq!(data_path_in("../shared/data/absent.csv", None, None), Path::new("../shared/data/absent.csv"));
        assert_eq!(data_path_in("absent.csv", Some(root), None), Path::new("absent.csv"));
    }
}
