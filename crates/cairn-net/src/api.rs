//! The public face of the network layer: configuration, the cloneable [`Network`] handle, the
//! events it reports and the [`ContentServer`] the node implements so peers can be served.
//!
//! One task owns the libp2p `Swarm`; every method of [`Network`] sends a command to it over a
//! bounded channel and awaits the reply.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use cairn_core::{
    Cid, MerkleProof,
    wire::{Message, WantBlocksResponse},
};
use libp2p::{Multiaddr, PeerId, kad::RecordKey};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    bans::BanList,
    blockexc::{self, Blockexc},
    gossip::{GOSSIP_MAX_MESSAGE, GossipId, Verdict},
    manifest,
    rpc::{SWARM_MAX_REQUEST, SwarmResponder},
    swarm::{self, Command, SwarmTask},
};

/// Commands queued for the swarm task.
const COMMAND_QUEUE: usize = 256;
/// Events queued for the node.
const EVENT_QUEUE: usize = 1024;

/// Network settings.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// IP to listen on (TCP; default 0.0.0.0).
    pub listen_ip: std::net::IpAddr,
    /// TCP port (0 = OS-chosen).
    pub listen_port: u16,
    /// Bootstrap peers (`/ip4/…/tcp/…/p2p/<id>`).
    pub bootstrap: Vec<Multiaddr>,
    /// Addresses to announce instead of / besides the observed ones.
    pub announce: Vec<Multiaddr>,
    /// Maximum established connections (default 160).
    pub max_peers: u32,
    /// Idle connection timeout (default 60 s, `wire.md` §5.2).
    pub idle_timeout: Duration,
    /// Re-provide interval (default 10 min, `wire.md` §5.3).
    pub reprovide_interval: Duration,
    /// Bound on a provider lookup.
    pub lookup_timeout: Duration,
    /// Bound on one manifest request (upstream: 30 s).
    pub request_timeout: Duration,
    /// How long a misbehaving peer stays banned.
    pub ban_duration: Duration,
    /// Bound on a swarm request (`durability.md` §7.2: 30 s), inbound and outbound: an inbound
    /// request not answered in time is closed. Shorter bounds can be given per request.
    pub swarm_request_timeout: Duration,
    /// The frame body answered to an inbound swarm request over the in-flight limit (the node
    /// sets the encoded `Response{RpcError{BUSY}}`); `None` closes the stream instead.
    pub swarm_busy_response: Option<Bytes>,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            listen_port: 0,
            bootstrap: Vec::new(),
            announce: Vec::new(),
            max_peers: 160,
            idle_timeout: Duration::from_secs(60),
            reprovide_interval: Duration::from_secs(600),
            lookup_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            ban_duration: Duration::from_secs(600),
            swarm_request_timeout: Duration::from_secs(30),
            swarm_busy_response: None,
        }
    }
}

/// A block as served to a peer: its CID, bytes and proof against the tree.
#[derive(Debug, Clone)]
pub struct ServedBlock {
    /// Index in the tree.
    pub index: u64,
    /// Block CID (the empty CID for erasure padding).
    pub cid: Cid,
    /// The bytes (empty for padding).
    pub data: Bytes,
    /// Inclusion proof.
    pub proof: MerkleProof,
}

/// What the node lets peers read. Called from the network tasks: implementations must be quick
/// or blocking-safe (the network layer calls them on a blocking thread).
pub trait ContentServer: Send + Sync + 'static {
    /// The exact bytes of an advertised, locally stored manifest.
    fn manifest(&self, cid: &Cid) -> Option<Bytes>;
    /// Which of `[start, start + count)` of an advertised tree are held: maximal runs
    /// `(start, count)`; `None` if the tree is not held or not advertised. `complete` is true
    /// when the whole tree is held.
    fn presence(&self, tree: &Cid, start: u64, count: u64) -> Option<(Vec<(u64, u64)>, bool)>;
    /// The held blocks among `indices` of an advertised tree, in order, with proofs.
    fn blocks(&self, tree: &Cid, indices: &[u64]) -> Vec<ServedBlock>;
}

