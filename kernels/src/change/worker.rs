//! The worker side: one band chunk and its blobs → the band's own rows of the mask.
//!
//! A worker trusts nothing. [`run_band`] decodes and checks the params
//! ([`band_params`]), checks that the blobs are the ones the chunk names (count, content
//! ids, each piece's length against its declared rows) and decodes the tables with
//! every size and range checked ([`decode_tables`]), all before any work. Only then does
//! it join the pieces into the band, run the integer [`engine`] on it with global
//! coordinates and pack the band's own rows ([`pack_mask`]). The output is a function of
//! the chunk's bytes only. Errors are [`KernelError`]s, never panics.

use idlegrid_protocol::{Cid, TaskSpec};

use super::assemble::pack_mask;
use super::engine::{self, Band, Init, Program};
use super::params::band_params;
use super::tables::decode_tables;
use crate::{Cancel, KernelError, Spread};

fn bad_input(msg: impl Into<String>) -> KernelError {
    KernelError::InvalidInput(msg.into())
}

/// Runs one band chunk: `inputs` = [tables blob, the band's pieces top to bottom].
/// Returns the band's own rows of the mask, packed ([`pack_mask`]).
pub fn run<B: AsRef<[u8]>>(spec: &TaskSpec, inputs: &[B]) -> Result<Vec<u8>, KernelError> {
    let inputs: Vec<&[u8]> = inputs.iter().map(AsRef::as_ref).collect();
    run_band(spec, &inputs, Spread::Pool, &Cancel::new())
}

/// [`run`] on borrowed blobs (the registry's entry); stops between sweeps once
/// `cancel` is set.
pub(crate) fn run_band(
    spec: &TaskSpec,
    inputs: &[&[u8]],
    spread: Spread,
    cancel: &Cancel,
) -> Result<Vec<u8>, KernelError> {
    let p = band_params(spec)?;
    let Some((tables, pieces)) = inputs.split_first() else {
        return Err(bad_input("no input blobs"));
    };
    if pieces.len() != p.piece_rows.len() {
        return Err(bad_input(format!(
            "{} input pieces, the params name {}",
            pieces.len(),
            p.piece_rows.len()
        )));
    }
    if inputs
        .iter()
        .zip(&spec.inputs)
        .any(|(b, cid)| Cid::of(b) != *cid)
    {
        return Err(bad_input("an input blob does not match its content id"));
    }
    let t = decode_tables(tables, &p)?;
    let w = p.width as usize;
    let rows = (p.ext_end - p.ext_start) as usize;
    let mut row = p.ext_start;
    for (i, (piece, &n)) in pieces.iter().zip(&p.piece_rows).enumerate() {
        if piece.len() != n as usize * w {
            return Err(bad_input(format!(
                "input piece {i} (rows {row}..{}) of {} bytes, width {w} needs {}",
                row + n,
                piece.len(),
                n as usize * w
            )));
        }
        row += n;
    }
    // The engine reads the band as one slice; one piece is used as it is.
    let joined: Vec<u8>;
    let band: &[u8] = match pieces {
        [one] => one,
        _ => {
            joined = pieces.concat();
            &joined
        }
    };
    let prog = Program {
        f: &t.f,
        q16: &t.q16,
        gauge: t.gauge.as_ref(),
        b: t.b,
        radius: p.radius as usize,
        init: p.window.map_or(Init::Sign, |r| Init::Window(r as usize)),
        thresholds: &t.thresholds,
        icm_sweeps: p.icm_sweeps,
        seed: p.seed,
    };
    let b = Band {
        x: band,
        width: w,
        rows,
        y0: p.ext_start as usize,
        height: p.height as usize,
    };
    let lo = (p.row_start - p.ext_start) as usize;
    let hi = (p.row_end - p.ext_start) as usize;
    let spins = engine::solve(&b, &prog, spread, lo..hi, cancel)?;
    Ok(pack_mask(&spins.mask_rows(lo, hi)))
}
