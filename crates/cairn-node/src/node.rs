//! Node start-up and shutdown.

use std::net::SocketAddr;

use crate::config::NodeConfig;

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
    Store(#[from] cairn_store::StoreError),
    /// The node key could not be loaded or created.
    #[error("node identity: {0}")]
    Identity(String),
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
    shutdown: tokio_util::sync::CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Opens the store, loads or creates the node key, binds the REST API and starts serving.
    /// Returns once the API accepts connections.
    pub async fn start(config: NodeConfig) -> Result<Node, NodeError> {
        let _ = config;
        todo!("implemented with the REST API")
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
        let _ = (&mut self.server).await;
    }

    /// Stops serving, finishes in-flight requests briefly, syncs the store and returns.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.server.await;
    }
}