/// Something that happened on the network.
#[derive(Debug)]
pub enum NetEvent {
    /// A connection to the peer was established (first one).
    PeerConnected(PeerId),
    /// The last connection to the peer closed.
    PeerDisconnected(PeerId),
    /// A control message arrived that carries presences (solicited or not).
    Control {
        /// From whom.
        peer: PeerId,
        /// The decoded message.
        message: Message,
    },
    /// A gossip message arrived on a subscribed topic. It is neither forwarded nor dropped
    /// until the node reports its verdict with [`Network::report_validation`] (an unreported
    /// message leaves gossipsub's cache after a few heartbeats, like an ignored one).
    Gossip {
        /// The topic name.
        topic: String,
        /// Its id (content-derived, `durability.md` §7.1).
        id: GossipId,
        /// The peer that forwarded it to us (not necessarily its author).
        source: PeerId,
        /// The payload (at most [`GOSSIP_MAX_MESSAGE`](crate::GOSSIP_MAX_MESSAGE) bytes).
        data: Bytes,
    },
    /// A swarm request (`/cairn/durability/1.0.0`) arrived: the body of a protobuf `Request`
    /// frame, at most [`SWARM_MAX_REQUEST`](crate::SWARM_MAX_REQUEST) bytes.
    SwarmRequest {
        /// The requester (the connection's remote peer).
        peer: PeerId,
        /// The request bytes.
        request: Bytes,
        /// Where the answer goes.
        responder: SwarmResponder,
    },
}

/// Network errors.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The swarm task is gone (node shutting down).
    #[error("the network layer is not running")]
    Stopped,
    /// Listening or dialing failed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// The peer could not be found (no addresses).
    #[error("Unable to find Peer!")]
    PeerNotFound,
    /// A request to a peer failed (stream error, protocol violation, timeout).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// What went wrong.
        reason: String,
    },
    /// The peer is banned.
    #[error("peer {0} is banned")]
    Banned(PeerId),
    /// Setting up the transport failed.
    #[error("transport setup failed: {0}")]
    Transport(String),
    /// The DHT refused an operation (e.g. too many provided keys).
    #[error("DHT: {0}")]
    Dht(String),
    /// A message or frame is over its size limit.
    #[error("{size} bytes over the {limit}-byte limit")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The same gossip payload was published before (same message id).
    #[error("this gossip message was already published")]
    GossipDuplicate,
    /// No connected peer subscribes to the topic: the message was not sent.
    #[error("no peer subscribes to gossip topic {0}")]
    GossipNoPeers(String),
    /// Any other gossipsub failure (subscription, queues).
    #[error("gossip: {0}")]
    Gossip(String),
}

/// A connected peer, for `/debug/info`.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    /// Its id.
    pub peer_id: PeerId,
    /// Its known addresses.
    pub addresses: Vec<Multiaddr>,
    /// True if the connection is direct (not relayed).
    pub direct: bool,
}

/// A snapshot of the node's network state.
#[derive(Debug, Clone)]
pub struct NetStatus {
    /// Addresses we listen on.
    pub listen_addrs: Vec<Multiaddr>,
    /// Addresses we announce (external).
    pub external_addrs: Vec<Multiaddr>,
    /// Connected peers.
    pub connected: Vec<PeerInfo>,
    /// Peers in the Kad routing table.
    pub routing_table_size: usize,
}

/// The cloneable handle to the network task.
#[derive(Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

struct Inner {
    local_peer: PeerId,
    config: NetConfig,
    commands: mpsc::Sender<Command>,
    control: libp2p_stream::Control,
    blockexc: Arc<Blockexc>,
    bans: Arc<BanList>,
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Network")
            .field("local_peer", &self.inner.local_peer)
            .field("blockexc", &self.inner.blockexc)
            .finish_non_exhaustive()
    }
}

/// The Kad key of a CID: its multihash bytes (`wire.md` §5.3).
fn dht_key(cid: &Cid) -> RecordKey {
    RecordKey::new(&cid.multihash_bytes())
}

