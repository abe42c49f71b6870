//! Time windows per weekday: when the owner lends the machine.
//!
//! A window is written `DAYS [HH:MM-HH:MM]`, e.g. `mon-fri 19:00-07:00`, `sat-sun`,
//! `daily 22:00-06:00`, `tue,thu 12:00-13:00`. DAYS is a day (`mon` … `sun`), a range
//! (`mon-fri`, `fri-mon` wraps), a list of those joined by commas, `daily` or
//! `weekend`/`weekdays`. Without a time the window is the whole day. A window belongs
//! to the day it starts on: `mon-fri 19:00-07:00` runs from Friday 19:00 to Saturday
//! 07:00 as its last night, and does not cover Monday 00:00–07:00 (that night starts on
//! Sunday: add `sun 19:00-07:00` for it). `24:00` is allowed as an end.

use std::fmt;

/// A moment in local wall-clock time, as the windows see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// Minutes since local midnight, 0..1440.
    pub minute: u16,
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:02}:{:02}",
            DAY_NAMES[usize::from(self.weekday % 7)],
            self.minute / 60,
            self.minute % 60
        )
    }
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY: u16 = 24 * 60;

/// One lending window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Bit d set: the window starts on weekday d (0 = Monday).
    days: u8,
    /// Start, minutes after midnight.
    start: u16,
    /// End, minutes after midnight, 1..=1440; `end <= start` crosses midnight.
    end: u16,
    /// As written, for messages.
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad time window {text:?}: {why} (write e.g. \"mon-fri 19:00-07:00\" or \"sat-sun\")")]
pub struct WindowError {
    text: String,
    why: String,
}

fn day_index(name: &str) -> Option<u8> {
    let name = name.to_ascii_lowercase();
    // The first three characters name the day; `get` is None when they are not three
    // whole characters of ASCII (a day name is ASCII), never a slice through a char.
    let prefix = name.get(..3)?;
    DAY_NAMES
        .iter()
        .position(|d| d.starts_with(prefix))
        .map(|i| i as u8)
}

fn parse_days(text: &str) -> Result<u8, String> {
    let mut days = 0u8;
    for part in text.split(',').map(str::trim) {
        days |= match part.to_ascii_lowercase().as_str() {
            "daily" | "every" | "all" => 0x7f,
            "weekdays" => 0x1f,
            "weekend" => 0x60,
            _ => match part.split_once('-') {
                Some((from, to)) => {
                    let from = day_index(from).ok_or(format!("unknown day {from:?}"))?;
                    let to = day_index(to).ok_or(format!("unknown day {to:?}"))?;
                    let mut mask = 0u8;
                    let mut d = from;
                    loop {
                        mask |= 1 << d;
                        if d == to {
                            break;
                        }
                        d = (d + 1) % 7;
                    }
                    mask
                }
                None => 1 << day_index(part).ok_or(format!("unknown day {part:?}"))?,
            },
        };
    }
    Ok(days)
}

fn parse_clock(text: &str) -> Result<u16, String> {
    let (h, m) = text
        .split_once(':')
        .ok_or(format!("{text:?} is not HH:MM"))?;
    let h: u16 = h
        .trim()
        .parse()
        .map_err(|_| format!("bad hour in {text:?}"))?;
    let m: u16 = m
        .trim()
        .parse()
        .map_err(|_| format!("bad minute in {text:?}"))?;
    if m >= 60 || h > 24 || (h == 24 && m != 0) {
        return Err(format!("{text:?} is not a time of day"));
    }
    Ok(h * 60 + m)
}

