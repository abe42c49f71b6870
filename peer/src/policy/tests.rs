//! Policy decisions with an injected clock and idle source; the gate's grace period
//! in tokio's paused time. Nothing here waits on real time.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use libp2p::PeerId;

use super::*;

/// The example of docs/lending.md: weeknights and weekends, only when idle for 10 minutes,
/// other programs under half the CPUs.
fn office_policy() -> Policy {
    let file = PolicyFile::parse(
        r#"
        [lend]
        windows = ["mon-fri 19:00-07:00", "sat-sun", "sun 19:00-07:00"]
        idle_minutes = 10
        when_unknown = "busy"
        max_other_load_percent = 50
        [caps]
        memory = "1GiB"
        "#,
    )
    .unwrap();
    file.policy().unwrap()
}

/// A clock and an idle source the test moves by hand.
#[derive(Clone)]
struct Fake(Arc<Mutex<(LocalTime, Idleness)>>);

impl Fake {
    fn new(weekday: u8, h: u16, m: u16, idleness: Idleness) -> Fake {
        Fake(Arc::new(Mutex::new((
            LocalTime {
                weekday,
                minute: h * 60 + m,
            },
            idleness,
        ))))
    }
    fn set(&self, weekday: u8, h: u16, m: u16, idleness: Idleness) {
        *self.0.lock().unwrap() = (
            LocalTime {
                weekday,
                minute: h * 60 + m,
            },
            idleness,
        );
    }
}

impl Clock for Fake {
    fn now(&self) -> LocalTime {
        self.0.lock().unwrap().0
    }
}

impl IdleSource for Fake {
    fn idleness(&self) -> Idleness {
        self.0.lock().unwrap().1.clone()
    }
}

fn idle(minutes: u64) -> Idleness {
    Idleness::IdleFor {
        idle: Duration::from_secs(minutes * 60),
        source: "test".into(),
    }
}

fn seen(fake: &Fake, load: Option<f64>, memory: Option<u64>) -> Observation {
    Observation {
        now: fake.now(),
        idleness: fake.idleness(),
        other_load: load,
        own_memory: memory,
    }
}

#[test]
fn weeknight_and_idle_lends() {
    let policy = office_policy();
    let fake = Fake::new(2, 22, 30, idle(30)); // Wednesday 22:30, idle 30 min
    let d = decide(&policy, &seen(&fake, Some(0.1), Some(100 << 20)));
    assert!(d.lend, "{d:?}");
    assert!(d.notes.iter().any(|n| n.contains("mon-fri 19:00-07:00")));
}

#[test]
fn working_hours_stop_even_when_idle() {
    let policy = office_policy();
    let fake = Fake::new(2, 10, 0, idle(120)); // Wednesday 10:00
    let d = decide(&policy, &seen(&fake, Some(0.0), None));
    assert!(!d.lend);
    assert!(d.summary().contains("outside the lending windows"), "{d:?}");
    // Monday 03:00 is Sunday night: covered by "sun 19:00-07:00".
    fake.set(0, 3, 0, idle(120));
    assert!(decide(&policy, &seen(&fake, None, None)).lend);
    // Saturday afternoon: weekend.
    fake.set(5, 15, 0, idle(120));
    assert!(decide(&policy, &seen(&fake, None, None)).lend);
}

#[test]
fn owner_at_the_keyboard_stops_lending() {
    let policy = office_policy();
    let fake = Fake::new(5, 15, 0, idle(3));
    let d = decide(&policy, &seen(&fake, None, None));
    assert!(!d.lend);
    assert!(d.summary().contains("active 3 min ago"), "{}", d.summary());
    fake.set(
        5,
        15,
        0,
        Idleness::Active {
            source: "systemd-logind".into(),
        },
    );
    let d = decide(&policy, &seen(&fake, None, None));
    assert!(d.summary().contains("using the machine"), "{}", d.summary());
    fake.set(5, 15, 0, Idleness::NoSession);
    assert!(decide(&policy, &seen(&fake, None, None)).lend);
}

