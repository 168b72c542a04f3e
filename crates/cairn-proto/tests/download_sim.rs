//! Deterministic simulations of `cairn_proto::download` against virtual peers: pipeline growth on
//! a fast peer, sharing between peers of different speeds, and a property test with failing,
//! hanging, leaving, lying and corrupt peers.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::time::{Duration, Instant};

use cairn_proto::download::{Action, Config, Download, Input};
use proptest::prelude::*;

/// splitmix64: the simulation's only source of randomness, seeded by the test.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn percent(&mut self, p: u32) -> bool {
        self.below(100) < u64::from(p)
    }
}

/// A virtual peer's behaviour.
#[derive(Debug, Clone)]
struct VPeer {
    /// Blocks it really holds.
    holds: Vec<bool>,
    /// Answers presence with `Complete` (it holds everything, or it lies).
    claims_complete: bool,
    /// Answers every batch with nothing.
    liar: bool,
    /// Its first answer fails verification.
    corrupt: bool,
    /// One-way latency range, µs.
    latency: (u64, u64),
    /// Serial service time per block (its bandwidth).
    per_block: Duration,
    fail_pct: u32,
    hang_pct: u32,
    /// Replies `DontHave` (empty ranges) when it holds nothing of a window.
    dont_have: bool,
    join_at: Duration,
    leave_at: Option<Duration>,
    /// Answers still arrive after it left.
    late_answers: bool,
}

