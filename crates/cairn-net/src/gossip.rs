//! Gossipsub for the durability layer (`durability.md` §7.1, `wire.md` §5.4): topic names, the
//! content-derived message id, the validation verdicts, the DHT rendezvous key of a swarm, and
//! the gossipsub configuration (anonymous mode, application validation, peer scoring).
//!
//! Everything here is pure; the behaviour itself lives in the swarm task.

use std::{fmt, time::Duration};

use libp2p::gossipsub;
use sha2::{Digest, Sha256};

/// Largest gossip payload (`durability.md` §7.1 and §14: 64 KiB). Larger messages are refused
/// by [`Network::publish`](crate::Network::publish) and Rejected when received (§18).
pub const GOSSIP_MAX_MESSAGE: usize = 64 * 1024;

/// Bytes allowed around a maximal payload in one gossipsub RPC frame (protobuf framing, topic
/// name, piggybacked control messages).
const RPC_FRAME_SLACK: usize = 4 * 1024;

/// Mesh degree D (`durability.md` §14).
const MESH_N: usize = 6;
/// Peers gossiped to (IHAVE) per heartbeat outside the mesh (§14).
const GOSSIP_LAZY: usize = 3;

/// P4, the weight of invalid (Rejected) message deliveries (`durability.md` §7.1).
const P4_WEIGHT: f64 = -10.0;
/// P4 counters halve in this time.
const P4_HALF_LIFE: Duration = Duration::from_secs(600);

/// The id of a gossip message: the first 20 bytes of SHA-256 of its data (`durability.md`
/// §7.1). Identical payloads have identical ids, so a republished fact is a duplicate.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GossipId([u8; 20]);

impl GossipId {
    /// The id of a message carrying `data`.
    pub fn of(data: &[u8]) -> GossipId {
        let digest = Sha256::digest(data);
        let mut id = [0u8; 20];
        id.copy_from_slice(&digest[..20]);
        GossipId(id)
    }

    /// Wraps raw id bytes.
    pub const fn from_bytes(bytes: [u8; 20]) -> GossipId {
        GossipId(bytes)
    }

    /// The raw id bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    pub(crate) fn from_message_id(id: &gossipsub::MessageId) -> Option<GossipId> {
        <[u8; 20]>::try_from(id.0.as_slice()).ok().map(GossipId)
    }

    pub(crate) fn to_message_id(self) -> gossipsub::MessageId {
        gossipsub::MessageId::new(&self.0)
    }
}

impl fmt::Display for GossipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for GossipId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GossipId({self})")
    }
}

/// The application's verdict on a received gossip message (`durability.md` §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Valid: deliver and forward.
    Accept,
    /// Invalid: drop, do not forward, and apply the P4 penalty to the propagation source.
    Reject,
    /// Drop without forwarding and without penalty (duplicates, stale timestamps, rate limits).
    Ignore,
}

impl From<Verdict> for gossipsub::MessageAcceptance {
    fn from(verdict: Verdict) -> Self {
        match verdict {
            Verdict::Accept => gossipsub::MessageAcceptance::Accept,
            Verdict::Reject => gossipsub::MessageAcceptance::Reject,
            Verdict::Ignore => gossipsub::MessageAcceptance::Ignore,
        }
    }
}

/// The text form of a SwarmId (`durability.md` §4): `z` ‖ base58btc(`12 20` ‖ SwarmId).
pub fn swarm_id_text(swarm_id: &[u8; 32]) -> String {
    let mut multihash = Vec::with_capacity(34);
    multihash.extend_from_slice(&[0x12, 0x20]);
    multihash.extend_from_slice(swarm_id);
    format!("z{}", bs58::encode(multihash).into_string())
}

/// Parses the text form of a SwarmId.
pub fn parse_swarm_id_text(text: &str) -> Option<[u8; 32]> {
    let encoded = text.strip_prefix('z')?;
    // 34 bytes are at most 47 base58 characters.
    if encoded.len() > 47 {
        return None;
    }
    let bytes = bs58::decode(encoded).into_vec().ok()?;
    let digest = bytes.strip_prefix(&[0x12, 0x20])?;
    <[u8; 32]>::try_from(digest).ok()
}

