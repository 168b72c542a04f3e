//! The set of banned peers, shared by the swarm task (which refuses their connections) and the
//! protocol tasks (which refuse their streams and fail requests to them at once).

use std::{
    collections::HashMap,
    sync::{Mutex, MutexGuard, PoisonError},
    time::Instant,
};

use libp2p::PeerId;

/// Banned peers and when each ban ends.
#[derive(Debug, Default)]
pub(crate) struct BanList {
    until: Mutex<HashMap<PeerId, Instant>>,
}

impl BanList {
    fn lock(&self) -> MutexGuard<'_, HashMap<PeerId, Instant>> {
        self.until.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Bans `peer` until `until` (a later ban extends an earlier one).
    pub(crate) fn ban(&self, peer: PeerId, until: Instant) {
        let mut map = self.lock();
        let entry = map.entry(peer).or_insert(until);
        *entry = (*entry).max(until);
    }

    /// True while `peer`'s ban lasts.
    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.lock()
            .get(peer)
            .is_some_and(|until| *until > Instant::now())
    }

    /// Removes and returns the bans that ended by `now`.
    pub(crate) fn take_expired(&self, now: Instant) -> Vec<PeerId> {
        let mut map = self.lock();
        let expired: Vec<PeerId> = map
            .iter()
            .filter(|(_, until)| **until <= now)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in &expired {
            map.remove(peer);
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bans_expire() {
        let bans = BanList::default();
        let peer = PeerId::random();
        let now = Instant::now();
        bans.ban(peer, now + Duration::from_secs(60));
        assert!(bans.is_banned(&peer));
        assert!(!bans.is_banned(&PeerId::random()));
        assert!(bans.take_expired(now).is_empty());
        assert_eq!(bans.take_expired(now + Duration::from_secs(61)), vec![peer]);
        assert!(!bans.is_banned(&peer));
    }
}
