//! REST API tests against a real node on 127.0.0.1 with an OS-chosen port.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::{BASE, TestNode, pattern};

#[test]
fn upload_list_download_delete_round_trip() {
    let n = TestNode::start();
    let data = pattern(300_000, 1);
    let cid = n.post(
        &format!("{BASE}/data?blockSize=65536"),
        &data,
        &[
            ("content-type", "application/pdf"),
            ("content-disposition", "attachment; filename=\"report.pdf\""),
        ],
    );
    assert_eq!(cid.status, 200, "{}", cid.text());
    let cid = cid.text();
    assert!(cid.starts_with("zDvZRwzm"), "{cid}");

    let list = n.get(&format!("{BASE}/data")).json();
    let items = list["content"].as_array().expect("content array");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["cid"], cid.as_str());
    let m = &items[0]["manifest"];
    assert_eq!(m["datasetSize"], 300_000);
    assert_eq!(m["blockSize"], 65_536);
    assert_eq!(m["filename"], "report.pdf");
    assert_eq!(m["mimetype"], "application/pdf");
    assert_eq!(m["protected"], false);
    assert!(
        m["treeCid"]
            .as_str()
            .expect("treeCid")
            .starts_with("zDzSvJTf")
    );

    for base in ["/api/storage/v1", "/api/codex/v1"] {
        let got = n.get(&format!("{base}/data/{cid}"));
        assert_eq!(got.status, 200);
        assert_eq!(got.body, data);
        assert_eq!(got.header("content-type"), Some("application/pdf"));
        assert_eq!(
            got.header("content-disposition"),
            Some("attachment; filename=\"report.pdf\"")
        );
        assert_eq!(got.header("content-length"), Some("300000"));
        let streamed = n.get(&format!("{base}/data/{cid}/network/stream"));
        assert_eq!(streamed.body, data);
        assert_eq!(
            streamed.header("access-control-expose-headers"),
            Some("Content-Disposition")
        );
    }

    let range = n.get_with(
        &format!("{BASE}/data/{cid}"),
        ("range", "bytes=65530-131080"),
    );
    assert_eq!(range.status, 206);
    assert_eq!(range.body, &data[65_530..=131_080]);
    assert_eq!(
        range.header("content-range"),
        Some("bytes 65530-131080/300000")
    );
    let tail = n.get_with(&format!("{BASE}/data/{cid}"), ("range", "bytes=-10"));
    assert_eq!(tail.body, &data[299_990..]);
    let bad = n.get_with(&format!("{BASE}/data/{cid}"), ("range", "bytes=400000-"));
    assert_eq!(bad.status, 416);

    let exists = n.get(&format!("{BASE}/data/{cid}/exists")).json();
    assert_eq!(exists[cid.as_str()], true);
    let manifest = n.get(&format!("{BASE}/data/{cid}/network/manifest"));
    assert_eq!(manifest.status, 200);
    assert_eq!(manifest.json()["cid"], cid.as_str());
    let started = n.post(&format!("{BASE}/data/{cid}/network"), b"", &[]);
    assert_eq!(started.status, 200, "{}", started.text());
    let id = started.json()["downloadId"].as_u64().expect("downloadId");
    let progress = n
        .get(&format!("{BASE}/data/{cid}/network/progress/{id}"))
        .json();
    assert_eq!(progress["active"], false);

    let space = n.space();
    assert!(space["quotaUsedBytes"].as_u64().expect("used") >= 5 * 65_536);
    assert!(space["totalBlocks"].as_u64().expect("blocks") >= 6);

    assert_eq!(n.delete(&format!("{BASE}/data/{cid}")).status, 204);
    assert_eq!(n.delete(&format!("{BASE}/data/{cid}")).status, 204);
    assert_eq!(n.get(&format!("{BASE}/data/{cid}")).status, 404);
    assert_eq!(
        n.get(&format!("{BASE}/data/{cid}/exists")).json()[cid.as_str()],
        false
    );
    assert_eq!(n.space()["quotaUsedBytes"], 0);
    assert_eq!(
        n.get(&format!("{BASE}/data")).json()["content"],
        serde_json::json!([])
    );
}

