//! Durability slice S1 end to end: swarms, invites, joins, members, revocation, restart, and
//! a replicated dataset placed on distinct holders. Real nodes on 127.0.0.1 with OS ports;
//! every wait is bounded.

mod common;

use std::time::Duration;

use cairn_node::{DurabilityConfig, HumanDuration, NodeConfig};
use common::{BASE, TestNode, pattern};

const WAIT: Duration = Duration::from_secs(60);

fn fast(c: &mut NodeConfig) {
    let d = |s: &str| Some(HumanDuration::parse(s).unwrap());
    c.durability = DurabilityConfig {
        beacon_interval: d("2s"),
        sync_interval: d("2s"),
        min_member_age: d("0s"),
        offer_timeout: d("20s"),
        spare_ttl: d("10s"),
        ..DurabilityConfig::default()
    };
}

fn json_post(n: &TestNode, path: &str, body: serde_json::Value) -> common::Reply {
    n.post(
        &format!("{BASE}{path}"),
        body.to_string().as_bytes(),
        &[("content-type", "application/json")],
    )
}

fn create_swarm(owner: &TestNode) -> String {
    let r = json_post(owner, "/swarms", serde_json::json!({"name": "club"}));
    assert_eq!(r.status, 201, "{}", r.text());
    let v = r.json();
    assert!(v["invite"].is_null(), "invite swarms use /invites");
    v["swarmId"].as_str().unwrap().to_owned()
}

