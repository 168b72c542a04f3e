//! Multi-node tests: several nodes on 127.0.0.1 (OS-chosen ports) finding and fetching datasets
//! by CID through Kad and the Gen-2 block exchange. Every wait is bounded.

mod common;

use std::time::{Duration, Instant};

use common::{BASE, TestNode, pattern};

const WAIT: Duration = Duration::from_secs(60);

/// Starts a background download on `node` and waits until it finishes; returns its id.
fn fetch_background(node: &TestNode, cid: &str) -> u64 {
    let r = node.post(&format!("{BASE}/data/{cid}/network"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["downloadId"].as_u64().expect("downloadId");
    node.wait_json(
        &format!("{BASE}/data/{cid}/network/progress/{id}"),
        WAIT,
        |v| v["active"] == false,
    );
    id
}

fn is_complete_locally(node: &TestNode, cid: &str) -> bool {
    let list = node.get(&format!("{BASE}/data")).json();
    list["content"]
        .as_array()
        .is_some_and(|items| items.iter().any(|i| i["cid"] == cid))
}

#[test]
fn fetch_by_cid_alone_through_kad() {
    let a = TestNode::start();
    let b = TestNode::start_joined(&[&a], |_| {});
    let data = pattern(1_000_000, 21);
    let cid = a.post(
        &format!("{BASE}/data"),
        &data,
        &[("content-disposition", "attachment; filename=\"f.bin\"")],
    );
    assert_eq!(cid.status, 200);
    let cid = cid.text();
    let got = b.get(&format!("{BASE}/data/{cid}/network/stream"));
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == data, "bytes differ");
    assert_eq!(
        got.header("content-disposition"),
        Some("attachment; filename=\"f.bin\"")
    );
    // Streamed data is cached on B, listed, and readable locally.
    assert!(is_complete_locally(&b, &cid));
    assert_eq!(b.get(&format!("{BASE}/data/{cid}")).body, data);
}

#[test]
fn a_stale_provider_does_not_fail_the_fetch() {
    // A uploads; B fetches (and so provides), then deletes: A's DHT store still lists B as a
    // provider, which now answers NotFound. C, joined to both, must still get the dataset:
    // whichever provider its lookup meets first, the other one is tried.
    let a = TestNode::start();
    let b = TestNode::start_joined(&[&a], |_| {});
    let data = pattern(400_000, 23);
    let cid = a.upload(&data);
    fetch_background(&b, &cid);
    assert!(is_complete_locally(&b, &cid));
    assert_eq!(b.delete(&format!("{BASE}/data/{cid}")).status, 204);
    assert!(!is_complete_locally(&b, &cid));
    let c = TestNode::start_joined(&[&b, &a], |_| {});
    let got = c.get(&format!("{BASE}/data/{cid}/network/stream"));
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == data, "bytes differ");
}

#[test]
fn manifest_only_fetch() {
    let a = TestNode::start();
    let b = TestNode::start_joined(&[&a], |_| {});
    let cid = a.upload(&pattern(300_000, 22));
    let r = b.get(&format!("{BASE}/data/{cid}/network/manifest"));
    assert_eq!(r.status, 200, "{}", r.text());
    let item = r.json();
    assert_eq!(item["cid"], cid.as_str());
    assert_eq!(item["manifest"]["datasetSize"], 300_000);
    // No block was fetched: nothing is listed and space holds only the manifest.
    assert!(!is_complete_locally(&b, &cid));
    let space = b.space();
    assert!(
        space["quotaUsedBytes"].as_u64().expect("used") < 1000,
        "{space}"
    );
}

#[test]
fn unknown_cid_is_404_within_the_lookup_bound() {
    let a = TestNode::start();
    let b = TestNode::start_joined(&[&a], |_| {});
    let unknown = "zDvZRwzm2V3HGtn5tmrbsuM1SETjaM8P8yTHRZXS8ELyJWo4kE1q";
    let t = Instant::now();
    let r = b.get(&format!("{BASE}/data/{unknown}/network/stream"));
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text()
            .starts_with("The requested CID could not be retrieved ("),
        "{}",
        r.text()
    );
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "took {:?}",
        t.elapsed()
    );
    let r = b.post(&format!("{BASE}/data/{unknown}/network"), b"", &[]);
    assert_eq!(r.status, 404, "{}", r.text());
}

