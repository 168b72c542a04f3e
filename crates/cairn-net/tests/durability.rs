//! The durability transport on 127.0.0.1 (`durability.md` §7): gossip with application
//! validation, the swarm request-response protocol (also written by hand), and the rendezvous
//! key in Kad. Every wait is bounded.

mod common;

use std::time::Duration;

use bytes::Bytes;
use cairn_net::{
    GossipId, NetError, NetEvent, PeerId, SWARM_MAX_IN_FLIGHT, SWARM_MAX_REQUEST, SWARM_PROTOCOL,
    SwarmResponder, Verdict, ctl_topic, rendezvous_key, shard_topic,
};
use common::{Node, RawClient, WAIT, config, eventually};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::mpsc;

const SWARM: [u8; 32] = [42; 32];

/// `b` dials `a` and both see the connection.
async fn link(a: &mut Node, b: &mut Node) {
    let addr = a.addr().await;
    b.net.connect(a.peer, vec![addr]).await.expect("connect");
    let b_peer = b.peer;
    a.next_event(|e| matches!(e, NetEvent::PeerConnected(p) if p == b_peer).then_some(()))
        .await;
}

/// The next gossip message at `node`, if one arrives within `within`.
async fn next_gossip(
    node: &mut Node,
    within: Duration,
) -> Option<(String, GossipId, PeerId, Bytes)> {
    tokio::time::timeout(within, async {
        loop {
            match node.events.recv().await.expect("events open") {
                NetEvent::Gossip {
                    topic,
                    id,
                    source,
                    data,
                } => return (topic, id, source, data),
                _ => continue,
            }
        }
    })
    .await
    .ok()
}

