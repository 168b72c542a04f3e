//! One test per scheduling rule of `cairn_proto::download`, driven by hand.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use cairn_proto::download::{Action, Config, Download, Input};

const BS: u32 = 64 * 1024;

fn config() -> Config {
    Config {
        batch_bytes: 2 * u64::from(BS),
        initial_inflight: 4,
        min_inflight: 2,
        max_inflight: 64,
        batch_timeout: Duration::from_secs(30),
        presence_window: 16_384,
        presence_refresh: Duration::from_secs(10),
        // Unanswered asks are retried at the refresh here; `unanswered_presence_is_retried_*`
        // covers the shorter retry.
        presence_retry: Duration::from_secs(10),
    }
}

fn fresh(n: u64) -> Download<u32> {
    Download::new(config(), n, BS, &[], |_| false)
}

type Request = (u32, u64, Vec<(u64, u64)>);

fn requests(actions: &[Action<u32>]) -> Vec<Request> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::RequestBlocks {
                peer,
                request_id,
                ranges,
            } => Some((*peer, *request_id, ranges.clone())),
            _ => None,
        })
        .collect()
}

fn asks(actions: &[Action<u32>]) -> Vec<(u32, u64, u64)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::AskPresence { peer, start, count } => Some((*peer, *start, *count)),
            _ => None,
        })
        .collect()
}

fn completes(actions: &[Action<u32>]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Complete))
        .count()
}

fn indices(ranges: &[(u64, u64)]) -> Vec<u64> {
    ranges.iter().flat_map(|&(s, c)| s..s + c).collect()
}

fn all_indices(reqs: &[Request]) -> Vec<u64> {
    reqs.iter().flat_map(|r| indices(&r.2)).collect()
}

fn ms(t0: Instant, ms: u64) -> Instant {
    t0 + Duration::from_millis(ms)
}

/// Adds `peer` and answers its presence with `Complete`.
fn add_complete(dl: &mut Download<u32>, peer: u32, now: Instant) -> Vec<Action<u32>> {
    let mut out = dl.handle(Input::PeerAdded(peer), now);
    out.extend(dl.handle(
        Input::Presence {
            peer,
            ranges: vec![],
            complete: true,
        },
        now,
    ));
    out
}

fn answer(dl: &mut Download<u32>, req: &Request, now: Instant) -> Vec<Action<u32>> {
    let received = indices(&req.2);
    let bytes = received.len() as u64 * u64::from(BS);
    dl.handle(
        Input::BatchAnswered {
            peer: req.0,
            request_id: req.1,
            received,
            bytes,
        },
        now,
    )
}

fn assert_well_formed(ranges: &[(u64, u64)], batch_blocks: u64, n: u64) {
    assert!(!ranges.is_empty());
    let total: u64 = ranges.iter().map(|r| r.1).sum();
    assert!(
        total >= 1 && total <= batch_blocks && total <= 32,
        "{ranges:?}"
    );
    for w in ranges.windows(2) {
        assert!(
            w[0].0 + w[0].1 < w[1].0,
            "ranges not ascending/disjoint/merged: {ranges:?}"
        );
    }
    for r in ranges {
        assert!(r.1 >= 1 && r.0 + r.1 <= n);
    }
}

#[test]
fn presence_is_asked_before_any_request() {
    let t0 = Instant::now();
    let mut dl = fresh(100);
    let out = dl.handle(Input::PeerAdded(1), t0);
    assert_eq!(
        out,
        vec![Action::AskPresence {
            peer: 1,
            start: 0,
            count: 100
        }]
    );
    assert_eq!(dl.tick(ms(t0, 1)), vec![]);
    let out = dl.handle(
        Input::Presence {
            peer: 1,
            ranges: vec![],
            complete: true,
        },
        ms(t0, 2),
    );
    let reqs = requests(&out);
    assert_eq!(reqs.len(), 4, "initial_inflight batches");
    assert_eq!(all_indices(&reqs), (0..8).collect::<Vec<_>>());
}

