//! The durability layer's data model and codecs (`durability.md`, `durability.proto`): the wire
//! messages, node identities, signed envelopes, swarm ids, rendezvous scores and policies.
//!
//! - [`messages`]: every message of `durability.proto` as a prost struct;
//! - [`identity`]: Ed25519 keys and PeerIds in their libp2p encodings;
//! - [`envelope`]: signing, canonical decoding and signature checks of `SignedEnvelope`s, and
//!   typed payloads with verified nested envelopes;
//! - [`ids`]: SwarmId, fact ids, the genesis record, rendezvous scores, shards;
//! - [`policy`]: swarm and dataset policy rules.
//!
//! Pure functions only: no I/O, no clock, no randomness. The state machines that use these
//! types live in `cairn-proto::durability`.

pub mod envelope;
pub mod identity;
pub mod ids;
pub mod messages;
pub mod policy;

pub use envelope::{
    Body, ENVELOPE_DOMAIN, Envelope, EnvelopeError, MAX_GOSSIP_BYTES, signing_bytes,
};
pub use identity::{IdentityError, Keypair, PEER_ID_LEN, PeerId, PublicKey};
pub use ids::{
    FactId, GenesisError, SwarmId, VerifiedGenesis, hrw_score, lead_score, score, shard_of,
    sign_genesis, verify_genesis, watch_score,
};
pub use messages::Kind;
pub use policy::Policy;
