//! A change job's mask as it grows: each verified band is painted, downscaled, into a
//! small canvas, and the canvas is encoded as a PNG only when the page asks for it
//! after something changed. Rows no band has reached yet are grey.
//!
//! Downscaling: the canvas is the mask cut into `scale`×`scale` blocks (the last ones
//! smaller), a block white if any pixel in it changed ([`downscale`]). It is an OR,
//! so the order in which bands arrive does not matter and the finished canvas equals
//! the written mask downscaled.

use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use idlegrid_kernels::change::{self, chunk::unpack_mask_into};

use super::Hub;
use crate::grid::watch::ResultEvent;
use crate::grid::Job;

/// The canvas's longer side at most, in pixels.
pub const MAX_SIDE: u32 = 480;

/// Grey of rows not painted yet.
const NOT_YET: u8 = 96;

/// The block side that fits a `width`×`height` mask in [`MAX_SIDE`].
pub fn scale_for(width: u32, height: u32) -> u32 {
    width.max(height).div_ceil(MAX_SIDE).max(1)
}

/// `pixels` (a `width`×`height` 0/255 mask) downscaled by [`scale_for`]: returns the
/// small width, height and pixels.
pub fn downscale(pixels: &[u8], width: u32, height: u32) -> (u32, u32, Vec<u8>) {
    let s = scale_for(width, height);
    let (sw, sh) = (width.div_ceil(s), height.div_ceil(s));
    let mut out = vec![0u8; sw as usize * sh as usize];
    for (y, row) in pixels.chunks(width.max(1) as usize).enumerate() {
        let base = (y / s as usize) * sw as usize;
        for (x, &p) in row.iter().enumerate() {
            if let (true, Some(b)) = (p != 0, out.get_mut(base + x / s as usize)) {
                *b = 255;
            }
        }
    }
    (sw, sh, out)
}

struct Canvas {
    width: u32,
    scale: u32,
    /// Own rows of each band, `start..end`.
    bands: Vec<(u32, u32)>,
    /// Each band's packed result, while verified.
    results: Vec<Option<Bytes>>,
    /// The OR of the painted bands, small.
    bits: Vec<u8>,
    /// Full-resolution rows painted, per small row.
    rows_painted: Vec<u32>,
    /// Bumped at each change.
    version: u64,
    /// The PNG of `version`, once asked for.
    png: Option<(u64, Bytes)>,
}

/// A change job's mask so far.
pub struct Partial(Mutex<Canvas>);

impl Partial {
    /// A canvas for `job` if it is a change job with readable bands.
    pub fn for_job(job: &Job) -> Option<Partial> {
        if job.kernel != change::KERNEL {
            return None;
        }
        let mut bands = Vec::with_capacity(job.chunks.len());
        let mut size = None;
        for spec in job.chunks.specs() {
            let p = change::chunk::band_params(&spec).ok()?;
            size = Some((p.width, p.height));
            bands.push((p.row_start, p.row_end));
        }
        let (width, height) = size?;
        let scale = scale_for(width, height);
        let (sw, sh) = (width.div_ceil(scale), height.div_ceil(scale));
        Some(Partial(Mutex::new(Canvas {
            width,
            scale,
            results: vec![None; bands.len()],
            bands,
            bits: vec![0; sw as usize * sh as usize],
            rows_painted: vec![0; sh as usize],
            version: 0,
            png: None,
        })))
    }

