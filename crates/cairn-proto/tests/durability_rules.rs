//! One test per §18 row (and the membership / claim rules of §5, §8) that applies to slice S1:
//! every hostile or malformed gossip message gets exactly the verdict and penalty of the table.

mod durability_support;

use cairn_core::durability::messages as pb;
use cairn_core::durability::policy::Policy;
use cairn_core::durability::{Envelope, Kind, MAX_GOSSIP_BYTES, SwarmId};
use cairn_proto::durability::membership::MemberState;
use cairn_proto::durability::{Outcome, Penalty, Topic, Verdict};
use durability_support::*;
use prost::Message;

fn assert_outcome(o: Outcome, verdict: Verdict, penalty: Penalty) {
    assert_eq!((o.verdict, o.penalty), (verdict, penalty), "{o:?}");
}

// Row 1: undecodable, non-canonical, unknown kind, oversize → Reject, P4.

#[test]
fn undecodable_is_reject_p4() {
    let g = genesis();
    let mut s = node(&g, 9);
    let o = gossip_bytes(&mut s, T0, Topic::Ctl, None, vec![0xff, 0xff, 0xff]);
    assert_outcome(o, Verdict::Reject, Penalty::InvalidMessage);
}

#[test]
fn undecodable_payload_is_reject_p4() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = Envelope::sign(&key(2), swarm_id(&g), Kind::Leave, vec![0x0a, 0x05]); // truncated
    assert_outcome(
        gossip(&mut s, T0, &env),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
}

#[test]
fn non_canonical_is_reject_p4() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = sign(
        &g,
        2,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    let mut bytes = env.as_bytes().to_vec();
    bytes.extend_from_slice(&[0x38, 0x01]); // unknown field 7
    let o = gossip_bytes(&mut s, T0, Topic::Ctl, Some(key(1).peer_id()), bytes);
    assert_outcome(o, Verdict::Reject, Penalty::InvalidMessage);
}

#[test]
fn unknown_kind_is_reject_p4() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = sign(
        &g,
        2,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    let mut p = env.to_proto();
    p.kind = 77;
    let o = gossip_bytes(&mut s, T0, Topic::Ctl, None, p.encode_to_vec());
    assert_outcome(o, Verdict::Reject, Penalty::InvalidMessage);
}

#[test]
fn oversize_is_reject_p4() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = sign(
        &g,
        2,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: "x".repeat(MAX_GOSSIP_BYTES),
        },
    );
    let o = gossip(&mut s, T0, &env);
    assert_outcome(o, Verdict::Reject, Penalty::InvalidMessage);
}

// Row 2: bad signature, signer ≠ the member the payload names → Reject, P4.

#[test]
fn forged_signature_is_reject_p4() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = sign(
        &g,
        2,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    let mut p = env.to_proto();
    p.signature[10] ^= 0x40;
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, p.encode_to_vec()),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    // A valid signature by another key, presented as member 2's.
    let mut p = env.to_proto();
    p.signer = key(3).public().to_protobuf().to_vec();
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, p.encode_to_vec()),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    assert_eq!(
        s.view().member(&key(2).peer_id()).unwrap().state,
        MemberState::Active
    );
}