/// The control topic of a swarm: `/cairn/1/<SwarmId>/ctl` (`durability.md` §7.1).
pub fn ctl_topic(swarm_id: &[u8; 32]) -> String {
    format!("/cairn/1/{}/ctl", swarm_id_text(swarm_id))
}

/// The topic of dataset shard `shard` of a swarm: `/cairn/1/<SwarmId>/ds/<shard>`, the shard in
/// decimal without leading zeros (`durability.md` §7.1).
pub fn shard_topic(swarm_id: &[u8; 32], shard: u32) -> String {
    format!("/cairn/1/{}/ds/{shard}", swarm_id_text(swarm_id))
}

/// A parsed swarm topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwarmTopic {
    /// `/cairn/1/<SwarmId>/ctl`.
    Ctl {
        /// The swarm.
        swarm_id: [u8; 32],
    },
    /// `/cairn/1/<SwarmId>/ds/<shard>`.
    Shard {
        /// The swarm.
        swarm_id: [u8; 32],
        /// The dataset shard.
        shard: u32,
    },
}

impl SwarmTopic {
    /// Parses a topic name written by [`ctl_topic`] or [`shard_topic`]; `None` for anything
    /// else (other prefixes, a non-canonical SwarmId or shard number).
    pub fn parse(topic: &str) -> Option<SwarmTopic> {
        let rest = topic.strip_prefix("/cairn/1/")?;
        let (id_text, kind) = rest.split_once('/')?;
        let swarm_id = parse_swarm_id_text(id_text)?;
        // Only the canonical spelling names a topic.
        if swarm_id_text(&swarm_id) != id_text {
            return None;
        }
        if kind == "ctl" {
            return Some(SwarmTopic::Ctl { swarm_id });
        }
        let shard_text = kind.strip_prefix("ds/")?;
        let canonical = !shard_text.is_empty()
            && shard_text.bytes().all(|b| b.is_ascii_digit())
            && (shard_text == "0" || !shard_text.starts_with('0'));
        if !canonical {
            return None;
        }
        let shard = shard_text.parse().ok()?;
        Some(SwarmTopic::Shard { swarm_id, shard })
    }

    /// The topic name.
    pub fn name(&self) -> String {
        match self {
            SwarmTopic::Ctl { swarm_id } => ctl_topic(swarm_id),
            SwarmTopic::Shard { swarm_id, shard } => shard_topic(swarm_id, *shard),
        }
    }
}

/// The Kad key of a swarm's rendezvous record (`durability.md` §5, `wire.md` §5.3), written like
/// a sha2-256 multihash: `12 20 ‖ SHA-256("cairn/rendezvous/v1" ‖ SwarmId)`.
pub fn rendezvous_key(swarm_id: &[u8; 32]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    hasher.update(b"cairn/rendezvous/v1");
    hasher.update(swarm_id);
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&[0x12, 0x20]);
    key.extend_from_slice(&hasher.finalize());
    key
}

fn message_id(message: &gossipsub::Message) -> gossipsub::MessageId {
    GossipId::of(&message.data).to_message_id()
}

/// The gossipsub configuration of `durability.md` §7.1: anonymous (the envelope carries the
/// signature), content-derived ids, every message validated by the application.
pub(crate) fn config() -> Result<gossipsub::Config, gossipsub::ConfigBuilderError> {
    gossipsub::ConfigBuilder::default()
        .validation_mode(gossipsub::ValidationMode::Anonymous)
        .message_id_fn(message_id)
        .validate_messages()
        .max_transmit_size(GOSSIP_MAX_MESSAGE + RPC_FRAME_SLACK)
        .mesh_n(MESH_N)
        .gossip_lazy(GOSSIP_LAZY)
        .build()
}

/// Peer scoring (`durability.md` §7.1): only P4 (per topic, see [`topic_score_params`]), P5 (the
/// application score, weight 1 so that the score the node sets is the one applied) and
/// gossipsub's behavioural penalty P7 count. P6 (IP colocation) is off: local clusters and
/// tests run many nodes on one address.
pub(crate) fn peer_score_params() -> gossipsub::PeerScoreParams {
    gossipsub::PeerScoreParams {
        app_specific_weight: 1.0,
        ip_colocation_factor_weight: 0.0,
        ..gossipsub::PeerScoreParams::default()
    }
}

