//! The driver task: owns every swarm's state machine and carries out its outputs.
//!
//! The task never awaits the network: publishes, verdicts, subscriptions and outbound requests
//! run in spawned tasks (in order within one step), whose results come back as
//! [`Internal`] messages. It awaits only the store (persistence is durable before the step's
//! messages are handed to the network, §16).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};
use std::time::Duration;

use bytes::Bytes;
use cairn_core::Cid;
use cairn_core::durability::messages::{
    self as pb, DeclineReason, ErrorCode, OfferReason, ReleaseReason, request, response,
};
use cairn_core::durability::policy::{Policy, check_swarm_policy};
use cairn_core::durability::{
    Body, Envelope, Keypair, Kind, PeerId as CPeer, SwarmId, sign_genesis, verify_genesis,
};
use cairn_net::{GossipId, Multiaddr, Network, PeerId as NetPeer, Protocol, SwarmTopic};
use cairn_proto::durability::health::{Health, SlotState};
use cairn_proto::durability::membership::{MemberState, Presence};
use cairn_proto::durability::placement::{CandidateInfo, Walk, candidate_order};
use cairn_proto::durability::swarm::RequestFailure;
use cairn_proto::durability::{
    Command, Event, Input, Now, Output, Penalty, Rng, State, TimerKey, Topic, Verdict,
};
use cairn_store::{BlockStore, DatasetFlags, DatasetState, MetaOp};
use prost::Message as _;
use tokio::sync::mpsc;

use super::config::DurabilityConfig;
use super::persist::{self, CachedRecord, HeldRecord, SwarmRecord};
use super::{Api, Clock, CreateSwarm, Msg, SwarmError, SwarmResult, invite, rfc3339};
use crate::fetch::Fetcher;

/// Placement offers in flight per dataset (§8).
const OFFERS_IN_FLIGHT: usize = 4;
/// How long a publish is retried while gossipsub has no peer for the topic yet.
const PUBLISH_RETRY: Duration = Duration::from_secs(30);
/// Members per page of `GET …/members`.
pub(crate) const MEMBERS_PAGE: usize = 100;
/// Application score of a peer that propagated a non-member's message (§7.1).
const NON_MEMBER_SCORE: f64 = -1000.0;
/// `none` auto-fetches running at once (all swarms).
const CACHE_FETCHES: usize = 2;
/// Longest a `none` auto-fetch may take.
const CACHE_FETCH_TIMEOUT: Duration = Duration::from_secs(1800);
/// Wait before retrying a `none` dataset whose fetch failed.
const CACHE_RETRY: Duration = Duration::from_secs(60);
/// Wait before reconsidering a `none` dataset that did not fit the quota.
const CACHE_NO_ROOM_RETRY: Duration = Duration::from_secs(300);
/// Housekeeping ticks (1 s) between scans for `none` datasets to fetch or drop.
const CACHE_SCAN_TICKS: u64 = 5;
/// Minimum age of a provider lookup before a health query starts another.
const PROVIDERS_REFRESH: Duration = Duration::from_secs(5);
/// Providers asked of the DHT per lookup.
const PROVIDERS_LIMIT: usize = 64;
/// Longest a manifest lookup that sizes an offer or a `none` dataset may take.
const SIZING_TIMEOUT: Duration = Duration::from_secs(30);
/// Sources of an offer asked for its manifest, at most.
const SIZING_SOURCES: usize = 4;
/// Tries per source of a manifest lookup.
const SIZING_TRIES: u32 = 3;
/// Wait before sizing a `none` dataset again after its manifest could not be had.
const SIZING_RETRY: Duration = Duration::from_secs(5);
/// Gossip messages not accepted, remembered per swarm for `GET /swarms/{id}` (§18).
const RECENT_VERDICTS: usize = 32;
/// About this many storers advertise a swarm's rendezvous key: each with probability
/// min(1, 20/S) (§5).
const RENDEZVOUS_PROVIDERS: u64 = 20;
/// Providers asked of the DHT when a join looks up the rendezvous key.
const RENDEZVOUS_LOOKUP_LIMIT: usize = 20;

/// Whether a storer advertises the rendezvous key, from a uniform random `r`, among `storers`
/// Active storers: with probability min(1, 20/S).
fn rendezvous_draw(r: u64, storers: u64) -> bool {
    storers <= RENDEZVOUS_PROVIDERS || r % storers < RENDEZVOUS_PROVIDERS
}

/// Settings of the driver.
#[derive(Clone)]
pub(crate) struct DriverConfig {
    /// The node's Ed25519 key (same as its libp2p identity).
    pub(crate) keypair: Keypair,
    /// The `[durability]` table.
    pub(crate) durability: DurabilityConfig,
    /// Quota given to a swarm when a join does not say (the node's quota).
    pub(crate) default_quota: u64,
    /// Seed of the driver's RNG (nonces, state machine seeds).
    pub(crate) seed: u64,
    /// The node's reprovide interval: how often the rendezvous advertisement is redrawn.
    pub(crate) reprovide: Duration,
}

impl std::fmt::Debug for DriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriverConfig")
            .field("peer", &self.keypair.peer_id())
            .finish_non_exhaustive()
    }
}

/// Results of work the driver spawned.
#[derive(Debug)]
pub(crate) enum Internal {
    /// An outbound request of a state machine finished.
    Response {
        swarm: SwarmId,
        id: u64,
        result: Result<pb::Response, RequestFailure>,
    },
    /// A placement offer was answered (or failed).
    OfferAnswer {
        swarm: SwarmId,
        dataset: Cid,
        slot: u32,
        accepted: bool,
    },
    /// A slot's data was fetched, verified and pinned (or not).
    Fetched {
        swarm: SwarmId,
        dataset: Cid,
        slot: u32,
        result: Result<(), String>,
    },
    /// Bootstrap peers of a join were dialled.
    Connected { swarm: SwarmId, peers: Vec<CPeer> },
    /// A `none` auto-fetch finished: `Ok(owned)` (false: the data was already stored here).
    Cached {
        swarm: SwarmId,
        dataset: Cid,
        result: Result<bool, String>,
    },
    /// A slot offer was sized: `(blocksCount × blockSize, already stored here)`, or `None`
    /// if no manifest could be had.
    OfferSized {
        swarm: SwarmId,
        id: u64,
        offer: Box<Envelope>,
        dataset: Cid,
        slot: u32,
        generation: u32,
        sized: Option<(u64, bool)>,
    },
    /// A `none` dataset was sized (blocksCount × blockSize), or not (`None`).
    CacheSized {
        swarm: SwarmId,
        dataset: Cid,
        size: Option<u64>,
    },
    /// A DHT provider lookup of a `none` dataset finished.
    Providers {
        swarm: SwarmId,
        dataset: Cid,
        peers: Vec<CPeer>,
    },
}

/// The last provider lookup of a `none` dataset (§11 `unmanaged`).
#[derive(Debug, Default)]
struct ProvidersSeen {
    /// When it finished (mono); `None` while the first one runs.
    at: Option<Duration>,
    peers: BTreeSet<CPeer>,
    busy: bool,
}

/// The announcer's placement job for one dataset (§8).
#[derive(Debug, Default)]
struct Job {
    /// Slot → (assignee, deadline (mono), accepted).
    in_flight: BTreeMap<u32, (CPeer, Duration, bool)>,
    /// Candidates offered a slot (or holding one).
    tried: BTreeSet<CPeer>,
    /// Slots for which no candidate was left.
    gave_up: BTreeSet<u32>,
}

struct Entry {
    state: State,
    record: SwarmRecord,
    timers: BTreeMap<TimerKey, Duration>,
    held: BTreeMap<(Cid, u32), HeldRecord>,
    jobs: BTreeMap<Cid, Job>,
    /// `none` datasets kept for the swarm (§6 auto-fetch).
    cached: BTreeMap<Cid, CachedRecord>,
    /// `none` datasets not to try before this time (mono): a failed fetch or no room.
    cache_wait: BTreeMap<Cid, Duration>,
    /// Provider lookups of `none` datasets.
    providers: BTreeMap<Cid, ProvidersSeen>,
    /// What `none` datasets take in the store (blocksCount × blockSize of the manifest).
    sizes: BTreeMap<Cid, u64>,
    /// `none` datasets whose manifest is being looked up.
    sizing: BTreeSet<Cid>,
    /// Gossip verdicts: counts (accept, reject, ignore) and the last messages not accepted.
    verdicts: Verdicts,
    /// Coordination bytes, for `GET /swarms/{id}` and the traffic benchmark.
    traffic: Arc<Traffic>,
    /// Whether this node advertises the swarm's rendezvous key in Kad (§5).
    rendezvous: bool,
    /// When the advertisement is drawn again (mono).
    rendezvous_next: Duration,
}

#[derive(Debug, Default)]
struct Verdicts {
    accepted: u64,
    rejected: u64,
    ignored: u64,
    /// (message id hex, verdict, reason), newest last.
    recent: VecDeque<(String, &'static str, &'static str)>,
}

impl Verdicts {
    fn record(&mut self, msg_id: &[u8], verdict: Verdict, reason: &'static str) {
        let name = match verdict {
            Verdict::Accept => {
                self.accepted += 1;
                return;
            }
            Verdict::Reject => {
                self.rejected += 1;
                "reject"
            }
            Verdict::Ignore => {
                self.ignored += 1;
                "ignore"
            }
        };
        if self.recent.len() >= RECENT_VERDICTS {
            self.recent.pop_front();
        }
        self.recent.push_back((hex::encode(msg_id), name, reason));
    }

    fn json(&self) -> serde_json::Value {
        let recent: Vec<serde_json::Value> = self
            .recent
            .iter()
            .map(|(id, v, r)| serde_json::json!({"msgId": id, "verdict": v, "reason": r}))
            .collect();
        serde_json::json!({
            "accepted": self.accepted, "rejected": self.rejected, "ignored": self.ignored,
            "recent": recent,
        })
    }
}

/// Which [`Traffic`] category an inbound request and its answer count in.
#[derive(Debug, Clone, Copy)]
enum RequestFlow {
    Sync,
    Other,
}

impl RequestFlow {
    fn of(req: &pb::Request) -> RequestFlow {
        match req.body {
            Some(request::Body::Sync(_)) => RequestFlow::Sync,
            _ => RequestFlow::Other,
        }
    }

    fn pick(self, t: &Traffic) -> &Flow {
        match self {
            RequestFlow::Sync => &t.sync,
            RequestFlow::Other => &t.requests,
        }
    }
}

/// Bytes in and out of one category.
#[derive(Debug, Default)]
struct Flow {
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Flow {
    fn add_in(&self, n: usize) {
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn add_out(&self, n: usize) {
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "in": self.bytes_in.load(Ordering::Relaxed),
            "out": self.bytes_out.load(Ordering::Relaxed),
        })
    }
}

/// Coordination bytes of one swarm since the node started, split as `durability.md` §15.1:
/// payloads of the gossip messages this node published or was delivered (each once, as the
/// application sees them; gossipsub's forwarded copies and control traffic are not counted
/// here) and of swarm requests and responses, both ways.
#[derive(Debug)]
struct Traffic {
    since: std::time::Instant,
    beacons: Flow,
    membership: Flow,
    dataset_events: Flow,
    sync: Flow,
    requests: Flow,
}

impl Traffic {
    fn new() -> Traffic {
        Traffic {
            since: std::time::Instant::now(),
            beacons: Flow::default(),
            membership: Flow::default(),
            dataset_events: Flow::default(),
            sync: Flow::default(),
            requests: Flow::default(),
        }
    }

    /// The category of a gossip message.
    fn gossip(&self, topic: Topic, data: &[u8]) -> &Flow {
        match topic {
            Topic::Shard(_) => &self.dataset_events,
            Topic::Ctl => match cairn_core::durability::Envelope::decode(data) {
                Ok(env) if env.kind() == cairn_core::durability::Kind::Beacon => &self.beacons,
                _ => &self.membership,
            },
        }
    }

    /// The category of a request.
    fn request(&self, req: &pb::Request) -> &Flow {
        match req.body {
            Some(request::Body::Sync(_)) => &self.sync,
            _ => &self.requests,
        }
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "sinceSecs": self.since.elapsed().as_secs(),
            "beacons": self.beacons.json(),
            "membership": self.membership.json(),
            "datasetEvents": self.dataset_events.json(),
            "sync": self.sync.json(),
            "requests": self.requests.json(),
        })
    }
}