#[test]
fn join_cert_naming_another_member_is_reject_p4() {
    let g = genesis();
    let mut s = node(&g, 9);
    let env = join_with(&g, 2, T0, Some(cert(&g, 1, 3, false, T0, 0)), None, true);
    assert_outcome(
        gossip(&mut s, T0, &env),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    assert!(!s.view().is_active(&key(2).peer_id()));
}

#[test]
fn nested_forged_cert_is_reject_p4() {
    let g = genesis();
    let mut s = node(&g, 9);
    let c = cert(&g, 1, 2, false, T0, 0);
    let mut p = c.to_proto();
    p.signature[0] ^= 1;
    let j = pb::Join {
        cert: Some(p),
        storer: true,
        incarnation: 1,
        issued_at: T0,
        ..Default::default()
    };
    let env = sign(&g, 2, Kind::Join, &j);
    assert_outcome(
        gossip(&mut s, T0, &env),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
}

// Row 3: swarm_id not ours, topic/kind mismatch → Reject, no penalty.

#[test]
fn foreign_swarm_is_reject_without_penalty() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let env = Envelope::sign_message(
        &key(2),
        SwarmId([5; 32]),
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    assert_outcome(gossip(&mut s, T0, &env), Verdict::Reject, Penalty::None);
}

#[test]
fn topic_kind_mismatch_is_reject_without_penalty() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let b = pb::Beacon {
        incarnation: 1,
        seq: 1,
        sent_at: T0,
        storer: true,
        holdings_digest: vec![0; 16],
        ..Default::default()
    };
    let env = sign(&g, 2, Kind::Beacon, &b);
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Shard(0),
        Some(key(1).peer_id()),
        env.as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::None);
    // An offer never travels alone.
    let offer = offer(&g, 1, cid(1), 0, 0, 2, pb::OfferReason::Placement);
    let o = gossip_bytes(&mut s, T0, Topic::Shard(0), None, offer.as_bytes().to_vec());
    assert_outcome(o, Verdict::Reject, Penalty::None);
    // A join on a shard topic.
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Shard(0),
        None,
        join(&g, 3, T0).as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::None);
}

// Row 4: signer not an Active member (or not owner/admin where required) → Reject, −1000 for a
// non-member source.

#[test]
fn non_member_publisher_is_reject_with_app_penalty() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let leave = sign(
        &g,
        5,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    // Propagated by a non-member (or a non-Ed25519 peer): −1000.
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Ctl,
        Some(key(6).peer_id()),
        leave.as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::NonMemberSource);
    let o = gossip_bytes(&mut s, T0, Topic::Ctl, None, leave.as_bytes().to_vec());
    assert_outcome(o, Verdict::Reject, Penalty::NonMemberSource);
    // Relayed by a member: Reject only.
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Ctl,
        Some(key(2).peer_id()),
        leave.as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::None);
    // A non-member's announce, beacon and claim.
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Shard(0),
        None,
        announce(&g, 5, cid(1), 3, T0).as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::NonMemberSource);
    let b = pb::Beacon {
        incarnation: 1,
        seq: 1,
        sent_at: T0,
        storer: true,
        holdings_digest: vec![0; 16],
        ..Default::default()
    };
    let o = gossip_bytes(
        &mut s,
        T0,
        Topic::Ctl,
        None,
        sign(&g, 5, Kind::Beacon, &b).as_bytes().to_vec(),
    );
    assert_outcome(o, Verdict::Reject, Penalty::NonMemberSource);
}

#[test]
fn join_without_cert_in_invite_swarm_is_reject() {
    let g = genesis();
    let mut s = node(&g, 9);
    let env = join_with(&g, 2, T0, None, None, true);
    let o = gossip_bytes(&mut s, T0, Topic::Ctl, None, env.as_bytes().to_vec());
    assert_outcome(o, Verdict::Reject, Penalty::NonMemberSource);
    // Open swarm: the self-signed Join is enough.
    let g = genesis_with(true, 0, false);
    let mut s = node(&g, 9);
    assert_eq!(
        gossip(&mut s, T0, &join_with(&g, 2, T0, None, None, true)),
        Outcome::ACCEPT
    );
}