fn invite(owner: &TestNode, swarm: &str, peer: &str) -> String {
    let r = json_post(
        owner,
        &format!("/swarms/{swarm}/invites"),
        serde_json::json!({"peerId": peer}),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["invite"].as_str().unwrap().to_owned()
}

fn join(node: &TestNode, swarm: &str, invite: &str) {
    let r = json_post(
        node,
        &format!("/swarms/{swarm}/join"),
        serde_json::json!({"invite": invite}),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["swarmId"], swarm);
}

fn members(n: &TestNode, swarm: &str) -> Vec<serde_json::Value> {
    let r = n.get(&format!("{BASE}/swarms/{swarm}/members"));
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["members"].as_array().unwrap().clone()
}

fn state_of(members: &[serde_json::Value], peer: &str) -> Option<String> {
    members
        .iter()
        .find(|m| m["peerId"] == peer)
        .map(|m| m["state"].as_str().unwrap_or("").to_owned())
}

fn wait_members(n: &TestNode, swarm: &str, want: &[(&str, &str)]) {
    let path = format!("{BASE}/swarms/{swarm}/members");
    n.wait_json(&path, WAIT, |v| {
        let m = v["members"].as_array().cloned().unwrap_or_default();
        want.iter()
            .all(|(p, s)| state_of(&m, p).as_deref() == Some(*s))
    });
}

fn error_code(r: &common::Reply) -> String {
    r.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[test]
fn invite_join_members_revoke_restart() {
    let a = TestNode::start_with(fast);
    let b = TestNode::start_joined(&[&a], fast);
    let c = TestNode::start_joined(&[&a], fast);
    let d = TestNode::start_joined(&[&a], fast);
    let swarm = create_swarm(&a);
    let (pa, pb, pc, pd) = (a.peer_id(), b.peer_id(), c.peer_id(), d.peer_id());

    // Bad input.
    let r = a.post(&format!("{BASE}/swarms"), b"{not json", &[]);
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(error_code(&r), "invalid_argument");
    let r = json_post(
        &a,
        "/swarms",
        serde_json::json!({"name": "x", "colour": "red"}),
    );
    assert_eq!(r.status, 400, "unknown fields are refused");
    let r = json_post(
        &a,
        "/swarms",
        serde_json::json!({"name": "x", "lostAfterSecs": 60}),
    );
    assert_eq!(r.status, 400);
    let other = cairn_core::durability::SwarmId([7; 32]).to_text();
    let r = b.get(&format!("{BASE}/swarms/{other}/members"));
    assert_eq!(r.status, 404);
    assert_eq!(error_code(&r), "unknown_swarm");
    let r = b.get(&format!("{BASE}/swarms/{other}"));
    assert_eq!(r.status, 404);
    let r = b.get(&format!("{BASE}/swarms/not-a-swarm"));
    assert_eq!(r.status, 400);

    let inv_b = invite(&a, &swarm, &pb);
    assert!(inv_b.starts_with("cairn-invite:"));
    // D joins with B's invite: the certificate names another node.
    let r = json_post(
        &d,
        &format!("/swarms/{swarm}/join"),
        serde_json::json!({"invite": inv_b}),
    );
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(error_code(&r), "not_authorized");
    // The invite's swarm is not the path's.
    let r = json_post(
        &d,
        &format!("/swarms/{other}/join"),
        serde_json::json!({"invite": inv_b}),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let r = json_post(
        &d,
        &format!("/swarms/{swarm}/join"),
        serde_json::json!({"invite": "garbage"}),
    );
    assert_eq!(r.status, 400);
    // Only the owner or an admin invites.
    let r = json_post(
        &b,
        &format!("/swarms/{swarm}/invites"),
        serde_json::json!({"peerId": pd}),
    );
    assert_eq!(r.status, 404, "B is not a member yet");

    join(&b, &swarm, &inv_b);
    let r = json_post(
        &b,
        &format!("/swarms/{swarm}/join"),
        serde_json::json!({"invite": inv_b}),
    );
    assert_eq!(r.status, 409, "already a member");
    let inv_c = invite(&a, &swarm, &pc);
    join(&c, &swarm, &inv_c);

    let all = [
        (pa.as_str(), "present"),
        (pb.as_str(), "present"),
        (pc.as_str(), "present"),
    ];
    for n in [&a, &b, &c] {
        wait_members(n, &swarm, &all);
    }
    assert_eq!(state_of(&members(&a, &swarm), &pd), None, "D never joined");
    let r = json_post(
        &b,
        &format!("/swarms/{swarm}/invites"),
        serde_json::json!({"peerId": pd}),
    );
    assert_eq!(r.status, 403, "a plain member may not invite");
    let r = b.delete(&format!("{BASE}/swarms/{swarm}/members/{pa}"));
    assert_eq!(r.status, 403, "{}", r.text());

    let list = b.get(&format!("{BASE}/swarms")).json();
    assert_eq!(list[0]["swarmId"], swarm.as_str());
    assert_eq!(list[0]["role"], "storer");
    assert_eq!(a.get(&format!("{BASE}/swarms")).json()[0]["role"], "owner");
    let shown = b.get(&format!("{BASE}/swarms/{swarm}")).json();
    assert_eq!(shown["incarnation"], 1);
    assert_eq!(shown["policy"]["admission"], "invite");

    // Revoke C; everyone sees it.
    let r = a.delete(&format!("{BASE}/swarms/{swarm}/members/{pc}"));
    assert_eq!(r.status, 204, "{}", r.text());
    for n in [&a, &b] {
        wait_members(n, &swarm, &[(pc.as_str(), "revoked")]);
    }
    let r = a.get(&format!("{BASE}/swarms/{swarm}/members?state=revoked"));
    let m = r.json()["members"].as_array().unwrap().clone();
    assert_eq!(m.len(), 1);
    assert_eq!(m[0]["peerId"], pc.as_str());
    assert!(r.json()["next"].is_null());
    assert_eq!(
        a.get(&format!("{BASE}/swarms/{swarm}/members?state=bogus"))
            .status,
        400
    );

    // Restart B: it keeps its swarm, its facts, and its incarnation grows.
    let a_addr = a.p2p_addr();
    let dir = b.stop();
    let b = TestNode::start_in(dir, |cfg| {
        fast(cfg);
        cfg.bootstrap_node = vec![a_addr];
    });
    let list = b.get(&format!("{BASE}/swarms")).json();
    assert_eq!(
        list[0]["swarmId"],
        swarm.as_str(),
        "swarm kept across the restart"
    );
    let m = members(&b, &swarm);
    assert_eq!(state_of(&m, &pc).as_deref(), Some("revoked"), "facts kept");
    assert!(state_of(&m, &pa).is_some());
    assert_eq!(
        b.get(&format!("{BASE}/swarms/{swarm}")).json()["incarnation"],
        2
    );
    // And it is still a live member: A hears its beacons with the new incarnation.
    a.wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        v["members"].as_array().is_some_and(|m| {
            m.iter()
                .any(|x| x["peerId"] == pb.as_str() && x["incarnation"] == 2)
        })
    });
    // S2 paths are not routed.
    let cid_path = format!("{BASE}/swarms/{swarm}/datasets/zDvZRwzm/verify");
    assert_eq!(b.post(&cid_path, b"", &[]).status, 404);
}

#[test]
fn replicated_dataset_is_placed_on_three_holders() {
    let a = TestNode::start_with(fast);
    let others: Vec<TestNode> = (0..4)
        .map(|_| TestNode::start_joined(&[&a], fast))
        .collect();
    let swarm = create_swarm(&a);
    for n in &others {
        let inv = invite(&a, &swarm, &n.peer_id());
        join(n, &swarm, &inv);
    }
    // Every member known to the announcer, with a beacon (room) from each.
    a.wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        let m = v["members"].as_array().cloned().unwrap_or_default();
        m.len() == 5
            && m.iter()
                .all(|x| x["state"] == "present" && !x["freeBytesLog2"].is_null())
    });

    let data = pattern(300_000, 11);
    let r = a.post(
        &format!("{BASE}/swarms/{swarm}/datasets?policy=replicate:3&filename=f.bin"),
        &data,
        &[("content-type", "application/octet-stream")],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert_eq!(v["policy"]["kind"], "replicate");
    assert_eq!(v["policy"]["replicas"], 3);
    let cid = v["datasetCid"].as_str().unwrap().to_owned();

    let health = a.wait_json(
        &format!("{BASE}/swarms/{swarm}/datasets/{cid}/health"),
        Duration::from_secs(120),
        |h| h["state"] == "healthy" && h["counts"]["reachable"] == 3,
    );
    assert_eq!(health["distinctHolders"], 3);
    assert_eq!(health["available"], true);
    let holders: Vec<String> = health["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["holder"].as_str().unwrap().to_owned())
        .collect();
    let mut distinct = holders.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 3);
    // The announcer holds its own upload (§8 preference).
    assert!(holders.contains(&a.peer_id()));

    // Each holder verified and pinned the bytes; a holder may not delete them.
    let all: Vec<&TestNode> = std::iter::once(&a).chain(others.iter()).collect();
    for n in all.iter().filter(|n| holders.contains(&n.peer_id())) {
        let r = n.get(&format!("{BASE}/data/{cid}/network/stream"));
        assert_eq!(r.status, 200);
        assert_eq!(r.body, data, "holder serves the exact bytes");
        let list = n.get(&format!("{BASE}/data")).json();
        let entry = list["content"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["cid"] == cid.as_str())
            .cloned()
            .expect("holder lists the dataset");
        let _ = entry;
        let r = n.delete(&format!("{BASE}/data/{cid}"));
        assert_eq!(r.status, 409, "{}", r.text());
        let r = n.post(
            &format!("{BASE}/data/{cid}/advertise?advertise=false"),
            b"",
            &[],
        );
        assert_eq!(r.status, 409);
        assert_eq!(n.space()["quotaReservedBytes"], 0);
        // A slot counts what the store uses: blocksCount × blockSize (5 × 64 KiB).
        let shown = n.get(&format!("{BASE}/swarms/{swarm}")).json();
        assert_eq!(shown["usedBytes"], 5 * 65_536, "{shown}");
    }
    // Every member sees the dataset and the claims.
    for n in &others {
        n.wait_json(
            &format!("{BASE}/swarms/{swarm}/datasets/{cid}/health"),
            WAIT,
            |h| h["counts"]["reachable"] == 3,
        );
        let ds = n.get(&format!("{BASE}/swarms/{swarm}/datasets")).json();
        assert_eq!(ds[0]["datasetCid"], cid.as_str());
    }
    let unknown = a.get(&format!(
        "{BASE}/swarms/{swarm}/datasets/zDvZRwzmAaHqV5kAkVbQ5t3yQmvUYbGqKjzYhBQSuJsKwTvwx8dW/health"
    ));
    assert!(
        unknown.status == 404 || unknown.status == 400,
        "{}",
        unknown.text()
    );
}

