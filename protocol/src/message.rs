//! Messages of `/idlegrid/task/1` and `/idlegrid/blob/1`.
//!
//! Dispatch is accept-then-deliver: `Run` is answered at once with `Accepted` (or a
//! refusal), the worker computes in the background, and the submitter `Poll`s. A poll is
//! a long poll: the worker answers as soon as the chunk is done, or after a keep-alive
//! interval with `Running`. So a chunk may compute for minutes while every single
//! request still completes within seconds, and a dead or frozen worker is noticed when
//! one poll times out. A chunk that finishes within the worker's grace is answered
//! `Done` to its `Run` at once.
//!
//! Small chunks travel several to a request: `RunMany` carries up to the number of
//! chunks the worker's probe answer offered ([`PeerInfo::batch`]), and is answered with
//! `Many`, one answer per chunk in order. A peer whose probe answer has no `batch` (one
//! that predates it) offers 0 and is never sent a `RunMany`; one sent anyway fails to
//! decode it and resets the stream, so the sender gets an error at once, not a hang.

use serde::{Deserialize, Serialize};

use crate::codec::DecodeError;
use crate::limits;
use crate::text;
use crate::{Cid, Payload, TaskSpec};

/// A request on `/idlegrid/task/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskRequest {
    /// Are you alive, what do you run, how many free slots do you have?
    Probe,
    /// Compute this chunk. The worker fetches inputs it lacks from the requester.
    Run { spec: TaskSpec },
    /// How is this chunk doing? The worker may hold the answer up to its keep-alive
    /// interval while the chunk computes.
    Poll { chunk: Cid },
    /// Stop working on this chunk (another peer delivered it first).
    Cancel { chunk: Cid },
    /// Compute these chunks: each as a `Run`, answered together with `Many`. At most
    /// the worker's [`PeerInfo::batch`] chunks, and at most [`limits::MAX_BATCH`].
    RunMany { specs: Vec<TaskSpec> },
}

/// What a worker offers, as answered to a probe.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// idlegrid's agent string, e.g. `idlegrid/0.1.0`.
    pub agent: String,
    /// Kernels this worker runs: (name, version).
    pub kernels: Vec<(String, u32)>,
    /// Chunks it can run at once.
    pub slots: u32,
    /// Chunks it is running now.
    pub running: u32,
    /// True when the owner's policy says no new work right now.
    pub busy: bool,
    /// Most chunks this worker takes in one `RunMany`; 0 (what a peer that predates
    /// batches decodes to) means one `Run` per chunk.
    #[serde(default)]
    pub batch: u32,
}

/// A response on `/idlegrid/task/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TaskResponse {
    Probe(PeerInfo),
    /// The chunk is queued or running.
    Accepted {
        chunk: Cid,
    },
    /// The worker will not run it; a refusal is an answer, not a timeout.
    Refused {
        chunk: Cid,
        reason: String,
    },
    /// Still computing (keep-alive answer to a poll).
    Running {
        chunk: Cid,
    },
    /// Finished: the result's id and length; small results come inline, larger ones are
    /// fetched over `/idlegrid/blob/1`.
    Done {
        chunk: Cid,
        result: Cid,
        len: u64,
        inline: Payload,
    },
    /// The kernel failed on this chunk (bad inputs, refused params, cancelled).
    Failed {
        chunk: Cid,
        reason: String,
    },
    /// The worker knows nothing of this chunk (it restarted, or never got it).
    Unknown {
        chunk: Cid,
    },
    /// The answer to a `Probe` the worker has no room to take now (too many requests
    /// queued): nothing is wrong with the asker or the worker; ask again later. A
    /// request about a chunk is `Refused` instead, naming its chunk. A peer that
    /// predates this answer fails to decode it and reports a stream error at once.
    Busy,
    /// The answers to a `RunMany`, one per chunk in its order (each a `Run`'s answer).
    Many {
        answers: Vec<TaskResponse>,
    },
}