#[test]
fn presence_windows_start_at_the_lowest_missing_block_and_sweep() {
    let t0 = Instant::now();
    let cfg = Config {
        presence_window: 16,
        ..config()
    };
    // Blocks 0..5 held: the first window starts at 5.
    let mut dl = Download::new(cfg, 40, BS, &[0b0001_1111], |_| false);
    assert_eq!(asks(&dl.handle(Input::PeerAdded(7), t0)), vec![(7, 5, 16)]);
    // It holds 5..8 in that window: requests go out, and the next window is asked.
    let out = dl.handle(
        Input::Presence {
            peer: 7,
            ranges: vec![(5, 3)],
            complete: false,
        },
        ms(t0, 1),
    );
    assert_eq!(asks(&out), vec![(7, 21, 16)]);
    assert_eq!(all_indices(&requests(&out)), vec![5, 6, 7]);
    // Last window is clipped to the dataset.
    let out = dl.handle(
        Input::Presence {
            peer: 7,
            ranges: vec![],
            complete: false,
        },
        ms(t0, 2),
    );
    assert_eq!(asks(&out), vec![(7, 37, 3)]);
    // End of the sweep: nothing more until the refresh.
    let out = dl.handle(
        Input::Presence {
            peer: 7,
            ranges: vec![(38, 2)],
            complete: false,
        },
        ms(t0, 3),
    );
    assert!(asks(&out).is_empty());
    assert_eq!(all_indices(&requests(&out)), vec![38, 39]);
    assert_eq!(
        dl.next_deadline(),
        Some(ms(t0, 3) + Duration::from_secs(30)).min(Some(ms(t0, 10_003)))
    );
    // After the refresh it is asked again from the lowest block it is not known to hold.
    let out = dl.tick(ms(t0, 10_003));
    assert_eq!(asks(&out), vec![(7, 8, 16)]);
}

#[test]
fn unanswered_presence_is_asked_again_after_refresh_while_relevant() {
    let t0 = Instant::now();
    let mut dl = fresh(10);
    dl.handle(Input::PeerAdded(1), t0);
    assert_eq!(dl.next_deadline(), Some(ms(t0, 10_000)));
    assert!(asks(&dl.tick(ms(t0, 9_999))).is_empty());
    assert_eq!(asks(&dl.tick(ms(t0, 10_000))), vec![(1, 0, 10)]);
    // Once it is known to hold every missing block, asking again is pointless.
    dl.handle(
        Input::Presence {
            peer: 1,
            ranges: vec![(0, 10)],
            complete: false,
        },
        ms(t0, 10_001),
    );
    let out = dl.tick(ms(t0, 20_001));
    assert!(asks(&out).is_empty(), "{out:?}");
    // A complete peer is never asked again.
    let mut dl = fresh(10);
    add_complete(&mut dl, 1, t0);
    assert!(asks(&dl.tick(ms(t0, 60_000))).is_empty());
}

#[test]
fn unanswered_presence_is_retried_sooner_with_backoff_until_an_answer() {
    let t0 = Instant::now();
    let cfg = Config {
        presence_retry: Duration::from_secs(1),
        ..config()
    };
    let mut dl = Download::new(cfg, 10, BS, &[], |_| false);
    assert_eq!(asks(&dl.handle(Input::PeerAdded(1), t0)), vec![(1, 0, 10)]);
    // Silence: asked again after 1 s, 2 s, 4 s, 8 s, then every 10 s (the refresh).
    let mut at = 0;
    for wait in [1_000, 2_000, 4_000, 8_000, 10_000, 10_000] {
        assert_eq!(dl.next_deadline(), Some(ms(t0, at + wait)));
        assert!(asks(&dl.tick(ms(t0, at + wait - 1))).is_empty());
        at += wait;
        assert_eq!(asks(&dl.tick(ms(t0, at))), vec![(1, 0, 10)], "at {at} ms");
    }
    // An answer (even one holding nothing) ends the quick retries: back to the refresh.
    dl.handle(
        Input::Presence {
            peer: 1,
            ranges: vec![],
            complete: false,
        },
        ms(t0, at + 1),
    );
    assert!(asks(&dl.tick(ms(t0, at + 9_000))).is_empty());
    assert_eq!(asks(&dl.tick(ms(t0, at + 10_001))), vec![(1, 0, 10)]);
    // A second peer added later starts its own retries from 1 s.
    let out = dl.handle(Input::PeerAdded(2), ms(t0, at + 10_002));
    assert_eq!(asks(&out), vec![(2, 0, 10)]);
    assert_eq!(asks(&dl.tick(ms(t0, at + 11_002))), vec![(2, 0, 10)]);
}