impl Entry {
    fn new(state: State, record: SwarmRecord) -> Entry {
        Entry {
            state,
            record,
            timers: BTreeMap::new(),
            held: BTreeMap::new(),
            jobs: BTreeMap::new(),
            cached: BTreeMap::new(),
            cache_wait: BTreeMap::new(),
            providers: BTreeMap::new(),
            sizes: BTreeMap::new(),
            sizing: BTreeSet::new(),
            verdicts: Verdicts::default(),
            traffic: Arc::new(Traffic::new()),
            rendezvous: false,
            rendezvous_next: Duration::ZERO,
        }
    }
    /// Bytes of held and pending slots.
    fn slots_used(&self) -> u64 {
        self.held.values().map(|h| h.size).sum()
    }
    /// Bytes of `none` data fetched for the swarm (evictable).
    fn cache_used(&self) -> u64 {
        self.cached
            .values()
            .filter(|c| c.owned)
            .map(|c| c.size)
            .sum()
    }
    fn used(&self) -> u64 {
        self.slots_used() + self.cache_used()
    }
    fn topics(&self) -> Vec<Topic> {
        let mut t = vec![Topic::Ctl];
        t.extend((0..self.state.view().policy().dataset_shards.max(1)).map(Topic::Shard));
        t
    }
}

/// A network action, run by a spawned task.
#[derive(Debug)]
enum NetOp {
    Publish(String, Bytes),
    Validate(GossipId, NetPeer, cairn_net::Verdict),
    Score(NetPeer, f64),
    Subscribe(String),
    Unsubscribe(String),
}

/// The driver.
pub(crate) struct Driver {
    store: Arc<dyn BlockStore>,
    net: Network,
    fetcher: Fetcher,
    clock: Arc<dyn Clock>,
    cfg: DriverConfig,
    me: CPeer,
    swarms: BTreeMap<SwarmId, Entry>,
    responders: HashMap<u64, cairn_net::SwarmResponder>,
    /// The traffic category of each open inbound request.
    responders_flow: HashMap<u64, RequestFlow>,
    gossip_sources: HashMap<Vec<u8>, NetPeer>,
    next_request: u64,
    tx: mpsc::Sender<Msg>,
    rng: Rng,
    cache_slots: Arc<tokio::sync::Semaphore>,
    ticks: u64,
}

impl std::fmt::Debug for Driver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("swarms", &self.swarms.len())
            .finish_non_exhaustive()
    }
}

fn to_net(p: &CPeer) -> Option<NetPeer> {
    NetPeer::from_bytes(p.as_bytes()).ok()
}

fn to_core(p: &NetPeer) -> Option<CPeer> {
    CPeer::from_bytes(&p.to_bytes()).ok()
}

fn topic_name(swarm: &SwarmId, t: Topic) -> String {
    match t {
        Topic::Ctl => cairn_net::ctl_topic(swarm.as_bytes()),
        Topic::Shard(s) => cairn_net::shard_topic(swarm.as_bytes(), s),
    }
}

fn parse_swarm(text: &str) -> SwarmResult<SwarmId> {
    SwarmId::from_text(text).ok_or_else(|| SwarmError::invalid("not a SwarmId"))
}

fn parse_cid(text: &str) -> SwarmResult<Cid> {
    text.parse::<Cid>()
        .map_err(|_| SwarmError::invalid("not a CID"))
}

/// The JSON form of a resolved policy (§17).
pub(crate) fn policy_json(p: &Policy) -> serde_json::Value {
    match *p {
        Policy::None => {
            serde_json::json!({"kind":"none","k":0,"m":0,"replicas":0,"repairAtMissing":0})
        }
        Policy::Replicate { replicas } => serde_json::json!({
            "kind":"replicate","k":1,"m":replicas.saturating_sub(1),"replicas":replicas,
            "repairAtMissing":1}),
        Policy::Erasure {
            k,
            m,
            repair_at_missing,
        } => serde_json::json!({"kind":"erasure","k":k,"m":m,"replicas":0,
            "repairAtMissing":repair_at_missing}),
    }
}

impl Driver {
    /// Loads the stored swarms (bumping each incarnation, durably, before anything is sent) and
    /// returns the driver; run it with [`Driver::run`].
    pub(crate) async fn start(
        store: Arc<dyn BlockStore>,
        net: Network,
        fetcher: Fetcher,
        clock: Arc<dyn Clock>,
        cfg: DriverConfig,
        tx: mpsc::Sender<Msg>,
    ) -> Result<Driver, cairn_store::StoreError> {
        let me = cfg.keypair.peer_id();
        let rng = Rng::new(cfg.seed);
        let mut d = Driver {
            store,
            net,
            fetcher,
            clock,
            cfg,
            me,
            swarms: BTreeMap::new(),
            responders: HashMap::new(),
            responders_flow: HashMap::new(),
            gossip_sources: HashMap::new(),
            next_request: 1,
            tx,
            rng,
            cache_slots: Arc::new(tokio::sync::Semaphore::new(CACHE_FETCHES)),
            ticks: 0,
        };
        let loaded = {
            let store = d.store.clone();
            tokio::task::spawn_blocking(move || persist::load_all(store.as_ref()))
                .await
                .map_err(|e| cairn_store::StoreError::Backend(e.to_string()))??
        };
        for l in loaded {
            d.resume(l).await;
        }
        Ok(d)
    }

    async fn resume(&mut self, l: persist::Loaded) {
        let now = self.clock.now();
        let params = self.cfg.durability.params();
        let seed = self.rng.next_u64();
        let started = match &l.snapshot {
            Some(snap) => State::restore(snap, self.cfg.keypair.clone(), params, seed, now)
                .map_err(|e| e.to_string()),
            None => match pb::GenesisRecord::decode(l.record.genesis.as_slice()) {
                Ok(g) => State::new(
                    &g,
                    self.cfg.keypair.clone(),
                    l.record.storer,
                    l.incarnation + 1,
                    params,
                    seed,
                    now,
                )
                .map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            },
        };
        let (state, outs) = match started {
            Ok(x) => x,
            Err(e) => {
                tracing::error!(swarm = %l.swarm.to_text(), error = %e, "cannot restore a swarm");
                return;
            }
        };
        let held: BTreeMap<(Cid, u32), HeldRecord> =
            l.held.into_iter().map(|(d, s, h)| ((d, s), h)).collect();
        let jobs = l.jobs.into_iter().map(|d| (d, Job::default())).collect();
        let mut entry = Entry::new(state, l.record);
        entry.held = held;
        entry.jobs = jobs;
        entry.cached = l.cached.into_iter().collect();
        let swarm = l.swarm;
        self.swarms.insert(swarm, entry);
        // The incarnation grows before the first beacon (§16).
        if let Err(e) = self.persist_swarm(swarm).await {
            tracing::error!(swarm = %swarm.to_text(), error = %e, "persisting the incarnation failed");
            self.swarms.remove(&swarm);
            return;
        }
        tracing::info!(swarm = %swarm.to_text(), incarnation = self.swarms[&swarm].state.incarnation(), "swarm restored");
        self.execute(swarm, outs, &mut Vec::new()).await;
        self.set_free(swarm);
        self.draw_rendezvous(swarm);
        // Reach the members again through the rendezvous key (§5).
        self.spawn_connect(swarm, Vec::new());
        // Resume pending fetches; release live slots whose data is gone (§16).
        let slots: Vec<((Cid, u32), HeldRecord)> = self.swarms[&swarm]
            .held
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        let mut lost = Vec::new();
        for ((d, slot), h) in slots {
            if h.state == "pending" {
                if h.expires_at > now.unix {
                    self.spawn_fetch(swarm, d, slot, &h);
                } else {
                    self.drop_held(swarm, d, slot).await;
                }
            } else {
                if !is_complete_here(&self.store, d).await {
                    let reason = if h.state == "spare" {
                        ReleaseReason::SpareDropped
                    } else {
                        ReleaseReason::DataLost
                    };
                    lost.push((d, slot, h.generation, reason));
                    self.drop_held(swarm, d, slot).await;
                }
            }
        }
        if !lost.is_empty() {
            self.feed(swarm, Input::Command(Command::Release { entries: lost }))
                .await;
        }
        // Resume `none` fetches; forget kept data that is gone (the scan fetches it again).
        let cached: Vec<(Cid, CachedRecord)> = self.swarms[&swarm]
            .cached
            .iter()
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (d, c) in cached {
            if c.state == "pending" {
                self.spawn_cache_fetch(swarm, d);
                continue;
            }
            if !is_complete_here(&self.store, d).await {
                self.forget_cached(swarm, d).await;
            }
        }
        self.scan_none(swarm).await;
    }

