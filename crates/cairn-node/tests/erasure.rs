//! Erasure-coded datasets through the REST API: protect (sync, async, on upload), bad
//! parameters, and reads that decode rows missing locally or on the network.

mod common;

use std::time::Duration;

use cairn_core::{BlockSize, Layout, Manifest, build_from_bytes, protect};
use cairn_store::{BlockStore, DatasetFlags, FjallStore, LeafBlock};
use common::{BASE, TestNode, pattern};

/// Protects `cid` synchronously; returns the answer's JSON.
fn protect_sync(node: &TestNode, cid: &str, k: u32, m: u32) -> serde_json::Value {
    let r = node.post(&format!("{BASE}/data/{cid}/protect?k={k}&m={m}"), b"", &[]);
    assert_eq!(r.status, 200, "protect failed: {}", r.text());
    r.json()
}

#[test]
fn protect_round_trip() {
    let node = TestNode::start();
    let data = pattern(300_000, 1);
    let cid = node.upload(&data);
    let v = protect_sync(&node, &cid, 3, 2);
    let pcid = v["cid"].as_str().expect("cid").to_owned();
    assert_ne!(pcid, cid);
    let m = &v["manifest"];
    assert_eq!(m["protected"], true);
    assert_eq!(m["ecK"], 3);
    assert_eq!(m["ecM"], 2);
    assert_eq!(m["originalDatasetSize"], 300_000);
    // 5 blocks of 64 KiB: rounded 6, steps 2, total 10.
    assert_eq!(m["datasetSize"], 10 * 65_536);
    let original = node
        .get(&format!("{BASE}/data/{cid}/network/manifest"))
        .json();
    assert_eq!(m["originalTreeCid"], original["manifest"]["treeCid"]);

    // The protected CID reads as the original bytes, whole and by range.
    let r = node.get(&format!("{BASE}/data/{pcid}"));
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("300000"));
    assert_eq!(r.body, data);
    let r = node.get_with(
        &format!("{BASE}/data/{pcid}"),
        ("Range", "bytes=70000-200000"),
    );
    assert_eq!(r.status, 206);
    assert_eq!(r.body, &data[70_000..=200_000]);

    // Deterministic: the same request gives the same CID; both datasets are listed.
    let again = protect_sync(&node, &cid, 3, 2);
    assert_eq!(again["cid"], v["cid"]);
    let list = node.get(&format!("{BASE}/data")).json();
    let cids: Vec<&str> = list["content"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|i| i["cid"].as_str())
        .collect();
    assert!(cids.contains(&cid.as_str()) && cids.contains(&pcid.as_str()));

    // Protecting a protected dataset is a conflict.
    let r = node.post(&format!("{BASE}/data/{pcid}/protect?k=2&m=1"), b"", &[]);
    assert_eq!(r.status, 409);
    assert_eq!(r.text(), "Dataset is already protected");

    // The original can be deleted; the protected dataset still reads (it shares the blocks).
    assert_eq!(node.delete(&format!("{BASE}/data/{cid}")).status, 204);
    assert_eq!(node.get(&format!("{BASE}/data/{pcid}")).body, data);
}

