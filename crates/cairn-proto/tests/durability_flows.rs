//! End-to-end S1 flows through `State::handle`: auto policy, offers and claims, health, leave,
//! beacons and holdings queries, anti-entropy between two nodes, snapshot and restore.

mod durability_support;

use cairn_core::durability::messages::{self as pb, DeclineReason, OfferReason, request, response};
use cairn_core::durability::policy::Policy;
use cairn_core::durability::{Envelope, Kind};
use cairn_proto::durability::health::{SlotState, State as HealthState};
use cairn_proto::durability::swarm::{Command, Event, Input, Output, State, TimerKey};
use cairn_proto::durability::{Outcome, Topic};
use durability_support::*;

fn published(out: &[Output]) -> Vec<Vec<u8>> {
    out.iter()
        .filter_map(|o| {
            if let Output::Publish { data, .. } = o {
                Some(data.clone())
            } else {
                None
            }
        })
        .collect()
}

fn events(out: &[Output]) -> Vec<Event> {
    out.iter()
        .filter_map(|o| {
            if let Output::Event(e) = o {
                Some(e.clone())
            } else {
                None
            }
        })
        .collect()
}

/// Delivers everything `from` published to `to`, asserting acceptance.
fn deliver(to: &mut State, at: u64, out: &[Output]) {
    for o in out {
        if let Output::Publish { topic, data } = o {
            let v = gossip_bytes(to, at, *topic, Some(key(1).peer_id()), data.clone());
            assert_eq!(
                v,
                Outcome::ACCEPT,
                "{:?}",
                Envelope::decode(data).map(|e| e.kind())
            );
        }
    }
}

#[test]
fn auto_resolves_to_replicate_min_6_s() {
    let g = genesis();
    // Members 2..=4 are storers; node 2 announces. S = 4 (owner 1 has not joined as a storer).
    let mut s = node_with_members(&g, 2, &[2, 3, 4]);
    let out = s.handle(
        now(T0 + 10),
        Input::Command(Command::Announce {
            dataset: cid(1),
            content: cid(1),
            size: 100,
            blocks: 1,
            policy: None,
            retain_until: 0,
        }),
    );
    assert!(events(&out).contains(&Event::Announced {
        dataset: cid(1),
        policy: Policy::Replicate { replicas: 3 }
    }));
    assert_eq!(published(&out).len(), 1);
    // With 8 storers, R = 6.
    let mut s = node_with_members(&g, 2, &[2, 3, 4, 5, 6, 7, 8, 9]);
    let out = s.handle(
        now(T0 + 10),
        Input::Command(Command::Announce {
            dataset: cid(2),
            content: cid(2),
            size: 100,
            blocks: 1 << 20,
            policy: None,
            retain_until: 0,
        }),
    );
    assert!(events(&out).contains(&Event::Announced {
        dataset: cid(2),
        policy: Policy::Replicate { replicas: 6 }
    }));
    // Explicit erasure is refused in S1; S = 0 is unsatisfiable.
    let out = s.handle(
        now(T0 + 10),
        Input::Command(Command::Announce {
            dataset: cid(3),
            content: cid(3),
            size: 100,
            blocks: 1,
            policy: Some(Policy::Erasure {
                k: 2,
                m: 2,
                repair_at_missing: 1,
            }),
            retain_until: 0,
        }),
    );
    assert!(matches!(
        events(&out).as_slice(),
        [Event::Refused {
            command: "announce",
            ..
        }]
    ));
    let mut lonely = node(&g, 2);
    let out = lonely.handle(
        now(T0),
        Input::Command(Command::Announce {
            dataset: cid(4),
            content: cid(4),
            size: 1,
            blocks: 1,
            policy: None,
            retain_until: 0,
        }),
    );
    assert!(matches!(
        events(&out).as_slice(),
        [Event::Refused {
            command: "announce",
            ..
        }]
    ));
}

