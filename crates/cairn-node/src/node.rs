//! Node start-up and shutdown.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicU64},
    time::Duration,
};

use cairn_net::Identity;
use cairn_store::{BlockStore, FjallStore};
use tokio_util::sync::CancellationToken;

use crate::{
    api::{self, state::AppState},
    config::NodeConfig,
};

/// Subdirectory of the data dir that holds the store.
const STORE_DIR: &str = "store";
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
}

/// A running node.
#[derive(Debug)]
pub struct Node {
    api_addr: SocketAddr,
    peer_id: String,
    store: Arc<dyn BlockStore>,
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
        Node::serve(config, data_dir, identity, store).await
    }

    /// Serves the API over an already opened store.
    async fn serve(
        config: NodeConfig,
        data_dir: std::path::PathBuf,
        identity: Identity,
        store: Arc<dyn BlockStore>,
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
                next_download_id: AtomicU64::new(1),
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
                        tracing::error!("REST server stopped unexpectedly");
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
        let store = self.store.clone();
        match tokio::task::spawn_blocking(move || store.sync()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = %e, "syncing the store at shutdown failed"),
            Err(e) => tracing::error!(error = %e, "store sync task failed"),
        }
        tracing::info!("cairn node stopped");
    }
}