#[test]
fn protect_bad_parameters() {
    let node = TestNode::start();
    let cid = node.upload(&pattern(10_000, 2));
    let limits = "k and m must satisfy 2 <= k, 1 <= m, k + m <= 1024";
    let invalid = "Invalid k or m parameter";
    for (query, message) in [
        ("k=1&m=1", limits),
        ("k=2&m=0", limits),
        ("k=1000&m=25", limits),
        ("k=2", invalid),
        ("m=2", invalid),
        ("k=abc&m=1", invalid),
        ("k=-2&m=1", invalid),
        ("", invalid),
    ] {
        let r = node.post(&format!("{BASE}/data/{cid}/protect?{query}"), b"", &[]);
        assert_eq!(r.status, 400, "{query}: {}", r.text());
        assert_eq!(r.text(), message, "{query}");
    }
    // The upper bound itself is fine, even with M > K and a single block.
    let r = node.post(&format!("{BASE}/data/{cid}/protect?k=2&m=1022"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());

    // Unknown and malformed CIDs.
    let other = TestNode::start();
    let unknown = other.upload(b"not on the first node");
    let r = node.post(&format!("{BASE}/data/{unknown}/protect?k=2&m=1"), b"", &[]);
    assert_eq!(r.status, 404);
    let r = node.post(&format!("{BASE}/data/notacid/protect?k=2&m=1"), b"", &[]);
    assert_eq!(r.status, 400);

    // Bad parameters on upload are refused before anything is stored.
    let before = node.space()["quotaUsedBytes"].clone();
    let r = node.post(&format!("{BASE}/data?k=1&m=1"), &pattern(5000, 3), &[]);
    assert_eq!(r.status, 400);
    assert_eq!(r.text(), limits);
    assert_eq!(node.space()["quotaUsedBytes"], before);
}

#[test]
fn async_protect_job_and_upload_with_k_m() {
    let node = TestNode::start();
    let data = pattern(1_000_000, 4);
    let cid = node.upload(&data);
    let r = node.post(
        &format!("{BASE}/data/{cid}/protect?k=4&m=4&async=true"),
        b"",
        &[],
    );
    assert_eq!(r.status, 202, "{}", r.text());
    let v = r.json();
    assert!(v["cid"].is_null());
    let job = v["jobId"].as_str().expect("job id").to_owned();
    let done = node.wait_json(
        &format!("{BASE}/data/{cid}/protect/{job}"),
        Duration::from_secs(60),
        |j| j["active"] == false,
    );
    assert!(done["error"].is_null(), "{done}");
    assert_eq!(done["done"], done["total"]);
    let pcid = done["cid"].as_str().expect("cid").to_owned();
    assert_eq!(protect_sync(&node, &cid, 4, 4)["cid"], pcid.as_str());
    assert_eq!(
        node.get(&format!("{BASE}/data/{cid}/protect/999999"))
            .status,
        404
    );

    // Upload and protect in one call: same bytes, same parameters, same protected CID.
    let r = node.post(&format!("{BASE}/data?k=4&m=4"), &data, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), pcid);
    let m = node
        .get(&format!("{BASE}/data/{pcid}/network/manifest"))
        .json();
    assert_eq!(m["manifest"]["protected"], true);
    assert_eq!(node.get(&format!("{BASE}/data/{pcid}")).body, data);
}

/// Writes the protected form of `data` into the store under `dir`, keeping only the rows
/// `keep` (as a node that downloaded only those rows would hold them). Returns the protected
/// manifest CID.
fn seed_rows(dir: &std::path::Path, data: &[u8], k: u32, m: u32, keep: &[u32]) -> String {
    let (blocks, dataset) = build_from_bytes(data, BlockSize::MIN, None, None).expect("dataset");
    let blocks: Vec<Vec<u8>> = blocks.into_iter().map(|b| b.data).collect();
    let p = protect(&dataset.manifest, &blocks, k, m).expect("protect");
    let store = FjallStore::open(dir.join("store"), 1 << 30).expect("store");
    let flags = DatasetFlags {
        pinned: true,
        advertise: true,
    };
    store
        .put_manifest(&p.manifest_cid, p.manifest_bytes.clone().into(), flags)
        .expect("manifest");
    let layout = Layout::from_manifest(&p.manifest).expect("layout");
    let mut leaf_blocks = Vec::new();
    for &r in keep {
        for index in layout.row(r).expect("row") {
            if layout.is_padding(index) {
                continue;
            }
            let bytes = p.block(&blocks, index).expect("block").to_vec();
            leaf_blocks.push(LeafBlock {
                index,
                cid: cairn_core::Cid::new(cairn_core::Codec::Block, cairn_core::sha256(&bytes)),
                data: bytes.into(),
                proof: p.tree.proof(index).expect("proof"),
            });
        }
    }
    store
        .put_leaf_blocks(&p.manifest.tree_cid, &leaf_blocks)
        .expect("leaves");
    store.sync().expect("sync");
    assert_eq!(
        Manifest::decode(&p.manifest_bytes).expect("decodes"),
        p.manifest
    );
    p.manifest_cid.to_string()
}

