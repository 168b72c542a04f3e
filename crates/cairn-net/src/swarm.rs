//! The task that owns the libp2p `Swarm`: transport, identify, ping, Kad, gossipsub, the swarm
//! request-response protocol, connection limits, bans, and the command loop behind
//! [`Network`](crate::Network).

use std::{
    collections::{HashMap, HashSet, VecDeque},
    num::NonZeroUsize,
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use futures::{future::BoxFuture, stream::FuturesUnordered};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, SwarmBuilder, allow_block_list,
    connection_limits::{self, ConnectionLimits},
    futures::StreamExt as _,
    gossipsub, identify,
    kad::{self, store::RecordStore as _},
    multiaddr::Protocol,
    noise, ping, request_response,
    swarm::{
        ConnectionId, DialError, NetworkBehaviour, SwarmEvent,
        dial_opts::{DialOpts, PeerCondition},
    },
    tcp, yamux,
};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Identity, NetConfig, NetError, NetEvent, NetStatus, PeerInfo,
    bans::BanList,
    blockexc::Blockexc,
    gossip::{self, GOSSIP_MAX_MESSAGE, GossipId, Verdict},
    keepalive::StreamsIdle,
    rpc::{self, BadFrames, Reply, SwarmCodec, SwarmFrame, SwarmResponder},
};

/// The Kad protocol id (`wire.md` §5.3).
pub(crate) const KAD_PROTOCOL: &str = "/ipfs/kad/1.0.0";
/// Identify's protocol version string (nim-libp2p's default).
const IDENTIFY_PROTOCOL_VERSION: &str = "ipfs/0.1.0";
/// Kad's k.
const K: NonZeroUsize = NonZeroUsize::new(20).expect("20 > 0");
/// How long provider records stored for others are kept (`wire.md` §5.3).
const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(30 * 60);
/// Keys this node may provide.
const MAX_PROVIDED_KEYS: usize = 1 << 20;
/// Interval of libp2p pings on each connection.
const PING_INTERVAL: Duration = Duration::from_secs(60);
/// Most addresses kept per peer in the routing table and as our own external addresses, so a
/// full Kad response stays under the 4096-byte cap of older nim-libp2p (`wire.md` §5.3).
const MAX_ADDRESSES_PER_PEER: usize = 4;
/// Period of the timer that expires bans, lookups and connects and paces re-provides.
const HOUSEKEEPING: Duration = Duration::from_millis(200);
/// Provide queries started per housekeeping tick when re-providing everything.
const REPROVIDES_PER_TICK: usize = 32;
/// Peers remembered in the address book, and addresses per peer.
const ADDRESS_BOOK_PEERS: usize = 4096;
const ADDRESS_BOOK_ADDRS: usize = 8;
/// How long `start` waits for the listener.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The behaviours, in the order the swarm consults them: the ban list and the connection
/// limits come first so a refused connection never reaches the others.
#[derive(NetworkBehaviour)]
#[behaviour(prelude = "libp2p::swarm::derive_prelude")]
pub(crate) struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: StreamsIdle<gossipsub::Behaviour>,
    rpc: request_response::Behaviour<SwarmCodec>,
    pub(crate) stream: libp2p_stream::Behaviour,
}

/// Builds the swarm: TCP + Noise + Yamux and the behaviours.
pub(crate) fn build(identity: &Identity, config: &NetConfig) -> Result<Swarm<Behaviour>, NetError> {
    let transport_error = |e: &dyn std::fmt::Display| NetError::Transport(e.to_string());
    let behaviour = behaviour(identity.keypair(), config)?;
    let swarm = SwarmBuilder::with_existing_identity(identity.keypair().clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|e| transport_error(&e))?
        .with_behaviour(move |_| behaviour)
        .map_err(|e| transport_error(&e))?
        .with_swarm_config(|c| c.with_idle_connection_timeout(config.idle_timeout))
        .build();
    Ok(swarm)
}

fn behaviour(key: &libp2p::identity::Keypair, config: &NetConfig) -> Result<Behaviour, NetError> {
    let gossip_error = |e: &dyn std::fmt::Display| NetError::Gossip(e.to_string());
    let local = key.public().to_peer_id();
    let mut kad_config = kad::Config::new(StreamProtocol::new(KAD_PROTOCOL));
    kad_config
        .set_replication_factor(K)
        .set_kbucket_size(K)
        .set_provider_record_ttl(Some(PROVIDER_RECORD_TTL))
        // Our own records are re-provided by the swarm task (`reprovide_interval`).
        .set_provider_publication_interval(None)
        .set_query_timeout(config.lookup_timeout);
    let store = kad::store::MemoryStore::with_config(
        local,
        kad::store::MemoryStoreConfig {
            max_provided_keys: MAX_PROVIDED_KEYS,
            ..Default::default()
        },
    );
    let mut kad = kad::Behaviour::with_config(local, store, kad_config);
    if server_mode(config) {
        kad.set_mode(Some(kad::Mode::Server));
    }
    let identify = identify::Behaviour::new(
        identify::Config::new_with_signed_peer_record(IDENTIFY_PROTOCOL_VERSION.into(), key)
            .with_agent_version(format!("cairn/{}", env!("CARGO_PKG_VERSION"))),
    );
    // Anonymous: no author, seqno or signature on the wire (`durability.md` §7.1).
    let mut gossipsub = gossipsub::Behaviour::new(
        gossipsub::MessageAuthenticity::Anonymous,
        gossip::config().map_err(|e| gossip_error(&e))?,
    )
    .map_err(|e| gossip_error(&e))?;
    gossipsub
        .with_peer_score(
            gossip::peer_score_params(),
            gossipsub::PeerScoreThresholds::default(),
        )
        .map_err(|e| gossip_error(&e))?;
    let rpc = request_response::Behaviour::with_codec(
        SwarmCodec,
        [(
            StreamProtocol::new(rpc::SWARM_PROTOCOL),
            request_response::ProtocolSupport::Full,
        )],
        request_response::Config::default()
            .with_request_timeout(config.swarm_request_timeout)
            .with_max_concurrent_streams(rpc::MAX_CONCURRENT_STREAMS),
    );
    Ok(Behaviour {
        blocked: allow_block_list::Behaviour::default(),
        limits: connection_limits::Behaviour::new(
            ConnectionLimits::default().with_max_established(Some(config.max_peers)),
        ),
        identify,
        // One ping a minute per connection (the spec budgets about 24 B/s for keep-alive
        // pings at that interval, `durability.md` §15.1); the default is every 15 s.
        ping: ping::Behaviour::new(ping::Config::new().with_interval(PING_INTERVAL)),
        kad,
        gossipsub: StreamsIdle(gossipsub),
        rpc,
        stream: libp2p_stream::Behaviour::new(),
    })
}

