//! RGB → YUV 4:2:0 (I420), 8-bit, integer only, so every machine produces the same
//! bytes.
//!
//! BT.601 limited range with libyuv's fixed-point coefficients (the "fast 8-bit path"):
//! luma per pixel, chroma from the average of each 2x2 block. H.264 4:2:0 needs even
//! sizes, so an odd width or height is padded by repeating the last column or row; the
//! encoded video is then one pixel wider or taller than the frames.

/// A picture in I420: full-size luma, half-size chroma planes, tightly packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I420 {
    /// Even width and height of the picture.
    pub width: u32,
    pub height: u32,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

#[inline]
fn luma(r: i32, g: i32, b: i32) -> u8 {
    // Never outside 16..=235 for 8-bit inputs.
    (((66 * r + 129 * g + 25 * b + 128) >> 8) + 16) as u8
}

/// Chroma from the sums of four pixels' components (so the 2x2 average keeps its
/// fraction until the final rounding).
#[inline]
fn chroma(r4: i32, g4: i32, b4: i32) -> (u8, u8) {
    let u = ((-38 * r4 - 74 * g4 + 112 * b4 + 512) >> 10) + 128;
    let v = ((112 * r4 - 94 * g4 - 18 * b4 + 512) >> 10) + 128;
    (u.clamp(0, 255) as u8, v.clamp(0, 255) as u8)
}

/// Converts tightly packed RGB8 of `width`x`height` to I420, padding odd sizes to even.
/// Returns `None` if `rgb` is not `width * height * 3` bytes or a size is zero.
pub fn rgb_to_i420(rgb: &[u8], width: u32, height: u32) -> Option<I420> {
    let (w, h) = (width as usize, height as usize);
    if w == 0 || h == 0 || rgb.len() != w.checked_mul(h)?.checked_mul(3)? {
        return None;
    }
    let (pw, ph) = (w.next_multiple_of(2), h.next_multiple_of(2));
    let (cw, ch) = (pw / 2, ph / 2);
    let mut y = vec![0u8; pw * ph];
    let mut u = vec![0u8; cw * ch];
    let mut v = vec![0u8; cw * ch];
    let row = |r: usize| &rgb[r.min(h - 1) * w * 3..][..w * 3];
    let px = |line: &[u8], x: usize| {
        let i = x.min(w - 1) * 3;
        (
            i32::from(line[i]),
            i32::from(line[i + 1]),
            i32::from(line[i + 2]),
        )
    };
    for cy in 0..ch {
        let (top, bottom) = (row(2 * cy), row(2 * cy + 1));
        let (y0, y1) = y[2 * cy * pw..(2 * cy + 2) * pw].split_at_mut(pw);
        for cx in 0..cw {
            let mut sum = (0, 0, 0);
            for (line, out) in [(top, &mut *y0), (bottom, &mut *y1)] {
                for dx in 0..2 {
                    let x = 2 * cx + dx;
                    let (r, g, b) = px(line, x);
                    out[x] = luma(r, g, b);
                    sum = (sum.0 + r, sum.1 + g, sum.2 + b);
                }
            }
            let (cu, cv) = chroma(sum.0, sum.1, sum.2);
            u[cy * cw + cx] = cu;
            v[cy * cw + cx] = cv;
        }
    }
    Some(I420 {
        width: pw as u32,
        height: ph as u32,
        y,
        u,
        v,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primaries_and_grey_map_to_bt601_limited() {
        let cases = [
            ([0, 0, 0], (16, 128, 128)),
            ([255, 255, 255], (235, 128, 128)),
            ([255, 0, 0], (82, 90, 240)),
            ([0, 255, 0], (144, 54, 34)),
            ([0, 0, 255], (41, 240, 110)),
        ];
        for (rgb, (ey, eu, ev)) in cases {
            let pic = rgb_to_i420(&rgb.repeat(4), 2, 2).unwrap();
            assert_eq!(pic.y, vec![ey; 4], "{rgb:?}");
            assert_eq!((pic.u[0], pic.v[0]), (eu, ev), "{rgb:?}");
        }
    }

    #[test]
    fn odd_sizes_are_padded_by_repeating_the_edge() {
        // 3x1: pixels black, black, white -> padded to 4x2, last column repeated.
        let rgb = [0, 0, 0, 0, 0, 0, 255, 255, 255];
        let pic = rgb_to_i420(&rgb, 3, 1).unwrap();
        assert_eq!((pic.width, pic.height), (4, 2));
        assert_eq!(pic.y, vec![16, 16, 235, 235, 16, 16, 235, 235]);
        assert_eq!((pic.u.len(), pic.v.len()), (2, 2));
        assert!(rgb_to_i420(&rgb, 2, 1).is_none());
        assert!(rgb_to_i420(&[], 0, 0).is_none());
    }
}
