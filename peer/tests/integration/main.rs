//! The `idlegrid` binary's integration tests, one test binary: the CLI runs of each
//! kernel (`change_cli`, `video_cli`, `run_cli`), the page of a command's job
//! (`ui_cli`), data-dir locking (`data_dir`), hostile bytes at the decoders
//! (`faults_hostile_bytes`), and the root-only tests of real processes in network
//! namespaces (`lan_mdns`, `nat`, which print why and pass when not root), with
//! `support` shared by the last two. Run one module with a filter, e.g.
//! `cargo test --release -p idlegrid --test integration -- nat::`.
//!
//! The fault suite (`tests/faults.rs`) stays a binary of its own: its scenarios measure
//! job times and share the machine with nothing else, which tests running as threads
//! beside them would break.

mod change_cli;
mod data_dir;
mod faults_hostile_bytes;
mod lan_mdns;
mod nat;
mod run_cli;
mod support;
mod ui_cli;
mod video_cli;