/// Kad runs in server mode when the node is reachable: it listens on loopback (tests, local
/// clusters) or has configured external addresses. Otherwise Kad's automatic mode applies.
fn server_mode(config: &NetConfig) -> bool {
    config.listen_ip.is_loopback() || !config.announce.is_empty()
}

/// Addresses of peers we have talked to (identify's listen addresses, addresses we reached
/// them at), for redialing a peer by id after its connection idled out. Bounded: the oldest
/// peers are forgotten first.
#[derive(Debug, Default)]
struct AddressBook {
    addrs: HashMap<PeerId, VecDeque<Multiaddr>>,
    order: VecDeque<PeerId>,
}

impl AddressBook {
    fn add(&mut self, peer: PeerId, mut addr: Multiaddr) {
        if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.pop();
        }
        if !self.addrs.contains_key(&peer) {
            if self.order.len() >= ADDRESS_BOOK_PEERS
                && let Some(old) = self.order.pop_front()
            {
                self.addrs.remove(&old);
            }
            self.order.push_back(peer);
        }
        let known = self.addrs.entry(peer).or_default();
        if let Some(at) = known.iter().position(|a| *a == addr) {
            known.remove(at);
        }
        // Newest first.
        known.push_front(addr);
        known.truncate(ADDRESS_BOOK_ADDRS);
    }

    fn get(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.addrs
            .get(peer)
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn remove(&mut self, peer: &PeerId) {
        if self.addrs.remove(peer).is_some() {
            self.order.retain(|p| p != peer);
        }
    }
}

/// A request from a [`Network`](crate::Network) handle.
#[derive(Debug)]
pub(crate) enum Command {
    Status(oneshot::Sender<NetStatus>),
    Connect {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    Provide {
        key: kad::RecordKey,
        reply: oneshot::Sender<Result<(), NetError>>,
    },
    StopProviding {
        key: kad::RecordKey,
        reply: oneshot::Sender<()>,
    },
    FindProviders {
        key: kad::RecordKey,
        limit: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    },
    Ban {
        peer: PeerId,
        reply: oneshot::Sender<()>,
    },
    Subscribe {
        topic: String,
        reply: oneshot::Sender<Result<bool, NetError>>,
    },
    Unsubscribe {
        topic: String,
        reply: oneshot::Sender<bool>,
    },
    Publish {
        topic: String,
        data: Bytes,
        reply: oneshot::Sender<Result<GossipId, NetError>>,
    },
    ReportValidation {
        id: GossipId,
        source: PeerId,
        verdict: Verdict,
        reply: oneshot::Sender<bool>,
    },
    SetApplicationScore {
        peer: PeerId,
        score: f64,
        reply: oneshot::Sender<bool>,
    },
    GossipScore {
        peer: PeerId,
        reply: oneshot::Sender<Option<f64>>,
    },
    SwarmRequest {
        peer: PeerId,
        request: Bytes,
        reply: oneshot::Sender<Result<Bytes, NetError>>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// An inbound swarm request, once the node answered it, dropped its responder, or let it
/// expire (`reply` = `None`).
struct InboundDone {
    peer: PeerId,
    channel: request_response::ResponseChannel<Bytes>,
    reply: Option<Reply>,
}

#[derive(Debug)]
struct PendingConnect {
    reply: oneshot::Sender<Result<(), NetError>>,
    deadline: Instant,
}

/// A provider lookup: providers found, being dialed, connected.
#[derive(Debug)]
struct ProviderLookup {
    key: kad::RecordKey,
    limit: usize,
    seen: HashSet<PeerId>,
    dialing: HashSet<PeerId>,
    connected: Vec<PeerId>,
    finished: bool,
    deadline: Instant,
    reply: oneshot::Sender<Vec<PeerId>>,
}

/// The swarm and everything only its task touches.
pub(crate) struct SwarmTask {
    swarm: Swarm<Behaviour>,
    config: NetConfig,
    events: mpsc::Sender<NetEvent>,
    bans: Arc<BanList>,
    blockexc: Arc<Blockexc>,
    shutdown: CancellationToken,
    /// Keys we provide, re-provided every `reprovide_interval`.
    provided: HashSet<kad::RecordKey>,
    reprovide_queue: VecDeque<kad::RecordKey>,
    connects: HashMap<PeerId, Vec<PendingConnect>>,
    /// Outbound connection attempts in flight.
    dialing: HashMap<ConnectionId, PeerId>,
    /// `get_closest_peers` queries run to find a peer's addresses.
    peer_lookups: HashMap<kad::QueryId, PeerId>,
    provider_lookups: HashMap<kad::QueryId, ProviderLookup>,
    /// Remote address of each established connection.
    connections: HashMap<PeerId, HashMap<ConnectionId, Multiaddr>>,
    /// Addresses we gave Kad per peer (oldest first), at most [`MAX_ADDRESSES_PER_PEER`].
    kad_addrs: HashMap<PeerId, VecDeque<Multiaddr>>,
    book: AddressBook,
    /// Our swarm requests awaiting their response.
    swarm_requests:
        HashMap<request_response::OutboundRequestId, oneshot::Sender<Result<Bytes, NetError>>>,
    /// Inbound swarm requests awaiting the node's answer (each bounded by the request timeout).
    swarm_answers: FuturesUnordered<BoxFuture<'static, InboundDone>>,
    /// Inbound swarm requests per peer delivered to the node and not yet answered.
    swarm_in_flight: HashMap<PeerId, usize>,
    bad_frames: BadFrames,
}

impl std::fmt::Debug for SwarmTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwarmTask")
            .field("local_peer", self.swarm.local_peer_id())
            .field("provided", &self.provided.len())
            .finish_non_exhaustive()
    }
}

impl SwarmTask {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: NetConfig,
        events: mpsc::Sender<NetEvent>,
        bans: Arc<BanList>,
        blockexc: Arc<Blockexc>,
        shutdown: CancellationToken,
    ) -> SwarmTask {
        SwarmTask {
            swarm,
            config,
            events,
            bans,
            blockexc,
            shutdown,
            provided: HashSet::new(),
            reprovide_queue: VecDeque::new(),
            connects: HashMap::new(),
            dialing: HashMap::new(),
            peer_lookups: HashMap::new(),
            provider_lookups: HashMap::new(),
            connections: HashMap::new(),
            kad_addrs: HashMap::new(),
            book: AddressBook::default(),
            swarm_requests: HashMap::new(),
            swarm_answers: FuturesUnordered::new(),
            swarm_in_flight: HashMap::new(),
            bad_frames: BadFrames::default(),
        }
    }

