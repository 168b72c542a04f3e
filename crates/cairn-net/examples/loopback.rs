//! Loopback throughput: one seeder, one leecher, both in this process, talking over TCP +
//! Noise + Yamux on 127.0.0.1. The leecher fetches the manifest and then every block with
//! WantBlocksRequests of 128 KiB (2 blocks of 64 KiB), `INFLIGHT` requests outstanding.
//!
//! ```text
//! cargo run --release -p cairn-net --example loopback -- [MiB=256] [inflight=64] [--verify]
//! ```
//!
//! `--verify` checks every block (SHA-256 and Merkle proof) as a downloader must; without it
//! the figure is the network layer alone.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use cairn_core::{BlockSize, Manifest, wire::DeliveryCheck};
use futures::StreamExt as _;

use common::Node;

#[tokio::main]
async fn main() {
    common::init_tracing();
    let mut args = std::env::args().skip(1).collect::<Vec<_>>();
    let verify = args.iter().any(|a| a == "--verify");
    args.retain(|a| a != "--verify");
    let mib: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(256);
    let inflight: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(64);
    let block_size = BlockSize::DEFAULT;
    let per_request = 131_072 / u64::from(block_size.get());

    let seeder = Node::start(common::config()).await;
    let t = Instant::now();
    let dataset = seeder
        .content
        .add_streamed(mib << 20, block_size, |offset, buf| {
            for (i, b) in buf.iter_mut().enumerate() {
                let x = offset + i as u64;
                *b = (x ^ (x >> 11) ^ (x >> 23)) as u8;
            }
        });
    println!(
        "seeder holds {mib} MiB ({} blocks) after {:.2?}",
        dataset.manifest.blocks_count(),
        t.elapsed()
    );

    let mut cfg = common::config();
    cfg.bootstrap = vec![seeder.addr().await];
    let leecher = Node::start(cfg).await;
    let net = leecher.net.clone();
    let peer = seeder.peer;

    let cpu_start = cpu_seconds();
    let start = Instant::now();
    let bytes = net
        .fetch_manifest(peer, dataset.manifest_cid)
        .await
        .expect("fetch manifest")
        .expect("manifest found");
    let manifest = Manifest::decode(&bytes).expect("manifest decodes");
    let check = DeliveryCheck::new(&manifest);
    let tree = manifest.tree_cid;
    let blocks = manifest.blocks_count();
    let requests = (0..blocks).step_by(per_request as usize).map(|start| {
        let count = per_request.min(blocks - start);
        let net = net.clone();
        async move { net.want_blocks(peer, tree, vec![(start, count)]).await }
    });
    let mut responses = futures::stream::iter(requests).buffer_unordered(inflight);
    let mut received = 0u64;
    let mut delivered = 0u64;
    while let Some(response) = responses.next().await {
        let response = response.expect("want_blocks");
        for block in &response.blocks {
            if verify {
                check.check(block).expect("block verifies");
            }
            received += block.data.len() as u64;
        }
        delivered += response.blocks.len() as u64;
    }
    let elapsed = start.elapsed();
    let cpu = cpu_seconds().zip(cpu_start).map(|(end, start)| end - start);
    assert_eq!(delivered, blocks, "every block delivered");
    let mibs = received as f64 / (1u64 << 20) as f64;
    println!(
        "moved {mibs:.0} MiB in {elapsed:.2?}: {:.0} MiB/s ({inflight} requests of {} KiB in flight{})",
        mibs / elapsed.as_secs_f64(),
        per_request * u64::from(block_size.get()) / 1024,
        if verify { ", every block verified" } else { "" }
    );
    if let Some(cpu) = cpu {
        println!(
            "process CPU during the transfer: {cpu:.2} s ({:.2} cores busy on average)",
            cpu / elapsed.as_secs_f64()
        );
    }
    leecher.net.shutdown().await;
    seeder.net.shutdown().await;
}

/// User + system CPU time of this process so far (Linux; `None` elsewhere).
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // Clock ticks are 100 Hz on every Linux this runs on.
    Some((utime + stime) / 100.0)
}