#[test]
fn presence_from_an_unknown_peer_adds_it() {
    let t0 = Instant::now();
    let mut dl = fresh(10);
    let out = dl.handle(
        Input::Presence {
            peer: 3,
            ranges: vec![(2, 2)],
            complete: false,
        },
        t0,
    );
    assert_eq!(all_indices(&requests(&out)), vec![2, 3]);
    // What else it holds is asked at once, from the lowest block it is not known to hold.
    assert_eq!(asks(&out), vec![(3, 0, 10)]);
    assert!(dl.peer_stats(&3).is_some_and(|s| s.presence_known));
}

#[test]
fn batch_shape_respects_batch_bytes_32_blocks_and_4_mib() {
    let t0 = Instant::now();
    let cases: [(u32, u64, u64); 5] = [
        (64 * 1024, 128 * 1024, 2),
        (4096, 128 * 1024, 32),
        (1024, 1024 * 1024, 32),
        (1024 * 1024, 16 * 1024 * 1024, 4),
        (8 * 1024 * 1024, 128 * 1024, 1),
    ];
    for (bs, batch_bytes, expect) in cases {
        let cfg = Config {
            batch_bytes,
            ..config()
        };
        let mut dl = Download::new(cfg, 1000, bs, &[], |_| false);
        assert_eq!(dl.batch_blocks(), expect);
        let reqs = requests(&add_complete(&mut dl, 1, t0));
        for r in &reqs {
            assert_eq!(r.2.len(), 1);
            assert_eq!(r.2[0].1, expect);
            assert!(r.2[0].1 * u64::from(bs) <= (4 << 20).max(u64::from(bs)));
        }
    }
}

#[test]
fn batches_ascend_from_the_lowest_missing_block() {
    let t0 = Instant::now();
    let mut dl = Download::new(config(), 100, BS, &[0b0000_0101], |_| false);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    let ranges: Vec<_> = reqs.iter().map(|r| r.2.clone()).collect();
    assert_eq!(
        ranges,
        vec![
            vec![(1, 1), (3, 1)],
            vec![(4, 2)],
            vec![(6, 2)],
            vec![(8, 2)]
        ]
    );
    let ids: Vec<u64> = reqs.iter().map(|r| r.1).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    // Answering the first refills from the next lowest.
    let out = answer(&mut dl, &reqs[0], ms(t0, 1));
    let next = requests(&out);
    assert_eq!(next[0].2, vec![(10, 2)]);
}

#[test]
fn fragmented_holdings_give_multi_range_batches() {
    let t0 = Instant::now();
    let cfg = Config {
        batch_bytes: 4 * u64::from(BS),
        ..config()
    };
    let mut dl = Download::new(cfg, 20, BS, &[], |_| false);
    dl.handle(Input::PeerAdded(1), t0);
    let out = dl.handle(
        Input::Presence {
            peer: 1,
            ranges: (0..10).map(|i| (2 * i, 1)).collect(),
            complete: false,
        },
        t0,
    );
    let reqs = requests(&out);
    assert_eq!(reqs[0].2, vec![(0, 1), (2, 1), (4, 1), (6, 1)]);
    for r in &reqs {
        assert_well_formed(&r.2, 4, 20);
        assert!(
            indices(&r.2).iter().all(|i| i % 2 == 0),
            "only what it holds"
        );
    }
}

#[test]
fn no_block_goes_to_two_peers_outside_the_end_game() {
    let t0 = Instant::now();
    let mut dl = fresh(200);
    let mut seen = BTreeSet::new();
    let mut out = add_complete(&mut dl, 1, t0);
    out.extend(add_complete(&mut dl, 2, t0));
    out.extend(add_complete(&mut dl, 3, t0));
    let reqs = requests(&out);
    let peers: BTreeSet<u32> = reqs.iter().map(|r| r.0).collect();
    assert_eq!(peers.len(), 3, "every peer got work");
    for i in all_indices(&reqs) {
        assert!(seen.insert(i), "block {i} requested twice");
    }
    assert!(!dl.in_end_game());
}