#[test]
fn blocks_are_served_and_protected_from_direct_delete() {
    let n = TestNode::start();
    let data = b"some file contents";
    let cid = n.upload(data);
    assert_eq!(cid, "zDvZRwzmDuZWyWGSH6qZqF7ft1AGzxqxqRNQXfpPRKPPr389wS6s");
    let block = "zDxWB8ED98hxJ51XwYaoQAwMdskCcmTaPR6Ce2wq88bjvjXRYuR9";
    let got = n.get(&format!("{BASE}/data/{block}"));
    assert_eq!(got.status, 200);
    assert_eq!(got.body.len(), 65_536);
    assert_eq!(&got.body[..18], data);
    let del = n.delete(&format!("{BASE}/data/{block}"));
    assert_eq!(del.status, 409);
    assert!(del.text().contains("part of a dataset"));
    assert_eq!(
        n.get(&format!("{BASE}/data/{block}/exists")).json()[block],
        true
    );
    let empty = "zDxWB8EDDsokSpiTXNRpv1jS2LXjEdLgTiDfxFd7Eo8CSPKVj93r";
    assert_eq!(
        n.get(&format!("{BASE}/data/{empty}/exists")).json()[empty],
        true
    );
}

#[test]
fn bad_cids_and_unknown_cids() {
    let n = TestNode::start();
    for bad in [
        "not-a-cid",
        "zzzz",
        "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
    ] {
        for path in [
            format!("{BASE}/data/{bad}"),
            format!("{BASE}/data/{bad}/exists"),
            format!("{BASE}/data/{bad}/network/manifest"),
        ] {
            let r = n.get(&path);
            assert_eq!(r.status, 400, "{path}");
            assert!(r.text().contains("Cid"), "{path}: {}", r.text());
        }
    }
    let unknown = "zDvZRwzm2V3HGtn5tmrbsuM1SETjaM8P8yTHRZXS8ELyJWo4kE1q";
    let r = n.get(&format!("{BASE}/data/{unknown}"));
    assert_eq!(r.status, 404);
    assert!(
        r.text()
            .starts_with("The requested CID could not be retrieved (")
    );
    assert_eq!(
        n.get(&format!("{BASE}/data/{unknown}/network/stream"))
            .status,
        404
    );
    assert_eq!(
        n.get(&format!("{BASE}/data/{unknown}/network/manifest"))
            .status,
        404
    );
    assert_eq!(
        n.post(&format!("{BASE}/data/{unknown}/network"), b"", &[])
            .status,
        404
    );
    assert_eq!(
        n.get(&format!("{BASE}/data/{unknown}/advertise")).status,
        404
    );
    let tree = "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL";
    let r = n.get(&format!("{BASE}/data/{tree}/advertise"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "CID is not a manifest CID")
    );
    let r = n.get(&format!("{BASE}/data/{unknown}/network/progress/abc"));
    assert_eq!((r.status, r.text().as_str()), (400, "Invalid download ID"));
    let r = n.delete(&format!("{BASE}/data/{unknown}/network/7"));
    assert_eq!(
        (r.status, r.text().as_str()),
        (404, "Background download not found")
    );
}