#[test]
fn invalid_cert_is_reject() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[3]);
    // Signed by a plain member (3), not an admin.
    let env = join_with(&g, 2, T0, Some(cert(&g, 3, 2, false, T0, 0)), None, true);
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, env.as_bytes().to_vec()),
        Verdict::Reject,
        Penalty::NonMemberSource,
    );
    // Expired before the join.
    let env = join_with(
        &g,
        2,
        T0 + 100,
        Some(cert(&g, 1, 2, false, T0 - 100, T0 + 50)),
        None,
        true,
    );
    assert_outcome(
        gossip_bytes(&mut s, T0 + 100, Topic::Ctl, None, env.as_bytes().to_vec()),
        Verdict::Reject,
        Penalty::NonMemberSource,
    );
    // Not yet valid.
    let env = join_with(
        &g,
        2,
        T0,
        Some(cert(&g, 1, 2, false, T0 + 10, 0)),
        None,
        true,
    );
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, env.as_bytes().to_vec()),
        Verdict::Reject,
        Penalty::NonMemberSource,
    );
    // An admin cert issued by a non-owner.
    let env = join_with(&g, 2, T0, Some(cert(&g, 3, 2, true, T0, 0)), None, true);
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, env.as_bytes().to_vec()),
        Verdict::Reject,
        Penalty::NonMemberSource,
    );
    assert!(!s.view().is_active(&key(2).peer_id()));
}

#[test]
fn admin_chain_owner_admin_member() {
    let g = genesis();
    let mut s = node(&g, 9);
    let admin_cert = cert(&g, 1, 3, true, T0, 0);
    // Member 2 admitted by admin 3, carrying 3's admin cert.
    let env = join_with(
        &g,
        2,
        T0,
        Some(cert(&g, 3, 2, false, T0, 0)),
        Some(admin_cert.clone()),
        true,
    );
    assert_eq!(gossip(&mut s, T0, &env), Outcome::ACCEPT);
    assert!(s.view().is_admin_at(&key(3).peer_id(), T0));
    // An admin cert that had expired when it issued the member cert.
    let expired_admin = cert(&g, 1, 4, true, T0 - 1000, T0 - 10);
    let env = join_with(
        &g,
        5,
        T0,
        Some(cert(&g, 4, 5, false, T0, 0)),
        Some(expired_admin),
        true,
    );
    assert_outcome(
        gossip_bytes(&mut s, T0, Topic::Ctl, None, env.as_bytes().to_vec()),
        Verdict::Reject,
        Penalty::NonMemberSource,
    );
    // The admin itself joins with its admin cert.
    assert_eq!(
        gossip(
            &mut s,
            T0,
            &join_with(&g, 3, T0, Some(admin_cert), None, true)
        ),
        Outcome::ACCEPT
    );
    // An admin revokes a member; a member cannot revoke.
    let rv = |by: u8, target: u8| {
        sign(
            &g,
            by,
            Kind::Revoke,
            &pb::Revoke {
                member: key(target).peer_id().as_bytes().to_vec(),
                issued_at: T0,
                reason: String::new(),
            },
        )
    };
    assert_outcome(
        gossip(&mut s, T0, &rv(2, 3)),
        Verdict::Reject,
        Penalty::None,
    ); // source is member 1
    assert_eq!(gossip(&mut s, T0, &rv(3, 2)), Outcome::ACCEPT);
    assert_eq!(
        s.view().member(&key(2).peer_id()).unwrap().state,
        MemberState::Revoked
    );
    // Only the owner may revoke an admin, and nobody the owner.
    let g2 = genesis();
    let mut s2 = node(&g2, 9);
    gossip(
        &mut s2,
        T0,
        &join_with(&g2, 3, T0, Some(cert(&g2, 1, 3, true, T0, 0)), None, true),
    );
    gossip(
        &mut s2,
        T0,
        &join_with(&g2, 4, T0, Some(cert(&g2, 1, 4, true, T0, 0)), None, true),
    );
    assert_outcome(
        gossip(&mut s2, T0, &rv(3, 4)),
        Verdict::Reject,
        Penalty::None,
    );
    assert_outcome(
        gossip(&mut s2, T0, &rv(3, 1)),
        Verdict::Reject,
        Penalty::None,
    );
    assert_eq!(gossip(&mut s2, T0, &rv(1, 4)), Outcome::ACCEPT);
}

