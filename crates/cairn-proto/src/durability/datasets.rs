//! The dataset table (durability.md §6, §8, §13 Retention): announces, retirements, claims and
//! releases of one swarm, with the §8 claim-validity rules and current-holder resolution.
//!
//! Facts are checked when they arrive ([`Datasets::apply`] returns the §18 [`Outcome`]) and
//! stored; the current holder of a slot is computed from the stored claims when asked
//! ([`Datasets::holder`]), so it does not depend on the order in which claims arrived.
//!
//! If two members announce the same DatasetCid (same upload, content addressing), the announce
//! with the lowest `(announced_at, fact id)` is the dataset's announce; placement claims are
//! valid only when authorised by its signer.

use std::collections::{BTreeMap, VecDeque};

use cairn_core::durability::messages::{self as pb, OfferReason, ReleaseReason};
use cairn_core::durability::policy::Policy;
use cairn_core::durability::{Body, Envelope, FactId, PeerId, shard_of};
use cairn_core::{Cid, Codec};

use super::membership::View;
use super::placement::{ClaimKey, winner};
use super::validate::{Origin, Outcome, timestamp_ok};

/// Announces per member per hour (§14).
pub const ANNOUNCES_PER_HOUR: usize = 20;

/// A dataset's announce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The announce's fact id.
    pub fact: FactId,
    /// Its signer.
    pub announcer: PeerId,
    /// DatasetCid.
    pub dataset: Cid,
    /// ContentCid.
    pub content: Cid,
    /// Original size in bytes.
    pub size: u64,
    /// The resolved policy.
    pub policy: Policy,
    /// The shard.
    pub shard: u32,
    /// 0 = forever.
    pub retain_until: u64,
    /// Unix seconds.
    pub announced_at: u64,
}

/// A stored claim of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimRecord {
    /// The SlotClaim's fact id.
    pub fact: FactId,
    /// The claimant.
    pub holder: PeerId,
    /// The generation.
    pub generation: u32,
    /// The authorising offer's reason.
    pub reason: OfferReason,
    /// The authorising offer's signer.
    pub offer_signer: PeerId,
    /// The claim's `issued_at`.
    pub issued_at: u64,
}

/// A stored release of one slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseRecord {
    /// The SlotRelease's fact id.
    pub fact: FactId,
    /// The releasing holder.
    pub holder: PeerId,
    /// The generation released.
    pub generation: u32,
    /// Why.
    pub reason: ReleaseReason,
    /// The release's `issued_at`.
    pub issued_at: u64,
}

/// A retirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retire {
    /// Its fact id.
    pub fact: FactId,
    /// Its signer.
    pub by: PeerId,
    /// Its `issued_at`.
    pub issued_at: u64,
}

#[derive(Debug, Clone, Default)]
struct Entry {
    announces: BTreeMap<(u64, FactId), Announce>,
    retire: Option<Retire>,
    claims: BTreeMap<u32, Vec<ClaimRecord>>,
    releases: BTreeMap<u32, Vec<ReleaseRecord>>,
}

/// What a dataset fact changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// A dataset was announced (or got another announce).
    Announced(Cid),
    /// A dataset was retired.
    Retired(Cid),
    /// Claims or releases of these datasets changed.
    Slots(Vec<Cid>),
}

/// Announces, retirements, claims and releases.
#[derive(Debug, Clone, Default)]
pub struct Datasets {
    entries: BTreeMap<Cid, Entry>,
    announce_log: BTreeMap<PeerId, VecDeque<u64>>,
}

fn manifest_cid(bytes: &[u8]) -> Result<Cid, Outcome> {
    Cid::from_bytes(bytes)
        .ok()
        .filter(|c| c.codec() == Codec::Manifest)
        .ok_or(Outcome::malformed("not a manifest CID"))
}

impl Datasets {
    /// An empty table.
    pub fn new() -> Datasets {
        Datasets::default()
    }

