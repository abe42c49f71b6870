//! Content ids: a blob is named by the blake3 hash of its bytes.
//!
//! On the wire a `Cid` is a CBOR byte string of exactly 32 bytes; anything else is a
//! decode error, so a peer cannot smuggle in a short or long id.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// blake3 hash of a blob's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(pub [u8; 32]);

impl Cid {
    /// The id of `bytes`.
    pub fn of(bytes: &[u8]) -> Cid {
        Cid(*blake3::hash(bytes).as_bytes())
    }

    /// The id of what a [`blake3::Hasher`] has consumed (for streaming hashes of files).
    pub fn from_hasher(hasher: &blake3::Hasher) -> Cid {
        Cid(*hasher.finalize().as_bytes())
    }

    /// Lower-case hex, 64 characters: how blobs are named on disk and in reports.
    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    /// Parses the 64-character hex form.
    pub fn from_hex(text: &str) -> Option<Cid> {
        blake3::Hash::from_hex(text)
            .ok()
            .map(|h| Cid(*h.as_bytes()))
    }

    /// The first 12 hex characters, enough to tell chunks apart in logs.
    pub fn short(&self) -> String {
        self.to_hex()[..12].to_string()
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({})", self.short())
    }
}

impl fmt::Display for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for Cid {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Cid {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CidVisitor;
        impl<'de> Visitor<'de> for CidVisitor {
            type Value = Cid;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a 32-byte blake3 hash")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Cid, E> {
                let bytes: [u8; 32] = v
                    .try_into()
                    .map_err(|_| E::invalid_length(v.len(), &self))?;
                Ok(Cid(bytes))
            }
        }
        deserializer.deserialize_bytes(CidVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let cid = Cid::of(b"idlegrid");
        assert_eq!(Cid::from_hex(&cid.to_hex()), Some(cid));
        assert_eq!(cid.to_hex().len(), 64);
        assert!(Cid::from_hex("xyz").is_none());
    }

    #[test]
    fn wrong_length_is_rejected() {
        let short = crate::codec::encode(&serde_bytes::ByteBuf::from(vec![1u8; 31])).unwrap();
        assert!(crate::codec::decode::<Cid>(&short, 1024).is_err());
        let ok = crate::codec::encode(&Cid::of(b"x")).unwrap();
        assert_eq!(
            crate::codec::decode::<Cid>(&ok, 1024).unwrap(),
            Cid::of(b"x")
        );
    }
}
