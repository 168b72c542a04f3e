//! Shared helpers of the cairn-net tests (and the loopback example): an in-memory
//! `ContentServer`, node start-up on 127.0.0.1, and a raw libp2p client that writes frames by
//! hand.

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use cairn_core::{BlockSize, Cid, Dataset, DatasetBuilder, MerkleTree};
use cairn_net::{ContentServer, Identity, Multiaddr, NetConfig, NetEvent, Network, ServedBlock};
use libp2p::{
    PeerId, Stream, StreamProtocol, Swarm, futures::StreamExt as _, multiaddr::Protocol, noise,
    swarm::SwarmEvent, tcp, yamux,
};
use tokio::sync::mpsc;

/// Every wait in the tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

struct Tree {
    tree: MerkleTree,
    blocks: Vec<(Cid, Bytes)>,
}

/// Datasets held in memory, all advertised and complete.
#[derive(Default)]
pub struct MemContent {
    manifests: Mutex<HashMap<Cid, Bytes>>,
    trees: Mutex<HashMap<Cid, Arc<Tree>>>,
}

impl MemContent {
    /// Adds the dataset of `data`; returns it.
    pub fn add(&self, data: &[u8], block_size: BlockSize) -> Dataset {
        self.add_streamed(data.len() as u64, block_size, |offset, buf| {
            let start = offset as usize;
            buf.copy_from_slice(&data[start..start + buf.len()]);
        })
    }

    /// Adds a dataset of `size` bytes produced piecewise by `fill(offset, buf)`, without holding
    /// the input and the blocks at once.
    pub fn add_streamed(
        &self,
        size: u64,
        block_size: BlockSize,
        mut fill: impl FnMut(u64, &mut [u8]),
    ) -> Dataset {
        let mut builder = DatasetBuilder::new(block_size);
        let mut blocks = Vec::new();
        let mut offset = 0u64;
        let mut piece = vec![0u8; 1 << 20];
        while offset < size {
            let n = (size - offset).min(piece.len() as u64) as usize;
            fill(offset, &mut piece[..n]);
            blocks.extend(builder.push(&piece[..n]));
            offset += n as u64;
        }
        let (last, leaves) = builder.finish();
        blocks.extend(last);
        let dataset = leaves.into_dataset(None, None).expect("dataset");
        let tree = Tree {
            tree: dataset.tree.clone(),
            blocks: blocks
                .into_iter()
                .map(|b| (b.cid, Bytes::from(b.data)))
                .collect(),
        };
        self.manifests.lock().expect("lock").insert(
            dataset.manifest_cid,
            Bytes::from(dataset.manifest_bytes.clone()),
        );
        self.trees
            .lock()
            .expect("lock")
            .insert(dataset.manifest.tree_cid, Arc::new(tree));
        dataset
    }
}

impl ContentServer for MemContent {
    fn manifest(&self, cid: &Cid) -> Option<Bytes> {
        self.manifests.lock().expect("lock").get(cid).cloned()
    }

    fn presence(&self, tree: &Cid, start: u64, count: u64) -> Option<(Vec<(u64, u64)>, bool)> {
        let tree = self.trees.lock().expect("lock").get(tree).cloned()?;
        let n = tree.blocks.len() as u64;
        let end = start.saturating_add(count).min(n);
        let runs = if start < end {
            vec![(start, end - start)]
        } else {
            Vec::new()
        };
        Some((runs, true))
    }

    fn blocks(&self, tree: &Cid, indices: &[u64]) -> Vec<ServedBlock> {
        let Some(tree) = self.trees.lock().expect("lock").get(tree).cloned() else {
            return Vec::new();
        };
        indices
            .iter()
            .filter_map(|&index| {
                let (cid, data) = tree.blocks.get(usize::try_from(index).ok()?)?;
                Some(ServedBlock {
                    index,
                    cid: *cid,
                    data: data.clone(),
                    proof: tree.tree.proof(index).ok()?,
                })
            })
            .collect()
    }
}

pub fn config() -> NetConfig {
    NetConfig {
        listen_ip: "127.0.0.1".parse().expect("ip"),
        request_timeout: Duration::from_secs(10),
        lookup_timeout: Duration::from_secs(10),
        ..NetConfig::default()
    }
}

pub struct Node {
    pub net: Network,
    pub events: mpsc::Receiver<NetEvent>,
    pub peer: PeerId,
    pub content: Arc<MemContent>,
}

impl Node {
    pub async fn start(config: NetConfig) -> Node {
        let identity = Identity::generate();
        let content = Arc::new(MemContent::default());
        let (net, events) =
            tokio::time::timeout(WAIT, Network::start(&identity, config, content.clone()))
                .await
                .expect("start in time")
                .expect("start");
        Node {
            net,
            events,
            peer: identity.peer_id(),
            content,
        }
    }

    /// A dialable address of this node, with `/p2p/<id>`.
    pub async fn addr(&self) -> Multiaddr {
        let status = self.net.status().await.expect("status");
        status.listen_addrs[0]
            .clone()
            .with(Protocol::P2p(self.peer))
    }

    /// Waits for the next event matching `f`.
    pub async fn next_event<T>(&mut self, mut f: impl FnMut(NetEvent) -> Option<T>) -> T {
        tokio::time::timeout(WAIT, async {
            loop {
                let event = self.events.recv().await.expect("events channel open");
                if let Some(found) = f(event) {
                    return found;
                }
            }
        })
        .await
        .expect("event in time")
    }
}

/// Polls `f` until it returns true, at most [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A bare libp2p node (TCP + Noise + Yamux + streams) connected to one peer, for writing
/// protocol bytes by hand.
pub struct RawClient {
    pub control: libp2p_stream::Control,
    /// The node it is connected to.
    pub peer: PeerId,
    /// Its own (random) identity.
    pub local: PeerId,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawClient {
    pub async fn connect(addr: Multiaddr) -> RawClient {
        let Some(Protocol::P2p(peer)) = addr.iter().last() else {
            panic!("address without /p2p/");
        };
        let mut swarm: Swarm<libp2p_stream::Behaviour> = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("transport")
            .with_behaviour(|_| libp2p_stream::Behaviour::new())
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        let control = swarm.behaviour().new_control();
        let local = *swarm.local_peer_id();
        swarm.dial(addr).expect("dial");
        tokio::time::timeout(WAIT, async {
            loop {
                match swarm.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => break,
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        panic!("raw client dial failed: {error}")
                    }
                    _ => {}
                }
            }
        })
        .await
        .expect("raw client connects in time");
        let task = tokio::spawn(async move {
            loop {
                swarm.select_next_some().await;
            }
        });
        RawClient {
            control,
            peer,
            local,
            task,
        }
    }

    pub async fn open(&self, protocol: &'static str) -> Stream {
        let mut control = self.control.clone();
        tokio::time::timeout(
            WAIT,
            control.open_stream(self.peer, StreamProtocol::new(protocol)),
        )
        .await
        .expect("stream opens in time")
        .expect("stream opens")
    }
}