/// Builds a swarm of `n` nodes (the first is the owner), every member admitted by invite; the
/// join quota of node `i` is `quota(i)` (`None` = the node's quota). Waits until the owner sees
/// every member present with a beacon.
fn build_swarm(n: usize, quota: impl Fn(usize) -> Option<u64>) -> (Vec<TestNode>, String) {
    let a = TestNode::start_with(fast);
    let mut nodes = vec![a];
    for _ in 1..n {
        let node = TestNode::start_joined(&[&nodes[0]], fast);
        nodes.push(node);
    }
    let swarm = create_swarm(&nodes[0]);
    for (i, node) in nodes.iter().enumerate().skip(1) {
        let inv = invite(&nodes[0], &swarm, &node.peer_id());
        let mut body = serde_json::json!({"invite": inv});
        if let Some(q) = quota(i) {
            body["quotaBytes"] = q.into();
        }
        let r = json_post(node, &format!("/swarms/{swarm}/join"), body);
        assert_eq!(r.status, 200, "{}", r.text());
    }
    nodes[0].wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        let m = v["members"].as_array().cloned().unwrap_or_default();
        m.len() == n
            && m.iter()
                .all(|x| x["state"] == "present" && !x["freeBytesLog2"].is_null())
    });
    (nodes, swarm)
}