    /// The task's loop.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let now = self.clock.now();
            let next = self
                .swarms
                .values()
                .flat_map(|e| e.timers.values().copied())
                .min();
            let wait = next.map_or(Duration::from_secs(3600), |at| at.saturating_sub(now.mono));
            tokio::select! {
                m = rx.recv() => match m {
                    None => break,
                    Some(m) => self.on_msg(m).await,
                },
                () = tokio::time::sleep(wait) => self.fire_timers().await,
                _ = tick.tick() => self.housekeeping().await,
            }
        }
    }

    async fn fire_timers(&mut self) {
        let now = self.clock.now();
        let due: Vec<(SwarmId, TimerKey)> = self
            .swarms
            .iter()
            .flat_map(|(s, e)| {
                e.timers
                    .iter()
                    .filter(|(_, at)| **at <= now.mono)
                    .map(|(k, _)| (*s, *k))
            })
            .collect();
        for (swarm, key) in due {
            if let Some(e) = self.swarms.get_mut(&swarm) {
                e.timers.remove(&key);
            }
            self.feed(swarm, Input::Timer(key)).await;
            if key == TimerKey::Sync {
                // Member observations change without facts; keep them fresh on disk.
                let _ = self.persist_swarm(swarm).await;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Feeding the state machines

    /// Feeds one input and everything it leads to; returns the events seen.
    async fn feed(&mut self, swarm: SwarmId, input: Input) -> Vec<Event> {
        let mut events = Vec::new();
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let now = self.clock.now();
            let Some(e) = self.swarms.get_mut(&swarm) else {
                break;
            };
            let outs = e.state.handle(now, input);
            let mut follow = Vec::new();
            self.execute(swarm, outs, &mut follow).await;
            for ev in follow {
                events.push(ev.clone());
                queue.extend(self.on_event(swarm, ev).await);
            }
        }
        events
    }

    /// Carries out outputs: persistence first, then the network, in order. Events are handed
    /// back in `events`.
    async fn execute(&mut self, swarm: SwarmId, outs: Vec<Output>, events: &mut Vec<Event>) {
        let mut persist = false;
        let mut ops = Vec::new();
        for o in outs {
            match o {
                Output::Validate { msg_id, outcome } => {
                    if let Some(e) = self.swarms.get_mut(&swarm) {
                        e.verdicts.record(&msg_id, outcome.verdict, outcome.reason);
                    }
                    let Some(source) = self.gossip_sources.remove(&msg_id) else {
                        continue;
                    };
                    let Ok(raw) = <[u8; 20]>::try_from(msg_id.as_slice()) else {
                        continue;
                    };
                    let verdict = match outcome.verdict {
                        Verdict::Accept => cairn_net::Verdict::Accept,
                        Verdict::Reject => cairn_net::Verdict::Reject,
                        Verdict::Ignore => cairn_net::Verdict::Ignore,
                    };
                    if outcome.verdict != Verdict::Accept {
                        tracing::debug!(swarm = %swarm.to_text(), ?verdict, reason = outcome.reason, %source, "gossip not accepted");
                    }
                    ops.push(NetOp::Validate(GossipId::from_bytes(raw), source, verdict));
                    match outcome.penalty {
                        Penalty::NonMemberSource => {
                            ops.push(NetOp::Score(source, NON_MEMBER_SCORE))
                        }
                        Penalty::None | Penalty::InvalidMessage => {}
                        Penalty::Reputation(p) | Penalty::ClaimOffence(p) => {
                            tracing::info!(peer = %p.to_base58(), reason = outcome.reason, "member penalised");
                        }
                    }
                }
                Output::Publish { topic, data } => {
                    if let Some(e) = self.swarms.get(&swarm) {
                        e.traffic.gossip(topic, &data).add_out(data.len());
                    }
                    ops.push(NetOp::Publish(topic_name(&swarm, topic), Bytes::from(data)));
                }
                Output::Send { peer, id, request } => self.spawn_request(swarm, peer, id, request),
                Output::Respond { id, response } => {
                    let bytes = Bytes::from(response.encode_to_vec());
                    if let Some(flow) = self.responders_flow.remove(&id)
                        && let Some(e) = self.swarms.get(&swarm)
                    {
                        flow.pick(&e.traffic).add_out(bytes.len());
                    }
                    if let Some(r) = self.responders.remove(&id)
                        && let Err(e) = r.respond(bytes)
                    {
                        tracing::debug!(error = %e, "answering a swarm request failed");
                    }
                }
                Output::Schedule { key, at } => {
                    if let Some(e) = self.swarms.get_mut(&swarm) {
                        e.timers.insert(key, at);
                    }
                }
                Output::Subscribe(t) => ops.push(NetOp::Subscribe(topic_name(&swarm, t))),
                Output::Unsubscribe(t) => ops.push(NetOp::Unsubscribe(topic_name(&swarm, t))),
                Output::FactStored { .. }
                | Output::FactExpiry { .. }
                | Output::FactDropped { .. } => {
                    persist = true;
                }
                Output::Event(ev) => {
                    if let Event::MemberJoined(p) = &ev
                        && let Some(np) = to_net(p)
                    {
                        ops.push(NetOp::Score(np, 0.0));
                    }
                    events.push(ev);
                }
            }
        }
        if persist && let Err(e) = self.persist_swarm(swarm).await {
            // Nothing that depends on the new facts goes out unless they are durable.
            tracing::error!(swarm = %swarm.to_text(), error = %e, "persisting facts failed; not publishing");
            ops.retain(|o| !matches!(o, NetOp::Publish(..)));
        }
        if !ops.is_empty() {
            let net = self.net.clone();
            tokio::spawn(run_net_ops(net, ops));
        }
    }

    fn spawn_request(&mut self, swarm: SwarmId, peer: CPeer, id: u64, req: pb::Request) {
        let net = self.net.clone();
        let tx = self.tx.clone();
        let traffic = self.swarms.get(&swarm).map(|e| e.traffic.clone());
        tokio::spawn(async move {
            let encoded = Bytes::from(req.encode_to_vec());
            let flow = traffic.as_ref().map(|t| t.request(&req));
            if let Some(flow) = flow {
                flow.add_out(encoded.len());
            }
            let result = match to_net(&peer) {
                None => Err(RequestFailure::Io),
                Some(p) => match net.swarm_request(p, encoded).await {
                    Ok(bytes) => {
                        if let Some(flow) = flow {
                            flow.add_in(bytes.len());
                        }
                        pb::Response::decode(bytes.as_ref()).map_err(|_| RequestFailure::Io)
                    }
                    Err(cairn_net::NetError::Request { reason, .. })
                        if reason.contains("no answer") =>
                    {
                        Err(RequestFailure::Timeout)
                    }
                    Err(_) => Err(RequestFailure::Io),
                },
            };
            let _ = tx
                .send(Msg::Internal(Internal::Response { swarm, id, result }))
                .await;
        });
    }

    async fn persist_swarm(&self, swarm: SwarmId) -> cairn_store::Result<()> {
        let Some(e) = self.swarms.get(&swarm) else {
            return Ok(());
        };
        let ops = persist::swarm_ops(&swarm, &e.record, e.state.incarnation(), e.state.snapshot());
        self.write(ops).await
    }

    async fn write(&self, ops: Vec<MetaOp>) -> cairn_store::Result<()> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.write_meta(&ops))
            .await
            .map_err(|e| cairn_store::StoreError::Backend(e.to_string()))?
    }

    async fn put_held(
        &mut self,
        swarm: SwarmId,
        d: Cid,
        slot: u32,
        h: HeldRecord,
    ) -> cairn_store::Result<()> {
        let op = MetaOp::Put {
            table: persist::HELD.into(),
            key: persist::held_key(&swarm, &d, slot),
            value: serde_json::to_vec(&h).unwrap_or_default(),
        };
        self.write(vec![op]).await?;
        if let Some(e) = self.swarms.get_mut(&swarm) {
            e.held.insert((d, slot), h);
        }
        self.set_free(swarm);
        Ok(())
    }

    async fn drop_held(&mut self, swarm: SwarmId, d: Cid, slot: u32) {
        let op = MetaOp::Delete {
            table: persist::HELD.into(),
            key: persist::held_key(&swarm, &d, slot),
        };
        if let Err(e) = self.write(vec![op]).await {
            tracing::error!(error = %e, "deleting a held slot record failed");
        }
        if let Some(e) = self.swarms.get_mut(&swarm) {
            e.held.remove(&(d, slot));
        }
        self.set_free(swarm);
    }

    fn set_free(&mut self, swarm: SwarmId) {
        let Some(e) = self.swarms.get_mut(&swarm) else {
            return;
        };
        // `none` data is evicted to make room for a slot, so it does not count here.
        let free = e.record.quota.saturating_sub(e.slots_used());
        let now = self.clock.now();
        let _ = e
            .state
            .handle(now, Input::Command(Command::SetFreeBytes(free)));
    }

    // -----------------------------------------------------------------------------------------
    // Messages

    async fn on_msg(&mut self, m: Msg) {
        match m {
            Msg::Gossip {
                topic,
                id,
                source,
                data,
            } => self.on_gossip(topic, id, source, data).await,
            Msg::Request {
                peer,
                request,
                responder,
            } => self.on_request(peer, request, responder).await,
            Msg::Peer { peer, connected } => {
                let Some(p) = to_core(&peer) else { return };
                let swarms: Vec<SwarmId> = self.swarms.keys().copied().collect();
                for s in swarms {
                    let input = if connected {
                        Input::Connected(p)
                    } else {
                        Input::Disconnected(p)
                    };
                    self.feed(s, input).await;
                }
            }
            Msg::Api(a) => self.on_api(a).await,
            Msg::Internal(i) => self.on_internal(i).await,
        }
    }

    async fn on_gossip(&mut self, topic: String, id: GossipId, source: NetPeer, data: Bytes) {
        let parsed = SwarmTopic::parse(&topic).and_then(|t| {
            let (swarm, topic) = match t {
                SwarmTopic::Ctl { swarm_id } => (SwarmId(swarm_id), Topic::Ctl),
                SwarmTopic::Shard { swarm_id, shard } => (SwarmId(swarm_id), Topic::Shard(shard)),
            };
            self.swarms.contains_key(&swarm).then_some((swarm, topic))
        });
        let Some((swarm, t)) = parsed else {
            let net = self.net.clone();
            tokio::spawn(async move {
                let _ = net
                    .report_validation(id, source, cairn_net::Verdict::Ignore)
                    .await;
            });
            return;
        };
        if let Some(e) = self.swarms.get(&swarm) {
            e.traffic.gossip(t, &data).add_in(data.len());
        }
        let msg_id = id.as_bytes().to_vec();
        self.gossip_sources.insert(msg_id.clone(), source);
        self.feed(
            swarm,
            Input::Gossip {
                topic: t,
                source: to_core(&source),
                msg_id: msg_id.clone(),
                data: data.to_vec(),
            },
        )
        .await;
        self.gossip_sources.remove(&msg_id);
    }

    async fn on_request(
        &mut self,
        peer: NetPeer,
        bytes: Bytes,
        responder: cairn_net::SwarmResponder,
    ) {
        let Ok(req) = pb::Request::decode(bytes.as_ref()) else {
            responder.malformed();
            return;
        };
        let swarm_bytes: Option<Vec<u8>> = match &req.body {
            Some(request::Body::Sync(s)) => Some(s.swarm_id.clone()),
            Some(request::Body::Holdings(h)) => Some(h.swarm_id.clone()),
            Some(request::Body::Offer(o)) => Some(o.swarm_id.clone()),
            _ => None,
        };
        let swarm = swarm_bytes
            .and_then(|b| SwarmId::from_slice(&b))
            .filter(|s| self.swarms.contains_key(s));
        let Some(swarm) = swarm else {
            let resp = pb::Response {
                body: Some(response::Body::Error(pb::RpcError {
                    code: ErrorCode::NotMember as i32,
                    message: "unknown swarm or request".into(),
                })),
            };
            let _ = responder.respond(Bytes::from(resp.encode_to_vec()));
            return;
        };
        let id = self.next_request;
        self.next_request += 1;
        let flow = RequestFlow::of(&req);
        if let Some(e) = self.swarms.get(&swarm) {
            flow.pick(&e.traffic).add_in(bytes.len());
        }
        self.responders_flow.insert(id, flow);
        self.responders.insert(id, responder);
        self.feed(
            swarm,
            Input::Request {
                peer: to_core(&peer),
                id,
                request: req,
            },
        )
        .await;
        // A request the state machine did not answer now is answered later (an offer) or
        // expires; drop closed responders.
        self.responders.retain(|_, r| r.is_open());
        let open = &self.responders;
        self.responders_flow.retain(|id, _| open.contains_key(id));
    }

    async fn on_internal(&mut self, i: Internal) {
        match i {
            Internal::Response { swarm, id, result } => {
                self.feed(swarm, Input::Response { id, result }).await;
            }
            Internal::OfferAnswer {
                swarm,
                dataset,
                slot,
                accepted,
            } => {
                let now = self.clock.now();
                let claim_timeout =
                    Duration::from_secs(self.cfg.durability.params().claim_timeout_secs);
                if let Some(job) = self
                    .swarms
                    .get_mut(&swarm)
                    .and_then(|e| e.jobs.get_mut(&dataset))
                {
                    if accepted {
                        if let Some(f) = job.in_flight.get_mut(&slot) {
                            f.1 = now.mono + claim_timeout;
                            f.2 = true;
                        }
                    } else {
                        job.in_flight.remove(&slot);
                    }
                }
                self.drive_job(swarm, dataset).await;
            }
            Internal::Fetched {
                swarm,
                dataset,
                slot,
                result,
            } => self.on_fetched(swarm, dataset, slot, result).await,
            Internal::Connected { swarm, peers } => {
                for p in peers {
                    self.feed(swarm, Input::Connected(p)).await;
                }
                // Pull the ctl scope now rather than at the first jittered round (§5).
                self.feed(swarm, Input::Timer(TimerKey::Sync)).await;
            }
            Internal::Cached {
                swarm,
                dataset,
                result,
            } => self.on_cached(swarm, dataset, result).await,
            Internal::OfferSized {
                swarm,
                id,
                offer,
                dataset,
                slot,
                generation,
                sized,
            } => {
                self.finish_offer(swarm, id, *offer, dataset, slot, generation, sized)
                    .await
            }
            Internal::CacheSized {
                swarm,
                dataset,
                size,
            } => {
                let now = self.clock.now();
                let Some(e) = self.swarms.get_mut(&swarm) else {
                    return;
                };
                e.sizing.remove(&dataset);
                match size {
                    Some(size) => {
                        e.sizes.insert(dataset, size);
                        self.scan_none(swarm).await;
                    }
                    None => {
                        e.cache_wait.insert(dataset, now.mono + SIZING_RETRY);
                    }
                }
            }
            Internal::Providers {
                swarm,
                dataset,
                peers,
            } => {
                let now = self.clock.now();
                if let Some(p) = self
                    .swarms
                    .get_mut(&swarm)
                    .and_then(|e| e.providers.get_mut(&dataset))
                {
                    p.at = Some(now.mono);
                    p.peers = peers.into_iter().collect();
                    p.busy = false;
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // Events

    async fn on_event(&mut self, swarm: SwarmId, ev: Event) -> Vec<Input> {
        match ev {
            Event::OfferReceived {
                id,
                offer,
                dataset,
                slot,
                generation,
            } => self.on_offer(swarm, id, offer, dataset, slot, generation),
            Event::SlotsChanged(d) => {
                self.drive_job(swarm, d).await;
                self.review_held(swarm).await;
                Vec::new()
            }
            Event::DatasetAnnounced(_) => {
                self.scan_none(swarm).await;
                Vec::new()
            }
            Event::Refused { command, reason } => {
                tracing::info!(swarm = %swarm.to_text(), command, %reason, "command refused");
                Vec::new()
            }
            Event::HoldingsDiffer {
                peer,
                extra,
                missing,
            } => {
                tracing::debug!(peer = %peer.to_base58(), extra = extra.len(), missing = missing.len(), "holdings differ");
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    /// First half of an offer (§8): the cheap checks, then the manifest is looked up (locally,
    /// else from the offer's sources) in a spawned task, to size the slot as the store will
    /// really use it; [`Internal::OfferSized`] brings it back to [`Driver::finish_offer`].
    fn on_offer(
        &mut self,
        swarm: SwarmId,
        id: u64,
        offer: Envelope,
        dataset: Cid,
        slot: u32,
        generation: u32,
    ) -> Vec<Input> {
        if let Some(reason) = self.offer_refusal(swarm, &dataset) {
            return vec![Input::Command(Command::AnswerOffer {
                id,
                accept: false,
                reason,
            })];
        }
        let sources = offer_sources(&offer);
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let sized =
                tokio::time::timeout(SIZING_TIMEOUT, stored_size(&net, &store, dataset, &sources))
                    .await
                    .ok()
                    .flatten();
            let _ = tx
                .send(Msg::Internal(Internal::OfferSized {
                    swarm,
                    id,
                    offer: Box::new(offer),
                    dataset,
                    slot,
                    generation,
                    sized,
                }))
                .await;
        });
        Vec::new()
    }

    /// Why an offer of `d` is declined before sizing, if it is.
    fn offer_refusal(&self, swarm: SwarmId, d: &Cid) -> Option<DeclineReason> {
        let e = self.swarms.get(&swarm)?;
        if e.state.datasets().announce(d).is_none() || !e.record.storer {
            return Some(DeclineReason::NotInterested);
        }
        if e.held.keys().any(|(x, _)| x == d) {
            // Never two replicas of one dataset (§8).
            return Some(DeclineReason::Invalid);
        }
        None
    }

    /// Second half of an offer: the quota check with the real size, the reservation, the fetch
    /// and the answer.
    #[allow(clippy::too_many_arguments)]
    async fn finish_offer(
        &mut self,
        swarm: SwarmId,
        id: u64,
        offer: Envelope,
        dataset: Cid,
        slot: u32,
        generation: u32,
        sized: Option<(u64, bool)>,
    ) {
        let answer = self
            .accept_offer(swarm, offer, dataset, slot, generation, sized)
            .await;
        let (accept, reason) = match answer {
            Ok(()) => (true, DeclineReason::None),
            Err(r) => (false, r),
        };
        self.feed(
            swarm,
            Input::Command(Command::AnswerOffer { id, accept, reason }),
        )
        .await;
    }

    async fn accept_offer(
        &mut self,
        swarm: SwarmId,
        offer: Envelope,
        dataset: Cid,
        slot: u32,
        generation: u32,
        sized: Option<(u64, bool)>,
    ) -> Result<(), DeclineReason> {
        if let Some(reason) = self.offer_refusal(swarm, &dataset) {
            return Err(reason);
        }
        // No manifest, no way to know what the slot takes.
        let (size, stored) = sized.ok_or(DeclineReason::Busy)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or(DeclineReason::NotInterested)?;
        if size > e.record.quota.saturating_sub(e.slots_used()) {
            return Err(DeclineReason::NoSpace);
        }
        // A slot outranks kept `none` data: evict the oldest until the slot fits.
        let need = (e.used() + size).saturating_sub(e.record.quota);
        if need > 0 && !self.make_room(swarm, need, None).await {
            return Err(DeclineReason::NoSpace);
        }
        let expires_at = match offer.body() {
            Ok(Body::SlotOffer(o)) => o.expires_at,
            _ => return Err(DeclineReason::Invalid),
        };
        let h = HeldRecord {
            version: persist::RECORD_VERSION,
            generation,
            state: "pending".into(),
            size,
            offer: offer.as_bytes().to_vec(),
            expires_at,
            spare_until: 0,
            // Data already stored here (user data) is never deleted with a dropped spare.
            fetched: !stored,
        };
        if let Err(err) = self.put_held(swarm, dataset, slot, h.clone()).await {
            tracing::error!(error = %err, "persisting an accepted offer failed");
            return Err(DeclineReason::Busy);
        }
        self.spawn_fetch(swarm, dataset, slot, &h);
        Ok(())
    }

    fn spawn_fetch(&self, swarm: SwarmId, dataset: Cid, slot: u32, h: &HeldRecord) {
        let sources = Envelope::decode(&h.offer)
            .map(|o| offer_sources(&o))
            .unwrap_or_default();
        let fetcher = self.fetcher.clone();
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let deadline = h.expires_at.saturating_sub(self.clock.now().unix);
        tokio::spawn(async move {
            let work = fetch_pinned(fetcher, net, store, dataset, sources);
            let result =
                match tokio::time::timeout(Duration::from_secs(deadline.max(1)), work).await {
                    Ok(r) => r,
                    Err(_) => Err("the offer expired before the data arrived".to_owned()),
                };
            let _ = tx
                .send(Msg::Internal(Internal::Fetched {
                    swarm,
                    dataset,
                    slot,
                    result,
                }))
                .await;
        });
    }

    async fn on_fetched(&mut self, swarm: SwarmId, d: Cid, slot: u32, result: Result<(), String>) {
        let Some(h) = self
            .swarms
            .get(&swarm)
            .and_then(|e| e.held.get(&(d, slot)))
            .cloned()
        else {
            return;
        };
        match result {
            Ok(()) => {
                let Ok(offer) = Envelope::decode(&h.offer) else {
                    self.drop_held(swarm, d, slot).await;
                    return;
                };
                let live = HeldRecord {
                    state: "live".into(),
                    ..h
                };
                // Durable before the claim goes out (§16).
                if let Err(e) = self.put_held(swarm, d, slot, live).await {
                    tracing::error!(error = %e, "persisting a filled slot failed");
                    return;
                }
                tracing::info!(swarm = %swarm.to_text(), dataset = %d, slot, "slot filled; claiming");
                self.feed(
                    swarm,
                    Input::Command(Command::Claim {
                        offers: vec![offer],
                    }),
                )
                .await;
            }
            Err(e) => {
                tracing::warn!(swarm = %swarm.to_text(), dataset = %d, slot, error = %e, "giving up an accepted slot");
                self.drop_held(swarm, d, slot).await;
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // `none` with auto-fetch (§6): every storer keeps the swarm's `none` data in its quota

    /// Drops kept `none` data past its retention, then starts fetching the `none` datasets this
    /// node should keep and does not, newest first.
    async fn scan_none(&mut self, swarm: SwarmId) {
        let now = self.clock.now();
        let grace = self.cfg.durability.retire_grace().as_secs();
        let Some(e) = self.swarms.get(&swarm) else {
            return;
        };
        let expired: Vec<Cid> = e
            .cached
            .iter()
            .filter(|(d, c)| {
                (c.retain_until != 0 && c.retain_until <= now.unix)
                    || e.state
                        .datasets()
                        .retire(d)
                        .is_some_and(|r| r.issued_at.saturating_add(grace) <= now.unix)
            })
            .map(|(d, _)| *d)
            .collect();
        for d in expired {
            tracing::info!(swarm = %swarm.to_text(), dataset = %d, "dropping kept `none` data past its retention");
            self.evict(swarm, d).await;
        }
        let Some(e) = self.swarms.get(&swarm) else {
            return;
        };
        if !e.record.storer || !e.state.view().policy().auto_fetch_none {
            return;
        }
        let mut wanted: Vec<(u64, Cid, u64, CPeer)> = e
            .state
            .datasets()
            .datasets()
            .filter(|a| {
                a.policy == Policy::None
                    && a.announcer != self.me
                    && (a.retain_until == 0 || a.retain_until > now.unix)
                    && !e.state.datasets().is_retired(&a.dataset)
                    && !e.cached.contains_key(&a.dataset)
                    && e.cache_wait.get(&a.dataset).is_none_or(|t| *t <= now.mono)
            })
            .map(|a| (a.announced_at, a.dataset, a.retain_until, a.announcer))
            .collect();
        wanted.sort_by_key(|w| std::cmp::Reverse((w.0, w.1)));
        for (announced_at, d, retain_until, announcer) in wanted {
            // The quota counts what the store really uses: blocksCount × blockSize.
            let Some(e) = self.swarms.get_mut(&swarm) else {
                return;
            };
            match e.sizes.get(&d) {
                Some(size) => {
                    let size = *size;
                    self.start_cache(swarm, d, size, announced_at, retain_until)
                        .await;
                }
                None => {
                    if e.sizing.insert(d) {
                        self.spawn_sizing(swarm, d, announcer);
                    }
                }
            }
        }
        // Forget the sizes of datasets no longer announced.
        if let Some(e) = self.swarms.get_mut(&swarm) {
            let ds = e.state.datasets();
            e.sizes
                .retain(|d, _| ds.announce(d).is_some() && !ds.is_retired(d));
        }
    }

    /// Looks up a `none` dataset's manifest (locally, else from its announcer) to size it.
    fn spawn_sizing(&self, swarm: SwarmId, d: Cid, announcer: CPeer) {
        let sources: Vec<NetPeer> = to_net(&announcer).into_iter().collect();
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let size = tokio::time::timeout(SIZING_TIMEOUT, stored_size(&net, &store, d, &sources))
                .await
                .ok()
                .flatten()
                .map(|(size, _)| size);
            let _ = tx
                .send(Msg::Internal(Internal::CacheSized {
                    swarm,
                    dataset: d,
                    size,
                }))
                .await;
        });
    }

    /// Makes room (evicting older kept data) and starts one `none` fetch.
    async fn start_cache(
        &mut self,
        swarm: SwarmId,
        d: Cid,
        size: u64,
        announced_at: u64,
        retain_until: u64,
    ) {
        let now = self.clock.now();
        let cached_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |t| t.as_millis() as u64);
        let Some(e) = self.swarms.get_mut(&swarm) else {
            return;
        };
        let need = (e.used() + size).saturating_sub(e.record.quota);
        if size > e.record.quota {
            e.cache_wait.insert(d, now.mono + CACHE_NO_ROOM_RETRY);
            return;
        }
        if need > 0 && !self.make_room(swarm, need, Some(announced_at)).await {
            tracing::debug!(swarm = %swarm.to_text(), dataset = %d, size, "no room for a `none` dataset");
            if let Some(e) = self.swarms.get_mut(&swarm) {
                e.cache_wait.insert(d, now.mono + CACHE_NO_ROOM_RETRY);
            }
            return;
        }
        let c = CachedRecord {
            version: persist::RECORD_VERSION,
            state: "pending".into(),
            size,
            announced_at,
            cached_at_ms,
            retain_until,
            owned: true,
        };
        if let Err(err) = self.put_cached(swarm, d, c).await {
            tracing::error!(error = %err, "persisting a `none` fetch failed");
            return;
        }
        tracing::info!(swarm = %swarm.to_text(), dataset = %d, size, "fetching a `none` dataset for the swarm");
        self.spawn_cache_fetch(swarm, d);
    }

    /// Evicts kept `none` data of `swarm`, oldest first (announced_at, then when it was kept),
    /// until `need` bytes are free. With `older_than`, only data announced strictly before that
    /// time may go (equal times never displace each other). Nothing is evicted unless enough
    /// can be.
    async fn make_room(&mut self, swarm: SwarmId, need: u64, older_than: Option<u64>) -> bool {
        let Some(e) = self.swarms.get(&swarm) else {
            return false;
        };
        let mut victims: Vec<((u64, u64), Cid, u64)> = e
            .cached
            .iter()
            .filter(|(_, c)| c.owned && c.state == "complete")
            .map(|(d, c)| ((c.announced_at, c.cached_at_ms), *d, c.size))
            .filter(|(k, _, _)| older_than.is_none_or(|o| k.0 < o))
            .collect();
        victims.sort();
        let mut freed = 0u64;
        let mut chosen = Vec::new();
        for (_, d, size) in victims {
            if freed >= need {
                break;
            }
            freed += size;
            chosen.push(d);
        }
        if freed < need {
            return false;
        }
        for d in chosen {
            tracing::info!(swarm = %swarm.to_text(), dataset = %d, "evicting the oldest kept `none` dataset");
            self.evict(swarm, d).await;
        }
        true
    }

    async fn put_cached(
        &mut self,
        swarm: SwarmId,
        d: Cid,
        c: CachedRecord,
    ) -> cairn_store::Result<()> {
        let op = MetaOp::Put {
            table: persist::CACHED.into(),
            key: persist::job_key(&swarm, &d),
            value: serde_json::to_vec(&c).unwrap_or_default(),
        };
        self.write(vec![op]).await?;
        if let Some(e) = self.swarms.get_mut(&swarm) {
            e.cached.insert(d, c);
        }
        Ok(())
    }

    /// Forgets a kept dataset's record (not its data).
    async fn forget_cached(&mut self, swarm: SwarmId, d: Cid) -> Option<CachedRecord> {
        let op = MetaOp::Delete {
            table: persist::CACHED.into(),
            key: persist::job_key(&swarm, &d),
        };
        if let Err(e) = self.write(vec![op]).await {
            tracing::error!(error = %e, "deleting a kept `none` record failed");
        }
        self.swarms.get_mut(&swarm)?.cached.remove(&d)
    }

    /// Stops keeping `d` for `swarm`; deletes the data if this node fetched it for a swarm and
    /// nothing else here needs it (slots and user data are never touched).
    async fn evict(&mut self, swarm: SwarmId, d: Cid) {
        if let Some(c) = self.forget_cached(swarm, d).await
            && c.owned
        {
            self.drop_cached_data(d).await;
        }
    }

    /// True while some swarm holds a slot of `d` or keeps it as `none` data this node fetched.
    fn still_needed(&self, d: &Cid) -> bool {
        self.swarms
            .values()
            .any(|e| e.held.keys().any(|(x, _)| x == d) || e.cached.get(d).is_some_and(|c| c.owned))
    }

    async fn drop_cached_data(&self, d: Cid) {
        let needed = self.still_needed(&d);
        if needed {
            return;
        }
        let store = self.store.clone();
        let deleted = tokio::task::spawn_blocking(move || store.delete_dataset(&d))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match deleted {
            Ok(_) => {
                let net = self.net.clone();
                tokio::spawn(async move {
                    let _ = net.stop_providing(d).await;
                });
            }
            Err(e) => {
                tracing::warn!(dataset = %d, error = %e, "deleting evicted `none` data failed")
            }
        }
    }

    fn spawn_cache_fetch(&self, swarm: SwarmId, d: Cid) {
        let sources: Vec<NetPeer> = self
            .swarms
            .get(&swarm)
            .and_then(|e| e.state.datasets().announce(&d))
            .and_then(|a| to_net(&a.announcer))
            .into_iter()
            .collect();
        let fetcher = self.fetcher.clone();
        let net = self.net.clone();
        let store = self.store.clone();
        let tx = self.tx.clone();
        let slots = self.cache_slots.clone();
        tokio::spawn(async move {
            let result = async {
                let _permit = slots.acquire_owned().await.map_err(|e| e.to_string())?;
                let have = stored_record(&store, d).await?;
                if have.is_some_and(|r| r.state == DatasetState::Complete) {
                    // Already stored here (user data or a slot of another swarm): kept as is.
                    return Ok(false);
                }
                let work = fetch_pinned(fetcher, net, store, d, sources);
                match tokio::time::timeout(CACHE_FETCH_TIMEOUT, work).await {
                    Ok(r) => r.map(|()| true),
                    Err(_) => Err("the fetch took too long".to_owned()),
                }
            }
            .await;
            let _ = tx
                .send(Msg::Internal(Internal::Cached {
                    swarm,
                    dataset: d,
                    result,
                }))
                .await;
        });
    }

    async fn on_cached(&mut self, swarm: SwarmId, d: Cid, result: Result<bool, String>) {
        let now = self.clock.now();
        let Some(c) = self
            .swarms
            .get(&swarm)
            .and_then(|e| e.cached.get(&d))
            .cloned()
        else {
            // Evicted or left meanwhile: drop what arrived unless something else needs it.
            if result == Ok(true) {
                self.drop_cached_data(d).await;
            }
            return;
        };
        match result {
            Ok(owned) => {
                let done = CachedRecord {
                    state: "complete".into(),
                    owned,
                    ..c
                };
                tracing::info!(swarm = %swarm.to_text(), dataset = %d, owned, "kept a `none` dataset for the swarm");
                if let Err(e) = self.put_cached(swarm, d, done).await {
                    tracing::error!(error = %e, "persisting a kept `none` dataset failed");
                }
            }
            Err(err) => {
                tracing::warn!(swarm = %swarm.to_text(), dataset = %d, error = %err, "fetching a `none` dataset failed; retrying later");
                self.forget_cached(swarm, d).await;
                if let Some(e) = self.swarms.get_mut(&swarm) {
                    e.cache_wait.insert(d, now.mono + CACHE_RETRY);
                }
            }
        }
    }

    /// Starts a DHT provider lookup of a `none` dataset unless a recent one exists.
    fn refresh_providers(&mut self, swarm: SwarmId, d: Cid) {
        let now = self.clock.now();
        let Some(e) = self.swarms.get_mut(&swarm) else {
            return;
        };
        let p = e.providers.entry(d).or_default();
        if p.busy
            || p.at
                .is_some_and(|t| now.mono.saturating_sub(t) < PROVIDERS_REFRESH)
        {
            return;
        }
        p.busy = true;
        let net = self.net.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let peers = net
                .find_providers(d, PROVIDERS_LIMIT)
                .await
                .unwrap_or_default()
                .iter()
                .filter_map(to_core)
                .collect();
            let _ = tx
                .send(Msg::Internal(Internal::Providers {
                    swarm,
                    dataset: d,
                    peers,
                }))
                .await;
        });
    }

    // -----------------------------------------------------------------------------------------
    // Placement (§8): the announcer's job

    async fn drive_job(&mut self, swarm: SwarmId, d: Cid) {
        let now = self.clock.now();
        let offer_timeout = self.cfg.durability.offer_timeout();
        let claim_timeout = self.cfg.durability.params().claim_timeout_secs;
        let me = self.me;
        let mut self_claim = None;
        let mut sends = Vec::new();
        let finished;
        {
            let Some(e) = self.swarms.get_mut(&swarm) else {
                return;
            };
            let Some(job) = e.jobs.get_mut(&d) else {
                return;
            };
            let Some(a) = e.state.datasets().announce(&d).cloned() else {
                return;
            };
            if e.state.datasets().is_retired(&d) {
                e.jobs.remove(&d);
                finished = true;
            } else {
                let n = a.policy.slots();
                let holders: BTreeSet<CPeer> = (0..n)
                    .filter_map(|s| e.state.datasets().holder(&d, s).map(|w| w.holder))
                    .collect();
                let eligible = e.state.eligible_storers(now);
                let order = candidate_order(&d, &eligible);
                for slot in 0..n {
                    if e.state.datasets().holder(&d, slot).is_some() {
                        job.in_flight.remove(&slot);
                        continue;
                    }
                    if job.gave_up.contains(&slot) {
                        continue;
                    }
                    if let Some((_, deadline, _)) = job.in_flight.get(&slot) {
                        if *deadline > now.mono {
                            continue;
                        }
                        job.in_flight.remove(&slot);
                    }
                    if job.in_flight.len() >= OFFERS_IN_FLIGHT || self_claim.is_some() {
                        continue;
                    }
                    let offered: BTreeSet<CPeer> =
                        job.in_flight.values().map(|(p, _, _)| *p).collect();
                    // The announcer holds the complete upload: it goes first (§8).
                    let pick = if eligible.contains(&me)
                        && !job.tried.contains(&me)
                        && !holders.contains(&me)
                        && !e.held.keys().any(|(x, _)| *x == d)
                    {
                        Some(me)
                    } else {
                        let walk = Walk {
                            order: &order,
                            slot_size: a.size,
                            erasure: false,
                            holder_prefixes: &[],
                        };
                        let view = e.state.view();
                        walk.next(|p| CandidateInfo {
                            excluded: false,
                            lost_for_dataset: false,
                            free_log2: view
                                .member(p)
                                .and_then(|m| m.beacon.as_ref())
                                .map(|b| b.free_log2),
                            holds_or_offered: job.tried.contains(p)
                                || holders.contains(p)
                                || offered.contains(p),
                            prefixes: Vec::new(),
                        })
                    };
                    let Some(p) = pick else {
                        tracing::info!(swarm = %swarm.to_text(), dataset = %d, slot, "no candidate left; the slot stays unclaimed");
                        job.gave_up.insert(slot);
                        continue;
                    };
                    job.tried.insert(p);
                    let offer = e.state.sign_offer(
                        &d,
                        slot,
                        0,
                        &p,
                        OfferReason::Placement,
                        &[me],
                        now.unix + claim_timeout,
                    );
                    if p == me {
                        self_claim = Some((slot, offer));
                    } else {
                        job.in_flight
                            .insert(slot, (p, now.mono + offer_timeout, false));
                        sends.push((slot, p, offer));
                    }
                }
                finished = (0..n).all(|s| {
                    e.state.datasets().holder(&d, s).is_some() || job.gave_up.contains(&s)
                }) && self_claim.is_none();
                if finished {
                    e.jobs.remove(&d);
                }
            }
        }
        for (slot, p, offer) in sends {
            self.spawn_offer(swarm, d, slot, p, offer, offer_timeout);
        }
        if let Some((slot, offer)) = self_claim {
            let announced = self
                .swarms
                .get(&swarm)
                .and_then(|e| e.state.datasets().announce(&d))
                .map_or(0, |a| a.size);
            // Our own upload: its stored manifest gives what it takes (blocksCount × blockSize).
            let size = stored_record(&self.store, d)
                .await
                .ok()
                .flatten()
                .and_then(|r| manifest_store_size(&r.manifest_bytes, &d))
                .unwrap_or(announced);
            let h = HeldRecord {
                version: persist::RECORD_VERSION,
                generation: 0,
                state: "live".into(),
                size,
                offer: offer.as_bytes().to_vec(),
                expires_at: now.unix + claim_timeout,
                spare_until: 0,
                fetched: false,
            };
            if self.put_held(swarm, d, slot, h).await.is_ok() {
                Box::pin(self.feed(
                    swarm,
                    Input::Command(Command::Claim {
                        offers: vec![offer],
                    }),
                ))
                .await;
            }
        }
        if finished {
            let _ = self
                .write(vec![MetaOp::Delete {
                    table: persist::PLACEMENT.into(),
                    key: persist::job_key(&swarm, &d),
                }])
                .await;
            tracing::info!(swarm = %swarm.to_text(), dataset = %d, "placement finished");
        }
    }

    fn spawn_offer(
        &self,
        swarm: SwarmId,
        d: Cid,
        slot: u32,
        p: CPeer,
        offer: Envelope,
        timeout: Duration,
    ) {
        let net = self.net.clone();
        let tx = self.tx.clone();
        let req = State::offer_request(&offer);
        tokio::spawn(async move {
            let accepted = match to_net(&p) {
                None => false,
                Some(np) => match net
                    .swarm_request_within(np, Bytes::from(req.encode_to_vec()), timeout)
                    .await
                {
                    Ok(bytes) => matches!(
                        pb::Response::decode(bytes.as_ref()).ok().and_then(|r| r.body),
                        Some(response::Body::OfferReply(r)) if r.accept
                    ),
                    Err(e) => {
                        tracing::debug!(peer = %np, error = %e, "offer failed");
                        false
                    }
                },
            };
            let _ = tx
                .send(Msg::Internal(Internal::OfferAnswer {
                    swarm,
                    dataset: d,
                    slot,
                    accepted,
                }))
                .await;
        });
    }

    async fn housekeeping(&mut self) {
        let now = self.clock.now();
        let grace = self.cfg.durability.retire_grace().as_secs();
        let swarms: Vec<SwarmId> = self.swarms.keys().copied().collect();
        self.ticks = self.ticks.wrapping_add(1);
        let scan = self.ticks.is_multiple_of(CACHE_SCAN_TICKS);
        for swarm in swarms {
            if scan {
                self.scan_none(swarm).await;
            }
            if !self.swarms.contains_key(&swarm) {
                continue;
            }
            if self.swarms[&swarm].rendezvous_next <= now.mono {
                self.draw_rendezvous(swarm);
            }
            let jobs: Vec<Cid> = self.swarms[&swarm].jobs.keys().copied().collect();
            for d in jobs {
                self.drive_job(swarm, d).await;
            }
            self.review_held(swarm).await;
            if !self.swarms.contains_key(&swarm) {
                continue;
            }
            // RETIRE_GRACE after a retirement, holders release and drop (§13).
            let e = &self.swarms[&swarm];
            let retired: Vec<(Cid, u32, u32, ReleaseReason)> = e
                .held
                .iter()
                .filter(|(_, h)| h.state == "live" || h.state == "spare")
                .filter(|((d, _), _)| {
                    e.state
                        .datasets()
                        .retire(d)
                        .is_some_and(|r| r.issued_at.saturating_add(grace) <= now.unix)
                })
                .map(|((d, s), h)| {
                    let reason = if h.state == "spare" {
                        ReleaseReason::SpareDropped
                    } else {
                        ReleaseReason::Retired
                    };
                    (*d, *s, h.generation, reason)
                })
                .collect();
            if !retired.is_empty() {
                let entries = retired.clone();
                self.feed(swarm, Input::Command(Command::Release { entries }))
                    .await;
                for (d, s, _, _) in retired {
                    self.drop_held(swarm, d, s).await;
                    self.unpin(d).await;
                }
            }
        }
    }

    /// Spares (§8): a live slot whose claim is no longer the current one (superseded, or lost
    /// the tie-break) is kept as a spare for SPARE_TTL; a spare whose claim is current again is
    /// live; a spare past SPARE_TTL of a dataset that is healthy in our view is released
    /// (SPARE_DROPPED), then unpinned and, if we fetched it for the slot, deleted.
    async fn review_held(&mut self, swarm: SwarmId) {
        let now = self.clock.now();
        let ttl = self.cfg.durability.params().spare_ttl_secs;
        let me = self.me;
        let Some(e) = self.swarms.get(&swarm) else {
            return;
        };
        let ds = e.state.datasets();
        let mut changed = Vec::new();
        let mut dropped = Vec::new();
        for ((d, slot), h) in &e.held {
            if ds.is_retired(d) || ds.released(d, *slot, &me, h.generation) {
                continue;
            }
            let current = ds.holder(d, *slot);
            let mine = current.is_some_and(|w| w.holder == me && w.generation == h.generation);
            let claimed = ds
                .valid_claims(d, *slot)
                .any(|c| c.holder == me && c.generation == h.generation);
            match h.state.as_str() {
                "live" if claimed && current.is_some() && !mine => {
                    tracing::info!(swarm = %swarm.to_text(), dataset = %d, slot, "our claim was superseded; keeping a spare");
                    changed.push((
                        *d,
                        *slot,
                        HeldRecord {
                            state: "spare".into(),
                            spare_until: now.unix.saturating_add(ttl),
                            ..h.clone()
                        },
                    ));
                }
                "spare" if mine => {
                    tracing::info!(swarm = %swarm.to_text(), dataset = %d, slot, "our spare is the current holder again");
                    changed.push((
                        *d,
                        *slot,
                        HeldRecord {
                            state: "live".into(),
                            spare_until: 0,
                            ..h.clone()
                        },
                    ));
                }
                "spare"
                    if h.spare_until <= now.unix
                        && e.state.health(now, d).is_some_and(|x| {
                            x.state == cairn_proto::durability::health::State::Healthy
                        }) =>
                {
                    dropped.push((*d, *slot, h.generation, h.fetched));
                }
                _ => {}
            }
        }
        for (d, slot, h) in changed {
            if let Err(err) = self.put_held(swarm, d, slot, h).await {
                tracing::error!(error = %err, "persisting a held slot failed");
            }
        }
        if dropped.is_empty() {
            return;
        }
        let entries = dropped
            .iter()
            .map(|(d, s, g, _)| (*d, *s, *g, ReleaseReason::SpareDropped))
            .collect();
        // The release goes out (durably) before the data is deleted (§8, §19 invariant 1).
        Box::pin(self.feed(swarm, Input::Command(Command::Release { entries }))).await;
        for (d, slot, _, fetched) in dropped {
            tracing::info!(swarm = %swarm.to_text(), dataset = %d, slot, fetched, "dropping a spare past SPARE_TTL");
            self.drop_held(swarm, d, slot).await;
            if fetched {
                self.drop_cached_data(d).await;
            } else {
                self.unpin(d).await;
            }
        }
    }

    async fn unpin(&self, d: Cid) {
        let still_held = self.still_needed(&d);
        if still_held {
            return;
        }
        let store = self.store.clone();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(r) = store.dataset(&d)? {
                store.set_flags(
                    &d,
                    DatasetFlags {
                        pinned: false,
                        advertise: r.flags.advertise,
                    },
                )?;
            }
            Ok::<_, cairn_store::StoreError>(())
        })
        .await;
    }

    // -----------------------------------------------------------------------------------------
    // API

    async fn on_api(&mut self, a: Api) {
        match a {
            Api::Create(req, reply) => {
                let _ = reply.send(self.create(req).await);
            }
            Api::List(reply) => {
                let now = self.clock.now();
                let list: Vec<serde_json::Value> =
                    self.swarms.keys().map(|s| self.summary(s, now)).collect();
                let _ = reply.send(Ok(serde_json::Value::Array(list)));
            }
            Api::Show(id, reply) => {
                let r = parse_swarm(&id).and_then(|s| {
                    let e = self.swarms.get(&s).ok_or_else(SwarmError::unknown_swarm)?;
                    let now = self.clock.now();
                    let mut v = self.summary(&s, now);
                    let p = e.state.view().policy();
                    v["policy"] = serde_json::json!({
                        "admission": if p.admission == pb::Admission::Open as i32 { "open" } else { "invite" },
                        "announcers": if p.announcers == pb::AnnouncerRule::AdminsOnly as i32 { "admins" } else { "any" },
                        "maxDatasetBytes": p.max_dataset_bytes,
                        "lostAfterSecs": p.lost_after_secs,
                        "datasetShards": p.dataset_shards,
                        "autoFetchNone": p.auto_fetch_none,
                        "minMemberAgeSecs": p.min_member_age_secs,
                        "seq": e.state.view().policy_seq(),
                    });
                    v["incarnation"] = e.state.incarnation().into();
                    v["owner"] = e.state.view().owner().to_base58().into();
                    v["exit"] = serde_json::Value::Null;
                    v["gossip"] = e.verdicts.json();
                    v["traffic"] = e.traffic.json();
                    v["rendezvous"] = serde_json::json!({"advertised": e.rendezvous});
                    Ok(v)
                });
                let _ = reply.send(r);
            }
            Api::Invite {
                swarm,
                peer,
                admin,
                expires_at,
                reply,
            } => {
                let _ = reply.send(self.invite(&swarm, &peer, admin, expires_at).await);
            }
            Api::Join {
                swarm,
                invite,
                storer,
                quota,
                reply,
            } => {
                let _ = reply.send(self.join(&swarm, &invite, storer, quota).await);
            }
            Api::Members(id, reply) => {
                let r = parse_swarm(&id).and_then(|s| {
                    let e = self.swarms.get(&s).ok_or_else(SwarmError::unknown_swarm)?;
                    Ok(self.members(e))
                });
                let _ = reply.send(r);
            }
            Api::Revoke(id, peer, reply) => {
                let _ = reply.send(self.revoke(&id, &peer).await);
            }
            Api::Leave(id, reply) => {
                let _ = reply.send(self.leave(&id).await);
            }
            Api::Announce(id, req, reply) => {
                let _ = reply.send(self.announce(&id, req).await);
            }
            Api::Datasets(id, reply) => {
                let r = parse_swarm(&id).and_then(|s| self.datasets(&s));
                let _ = reply.send(r);
            }
            Api::Health(id, cid, reply) => {
                let parsed = parse_swarm(&id).and_then(|s| Ok((s, parse_cid(&cid)?)));
                let r = parsed.and_then(|(s, d)| {
                    let v = self.health_json(&s, &d)?;
                    Ok((s, d, v))
                });
                let r = r.map(|(s, d, v)| {
                    if !v["providers"].is_null() {
                        self.refresh_providers(s, d);
                    }
                    v
                });
                let _ = reply.send(r);
            }
            Api::Retire(id, cid, reply) => {
                let _ = reply.send(self.retire(&id, &cid).await);
            }
            Api::Reserved(reply) => {
                let r = self
                    .swarms
                    .values()
                    .flat_map(|e| e.held.values())
                    .filter(|h| h.state == "pending")
                    .map(|h| h.size)
                    .sum::<u64>()
                    + self
                        .swarms
                        .values()
                        .flat_map(|e| e.cached.values())
                        .filter(|c| c.state == "pending")
                        .map(|c| c.size)
                        .sum::<u64>();
                let _ = reply.send(r);
            }
            Api::Protects(cid, reply) => {
                let r = self
                    .swarms
                    .values()
                    .any(|e| e.held.keys().any(|(d, _)| *d == cid));
                let _ = reply.send(r);
            }
        }
    }

    fn role(&self, e: &Entry) -> &'static str {
        let view = e.state.view();
        if view.owner() == self.me {
            "owner"
        } else if view.is_admin(&self.me) {
            "admin"
        } else if e.record.storer {
            "storer"
        } else {
            "light"
        }
    }

    fn summary(&self, s: &SwarmId, now: Now) -> serde_json::Value {
        let e = &self.swarms[s];
        let view = e.state.view();
        let _ = now;
        serde_json::json!({
            "swarmId": s.to_text(),
            "name": view.genesis().genesis.name,
            "role": self.role(e),
            "members": view.members().filter(|(_, m)| m.state == MemberState::Active).count(),
            "datasets": e.state.datasets().datasets().count(),
            "state": "active",
            "quotaBytes": e.record.quota,
            "usedBytes": e.used(),
            "cachedDatasets": e.cached.values().filter(|c| c.state == "complete").count(),
        })
    }

    async fn start_swarm(
        &mut self,
        genesis: &pb::GenesisRecord,
        record: SwarmRecord,
    ) -> SwarmResult<SwarmId> {
        let now = self.clock.now();
        let seed = self.rng.next_u64();
        let (state, outs) = State::new(
            genesis,
            self.cfg.keypair.clone(),
            record.storer,
            1,
            self.cfg.durability.params(),
            seed,
            now,
        )
        .map_err(|e| SwarmError::invalid(format!("genesis: {e}")))?;
        let swarm = state.swarm_id();
        self.swarms.insert(swarm, Entry::new(state, record));
        if let Err(e) = self.persist_swarm(swarm).await {
            self.swarms.remove(&swarm);
            return Err(SwarmError::internal(e));
        }
        self.execute(swarm, outs, &mut Vec::new()).await;
        self.set_free(swarm);
        self.draw_rendezvous(swarm);
        Ok(swarm)
    }

    /// Draws again whether this node advertises the swarm's rendezvous key: storers with
    /// probability min(1, 20/S), S the Active storers in the view (§5). Kad re-provides an
    /// advertised key on the node's reprovide timer; the draw is repeated at the same period.
    fn draw_rendezvous(&mut self, swarm: SwarmId) {
        let now = self.clock.now();
        let Some(e) = self.swarms.get_mut(&swarm) else {
            return;
        };
        e.rendezvous_next = now.mono + self.cfg.reprovide.max(Duration::from_secs(1));
        let storers = e
            .state
            .view()
            .members()
            .filter(|(_, m)| m.state == MemberState::Active && m.storer)
            .count()
            .max(1) as u64;
        let want = e.record.storer && rendezvous_draw(self.rng.next_u64(), storers);
        if want == e.rendezvous {
            return;
        }
        e.rendezvous = want;
        let key = cairn_net::rendezvous_key(swarm.as_bytes());
        let net = self.net.clone();
        tracing::debug!(swarm = %swarm.to_text(), advertise = want, storers, "rendezvous key");
        tokio::spawn(async move {
            let r = if want {
                net.provide_key(&key).await
            } else {
                net.stop_providing_key(&key).await
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, "rendezvous advertisement failed");
            }
        });
    }

    /// Dials `addrs` (a join's bootstrap addresses) in the background; if none answers, looks
    /// up the swarm's rendezvous key in Kad and connects to the providers found (§5). The peers
    /// reached come back as [`Internal::Connected`], which starts a sync.
    fn spawn_connect(&self, swarm: SwarmId, addrs: Vec<Multiaddr>) {
        let net = self.net.clone();
        let tx = self.tx.clone();
        let me = self.net.local_peer_id();
        tokio::spawn(async move {
            let mut peers = Vec::new();
            for a in addrs {
                let Some(p) = a.iter().find_map(|p| match p {
                    Protocol::P2p(id) => Some(id),
                    _ => None,
                }) else {
                    continue;
                };
                match net.connect(p, vec![a.clone()]).await {
                    Ok(()) => peers.extend(to_core(&p)),
                    Err(e) => tracing::debug!(addr = %a, error = %e, "bootstrap dial failed"),
                }
            }
            if peers.is_empty() {
                let key = cairn_net::rendezvous_key(swarm.as_bytes());
                match net
                    .find_providers_of_key(&key, RENDEZVOUS_LOOKUP_LIMIT)
                    .await
                {
                    Ok(found) => {
                        tracing::debug!(swarm = %swarm.to_text(), found = found.len(), "rendezvous lookup");
                        peers.extend(found.iter().filter(|p| **p != me).filter_map(to_core));
                    }
                    Err(e) => tracing::debug!(error = %e, "rendezvous lookup failed"),
                }
            }
            let _ = tx
                .send(Msg::Internal(Internal::Connected { swarm, peers }))
                .await;
        });
    }

    async fn create(&mut self, req: CreateSwarm) -> SwarmResult<serde_json::Value> {
        let now = self.clock.now();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        nonce[8..].copy_from_slice(&self.rng.next_u64().to_le_bytes());
        let policy = pb::SwarmPolicy {
            admission: if req.open {
                pb::Admission::Open
            } else {
                pb::Admission::Invite
            } as i32,
            announcers: if req.admins_only {
                pb::AnnouncerRule::AdminsOnly
            } else {
                pb::AnnouncerRule::AnyMember
            } as i32,
            default_policy: Some(req.default_policy),
            max_dataset_bytes: req.max_dataset_bytes,
            lost_after_secs: req
                .lost_after_secs
                .unwrap_or_else(|| self.cfg.durability.lost_after_secs()),
            dataset_shards: if req.expected_members >= 1000 { 16 } else { 1 },
            auto_fetch_none: true,
            min_member_age_secs: self.cfg.durability.min_member_age_secs(req.open),
        };
        check_swarm_policy(&policy).map_err(SwarmError::invalid)?;
        let genesis = pb::Genesis {
            version: 1,
            name: req.name,
            owner: self.me.as_bytes().to_vec(),
            created_at: now.unix,
            nonce: nonce.to_vec(),
            policy: Some(policy),
        };
        let record = sign_genesis(&self.cfg.keypair, &genesis);
        verify_genesis(&record).map_err(|e| SwarmError::invalid(e.to_string()))?;
        let rec = SwarmRecord {
            version: persist::RECORD_VERSION,
            genesis: record.encode_to_vec(),
            storer: true,
            quota: self.cfg.default_quota,
            joined_at: now.unix,
            cert: None,
            admin_cert: None,
        };
        let swarm = self.start_swarm(&record, rec).await?;
        self.feed(
            swarm,
            Input::Command(Command::Join {
                cert: None,
                admin_cert: None,
            }),
        )
        .await;
        let open = req.open;
        let invite = open.then(|| {
            invite::encode(&pb::Invite {
                genesis: Some(record.clone()),
                cert: None,
                admin_cert: None,
                bootstrap: Vec::new(),
            })
        });
        tracing::info!(swarm = %swarm.to_text(), "swarm created");
        use base64::Engine as _;
        Ok(serde_json::json!({
            "swarmId": swarm.to_text(),
            "genesis": base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(record.encode_to_vec()),
            "invite": invite,
        }))
    }

    async fn invite(
        &mut self,
        id: &str,
        peer: &str,
        admin: bool,
        expires_at: u64,
    ) -> SwarmResult<String> {
        let swarm = parse_swarm(id)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or_else(SwarmError::unknown_swarm)?;
        let member: NetPeer = peer
            .parse()
            .map_err(|_| SwarmError::invalid("peerId is not a PeerId"))?;
        let member = to_core(&member)
            .ok_or_else(|| SwarmError::invalid("peerId is not an Ed25519 PeerId"))?;
        let now = self.clock.now();
        let view = e.state.view();
        let owner = view.owner() == self.me;
        if !owner && !view.is_admin_at(&self.me, now.unix) {
            return Err(SwarmError::new(
                "not_authorized",
                "only the owner or an admin may invite",
            ));
        }
        if admin && !owner {
            return Err(SwarmError::new(
                "not_authorized",
                "only the owner may invite an admin",
            ));
        }
        if expires_at != 0 && expires_at <= now.unix {
            return Err(SwarmError::invalid("expiresAt is in the past"));
        }
        let cert = pb::MemberCert {
            member: member.as_bytes().to_vec(),
            admin,
            issued_at: now.unix,
            expires_at,
        };
        let env = Envelope::sign_message(&self.cfg.keypair, swarm, Kind::MemberCert, &cert);
        let admin_cert = if owner {
            None
        } else {
            e.record
                .cert
                .as_ref()
                .and_then(|b| Envelope::decode(b).ok())
                .map(|c| c.to_proto())
        };
        let bootstrap = self.bootstrap(&swarm).await;
        Ok(invite::encode(&pb::Invite {
            genesis: Some(e.state.view().genesis().record.clone()),
            cert: Some(env.to_proto()),
            admin_cert,
            bootstrap,
        }))
    }

    /// Our addresses and those of up to 4 other connected storers of the swarm.
    async fn bootstrap(&self, swarm: &SwarmId) -> Vec<String> {
        let Ok(Ok(status)) = tokio::time::timeout(Duration::from_secs(5), self.net.status()).await
        else {
            return Vec::new();
        };
        let me = self.net.local_peer_id();
        let mut out: Vec<String> = status
            .external_addrs
            .iter()
            .chain(status.listen_addrs.iter())
            .filter(|a| {
                !a.iter().any(|p| {
                    matches!(p, Protocol::Ip4(ip) if ip.is_unspecified())
                        || matches!(p, Protocol::Ip6(ip) if ip.is_unspecified())
                })
            })
            .map(|a| format!("{a}/p2p/{me}"))
            .collect();
        out.dedup();
        let Some(e) = self.swarms.get(swarm) else {
            return out;
        };
        let mut others = 0;
        for p in status.connected {
            if others >= 4 {
                break;
            }
            let Some(cp) = to_core(&p.peer_id) else {
                continue;
            };
            if !e.state.view().is_active_storer(&cp) {
                continue;
            }
            if let Some(a) = p.addresses.first() {
                out.push(format!("{a}/p2p/{}", p.peer_id));
                others += 1;
            }
        }
        out
    }

    async fn join(
        &mut self,
        id: &str,
        text: &str,
        storer: bool,
        quota: Option<u64>,
    ) -> SwarmResult<serde_json::Value> {
        let swarm = parse_swarm(id)?;
        let inv = invite::decode(text).ok_or_else(|| SwarmError::invalid("not an invite"))?;
        let genesis = inv
            .genesis
            .clone()
            .ok_or_else(|| SwarmError::invalid("the invite has no genesis"))?;
        let g =
            verify_genesis(&genesis).map_err(|e| SwarmError::invalid(format!("genesis: {e}")))?;
        if g.swarm_id != swarm {
            return Err(SwarmError::invalid("the invite is for another swarm"));
        }
        if self.swarms.contains_key(&swarm) {
            return Err(SwarmError::new(
                "conflict",
                "already a member of this swarm",
            ));
        }
        let policy = g.genesis.policy.clone().unwrap_or_default();
        let cert = match &inv.cert {
            Some(c) => {
                let env = Envelope::from_proto(c)
                    .map_err(|e| SwarmError::invalid(format!("certificate: {e}")))?;
                let Ok(Body::MemberCert(mc)) = env.body() else {
                    return Err(SwarmError::invalid("the certificate is not a MemberCert"));
                };
                if env.kind() != Kind::MemberCert || *env.swarm_id() != swarm {
                    return Err(SwarmError::invalid("the certificate is for another swarm"));
                }
                if mc.member != self.me.as_bytes() {
                    return Err(SwarmError::new(
                        "not_authorized",
                        "the invite's certificate names another node",
                    ));
                }
                Some(env)
            }
            None if policy.admission == pb::Admission::Invite as i32 => {
                return Err(SwarmError::new(
                    "not_authorized",
                    "this swarm admits by invitation and the invite has no certificate",
                ));
            }
            None => None,
        };
        let admin_cert = match &inv.admin_cert {
            Some(c) => Some(
                Envelope::from_proto(c)
                    .map_err(|e| SwarmError::invalid(format!("admin certificate: {e}")))?,
            ),
            None => None,
        };
        let now = self.clock.now();
        let rec = SwarmRecord {
            version: persist::RECORD_VERSION,
            genesis: genesis.encode_to_vec(),
            storer,
            quota: quota.unwrap_or(self.cfg.default_quota),
            joined_at: now.unix,
            cert: cert.as_ref().map(|c| c.as_bytes().to_vec()),
            admin_cert: admin_cert.as_ref().map(|c| c.as_bytes().to_vec()),
        };
        let swarm = self.start_swarm(&genesis, rec).await?;
        let events = self
            .feed(swarm, Input::Command(Command::Join { cert, admin_cert }))
            .await;
        if let Some(Event::Refused { reason, .. }) =
            events.iter().find(|e| matches!(e, Event::Refused { .. }))
        {
            let reason = reason.clone();
            self.abandon(swarm).await;
            return Err(SwarmError::new(
                "not_authorized",
                format!("the invite does not admit this node: {reason}"),
            ));
        }
        // Dial the bootstrap addresses (else the rendezvous key's providers) in the
        // background, then pull the ctl scope.
        let addrs: Vec<Multiaddr> = inv
            .bootstrap
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        self.spawn_connect(swarm, addrs);
        let e = &self.swarms[&swarm];
        tracing::info!(swarm = %swarm.to_text(), "joined a swarm");
        Ok(serde_json::json!({
            "swarmId": swarm.to_text(),
            "name": e.state.view().genesis().genesis.name,
            "role": self.role(e),
        }))
    }

    /// Forgets a swarm locally (after a leave or a refused join).
    async fn abandon(&mut self, swarm: SwarmId) {
        let Some(e) = self.swarms.remove(&swarm) else {
            return;
        };
        if e.rendezvous {
            let net = self.net.clone();
            let key = cairn_net::rendezvous_key(swarm.as_bytes());
            tokio::spawn(async move {
                let _ = net.stop_providing_key(&key).await;
            });
        }
        let ops = e
            .topics()
            .into_iter()
            .map(|t| NetOp::Unsubscribe(topic_name(&swarm, t)))
            .collect();
        // Let pending publishes (the Leave) go out first.
        let net = self.net.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            run_net_ops(net, ops).await;
        });
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || persist::forget_swarm(store.as_ref(), &swarm))
            .await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "forgetting a swarm failed"),
            Err(e) => tracing::error!(error = %e, "forgetting a swarm failed"),
        }
        for (d, _) in e.held.keys() {
            self.unpin(*d).await;
        }
        for (d, c) in &e.cached {
            if c.owned {
                self.drop_cached_data(*d).await;
            }
        }
    }

    fn members(&self, e: &Entry) -> Vec<serde_json::Value> {
        let now = self.clock.now();
        let view = e.state.view();
        let params = e.state.params();
        view.members()
            .map(|(p, m)| {
                let state = match m.state {
                    MemberState::Departed => "departed",
                    MemberState::Revoked => "revoked",
                    MemberState::Active => match view.presence(p, now.unix, params) {
                        Some(Presence::Lost) => "lost",
                        Some(Presence::Absent) => "absent",
                        _ => "present",
                    },
                };
                let slots = e.state.datasets().holdings(p).len();
                serde_json::json!({
                    "peerId": p.to_base58(),
                    "admin": view.is_admin(p),
                    "owner": *p == view.owner(),
                    "storer": m.storer,
                    "state": state,
                    "incarnation": m.incarnation,
                    "lastSeenAt": rfc3339(m.last_signal),
                    "slotsHeld": slots,
                    "freeBytesLog2": m.beacon.as_ref().map(|b| b.free_log2),
                })
            })
            .collect()
    }

    async fn revoke(&mut self, id: &str, peer: &str) -> SwarmResult<()> {
        let swarm = parse_swarm(id)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or_else(SwarmError::unknown_swarm)?;
        let member: NetPeer = peer
            .parse()
            .map_err(|_| SwarmError::invalid("not a PeerId"))?;
        let member =
            to_core(&member).ok_or_else(|| SwarmError::invalid("not an Ed25519 PeerId"))?;
        let now = self.clock.now();
        let view = e.state.view();
        if !view.is_owner_or_admin_at(&self.me, now.unix) {
            return Err(SwarmError::new(
                "not_authorized",
                "only the owner or an admin may revoke",
            ));
        }
        if member == view.owner() {
            return Err(SwarmError::new(
                "not_authorized",
                "nobody may revoke the owner",
            ));
        }
        if view.is_admin(&member) && view.owner() != self.me {
            return Err(SwarmError::new(
                "not_authorized",
                "only the owner may revoke an admin",
            ));
        }
        match view.member(&member).map(|m| m.state) {
            None => return Err(SwarmError::new("conflict", "not a member of this swarm")),
            Some(MemberState::Revoked) => {
                return Err(SwarmError::new("conflict", "already revoked"));
            }
            _ => {}
        }
        let events = self
            .feed(
                swarm,
                Input::Command(Command::Revoke {
                    member,
                    reason: String::new(),
                }),
            )
            .await;
        refused(&events, "not_authorized")
    }

    async fn leave(&mut self, id: &str) -> SwarmResult<serde_json::Value> {
        let swarm = parse_swarm(id)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or_else(SwarmError::unknown_swarm)?;
        let released = e.state.my_holdings().len();
        let events = self.feed(swarm, Input::Command(Command::Leave)).await;
        refused(&events, "conflict")?;
        self.abandon(swarm).await;
        tracing::info!(swarm = %swarm.to_text(), released, "left a swarm");
        Ok(serde_json::json!({"slotsToHandOff": 0, "slotsReleased": released, "state": "departed"}))
    }

    async fn announce(
        &mut self,
        id: &str,
        req: super::AnnounceRequest,
    ) -> SwarmResult<serde_json::Value> {
        let swarm = parse_swarm(id)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or_else(SwarmError::unknown_swarm)?;
        let d = req.cid;
        let record = stored_record(&self.store, d)
            .await
            .map_err(SwarmError::internal)?
            .filter(|r| r.state == DatasetState::Complete)
            .ok_or_else(|| {
                SwarmError::new(
                    "unknown_dataset",
                    "no complete dataset with this CID is stored here",
                )
            })?;
        let manifest = cairn_core::Manifest::decode(&record.manifest_bytes)
            .map_err(|e| SwarmError::internal(format!("stored manifest: {e}")))?;
        if manifest.erasure.is_some() {
            return Err(SwarmError::new(
                "unsatisfiable",
                "protected (erasure) datasets are not announced in slice S1",
            ));
        }
        let policy = e.state.view().policy();
        if manifest.dataset_size > policy.max_dataset_bytes {
            return Err(SwarmError::new(
                "too_large",
                "the dataset is over the swarm's max_dataset_bytes",
            ));
        }
        let explicit = match req.policy {
            Some(p) => Some(p),
            None => policy
                .default_policy
                .as_ref()
                .filter(|p| p.kind != pb::PolicyKind::Auto as i32)
                .and_then(|p| Policy::from_proto(p).ok()),
        };
        if let Some(Policy::Erasure { .. }) = explicit {
            return Err(SwarmError::new(
                "unsatisfiable",
                "erasure is not available in slice S1",
            ));
        }
        let events = self
            .feed(
                swarm,
                Input::Command(Command::Announce {
                    dataset: d,
                    content: d,
                    size: manifest.dataset_size,
                    blocks: manifest.blocks_count(),
                    policy: explicit,
                    retain_until: req.retain_until,
                }),
            )
            .await;
        if let Some(Event::Refused { reason, .. }) =
            events.iter().find(|e| matches!(e, Event::Refused { .. }))
        {
            let r = reason.to_ascii_lowercase();
            let code = if r.contains("rate") || r.contains("limit") {
                "rate_limited"
            } else if r.contains("unsatisf") || r.contains("eligible") {
                "unsatisfiable"
            } else if r.contains("duplicate") {
                "conflict"
            } else {
                "not_authorized"
            };
            return Err(SwarmError::new(code, reason.clone()));
        }
        let Some(policy) = events.iter().find_map(|e| match e {
            Event::Announced { dataset, policy } if *dataset == d => Some(*policy),
            _ => None,
        }) else {
            return Err(SwarmError::internal("the announce was not published"));
        };
        if policy.slots() > 0 {
            let _ = self
                .write(vec![MetaOp::Put {
                    table: persist::PLACEMENT.into(),
                    key: persist::job_key(&swarm, &d),
                    value: Vec::new(),
                }])
                .await;
            if let Some(e) = self.swarms.get_mut(&swarm) {
                e.jobs.insert(d, Job::default());
            }
            self.drive_job(swarm, d).await;
        }
        Ok(serde_json::json!({
            "datasetCid": d.to_string(),
            "contentCid": d.to_string(),
            "policy": policy_json(&policy),
            "state": if policy.slots() > 0 { "placing" } else { "unmanaged" },
        }))
    }

    fn dataset_state(&self, e: &Entry, d: &Cid) -> &'static str {
        if e.state.datasets().is_retired(d) {
            "retired"
        } else if e.jobs.contains_key(d) {
            "placing"
        } else {
            e.state
                .health(self.clock.now(), d)
                .map_or("unknown", |h| h.state.as_str())
        }
    }

    fn datasets(&self, s: &SwarmId) -> SwarmResult<serde_json::Value> {
        let e = self.swarms.get(s).ok_or_else(SwarmError::unknown_swarm)?;
        let list: Vec<serde_json::Value> = e
            .state
            .datasets()
            .datasets()
            .map(|a| {
                serde_json::json!({
                    "datasetCid": a.dataset.to_string(),
                    "contentCid": a.content.to_string(),
                    "size": a.size,
                    "policy": policy_json(&a.policy),
                    "announcer": a.announcer.to_base58(),
                    "announcedAt": rfc3339(a.announced_at),
                    "retainUntil": (a.retain_until != 0).then(|| rfc3339(a.retain_until)),
                    "state": self.dataset_state(e, &a.dataset),
                })
            })
            .collect();
        Ok(serde_json::Value::Array(list))
    }

    fn health_json(&self, s: &SwarmId, d: &Cid) -> SwarmResult<serde_json::Value> {
        let e = self.swarms.get(s).ok_or_else(SwarmError::unknown_swarm)?;
        let now = self.clock.now();
        let a =
            e.state.datasets().announce(d).ok_or_else(|| {
                SwarmError::new("unknown_dataset", "no such dataset in this swarm")
            })?;
        let h: Health = e
            .state
            .health(now, d)
            .ok_or_else(|| SwarmError::new("unknown_dataset", "no such dataset in this swarm"))?;
        let view = e.state.view();
        let mut oldest = 0u64;
        let slots: Vec<serde_json::Value> = h
            .slots
            .iter()
            .map(|s| {
                let seen = s.holder.and_then(|p| view.member(&p)).map(|m| {
                    if s.holder == Some(self.me) {
                        now.unix
                    } else {
                        m.last_signal
                    }
                });
                if let Some(t) = seen {
                    oldest = oldest.max(now.unix.saturating_sub(t));
                }
                serde_json::json!({
                    "index": s.index,
                    "holder": s.holder.map(|p| p.to_base58()),
                    "generation": s.generation,
                    "state": slot_state(s.state),
                    "lastSeenAt": seen.map(rfc3339),
                    "source": if s.holder == Some(self.me) { "self" } else { "facts" },
                    "lastVerifiedAt": null,
                })
            })
            .collect();
        // `unmanaged` (§11): the members among the DHT providers, plus this node if it holds it.
        let providers = if a.policy == Policy::None {
            let mine = e.held.keys().any(|(x, _)| x == d)
                || a.announcer == self.me
                || e.cached.get(d).is_some_and(|c| c.state == "complete");
            let seen = e.providers.get(d).map_or(0, |p| {
                p.peers
                    .iter()
                    .filter(|p| **p != self.me && view.is_active(p))
                    .count()
            });
            Some(seen as u32 + u32::from(mine))
        } else {
            None
        };
        let available = providers.map_or(h.available, |p| p > 0);
        Ok(serde_json::json!({
            "swarmId": s.to_text(),
            "datasetCid": d.to_string(),
            "contentCid": a.content.to_string(),
            "policy": policy_json(&a.policy),
            "state": h.state.as_str(),
            "available": available,
            "counts": {
                "slots": h.counts.slots, "reachable": h.counts.reachable,
                "suspect": h.counts.suspect, "missing": h.counts.missing,
                "unclaimed": h.counts.unclaimed, "spares": h.counts.spares,
            },
            "distinctHolders": h.distinct_holders,
            "repair": null,
            "slots": slots,
            "view": {"computedAt": rfc3339(now.unix), "fresh": false, "oldestObservationSecs": oldest},
            "confidence": {"verifiedSlots": 0, "samplesPerSlot": 0, "maxUndetectedLoss99": null},
            "providers": providers,
        }))
    }

    async fn retire(&mut self, id: &str, cid: &str) -> SwarmResult<()> {
        let swarm = parse_swarm(id)?;
        let d = parse_cid(cid)?;
        let e = self
            .swarms
            .get(&swarm)
            .ok_or_else(SwarmError::unknown_swarm)?;
        let Some(a) = e.state.datasets().announce(&d) else {
            return Err(SwarmError::new(
                "unknown_dataset",
                "no such dataset in this swarm",
            ));
        };
        let now = self.clock.now();
        if a.announcer != self.me && !e.state.view().is_owner_or_admin_at(&self.me, now.unix) {
            return Err(SwarmError::new(
                "not_authorized",
                "only the announcer or an admin may retire",
            ));
        }
        if e.state.datasets().is_retired(&d) {
            return Err(SwarmError::new("conflict", "already retired"));
        }
        let events = self
            .feed(
                swarm,
                Input::Command(Command::Retire {
                    dataset: d,
                    reason: String::new(),
                }),
            )
            .await;
        refused(&events, "not_authorized")
    }
}

