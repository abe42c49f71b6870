//! Submitter-side image preparation: decoding with limits, grey conversion, the
//! difference image X = |YA − YB| and its 256-bin histogram.
//!
//! Grey is `Y = (299R + 587G + 114B + 500) / 1000` in integers; a grey image is used as
//! is; alpha is ignored; 16-bit and float images are first brought to 8 bits by the
//! `image` crate's conversion. Errors name the file and the problem.

use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageReader, Limits};

/// Largest image accepted, in pixels (64 Mi, e.g. 8192 × 8192): two decoded 16-bit RGBA
/// images of this size already take 1 GiB. Larger inputs are refused before decoding.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// Why an input image could not be used.
#[derive(Debug, thiserror::Error)]
pub enum PrepError {
    #[error("{}: cannot open: {err}", path.display())]
    Open { path: PathBuf, err: std::io::Error },
    #[error("{}: not a readable image: {reason}", path.display())]
    NotAnImage { path: PathBuf, reason: String },
    #[error("{}: image is empty ({width}x{height})", path.display())]
    Empty {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{}: image of {width}x{height} pixels is over the limit of {MAX_PIXELS} pixels", path.display())]
    TooLarge {
        path: PathBuf,
        width: u32,
        height: u32,
    },
    #[error("{} is {}x{} but {} is {}x{}: the two images must have the same size", before.display(), bw, bh, after.display(), aw, ah)]
    SizeMismatch {
        before: PathBuf,
        after: PathBuf,
        bw: u32,
        bh: u32,
        aw: u32,
        ah: u32,
    },
}

/// Checks a size against the limits.
pub fn check_size(path: &Path, width: u32, height: u32) -> Result<(), PrepError> {
    if width == 0 || height == 0 {
        return Err(PrepError::Empty {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    if width as u64 * height as u64 > MAX_PIXELS {
        return Err(PrepError::TooLarge {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    Ok(())
}

fn reader(path: &Path) -> Result<ImageReader<std::io::BufReader<std::fs::File>>, PrepError> {
    let not_image = |reason: String| PrepError::NotAnImage {
        path: path.to_path_buf(),
        reason,
    };
    let r = ImageReader::open(path).map_err(|err| PrepError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    let r = r.with_guessed_format().map_err(|err| PrepError::Open {
        path: path.to_path_buf(),
        err,
    })?;
    if r.format().is_none() {
        return Err(not_image("unknown format".into()));
    }
    Ok(r)
}

/// Decodes an image file, refusing empty or too large images before decoding them.
pub fn load_image(path: &Path) -> Result<DynamicImage, PrepError> {
    let not_image = |reason: String| PrepError::NotAnImage {
        path: path.to_path_buf(),
        reason,
    };
    let (w, h) = reader(path)?
        .into_dimensions()
        .map_err(|e| not_image(e.to_string()))?;
    check_size(path, w, h)?;
    let mut r = reader(path)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(w);
    limits.max_image_height = Some(h);
    limits.max_alloc = Some(MAX_PIXELS * 8 + (64 << 20));
    r.limits(limits);
    let img = r.decode().map_err(|e| not_image(e.to_string()))?;
    if img.width() != w || img.height() != h {
        return Err(not_image("decoded size differs from the header".into()));
    }
    Ok(img)
}

/// Loads the before and after images and checks that they have the same size.
pub fn load_pair(before: &Path, after: &Path) -> Result<(DynamicImage, DynamicImage), PrepError> {
    let a = load_image(before)?;
    let b = load_image(after)?;
    if a.width() != b.width() || a.height() != b.height() {
        return Err(PrepError::SizeMismatch {
            before: before.to_path_buf(),
            after: after.to_path_buf(),
            bw: a.width(),
            bh: a.height(),
            aw: b.width(),
            ah: b.height(),
        });
    }
    Ok((a, b))
}

/// The grey level of every pixel, row-major.
pub fn grey(img: &DynamicImage) -> Vec<u8> {
    match img {
        DynamicImage::ImageLuma8(g) => g.as_raw().clone(),
        DynamicImage::ImageLumaA8(g) => g.as_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => img.to_luma8().into_raw(),
        DynamicImage::ImageRgb8(rgb) => grey_rgb(rgb.as_raw(), 3),
        DynamicImage::ImageRgba8(rgba) => grey_rgb(rgba.as_raw(), 4),
        _ => grey_rgb(img.to_rgb8().as_raw(), 3),
    }
}

/// `(299R + 587G + 114B + 500) / 1000` of interleaved pixels of `channels` bytes.
pub fn grey_rgb(px: &[u8], channels: usize) -> Vec<u8> {
    px.chunks_exact(channels)
        .map(|p| ((299 * p[0] as u32 + 587 * p[1] as u32 + 114 * p[2] as u32 + 500) / 1000) as u8)
        .collect()
}

/// The difference image X = |YA − YB| of a pair, with its size and histogram.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    pub width: u32,
    pub height: u32,
    /// X, row-major.
    pub x: Vec<u8>,
}

impl Difference {
    /// The 256-bin histogram of X.
    pub fn histogram(&self) -> [u64; 256] {
        histogram(&self.x)
    }
}

/// X = |a − b| of two grey images of `width × height`.
pub fn difference(width: u32, height: u32, a: &[u8], b: &[u8]) -> Difference {
    Difference {
        width,
        height,
        x: a.iter().zip(b).map(|(&p, &q)| p.abs_diff(q)).collect(),
    }
}

/// The 256-bin histogram.
pub fn histogram(x: &[u8]) -> [u64; 256] {
    let mut h = [0u64; 256];
    for &v in x {
        h[v as usize] += 1;
    }
    h
}

/// The difference image of two decoded images of the same size.
pub fn difference_of(before: &DynamicImage, after: &DynamicImage) -> Difference {
    difference(before.width(), before.height(), &grey(before), &grey(after))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_checked() {
        let p = Path::new("x.png");
        assert!(matches!(check_size(p, 0, 5), Err(PrepError::Empty { .. })));
        assert!(matches!(check_size(p, 5, 0), Err(PrepError::Empty { .. })));
        assert!(matches!(
            check_size(p, 100_000, 100_000),
            Err(PrepError::TooLarge { .. })
        ));
        assert!(check_size(p, 8192, 8192).is_ok());
        assert!(check_size(p, 8193, 8192).is_err());
    }

    #[test]
    fn grey_follows_the_reference_formula() {
        assert_eq!(
            grey_rgb(&[255, 255, 255, 0, 0, 0, 10, 200, 30], 3),
            [255, 0, 124]
        );
        // (299·10 + 587·200 + 114·30 + 500) / 1000 = 124.31 → 124
        let d = difference(3, 1, &[0, 10, 255], &[5, 3, 0]);
        assert_eq!(d.x, [5, 7, 255]);
        assert_eq!(d.histogram()[5] + d.histogram()[7] + d.histogram()[255], 3);
    }
}
