//! Bootstrap peer lists: where they come from, how they merge, how they are tried.
//!
//! A peer beyond the LAN joins the DHT through a bootstrap peer. The list comes from
//! three places, merged in this order with duplicates dropped: `--bootstrap` flags,
//! the `IDLEGRID_BOOTSTRAP` variable (comma- or space-separated), the config file's
//! `network.bootstrap`. The entries are tried one after the other — the
//! image-difference grid kept its server list on one host with a second as fallback —
//! until one answers; when none does, the error names each one and why it failed.
//! Trying is generic over the attempt, so this crate needs no network of its own.

use std::future::Future;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// The environment variable holding extra bootstrap peers.
pub const BOOTSTRAP_ENV: &str = "IDLEGRID_BOOTSTRAP";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BootstrapError {
    #[error("bootstrap peer {text:?} from {origin}: {reason}")]
    BadAddr {
        origin: String,
        text: String,
        reason: String,
    },
    #[error("bootstrap peer {addr} from {origin} does not end in /p2p/<PeerId>")]
    NoPeerId { origin: String, addr: Multiaddr },
    #[error("no bootstrap peer answered ({}); this peer finds others only on the LAN (mDNS) and through --peer", describe(.tried))]
    NoneAnswered { tried: Vec<(Multiaddr, String)> },
    #[error("no bootstrap peers given")]
    Empty,
}

fn describe(tried: &[(Multiaddr, String)]) -> String {
    tried
        .iter()
        .map(|(addr, why)| format!("{addr}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The PeerId at the end of a bootstrap address.
pub fn peer_id(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter().find_map(|p| match p {
        Protocol::P2p(peer) => Some(peer),
        _ => None,
    })
}

/// Checks that an address names its peer (the DHT needs the PeerId).
pub fn check(origin: &str, addr: Multiaddr) -> Result<Multiaddr, BootstrapError> {
    if peer_id(&addr).is_none() {
        return Err(BootstrapError::NoPeerId {
            origin: origin.to_string(),
            addr,
        });
    }
    Ok(addr)
}

/// Parses a comma- or whitespace-separated list, e.g. the `IDLEGRID_BOOTSTRAP` value.
pub fn parse_list(origin: &str, text: &str) -> Result<Vec<Multiaddr>, BootstrapError> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(|s| {
            let addr: Multiaddr =
                s.parse()
                    .map_err(|e: libp2p::multiaddr::Error| BootstrapError::BadAddr {
                        origin: origin.to_string(),
                        text: s.to_string(),
                        reason: e.to_string(),
                    })?;
            check(origin, addr)
        })
        .collect()
}

/// Merges lists in priority order, dropping repeats.
pub fn merge(lists: &[Vec<Multiaddr>]) -> Vec<Multiaddr> {
    let mut merged: Vec<Multiaddr> = Vec::new();
    for addr in lists.iter().flatten() {
        if !merged.contains(addr) {
            merged.push(addr.clone());
        }
    }
    merged
}

/// Tries each address in order with `attempt` (which should bound its own wait) and
/// returns the first that answered.
pub async fn try_in_order<F, Fut>(
    list: &[Multiaddr],
    mut attempt: F,
) -> Result<Multiaddr, BootstrapError>
where
    F: FnMut(Multiaddr) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    if list.is_empty() {
        return Err(BootstrapError::Empty);
    }
    let mut tried = Vec::new();
    for addr in list {
        match attempt(addr.clone()).await {
            Ok(()) => return Ok(addr.clone()),
            Err(why) => tried.push((addr.clone(), why)),
        }
    }
    Err(BootstrapError::NoneAnswered { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/10.0.0.1/tcp/{port}/p2p/{}", PeerId::random())
            .parse()
            .unwrap()
    }

    #[test]
    fn lists_merge_in_order_without_repeats() {
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let env = parse_list("IDLEGRID_BOOTSTRAP", &format!("{b}, {c}\n{a}")).unwrap();
        assert_eq!(env, vec![b.clone(), c.clone(), a.clone()]);
        let merged = merge(&[vec![a.clone()], env, vec![c.clone()]]);
        assert_eq!(merged, vec![a, b, c]);
    }

    #[test]
    fn bad_entries_are_named() {
        let err = parse_list("IDLEGRID_BOOTSTRAP", "/ip4/10.0.0.1/tcp/4001").unwrap_err();
        assert!(err.to_string().contains("/p2p/<PeerId>"), "{err}");
        let err = parse_list("config", "not-an-address").unwrap_err();
        assert!(err.to_string().contains("not-an-address"), "{err}");
    }

    #[test]
    fn falls_back_in_order_and_says_why_none_answered() {
        let (a, b, c) = (addr(1), addr(2), addr(3));
        let list = vec![a.clone(), b.clone(), c.clone()];
        let mut asked = Vec::new();
        let first = futures::executor::block_on(try_in_order(&list, |x| {
            asked.push(x.clone());
            let ok = x == b;
            async move {
                if ok {
                    Ok(())
                } else {
                    Err("timed out after 5s".to_string())
                }
            }
        }));
        assert_eq!(first, Ok(b.clone()));
        assert_eq!(asked, vec![a.clone(), b], "stops at the first that answers");
        let none = futures::executor::block_on(try_in_order(&list, |_| async {
            Err::<(), _>("connection refused".to_string())
        }))
        .unwrap_err();
        let text = none.to_string();
        assert!(
            text.contains(&a.to_string()) && text.contains(&c.to_string()),
            "{text}"
        );
        assert!(text.contains("connection refused"), "{text}");
        assert_eq!(
            futures::executor::block_on(try_in_order(&[], |_| async { Ok(()) })),
            Err(BootstrapError::Empty)
        );
    }
}
