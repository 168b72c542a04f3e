//! Measures a staged upload into a [`FjallStore`]: throughput and peak RSS, then the RSS of the
//! reopened, idle store.
//!
//! ```text
//! cargo run --release -p cairn-store --example write_bench -- [MiB] [dir]
//! cargo run --release -p cairn-store --example write_bench -- idle DIR
//! ```
//!
//! `idle` opens an existing store in a fresh process and reports its RSS. With
//! `WRITE_BENCH_TRACE=1` the upload prints the RSS every 128 MiB; with `WRITE_BENCH_DELETE=1`
//! the dataset is deleted at the end (time and peak RSS of the delete);
//! `WRITE_BENCH_BATCH_RECORDS=N` sets `StoreOptions::batch_records`.
//!
//! Blocks are 64 KiB, written 16 per call like the upload path does, then committed (one
//! fsync). The peak RSS is reported for the staging phase and, separately, for the commit (the
//! kernel's peak counter is reset in between, Linux only). CIDs are not the hashes of the bytes (hashing is the caller's cost, not the store's):
//! block i gets digest `H(i)` and the bytes differ per block. Compare with the disk floor:
//! `dd if=/dev/zero of=DIR/dd bs=1M count=MiB conv=fsync`.

use std::time::Instant;

use bytes::Bytes;
use cairn_core::{BlockSize, Cid, Codec, Dataset, sha256};
use cairn_store::{BlockStore, DatasetFlags, FjallStore, StoreOptions};

const BLOCK: usize = 64 * 1024;
const BATCH: usize = 16;

/// Resets this process's peak RSS (`VmHWM`) to its current RSS (Linux `clear_refs`).
fn reset_peak() {
    if let Err(e) = std::fs::write("/proc/self/clear_refs", "5") {
        println!("(cannot reset the peak RSS: {e})");
    }
}

/// `VmHWM` (peak) and `VmRSS` (current) of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn options() -> Result<StoreOptions, Box<dyn std::error::Error>> {
    let mut options = StoreOptions::default();
    if let Ok(n) = std::env::var("WRITE_BENCH_BATCH_RECORDS") {
        options = options.with_batch_records(n.parse()?);
    }
    Ok(options)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).peekable();
    if args.peek().map(String::as_str) == Some("idle") {
        let dir = args.nth(1).ok_or("idle needs the store directory")?;
        let started = Instant::now();
        let store = FjallStore::open_with(&dir, u64::MAX, options()?)?;
        let opened = started.elapsed();
        let listed = store.list_datasets(true)?.len();
        std::thread::sleep(std::time::Duration::from_secs(3));
        let (hwm, rss) = rss_mib();
        println!(
            "opened in {:.2} s ({listed} datasets); after 3 s idle: RSS {rss:.1} MiB, peak {hwm:.1} MiB",
            opened.as_secs_f64()
        );
        return Ok(());
    }
    let mib: usize = args.next().map_or(Ok(1024), |s| s.parse())?;
    let tmp;
    let dir = match args.next() {
        Some(d) => std::path::PathBuf::from(d),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    let blocks = mib * 1024 * 1024 / BLOCK;
    println!("writing {mib} MiB ({blocks} blocks) into {}", dir.display());

    let store = FjallStore::open_with(&dir, u64::MAX, options()?)?;
    let (hwm, rss) = rss_mib();
    println!("opened: peak RSS {hwm:.1} MiB, RSS {rss:.1} MiB");

    let mut template = vec![0u8; BLOCK];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for chunk in template.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes());
    }

    let started = Instant::now();
    let id = store.begin_staging()?;
    let mut leaves = Vec::with_capacity(blocks);
    let mut batch = Vec::with_capacity(BATCH);
    for i in 0..blocks as u64 {
        let digest = sha256(&i.to_le_bytes());
        leaves.push(digest);
        let mut data = template.clone();
        data[..8].copy_from_slice(&i.to_le_bytes());
        batch.push((i, Cid::new(Codec::Block, digest), Bytes::from(data)));
        if batch.len() == BATCH {
            store.put_staged_blocks(id, &batch)?;
            batch.clear();
        }
        if std::env::var_os("WRITE_BENCH_TRACE").is_some() && i % 2048 == 2047 {
            let (hwm, rss) = rss_mib();
            println!(
                "  {} MiB written: RSS {rss:.1} MiB, peak {hwm:.1} MiB",
                (i + 1) / 16
            );
        }
    }
    if !batch.is_empty() {
        store.put_staged_blocks(id, &batch)?;
    }
    let staged = started.elapsed();
    let (hwm, rss) = rss_mib();
    println!("after staging: peak RSS {hwm:.1} MiB, RSS {rss:.1} MiB");
    let size = (blocks * BLOCK) as u64;
    let dataset = Dataset::from_leaves(leaves, BlockSize::DEFAULT, size, None, None)?;
    let flags = DatasetFlags {
        pinned: true,
        advertise: false,
    };
    let (_, with_tree) = rss_mib();
    reset_peak();
    let commit_started = Instant::now();
    store.commit_staging(id, &dataset, flags)?;
    let total = started.elapsed();
    let (hwm, rss) = rss_mib();
    println!(
        "staged in {:.2} s, committed (incl. fsync) in {:.2} s, total {:.2} s: {:.0} MiB/s",
        staged.as_secs_f64(),
        commit_started.elapsed().as_secs_f64(),
        total.as_secs_f64(),
        mib as f64 / total.as_secs_f64()
    );
    println!(
        "commit: peak RSS {hwm:.1} MiB (+{:.1} over the {with_tree:.1} MiB before it, Merkle \
         tree included), RSS after {rss:.1} MiB",
        hwm - with_tree
    );
    println!("space: {:?}", store.space()?);
    let manifest_cid = dataset.manifest_cid;
    drop(dataset);
    drop(store);

    let started = Instant::now();
    let store = FjallStore::open_with(&dir, u64::MAX, options()?)?;
    let (_, rss) = rss_mib();
    println!(
        "reopened in {:.2} s: RSS {rss:.1} MiB (idle), disk {:.0} MiB",
        started.elapsed().as_secs_f64(),
        store.disk_space()? as f64 / 1048576.0
    );
    std::thread::sleep(std::time::Duration::from_secs(2));
    let (_, before) = rss_mib();
    println!("idle 2 s later: RSS {before:.1} MiB");
    if std::env::var_os("WRITE_BENCH_DELETE").is_none() {
        return Ok(());
    }

    reset_peak();
    let started = Instant::now();
    store.delete_dataset(&manifest_cid)?;
    store.sync()?;
    let (hwm, rss) = rss_mib();
    println!(
        "deleted in {:.2} s: peak RSS {hwm:.1} MiB (+{:.1}), RSS after {rss:.1} MiB, space {:?}",
        started.elapsed().as_secs_f64(),
        hwm - before,
        store.space()?
    );
    Ok(())
}
