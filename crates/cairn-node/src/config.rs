//! Node configuration. The binary fills it from flags, `CAIRN_*` environment variables and a TOML
//! file (in that precedence); the node only validates and uses it.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    sync::Arc,
};

use serde::{Deserialize, Serialize};

/// Default REST port.
pub const DEFAULT_API_PORT: u16 = 8080;

/// Changes the process's log filter at run time (`POST /debug/chronicles/loglevel`). The binary
/// owns the tracing subscriber and hands the node this hook; libraries never install one.
pub trait LogControl: Send + Sync + 'static {
    /// Applies a tracing filter directive such as `info` or `info,cairn_store=debug`.
    fn set_filter(&self, directive: &str) -> Result<(), String>;
}

/// Everything a node needs to start.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeConfig {
    /// Where the store and the node key live.
    pub data_dir: PathBuf,
    /// REST listen address (default 127.0.0.1).
    pub api_bindaddr: IpAddr,
    /// REST port (default 8080; 0 lets the OS choose).
    pub api_port: u16,
    /// Storage quota in bytes (default 20 GiB).
    pub storage_quota: u64,
    /// Largest accepted upload in bytes, if limited.
    pub max_upload_size: Option<u64>,
    /// Origin for CORS headers, if any.
    pub api_cors_origin: Option<String>,
    /// IP the p2p layer listens on (TCP; default 0.0.0.0).
    pub listen_ip: IpAddr,
    /// TCP port of the p2p layer (default 0: the OS chooses).
    pub listen_port: u16,
    /// Bootstrap peers, multiaddrs ending in `/p2p/<peer id>`.
    pub bootstrap_node: Vec<String>,
    /// Addresses to announce to peers (external addresses).
    pub announce_addr: Vec<String>,
    /// Maximum connected peers (default 160).
    pub max_peers: u32,
    /// Seconds between re-provides of every advertised dataset (default 600).
    pub reprovide_interval: u64,
    /// Seconds a DHT provider lookup may take (default 30).
    pub lookup_timeout: u64,
    /// Test-only: serve some blocks corrupted, to test that peers detect and ban liars.
    #[doc(hidden)]
    #[serde(skip)]
    pub corrupt_served_blocks: bool,
    /// Initial log filter (the binary applies it; kept here so config files can set it).
    pub log_level: String,
    /// Hook for changing the log filter at run time.
    #[serde(skip)]
    pub log_control: Option<Arc<dyn LogControl>>,
    /// The `[durability]` table (durability.md §14): local timer overrides.
    pub durability: crate::swarm::DurabilityConfig,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            data_dir: PathBuf::from("cairn-data"),
            api_bindaddr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            api_port: DEFAULT_API_PORT,
            storage_quota: cairn_store::DEFAULT_QUOTA_BYTES,
            max_upload_size: None,
            api_cors_origin: None,
            listen_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            listen_port: 0,
            bootstrap_node: Vec::new(),
            announce_addr: Vec::new(),
            max_peers: 160,
            reprovide_interval: 600,
            lookup_timeout: 30,
            corrupt_served_blocks: false,
            log_level: "info".to_owned(),
            log_control: None,
            durability: crate::swarm::DurabilityConfig::default(),
        }
    }
}

impl fmt::Debug for NodeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeConfig")
            .field("data_dir", &self.data_dir)
            .field("api_bindaddr", &self.api_bindaddr)
            .field("api_port", &self.api_port)
            .field("storage_quota", &self.storage_quota)
            .field("max_upload_size", &self.max_upload_size)
            .field("api_cors_origin", &self.api_cors_origin)
            .field("listen_ip", &self.listen_ip)
            .field("listen_port", &self.listen_port)
            .field("bootstrap_node", &self.bootstrap_node)
            .field("announce_addr", &self.announce_addr)
            .field("max_peers", &self.max_peers)
            .field("reprovide_interval", &self.reprovide_interval)
            .field("lookup_timeout", &self.lookup_timeout)
            .field("log_level", &self.log_level)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}