#[test]
fn five_nodes_share_after_the_uploader_leaves() {
    let seeder = TestNode::start();
    let data = pattern(64 * 1024 * 1024, 23);
    let cid = seeder.upload(&data);
    let first = TestNode::start_joined(&[&seeder], |_| {});
    let second = TestNode::start_joined(&[&seeder, &first], |_| {});
    fetch_background(&first, &cid);
    fetch_background(&second, &cid);
    assert!(is_complete_locally(&first, &cid));
    assert!(is_complete_locally(&second, &cid));
    let others: Vec<TestNode> = (0..2)
        .map(|_| TestNode::start_joined(&[&first, &second], |_| {}))
        .collect();
    drop(seeder.stop());
    for node in &others {
        let got = node.get(&format!("{BASE}/data/{cid}/network/stream"));
        assert_eq!(got.status, 200, "{}", got.text());
        assert!(got.body == data, "bytes differ");
    }
}

#[test]
fn download_survives_a_provider_dying() {
    let a = TestNode::start();
    let data = pattern(48 * 1024 * 1024, 24);
    let cid = a.upload(&data);
    let b = TestNode::start_joined(&[&a], |_| {});
    fetch_background(&b, &cid);
    let c = TestNode::start_joined(&[&a, &b], |_| {});
    let r = c.post(&format!("{BASE}/data/{cid}/network"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["downloadId"].as_u64().expect("id");
    // Kill one provider as soon as the download has started.
    c.wait_json(
        &format!("{BASE}/data/{cid}/network/progress/{id}"),
        WAIT,
        |v| v["active"] == false || v["received"].as_u64().unwrap_or(0) > 0,
    );
    drop(a.stop());
    c.wait_json(
        &format!("{BASE}/data/{cid}/network/progress/{id}"),
        WAIT,
        |v| v["active"] == false,
    );
    assert_eq!(c.get(&format!("{BASE}/data/{cid}")).body, data);
}

#[test]
fn lying_peer_is_banned_and_download_completes() {
    let honest = TestNode::start();
    let data = pattern(8 * 1024 * 1024, 25);
    let cid = honest.upload(&data);
    let liar = TestNode::start_joined(&[&honest], |c| c.corrupt_served_blocks = true);
    fetch_background(&liar, &cid);
    let leecher = TestNode::start_joined(&[&liar, &honest], |_| {});
    let got = leecher.get(&format!("{BASE}/data/{cid}/network/stream"));
    assert_eq!(got.status, 200, "{}", got.text());
    assert!(got.body == data, "bytes differ");
    // The liar is banned: no longer connected.
    let liar_id = liar.peer_id();
    let deadline = Instant::now() + WAIT;
    loop {
        let info = leecher.get(&format!("{BASE}/debug/info")).json();
        let connected = info["connections"]
            .as_array()
            .is_some_and(|c| c.iter().any(|p| p["peerId"] == liar_id.as_str()));
        if !connected {
            break;
        }
        assert!(Instant::now() < deadline, "liar still connected");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn restart_resumes_without_refetching() {
    let a = TestNode::start();
    let data = pattern(64 * 1024 * 1024, 26);
    let cid = a.upload(&data);
    let b = TestNode::start_joined(&[&a], |_| {});
    let r = b.post(&format!("{BASE}/data/{cid}/network"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["downloadId"].as_u64().expect("id");
    let progress = b.wait_json(
        &format!("{BASE}/data/{cid}/network/progress/{id}"),
        WAIT,
        |v| v["active"] == false || v["received"].as_u64().unwrap_or(0) >= 64,
    );
    assert_eq!(
        progress["active"], true,
        "the download finished before the restart"
    );
    let held_before = progress["received"].as_u64().unwrap_or(0);
    let dir = b.stop();
    let a_addr = a.p2p_addr();
    let b = TestNode::start_in(dir, |c| c.bootstrap_node = vec![a_addr]);
    let r = b.post(&format!("{BASE}/data/{cid}/network"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let id = r.json()["downloadId"].as_u64().expect("id");
    b.wait_json(
        &format!("{BASE}/data/{cid}/network/progress/{id}"),
        WAIT,
        |v| v["active"] == false,
    );
    assert_eq!(b.get(&format!("{BASE}/data/{cid}")).body, data);
    // Only what was missing was fetched again (plus at most a few batches in flight at the
    // restart or duplicated in the end game).
    let refetched = b.get(&format!("{BASE}/debug/info")).json()["transfer"]["bytesReceived"]
        .as_u64()
        .expect("bytesReceived");
    let missing = data.len() as u64 - held_before * 65_536;
    assert!(
        refetched <= missing + 8 * 1024 * 1024,
        "fetched {refetched} bytes again, only {missing} were missing"
    );
}
