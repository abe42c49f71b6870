//! One module per subcommand: its clap arguments and its `run`.

pub mod change;
pub mod common;
pub mod demo;
pub mod job_page;
pub mod keygen;
pub mod peers;
pub mod run;
pub mod serve;
pub mod simulate;
pub mod status;
pub mod ui;
pub mod video;
