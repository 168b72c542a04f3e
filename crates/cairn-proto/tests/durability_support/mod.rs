//! Shared fixtures for the durability tests: keys, a genesis, signed messages, and a helper
//! that feeds gossip to a `State` and returns the single `Validate` outcome.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use cairn_core::durability::messages as pb;
use cairn_core::durability::policy::{Policy, default_swarm_policy};
use cairn_core::durability::{
    Envelope, Keypair, Kind, PeerId, SwarmId, sign_genesis, verify_genesis,
};
use cairn_core::{Cid, Codec};
use cairn_proto::durability::swarm::{Input, Output, State};
use cairn_proto::durability::{Now, Outcome, Params, Topic};
use prost::Message;

pub const T0: u64 = 1_800_000_000;

pub fn key(i: u8) -> Keypair {
    Keypair::from_seed(&[i; 32])
}

pub fn now(unix: u64) -> Now {
    Now {
        mono: Duration::from_secs(unix - T0 + 1),
        unix,
    }
}

pub fn cid(i: u8) -> Cid {
    Cid::new(Codec::Manifest, [i; 32])
}

/// The owner is key(1). Invite swarm, 1 shard, min member age 0 unless `min_age`.
pub fn genesis_with(open: bool, min_age: u32, announcers_admins: bool) -> pb::GenesisRecord {
    let mut policy = default_swarm_policy(open, 1);
    policy.min_member_age_secs = min_age;
    if announcers_admins {
        policy.announcers = pb::AnnouncerRule::AdminsOnly as i32;
    }
    let g = pb::Genesis {
        version: 1,
        name: "test".into(),
        owner: key(1).peer_id().as_bytes().to_vec(),
        created_at: T0,
        nonce: vec![7; 16],
        policy: Some(policy),
    };
    sign_genesis(&key(1), &g)
}

pub fn genesis() -> pb::GenesisRecord {
    genesis_with(false, 0, false)
}

pub fn swarm_id(g: &pb::GenesisRecord) -> SwarmId {
    verify_genesis(g).unwrap().swarm_id
}

pub fn params() -> Params {
    Params::default()
}

/// A state for node `me` (a storer).
pub fn node(g: &pb::GenesisRecord, me: u8) -> State {
    State::new(g, key(me), true, 1, params(), u64::from(me), now(T0))
        .unwrap()
        .0
}

pub fn sign<M: Message>(g: &pb::GenesisRecord, by: u8, kind: Kind, msg: &M) -> Envelope {
    Envelope::sign_message(&key(by), swarm_id(g), kind, msg)
}

pub fn cert(
    g: &pb::GenesisRecord,
    issuer: u8,
    member: u8,
    admin: bool,
    issued_at: u64,
    expires_at: u64,
) -> Envelope {
    let c = pb::MemberCert {
        member: key(member).peer_id().as_bytes().to_vec(),
        admin,
        issued_at,
        expires_at,
    };
    sign(g, issuer, Kind::MemberCert, &c)
}

/// A Join of `member` with an owner-signed cert.
pub fn join(g: &pb::GenesisRecord, member: u8, at: u64) -> Envelope {
    join_with(
        g,
        member,
        at,
        Some(cert(g, 1, member, false, T0, 0)),
        None,
        true,
    )
}

pub fn join_with(
    g: &pb::GenesisRecord,
    member: u8,
    at: u64,
    cert: Option<Envelope>,
    admin_cert: Option<Envelope>,
    storer: bool,
) -> Envelope {
    let j = pb::Join {
        cert: cert.map(|c| c.to_proto()),
        admin_cert: admin_cert.map(|c| c.to_proto()),
        storer,
        incarnation: 1,
        issued_at: at,
    };
    sign(g, member, Kind::Join, &j)
}

pub fn announce_msg(d: Cid, policy: Policy, at: u64) -> pb::DatasetAnnounce {
    pb::DatasetAnnounce {
        dataset_cid: d.to_bytes().to_vec(),
        content_cid: d.to_bytes().to_vec(),
        size: 1000,
        policy: Some(policy.to_proto()),
        slots: policy.slots(),
        shard: 0,
        retain_until: 0,
        announced_at: at,
    }
}

