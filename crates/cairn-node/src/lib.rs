//! The cairn node: the composition root. It opens the store, loads the node key, serves the REST
//! API and shuts down cleanly.
//!
//! Start one with [`Node::start`]; stop it with [`Node::shutdown`].

mod api;
mod config;
mod content;
mod download;
mod erasure;
mod fetch;
mod node;
mod swarm;
mod upload;

pub use config::{DEFAULT_API_PORT, LogControl, NodeConfig};
pub use node::{Node, NodeError};
pub use swarm::{DurabilityConfig, HumanDuration};