/// Publishes `data` from `node`, retrying while no peer is known to subscribe yet.
async fn publish_when_heard(node: &Node, topic: &str, data: &[u8]) -> GossipId {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match node
            .net
            .publish(topic.to_owned(), Bytes::copy_from_slice(data))
            .await
        {
            Ok(id) => return id,
            Err(NetError::GossipNoPeers(_)) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "no subscriber in time"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("publish: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gossip_publish_and_receive() {
    common::init_tracing();
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    link(&mut a, &mut b).await;
    let topic = ctl_topic(&SWARM);
    assert!(a.net.subscribe(topic.clone()).await.expect("subscribe"));
    assert!(b.net.subscribe(topic.clone()).await.expect("subscribe"));
    assert!(
        !b.net
            .subscribe(topic.clone())
            .await
            .expect("subscribe again")
    );

    let sent = publish_when_heard(&a, &topic, b"a signed envelope").await;
    assert_eq!(sent, GossipId::of(b"a signed envelope"));
    let (got_topic, id, source, data) = next_gossip(&mut b, WAIT).await.expect("delivered");
    assert_eq!(got_topic, topic);
    assert_eq!(id, sent);
    assert_eq!(source, a.peer);
    assert_eq!(data.as_ref(), b"a signed envelope");
    assert!(
        b.net
            .report_validation(id, source, Verdict::Accept)
            .await
            .expect("report")
    );
    // A verdict on a message never received finds nothing.
    assert!(
        !b.net
            .report_validation(GossipId::of(b"never sent"), source, Verdict::Reject)
            .await
            .expect("report")
    );

    // Identical bytes have the same id: a republish is a duplicate.
    assert!(matches!(
        a.net
            .publish(topic.clone(), Bytes::from_static(b"a signed envelope"))
            .await,
        Err(NetError::GossipDuplicate)
    ));
    // Over 64 KiB is refused before it reaches gossipsub.
    assert!(matches!(
        a.net
            .publish(topic.clone(), Bytes::from(vec![0u8; 64 * 1024 + 1]))
            .await,
        Err(NetError::TooLarge { .. })
    ));
    // Exactly 64 KiB goes through.
    let big = vec![7u8; 64 * 1024];
    let sent = publish_when_heard(&a, &topic, &big).await;
    let (_, id, _, data) = next_gossip(&mut b, WAIT).await.expect("delivered");
    assert_eq!((id, data.len()), (sent, big.len()));

    // A topic nobody else follows.
    let other = shard_topic(&SWARM, 3);
    assert!(matches!(
        a.net.publish(other.clone(), Bytes::from_static(b"x")).await,
        Err(NetError::GossipNoPeers(t)) if t == other
    ));
    // After unsubscribing, B gets nothing more on the topic.
    assert!(b.net.unsubscribe(topic.clone()).await.expect("unsubscribe"));
    assert!(!b.net.unsubscribe(topic.clone()).await.expect("unsubscribe"));
    eventually("A hears the unsubscription", || {
        let a = a.net.clone();
        let topic = topic.clone();
        async move {
            matches!(
                a.publish(
                    topic,
                    Bytes::from(format!("probe {:?}", std::time::Instant::now()))
                )
                .await,
                Err(NetError::GossipNoPeers(_))
            )
        }
    })
    .await;
}

/// A — B — C in a line (A and C ban each other so the only path is through B). B judges
/// every message: what it Rejects never reaches C, and A's score at B carries the P4
/// penalty; what it Accepts is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_message_is_not_forwarded() {
    common::init_tracing();
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    let mut c = Node::start(config()).await;
    a.net.ban(c.peer).await.expect("ban");
    c.net.ban(a.peer).await.expect("ban");
    link(&mut b, &mut a).await;
    link(&mut b, &mut c).await;
    let topic = shard_topic(&SWARM, 0);
    for node in [&a, &b, &c] {
        node.net.subscribe(topic.clone()).await.expect("subscribe");
    }

    // Warm up until B's mesh carries A's messages to C.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut n = 0u32;
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no path A → B → C");
        n += 1;
        publish_when_heard(&a, &topic, format!("warm-up {n}").as_bytes()).await;
        let (_, id, source, _) = next_gossip(&mut b, WAIT).await.expect("B hears A");
        assert_eq!(source, a.peer);
        b.net
            .report_validation(id, source, Verdict::Accept)
            .await
            .expect("report");
        if let Some((_, _, source, _)) = next_gossip(&mut c, Duration::from_millis(500)).await {
            assert_eq!(source, b.peer);
            break;
        }
    }
    assert_eq!(b.net.gossip_score(a.peer).await.expect("score"), Some(0.0));

    // Rejected at B: dropped, A penalised (P4 = −10 × 1²).
    publish_when_heard(&a, &topic, b"forged").await;
    let (_, id, source, data) = loop {
        let got = next_gossip(&mut b, WAIT).await.expect("B hears A");
        if got.3.as_ref() == b"forged" {
            break got;
        }
        b.net
            .report_validation(got.1, got.2, Verdict::Accept)
            .await
            .expect("report");
    };
    assert_eq!(data.as_ref(), b"forged");
    assert!(
        b.net
            .report_validation(id, source, Verdict::Reject)
            .await
            .expect("report")
    );
    let score = b
        .net
        .gossip_score(a.peer)
        .await
        .expect("score")
        .expect("A is scored");
    assert!((-10.0..=-9.0).contains(&score), "P4 penalty, got {score}");

    // Accepted at B: forwarded; C never sees the rejected one.
    publish_when_heard(&a, &topic, b"genuine").await;
    let (_, id, source, _) = next_gossip(&mut b, WAIT).await.expect("B hears A");
    b.net
        .report_validation(id, source, Verdict::Accept)
        .await
        .expect("report");
    loop {
        let (_, _, source, data) = next_gossip(&mut c, WAIT).await.expect("C hears B");
        assert_ne!(data.as_ref(), b"forged", "a rejected message was forwarded");
        assert_eq!(source, b.peer);
        if data.as_ref() == b"genuine" {
            break;
        }
    }

    // An ignored message is not forwarded either, and costs nothing.
    publish_when_heard(&a, &topic, b"stale").await;
    let (_, id, source, _) = next_gossip(&mut b, WAIT).await.expect("B hears A");
    b.net
        .report_validation(id, source, Verdict::Ignore)
        .await
        .expect("report");
    assert!(next_gossip(&mut c, Duration::from_secs(2)).await.is_none());
    let after = b
        .net
        .gossip_score(a.peer)
        .await
        .expect("score")
        .expect("scored");
    assert!(after >= score, "Ignore costs nothing: {score} → {after}");

    // P5: the application score is applied with weight 1.
    assert!(
        b.net
            .set_application_score(a.peer, -1000.0)
            .await
            .expect("set")
    );
    let low = b
        .net
        .gossip_score(a.peer)
        .await
        .expect("score")
        .expect("scored");
    assert!(low < -1000.0 && low > -1011.0, "got {low}");
    b.net
        .set_application_score(a.peer, 0.0)
        .await
        .expect("reset");
}

