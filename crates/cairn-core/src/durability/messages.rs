//! The messages of `durability.proto` (package `cairn.durability.v1`), as hand-written prost
//! structs: field numbers, types and names follow the schema one to one.
//!
//! These are plain data. Decoding them from untrusted bytes never panics; whether a decoded value
//! is *valid* (sizes, enums, signatures, canonical form) is checked by
//! [`Envelope::decode`](super::Envelope::decode) and by the state machines in `cairn-proto`.
//! Enum fields are kept as `i32` (prost's representation, so an unknown value survives a
//! decode/encode round trip); use the `TryFrom<i32>` impls to read them.

#![allow(missing_docs)] // field-level docs live in durability.proto; types are documented below

// ---------------------------------------------------------------------------------------------
// Envelope

/// A signed swarm message: Ed25519 over `"cairn/durability/v1" ‖ swarm_id ‖ u32be(kind) ‖ payload`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SignedEnvelope {
    /// 32-byte SwarmId.
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    /// A [`Kind`].
    #[prost(enumeration = "Kind", tag = "2")]
    pub kind: i32,
    /// The protobuf encoding of the message named by `kind`, signed as carried.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// libp2p `PublicKey` protobuf encoding (Ed25519 only in v1).
    #[prost(bytes = "vec", tag = "4")]
    pub signer: Vec<u8>,
    /// 64-byte Ed25519 signature.
    #[prost(bytes = "vec", tag = "5")]
    pub signature: Vec<u8>,
}

/// What an envelope's payload is. The numbers are part of the signed bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Kind {
    Unspecified = 0,
    MemberCert = 1,
    Join = 2,
    Leave = 3,
    Revoke = 4,
    PolicyUpdate = 5,
    Beacon = 10,
    LostVote = 11,
    DatasetAnnounce = 20,
    DatasetRetire = 21,
    SlotOffer = 22,
    SlotClaim = 23,
    SlotRelease = 24,
    Challenge = 30,
    ChallengeResponse = 31,
    ChallengeFailure = 32,
    RepairRequest = 40,
    RepairClaim = 41,
}

// ---------------------------------------------------------------------------------------------
// Swarm identity

/// The swarm's founding document; its encoding is hashed into the SwarmId.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Genesis {
    #[prost(uint32, tag = "1")]
    pub version: u32,
    #[prost(string, tag = "2")]
    pub name: String,
    #[prost(bytes = "vec", tag = "3")]
    pub owner: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub created_at: u64,
    #[prost(bytes = "vec", tag = "5")]
    pub nonce: Vec<u8>,
    #[prost(message, optional, tag = "6")]
    pub policy: Option<SwarmPolicy>,
}

/// A genesis as carried, with the owner's key and signature over `"cairn/genesis/v1" ‖ genesis`.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct GenesisRecord {
    #[prost(bytes = "vec", tag = "1")]
    pub genesis: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub owner_public_key: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub signature: Vec<u8>,
}

/// How members are admitted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum Admission {
    Unspecified = 0,
    Invite = 1,
    Open = 2,
}

/// Who may announce datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum AnnouncerRule {
    Unspecified = 0,
    AnyMember = 1,
    AdminsOnly = 2,
}

/// The swarm-wide policy (genesis, replaced by `PolicyUpdate`).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SwarmPolicy {
    #[prost(enumeration = "Admission", tag = "1")]
    pub admission: i32,
    #[prost(enumeration = "AnnouncerRule", tag = "2")]
    pub announcers: i32,
    #[prost(message, optional, tag = "3")]
    pub default_policy: Option<DurabilityPolicy>,
    #[prost(uint64, tag = "4")]
    pub max_dataset_bytes: u64,
    #[prost(uint32, tag = "5")]
    pub lost_after_secs: u32,
    #[prost(uint32, tag = "6")]
    pub dataset_shards: u32,
    #[prost(bool, tag = "7")]
    pub auto_fetch_none: bool,
    #[prost(uint32, tag = "8")]
    pub min_member_age_secs: u32,
}

/// Durability policy kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum PolicyKind {
    Unspecified = 0,
    None = 1,
    Auto = 2,
    Replicate = 3,
    Erasure = 4,
}

