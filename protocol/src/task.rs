//! The unit of work: a [`TaskSpec`] names a kernel, its version, its parameters and the
//! content ids of its inputs. Its id is the blake3 of its canonical CBOR, so two peers
//! that agree on a chunk's id agree on exactly what it computes.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::limits;
use crate::Cid;

/// One chunk of a job, as sent to a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Kernel name, e.g. `change`.
    pub kernel: String,
    /// Kernel version: a worker with another version refuses the chunk, so results of
    /// different builds never mix in one output.
    pub kernel_version: u32,
    /// Kernel-specific parameters (CBOR, decoded and validated by the kernel).
    #[serde(with = "serde_bytes")]
    pub params: Vec<u8>,
    /// Input blobs, in the order the kernel expects them.
    pub inputs: Vec<Cid>,
}

impl TaskSpec {
    /// The chunk id: blake3 of the canonical encoding.
    pub fn id(&self) -> Cid {
        // Encoding our own plain struct cannot fail; an empty id would still be unique
        // per content, but keep the invariant explicit.
        Cid::of(&codec::encode(self).unwrap_or_default())
    }

    /// Structural checks that need no kernel knowledge. Kernels validate `params`.
    pub fn validate(&self) -> Result<(), DecodeError> {
        if self.kernel.is_empty() || self.kernel.len() > limits::MAX_KERNEL_NAME {
            return Err(DecodeError::Invalid(format!(
                "kernel name of {} bytes (1..={} allowed)",
                self.kernel.len(),
                limits::MAX_KERNEL_NAME
            )));
        }
        if !self
            .kernel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(DecodeError::Invalid(
                "kernel name has characters outside [a-z0-9_-]".into(),
            ));
        }
        if self.params.len() > limits::MAX_TASK_PARAMS {
            return Err(DecodeError::Invalid(format!(
                "params of {} bytes are over the {}-byte limit",
                self.params.len(),
                limits::MAX_TASK_PARAMS
            )));
        }
        if self.inputs.len() > limits::MAX_TASK_INPUTS {
            return Err(DecodeError::Invalid(format!(
                "{} inputs are over the limit of {}",
                self.inputs.len(),
                limits::MAX_TASK_INPUTS
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> TaskSpec {
        TaskSpec {
            kernel: "change".into(),
            kernel_version: 1,
            params: vec![1, 2, 3],
            inputs: vec![Cid::of(b"a"), Cid::of(b"b")],
        }
    }

    #[test]
    fn id_is_stable_and_content_dependent() {
        let a = spec();
        assert_eq!(a.id(), spec().id());
        let mut b = spec();
        b.params.push(4);
        assert_ne!(a.id(), b.id());
        let mut c = spec();
        c.inputs.swap(0, 1);
        assert_ne!(a.id(), c.id());
    }

    #[test]
    fn round_trip_and_params_are_a_byte_string() {
        let a = spec();
        let bytes = codec::encode(&a).unwrap();
        // serde_bytes: params encoded as a CBOR byte string (major type 2), not an array.
        let needle = [0x43u8, 1, 2, 3];
        assert!(bytes.windows(4).any(|w| w == needle));
        let back: TaskSpec = codec::decode(&bytes, 1 << 20).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn validation_refuses_bad_names_and_sizes() {
        let mut a = spec();
        a.kernel = "Change!".into();
        assert!(a.validate().is_err());
        let mut b = spec();
        b.kernel = String::new();
        assert!(b.validate().is_err());
        let mut c = spec();
        c.params = vec![0; limits::MAX_TASK_PARAMS + 1];
        assert!(c.validate().is_err());
        assert!(spec().validate().is_ok());
    }
}