#[test]
fn revoked_and_departed_are_terminal() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3]);
    let leave = sign(
        &g,
        2,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    assert_eq!(gossip(&mut s, T0, &leave), Outcome::ACCEPT);
    assert_eq!(
        s.view().member(&key(2).peer_id()).unwrap().state,
        MemberState::Departed
    );
    // A new Join of the departed PeerId is refused.
    assert_outcome(
        gossip(&mut s, T0, &join(&g, 2, T0 + 1)),
        Verdict::Reject,
        Penalty::None,
    );
    // Revoke upgrades Departed to Revoked; a Leave after a Revoke is refused.
    let rv = sign(
        &g,
        1,
        Kind::Revoke,
        &pb::Revoke {
            member: key(3).peer_id().as_bytes().to_vec(),
            issued_at: T0,
            reason: String::new(),
        },
    );
    assert_eq!(gossip(&mut s, T0, &rv), Outcome::ACCEPT);
    let leave3 = sign(
        &g,
        3,
        Kind::Leave,
        &pb::Leave {
            issued_at: T0,
            reason: String::new(),
        },
    );
    assert_outcome(gossip(&mut s, T0, &leave3), Verdict::Reject, Penalty::None);
}

#[test]
fn policy_update_rules() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let mut p = cairn_core::durability::policy::default_swarm_policy(false, 1);
    p.max_dataset_bytes = 1 << 20;
    let upd = |by: u8, seq: u64, policy: pb::SwarmPolicy| {
        sign(
            &g,
            by,
            Kind::PolicyUpdate,
            &pb::PolicyUpdate {
                seq,
                policy: Some(policy),
                issued_at: T0,
            },
        )
    };
    assert_outcome(
        gossip(&mut s, T0, &upd(2, 1, p.clone())),
        Verdict::Reject,
        Penalty::None,
    );
    let mut shards = p.clone();
    shards.dataset_shards = 16;
    assert_outcome(
        gossip(&mut s, T0, &upd(1, 1, shards)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    assert_eq!(gossip(&mut s, T0, &upd(1, 2, p.clone())), Outcome::ACCEPT);
    assert_eq!(s.view().policy().max_dataset_bytes, 1 << 20);
    // A lower seq arriving later changes nothing.
    let mut older = p;
    older.max_dataset_bytes = 5;
    assert_eq!(gossip(&mut s, T0, &upd(1, 1, older)), Outcome::ACCEPT);
    assert_eq!(s.view().policy().max_dataset_bytes, 1 << 20);
    assert_eq!(s.view().policy_seq(), 2);
}

// Row 5: duplicate, timestamp outside ±1 h, stale beacon → Ignore.

#[test]
fn replay_is_ignore() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let a = announce(&g, 2, cid(1), 3, T0);
    assert_eq!(gossip(&mut s, T0, &a), Outcome::ACCEPT);
    assert_outcome(gossip(&mut s, T0, &a), Verdict::Ignore, Penalty::None);
    // A replayed Join too (it is a stored fact).
    assert_outcome(
        gossip(&mut s, T0, &join(&g, 2, T0)),
        Verdict::Ignore,
        Penalty::None,
    );
}

#[test]
fn gossip_timestamp_window_is_ignore() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let late = announce(&g, 2, cid(1), 3, T0 - 3601);
    assert_outcome(gossip(&mut s, T0, &late), Verdict::Ignore, Penalty::None);
    let early = announce(&g, 2, cid(2), 3, T0 + 3601);
    assert_outcome(gossip(&mut s, T0, &early), Verdict::Ignore, Penalty::None);
    assert_eq!(
        gossip(&mut s, T0, &announce(&g, 2, cid(3), 3, T0 + 3600)),
        Outcome::ACCEPT
    );
    let old_join = join(&g, 3, T0 - 7200);
    assert_outcome(
        gossip(&mut s, T0, &old_join),
        Verdict::Ignore,
        Penalty::None,
    );
}