#[test]
fn min_member_age_and_exclusions_gate_eligibility() {
    let g = genesis_with(false, 86_400, false);
    let mut s = node(&g, 9);
    gossip(&mut s, T0, &join(&g, 2, T0));
    assert!(s.eligible_storers(now(T0 + 100)).is_empty(), "too young");
    // Keep 2 signalling via beacons, then it qualifies after 24 h.
    let b = sign(
        &g,
        2,
        Kind::Beacon,
        &pb::Beacon {
            incarnation: 1,
            seq: 1,
            sent_at: T0 + 86_400,
            storer: true,
            holdings_digest: cairn_core::cid::sha256(b"")[..16].to_vec(),
            ..Default::default()
        },
    );
    assert_eq!(gossip(&mut s, T0 + 86_400, &b), Outcome::ACCEPT);
    assert_eq!(s.eligible_storers(now(T0 + 86_400)), vec![key(2).peer_id()]);
    // No signal within ELIGIBLE_WINDOW (7 d): no longer eligible.
    assert!(s.eligible_storers(now(T0 + 86_400 + 8 * 86_400)).is_empty());
    // EXITING beacons remove it from candidacy.
    let b = sign(
        &g,
        2,
        Kind::Beacon,
        &pb::Beacon {
            incarnation: 1,
            seq: 2,
            sent_at: T0 + 90_000,
            storer: true,
            flags: 1,
            holdings_digest: cairn_core::cid::sha256(b"")[..16].to_vec(),
            ..Default::default()
        },
    );
    assert_eq!(gossip(&mut s, T0 + 90_000, &b), Outcome::ACCEPT);
    assert!(s.eligible_storers(now(T0 + 90_000)).is_empty());
}