/// Uploads and announces `data` with `policy`; returns the dataset CID.
fn announce(n: &TestNode, swarm: &str, policy: &str, data: &[u8]) -> (String, serde_json::Value) {
    let r = n.post(
        &format!("{BASE}/swarms/{swarm}/datasets?policy={policy}&filename=f.bin"),
        data,
        &[("content-type", "application/octet-stream")],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    (v["datasetCid"].as_str().unwrap().to_owned(), v)
}

/// Polls until the node stores `cid` locally with exactly `data`.
fn wait_holds(n: &TestNode, cid: &str, data: &[u8], timeout: Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let r = n.get(&format!("{BASE}/data/{cid}"));
        if r.status == 200 {
            assert_eq!(r.body, data, "the kept bytes are the announced ones");
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never held {cid}: {} {}",
            n.peer_id(),
            r.status,
            r.text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn holds_locally(n: &TestNode, cid: &str) -> bool {
    n.get(&format!("{BASE}/data/{cid}/exists")).json()[cid] == true
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn none_datasets_are_kept_by_every_storer_oldest_evicted_first() {
    // D keeps 2 of the 300 kB datasets; the others keep everything.
    let (nodes, swarm) = build_swarm(4, |i| (i == 3).then_some(700_000));
    let (a, d) = (&nodes[0], &nodes[3]);
    let datas: Vec<Vec<u8>> = (0..3).map(|i| pattern(300_000, 40 + i)).collect();
    let mut cids = Vec::new();
    for data in &datas {
        // Announces a second apart: eviction goes by `announced_at` (unix s).
        let second = unix_now();
        while unix_now() == second {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (cid, v) = announce(a, &swarm, "none", data);
        assert_eq!(v["policy"]["kind"], "none");
        assert_eq!(v["state"], "unmanaged");
        for n in &nodes[1..] {
            wait_holds(n, &cid, data, WAIT);
        }
        cids.push(cid);
    }
    // D evicted the oldest when the newest arrived; it never deletes anything else.
    assert!(!holds_locally(d, &cids[0]), "the oldest was evicted");
    wait_holds(d, &cids[1], &datas[1], WAIT);
    wait_holds(d, &cids[2], &datas[2], WAIT);
    for n in &nodes[1..3] {
        for (cid, data) in cids.iter().zip(&datas) {
            wait_holds(n, cid, data, WAIT);
        }
    }
    let shown = d.get(&format!("{BASE}/swarms/{swarm}")).json();
    assert_eq!(shown["cachedDatasets"], 2);
    // The quota counts what the store uses: 5 blocks of 64 KiB per 300 kB dataset.
    assert_eq!(shown["usedBytes"], 2 * 5 * 65_536);
    // The announcer keeps its uploads.
    for (cid, data) in cids.iter().zip(&datas) {
        wait_holds(a, cid, data, WAIT);
    }

    // Health: unmanaged, with the members among the providers (here: all four).
    let h = nodes[1].wait_json(
        &format!("{BASE}/swarms/{swarm}/datasets/{}/health", cids[2]),
        WAIT,
        |h| h["providers"] == 4,
    );
    assert_eq!(h["state"], "unmanaged");
    assert_eq!(h["available"], true);
    assert_eq!(h["counts"]["slots"], 0);
    let list = a.get(&format!("{BASE}/swarms/{swarm}/datasets")).json();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .all(|x| x["state"] == "unmanaged")
    );

    // Restart D: it still keeps the two newest, and does not fetch the evicted one again.
    let a_addr = a.p2p_addr();
    let mut nodes = nodes;
    let d = nodes.pop().unwrap();
    let dir = d.stop();
    let d = TestNode::start_in(dir, |cfg| {
        fast(cfg);
        cfg.bootstrap_node = vec![a_addr];
    });
    let shown = d.get(&format!("{BASE}/swarms/{swarm}")).json();
    assert_eq!(shown["cachedDatasets"], 2, "kept data survives a restart");
    wait_holds(&d, &cids[1], &datas[1], WAIT);
    wait_holds(&d, &cids[2], &datas[2], WAIT);
    // Let a scan run (every 5 s), then check the evicted one stayed out.
    d.wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().filter(|x| x["state"] == "present").count() == 4)
    });
    assert!(!holds_locally(&d, &cids[0]));
    assert_eq!(
        d.get(&format!("{BASE}/swarms/{swarm}")).json()["usedBytes"],
        2 * 5 * 65_536
    );
}

/// `(holder, generation)` of every slot in a health view.
fn claims_of(h: &serde_json::Value) -> Vec<(String, u64)> {
    h["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["holder"].as_str().unwrap_or("").to_owned(),
                s["generation"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect()
}

#[test]
fn twenty_mib_on_three_holders_survives_restart_and_uploader_loss() {
    // Owner A admits 5; B uploads 20 MiB with replicate 3.
    let (nodes, swarm) = build_swarm(6, |_| None);
    let b = &nodes[1];
    let data = pattern(20 * 1024 * 1024, 77);
    let (cid, v) = announce(b, &swarm, "replicate:3", &data);
    assert_eq!(v["policy"]["replicas"], 3);
    let health_path = format!("{BASE}/swarms/{swarm}/datasets/{cid}/health");
    let health = b.wait_json(&health_path, Duration::from_secs(90), |h| {
        h["state"] == "healthy" && h["counts"]["reachable"] == 3
    });
    assert_eq!(health["distinctHolders"], 3);
    let claims = claims_of(&health);
    assert!(claims.iter().all(|(_, g)| *g == 0), "{claims:?}");
    let holders: Vec<String> = claims.iter().map(|(h, _)| h.clone()).collect();
    assert!(holders.contains(&b.peer_id()), "the uploader keeps a copy");
    for n in nodes.iter().filter(|n| holders.contains(&n.peer_id())) {
        let r = n.get(&format!("{BASE}/data/{cid}"));
        assert_eq!(r.status, 200);
        assert!(r.body == data, "holder {} has the exact bytes", n.peer_id());
        assert_eq!(
            n.delete(&format!("{BASE}/data/{cid}")).status,
            409,
            "pinned for the slot"
        );
    }
    for n in nodes.iter().filter(|n| !holders.contains(&n.peer_id())) {
        assert!(!holds_locally(n, &cid), "only the three holders store it");
    }

    // Restart a holder other than the uploader and the owner: it keeps its slot and claim;
    // nothing moves.
    let idx = nodes
        .iter()
        .enumerate()
        .position(|(i, n)| i >= 2 && holders.contains(&n.peer_id()))
        .unwrap();
    let mut nodes = nodes;
    let h = nodes.remove(idx);
    let hp = h.peer_id();
    let a_addr = nodes[0].p2p_addr();
    let dir = h.stop();
    let h = TestNode::start_in(dir, |cfg| {
        fast(cfg);
        cfg.bootstrap_node = vec![a_addr];
    });
    assert!(
        holds_locally(&h, &cid),
        "the slot's data survives the restart"
    );
    let mine = h.get(&health_path).json();
    assert_eq!(
        claims_of(&mine),
        claims,
        "the holder's claim table is unchanged"
    );
    assert_eq!(
        h.get(&format!("{BASE}/swarms/{swarm}")).json()["usedBytes"],
        data.len() as u64
    );
    assert_eq!(h.delete(&format!("{BASE}/data/{cid}")).status, 409);
    // The uploader hears the restarted holder (new incarnation); same holders, generation 0.
    let b = &nodes[1];
    b.wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        v["members"].as_array().is_some_and(|m| {
            m.iter().any(|x| {
                x["peerId"] == hp.as_str() && x["incarnation"] == 2 && x["state"] == "present"
            })
        })
    });
    let after = b.wait_json(&health_path, WAIT, |h| h["state"] == "healthy");
    assert_eq!(claims_of(&after), claims, "no re-placement");
    assert_eq!(after["counts"]["spares"], 0);

    // Stop the uploader; a 7th node joining later fetches the dataset from the holders, and
    // its view (built by anti-entropy alone) has the same claims as a holder's.
    let mut nodes = nodes;
    let b = nodes.remove(1);
    drop(b.stop());
    let a = &nodes[0];
    let g = TestNode::start_joined(&[a, &h], fast);
    let inv = invite(a, &swarm, &g.peer_id());
    join(&g, &swarm, &inv);
    let seen = g.wait_json(&format!("{BASE}/swarms/{swarm}/datasets"), WAIT, |v| {
        v.as_array()
            .is_some_and(|l| l.iter().any(|d| d["datasetCid"] == cid.as_str()))
    });
    assert_eq!(seen[0]["policy"]["replicas"], 3);
    let g_view = g.wait_json(&health_path, WAIT, |v| claims_of(v) == claims);
    assert_eq!(g_view["distinctHolders"], 3);
    let r = g.get(&format!("{BASE}/data/{cid}/network/stream"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body == data, "the late joiner got the exact bytes");
    let _ = a;
}

/// A content server with nothing to serve (the raw publisher of the hostile-input test).
struct Nothing;

impl cairn_net::ContentServer for Nothing {
    fn manifest(&self, _: &cairn_core::Cid) -> Option<bytes::Bytes> {
        None
    }
    fn presence(&self, _: &cairn_core::Cid, _: u64, _: u64) -> Option<(Vec<(u64, u64)>, bool)> {
        None
    }
    fn blocks(&self, _: &cairn_core::Cid, _: &[u64]) -> Vec<cairn_net::ServedBlock> {
        Vec::new()
    }
}

/// The durability key of a test node (its `node.key`).
fn node_keypair(n: &TestNode) -> cairn_core::durability::Keypair {
    let file = std::fs::read(n._dir.path().join("node.key")).unwrap();
    // libp2p PrivateKey{Type = Ed25519, Data = seed ‖ public}: the seed follows 4 header bytes.
    assert_eq!(&file[..4], &[0x08, 0x01, 0x12, 0x40]);
    let seed: [u8; 32] = file[4..36].try_into().unwrap();
    let k = cairn_core::durability::Keypair::from_seed(&seed);
    assert_eq!(k.peer_id().to_base58(), n.peer_id());
    k
}

/// Publishes `data` on `topic` from a fresh raw node connected to `victim` (a new network
/// identity each time, so one message's penalty cannot mute the next); returns the gossip id.
fn publish_raw(victim: &TestNode, topic: &str, data: Vec<u8>) -> String {
    let id = hex_of(cairn_net::GossipId::of(&data).as_bytes());
    let addr: cairn_net::Multiaddr = victim.p2p_addr().parse().unwrap();
    let peer: cairn_net::PeerId = victim.peer_id().parse().unwrap();
    victim.rt.block_on(async {
        let config = cairn_net::NetConfig {
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            listen_port: 0,
            ..cairn_net::NetConfig::default()
        };
        let identity = cairn_net::Identity::generate();
        let (net, mut events) =
            cairn_net::Network::start(&identity, config, std::sync::Arc::new(Nothing))
                .await
                .unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        net.connect(peer, vec![addr]).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        // Retried until gossipsub has learnt the victim's subscription.
        while net
            .publish(topic.to_owned(), data.clone().into())
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "could not publish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Keep the connection until the victim has judged the message.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            net.shutdown().await;
        });
    });
    id
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Publishes `data` from fresh raw nodes until `victim` has judged it; returns the gossip id.
/// A raw node may learn another member's subscription before the victim's, and then gossip
/// sends the message there only (that member rejects it and does not forward it), so one
/// publish is not always seen by the victim.
fn publish_until_judged(victim: &TestNode, swarm: &str, topic: &str, data: Vec<u8>) -> String {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let id = publish_raw(victim, topic, data.clone());
        let judged_by = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < judged_by {
            let v = victim.get(&format!("{BASE}/swarms/{swarm}")).json();
            let seen = v["gossip"]["recent"]
                .as_array()
                .is_some_and(|r| r.iter().any(|x| x["msgId"] == id.as_str()));
            if seen {
                return id;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the victim never judged {id}"
        );
    }
}

/// Waits for the victim's verdict on a gossip message.
fn verdict_of(victim: &TestNode, swarm: &str, id: &str) -> (String, String) {
    let v = victim.wait_json(&format!("{BASE}/swarms/{swarm}"), WAIT, |v| {
        v["gossip"]["recent"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["msgId"] == id))
    });
    let x = v["gossip"]["recent"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["msgId"] == id)
        .unwrap()
        .clone();
    (
        x["verdict"].as_str().unwrap().to_owned(),
        x["reason"].as_str().unwrap_or("").to_owned(),
    )
}