#[test]
fn upload_parameters_and_headers_are_validated() {
    let n = TestNode::start_with(|c| c.max_upload_size = Some(100_000));
    let up = |query: &str, headers: &[(&str, &str)], body: &[u8]| {
        n.post(&format!("{BASE}/data{query}"), body, headers)
    };
    let r = up("?blockSize=abc", &[], b"x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Invalid blockSize parameter")
    );
    for bs in ["1000", "2048", "1048576", "6000"] {
        let r = up(&format!("?blockSize={bs}"), &[], b"x");
        assert_eq!(r.status, 400, "{bs}");
        assert_eq!(
            r.text(),
            "blockSize must be a power of two between 4096 and 524288 bytes"
        );
    }
    let r = up("?advertise=maybe", &[], b"x");
    assert_eq!(r.status, 400);
    let r = up("", &[("content-type", "nonsense/type")], b"x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (422, "The MIME type 'nonsense/type' is not valid.")
    );
    let long_mime = format!("text/plain; x={}", "a".repeat(130));
    let r = up("", &[("content-type", long_mime.as_str())], b"x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (422, "Mimetype exceeds maximum size of 128 bytes")
    );
    let r = up(
        "",
        &[("content-disposition", "attachment; filename=\"a/b\"")],
        b"x",
    );
    assert_eq!(
        (r.status, r.text().as_str()),
        (422, "The filename is not valid.")
    );
    let long_name = format!("attachment; filename=\"{}\"", "n".repeat(300));
    let r = up("", &[("content-disposition", long_name.as_str())], b"x");
    assert_eq!(
        (r.status, r.text().as_str()),
        (422, "Filename exceeds maximum size of 255 bytes")
    );
    let r = up("", &[], b"");
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Cannot upload an empty file")
    );
    let r = up("", &[], &pattern(100_001, 3));
    assert_eq!(
        (r.status, r.text().as_str()),
        (413, "Upload exceeds the maximum size of 100000 bytes")
    );
    // Chunked bodies are checked while streaming.
    let r = chunked_upload(&n, &pattern(150_000, 4));
    assert_eq!(r.0, 413, "{}", r.1);
    let r = chunked_upload(&n, b"");
    assert_eq!(r.0, 400, "{}", r.1);
    assert_eq!(n.space()["quotaUsedBytes"], 0);
    assert_eq!(
        n.get(&format!("{BASE}/data")).json()["content"],
        serde_json::json!([])
    );
    // Uploads within the limits work, with filename* and a bare filename= form.
    let r = up(
        "?blockSize=4096",
        &[
            ("content-disposition", "filename*=UTF-8''caf%C3%A9.txt"),
            ("content-type", "text/plain; charset=utf-8"),
        ],
        b"hello",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let item = &n.get(&format!("{BASE}/data")).json()["content"][0]["manifest"];
    assert_eq!(item["filename"], "café.txt");
    assert_eq!(item["mimetype"], "text/plain; charset=utf-8");
    assert_eq!(item["blockSize"], 4096);
}

