//! Nodes on 127.0.0.1: discovery by CID, the manifest protocol, presences, block exchange,
//! malformed requests written by hand, and bans. Every wait is bounded.

mod common;

use std::time::Duration;

use cairn_core::{
    BlockSize, Cid, Codec, Manifest,
    wire::{
        BLOCKEXC_PROTOCOL, BlockAddress, BlockPresence, BlockRange, DeliveryCheck,
        FRAME_HEADER_LEN, Frame, FrameHeader, MANIFEST_PROTOCOL, ManifestRequest, ManifestResponse,
        Message, PresenceKind, WantBlocksRequest, WantBlocksResponse, WantEntry, Wantlist,
    },
};
use cairn_net::{NetError, NetEvent};
use common::{Node, RawClient, WAIT, config, eventually};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};

/// `len` bytes of a fixed pseudo-random pattern.
fn data(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn with_bootstrap(boot: &Node) -> Node {
    let mut cfg = config();
    cfg.bootstrap = vec![boot.addr().await];
    Node::start(cfg).await
}

fn want_have(tree: Cid, index: u64, range_count: u64, download_id: u64) -> Message {
    Message {
        wantlist: Wantlist {
            entries: vec![WantEntry {
                address: BlockAddress {
                    tree_cid: tree,
                    index,
                },
                priority: 0,
                cancel: false,
                send_dont_have: true,
                range_count,
                download_id,
            }],
            full: false,
        },
        block_presences: Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discover_fetch_and_exchange_blocks() {
    common::init_tracing();
    let a = Node::start(config()).await;
    // 40 blocks of 4 KiB, the last one partial.
    let bytes = data(40 * 4096 - 100, 1);
    let dataset = a.content.add(&bytes, BlockSize::MIN);
    let manifest_cid = dataset.manifest_cid;
    let tree = dataset.manifest.tree_cid;
    a.net.provide(manifest_cid).await.expect("provide");
    a.net.provide(tree).await.expect("provide tree");

    let mut b = with_bootstrap(&a).await;

    // Discovery by CID alone.
    let found = tokio::time::timeout(WAIT, b.net.find_providers(manifest_cid, 1))
        .await
        .expect("lookup in time")
        .expect("lookup");
    assert_eq!(found, vec![a.peer]);

    // The manifest, verified against its CID.
    let fetched = b
        .net
        .fetch_manifest(a.peer, manifest_cid)
        .await
        .expect("fetch")
        .expect("found");
    assert_eq!(&fetched[..], &dataset.manifest_bytes[..]);
    let manifest = Manifest::decode(&fetched).expect("decode");
    assert_eq!(manifest, dataset.manifest);
    // An unknown manifest and a CID of another codec are NotFound.
    let unknown = Cid::new(Codec::Manifest, [3; 32]);
    assert!(
        b.net
            .fetch_manifest(a.peer, unknown)
            .await
            .expect("fetch")
            .is_none()
    );
    assert!(
        b.net
            .fetch_manifest(a.peer, tree)
            .await
            .expect("fetch")
            .is_none()
    );

    // A want-have is answered with a presence event.
    b.net
        .send_control(a.peer, want_have(tree, 0, 40, 77))
        .await
        .expect("send want-have");
    let presence = b
        .next_event(|event| match event {
            NetEvent::Control { peer, message } if peer == a.peer => {
                message.block_presences.into_iter().next()
            }
            _ => None,
        })
        .await;
    assert_eq!(presence.address.tree_cid, tree);
    assert_eq!(presence.download_id, 77);
    assert!(matches!(
        presence.kind,
        PresenceKind::Complete | PresenceKind::HaveRange
    ));

    // Blocks, many requests in flight at once, every block verified.
    let check = DeliveryCheck::new(&manifest);
    let batches: Vec<Vec<(u64, u64)>> = vec![
        vec![(0, 8)],
        vec![(8, 8), (20, 4)],
        vec![(16, 4)],
        vec![(24, 16)],
    ];
    let responses = futures::future::join_all(
        batches
            .iter()
            .map(|ranges| b.net.want_blocks(a.peer, tree, ranges.clone())),
    )
    .await;
    let mut got = vec![None; 40];
    for (ranges, response) in batches.iter().zip(responses) {
        let response = response.expect("want_blocks");
        assert_eq!(response.tree_cid, tree);
        let asked: u64 = ranges.iter().map(|r| r.1).sum();
        assert_eq!(response.blocks.len() as u64, asked);
        for block in &response.blocks {
            check.check(block).expect("block verifies");
            got[block.index as usize] = Some(block.data.clone());
        }
    }
    let joined: Vec<u8> = got
        .into_iter()
        .flat_map(|b| b.expect("every block"))
        .collect();
    assert_eq!(&joined[..bytes.len()], &bytes[..]);

    // Blocks of a tree A does not hold: an empty response.
    let other = Cid::new(Codec::Root, [5; 32]);
    let empty = b
        .net
        .want_blocks(a.peer, other, vec![(0, 1)])
        .await
        .expect("want");
    assert!(empty.blocks.is_empty());
    // Invalid ranges are refused locally.
    assert!(matches!(
        b.net.want_blocks(a.peer, tree, vec![(0, 33)]).await,
        Err(NetError::Request { .. })
    ));

    // An unsolicited presence (a downloader announcing what it holds) reaches the node as an
    // event too.
    let announce = Message {
        wantlist: Wantlist::default(),
        block_presences: vec![BlockPresence {
            address: BlockAddress {
                tree_cid: tree,
                index: 0,
            },
            kind: PresenceKind::HaveRange,
            ranges: vec![BlockRange { start: 0, count: 8 }],
            download_id: 0,
        }],
    };
    a.net
        .send_control(b.peer, announce.clone())
        .await
        .expect("announce");
    let got = b
        .next_event(|event| match event {
            NetEvent::Control { peer, message } if peer == a.peer && message == announce => {
                Some(message)
            }
            _ => None,
        })
        .await;
    assert_eq!(got.block_presences[0].ranges.len(), 1);

    let status = a.net.status().await.expect("status");
    assert!(status.connected.iter().any(|p| p.peer_id == b.peer));
    assert!(!status.external_addrs.is_empty());
    assert!(status.routing_table_size >= 1);

    b.net.shutdown().await;
    a.net.shutdown().await;
    assert!(matches!(a.net.status().await, Err(NetError::Stopped)));
}

/// B provides; C, who only knows A, finds B through the provider record A stores and fetches
/// from B. Then C connects to B by peer id alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_found_through_a_third_node() {
    common::init_tracing();
    let a = Node::start(config()).await;
    let b = with_bootstrap(&a).await;
    let c = with_bootstrap(&a).await;
    let dataset = b.content.add(&data(10 * 4096, 2), BlockSize::MIN);
    // Wait until A knows B as a DHT server, so B's record lands on A.
    eventually("A's routing table holds B", || async {
        a.net.status().await.expect("status").routing_table_size >= 2
    })
    .await;
    b.net.provide(dataset.manifest_cid).await.expect("provide");

    let deadline = tokio::time::Instant::now() + WAIT;
    let found = loop {
        let found = c
            .net
            .find_providers(dataset.manifest_cid, 3)
            .await
            .expect("lookup");
        if !found.is_empty() {
            break found;
        }
        assert!(tokio::time::Instant::now() < deadline, "C finds B in time");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(found, vec![b.peer]);
    let bytes = c
        .net
        .fetch_manifest(b.peer, dataset.manifest_cid)
        .await
        .expect("fetch")
        .expect("found");
    assert_eq!(&bytes[..], &dataset.manifest_bytes[..]);

    // A peer reached by id alone (addresses from the routing table or the DHT).
    let d = with_bootstrap(&a).await;
    tokio::time::timeout(WAIT, d.net.connect(b.peer, Vec::new()))
        .await
        .expect("connect in time")
        .expect("connect by peer id");
    // Nobody has heard of this one.
    let nobody = libp2p::PeerId::random();
    assert!(d.net.connect(nobody, Vec::new()).await.is_err());
}

async fn read_frame(stream: &mut libp2p::Stream) -> Option<Frame> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    stream.read_exact(&mut header).await.ok()?;
    let header = FrameHeader::decode(header).expect("valid header");
    let mut body = vec![0u8; header.body_len];
    stream.read_exact(&mut body).await.expect("body");
    Some(Frame::decode_body(header.frame_type, &body).expect("frame decodes"))
}

async fn write_raw(stream: &mut libp2p::Stream, frame_type: u8, body: &[u8]) {
    try_write_raw(stream, frame_type, body)
        .await
        .expect("write");
}

async fn try_write_raw(
    stream: &mut libp2p::Stream,
    frame_type: u8,
    body: &[u8],
) -> std::io::Result<()> {
    let len = u32::try_from(body.len() + 1).expect("len");
    let mut bytes = len.to_le_bytes().to_vec();
    bytes.push(frame_type);
    bytes.extend_from_slice(body);
    stream.write_all(&bytes).await?;
    stream.flush().await
}

fn request(id: u64, tree: Cid, ranges: &[(u64, u64)]) -> WantBlocksRequest {
    WantBlocksRequest {
        request_id: id,
        tree_cid: tree,
        ranges: ranges
            .iter()
            .map(|&(start, count)| BlockRange { start, count })
            .collect(),
    }
}

/// Reads until the stream ends; true if it ends (EOF or reset) in time.
async fn closes(stream: &mut libp2p::Stream) -> bool {
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_by_hand() {
    common::init_tracing();
    let a = Node::start(config()).await;
    let dataset = a.content.add(&data(64 * 4096, 3), BlockSize::MIN);
    let tree = dataset.manifest.tree_cid;
    let raw = RawClient::connect(a.addr().await).await;

    // Bad ranges: count 0, more than 32 blocks, overflow, beyond 2^63; then a good request.
    let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
    let bad: [&[(u64, u64)]; 5] = [
        &[(0, 0)],
        &[(0, 33)],
        &[(0, 20), (30, 13)],
        &[(u64::MAX, 2)],
        &[((1 << 63) - 1, 2)],
    ];
    for (id, ranges) in bad.iter().enumerate() {
        let body = request(id as u64 + 100, tree, ranges)
            .encode_body()
            .expect("encode");
        write_raw(&mut stream, 1, &body).await;
    }
    // Inconsistent body length (one stray byte): also answered with 0 blocks.
    let mut body = request(200, tree, &[(0, 1)]).encode_body().expect("encode");
    body.push(0);
    write_raw(&mut stream, 1, &body).await;
    let good = request(300, tree, &[(2, 3)]).encode_body().expect("encode");
    write_raw(&mut stream, 1, &good).await;

    let mut answered = std::collections::HashMap::new();
    for _ in 0..7 {
        let frame = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .expect("response in time")
            .expect("response");
        let Frame::WantBlocksResponse(response) = frame else {
            panic!("expected a WantBlocksResponse");
        };
        assert_eq!(response.tree_cid, tree);
        answered.insert(response.request_id, response);
    }
    for id in [100, 101, 102, 103, 104, 200] {
        assert_eq!(
            answered[&id],
            WantBlocksResponse::empty(id, tree),
            "request {id}"
        );
    }
    let indices: Vec<u64> = answered[&300].blocks.iter().map(|b| b.index).collect();
    assert_eq!(indices, vec![2, 3, 4]);

    // A frame claiming a 4 GiB response body: the stream is closed.
    let mut header = (u32::MAX - 1).to_le_bytes().to_vec();
    header.push(2);
    stream.write_all(&header).await.expect("write");
    stream.flush().await.expect("flush");
    assert!(
        closes(&mut stream).await,
        "oversized frame closes the stream"
    );

    // An unknown frame type: closed too.
    let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
    write_raw(&mut stream, 7, b"hello").await;
    assert!(closes(&mut stream).await, "unknown type closes the stream");

    // A control message that does not decode: closed.
    let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
    write_raw(&mut stream, 0, &[0xff, 0xff, 0xff]).await;
    assert!(
        closes(&mut stream).await,
        "bad control message closes the stream"
    );

    // The manifest protocol: bad cidLen, a block CID, then the real manifest.
    let not_found = ManifestResponse::NotFound.encode().expect("encode");
    for request in [
        vec![0u8, 0],
        {
            let mut r = vec![38, 0];
            r.extend_from_slice(&Cid::EMPTY_BLOCK.to_bytes());
            r
        },
        ManifestRequest { cid: tree }.encode(),
    ] {
        let mut stream = raw.open(MANIFEST_PROTOCOL).await;
        stream.write_all(&request).await.expect("write");
        stream.flush().await.expect("flush");
        let mut response = Vec::new();
        tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
            .await
            .expect("in time")
            .expect("read");
        assert_eq!(response, not_found);
    }
    let mut stream = raw.open(MANIFEST_PROTOCOL).await;
    stream
        .write_all(
            &ManifestRequest {
                cid: dataset.manifest_cid,
            }
            .encode(),
        )
        .await
        .expect("write");
    stream.flush().await.expect("flush");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("in time")
        .expect("read");
    assert_eq!(
        ManifestResponse::decode(&response).expect("decode"),
        ManifestResponse::Found(dataset.manifest_bytes.clone())
    );

    // Still serving after all that.
    let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
    write_raw(&mut stream, 1, &good).await;
    let frame = tokio::time::timeout(WAIT, read_frame(&mut stream))
        .await
        .expect("in time")
        .expect("response");
    assert!(matches!(frame, Frame::WantBlocksResponse(r) if r.blocks.len() == 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn banned_peer_is_refused() {
    common::init_tracing();
    let a = Node::start(config()).await;
    let dataset = a.content.add(&data(8 * 4096, 4), BlockSize::MIN);
    let b = with_bootstrap(&a).await;
    let a_addr = a.addr().await;
    b.net
        .fetch_manifest(a.peer, dataset.manifest_cid)
        .await
        .expect("fetch before the ban")
        .expect("found");

    a.net.ban(b.peer).await.expect("ban");
    // A refuses to talk to B.
    assert!(matches!(
        a.net
            .want_blocks(b.peer, dataset.manifest.tree_cid, vec![(0, 1)])
            .await,
        Err(NetError::Banned(_))
    ));
    assert!(matches!(
        a.net.connect(b.peer, Vec::new()).await,
        Err(NetError::Banned(_))
    ));
    eventually("A drops B", || async {
        let status = a.net.status().await.expect("status");
        !status.connected.iter().any(|p| p.peer_id == b.peer)
    })
    .await;

    // B's requests fail and B cannot get a connection to stick.
    assert!(
        b.net
            .fetch_manifest(a.peer, dataset.manifest_cid)
            .await
            .is_err()
    );
    assert!(
        b.net
            .want_blocks(a.peer, dataset.manifest.tree_cid, vec![(0, 1)])
            .await
            .is_err()
    );
    let _ = b.net.connect(a.peer, vec![a_addr]).await;
    for _ in 0..10 {
        let status = a.net.status().await.expect("status");
        assert!(
            !status.connected.iter().any(|p| p.peer_id == b.peer),
            "a banned peer stays disconnected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another peer is unaffected.
    let c = with_bootstrap(&a).await;
    assert!(
        c.net
            .fetch_manifest(a.peer, dataset.manifest_cid)
            .await
            .expect("fetch")
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ban_expires() {
    common::init_tracing();
    let mut cfg = config();
    cfg.ban_duration = Duration::from_millis(500);
    let a = Node::start(cfg).await;
    let dataset = a.content.add(&data(4 * 4096, 5), BlockSize::MIN);
    let b = with_bootstrap(&a).await;
    let a_addr = a.addr().await;
    a.net.ban(b.peer).await.expect("ban");
    tokio::time::sleep(Duration::from_millis(800)).await;
    eventually("B reconnects after the ban", || async {
        b.net.connect(a.peer, vec![a_addr.clone()]).await.is_ok()
            && b.net
                .fetch_manifest(a.peer, dataset.manifest_cid)
                .await
                .is_ok_and(|m| m.is_some())
    })
    .await;
}

/// Streams and then the connection close when idle; the next request redials by peer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connection_closes_and_requests_redial() {
    common::init_tracing();
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(500);
    let a = Node::start(cfg.clone()).await;
    let dataset = a.content.add(&data(8 * 4096, 6), BlockSize::MIN);
    let tree = dataset.manifest.tree_cid;
    cfg.bootstrap = vec![a.addr().await];
    let mut b = Node::start(cfg).await;
    let first = b
        .net
        .want_blocks(a.peer, tree, vec![(0, 2)])
        .await
        .expect("want");
    assert_eq!(first.blocks.len(), 2);
    let a_peer = a.peer;
    b.next_event(|e| matches!(e, NetEvent::PeerDisconnected(p) if p == a_peer).then_some(()))
        .await;
    let again = b
        .net
        .want_blocks(a.peer, tree, vec![(2, 2)])
        .await
        .expect("want after redial");
    assert_eq!(again.blocks.len(), 2);
    assert!(
        b.net
            .fetch_manifest(a.peer, dataset.manifest_cid)
            .await
            .expect("fetch")
            .is_some()
    );
}

/// At most 100 inbound blockexc streams at once: the 101st is dropped, and a slot frees up
/// when a stream ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_blockexc_streams_are_capped() {
    common::init_tracing();
    let a = Node::start(config()).await;
    let dataset = a.content.add(&data(4 * 4096, 7), BlockSize::MIN);
    let tree = dataset.manifest.tree_cid;
    let raw = RawClient::connect(a.addr().await).await;
    let good = request(1, tree, &[(0, 1)]).encode_body().expect("encode");
    let mut open = Vec::new();
    for _ in 0..100 {
        let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
        // A round trip proves the stream is served.
        write_raw(&mut stream, 1, &good).await;
        let frame = tokio::time::timeout(WAIT, read_frame(&mut stream))
            .await
            .expect("in time");
        assert!(matches!(frame, Some(Frame::WantBlocksResponse(_))));
        open.push(stream);
    }
    let mut extra = raw.open(BLOCKEXC_PROTOCOL).await;
    // The write may already fail: the stream is dropped as soon as it is accepted.
    let _ = try_write_raw(&mut extra, 1, &good).await;
    assert!(closes(&mut extra).await, "the 101st stream is dropped");

    let mut first = open.remove(0);
    first.close().await.expect("close");
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut stream = raw.open(BLOCKEXC_PROTOCOL).await;
        let served = try_write_raw(&mut stream, 1, &good).await.is_ok()
            && tokio::time::timeout(Duration::from_secs(2), read_frame(&mut stream))
                .await
                .ok()
                .flatten()
                .is_some();
        if served {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "a slot frees up in time"
        );
    }
    drop(open);
}

/// The binary's default: listening on 0.0.0.0 with no announce address, there is no external
/// address, so provider records stay local; an announce address becomes the external address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_addresses_come_from_announce() {
    common::init_tracing();
    let cid = Cid::new(Codec::Manifest, [8; 32]);
    let plain = Node::start(cairn_net::NetConfig::default()).await;
    let status = plain.net.status().await.expect("status");
    assert!(!status.listen_addrs.is_empty());
    assert!(status.external_addrs.is_empty());
    plain
        .net
        .provide(cid)
        .await
        .expect("provide is deferred, not refused");
    plain.net.shutdown().await;

    let announce: cairn_net::Multiaddr = "/ip4/203.0.113.7/tcp/8070".parse().expect("addr");
    let announced = Node::start(cairn_net::NetConfig {
        announce: vec![announce.clone()],
        ..cairn_net::NetConfig::default()
    })
    .await;
    eventually("the announce address is external", || async {
        announced.net.status().await.expect("status").external_addrs == vec![announce.clone()]
    })
    .await;
    announced.net.provide(cid).await.expect("provide");
    announced.net.stop_providing(cid).await.expect("stop");
    announced.net.shutdown().await;
}
