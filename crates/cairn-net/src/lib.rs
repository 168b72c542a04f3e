//! cairn's networking layer: the only crate that depends on libp2p.
//!
//! For now it holds the node identity: the persisted Ed25519 keypair, the peer id, and signed
//! peer records (SPR) in the text form Codex and Logos Storage use. The Swarm, Kad and the
//! Gen-2 protocols land here next, behind a cloneable handle over bounded channels.

mod identity;

pub use identity::{Identity, IdentityError, Spr, node_id_hex};
pub use libp2p::{Multiaddr, PeerId};