/// Sends `body` with chunked transfer encoding over a raw socket; returns (status, body).
fn chunked_upload(n: &TestNode, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(n.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST {BASE}/data HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    for piece in body.chunks(8192) {
        write!(s, "{:x}\r\n", piece.len()).expect("write");
        s.write_all(piece).expect("write");
        s.write_all(b"\r\n").expect("write");
    }
    s.write_all(b"0\r\n\r\n").expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

#[test]
fn quota_overrun_is_507_and_leaves_nothing() {
    let n = TestNode::start_with(|c| c.storage_quota = 1024 * 1024);
    let small = n.upload(&pattern(200_000, 5));
    let used = n.space()["quotaUsedBytes"].as_u64().expect("used");
    // Too big for the quota at all: refused before the body is read.
    // Only the headers are sent: the answer must come without the body being read.
    let mut s = TcpStream::connect(n.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    write!(
        s,
        "POST {BASE}/data HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        2 * 1024 * 1024
    )
    .expect("write");
    let mut head = [0u8; 4096];
    let got = s.read(&mut head).expect("read");
    let text = String::from_utf8_lossy(&head[..got]).into_owned();
    assert!(text.starts_with("HTTP/1.1 507"), "{text}");
    assert!(text.contains("Not enough storage quota: "), "{text}");
    drop(s);
    // Fits the quota, not the free space: refused while streaming (chunked, no length).
    let (status, text) = chunked_upload(&n, &pattern(900_000, 7));
    assert_eq!(status, 507, "{text}");
    assert!(text.contains("Not enough storage quota: "), "{text}");
    assert_eq!(n.space()["quotaUsedBytes"].as_u64(), Some(used));
    let list = n.get(&format!("{BASE}/data")).json();
    assert_eq!(list["content"].as_array().map(Vec::len), Some(1));
    assert_eq!(list["content"][0]["cid"], small.as_str());
    assert_eq!(n.space()["quotaMaxBytes"], 1024 * 1024);
}

#[test]
fn client_disconnect_mid_upload_leaves_nothing() {
    let n = TestNode::start();
    {
        let mut s = TcpStream::connect(n.addr).expect("connect");
        write!(
            s,
            "POST {BASE}/data HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n"
        )
        .expect("write");
        s.write_all(&pattern(3_000_000, 8)).expect("write");
        s.flush().expect("flush");
        std::thread::sleep(Duration::from_millis(300));
    } // dropped: the client goes away mid-body
    // The upload's blocks are released shortly after.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if n.space()["quotaUsedBytes"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "blocks were not released"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        n.get(&format!("{BASE}/data")).json()["content"],
        serde_json::json!([])
    );
    // And the node keeps serving.
    let data = pattern(70_000, 9);
    let cid = n.upload(&data);
    assert_eq!(n.get(&format!("{BASE}/data/{cid}")).body, data);
}

#[test]
fn fifty_concurrent_uploads_and_downloads() {
    let n = std::sync::Arc::new(TestNode::start());
    let handles: Vec<_> = (0..50u32)
        .map(|i| {
            let n = n.clone();
            std::thread::spawn(move || {
                let data = pattern(50_000 + (i as usize) * 3_001, 100 + i);
                let cid = n.upload(&data);
                let got = n.get(&format!("{BASE}/data/{cid}"));
                assert_eq!(got.status, 200);
                assert!(got.body == data, "download {i} differs");
                cid
            })
        })
        .collect();
    let cids: std::collections::HashSet<String> = handles
        .into_iter()
        .map(|h| h.join().expect("worker"))
        .collect();
    assert_eq!(cids.len(), 50);
    let list = n.get(&format!("{BASE}/data")).json();
    assert_eq!(list["content"].as_array().map(Vec::len), Some(50));
}

#[test]
fn datasets_survive_restart() {
    let n = TestNode::start();
    let data = pattern(123_456, 10);
    let cid = n.upload(&data);
    let dir = n.stop();
    let n = TestNode::start_in(dir, |_| {});
    assert_eq!(n.get(&format!("{BASE}/data/{cid}")).body, data);
}

#[test]
fn routing_errors_cors_and_marketplace() {
    let n = TestNode::start_with(|c| c.api_cors_origin = Some("https://app.example".into()));
    let r = n.get("/nope");
    assert_eq!((r.status, r.text().as_str()), (404, "Not found"));
    let r = n.get(&format!("{BASE}/nothing/here"));
    assert_eq!(r.status, 404);
    let r = n.delete(&format!("{BASE}/space"));
    assert_eq!(r.status, 405);
    assert!(r.header("allow").unwrap_or("").contains("GET"));
    assert!(!r.body.is_empty());
    // Every marketplace path the router registers (rest-api.md §5), under both bases, for
    // any method: 501 with the exact text, never a 404 or 405.
    let cid = "zDvZRwzm2V3HGtn5tmrbsuM1SETjaM8P8yTHRZXS8ELyJWo4kE1q";
    for path in [
        "/sales/slots".to_owned(),
        "/sales/slots/0x1234".to_owned(),
        "/sales/availability".to_owned(),
        "/sales/availability/0xabcd".to_owned(),
        "/sales/availability/0xabcd/reservations".to_owned(),
        format!("/storage/request/{cid}"),
        "/storage/purchases".to_owned(),
        "/storage/purchases/0x5678".to_owned(),
    ] {
        for base in ["/api/storage/v1", "/api/codex/v1"] {
            for method in ["GET", "POST", "DELETE", "PUT", "PATCH"] {
                let r = call(&n, method, &format!("{base}{path}"));
                assert_eq!(r.status, 501, "{method} {base}{path}: {}", r.text());
                assert_eq!(r.text(), MARKETPLACE_TEXT, "{method} {base}{path}");
                assert!(
                    r.header("content-type")
                        .unwrap_or("")
                        .starts_with("text/plain"),
                    "{method} {base}{path}"
                );
            }
        }
    }
    let r = TestNode::finish(
        n.agent
            .options(format!("{}{BASE}/data", n.url))
            .header("Access-Control-Request-Method", "POST")
            .call(),
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("POST, OPTIONS")
    );
    assert_eq!(r.header("access-control-max-age"), Some("86400"));
    assert_eq!(
        r.header("access-control-allow-headers"),
        Some("content-type, content-disposition")
    );
    let r = n.get(&format!("{BASE}/space"));
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(
        r.header("access-control-allow-methods"),
        Some("GET, OPTIONS")
    );
}

/// The 501 body of every marketplace path (rest-api.md §5).
const MARKETPLACE_TEXT: &str = "The marketplace is not supported by this node: cairn stores data \
     altruistically (no contracts, no payments).";

/// Sends `method` to `path` with no body.
fn call(n: &TestNode, method: &str, path: &str) -> common::Reply {
    let request = ureq::http::Request::builder()
        .method(method)
        .uri(format!("{}{path}", n.url))
        .body(())
        .expect("request");
    TestNode::finish(n.agent.run(request))
}

/// The methods listed in a 405's `Allow` header, upper-cased.
fn allowed(r: &common::Reply) -> std::collections::BTreeSet<String> {
    r.header("allow")
        .expect("a 405 carries Allow")
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect()
}

#[test]
fn wrong_method_is_405_with_a_complete_allow_header() {
    let n = TestNode::start();
    let cid = n.upload(b"allow header test");
    // (path, the methods its route accepts: axum's GET also answers HEAD).
    let routes = [
        (
            format!("{BASE}/data/{cid}"),
            &["DELETE", "GET", "HEAD", "OPTIONS"][..],
        ),
        (format!("{BASE}/data"), &["GET", "HEAD", "OPTIONS", "POST"]),
        (
            format!("{BASE}/data/{cid}/advertise"),
            &["GET", "HEAD", "POST"],
        ),
        (format!("{BASE}/data/{cid}/exists"), &["GET", "HEAD"]),
        (format!("{BASE}/data/{cid}/network"), &["POST"]),
        (format!("{BASE}/space"), &["GET", "HEAD"]),
        (
            format!("/api/codex/v1/data/{cid}"),
            &["DELETE", "GET", "HEAD", "OPTIONS"],
        ),
    ];
    let all = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"];
    for (path, accepted) in &routes {
        let want: std::collections::BTreeSet<String> =
            accepted.iter().map(|m| (*m).to_owned()).collect();
        for method in all {
            if want.contains(method) {
                // Each listed method is really routed (DELETE is not sent: it would remove
                // the dataset the other probes use).
                if method != "DELETE" {
                    let r = call(&n, method, path);
                    assert_ne!(r.status, 405, "{method} {path} is routed");
                }
                continue;
            }
            let r = call(&n, method, path);
            assert_eq!(r.status, 405, "{method} {path}: {}", r.text());
            assert_eq!(allowed(&r), want, "Allow of {method} {path}");
            if method != "HEAD" {
                assert_eq!(r.text(), "Method not allowed", "{method} {path}");
                assert!(
                    r.header("content-type")
                        .unwrap_or("")
                        .starts_with("text/plain"),
                    "{method} {path}"
                );
            }
        }
    }
    // The dataset is untouched by the refused requests; DELETE is routed too.
    assert_eq!(
        n.get(&format!("{BASE}/data/{cid}")).body,
        b"allow header test"
    );
    assert_eq!(n.delete(&format!("{BASE}/data/{cid}")).status, 204);
}

#[test]
fn options_without_cors_is_plain_204() {
    let n = TestNode::start();
    let cid = "zDvZRwzm2V3HGtn5tmrbsuM1SETjaM8P8yTHRZXS8ELyJWo4kE1q";
    let r = TestNode::finish(
        n.agent
            .options(format!("{}{BASE}/data/{cid}", n.url))
            .call(),
    );
    assert_eq!(r.status, 204);
    assert!(r.header("access-control-allow-origin").is_none());
}

#[test]
fn node_and_debug_endpoints() {
    let n = TestNode::start();
    let json = n.get(&format!("{BASE}/peerid")).json();
    let id = json["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("12D3KooW"), "{id}");
    let text = n.get_with(&format!("{BASE}/node/peerid"), ("accept", "text/plain"));
    assert_eq!(text.text(), id);
    let spr = n.get("/api/codex/v1/spr").json();
    assert!(spr["spr"].as_str().expect("spr").starts_with("spr:"));
    let spr_text = n.get_with(&format!("{BASE}/spr"), ("accept", "text/plain"));
    assert!(spr_text.text().starts_with("spr:"));

    let info = n.get(&format!("{BASE}/debug/info")).json();
    for key in [
        "id",
        "addrs",
        "announceAddresses",
        "spr",
        "repo",
        "libp2pPubKey",
        "table",
        "storage",
        "codex",
        "nat",
        "connections",
    ] {
        assert!(info.get(key).is_some(), "debug/info lacks {key}");
    }
    assert_eq!(info["id"], id.as_str());
    assert_eq!(info["libp2pPubKey"].as_str().map(str::len), Some(64));
    let local = &info["table"]["localNode"];
    for key in [
        "nodeId",
        "peerId",
        "record",
        "address",
        "seen",
        "addresses",
        "lastSeen",
    ] {
        assert!(local.get(key).is_some(), "localNode lacks {key}");
    }
    assert!(local["lastSeen"].is_null());
    assert!(
        info["storage"]["version"]
            .as_str()
            .expect("version")
            .starts_with('v')
    );
    assert_eq!(info["nat"]["reachability"], "Unknown");

    let r = n.post(
        &format!("{BASE}/debug/chronicles/loglevel?level=DEBUG;cairn_store:TRACE"),
        b"",
        &[],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let r = n.post(&format!("{BASE}/debug/chronicles/loglevel"), b"", &[]);
    assert_eq!((r.status, r.text().as_str()), (400, "Missing log level"));
    let r = n.post(
        &format!("{BASE}/debug/chronicles/loglevel?level=LOUD"),
        b"",
        &[],
    );
    assert_eq!(r.status, 400);

    let r = n.get(&format!("{BASE}/debug/peer/{id}"));
    assert_eq!((r.status, r.text().as_str()), (400, "Unable to find Peer!"));
    assert_eq!(n.get(&format!("{BASE}/debug/peer/garbage")).status, 400);

    for base in ["/api/storage/v1", "/api/codex/v1"] {
        let doc = n.get(&format!("{base}/openapi.json")).json();
        assert_eq!(doc["servers"][0]["url"], base);
        assert!(doc["paths"]["/data/{cid}"]["get"].is_object());
        // The durability API (durability.md §17), with generic JSON bodies.
        for (path, methods) in [
            ("/swarms", &["get", "post"][..]),
            ("/swarms/{id}", &["get"]),
            ("/swarms/{id}/invites", &["post"]),
            ("/swarms/{id}/join", &["post"]),
            ("/swarms/{id}/members", &["get"]),
            ("/swarms/{id}/members/{peerId}", &["delete"]),
            ("/swarms/{id}/leave", &["post"]),
            ("/swarms/{id}/datasets", &["get", "post"]),
            ("/swarms/{id}/datasets/{cid}", &["delete"]),
            ("/swarms/{id}/datasets/{cid}/health", &["get"]),
        ] {
            for m in methods {
                let op = &doc["paths"][path][m];
                assert!(op.is_object(), "{m} {path} in {base}");
                assert!(!op["responses"].as_object().unwrap().is_empty());
            }
        }
        let create = &doc["paths"]["/swarms"]["post"];
        assert_eq!(
            create["requestBody"]["content"]["application/json"]["schema"]["type"],
            "object"
        );
        assert_eq!(
            create["responses"]["201"]["content"]["application/json"]["schema"]["type"],
            "object"
        );
        let health = &doc["paths"]["/swarms/{id}/datasets/{cid}/health"]["get"];
        assert_eq!(health["parameters"].as_array().unwrap().len(), 2);
        assert!(doc["openapi"].as_str().expect("version").starts_with("3.1"));
    }
}

/// A JSON array of strings, each a multiaddr.
fn multiaddrs(v: &serde_json::Value, what: &str) -> Vec<cairn_net::Multiaddr> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not an array: {v}"))
        .iter()
        .map(|a| {
            a.as_str()
                .unwrap_or_else(|| panic!("{what} holds a non-string: {a}"))
                .parse()
                .unwrap_or_else(|e| panic!("{what}: {a} is not a multiaddr: {e}"))
        })
        .collect()
}

#[test]
fn spr_peer_id_and_debug_info_agree() {
    use sha2::Digest as _;

    let n = TestNode::start();
    let id = n.get(&format!("{BASE}/peerid")).json()["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let peer: cairn_net::PeerId = id.parse().expect("peer id parses");
    assert_eq!(id, n.peer_id());

    let info_reply = n.get(&format!("{BASE}/debug/info"));
    assert_eq!(info_reply.status, 200);
    assert_eq!(info_reply.header("content-type"), Some("application/json"));
    assert!(info_reply.text().contains("\n  \""), "pretty-printed");
    let info = info_reply.json();
    let announced = multiaddrs(&info["announceAddresses"], "announceAddresses");
    let listening = multiaddrs(&info["addrs"], "addrs");
    // The test node listens on 127.0.0.1 and has no peers: it announces its listen addresses.
    assert_eq!(announced, listening);
    assert!(
        announced
            .iter()
            .any(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/")),
        "{announced:?}"
    );

    // GET /spr (both forms, both bases) is a valid record of this node listing the announced
    // addresses.
    for base in ["/api/storage/v1", "/api/codex/v1"] {
        let json = n.get(&format!("{base}/spr"));
        assert_eq!(json.status, 200);
        let text = n.get_with(&format!("{base}/spr"), ("accept", "text/plain"));
        assert_eq!(text.status, 200);
        for spr in [
            json.json()["spr"].as_str().expect("spr").to_owned(),
            text.text(),
        ] {
            let parsed = cairn_net::Spr::from_text(&spr)
                .unwrap_or_else(|e| panic!("{base}/spr does not parse ({e}): {spr}"));
            assert_eq!(parsed.peer_id(), peer, "{base}/spr signer");
            assert_eq!(parsed.addresses(), &announced[..], "{base}/spr addresses");
        }
    }

    // /debug/info's own record matches its own fields (one snapshot).
    let spr_text = info["spr"].as_str().expect("spr is a string");
    let spr = cairn_net::Spr::from_text(spr_text).expect("debug/info spr parses");
    assert_eq!(spr.peer_id(), peer);
    assert_eq!(spr.addresses(), &announced[..]);

    assert_eq!(info["id"], id.as_str());
    let repo = std::fs::canonicalize(n._dir.path()).expect("canonical data dir");
    assert_eq!(info["repo"], repo.display().to_string().as_str());
    // An Ed25519 peer id is the identity multihash of the protobuf public key, whose last 32
    // bytes are the raw key.
    let peer_bytes = peer.to_bytes();
    assert_eq!(
        info["libp2pPubKey"],
        hex::encode(&peer_bytes[peer_bytes.len() - 32..]).as_str()
    );

    let table = &info["table"];
    let local = &table["localNode"];
    assert_eq!(
        local["nodeId"],
        hex::encode(sha2::Sha256::digest(&peer_bytes)).as_str(),
        "nodeId is hex SHA-256 of the peer id bytes"
    );
    assert_eq!(local["peerId"], id.as_str());
    assert_eq!(local["record"], spr_text);
    assert_eq!(local["seen"], false);
    assert!(local["lastSeen"].is_null());
    assert_eq!(
        multiaddrs(&local["addresses"], "localNode.addresses"),
        announced
    );
    // `address` is ip:port of the first IP/TCP address.
    let ip_port = announced
        .iter()
        .find_map(|a| {
            let (mut ip, mut port) = (None, None);
            for p in a.iter() {
                match p {
                    cairn_net::Protocol::Ip4(v) => ip = Some(v.to_string()),
                    cairn_net::Protocol::Tcp(v) => port = Some(v),
                    _ => {}
                }
            }
            Some(format!("{}:{}", ip?, port?))
        })
        .expect("an IPv4/TCP address");
    assert!(ip_port.starts_with("127.0.0.1:"), "{ip_port}");
    assert_eq!(local["address"], ip_port.as_str());
    assert_eq!(table["nodes"], serde_json::json!([]), "no peers yet");
    assert_eq!(info["connections"], serde_json::json!([]), "no peers yet");

    for key in ["storage", "codex"] {
        let v = &info[key];
        let version = v["version"]
            .as_str()
            .unwrap_or_else(|| panic!("{key}.version"));
        assert!(version.starts_with('v'), "{key}.version {version}");
        assert!(
            !v["revision"]
                .as_str()
                .unwrap_or_else(|| panic!("{key}.revision"))
                .is_empty()
        );
    }
    assert_eq!(info["codex"], info["storage"]);

    let nat = &info["nat"];
    assert!(
        ["Unknown", "Reachable", "NotReachable"]
            .contains(&nat["reachability"].as_str().unwrap_or("")),
        "{nat}"
    );
    assert!(nat["clientMode"].is_boolean(), "{nat}");
    assert!(nat["relayRunning"].is_boolean(), "{nat}");
    assert!(
        ["none", "upnp", "pmp", "pcp", "direct"]
            .contains(&nat["portMapping"].as_str().unwrap_or("")),
        "{nat}"
    );
}

#[test]
fn advertise_flag_round_trip() {
    let n = TestNode::start();
    let cid = n.upload(b"advertised bytes");
    let r = n.get(&format!("{BASE}/data/{cid}/advertise")).json();
    assert_eq!(r["advertise"], true);
    let r = n.post(
        &format!("{BASE}/data/{cid}/advertise?advertise=false"),
        b"",
        &[],
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["advertise"], false);
    assert_eq!(
        n.get(&format!("{BASE}/data/{cid}/advertise")).json()["advertise"],
        false
    );
    let r = n.post(&format!("{BASE}/data/{cid}/advertise"), b"", &[]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (400, "Missing or invalid advertise parameter")
    );
    let cid2 = n
        .post(&format!("{BASE}/data?advertise=false"), b"quiet", &[])
        .text();
    assert_eq!(
        n.get(&format!("{BASE}/data/{cid2}/advertise")).json()["advertise"],
        false
    );
}

#[test]
fn missing_blocks_with_no_peer_answer_404_before_headers() {
    // A manifest whose blocks are not local: stored straight into the store before the node
    // starts, as a download interrupted by a restart would leave it.
    let dir = tempfile::tempdir().expect("tempdir");
    let data = pattern(200_000, 11);
    let (_, dataset) =
        cairn_core::build_from_bytes(&data, cairn_core::BlockSize::DEFAULT, None, None)
            .expect("dataset");
    {
        let store =
            cairn_store::FjallStore::open(dir.path().join("store"), 1 << 30).expect("store");
        cairn_store::BlockStore::put_manifest(
            &store,
            &dataset.manifest_cid,
            dataset.manifest_bytes.clone().into(),
            cairn_store::DatasetFlags {
                pinned: true,
                advertise: true,
            },
        )
        .expect("manifest");
    }
    let n = TestNode::start_in(dir, |_| {});
    let r = n.get(&format!("{BASE}/data/{}", dataset.manifest_cid));
    // Nobody has the blocks: the fetch fails within the lookup bound, with a status and a
    // reason, before any header of a 200 is sent.
    assert_eq!(r.status, 404, "{}", r.text());
    assert!(
        r.text().contains("no peer provided the missing blocks"),
        "{}",
        r.text()
    );
    // Partial datasets are not listed.
    assert_eq!(
        n.get(&format!("{BASE}/data")).json()["content"],
        serde_json::json!([])
    );
}