/// What hostile input must not change: members (peer, state, storer) and datasets with their
/// claims.
fn view_of(n: &TestNode, swarm: &str) -> serde_json::Value {
    let mut members: Vec<(String, String, bool)> = members(n, swarm)
        .iter()
        .map(|m| {
            (
                m["peerId"].as_str().unwrap().to_owned(),
                m["state"].as_str().unwrap().to_owned(),
                m["storer"].as_bool().unwrap(),
            )
        })
        .collect();
    members.sort();
    let datasets = n.get(&format!("{BASE}/swarms/{swarm}/datasets")).json();
    let mut health = Vec::new();
    for d in datasets.as_array().unwrap() {
        let cid = d["datasetCid"].as_str().unwrap();
        let h = n
            .get(&format!("{BASE}/swarms/{swarm}/datasets/{cid}/health"))
            .json();
        health.push(serde_json::json!([h["state"], claims_of(&h)]));
    }
    serde_json::json!({"members": members, "datasets": datasets, "health": health})
}

#[test]
fn hostile_gossip_is_rejected_or_ignored_and_changes_nothing() {
    use cairn_core::durability::messages as pb;
    use cairn_core::durability::{Envelope, Keypair, Kind, SwarmId};

    let (nodes, swarm) = build_swarm(3, |_| None);
    let (a, victim, m) = (&nodes[0], &nodes[1], &nodes[2]);
    let (cid, _) = announce(a, &swarm, "replicate:2", &pattern(100_000, 5));
    victim.wait_json(
        &format!("{BASE}/swarms/{swarm}/datasets/{cid}/health"),
        WAIT,
        |h| h["state"] == "healthy",
    );
    let sid = SwarmId::from_text(&swarm).unwrap();
    let ctl = cairn_net::ctl_topic(sid.as_bytes());
    let before = view_of(victim, &swarm);
    let now = unix_now();
    let beacon = |incarnation: u64, seq: u64| pb::Beacon {
        incarnation,
        seq,
        sent_at: now,
        storer: true,
        free_log2: 30,
        slots_held: 0,
        holdings_digest: vec![0; 16],
        flags: 0,
    };
    let member_key = node_keypair(m);
    let outsider = Keypair::from_seed(&[42; 32]);

    // 1. A forged signature on a member's beacon.
    let env = Envelope::sign_message(&member_key, sid, Kind::Beacon, &beacon(1, 1_000_000));
    let mut forged = env.as_bytes().to_vec();
    let sig = env.signature();
    let at = forged
        .windows(sig.len())
        .position(|w| w == sig)
        .expect("signature bytes in the envelope");
    forged[at + 7] ^= 0x55;
    let id = publish_until_judged(victim, &swarm, &ctl, forged);
    let (v, why) = verdict_of(victim, &swarm, &id);
    assert_eq!(v, "reject", "forged signature: {why}");
    assert!(why.contains("signed"), "{why}");

    // 2. A replayed (stale) beacon of a member: its first sequence number again.
    let replay = Envelope::sign_message(&member_key, sid, Kind::Beacon, &beacon(1, 0));
    let id = publish_until_judged(victim, &swarm, &ctl, replay.as_bytes().to_vec());
    let (v, why) = verdict_of(victim, &swarm, &id);
    assert_eq!(v, "ignore", "replay: {why}");
    assert!(why.contains("stale"), "{why}");

    // 3. A Join whose certificate is not signed by the owner or an admin.
    let cert = pb::MemberCert {
        member: outsider.peer_id().as_bytes().to_vec(),
        admin: true,
        issued_at: now,
        expires_at: 0,
    };
    let cert = Envelope::sign_message(&outsider, sid, Kind::MemberCert, &cert);
    let join_msg = pb::Join {
        cert: Some(cert.to_proto()),
        admin_cert: None,
        storer: true,
        incarnation: 1,
        issued_at: now,
    };
    let join_env = Envelope::sign_message(&outsider, sid, Kind::Join, &join_msg);
    let id = publish_until_judged(victim, &swarm, &ctl, join_env.as_bytes().to_vec());
    let (v, why) = verdict_of(victim, &swarm, &id);
    assert_eq!(v, "reject", "invalid cert: {why}");
    assert!(why.contains("cert"), "{why}");

    // 4. A non-member publishing on the swarm topic (a well-formed, well-signed beacon).
    let stranger = Envelope::sign_message(&outsider, sid, Kind::Beacon, &beacon(1, 1));
    let id = publish_until_judged(victim, &swarm, &ctl, stranger.as_bytes().to_vec());
    let (v, why) = verdict_of(victim, &swarm, &id);
    assert_eq!(v, "reject", "non-member: {why}");
    assert!(why.contains("non-member"), "{why}");
    // Garbage on a shard topic too.
    let shard = cairn_net::shard_topic(sid.as_bytes(), 0);
    let id = publish_until_judged(victim, &swarm, &shard, b"\x0a\x03not an envelope".to_vec());
    assert_eq!(verdict_of(victim, &swarm, &id).0, "reject");

    // Nothing changed: members, datasets, claims.
    assert_eq!(view_of(victim, &swarm), before);
    assert!(
        !members(victim, &swarm)
            .iter()
            .any(|x| x["peerId"] == outsider.peer_id().to_base58().as_str())
    );
}

