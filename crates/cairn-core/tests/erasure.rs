//! Erasure coding end to end: the streaming encoder against the in-memory reference, and row
//! rebuilds from any K rows (property tests over sizes, block sizes, K and M).

use cairn_core::{
    BlockSize, Digest, ErasureError, Layout, Manifest, ProtectEncoder, ProtectedDataset,
    RebuildError, RowRebuild, build_from_bytes, protect,
};
use proptest::prelude::*;

/// A dataset of `size` pseudo-random bytes: its manifest, blocks and leaves.
struct Original {
    bytes: Vec<u8>,
    manifest: Manifest,
    blocks: Vec<Vec<u8>>,
    leaves: Vec<Digest>,
}

fn original(size: usize, block_size: BlockSize, seed: u64) -> Original {
    let mut state = seed | 1;
    let bytes: Vec<u8> = (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    let (blocks, dataset) = build_from_bytes(&bytes, block_size, None, None).expect("dataset");
    Original {
        bytes,
        manifest: dataset.manifest,
        leaves: dataset.tree.leaves().to_vec(),
        blocks: blocks.into_iter().map(|b| b.data).collect(),
    }
}

/// The stored bytes of every protected index (empty at padding).
fn all_blocks(p: &ProtectedDataset, o: &Original) -> Vec<Vec<u8>> {
    (0..p.layout.total())
        .map(|i| p.block(&o.blocks, i).expect("index in range").to_vec())
        .collect()
}

/// Streams `o` through the encoder in batches of `batch` columns.
fn stream_protect(o: &Original, k: u32, m: u32, batch: u64) -> (Manifest, Vec<Vec<u8>>) {
    let mut enc = ProtectEncoder::new(&o.manifest, o.leaves.clone(), k, m).expect("encoder");
    let layout = *enc.layout();
    let mut blocks = vec![Vec::new(); layout.total() as usize];
    for i in 0..layout.original_blocks() {
        blocks[i as usize] = o.blocks[i as usize].clone();
    }
    let mut first = 0;
    while first < layout.steps() {
        let cols = batch.min(layout.steps() - first);
        let mut data: Vec<&[u8]> = Vec::new();
        for r in 0..k {
            for c in 0..cols {
                let index = first + c + u64::from(r) * layout.steps();
                data.push(o.blocks.get(index as usize).map_or(&[][..], Vec::as_slice));
            }
        }
        let encoded = enc.encode_columns(first, cols, &data).expect("encode");
        for (index, _, block) in encoded.parity_blocks(&layout) {
            blocks[index as usize] = block.to_vec();
        }
        enc.accept(&encoded).expect("accept");
        first += cols;
    }
    let out = enc.finish().expect("finish");
    assert_eq!(out.manifest_cid, Manifest::cid_of(&out.manifest_bytes));
    (out.manifest, blocks)
}

/// Rebuilds `targets` from `sources` in batches; returns the rebuilt blocks by index.
fn rebuild(
    manifest: &Manifest,
    blocks: &[Vec<u8>],
    sources: &[u32],
    targets: &[u32],
    batch: u64,
) -> Result<Vec<(u64, Vec<u8>)>, RebuildError> {
    let mut rb = RowRebuild::new(manifest, sources, targets)?;
    let layout = *rb.layout();
    let mut out = Vec::new();
    let mut first = 0;
    while first < layout.steps() {
        let cols = batch.min(layout.steps() - first);
        let mut shards: Vec<&[u8]> = Vec::new();
        for &r in rb.sources() {
            for c in 0..cols {
                shards.push(&blocks[(first + c + u64::from(r) * layout.steps()) as usize]);
            }
        }
        let rebuilt = rb.rebuild_columns(first, cols, &shards)?;
        for (index, leaf, block) in rebuilt.target_blocks(&rb) {
            assert_eq!(leaf, cairn_core::sha256(block));
            out.push((index, block.to_vec()));
        }
        rb.accept(&rebuilt)?;
        first += cols;
    }
    let tree = rb.finish()?;
    assert_eq!(tree.root(), *manifest.tree_cid.digest());
    Ok(out)
}

fn block_sizes() -> impl Strategy<Value = BlockSize> {
    (12u32..=19).prop_map(|e| BlockSize::new(1 << e).expect("power of two in range"))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Streaming in any batch size gives the reference manifest and blocks; any K rows rebuild
    /// every other row bit for bit; the data rows read back as the original file.
    #[test]
    fn any_k_rows_rebuild_the_rest(
        block_size in block_sizes(),
        blocks_hint in 1u64..24,
        tail in 0u64..4096,
        k in 2u32..7,
        m in 1u32..9,
        batch in 1u64..6,
        seed in any::<u64>(),
        pick in any::<u64>(),
    ) {
        // Large blocks get few of them, so every case stays small.
        let bs = u64::from(block_size.get());
        let n_blocks = if bs >= 131_072 { blocks_hint.min(3) } else { blocks_hint };
        let size = ((n_blocks - 1) * bs + 1 + tail.min(bs - 1)) as usize;
        let o = original(size, block_size, seed);
        let reference = protect(&o.manifest, &o.blocks, k, m).expect("protect");
        let (manifest, blocks) = stream_protect(&o, k, m, batch);
        prop_assert_eq!(&manifest, &reference.manifest);
        let expected = all_blocks(&reference, &o);
        prop_assert_eq!(&blocks, &expected);

        // A pseudo-random choice of K source rows; every other row is a target.
        let rows = k + m;
        let mut order: Vec<u32> = (0..rows).collect();
        let mut x = pick | 1;
        for i in (1..order.len()).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let sources = &order[..k as usize];
        let targets = &order[k as usize..];
        let rebuilt = rebuild(&manifest, &blocks, sources, targets, batch).expect("rebuild");
        let layout = Layout::from_manifest(&manifest).expect("layout");
        let mut restored = blocks.clone();
        for &t in targets {
            for index in layout.row(t).expect("row") {
                restored[index as usize].clear();
            }
        }
        for (index, block) in rebuilt {
            prop_assert!(restored[index as usize].is_empty());
            restored[index as usize] = block;
        }
        prop_assert_eq!(&restored, &expected);
        let mut file: Vec<u8> = restored[..layout.original_blocks() as usize].concat();
        file.truncate(size);
        prop_assert_eq!(file, o.bytes);
    }

    /// Fewer than K rows never rebuild: the constructor refuses, and a column decode reports
    /// the shortfall.
    #[test]
    fn fewer_than_k_rows_fail_cleanly(k in 2u32..8, m in 1u32..8, seed in any::<u64>()) {
        let o = original(3 * 4096 + 17, BlockSize::MIN, seed);
        let p = protect(&o.manifest, &o.blocks, k, m).expect("protect");
        let sources: Vec<u32> = (0..k - 1).collect();
        let err = RowRebuild::new(&p.manifest, &sources, &[k + m - 1]).expect_err("K-1 rows");
        let is_count = matches!(err, ErasureError::Count { .. });
        prop_assert!(is_count);
        let blocks = all_blocks(&p, &o);
        let mut column: Vec<Option<&[u8]>> = vec![None; (k + m) as usize];
        for r in 1..k {
            let index = u64::from(r) * p.layout.steps();
            if !p.layout.is_padding(index) {
                column[r as usize] = Some(&blocks[index as usize]);
            }
        }
        let padding = (1..k)
            .filter(|&r| p.layout.is_padding(u64::from(r) * p.layout.steps()))
            .count();
        let decoded = p.layout.decode_column(0, &column);
        if padding == 0 {
            let short = matches!(decoded, Err(ErasureError::NotEnoughShards { .. }));
            prop_assert!(short);
        }
    }
}

#[test]
fn a_corrupt_source_row_is_named_and_nothing_verifies() {
    let o = original(40 * 4096, BlockSize::MIN, 7);
    let (manifest, mut blocks) = stream_protect(&o, 4, 3, 4);
    let layout = Layout::from_manifest(&manifest).expect("layout");
    // Flip one byte in row 5 (a parity row), then rebuild row 0 from rows 1, 2, 5, 6.
    let index = layout.row(5).expect("row").start + 3;
    blocks[index as usize][100] ^= 1;
    let err = rebuild(&manifest, &blocks, &[1, 2, 5, 6], &[0], 3).expect_err("corrupt row");
    assert_eq!(err, RebuildError::BadSourceRow { row: 5 });
    assert!(err.to_string().contains("row 5"));
}

#[test]
fn rebuild_input_is_checked() {
    let o = original(9 * 4096, BlockSize::MIN, 3);
    let (manifest, blocks) = stream_protect(&o, 3, 2, 2);
    // A target that is also a source, a row out of range, no targets.
    assert!(RowRebuild::new(&manifest, &[0, 1, 2], &[2]).is_err());
    assert!(RowRebuild::new(&manifest, &[0, 1, 2], &[9]).is_err());
    assert!(RowRebuild::new(&manifest, &[0, 1, 2], &[]).is_err());
    // A plain manifest cannot be rebuilt.
    assert!(RowRebuild::new(&o.manifest, &[0, 1, 2], &[3]).is_err());
    let rb = RowRebuild::new(&manifest, &[0, 1, 2], &[3, 4]).expect("rebuild");
    // Wrong shard count, wrong block size, batch past the end.
    let short: Vec<&[u8]> = vec![&blocks[0]; 2];
    assert!(rb.rebuild_columns(0, 1, &short).is_err());
    let small = vec![0u8; 100];
    let bad: Vec<&[u8]> = vec![&small; 3];
    assert!(rb.rebuild_columns(0, 1, &bad).is_err());
    let three: Vec<&[u8]> = vec![&blocks[0]; 3];
    assert!(rb.rebuild_columns(3, 1, &three).is_err());
    // Finishing early is an error.
    assert!(rb.finish().is_err());
}

#[test]
fn out_of_order_batches_are_refused() {
    let o = original(8 * 4096, BlockSize::MIN, 5);
    let mut enc = ProtectEncoder::new(&o.manifest, o.leaves.clone(), 2, 2).expect("encoder");
    let steps = enc.layout().steps();
    let data: Vec<&[u8]> = vec![&o.blocks[1], &o.blocks[1 + steps as usize]];
    let encoded = enc.encode_columns(1, 1, &data).expect("encode");
    assert!(enc.accept(&encoded).is_err());
    // Leaves of another tree are refused.
    let mut leaves = o.leaves.clone();
    leaves[0][0] ^= 1;
    assert!(matches!(
        ProtectEncoder::new(&o.manifest, leaves, 2, 2),
        Err(ErasureError::TreeMismatch)
    ));
}
