//! The request-response codec of both idlegrid protocols: one CBOR message per stream,
//! read with an explicit size limit on each side and validated before anyone sees it.
//!
//! libp2p's stock CBOR codec truncates an oversized message at its limit, which then
//! fails as a confusing "unexpected EOF". Here a message is read up to its limit plus one
//! byte, so "too large" is reported as exactly that, and every decoded value is passed
//! through the protocol crate's `validate`, then has its free text made printable
//! (`idlegrid_protocol::text`), so what a peer wrote cannot drive a terminal later.

use std::io;
use std::marker::PhantomData;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use idlegrid_protocol::{codec, limits, BlobRequest, BlobResponse, TaskRequest, TaskResponse};
use libp2p::request_response;
use libp2p::StreamProtocol;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A wire message with its own read limit and validation.
pub trait WireMessage: Serialize + DeserializeOwned + Send + 'static {
    /// Largest encoded size accepted from a peer.
    const LIMIT: usize;
    fn validate(&self) -> Result<(), codec::DecodeError>;
    /// Makes the message's free text printable (after `validate`).
    fn make_printable(&mut self) {}
    /// About how many bytes the encoding takes, when it is large (0: no idea, small).
    fn size_hint(&self) -> usize {
        0
    }
}

/// Room for a message's fields around its byte payload.
const ENVELOPE: usize = 256;

impl WireMessage for TaskRequest {
    const LIMIT: usize = limits::MAX_TASK_REQUEST;
    fn validate(&self) -> Result<(), codec::DecodeError> {
        TaskRequest::validate(self)
    }
}
impl WireMessage for TaskResponse {
    const LIMIT: usize = limits::MAX_TASK_RESPONSE;
    fn validate(&self) -> Result<(), codec::DecodeError> {
        TaskResponse::validate(self)
    }
    fn make_printable(&mut self) {
        TaskResponse::make_printable(self)
    }
    fn size_hint(&self) -> usize {
        match self {
            TaskResponse::Done { inline, .. } if !inline.is_empty() => inline.len() + ENVELOPE,
            _ => 0,
        }
    }
}
impl WireMessage for BlobRequest {
    const LIMIT: usize = limits::MAX_BLOB_REQUEST;
    fn validate(&self) -> Result<(), codec::DecodeError> {
        BlobRequest::validate(self)
    }
}
impl WireMessage for BlobResponse {
    const LIMIT: usize = limits::MAX_BLOB_RESPONSE;
    fn validate(&self) -> Result<(), codec::DecodeError> {
        BlobResponse::validate(self)
    }
    fn make_printable(&mut self) {
        BlobResponse::make_printable(self)
    }
    fn size_hint(&self) -> usize {
        match self {
            BlobResponse::Piece { bytes, .. } => bytes.len() + ENVELOPE,
            _ => 0,
        }
    }
}

/// Codec for one protocol: requests `Req`, responses `Resp`.
pub struct BoundedCbor<Req, Resp>(PhantomData<(Req, Resp)>);

impl<Req, Resp> Default for BoundedCbor<Req, Resp> {
    fn default() -> Self {
        BoundedCbor(PhantomData)
    }
}

impl<Req, Resp> Clone for BoundedCbor<Req, Resp> {
    fn clone(&self) -> Self {
        BoundedCbor(PhantomData)
    }
}

