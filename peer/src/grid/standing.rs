//! What a job weighs besides a peer's answers: the network host a peer speaks from
//! (peers on one host are one vote towards `--replicas`), why a banned peer is not
//! asked, and whether a result an earlier run logged meets this run's settings.

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::trust::Ban;
use idlegrid_scheduler::{Trust, VerifiedBy};

/// The host `peer` connects from, as a key, from the remote address of its connection
/// as this machine saw it (not what the peer claims): its IP address, an IPv6 /64 (one
/// machine can fill a /64 with addresses). A peer on loopback runs on this very
/// machine, the user's own, and a relayed one's address is its relay's: each of those
/// counts as a host of its own, and so does a peer whose address is unknown.
pub(super) fn host_key(peer: PeerId, connected_from: Option<&Multiaddr>) -> u64 {
    let of = |bytes: &[u8]| {
        let hash = blake3::hash(bytes);
        u64::from_le_bytes(hash.as_bytes()[..8].try_into().unwrap_or([0; 8]))
    };
    let own = of(&peer.to_bytes());
    let Some(addr) = connected_from else {
        return own;
    };
    if addr.iter().any(|p| matches!(p, Protocol::P2pCircuit)) {
        return own;
    }
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) if !ip.is_loopback() => of(&ip.octets()),
        Some(Protocol::Ip6(ip)) if !ip.is_loopback() => of(&ip.octets()[..8]),
        _ => own,
    }
}

/// Whether a result an earlier run verified as `how` meets this run's settings: this
/// machine's own result always does; a remote one must have as many hosts behind it as
/// `replicas` asks, and under earned trust must not come from a trusted pool's
/// unchecked run.
pub(super) fn strong_enough(how: VerifiedBy, trust: Trust, replicas: u32) -> bool {
    match how {
        VerifiedBy::Local => true,
        VerifiedBy::Peers { hosts } => hosts >= replicas,
        VerifiedBy::Unchecked { hosts } => trust == Trust::All && hosts >= replicas,
    }
}

/// Why a banned peer is not used, with the evidence in short.
pub(super) fn ban_reason(ban: &Ban) -> String {
    let short = |hex: &str| hex.get(..8).unwrap_or(hex).to_string();
    format!(
        "banned: it returned {} for chunk {} where this machine computed {}",
        short(&ban.claimed),
        short(&ban.chunk),
        short(&ban.settled)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_host_is_one_key_and_loopback_or_relayed_peers_are_their_own() {
        let (a, b) = (PeerId::random(), PeerId::random());
        let at = |s: &str| s.parse::<Multiaddr>().unwrap();
        let lan = at("/ip4/192.168.1.7/tcp/4001");
        assert_eq!(
            host_key(a, Some(&lan)),
            host_key(b, Some(&at("/ip4/192.168.1.7/udp/9/quic-v1")))
        );
        assert_ne!(
            host_key(a, Some(&lan)),
            host_key(b, Some(&at("/ip4/192.168.1.8/tcp/4001")))
        );
        let v6 = |s: &str| host_key(a, Some(&at(s)));
        assert_eq!(
            v6("/ip6/2001:db8:1:2::1/tcp/1"),
            v6("/ip6/2001:db8:1:2::ffff/tcp/1")
        );
        let loopback = at("/ip4/127.0.0.1/tcp/1");
        assert_ne!(host_key(a, Some(&loopback)), host_key(b, Some(&loopback)));
        let relayed = at("/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWPKb1TGD8c1HDoUqaN5BLVTjywAmVVRGEXpEGxww9WdAU/p2p-circuit");
        assert_ne!(host_key(a, Some(&relayed)), host_key(b, Some(&relayed)));
        assert_ne!(host_key(a, None), host_key(b, None));
    }
}
