//! The multi-peer integration tests, one test binary: each module is one concern,
//! `common` starts peers in this process on loopback and is shared by all of them.
//! One binary links the crate graph once instead of once per file; run one concern
//! with a filter, e.g. `cargo test --release -p idlegrid-tests -- hostile::`.

mod all_attacks;
mod bystanders;
mod common;
mod grid;
mod hostile;
mod lending;
mod ping;
mod small_chunks;
mod trust;
mod ui;
mod wasm;
mod wasm_examples;