#[test]
fn stale_beacon_is_ignore_and_fast_beacon_costs_reputation() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let b = |inc: u64, seq: u64, at: u64| {
        sign(
            &g,
            2,
            Kind::Beacon,
            &pb::Beacon {
                incarnation: inc,
                seq,
                sent_at: at,
                storer: true,
                free_log2: 30,
                holdings_digest: cairn_core::cid::sha256(b"")[..16].to_vec(),
                ..Default::default()
            },
        )
    };
    assert_eq!(gossip(&mut s, T0, &b(2, 5, T0)), Outcome::ACCEPT);
    assert_outcome(
        gossip(&mut s, T0 + 200, &b(2, 5, T0 + 200)),
        Verdict::Ignore,
        Penalty::None,
    ); // same seq
    assert_outcome(
        gossip(&mut s, T0 + 200, &b(2, 4, T0 + 200)),
        Verdict::Ignore,
        Penalty::None,
    ); // older seq
    assert_outcome(
        gossip(&mut s, T0 + 200, &b(1, 9, T0 + 200)),
        Verdict::Ignore,
        Penalty::None,
    ); // older incarnation
    // H(N) = 5 min, so H/4 = 75 s: a beacon 10 s later is rate limited.
    assert_outcome(
        gossip(&mut s, T0 + 10, &b(2, 6, T0 + 10)),
        Verdict::Ignore,
        Penalty::Reputation(key(2).peer_id()),
    );
    assert_eq!(gossip(&mut s, T0 + 80, &b(2, 7, T0 + 80)), Outcome::ACCEPT);
    // A restart (higher incarnation) is never rate limited.
    assert_eq!(gossip(&mut s, T0 + 81, &b(3, 1, T0 + 81)), Outcome::ACCEPT);
    // Bad digest length is malformed.
    let bad = sign(
        &g,
        2,
        Kind::Beacon,
        &pb::Beacon {
            incarnation: 3,
            seq: 9,
            sent_at: T0 + 500,
            holdings_digest: vec![0; 3],
            ..Default::default()
        },
    );
    assert_outcome(
        gossip(&mut s, T0 + 500, &bad),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
}

// Row 6: member over a rate limit → Ignore, reputation −1.

#[test]
fn announce_rate_limit_is_ignore_with_reputation() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    for i in 0..20u8 {
        assert_eq!(
            gossip(&mut s, T0, &announce(&g, 2, cid(i), 3, T0)),
            Outcome::ACCEPT,
            "{i}"
        );
    }
    let o = gossip(&mut s, T0 + 10, &announce(&g, 2, cid(100), 3, T0 + 10));
    assert_outcome(o, Verdict::Ignore, Penalty::Reputation(key(2).peer_id()));
    // An hour later the window has moved on.
    assert_eq!(
        gossip(&mut s, T0 + 3600, &announce(&g, 2, cid(101), 3, T0 + 3600)),
        Outcome::ACCEPT
    );
}

// Announce validity (invalid values → Reject with P4; announcer rule → Reject, row 4).

#[test]
fn announce_rules() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let bad = |m: pb::DatasetAnnounce| sign(&g, 2, Kind::DatasetAnnounce, &m);
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.slots = 4;
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.policy = Some(pb::DurabilityPolicy {
        kind: pb::PolicyKind::Auto as i32,
        ..Default::default()
    });
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.size = 11 << 30;
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.shard = 1;
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.dataset_cid = cairn_core::Cid::new(cairn_core::Codec::Block, [1; 32])
        .to_bytes()
        .to_vec();
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    let mut m = announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0);
    m.content_cid = cid(2).to_bytes().to_vec();
    assert_outcome(
        gossip(&mut s, T0, &bad(m)),
        Verdict::Reject,
        Penalty::InvalidMessage,
    );
    // Admins-only swarm: a plain member may not announce.
    let g = genesis_with(false, 0, true);
    let mut s = node_with_members(&g, 9, &[2]);
    let a = sign(
        &g,
        2,
        Kind::DatasetAnnounce,
        &announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0),
    );
    assert_outcome(gossip(&mut s, T0, &a), Verdict::Reject, Penalty::None);
    let a = sign(
        &g,
        1,
        Kind::DatasetAnnounce,
        &announce_msg(cid(1), Policy::Replicate { replicas: 3 }, T0),
    );
    assert_eq!(gossip(&mut s, T0, &a), Outcome::ACCEPT);
}

