//! The `moesim` binary: parses the command line (`moesim::commands::cli`)
//! and runs it. Each command's arguments, work and rendering live in
//! `moesim::commands`.

use std::process::ExitCode;

use clap::Parser;

use moesim::commands::cli::{dispatch, Cli};

fn main() -> ExitCode {
    restore_default_sigpipe();
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// A closed stdout (`moesim scenarios | head -1`) ends the program quietly,
/// as it does `cat`, instead of a panic in `println!`: Rust ignores SIGPIPE
/// by default, so put back the default action.
fn restore_default_sigpipe() {
    #[cfg(unix)]
    // SAFETY: called first thing in main, before any thread exists; setting a
    // signal's disposition to the default is always sound.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