/// Reads one whole message, refusing more than `M::LIMIT` bytes, and decodes it.
pub async fn read_message<M: WireMessage, T: AsyncRead + Unpin + Send>(
    io: &mut T,
) -> io::Result<M> {
    // One byte over the limit is enough to refuse the message (in `decode_message`).
    let cap = M::LIMIT + 1;
    // Small messages fit the first allocation; a message that outgrows it (a blob
    // piece, an inline result) gets room for the largest one allowed at once instead of
    // being copied as the buffer doubles. Untouched room costs no memory.
    let mut bytes: Vec<u8> = Vec::with_capacity(FIRST_READ.min(cap));
    let mut filled = 0;
    loop {
        if filled == bytes.len() {
            if filled >= cap {
                break;
            }
            if filled == bytes.capacity() {
                bytes.reserve_exact(cap - filled);
            }
            // Zero only a step ahead of the data: `read_to_end` zeroes its whole
            // doubled capacity at each growth, a pass too many over a 1 MiB piece.
            let step = filled.clamp(MIN_READ_STEP, MAX_READ_STEP).min(cap - filled);
            bytes.resize(filled + step, 0);
        }
        match io.read(&mut bytes[filled..]).await {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    bytes.truncate(filled);
    // Shared: a piece's bytes stay in this buffer, which the decoded message keeps.
    decode_shared_message(bytes::Bytes::from(bytes))
}

/// The first allocation of `read_message`: every message but blob pieces and inline
/// results fits it.
const FIRST_READ: usize = 64 * 1024;
/// How far ahead of the data `read_message` zeroes its buffer: small messages stay
/// small, large ones grow in bounded steps.
const MIN_READ_STEP: usize = 1024;
const MAX_READ_STEP: usize = 64 * 1024;

/// Decodes and validates one message (the part of `read_message` fuzzers call).
pub fn decode_message<M: WireMessage>(bytes: &[u8]) -> io::Result<M> {
    validated(codec::decode(bytes, M::LIMIT))
}

/// [`decode_message`] whose [`idlegrid_protocol::Payload`]s share `bytes`.
fn decode_shared_message<M: WireMessage>(bytes: bytes::Bytes) -> io::Result<M> {
    validated(codec::decode_shared(bytes, M::LIMIT))
}

fn validated<M: WireMessage>(decoded: Result<M, codec::DecodeError>) -> io::Result<M> {
    // A decode error may quote the peer's bytes (an unknown variant's name).
    let invalid = |e: codec::DecodeError| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            idlegrid_protocol::printable(&e.to_string()).into_owned(),
        )
    };
    let mut message = decoded.map_err(invalid)?;
    message.validate().map_err(invalid)?;
    message.make_printable();
    Ok(message)
}

/// Encodes a message, refusing to produce what the other side would refuse to read.
fn encode_message<M: WireMessage>(message: &M) -> io::Result<Vec<u8>> {
    let bytes = codec::encode_sized(message, message.size_hint()).map_err(io::Error::other)?;
    if bytes.len() > M::LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes is over the {}-byte limit",
                bytes.len(),
                M::LIMIT
            ),
        ));
    }
    Ok(bytes)
}

async fn write_bytes<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl<Req: WireMessage, Resp: WireMessage> request_response::Codec for BoundedCbor<Req, Resp> {
    type Protocol = StreamProtocol;
    type Request = Req;
    type Response = Resp;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Req>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Resp>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_message(io).await
    }

    async fn write_request<T>(&mut self, _: &StreamProtocol, io: &mut T, req: Req) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, encode_message(&req)?).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        resp: Resp,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_bytes(io, encode_message(&resp)?).await
    }
}

pub type TaskCodec = BoundedCbor<TaskRequest, TaskResponse>;
pub type BlobCodec = BoundedCbor<BlobRequest, BlobResponse>;

#[cfg(test)]
mod tests {
    use super::*;
    use idlegrid_protocol::Cid;

    #[tokio::test]
    async fn oversized_message_is_reported_as_too_large() {
        let mut big = futures::io::Cursor::new(vec![0u8; limits::MAX_BLOB_REQUEST + 10]);
        let err = read_message::<BlobRequest, _>(&mut big).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("over the"), "{err}");
    }

    #[test]
    fn a_decoded_reason_is_printable() {
        let refused = TaskResponse::Refused {
            chunk: Cid::of(b"c"),
            reason: "no\x1b[31m red\u{202E}".into(),
        };
        let bytes = encode_message(&refused).unwrap();
        let TaskResponse::Refused { reason, .. } = decode_message(&bytes).unwrap() else {
            panic!("not a refusal")
        };
        assert_eq!(reason, "no\u{FFFD}[31m red\u{FFFD}");
        let blob = BlobResponse::Refused {
            reason: "\x07bell".into(),
        };
        let bytes = encode_message(&blob).unwrap();
        assert_eq!(
            decode_message::<BlobResponse>(&bytes).unwrap(),
            BlobResponse::Refused {
                reason: "\u{FFFD}bell".into()
            }
        );
    }

    #[tokio::test]
    async fn round_trip_through_a_stream() {
        let req = BlobRequest {
            cid: Cid::of(b"x"),
            offset: 0,
            len: 10,
        };
        let mut buf = futures::io::Cursor::new(Vec::new());
        write_bytes(&mut buf, encode_message(&req).unwrap())
            .await
            .unwrap();
        let mut rd = futures::io::Cursor::new(buf.into_inner());
        assert_eq!(read_message::<BlobRequest, _>(&mut rd).await.unwrap(), req);
    }
}
