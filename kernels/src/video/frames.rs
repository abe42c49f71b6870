//! Finding the user's frames: a folder, a glob pattern, or a list of files (what a shell
//! leaves after expanding `frames/*.png`), ordered by natural sort (`frame_2` before
//! `frame_10`), each checked to be one of the supported formats.
//!
//! Only names are looked at here; [`super::plan`] then reads each frame's header and
//! hashes its bytes. Hidden files (`.DS_Store`) and sub-folders of a frame folder are
//! skipped; any other file that is not a frame is an error that names it, so a stray
//! file never silently becomes a frame nor silently disappears.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use image::ImageFormat;

use super::VideoError;

/// Frame formats accepted, by file extension (lower case).
const EXTENSIONS: &[(&str, ImageFormat)] = &[
    ("png", ImageFormat::Png),
    ("jpg", ImageFormat::Jpeg),
    ("jpeg", ImageFormat::Jpeg),
    ("bmp", ImageFormat::Bmp),
    ("tif", ImageFormat::Tiff),
    ("tiff", ImageFormat::Tiff),
    ("gif", ImageFormat::Gif),
    ("webp", ImageFormat::WebP),
];

/// Whether decoded content of this format is accepted (a worker checks the sniffed
/// format of every blob against this, whatever the file was called).
pub fn is_supported_format(format: ImageFormat) -> bool {
    EXTENSIONS.iter().any(|&(_, f)| f == format)
}

/// The format a frame file's extension announces, if it is a supported one.
pub fn format_by_extension(path: &Path) -> Option<ImageFormat> {
    let ext = path.extension()?.to_str()?.to_ascii_lowercase();
    EXTENSIONS
        .iter()
        .find(|(e, _)| *e == ext)
        .map(|&(_, format)| format)
}

/// Lists the frames named by `args`, in natural order.
///
/// - one folder: its supported files (hidden files and sub-folders skipped; any other
///   file is [`VideoError::Unsupported`]);
/// - one argument with `*`, `?` or `[` that is not an existing path: a glob pattern;
/// - otherwise: the files themselves, each of which must exist and be supported.
pub fn list_frames(args: &[PathBuf]) -> Result<Vec<PathBuf>, VideoError> {
    let mut frames = match args {
        [] => {
            return Err(VideoError::NoFrames {
                origin: "an empty argument list".into(),
            })
        }
        [one] if one.is_dir() => list_folder(one)?,
        [one] if !one.exists() && is_pattern(one) => list_glob(one)?,
        files => files
            .iter()
            .map(|f| check_file(f).map(|()| f.clone()))
            .collect::<Result<_, _>>()?,
    };
    if frames.is_empty() {
        let source = match args {
            [one] => one.display().to_string(),
            _ => format!("{} arguments", args.len()),
        };
        return Err(VideoError::NoFrames { origin: source });
    }
    frames.sort_by(|a, b| natural_cmp(&a.to_string_lossy(), &b.to_string_lossy()));
    Ok(frames)
}

fn is_pattern(path: &Path) -> bool {
    path.to_string_lossy().contains(['*', '?', '['])
}

fn check_file(path: &Path) -> Result<(), VideoError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => VideoError::NotFound(path.to_path_buf()),
        _ => VideoError::Unreadable {
            path: path.to_path_buf(),
            err: e,
        },
    })?;
    if !meta.is_file() || format_by_extension(path).is_none() {
        return Err(VideoError::Unsupported(path.to_path_buf()));
    }
    Ok(())
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn list_folder(dir: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let unreadable = |err| VideoError::Unreadable {
        path: dir.to_path_buf(),
        err,
    };
    let mut frames = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let path = entry.path();
        if is_hidden(&path) || path.is_dir() {
            continue;
        }
        if format_by_extension(&path).is_none() {
            return Err(VideoError::Unsupported(path));
        }
        frames.push(path);
    }
    Ok(frames)
}