    /// Applies a dataset fact received on `Topic::Shard(topic_shard)` (kinds DatasetAnnounce,
    /// DatasetRetire, SlotClaim, SlotRelease). On `Err` nothing changed.
    pub fn apply(
        &mut self,
        now_unix: u64,
        origin: Origin,
        env: &Envelope,
        body: &Body,
        topic_shard: u32,
        view: &View,
    ) -> Result<Change, Outcome> {
        let signer = env.signer();
        if !view.is_active(&signer) {
            return Err(Outcome::not_member("signer is not an Active member"));
        }
        let shards = view.policy().dataset_shards;
        match body {
            Body::DatasetAnnounce(a) => {
                self.apply_announce(now_unix, origin, env, a, topic_shard, view)
            }
            Body::DatasetRetire(r) => {
                if !timestamp_ok(origin, now_unix, r.issued_at) {
                    return Err(Outcome::ignore("timestamp outside now ± 1 h"));
                }
                let d = manifest_cid(&r.dataset_cid)?;
                if shard_of(&d, shards) != topic_shard {
                    return Err(Outcome::mismatch("retire on another shard's topic"));
                }
                let announcer = self
                    .announce(&d)
                    .map(|a| a.announcer)
                    .ok_or(Outcome::mismatch("retire of an unknown dataset"))?;
                if signer != announcer && !view.is_owner_or_admin_at(&signer, r.issued_at) {
                    return Err(Outcome::not_member("retire by neither announcer nor admin"));
                }
                let e = self.entries.entry(d).or_default();
                let new = Retire {
                    fact: env.id(),
                    by: signer,
                    issued_at: r.issued_at,
                };
                // The earliest retirement counts.
                if e.retire
                    .is_none_or(|old| (new.issued_at, new.fact) < (old.issued_at, old.fact))
                {
                    e.retire = Some(new);
                }
                Ok(Change::Retired(d))
            }
            Body::SlotClaim {
                claim,
                authorizations,
            } => self.apply_claim(
                now_unix,
                origin,
                env,
                claim,
                authorizations,
                topic_shard,
                view,
            ),
            Body::SlotRelease(rel) => {
                if !timestamp_ok(origin, now_unix, rel.issued_at) {
                    return Err(Outcome::ignore("timestamp outside now ± 1 h"));
                }
                if rel.entries.is_empty() {
                    return Err(Outcome::malformed("release without entries"));
                }
                let mut parsed = Vec::with_capacity(rel.entries.len());
                for e in &rel.entries {
                    let d = manifest_cid(&e.dataset_cid)?;
                    if shard_of(&d, shards) != topic_shard {
                        return Err(Outcome::mismatch("release on another shard's topic"));
                    }
                    if self.announce(&d).is_none() {
                        return Err(Outcome::mismatch("release of an unknown dataset"));
                    }
                    let reason = match ReleaseReason::try_from(e.reason) {
                        Ok(ReleaseReason::Unspecified) | Err(_) => {
                            return Err(Outcome::malformed("release without a reason"));
                        }
                        Ok(r) => r,
                    };
                    parsed.push((d, e.slot, e.generation, reason));
                }
                let mut touched = Vec::new();
                for (d, slot, generation, reason) in parsed {
                    let list = self
                        .entries
                        .entry(d)
                        .or_default()
                        .releases
                        .entry(slot)
                        .or_default();
                    list.push(ReleaseRecord {
                        fact: env.id(),
                        holder: signer,
                        generation,
                        reason,
                        issued_at: rel.issued_at,
                    });
                    touched.push(d);
                }
                touched.dedup();
                Ok(Change::Slots(touched))
            }
            _ => Err(Outcome::mismatch("not a dataset fact")),
        }
    }

