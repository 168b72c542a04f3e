//! Erasure-coding throughput against the bare library, measured in the same run.
//!
//! `cargo bench -p cairn-core --bench erasure` encodes 1 GiB (override with `CAIRN_BENCH_MIB`)
//! of 64 KiB blocks with K = 8, M = 8:
//! - bare: `reed-solomon-simd` alone, column by column, parity copied out (what any caller
//!   must do at least);
//! - ours: [`ProtectEncoder`], everything a protected manifest needs: the same parity on every
//!   core, plus the parity leaves, every cell root, the slot roots and the protected tree;
//! - rebuild: [`RowRebuild`] of one data row from K other rows (decode, re-encode, hash every
//!   block of every row, all checks).
//!
//! Each figure is the best of `CAIRN_BENCH_REPEAT` runs (default 3). It prints the times, the
//! throughputs and the ratio ours / bare (target <= 1.3).

use std::time::{Duration, Instant};

use cairn_core::{BlockSize, ProtectEncoder, RowRebuild, build_from_bytes};
use reed_solomon_simd::ReedSolomonEncoder;

const K: u32 = 8;
const M: u32 = 8;
const BLOCK: usize = 64 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn best_of(repeat: u64, mut run: impl FnMut()) -> Duration {
    (0..repeat.max(1))
        .map(|_| {
            let t = Instant::now();
            run();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

/// The K data rows of columns `[first, first + cols)`, row-major (empty at padding).
fn data_rows(blocks: &[Vec<u8>], steps: u64, first: u64, cols: u64) -> Vec<&[u8]> {
    let mut shards = Vec::with_capacity((cols * u64::from(K)) as usize);
    for r in 0..u64::from(K) {
        for c in 0..cols {
            let index = first + c + r * steps;
            shards.push(blocks.get(index as usize).map_or(&[][..], Vec::as_slice));
        }
    }
    shards
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing: run small then.
    let quick = !std::env::args().any(|a| a == "--bench");
    let mib = if quick {
        8
    } else {
        env_u64("CAIRN_BENCH_MIB", 1024)
    };
    let repeat = if quick {
        1
    } else {
        env_u64("CAIRN_BENCH_REPEAT", 3)
    };
    let size = (mib as usize) << 20;
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let data: Vec<u8> = (0..size / 8)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect();
    let (hashed, dataset) =
        build_from_bytes(&data, BlockSize::DEFAULT, None, None).expect("dataset");
    drop(data);
    let blocks: Vec<Vec<u8>> = hashed.into_iter().map(|b| b.data).collect();
    let leaves = dataset.tree.leaves().to_vec();
    let n = blocks.len() as u64;
    let steps = n.div_ceil(u64::from(K));
    let zero = vec![0u8; BLOCK];
    let symbol = |index: u64| blocks.get(index as usize).map_or(&zero[..], Vec::as_slice);

    let bare = best_of(repeat, || {
        let mut encoder = ReedSolomonEncoder::new(K as usize, M as usize, BLOCK).expect("coder");
        let mut parity = Vec::with_capacity((steps * u64::from(M)) as usize);
        for s in 0..steps {
            for r in 0..u64::from(K) {
                encoder
                    .add_original_shard(symbol(s + r * steps))
                    .expect("shard");
            }
            let result = encoder.encode().expect("encode");
            parity.extend(result.recovery_iter().map(<[u8]>::to_vec));
        }
        std::hint::black_box(parity);
    });

    let batch = 32u64;
    let parity_only = best_of(repeat, || {
        let enc = ProtectEncoder::new(&dataset.manifest, leaves.clone(), K, M).expect("encoder");
        let mut parity: Vec<Vec<u8>> = Vec::with_capacity((steps * u64::from(M)) as usize);
        let mut first = 0;
        while first < steps {
            let cols = batch.min(steps - first);
            let shards = data_rows(&blocks, steps, first, cols);
            parity.extend(enc.parity_columns(first, cols, &shards).expect("parity"));
            first += cols;
        }
        std::hint::black_box(parity);
    });
    let mut protected = None;
    let ours = best_of(repeat, || {
        let mut enc =
            ProtectEncoder::new(&dataset.manifest, leaves.clone(), K, M).expect("encoder");
        let layout = *enc.layout();
        let mut parity: Vec<Vec<u8>> = Vec::with_capacity((steps * u64::from(M)) as usize);
        let mut first = 0;
        while first < steps {
            let cols = batch.min(steps - first);
            let shards = data_rows(&blocks, steps, first, cols);
            let encoded = enc.encode_columns(first, cols, &shards).expect("encode");
            parity.extend(encoded.parity_blocks(&layout).map(|(_, _, b)| b.to_vec()));
            enc.accept(&encoded).expect("accept");
            first += cols;
        }
        let built = enc.finish().expect("finish");
        std::hint::black_box(parity);
        protected = Some((built.manifest, layout));
    });
    let (manifest, layout) = protected.expect("protected");

    // The stored form of every index, for the rebuild.
    let reference = cairn_core::protect(&dataset.manifest, &blocks, K, M).expect("protect");
    assert_eq!(
        reference.manifest, manifest,
        "streaming and in-memory protect agree"
    );
    let stored = |index: u64| -> &[u8] { reference.block(&blocks, index).expect("index") };
    let sources: Vec<u32> = (1..=K).collect();
    let mut bytes_read = 0u64;
    let rebuild = best_of(repeat, || {
        let mut rb = RowRebuild::new(&manifest, &sources, &[0]).expect("rebuild");
        bytes_read = 0;
        let mut first = 0;
        while first < steps {
            let cols = batch.min(steps - first);
            let mut shards: Vec<&[u8]> = Vec::with_capacity((cols * u64::from(K)) as usize);
            for &r in rb.sources() {
                for c in 0..cols {
                    let block = stored(first + c + u64::from(r) * steps);
                    bytes_read += block.len() as u64;
                    shards.push(block);
                }
            }
            let rebuilt = rb.rebuild_columns(first, cols, &shards).expect("rebuild");
            std::hint::black_box(rebuilt.target_blocks(&rb).count());
            rb.accept(&rebuilt).expect("accept");
            first += cols;
        }
        rb.finish().expect("verified");
    });

    let mib_s = |d: Duration| mib as f64 / d.as_secs_f64();
    let row_bytes = layout.steps() * BLOCK as u64;
    println!("erasure coding, {mib} MiB in 64 KiB blocks, K = {K}, M = {M}, best of {repeat}");
    println!(
        "  bare reed-solomon-simd encode : {:>8.3} s  {:>8.0} MiB/s",
        bare.as_secs_f64(),
        mib_s(bare)
    );
    println!(
        "  our encode (parity)           : {:>8.3} s  {:>8.0} MiB/s  ratio {:.2} (target <= 1.3)",
        parity_only.as_secs_f64(),
        mib_s(parity_only),
        parity_only.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  our encode + all digests      : {:>8.3} s  {:>8.0} MiB/s  ratio {:.2} (3 GiB hashed per GiB)",
        ours.as_secs_f64(),
        mib_s(ours),
        ours.as_secs_f64() / bare.as_secs_f64()
    );
    println!(
        "  rebuild of row 0 from rows 1..=8: {:>6.3} s, read {} bytes = {:.2} rows (limit {K})",
        rebuild.as_secs_f64(),
        bytes_read,
        bytes_read as f64 / row_bytes as f64
    );
}