/// Per-topic scoring: P4 = −10 per invalid message (squared counter, as gossipsub defines it);
/// P1–P3b are off, so a quiet topic never penalises its mesh and an unknown peer starts at 0.
pub(crate) fn topic_score_params() -> gossipsub::TopicScoreParams {
    gossipsub::TopicScoreParams {
        topic_weight: 1.0,
        time_in_mesh_weight: 0.0,
        time_in_mesh_quantum: Duration::from_secs(1),
        time_in_mesh_cap: 1.0,
        first_message_deliveries_weight: 0.0,
        first_message_deliveries_decay: 0.5,
        first_message_deliveries_cap: 1.0,
        mesh_message_deliveries_weight: 0.0,
        mesh_message_deliveries_decay: 0.5,
        mesh_message_deliveries_cap: 1.0,
        mesh_message_deliveries_threshold: 1.0,
        mesh_message_deliveries_window: Duration::from_millis(10),
        mesh_message_deliveries_activation: Duration::from_secs(5),
        mesh_failure_penalty_weight: 0.0,
        mesh_failure_penalty_decay: 0.5,
        invalid_message_deliveries_weight: P4_WEIGHT,
        invalid_message_deliveries_decay: gossipsub::score_parameter_decay(P4_HALF_LIFE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_id_is_a_truncated_sha256() {
        let id = GossipId::of(b"abc");
        assert_eq!(
            id.to_string(),
            // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
            "ba7816bf8f01cfea414140de5dae2223b00361a3"
        );
        let wrapped = id.to_message_id();
        assert_eq!(GossipId::from_message_id(&wrapped), Some(id));
        assert_eq!(
            GossipId::from_message_id(&gossipsub::MessageId::new(b"short")),
            None
        );
    }

    #[test]
    fn topic_names() {
        let id = [7u8; 32];
        let text = swarm_id_text(&id);
        assert!(text.starts_with("zQm"), "{text}");
        assert_eq!(parse_swarm_id_text(&text), Some(id));
        assert_eq!(ctl_topic(&id), format!("/cairn/1/{text}/ctl"));
        assert_eq!(shard_topic(&id, 0), format!("/cairn/1/{text}/ds/0"));
        assert_eq!(shard_topic(&id, 15), format!("/cairn/1/{text}/ds/15"));
        assert_eq!(
            SwarmTopic::parse(&ctl_topic(&id)),
            Some(SwarmTopic::Ctl { swarm_id: id })
        );
        assert_eq!(
            SwarmTopic::parse(&shard_topic(&id, 15)),
            Some(SwarmTopic::Shard {
                swarm_id: id,
                shard: 15
            })
        );
        for bad in [
            format!("/cairn/1/{text}/ds/015"),
            format!("/cairn/1/{text}/ds/"),
            format!("/cairn/1/{text}/ds/+1"),
            format!("/cairn/1/{text}/ds/99999999999"),
            format!("/cairn/1/{text}/other"),
            format!("/cairn/2/{text}/ctl"),
            "/cairn/1/zzz/ctl".to_owned(),
            "/cairn/1/".to_owned(),
            String::new(),
        ] {
            assert_eq!(SwarmTopic::parse(&bad), None, "{bad}");
        }
        let topic = SwarmTopic::Shard {
            swarm_id: id,
            shard: 3,
        };
        assert_eq!(SwarmTopic::parse(&topic.name()), Some(topic));
    }

    #[test]
    fn rendezvous_key_is_a_multihash() {
        let id = [1u8; 32];
        let key = rendezvous_key(&id);
        assert_eq!(key.len(), 34);
        assert_eq!(&key[..2], &[0x12, 0x20]);
        let mut expected = b"cairn/rendezvous/v1".to_vec();
        expected.extend_from_slice(&id);
        assert_eq!(&key[2..], Sha256::digest(&expected).as_slice());
        assert_ne!(rendezvous_key(&[2u8; 32]), key);
    }

    #[test]
    fn configuration_is_valid() {
        let config = config().expect("gossipsub config");
        assert_eq!(config.mesh_n(), 6);
        assert_eq!(config.gossip_lazy(), 3);
        assert!(config.validate_messages());
        peer_score_params().validate().expect("peer score params");
        topic_score_params().validate().expect("topic score params");
    }
}