impl std::str::FromStr for Window {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Window, WindowError> {
        let fail = |why: String| WindowError {
            text: text.to_string(),
            why,
        };
        let mut words = text.split_whitespace();
        let days = words.next().ok_or_else(|| fail("empty".into()))?;
        let days = parse_days(days).map_err(fail)?;
        let (start, end) = match words.next() {
            None => (0, DAY),
            Some(span) => {
                let (a, b) = span
                    .split_once('-')
                    .ok_or_else(|| fail(format!("{span:?} is not HH:MM-HH:MM")))?;
                (parse_clock(a).map_err(fail)?, parse_clock(b).map_err(fail)?)
            }
        };
        if words.next().is_some() {
            return Err(fail("too many words".into()));
        }
        if start == DAY {
            return Err(fail("a window cannot start at 24:00".into()));
        }
        let end = if end == 0 { DAY } else { end };
        Ok(Window {
            days,
            start,
            end,
            text: text.to_string(),
        })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    fn starts_on(&self, weekday: u8) -> bool {
        self.days & (1 << (weekday % 7)) != 0
    }

    /// Whether `now` falls in this window (a window crossing midnight covers the early
    /// hours of the day after each of its days).
    pub fn contains(&self, now: LocalTime) -> bool {
        let m = now.minute;
        if self.start < self.end {
            self.starts_on(now.weekday) && m >= self.start && m < self.end
        } else {
            // Crosses midnight (or is 24 h long starting mid-day).
            let yesterday = (now.weekday + 6) % 7;
            (self.starts_on(now.weekday) && m >= self.start)
                || (self.starts_on(yesterday) && m < self.end)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(weekday: u8, h: u16, m: u16) -> LocalTime {
        LocalTime {
            weekday,
            minute: h * 60 + m,
        }
    }

    #[test]
    fn weeknights_cross_midnight() {
        let w: Window = "mon-fri 19:00-07:00".parse().unwrap();
        assert!(!w.contains(at(0, 18, 59)));
        assert!(w.contains(at(0, 19, 0)));
        assert!(w.contains(at(1, 6, 59)), "Monday night into Tuesday");
        assert!(!w.contains(at(1, 7, 0)));
        assert!(w.contains(at(5, 3, 0)), "Friday night into Saturday");
        assert!(!w.contains(at(0, 3, 0)), "Sunday night is not a weeknight");
        assert!(!w.contains(at(2, 12, 0)));
    }

    #[test]
    fn whole_days_and_lists() {
        let weekend: Window = "sat-sun".parse().unwrap();
        assert!(weekend.contains(at(5, 0, 0)));
        assert!(weekend.contains(at(6, 23, 59)));
        assert!(!weekend.contains(at(0, 0, 0)));
        let wrap: Window = "fri-mon 09:00-10:00".parse().unwrap();
        assert!(wrap.contains(at(6, 9, 30)) && wrap.contains(at(0, 9, 30)));
        assert!(!wrap.contains(at(1, 9, 30)));
        let list: Window = "tue,thu 12:00-24:00".parse().unwrap();
        assert!(list.contains(at(3, 23, 59)) && !list.contains(at(4, 0, 0)));
        let daily: Window = "daily 22:00-06:00".parse().unwrap();
        assert!(daily.contains(at(6, 23, 0)) && daily.contains(at(0, 5, 0)));
    }

    #[test]
    fn bad_windows_are_named() {
        for bad in [
            "",
            "someday",
            "mon 7-9",
            "mon 25:00-26:00",
            "mon 09:60-10:00",
            "mon 1:00-2:00 x",
            "éé-fri",
            "mon-éé 19:00-07:00",
            "m\u{301}on-fri",
        ] {
            let err = bad.parse::<Window>().unwrap_err();
            assert!(err.to_string().contains("bad time window"), "{err}");
        }
    }

    proptest::proptest! {
        /// Whatever an owner writes, a window or an error naming it, never a panic.
        #[test]
        fn any_text_is_a_window_or_an_error(text in "\\PC{0,30}") {
            let _ = text.parse::<Window>();
        }

        #[test]
        fn any_day_range_and_hours_parse_or_are_refused(
            from in "[a-zéü]{0,5}",
            to in "[a-zéü]{0,5}",
            h1 in 0u32..30, m1 in 0u32..70, h2 in 0u32..30, m2 in 0u32..70,
        ) {
            let _ = format!("{from}-{to} {h1}:{m1:02}-{h2}:{m2:02}").parse::<Window>();
        }
    }
}