    /// Starts the TCP listener and waits until it reports its first address; adds the
    /// configured announce addresses as external addresses.
    pub(crate) async fn listen(&mut self) -> Result<(), NetError> {
        let addr =
            Multiaddr::from(self.config.listen_ip).with(Protocol::Tcp(self.config.listen_port));
        let listener = self
            .swarm
            .listen_on(addr.clone())
            .map_err(|e| NetError::Transport(format!("listening on {addr}: {e}")))?;
        for announce in self.config.announce.clone() {
            self.swarm.add_external_address(announce);
        }
        let deadline = Instant::now() + LISTEN_TIMEOUT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.swarm.select_next_some())
                .await
                .map_err(|_| NetError::Transport(format!("listening on {addr}: timed out")))?;
            match event {
                SwarmEvent::NewListenAddr { listener_id, .. } if listener_id == listener => {
                    self.on_swarm_event(event);
                    return Ok(());
                }
                SwarmEvent::ListenerClosed {
                    listener_id,
                    reason,
                    ..
                } if listener_id == listener => {
                    let reason = match reason {
                        Ok(()) => "closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    return Err(NetError::Transport(format!(
                        "listening on {addr}: {reason}"
                    )));
                }
                SwarmEvent::ListenerError { listener_id, error } if listener_id == listener => {
                    return Err(NetError::Transport(format!("listening on {addr}: {error}")));
                }
                other => self.on_swarm_event(other),
            }
        }
    }

    /// Dials the bootstrap peers, adds them to Kad and starts a Kad bootstrap.
    pub(crate) fn bootstrap(&mut self) {
        for addr in self.config.bootstrap.clone() {
            let mut base = addr.clone();
            let Some(Protocol::P2p(peer)) = base.pop() else {
                tracing::warn!(%addr, "bootstrap address without /p2p/<peer id>, ignored");
                continue;
            };
            if peer == *self.swarm.local_peer_id() {
                continue;
            }
            self.kad_add_address(peer, base.clone());
            self.book.add(peer, base.clone());
            let opts = DialOpts::peer_id(peer)
                .addresses(vec![base])
                .condition(PeerCondition::Disconnected)
                .build();
            if let Err(e) = self.swarm.dial(opts) {
                tracing::warn!(%addr, error = %e, "cannot dial bootstrap peer");
            }
        }
        if let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            tracing::debug!(error = %e, "no Kad bootstrap");
        }
    }

    /// The command loop; returns on `Shutdown` or when every handle is gone.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let period = self.config.reprovide_interval.max(Duration::from_secs(1));
        let mut reprovide = tokio::time::interval_at(Instant::now() + period, period);
        reprovide.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    None => break,
                    Some(Command::Shutdown(reply)) => {
                        self.stop();
                        let _ = reply.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                },
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                Some(done) = self.swarm_answers.next(), if !self.swarm_answers.is_empty() => {
                    self.swarm_answered(done);
                }
                _ = reprovide.tick() => self.queue_reprovide(),
                _ = housekeeping.tick() => self.housekeeping(),
            }
        }
        self.stop();
    }

    fn stop(&mut self) {
        tracing::debug!("network stopping");
        self.shutdown.cancel();
        // Pending replies are dropped: their callers see `NetError::Stopped`.
        self.connects.clear();
        self.provider_lookups.clear();
        self.swarm_requests.clear();
        self.swarm_answers.clear();
    }

    fn local(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }

    fn emit(&self, event: NetEvent) {
        match self.events.try_send(event) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(event)) => {
                tracing::warn!(
                    ?event,
                    "event receiver is not keeping up, dropping an event"
                );
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Connect { peer, addrs, reply } => self.connect(peer, addrs, reply),
            Command::Provide { key, reply } => {
                let _ = reply.send(self.provide(key));
            }
            Command::StopProviding { key, reply } => {
                self.provided.remove(&key);
                self.reprovide_queue.retain(|k| *k != key);
                self.swarm.behaviour_mut().kad.stop_providing(&key);
                let _ = reply.send(());
            }
            Command::FindProviders { key, limit, reply } => self.find_providers(key, limit, reply),
            Command::Ban { peer, reply } => {
                self.ban(peer);
                let _ = reply.send(());
            }
            Command::Subscribe { topic, reply } => {
                let _ = reply.send(self.subscribe(topic));
            }
            Command::Unsubscribe { topic, reply } => {
                let topic = gossipsub::IdentTopic::new(topic);
                let _ = reply.send(
                    self.swarm
                        .behaviour_mut()
                        .gossipsub
                        .get_mut()
                        .unsubscribe(&topic),
                );
            }
            Command::Publish { topic, data, reply } => {
                let _ = reply.send(self.publish(topic, data));
            }
            Command::ReportValidation {
                id,
                source,
                verdict,
                reply,
            } => {
                let _ = reply.send(self.report_validation(id, source, verdict));
            }
            Command::SetApplicationScore { peer, score, reply } => {
                let gossipsub = self.swarm.behaviour_mut().gossipsub.get_mut();
                let _ = reply.send(gossipsub.set_application_score(&peer, score));
            }
            Command::GossipScore { peer, reply } => {
                let _ = reply.send(self.swarm.behaviour().gossipsub.get().peer_score(&peer));
            }
            Command::SwarmRequest {
                peer,
                request,
                reply,
            } => {
                if self.bans.is_banned(&peer) {
                    let _ = reply.send(Err(NetError::Banned(peer)));
                    return;
                }
                let id = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_request(&peer, SwarmFrame::Frame(request));
                self.swarm_requests.insert(id, reply);
            }
            Command::Shutdown(_) => {}
        }
    }

    fn status(&mut self) -> NetStatus {
        let connected = self
            .connections
            .iter()
            .map(|(peer, conns)| {
                let mut addresses: Vec<Multiaddr> = conns.values().cloned().collect();
                addresses.sort();
                addresses.dedup();
                let direct = !addresses
                    .iter()
                    .any(|a| a.iter().any(|p| matches!(p, Protocol::P2pCircuit)));
                PeerInfo {
                    peer_id: *peer,
                    addresses,
                    direct,
                }
            })
            .collect();
        NetStatus {
            listen_addrs: self.swarm.listeners().cloned().collect(),
            external_addrs: self.swarm.external_addresses().cloned().collect(),
            connected,
            routing_table_size: self
                .swarm
                .behaviour_mut()
                .kad
                .kbuckets()
                .map(|b| b.num_entries())
                .sum(),
        }
    }

    // ---- connections ----

    fn connect(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Result<(), NetError>>,
    ) {
        if peer == self.local() {
            let _ = reply.send(Err(NetError::Dial("cannot connect to ourselves".into())));
            return;
        }
        if self.bans.is_banned(&peer) {
            let _ = reply.send(Err(NetError::Banned(peer)));
            return;
        }
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(()));
            return;
        }
        self.connects.entry(peer).or_default().push(PendingConnect {
            reply,
            deadline: Instant::now() + self.config.lookup_timeout,
        });
        self.dial(peer, addrs);
    }

    /// Dials `peer` at `addrs` (or where we reached it before), plus what Kad knows; with no
    /// address known, asks the DHT.
    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let opts = if addrs.is_empty() {
            // At most one dial at a time to a peer asked for by id alone.
            DialOpts::peer_id(peer)
                .addresses(self.book.get(&peer))
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build()
        } else {
            DialOpts::peer_id(peer)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::Disconnected)
                .build()
        };
        match self.swarm.dial(opts) {
            Ok(()) => {}
            // Already connected, or a dial is in flight whose outcome settles the connect.
            Err(DialError::DialPeerConditionFalse(_)) => {
                if self.swarm.is_connected(&peer) {
                    self.settle_connects(peer, Ok(()));
                }
            }
            Err(DialError::NoAddresses) => {
                if !self.peer_lookups.values().any(|p| *p == peer) {
                    tracing::debug!(%peer, "no address known, asking the DHT");
                    let query = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                    self.peer_lookups.insert(query, peer);
                }
            }
            Err(e) => self.settle_connects(peer, Err(NetError::Dial(e.to_string()))),
        }
    }

    fn settle_connects(&mut self, peer: PeerId, result: Result<(), NetError>) {
        for pending in self.connects.remove(&peer).unwrap_or_default() {
            let _ = pending.reply.send(result.clone());
        }
    }

    fn dials_in_flight(&self, peer: &PeerId) -> bool {
        self.dialing.values().any(|p| p == peer)
    }

    // ---- bans ----

    fn ban(&mut self, peer: PeerId) {
        self.ban_for(peer, self.config.ban_duration);
    }

    fn ban_for(&mut self, peer: PeerId, duration: Duration) {
        let until = std::time::Instant::now() + duration;
        tracing::info!(%peer, ?duration, "banning peer");
        self.bans.ban(peer, until);
        // Closes its connections and refuses new ones, both ways.
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.swarm.behaviour_mut().kad.remove_peer(&peer);
        self.kad_addrs.remove(&peer);
        self.book.remove(&peer);
        self.blockexc.close_peer(&peer, &NetError::Banned(peer));
        self.settle_connects(peer, Err(NetError::Banned(peer)));
    }

    // ---- providing ----

    fn has_external_address(&self) -> bool {
        self.swarm.external_addresses().next().is_some()
    }

    fn provide(&mut self, key: kad::RecordKey) -> Result<(), NetError> {
        self.provided.insert(key.clone());
        let local = self.local();
        if !self.has_external_address() {
            // ADD_PROVIDER carries our external addresses: without one, peers would learn an
            // undialable provider. Keep the record locally; it is published once an address
            // is known (`wire.md` §5.3).
            tracing::debug!(
                ?key,
                "no external address yet, provider record kept locally for now"
            );
            let record = kad::ProviderRecord::new(key, local, Vec::new());
            let kad = &mut self.swarm.behaviour_mut().kad;
            return kad
                .store_mut()
                .add_provider(record)
                .map_err(|e| NetError::Dht(e.to_string()));
        }
        self.swarm
            .behaviour_mut()
            .kad
            .start_providing(key)
            .map(|_| ())
            .map_err(|e| NetError::Dht(e.to_string()))
    }

    fn queue_reprovide(&mut self) {
        self.reprovide_queue = self.provided.iter().cloned().collect();
    }

    fn reprovide_some(&mut self) {
        if self.reprovide_queue.is_empty() || !self.has_external_address() {
            return;
        }
        for _ in 0..REPROVIDES_PER_TICK {
            let Some(key) = self.reprovide_queue.pop_front() else {
                break;
            };
            if let Err(e) = self.swarm.behaviour_mut().kad.start_providing(key) {
                tracing::warn!(error = %e, "re-providing failed");
            }
        }
    }

    // ---- provider lookups ----

    fn find_providers(
        &mut self,
        key: kad::RecordKey,
        limit: usize,
        reply: oneshot::Sender<Vec<PeerId>>,
    ) {
        if limit == 0 {
            let _ = reply.send(Vec::new());
            return;
        }
        let query = self.swarm.behaviour_mut().kad.get_providers(key.clone());
        self.provider_lookups.insert(
            query,
            ProviderLookup {
                key,
                limit,
                seen: HashSet::new(),
                dialing: HashSet::new(),
                connected: Vec::new(),
                finished: false,
                deadline: Instant::now() + self.config.lookup_timeout,
                reply,
            },
        );
    }

    fn providers_found(&mut self, query: kad::QueryId, providers: HashSet<PeerId>) {
        let local = self.local();
        let Some(lookup) = self.provider_lookups.get_mut(&query) else {
            return;
        };
        for provider in providers {
            if provider == local || self.bans.is_banned(&provider) || !lookup.seen.insert(provider)
            {
                continue;
            }
            tracing::debug!(%provider, "provider found");
            if self.swarm.is_connected(&provider) {
                lookup.connected.push(provider);
                continue;
            }
            // Addresses from a record we store ourselves and from our address book; Kad adds
            // those of the running query and the routing table.
            let mut addrs: Vec<Multiaddr> = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .providers(&lookup.key)
                .into_iter()
                .find(|r| r.provider == provider)
                .map(|r| r.addresses)
                .unwrap_or_default();
            addrs.extend(self.book.get(&provider));
            let opts = DialOpts::peer_id(provider)
                .addresses(addrs)
                .extend_addresses_through_behaviour()
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            match self.swarm.dial(opts) {
                Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {
                    lookup.dialing.insert(provider);
                }
                Err(e) => tracing::debug!(%provider, error = %e, "cannot dial provider"),
            }
        }
        self.check_lookup(query);
    }

    /// Answers a lookup that has `limit` connected providers, or that ended with no dial left.
    fn check_lookup(&mut self, query: kad::QueryId) {
        let Some(lookup) = self.provider_lookups.get(&query) else {
            return;
        };
        let enough = lookup.connected.len() >= lookup.limit;
        let done = lookup.finished && lookup.dialing.is_empty();
        if enough || done || lookup.deadline <= Instant::now() {
            self.end_lookup(query);
        }
    }

    fn end_lookup(&mut self, query: kad::QueryId) {
        let Some(mut lookup) = self.provider_lookups.remove(&query) else {
            return;
        };
        if !lookup.finished
            && let Some(mut running) = self.swarm.behaviour_mut().kad.query_mut(&query)
        {
            running.finish();
        }
        lookup.connected.truncate(lookup.limit);
        tracing::debug!(found = lookup.connected.len(), "provider lookup done");
        let _ = lookup.reply.send(lookup.connected);
    }

    fn on_connected(&mut self, peer: PeerId) {
        let mut touched = Vec::new();
        for (query, lookup) in &mut self.provider_lookups {
            if lookup.dialing.remove(&peer) {
                lookup.connected.push(peer);
                touched.push(*query);
            }
        }
        for query in touched {
            self.check_lookup(query);
        }
        self.settle_connects(peer, Ok(()));
    }

    fn on_dial_failed(&mut self, peer: PeerId, error: String) {
        if self.dials_in_flight(&peer) || self.swarm.is_connected(&peer) {
            return;
        }
        let mut touched = Vec::new();
        for (query, lookup) in &mut self.provider_lookups {
            if lookup.dialing.remove(&peer) {
                touched.push(*query);
            }
        }
        for query in touched {
            self.check_lookup(query);
        }
        // A DHT lookup for the peer's addresses may still find a way.
        if !self.peer_lookups.values().any(|p| *p == peer) {
            self.settle_connects(peer, Err(NetError::Dial(error)));
        }
    }

    // ---- gossip ----

    fn subscribe(&mut self, topic: String) -> Result<bool, NetError> {
        let topic = gossipsub::IdentTopic::new(topic);
        let gossipsub = self.swarm.behaviour_mut().gossipsub.get_mut();
        // P4 counts per topic: every topic we follow gets the §7.1 parameters.
        gossipsub
            .set_topic_params(topic.clone(), gossip::topic_score_params())
            .map_err(|e| NetError::Gossip(e.to_owned()))?;
        gossipsub
            .subscribe(&topic)
            .map_err(|e| NetError::Gossip(e.to_string()))
    }

    fn publish(&mut self, topic: String, data: Bytes) -> Result<GossipId, NetError> {
        let id = GossipId::of(&data);
        let gossipsub = self.swarm.behaviour_mut().gossipsub.get_mut();
        match gossipsub.publish(gossipsub::IdentTopic::new(topic.clone()), data.to_vec()) {
            Ok(_) => Ok(id),
            Err(gossipsub::PublishError::Duplicate) => Err(NetError::GossipDuplicate),
            Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {
                Err(NetError::GossipNoPeers(topic))
            }
            Err(gossipsub::PublishError::MessageTooLarge) => Err(NetError::TooLarge {
                size: data.len(),
                limit: GOSSIP_MAX_MESSAGE,
            }),
            Err(e) => Err(NetError::Gossip(e.to_string())),
        }
    }

    fn report_validation(&mut self, id: GossipId, source: PeerId, verdict: Verdict) -> bool {
        tracing::trace!(%id, %source, ?verdict, "gossip verdict");
        self.swarm
            .behaviour_mut()
            .gossipsub
            .get_mut()
            .report_message_validation_result(&id.to_message_id(), &source, verdict.into())
    }

    fn on_gossip(&mut self, event: gossipsub::Event) {
        match event {
            gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            } => {
                let Some(id) = GossipId::from_message_id(&message_id) else {
                    // Our id function makes 20-byte ids; anything else is not ours to judge.
                    return;
                };
                if message.data.len() > GOSSIP_MAX_MESSAGE {
                    // §18: oversize → Reject, P4 on the propagation source.
                    tracing::debug!(%id, source = %propagation_source, size = message.data.len(), "oversized gossip rejected");
                    self.report_validation(id, propagation_source, Verdict::Reject);
                    return;
                }
                let event = NetEvent::Gossip {
                    topic: message.topic.into_string(),
                    id,
                    source: propagation_source,
                    data: Bytes::from(message.data),
                };
                if !self.try_emit(event) {
                    // The node will never judge it: drop it without penalty.
                    self.report_validation(id, propagation_source, Verdict::Ignore);
                }
            }
            gossipsub::Event::Subscribed { peer_id, topic } => {
                tracing::trace!(peer = %peer_id, %topic, "peer subscribed");
            }
            gossipsub::Event::Unsubscribed { peer_id, topic } => {
                tracing::trace!(peer = %peer_id, %topic, "peer unsubscribed");
            }
            gossipsub::Event::GossipsubNotSupported { peer_id } => {
                tracing::trace!(peer = %peer_id, "peer does not speak gossipsub");
            }
            gossipsub::Event::SlowPeer {
                peer_id,
                failed_messages,
            } => {
                tracing::debug!(peer = %peer_id, ?failed_messages, "slow gossip peer");
            }
        }
    }

    /// Queues an event for the node; false (and the event dropped) if the queue is full or gone.
    fn try_emit(&self, event: NetEvent) -> bool {
        match self.events.try_send(event) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("event receiver is not keeping up, dropping a message");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    // ---- swarm request-response ----

    fn on_rpc(&mut self, event: request_response::Event<SwarmFrame, Bytes>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => self.swarm_request_in(peer, request, channel),
            request_response::Event::Message {
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                if let Some(reply) = self.swarm_requests.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "swarm request failed");
                if let Some(reply) = self.swarm_requests.remove(&request_id) {
                    let _ = reply.send(Err(NetError::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                tracing::debug!(%peer, %error, "inbound swarm request failed");
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn swarm_request_in(
        &mut self,
        peer: PeerId,
        frame: SwarmFrame,
        channel: request_response::ResponseChannel<Bytes>,
    ) {
        let request = match frame {
            SwarmFrame::Frame(body) => body,
            SwarmFrame::Bad(reason) => {
                // §18: close the stream (dropping the channel does) and count it.
                tracing::debug!(%peer, %reason, "bad swarm request frame");
                drop(channel);
                self.bad_frame(peer);
                return;
            }
        };
        let in_flight = self.swarm_in_flight.get(&peer).copied().unwrap_or(0);
        if in_flight >= rpc::SWARM_MAX_IN_FLIGHT {
            tracing::debug!(%peer, "too many swarm requests in flight, answering busy");
            if let Some(busy) = self.config.swarm_busy_response.clone() {
                let _ = self.swarm.behaviour_mut().rpc.send_response(channel, busy);
            }
            return;
        }
        let (responder, answer) = SwarmResponder::new(peer);
        let timeout = self.config.swarm_request_timeout;
        self.swarm_answers.push(Box::pin(async move {
            let reply = tokio::time::timeout(timeout, answer)
                .await
                .ok()
                .and_then(Result::ok);
            InboundDone {
                peer,
                channel,
                reply,
            }
        }));
        *self.swarm_in_flight.entry(peer).or_default() += 1;
        // If the node's queue is full the event (and its responder) is dropped, which
        // settles the future above at once: the stream is closed.
        self.try_emit(NetEvent::SwarmRequest {
            peer,
            request,
            responder,
        });
    }

    fn swarm_answered(&mut self, done: InboundDone) {
        let InboundDone {
            peer,
            channel,
            reply,
        } = done;
        if let Some(n) = self.swarm_in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.swarm_in_flight.remove(&peer);
            }
        }
        match reply {
            Some(Reply::Respond(response)) => {
                if self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response)
                    .is_err()
                {
                    tracing::debug!(%peer, "swarm request closed before its answer");
                }
            }
            Some(Reply::Malformed) => {
                drop(channel);
                self.bad_frame(peer);
            }
            // Dropping the channel closes the stream without an answer.
            None => drop(channel),
        }
    }

    /// Counts a malformed or oversized frame from `peer`; at the §18 limit the peer is
    /// disconnected for 10 minutes.
    fn bad_frame(&mut self, peer: PeerId) {
        if self.bad_frames.strike(peer, std::time::Instant::now()) {
            tracing::info!(%peer, "too many bad swarm frames");
            self.ban_for(peer, rpc::BAD_FRAME_BAN);
        }
    }

    // ---- periodic work ----

    fn housekeeping(&mut self) {
        let now = Instant::now();
        for peer in self.bans.take_expired(std::time::Instant::now()) {
            tracing::info!(%peer, "ban lifted");
            self.swarm.behaviour_mut().blocked.unblock_peer(peer);
        }
        let expired: Vec<kad::QueryId> = self
            .provider_lookups
            .iter()
            .filter(|(_, l)| l.deadline <= now || l.reply.is_closed())
            .map(|(q, _)| *q)
            .collect();
        for query in expired {
            self.end_lookup(query);
        }
        self.bad_frames.expire(std::time::Instant::now());
        self.connects.retain(|peer, pending| {
            pending.retain(|p| !p.reply.is_closed());
            let (late, waiting): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|p| p.deadline <= now);
            for p in late {
                let _ = p.reply.send(Err(NetError::Dial(format!(
                    "connecting to {peer} timed out"
                ))));
            }
            *pending = waiting;
            !pending.is_empty()
        });
        self.reprovide_some();
    }

    // ---- Kad and identify ----

    /// Gives Kad an address of `peer`, keeping at most [`MAX_ADDRESSES_PER_PEER`] (newest).
    fn kad_add_address(&mut self, peer: PeerId, mut addr: Multiaddr) {
        if matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
            addr.pop();
        }
        let known = self.kad_addrs.entry(peer).or_default();
        if known.contains(&addr) {
            return;
        }
        known.push_back(addr.clone());
        let evicted: Vec<Multiaddr> = if known.len() > MAX_ADDRESSES_PER_PEER {
            known
                .drain(..known.len() - MAX_ADDRESSES_PER_PEER)
                .collect()
        } else {
            Vec::new()
        };
        let kad = &mut self.swarm.behaviour_mut().kad;
        kad.add_address(&peer, addr);
        for old in evicted {
            kad.remove_address(&peer, &old);
        }
    }

    fn on_identify(&mut self, peer: PeerId, info: identify::Info) {
        if self.bans.is_banned(&peer) {
            return;
        }
        tracing::debug!(%peer, agent = %info.agent_version, "identified peer");
        let local_loopback = self.config.listen_ip.is_loopback();
        let addrs: Vec<Multiaddr> = info
            .listen_addrs
            .into_iter()
            .filter(|a| usable_address(a, local_loopback))
            .take(MAX_ADDRESSES_PER_PEER)
            .collect();
        for addr in &addrs {
            self.book.add(peer, addr.clone());
        }
        // Only DHT servers go into the routing table.
        if info.protocols.iter().any(|p| p.as_ref() == KAD_PROTOCOL) {
            for addr in addrs {
                self.kad_add_address(peer, addr);
            }
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => {
                match result {
                    kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
                        providers,
                        ..
                    })) => self.providers_found(id, providers),
                    kad::QueryResult::GetProviders(Ok(
                        kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. },
                    )) => {}
                    kad::QueryResult::GetProviders(Err(e)) => {
                        tracing::debug!(error = %e, "provider lookup ended");
                    }
                    kad::QueryResult::GetClosestPeers(result) => {
                        let peers = match result {
                            Ok(ok) => ok.peers,
                            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
                        };
                        self.closest_peers(id, peers);
                    }
                    kad::QueryResult::StartProviding(result) => match result {
                        Ok(ok) => tracing::debug!(key = ?ok.key, "provider record published"),
                        Err(e) => tracing::debug!(error = %e, "publishing a provider record"),
                    },
                    kad::QueryResult::Bootstrap(result) => {
                        tracing::debug!(ok = result.is_ok(), "Kad bootstrap step");
                    }
                    other => tracing::trace!(?other, "Kad query progressed"),
                }
                if step.last
                    && let Some(lookup) = self.provider_lookups.get_mut(&id)
                {
                    lookup.finished = true;
                    self.check_lookup(id);
                }
            }
            kad::Event::RoutingUpdated { peer, .. } => {
                tracing::trace!(%peer, "Kad routing table updated");
            }
            kad::Event::ModeChanged { new_mode } => {
                tracing::info!(mode = %new_mode, "Kad mode");
            }
            other => tracing::trace!(?other, "Kad event"),
        }
    }

    /// The end of a `get_closest_peers` run to find `peer`: dial it if found, else fail the
    /// connects waiting for it.
    fn closest_peers(&mut self, query: kad::QueryId, peers: Vec<kad::PeerInfo>) {
        let Some(peer) = self.peer_lookups.remove(&query) else {
            return;
        };
        if self.swarm.is_connected(&peer) {
            self.settle_connects(peer, Ok(()));
            return;
        }
        let addrs: Vec<Multiaddr> = peers
            .into_iter()
            .filter(|p| p.peer_id == peer)
            .flat_map(|p| p.addrs)
            .collect();
        if addrs.is_empty() {
            if !self.dials_in_flight(&peer) {
                self.settle_connects(peer, Err(NetError::PeerNotFound));
            }
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .build();
        match self.swarm.dial(opts) {
            Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(e) => self.settle_connects(peer, Err(NetError::Dial(e.to_string()))),
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => self.on_identify(peer_id, info),
            SwarmEvent::Behaviour(BehaviourEvent::Kad(event)) => self.on_kad(event),
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(event)) => self.on_gossip(event),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc(event),
            SwarmEvent::Behaviour(other) => tracing::trace!(?other, "behaviour event"),
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                self.dialing.remove(&connection_id);
                if endpoint.is_dialer() {
                    self.book
                        .add(peer_id, endpoint.get_remote_address().clone());
                }
                self.connections
                    .entry(peer_id)
                    .or_default()
                    .insert(connection_id, endpoint.get_remote_address().clone());
                if num_established.get() == 1 {
                    tracing::debug!(peer = %peer_id, addr = %endpoint.get_remote_address(), "peer connected");
                    self.emit(NetEvent::PeerConnected(peer_id));
                }
                self.on_connected(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                if let Some(conns) = self.connections.get_mut(&peer_id) {
                    conns.remove(&connection_id);
                }
                if num_established == 0 {
                    self.connections.remove(&peer_id);
                    tracing::debug!(peer = %peer_id, cause = ?cause, "peer disconnected");
                    self.emit(NetEvent::PeerDisconnected(peer_id));
                }
            }
            SwarmEvent::Dialing {
                peer_id: Some(peer),
                connection_id,
            } => {
                self.dialing.insert(connection_id, peer);
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                self.dialing.remove(&connection_id);
                tracing::debug!(peer = ?peer_id, error = %error, "dial failed");
                if let Some(peer) = peer_id {
                    self.on_dial_failed(peer, error.to_string());
                }
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                tracing::info!(%address, "listening");
                if self.config.listen_ip.is_loopback() {
                    // On loopback the listen address is the one peers reach us at.
                    self.swarm.add_external_address(address);
                }
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                if self.swarm.external_addresses().count() > MAX_ADDRESSES_PER_PEER {
                    tracing::debug!(%address, "enough external addresses, not announcing this one");
                    self.swarm.remove_external_address(&address);
                    return;
                }
                tracing::info!(%address, "external address");
                self.queue_reprovide();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.queue_reprovide();
            }
            SwarmEvent::IncomingConnectionError { error, .. } => {
                tracing::debug!(error = %error, "incoming connection failed");
            }
            other => tracing::trace!(?other, "swarm event"),
        }
    }
}