    fn apply_announce(
        &mut self,
        now_unix: u64,
        origin: Origin,
        env: &Envelope,
        a: &pb::DatasetAnnounce,
        topic_shard: u32,
        view: &View,
    ) -> Result<Change, Outcome> {
        let signer = env.signer();
        let policy = view.policy();
        if policy.announcers == pb::AnnouncerRule::AdminsOnly as i32
            && !view.is_owner_or_admin_at(&signer, a.announced_at)
        {
            return Err(Outcome::not_member(
                "only admins may announce in this swarm",
            ));
        }
        if !timestamp_ok(origin, now_unix, a.announced_at) {
            return Err(Outcome::ignore("timestamp outside now ± 1 h"));
        }
        let dataset = manifest_cid(&a.dataset_cid)?;
        let content = manifest_cid(&a.content_cid)?;
        let pol = a
            .policy
            .as_ref()
            .ok_or(Outcome::malformed("announce without policy"))
            .and_then(|p| Policy::from_proto(p).map_err(Outcome::malformed))?;
        if a.slots != pol.slots() {
            return Err(Outcome::malformed("slots does not match the policy"));
        }
        if !matches!(pol, Policy::Erasure { .. }) && content != dataset {
            return Err(Outcome::malformed(
                "content CID differs from dataset CID without erasure",
            ));
        }
        if a.size > policy.max_dataset_bytes {
            return Err(Outcome::malformed("dataset larger than max_dataset_bytes"));
        }
        let shard = shard_of(&dataset, policy.dataset_shards);
        if a.shard != shard {
            return Err(Outcome::malformed("shard field is not the dataset's shard"));
        }
        if topic_shard != shard {
            return Err(Outcome::mismatch("announce on another shard's topic"));
        }
        if origin == Origin::Gossip {
            let log = self.announce_log.entry(signer).or_default();
            while log.front().is_some_and(|&t| t + 3600 <= now_unix) {
                log.pop_front();
            }
            if log.len() >= ANNOUNCES_PER_HOUR {
                return Err(Outcome::rate_limited(
                    signer,
                    "more than 20 announces per hour",
                ));
            }
            log.push_back(now_unix);
        }
        let rec = Announce {
            fact: env.id(),
            announcer: signer,
            dataset,
            content,
            size: a.size,
            policy: pol,
            shard,
            retain_until: a.retain_until,
            announced_at: a.announced_at,
        };
        self.entries
            .entry(dataset)
            .or_default()
            .announces
            .insert((a.announced_at, env.id()), rec);
        Ok(Change::Announced(dataset))
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_claim(
        &mut self,
        now_unix: u64,
        origin: Origin,
        env: &Envelope,
        claim: &pb::SlotClaim,
        authorizations: &[Option<Envelope>],
        topic_shard: u32,
        view: &View,
    ) -> Result<Change, Outcome> {
        let signer = env.signer();
        if !timestamp_ok(origin, now_unix, claim.issued_at) {
            return Err(Outcome::ignore("timestamp outside now ± 1 h"));
        }
        if claim.entries.is_empty() {
            return Err(Outcome::malformed("claim without entries"));
        }
        if !view.is_active_storer(&signer) {
            return Err(Outcome::bad_claim(
                signer,
                "claimant is not an Active storer",
            ));
        }
        let shards = view.policy().dataset_shards;
        let mut records = Vec::with_capacity(claim.entries.len());
        for (entry, auth) in claim.entries.iter().zip(authorizations) {
            let d = manifest_cid(&entry.dataset_cid)?;
            if shard_of(&d, shards) != topic_shard {
                return Err(Outcome::mismatch("claim on another shard's topic"));
            }
            let announce = self
                .announce(&d)
                .ok_or(Outcome::bad_claim(signer, "claim for an unknown dataset"))?;
            if self.is_retired(&d) {
                return Err(Outcome::bad_claim(signer, "claim for a retired dataset"));
            }
            if entry.slot >= announce.policy.slots() {
                return Err(Outcome::bad_claim(
                    signer,
                    "slot outside the announce's slots",
                ));
            }
            let auth = auth
                .as_ref()
                .ok_or(Outcome::bad_claim(signer, "claim without authorization"))?;
            let Ok(Body::SlotOffer(offer)) = auth.body() else {
                return Err(Outcome::bad_claim(
                    signer,
                    "authorization is not a SlotOffer",
                ));
            };
            if offer.dataset_cid != entry.dataset_cid
                || offer.slot != entry.slot
                || offer.generation != entry.generation
            {
                return Err(Outcome::bad_claim(
                    signer,
                    "offer is for another slot or generation",
                ));
            }
            if offer.assignee != signer.as_bytes() {
                return Err(Outcome::bad_claim(signer, "offer names another assignee"));
            }
            if offer.expires_at < claim.issued_at {
                return Err(Outcome::bad_claim(signer, "offer expired before the claim"));
            }
            let offer_signer = auth.signer();
            let reason = match OfferReason::try_from(offer.reason) {
                Ok(OfferReason::Placement) => {
                    if entry.generation != 0 || offer_signer != announce.announcer {
                        return Err(Outcome::bad_claim(
                            signer,
                            "placement offer not by the announcer at gen 0",
                        ));
                    }
                    OfferReason::Placement
                }
                Ok(OfferReason::Handoff) => {
                    let prev = entry
                        .generation
                        .checked_sub(1)
                        .ok_or(Outcome::bad_claim(signer, "handoff at gen 0"))?;
                    let holds = self
                        .valid_claims(&d, entry.slot)
                        .any(|c| c.holder == offer_signer && c.generation == prev);
                    if !holds {
                        return Err(Outcome::bad_claim(
                            signer,
                            "handoff offer not by the holder at gen - 1",
                        ));
                    }
                    OfferReason::Handoff
                }
                Ok(OfferReason::Repair) => {
                    // Needs the RepairRequest named by round_ref (slice S2): unverifiable here.
                    return Err(Outcome::ignore("repair claims are not processed in S1"));
                }
                _ => return Err(Outcome::bad_claim(signer, "offer without a reason")),
            };
            records.push((
                d,
                entry.slot,
                ClaimRecord {
                    fact: env.id(),
                    holder: signer,
                    generation: entry.generation,
                    reason,
                    offer_signer,
                    issued_at: claim.issued_at,
                },
            ));
        }
        let mut touched = Vec::new();
        for (d, slot, rec) in records {
            let list = self
                .entries
                .entry(d)
                .or_default()
                .claims
                .entry(slot)
                .or_default();
            if !list.contains(&rec) {
                list.push(rec);
            }
            touched.push(d);
        }
        touched.dedup();
        Ok(Change::Slots(touched))
    }

    /// The dataset's announce: the lowest `(announced_at, fact id)` of its announces.
    pub fn announce(&self, d: &Cid) -> Option<&Announce> {
        self.entries.get(d)?.announces.values().next()
    }

    /// Every announced dataset, in CID order.
    pub fn datasets(&self) -> impl Iterator<Item = &Announce> {
        self.entries
            .values()
            .filter_map(|e| e.announces.values().next())
    }

    /// The dataset's retirement, if any.
    pub fn retire(&self, d: &Cid) -> Option<Retire> {
        self.entries.get(d)?.retire
    }

    /// Whether the dataset is retired.
    pub fn is_retired(&self, d: &Cid) -> bool {
        self.retire(d).is_some()
    }

    /// The stored claims of a slot that are valid against the dataset's announce (placement
    /// claims authorised by its signer, slot within its slot count).
    pub fn valid_claims<'a>(
        &'a self,
        d: &Cid,
        slot: u32,
    ) -> impl Iterator<Item = &'a ClaimRecord> + 'a {
        let announce = self.announce(d);
        let list = self.entries.get(d).and_then(|e| e.claims.get(&slot));
        list.into_iter().flatten().filter(move |c| {
            announce.is_some_and(|a| {
                slot < a.policy.slots()
                    && (c.reason != OfferReason::Placement || c.offer_signer == a.announcer)
            })
        })
    }

