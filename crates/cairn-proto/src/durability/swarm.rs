//! One swarm's state machine (durability.md §19): gossip validation and fact application,
//! beacons, anti-entropy, holdings queries, offers, and the S1 commands.
//!
//! Drive it with [`State::handle`]; see the module docs of [`super`] for the inputs and outputs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use cairn_core::Cid;
use cairn_core::durability::messages::{
    self as pb, DeclineReason, ErrorCode, OfferReason, ReleaseReason, request, response,
};
use cairn_core::durability::policy::Policy;
use cairn_core::durability::{
    Body, Envelope, FactId, GenesisError, Keypair, Kind, PeerId, SwarmId, shard_of, verify_genesis,
};
use prost::Message;

use super::beacon;
use super::datasets::{self, Datasets};
use super::health::{self, Health, HolderStatus, SlotInput};
use super::membership::{self, MemberState, Presence, View};
use super::placement::resolve_auto;
use super::sync::{self, AntiEntropy, Round, Scope, StoredFact};
use super::validate::{Origin, Outcome, Penalty, Topic, Verdict, topic_allows};
use super::{Now, Params, Rng};

/// Facts naming a retired or expired dataset live this long after retirement (§7.3).
const RETIRED_TTL_SECS: u64 = 7 * 86_400;
/// Superseded claims and releases live this long after the superseding claim (§7.3).
const SUPERSEDED_TTL_SECS: u64 = 30 * 86_400;
/// Version of the snapshot encoding.
pub const SNAPSHOT_VERSION: u32 = 1;

/// Timer keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKey {
    /// Publish the next beacon.
    Beacon,
    /// Start an anti-entropy round and expire facts.
    Sync,
}

/// Why a request failed at the transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestFailure {
    /// No answer within the timeout.
    Timeout,
    /// The connection or stream failed.
    Io,
}

/// What the driver feeds in.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Input {
    /// A gossipsub message on one of this swarm's topics.
    Gossip {
        /// The topic it arrived on.
        topic: Topic,
        /// The propagation source, if it is an Ed25519 peer.
        source: Option<PeerId>,
        /// The gossipsub message id, echoed in [`Output::Validate`].
        msg_id: Vec<u8>,
        /// The message bytes (a SignedEnvelope).
        data: Vec<u8>,
    },
    /// An inbound request (frame already decoded by the driver).
    Request {
        /// The remote peer, if it is an Ed25519 peer.
        peer: Option<PeerId>,
        /// The driver's id for the reply.
        id: u64,
        /// The request.
        request: pb::Request,
    },
    /// The answer to one of our [`Output::Send`]s.
    Response {
        /// The id we gave.
        id: u64,
        /// The response or the failure.
        result: Result<pb::Response, RequestFailure>,
    },
    /// A timer we scheduled fired.
    Timer(TimerKey),
    /// An action from the API.
    Command(Command),
    /// A connection to a peer opened.
    Connected(PeerId),
    /// The last connection to a peer closed.
    Disconnected(PeerId),
}

/// API actions (§17, slice S1).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Command {
    /// Publish our Join (the owner: without cert).
    Join {
        /// Our MemberCert (invite swarms).
        cert: Option<Envelope>,
        /// The issuer's admin cert, when the issuer is an admin.
        admin_cert: Option<Envelope>,
    },
    /// Announce a dataset. `policy: None` means `auto`.
    Announce {
        /// DatasetCid (the plain manifest CID in S1).
        dataset: Cid,
        /// ContentCid.
        content: Cid,
        /// Original size in bytes.
        size: u64,
        /// The plain manifest's blocksCount.
        blocks: u64,
        /// Explicit policy, or `None` for `auto`.
        policy: Option<Policy>,
        /// 0 = forever.
        retain_until: u64,
    },
    /// Claim slots we pulled and pinned, authorised by these SlotOffers (addressed to us).
    Claim {
        /// The offers.
        offers: Vec<Envelope>,
    },
    /// Release slots.
    Release {
        /// `(dataset, slot, generation, reason)`.
        entries: Vec<(Cid, u32, u32, ReleaseReason)>,
    },
    /// Retire a dataset (announcer, owner or admin).
    Retire {
        /// The dataset.
        dataset: Cid,
        /// Free text.
        reason: String,
    },
    /// Revoke a member (owner or admin).
    Revoke {
        /// The member.
        member: PeerId,
        /// Free text.
        reason: String,
    },
    /// `leave {graceful:false}`: release every held slot (LEAVING), then publish Leave.
    Leave,
    /// Answer an offer reported by [`Event::OfferReceived`].
    AnswerOffer {
        /// The request id of the offer.
        id: u64,
        /// Accept or decline.
        accept: bool,
        /// Why declined.
        reason: DeclineReason,
    },
    /// Our free quota for this swarm, for beacons.
    SetFreeBytes(u64),
}

/// What the driver does.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Output {
    /// Report a gossip message's validation result (exactly one per [`Input::Gossip`]).
    Validate {
        /// The message id.
        msg_id: Vec<u8>,
        /// Verdict, penalty and reason.
        outcome: Outcome,
    },
    /// Publish on a topic.
    Publish {
        /// The topic.
        topic: Topic,
        /// A SignedEnvelope.
        data: Vec<u8>,
    },
    /// Send a request.
    Send {
        /// The peer.
        peer: PeerId,
        /// Our id, echoed in [`Input::Response`].
        id: u64,
        /// The request.
        request: pb::Request,
    },
    /// Answer an inbound request.
    Respond {
        /// The driver's id.
        id: u64,
        /// The response.
        response: pb::Response,
    },
    /// Deliver `Timer(key)` at or after `at` (a `Now::mono` instant); replaces a pending one.
    Schedule {
        /// Which timer.
        key: TimerKey,
        /// When.
        at: Duration,
    },
    /// Subscribe to a topic.
    Subscribe(Topic),
    /// Unsubscribe from a topic.
    Unsubscribe(Topic),
    /// Persist a new fact (§16 `facts`).
    FactStored {
        /// Its scope.
        scope: Scope,
        /// Its id.
        id: FactId,
        /// The envelope bytes.
        bytes: Vec<u8>,
        /// Its expiry, if known.
        expires_at: Option<u64>,
    },
    /// A stored fact's expiry changed.
    FactExpiry {
        /// Its scope.
        scope: Scope,
        /// Its id.
        id: FactId,
        /// The new expiry.
        expires_at: Option<u64>,
    },
    /// Delete a stored fact.
    FactDropped {
        /// Its scope.
        scope: Scope,
        /// Its id.
        id: FactId,
    },
    /// Something the API or the logs care about.
    Event(Event),
}