impl Network {
    /// Builds the swarm (TCP + Noise + Yamux, identify, ping, Kad in server mode when on
    /// loopback or reachable, blockexc, manifest), starts listening and bootstrapping, spawns the
    /// task that owns it, and returns the handle plus a receiver of events (bounded).
    pub async fn start(
        identity: &crate::Identity,
        config: NetConfig,
        server: Arc<dyn ContentServer>,
    ) -> Result<(Network, mpsc::Receiver<NetEvent>), NetError> {
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let swarm = swarm::build(identity, &config)?;
        let mut control = swarm.behaviour().stream.new_control();
        let shutdown = CancellationToken::new();
        let bans = Arc::new(BanList::default());
        let blockexc = Blockexc::new(
            control.clone(),
            server.clone(),
            events_tx.clone(),
            bans.clone(),
            config.request_timeout,
            config.idle_timeout,
            shutdown.child_token(),
        );
        let registered = |e: libp2p_stream::AlreadyRegistered| NetError::Transport(e.to_string());
        let manifest_streams = control.accept(manifest::PROTOCOL).map_err(registered)?;
        let blockexc_streams = control.accept(blockexc::PROTOCOL).map_err(registered)?;

        let mut task = SwarmTask::new(
            swarm,
            config.clone(),
            events_tx,
            bans.clone(),
            blockexc.clone(),
            shutdown.clone(),
        );
        task.listen().await?;
        task.bootstrap();
        let (commands, queue) = mpsc::channel(COMMAND_QUEUE);
        tokio::spawn(task.run(queue));
        tokio::spawn(manifest::serve(
            manifest_streams,
            server,
            bans.clone(),
            config.request_timeout,
            shutdown.child_token(),
        ));
        tokio::spawn(blockexc.clone().serve(blockexc_streams));
        tracing::info!(peer_id = %identity.peer_id(), "network started");
        let network = Network {
            inner: Arc::new(Inner {
                local_peer: identity.peer_id(),
                config,
                commands,
                control,
                blockexc,
                bans,
            }),
        };
        Ok((network, events))
    }