    /// The current holder of a slot (§8): the valid claim with the highest generation, ties to
    /// the higher hrw score.
    pub fn holder(&self, d: &Cid, slot: u32) -> Option<ClaimKey> {
        let keys: Vec<ClaimKey> = self
            .valid_claims(d, slot)
            .map(|c| ClaimKey {
                generation: c.generation,
                holder: c.holder,
            })
            .collect();
        winner(d, &keys)
    }

    /// The releases of a slot.
    pub fn releases(&self, d: &Cid, slot: u32) -> &[ReleaseRecord] {
        self.entries
            .get(d)
            .and_then(|e| e.releases.get(&slot))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `holder` released `slot` of `d` at `generation`.
    pub fn released(&self, d: &Cid, slot: u32, holder: &PeerId, generation: u32) -> bool {
        self.releases(d, slot)
            .iter()
            .any(|r| r.holder == *holder && r.generation == generation)
    }

    /// Known spares of a slot: holders of valid claims that are not the current holder and
    /// have not released that generation.
    pub fn spares(&self, d: &Cid, slot: u32) -> Vec<PeerId> {
        let current = self.holder(d, slot);
        let mut out: Vec<PeerId> = self
            .valid_claims(d, slot)
            .filter(|c| {
                current.is_none_or(|w| w.holder != c.holder || w.generation != c.generation)
            })
            .filter(|c| !self.released(d, slot, &c.holder, c.generation))
            .filter(|c| current.is_none_or(|w| w.holder != c.holder))
            .map(|c| c.holder)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The slots `peer` currently holds (current holder, not released), as
    /// `(DatasetCid, slot, generation)`, in ascending order.
    pub fn holdings(&self, peer: &PeerId) -> Vec<(Cid, u32, u32)> {
        let mut out = Vec::new();
        for (d, e) in &self.entries {
            for slot in e.claims.keys() {
                if let Some(w) = self.holder(d, *slot)
                    && w.holder == *peer
                    && !self.released(d, *slot, peer, w.generation)
                {
                    out.push((*d, *slot, w.generation));
                }
            }
        }
        out
    }

    /// Every stored claim of a dataset, by slot (for fact expiry).
    pub fn claims(&self, d: &Cid) -> impl Iterator<Item = (u32, &ClaimRecord)> {
        self.entries.get(d).into_iter().flat_map(|e| {
            e.claims
                .iter()
                .flat_map(|(s, l)| l.iter().map(move |c| (*s, c)))
        })
    }

    /// Drops everything known about a dataset (its facts expired).
    pub fn forget(&mut self, d: &Cid) {
        self.entries.remove(d);
    }
}
