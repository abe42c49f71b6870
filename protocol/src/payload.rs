//! [`Payload`]: the large byte field of a message (a blob piece, an inline result),
//! shared instead of copied.
//!
//! A `Vec<u8>` field would copy a piece three times on its way through one peer: out of
//! the blob into the message, out of the message into the encoding, and on the other
//! side out of the received encoding into the decoded message, each copy into fresh
//! memory. A `Payload` is a [`bytes::Bytes`]: the sender slices it out of the blob it
//! serves (no copy until the encoder writes it), and [`crate::codec::decode_shared`]
//! slices it out of the received buffer itself (no copy at all). On the wire it is a
//! CBOR byte string, exactly as `serde_bytes` writes a `Vec<u8>`.
//!
//! It is the wire form only: everywhere else a peer holds bytes as [`bytes::Bytes`]
//! ([`Payload::into_bytes`] and `From<Bytes>` cost nothing).

use std::cell::RefCell;
use std::fmt;
use std::ops::Deref;

use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// Bytes carried by a message. Cloning shares them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Payload(Bytes);

impl Payload {
    pub fn new(bytes: Bytes) -> Payload {
        Payload(bytes)
    }

    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl Deref for Payload {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        Payload(Bytes::from(bytes))
    }
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Payload {
        Payload(bytes)
    }
}

impl fmt::Debug for Payload {
    /// The length only: a piece is a megabyte.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({} bytes)", self.0.len())
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

thread_local! {
    /// The buffer [`crate::codec::decode_shared`] is decoding on this thread, if any:
    /// a payload borrowed from it becomes a slice of it instead of a copy.
    static DECODING: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Makes payloads decoded on this thread share `buffer` until dropped.
pub(crate) struct SharedDecode {
    previous: Option<Bytes>,
}

impl SharedDecode {
    pub(crate) fn begin(buffer: Bytes) -> SharedDecode {
        let previous = DECODING.with(|d| d.borrow_mut().replace(buffer));
        SharedDecode { previous }
    }
}

impl Drop for SharedDecode {
    fn drop(&mut self) {
        let previous = self.previous.take();
        DECODING.with(|d| *d.borrow_mut() = previous);
    }
}

/// `part` as a slice of the buffer being decoded, if it lies inside it.
fn shared_slice(part: &[u8]) -> Option<Bytes> {
    DECODING.with(|d| {
        let decoding = d.borrow();
        let buffer = decoding.as_ref()?;
        let start = buffer.as_ptr() as usize;
        let end = start + buffer.len();
        let part_start = part.as_ptr() as usize;
        // `slice_ref` panics on a slice from elsewhere; check first.
        (part_start >= start && part_start + part.len() <= end && !part.is_empty())
            .then(|| buffer.slice_ref(part))
    })
}

struct PayloadVisitor;

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = Payload;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<Payload, E> {
        Ok(Payload(
            shared_slice(v).unwrap_or_else(|| Bytes::copy_from_slice(v)),
        ))
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Payload, E> {
        Ok(Payload(Bytes::copy_from_slice(v)))
    }

    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Payload, E> {
        Ok(Payload(Bytes::from(v)))
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        deserializer.deserialize_bytes(PayloadVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Old {
        n: u32,
        #[serde(with = "serde_bytes")]
        bytes: Vec<u8>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct New {
        n: u32,
        bytes: Payload,
    }

    #[test]
    fn the_wire_bytes_are_those_of_serde_bytes() {
        let bytes: Vec<u8> = (0..=255).cycle().take(70_000).collect();
        let old = codec::encode(&Old {
            n: 7,
            bytes: bytes.clone(),
        })
        .unwrap();
        let new = codec::encode(&New {
            n: 7,
            bytes: bytes.clone().into(),
        })
        .unwrap();
        assert_eq!(old, new);
        let back: Old = codec::decode(&new, usize::MAX).unwrap();
        assert_eq!(back.bytes, bytes);
    }

    #[test]
    fn a_shared_decode_slices_the_buffer_and_a_plain_one_copies() {
        let bytes: Vec<u8> = (0..=255).cycle().take(5_000).collect();
        let encoded = Bytes::from(
            codec::encode(&New {
                n: 1,
                bytes: bytes.clone().into(),
            })
            .unwrap(),
        );
        let range = encoded.as_ptr() as usize..encoded.as_ptr() as usize + encoded.len();
        let shared: New = codec::decode_shared(encoded.clone(), usize::MAX).unwrap();
        assert_eq!(&*shared.bytes, &bytes[..]);
        assert!(range.contains(&(shared.bytes.as_ptr() as usize)));
        let copied: New = codec::decode(&encoded, usize::MAX).unwrap();
        assert_eq!(&*copied.bytes, &bytes[..]);
        assert!(!range.contains(&(copied.bytes.as_ptr() as usize)));
        // The buffer is forgotten after the shared decode: nothing else shares it.
        assert!(DECODING.with(|d| d.borrow().is_none()));
    }
}