/// A dataset's durability policy.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DurabilityPolicy {
    #[prost(enumeration = "PolicyKind", tag = "1")]
    pub kind: i32,
    #[prost(uint32, tag = "2")]
    pub replicas: u32,
    #[prost(uint32, tag = "3")]
    pub ec_k: u32,
    #[prost(uint32, tag = "4")]
    pub ec_m: u32,
    #[prost(uint32, tag = "5")]
    pub repair_at_missing: u32,
}

// ---------------------------------------------------------------------------------------------
// Membership

/// Admission certificate, signed by the owner or an admin.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct MemberCert {
    #[prost(bytes = "vec", tag = "1")]
    pub member: Vec<u8>,
    #[prost(bool, tag = "2")]
    pub admin: bool,
    #[prost(uint64, tag = "3")]
    pub issued_at: u64,
    #[prost(uint64, tag = "4")]
    pub expires_at: u64,
}

/// A member's join, signed by the member.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Join {
    #[prost(message, optional, tag = "1")]
    pub cert: Option<SignedEnvelope>,
    #[prost(message, optional, tag = "2")]
    pub admin_cert: Option<SignedEnvelope>,
    #[prost(bool, tag = "3")]
    pub storer: bool,
    #[prost(uint64, tag = "4")]
    pub incarnation: u64,
    #[prost(uint64, tag = "5")]
    pub issued_at: u64,
}

/// A member's departure, signed by the member.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Leave {
    #[prost(uint64, tag = "1")]
    pub issued_at: u64,
    #[prost(string, tag = "2")]
    pub reason: String,
}

/// A revocation, signed by the owner or an admin.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Revoke {
    #[prost(bytes = "vec", tag = "1")]
    pub member: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub issued_at: u64,
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// A new swarm policy, signed by the owner; the highest `seq` wins.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct PolicyUpdate {
    #[prost(uint64, tag = "1")]
    pub seq: u64,
    #[prost(message, optional, tag = "2")]
    pub policy: Option<SwarmPolicy>,
    #[prost(uint64, tag = "3")]
    pub issued_at: u64,
}

/// An invitation (text form `cairn-invite:` + base64url).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Invite {
    #[prost(message, optional, tag = "1")]
    pub genesis: Option<GenesisRecord>,
    #[prost(message, optional, tag = "2")]
    pub cert: Option<SignedEnvelope>,
    #[prost(message, optional, tag = "3")]
    pub admin_cert: Option<SignedEnvelope>,
    #[prost(string, repeated, tag = "4")]
    pub bootstrap: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// Liveness

/// Presence, capacity and holdings digest of a member.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Beacon {
    #[prost(uint64, tag = "1")]
    pub incarnation: u64,
    #[prost(uint64, tag = "2")]
    pub seq: u64,
    #[prost(uint64, tag = "3")]
    pub sent_at: u64,
    #[prost(bool, tag = "4")]
    pub storer: bool,
    #[prost(uint32, tag = "5")]
    pub free_log2: u32,
    #[prost(uint32, tag = "6")]
    pub slots_held: u32,
    #[prost(bytes = "vec", tag = "7")]
    pub holdings_digest: Vec<u8>,
    #[prost(uint32, tag = "8")]
    pub flags: u32,
}

/// A watcher's vote that `subject` is lost.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct LostVote {
    #[prost(bytes = "vec", tag = "1")]
    pub subject: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub subject_incarnation: u64,
    #[prost(uint64, tag = "3")]
    pub unreachable_since: u64,
    #[prost(uint64, tag = "4")]
    pub issued_at: u64,
}

// ---------------------------------------------------------------------------------------------
// Datasets and slots

/// A dataset entering the swarm, with its resolved policy.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DatasetAnnounce {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub content_cid: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub size: u64,
    #[prost(message, optional, tag = "4")]
    pub policy: Option<DurabilityPolicy>,
    #[prost(uint32, tag = "5")]
    pub slots: u32,
    #[prost(uint32, tag = "6")]
    pub shard: u32,
    #[prost(uint64, tag = "7")]
    pub retain_until: u64,
    #[prost(uint64, tag = "8")]
    pub announced_at: u64,
}

/// The end of a dataset's retention.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DatasetRetire {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub issued_at: u64,
    #[prost(string, tag = "3")]
    pub reason: String,
}

/// Why a slot is offered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum OfferReason {
    Unspecified = 0,
    Placement = 1,
    Repair = 2,
    Handoff = 3,
}

