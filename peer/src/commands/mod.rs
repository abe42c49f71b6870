//! One module per subcommand: its clap arguments and its `run`.

pub mod change;
pub mod simulate;
pub mod common;
pub mod demo;
pub mod peers;
pub mod serve;
pub mod video;