/// A request on `/idlegrid/blob/1`: a piece of a blob.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRequest {
    pub cid: Cid,
    pub offset: u64,
    /// Bytes wanted; the answer holds at most [`limits::BLOB_PIECE`].
    pub len: u32,
}

/// A response on `/idlegrid/blob/1`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlobResponse {
    Piece {
        /// Length of the whole blob.
        total: u64,
        offset: u64,
        bytes: Payload,
    },
    NotFound,
    Refused {
        reason: String,
    },
}

fn check_batch(len: usize) -> Result<(), DecodeError> {
    if len > limits::MAX_BATCH {
        return Err(DecodeError::Invalid(format!(
            "a batch of {len} chunks is over the {}-chunk limit",
            limits::MAX_BATCH
        )));
    }
    Ok(())
}

fn check_text(what: &str, text: &str) -> Result<(), DecodeError> {
    if text.len() > limits::MAX_TEXT {
        return Err(DecodeError::Invalid(format!(
            "{what} of {} bytes is over the {}-byte limit",
            text.len(),
            limits::MAX_TEXT
        )));
    }
    Ok(())
}

impl TaskRequest {
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            TaskRequest::Run { spec } => spec.validate(),
            TaskRequest::RunMany { specs } => {
                check_batch(specs.len())?;
                specs.iter().try_for_each(TaskSpec::validate)
            }
            TaskRequest::Probe | TaskRequest::Poll { .. } | TaskRequest::Cancel { .. } => Ok(()),
        }
    }
}

impl TaskResponse {
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            TaskResponse::Probe(info) => {
                check_text("agent string", &info.agent)?;
                if info.kernels.len() > 64 {
                    return Err(DecodeError::Invalid("more than 64 kernels".into()));
                }
                for (name, _) in &info.kernels {
                    check_text("kernel name", name)?;
                }
                Ok(())
            }
            TaskResponse::Refused { reason, .. } | TaskResponse::Failed { reason, .. } => {
                check_text("reason", reason)
            }
            TaskResponse::Done { len, inline, .. } => {
                if inline.len() > limits::MAX_INLINE_RESULT {
                    return Err(DecodeError::Invalid("inline result over the limit".into()));
                }
                if *len > limits::MAX_BLOB {
                    return Err(DecodeError::Invalid(format!(
                        "result of {len} bytes is over the {}-byte blob limit",
                        limits::MAX_BLOB
                    )));
                }
                if !inline.is_empty() && inline.len() as u64 != *len {
                    return Err(DecodeError::Invalid(
                        "inline result length differs from the announced length".into(),
                    ));
                }
                Ok(())
            }
            TaskResponse::Many { answers } => {
                check_batch(answers.len())?;
                answers.iter().try_for_each(|answer| match answer {
                    TaskResponse::Many { .. } | TaskResponse::Probe(_) | TaskResponse::Busy => {
                        Err(DecodeError::Invalid(
                            "a batch's answer is a chunk's answer, not a batch, probe or busy"
                                .into(),
                        ))
                    }
                    answer => answer.validate(),
                })
            }
            TaskResponse::Accepted { .. }
            | TaskResponse::Running { .. }
            | TaskResponse::Unknown { .. }
            | TaskResponse::Busy => Ok(()),
        }
    }

    /// Makes every free-text field printable ([`text::printable`]): done on receipt,
    /// after `validate`, so no reason, agent or kernel name a peer sent can drive the
    /// terminal it is printed on.
    pub fn make_printable(&mut self) {
        match self {
            TaskResponse::Probe(info) => {
                text::make_printable(&mut info.agent);
                for (name, _) in &mut info.kernels {
                    text::make_printable(name);
                }
            }
            TaskResponse::Refused { reason, .. } | TaskResponse::Failed { reason, .. } => {
                text::make_printable(reason)
            }
            TaskResponse::Many { answers } => {
                answers.iter_mut().for_each(TaskResponse::make_printable)
            }
            TaskResponse::Accepted { .. }
            | TaskResponse::Running { .. }
            | TaskResponse::Done { .. }
            | TaskResponse::Unknown { .. }
            | TaskResponse::Busy => {}
        }
    }
}