fn slot_state(s: SlotState) -> &'static str {
    match s {
        SlotState::Live => "live",
        SlotState::Suspect => "suspect",
        SlotState::Unclaimed => "unclaimed",
        SlotState::Missing => "missing",
        SlotState::Repairing => "repairing",
    }
}

fn refused(events: &[Event], code: &'static str) -> SwarmResult<()> {
    match events.iter().find_map(|e| match e {
        Event::Refused { reason, .. } => Some(reason.clone()),
        _ => None,
    }) {
        Some(reason) => Err(SwarmError::new(code, reason)),
        None => Ok(()),
    }
}

/// Runs network actions in order. Publishes are retried while gossipsub has no peer for the
/// topic yet (a fresh subscription), up to [`PUBLISH_RETRY`].
async fn run_net_ops(net: Network, ops: Vec<NetOp>) {
    for op in ops {
        match op {
            NetOp::Publish(topic, data) => {
                let started = tokio::time::Instant::now();
                let mut wait = Duration::from_millis(200);
                loop {
                    match net.publish(topic.clone(), data.clone()).await {
                        Ok(_) => break,
                        Err(cairn_net::NetError::Stopped) => return,
                        Err(e) => {
                            if started.elapsed() >= PUBLISH_RETRY {
                                tracing::warn!(%topic, error = %e, "publish failed; anti-entropy will carry it");
                                break;
                            }
                            tokio::time::sleep(wait).await;
                            wait = (wait * 2).min(Duration::from_secs(3));
                        }
                    }
                }
            }
            NetOp::Validate(id, source, verdict) => {
                let _ = net.report_validation(id, source, verdict).await;
            }
            NetOp::Score(peer, score) => {
                let _ = net.set_application_score(peer, score).await;
            }
            NetOp::Subscribe(t) => {
                if let Err(e) = net.subscribe(t.clone()).await {
                    tracing::warn!(topic = %t, error = %e, "subscribing failed");
                }
            }
            NetOp::Unsubscribe(t) => {
                let _ = net.unsubscribe(t).await;
            }
        }
    }
}