// Row 7: claim without valid authorization; claim for an unknown or retired dataset → Reject,
// the claimant loses candidacy on repeat.

#[test]
fn claim_authorization_rules() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3, 4]);
    let d = cid(1);
    let offence = Penalty::ClaimOffence(key(3).peer_id());
    // Unknown dataset.
    assert_outcome(
        gossip(&mut s, T0, &placement_claim(&g, 2, 3, d, 0, T0)),
        Verdict::Reject,
        offence,
    );
    assert_eq!(
        gossip(&mut s, T0, &announce(&g, 2, d, 3, T0)),
        Outcome::ACCEPT
    );
    // No authorization.
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 0, None)], T0)),
        Verdict::Reject,
        offence,
    );
    // Offer signed by someone other than the announcer.
    assert_outcome(
        gossip(&mut s, T0, &placement_claim(&g, 4, 3, d, 0, T0)),
        Verdict::Reject,
        offence,
    );
    // Offer naming another assignee.
    let o = offer(&g, 2, d, 0, 0, 4, pb::OfferReason::Placement);
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 0, Some(o))], T0)),
        Verdict::Reject,
        offence,
    );
    // Offer for another slot / generation.
    let o = offer(&g, 2, d, 1, 0, 3, pb::OfferReason::Placement);
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 0, Some(o))], T0)),
        Verdict::Reject,
        offence,
    );
    // Placement offer at gen 1.
    let o = offer(&g, 2, d, 0, 1, 3, pb::OfferReason::Placement);
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 1, Some(o))], T0)),
        Verdict::Reject,
        offence,
    );
    // Slot outside the announce's slots.
    assert_outcome(
        gossip(&mut s, T0, &placement_claim(&g, 2, 3, d, 3, T0)),
        Verdict::Reject,
        offence,
    );
    // Offer expired before the claim.
    let o = sign(
        &g,
        2,
        Kind::SlotOffer,
        &offer_msg(d, 0, 0, 3, pb::OfferReason::Placement, T0 - 1),
    );
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 0, Some(o))], T0)),
        Verdict::Reject,
        offence,
    );
    // A light member cannot claim.
    assert_eq!(
        gossip(
            &mut s,
            T0,
            &join_with(&g, 5, T0, Some(cert(&g, 1, 5, false, T0, 0)), None, false)
        ),
        Outcome::ACCEPT
    );
    assert_outcome(
        gossip(&mut s, T0, &placement_claim(&g, 2, 5, d, 0, T0)),
        Verdict::Reject,
        Penalty::ClaimOffence(key(5).peer_id()),
    );
    // One bad entry rejects the whole claim.
    let good = offer(&g, 2, d, 0, 0, 3, pb::OfferReason::Placement);
    let c = claim(
        &g,
        3,
        vec![(d, 0, 0, Some(good.clone())), (d, 1, 0, None)],
        T0,
    );
    assert_outcome(gossip(&mut s, T0, &c), Verdict::Reject, offence);
    assert_eq!(s.datasets().holder(&d, 0), None);
    // The valid claim.
    assert_eq!(
        gossip(&mut s, T0, &claim(&g, 3, vec![(d, 0, 0, Some(good))], T0)),
        Outcome::ACCEPT
    );
    assert_eq!(
        s.datasets().holder(&d, 0).map(|w| w.holder),
        Some(key(3).peer_id())
    );
    // Retired dataset.
    let rt = sign(
        &g,
        2,
        Kind::DatasetRetire,
        &pb::DatasetRetire {
            dataset_cid: d.to_bytes().to_vec(),
            issued_at: T0,
            reason: String::new(),
        },
    );
    assert_eq!(gossip(&mut s, T0, &rt), Outcome::ACCEPT);
    assert_outcome(
        gossip(&mut s, T0, &placement_claim(&g, 2, 4, d, 1, T0)),
        Verdict::Reject,
        Penalty::ClaimOffence(key(4).peer_id()),
    );
}