#[test]
fn placement_offer_claim_health_and_leave() {
    let g = genesis();
    let members = [2, 3, 4, 5];
    let mut announcer = node_with_members(&g, 2, &members);
    let mut holder = node_with_members(&g, 3, &members);
    let mut watcher = node_with_members(&g, 5, &members);
    let d = cid(1);
    let out = announcer.handle(
        now(T0 + 5),
        Input::Command(Command::Announce {
            dataset: d,
            content: d,
            size: 10,
            blocks: 1,
            policy: Some(Policy::Replicate { replicas: 2 }),
            retain_until: 0,
        }),
    );
    deliver(&mut holder, T0 + 5, &out);
    deliver(&mut watcher, T0 + 5, &out);
    // Nothing claimed yet: V = 0 < K, so §11 says critical (the API shows `placing` meanwhile).
    let h = watcher.health(now(T0 + 6), &d).unwrap();
    assert_eq!(h.state, HealthState::Critical);
    assert_eq!(
        (h.counts.unclaimed, h.counts.suspect, h.counts.missing),
        (2, 2, 0)
    );

    // Offer slot 0 to node 3 over request-response.
    let offer = announcer.sign_offer(
        &d,
        0,
        0,
        &key(3).peer_id(),
        OfferReason::Placement,
        &[key(2).peer_id()],
        T0 + 43_200,
    );
    let out = holder.handle(
        now(T0 + 7),
        Input::Request {
            peer: Some(key(2).peer_id()),
            id: 77,
            request: State::offer_request(&offer),
        },
    );
    let Some(Event::OfferReceived {
        id: 77,
        slot: 0,
        generation: 0,
        offer: got,
        ..
    }) = events(&out).into_iter().next()
    else {
        panic!("offer event: {out:?}")
    };
    assert_eq!(got, offer);
    let out = holder.handle(
        now(T0 + 7),
        Input::Command(Command::AnswerOffer {
            id: 77,
            accept: true,
            reason: DeclineReason::None,
        }),
    );
    assert!(matches!(
        &out[..],
        [Output::Respond {
            id: 77,
            response: pb::Response {
                body: Some(response::Body::OfferReply(pb::OfferReply {
                    accept: true,
                    ..
                }))
            }
        }]
    ));
    // After pulling and pinning, it claims.
    let out = holder.handle(
        now(T0 + 60),
        Input::Command(Command::Claim {
            offers: vec![offer],
        }),
    );
    assert_eq!(published(&out).len(), 1);
    deliver(&mut watcher, T0 + 60, &out);
    deliver(&mut announcer, T0 + 60, &out);
    // The announcer offers slot 1 to itself and claims locally.
    let own = announcer.sign_offer(
        &d,
        1,
        0,
        &key(2).peer_id(),
        OfferReason::Placement,
        &[],
        T0 + 43_200,
    );
    let out = announcer.handle(
        now(T0 + 61),
        Input::Command(Command::Claim { offers: vec![own] }),
    );
    deliver(&mut watcher, T0 + 61, &out);
    let h = watcher.health(now(T0 + 62), &d).unwrap();
    assert_eq!(h.state, HealthState::Healthy);
    assert_eq!(h.distinct_holders, 2);
    assert_eq!(holder.my_holdings(), vec![(d, 0, 0)]);

    // A stranger's offer for a dataset the node does not know: UNKNOWN_DATASET.
    let stray = Envelope::sign_message(
        &key(2),
        swarm_id(&g),
        Kind::SlotOffer,
        &offer_msg(cid(9), 0, 0, 3, OfferReason::Placement, T0 + 999),
    );
    let out = holder.handle(
        now(T0 + 63),
        Input::Request {
            peer: Some(key(2).peer_id()),
            id: 78,
            request: State::offer_request(&stray),
        },
    );
    assert!(
        matches!(&out[..], [Output::Respond { id: 78, response: pb::Response { body: Some(response::Body::Error(e)) } }] if e.code == pb::ErrorCode::UnknownDataset as i32)
    );
    // A non-member's request: NOT_MEMBER.
    let out = holder.handle(
        now(T0 + 63),
        Input::Request {
            peer: Some(key(40).peer_id()),
            id: 79,
            request: State::offer_request(&offer_for(&g, d)),
        },
    );
    assert!(
        matches!(&out[..], [Output::Respond { id: 79, response: pb::Response { body: Some(response::Body::Error(e)) } }] if e.code == pb::ErrorCode::NotMember as i32)
    );

    // Node 3 leaves (graceful:false): releases LEAVING, then Leave. The slot is missing at once.
    let out = holder.handle(now(T0 + 100), Input::Command(Command::Leave));
    assert_eq!(published(&out).len(), 2);
    deliver(&mut watcher, T0 + 100, &out);
    let h = watcher.health(now(T0 + 101), &d).unwrap();
    assert_eq!(h.slots[0].state, SlotState::Missing);
    assert_eq!(h.state, HealthState::Critical);
    assert!(h.available);
}

fn offer_for(g: &pb::GenesisRecord, d: cairn_core::Cid) -> Envelope {
    offer(g, 2, d, 0, 0, 3, OfferReason::Placement)
}

#[test]
fn tie_break_and_spares_through_gossip() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3, 4]);
    let d = cid(3);
    gossip(&mut s, T0, &announce(&g, 2, d, 1, T0));
    assert_eq!(
        gossip(&mut s, T0, &placement_claim(&g, 2, 3, d, 0, T0)),
        Outcome::ACCEPT
    );
    assert_eq!(
        gossip(&mut s, T0, &placement_claim(&g, 2, 4, d, 0, T0)),
        Outcome::ACCEPT
    );
    let w = s.datasets().holder(&d, 0).unwrap();
    let (p3, p4) = (key(3).peer_id(), key(4).peer_id());
    let expect = if cairn_core::durability::hrw_score(&d, &p3)
        > cairn_core::durability::hrw_score(&d, &p4)
    {
        p3
    } else {
        p4
    };
    assert_eq!(w.holder, expect);
    let loser = if expect == p3 { p4 } else { p3 };
    assert_eq!(s.datasets().spares(&d, 0), vec![loser]);
    assert_eq!(s.health(now(T0), &d).unwrap().counts.spares, 1);
}

