//! Ping results fed to the scheduler: an unanswered ping opens the peer's breaker at
//! once and sends its chunks elsewhere; round trip times raise its deadline floor.

use super::*;

fn deadlines(actions: &[Action<u32>], who: u32) -> Vec<Duration> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Assign { peer, deadline, .. } if *peer == who => Some(*deadline),
            _ => None,
        })
        .collect()
}

#[test]
fn an_unanswered_ping_opens_the_breaker_at_once_and_its_chunks_go_elsewhere() {
    let config = SchedulerConfig {
        breaker_cooldown: secs(10),
        ..SchedulerConfig::default()
    };
    let mut h = Harness::pool(config, vec![10; 6]);
    let a = h.join(1, 10.0);
    assert_eq!(assigned(&a, 1), vec![0, 1]);
    let b = h.join(2, 10.0);
    // From the middle of the free run 2..=5 (peer 1 goes on into 2).
    assert_eq!(assigned(&b, 2), vec![4, 5]);
    h.now = secs(1);

    // One unanswered ping is enough: no waiting for three failures or a deadline.
    let out = h.ev(Event::PeerUnresponsive { peer: 1 });
    let stats = h.s.peer_stats(&1).expect("known");
    assert_eq!(stats.breaker, BreakerState::Open { until: secs(11) });
    assert_eq!((stats.failures, stats.in_flight), (1, 0));
    assert!(
        stats.connected,
        "unresponsive is not gone: it may come back"
    );
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 0 }));
    assert!(out.contains(&Action::Cancel { peer: 1, chunk: 1 }));
    assert!(assigned(&out, 1).is_empty());
    assert_eq!(h.s.progress().requeued, 2);

    // More failed pings while open change nothing.
    let again = h.ev(Event::PeerUnresponsive { peer: 1 });
    assert!(again.is_empty(), "{again:?}");
    assert_eq!(h.s.peer_stats(&1).map(|s| s.failures), Some(1));

    // Its chunks go to the peer that answers.
    let out = h.done(2, 4, good(4));
    assert!(assigned(&out, 2).contains(&0), "{out:?}");

    // After the cool-down one probe chunk decides, as for any open breaker.
    let out = h.tick_at(secs(11));
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::HalfOpen)
    );
    let probe = assigned(&out, 1);
    assert_eq!(probe.len(), 1, "{out:?}");
    h.now = secs(12);
    h.done(1, probe[0], good(probe[0]));
    assert_eq!(
        h.s.peer_stats(&1).map(|s| s.breaker),
        Some(BreakerState::Closed {
            consecutive_failures: 0
        })
    );
    h.run(&[]);
    assert_eq!(h.s.outcome(), Some(Outcome::Complete));
}

#[test]
fn the_trusted_worker_and_unknown_peers_ignore_pings() {
    let mut h = Harness::pool(SchedulerConfig::default(), vec![10; 4]);
    h.join_trusted(0, 10.0);
    let out = h.ev(Event::PeerUnresponsive { peer: 0 });
    assert!(out.is_empty(), "{out:?}");
    let stats = h.s.peer_stats(&0).expect("known");
    assert_eq!((stats.failures, stats.breaker.label()), (0, "closed"));
    assert!(h.ev(Event::PeerUnresponsive { peer: 9 }).is_empty());
    assert!(h
        .ev(Event::PeerRtt {
            peer: 9,
            rtt: secs(1)
        })
        .is_empty());
    assert!(h.s.peer_stats(&9).is_none());
}

#[test]
fn a_far_peer_gets_a_deadline_floor_of_its_round_trips() {
    let config = SchedulerConfig {
        deadline_floor: secs(10),
        rtt_round_trips: 20,
        max_in_flight: 2,
        ..SchedulerConfig::default()
    };
    let mut h = Harness::pool(config, vec![10; 20]);
    // Fast peers: the expected time is milliseconds, so the floor decides.
    let near = h.join(1, 1000.0);
    assert_eq!(deadlines(&near, 1), vec![secs(10), secs(10)]);
    let far = h.join(2, 1000.0);
    assert_eq!(
        deadlines(&far, 2),
        vec![secs(10), secs(10)],
        "RTT not known yet"
    );
    h.ev(Event::PeerRtt {
        peer: 1,
        rtt: Duration::from_millis(2),
    });
    h.ev(Event::PeerRtt {
        peer: 2,
        rtt: Duration::from_millis(1500),
    });

    // From now on: 20 round trips of 1.5 s = 30 s for the far one; the floor for the
    // near one (20 × 2 ms is less).
    h.now = secs(1);
    let chunk = assigned(&far, 2)[0];
    let out = h.done(2, chunk, good(chunk));
    assert_eq!(deadlines(&out, 2), vec![secs(31)]);
    let chunk = assigned(&near, 1)[0];
    let out = h.done(1, chunk, good(chunk));
    assert_eq!(deadlines(&out, 1), vec![secs(11)]);

    // Within the ceiling, whatever the RTT.
    h.ev(Event::PeerRtt {
        peer: 2,
        rtt: secs(3600),
    });
    h.now = secs(2);
    let chunk = assigned(&far, 2)[1];
    let out = h.done(2, chunk, good(chunk));
    assert_eq!(deadlines(&out, 2), vec![secs(2) + secs(30 * 60)]);
}
