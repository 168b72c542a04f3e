//! Identifiers and hashes of the durability layer (durability.md §4, §5): SwarmId, fact ids,
//! the genesis record, rendezvous scores, shards and the DHT rendezvous key.

use std::fmt;

use prost::Message;

use super::identity::{Keypair, PeerId, PublicKey};
use super::messages as pb;
use crate::cid::{Cid, sha256};

/// Domain tag of the SwarmId hash.
pub const SWARM_DOMAIN: &[u8] = b"cairn/swarm/v1";
/// Domain tag of the genesis signature.
pub const GENESIS_DOMAIN: &[u8] = b"cairn/genesis/v1";
/// Domain tag of the DHT rendezvous key.
pub const RENDEZVOUS_DOMAIN: &[u8] = b"cairn/rendezvous/v1";
/// Rendezvous tag for placement: a = DatasetCid, b = PeerId.
pub const TAG_HRW: &[u8] = b"cairn/hrw/v1";
/// Rendezvous tag for watchers: a = SwarmId ‖ subject PeerId, b = candidate PeerId.
pub const TAG_WATCH: &[u8] = b"cairn/watch/v1";
/// Rendezvous tag for repair leaders: a = DatasetCid ‖ u32be(round), b = holder PeerId.
pub const TAG_LEAD: &[u8] = b"cairn/lead/v1";

/// A swarm's id: SHA-256(`"cairn/swarm/v1"` ‖ encoded Genesis, as carried).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SwarmId(pub [u8; 32]);

impl SwarmId {
    /// The id of a swarm whose encoded Genesis is `genesis`.
    pub fn of_genesis(genesis: &[u8]) -> SwarmId {
        let mut buf = Vec::with_capacity(SWARM_DOMAIN.len() + genesis.len());
        buf.extend_from_slice(SWARM_DOMAIN);
        buf.extend_from_slice(genesis);
        SwarmId(sha256(&buf))
    }

    /// Parses 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<SwarmId> {
        bytes.try_into().ok().map(SwarmId)
    }

    /// The 32 raw bytes.
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The text form (paths, topics, JSON): `z` ‖ base58btc(`12 20` ‖ SwarmId).
    pub fn to_text(&self) -> String {
        let mut mh = Vec::with_capacity(34);
        mh.extend_from_slice(&[0x12, 0x20]);
        mh.extend_from_slice(&self.0);
        format!("z{}", bs58::encode(mh).into_string())
    }

    /// Parses the text form.
    pub fn from_text(text: &str) -> Option<SwarmId> {
        let rest = text.strip_prefix('z')?;
        let raw = bs58::decode(rest).into_vec().ok()?;
        match raw.as_slice() {
            [0x12, 0x20, id @ ..] => SwarmId::from_slice(id),
            _ => None,
        }
    }

    /// The DHT rendezvous key's digest, SHA-256(`"cairn/rendezvous/v1"` ‖ SwarmId); its Kad key
    /// is the multihash `12 20 ‖ digest` ([`SwarmId::rendezvous_multihash`]).
    pub fn rendezvous_digest(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(RENDEZVOUS_DOMAIN.len() + 32);
        buf.extend_from_slice(RENDEZVOUS_DOMAIN);
        buf.extend_from_slice(&self.0);
        sha256(&buf)
    }

    /// The Kad key of the rendezvous record, a sha2-256 multihash (34 bytes).
    pub fn rendezvous_multihash(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0] = 0x12;
        out[1] = 0x20;
        out[2..].copy_from_slice(&self.rendezvous_digest());
        out
    }

    /// The control topic, `/cairn/1/<SwarmId>/ctl`.
    pub fn ctl_topic(&self) -> String {
        format!("/cairn/1/{}/ctl", self.to_text())
    }

    /// The dataset topic of `shard`, `/cairn/1/<SwarmId>/ds/<shard>`.
    pub fn shard_topic(&self, shard: u32) -> String {
        format!("/cairn/1/{}/ds/{shard}", self.to_text())
    }
}

impl fmt::Debug for SwarmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SwarmId({})", self.to_text())
    }
}

impl fmt::Display for SwarmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

/// A fact id: SHA-256 of a canonical envelope's bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FactId(pub [u8; 32]);

impl FactId {
    /// Parses 32 raw bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<FactId> {
        bytes.try_into().ok().map(FactId)
    }

    /// The anti-entropy bucket of this id: its first byte.
    pub const fn bucket(&self) -> u8 {
        self.0[0]
    }
}

