//! How a peer joins the grid: its persistent identity, and the peers it dials first.
//!
//! A peer's ed25519 key lives in its data dir so its PeerId is the same after a
//! restart (submitters remember workers by PeerId; allowlists name them).

pub mod identity;

pub use identity::{load_or_create_identity, IdentityError};
