//! The `idlegrid` peer as a library: everything the binary does, so that integration
//! tests can start real peers in one process.

pub mod commands;
pub mod scheduler;
pub mod sim;