#[test]
fn beacon_digest_mismatch_sends_holdings_query() {
    let g = genesis();
    let mut s = node_with_members(&g, 9, &[2, 3, 9]);
    let d = cid(1);
    gossip(&mut s, T0, &announce(&g, 2, d, 1, T0));
    gossip(&mut s, T0, &placement_claim(&g, 2, 3, d, 0, T0));
    // 3's beacon says "no slots": our table gives it slot 0.
    let b = sign(
        &g,
        3,
        Kind::Beacon,
        &pb::Beacon {
            incarnation: 1,
            seq: 1,
            sent_at: T0,
            storer: true,
            holdings_digest: cairn_core::cid::sha256(b"")[..16].to_vec(),
            ..Default::default()
        },
    );
    let out = s.handle(
        now(T0),
        Input::Gossip {
            topic: Topic::Ctl,
            source: None,
            msg_id: vec![],
            data: b.as_bytes().to_vec(),
        },
    );
    let (peer, id) = out
        .iter()
        .find_map(|o| match o {
            Output::Send {
                peer,
                id,
                request:
                    pb::Request {
                        body: Some(request::Body::Holdings(_)),
                    },
            } => Some((*peer, *id)),
            _ => None,
        })
        .expect("holdings query");
    assert_eq!(peer, key(3).peer_id());
    let out = s.handle(
        now(T0 + 1),
        Input::Response {
            id,
            result: Ok(pb::Response {
                body: Some(response::Body::Holdings(pb::Holdings {
                    incarnation: 1,
                    slots: vec![],
                })),
            }),
        },
    );
    assert_eq!(
        events(&out),
        vec![Event::HoldingsDiffer {
            peer,
            extra: vec![],
            missing: vec![(d, 0, 0)]
        }]
    );
    // A matching digest sends nothing.
    let digest = cairn_proto::durability::beacon::holdings_digest(&[(d, 0, 0)]);
    let b = sign(
        &g,
        3,
        Kind::Beacon,
        &pb::Beacon {
            incarnation: 1,
            seq: 2,
            sent_at: T0 + 100,
            storer: true,
            holdings_digest: digest.to_vec(),
            ..Default::default()
        },
    );
    let out = s.handle(
        now(T0 + 100),
        Input::Gossip {
            topic: Topic::Ctl,
            source: None,
            msg_id: vec![],
            data: b.as_bytes().to_vec(),
        },
    );
    assert!(!out.iter().any(|o| matches!(o, Output::Send { .. })));
    // The holder answers a HoldingsQuery with its live slots.
    let mut h = node_with_members(&g, 3, &[2, 3]);
    gossip(&mut h, T0, &announce(&g, 2, d, 1, T0));
    gossip(&mut h, T0, &placement_claim(&g, 2, 3, d, 0, T0));
    let q = pb::Request {
        body: Some(request::Body::Holdings(pb::HoldingsQuery {
            swarm_id: swarm_id(&g).as_bytes().to_vec(),
            shard_mask: vec![],
        })),
    };
    let out = h.handle(
        now(T0),
        Input::Request {
            peer: Some(key(2).peer_id()),
            id: 5,
            request: q,
        },
    );
    let [
        Output::Respond {
            response:
                pb::Response {
                    body: Some(response::Body::Holdings(hs)),
                },
            ..
        },
    ] = &out[..]
    else {
        panic!("{out:?}")
    };
    assert_eq!(hs.slots.len(), 1);
}

