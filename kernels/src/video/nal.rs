//! H.264 Annex B byte streams: splitting into NAL units, grouping them into pictures,
//! and the checks the submitter makes on every segment before joining it.
//!
//! Only what joining needs is parsed: the NAL header and, for slices, whether
//! `first_mb_in_slice` is 0 (the start of a picture; its ue(v) code is then the single
//! bit `1`). A segment comes from a peer, so everything here is bounds-checked and
//! returns an error instead of panicking.

/// NAL unit types used here (H.264 table 7-1).
pub const NAL_SLICE: u8 = 1;
pub const NAL_IDR: u8 = 5;
pub const NAL_SEI: u8 = 6;
pub const NAL_SPS: u8 = 7;
pub const NAL_PPS: u8 = 8;
pub const NAL_AUD: u8 = 9;
pub const NAL_FILLER: u8 = 12;

/// One NAL unit: header byte and payload, without start code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nal<'a> {
    pub bytes: &'a [u8],
}

impl<'a> Nal<'a> {
    /// `nal_unit_type`.
    pub fn kind(&self) -> u8 {
        self.bytes.first().map_or(0, |h| h & 0x1f)
    }

    /// Whether this is a slice of a coded picture.
    pub fn is_vcl(&self) -> bool {
        matches!(self.kind(), NAL_SLICE | NAL_IDR)
    }

    /// Whether this slice is the first of its picture (`first_mb_in_slice == 0`).
    pub fn starts_picture(&self) -> bool {
        self.is_vcl() && self.bytes.get(1).is_some_and(|b| b & 0x80 != 0)
    }
}

/// Iterates over the NAL units of an Annex B stream. Bytes before the first start code
/// and trailing zero bytes of each unit are dropped.
pub fn split(stream: &[u8]) -> impl Iterator<Item = Nal<'_>> {
    let mut pos = find_start(stream, 0).map(|(_, after)| after);
    std::iter::from_fn(move || {
        let start = pos?;
        let (end, next) = match find_start(stream, start) {
            Some((at, after)) => (at, Some(after)),
            None => (stream.len(), None),
        };
        pos = next;
        let mut bytes = &stream[start..end];
        while let [rest @ .., 0] = bytes {
            bytes = rest;
        }
        Some(Nal { bytes })
    })
}

/// Finds the next `00 00 01` at or after `from`: (its position, the position after it).
fn find_start(stream: &[u8], from: usize) -> Option<(usize, usize)> {
    let tail = stream.get(from..)?;
    tail.windows(3)
        .position(|w| w == [0, 0, 1])
        .map(|i| (from + i, from + i + 3))
}

/// Groups NAL units into pictures (access units): a picture begins at a slice with
/// `first_mb_in_slice == 0`, together with the non-slice units just before it.
pub fn pictures<'a>(nals: impl Iterator<Item = Nal<'a>>) -> Vec<Vec<Nal<'a>>> {
    let mut out: Vec<Vec<Nal<'a>>> = Vec::new();
    let mut pending: Vec<Nal<'a>> = Vec::new();
    let mut current: Option<Vec<Nal<'a>>> = None;
    for nal in nals {
        if nal.starts_picture() {
            if let Some(done) = current.take() {
                out.push(done);
            }
            let mut pic = std::mem::take(&mut pending);
            pic.push(nal);
            current = Some(pic);
        } else if nal.is_vcl() {
            match current.as_mut() {
                Some(pic) => {
                    pic.append(&mut pending);
                    pic.push(nal);
                }
                None => pending.push(nal),
            }
        } else {
            pending.push(nal);
        }
    }
    if let Some(mut done) = current {
        done.append(&mut pending);
        out.push(done);
    }
    out
}

/// What a checked segment contains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SegmentInfo {
    /// The segment's sequence and picture parameter sets (NAL units without start code).
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    /// Number of pictures.
    pub frames: u32,
}

