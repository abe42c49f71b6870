//! The CBOR encoding of every wire type, bounded on decode.
//!
//! `encode` writes canonical bytes for our types (serde writes struct fields in
//! declaration order and we use no maps with unordered keys), which is what makes
//! `TaskSpec::id` stable. `decode` refuses input above a limit before parsing, and
//! cbor4ii refuses declared lengths larger than the input, so a hostile length prefix
//! cannot make it allocate.

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::payload::SharedDecode;

/// Why bytes could not be decoded into a wire type.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("message of {len} bytes is over the {limit}-byte limit")]
    TooLarge { len: usize, limit: usize },
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    #[error("invalid message: {0}")]
    Invalid(String),
}

/// Encodes a wire value as CBOR.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, EncodeError> {
    encode_sized(value, 0)
}

/// [`encode`] into a buffer made for about `size_hint` bytes: a value carrying a large
/// byte field (a blob piece) is then written without the buffer growing, and being
/// copied, a dozen times on the way.
pub fn encode_sized<T: Serialize>(value: &T, size_hint: usize) -> Result<Vec<u8>, EncodeError> {
    cbor4ii::serde::to_vec(Vec::with_capacity(size_hint), value)
        .map_err(|e| EncodeError(e.to_string()))
}

/// Encoding failed (only possible for values that serde cannot represent, i.e. a bug).
#[derive(Debug, thiserror::Error)]
#[error("CBOR encoding failed: {0}")]
pub struct EncodeError(pub String);

/// Decodes `bytes` as a `T`, refusing anything longer than `limit` bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLarge {
            len: bytes.len(),
            limit,
        });
    }
    cbor4ii::serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

/// [`decode`] from a buffer that the decoded value may keep: its
/// [`crate::Payload`]s become slices of `bytes` instead of copies (a received blob
/// piece is then never copied out of the buffer it was read into).
pub fn decode_shared<T: DeserializeOwned>(bytes: Bytes, limit: usize) -> Result<T, DecodeError> {
    let _shared = SharedDecode::begin(bytes.clone());
    decode(&bytes, limit)
}
