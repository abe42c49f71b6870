//! The tables blob of a change job: the integer tables every band of the job runs on.
//!
//! The submitter does all the floating point of a job once, in [`super::model`], and
//! writes the result here as integers ([`encode_tables`]): the data term F and the
//! window probability q16 per grey level, doc_literal's gauge, the coupling B and one
//! acceptance table per annealing sweep. All bands of a job name the same blob, so a
//! worker fetches it once. A worker decodes it with [`decode_tables`], which checks
//! every table's size and range against the chunk's [`BandParams`] before any work: a
//! peer's bytes never reach the engine unchecked.

use idlegrid_protocol::codec;
use serde::{Deserialize, Serialize};

use super::model::{self, Luts};
use super::params::BandParams;
use crate::KernelError;

/// Largest tables blob (1000 sweeps of 5×5 tables at the largest β fit).
pub const MAX_TABLES_BLOB: usize = 64 * 1024 * 1024;
/// Largest |F|: the data-term clamp, 16 nats at 64 units per nat.
const MAX_F: i32 = 1024;
/// Largest coupling B (β ≤ 4 at 64 units per nat).
const MAX_B: u32 = 256;

/// The tables blob (CBOR); integers are little-endian packed bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct TablesWire {
    /// F per grey level, 256 × i16.
    #[serde(with = "serde_bytes")]
    f: Vec<u8>,
    /// q16 per grey level, 256 × u16.
    #[serde(with = "serde_bytes")]
    q16: Vec<u8>,
    /// Empty, or doc_literal's gauge: 256 × i8, each ±1.
    #[serde(with = "serde_bytes")]
    gauge: Vec<u8>,
    /// Coupling B.
    b: u32,
    /// One acceptance table per annealing sweep, u32 each, trailing zeros cut.
    thresholds: Vec<serde_bytes::ByteBuf>,
}

/// Decoded, validated tables.
pub(super) struct Tables {
    pub f: [i32; 256],
    pub q16: [u32; 256],
    pub gauge: Option<[i8; 256]>,
    pub b: i32,
    pub thresholds: Vec<Vec<u32>>,
}

/// The tables blob of `luts`, with one acceptance table per annealing temperature in
/// `temps` (energies in `unit` nats, up to `dmax`).
pub(super) fn encode_tables(
    luts: &Luts,
    temps: &[f64],
    unit: f64,
    dmax: u32,
) -> Result<Vec<u8>, KernelError> {
    let wire = TablesWire {
        f: luts
            .f
            .iter()
            .flat_map(|&v| (v as i16).to_le_bytes())
            .collect(),
        q16: luts
            .q16
            .iter()
            .flat_map(|&v| (v as u16).to_le_bytes())
            .collect(),
        gauge: luts
            .gauge
            .map(|g| g.iter().map(|&v| v as u8).collect())
            .unwrap_or_default(),
        b: luts.b as u32,
        thresholds: temps
            .iter()
            .map(|&t| {
                let tab = model::accept_table(t, unit, dmax);
                let mut bytes = Vec::with_capacity(4 * tab.len());
                for v in tab {
                    bytes.extend_from_slice(&v.to_le_bytes());
                }
                serde_bytes::ByteBuf::from(bytes)
            })
            .collect(),
    };
    codec::encode(&wire).map_err(|e| KernelError::Failed(e.to_string()))
}

fn bad_input(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidInput(msg.into())
}

/// Decodes and checks the tables blob against the chunk's params.
pub(super) fn decode_tables(bytes: &[u8], p: &BandParams) -> Result<Tables, KernelError> {
    let wire: TablesWire =
        codec::decode(bytes, MAX_TABLES_BLOB).map_err(|e| bad_input(format!("tables: {e}")))?;
    if wire.f.len() != 512 || wire.q16.len() != 512 {
        return Err(bad_input("tables: F and q16 must have 256 entries"));
    }
    let mut f = [0i32; 256];
    let mut q16 = [0u32; 256];
    for v in 0..256 {
        f[v] = i16::from_le_bytes([wire.f[2 * v], wire.f[2 * v + 1]]) as i32;
        q16[v] = u16::from_le_bytes([wire.q16[2 * v], wire.q16[2 * v + 1]]) as u32;
        if f[v].abs() > MAX_F {
            return Err(bad_input(format!("tables: F[{v}] = {} out of range", f[v])));
        }
    }
    let gauge = match wire.gauge.len() {
        0 => None,
        256 => {
            let mut g = [0i8; 256];
            for (d, &s) in g.iter_mut().zip(&wire.gauge) {
                *d = match s {
                    1 => 1,
                    0xFF => -1,
                    _ => return Err(bad_input("tables: gauge entries must be ±1")),
                };
            }
            Some(g)
        }
        n => return Err(bad_input(format!("tables: gauge of {n} entries"))),
    };
    if wire.b > MAX_B {
        return Err(bad_input(format!("tables: B = {} out of range", wire.b)));
    }
    let b = wire.b as i32;
    if wire.thresholds.len() != p.anneal_sweeps as usize {
        return Err(bad_input(format!(
            "tables: {} acceptance tables for {} annealing sweeps",
            wire.thresholds.len(),
            p.anneal_sweeps
        )));
    }
    let dmax = model::dmax(&f, b, p.radius) as usize;
    let mut thresholds = Vec::with_capacity(wire.thresholds.len());
    for (k, t) in wire.thresholds.iter().enumerate() {
        if t.len() % 4 != 0 || t.len() / 4 > dmax + 1 {
            return Err(bad_input(format!(
                "tables: acceptance table {k} has {} bytes",
                t.len()
            )));
        }
        thresholds.push(
            t.chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
        );
    }
    Ok(Tables {
        f,
        q16,
        gauge,
        b,
        thresholds,
    })
}