/// An offer of a slot to an assignee; kept inside the resulting claim.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SlotOffer {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub assignee: Vec<u8>,
    #[prost(enumeration = "OfferReason", tag = "5")]
    pub reason: i32,
    #[prost(bytes = "vec", tag = "6")]
    pub round_ref: Vec<u8>,
    #[prost(bytes = "vec", repeated, tag = "7")]
    pub sources: Vec<Vec<u8>>,
    #[prost(uint64, tag = "8")]
    pub expires_at: u64,
}

/// One claimed slot.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ClaimEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(message, optional, tag = "4")]
    pub authorization: Option<SignedEnvelope>,
}

/// A holder's claim of one or more slots.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SlotClaim {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<ClaimEntry>,
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
    #[prost(uint64, tag = "3")]
    pub issued_at: u64,
}

/// Why a slot is released.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ReleaseReason {
    Unspecified = 0,
    HandedOff = 1,
    SpareDropped = 2,
    DataLost = 3,
    Retired = 4,
    Leaving = 5,
}

/// One released slot.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ReleaseEntry {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(enumeration = "ReleaseReason", tag = "4")]
    pub reason: i32,
}

/// A holder's release of one or more slots.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SlotRelease {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<ReleaseEntry>,
    #[prost(uint64, tag = "2")]
    pub issued_at: u64,
}

// ---------------------------------------------------------------------------------------------
// Possession challenges

/// What a challenge samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ChallengeMode {
    Unspecified = 0,
    Cells = 1,
    ReplicaKeyed = 2,
    Blocks = 3,
}

/// A possession challenge, signed by the challenger.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Challenge {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(bytes = "vec", tag = "4")]
    pub holder: Vec<u8>,
    #[prost(uint32, tag = "5")]
    pub epoch: u32,
    #[prost(uint32, tag = "6")]
    pub samples: u32,
    #[prost(enumeration = "ChallengeMode", tag = "7")]
    pub mode: i32,
    #[prost(bool, tag = "8")]
    pub ad_hoc: bool,
    #[prost(uint64, tag = "9")]
    pub issued_at: u64,
}

/// One sampled cell with its paths.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct CellProof {
    #[prost(uint64, tag = "1")]
    pub cell_index: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub cell: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub block_path: Vec<u8>,
    #[prost(bytes = "vec", tag = "4")]
    pub row_path: Vec<u8>,
}

/// One sampled block (reserved mode 3).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct BlockProof {
    #[prost(uint64, tag = "1")]
    pub index: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub data: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    pub proof: Vec<u8>,
}

/// The prover's answer to a challenge.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ChallengeResponse {
    #[prost(bytes = "vec", tag = "1")]
    pub challenge_id: Vec<u8>,
    #[prost(oneof = "challenge_response::Answer", tags = "2, 3, 4, 5")]
    pub answer: Option<challenge_response::Answer>,
}

/// The `answer` oneof of [`ChallengeResponse`].
pub mod challenge_response {
    /// One of the answer forms.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
    pub enum Answer {
        #[prost(message, tag = "2")]
        Cells(super::CellProofs),
        #[prost(bytes = "vec", tag = "3")]
        KeyedDigests(Vec<u8>),
        #[prost(message, tag = "4")]
        Blocks(super::BlockProofs),
        #[prost(message, tag = "5")]
        DontHave(super::DontHave),
    }
}

/// Cell proofs in sample order.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct CellProofs {
    #[prost(message, repeated, tag = "1")]
    pub proofs: Vec<CellProof>,
}

/// Block proofs (reserved mode 3).
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct BlockProofs {
    #[prost(message, repeated, tag = "1")]
    pub proofs: Vec<BlockProof>,
}

/// The prover no longer has the data.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct DontHave {
    #[prost(string, tag = "1")]
    pub reason: String,
}

/// Evidence of a failed challenge.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ChallengeFailure {
    #[prost(message, optional, tag = "1")]
    pub challenge: Option<SignedEnvelope>,
    #[prost(message, optional, tag = "2")]
    pub response: Option<SignedEnvelope>,
}

// ---------------------------------------------------------------------------------------------
// Repair

/// Why a slot is missing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MissingReason {
    Unspecified = 0,
    HolderLost = 1,
    ChallengeFailed = 2,
    Released = 3,
    HolderGone = 4,
    Unclaimed = 5,
}

/// A missing slot named by a repair request.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct MissingSlot {
    #[prost(uint32, tag = "1")]
    pub slot: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub holder: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(enumeration = "MissingReason", tag = "4")]
    pub reason: i32,
    #[prost(bytes = "vec", repeated, tag = "5")]
    pub evidence: Vec<Vec<u8>>,
}