impl BlobRequest {
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.offset > limits::MAX_BLOB {
            return Err(DecodeError::Invalid(
                "blob offset past the blob limit".into(),
            ));
        }
        Ok(())
    }
}

impl BlobResponse {
    pub fn validate(&self) -> Result<(), DecodeError> {
        match self {
            BlobResponse::Piece {
                total,
                offset,
                bytes,
            } => {
                if bytes.len() > limits::BLOB_PIECE {
                    return Err(DecodeError::Invalid("blob piece over the limit".into()));
                }
                if *total > limits::MAX_BLOB {
                    return Err(DecodeError::Invalid("blob over the size limit".into()));
                }
                if offset.saturating_add(bytes.len() as u64) > *total {
                    return Err(DecodeError::Invalid(
                        "blob piece runs past the blob's end".into(),
                    ));
                }
                Ok(())
            }
            BlobResponse::NotFound => Ok(()),
            BlobResponse::Refused { reason } => check_text("reason", reason),
        }
    }

    /// Makes the refusal's reason printable (see [`TaskResponse::make_printable`]).
    pub fn make_printable(&mut self) {
        if let BlobResponse::Refused { reason } = self {
            text::make_printable(reason);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, encode};
    use proptest::prelude::*;

    #[test]
    fn messages_round_trip() {
        let spec = TaskSpec {
            kernel: "change".into(),
            kernel_version: 1,
            params: vec![9; 10],
            inputs: vec![Cid::of(b"x")],
        };
        let reqs = vec![
            TaskRequest::Probe,
            TaskRequest::Run { spec: spec.clone() },
            TaskRequest::Poll { chunk: spec.id() },
            TaskRequest::Cancel { chunk: spec.id() },
            TaskRequest::RunMany {
                specs: vec![spec.clone(); 3],
            },
        ];
        for r in reqs {
            let b = encode(&r).unwrap();
            assert_eq!(
                decode::<TaskRequest>(&b, limits::MAX_TASK_REQUEST).unwrap(),
                r
            );
        }
        let done = TaskResponse::Done {
            chunk: spec.id(),
            result: Cid::of(b"r"),
            len: 1,
            inline: vec![7].into(),
        };
        let b = encode(&done).unwrap();
        let back: TaskResponse = decode(&b, limits::MAX_TASK_RESPONSE).unwrap();
        assert!(back.validate().is_ok());
        assert_eq!(back, done);
        let b = encode(&TaskResponse::Busy).unwrap();
        let back: TaskResponse = decode(&b, limits::MAX_TASK_RESPONSE).unwrap();
        assert!(back.validate().is_ok());
        assert_eq!(back, TaskResponse::Busy);
        let many = TaskResponse::Many {
            answers: vec![done.clone(), TaskResponse::Accepted { chunk: spec.id() }],
        };
        let back: TaskResponse =
            decode(&encode(&many).unwrap(), limits::MAX_TASK_RESPONSE).unwrap();
        assert!(back.validate().is_ok());
        assert_eq!(back, many);
    }

    #[test]
    fn batches_are_bounded_and_flat() {
        let spec = TaskSpec {
            kernel: "noop".into(),
            kernel_version: 1,
            params: vec![],
            inputs: vec![],
        };
        let too_many = TaskRequest::RunMany {
            specs: vec![spec.clone(); limits::MAX_BATCH + 1],
        };
        assert!(too_many.validate().is_err());
        let nested = TaskResponse::Many {
            answers: vec![TaskResponse::Many { answers: vec![] }],
        };
        assert!(nested.validate().is_err());
        let busy_inside = TaskResponse::Many {
            answers: vec![TaskResponse::Busy],
        };
        assert!(busy_inside.validate().is_err());
    }

    /// The probe answer as a peer that predates batches sends it: it decodes, offering
    /// no batches, so such a peer is sent one `Run` per chunk.
    #[test]
    fn a_probe_answer_without_batch_offers_none() {
        #[derive(Serialize)]
        struct OldPeerInfo {
            agent: String,
            kernels: Vec<(String, u32)>,
            slots: u32,
            running: u32,
            busy: bool,
        }
        #[derive(Serialize)]
        enum OldResponse {
            Probe(OldPeerInfo),
        }
        let old = OldResponse::Probe(OldPeerInfo {
            agent: "idlegrid/0.1.0".into(),
            kernels: vec![("noop".into(), 1)],
            slots: 2,
            running: 0,
            busy: false,
        });
        let back: TaskResponse = decode(&encode(&old).unwrap(), limits::MAX_TASK_RESPONSE).unwrap();
        match back {
            TaskResponse::Probe(info) => {
                assert_eq!((info.slots, info.batch), (2, 0));
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn peer_text_is_made_printable() {
        let mut probe = TaskResponse::Probe(PeerInfo {
            agent: "idlegrid\x1b]0;owned\x07".into(),
            kernels: vec![("change\u{202E}".into(), 1)],
            slots: 1,
            running: 0,
            busy: false,
            batch: 0,
        });
        probe.make_printable();
        let TaskResponse::Probe(info) = &probe else {
            unreachable!()
        };
        assert!(!info.agent.chars().any(text::is_unprintable));
        assert!(!info.kernels[0].0.chars().any(text::is_unprintable));
        let mut refused = BlobResponse::Refused {
            reason: "\x1b[2J".repeat(300),
        };
        assert!(refused.validate().is_err(), "over the text limit");
        refused = BlobResponse::Refused {
            reason: "\x1b[2J".repeat(200),
        };
        assert!(refused.validate().is_ok());
        refused.make_printable();
        assert!(
            refused.validate().is_ok(),
            "printable text stays within the limit"
        );
        let BlobResponse::Refused { reason } = &refused else {
            unreachable!()
        };
        assert!(!reason.chars().any(text::is_unprintable));
    }

    #[test]
    fn bad_pieces_are_invalid() {
        let piece = BlobResponse::Piece {
            total: 3,
            offset: 2,
            bytes: vec![1, 2].into(),
        };
        assert!(piece.validate().is_err());
        let lying = TaskResponse::Done {
            chunk: Cid::of(b"c"),
            result: Cid::of(b"r"),
            len: 5,
            inline: vec![1].into(),
        };
        assert!(lying.validate().is_err());
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        let big = vec![0u8; limits::MAX_BLOB_REQUEST + 1];
        assert!(matches!(
            decode::<BlobRequest>(&big, limits::MAX_BLOB_REQUEST),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    proptest! {
        // Any byte string yields a value or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<TaskRequest>(&bytes, limits::MAX_TASK_REQUEST).map(|r| r.validate());
            let _ = decode::<TaskResponse>(&bytes, limits::MAX_TASK_RESPONSE).map(|r| r.validate());
            let _ = decode::<BlobRequest>(&bytes, limits::MAX_BLOB_REQUEST).map(|r| r.validate());
            let _ = decode::<BlobResponse>(&bytes, limits::MAX_BLOB_RESPONSE).map(|r| r.validate());
        }

        // A length prefix that claims a huge byte string must not allocate it.
        #[test]
        fn huge_declared_lengths_are_errors(len in 1u64 << 20..1u64 << 40) {
            let mut b = vec![0x5b]; // byte string, 8-byte length follows
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0u8; 16]);
            prop_assert!(decode::<serde_bytes::ByteBuf>(&b, 1 << 20).is_err());
        }
    }
}
