//! The health view of one dataset (durability.md §11): a pure function of per-slot facts and
//! local observations.
//!
//! Per slot the caller states what it knows ([`SlotInput`]); [`compute`] classifies each slot as
//! missing (L), suspect (U) or reachable (V) and derives the dataset state:
//! `unmanaged` (policy `none`) → `lost` (n − L < K) → `critical` (L ≥ l0 or V < K) →
//! `degraded` (L + U > 0) → `healthy`.

use cairn_core::durability::PeerId;
use cairn_core::durability::policy::Policy;

/// What the holder of a slot's current claim is, in the local view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HolderStatus {
    /// Active and heard from within 3·H(N), not locally suspect.
    Present,
    /// Active but Absent (no signal for 3·H(N)) or locally Suspect (watchers).
    Absent,
    /// Lost by LostVote quorum (S2).
    Lost,
    /// Departed with Leave.
    Departed,
    /// Revoked.
    Revoked,
}

/// One slot's inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotInput {
    /// The current claim: holder, generation and the holder's status. `None` if unclaimed.
    pub claim: Option<(PeerId, u32, HolderStatus)>,
    /// The holder released this generation (SlotRelease signed by it).
    pub released: bool,
    /// A ChallengeFailure exists for this holder and generation (S2).
    pub challenge_failed: bool,
    /// A repair round assigns this slot (S2).
    pub repairing: bool,
    /// Spares known for this slot.
    pub spares: u32,
}

/// The dataset-level inputs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Input {
    /// The resolved policy.
    pub policy: Policy,
    /// The announce's `announced_at` (unix s).
    pub announced_at: u64,
    /// CLAIM_TIMEOUT in seconds (12 h by default).
    pub claim_timeout_secs: u64,
    /// One entry per slot, in slot order (`policy.slots()` entries).
    pub slots: Vec<SlotInput>,
    /// For `none`: members among the manifest's providers (plus this node if it holds it).
    pub providers: u32,
}

/// A dataset's health state (§11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Policy `none`.
    Unmanaged,
    /// Fewer than K slots exist by evidence.
    Lost,
    /// Repair due or running, or the data is unreadable now.
    Critical,
    /// Some slot missing or suspect.
    Degraded,
    /// Every slot reachable.
    Healthy,
}

impl State {
    /// The JSON name (§17).
    pub fn as_str(&self) -> &'static str {
        match self {
            State::Unmanaged => "unmanaged",
            State::Lost => "lost",
            State::Critical => "critical",
            State::Degraded => "degraded",
            State::Healthy => "healthy",
        }
    }
}

/// A slot's state (§11, §17).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SlotState {
    /// In V.
    Live,
    /// In U, claimed.
    Suspect,
    /// In U: no claim yet, within CLAIM_TIMEOUT of the announce.
    Unclaimed,
    /// In L.
    Missing,
    /// In L, assigned by a repair round.
    Repairing,
}

/// One slot of the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotReport {
    /// Slot index.
    pub index: u32,
    /// Current holder, if claimed.
    pub holder: Option<PeerId>,
    /// Its generation (0 if unclaimed).
    pub generation: u32,
    /// State.
    pub state: SlotState,
}

/// Slot counts (§17 `counts`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// n.
    pub slots: u32,
    /// V.
    pub reachable: u32,
    /// U.
    pub suspect: u32,
    /// L.
    pub missing: u32,
    /// Slots without any claim (also in `suspect` or `missing`).
    pub unclaimed: u32,
    /// Known spares.
    pub spares: u32,
}

/// The health of one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// The state.
    pub state: State,
    /// V ≥ K.
    pub available: bool,
    /// Counts.
    pub counts: Counts,
    /// Distinct holders of claimed slots that are not missing.
    pub distinct_holders: u32,
    /// Per slot.
    pub slots: Vec<SlotReport>,
    /// For `none`: the provider count.
    pub providers: Option<u32>,
}