/// Spawns a swarm request from `from` to `to`.
fn request(
    from: &Node,
    to: PeerId,
    body: &'static [u8],
) -> tokio::task::JoinHandle<Result<Bytes, NetError>> {
    let net = from.net.clone();
    tokio::spawn(async move { net.swarm_request(to, Bytes::from_static(body)).await })
}

async fn next_request(node: &mut Node) -> (PeerId, Bytes, SwarmResponder) {
    node.next_event(|e| match e {
        NetEvent::SwarmRequest {
            peer,
            request,
            responder,
        } => Some((peer, request, responder)),
        _ => None,
    })
    .await
}

async fn outcome(
    task: tokio::task::JoinHandle<Result<Bytes, NetError>>,
) -> Result<Bytes, NetError> {
    tokio::time::timeout(WAIT, task)
        .await
        .expect("request settles in time")
        .expect("task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_request_round_trip() {
    common::init_tracing();
    let mut a = Node::start(config()).await;
    let mut b = Node::start(config()).await;
    link(&mut a, &mut b).await;

    let pending = request(&b, a.peer, b"sync request");
    let (peer, body, responder) = next_request(&mut a).await;
    assert_eq!((peer, body.as_ref()), (b.peer, &b"sync request"[..]));
    assert_eq!(responder.peer(), b.peer);
    assert!(responder.is_open());
    responder
        .respond(Bytes::from_static(b"sync response"))
        .expect("respond");
    assert_eq!(
        outcome(pending).await.expect("answered").as_ref(),
        b"sync response"
    );

    // An empty response is a valid frame.
    let pending = request(&b, a.peer, b"empty please");
    let (_, _, responder) = next_request(&mut a).await;
    responder.respond(Bytes::new()).expect("respond");
    assert!(outcome(pending).await.expect("answered").is_empty());

    // A dropped responder closes the stream; so does a malformed verdict.
    let pending = request(&b, a.peer, b"offer");
    drop(next_request(&mut a).await);
    assert!(matches!(
        outcome(pending).await,
        Err(NetError::Request { .. })
    ));
    let pending = request(&b, a.peer, b"garbage");
    next_request(&mut a).await.2.malformed();
    assert!(matches!(
        outcome(pending).await,
        Err(NetError::Request { .. })
    ));

    // Over the request limit: refused locally, nothing sent.
    let too_big = Bytes::from(vec![0u8; SWARM_MAX_REQUEST + 1]);
    assert!(matches!(
        b.net.swarm_request(a.peer, too_big).await,
        Err(NetError::TooLarge { size, limit }) if size == SWARM_MAX_REQUEST + 1 && limit == SWARM_MAX_REQUEST
    ));
    // Exactly at the limit goes through.
    let net = b.net.clone();
    let a_peer = a.peer;
    let pending = tokio::spawn(async move {
        net.swarm_request(a_peer, Bytes::from(vec![1u8; SWARM_MAX_REQUEST]))
            .await
    });
    let (_, body, responder) = next_request(&mut a).await;
    assert_eq!(body.len(), SWARM_MAX_REQUEST);
    // Over the response limit: refused by the responder.
    let responder_err = responder.respond(Bytes::from(vec![0u8; 1024 * 1024 + 1]));
    assert!(matches!(responder_err, Err(NetError::TooLarge { .. })));
    assert!(outcome(pending).await.is_err());

    // A short per-request bound.
    let started = tokio::time::Instant::now();
    let result = b
        .net
        .swarm_request_within(
            a.peer,
            Bytes::from_static(b"probe"),
            Duration::from_millis(300),
        )
        .await;
    assert!(
        matches!(result, Err(NetError::Request { .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(next_request(&mut a).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_requests_over_the_in_flight_limit_are_busy() {
    common::init_tracing();
    let mut cfg = config();
    cfg.swarm_busy_response = Some(Bytes::from_static(b"busy"));
    let mut a = Node::start(cfg).await;
    let mut b = Node::start(config()).await;
    link(&mut a, &mut b).await;

    let (done_tx, mut done) = mpsc::channel(16);
    for _ in 0..=SWARM_MAX_IN_FLIGHT {
        let net = b.net.clone();
        let done_tx = done_tx.clone();
        let a_peer = a.peer;
        tokio::spawn(async move {
            let result = net
                .swarm_request(a_peer, Bytes::from_static(b"probe"))
                .await;
            let _ = done_tx.send(result).await;
        });
    }
    let mut held = Vec::new();
    for _ in 0..SWARM_MAX_IN_FLIGHT {
        held.push(next_request(&mut a).await.2);
    }
    // The one over the limit is answered busy without reaching the node.
    let busy = tokio::time::timeout(WAIT, done.recv())
        .await
        .expect("busy in time")
        .expect("result");
    assert_eq!(busy.expect("busy answer").as_ref(), b"busy");
    for responder in held {
        responder
            .respond(Bytes::from_static(b"ack"))
            .expect("respond");
    }
    for _ in 0..SWARM_MAX_IN_FLIGHT {
        let result = tokio::time::timeout(WAIT, done.recv())
            .await
            .expect("answer in time")
            .expect("result");
        assert_eq!(result.expect("answered").as_ref(), b"ack");
    }
    // Slots are free again.
    let pending = request(&b, a.peer, b"again");
    next_request(&mut a)
        .await
        .2
        .respond(Bytes::from_static(b"ok"))
        .expect("respond");
    assert_eq!(outcome(pending).await.expect("answered").as_ref(), b"ok");
}

fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
    out
}

/// Reads until the stream ends; true if it ends (EOF or reset) in time without a byte.
async fn closes_silently(stream: &mut libp2p::Stream) -> bool {
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 64];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => true,
            Ok(_) => false,
        }
    })
    .await
    .unwrap_or(false)
}

/// The wire format by hand: a varint-prefixed request gets a varint-prefixed response; an
/// oversized or malformed frame closes the stream without reaching the node; ten of them in
/// a minute get the peer disconnected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_frames_by_hand() {
    common::init_tracing();
    let mut a = Node::start(config()).await;
    let raw = RawClient::connect(a.addr().await).await;

    let mut stream = raw.open(SWARM_PROTOCOL).await;
    let mut frame = varint(5);
    frame.extend_from_slice(b"hello");
    stream.write_all(&frame).await.expect("write");
    stream.flush().await.expect("flush");
    let (_, body, responder) = next_request(&mut a).await;
    assert_eq!(body.as_ref(), b"hello");
    responder
        .respond(Bytes::from(vec![9u8; 300]))
        .expect("respond");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    assert_eq!(&answer[..2], &[0xac, 0x02]);
    assert_eq!(answer[2..], [9u8; 300]);

    // A claim of 1 GiB: refused on the prefix alone.
    let mut stream = raw.open(SWARM_PROTOCOL).await;
    stream.write_all(&varint(1 << 30)).await.expect("write");
    stream.flush().await.expect("flush");
    assert!(closes_silently(&mut stream).await);
    // One byte over the limit, body included.
    let mut stream = raw.open(SWARM_PROTOCOL).await;
    let mut frame = varint(SWARM_MAX_REQUEST as u64 + 1);
    frame.extend(vec![0u8; SWARM_MAX_REQUEST + 1]);
    let _ = stream.write_all(&frame).await;
    let _ = stream.flush().await;
    assert!(closes_silently(&mut stream).await);
    // Nothing reached the node.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                if let Some(NetEvent::SwarmRequest { .. }) = a.events.recv().await {
                    break;
                }
            }
        })
        .await
        .is_err()
    );

    // Eight more bad frames (non-minimal varints) make ten within a minute: disconnected.
    for _ in 0..8 {
        let mut stream = raw.open(SWARM_PROTOCOL).await;
        stream.write_all(&[0x85, 0x00]).await.expect("write");
        stream.flush().await.expect("flush");
        assert!(closes_silently(&mut stream).await);
    }
    let raw_peer = raw.local;
    a.next_event(|e| matches!(e, NetEvent::PeerDisconnected(p) if p == raw_peer).then_some(()))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendezvous_key_provide_and_find() {
    common::init_tracing();
    let a = Node::start(config()).await;
    let mut cfg = config();
    cfg.bootstrap = vec![a.addr().await];
    let b = Node::start(cfg).await;
    let key = rendezvous_key(&SWARM);
    a.net.provide_key(&key).await.expect("provide");

    let found = tokio::time::timeout(WAIT, b.net.find_providers_of_key(&key, 1))
        .await
        .expect("lookup in time")
        .expect("lookup");
    assert_eq!(found, vec![a.peer]);
    // Another swarm's key has no provider.
    let none = b
        .net
        .find_providers_of_key(&rendezvous_key(&[1; 32]), 1)
        .await
        .expect("lookup");
    assert!(none.is_empty());

    a.net.stop_providing_key(&key).await.expect("stop");
}

