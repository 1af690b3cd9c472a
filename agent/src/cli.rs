//! Command-line subcommands: argument structs (clap) and the functions that run them.

pub mod audit;
