//! Verdicts and penalties for incoming messages (durability.md §18), and the topic rules of §7.1.
//!
//! Every gossip message gets exactly one [`Outcome`]: a gossipsub [`Verdict`] plus the extra
//! action of the §18 table ([`Penalty`]). The table, row by row:
//!
//! | §18 input | Verdict | Penalty |
//! |---|---|---|
//! | undecodable, non-canonical, unknown kind, oversize | Reject | [`Penalty::InvalidMessage`] (P4) |
//! | bad signature, signer ≠ the member the payload names | Reject | [`Penalty::InvalidMessage`] (P4) |
//! | swarm_id not ours, topic/kind mismatch | Reject | [`Penalty::None`] |
//! | signer not an Active member / not owner or admin where required | Reject | [`Penalty::NonMemberSource`] if the propagation source is not a member, else none |
//! | duplicate, timestamp outside now ± 1 h (gossip only), stale beacon | Ignore | [`Penalty::None`] |
//! | member over a rate limit | Ignore | [`Penalty::Reputation`] (−1) |
//! | claim without valid authorization, claim for an unknown or retired dataset | Reject | [`Penalty::ClaimOffence`] |
//!
//! Rows this slice adds, in the same spirit: an invalid payload value (bad policy, bad PeerId
//! field, wrong shard field) is a Reject with P4, like an undecodable one; a message of a kind
//! that S1 does not process yet (LostVote, ChallengeFailure, RepairRequest, RepairClaim) is an
//! Ignore without penalty, so that S2 peers are not punished.

use cairn_core::durability::{EnvelopeError, Kind, PeerId, SwarmId};

/// Gossipsub's validation result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Deliver and forward.
    Accept,
    /// Drop and penalise the propagation source (gossipsub P4).
    Reject,
    /// Drop silently.
    Ignore,
}

/// The extra action of a §18 row, for the driver to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Penalty {
    /// Nothing beyond the verdict.
    None,
    /// P4, the invalid-message penalty (weight −10), on the propagation source.
    InvalidMessage,
    /// Application score −1000 (P5) for the propagation source, which is not a member of this
    /// swarm (§7.1). Only set when the source is not an Active member in our view.
    NonMemberSource,
    /// Reputation −1 for this member (rate limits, §18).
    Reputation(PeerId),
    /// An invalid claim by this member; repeat offenders lose candidacy (§18).
    ClaimOffence(PeerId),
}

/// A verdict with its penalty and a short reason (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What gossipsub is told.
    pub verdict: Verdict,
    /// What else the driver does.
    pub penalty: Penalty,
    /// Why, in a few words.
    pub reason: &'static str,
}

impl Outcome {
    /// Accepted.
    pub const ACCEPT: Outcome = Outcome {
        verdict: Verdict::Accept,
        penalty: Penalty::None,
        reason: "accepted",
    };

    /// Reject with P4 (rows 1–2, and invalid payload values).
    pub const fn malformed(reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Reject,
            penalty: Penalty::InvalidMessage,
            reason,
        }
    }

    /// Reject without penalty (row 3).
    pub const fn mismatch(reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Reject,
            penalty: Penalty::None,
            reason,
        }
    }

    /// Reject: the signer lacks membership or a role (row 4). The swarm state downgrades the
    /// penalty to none when the propagation source is a member.
    pub const fn not_member(reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Reject,
            penalty: Penalty::NonMemberSource,
            reason,
        }
    }

    /// Ignore without penalty (row 5).
    pub const fn ignore(reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Ignore,
            penalty: Penalty::None,
            reason,
        }
    }

    /// Ignore with reputation −1 for `member` (row 6).
    pub const fn rate_limited(member: PeerId, reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Ignore,
            penalty: Penalty::Reputation(member),
            reason,
        }
    }

    /// Reject an unauthorised claim (row 7).
    pub const fn bad_claim(member: PeerId, reason: &'static str) -> Outcome {
        Outcome {
            verdict: Verdict::Reject,
            penalty: Penalty::ClaimOffence(member),
            reason,
        }
    }

    /// The outcome of an envelope that failed to decode or verify.
    pub fn from_envelope_error(e: &EnvelopeError) -> Outcome {
        if e.is_p4() {
            Outcome::malformed("undecodable, non-canonical or badly signed envelope")
        } else {
            Outcome::mismatch("envelope for another swarm or of the wrong nested kind")
        }
    }
}

