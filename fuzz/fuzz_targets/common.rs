//! Shared by the message targets: a decoded message must survive re-encoding
//! unchanged, so what a peer accepts is exactly what it would send.

use idlegrid::net::codec::{decode_message, WireMessage};
use std::fmt::Debug;

/// Decodes `data` as a wire message the way the network does (bounded, validated); a
/// message that decodes must encode back to a message that decodes to the same value.
pub fn decode_and_round_trip<M: WireMessage + PartialEq + Debug>(data: &[u8]) -> Option<M> {
    let message = decode_message::<M>(data).ok()?;
    let bytes = idlegrid_protocol::encode(&message).expect("a decoded message re-encodes");
    let again = decode_message::<M>(&bytes).expect("a re-encoded message decodes");
    assert_eq!(again, message, "round trip changed the message");
    Some(message)
}
