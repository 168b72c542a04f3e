//! Node start-up and shutdown.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use cairn_net::{Identity, Multiaddr, NetConfig, NetEvent, Network};
use cairn_store::{BlockStore, FjallStore};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, state::AppState},
    config::NodeConfig,
    content::StoreContent,
    fetch::Fetcher,
    swarm::{Driver, DriverConfig, Msg, SwarmHandle, SystemClock},
};

/// Subdirectory of the data dir that holds the store.
const STORE_DIR: &str = "store";
/// A download that receives no block for this long fails.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// How long in-flight requests may run on after a shutdown request.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why a node failed to start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    /// The data directory could not be created or used.
    #[error("data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The store failed to open.
    #[error("opening the store: {0}")]
    Store(cairn_store::StoreError),
    /// The node key could not be loaded or created.
    #[error("node identity: {0}")]
    Identity(cairn_net::IdentityError),
    /// The REST listener could not bind.
    #[error("binding the REST API to {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The p2p layer failed to start.
    #[error("starting the network: {0}")]
    Network(cairn_net::NetError),
}

fn parse_addrs(values: &[String], what: &str) -> Result<Vec<Multiaddr>, NodeError> {
    values
        .iter()
        .map(|v| {
            v.parse::<Multiaddr>()
                .map_err(|e| NodeError::Config(format!("{what} '{v}' is not a multiaddr: {e}")))
        })
        .collect()
}

/// The network settings of a node configuration.
fn net_config(config: &NodeConfig) -> Result<NetConfig, NodeError> {
    let bootstrap = parse_addrs(&config.bootstrap_node, "bootstrap node")?;
    if let Some(bad) = bootstrap
        .iter()
        .find(|a| !a.iter().any(|p| matches!(p, cairn_net::Protocol::P2p(_))))
    {
        return Err(NodeError::Config(format!(
            "bootstrap node '{bad}' must end with /p2p/<peer id>"
        )));
    }
    if config.max_peers == 0 {
        return Err(NodeError::Config("max peers must be above 0".into()));
    }
    if config.reprovide_interval == 0 {
        return Err(NodeError::Config(
            "reprovide interval must be above 0".into(),
        ));
    }
    if config.lookup_timeout == 0 {
        return Err(NodeError::Config("lookup timeout must be above 0".into()));
    }
    Ok(NetConfig {
        listen_ip: config.listen_ip,
        listen_port: config.listen_port,
        bootstrap,
        announce: parse_addrs(&config.announce_addr, "announce address")?,
        max_peers: config.max_peers,
        reprovide_interval: Duration::from_secs(config.reprovide_interval),
        lookup_timeout: Duration::from_secs(config.lookup_timeout),
        swarm_busy_response: Some(crate::swarm::busy_response()),
        ..NetConfig::default()
    })
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    api_addr: SocketAddr,
    peer_id: String,
    store: Arc<dyn BlockStore>,
    net: Network,
    shutdown: CancellationToken,
    /// The server task; `None` once it has been awaited.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl Node {
    /// Opens the store, loads or creates the node key, binds the REST API and starts serving.
    /// Returns once the API accepts connections.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        if config.storage_quota == 0 {
            return Err(NodeError::Config("storage quota must be above 0".into()));
        }
        let net_config = net_config(&config)?;
        let data_dir = config.data_dir.clone();
        let dir_error = |source| NodeError::DataDir {
            path: data_dir.clone(),
            source,
        };
        std::fs::create_dir_all(&data_dir).map_err(dir_error)?;
        let data_dir = std::fs::canonicalize(&data_dir).map_err(dir_error)?;

        let identity = {
            let dir = data_dir.clone();
            tokio::task::spawn_blocking(move || Identity::load_or_create(&dir))
                .await
                .map_err(|e| NodeError::Config(format!("start-up task failed: {e}")))?
                .map_err(NodeError::Identity)?
        };
        let store: Arc<dyn BlockStore> = {
            let dir = data_dir.join(STORE_DIR);
            let quota = config.storage_quota;
            Arc::new(
                tokio::task::spawn_blocking(move || FjallStore::open(&dir, quota))
                    .await
                    .map_err(|e| NodeError::Config(format!("start-up task failed: {e}")))?
                    .map_err(NodeError::Store)?,
            )
        };
        let (net, mut events) = Network::start(
            &identity,
            net_config,
            Arc::new(StoreContent::new(
                store.clone(),
                config.corrupt_served_blocks,
            )),
        )
        .await
        .map_err(NodeError::Network)?;
        let stall = STALL_TIMEOUT.max(Duration::from_secs(config.lookup_timeout));
        let fetcher = Fetcher::new(store.clone(), net.clone(), stall);
        for warning in config.durability.warnings() {
            tracing::warn!("{warning}");
        }
        let keypair = {
            let path = data_dir.join("node.key");
            let bytes = std::fs::read(&path).map_err(|source| NodeError::DataDir {
                path: path.clone(),
                source,
            })?;
            let seed = crate::swarm::ed25519_seed(&bytes)
                .ok_or_else(|| NodeError::Config("the node key is not an Ed25519 key".into()))?;
            let keypair = cairn_core::durability::Keypair::from_seed(&seed);
            if keypair.peer_id().as_bytes().as_slice() != identity.peer_id().to_bytes().as_slice() {
                return Err(NodeError::Config(
                    "the node key does not match the node identity".into(),
                ));
            }
            keypair
        };
        let (swarms, swarm_rx) = SwarmHandle::channel();
        let driver = Driver::start(
            store.clone(),
            net.clone(),
            fetcher.clone(),
            Arc::new(SystemClock::new()),
            DriverConfig {
                keypair,
                durability: config.durability.clone(),
                default_quota: config.storage_quota,
                seed: random_seed(),
                reprovide: Duration::from_secs(config.reprovide_interval),
            },
            swarms.sender(),
        )
        .await
        .map_err(NodeError::Store)?;
        tokio::spawn(driver.run(swarm_rx));
        {
            let fetcher = fetcher.clone();
            let swarms = swarms.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    route_event(&fetcher, &swarms, event).await;
                }
            });
        }
        tokio::spawn(provide_stored(store.clone(), net.clone()));
        Node::serve(config, data_dir, identity, store, net, fetcher, swarms).await
    }

    /// Serves the API over an already opened store and running network.
    async fn serve(
        config: NodeConfig,
        data_dir: std::path::PathBuf,
        identity: Identity,
        store: Arc<dyn BlockStore>,
        net: Network,
        fetcher: Fetcher,
        swarms: SwarmHandle,
    ) -> Result<Node, NodeError> {
        let addr = SocketAddr::new(config.api_bindaddr, config.api_port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Bind { addr, source })?;
        let api_addr = listener
            .local_addr()
            .map_err(|source| NodeError::Bind { addr, source })?;
        let peer_id = identity.peer_id().to_string();
        let state = AppState {
            inner: Arc::new(api::state::Inner {
                store: store.clone(),
                identity,
                data_dir,
                max_upload_size: config.max_upload_size,
                cors_origin: config.api_cors_origin.clone(),
                log_control: config.log_control.clone(),
                fetcher,
                protect_jobs: Default::default(),
                swarms,
            }),
        };
        let app = api::router(state);
        let shutdown = CancellationToken::new();
        let server = {
            let token = shutdown.clone();
            tokio::spawn(async move {
                let graceful = axum::serve(listener, app)
                    .with_graceful_shutdown(token.clone().cancelled_owned());
                let mut serving = tokio::spawn(async move {
                    if let Err(e) = graceful.await {
                        tracing::error!(error = %e, "REST server failed");
                    }
                });
                tokio::select! {
                    _ = &mut serving => {
                        // A shutdown with nothing in flight ends the server at once, and
                        // `select!` may see that before the token.
                        if !token.is_cancelled() {
                            tracing::error!("REST server stopped unexpectedly");
                        }
                    }
                    () = token.cancelled() => {
                        if tokio::time::timeout(SHUTDOWN_GRACE, serving).await.is_err() {
                            tracing::warn!(
                                "in-flight requests did not finish in time; stopping anyway"
                            );
                        }
                    }
                }
            })
        };
        tracing::info!(%peer_id, %api_addr, "cairn node started");
        Ok(Node {
            api_addr,
            peer_id,
            store,
            net,
            shutdown,
            server: Some(server),
        })
    }

    /// The address the REST API listens on (with the OS-chosen port if 0 was asked).
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The node's libp2p peer id.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The network handle (for tests and embedding applications).
    pub fn network(&self) -> &Network {
        &self.net
    }

    /// Resolves when the node stopped on its own (it does not, short of a fatal error).
    pub async fn stopped(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stops serving, lets in-flight requests finish (up to a grace period), syncs the store
    /// and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        if let Some(server) = self.server {
            let _ = server.await;
        }
        self.net.shutdown().await;
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "syncing the store at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "store sync task failed"),
        }
        tracing::info!("cairn node stopped");
    }
}