impl VPeer {
    fn seeder(n: u64, latency_us: u64, bytes_per_sec: u64, block_size: u32) -> Self {
        VPeer {
            holds: vec![true; n as usize],
            claims_complete: true,
            liar: false,
            corrupt: false,
            latency: (latency_us, latency_us),
            per_block: Duration::from_secs_f64(f64::from(block_size) / bytes_per_sec as f64),
            fail_pct: 0,
            hang_pct: 0,
            dont_have: true,
            join_at: Duration::ZERO,
            leave_at: None,
            late_answers: false,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct PState {
    joined: bool,
    gone: bool,
    banned: bool,
    busy_until: Option<Instant>,
    claimed: Vec<bool>,
    served: u64,
    requests: u64,
    answered_corrupt: bool,
}

#[derive(Debug)]
enum Ev {
    Deliver(Input<u32>),
    Join(u32),
    Leave(u32),
    Local(Vec<u64>),
}

#[derive(Debug)]
struct Live {
    peer: u32,
    indices: Vec<u64>,
    deadline: Instant,
}

#[derive(Debug)]
struct Sim {
    dl: Download<u32>,
    config: Config,
    n: u64,
    block_size: u32,
    t0: Instant,
    now: Instant,
    rng: Rng,
    peers: Vec<VPeer>,
    state: Vec<PState>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Ev>,
    seq: u64,
    held: Vec<bool>,
    skip: Vec<bool>,
    requested: Vec<bool>,
    /// Arrived through `HaveLocally` while missing.
    local: Vec<bool>,
    live: BTreeMap<u64, Live>,
    completes: usize,
    complete_at: Option<Instant>,
    new_blocks_received: u64,
    max_window: usize,
    max_outstanding: usize,
    steps: u64,
    duplicates: u64,
}

impl Sim {
    fn new(
        config: Config,
        n: u64,
        block_size: u32,
        held: Vec<bool>,
        skip: Vec<bool>,
        peers: Vec<VPeer>,
        seed: u64,
    ) -> Self {
        let mut bitmap = vec![0u8; n.div_ceil(8) as usize];
        for (i, h) in held.iter().enumerate() {
            if *h {
                bitmap[i / 8] |= 1 << (i % 8);
            }
        }
        let skip_for_new = skip.clone();
        let dl = Download::new(config.clone(), n, block_size, &bitmap, move |i| {
            skip_for_new[i as usize]
        });
        let t0 = Instant::now();
        let state = vec![
            PState {
                claimed: vec![false; n as usize],
                ..PState::default()
            };
            peers.len()
        ];
        let mut sim = Sim {
            dl,
            config,
            n,
            block_size,
            t0,
            now: t0,
            rng: Rng(seed),
            peers,
            state,
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            held: (0..n as usize).map(|i| held[i] || skip[i]).collect(),
            skip,
            requested: vec![false; n as usize],
            local: vec![false; n as usize],
            live: BTreeMap::new(),
            completes: 0,
            complete_at: None,
            new_blocks_received: 0,
            max_window: 0,
            max_outstanding: 0,
            steps: 0,
            duplicates: 0,
        };
        for p in 0..sim.peers.len() {
            let join = sim.t0 + sim.peers[p].join_at;
            sim.push(join, Ev::Join(p as u32));
            if let Some(leave) = sim.peers[p].leave_at {
                let at = sim.t0 + leave;
                sim.push(at, Ev::Leave(p as u32));
            }
        }
        sim
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn latency(&mut self, p: usize) -> Duration {
        let (lo, hi) = self.peers[p].latency;
        Duration::from_micros(lo + self.rng.below(hi - lo + 1))
    }

    /// Runs until the download completes (true) or `limit` of virtual time passes.
    fn run(&mut self, limit: Duration) -> bool {
        while self.completes == 0 {
            self.steps += 1;
            assert!(self.steps < 2_000_000, "runaway simulation");
            let next_event = self.queue.peek().map(|Reverse((t, _))| *t);
            let next_tick = self.dl.next_deadline();
            let tick_first = match (next_tick, next_event) {
                (Some(d), Some(e)) => d <= e,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => return false,
            };
            if tick_first {
                let d = next_tick.unwrap_or(self.now);
                self.now = self.now.max(d);
                if self.now > self.t0 + limit {
                    return false;
                }
                let now = self.now;
                self.live.retain(|_, l| l.deadline > now);
                let actions = self.dl.tick(now);
                self.apply(actions);
            } else {
                let Some(Reverse((t, seq))) = self.queue.pop() else {
                    return false;
                };
                self.now = self.now.max(t);
                if self.now > self.t0 + limit {
                    return false;
                }
                if let Some(ev) = self.events.remove(&seq) {
                    self.deliver(ev);
                }
            }
        }
        true
    }

    fn deliver(&mut self, ev: Ev) {
        let now = self.now;
        let input = match ev {
            Ev::Join(p) => {
                self.state[p as usize].joined = true;
                Input::PeerAdded(p)
            }
            Ev::Leave(p) => {
                let st = &mut self.state[p as usize];
                if st.gone {
                    return;
                }
                st.gone = true;
                self.live.retain(|_, l| l.peer != p);
                Input::PeerRemoved(p)
            }
            Ev::Local(indices) => {
                for &i in &indices {
                    if !self.held[i as usize] {
                        self.held[i as usize] = true;
                        self.local[i as usize] = true;
                    }
                }
                Input::HaveLocally(indices)
            }
            Ev::Deliver(input) => {
                let peer = match &input {
                    Input::Presence { peer, .. }
                    | Input::BatchAnswered { peer, .. }
                    | Input::BatchFailed { peer, .. }
                    | Input::Misbehaved(peer) => *peer,
                    _ => unreachable!("only peer messages are delivered"),
                };
                let st = &self.state[peer as usize];
                if st.banned {
                    return;
                }
                let late_ok = self.peers[peer as usize].late_answers
                    && matches!(input, Input::BatchAnswered { .. });
                if st.gone && !late_ok {
                    return;
                }
                match &input {
                    Input::Presence {
                        ranges, complete, ..
                    } => {
                        let claimed = &mut self.state[peer as usize].claimed;
                        if *complete {
                            claimed.iter_mut().for_each(|c| *c = true);
                        }
                        for &(s, c) in ranges {
                            for i in s..s + c {
                                claimed[i as usize] = true;
                            }
                        }
                    }
                    Input::BatchAnswered {
                        request_id,
                        received,
                        ..
                    } => {
                        for &i in received {
                            if !self.held[i as usize] {
                                self.held[i as usize] = true;
                                self.new_blocks_received += 1;
                            }
                        }
                        if self.live.get(request_id).is_some_and(|l| l.peer == peer) {
                            self.live.remove(request_id);
                        }
                    }
                    Input::BatchFailed { request_id, .. }
                        if self.live.get(request_id).is_some_and(|l| l.peer == peer) =>
                    {
                        self.live.remove(request_id);
                    }
                    Input::Misbehaved(_) => {
                        self.live.retain(|_, l| l.peer != peer);
                    }
                    _ => {}
                }
                input
            }
        };
        let actions = self.dl.handle(input, now);
        self.apply(actions);
    }

    fn apply(&mut self, actions: Vec<Action<u32>>) {
        let now = self.now;
        // Progress mirrors what the simulation delivered, and never counts twice.
        let progress = self.dl.progress();
        assert_eq!(
            progress.held,
            self.held.iter().filter(|h| **h).count() as u64
        );
        assert_eq!(
            progress.bytes,
            self.new_blocks_received * u64::from(self.block_size)
        );
        for action in actions {
            match action {
                Action::AskPresence { peer, start, count } => {
                    let p = peer as usize;
                    assert!(
                        count >= 1
                            && count <= self.config.presence_window
                            && start + count <= self.n
                    );
                    assert!(!self.state[p].banned);
                    let lat = self.latency(p) * 2;
                    let vp = &self.peers[p];
                    let reply = if vp.claims_complete {
                        Some((vec![], true))
                    } else {
                        let mut ranges = Vec::new();
                        let mut i = start;
                        while i < start + count {
                            if vp.holds[i as usize] {
                                let s = i;
                                while i < start + count && vp.holds[i as usize] {
                                    i += 1;
                                }
                                ranges.push((s, i - s));
                            } else {
                                i += 1;
                            }
                        }
                        (!ranges.is_empty() || vp.dont_have).then_some((ranges, false))
                    };
                    if let Some((ranges, complete)) = reply {
                        self.push(
                            now + lat,
                            Ev::Deliver(Input::Presence {
                                peer,
                                ranges,
                                complete,
                            }),
                        );
                    }
                }
                Action::RequestBlocks {
                    peer,
                    request_id,
                    ranges,
                } => self.request(peer, request_id, ranges),
                Action::Ban(peer) => {
                    let st = &mut self.state[peer as usize];
                    assert!(
                        self.peers[peer as usize].corrupt,
                        "only corrupt peers are banned"
                    );
                    assert!(!st.banned, "banned twice");
                    st.banned = true;
                    st.gone = true;
                    self.live.retain(|_, l| l.peer != peer);
                }
                Action::Complete => {
                    self.completes += 1;
                    self.complete_at = Some(now);
                    assert!(self.held.iter().all(|h| *h), "Complete with blocks missing");
                }
            }
        }
        for p in 0..self.peers.len() {
            if let Some(stats) = self.dl.peer_stats(&(p as u32)) {
                self.max_window = self.max_window.max(stats.window);
                self.max_outstanding = self.max_outstanding.max(stats.outstanding);
            }
        }
    }

    fn request(&mut self, peer: u32, request_id: u64, ranges: Vec<(u64, u64)>) {
        let now = self.now;
        let p = peer as usize;
        assert!(
            !self.state[p].banned && !self.state[p].gone,
            "request to a departed peer"
        );
        // Shape.
        assert!(!ranges.is_empty());
        let total: u64 = ranges.iter().map(|r| r.1).sum();
        assert!(total >= 1 && total <= self.dl.batch_blocks() && total <= 32);
        assert!(total * u64::from(self.block_size) <= (4 << 20) || total == 1);
        for w in ranges.windows(2) {
            assert!(w[0].0 + w[0].1 < w[1].0, "ascending, disjoint: {ranges:?}");
        }
        let indices: Vec<u64> = ranges.iter().flat_map(|&(s, c)| s..s + c).collect();
        self.state[p].requests += 1;
        let mut duplicate = false;
        for &i in &indices {
            assert!(
                i < self.n && !self.skip[i as usize],
                "index {i} out of range or padding"
            );
            assert!(!self.held[i as usize], "block {i} already held");
            assert!(
                self.state[p].claimed[i as usize],
                "block {i} requested before peer {peer} claimed it"
            );
            for l in self.live.values() {
                if l.indices.contains(&i) {
                    assert_ne!(l.peer, peer, "block {i} twice to the same peer");
                    duplicate = true;
                }
            }
            self.requested[i as usize] = true;
        }
        if duplicate {
            self.duplicates += 1;
            assert!(
                self.dl.in_end_game(),
                "block in flight to two peers outside the end game"
            );
        }
        assert!(
            self.live.keys().all(|id| *id < request_id),
            "request ids increase"
        );
        self.live.insert(
            request_id,
            Live {
                peer,
                indices: indices.clone(),
                deadline: now + self.config.batch_timeout,
            },
        );
        // The virtual peer's answer.
        let lat_out = self.latency(p);
        let lat_back = self.latency(p);
        let vp = self.peers[p].clone();
        if self.rng.percent(vp.hang_pct) {
            return;
        }
        if self.rng.percent(vp.fail_pct) {
            self.push(
                now + lat_out + lat_back,
                Ev::Deliver(Input::BatchFailed { peer, request_id }),
            );
            return;
        }
        let arrive = now + lat_out;
        let start = self.state[p].busy_until.map_or(arrive, |b| b.max(arrive));
        let received: Vec<u64> = if vp.liar {
            vec![]
        } else {
            indices
                .iter()
                .copied()
                .filter(|&i| vp.holds[i as usize])
                .collect()
        };
        let done = start + vp.per_block * received.len() as u32;
        self.state[p].busy_until = Some(done);
        if vp.corrupt && !self.state[p].answered_corrupt {
            self.state[p].answered_corrupt = true;
            self.push(done + lat_back, Ev::Deliver(Input::Misbehaved(peer)));
            return;
        }
        self.state[p].served += received.len() as u64;
        let bytes = received.len() as u64 * u64::from(self.block_size);
        self.push(
            done + lat_back,
            Ev::Deliver(Input::BatchAnswered {
                peer,
                request_id,
                received,
                bytes,
            }),
        );
    }

    fn elapsed(&self) -> Duration {
        self.complete_at.unwrap_or(self.now) - self.t0
    }
}

fn fast_config() -> Config {
    Config {
        batch_bytes: 128 * 1024,
        ..Config::default()
    }
}

const MIB: f64 = 1024.0 * 1024.0;

fn throughput(sim: &Sim) -> f64 {
    let bytes = sim.n as f64 * f64::from(sim.block_size);
    bytes / sim.elapsed().as_secs_f64() / MIB
}

#[test]
fn window_grows_on_a_fast_peer_to_sustain_500_mib_per_sec() {
    // 256 MiB at 64 KiB (4096 blocks, 2048 batches of 128 KiB). The peer serves 2 GiB/s serially;
    // one-way latency 150 µs (round trip of a lone batch ≈ 0.36 ms) or 500 µs (≈ 1.06 ms).
    for one_way_us in [150u64, 500] {
        let n = 4096;
        let bs = 64 * 1024;
        let peer = VPeer::seeder(n, one_way_us, 2 << 30, bs);
        let mut sim = Sim::new(
            fast_config(),
            n,
            bs,
            vec![false; n as usize],
            vec![false; n as usize],
            vec![peer],
            1,
        );
        assert!(sim.run(Duration::from_secs(60)));
        let mib_s = throughput(&sim);
        let rtt = Duration::from_micros(2 * one_way_us) + Duration::from_micros(61);
        let needed = (500.0 * MIB * rtt.as_secs_f64() / (128.0 * 1024.0)).ceil() as usize;
        assert!(mib_s > 500.0, "{one_way_us} µs: {mib_s:.0} MiB/s");
        assert!(
            sim.max_outstanding > needed,
            "{one_way_us} µs: window {} (needs > {needed})",
            sim.max_window
        );
        assert!(sim.max_window <= 64);
        eprintln!(
            "one-way {one_way_us} µs: {mib_s:.0} MiB/s, window up to {}, {:?}",
            sim.max_window,
            sim.elapsed()
        );
    }
}

#[test]
fn ramp_up_is_fast_enough_for_short_transfers() {
    // 16 MiB (128 batches) over a 1 ms round trip at 2 GiB/s: the ramp must not dominate.
    let n = 256;
    let bs = 64 * 1024;
    let peer = VPeer::seeder(n, 500, 2 << 30, bs);
    let mut sim = Sim::new(
        fast_config(),
        n,
        bs,
        vec![false; n as usize],
        vec![false; n as usize],
        vec![peer],
        2,
    );
    assert!(sim.run(Duration::from_secs(10)));
    let mib_s = throughput(&sim);
    assert!(mib_s > 500.0, "{mib_s:.0} MiB/s in {:?}", sim.elapsed());
}

#[test]
fn window_settles_near_the_bdp_on_a_slow_link() {
    // 10 MiB/s at 50 ms one-way latency: BDP ≈ 1 MiB = 8 batches; the window must not run to 64.
    let n = 1024;
    let bs = 64 * 1024;
    let peer = VPeer::seeder(n, 50_000, 10 << 20, bs);
    let mut sim = Sim::new(
        fast_config(),
        n,
        bs,
        vec![false; n as usize],
        vec![false; n as usize],
        vec![peer],
        3,
    );
    assert!(sim.run(Duration::from_secs(600)));
    let stats = sim.dl.peer_stats(&0).expect("peer");
    assert!((12..=24).contains(&stats.window), "window {}", stats.window);
    assert!(throughput(&sim) > 8.0, "{:.1} MiB/s", throughput(&sim));
}

#[test]
fn peers_share_the_work_and_faster_ones_do_more() {
    let n = 2048;
    let bs = 64 * 1024;
    let peers = vec![
        VPeer::seeder(n, 200, 1 << 30, bs),
        VPeer::seeder(n, 200, 200 << 20, bs),
        VPeer::seeder(n, 2_000, 50 << 20, bs),
    ];
    let mut sim = Sim::new(
        fast_config(),
        n,
        bs,
        vec![false; n as usize],
        vec![false; n as usize],
        peers,
        4,
    );
    assert!(sim.run(Duration::from_secs(60)));
    let served: Vec<u64> = sim.state.iter().map(|s| s.served).collect();
    assert!(
        served[0] > served[1] && served[1] > served[2] && served[2] > 0,
        "{served:?}"
    );
    // Close to the aggregate capacity (1.25 GiB/s).
    let mib_s = throughput(&sim);
    assert!(mib_s > 900.0, "{mib_s:.0} MiB/s, served {served:?}");
}

#[test]
fn end_game_rescues_a_hanging_peer() {
    // One peer swallows every request; the other must finish without waiting 30 s per batch.
    let n = 256;
    let bs = 64 * 1024;
    let mut hanging = VPeer::seeder(n, 200, 1 << 30, bs);
    hanging.hang_pct = 100;
    let good = VPeer::seeder(n, 400, 200 << 20, bs);
    let mut sim = Sim::new(
        fast_config(),
        n,
        bs,
        vec![false; n as usize],
        vec![false; n as usize],
        vec![hanging, good],
        5,
    );
    assert!(sim.run(Duration::from_secs(600)));
    assert!(
        sim.elapsed() < Duration::from_secs(1),
        "{:?}",
        sim.elapsed()
    );
    assert!(sim.duplicates > 0);
}

/// A random scenario: two honest, stable peers whose holdings together cover the dataset, plus
/// up to five peers that fail, hang, leave, lie or send corrupt blocks.
fn scenario(seed: u64, n: u64, extra: usize) -> Sim {
    let mut rng = Rng(seed);
    let bs = 4096u32;
    let config = Config {
        batch_bytes: u64::from(bs) * (1 + rng.below(8)),
        initial_inflight: 1 + rng.below(6) as usize,
        min_inflight: 1 + rng.below(2) as usize,
        max_inflight: 2 + rng.below(30) as usize,
        batch_timeout: Duration::from_millis(200 + rng.below(800)),
        presence_window: 8 + rng.below(200),
        presence_refresh: Duration::from_millis(100 + rng.below(900)),
        presence_retry: Duration::from_millis(20 + rng.below(200)),
    };
    let held: Vec<bool> = (0..n).map(|_| rng.percent(10)).collect();
    let skip_mod = 3 + rng.below(20);
    let skip: Vec<bool> = (0..n)
        .map(|i| rng.percent(30) && i % skip_mod == 0)
        .collect();
    // Random runs for peer 0, the complement (plus some overlap) for peer 1.
    let mut a = vec![false; n as usize];
    let mut i = 0;
    while i < n {
        let len = 1 + rng.below(40);
        let on = rng.percent(50);
        for j in i..(i + len).min(n) {
            a[j as usize] = on;
        }
        i += len;
    }
    let b: Vec<bool> = a.iter().map(|x| !x || rng.percent(20)).collect();
    let mut peers = Vec::new();
    for holds in [a, b] {
        let lo = 1000 + rng.below(20_000);
        peers.push(VPeer {
            claims_complete: holds.iter().all(|h| *h),
            holds,
            liar: false,
            corrupt: false,
            latency: (lo, lo + rng.below(30_000)),
            per_block: Duration::from_micros(100 + rng.below(3000)),
            fail_pct: 0,
            hang_pct: 0,
            dont_have: rng.percent(50),
            join_at: Duration::from_millis(rng.below(1000)),
            leave_at: None,
            late_answers: false,
        });
    }
    for k in 0..extra {
        let lo = 50 + rng.below(20_000);
        let complete = rng.percent(40);
        let holds: Vec<bool> = if complete {
            vec![true; n as usize]
        } else {
            (0..n).map(|_| rng.percent(60)).collect()
        };
        let role = k % 5;
        peers.push(VPeer {
            claims_complete: complete || role == 2,
            holds,
            liar: role == 2,
            corrupt: role == 4,
            latency: (lo, lo + rng.below(30_000)),
            per_block: Duration::from_micros(1 + rng.below(500)),
            fail_pct: if role == 0 {
                10 + rng.below(60) as u32
            } else {
                rng.below(5) as u32
            },
            hang_pct: if role == 1 {
                20 + rng.below(80) as u32
            } else {
                0
            },
            dont_have: rng.percent(50),
            join_at: Duration::from_millis(rng.below(300)),
            leave_at: (role == 3 || rng.percent(20))
                .then(|| Duration::from_millis(300 + rng.below(1500))),
            late_answers: rng.percent(50),
        });
    }
    let mut sim = Sim::new(config, n, bs, held, skip, peers, rng.next());
    // Some blocks arrive through another download of the same tree.
    for _ in 0..rng.below(4) {
        let at = sim.t0 + Duration::from_millis(rng.below(2000));
        let local: Vec<u64> = (0..1 + rng.below(20)).map(|_| rng.below(n)).collect();
        sim.push(at, Ev::Local(local));
    }
    sim
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn simulation_always_completes_without_illegal_requests(
        seed in any::<u64>(),
        n in 1u64..400,
        extra in 0usize..6,
    ) {
        let mut sim = scenario(seed, n, extra);
        let missing_at_start: Vec<u64> = (0..n).filter(|&i| !sim.held[i as usize]).collect();
        prop_assert!(sim.run(Duration::from_secs(3600)), "stuck: held {:?}, {:?}", sim.dl.progress(), sim.dl);
        prop_assert_eq!(sim.completes, 1);
        prop_assert!(sim.dl.is_complete());
        prop_assert!(sim.held.iter().all(|h| *h));
        // Every block missing at the start was requested, or arrived locally first.
        for &i in &missing_at_start {
            prop_assert!(sim.requested[i as usize] || sim.local[i as usize], "block {} never requested", i);
        }
        // A liar is trusted again only after a presence refresh: at most a window per refresh.
        let rounds = sim.elapsed().as_millis() / sim.config.presence_refresh.as_millis() + 2;
        for (p, vp) in sim.peers.iter().enumerate() {
            if vp.liar {
                let bound = rounds as u64 * sim.config.max_inflight as u64;
                prop_assert!(sim.state[p].requests <= bound, "liar got {} requests (bound {})", sim.state[p].requests, bound);
            }
        }
        // After completion nothing more happens.
        let now = sim.now + Duration::from_secs(100);
        prop_assert!(sim.dl.tick(now).is_empty());
        prop_assert_eq!(sim.dl.next_deadline(), None);
    }
}