impl fmt::Debug for FactId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FactId(")?;
        for b in &self.0[..6] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// `score(tag, a, b) = u64be(SHA-256(tag ‖ a ‖ b)[0..8])`. Higher ranks first; ties are broken
/// by PeerId bytes, ascending.
pub fn score(tag: &[u8], a: &[u8], b: &[u8]) -> u64 {
    let mut buf = Vec::with_capacity(tag.len() + a.len() + b.len());
    buf.extend_from_slice(tag);
    buf.extend_from_slice(a);
    buf.extend_from_slice(b);
    let h = sha256(&buf);
    u64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// The placement score of `peer` for `dataset`: score(`"cairn/hrw/v1"`, DatasetCid, PeerId).
pub fn hrw_score(dataset: &Cid, peer: &PeerId) -> u64 {
    score(TAG_HRW, &dataset.to_bytes(), peer.as_bytes())
}

/// The watcher score of `candidate` for `subject`: score(`"cairn/watch/v1"`, SwarmId ‖ subject,
/// candidate).
pub fn watch_score(swarm: &SwarmId, subject: &PeerId, candidate: &PeerId) -> u64 {
    let mut a = Vec::with_capacity(32 + 38);
    a.extend_from_slice(swarm.as_bytes());
    a.extend_from_slice(subject.as_bytes());
    score(TAG_WATCH, &a, candidate.as_bytes())
}

/// The leader score of `holder` for round `round` of `dataset`: score(`"cairn/lead/v1"`,
/// DatasetCid ‖ u32be(round), holder).
pub fn lead_score(dataset: &Cid, round: u32, holder: &PeerId) -> u64 {
    let mut a = dataset.to_bytes().to_vec();
    a.extend_from_slice(&round.to_be_bytes());
    score(TAG_LEAD, &a, holder.as_bytes())
}

/// The shard of a dataset: u16be(SHA-256(binary DatasetCid)[0..2]) mod `dataset_shards`
/// (`dataset_shards` = 0 is treated as 1).
pub fn shard_of(dataset: &Cid, dataset_shards: u32) -> u32 {
    let h = sha256(&dataset.to_bytes());
    u32::from(u16::from_be_bytes([h[0], h[1]])) % dataset_shards.max(1)
}

/// Why a genesis record is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GenesisError {
    /// The record or the genesis inside does not decode, or is not canonical.
    #[error("undecodable genesis")]
    Undecodable,
    /// `owner_public_key` is not an Ed25519 key, or its PeerId is not `Genesis.owner`.
    #[error("owner key does not match Genesis.owner")]
    OwnerMismatch,
    /// The owner's signature does not verify.
    #[error("bad genesis signature")]
    BadSignature,
    /// Version ≠ 1, name over 64 bytes, nonce not 16 bytes, or an invalid policy.
    #[error("invalid genesis: {0}")]
    Invalid(&'static str),
}

/// A genesis record whose signature and owner checked out.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedGenesis {
    /// The record as carried.
    pub record: pb::GenesisRecord,
    /// The decoded genesis.
    pub genesis: pb::Genesis,
    /// The swarm id.
    pub swarm_id: SwarmId,
    /// The owner.
    pub owner: PeerId,
}

/// The bytes the owner signs: `"cairn/genesis/v1"` ‖ genesis bytes.
pub fn genesis_signing_bytes(genesis: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(GENESIS_DOMAIN.len() + genesis.len());
    buf.extend_from_slice(GENESIS_DOMAIN);
    buf.extend_from_slice(genesis);
    buf
}

/// Encodes and signs `genesis` (whose `owner` must be the key's PeerId).
pub fn sign_genesis(owner: &Keypair, genesis: &pb::Genesis) -> pb::GenesisRecord {
    let bytes = genesis.encode_to_vec();
    let signature = owner.sign(&genesis_signing_bytes(&bytes));
    pb::GenesisRecord {
        genesis: bytes,
        owner_public_key: owner.public().to_protobuf().to_vec(),
        signature: signature.to_vec(),
    }
}

/// Checks a genesis record as a joiner does (§5): the signature, PeerId(owner key) = owner, a
/// canonical genesis, version 1, name ≤ 64 bytes, a 16-byte nonce and a valid policy.
pub fn verify_genesis(record: &pb::GenesisRecord) -> Result<VerifiedGenesis, GenesisError> {
    let genesis =
        pb::Genesis::decode(record.genesis.as_slice()).map_err(|_| GenesisError::Undecodable)?;
    if genesis.encode_to_vec() != record.genesis {
        return Err(GenesisError::Undecodable);
    }
    let key = PublicKey::from_protobuf(&record.owner_public_key)
        .map_err(|_| GenesisError::OwnerMismatch)?;
    let owner = PeerId::from_bytes(&genesis.owner).map_err(|_| GenesisError::OwnerMismatch)?;
    if key.peer_id() != owner {
        return Err(GenesisError::OwnerMismatch);
    }
    if !key.verify(&genesis_signing_bytes(&record.genesis), &record.signature) {
        return Err(GenesisError::BadSignature);
    }
    if genesis.version != 1 {
        return Err(GenesisError::Invalid("version is not 1"));
    }
    if genesis.name.len() > 64 {
        return Err(GenesisError::Invalid("name over 64 bytes"));
    }
    if genesis.nonce.len() != 16 {
        return Err(GenesisError::Invalid("nonce is not 16 bytes"));
    }
    let policy = genesis
        .policy
        .as_ref()
        .ok_or(GenesisError::Invalid("no policy"))?;
    super::policy::check_swarm_policy(policy).map_err(GenesisError::Invalid)?;
    Ok(VerifiedGenesis {
        swarm_id: SwarmId::of_genesis(&record.genesis),
        record: record.clone(),
        genesis,
        owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cid::Codec;

    #[test]
    fn score_is_sha_prefix() {
        let h = sha256(b"cairn/hrw/v1abc");
        assert_eq!(
            score(TAG_HRW, b"a", b"bc"),
            u64::from_be_bytes(h[..8].try_into().unwrap())
        );
    }

    #[test]
    fn swarm_text_round_trip() {
        let id = SwarmId([0xab; 32]);
        let t = id.to_text();
        assert!(t.starts_with("zQm"), "{t}");
        assert_eq!(SwarmId::from_text(&t), Some(id));
        assert_eq!(SwarmId::from_text("Qm"), None);
        assert!(id.ctl_topic().ends_with("/ctl"));
        assert!(id.shard_topic(12).ends_with("/ds/12"));
        assert_eq!(&id.rendezvous_multihash()[..2], &[0x12, 0x20]);
    }

    #[test]
    fn shard_function() {
        let cid = Cid::new(Codec::Manifest, [5; 32]);
        let h = sha256(&cid.to_bytes());
        let v = u32::from(u16::from_be_bytes([h[0], h[1]]));
        assert_eq!(shard_of(&cid, 1), 0);
        assert_eq!(shard_of(&cid, 16), v % 16);
        assert_eq!(shard_of(&cid, 0), 0);
    }

    #[test]
    fn genesis_sign_verify() {
        let owner = Keypair::from_seed(&[1; 32]);
        let g = pb::Genesis {
            version: 1,
            name: "club".into(),
            owner: owner.peer_id().as_bytes().to_vec(),
            created_at: 100,
            nonce: vec![0; 16],
            policy: Some(super::super::policy::default_swarm_policy(false, 1)),
        };
        let rec = sign_genesis(&owner, &g);
        let v = verify_genesis(&rec).unwrap();
        assert_eq!(v.owner, owner.peer_id());
        assert_eq!(v.swarm_id, SwarmId::of_genesis(&rec.genesis));

        let mut bad = rec.clone();
        bad.signature[0] ^= 1;
        assert_eq!(verify_genesis(&bad), Err(GenesisError::BadSignature));
        let other = Keypair::from_seed(&[2; 32]);
        let mut bad = rec.clone();
        bad.owner_public_key = other.public().to_protobuf().to_vec();
        assert_eq!(verify_genesis(&bad), Err(GenesisError::OwnerMismatch));
        let mut g2 = g.clone();
        g2.nonce = vec![0; 3];
        assert!(matches!(
            verify_genesis(&sign_genesis(&owner, &g2)),
            Err(GenesisError::Invalid(_))
        ));
        let mut g3 = g;
        g3.policy.as_mut().unwrap().dataset_shards = 3;
        assert!(matches!(
            verify_genesis(&sign_genesis(&owner, &g3)),
            Err(GenesisError::Invalid(_))
        ));
    }
}