#[test]
fn late_joiner_converges_on_the_same_claims_by_anti_entropy() {
    // A and B place a dataset while C is not there; C's view starts empty and is filled by
    // sync rounds only (it missed every gossip message).
    let (nodes, swarm) = build_swarm(2, |_| None);
    let (a, b) = (&nodes[0], &nodes[1]);
    let (cid, _) = announce(a, &swarm, "replicate:2", &pattern(200_000, 9));
    let path = format!("{BASE}/swarms/{swarm}/datasets/{cid}/health");
    let full = a.wait_json(&path, WAIT, |h| h["state"] == "healthy");
    let claims = claims_of(&full);
    b.wait_json(&path, WAIT, |h| claims_of(h) == claims);

    let c = TestNode::start_joined(&[a], fast);
    let inv = invite(a, &swarm, &c.peer_id());
    join(&c, &swarm, &inv);
    let mine = c.wait_json(&path, WAIT, |h| claims_of(h) == claims);
    assert_eq!(mine["policy"]["replicas"], 2);
    let ds = |n: &TestNode| n.get(&format!("{BASE}/swarms/{swarm}/datasets")).json();
    assert_eq!(ds(&c), ds(a), "same announces");
    // And all three agree on the membership.
    let ids = |n: &TestNode| {
        let mut v: Vec<String> = members(n, &swarm)
            .iter()
            .map(|m| m["peerId"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    };
    let cp = c.peer_id();
    a.wait_json(&format!("{BASE}/swarms/{swarm}/members"), WAIT, |v| {
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|x| x["peerId"] == cp.as_str()))
    });
    assert_eq!(ids(&c), ids(a));
    // Coordination traffic is counted by category: C learnt everything by sync, A beacons.
    let traffic = |n: &TestNode| n.get(&format!("{BASE}/swarms/{swarm}")).json()["traffic"].clone();
    let (tc, ta) = (traffic(&c), traffic(a));
    assert!(tc["sync"]["in"].as_u64().unwrap() > 0, "{tc}");
    assert!(tc["sync"]["out"].as_u64().unwrap() > 0, "{tc}");
    assert!(ta["beacons"]["out"].as_u64().unwrap() > 0, "{ta}");
    assert!(ta["datasetEvents"]["out"].as_u64().unwrap() > 0, "{ta}");
}

