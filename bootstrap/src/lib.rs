//! How a peer joins the grid: its persistent identity, and the peers it dials first.
//!
//! A peer's ed25519 key lives in its data dir so its PeerId is the same after a
//! restart (submitters remember workers by PeerId; allowlists name them). Bootstrap
//! peers come from flags, `IDLEGRID_BOOTSTRAP` and the config file, and are tried in
//! order until one answers ([`peers`]).

pub mod identity;
pub mod peers;

pub use identity::{load_or_create_identity, IdentityError};
pub use peers::{BootstrapError, BOOTSTRAP_ENV};