/// The peers a SlotOffer names as sources.
fn offer_sources(offer: &Envelope) -> Vec<NetPeer> {
    match offer.body() {
        Ok(Body::SlotOffer(o)) => o
            .sources
            .iter()
            .filter_map(|b| NetPeer::from_bytes(b).ok())
            .collect(),
        _ => Vec::new(),
    }
}

/// The store's record of dataset `d`, read on the blocking pool.
async fn stored_record(
    store: &Arc<dyn BlockStore>,
    d: Cid,
) -> Result<Option<cairn_store::DatasetRecord>, String> {
    let store = store.clone();
    tokio::task::spawn_blocking(move || store.dataset(&d))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}

/// Whether dataset `d` is stored here complete (false when the store cannot tell).
async fn is_complete_here(store: &Arc<dyn BlockStore>, d: Cid) -> bool {
    stored_record(store, d)
        .await
        .ok()
        .flatten()
        .is_some_and(|r| r.state == DatasetState::Complete)
}

/// What dataset `d` takes in the store, blocksCount × blockSize of its manifest (the slot size
/// of §8), and whether it is already stored here complete. The manifest is the stored one, else
/// one fetched from the first of `sources` that has it (checked against the CID). `None` if
/// none could be had or it does not decode.
async fn stored_size(
    net: &Network,
    store: &Arc<dyn BlockStore>,
    d: Cid,
    sources: &[NetPeer],
) -> Option<(u64, bool)> {
    let local = stored_record(store, d).await.ok()?;
    let stored = local
        .as_ref()
        .is_some_and(|r| r.state == DatasetState::Complete);
    let mut bytes = local.map(|r| r.manifest_bytes.to_vec());
    if bytes.is_none() {
        // A few tries per source: a request stream can be refused while the peer's accept
        // queue is busy (`fetch_manifest` itself retries once).
        'sources: for s in sources.iter().take(SIZING_SOURCES) {
            for attempt in 0..SIZING_TRIES {
                match net.fetch_manifest(*s, d).await {
                    Ok(Some(b)) => {
                        bytes = Some(b.to_vec());
                        break 'sources;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(peer = %s, error = %e, attempt, "manifest lookup failed");
                        tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                    }
                }
            }
        }
    }
    Some((manifest_store_size(&bytes?, &d)?, stored))
}