#[test]
fn end_game_duplicates_the_oldest_batch_and_the_first_answer_wins() {
    let t0 = Instant::now();
    let cfg = Config {
        batch_bytes: u64::from(BS),
        ..config()
    };
    let mut dl = Download::new(cfg, 4, BS, &[], |_| false);
    let first = requests(&add_complete(&mut dl, 1, t0));
    assert_eq!(first.len(), 4, "peer 1 took everything");
    assert!(dl.in_end_game());
    // Peer 2 arrives: nothing unrequested is left, so it duplicates the oldest batches.
    let dups = requests(&add_complete(&mut dl, 2, ms(t0, 1)));
    assert_eq!(dups.len(), 4, "its whole initial window");
    assert_eq!(dups[0].2, vec![(0, 1)], "oldest first");
    assert!(dups.iter().all(|r| r.0 == 2));
    // Peer 3 finds every block already at two copies.
    assert!(requests(&add_complete(&mut dl, 3, ms(t0, 2))).is_empty());
    // The duplicate answers first; the original's late answer is harmless.
    for r in &dups {
        answer(&mut dl, r, ms(t0, 3));
    }
    let p = dl.progress();
    assert_eq!(p.held, 4);
    assert_eq!(p.bytes, 4 * u64::from(BS));
    assert!(dl.is_complete());
    let mut late = Vec::new();
    for r in &first {
        late.extend(answer(&mut dl, r, ms(t0, 4)));
    }
    assert_eq!(completes(&late), 0, "Complete was emitted once already");
    assert_eq!(dl.progress(), p, "late duplicates do not count");
}

#[test]
fn partial_answer_requeues_the_rest_elsewhere() {
    let t0 = Instant::now();
    let cfg = Config {
        batch_bytes: 4 * u64::from(BS),
        initial_inflight: 2,
        ..config()
    };
    let mut dl = Download::new(cfg, 8, BS, &[], |_| false);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    assert_eq!(reqs.len(), 2);
    let out = dl.handle(
        Input::BatchAnswered {
            peer: 1,
            request_id: reqs[0].1,
            received: vec![0, 2],
            bytes: 2 * u64::from(BS),
        },
        ms(t0, 1),
    );
    // Peer 1 evidently lacks 1 and 3: they wait for someone else.
    assert!(requests(&out).is_empty(), "{out:?}");
    assert!(dl.is_held(0) && dl.is_held(2) && !dl.is_held(1));
    let out = add_complete(&mut dl, 2, ms(t0, 2));
    let next = requests(&out);
    assert_eq!(next[0], (2, reqs[1].1 + 1, vec![(1, 1), (3, 1)]));
    // Then nothing unrequested is left: peer 2's spare room duplicates peer 1's batch.
    assert!(dl.in_end_game());
    assert_eq!(next[1..], [(2, reqs[1].1 + 2, vec![(4, 4)])]);
}

#[test]
fn empty_answer_distrusts_the_claim_and_asks_presence_later() {
    let t0 = Instant::now();
    let cfg = Config {
        initial_inflight: 2,
        min_inflight: 1,
        ..config()
    };
    let mut dl = Download::new(cfg, 20, BS, &[], |_| false);
    dl.handle(Input::PeerAdded(1), t0);
    let reqs = requests(&dl.handle(
        Input::Presence {
            peer: 1,
            ranges: vec![(0, 10), (12, 8)],
            complete: false,
        },
        t0,
    ));
    assert_eq!(reqs.len(), 2);
    let out = dl.handle(
        Input::BatchAnswered {
            peer: 1,
            request_id: reqs[0].1,
            received: vec![],
            bytes: 0,
        },
        ms(t0, 1),
    );
    // The run 0..10 is no longer trusted; 12..20 still is.
    let next = requests(&out);
    assert_eq!(all_indices(&next), vec![12, 13]);
    assert!(asks(&out).is_empty());
    // Someone else gets 0..10 at once.
    let out = add_complete(&mut dl, 2, ms(t0, 2));
    assert_eq!(requests(&out)[0].2, vec![(0, 2)]);
    // And peer 1 is asked again later, from the lowest block it is not trusted with.
    let out = dl.tick(ms(t0, 10_001));
    assert_eq!(asks(&out), vec![(1, 0, 20)]);
}

