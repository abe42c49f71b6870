//! What the policy observes of the machine: local time, whether the owner is at it,
//! how busy the CPU is with other programs, and this process's memory.
//!
//! Each source is a trait so that tests inject fakes and never wait on real time. The
//! system implementations read Linux's own accounts: systemd-logind's `IdleHint` and
//! `IdleSinceHint` of every session (through `loginctl`), the access times of
//! `/dev/input/event*` as a fallback, `/proc/stat` minus `/proc/self/stat` for the
//! load, `/proc/self/statm` for memory. The parsers are pure functions on text.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::windows::LocalTime;

/// Local wall-clock time.
pub trait Clock: Send {
    fn now(&self) -> LocalTime;
}

/// What is known about the owner's presence.
#[derive(Clone, Debug, PartialEq)]
pub enum Idleness {
    /// No input for this long, as told by `source`.
    IdleFor { idle: Duration, source: String },
    /// Someone is using the machine (input within the last moments, or logind says so).
    Active { source: String },
    /// Nobody is logged in to a session with a seat or terminal.
    NoSession,
    /// Cannot be told here; `why` says what was tried.
    Unknown { why: String },
}

/// Tells whether the owner is at the machine.
pub trait IdleSource: Send {
    fn idleness(&self) -> Idleness;
}

/// The real local clock (libc `localtime_r`, so the system's time zone applies).
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> LocalTime {
        let secs = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()) as libc::time_t;
        // SAFETY: localtime_r writes only into the zeroed `tm` we own.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
        if !ok {
            // UTC arithmetic as a last resort: 1970-01-01 was a Thursday.
            let days = secs.max(0) as u64 / 86_400;
            return LocalTime {
                weekday: ((days + 3) % 7) as u8,
                minute: ((secs.max(0) as u64 % 86_400) / 60) as u16,
            };
        }
        LocalTime {
            // tm_wday: 0 = Sunday.
            weekday: ((tm.tm_wday + 6) % 7) as u8,
            minute: (tm.tm_hour * 60 + tm.tm_min) as u16,
        }
    }
}

/// logind first, `/dev/input` access times second.
pub struct SystemIdle;

impl IdleSource for SystemIdle {
    fn idleness(&self) -> Idleness {
        let now_usec = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let logind = logind_idleness(now_usec);
        if !matches!(logind, Idleness::Unknown { .. }) {
            return logind;
        }
        match input_idleness(Path::new("/dev/input"), SystemTime::now()) {
            Idleness::Unknown { why } => Idleness::Unknown {
                why: format!(
                    "{}; {why}",
                    match logind {
                        Idleness::Unknown { why } => why,
                        _ => String::new(),
                    }
                ),
            },
            known => known,
        }
    }
}

fn run(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Asks logind about every session that has a seat or a terminal (a person's).
fn logind_idleness(now_usec: u64) -> Idleness {
    let Some(list) = run("loginctl", &["list-sessions", "--no-legend"]) else {
        return Idleness::Unknown {
            why: "systemd-logind is not available (loginctl failed)".into(),
        };
    };
    let mut sessions = Vec::new();
    for id in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(props) = run(
            "loginctl",
            &[
                "show-session",
                id,
                "-p",
                "IdleHint",
                "-p",
                "IdleSinceHint",
                "-p",
                "Class",
                "-p",
                "Active",
            ],
        ) else {
            continue;
        };
        sessions.push(parse_session(&props));
    }
    combine_sessions(&sessions, now_usec)
}

/// One session as `loginctl show-session -p …` prints it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Session {
    pub class: String,
    pub idle_hint: bool,
    /// Microseconds since the epoch; 0 when logind does not track it.
    pub idle_since_usec: u64,
}

/// Parses `Key=Value` lines of `loginctl show-session`.
pub fn parse_session(text: &str) -> Session {
    let mut session = Session::default();
    for line in text.lines() {
        match line.split_once('=') {
            Some(("IdleHint", v)) => session.idle_hint = v.trim() == "yes",
            Some(("IdleSinceHint", v)) => session.idle_since_usec = v.trim().parse().unwrap_or(0),
            Some(("Class", v)) => session.class = v.trim().to_string(),
            _ => {}
        }
    }
    session
}

/// The machine is idle when every user session is; idle for as long as the most
/// recently active one. Sessions whose idleness logind does not track (no hint time)
/// make the answer unknown rather than "idle".
pub fn combine_sessions(sessions: &[Session], now_usec: u64) -> Idleness {
    let users: Vec<&Session> = sessions.iter().filter(|s| s.class == "user").collect();
    if users.is_empty() {
        return Idleness::NoSession;
    }
    let mut idle_for = Duration::MAX;
    for s in users {
        if !s.idle_hint {
            return Idleness::Active {
                source: "systemd-logind".into(),
            };
        }
        if s.idle_since_usec == 0 {
            return Idleness::Unknown {
                why: "systemd-logind does not say since when the session is idle".into(),
            };
        }
        idle_for = idle_for.min(Duration::from_micros(
            now_usec.saturating_sub(s.idle_since_usec),
        ));
    }
    Idleness::IdleFor {
        idle: idle_for,
        source: "systemd-logind".into(),
    }
}