/// Checks that `segment` is a closed-GOP segment as our workers make them: it starts
/// with SPS, PPS and an IDR slice; only the first picture is an IDR; no other parameter
/// sets follow; only known NAL types appear.
pub fn check_segment(segment: &[u8]) -> Result<SegmentInfo, String> {
    if !segment.starts_with(&[0, 0, 0, 1]) && !segment.starts_with(&[0, 0, 1]) {
        return Err("does not start with an Annex B start code".into());
    }
    let mut nals = split(segment);
    let sps = nals.next().filter(|n| n.kind() == NAL_SPS);
    let pps = nals.next().filter(|n| n.kind() == NAL_PPS);
    let idr = nals
        .next()
        .filter(|n| n.kind() == NAL_IDR && n.starts_picture());
    let (Some(sps), Some(pps), Some(_)) = (sps, pps, idr) else {
        return Err("does not start with SPS, PPS and an IDR picture".into());
    };
    if sps.bytes.len() < 4 {
        return Err("SPS is truncated".into());
    }
    if pps.bytes.len() < 2 {
        return Err("PPS is truncated".into());
    }
    let mut frames: u32 = 1;
    let mut in_idr = true;
    for nal in nals {
        if nal.bytes.first().is_some_and(|h| h & 0x80 != 0) {
            return Err("NAL unit with forbidden_zero_bit set".into());
        }
        match nal.kind() {
            NAL_IDR if in_idr && !nal.starts_picture() => {}
            NAL_IDR => {
                return Err(format!(
                    "IDR picture at picture {frames}: only the first may be one"
                ))
            }
            NAL_SLICE => {
                if nal.starts_picture() {
                    frames = frames
                        .checked_add(1)
                        .ok_or_else(|| "too many pictures".to_string())?;
                }
                in_idr = false;
            }
            NAL_SEI | NAL_AUD | NAL_FILLER => {}
            NAL_SPS | NAL_PPS => return Err("parameter sets repeated inside the segment".into()),
            other => return Err(format!("unexpected NAL unit type {other}")),
        }
    }
    Ok(SegmentInfo {
        sps: sps.bytes.to_vec(),
        pps: pps.bytes.to_vec(),
        frames,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(nals: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for nal in nals {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
        out
    }

    const SPS: &[u8] = &[0x67, 0x64, 0x00, 0x1f, 0xac];
    const PPS: &[u8] = &[0x68, 0xee, 0x3c, 0x80];
    const IDR: &[u8] = &[0x65, 0x88, 0x84];
    const P: &[u8] = &[0x41, 0x9a, 0x02];
    const P_SECOND_SLICE: &[u8] = &[0x41, 0x40, 0x02];

    #[test]
    fn splits_three_and_four_byte_start_codes() {
        let mut s = vec![0, 0, 1];
        s.extend_from_slice(SPS);
        s.extend_from_slice(&[0, 0, 0, 1]);
        s.extend_from_slice(PPS);
        s.extend_from_slice(&[0, 0]); // trailing zeros belong to no unit
        let nals: Vec<_> = split(&s).map(|n| n.bytes).collect();
        assert_eq!(nals, [SPS, PPS]);
        assert_eq!(split(&[1, 2, 3]).count(), 0);
    }

    #[test]
    fn a_good_segment_passes_and_counts_pictures() {
        let s = stream(&[SPS, PPS, IDR, P, P_SECOND_SLICE, P]);
        let info = check_segment(&s).unwrap();
        assert_eq!(info.frames, 3);
        assert_eq!(info.sps, SPS);
        assert_eq!(info.pps, PPS);
        let pics = pictures(split(&s));
        assert_eq!(pics.len(), 3);
        assert_eq!(pics[0].len(), 3, "SPS and PPS belong to the first picture");
        assert_eq!(pics[1].len(), 2);
    }

    #[test]
    fn bad_segments_are_refused() {
        for bad in [
            stream(&[PPS, SPS, IDR]),
            stream(&[SPS, PPS, P]),
            stream(&[SPS, PPS, IDR, P, IDR]),
            stream(&[SPS, PPS, IDR, SPS]),
            stream(&[SPS, PPS, IDR, &[0x6e, 1]]),
            stream(&[&SPS[..2], PPS, IDR]),
            vec![],
            vec![0x67, 0, 0, 1],
        ] {
            assert!(check_segment(&bad).is_err(), "{bad:?} accepted");
        }
    }
}
