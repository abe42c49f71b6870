//! Wire types of idlegrid and nothing else: content ids ([`Cid`]), the unit of work
//! ([`TaskSpec`]), the messages of `/idlegrid/task/1` and `/idlegrid/blob/1`, their
//! size limits, a bounded, validating CBOR codec, and [`printable`], which makes the
//! text a peer sends safe to print.
//!
//! No networking and no async here: the peer crate moves these bytes, the kernels crate
//! computes on them. Every decode is bounded by a size limit and every decoded value is
//! validated before anything else sees it.

pub mod cid;
pub mod codec;
pub mod limits;
pub mod message;
pub mod payload;
pub mod task;
pub mod text;

pub use cid::Cid;
pub use codec::{decode, encode, DecodeError};
pub use message::{BlobRequest, BlobResponse, TaskRequest, TaskResponse};
pub use payload::Payload;
pub use task::TaskSpec;
pub use text::printable;

/// Version of the wire protocol; part of the agent string and the protocol names.
pub const PROTOCOL_VERSION: u32 = 1;
/// Protocol name of chunk dispatch (probe, bench, run, poll, cancel).
pub const TASK_PROTOCOL: &str = "/idlegrid/task/1";
/// Protocol name of blob transfer by [`Cid`].
pub const BLOB_PROTOCOL: &str = "/idlegrid/blob/1";
/// Kademlia protocol name: our own DHT, not the public IPFS one.
pub const KAD_PROTOCOL: &str = "/idlegrid/kad/1";