/// A slot assigned to a new holder by a repair round.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Assignment {
    #[prost(uint32, tag = "1")]
    pub slot: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub assignee: Vec<u8>,
}

/// A repair round, signed by its leader.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RepairRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub round: u32,
    #[prost(uint32, tag = "3")]
    pub amend: u32,
    #[prost(message, repeated, tag = "4")]
    pub missing: Vec<MissingSlot>,
    #[prost(message, repeated, tag = "5")]
    pub assignments: Vec<Assignment>,
    #[prost(bytes = "vec", tag = "6")]
    pub reconstructor: Vec<u8>,
    #[prost(uint64, tag = "7")]
    pub deadline: u64,
    #[prost(bool, tag = "8")]
    pub manual: bool,
    #[prost(uint64, tag = "9")]
    pub issued_at: u64,
}

/// Why an offer or assignment is declined.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum DeclineReason {
    None = 0,
    Busy = 1,
    NoSpace = 2,
    NotInterested = 3,
    Exiting = 4,
    Invalid = 5,
}

/// An assignee's answer to a repair assignment.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RepairClaim {
    #[prost(bytes = "vec", tag = "1")]
    pub request_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub round: u32,
    #[prost(uint32, tag = "4")]
    pub slot: u32,
    #[prost(bool, tag = "5")]
    pub accept: bool,
    #[prost(enumeration = "DeclineReason", tag = "6")]
    pub reason: i32,
    #[prost(uint64, tag = "7")]
    pub issued_at: u64,
}

// ---------------------------------------------------------------------------------------------
// Request-response "/cairn/durability/1.0.0"

/// A request frame.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Request {
    #[prost(oneof = "request::Body", tags = "1, 2, 3, 4, 5, 6, 7")]
    pub body: Option<request::Body>,
}

/// The `body` oneof of [`Request`].
pub mod request {
    /// One request body.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        Probe(super::Probe),
        #[prost(message, tag = "2")]
        IndirectProbe(super::IndirectProbe),
        #[prost(message, tag = "3")]
        Challenge(super::SignedEnvelope),
        #[prost(message, tag = "4")]
        Offer(super::SignedEnvelope),
        #[prost(message, tag = "5")]
        Sync(super::SyncRequest),
        #[prost(message, tag = "6")]
        Health(super::HealthQuery),
        #[prost(message, tag = "7")]
        Holdings(super::HoldingsQuery),
    }
}

/// A response frame.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Response {
    #[prost(oneof = "response::Body", tags = "1, 2, 3, 4, 5, 6, 7, 15")]
    pub body: Option<response::Body>,
}

/// The `body` oneof of [`Response`].
pub mod response {
    /// One response body.
    #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
    pub enum Body {
        #[prost(message, tag = "1")]
        ProbeAck(super::ProbeAck),
        #[prost(message, tag = "2")]
        IndirectProbeAck(super::IndirectProbeAck),
        #[prost(message, tag = "3")]
        ChallengeResponse(super::SignedEnvelope),
        #[prost(message, tag = "4")]
        OfferReply(super::OfferReply),
        #[prost(message, tag = "5")]
        Sync(super::SyncResponse),
        #[prost(message, tag = "6")]
        Health(super::HealthView),
        #[prost(message, tag = "7")]
        Holdings(super::Holdings),
        #[prost(message, tag = "15")]
        Error(super::RpcError),
    }
}

/// A watcher's liveness probe.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Probe {
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    #[prost(uint64, tag = "2")]
    pub nonce: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub expected_digest: Vec<u8>,
    #[prost(uint64, tag = "4")]
    pub sender_incarnation: u64,
    #[prost(bytes = "vec", tag = "5")]
    pub shard_mask: Vec<u8>,
}

/// The answer to a [`Probe`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct ProbeAck {
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
    #[prost(uint64, tag = "2")]
    pub incarnation: u64,
    #[prost(bytes = "vec", tag = "3")]
    pub digest: Vec<u8>,
    #[prost(uint32, tag = "4")]
    pub slots_held: u32,
}

/// SWIM ping-req.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct IndirectProbe {
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub target: Vec<u8>,
    #[prost(uint64, tag = "3")]
    pub nonce: u64,
}