/// Notifications.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // transient values, moved once
pub enum Event {
    /// A member joined.
    MemberJoined(PeerId),
    /// A member departed.
    MemberDeparted(PeerId),
    /// A member was revoked.
    MemberRevoked(PeerId),
    /// The swarm policy changed.
    PolicyChanged,
    /// A dataset was announced (by anyone).
    DatasetAnnounced(Cid),
    /// A dataset was retired.
    DatasetRetired(Cid),
    /// Claims or releases of a dataset changed: re-evaluate health, spares, held slots.
    SlotsChanged(Cid),
    /// Our announce went out with this resolved policy (REST 202).
    Announced {
        /// The dataset.
        dataset: Cid,
        /// The resolved policy.
        policy: Policy,
    },
    /// A command could not be carried out (REST 4xx).
    Refused {
        /// Which command.
        command: &'static str,
        /// Why.
        reason: String,
    },
    /// A valid SlotOffer for us arrived; answer with [`Command::AnswerOffer`] after checking
    /// quota (pull, pin and [`Command::Claim`] follow an accept).
    OfferReceived {
        /// The request id to answer.
        id: u64,
        /// The offer.
        offer: Envelope,
        /// Its dataset.
        dataset: Cid,
        /// Its slot.
        slot: u32,
        /// Its generation.
        generation: u32,
    },
    /// A member's holdings disagree with our claim table (from a HoldingsQuery answer).
    HoldingsDiffer {
        /// The member.
        peer: PeerId,
        /// Slots it says it holds that our table does not give it.
        extra: Vec<(Cid, u32, u32)>,
        /// Slots our table gives it that it does not list.
        missing: Vec<(Cid, u32, u32)>,
    },
}

/// Why a snapshot cannot be restored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// Not a snapshot, or an unknown version.
    #[error("undecodable snapshot")]
    Undecodable,
    /// The genesis inside is invalid.
    #[error(transparent)]
    Genesis(#[from] GenesisError),
}

/// The persisted form (versioned prost message).
#[derive(Clone, PartialEq, prost::Message)]
struct Snapshot {
    #[prost(uint32, tag = "1")]
    version: u32,
    #[prost(message, optional, tag = "2")]
    genesis: Option<pb::GenesisRecord>,
    #[prost(uint64, tag = "3")]
    incarnation: u64,
    #[prost(bool, tag = "4")]
    storer: bool,
    #[prost(bytes = "vec", repeated, tag = "5")]
    facts: Vec<Vec<u8>>,
    #[prost(message, repeated, tag = "6")]
    members: Vec<MemberLocal>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    expired_datasets: Vec<Vec<u8>>,
    #[prost(uint64, tag = "8")]
    free_bytes: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct MemberLocal {
    #[prost(bytes = "vec", tag = "1")]
    peer: Vec<u8>,
    #[prost(uint64, tag = "2")]
    first_seen: u64,
    #[prost(uint64, tag = "3")]
    last_signal: u64,
}

#[derive(Debug, Clone)]
enum Pending {
    Sync { peer: PeerId, round: Round },
    Holdings { peer: PeerId },
}

/// One joined swarm.
#[derive(Debug)]
pub struct State {
    me: Keypair,
    my_id: PeerId,
    params: Params,
    storer: bool,
    view: View,
    datasets: Datasets,
    facts: AntiEntropy,
    fact_datasets: BTreeMap<FactId, Vec<Cid>>,
    dataset_facts: BTreeMap<Cid, BTreeSet<FactId>>,
    expired_datasets: BTreeSet<Cid>,
    rng: Rng,
    sender: beacon::Sender,
    free_bytes: u64,
    connected: BTreeSet<PeerId>,
    next_id: u64,
    pending: BTreeMap<u64, Pending>,
    offers: BTreeMap<u64, ()>,
}

impl State {
    /// A state for the swarm of `genesis`, for node `me` at `incarnation` (persisted, already
    /// bumped for this start). Returns the first outputs: subscriptions and timers. Publish the
    /// Join with [`Command::Join`].
    pub fn new(
        genesis: &pb::GenesisRecord,
        me: Keypair,
        storer: bool,
        incarnation: u64,
        params: Params,
        seed: u64,
        now: Now,
    ) -> Result<(State, Vec<Output>), GenesisError> {
        let g = verify_genesis(genesis)?;
        let view = View::new(g, now.unix);
        let mut state = State {
            my_id: me.peer_id(),
            me,
            params,
            storer,
            view,
            datasets: Datasets::new(),
            facts: AntiEntropy::new(),
            fact_datasets: BTreeMap::new(),
            dataset_facts: BTreeMap::new(),
            expired_datasets: BTreeSet::new(),
            rng: Rng::new(seed),
            sender: beacon::Sender::new(incarnation),
            free_bytes: 0,
            connected: BTreeSet::new(),
            next_id: 1,
            pending: BTreeMap::new(),
            offers: BTreeMap::new(),
        };
        let mut out = Vec::new();
        if storer {
            out.push(Output::Subscribe(Topic::Ctl));
            for s in 0..state.view.policy().dataset_shards.max(1) {
                out.push(Output::Subscribe(Topic::Shard(s)));
            }
            out.push(Output::Schedule {
                key: TimerKey::Beacon,
                at: now.mono,
            });
        }
        let spread = state.params.sync_interval_secs.saturating_mul(1000);
        let first_sync = now.mono + Duration::from_millis(state.rng.below(spread));
        out.push(Output::Schedule {
            key: TimerKey::Sync,
            at: first_sync,
        });
        Ok((state, out))
    }