    /// Paints or withdraws a band.
    pub fn apply(&self, event: ResultEvent) {
        let mut canvas = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            ResultEvent::Verified {
                chunk,
                bytes: Some(bytes),
                ..
            } => {
                if canvas.results.get(chunk).is_some_and(|r| r.is_none()) {
                    canvas.paint(chunk, &bytes);
                    canvas.results[chunk] = Some(bytes);
                    canvas.version += 1;
                }
            }
            ResultEvent::Verified { bytes: None, .. } => {}
            ResultEvent::Revoked { chunk } => {
                if canvas.results.get(chunk).is_some_and(Option::is_some) {
                    canvas.results[chunk] = None;
                    canvas.repaint();
                    canvas.version += 1;
                }
            }
        }
    }

    /// How many times the canvas changed (the page reloads the image when it moves).
    pub fn version(&self) -> u64 {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).version
    }

    /// The canvas as a grey PNG, encoded once per change.
    pub fn png(&self) -> Option<Bytes> {
        let mut canvas = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((version, png)) = &canvas.png {
            if *version == canvas.version {
                return Some(png.clone());
            }
        }
        let png = Bytes::from(canvas.encode()?);
        canvas.png = Some((canvas.version, png.clone()));
        Some(png)
    }
}

impl Canvas {
    fn small_width(&self) -> usize {
        self.width.div_ceil(self.scale) as usize
    }

    /// ORs band `chunk`'s packed rows into the canvas (a result that does not unpack
    /// is left out: the job's assembly reports it).
    fn paint(&mut self, chunk: usize, packed: &[u8]) {
        let Some(&(start, end)) = self.bands.get(chunk) else {
            return;
        };
        let w = self.width as usize;
        let mut pixels = Vec::new();
        let rows = end.saturating_sub(start) as usize;
        if unpack_mask_into(packed, rows * w, &mut pixels).is_err() {
            return;
        }
        let (s, sw) = (self.scale as usize, self.small_width());
        for (dy, row) in pixels.chunks(w.max(1)).enumerate() {
            let y = start as usize + dy;
            let base = (y / s) * sw;
            for (x, &p) in row.iter().enumerate() {
                if p != 0 {
                    if let Some(b) = self.bits.get_mut(base + x / s) {
                        *b = 255;
                    }
                }
            }
            if let Some(n) = self.rows_painted.get_mut(y / s) {
                *n += 1;
            }
        }
    }

    /// Paints every band still held again (after one was withdrawn).
    fn repaint(&mut self) {
        self.bits.iter_mut().for_each(|b| *b = 0);
        self.rows_painted.iter_mut().for_each(|n| *n = 0);
        let results: Vec<(usize, Bytes)> = self
            .results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((i, r.clone()?)))
            .collect();
        for (i, bytes) in results {
            self.paint(i, &bytes);
        }
    }

    fn encode(&self) -> Option<Vec<u8>> {
        use image::ImageEncoder;
        let sw = self.small_width();
        let sh = self.rows_painted.len();
        let mut shown = self.bits.clone();
        for (r, &n) in self.rows_painted.iter().enumerate() {
            if n == 0 {
                shown[r * sw..(r + 1) * sw].fill(NOT_YET);
            }
        }
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(&shown, sw as u32, sh as u32, image::ExtendedColorType::L8)
            .ok()?;
        Some(out)
    }
}

/// `GET /api/jobs/{id}/partial.png`.
pub async fn get_png(State(hub): State<Arc<Hub>>, Path(id): Path<u64>) -> Response {
    let png = hub
        .job(id)
        .and_then(|job| job.partial.clone())
        .and_then(|p| p.png());
    match png {
        Some(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no picture for this job").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downscale_is_an_or_of_blocks() {
        assert_eq!(scale_for(480, 100), 1);
        assert_eq!(scale_for(481, 100), 2);
        // 4x3 at scale 1 is itself.
        let px = vec![0, 255, 0, 0, 0, 0, 0, 0, 255, 0, 0, 0];
        assert_eq!(downscale(&px, 4, 3), (4, 3, px.clone()));
        // 961x2 at scale 3: blocks of 3 columns; the last is 1 column wide.
        let mut px = vec![0u8; 961 * 2];
        px[4] = 255; // block 1
        px[961 + 960] = 255; // the last block, second row
        let (w, h, small) = downscale(&px, 961, 2);
        assert_eq!((w, h), (321, 1));
        assert_eq!(small.iter().filter(|&&p| p == 255).count(), 2);
        assert_eq!((small[1], small[320]), (255, 255));
        assert_eq!(downscale(&[], 0, 0), (0, 0, Vec::new()));
    }
}