#[test]
fn lying_complete_peer_loses_everything_after_one_empty_answer() {
    let t0 = Instant::now();
    let mut dl = fresh(50);
    let reqs = requests(&add_complete(&mut dl, 9, t0));
    let out = dl.handle(
        Input::BatchAnswered {
            peer: 9,
            request_id: reqs[0].1,
            received: vec![],
            bytes: 0,
        },
        ms(t0, 1),
    );
    assert!(
        requests(&out).is_empty(),
        "no more requests to the liar: {out:?}"
    );
    let out = add_complete(&mut dl, 1, ms(t0, 2));
    assert_eq!(requests(&out)[0].2, vec![(0, 2)]);
}

#[test]
fn failure_requeues_and_repeated_failures_back_off() {
    let t0 = Instant::now();
    let cfg = Config {
        initial_inflight: 2,
        ..config()
    };
    let mut dl = Download::new(cfg, 100, BS, &[], |_| false);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    let out = dl.handle(
        Input::BatchFailed {
            peer: 1,
            request_id: reqs[0].1,
        },
        ms(t0, 1),
    );
    // First failure: requeued and re-sent at once (lowest first).
    let again = requests(&out);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].2, vec![(0, 2)]);
    assert!(again[0].1 > reqs[1].1);
    // Second in a row: backoff before anything new goes to that peer.
    let out = dl.handle(
        Input::BatchFailed {
            peer: 1,
            request_id: again[0].1,
        },
        ms(t0, 2),
    );
    assert!(requests(&out).is_empty());
    assert_eq!(dl.next_deadline(), Some(ms(t0, 102)));
    // Another peer takes the requeued blocks meanwhile.
    let out = add_complete(&mut dl, 2, ms(t0, 3));
    assert_eq!(requests(&out)[0].2, vec![(0, 2)]);
    let out = dl.tick(ms(t0, 102));
    assert_eq!(requests(&out).len(), 1, "peer 1 back in business");
}

#[test]
fn timeout_requeues_and_shrinks_the_window() {
    let t0 = Instant::now();
    let mut dl = fresh(100);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    assert_eq!(dl.next_deadline(), Some(ms(t0, 30_000)));
    assert!(requests(&dl.tick(ms(t0, 29_999))).is_empty());
    let r2 = requests(&add_complete(&mut dl, 2, ms(t0, 29_999)));
    assert_eq!(all_indices(&r2), (8..16).collect::<Vec<_>>());
    let out = dl.tick(ms(t0, 30_000));
    // The four timed-out batches are requeued; peer 1 gets only min_inflight of them now.
    assert_eq!(all_indices(&requests(&out)), (0..4).collect::<Vec<_>>());
    let s1 = dl.peer_stats(&1).expect("peer 1");
    assert_eq!((s1.window, s1.outstanding), (2, 2));
    // The rest goes to whoever has room next.
    let out = answer(&mut dl, &r2[0], ms(t0, 30_001));
    assert_eq!(requests(&out)[0].2, vec![(4, 2)]);
    assert_eq!(all_indices(&reqs), (0..8).collect::<Vec<_>>());
}

#[test]
fn disconnect_requeues_to_the_other_peers() {
    let t0 = Instant::now();
    let mut dl = fresh(16);
    let r1 = requests(&add_complete(&mut dl, 1, t0));
    let r2 = requests(&add_complete(&mut dl, 2, t0));
    assert_eq!(all_indices(&r1), (0..8).collect::<Vec<_>>());
    assert_eq!(all_indices(&r2), (8..16).collect::<Vec<_>>());
    let out = dl.handle(Input::PeerRemoved(1), ms(t0, 1));
    // Peer 2 is full; the requeued blocks go out as soon as it has room (or in the end game).
    assert!(requests(&out).is_empty());
    assert!(dl.peer_stats(&1).is_none());
    let out = answer(&mut dl, &r2[0], ms(t0, 2));
    let next = requests(&out);
    assert_eq!(next[0].0, 2);
    assert_eq!(next[0].2, vec![(0, 2)]);
    // A late answer from the removed peer is still accepted (the driver stored the blocks).
    answer(&mut dl, &r1[1], ms(t0, 3));
    assert!(dl.is_held(2) && dl.is_held(3));
}