    /// The single entry point: feed one input, get the outputs.
    pub fn handle(&mut self, now: Now, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Gossip {
                topic,
                source,
                msg_id,
                data,
            } => {
                let mut outcome = self.ingest(now, Origin::Gossip, topic, &data, &mut out);
                if outcome.penalty == Penalty::NonMemberSource
                    && source.is_some_and(|s| self.view.is_active(&s))
                {
                    outcome.penalty = Penalty::None;
                }
                out.push(Output::Validate { msg_id, outcome });
            }
            Input::Request { peer, id, request } => {
                self.on_request(now, peer, id, request, &mut out)
            }
            Input::Response { id, result } => self.on_response(now, id, result, &mut out),
            Input::Timer(TimerKey::Beacon) => self.on_beacon_timer(now, &mut out),
            Input::Timer(TimerKey::Sync) => self.on_sync_timer(now, &mut out),
            Input::Command(c) => self.on_command(now, c, &mut out),
            Input::Connected(p) => {
                self.connected.insert(p);
            }
            Input::Disconnected(p) => {
                self.connected.remove(&p);
            }
        }
        out
    }

    // ------------------------------------------------------------------------------------------
    // Queries

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.my_id
    }

    /// The swarm id.
    pub fn swarm_id(&self) -> SwarmId {
        self.view.swarm_id()
    }

    /// The member view.
    pub fn view(&self) -> &View {
        &self.view
    }

    /// The dataset table.
    pub fn datasets(&self) -> &Datasets {
        &self.datasets
    }

    /// The fact store.
    pub fn facts(&self) -> &AntiEntropy {
        &self.facts
    }

    /// The node-local parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Our incarnation.
    pub fn incarnation(&self) -> u64 {
        self.sender.incarnation
    }

    /// The eligible storers now (placement candidates, §5), this node included if it qualifies.
    pub fn eligible_storers(&self, now: Now) -> Vec<PeerId> {
        self.view.eligible_storers(now.unix, &self.params)
    }

    /// The slots this node currently holds.
    pub fn my_holdings(&self) -> Vec<(Cid, u32, u32)> {
        self.datasets.holdings(&self.my_id)
    }

    /// The health of a dataset in the local view (§11), or `None` if it is unknown.
    pub fn health(&self, now: Now, d: &Cid) -> Option<Health> {
        let a = self.datasets.announce(d)?;
        let slots = (0..a.policy.slots())
            .map(|slot| {
                let claim = self.datasets.holder(d, slot).map(|w| {
                    let status = match self.view.member(&w.holder).map(|m| m.state) {
                        Some(MemberState::Departed) => HolderStatus::Departed,
                        Some(MemberState::Revoked) | None => HolderStatus::Revoked,
                        Some(MemberState::Active) => {
                            match self.view.presence(&w.holder, now.unix, &self.params) {
                                Some(Presence::Present) => HolderStatus::Present,
                                Some(Presence::Lost) => HolderStatus::Lost,
                                _ => HolderStatus::Absent,
                            }
                        }
                    };
                    (w.holder, w.generation, status)
                });
                SlotInput {
                    released: claim.is_some_and(|(h, g, _)| self.datasets.released(d, slot, &h, g)),
                    claim,
                    challenge_failed: false,
                    repairing: false,
                    spares: self.datasets.spares(d, slot).len() as u32,
                }
            })
            .collect();
        let input = health::Input {
            policy: a.policy,
            announced_at: a.announced_at,
            claim_timeout_secs: self.params.claim_timeout_secs,
            slots,
            providers: 0,
        };
        Some(health::compute(&input, now.unix))
    }

    /// Signs a SlotOffer (the placement coordinator, or a holder handing off). The offer to
    /// ourselves is accepted locally with [`Command::Claim`], without a request.
    #[allow(clippy::too_many_arguments)]
    pub fn sign_offer(
        &self,
        dataset: &Cid,
        slot: u32,
        generation: u32,
        assignee: &PeerId,
        reason: OfferReason,
        sources: &[PeerId],
        expires_at: u64,
    ) -> Envelope {
        let offer = pb::SlotOffer {
            dataset_cid: dataset.to_bytes().to_vec(),
            slot,
            generation,
            assignee: assignee.as_bytes().to_vec(),
            reason: reason as i32,
            round_ref: Vec::new(),
            sources: sources.iter().map(|p| p.as_bytes().to_vec()).collect(),
            expires_at,
        };
        Envelope::sign_message(&self.me, self.swarm_id(), Kind::SlotOffer, &offer)
    }

    /// A request to send a SlotOffer to its assignee.
    pub fn offer_request(offer: &Envelope) -> pb::Request {
        pb::Request {
            body: Some(request::Body::Offer(offer.to_proto())),
        }
    }

    // ------------------------------------------------------------------------------------------
    // Facts

    fn scope_of(topic: Topic) -> Scope {
        match topic {
            Topic::Ctl => Scope::Ctl,
            Topic::Shard(s) => Scope::Shard(s),
        }
    }

    /// Validates and applies one envelope; stores it if it is a fact.
    fn ingest(
        &mut self,
        now: Now,
        origin: Origin,
        topic: Topic,
        data: &[u8],
        out: &mut Vec<Output>,
    ) -> Outcome {
        let env = match Envelope::decode(data) {
            Ok(e) => e,
            Err(e) => return Outcome::from_envelope_error(&e),
        };
        if *env.swarm_id() != self.swarm_id() {
            return Outcome::mismatch("envelope for another swarm");
        }
        if !topic_allows(topic, env.kind()) {
            return Outcome::mismatch("kind not allowed on this topic");
        }
        if self.facts.contains(&env.id()) {
            return Outcome::ignore("duplicate fact");
        }
        let body = match env.body() {
            Ok(b) => b,
            Err(e) => return Outcome::from_envelope_error(&e),
        };
        let signer = env.signer();
        let result = match env.kind() {
            Kind::Beacon => {
                let Body::Beacon(b) = &body else {
                    return Outcome::malformed("beacon body");
                };
                let r = self
                    .view
                    .apply_beacon(now.unix, origin, signer, b, &self.params);
                if r.is_ok() {
                    self.check_beacon_digest(signer, b, out);
                }
                // Beacons are not facts.
                return r.err().unwrap_or(Outcome::ACCEPT);
            }
            k if membership::is_membership_kind(k) => {
                self.view.apply(now.unix, origin, &env, &body).map(|c| {
                    match c {
                        membership::Change::Joined(p) => {
                            out.push(Output::Event(Event::MemberJoined(p)))
                        }
                        membership::Change::Departed(p) => {
                            out.push(Output::Event(Event::MemberDeparted(p)))
                        }
                        membership::Change::Revoked(p) => {
                            out.push(Output::Event(Event::MemberRevoked(p)))
                        }
                        membership::Change::Policy => out.push(Output::Event(Event::PolicyChanged)),
                        membership::Change::None => {}
                    }
                    Vec::new()
                })
            }
            Kind::DatasetAnnounce | Kind::DatasetRetire | Kind::SlotClaim | Kind::SlotRelease => {
                let Topic::Shard(shard) = topic else {
                    return Outcome::mismatch("dataset fact on ctl");
                };
                let named = named_datasets(&body);
                if named.iter().any(|d| self.expired_datasets.contains(d)) {
                    return Outcome::ignore("fact of an expired dataset");
                }
                self.datasets
                    .apply(now.unix, origin, &env, &body, shard, &self.view)
                    .map(|c| {
                        match c {
                            datasets::Change::Announced(d) => {
                                out.push(Output::Event(Event::DatasetAnnounced(d)))
                            }
                            datasets::Change::Retired(d) => {
                                out.push(Output::Event(Event::DatasetRetired(d)))
                            }
                            datasets::Change::Slots(ds) => {
                                out.extend(
                                    ds.into_iter()
                                        .map(|d| Output::Event(Event::SlotsChanged(d))),
                                );
                            }
                        }
                        named
                    })
            }
            // Slice S2 kinds: neither processed nor punished.
            _ => return Outcome::ignore("kind not processed in slice S1"),
        };
        let named = match result {
            Ok(n) => n,
            Err(o) => return o,
        };
        self.view.signal(&signer, now.unix);
        let scope = Self::scope_of(topic);
        let id = env.id();
        self.facts.scope_mut(scope).insert(
            id,
            StoredFact {
                bytes: env.as_bytes().to_vec(),
                expires_at: None,
            },
        );
        if !named.is_empty() {
            for d in &named {
                self.dataset_facts.entry(*d).or_default().insert(id);
            }
            self.fact_datasets.insert(id, named.clone());
        }
        let expires_at = self.fact_expiry(&id);
        if expires_at.is_some_and(|t| t <= now.unix) {
            self.drop_fact(scope, &id);
            return Outcome::ignore("expired fact");
        }
        self.facts.scope_mut(scope).set_expiry(&id, expires_at);
        out.push(Output::FactStored {
            scope,
            id,
            bytes: env.as_bytes().to_vec(),
            expires_at,
        });
        for d in &named {
            self.refresh_expiry(d, scope, id, out);
        }
        Outcome::ACCEPT
    }

    fn drop_fact(&mut self, scope: Scope, id: &FactId) {
        self.facts.scope_mut(scope).remove(id);
        if let Some(ds) = self.fact_datasets.remove(id) {
            for d in ds {
                if let Some(set) = self.dataset_facts.get_mut(&d) {
                    set.remove(id);
                }
            }
        }
    }

    /// Recomputes the expiry of every other fact naming `d`.
    fn refresh_expiry(&mut self, d: &Cid, scope: Scope, except: FactId, out: &mut Vec<Output>) {
        let ids: Vec<FactId> = self
            .dataset_facts
            .get(d)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        for id in ids {
            if id == except {
                continue;
            }
            let new = self.fact_expiry(&id);
            let set = self.facts.scope_mut(scope);
            if set.get(&id).is_some_and(|f| f.expires_at != new) {
                set.set_expiry(&id, new);
                out.push(Output::FactExpiry {
                    scope,
                    id,
                    expires_at: new,
                });
            }
        }
    }

    /// When a dataset's facts expire by retention: min(retain_until, retire) + 7 d.
    fn retention_expiry(&self, d: &Cid) -> Option<u64> {
        let a = self.datasets.announce(d)?;
        let by_retain =
            (a.retain_until != 0).then(|| a.retain_until.saturating_add(RETIRED_TTL_SECS));
        let by_retire = self
            .datasets
            .retire(d)
            .map(|r| r.issued_at.saturating_add(RETIRED_TTL_SECS));
        match (by_retain, by_retire) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// The expiry of a fact (§7.3): retention of the datasets it names, and supersession for
    /// claims and releases. A fact with several entries expires when its last entry does.
    fn fact_expiry(&self, id: &FactId) -> Option<u64> {
        let ds = self.fact_datasets.get(id)?;
        let mut latest = 0u64;
        for d in ds {
            let retention = self.retention_expiry(d);
            let superseded = self.superseded_expiry(id, d);
            let e = match (retention, superseded) {
                (Some(x), Some(y)) => x.min(y),
                (x, y) => x.or(y)?,
            };
            latest = latest.max(e);
        }
        Some(latest)
    }

    /// For a claim or release fact: 30 d after the superseding claim's `issued_at` once every
    /// entry of it in `d` is superseded; `None` otherwise (and for other kinds).
    fn superseded_expiry(&self, id: &FactId, d: &Cid) -> Option<u64> {
        let mut any = false;
        let mut latest = 0u64;
        let winner_at = |slot: u32| -> Option<(u32, PeerId, u64)> {
            let w = self.datasets.holder(d, slot)?;
            let at = self
                .datasets
                .valid_claims(d, slot)
                .filter(|c| c.holder == w.holder && c.generation == w.generation)
                .map(|c| c.issued_at)
                .min()?;
            Some((w.generation, w.holder, at))
        };
        for (slot, c) in self.datasets.claims(d).filter(|(_, c)| c.fact == *id) {
            any = true;
            let (g, h, at) = winner_at(slot)?;
            if g == c.generation && h == c.holder {
                return None;
            }
            latest = latest.max(at.saturating_add(SUPERSEDED_TTL_SECS));
        }
        let announce = self.datasets.announce(d)?;
        for slot in 0..announce.policy.slots() {
            for r in self
                .datasets
                .releases(d, slot)
                .iter()
                .filter(|r| r.fact == *id)
            {
                any = true;
                let (g, _, at) = winner_at(slot)?;
                if g <= r.generation {
                    return None;
                }
                latest = latest.max(at.saturating_add(SUPERSEDED_TTL_SECS));
            }
        }
        any.then_some(latest)
    }

    fn expire(&mut self, now: Now, out: &mut Vec<Output>) {
        let scopes: Vec<Scope> = self.facts.scopes().map(|(s, _)| *s).collect();
        let mut touched = BTreeSet::new();
        for scope in scopes {
            let ids = self
                .facts
                .scope(scope)
                .map(|s| s.expired(now.unix))
                .unwrap_or_default();
            for id in ids {
                if let Some(ds) = self.fact_datasets.get(&id) {
                    touched.extend(ds.iter().copied());
                }
                self.drop_fact(scope, &id);
                out.push(Output::FactDropped { scope, id });
            }
        }
        for d in touched {
            if self.dataset_facts.get(&d).is_none_or(BTreeSet::is_empty) {
                self.dataset_facts.remove(&d);
                self.datasets.forget(&d);
                self.expired_datasets.insert(d);
            }
        }
    }

    // ------------------------------------------------------------------------------------------
    // Beacons

    fn on_beacon_timer(&mut self, now: Now, out: &mut Vec<Output>) {
        if !self.storer || !self.view.is_active(&self.my_id) {
            return;
        }
        let held = self.my_holdings();
        let b = self.sender.next(
            now.unix,
            self.storer,
            beacon::free_log2(self.free_bytes),
            &held,
            0,
        );
        let env = Envelope::sign_message(&self.me, self.swarm_id(), Kind::Beacon, &b);
        // Our own beacon is a signal; rate limits do not apply to ourselves.
        let _ = self.view.apply_beacon(
            now.unix,
            Origin::Local,
            self.my_id,
            &b,
            &Params {
                beacon_interval_secs: Some(0),
                ..self.params.clone()
            },
        );
        out.push(Output::Publish {
            topic: Topic::Ctl,
            data: env.as_bytes().to_vec(),
        });
        let h = self.view.beacon_interval_secs(&self.params);
        let next = beacon::jittered_interval_ms(h, &mut self.rng);
        out.push(Output::Schedule {
            key: TimerKey::Beacon,
            at: now.mono + Duration::from_millis(next),
        });
    }

    fn check_beacon_digest(&mut self, peer: PeerId, b: &pb::Beacon, out: &mut Vec<Output>) {
        if peer == self.my_id || !self.storer {
            return;
        }
        let claimed = self.datasets.holdings(&peer);
        if !beacon::digest_mismatch(&b.holdings_digest, &claimed) {
            return;
        }
        if self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Holdings { peer: q } if *q == peer))
        {
            return;
        }
        let id = self.fresh_id();
        self.pending.insert(id, Pending::Holdings { peer });
        let req = pb::HoldingsQuery {
            swarm_id: self.swarm_id().as_bytes().to_vec(),
            shard_mask: Vec::new(),
        };
        out.push(Output::Send {
            peer,
            id,
            request: pb::Request {
                body: Some(request::Body::Holdings(req)),
            },
        });
    }

    // ------------------------------------------------------------------------------------------
    // Sync

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn on_sync_timer(&mut self, now: Now, out: &mut Vec<Output>) {
        self.expire(now, out);
        let partners: Vec<PeerId> = self
            .connected
            .iter()
            .filter(|p| **p != self.my_id && self.view.is_active(p))
            .copied()
            .collect();
        if !partners.is_empty()
            && !self
                .pending
                .values()
                .any(|p| matches!(p, Pending::Sync { .. }))
        {
            let peer = partners[self.rng.below(partners.len() as u64) as usize];
            let mut scopes = vec![Scope::Ctl];
            if self.storer {
                scopes.extend((0..self.view.policy().dataset_shards.max(1)).map(Scope::Shard));
            }
            self.start_sync(peer, scopes, out);
        }
        let base = self.params.sync_interval_secs.saturating_mul(1000);
        let next = base - base / 5 + self.rng.below(2 * (base / 5) + 1);
        out.push(Output::Schedule {
            key: TimerKey::Sync,
            at: now.mono + Duration::from_millis(next),
        });
    }

    /// Starts one pull round per scope with `peer`.
    fn start_sync(&mut self, peer: PeerId, scopes: Vec<Scope>, out: &mut Vec<Output>) {
        for scope in scopes {
            let swarm = self.swarm_id();
            let (round, req) = Round::start(swarm, scope, self.facts.scope_mut(scope));
            let id = self.fresh_id();
            self.pending.insert(id, Pending::Sync { peer, round });
            out.push(Output::Send {
                peer,
                id,
                request: pb::Request {
                    body: Some(request::Body::Sync(req)),
                },
            });
        }
    }

    /// A peer pulled our `ctl` facts and its root differs from ours: it may hold facts we
    /// lack, above all its own Join when that gossip was lost (nobody else would pull from a
    /// node they do not know as a member). Pull back from it once, if no round with it is
    /// already running. Sync stays pull-only on the wire (§7.3); this only schedules our own
    /// round early.
    fn pull_back(&mut self, peer: PeerId, their_root: &[u8], out: &mut Vec<Output>) {
        let ours = self.facts.scope_mut(Scope::Ctl).root();
        let busy = self
            .pending
            .values()
            .any(|p| matches!(p, Pending::Sync { peer: q, .. } if *q == peer));
        if their_root != ours.as_slice() && !busy && peer != self.my_id {
            self.start_sync(peer, vec![Scope::Ctl], out);
        }
    }

    fn on_response(
        &mut self,
        now: Now,
        id: u64,
        result: Result<pb::Response, RequestFailure>,
        out: &mut Vec<Output>,
    ) {
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let Ok(resp) = result else { return };
        match (p, resp.body) {
            (Pending::Sync { peer, mut round }, Some(response::Body::Sync(r))) => {
                let scope = round.scope();
                let topic = match scope {
                    Scope::Ctl => Topic::Ctl,
                    Scope::Shard(s) => Topic::Shard(s),
                };
                let Ok(next) = round.on_response(self.facts.scope_mut(scope), &r) else {
                    return;
                };
                self.ingest_synced(now, topic, next.facts, out);
                if let Some(req) = next.request {
                    // The ids we hold changed: rebuild the have from the current set.
                    let req = match req.step {
                        Some(pb::sync_request::Step::Have(_)) => {
                            rebuild_have(req, self.facts.scope_mut(scope))
                        }
                        _ => req,
                    };
                    let nid = self.fresh_id();
                    self.pending.insert(nid, Pending::Sync { peer, round });
                    out.push(Output::Send {
                        peer,
                        id: nid,
                        request: pb::Request {
                            body: Some(request::Body::Sync(req)),
                        },
                    });
                }
            }
            (Pending::Holdings { peer }, Some(response::Body::Holdings(h))) => {
                let mut theirs: Vec<(Cid, u32, u32)> = h
                    .slots
                    .iter()
                    .filter_map(|s| {
                        Cid::from_bytes(&s.dataset_cid)
                            .ok()
                            .map(|d| (d, s.slot, s.generation))
                    })
                    .collect();
                theirs.sort();
                let ours = self.datasets.holdings(&peer);
                let extra: Vec<_> = theirs
                    .iter()
                    .filter(|x| !ours.contains(x))
                    .copied()
                    .collect();
                let missing: Vec<_> = ours
                    .iter()
                    .filter(|x| !theirs.contains(x))
                    .copied()
                    .collect();
                if !extra.is_empty() || !missing.is_empty() {
                    out.push(Output::Event(Event::HoldingsDiffer {
                        peer,
                        extra,
                        missing,
                    }));
                }
            }
            _ => {}
        }
    }

    /// Validates facts from a sync page like gossip (no time window). Facts that depend on
    /// others of the same page (a claim before its announce) are retried until nothing more
    /// is accepted.
    fn ingest_synced(
        &mut self,
        now: Now,
        topic: Topic,
        facts: Vec<pb::SignedEnvelope>,
        out: &mut Vec<Output>,
    ) {
        let mut todo: Vec<Vec<u8>> = facts.iter().map(Message::encode_to_vec).collect();
        loop {
            let before = todo.len();
            todo.retain(|bytes| {
                self.ingest(now, Origin::Sync, topic, bytes, out).verdict == Verdict::Reject
            });
            if todo.is_empty() || todo.len() == before {
                break;
            }
        }
    }

    fn on_request(
        &mut self,
        now: Now,
        peer: Option<PeerId>,
        id: u64,
        req: pb::Request,
        out: &mut Vec<Output>,
    ) {
        let member = peer.is_some_and(|p| self.view.is_active(&p));
        let err = |code: ErrorCode, msg: &str| pb::Response {
            body: Some(response::Body::Error(pb::RpcError {
                code: code as i32,
                message: msg.into(),
            })),
        };
        let response = match req.body {
            Some(request::Body::Sync(s)) => {
                let scope = Scope::from_wire(s.scope, s.shard);
                if s.swarm_id != self.swarm_id().as_bytes() {
                    err(ErrorCode::NotMember, "unknown swarm")
                } else if scope != Some(Scope::Ctl) && !member {
                    err(ErrorCode::NotMember, "not a member")
                } else if let Some(scope) = scope {
                    if let (Some(p), Scope::Ctl, Some(pb::sync_request::Step::Root(root))) =
                        (peer, scope, &s.step)
                    {
                        self.pull_back(p, root, out);
                    }
                    match sync::answer(self.facts.scope_mut(scope), &s) {
                        Ok(r) => pb::Response {
                            body: Some(response::Body::Sync(r)),
                        },
                        Err(_) => err(ErrorCode::Malformed, "malformed sync request"),
                    }
                } else {
                    err(ErrorCode::Malformed, "unknown scope")
                }
            }
            Some(request::Body::Holdings(q)) => {
                if q.swarm_id != self.swarm_id().as_bytes() || !member {
                    err(ErrorCode::NotMember, "not a member")
                } else {
                    let shards = self.view.policy().dataset_shards;
                    let slots = self
                        .my_holdings()
                        .into_iter()
                        .filter(|(d, _, _)| beacon::mask_has(&q.shard_mask, shard_of(d, shards)))
                        .map(|(d, s, g)| pb::SlotRef {
                            dataset_cid: d.to_bytes().to_vec(),
                            slot: s,
                            generation: g,
                        })
                        .collect();
                    pb::Response {
                        body: Some(response::Body::Holdings(pb::Holdings {
                            incarnation: self.sender.incarnation,
                            slots,
                        })),
                    }
                }
            }
            Some(request::Body::Offer(o)) => {
                if !member {
                    err(ErrorCode::NotMember, "not a member")
                } else {
                    match self.check_offer(&o) {
                        Ok((offer, dataset, slot, generation)) => {
                            self.offers.insert(id, ());
                            out.push(Output::Event(Event::OfferReceived {
                                id,
                                offer,
                                dataset,
                                slot,
                                generation,
                            }));
                            return;
                        }
                        Err(Ok(reason)) => pb::Response {
                            body: Some(response::Body::OfferReply(pb::OfferReply {
                                accept: false,
                                reason: reason as i32,
                            })),
                        },
                        Err(Err(code)) => err(code, "offer refused"),
                    }
                }
            }
            Some(_) => err(ErrorCode::Unspecified, "not supported in slice S1"),
            None => err(ErrorCode::Malformed, "empty request"),
        };
        let _ = now;
        out.push(Output::Respond { id, response });
    }

    /// Checks an offer to us: a decline reason, or an error code, or the parsed offer.
    #[allow(clippy::type_complexity)]
    fn check_offer(
        &self,
        o: &pb::SignedEnvelope,
    ) -> Result<(Envelope, Cid, u32, u32), Result<DeclineReason, ErrorCode>> {
        let env = Envelope::from_proto(o).map_err(|_| Err(ErrorCode::Malformed))?;
        if *env.swarm_id() != self.swarm_id() || env.kind() != Kind::SlotOffer {
            return Err(Err(ErrorCode::Malformed));
        }
        let Ok(Body::SlotOffer(offer)) = env.body() else {
            return Err(Err(ErrorCode::Malformed));
        };
        if offer.assignee != self.my_id.as_bytes() {
            return Err(Ok(DeclineReason::Invalid));
        }
        if !self.storer {
            return Err(Ok(DeclineReason::NotInterested));
        }
        let d = Cid::from_bytes(&offer.dataset_cid).map_err(|_| Err(ErrorCode::Malformed))?;
        let Some(a) = self.datasets.announce(&d) else {
            return Err(Err(ErrorCode::UnknownDataset));
        };
        if self.datasets.is_retired(&d) || offer.slot >= a.policy.slots() {
            return Err(Ok(DeclineReason::Invalid));
        }
        let ok = match OfferReason::try_from(offer.reason) {
            Ok(OfferReason::Placement) => offer.generation == 0 && env.signer() == a.announcer,
            Ok(OfferReason::Handoff) => offer.generation.checked_sub(1).is_some_and(|prev| {
                self.datasets
                    .valid_claims(&d, offer.slot)
                    .any(|c| c.holder == env.signer() && c.generation == prev)
            }),
            _ => false,
        };
        if !ok {
            return Err(Ok(DeclineReason::Invalid));
        }
        if self.view.member(&self.my_id).is_some_and(|m| m.exiting()) {
            return Err(Ok(DeclineReason::Exiting));
        }
        Ok((env, d, offer.slot, offer.generation))
    }

    // ------------------------------------------------------------------------------------------
    // Commands

    fn refuse(out: &mut Vec<Output>, command: &'static str, reason: impl Into<String>) {
        out.push(Output::Event(Event::Refused {
            command,
            reason: reason.into(),
        }));
    }

    /// Signs, applies locally and publishes. Returns whether it was accepted.
    fn publish(
        &mut self,
        now: Now,
        topic: Topic,
        kind: Kind,
        payload: Vec<u8>,
        command: &'static str,
        out: &mut Vec<Output>,
    ) -> bool {
        let env = Envelope::sign(&self.me, self.swarm_id(), kind, payload);
        let outcome = self.ingest(now, Origin::Local, topic, env.as_bytes(), out);
        if outcome.verdict == Verdict::Accept {
            out.push(Output::Publish {
                topic,
                data: env.as_bytes().to_vec(),
            });
            true
        } else {
            Self::refuse(out, command, outcome.reason);
            false
        }
    }

    fn shard_topic(&self, d: &Cid) -> Topic {
        Topic::Shard(shard_of(d, self.view.policy().dataset_shards))
    }

    fn on_command(&mut self, now: Now, c: Command, out: &mut Vec<Output>) {
        match c {
            Command::Join { cert, admin_cert } => {
                let join = pb::Join {
                    cert: cert.map(|c| c.to_proto()),
                    admin_cert: admin_cert.map(|c| c.to_proto()),
                    storer: self.storer,
                    incarnation: self.sender.incarnation,
                    issued_at: now.unix,
                };
                self.publish(
                    now,
                    Topic::Ctl,
                    Kind::Join,
                    join.encode_to_vec(),
                    "join",
                    out,
                );
            }
            Command::Announce {
                dataset,
                content,
                size,
                blocks,
                policy,
                retain_until,
            } => {
                let policy = match policy {
                    None => {
                        let s = self.eligible_storers(now).len() as u32;
                        match resolve_auto(s, blocks, self.params.erasure_enabled) {
                            Ok(p) => p,
                            Err(e) => return Self::refuse(out, "announce", e.to_string()),
                        }
                    }
                    Some(Policy::Erasure { .. }) if !self.params.erasure_enabled => {
                        return Self::refuse(
                            out,
                            "announce",
                            "erasure is not available in slice S1",
                        );
                    }
                    Some(p) => p,
                };
                let a = pb::DatasetAnnounce {
                    dataset_cid: dataset.to_bytes().to_vec(),
                    content_cid: content.to_bytes().to_vec(),
                    size,
                    policy: Some(policy.to_proto()),
                    slots: policy.slots(),
                    shard: shard_of(&dataset, self.view.policy().dataset_shards),
                    retain_until,
                    announced_at: now.unix,
                };
                let topic = self.shard_topic(&dataset);
                if self.publish(
                    now,
                    topic,
                    Kind::DatasetAnnounce,
                    a.encode_to_vec(),
                    "announce",
                    out,
                ) {
                    out.push(Output::Event(Event::Announced { dataset, policy }));
                }
            }
            Command::Claim { offers } => {
                let mut by_shard: BTreeMap<u32, Vec<pb::ClaimEntry>> = BTreeMap::new();
                for o in offers {
                    let Ok(Body::SlotOffer(offer)) = o.body() else {
                        return Self::refuse(out, "claim", "not a SlotOffer");
                    };
                    let Ok(d) = Cid::from_bytes(&offer.dataset_cid) else {
                        return Self::refuse(out, "claim", "bad dataset CID");
                    };
                    by_shard
                        .entry(shard_of(&d, self.view.policy().dataset_shards))
                        .or_default()
                        .push(pb::ClaimEntry {
                            dataset_cid: offer.dataset_cid.clone(),
                            slot: offer.slot,
                            generation: offer.generation,
                            authorization: Some(o.to_proto()),
                        });
                }
                for (shard, entries) in by_shard {
                    let claim = pb::SlotClaim {
                        entries,
                        incarnation: self.sender.incarnation,
                        issued_at: now.unix,
                    };
                    self.publish(
                        now,
                        Topic::Shard(shard),
                        Kind::SlotClaim,
                        claim.encode_to_vec(),
                        "claim",
                        out,
                    );
                }
            }
            Command::Release { entries } => self.release(now, entries, out),
            Command::Retire { dataset, reason } => {
                let r = pb::DatasetRetire {
                    dataset_cid: dataset.to_bytes().to_vec(),
                    issued_at: now.unix,
                    reason,
                };
                let topic = self.shard_topic(&dataset);
                self.publish(
                    now,
                    topic,
                    Kind::DatasetRetire,
                    r.encode_to_vec(),
                    "retire",
                    out,
                );
            }
            Command::Revoke { member, reason } => {
                let r = pb::Revoke {
                    member: member.as_bytes().to_vec(),
                    issued_at: now.unix,
                    reason,
                };
                self.publish(
                    now,
                    Topic::Ctl,
                    Kind::Revoke,
                    r.encode_to_vec(),
                    "revoke",
                    out,
                );
            }
            Command::Leave => {
                let entries = self
                    .my_holdings()
                    .into_iter()
                    .map(|(d, s, g)| (d, s, g, ReleaseReason::Leaving))
                    .collect();
                self.release(now, entries, out);
                let l = pb::Leave {
                    issued_at: now.unix,
                    reason: String::new(),
                };
                self.publish(
                    now,
                    Topic::Ctl,
                    Kind::Leave,
                    l.encode_to_vec(),
                    "leave",
                    out,
                );
            }
            Command::AnswerOffer { id, accept, reason } => {
                if self.offers.remove(&id).is_some() {
                    let reply = pb::OfferReply {
                        accept,
                        reason: if accept { 0 } else { reason as i32 },
                    };
                    out.push(Output::Respond {
                        id,
                        response: pb::Response {
                            body: Some(response::Body::OfferReply(reply)),
                        },
                    });
                }
            }
            Command::SetFreeBytes(b) => self.free_bytes = b,
        }
    }

    fn release(
        &mut self,
        now: Now,
        entries: Vec<(Cid, u32, u32, ReleaseReason)>,
        out: &mut Vec<Output>,
    ) {
        let mut by_shard: BTreeMap<u32, Vec<pb::ReleaseEntry>> = BTreeMap::new();
        for (d, slot, generation, reason) in entries {
            by_shard
                .entry(shard_of(&d, self.view.policy().dataset_shards))
                .or_default()
                .push(pb::ReleaseEntry {
                    dataset_cid: d.to_bytes().to_vec(),
                    slot,
                    generation,
                    reason: reason as i32,
                });
        }
        for (shard, entries) in by_shard {
            let r = pb::SlotRelease {
                entries,
                issued_at: now.unix,
            };
            self.publish(
                now,
                Topic::Shard(shard),
                Kind::SlotRelease,
                r.encode_to_vec(),
                "release",
                out,
            );
        }
    }

    // ------------------------------------------------------------------------------------------
    // Persistence

    /// The persistent state as bytes (versioned): genesis, incarnation, facts, local member
    /// observations.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut facts = Vec::new();
        for (_, set) in self.facts.scopes() {
            facts.extend(set.iter().map(|(_, f)| f.bytes.clone()));
        }
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            genesis: Some(self.view.genesis().record.clone()),
            incarnation: self.sender.incarnation,
            storer: self.storer,
            facts,
            members: self
                .view
                .members()
                .map(|(p, m)| MemberLocal {
                    peer: p.as_bytes().to_vec(),
                    first_seen: m.first_seen,
                    last_signal: m.last_signal,
                })
                .collect(),
            expired_datasets: self
                .expired_datasets
                .iter()
                .map(|d| d.to_bytes().to_vec())
                .collect(),
            free_bytes: self.free_bytes,
        };
        snap.encode_to_vec()
    }

    /// Rebuilds a state from [`State::snapshot`] bytes: replays the facts (no time window),
    /// restores local observations and bumps the incarnation (§16). Returns the start outputs,
    /// which include an immediate beacon for a storer.
    pub fn restore(
        bytes: &[u8],
        me: Keypair,
        params: Params,
        seed: u64,
        now: Now,
    ) -> Result<(State, Vec<Output>), RestoreError> {
        let snap = Snapshot::decode(bytes).map_err(|_| RestoreError::Undecodable)?;
        if snap.version != SNAPSHOT_VERSION {
            return Err(RestoreError::Undecodable);
        }
        let genesis = snap.genesis.ok_or(RestoreError::Undecodable)?;
        let (mut state, out) = State::new(
            &genesis,
            me,
            snap.storer,
            snap.incarnation + 1,
            params,
            seed,
            now,
        )?;
        state.free_bytes = snap.free_bytes;
        state.expired_datasets = snap
            .expired_datasets
            .iter()
            .filter_map(|b| Cid::from_bytes(b).ok())
            .collect();
        let mut todo: Vec<(Topic, Vec<u8>)> = snap
            .facts
            .into_iter()
            .filter_map(|b| {
                let env = Envelope::decode(&b).ok()?;
                let topic = fact_topic(&env, state.view.policy().dataset_shards)?;
                Some((topic, b))
            })
            .collect();
        let mut sink = Vec::new();
        loop {
            let before = todo.len();
            todo.retain(|(t, b)| {
                state.ingest(now, Origin::Sync, *t, b, &mut sink).verdict == Verdict::Reject
            });
            if todo.is_empty() || todo.len() == before {
                break;
            }
        }
        for m in snap.members {
            if let Ok(p) = PeerId::from_bytes(&m.peer) {
                state.view.restore_local(&p, m.first_seen, m.last_signal);
            }
        }
        Ok((state, out))
    }
}