/// Whether a peer's listen address is worth giving Kad: no unspecified or relayed addresses,
/// and loopback ones only when we are on loopback ourselves.
fn usable_address(addr: &Multiaddr, local_loopback: bool) -> bool {
    addr.iter().all(|p| match p {
        Protocol::Ip4(ip) => !ip.is_unspecified() && (local_loopback || !ip.is_loopback()),
        Protocol::Ip6(ip) => !ip.is_unspecified() && (local_loopback || !ip.is_loopback()),
        Protocol::P2pCircuit => false,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_book_is_bounded() {
        let mut book = AddressBook::default();
        let a =
            |port: u16| Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(Protocol::Tcp(port));
        let first = PeerId::random();
        for port in 0..20 {
            book.add(first, a(port));
        }
        book.add(first, a(5));
        let got = book.get(&first);
        assert_eq!(got.len(), ADDRESS_BOOK_ADDRS);
        assert_eq!(got[0], a(5));
        for _ in 0..ADDRESS_BOOK_PEERS {
            book.add(PeerId::random(), a(1));
        }
        assert!(book.get(&first).is_empty());
        assert_eq!(book.addrs.len(), ADDRESS_BOOK_PEERS);
        assert_eq!(book.order.len(), ADDRESS_BOOK_PEERS);
    }

    #[test]
    fn addresses_for_kad() {
        let a = |s: &str| s.parse::<Multiaddr>().expect("multiaddr");
        assert!(usable_address(&a("/ip4/1.2.3.4/tcp/4001"), false));
        assert!(!usable_address(&a("/ip4/127.0.0.1/tcp/4001"), false));
        assert!(usable_address(&a("/ip4/127.0.0.1/tcp/4001"), true));
        assert!(!usable_address(&a("/ip4/0.0.0.0/tcp/4001"), true));
        assert!(!usable_address(&a("/ip6/::1/tcp/4001"), false));
    }
}
