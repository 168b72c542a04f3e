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
    /// Initial log filter (the binary applies it; kept here so config files can set it).
    pub log_level: String,
    /// Hook for changing the log filter at run time.
    #[serde(skip)]
    pub log_control: Option<Arc<dyn LogControl>>,
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
            log_level: "info".to_owned(),
            log_control: None,
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
            .field("log_level", &self.log_level)
            .finish_non_exhaustive()
    }
}