#[test]
fn unknown_idleness_is_said_and_follows_the_assumption() {
    let mut policy = office_policy();
    let unknown = Idleness::Unknown {
        why: "no logind".into(),
    };
    let fake = Fake::new(5, 15, 0, unknown);
    let d = decide(&policy, &seen(&fake, None, None));
    assert!(!d.lend);
    assert!(d.summary().contains("cannot be determined"), "{d:?}");
    assert!(d.summary().contains("assumed in use"), "{d:?}");
    policy.when_unknown = WhenUnknown::Idle;
    let d = decide(&policy, &seen(&fake, None, None));
    assert!(d.lend);
    assert!(d.notes.iter().any(|n| n.contains("assumed idle")), "{d:?}");
}

#[test]
fn other_programs_load_and_our_memory_stop_lending() {
    let policy = office_policy();
    let fake = Fake::new(6, 12, 0, idle(60));
    let d = decide(&policy, &seen(&fake, Some(0.75), None));
    assert!(d.summary().contains("other programs use 75%"), "{d:?}");
    let d = decide(&policy, &seen(&fake, Some(0.2), Some(2 << 30)));
    assert!(d.summary().contains("idlegrid uses 2048 MiB"), "{d:?}");
    let d = decide(&policy, &seen(&fake, Some(0.75), Some(2 << 30)));
    assert_eq!(d.stop_reasons.len(), 2, "every reason is told: {d:?}");
}

#[test]
fn no_rules_lend_at_any_time() {
    let fake = Fake::new(1, 11, 0, Idleness::Active { source: "x".into() });
    let d = decide(&Policy::default(), &seen(&fake, Some(1.0), Some(u64::MAX)));
    assert!(d.lend, "{d:?}");
}

#[test]
fn sensors_use_the_injected_sources() {
    let fake = Fake::new(4, 20, 15, idle(42));
    let mut sensors = Sensors::new(Box::new(fake.clone()), Box::new(fake.clone()));
    let first = sensors.observe();
    assert_eq!(first.now, fake.now());
    assert_eq!(first.idleness, idle(42));
    assert!(decide(&office_policy(), &first).lend);
}

#[test]
fn access_lists() {
    let friend = PeerId::random();
    let stranger = PeerId::random();
    let foe = PeerId::random();
    let gate = Gate::new(Some(vec![friend, foe]), vec![foe], Duration::from_secs(1));
    assert!(gate.admit(friend).is_ok());
    assert!(gate.admit(stranger).unwrap_err().contains("--accept-from"));
    assert!(gate.admit(foe).unwrap_err().contains("denied"));
    let refused: Vec<PeerId> = gate.refusals().iter().map(|r| r.peer).collect();
    assert_eq!(refused, vec![stranger, foe]);
    assert!(Gate::open().admit(stranger).is_ok());
}

#[tokio::test(start_paused = true)]
async fn stop_refuses_at_once_and_evicts_after_the_grace_period() {
    let gate = Gate::new(None, Vec::new(), Duration::from_secs(60));
    let peer = PeerId::random();
    let ticket = gate.admit(peer).expect("lending");
    assert_eq!(gate.working(), 1);
    let stop = Decision {
        lend: false,
        stop_reasons: vec!["the owner is back".into()],
        notes: Vec::new(),
    };
    gate.set(stop.clone());
    assert!(gate.busy());
    assert!(gate.admit(peer).unwrap_err().contains("the owner is back"));
    gate.stopped().await;
    let started = tokio::time::Instant::now();
    // A second "stop" does not restart the grace period.
    tokio::time::sleep(Duration::from_secs(30)).await;
    gate.set(stop);
    gate.evicted().await;
    assert_eq!(started.elapsed(), Duration::from_secs(60));
    drop(ticket);
    assert_eq!(gate.drained(Duration::from_secs(1)).await, 0);
    // Lending again clears the eviction.
    gate.set(Decision::always());
    assert!(gate.admit(peer).is_ok());
}

#[tokio::test(start_paused = true)]
async fn shutdown_is_final() {
    let gate = Gate::new(None, Vec::new(), Duration::from_secs(5));
    let _ticket = gate.admit(PeerId::random()).unwrap();
    gate.shutdown();
    gate.set(Decision::always());
    assert!(gate.busy(), "a policy check must not reopen a shut gate");
    gate.evicted().await;
    assert_eq!(gate.drained(Duration::from_secs(1)).await, 1);
}
