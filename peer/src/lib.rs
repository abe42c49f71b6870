//! The `idlegrid` peer as a library: everything the binary does, so that integration
//! tests can start real peers in one process.

pub mod blobs;
pub mod commands;
pub mod datadir;
pub mod executor;
pub mod grid;
pub mod jobs;
pub mod net;
pub mod node;
pub mod policy;
pub mod priority;
pub mod results;
pub mod store;
pub mod trust;
pub mod ui;
pub mod units;
pub mod worker;
