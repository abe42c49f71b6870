//! The `idlegrid` peer as a library: everything the binary does, so that integration
//! tests can start real peers in one process.

pub mod commands;
pub mod scheduler;
pub mod sim;
pub mod net;
pub mod store;
pub mod blobs;
pub mod executor;
pub mod priority;
pub mod worker;
pub mod node;
pub mod grid;
pub mod jobs;
pub mod policy;
