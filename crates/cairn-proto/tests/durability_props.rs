//! Property tests: views that accepted the same facts, in any order, compute the same placement
//! and the same claim winners; decoding and validating arbitrary bytes never panics.

mod durability_support;

use cairn_core::durability::messages::OfferReason;
use cairn_core::durability::{Body, Envelope, Keypair};
use cairn_proto::durability::placement::{ClaimKey, candidate_order, winner};
use cairn_proto::durability::swarm::State;
use cairn_proto::durability::{Rng, Topic, Verdict};
use durability_support::*;
use proptest::prelude::*;

/// A random but valid fact history: joins, announces, placement claims (several claimants per
/// slot, so ties happen) and handoffs.
fn history(seed: u64, members: u8, datasets: u8) -> Vec<Envelope> {
    let g = genesis();
    let mut rng = Rng::new(seed);
    let ids: Vec<u8> = (2..2 + members).collect();
    let mut facts: Vec<Envelope> = ids.iter().map(|&m| join(&g, m, T0)).collect();
    for i in 0..datasets {
        let d = cid(i);
        let announcer = ids[rng.below(ids.len() as u64) as usize];
        let replicas = 1 + rng.below(3) as u32;
        facts.push(announce(&g, announcer, d, replicas, T0));
        for slot in 0..replicas {
            let claimants = 1 + rng.below(3);
            let mut gen0 = Vec::new();
            for _ in 0..claimants {
                let c = ids[rng.below(ids.len() as u64) as usize];
                facts.push(placement_claim(&g, announcer, c, d, slot, T0));
                gen0.push(c);
            }
            if rng.below(2) == 0 {
                let from = gen0[0];
                let to = ids[rng.below(ids.len() as u64) as usize];
                let o = offer(&g, from, d, slot, 1, to, OfferReason::Handoff);
                facts.push(claim(&g, to, vec![(d, slot, 1, Some(o))], T0));
            }
        }
    }
    facts
}

/// Feeds facts in the given order, retrying the rejected ones until nothing more is accepted
/// (what anti-entropy does for facts that arrived before their prerequisites).
fn observe(me: u8, facts: &[Envelope]) -> State {
    let g = genesis();
    let mut s = node(&g, me);
    let mut todo: Vec<&Envelope> = facts.iter().collect();
    loop {
        let before = todo.len();
        todo.retain(|e| gossip(&mut s, T0, e).verdict == Verdict::Reject);
        if todo.is_empty() || todo.len() == before {
            break;
        }
    }
    assert!(
        todo.is_empty(),
        "every fact of a valid history is eventually accepted"
    );
    s
}

fn shuffled<T: Clone>(v: &[T], seed: u64) -> Vec<T> {
    let mut out = v.to_vec();
    let mut rng = Rng::new(seed);
    for i in (1..out.len()).rev() {
        out.swap(i, rng.below(i as u64 + 1) as usize);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn same_facts_same_placement_and_winners(seed in any::<u64>(), order_a in any::<u64>(), order_b in any::<u64>(), members in 2u8..7, datasets in 1u8..5) {
        let facts = history(seed, members, datasets);
        let a = observe(20, &shuffled(&facts, order_a));
        let b = observe(21, &shuffled(&facts, order_b));
        let ea = a.eligible_storers(now(T0));
        let eb = b.eligible_storers(now(T0));
        prop_assert_eq!(&ea, &eb);
        for i in 0..datasets {
            let d = cid(i);
            prop_assert_eq!(candidate_order(&d, &ea), candidate_order(&d, &eb));
            let ann = a.datasets().announce(&d).expect("announced");
            prop_assert_eq!(Some(ann), b.datasets().announce(&d));
            for slot in 0..ann.policy.slots() {
                prop_assert_eq!(a.datasets().holder(&d, slot), b.datasets().holder(&d, slot));
                prop_assert_eq!(a.datasets().spares(&d, slot), b.datasets().spares(&d, slot));
            }
            prop_assert_eq!(a.health(now(T0), &d), b.health(now(T0), &d));
        }
        for (p, m) in a.view().members() {
            let mb = b.view().member(p).expect("same members");
            prop_assert_eq!((m.state, m.storer), (mb.state, mb.storer));
        }
    }

    #[test]
    fn winner_ignores_claim_order(gens in proptest::collection::vec((0u32..3, 1u8..12), 1..10), seed in any::<u64>()) {
        let d = cid(9);
        let claims: Vec<ClaimKey> = gens.iter().map(|(g, k)| ClaimKey { generation: *g, holder: Keypair::from_seed(&[*k; 32]).peer_id() }).collect();
        let w1 = winner(&d, &claims);
        let w2 = winner(&d, &shuffled(&claims, seed));
        prop_assert_eq!(w1, w2);
        let max_gen = claims.iter().map(|c| c.generation).max();
        prop_assert_eq!(w1.map(|w| w.generation), max_gen);
    }

    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(env) = Envelope::decode(&bytes) {
            let _ = env.body();
        }
        let g = genesis();
        let mut s = node(&g, 9);
        let o = gossip_bytes(&mut s, T0, Topic::Ctl, None, bytes.clone());
        prop_assert_ne!(o.verdict, Verdict::Accept);
        let _ = gossip_bytes(&mut s, T0, Topic::Shard(0), None, bytes);
    }

    #[test]
    fn mutated_envelopes_never_panic(idx in any::<prop::sample::Index>(), byte in any::<u8>(), which in 0usize..4) {
        let g = genesis();
        let samples = [
            join(&g, 2, T0),
            announce(&g, 2, cid(1), 3, T0),
            placement_claim(&g, 2, 3, cid(1), 0, T0),
            join_with(&g, 3, T0, Some(cert(&g, 1, 3, true, T0, 0)), None, true),
        ];
        let mut bytes = samples[which].as_bytes().to_vec();
        let i = idx.index(bytes.len());
        bytes[i] = byte;
        if let Ok(env) = Envelope::decode(&bytes)
            && let Ok(Body::SlotClaim { authorizations, .. }) = env.body()
        {
            for a in authorizations.into_iter().flatten() {
                let _ = a.body();
            }
        }
        let mut s = node_with_members(&g, 9, &[2, 3]);
        gossip(&mut s, T0, &announce(&g, 2, cid(1), 3, T0));
        let topic = topic_of(&samples[which]);
        let _ = gossip_bytes(&mut s, T0, topic, None, bytes);
    }
}