/// Rebuilds a `have` step's ids from the current set (facts stored since the round started).
fn rebuild_have(mut req: pb::SyncRequest, set: &sync::FactSet) -> pb::SyncRequest {
    if let Some(pb::sync_request::Step::Have(h)) = &mut req.step {
        let mut ids = Vec::new();
        for &b in &h.buckets {
            if let Ok(b) = u8::try_from(b) {
                for id in set.bucket_ids(b) {
                    if ids.len() + 32 > sync::MAX_HAVE_IDS_BYTES {
                        break;
                    }
                    ids.extend_from_slice(&id.0);
                }
            }
        }
        h.ids = ids;
    }
    req
}

/// The DatasetCids a dataset fact names.
fn named_datasets(body: &Body) -> Vec<Cid> {
    let mut out: Vec<Cid> = match body {
        Body::DatasetAnnounce(a) => Cid::from_bytes(&a.dataset_cid).ok().into_iter().collect(),
        Body::DatasetRetire(r) => Cid::from_bytes(&r.dataset_cid).ok().into_iter().collect(),
        Body::SlotClaim { claim, .. } => claim
            .entries
            .iter()
            .filter_map(|e| Cid::from_bytes(&e.dataset_cid).ok())
            .collect(),
        Body::SlotRelease(r) => r
            .entries
            .iter()
            .filter_map(|e| Cid::from_bytes(&e.dataset_cid).ok())
            .collect(),
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// The topic a stored fact belongs to.
fn fact_topic(env: &Envelope, shards: u32) -> Option<Topic> {
    if topic_allows(Topic::Ctl, env.kind()) {
        return Some(Topic::Ctl);
    }
    let body = env.body().ok()?;
    let d = *named_datasets(&body).first()?;
    Some(Topic::Shard(shard_of(&d, shards)))
}
