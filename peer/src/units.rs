//! Quantities as people write them on a command line or in the owner's config file:
//! durations (`30s`, `2m`, `500ms`) and byte sizes (`512MiB`, `2G`). Text in, a
//! `Duration` or a byte count out; the error is a sentence for the person who typed it,
//! which clap and the config reader wrap with the flag or field it came from.

use std::time::Duration;

/// Parses `30s`, `2m`, `1h`, `500ms` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (write e.g. 30s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
            ))
        }
    };
    if !(seconds.is_finite() && seconds >= 0.0) {
        return Err(format!("{text:?} is not a duration"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is too long a duration"))
}

/// Parses `512MiB`, `2GiB`, `4G`, `100k` or a bare number of bytes (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a size (write e.g. 512MiB or 2GiB)"))?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit {other:?} in {text:?}")),
    };
    if !(value.is_finite() && value >= 0.0) {
        return Err(format!("{text:?} is not a size"));
    }
    let bytes = value * scale as f64;
    // u64::MAX as f64 rounds up to 2^64, which no u64 holds.
    if bytes >= u64::MAX as f64 {
        return Err(format!("{text:?} is too large a size"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 parsecs").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("100000000000000000000TiB").is_err());
    }

    #[test]
    fn huge_durations_are_refused() {
        assert!(parse_duration("100000000000000000000").is_err());
        assert!(parse_duration("1e300h").is_err());
    }

    proptest::proptest! {
        /// Whatever a person types, an answer or an error, never a panic.
        #[test]
        fn any_text_parses_or_is_refused(text in "\\PC{0,24}") {
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
        }

        #[test]
        fn any_number_and_unit_parses_or_is_refused(
            number in proptest::num::f64::ANY,
            unit in proptest::sample::select(vec!["", "ms", "s", "m", "h", "k", "MiB", "G", "TiB"]),
        ) {
            let text = format!("{number}{unit}");
            let _ = parse_duration(&text);
            let _ = parse_size(&text);
        }
    }
}