#[test]
fn beacon_timer_publishes_and_reschedules() {
    let g = genesis();
    let mut s = node_with_members(&g, 3, &[3]);
    let out = s.handle(now(T0 + 1), Input::Timer(TimerKey::Beacon));
    let data = published(&out);
    assert_eq!(data.len(), 1);
    let env = Envelope::decode(&data[0]).unwrap();
    assert_eq!(env.kind(), Kind::Beacon);
    let at = out
        .iter()
        .find_map(|o| {
            if let Output::Schedule {
                key: TimerKey::Beacon,
                at,
            } = o
            {
                Some(*at)
            } else {
                None
            }
        })
        .unwrap();
    let delta = at - now(T0 + 1).mono;
    assert!((270..=330).contains(&delta.as_secs()), "{delta:?}");
    // Another node accepts it.
    let mut other = node_with_members(&g, 4, &[3, 4]);
    assert_eq!(
        gossip_bytes(&mut other, T0 + 1, Topic::Ctl, None, data[0].clone()),
        Outcome::ACCEPT
    );
}

/// Runs sync rounds from `a` to `b` until `a` has nothing more to pull.
fn sync_pull(a: &mut State, b: &mut State, at: u64) {
    a.handle(now(at), Input::Connected(b.peer_id()));
    let mut out = a.handle(now(at), Input::Timer(TimerKey::Sync));
    for _ in 0..1000 {
        let sends: Vec<(u64, pb::Request)> = out
            .iter()
            .filter_map(|o| {
                if let Output::Send { id, request, .. } = o {
                    Some((*id, request.clone()))
                } else {
                    None
                }
            })
            .collect();
        if sends.is_empty() {
            return;
        }
        let mut next = Vec::new();
        for (id, req) in sends {
            let resp = b.handle(
                now(at),
                Input::Request {
                    peer: Some(a.peer_id()),
                    id: 1000 + id,
                    request: req,
                },
            );
            // `b` may also start pulling back from `a` (its root differs): not driven here.
            let Some(response) = resp.iter().find_map(|o| match o {
                Output::Respond { response, .. } => Some(response),
                _ => None,
            }) else {
                panic!("{resp:?}")
            };
            next.extend(a.handle(
                now(at),
                Input::Response {
                    id,
                    result: Ok(response.clone()),
                },
            ));
        }
        out = next;
    }
    panic!("sync did not finish");
}

#[test]
fn two_partial_views_converge_on_the_same_claims() {
    // a and b know the same members but each saw only half of the dataset facts (a network
    // split); a pull each way gives both every announce and claim, and the same winners.
    let g = genesis();
    let mut a = node_with_members(&g, 2, &[2, 3, 4, 5]);
    let mut b = node_with_members(&g, 3, &[2, 3, 4, 5]);
    for i in 0..20u8 {
        let (d, at) = (cid(i), T0 + u64::from(i) * 200);
        let side = if i % 2 == 0 { &mut a } else { &mut b };
        gossip(side, at, &announce(&g, 4, d, 2, at));
        gossip(side, at, &placement_claim(&g, 4, 5, d, 0, at));
    }
    // A claim for the same slot by another holder, seen by b only: the winner rule decides.
    gossip(&mut b, T0, &placement_claim(&g, 4, 2, cid(0), 0, T0));
    assert_ne!(
        a.facts()
            .scope(cairn_proto::durability::sync::Scope::Shard(0))
            .unwrap()
            .root(),
        b.facts()
            .scope(cairn_proto::durability::sync::Scope::Shard(0))
            .unwrap()
            .root()
    );
    sync_pull(&mut a, &mut b, T0 + 100_000);
    sync_pull(&mut b, &mut a, T0 + 100_000);
    for scope in [
        cairn_proto::durability::sync::Scope::Ctl,
        cairn_proto::durability::sync::Scope::Shard(0),
    ] {
        assert_eq!(
            a.facts().scope(scope).unwrap().root(),
            b.facts().scope(scope).unwrap().root(),
            "{scope:?}"
        );
    }
    for i in 0..20u8 {
        assert!(a.datasets().holder(&cid(i), 0).is_some(), "dataset {i}");
        assert_eq!(
            a.datasets().holder(&cid(i), 0),
            b.datasets().holder(&cid(i), 0),
            "dataset {i}"
        );
    }
}