#[test]
fn misbehaving_peer_is_banned_once_and_its_batches_requeued() {
    let t0 = Instant::now();
    let mut dl = fresh(16);
    requests(&add_complete(&mut dl, 1, t0));
    let out = dl.handle(Input::Misbehaved(1), ms(t0, 1));
    assert_eq!(out, vec![Action::Ban(1)]);
    assert!(dl.peer_stats(&1).is_none());
    assert!(dl.handle(Input::Misbehaved(1), ms(t0, 2)).is_empty());
    // It is not taken back.
    assert!(add_complete(&mut dl, 1, ms(t0, 3)).is_empty());
    assert!(dl.peer_stats(&1).is_none());
    let out = add_complete(&mut dl, 2, ms(t0, 4));
    assert_eq!(all_indices(&requests(&out)), (0..8).collect::<Vec<_>>());
}

#[test]
fn resume_from_bitmap_requests_only_missing_blocks() {
    let t0 = Instant::now();
    // Held: 0..8 and 9, 11; 18 blocks in all.
    let held = [0xff, 0b0000_1010];
    let mut dl = Download::new(config(), 18, BS, &held, |_| false);
    assert_eq!(dl.progress().held, 10);
    assert!(dl.is_held(9) && !dl.is_held(8));
    let mut all = Vec::new();
    let mut pending = requests(&add_complete(&mut dl, 1, t0));
    let mut now = 0;
    while let Some(r) = pending.pop() {
        all.extend(indices(&r.2));
        now += 1;
        pending.extend(requests(&answer(&mut dl, &r, ms(t0, now))));
    }
    all.sort_unstable();
    assert_eq!(all, vec![8, 10, 12, 13, 14, 15, 16, 17]);
    assert!(dl.is_complete());
    assert_eq!(dl.progress().bytes, 8 * u64::from(BS));
}

#[test]
fn skipped_indices_count_as_held_and_are_never_requested() {
    let t0 = Instant::now();
    let mut dl = Download::new(config(), 30, BS, &[], |i| i % 3 == 2);
    assert_eq!(dl.progress().held, 10);
    assert!(dl.is_held(2));
    let mut pending = requests(&add_complete(&mut dl, 1, t0));
    let mut now = 0;
    let mut done = 0;
    while let Some(r) = pending.pop() {
        assert!(indices(&r.2).iter().all(|i| i % 3 != 2), "{:?}", r.2);
        now += 1;
        let out = answer(&mut dl, &r, ms(t0, now));
        done += completes(&out);
        pending.extend(requests(&out));
    }
    assert_eq!(done, 1);
    assert_eq!(dl.progress().held, 30);
}

#[test]
fn have_locally_marks_blocks_held_and_never_double_counts() {
    let t0 = Instant::now();
    let mut dl = fresh(10);
    let out = dl.handle(Input::HaveLocally(vec![0, 1, 2, 2, 99]), t0);
    assert!(out.is_empty());
    assert_eq!(dl.progress().held, 3);
    assert_eq!(dl.progress().bytes, 0);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    assert_eq!(reqs[0].2, vec![(3, 2)]);
    // Blocks of an outstanding batch arrive locally; the answer later adds nothing.
    dl.handle(Input::HaveLocally(vec![3]), ms(t0, 1));
    answer(&mut dl, &reqs[0], ms(t0, 2));
    let p = dl.progress();
    assert_eq!(p.held, 5);
    assert_eq!(p.bytes, u64::from(BS), "only block 4 was new");
    answer(&mut dl, &reqs[0], ms(t0, 3));
    assert_eq!(dl.progress(), p);
}