#[test]
fn missing_m_whole_rows_decode_on_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    // 10 blocks of 4 KiB (the last one short), K = 4, M = 3: rows 0 and 2 (data) and 5
    // (parity) are gone, rows 1, 3, 4, 6 remain.
    let data = pattern(10 * 4096 - 1000, 5);
    let pcid = seed_rows(dir.path(), &data, 4, 3, &[1, 3, 4, 6]);
    let node = TestNode::start_in(dir, |_| {});
    let used_before = node.space()["quotaUsedBytes"].as_u64().expect("used");
    let r = node.get(&format!("{BASE}/data/{pcid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, data);
    // The decoded data rows were verified and kept: the store grew by rows 0 and 2
    // (3 blocks each).
    let used_after = node.space()["quotaUsedBytes"].as_u64().expect("used");
    assert_eq!(used_after - used_before, 6 * 4096);
    let r = node.get_with(&format!("{BASE}/data/{pcid}"), ("Range", "bytes=5000-9000"));
    assert_eq!(r.body, &data[5000..=9000]);
}

#[test]
fn too_few_rows_fail_cleanly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(6 * 4096, 6);
    // K = 3, only 2 rows held: nothing to decode from, and no peer.
    let pcid = seed_rows(dir.path(), &data, 3, 2, &[1, 4]);
    let node = TestNode::start_in(dir, |c| c.lookup_timeout = 1);
    let used_before = node.space()["quotaUsedBytes"].clone();
    let r = node
        .agent
        .get(format!("{}{BASE}/data/{pcid}", node.url))
        .call();
    // Either an error status before the body, or a short body: never the wrong bytes.
    if let Ok(mut resp) = r {
        let body = resp.body_mut().read_to_vec().unwrap_or_default();
        assert!(resp.status() != 200 || body.len() < data.len());
    }
    assert_eq!(node.space()["quotaUsedBytes"], used_before);
}

#[test]
fn rows_lost_locally_are_decoded_from_a_peer() {
    // P holds rows 1, 3, 4 and 6 of a K = 4, M = 3 dataset; Q holds only the manifest. Reading
    // on Q fetches the data rows P has, finds the rest missing, fetches parity and decodes.
    let data = pattern(12 * 4096, 7);
    let p_dir = tempfile::tempdir().expect("tempdir");
    let pcid = seed_rows(p_dir.path(), &data, 4, 3, &[1, 3, 4, 6]);
    let q_dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(seed_rows(q_dir.path(), &data, 4, 3, &[]), pcid);
    let p = TestNode::start_in(p_dir, |_| {});
    let q = TestNode::start_in(q_dir, |c| c.bootstrap_node = vec![p.p2p_addr()]);
    let r = q.get(&format!("{BASE}/data/{pcid}"));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.body, data);
    // Q now holds every data row (decoded ones verified and stored): it reads offline.
    drop(p);
    assert_eq!(q.get(&format!("{BASE}/data/{pcid}")).body, data);
}

#[test]
fn a_protected_dataset_is_found_and_fetched_whole_by_cid() {
    // A uploads with k and m; B finds the protected manifest by CID through Kad and fetches
    // every row (padding is never sent): B then holds the complete protected dataset.
    let a = TestNode::start();
    let b = TestNode::start_joined(&[&a], |_| {});
    let data = pattern(700_000, 8);
    let r = a.post(&format!("{BASE}/data?k=3&m=2&blockSize=65536"), &data, &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    let pcid = r.text();
    let r = b.post(&format!("{BASE}/data/{pcid}/network"), b"", &[]);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["manifest"]["protected"], true);
    let id = r.json()["downloadId"].as_u64().expect("downloadId");
    b.wait_json(
        &format!("{BASE}/data/{pcid}/network/progress/{id}"),
        Duration::from_secs(60),
        |v| v["active"] == false,
    );
    // Complete (listed) on B, with the same bytes; B serves it with A gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let list = b.get(&format!("{BASE}/data")).json();
        let listed = list["content"]
            .as_array()
            .is_some_and(|items| items.iter().any(|i| i["cid"] == pcid.as_str()));
        if listed {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not complete on B: {list}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(a);
    assert_eq!(b.get(&format!("{BASE}/data/{pcid}")).body, data);
}

#[test]
fn protect_past_the_quota_is_507_and_leaves_nothing() {
    // 5 blocks of 64 KiB stored; 2+2 adds 6 parity blocks, which do not fit in 600 KiB.
    let node = TestNode::start_with(|c| c.storage_quota = 600 * 1024);
    let cid = node.upload(&pattern(300_000, 9));
    let before = node.space();
    let r = node.post(&format!("{BASE}/data/{cid}/protect?k=2&m=2"), b"", &[]);
    assert_eq!(r.status, 507, "{}", r.text());
    assert_eq!(node.space(), before);
    let list = node.get(&format!("{BASE}/data")).json();
    assert_eq!(list["content"].as_array().map(Vec::len), Some(1), "{list}");
}