#[test]
fn retire_needs_announcer_or_admin() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3]);
    let d = cid(1);
    gossip(&mut s, T0, &announce(&g, 2, d, 3, T0));
    let rt = |by: u8| {
        sign(
            &g,
            by,
            Kind::DatasetRetire,
            &pb::DatasetRetire {
                dataset_cid: d.to_bytes().to_vec(),
                issued_at: T0,
                reason: String::new(),
            },
        )
    };
    assert_outcome(gossip(&mut s, T0, &rt(3)), Verdict::Reject, Penalty::None);
    assert_eq!(
        gossip(&mut s, T0, &rt(1)),
        Outcome::ACCEPT,
        "the owner may retire"
    );
    assert!(s.datasets().is_retired(&d));
}

#[test]
fn handoff_claim_needs_holder_at_previous_generation() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3, 4]);
    let d = cid(1);
    gossip(&mut s, T0, &announce(&g, 2, d, 2, T0));
    gossip(&mut s, T0, &placement_claim(&g, 2, 3, d, 0, T0));
    // 4 cannot hand off a slot it does not hold.
    let o = offer(&g, 4, d, 0, 1, 2, pb::OfferReason::Handoff);
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 2, vec![(d, 0, 1, Some(o))], T0)),
        Verdict::Reject,
        Penalty::ClaimOffence(key(2).peer_id()),
    );
    // The holder (3) hands off to 4 at gen 1: 4 becomes the holder.
    let o = offer(&g, 3, d, 0, 1, 4, pb::OfferReason::Handoff);
    assert_eq!(
        gossip(&mut s, T0, &claim(&g, 4, vec![(d, 0, 1, Some(o))], T0)),
        Outcome::ACCEPT
    );
    let w = s.datasets().holder(&d, 0).unwrap();
    assert_eq!((w.holder, w.generation), (key(4).peer_id(), 1));
    assert_eq!(s.datasets().spares(&d, 0), vec![key(3).peer_id()]);
}

#[test]
fn s2_kinds_are_ignored_without_penalty() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2]);
    let v = sign(
        &g,
        2,
        Kind::LostVote,
        &pb::LostVote {
            subject: key(1).peer_id().as_bytes().to_vec(),
            subject_incarnation: 1,
            unreachable_since: T0,
            issued_at: T0,
        },
    );
    assert_outcome(gossip(&mut s, T0, &v), Verdict::Ignore, Penalty::None);
    let r = sign(
        &g,
        2,
        Kind::RepairRequest,
        &pb::RepairRequest {
            dataset_cid: cid(1).to_bytes().to_vec(),
            round: 1,
            ..Default::default()
        },
    );
    assert_outcome(gossip(&mut s, T0, &r), Verdict::Ignore, Penalty::None);
    // Repair-authorised claims are unverifiable in S1: Ignore.
    gossip(&mut s, T0, &announce(&g, 2, cid(1), 3, T0));
    let o = offer(&g, 2, cid(1), 0, 1, 2, pb::OfferReason::Repair);
    assert_outcome(
        gossip(&mut s, T0, &claim(&g, 2, vec![(cid(1), 0, 1, Some(o))], T0)),
        Verdict::Ignore,
        Penalty::None,
    );
}
