//! cairn's networking layer: the only crate that depends on libp2p.
//!
//! - the node identity: the persisted Ed25519 keypair, the peer id, and signed peer records
//!   (SPR) in the text form Codex and Logos Storage use;
//! - the [`Network`]: one task owns the libp2p swarm (TCP + Noise + Yamux, identify, ping, Kad
//!   with provider records keyed by multihash, connection limits, bans); `/storage/manifest/1.0.0`
//!   and `/storage/blockexc/1.0.0` run on libp2p-stream streams with their own tasks. The handle
//!   is cloneable and talks to the tasks over bounded channels;
//! - the durability layer's transport (`durability.md` §7): gossipsub in anonymous mode with
//!   content-derived message ids and application validation, the `/cairn/durability/1.0.0`
//!   request-response protocol, and swarm rendezvous keys in Kad. Both carry opaque bytes: the
//!   messages are decoded and judged by the node's state machines.
//!
//! The byte formats are `cairn_core::wire`'s; this crate moves them over streams, checking every
//! claimed length before it reads or allocates.

mod api;
mod bans;
mod blockexc;
mod gossip;
mod identity;
mod keepalive;
mod manifest;
mod rpc;
mod swarm;

pub use api::{
    ContentServer, NetConfig, NetError, NetEvent, NetStatus, Network, PeerInfo, ServedBlock,
};

pub use gossip::{
    GOSSIP_MAX_MESSAGE, GossipId, SwarmTopic, Verdict, ctl_topic, parse_swarm_id_text,
    rendezvous_key, shard_topic, swarm_id_text,
};
pub use identity::{Identity, IdentityError, Spr, node_id_hex};
pub use libp2p::{Multiaddr, PeerId, multiaddr::Protocol};
pub use rpc::{
    SWARM_MAX_IN_FLIGHT, SWARM_MAX_REQUEST, SWARM_MAX_RESPONSE, SWARM_PROTOCOL, SwarmResponder,
};