    /// Our peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.inner.local_peer
    }

    /// Sends a command built around a reply channel and awaits the reply.
    async fn ask<T>(
        &self,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NetError> {
        let (reply, response) = oneshot::channel();
        self.inner
            .commands
            .send(command(reply))
            .await
            .map_err(|_| NetError::Stopped)?;
        response.await.map_err(|_| NetError::Stopped)
    }

    /// The current network state.
    pub async fn status(&self) -> Result<NetStatus, NetError> {
        self.ask(Command::Status).await
    }

    /// Connects to a peer at `addrs`, or at addresses a DHT lookup finds when empty.
    pub async fn connect(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), NetError> {
        // The swarm task answers by `lookup_timeout`; this bound only guards against a stall.
        let bound = self.inner.config.lookup_timeout + Duration::from_secs(1);
        tokio::time::timeout(
            bound,
            self.ask(|reply| Command::Connect { peer, addrs, reply }),
        )
        .await
        .map_err(|_| NetError::Dial(format!("connecting to {peer} timed out")))?
        .and_then(|r| r)
    }

    /// Starts providing `cid` (Kad key = its multihash bytes) and keeps re-providing it.
    pub async fn provide(&self, cid: Cid) -> Result<(), NetError> {
        let key = dht_key(&cid);
        self.ask(|reply| Command::Provide { key, reply }).await?
    }

    /// Stops providing `cid` (published records expire).
    pub async fn stop_providing(&self, cid: Cid) -> Result<(), NetError> {
        let key = dht_key(&cid);
        self.ask(|reply| Command::StopProviding { key, reply })
            .await
    }

    /// Finds up to `limit` providers of `cid` within the lookup bound, dialing them. Returns the
    /// providers it is connected to, as soon as there are `limit` of them or when the lookup
    /// ends (possibly none).
    pub async fn find_providers(&self, cid: Cid, limit: usize) -> Result<Vec<PeerId>, NetError> {
        let key = dht_key(&cid);
        let bound = self.inner.config.lookup_timeout + Duration::from_secs(1);
        tokio::time::timeout(
            bound,
            self.ask(|reply| Command::FindProviders { key, limit, reply }),
        )
        .await
        .unwrap_or(Ok(Vec::new()))
    }

    /// Starts providing a raw Kad key (e.g. a swarm's
    /// [`rendezvous_key`](crate::rendezvous_key)) and keeps re-providing it.
    pub async fn provide_key(&self, key: &[u8]) -> Result<(), NetError> {
        let key = RecordKey::new(&key);
        self.ask(|reply| Command::Provide { key, reply }).await?
    }

    /// Stops providing a raw Kad key.
    pub async fn stop_providing_key(&self, key: &[u8]) -> Result<(), NetError> {
        let key = RecordKey::new(&key);
        self.ask(|reply| Command::StopProviding { key, reply })
            .await
    }

    /// Finds up to `limit` providers of a raw Kad key, like [`find_providers`](Self::find_providers).
    pub async fn find_providers_of_key(
        &self,
        key: &[u8],
        limit: usize,
    ) -> Result<Vec<PeerId>, NetError> {
        let key = RecordKey::new(&key);
        let bound = self.inner.config.lookup_timeout + Duration::from_secs(1);
        tokio::time::timeout(
            bound,
            self.ask(|reply| Command::FindProviders { key, limit, reply }),
        )
        .await
        .unwrap_or(Ok(Vec::new()))
    }

    // ---- gossip (durability.md §7.1) ----

    /// Subscribes to a gossip topic; `Ok(false)` if already subscribed. Received messages are
    /// reported as [`NetEvent::Gossip`].
    pub async fn subscribe(&self, topic: String) -> Result<bool, NetError> {
        self.ask(|reply| Command::Subscribe { topic, reply })
            .await?
    }

    /// Leaves a gossip topic; `Ok(false)` if not subscribed.
    pub async fn unsubscribe(&self, topic: String) -> Result<bool, NetError> {
        self.ask(|reply| Command::Unsubscribe { topic, reply })
            .await
    }

    /// Publishes `data` (at most [`GOSSIP_MAX_MESSAGE`] bytes) on `topic`; returns its id.
    /// The topic need not be subscribed (gossipsub's fanout then carries it).
    pub async fn publish(&self, topic: String, data: Bytes) -> Result<GossipId, NetError> {
        if data.len() > GOSSIP_MAX_MESSAGE {
            return Err(NetError::TooLarge {
                size: data.len(),
                limit: GOSSIP_MAX_MESSAGE,
            });
        }
        self.ask(|reply| Command::Publish { topic, data, reply })
            .await?
    }

    /// Reports the verdict on a received gossip message, once: Accept forwards it, Reject drops
    /// it and penalises `source` (P4), Ignore drops it. `Ok(false)` if gossipsub no longer holds
    /// the message (never received, already rejected or ignored, or expired from its cache).
    pub async fn report_validation(
        &self,
        id: GossipId,
        source: PeerId,
        verdict: Verdict,
    ) -> Result<bool, NetError> {
        self.ask(|reply| Command::ReportValidation {
            id,
            source,
            verdict,
            reply,
        })
        .await
    }

    /// Sets the application-specific gossipsub score (P5) of `peer`, applied with weight 1:
    /// `durability.md` §7.1 uses −1000 for a peer that propagated a message from a non-member,
    /// and 0 once it is a member of a swarm we share. `Ok(false)` if gossipsub does not know the
    /// peer (not connected and no retained score).
    pub async fn set_application_score(&self, peer: PeerId, score: f64) -> Result<bool, NetError> {
        self.ask(|reply| Command::SetApplicationScore { peer, score, reply })
            .await
    }

    /// The gossipsub score of a connected peer, for diagnostics.
    pub async fn gossip_score(&self, peer: PeerId) -> Result<Option<f64>, NetError> {
        self.ask(|reply| Command::GossipScore { peer, reply }).await
    }

    // ---- swarm request-response (durability.md §7.2) ----

    /// Sends a swarm request (the body of a protobuf `Request`, at most
    /// [`SWARM_MAX_REQUEST`] bytes) to `peer` and awaits the response body, within
    /// [`NetConfig::swarm_request_timeout`].
    pub async fn swarm_request(&self, peer: PeerId, request: Bytes) -> Result<Bytes, NetError> {
        self.swarm_request_within(peer, request, self.inner.config.swarm_request_timeout)
            .await
    }

    /// [`swarm_request`](Self::swarm_request) with a shorter bound (PROBE_TIMEOUT, …); the
    /// bound is capped at [`NetConfig::swarm_request_timeout`].
    pub async fn swarm_request_within(
        &self,
        peer: PeerId,
        request: Bytes,
        timeout: Duration,
    ) -> Result<Bytes, NetError> {
        if request.len() > SWARM_MAX_REQUEST {
            return Err(NetError::TooLarge {
                size: request.len(),
                limit: SWARM_MAX_REQUEST,
            });
        }
        let timeout = timeout.min(self.inner.config.swarm_request_timeout);
        let exchange = async {
            self.ensure_connected(peer).await?;
            self.ask(|reply| Command::SwarmRequest {
                peer,
                request,
                reply,
            })
            .await?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| NetError::Request {
                peer,
                reason: format!("no answer within {timeout:?}"),
            })?
    }

    /// Makes sure `peer` is connected (dialing it through the DHT if needed) before a stream
    /// is opened to it.
    async fn ensure_connected(&self, peer: PeerId) -> Result<(), NetError> {
        if self.inner.bans.is_banned(&peer) {
            return Err(NetError::Banned(peer));
        }
        self.ask(|reply| Command::Connect {
            peer,
            addrs: Vec::new(),
            reply,
        })
        .await?
    }

    fn timed_out(&self, peer: PeerId) -> NetError {
        NetError::Request {
            peer,
            reason: format!("no answer within {:?}", self.inner.config.request_timeout),
        }
    }

    /// Asks `peer` for the manifest `cid` over `/storage/manifest/1.0.0`. `Ok(None)` = NotFound.
    /// The bytes are checked against the CID before they are returned.
    pub async fn fetch_manifest(&self, peer: PeerId, cid: Cid) -> Result<Option<Bytes>, NetError> {
        let request = with_stream_retry(|| async {
            self.ensure_connected(peer).await?;
            manifest::fetch(self.inner.control.clone(), peer, cid).await
        });
        tokio::time::timeout(self.inner.config.request_timeout, request)
            .await
            .map_err(|_| self.timed_out(peer))?
    }

    /// Sends a control message (want-haves, presences) to `peer` on its blockexc stream.
    pub async fn send_control(&self, peer: PeerId, message: Message) -> Result<(), NetError> {
        // No retry here: the blockexc session already replaces a closed stream once (sending
        // only queues the frame), and its other errors are not transient.
        let request = async {
            if !self.inner.blockexc.has_session(&peer) {
                self.ensure_connected(peer).await?;
            }
            self.inner.blockexc.send_control(peer, message).await
        };
        tokio::time::timeout(self.inner.config.request_timeout, request)
            .await
            .map_err(|_| self.timed_out(peer))?
    }

    /// Sends a WantBlocksRequest for `ranges` of `tree` and awaits the matching response
    /// (parsed and size-checked; blocks not yet verified: the caller checks them with
    /// `cairn_core::wire::DeliveryCheck` before storing).
    pub async fn want_blocks(
        &self,
        peer: PeerId,
        tree: Cid,
        ranges: Vec<(u64, u64)>,
    ) -> Result<WantBlocksResponse, NetError> {
        let request = async {
            if !self.inner.blockexc.has_session(&peer) {
                self.ensure_connected(peer).await?;
            }
            self.inner.blockexc.want_blocks(peer, tree, ranges).await
        };
        tokio::time::timeout(self.inner.config.request_timeout, request)
            .await
            .map_err(|_| self.timed_out(peer))?
    }

    /// Disconnects and bans `peer` for the configured duration.
    pub async fn ban(&self, peer: PeerId) -> Result<(), NetError> {
        self.ask(|reply| Command::Ban { peer, reply }).await
    }

    /// Stops the swarm task.
    pub async fn shutdown(&self) {
        let _ = self.ask(Command::Shutdown).await;
    }
}

/// Pause before the one retry of a request whose stream failed.
const STREAM_RETRY_DELAY: Duration = Duration::from_millis(50);

/// Runs `attempt`, and once more if its stream failed. A stream can fail while the peer stays
/// reachable: a node drops an inbound stream that arrives while the previous one of the same
/// protocol is still waiting to be accepted (libp2p-stream hands them over one at a time), which
/// happens when several peers open streams to it at once. The retry opens a fresh stream.
async fn with_stream_retry<T, F, Fut>(attempt: F) -> Result<T, NetError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, NetError>>,
{
    match attempt().await {
        Err(NetError::Request { peer, reason }) => {
            tracing::debug!(%peer, %reason, "request failed, retrying once");
            tokio::time::sleep(STREAM_RETRY_DELAY).await;
            attempt().await
        }
        other => other,
    }
}