/// The answer to an [`IndirectProbe`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct IndirectProbeAck {
    #[prost(uint64, tag = "1")]
    pub nonce: u64,
    #[prost(bool, tag = "2")]
    pub reachable: bool,
    #[prost(uint64, tag = "3")]
    pub target_incarnation: u64,
}

/// The assignee's answer to a [`SlotOffer`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct OfferReply {
    #[prost(bool, tag = "1")]
    pub accept: bool,
    #[prost(enumeration = "DeclineReason", tag = "2")]
    pub reason: i32,
}

/// Which fact scope a sync request is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SyncScope {
    Unspecified = 0,
    Ctl = 1,
    Shard = 2,
}

/// An anti-entropy request.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SyncRequest {
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    #[prost(enumeration = "SyncScope", tag = "2")]
    pub scope: i32,
    #[prost(uint32, tag = "3")]
    pub shard: u32,
    #[prost(oneof = "sync_request::Step", tags = "4, 5")]
    pub step: Option<sync_request::Step>,
    #[prost(bytes = "vec", tag = "6")]
    pub page_token: Vec<u8>,
}

/// The `step` oneof of [`SyncRequest`].
pub mod sync_request {
    /// Step 1 (root) or step 3 (ids held).
    #[derive(Clone, PartialEq, Eq, Hash, prost::Oneof)]
    pub enum Step {
        #[prost(bytes = "vec", tag = "4")]
        Root(Vec<u8>),
        #[prost(message, tag = "5")]
        Have(super::BucketHave),
    }
}

/// The ids a sync requester holds in the buckets it asks about.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct BucketHave {
    #[prost(uint32, repeated, tag = "1")]
    pub buckets: Vec<u32>,
    #[prost(bytes = "vec", tag = "2")]
    pub ids: Vec<u8>,
}

/// An anti-entropy answer.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SyncResponse {
    #[prost(bool, tag = "1")]
    pub equal: bool,
    #[prost(bytes = "vec", tag = "2")]
    pub bucket_digests: Vec<u8>,
    #[prost(message, repeated, tag = "3")]
    pub facts: Vec<SignedEnvelope>,
    #[prost(bytes = "vec", tag = "4")]
    pub next_page_token: Vec<u8>,
}

/// A request for a responder's view of one dataset.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct HealthQuery {
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub dataset_cid: Vec<u8>,
}

/// A slot's state in a [`HealthView`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SlotState {
    Unspecified = 0,
    Live = 1,
    Suspect = 2,
    Missing = 3,
    Unclaimed = 4,
    Repairing = 5,
}

/// One slot as the responder sees it.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SlotObservation {
    #[prost(uint32, tag = "1")]
    pub slot: u32,
    #[prost(bytes = "vec", tag = "2")]
    pub holder: Vec<u8>,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
    #[prost(enumeration = "SlotState", tag = "4")]
    pub state: i32,
    #[prost(uint64, tag = "5")]
    pub last_seen: u64,
    #[prost(uint32, tag = "6")]
    pub last_verified_epoch: u32,
}

/// A responder's view of one dataset.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct HealthView {
    #[prost(message, repeated, tag = "1")]
    pub slots: Vec<SlotObservation>,
    #[prost(uint64, tag = "2")]
    pub computed_at: u64,
}

/// A request for the target's held slots.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct HoldingsQuery {
    #[prost(bytes = "vec", tag = "1")]
    pub swarm_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub shard_mask: Vec<u8>,
}

/// A slot reference.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct SlotRef {
    #[prost(bytes = "vec", tag = "1")]
    pub dataset_cid: Vec<u8>,
    #[prost(uint32, tag = "2")]
    pub slot: u32,
    #[prost(uint32, tag = "3")]
    pub generation: u32,
}

/// The answer to a [`HoldingsQuery`].
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct Holdings {
    #[prost(uint64, tag = "1")]
    pub incarnation: u64,
    #[prost(message, repeated, tag = "2")]
    pub slots: Vec<SlotRef>,
}

/// Request-response error codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum ErrorCode {
    Unspecified = 0,
    Busy = 1,
    RateLimited = 2,
    NotMember = 3,
    NotHolder = 4,
    Malformed = 5,
    UnknownDataset = 6,
}

/// A request-response error.
#[derive(Clone, PartialEq, Eq, Hash, prost::Message)]
pub struct RpcError {
    #[prost(enumeration = "ErrorCode", tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}