/// Gossipsub's long-lived streams do not pin connections: peers in a mesh stay connected past
/// the idle timeout, and once they leave the topic the connection idles out as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_mesh_peers_keep_connections_alive() {
    common::init_tracing();
    let mut cfg = config();
    cfg.idle_timeout = Duration::from_millis(500);
    let mut a = Node::start(cfg.clone()).await;
    let mut b = Node::start(cfg).await;
    link(&mut a, &mut b).await;
    let topic = ctl_topic(&SWARM);
    a.net.subscribe(topic.clone()).await.expect("subscribe");
    b.net.subscribe(topic.clone()).await.expect("subscribe");
    publish_when_heard(&a, &topic, b"hello mesh").await;
    let (_, id, source, _) = next_gossip(&mut b, WAIT).await.expect("delivered");
    b.net
        .report_validation(id, source, Verdict::Accept)
        .await
        .expect("report");
    // Well past the idle timeout, still connected (no disconnect event, B still listed).
    let a_peer = a.peer;
    let disconnected = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            if let NetEvent::PeerDisconnected(p) = b.events.recv().await.expect("events")
                && p == a_peer
            {
                return;
            }
        }
    })
    .await;
    assert!(disconnected.is_err(), "a mesh connection idled out");
    let status = b.net.status().await.expect("status");
    assert!(status.connected.iter().any(|p| p.peer_id == a.peer));

    a.net.unsubscribe(topic.clone()).await.expect("unsubscribe");
    b.net.unsubscribe(topic).await.expect("unsubscribe");
    b.next_event(|e| matches!(e, NetEvent::PeerDisconnected(p) if p == a_peer).then_some(()))
        .await;
}