/// blocksCount × blockSize of the manifest `bytes` of `d` (`None` if they are not `d`'s
/// manifest).
fn manifest_store_size(bytes: &[u8], d: &Cid) -> Option<u64> {
    if cairn_core::Manifest::cid_of(bytes) != *d {
        return None;
    }
    let m = cairn_core::Manifest::decode(bytes).ok()?;
    Some(
        m.blocks_count()
            .saturating_mul(u64::from(m.block_size.get())),
    )
}

/// Fetches a dataset from `sources` (or any provider), verified block by block by the
/// fetcher, and pins it with the advertise flag on (§8).
async fn fetch_pinned(
    fetcher: Fetcher,
    net: Network,
    store: Arc<dyn BlockStore>,
    d: Cid,
    sources: Vec<NetPeer>,
) -> Result<(), String> {
    let flags = DatasetFlags {
        pinned: true,
        advertise: true,
    };
    for s in &sources {
        let _ = net.connect(*s, Vec::new()).await;
    }
    let have = stored_record(&store, d).await?;
    if have.is_none() {
        for s in &sources {
            if let Ok(Some(bytes)) = net.fetch_manifest(*s, d).await {
                let store = store.clone();
                let stored =
                    tokio::task::spawn_blocking(move || store.put_manifest(&d, bytes, flags))
                        .await
                        .map_err(|e| e.to_string())?;
                if stored.is_ok() {
                    break;
                }
            }
        }
    }
    let (record, manifest) = fetcher
        .ensure_manifest(d, flags, true)
        .await
        .map_err(|e| e.to_string())?;
    if record.state != DatasetState::Complete {
        let lease = fetcher.attach(&record, &manifest);
        lease
            .transfer
            .wait_for(|| false)
            .await
            .map_err(|e| e.to_string())?;
    }
    let store2 = store.clone();
    let done = tokio::task::spawn_blocking(move || store2.dataset(&d))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    match done {
        Some(r) if r.state == DatasetState::Complete => {
            if !r.flags.pinned || !r.flags.advertise {
                let store = store.clone();
                tokio::task::spawn_blocking(move || store.set_flags(&d, flags))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            }
            let _ = net.provide(d).await;
            Ok(())
        }
        _ => Err("the dataset is incomplete after the transfer".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_size_is_blocks_times_block_size() {
        let m = cairn_core::Manifest {
            tree_cid: Cid::new(cairn_core::Codec::Root, cairn_core::sha256(b"a tree")),
            block_size: cairn_core::BlockSize::new(65_536).unwrap(),
            dataset_size: 300_000,
            filename: None,
            mimetype: None,
            erasure: None,
        };
        let bytes = m.encode();
        let d = cairn_core::Manifest::cid_of(&bytes);
        assert_eq!(manifest_store_size(&bytes, &d), Some(5 * 65_536));
        // Bytes that are not the CID's manifest, or not a manifest.
        let other = cairn_core::Manifest::cid_of(b"x");
        assert_eq!(manifest_store_size(&bytes, &other), None);
        assert_eq!(manifest_store_size(b"x", &other), None);
    }

    #[test]
    fn rendezvous_draw_is_min_one_twenty_over_s() {
        // Up to 20 storers: everyone advertises.
        for s in 1..=20 {
            assert!((0..100u64).all(|r| rendezvous_draw(r.wrapping_mul(0x9e37_79b9_7f4a_7c15), s)));
        }
        // 200 storers: about 1 in 10.
        let mut rng = Rng::new(7);
        let n = 20_000;
        let yes = (0..n)
            .filter(|_| rendezvous_draw(rng.next_u64(), 200))
            .count();
        assert!((1_600..2_400).contains(&yes), "{yes} of {n}");
    }
}