/// Input devices are read by the display server or console on every key press and
/// mouse move, which updates their access time: the newest one is the last input.
pub fn input_idleness(dir: &Path, now: SystemTime) -> Idleness {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Idleness::Unknown {
            why: format!("{} is not readable", dir.display()),
        };
    };
    let newest = entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter_map(|e| e.metadata().ok())
        .filter_map(|m| m.accessed().ok().into_iter().chain(m.modified().ok()).max())
        .max();
    match newest {
        None => Idleness::Unknown {
            why: format!("no input devices in {}", dir.display()),
        },
        Some(last) => Idleness::IdleFor {
            idle: now.duration_since(last).unwrap_or(Duration::ZERO),
            source: format!("access times of {}/event*", dir.display()),
        },
    }
}

/// CPU time counters in clock ticks: the whole machine's, and this process's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuSample {
    pub total: u64,
    pub busy: u64,
    pub own: u64,
}

/// Parses the first (`cpu `) line of `/proc/stat`: (total, busy) ticks. Busy is all but
/// idle and iowait.
pub fn parse_proc_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if fields.len() < 4 {
        return None;
    }
    // user nice system idle iowait irq softirq steal guest guest_nice; guest time is
    // already counted in user and nice.
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some((total, total.saturating_sub(idle)))
}

/// utime + stime (ticks) from `/proc/<pid>/stat`; the command name may hold spaces, so
/// fields are counted after its closing parenthesis.
pub fn parse_self_stat(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": state is field 3 of the full line, utime 14 and stime 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Reads a sample of the CPU counters now.
pub fn cpu_sample() -> Option<CpuSample> {
    let (total, busy) = parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)?;
    let own = parse_self_stat(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(CpuSample { total, busy, own })
}

/// Fraction (0..1) of the machine's CPU time that programs other than this one used
/// between two samples.
pub fn other_load(before: CpuSample, after: CpuSample) -> Option<f64> {
    let total = after.total.checked_sub(before.total)?;
    if total == 0 {
        return None;
    }
    let busy = after.busy.saturating_sub(before.busy);
    let own = after.own.saturating_sub(before.own);
    Some((busy.saturating_sub(own) as f64 / total as f64).clamp(0.0, 1.0))
}

/// This process's resident memory in bytes (`/proc/self/statm`).
pub fn own_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok().filter(|p| *p > 0).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logind_sessions() {
        let active = parse_session("IdleHint=no\nIdleSinceHint=0\nClass=user\nActive=yes\n");
        let idle = parse_session("IdleHint=yes\nIdleSinceHint=1000000000\nClass=user\n");
        let greeter = parse_session("IdleHint=no\nClass=greeter\n");
        let now = 1_600_000_000;
        assert!(matches!(
            combine_sessions(&[idle.clone(), active], now),
            Idleness::Active { .. }
        ));
        assert_eq!(
            combine_sessions(&[idle, greeter.clone()], now),
            Idleness::IdleFor {
                idle: Duration::from_secs(600),
                source: "systemd-logind".into()
            }
        );
        assert_eq!(combine_sessions(&[greeter], now), Idleness::NoSession);
        let untracked = parse_session("IdleHint=yes\nIdleSinceHint=0\nClass=user\n");
        assert!(matches!(
            combine_sessions(&[untracked], now),
            Idleness::Unknown { .. }
        ));
    }

    #[test]
    fn cpu_counters() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 1 2 3 4\n";
        assert_eq!(parse_proc_stat(stat), Some((1000, 150)));
        let me = "1234 (idle grid) S 1 2 3 4 5 6 7 8 9 10 40 20 0 0 20 0";
        assert_eq!(parse_self_stat(me), Some(60));
        let before = CpuSample {
            total: 1000,
            busy: 150,
            own: 60,
        };
        let after = CpuSample {
            total: 2000,
            busy: 850,
            own: 460,
        };
        // 700 busy ticks of 1000, 400 of them ours: others used 30 %.
        let load = other_load(before, after).unwrap();
        assert!((load - 0.3).abs() < 1e-9, "{load}");
        assert_eq!(other_load(after, after), None);
    }

    #[test]
    fn input_devices_missing_is_unknown() {
        let dir = std::env::temp_dir().join(format!("idlegrid-noinput-{}", std::process::id()));
        assert!(matches!(
            input_idleness(&dir, SystemTime::now()),
            Idleness::Unknown { .. }
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("event0"), b"").unwrap();
        let later = SystemTime::now() + Duration::from_secs(3600);
        match input_idleness(&dir, later) {
            Idleness::IdleFor { idle, .. } => assert!(idle >= Duration::from_secs(3500)),
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