/// Clock tolerance on gossip timestamps: ± 1 h (§14).
pub const CLOCK_TOLERANCE_SECS: u64 = 3600;

/// Where a fact came from: timestamps are only windowed on gossip (§7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// A gossipsub message.
    Gossip,
    /// An anti-entropy response or a restore from persisted facts.
    Sync,
    /// Published by this node.
    Local,
}

/// Whether a gossip timestamp is within now ± 1 h.
pub fn timestamp_ok(origin: Origin, now_unix: u64, ts: u64) -> bool {
    origin != Origin::Gossip || now_unix.abs_diff(ts) <= CLOCK_TOLERANCE_SECS
}

/// A swarm topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `/cairn/1/<SwarmId>/ctl`.
    Ctl,
    /// `/cairn/1/<SwarmId>/ds/<shard>`.
    Shard(u32),
}

impl Topic {
    /// The topic string for `swarm`.
    pub fn name(&self, swarm: &SwarmId) -> String {
        match *self {
            Topic::Ctl => swarm.ctl_topic(),
            Topic::Shard(s) => swarm.shard_topic(s),
        }
    }

    /// Parses a topic string of `swarm` (shard numbers without leading zeros).
    pub fn parse(swarm: &SwarmId, topic: &str) -> Option<Topic> {
        let rest = topic
            .strip_prefix("/cairn/1/")?
            .strip_prefix(swarm.to_text().as_str())?;
        if rest == "/ctl" {
            return Some(Topic::Ctl);
        }
        let num = rest.strip_prefix("/ds/")?;
        if num.is_empty()
            || (num.len() > 1 && num.starts_with('0'))
            || !num.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        num.parse().ok().map(Topic::Shard)
    }
}

/// Whether `kind` may be published on `topic` (§7.1 and the proto's Kind comment): ctl carries
/// 1–5, 10, 11; shard topics carry 20, 21, 23, 24, 32, 40, 41; 22, 30, 31 never travel alone.
pub fn topic_allows(topic: Topic, kind: Kind) -> bool {
    use Kind::*;
    match topic {
        Topic::Ctl => matches!(
            kind,
            MemberCert | Join | Leave | Revoke | PolicyUpdate | Beacon | LostVote
        ),
        Topic::Shard(_) => matches!(
            kind,
            DatasetAnnounce
                | DatasetRetire
                | SlotClaim
                | SlotRelease
                | ChallengeFailure
                | RepairRequest
                | RepairClaim
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_round_trip_and_rules() {
        let s = SwarmId([3; 32]);
        for t in [Topic::Ctl, Topic::Shard(0), Topic::Shard(15)] {
            assert_eq!(Topic::parse(&s, &t.name(&s)), Some(t));
        }
        assert_eq!(
            Topic::parse(&s, &format!("/cairn/1/{}/ds/01", s.to_text())),
            None
        );
        assert_eq!(
            Topic::parse(&s, &format!("/cairn/1/{}/ds/", s.to_text())),
            None
        );
        assert_eq!(Topic::parse(&SwarmId([4; 32]), &Topic::Ctl.name(&s)), None);
        assert!(topic_allows(Topic::Ctl, Kind::Beacon));
        assert!(!topic_allows(Topic::Shard(0), Kind::Beacon));
        assert!(!topic_allows(Topic::Ctl, Kind::SlotClaim));
        assert!(!topic_allows(Topic::Shard(0), Kind::SlotOffer));
        assert!(!topic_allows(Topic::Ctl, Kind::Challenge));
    }

    #[test]
    fn timestamp_window() {
        assert!(timestamp_ok(Origin::Gossip, 10_000, 10_000 + 3600));
        assert!(!timestamp_ok(Origin::Gossip, 10_000, 10_000 + 3601));
        assert!(!timestamp_ok(Origin::Gossip, 10_000, 10_000 - 3601));
        assert!(timestamp_ok(Origin::Sync, 10_000, 0));
    }
}