#[test]
fn a_pull_with_another_ctl_root_is_pulled_back_once() {
    // b does not know the requester as a member (its Join gossip was lost): answering a ctl
    // pull whose root differs from its own, b starts its own round towards the requester.
    let g = genesis();
    let mut b = node_with_members(&g, 3, &[2, 3]);
    let joiner = node_with_members(&g, 4, &[2, 3, 4]).peer_id();
    let request = pb::Request {
        body: Some(request::Body::Sync(pb::SyncRequest {
            swarm_id: swarm_id(&g).as_bytes().to_vec(),
            scope: pb::SyncScope::Ctl as i32,
            shard: 0,
            step: Some(pb::sync_request::Step::Root(vec![7; 32])),
            page_token: vec![],
        })),
    };
    let pulls = |out: &[Output]| {
        out.iter()
            .filter(|o| matches!(o, Output::Send { peer, .. } if *peer == joiner))
            .count()
    };
    let first = b.handle(
        now(T0),
        Input::Request {
            peer: Some(joiner),
            id: 1,
            request: request.clone(),
        },
    );
    assert!(first.iter().any(|o| matches!(o, Output::Respond { .. })));
    assert_eq!(pulls(&first), 1, "{first:?}");
    // While that round runs, another pull from the same peer starts nothing more.
    let second = b.handle(
        now(T0),
        Input::Request {
            peer: Some(joiner),
            id: 2,
            request,
        },
    );
    assert_eq!(pulls(&second), 0, "{second:?}");
}

#[test]
fn anti_entropy_converges_two_nodes() {
    let g = genesis();
    let mut a = node_with_members(&g, 2, &[2, 3]);
    let mut b = node_with_members(&g, 3, &[2, 3, 4, 5]);
    for i in 0..30u8 {
        let d = cid(i);
        gossip(
            &mut b,
            T0 + u64::from(i) * 200,
            &announce(&g, 4, d, 2, T0 + u64::from(i) * 200),
        );
        gossip(
            &mut b,
            T0 + u64::from(i) * 200,
            &placement_claim(&g, 4, 5, d, 0, T0 + u64::from(i) * 200),
        );
    }
    // Old facts arrive by sync (no ±1 h window); claims and announces in one page are ordered.
    sync_pull(&mut a, &mut b, T0 + 100_000);
    for scope in [
        cairn_proto::durability::sync::Scope::Ctl,
        cairn_proto::durability::sync::Scope::Shard(0),
    ] {
        assert_eq!(
            a.facts().scope(scope).unwrap().root(),
            b.facts().scope(scope).unwrap().root(),
            "{scope:?}"
        );
    }
    for i in 0..30u8 {
        assert_eq!(
            a.datasets().holder(&cid(i), 0),
            b.datasets().holder(&cid(i), 0)
        );
    }
    // Non-members may sync the ctl scope, not a shard.
    let ctl = pb::SyncRequest {
        swarm_id: swarm_id(&g).as_bytes().to_vec(),
        scope: pb::SyncScope::Ctl as i32,
        shard: 0,
        step: Some(pb::sync_request::Step::Root(vec![0; 32])),
        page_token: vec![],
    };
    let mut shard = ctl.clone();
    shard.scope = pb::SyncScope::Shard as i32;
    let r = b.handle(
        now(T0),
        Input::Request {
            peer: None,
            id: 1,
            request: pb::Request {
                body: Some(request::Body::Sync(ctl)),
            },
        },
    );
    assert!(matches!(
        &r[..],
        [Output::Respond {
            response: pb::Response {
                body: Some(response::Body::Sync(_))
            },
            ..
        }]
    ));
    let r = b.handle(
        now(T0),
        Input::Request {
            peer: None,
            id: 2,
            request: pb::Request {
                body: Some(request::Body::Sync(shard)),
            },
        },
    );
    assert!(matches!(
        &r[..],
        [Output::Respond {
            response: pb::Response {
                body: Some(response::Body::Error(_))
            },
            ..
        }]
    ));
}