/// Routes a network event: durability traffic to the swarm driver, the rest to the fetcher;
/// connection changes to both.
async fn route_event(fetcher: &Fetcher, swarms: &SwarmHandle, event: NetEvent) {
    match event {
        NetEvent::Gossip {
            topic,
            id,
            source,
            data,
        } => {
            swarms
                .deliver(Msg::Gossip {
                    topic,
                    id,
                    source,
                    data,
                })
                .await;
        }
        NetEvent::SwarmRequest {
            peer,
            request,
            responder,
        } => {
            swarms
                .deliver(Msg::Request {
                    peer,
                    request,
                    responder,
                })
                .await;
        }
        NetEvent::PeerConnected(peer) => {
            fetcher.dispatch(NetEvent::PeerConnected(peer));
            swarms
                .deliver(Msg::Peer {
                    peer,
                    connected: true,
                })
                .await;
        }
        NetEvent::PeerDisconnected(peer) => {
            fetcher.dispatch(NetEvent::PeerDisconnected(peer));
            swarms
                .deliver(Msg::Peer {
                    peer,
                    connected: false,
                })
                .await;
        }
        other => fetcher.dispatch(other),
    }
}

/// A seed for the driver's RNG (nonces, jitter): not secret, only distinct per start.
fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// Provides every complete, advertised dataset at start (`wire.md` §5.3); the network layer
/// re-provides them on its timer from then on.
async fn provide_stored(store: Arc<dyn BlockStore>, net: Network) {
    let records = match tokio::task::spawn_blocking(move || store.list_datasets(false)).await {
        Ok(Ok(records)) => records,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "listing datasets to provide failed");
            return;
        }
        Err(_) => return,
    };
    for record in records.into_iter().filter(|r| r.flags.advertise) {
        for cid in [record.manifest_cid, record.tree_cid] {
            if let Err(e) = net.provide(cid).await {
                tracing::warn!(%cid, error = %e, "providing a stored dataset failed");
            }
        }
    }
}