/// Computes the health of a dataset at `now_unix` (§11).
pub fn compute(input: &Input, now_unix: u64) -> Health {
    if input.policy == Policy::None {
        return Health {
            state: State::Unmanaged,
            available: input.providers > 0,
            counts: Counts::default(),
            distinct_holders: 0,
            slots: Vec::new(),
            providers: Some(input.providers),
        };
    }
    let n = input.policy.slots();
    let k = input.policy.k();
    let l0 = input.policy.repair_at_missing();
    let timed_out = now_unix >= input.announced_at.saturating_add(input.claim_timeout_secs);
    let mut counts = Counts {
        slots: n,
        ..Counts::default()
    };
    let mut slots = Vec::with_capacity(n as usize);
    let mut holders = Vec::new();
    for index in 0..n {
        let s = input
            .slots
            .get(index as usize)
            .copied()
            .unwrap_or(SlotInput {
                claim: None,
                released: false,
                challenge_failed: false,
                repairing: false,
                spares: 0,
            });
        counts.spares += s.spares;
        let (holder, generation, state) = match s.claim {
            None => {
                counts.unclaimed += 1;
                (
                    None,
                    0,
                    if timed_out {
                        SlotState::Missing
                    } else {
                        SlotState::Unclaimed
                    },
                )
            }
            Some((h, g, status)) => {
                let missing = s.released
                    || s.challenge_failed
                    || matches!(
                        status,
                        HolderStatus::Lost | HolderStatus::Departed | HolderStatus::Revoked
                    );
                let st = if missing {
                    SlotState::Missing
                } else if status == HolderStatus::Absent {
                    SlotState::Suspect
                } else {
                    SlotState::Live
                };
                if !missing {
                    holders.push(h);
                }
                (Some(h), g, st)
            }
        };
        let state = if state == SlotState::Missing && s.repairing {
            SlotState::Repairing
        } else {
            state
        };
        match state {
            SlotState::Missing | SlotState::Repairing => counts.missing += 1,
            SlotState::Suspect | SlotState::Unclaimed => counts.suspect += 1,
            SlotState::Live => counts.reachable += 1,
        }
        slots.push(SlotReport {
            index,
            holder,
            generation,
            state,
        });
    }
    holders.sort();
    holders.dedup();
    let (l, u, v) = (counts.missing, counts.suspect, counts.reachable);
    let state = if n - l < k {
        State::Lost
    } else if l >= l0 || v < k {
        State::Critical
    } else if l + u > 0 {
        State::Degraded
    } else {
        State::Healthy
    };
    Health {
        state,
        available: v >= k,
        counts,
        distinct_holders: holders.len() as u32,
        slots,
        providers: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::durability::Keypair;

    fn peer(i: u8) -> PeerId {
        Keypair::from_seed(&[i; 32]).peer_id()
    }

    fn slot(i: u8, status: HolderStatus) -> SlotInput {
        SlotInput {
            claim: Some((peer(i), 0, status)),
            released: false,
            challenge_failed: false,
            repairing: false,
            spares: 0,
        }
    }

    const UNCLAIMED: SlotInput = SlotInput {
        claim: None,
        released: false,
        challenge_failed: false,
        repairing: false,
        spares: 0,
    };

    fn input(policy: Policy, slots: Vec<SlotInput>) -> Input {
        Input {
            policy,
            announced_at: 1000,
            claim_timeout_secs: 43_200,
            slots,
            providers: 0,
        }
    }

    const R3: Policy = Policy::Replicate { replicas: 3 };

    #[test]
    fn none_is_unmanaged() {
        let mut i = input(Policy::None, vec![]);
        i.providers = 2;
        let h = compute(&i, 5000);
        assert_eq!(h.state, State::Unmanaged);
        assert_eq!(h.providers, Some(2));
        assert!(h.available);
    }

    #[test]
    fn healthy_when_all_live() {
        use HolderStatus::Present;
        let h = compute(
            &input(
                R3,
                vec![slot(1, Present), slot(2, Present), slot(3, Present)],
            ),
            2000,
        );
        assert_eq!(h.state, State::Healthy);
        assert_eq!(
            h.counts,
            Counts {
                slots: 3,
                reachable: 3,
                ..Counts::default()
            }
        );
        assert_eq!(h.distinct_holders, 3);
        assert!(h.available);
    }

    #[test]
    fn unclaimed_is_suspect_then_missing_after_claim_timeout() {
        use HolderStatus::Present;
        let i = input(R3, vec![slot(1, Present), slot(2, Present), UNCLAIMED]);
        let before = compute(&i, 1000 + 43_199);
        assert_eq!(before.state, State::Degraded);
        assert_eq!(before.slots[2].state, SlotState::Unclaimed);
        assert_eq!(
            (
                before.counts.suspect,
                before.counts.unclaimed,
                before.counts.missing
            ),
            (1, 1, 0)
        );
        let after = compute(&i, 1000 + 43_200);
        assert_eq!(after.slots[2].state, SlotState::Missing);
        assert_eq!(
            (
                after.counts.suspect,
                after.counts.unclaimed,
                after.counts.missing
            ),
            (0, 1, 1)
        );
        assert_eq!(after.state, State::Critical, "replicate l0 = 1");
    }

    #[test]
    fn absent_holder_is_suspect_not_missing() {
        use HolderStatus::*;
        let h = compute(
            &input(
                R3,
                vec![slot(1, Present), slot(2, Absent), slot(3, Present)],
            ),
            2000,
        );
        assert_eq!(h.state, State::Degraded);
        assert_eq!(h.slots[1].state, SlotState::Suspect);
        assert_eq!(h.counts.missing, 0);
    }

    #[test]
    fn departed_revoked_released_are_missing() {
        use HolderStatus::*;
        let mut released = slot(3, Present);
        released.released = true;
        let h = compute(
            &input(R3, vec![slot(1, Departed), slot(2, Revoked), released]),
            2000,
        );
        assert_eq!(h.counts.missing, 3);
        assert_eq!(h.state, State::Lost);
        assert!(!h.available);
        let h = compute(
            &input(
                R3,
                vec![slot(1, Departed), slot(2, Present), slot(3, Present)],
            ),
            2000,
        );
        assert_eq!(h.state, State::Critical);
        assert!(h.available);
    }

    #[test]
    fn critical_when_unreadable() {
        use HolderStatus::*;
        // replicate: every holder Absent → V = 0 < K = 1 → critical, not lost.
        let h = compute(
            &input(R3, vec![slot(1, Absent), slot(2, Absent), slot(3, Absent)]),
            2000,
        );
        assert_eq!(h.state, State::Critical);
        assert!(!h.available);
    }

    #[test]
    fn erasure_threshold() {
        use HolderStatus::*;
        let p = Policy::Erasure {
            k: 2,
            m: 9,
            repair_at_missing: 2,
        };
        let mut slots: Vec<SlotInput> = (1..=11).map(|i| slot(i, Present)).collect();
        slots[0].claim = Some((peer(1), 0, Departed));
        assert_eq!(
            compute(&input(p, slots.clone()), 2000).state,
            State::Degraded,
            "L = 1 < l0 = 2"
        );
        slots[1].claim = Some((peer(2), 0, Departed));
        assert_eq!(
            compute(&input(p, slots.clone()), 2000).state,
            State::Critical,
            "L = l0"
        );
        for s in slots.iter_mut().take(10) {
            s.claim = s.claim.map(|(p, g, _)| (p, g, Departed));
        }
        assert_eq!(
            compute(&input(p, slots), 2000).state,
            State::Lost,
            "n - L = 1 < K = 2"
        );
    }

    #[test]
    fn distinct_holders_and_spares() {
        use HolderStatus::Present;
        let mut a = slot(1, Present);
        a.spares = 2;
        let h = compute(
            &input(R3, vec![a, slot(1, Present), slot(2, Present)]),
            2000,
        );
        assert_eq!(h.distinct_holders, 2);
        assert_eq!(h.counts.spares, 2);
    }
}