fn list_glob(pattern: &Path) -> Result<Vec<PathBuf>, VideoError> {
    let text = pattern.to_string_lossy().into_owned();
    let paths = glob::glob(&text).map_err(|e| VideoError::BadPattern {
        pattern: text.clone(),
        reason: e.to_string(),
    })?;
    let mut frames = Vec::new();
    for entry in paths {
        let path = entry.map_err(|e| VideoError::Unreadable {
            path: e.path().to_path_buf(),
            err: std::io::Error::new(e.error().kind(), e.error().to_string()),
        })?;
        if path.is_dir() {
            continue;
        }
        if format_by_extension(&path).is_none() {
            return Err(VideoError::Unsupported(path));
        }
        frames.push(path);
    }
    Ok(frames)
}

/// Natural order of names: runs of digits compare by numeric value (`frame_2` <
/// `frame_10`), other characters case-insensitively; ties are broken by the number of
/// leading zeros, then by case, then bytewise, so the order is total and stable.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut x, mut y) = (a.as_bytes(), b.as_bytes());
    let mut tie = Ordering::Equal;
    loop {
        match (x.first(), y.first()) {
            (None, None) => break,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(cx), Some(cy)) if cx.is_ascii_digit() && cy.is_ascii_digit() => {
                let (nx, rx) = split_digits(x);
                let (ny, ry) = split_digits(y);
                let (zx, vx) = strip_zeros(nx);
                let (zy, vy) = strip_zeros(ny);
                let by_value = vx.len().cmp(&vy.len()).then_with(|| vx.cmp(vy));
                if by_value != Ordering::Equal {
                    return by_value;
                }
                if tie == Ordering::Equal {
                    tie = zx.cmp(&zy);
                }
                (x, y) = (rx, ry);
            }
            (Some(cx), Some(cy)) => {
                let ord = cx.to_ascii_lowercase().cmp(&cy.to_ascii_lowercase());
                if ord != Ordering::Equal {
                    return ord;
                }
                if tie == Ordering::Equal {
                    tie = cx.cmp(cy);
                }
                (x, y) = (&x[1..], &y[1..]);
            }
        }
    }
    tie.then_with(|| a.cmp(b))
}

fn split_digits(s: &[u8]) -> (&[u8], &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    s.split_at(n)
}

fn strip_zeros(digits: &[u8]) -> (usize, &[u8]) {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    (zeros, &digits[zeros..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn natural_order() {
        let mut names = vec![
            "frame_10.png",
            "frame_2.png",
            "frame_1.png",
            "Frame_3.png",
            "frame_002.png",
            "frame_20.png",
            "frame_100.png",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "frame_1.png",
                "frame_2.png",
                "frame_002.png",
                "Frame_3.png",
                "frame_10.png",
                "frame_20.png",
                "frame_100.png"
            ]
        );
        // Numbers far beyond u64 still compare by value.
        assert_eq!(
            natural_cmp("f99999999999999999999999", "f100000000000000000000000"),
            Ordering::Less
        );
    }

    proptest! {
        #[test]
        fn natural_cmp_is_a_total_order(a in "[a-bA-B0-2_]{0,6}", b in "[a-bA-B0-2_]{0,6}", c in "[a-bA-B0-2_]{0,6}") {
            prop_assert_eq!(natural_cmp(&a, &b), natural_cmp(&b, &a).reverse());
            prop_assert_eq!(natural_cmp(&a, &b) == Ordering::Equal, a == b);
            if natural_cmp(&a, &b) != Ordering::Greater && natural_cmp(&b, &c) != Ordering::Greater {
                prop_assert_ne!(natural_cmp(&a, &c), Ordering::Greater);
            }
        }
    }

    #[test]
    fn extensions() {
        assert_eq!(
            format_by_extension(Path::new("a/b.PNG")),
            Some(ImageFormat::Png)
        );
        assert_eq!(
            format_by_extension(Path::new("b.jpeg")),
            Some(ImageFormat::Jpeg)
        );
        assert_eq!(format_by_extension(Path::new("b.txt")), None);
        assert_eq!(format_by_extension(Path::new("png")), None);
    }
}