/// Replaces an invite's bootstrap addresses.
fn with_bootstrap(invite: &str, bootstrap: Vec<String>) -> String {
    use base64::Engine as _;
    use prost::Message as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = invite.strip_prefix("cairn-invite:").unwrap();
    let mut inv = cairn_core::durability::messages::Invite::decode(
        b64.decode(body.trim_end_matches('=')).unwrap().as_slice(),
    )
    .unwrap();
    assert!(!inv.bootstrap.is_empty(), "the issuer put its addresses in");
    inv.bootstrap = bootstrap;
    format!("cairn-invite:{}", b64.encode(inv.encode_to_vec()))
}

#[test]
fn a_joiner_with_dead_bootstrap_addresses_finds_the_swarm_by_its_rendezvous_key() {
    // X is a plain node (no swarm): the only DHT contact of everyone.
    let x = TestNode::start_with(fast);
    let a = TestNode::start_joined(&[&x], fast);
    let b = TestNode::start_joined(&[&x], fast);
    let swarm = create_swarm(&a);
    join(&b, &swarm, &invite(&a, &swarm, &b.peer_id()));
    let (pa, pb) = (a.peer_id(), b.peer_id());
    wait_members(
        &a,
        &swarm,
        &[(pa.as_str(), "present"), (pb.as_str(), "present")],
    );

    // C knows only X, and its invite's bootstrap addresses are dead (and then none at all).
    // (C's own Kad bootstrap through X may also connect it to A and B, so the joins alone do
    // not prove the lookup; the outsider below checks the advertisement and the lookup.)
    let c = TestNode::start_joined(&[&x], fast);
    let pc = c.peer_id();
    let dead = format!("/ip4/127.0.0.1/tcp/1/p2p/{pa}");
    let inv = with_bootstrap(&invite(&a, &swarm, &pc), vec![dead]);
    join(&c, &swarm, &inv);
    let all = [
        (pa.as_str(), "present"),
        (pb.as_str(), "present"),
        (pc.as_str(), "present"),
    ];
    wait_members(&c, &swarm, &all);
    wait_members(&a, &swarm, &all);

    let d = TestNode::start_joined(&[&x], fast);
    let pd = d.peer_id();
    let inv = with_bootstrap(&invite(&a, &swarm, &pd), Vec::new());
    join(&d, &swarm, &inv);
    wait_members(
        &d,
        &swarm,
        &[(pa.as_str(), "present"), (pd.as_str(), "present")],
    );
    wait_members(&b, &swarm, &[(pd.as_str(), "present")]);

    // Every storer of this small swarm advertises the key (min(1, 20/S) = 1) ...
    for n in [&a, &b, &c, &d] {
        let v = n.get(&format!("{BASE}/swarms/{swarm}")).json();
        assert_eq!(v["rendezvous"]["advertised"], true, "{v}");
    }
    // ... and an outsider that knows only X finds them all as providers of it, connected.
    let key = cairn_net::rendezvous_key(
        cairn_core::durability::SwarmId::from_text(&swarm)
            .unwrap()
            .as_bytes(),
    );
    let x_addr: cairn_net::Multiaddr = x.p2p_addr().parse().unwrap();
    let x_peer: cairn_net::PeerId = x.peer_id().parse().unwrap();
    let want: std::collections::BTreeSet<String> =
        [&pa, &pb, &pc, &pd].iter().map(|p| p.to_string()).collect();
    x.rt.block_on(async {
        let config = cairn_net::NetConfig {
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            listen_port: 0,
            ..cairn_net::NetConfig::default()
        };
        let identity = cairn_net::Identity::generate();
        let (net, mut events) =
            cairn_net::Network::start(&identity, config, std::sync::Arc::new(Nothing))
                .await
                .unwrap();
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        net.connect(x_peer, vec![x_addr]).await.unwrap();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let found: std::collections::BTreeSet<String> = net
                .find_providers_of_key(&key, 20)
                .await
                .unwrap_or_default()
                .iter()
                .map(|p| p.to_string())
                .collect();
            if found == want {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "providers {found:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let status = net.status().await.unwrap();
        for p in &want {
            assert!(
                status.connected.iter().any(|c| c.peer_id.to_string() == *p),
                "the lookup connected to {p}"
            );
        }
        net.shutdown().await;
    });
}

#[test]
fn a_superseded_holder_keeps_a_spare_then_drops_it_after_spare_ttl() {
    use cairn_core::durability::messages as pb;
    use cairn_core::durability::{Envelope, Kind, SwarmId};

    let (nodes, swarm) = build_swarm(3, |_| None);
    let a = &nodes[0];
    let data = pattern(200_000, 21);
    let (cid, _) = announce(a, &swarm, "replicate:2", &data);
    let path = format!("{BASE}/swarms/{swarm}/datasets/{cid}/health");
    let full = a.wait_json(&path, WAIT, |h| h["state"] == "healthy");
    // H: the holder that fetched its copy; T: the member without a slot.
    let claims = claims_of(&full);
    let (slot, holder) = claims
        .iter()
        .enumerate()
        .find(|(_, (p, _))| *p != a.peer_id())
        .map(|(i, (p, _))| (i as u32, p.clone()))
        .unwrap();
    let h = nodes.iter().find(|n| n.peer_id() == holder).unwrap();
    let t = nodes
        .iter()
        .find(|n| !claims.iter().any(|(p, _)| *p == n.peer_id()))
        .unwrap();
    wait_holds(h, &cid, &data, WAIT);
    for n in &nodes {
        n.wait_json(&path, WAIT, |v| claims_of(v) == claims);
    }
    assert_eq!(full["counts"]["spares"], 0);

    // H hands its slot off to T (a valid HANDOFF at generation 1): H's claim is superseded.
    let sid = SwarmId::from_text(&swarm).unwrap();
    let d: cairn_core::Cid = cid.parse().unwrap();
    let now = unix_now();
    let (hk, tk) = (node_keypair(h), node_keypair(t));
    let offer = pb::SlotOffer {
        dataset_cid: d.to_bytes().to_vec(),
        slot,
        generation: 1,
        assignee: tk.peer_id().as_bytes().to_vec(),
        reason: pb::OfferReason::Handoff as i32,
        round_ref: Vec::new(),
        sources: vec![hk.peer_id().as_bytes().to_vec()],
        expires_at: now + 3600,
    };
    let offer = Envelope::sign_message(&hk, sid, Kind::SlotOffer, &offer);
    let claim = pb::SlotClaim {
        entries: vec![pb::ClaimEntry {
            dataset_cid: d.to_bytes().to_vec(),
            slot,
            generation: 1,
            authorization: Some(offer.to_proto()),
        }],
        incarnation: 1,
        issued_at: now,
    };
    let claim = Envelope::sign_message(&tk, sid, Kind::SlotClaim, &claim);
    let shard = cairn_net::shard_topic(sid.as_bytes(), 0);
    let superseded = |v: &serde_json::Value| {
        v["slots"][slot as usize]["holder"] == t.peer_id().as_str()
            && v["slots"][slot as usize]["generation"] == 1
    };
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        publish_raw(h, &shard, claim.as_bytes().to_vec());
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until && !superseded(&h.get(&path).json()) {
            std::thread::sleep(Duration::from_millis(100));
        }
        if superseded(&h.get(&path).json()) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the handoff claim never arrived"
        );
    }
    // Everyone counts H's copy as a spare; H keeps it (SPARE_TTL is 10 s here).
    for n in &nodes {
        let v = n.wait_json(&path, WAIT, |v| superseded(v) && v["counts"]["spares"] == 1);
        assert_eq!(v["state"], "healthy", "{v}");
    }
    assert!(holds_locally(h, &cid), "the spare is kept");
    assert_eq!(
        h.delete(&format!("{BASE}/data/{cid}")).status,
        409,
        "a spare is protected"
    );

    // After SPARE_TTL, the dataset being healthy, H releases (SPARE_DROPPED) and deletes it.
    for n in &nodes {
        n.wait_json(&path, WAIT, |v| superseded(v) && v["counts"]["spares"] == 0);
    }
    let deadline = std::time::Instant::now() + WAIT;
    while holds_locally(h, &cid) {
        assert!(
            std::time::Instant::now() < deadline,
            "the spare was never deleted"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let shown = h.get(&format!("{BASE}/swarms/{swarm}")).json();
    assert_eq!(shown["usedBytes"], 0, "{shown}");
    // The announcer's copy is untouched.
    wait_holds(a, &cid, &data, WAIT);
}
