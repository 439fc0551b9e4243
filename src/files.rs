//! Reading a user's files: regular files only (a device such as
//! `/dev/zero`, a FIFO or a folder is refused before it is opened, so
//! nothing blocks or reads without end) and at most a bounded size.

use std::fs;
use std::io::Read;
use std::path::Path;

/// The most a configuration file (scenario, device, model, validation cases)
/// may hold.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most a request trace may hold.
pub const MAX_TRACE_BYTES: u64 = 4 << 30;

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
}