pub fn announce(g: &pb::GenesisRecord, by: u8, d: Cid, replicas: u32, at: u64) -> Envelope {
    sign(
        g,
        by,
        Kind::DatasetAnnounce,
        &announce_msg(d, Policy::Replicate { replicas }, at),
    )
}

pub fn offer_msg(
    d: Cid,
    slot: u32,
    generation: u32,
    to: u8,
    reason: pb::OfferReason,
    expires_at: u64,
) -> pb::SlotOffer {
    pb::SlotOffer {
        dataset_cid: d.to_bytes().to_vec(),
        slot,
        generation,
        assignee: key(to).peer_id().as_bytes().to_vec(),
        reason: reason as i32,
        round_ref: vec![],
        sources: vec![],
        expires_at,
    }
}

pub fn offer(
    g: &pb::GenesisRecord,
    by: u8,
    d: Cid,
    slot: u32,
    generation: u32,
    to: u8,
    reason: pb::OfferReason,
) -> Envelope {
    sign(
        g,
        by,
        Kind::SlotOffer,
        &offer_msg(d, slot, generation, to, reason, T0 + 86_400 * 400),
    )
}

pub fn claim(
    g: &pb::GenesisRecord,
    by: u8,
    entries: Vec<(Cid, u32, u32, Option<Envelope>)>,
    at: u64,
) -> Envelope {
    let c = pb::SlotClaim {
        entries: entries
            .into_iter()
            .map(|(d, slot, generation, auth)| pb::ClaimEntry {
                dataset_cid: d.to_bytes().to_vec(),
                slot,
                generation,
                authorization: auth.map(|a| a.to_proto()),
            })
            .collect(),
        incarnation: 1,
        issued_at: at,
    };
    sign(g, by, Kind::SlotClaim, &c)
}

/// A placement claim of `slot` of `d` by `by`, offered by `announcer`.
pub fn placement_claim(
    g: &pb::GenesisRecord,
    announcer: u8,
    by: u8,
    d: Cid,
    slot: u32,
    at: u64,
) -> Envelope {
    let o = offer(g, announcer, d, slot, 0, by, pb::OfferReason::Placement);
    claim(g, by, vec![(d, slot, 0, Some(o))], at)
}

pub fn topic_of(env: &Envelope) -> Topic {
    match env.kind() {
        Kind::MemberCert
        | Kind::Join
        | Kind::Leave
        | Kind::Revoke
        | Kind::PolicyUpdate
        | Kind::Beacon
        | Kind::LostVote => Topic::Ctl,
        _ => Topic::Shard(0),
    }
}

/// Feeds gossip bytes; returns the one Validate outcome.
pub fn gossip_bytes(
    s: &mut State,
    at: u64,
    topic: Topic,
    source: Option<PeerId>,
    data: Vec<u8>,
) -> Outcome {
    let out = s.handle(
        now(at),
        Input::Gossip {
            topic,
            source,
            msg_id: vec![1, 2, 3],
            data,
        },
    );
    let v: Vec<Outcome> = out
        .iter()
        .filter_map(|o| match o {
            Output::Validate { msg_id, outcome } => {
                assert_eq!(msg_id, &vec![1, 2, 3]);
                Some(*outcome)
            }
            _ => None,
        })
        .collect();
    assert_eq!(
        v.len(),
        1,
        "exactly one Validate per gossip message: {out:?}"
    );
    v[0]
}

/// Feeds an envelope on its natural topic, from a member source (key 1, the owner).
pub fn gossip(s: &mut State, at: u64, env: &Envelope) -> Outcome {
    gossip_bytes(
        s,
        at,
        topic_of(env),
        Some(key(1).peer_id()),
        env.as_bytes().to_vec(),
    )
}

/// A state for node `me` in which members `members` joined (via gossip at T0).
pub fn node_with_members(g: &pb::GenesisRecord, me: u8, members: &[u8]) -> State {
    let mut s = node(g, me);
    for &m in members {
        let o = gossip(&mut s, T0, &join(g, m, T0));
        assert_eq!(o, Outcome::ACCEPT, "join of {m}");
    }
    s
}
