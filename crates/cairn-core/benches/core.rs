//! cairn-core hot paths: hashing, Merkle trees and proofs, manifests, dataset building and
//! erasure coding. Run with `cargo bench -p cairn-core` (add `-- --quick` for a fast pass).

use std::{hint::black_box, time::Duration};

use cairn_core::{
    BlockSize, Cid, Codec, DatasetBuilder, ErasureExt, Manifest, MerkleProof, MerkleTree,
    dataset::hash_blocks, erasure::Layout, sha256,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn hashing(c: &mut Criterion) {
    let block = pattern(64 * KIB, 1);
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(block.len() as u64));
    g.bench_function("64KiB block", |b| b.iter(|| sha256(black_box(&block))));
    g.finish();

    let blocks: Vec<Vec<u8>> = (0..32).map(|i| pattern(64 * KIB, i)).collect();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut g = c.benchmark_group("hash_blocks");
    g.throughput(Throughput::Bytes(32 * 64 * KIB as u64));
    g.bench_function(format!("32 x 64KiB, {threads} threads"), |b| {
        b.iter(|| hash_blocks(black_box(&blocks), threads))
    });
    g.bench_function("32 x 64KiB, 1 thread", |b| {
        b.iter(|| hash_blocks(black_box(&blocks), 1))
    });
    g.finish();
}

fn merkle(c: &mut Criterion) {
    let leaves: Vec<[u8; 32]> = (0..16_384u32).map(|i| sha256(&i.to_le_bytes())).collect();
    let mut g = c.benchmark_group("merkle");
    g.throughput(Throughput::Elements(leaves.len() as u64));
    g.bench_function("build 16384 leaves", |b| {
        b.iter(|| MerkleTree::build(black_box(leaves.clone())))
    });
    g.finish();

    let tree = MerkleTree::build(leaves.clone()).expect("tree");
    let root = tree.root();
    let mut g = c.benchmark_group("merkle proof");
    g.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    g.bench_function("generate + verify (16384 leaves)", |b| {
        b.iter(|| {
            i = (i + 7919) % 16_384;
            let proof = tree.proof(i).expect("in range");
            assert!(proof.verify(&leaves[i as usize], &root));
        })
    });
    let proof = tree.proof(12_345).expect("in range");
    let bytes = proof.encode();
    g.bench_function("encode + decode", |b| {
        b.iter(|| MerkleProof::decode(&black_box(&proof).encode()))
    });
    g.bench_function("decode", |b| {
        b.iter(|| MerkleProof::decode(black_box(&bytes)))
    });
    g.finish();
}

fn manifests(c: &mut Criterion) {
    let plain = Manifest {
        tree_cid: Cid::new(Codec::Root, [7; 32]),
        block_size: BlockSize::DEFAULT,
        dataset_size: 10 * MIB as u64 + 17,
        filename: Some("holiday-video.mp4".into()),
        mimetype: Some("video/mp4".into()),
        erasure: None,
    };
    let layout = Layout::new(10, 6, BlockSize::DEFAULT, plain.dataset_size).expect("layout");
    let protected = Manifest {
        dataset_size: layout.protected_dataset_size(),
        erasure: Some(ErasureExt {
            ec_k: 10,
            ec_m: 6,
            original_tree_cid: Cid::new(Codec::Root, [8; 32]),
            original_dataset_size: plain.dataset_size,
            strategy: 1,
            slot_roots: (0..16u8)
                .map(|r| Cid::new(Codec::SlotRoot, [r; 32]))
                .collect(),
        }),
        ..plain.clone()
    };
    let mut g = c.benchmark_group("manifest");
    for (name, m) in [("plain", &plain), ("protected 10+6", &protected)] {
        let bytes = m.encode();
        g.bench_function(format!("encode {name}"), |b| {
            b.iter(|| black_box(m).encode())
        });
        g.bench_function(format!("decode {name}"), |b| {
            b.iter(|| Manifest::decode(black_box(&bytes)))
        });
    }
    g.finish();
}

fn dataset(c: &mut Criterion) {
    let data = pattern(64 * MIB, 3);
    let mut g = c.benchmark_group("DatasetBuilder");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("64 MiB in 1 MiB pushes, 64 KiB blocks", |b| {
        b.iter(|| {
            let mut builder = DatasetBuilder::new(BlockSize::DEFAULT);
            let mut blocks = 0usize;
            for piece in data.chunks(MIB) {
                blocks += builder.push(piece).len();
            }
            let (last, leaves) = builder.finish();
            blocks += last.len();
            let ds = leaves.into_dataset(None, None).expect("dataset");
            assert_eq!(blocks, 1024);
            ds.manifest_cid
        })
    });
    g.finish();
}

fn erasure(c: &mut Criterion) {
    let layout = Layout::new(4, 2, BlockSize::DEFAULT, 4 * 64 * KIB as u64).expect("layout");
    let originals: Vec<Vec<u8>> = (0..4).map(|i| pattern(64 * KIB, i)).collect();
    let parity = layout.encode_column(&originals).expect("encode");
    let mut g = c.benchmark_group("erasure");
    g.throughput(Throughput::Bytes(4 * 64 * KIB as u64));
    g.bench_function("encode column 4+2 x 64KiB", |b| {
        b.iter(|| layout.encode_column(black_box(&originals)))
    });
    let shards: Vec<Option<&[u8]>> = vec![
        None,
        Some(&originals[1]),
        None,
        Some(&originals[3]),
        Some(&parity[0]),
        Some(&parity[1]),
    ];
    g.bench_function("decode column 4+2, 2 lost", |b| {
        b.iter(|| layout.decode_column(0, black_box(&shards)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = hashing, merkle, manifests, dataset, erasure
}
criterion_main!(benches);