#[test]
fn complete_is_emitted_exactly_once() {
    let t0 = Instant::now();
    let mut dl = fresh(4);
    let reqs = requests(&add_complete(&mut dl, 1, t0));
    let mut count = 0;
    for r in &reqs {
        count += completes(&answer(&mut dl, r, ms(t0, 1)));
    }
    assert_eq!(count, 1);
    assert!(dl.is_complete());
    count += completes(&dl.tick(ms(t0, 100_000)));
    count += completes(&dl.handle(Input::HaveLocally(vec![0]), ms(t0, 100_001)));
    count += completes(&add_complete(&mut dl, 2, ms(t0, 100_002)));
    assert_eq!(count, 1);
    assert_eq!(dl.next_deadline(), None);

    // Nothing missing from the start: complete at once, announced on the first call.
    let mut dl = Download::new(config(), 3, BS, &[], |_| true);
    assert!(dl.is_complete());
    assert_eq!(dl.tick(t0), vec![Action::Complete]);
    assert!(dl.tick(t0).is_empty());
    assert!(
        dl.handle(Input::PeerAdded(1), t0).is_empty(),
        "no presence asked"
    );
    let mut dl = Download::new(config(), 0, BS, &[], |_| false);
    assert_eq!(dl.handle(Input::PeerAdded(1), t0), vec![Action::Complete]);
}

#[test]
fn next_deadline_is_the_earliest_timeout_or_refresh() {
    let t0 = Instant::now();
    let mut dl = fresh(10);
    assert_eq!(dl.next_deadline(), None);
    dl.handle(Input::PeerAdded(1), t0);
    assert_eq!(dl.next_deadline(), Some(ms(t0, 10_000)));
    add_complete(&mut dl, 2, ms(t0, 5_000));
    // Peer 1 still due at 10 s; peer 2's batches time out at 35 s.
    assert_eq!(dl.next_deadline(), Some(ms(t0, 10_000)));
    dl.handle(
        Input::Presence {
            peer: 1,
            ranges: vec![],
            complete: true,
        },
        ms(t0, 6_000),
    );
    assert_eq!(dl.next_deadline(), Some(ms(t0, 35_000)));
}

#[test]
fn request_ids_are_unique_and_increasing() {
    let t0 = Instant::now();
    let mut dl = fresh(300);
    let mut ids = Vec::new();
    let mut pending = requests(&add_complete(&mut dl, 1, t0));
    pending.extend(requests(&add_complete(&mut dl, 2, t0)));
    let mut now = 0;
    while let Some(r) = pending.pop() {
        ids.push(r.1);
        now += 1;
        if now % 7 == 0 {
            pending.extend(requests(&dl.handle(
                Input::BatchFailed {
                    peer: r.0,
                    request_id: r.1,
                },
                ms(t0, now),
            )));
        } else {
            pending.extend(requests(&answer(&mut dl, &r, ms(t0, now))));
        }
    }
    assert!(dl.is_complete());
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len());
}

#[test]
fn stray_answers_for_unknown_requests_are_accepted() {
    let t0 = Instant::now();
    let mut dl = fresh(4);
    let out = dl.handle(
        Input::BatchAnswered {
            peer: 5,
            request_id: 777,
            received: vec![1, 2, 9],
            bytes: 3 * u64::from(BS),
        },
        t0,
    );
    assert!(out.is_empty());
    assert_eq!(dl.progress().held, 2);
    assert_eq!(dl.progress().bytes, 2 * u64::from(BS));
}

#[test]
fn large_dataset_is_scheduled_without_per_call_scans() {
    // 10 GB at 64 KiB: 160k blocks, 80k batches, two peers. Quadratic work would not finish.
    let t0 = Instant::now();
    let n = 160_000u64;
    let mut dl = Download::new(config(), n, BS, &[], |i| i % 1000 == 999);
    let mut pending: std::collections::VecDeque<Request> =
        requests(&add_complete(&mut dl, 1, t0)).into();
    pending.extend(requests(&add_complete(&mut dl, 2, t0)));
    let mut now = 0;
    let mut batches = 0u64;
    while let Some(r) = pending.pop_front() {
        batches += 1;
        now += 1;
        let out = answer(&mut dl, &r, t0 + Duration::from_micros(now));
        pending.extend(requests(&out));
    }
    assert!(dl.is_complete());
    assert_eq!(dl.progress().held, n);
    assert!(batches >= (n - n / 1000) / 2 && batches <= (n - n / 1000) / 2 + 200);
}
