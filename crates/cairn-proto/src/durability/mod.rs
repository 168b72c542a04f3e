//! The durability layer's sans-IO state machines (durability.md, slice S1: swarms).
//!
//! # Shape
//!
//! One [`swarm::State`] per joined swarm. The driver (cairn-node) feeds it
//! [`swarm::Input`]s with the current time [`Now`] and executes the [`swarm::Output`]s it
//! returns; nothing here reads a clock, does I/O, spawns tasks or draws randomness it was not
//! given (a seed at construction, [`Rng`]).
//!
//! - **Inputs**: `Gossip{topic, source, msg_id, data}` (every gossipsub message of the swarm's
//!   topics), `Request{peer, id, request}` / `Response{id, result}` (`/cairn/durability/1.0.0`),
//!   `Timer(key)`, `Command(..)` (REST-level actions: announce, claim, release, retire, leave,
//!   answer an offer), `Peer(..)` (connections, for sync partner choice).
//! - **Outputs**: `Validate{msg_id, outcome}` (exactly one per gossip message: verdict and §18
//!   penalty), `Publish{topic, data}`, `Send{peer, id, request}`, `Respond{id, response}`,
//!   `Schedule{key, at}` (a `Now::mono` deadline; replaces a pending timer with that key),
//!   `Subscribe(topic)`, `FactStored{..}` / `FactDropped{..}` (persist incrementally, §16) and
//!   `Event(..)` (for the REST layer and logs).
//! - **Persistence**: [`swarm::State::snapshot`] / [`swarm::State::restore`]: the genesis
//!   record, the facts, the incarnation and the local member observations, as a versioned
//!   prost message. Restoring replays the facts (like a sync, without the ±1 h window) and bumps
//!   the incarnation (§16).
//!
//! Sub-machines and pure parts, each usable on its own:
//! - [`membership::View`]: genesis, certificates, join / leave / revoke, policy updates, member
//!   states, eligible storers;
//! - [`datasets::Datasets`]: announces, retirements, claims (§8 validity), releases, current
//!   holders;
//! - [`placement`]: HRW scores and candidate order, `auto` resolution, the coordinator's walk,
//!   claim resolution;
//! - [`beacon`]: H(N), jitter, holdings digest, the sender's incarnation and seq;
//! - [`sync`]: fact sets, bucket digests, the answer side and the requester's round;
//! - [`health::compute`]: the §11 health view;
//! - [`validate`]: verdicts, penalties ([`validate::Outcome`]) and topic rules.
//!
//! # Where the spec was unclear, and what this code does
//!
//! - **Order independence.** Gossip may deliver a Leave before its Join, or a claim before its
//!   announce. Such facts are Rejected (§18 says so for non-members and unknown datasets) and
//!   accepted when anti-entropy delivers them again. Terminal member states absorb (Revoked wins
//!   over Departed), the latest Join by `(issued_at, fact id)` sets the storer flag, the policy
//!   with the highest `(seq, fact id)` wins, and the current holder of a slot is computed from
//!   the stored claims on demand, so views that accepted the same facts agree.
//! - **Two announces of one DatasetCid** (two members uploading the same bytes): the one with the
//!   lowest `(announced_at, fact id)` is the dataset's announce; only its signer's placement
//!   offers authorise claims.
//! - **HANDOFF authorisation** accepts an offer whose signer holds *a* valid claim of the slot
//!   at generation g − 1 (not necessarily the tie winner), which keeps claim validity monotone.
//! - **Admin certificates**: an admin is a peer with an owner-signed `MemberCert{admin}` known
//!   from a standalone cert or from a Join. A Join's cert and the admin cert above it must be
//!   valid at the Join's `issued_at`, and the admin cert also at the member cert's `issued_at`.
//!   Revoking an admin does not invalidate certificates it issued earlier (the spec only says
//!   the members it admitted stay).
//! - **Beacon rate limit** (more often than H/4) applies within one incarnation; a beacon with a
//!   higher incarnation (restart, refutation) is always taken.
//! - **`free_log2 = 0`** means "no room": such a candidate is skipped for any non-empty slot.
//! - **Kinds of slice S2** (LostVote, ChallengeFailure, RepairRequest, RepairClaim, and claims
//!   authorised by a REPAIR offer) are Ignored without penalty and not stored, so S1 nodes do
//!   not punish S2 peers. No member is ever Lost in S1.
//! - **`repair_at_missing` of `replicate`** must be 1 on the wire ("REPLICATE uses 1").
//! - **Invalid payload values** (bad policy, bad PeerId or CID field, wrong `shard` field, size
//!   over `max_dataset_bytes`) are Rejected with the P4 penalty, like undecodable messages.
//! - **Nested envelopes** are checked as carried (canonical, signature, same swarm, kind), with
//!   a small protobuf walker, because prost re-encoding would hide a non-canonical nested form.

pub mod beacon;
pub mod datasets;
pub mod health;
pub mod membership;
pub mod placement;
pub mod swarm;
pub mod sync;
pub mod validate;

use std::time::Duration;

pub use swarm::{Command, Event, Input, Output, State, TimerKey};
pub use validate::{Origin, Outcome, Penalty, Topic, Verdict};

/// The only clock: a monotonic instant for timers and unix seconds for everything signed,
/// persisted or compared across nodes (§19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Now {
    /// Monotonic time since an arbitrary origin (the driver's process start).
    pub mono: Duration,
    /// Unix seconds.
    pub unix: u64,
}

/// Timers and limits of §14 that a node may override in its config. Swarm-wide values
/// (`lost_after`, `min_member_age`, `dataset_shards`, …) come from the swarm policy instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// Override of H(N) in seconds (`beacon_interval`); `None` = max(5 min, 12.5 s × N).
    pub beacon_interval_secs: Option<u64>,
    /// Override of ELIGIBLE_WINDOW in seconds; `None` = max(7 d, 3·H(N)).
    pub eligible_window_secs: Option<u64>,
    /// SYNC_INTERVAL in seconds (± 20 % jitter); default 600.
    pub sync_interval_secs: u64,
    /// CLAIM_TIMEOUT in seconds; default 12 h.
    pub claim_timeout_secs: u64,
    /// SPARE_TTL in seconds; default 7 d.
    pub spare_ttl_secs: u64,
    /// Whether `auto` may resolve to `erasure` (slice S2); false in S1.
    pub erasure_enabled: bool,
}

impl Default for Params {
    fn default() -> Params {
        Params {
            beacon_interval_secs: None,
            eligible_window_secs: None,
            sync_interval_secs: 600,
            claim_timeout_secs: 12 * 3600,
            spare_ttl_secs: 7 * 86_400,
            erasure_enabled: false,
        }
    }
}

/// A small deterministic RNG (SplitMix64), seeded by the driver. Used for jitter and sync
/// partner choice only; never for anything signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rng(u64);

impl Rng {
    /// An RNG from a seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A value in `0..n` (0 when n = 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
}
