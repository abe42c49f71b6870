//! A video job's output as it grows: a thumbnail of the first frame of the segment
//! verified last. The frame is the submitter's own input (its blob is the user's
//! file), so nothing is decoded from the encoded video; it is read and scaled only
//! when the page asks after another segment was verified, at most once a second.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use idlegrid_kernels::video;
use idlegrid_protocol::Cid;

use super::Hub;
use crate::grid::Job;
use crate::store::BlobStore;

/// The thumbnail's box, in pixels.
pub const WIDTH: u32 = 320;
pub const HEIGHT: u32 = 180;

/// How often a new thumbnail is made at most.
const AT_MOST_EVERY: Duration = Duration::from_secs(1);

struct State_ {
    /// The segment verified last, and how many were verified so far.
    newest: Option<usize>,
    verified: u64,
    /// The thumbnail made last: of which segment, when.
    made: Option<(usize, Instant, Bytes)>,
}

/// A video job's thumbnail.
pub struct Thumbnail {
    first_frames: Vec<Cid>,
    state: Mutex<State_>,
}

impl Thumbnail {
    pub fn for_job(job: &Job) -> Option<Thumbnail> {
        if job.kernel != video::NAME {
            return None;
        }
        let first_frames = job
            .chunks
            .specs()
            .map(|spec| spec.inputs.first().copied())
            .collect::<Option<Vec<_>>>()?;
        Some(Thumbnail {
            first_frames,
            state: Mutex::new(State_ {
                newest: None,
                verified: 0,
                made: None,
            }),
        })
    }

    /// Segment `chunk` was verified.
    pub fn verified(&self, chunk: usize) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.newest = Some(chunk);
        state.verified += 1;
    }

    /// Bumped at each verified segment (the page reloads the image when it moves).
    pub fn version(&self) -> Option<u64> {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.newest.map(|_| state.verified)
    }

    /// The thumbnail as a PNG (blocking: reads and decodes a frame).
    pub fn png(&self, store: &BlobStore) -> Option<Bytes> {
        let newest = {
            let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((segment, at, png)) = &state.made {
                if Some(*segment) == state.newest || at.elapsed() < AT_MOST_EVERY {
                    return Some(png.clone());
                }
            }
            state.newest?
        };
        let frame = store.get(self.first_frames.get(newest)?).ok()??;
        let image = image::load_from_memory(&frame).ok()?;
        let small = image.thumbnail(WIDTH, HEIGHT).to_rgb8();
        let mut out = Vec::new();
        small
            .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
            .ok()?;
        let png = Bytes::from(out);
        self.state.lock().unwrap_or_else(|e| e.into_inner()).made =
            Some((newest, Instant::now(), png.clone()));
        Some(png)
    }
}

/// `GET /api/jobs/{id}/thumbnail.png`.
pub async fn get_png(State(hub): State<Arc<Hub>>, Path(id): Path<u64>) -> Response {
    let Some(thumbnail) = hub.job(id).and_then(|job| job.thumbnail.clone()) else {
        return (StatusCode::NOT_FOUND, "no thumbnail for this job").into_response();
    };
    let store = hub.store.clone();
    let png = tokio::task::spawn_blocking(move || thumbnail.png(&store))
        .await
        .ok()
        .flatten();
    match png {
        Some(png) => (
            [
                (header::CONTENT_TYPE, "image/png"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            png,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no segment verified yet").into_response(),
    }
}