#[test]
fn snapshot_restore_round_trip() {
    let g = genesis();
    let mut s = node_with_members(&g, 2, &[2, 3, 4]);
    for i in 0..5u8 {
        gossip(&mut s, T0, &announce(&g, 3, cid(i), 2, T0));
        gossip(&mut s, T0, &placement_claim(&g, 3, 4, cid(i), 1, T0));
    }
    let bytes = s.snapshot();
    let (r, out) = State::restore(&bytes, key(2), params(), 7, now(T0 + 50)).unwrap();
    assert_eq!(r.incarnation(), s.incarnation() + 1);
    assert!(out.iter().any(|o| matches!(
        o,
        Output::Schedule {
            key: TimerKey::Beacon,
            ..
        }
    )));
    for i in 0..5u8 {
        assert_eq!(
            r.datasets().holder(&cid(i), 1),
            s.datasets().holder(&cid(i), 1)
        );
    }
    let scope = cairn_proto::durability::sync::Scope::Shard(0);
    assert_eq!(
        r.facts().scope(scope).unwrap().root(),
        s.facts().scope(scope).unwrap().root()
    );
    assert_eq!(
        r.view().member(&key(3).peer_id()).unwrap().first_seen,
        s.view().member(&key(3).peer_id()).unwrap().first_seen
    );
    assert!(State::restore(b"garbage", key(2), params(), 7, now(T0)).is_err());
}

#[test]
fn retired_facts_expire_seven_days_later() {
    let g = genesis();
    let mut s = node_with_members(&g, 2, &[2, 3, 4]);
    let d = cid(1);
    gossip(&mut s, T0, &announce(&g, 3, d, 2, T0));
    gossip(&mut s, T0, &placement_claim(&g, 3, 4, d, 0, T0));
    let rt = sign(
        &g,
        3,
        Kind::DatasetRetire,
        &pb::DatasetRetire {
            dataset_cid: d.to_bytes().to_vec(),
            issued_at: T0 + 10,
            reason: String::new(),
        },
    );
    let out = s.handle(
        now(T0 + 10),
        Input::Gossip {
            topic: Topic::Shard(0),
            source: None,
            msg_id: vec![],
            data: rt.as_bytes().to_vec(),
        },
    );
    assert!(out.iter().any(|o| matches!(o, Output::FactExpiry { expires_at: Some(t), .. } if *t == T0 + 10 + 7 * 86_400)));
    let out = s.handle(now(T0 + 10 + 7 * 86_400), Input::Timer(TimerKey::Sync));
    assert_eq!(
        out.iter()
            .filter(|o| matches!(o, Output::FactDropped { .. }))
            .count(),
        3
    );
    assert!(s.datasets().announce(&d).is_none());
    // Not accepted again.
    let o = gossip_bytes(
        &mut s,
        T0 + 10 + 7 * 86_400,
        Topic::Shard(0),
        None,
        announce(&g, 3, d, 2, T0).as_bytes().to_vec(),
    );
    assert_eq!(o.verdict, cairn_proto::durability::Verdict::Ignore);
}

#[test]
fn superseded_claim_expires_thirty_days_after_successor() {
    let g = genesis();
    let mut s = node_with_members(&g, 2, &[2, 3, 4]);
    let d = cid(1);
    gossip(&mut s, T0, &announce(&g, 3, d, 1, T0));
    let first = placement_claim(&g, 3, 4, d, 0, T0);
    gossip(&mut s, T0, &first);
    let o = offer(&g, 4, d, 0, 1, 2, OfferReason::Handoff);
    let out = s.handle(
        now(T0 + 100),
        Input::Gossip {
            topic: Topic::Shard(0),
            source: None,
            msg_id: vec![],
            data: claim(&g, 2, vec![(d, 0, 1, Some(o))], T0 + 100)
                .as_bytes()
                .to_vec(),
        },
    );
    assert!(out.iter().any(|o| matches!(o, Output::FactExpiry { id, expires_at: Some(t), .. } if *id == first.id() && *t == T0 + 100 + 30 * 86_400)));
}
