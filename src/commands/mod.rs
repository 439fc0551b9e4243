//! One file per `moesim` command: its clap arguments, what it runs and how it
//! renders.

pub mod validate;

/// How a command prints its result.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}
