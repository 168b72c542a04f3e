//! One behaviour suite, run against both backends ([`MemStore`] and [`FjallStore`]), plus
//! disk-only tests: reopen, format version, and a crash (SIGKILL) in the middle of an upload.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::{BlockSize, Cid, Dataset, HashedBlock, build_from_bytes};
use cairn_store::{
    BlockDeletion, BlockStore, DatasetFlags, DatasetState, FjallStore, LeafBlock, MemStore,
    StoreError,
};

const BS: usize = 4096;
const BIG_QUOTA: u64 = 1 << 40;
const PINNED: DatasetFlags = DatasetFlags {
    pinned: true,
    advertise: true,
};
const CACHED: DatasetFlags = DatasetFlags {
    pinned: false,
    advertise: true,
};

// --- environment --------------------------------------------------------------------------------

/// A store under test; holds its directory (disk backend) alive.
struct Env {
    store: Arc<dyn BlockStore>,
    _dir: Option<tempfile::TempDir>,
}

type Make = fn(u64) -> Env;

fn mem_env(quota: u64) -> Env {
    Env {
        store: Arc::new(MemStore::new(quota)),
        _dir: None,
    }
}

fn fjall_env(quota: u64) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), quota).expect("open fjall store");
    Env {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $name() { super::$name(super::mem_env) } )*
        }
        mod fjall {
            $( #[test] fn $name() { super::$name(super::fjall_env) } )*
        }
    };
}

both_backends!(
    empty_block_always_present,
    put_get_has,
    staging_commit_and_abort,
    staging_rejects_bad_input,
    duplicate_upload,
    dedup_identical_blocks,
    shared_blocks_between_datasets,
    quota_exact_counting,
    quota_overrun_stores_nothing,
    lru_eviction_keeps_pinned,
    delete_dataset_shared_tree,
    delete_block_results,
    partial_download_bitmap_completion,
    bitmap_spans_chunks,
    upload_completes_partial_download,
    flags_and_touch,
    concurrent_uploads,
    model_small,
);

// --- data helpers -------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift64*), distinct per seed.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Whole 4 KiB blocks, block i being `pattern(seeds[i])` (seed 0 = all zeros).
fn blocks_of(seeds: &[u64]) -> Vec<u8> {
    seeds
        .iter()
        .flat_map(|&s| {
            if s == 0 {
                vec![0u8; BS]
            } else {
                pattern(s, BS)
            }
        })
        .collect()
}

/// A dataset built the way an upload builds it.
#[derive(Debug, Clone)]
struct Built {
    blocks: Vec<HashedBlock>,
    ds: Dataset,
}

fn build(data: &[u8], name: &str) -> Built {
    let (blocks, ds) = build_from_bytes(data, BlockSize::MIN, Some(name.to_owned()), None)
        .expect("non-empty data builds");
    Built { blocks, ds }
}

fn staged(blocks: &[HashedBlock]) -> Vec<(u64, Cid, Bytes)> {
    blocks
        .iter()
        .map(|b| (b.index, b.cid, Bytes::from(b.data.clone())))
        .collect()
}

fn upload_built(
    s: &dyn BlockStore,
    b: &Built,
    flags: DatasetFlags,
) -> cairn_store::Result<cairn_store::DatasetRecord> {
    let id = s.begin_staging()?;
    for part in staged(&b.blocks).chunks(16) {
        if let Err(e) = s.put_staged_blocks(id, part) {
            s.abort_staging(id).expect("abort after a failed put");
            return Err(e);
        }
    }
    s.commit_staging(id, &b.ds, flags)
}

fn upload(s: &dyn BlockStore, data: &[u8], name: &str, flags: DatasetFlags) -> Built {
    let b = build(data, name);
    let rec = upload_built(s, &b, flags).expect("upload");
    assert_eq!(rec.manifest_cid, b.ds.manifest_cid);
    assert_eq!(rec.state, DatasetState::Complete);
    b
}

fn leaf_blocks(b: &Built, indices: &[u64]) -> Vec<LeafBlock> {
    indices
        .iter()
        .map(|&i| {
            let hb = &b.blocks[i as usize];
            LeafBlock {
                index: i,
                cid: hb.cid,
                data: Bytes::from(hb.data.clone()),
                proof: b.ds.tree.proof(i).expect("index in tree"),
            }
        })
        .collect()
}

fn tree(b: &Built) -> Cid {
    b.ds.manifest.tree_cid
}

/// Exact `(quota_used_bytes, total_blocks)` for these datasets stored completely.
fn expected(datasets: &[&Built]) -> (u64, u64) {
    let mut blocks = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for b in datasets {
        for hb in &b.blocks {
            if hb.cid != Cid::EMPTY_BLOCK {
                blocks.insert(hb.cid, hb.data.len() as u64);
            }
        }
        manifests.insert(b.ds.manifest_cid, b.ds.manifest_bytes.len() as u64);
    }
    (
        blocks.values().sum::<u64>() + manifests.values().sum::<u64>(),
        (blocks.len() + manifests.len()) as u64,
    )
}

fn assert_space(s: &dyn BlockStore, datasets: &[&Built]) {
    let sp = s.space().expect("space");
    let (used, count) = expected(datasets);
    assert_eq!(sp.quota_used_bytes, used, "quota_used_bytes");
    assert_eq!(sp.total_blocks, count, "total_blocks");
}

/// Every block of `b` readable by CID and by leaf, with a proof that verifies.
fn assert_readable(s: &dyn BlockStore, b: &Built) {
    let root = b.ds.tree.root();
    for hb in &b.blocks {
        assert!(
            s.has_block(&hb.cid).expect("has"),
            "block {} held",
            hb.index
        );
        assert_eq!(
            s.get_block(&hb.cid).expect("get").as_deref(),
            Some(&hb.data[..])
        );
        assert_eq!(
            s.leaf_block(&tree(b), hb.index)
                .expect("leaf block")
                .as_deref(),
            Some(&hb.data[..])
        );
        let leaf = s
            .leaf(&tree(b), hb.index)
            .expect("leaf")
            .expect("leaf stored");
        assert_eq!(leaf.block_cid, hb.cid);
        assert!(
            leaf.proof.verify(hb.cid.digest(), &root),
            "proof {}",
            hb.index
        );
    }
}

fn cids(recs: &[cairn_store::DatasetRecord]) -> Vec<Cid> {
    recs.iter().map(|r| r.manifest_cid).collect()
}

// --- tests on both backends ---------------------------------------------------------------------

fn empty_block_always_present(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    assert!(s.has_block(&Cid::EMPTY_BLOCK).expect("has"));
    assert_eq!(
        s.get_block(&Cid::EMPTY_BLOCK).expect("get"),
        Some(Bytes::new())
    );
    assert_eq!(
        s.delete_block(&Cid::EMPTY_BLOCK).expect("delete"),
        BlockDeletion::NotFound
    );
    assert!(s.has_block(&Cid::EMPTY_BLOCK).expect("has"));
    let sp = s.space().expect("space");
    assert_eq!((sp.quota_used_bytes, sp.total_blocks), (0, 0));
    assert_eq!(sp.quota_max_bytes, BIG_QUOTA);
    assert_eq!(sp.quota_reserved_bytes, 0);
    // Putting it is a no-op.
    s.put_block(&Cid::EMPTY_BLOCK, Bytes::new())
        .expect("put empty");
    assert_eq!(s.space().expect("space").total_blocks, 0);
}

fn put_get_has(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    // 3.5 blocks: the last one is zero-padded.
    let data = pattern(1, BS * 3 + BS / 2);
    let b = upload(s, &data, "a.bin", PINNED);
    assert_eq!(b.blocks.len(), 4);
    assert_readable(s, &b);
    let rec = s
        .dataset(&b.ds.manifest_cid)
        .expect("dataset")
        .expect("stored");
    assert_eq!(rec.manifest_bytes, Bytes::from(b.ds.manifest_bytes.clone()));
    assert_eq!(rec.tree_cid, tree(&b));
    assert_eq!(rec.blocks_count, 4);
    assert_eq!(rec.state, DatasetState::Complete);
    assert_eq!(rec.flags, PINNED);
    assert_eq!(
        cids(&s.list_datasets(false).expect("list")),
        vec![b.ds.manifest_cid]
    );
    assert_eq!(s.bitmap(&tree(&b)).expect("bitmap"), Some(vec![0x0f]));
    // The manifest is a block too.
    assert!(s.has_block(&b.ds.manifest_cid).expect("has"));
    assert_eq!(
        s.get_block(&b.ds.manifest_cid).expect("get").as_deref(),
        Some(&b.ds.manifest_bytes[..])
    );
    // Unknown things.
    let other = Cid::of_block(b"not stored");
    assert!(!s.has_block(&other).expect("has"));
    assert_eq!(s.get_block(&other).expect("get"), None);
    assert_eq!(s.leaf(&tree(&b), 4).expect("leaf"), None);
    assert_eq!(s.leaf_block(&tree(&b), 4).expect("leaf block"), None);
    assert_eq!(s.bitmap(&other).expect("bitmap"), None);
    assert_eq!(s.dataset(&other).expect("dataset"), None);
    assert_space(s, &[&b]);
}

fn staging_commit_and_abort(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let b = build(&pattern(2, BS * 6), "x");
    let all = staged(&b.blocks);

    // Abort releases everything.
    let id = s.begin_staging().expect("begin");
    s.put_staged_blocks(id, &all[..3]).expect("put");
    let sp = s.space().expect("space");
    assert_eq!(sp.quota_used_bytes, 3 * BS as u64, "staged blocks count");
    assert_eq!(sp.total_blocks, 3);
    assert!(s.list_datasets(true).expect("list").is_empty());
    assert_eq!(
        s.delete_block(&all[0].1).expect("delete"),
        BlockDeletion::Referenced
    );
    s.abort_staging(id).expect("abort");
    assert_space(s, &[]);
    assert!(!s.has_block(&all[0].1).expect("has"));
    assert!(matches!(
        s.put_staged_blocks(id, &all[..1]),
        Err(StoreError::UnknownStaging(_))
    ));
    assert!(matches!(
        s.abort_staging(id),
        Err(StoreError::UnknownStaging(_))
    ));
    assert!(matches!(
        s.commit_staging(id, &b.ds, PINNED),
        Err(StoreError::UnknownStaging(_))
    ));

    // A commit with blocks missing is refused; the staging stays usable.
    let id = s.begin_staging().expect("begin");
    // Out of order, with a repeated block.
    s.put_staged_blocks(id, &[all[5].clone(), all[1].clone(), all[0].clone()])
        .expect("put");
    s.put_staged_blocks(id, &all[..2])
        .expect("put again, same blocks");
    assert!(matches!(
        s.commit_staging(id, &b.ds, PINNED),
        Err(StoreError::Invalid(_))
    ));
    s.put_staged_blocks(id, &all[2..5]).expect("put rest");
    let rec = s.commit_staging(id, &b.ds, PINNED).expect("commit");
    assert_eq!(rec.state, DatasetState::Complete);
    assert!(matches!(
        s.commit_staging(id, &b.ds, PINNED),
        Err(StoreError::UnknownStaging(_))
    ));
    assert_readable(s, &b);
    assert_space(s, &[&b]);

    // Two stagings at once, ids distinct.
    let a = s.begin_staging().expect("begin");
    let c = s.begin_staging().expect("begin");
    assert_ne!(a, c);
    s.abort_staging(a).expect("abort empty");
    s.abort_staging(c).expect("abort empty");
    assert_space(s, &[&b]);
}

fn staging_rejects_bad_input(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let b = build(&pattern(3, BS * 3), "x");
    let other = build(&pattern(4, BS * 3), "y");
    let mut all = staged(&b.blocks);
    let id = s.begin_staging().expect("begin");
    s.put_staged_blocks(id, &all).expect("put");
    // Same index, another block.
    let wrong = (
        0,
        other.blocks[0].cid,
        Bytes::from(other.blocks[0].data.clone()),
    );
    assert!(matches!(
        s.put_staged_blocks(id, &[wrong]),
        Err(StoreError::Invalid(_))
    ));
    // Committing against another tree.
    assert!(matches!(
        s.commit_staging(id, &other.ds, PINNED),
        Err(StoreError::Invalid(_))
    ));
    // Nothing was lost by the refusals.
    s.commit_staging(id, &b.ds, PINNED).expect("commit");
    assert_space(s, &[&b]);
    // Empty bytes under a non-empty CID, and bytes under the empty CID.
    let id = s.begin_staging().expect("begin");
    all[0].2 = Bytes::new();
    assert!(matches!(
        s.put_staged_blocks(id, &all[..1]),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.put_staged_blocks(id, &[(0, Cid::EMPTY_BLOCK, Bytes::from_static(b"x"))]),
        Err(StoreError::Invalid(_))
    ));
    s.abort_staging(id).expect("abort");
    assert_space(s, &[&b]);
}

fn duplicate_upload(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let data = pattern(5, BS * 5);
    let a = upload(s, &data, "a.bin", CACHED);
    // Same bytes, another name: another manifest, same tree.
    let b = upload(s, &data, "b.bin", PINNED);
    assert_ne!(a.ds.manifest_cid, b.ds.manifest_cid);
    assert_eq!(tree(&a), tree(&b));
    assert_space(s, &[&a, &b]);
    // Same bytes, same name: same manifest; flags are raised, nothing else changes.
    let again = build(&data, "a.bin");
    let rec = upload_built(s, &again, PINNED).expect("upload again");
    assert_eq!(rec.manifest_cid, a.ds.manifest_cid);
    assert_eq!(rec.flags, PINNED);
    assert_space(s, &[&a, &b]);
    assert_eq!(s.list_datasets(false).expect("list").len(), 2);
    // Deleting one manifest keeps the tree for the other.
    assert!(s.delete_dataset(&a.ds.manifest_cid).expect("delete"));
    assert_readable(s, &b);
    assert_space(s, &[&b]);
    assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
    assert_space(s, &[]);
    assert_eq!(s.leaf(&tree(&b), 0).expect("leaf"), None);
    assert_eq!(s.bitmap(&tree(&b)).expect("bitmap"), None);
}

fn dedup_identical_blocks(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    // Ten zero blocks and one other: two distinct blocks.
    let mut seeds = vec![0u64; 10];
    seeds.push(6);
    let b = upload(s, &blocks_of(&seeds), "zeros", PINNED);
    let sp = s.space().expect("space");
    assert_eq!(sp.total_blocks, 3, "two blocks and a manifest");
    assert_eq!(
        sp.quota_used_bytes,
        2 * BS as u64 + b.ds.manifest_bytes.len() as u64
    );
    assert_readable(s, &b);
    assert_eq!(
        s.delete_block(&b.blocks[0].cid).expect("delete"),
        BlockDeletion::Referenced
    );
    // Within one staging too: the zero block is referenced ten times, released ten times.
    let c = build(&blocks_of(&[0, 0, 0, 7]), "more zeros");
    let id = s.begin_staging().expect("begin");
    s.put_staged_blocks(id, &staged(&c.blocks)).expect("put");
    s.abort_staging(id).expect("abort");
    assert_space(s, &[&b]);
    assert!(
        s.has_block(&b.blocks[0].cid)
            .expect("zero block still held")
    );
    assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
    assert_space(s, &[]);
    assert!(!s.has_block(&b.blocks[0].cid).expect("has"));
}

fn shared_blocks_between_datasets(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let a = upload(s, &blocks_of(&[11, 12, 13]), "a", PINNED);
    let b = upload(s, &blocks_of(&[12, 13, 14]), "b", PINNED);
    assert_ne!(tree(&a), tree(&b));
    assert_space(s, &[&a, &b]);
    assert!(s.delete_dataset(&a.ds.manifest_cid).expect("delete"));
    assert!(
        !s.has_block(&a.blocks[0].cid).expect("has"),
        "block only in a"
    );
    assert!(
        s.has_block(&a.blocks[1].cid).expect("has"),
        "block shared with b"
    );
    assert_readable(s, &b);
    assert_space(s, &[&b]);
}

fn quota_exact_counting(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let a = upload(s, &pattern(20, BS * 7 + 100), "a", PINNED);
    assert_space(s, &[&a]);
    let b = upload(s, &blocks_of(&[21, 0, 0, 22]), "b", CACHED);
    assert_space(s, &[&a, &b]);
    // A partial download counts its manifest and the blocks it holds.
    let c = build(&blocks_of(&[23, 24, 25, 21]), "c");
    s.put_manifest(
        &c.ds.manifest_cid,
        Bytes::from(c.ds.manifest_bytes.clone()),
        CACHED,
    )
    .expect("manifest");
    s.put_leaf_blocks(&tree(&c), &leaf_blocks(&c, &[0, 3]))
        .expect("leaves");
    let sp = s.space().expect("space");
    let (used, count) = expected(&[&a, &b]);
    assert_eq!(
        sp.quota_used_bytes,
        used + c.ds.manifest_bytes.len() as u64 + BS as u64,
        "block 3 of c is block 0 of b"
    );
    assert_eq!(sp.total_blocks, count + 2);
    assert!(s.delete_dataset(&c.ds.manifest_cid).expect("delete"));
    assert_space(s, &[&a, &b]);
    assert!(s.delete_dataset(&a.ds.manifest_cid).expect("delete"));
    assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
    assert_space(s, &[]);
}

fn quota_overrun_stores_nothing(make: Make) {
    let quota = 10 * BS as u64;
    let env = make(quota);
    let s = &*env.store;
    let a = upload(s, &pattern(30, BS * 6), "a", PINNED);
    let before = s.space().expect("space");
    let b = build(&pattern(31, BS * 6), "b");
    let id = s.begin_staging().expect("begin");
    let all = staged(&b.blocks);
    s.put_staged_blocks(id, &all[..2]).expect("two fit");
    let free = quota - before.quota_used_bytes - 2 * BS as u64;
    match s.put_staged_blocks(id, &all[2..]) {
        Err(StoreError::QuotaExceeded { needed, free: f }) => {
            assert_eq!(needed, 4 * BS as u64);
            assert_eq!(f, free);
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    for (_, cid, _) in &all[2..] {
        assert!(
            !s.has_block(cid).expect("has"),
            "nothing of the failed call"
        );
    }
    assert_eq!(
        s.space().expect("space").quota_used_bytes,
        before.quota_used_bytes + 2 * BS as u64
    );
    s.abort_staging(id).expect("abort");
    assert_eq!(s.space().expect("space"), before);

    // A download that does not fit stores nothing either: no block, no leaf, no bit.
    let c = build(&pattern(32, BS * 6), "c");
    s.put_manifest(
        &c.ds.manifest_cid,
        Bytes::from(c.ds.manifest_bytes.clone()),
        CACHED,
    )
    .expect("manifest fits");
    let before = s.space().expect("space");
    assert!(matches!(
        s.put_leaf_blocks(&tree(&c), &leaf_blocks(&c, &[0, 1, 2, 3, 4])),
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert_eq!(s.space().expect("space"), before);
    assert_eq!(s.bitmap(&tree(&c)).expect("bitmap"), Some(vec![0]));
    assert_eq!(s.leaf(&tree(&c), 0).expect("leaf"), None);
    // The partial dataset is not evictable, the pinned one neither: a manifest that does not
    // fit fails too.
    let tiny = make(a.ds.manifest_bytes.len() as u64 - 1);
    assert!(matches!(
        tiny.store.put_manifest(
            &a.ds.manifest_cid,
            Bytes::from(a.ds.manifest_bytes.clone()),
            CACHED
        ),
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert!(tiny.store.list_datasets(true).expect("list").is_empty());
    assert_readable(s, &a);
}

fn lru_eviction_keeps_pinned(make: Make) {
    // Room for three 4-block datasets and their manifests.
    let quota = 3 * (4 * BS as u64 + 200);
    let env = make(quota);
    let s = &*env.store;
    let p = upload(s, &pattern(40, BS * 4), "p", PINNED);
    let a = upload(s, &pattern(41, BS * 4), "a", CACHED);
    let b = upload(s, &pattern(42, BS * 4), "b", CACHED);
    assert_space(s, &[&p, &a, &b]);
    // a is read: b becomes the least recently used.
    s.touch(&a.ds.manifest_cid).expect("touch");
    let c = upload(s, &pattern(43, BS * 4), "c", PINNED);
    assert!(
        s.dataset(&b.ds.manifest_cid).expect("dataset").is_none(),
        "b evicted"
    );
    assert!(!s.has_block(&b.blocks[0].cid).expect("has"));
    assert!(
        s.dataset(&a.ds.manifest_cid).expect("dataset").is_some(),
        "a kept"
    );
    assert_space(s, &[&p, &a, &c]);
    let d = upload(s, &pattern(44, BS * 4), "d", PINNED);
    assert!(
        s.dataset(&a.ds.manifest_cid).expect("dataset").is_none(),
        "a evicted"
    );
    assert_space(s, &[&p, &c, &d]);
    // Only pinned data left: the write fails and stores nothing.
    let e = build(&pattern(45, BS * 4), "e");
    assert!(matches!(
        upload_built(s, &e, PINNED),
        Err(StoreError::QuotaExceeded { .. })
    ));
    assert_space(s, &[&p, &c, &d]);
    for x in [&p, &c, &d] {
        assert_readable(s, x);
    }
    // Unpinning makes data evictable again.
    assert!(s.set_flags(&p.ds.manifest_cid, CACHED).expect("set flags"));
    let e = upload(s, &pattern(45, BS * 4), "e", PINNED);
    assert!(
        s.dataset(&p.ds.manifest_cid).expect("dataset").is_none(),
        "p evicted"
    );
    assert_space(s, &[&c, &d, &e]);
    // An explicit delete removes pinned data.
    assert!(s.delete_dataset(&c.ds.manifest_cid).expect("delete"));
    assert_space(s, &[&d, &e]);
}

fn delete_dataset_shared_tree(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let data = blocks_of(&[50, 51, 52, 0]);
    let a = upload(s, &data, "a", PINNED);
    let b = upload(s, &data, "b", CACHED);
    let c = upload(s, &blocks_of(&[52, 53]), "c", PINNED);
    assert!(s.delete_dataset(&a.ds.manifest_cid).expect("delete pinned"));
    assert!(!s.delete_dataset(&a.ds.manifest_cid).expect("delete again"));
    assert_readable(s, &b);
    assert_space(s, &[&b, &c]);
    assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
    assert_eq!(s.leaf(&tree(&b), 0).expect("leaf"), None);
    assert!(!s.has_block(&b.blocks[0].cid).expect("has"));
    assert!(s.has_block(&b.blocks[2].cid).expect("shared with c"));
    assert_readable(s, &c);
    assert_space(s, &[&c]);
    assert!(!s.delete_dataset(&Cid::of_block(b"x")).expect("unknown"));
}

fn delete_block_results(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let a = upload(s, &blocks_of(&[60, 61]), "a", PINNED);
    let unknown = Cid::of_block(b"unknown");
    assert_eq!(
        s.delete_block(&unknown).expect("delete"),
        BlockDeletion::NotFound
    );
    assert_eq!(
        s.delete_block(&a.blocks[0].cid).expect("delete"),
        BlockDeletion::Referenced
    );
    assert_eq!(
        s.delete_block(&a.ds.manifest_cid).expect("delete"),
        BlockDeletion::Referenced,
        "a manifest is deleted with delete_dataset"
    );
    // A standalone block.
    let loose = pattern(62, BS);
    let loose_cid = Cid::of_block(&loose);
    s.put_block(&loose_cid, Bytes::from(loose.clone()))
        .expect("put");
    s.put_block(&loose_cid, Bytes::from(loose.clone()))
        .expect("put twice");
    assert_eq!(
        s.get_block(&loose_cid).expect("get").as_deref(),
        Some(&loose[..])
    );
    let (used, count) = expected(&[&a]);
    let sp = s.space().expect("space");
    assert_eq!(
        (sp.quota_used_bytes, sp.total_blocks),
        (used + BS as u64, count + 1)
    );
    assert_eq!(
        s.delete_block(&loose_cid).expect("delete"),
        BlockDeletion::Deleted
    );
    assert_eq!(
        s.delete_block(&loose_cid).expect("delete"),
        BlockDeletion::NotFound
    );
    assert!(!s.has_block(&loose_cid).expect("has"));
    assert_space(s, &[&a]);
    // A dataset block also stored standalone outlives its dataset.
    s.put_block(&a.blocks[1].cid, Bytes::from(a.blocks[1].data.clone()))
        .expect("put");
    assert!(s.delete_dataset(&a.ds.manifest_cid).expect("delete"));
    assert!(s.has_block(&a.blocks[1].cid).expect("has"));
    assert!(!s.has_block(&a.blocks[0].cid).expect("has"));
    assert_eq!(
        s.delete_block(&a.blocks[1].cid).expect("delete"),
        BlockDeletion::Deleted
    );
    assert_space(s, &[]);
    // A block of a manifest CID codec that is not stored.
    assert_eq!(
        s.delete_block(&a.ds.manifest_cid).expect("delete"),
        BlockDeletion::NotFound
    );
}

fn partial_download_bitmap_completion(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let b = build(&pattern(70, BS * 10), "dl");
    let t = tree(&b);
    // Blocks for an unknown tree are refused.
    assert!(matches!(
        s.put_leaf_blocks(&t, &leaf_blocks(&b, &[0])),
        Err(StoreError::Invalid(_))
    ));
    // A manifest whose bytes do not match its CID is refused.
    assert!(matches!(
        s.put_manifest(
            &Cid::of_block(b"x"),
            Bytes::from(b.ds.manifest_bytes.clone()),
            CACHED
        ),
        Err(StoreError::Invalid(_))
    ));
    let rec = s
        .put_manifest(
            &b.ds.manifest_cid,
            Bytes::from(b.ds.manifest_bytes.clone()),
            CACHED,
        )
        .expect("manifest");
    assert_eq!(rec.state, DatasetState::Partial);
    assert_eq!(rec.blocks_count, 10);
    assert!(s.list_datasets(false).expect("list").is_empty());
    assert_eq!(
        cids(&s.list_datasets(true).expect("list")),
        vec![b.ds.manifest_cid]
    );
    assert_eq!(s.bitmap(&t).expect("bitmap"), Some(vec![0, 0]));
    // Out of order, with a duplicate within the call.
    s.put_leaf_blocks(&t, &leaf_blocks(&b, &[9, 2, 0, 2]))
        .expect("leaves");
    assert_eq!(s.bitmap(&t).expect("bitmap"), Some(vec![0b0000_0101, 0b10]));
    // Blocks already held are skipped.
    s.put_leaf_blocks(&t, &leaf_blocks(&b, &[0, 9]))
        .expect("again");
    let sp = s.space().expect("space");
    assert_eq!(
        sp.quota_used_bytes,
        3 * BS as u64 + b.ds.manifest_bytes.len() as u64
    );
    assert_eq!(sp.total_blocks, 4);
    assert_eq!(
        s.leaf_block(&t, 2).expect("leaf block").as_deref(),
        Some(&b.blocks[2].data[..])
    );
    assert_eq!(s.leaf_block(&t, 3).expect("leaf block"), None);
    assert!(matches!(
        s.put_leaf_blocks(
            &t,
            &leaf_blocks(&b, &[9])
                .into_iter()
                .map(|mut l| {
                    l.index = 10;
                    l
                })
                .collect::<Vec<_>>()
        ),
        Err(StoreError::Invalid(_))
    ));
    // The same manifest again: record kept, flags raised.
    let rec = s
        .put_manifest(
            &b.ds.manifest_cid,
            Bytes::from(b.ds.manifest_bytes.clone()),
            PINNED,
        )
        .expect("manifest again");
    assert_eq!((rec.state, rec.flags), (DatasetState::Partial, PINNED));
    // Partial data is never evicted.
    s.put_leaf_blocks(&t, &leaf_blocks(&b, &[1, 3, 4, 5, 6, 7, 8]))
        .expect("rest");
    let rec = s
        .dataset(&b.ds.manifest_cid)
        .expect("dataset")
        .expect("stored");
    assert_eq!(rec.state, DatasetState::Complete);
    assert_eq!(s.bitmap(&t).expect("bitmap"), Some(vec![0xff, 0x03]));
    assert_readable(s, &b);
    assert_space(s, &[&b]);
    // A second manifest of a complete tree is complete at once.
    let b2 = build(&pattern(70, BS * 10), "dl2");
    assert_eq!(tree(&b2), t);
    let rec = s
        .put_manifest(
            &b2.ds.manifest_cid,
            Bytes::from(b2.ds.manifest_bytes.clone()),
            CACHED,
        )
        .expect("manifest");
    assert_eq!(rec.state, DatasetState::Complete);
    assert_space(s, &[&b, &b2]);
}

fn bitmap_spans_chunks(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    // 8200 zero blocks: one stored block, a bitmap of two chunks (8192 bits per chunk).
    let n = 8200u64;
    let b = build(&vec![0u8; n as usize * BS], "zeros");
    let t = tree(&b);
    s.put_manifest(
        &b.ds.manifest_cid,
        Bytes::from(b.ds.manifest_bytes.clone()),
        CACHED,
    )
    .expect("manifest");
    s.put_leaf_blocks(&t, &leaf_blocks(&b, &[0, 8191, 8192, 8199]))
        .expect("leaves");
    let bm = s.bitmap(&t).expect("bitmap").expect("known tree");
    assert_eq!(bm.len(), 1025);
    let set: Vec<u64> = (0..n)
        .filter(|&i| bm[(i / 8) as usize] & (1 << (i % 8)) != 0)
        .collect();
    assert_eq!(set, vec![0, 8191, 8192, 8199]);
    assert_eq!(s.space().expect("space").total_blocks, 2);
    let rest: Vec<u64> = (0..n).filter(|i| !set.contains(i)).collect();
    for part in rest.chunks(1000) {
        s.put_leaf_blocks(&t, &leaf_blocks(&b, part))
            .expect("leaves");
    }
    let bm = s.bitmap(&t).expect("bitmap").expect("known tree");
    assert_eq!(bm.len(), 1025);
    assert!(bm[..1024].iter().all(|&x| x == 0xff));
    assert_eq!(bm[1024], 0xff);
    assert_eq!(
        s.dataset(&b.ds.manifest_cid)
            .expect("dataset")
            .expect("stored")
            .state,
        DatasetState::Complete
    );
    assert_space(s, &[&b]);
    assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
    assert_space(s, &[]);
}

fn upload_completes_partial_download(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let data = blocks_of(&[80, 81, 82, 83, 84]);
    let dl = build(&data, "downloading");
    s.put_manifest(
        &dl.ds.manifest_cid,
        Bytes::from(dl.ds.manifest_bytes.clone()),
        CACHED,
    )
    .expect("manifest");
    s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[1, 3]))
        .expect("leaves");
    // The same bytes uploaded meanwhile, under another name.
    let up = upload(s, &data, "uploaded", PINNED);
    assert_eq!(tree(&up), tree(&dl));
    let rec = s
        .dataset(&dl.ds.manifest_cid)
        .expect("dataset")
        .expect("stored");
    assert_eq!(rec.state, DatasetState::Complete);
    assert_eq!(s.bitmap(&tree(&dl)).expect("bitmap"), Some(vec![0x1f]));
    assert_readable(s, &dl);
    assert_space(s, &[&dl, &up]);
    // Late blocks of the download are no-ops.
    s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[0]))
        .expect("late");
    assert_space(s, &[&dl, &up]);
}

fn flags_and_touch(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let a = upload(s, &pattern(90, BS), "a", PINNED);
    let unknown = Cid::of_block(b"nothing");
    assert!(!s.set_flags(&unknown, CACHED).expect("set flags"));
    s.touch(&unknown).expect("touch unknown is fine");
    let none = DatasetFlags {
        pinned: false,
        advertise: false,
    };
    assert!(s.set_flags(&a.ds.manifest_cid, none).expect("set flags"));
    assert_eq!(
        s.dataset(&a.ds.manifest_cid)
            .expect("dataset")
            .expect("stored")
            .flags,
        none
    );
    s.touch(&a.ds.manifest_cid).expect("touch");
    assert_space(s, &[&a]);
}

fn concurrent_uploads(make: Make) {
    let env = make(BIG_QUOTA);
    let threads = 50;
    // Ten distinct contents, five uploads each, every one under its own name; contents share
    // blocks (seed 1000 is in all of them) so reference counts are contended.
    let built: Vec<Built> = (0..threads)
        .map(|i| {
            let c = (i % 10) as u64;
            build(
                &blocks_of(&[1000, 2000 + c, 3000 + c, 0, 4000 + c]),
                &format!("file-{i}"),
            )
        })
        .collect();
    std::thread::scope(|scope| {
        for b in &built {
            let store = Arc::clone(&env.store);
            scope.spawn(move || {
                let id = store.begin_staging().expect("begin");
                for part in staged(&b.blocks).chunks(2) {
                    store.put_staged_blocks(id, part).expect("put");
                    std::thread::yield_now();
                }
                store.commit_staging(id, &b.ds, PINNED).expect("commit");
            });
        }
        // Downloads of one more tree run alongside.
        let dl = build(&blocks_of(&[1000, 5000, 5001]), "dl");
        let store = Arc::clone(&env.store);
        scope.spawn(move || {
            store
                .put_manifest(
                    &dl.ds.manifest_cid,
                    Bytes::from(dl.ds.manifest_bytes.clone()),
                    CACHED,
                )
                .expect("manifest");
            for i in 0..3 {
                store
                    .put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[i]))
                    .expect("leaf");
            }
        });
    });
    let s = &*env.store;
    let dl = build(&blocks_of(&[1000, 5000, 5001]), "dl");
    let mut all: Vec<&Built> = built.iter().collect();
    all.push(&dl);
    assert_eq!(s.list_datasets(false).expect("list").len(), threads + 1);
    assert_space(s, &all);
    for b in &all {
        assert_readable(s, b);
    }
    // Concurrent deletes.
    std::thread::scope(|scope| {
        for b in &built {
            let store = Arc::clone(&env.store);
            scope.spawn(move || {
                assert!(store.delete_dataset(&b.ds.manifest_cid).expect("delete"));
            });
        }
    });
    assert_space(s, &[&dl]);
}

// --- model test ---------------------------------------------------------------------------------

/// Contents of the model: block seeds (shared between contents, with a repeated zero block).
const CONTENTS: [&[u64]; 4] = [&[1, 2, 3], &[2, 3, 4, 0, 0], &[5], &[1, 6, 0, 7]];
const NAMES: [&str; 2] = ["x", "y"];

#[derive(Debug, Clone)]
enum Op {
    Upload(usize, usize, bool),
    UploadAbort(usize),
    Manifest(usize, usize),
    Leaves(usize, u8),
    Delete(usize, usize),
    PutBlock(u64),
    DeleteBlock(u64),
    Touch(usize, usize),
    Unpin(usize, usize),
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let c = 0..CONTENTS.len();
    let n = 0..NAMES.len();
    let seed = prop::sample::select(vec![0u64, 1, 2, 3, 4, 5, 6, 7, 8]);
    prop_oneof![
        (c.clone(), n.clone(), any::<bool>()).prop_map(|(c, n, p)| Op::Upload(c, n, p)),
        c.clone().prop_map(Op::UploadAbort),
        (c.clone(), n.clone()).prop_map(|(c, n)| Op::Manifest(c, n)),
        (c.clone(), any::<u8>()).prop_map(|(c, m)| Op::Leaves(c, m)),
        (c.clone(), n.clone()).prop_map(|(c, n)| Op::Delete(c, n)),
        seed.clone().prop_map(Op::PutBlock),
        seed.prop_map(Op::DeleteBlock),
        (c.clone(), n.clone()).prop_map(|(c, n)| Op::Touch(c, n)),
        (c, n).prop_map(|(c, n)| Op::Unpin(c, n)),
    ]
}

/// What the store should hold.
#[derive(Debug, Default)]
struct Model {
    /// (content, name) → pinned.
    manifests: BTreeMap<(usize, usize), bool>,
    /// content → held indices (present iff some manifest of the content is stored).
    trees: BTreeMap<usize, BTreeSet<u64>>,
    loose: BTreeSet<u64>,
}

fn block_cid(seed: u64) -> Cid {
    Cid::of_block(&blocks_of(&[seed]))
}

fn run_model(make: Make, ops: &[Op]) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let built: Vec<Vec<Built>> = CONTENTS
        .iter()
        .map(|c| NAMES.iter().map(|n| build(&blocks_of(c), n)).collect())
        .collect();
    let mut m = Model::default();
    for op in ops {
        match *op {
            Op::Upload(c, n, pinned) => {
                let flags = DatasetFlags {
                    pinned,
                    advertise: true,
                };
                upload_built(s, &built[c][n], flags).expect("upload");
                let p = m.manifests.entry((c, n)).or_insert(false);
                *p |= pinned;
                m.trees.insert(c, (0..CONTENTS[c].len() as u64).collect());
            }
            Op::UploadAbort(c) => {
                let id = s.begin_staging().expect("begin");
                s.put_staged_blocks(id, &staged(&built[c][0].blocks))
                    .expect("put");
                s.abort_staging(id).expect("abort");
            }
            Op::Manifest(c, n) => {
                let b = &built[c][n];
                s.put_manifest(
                    &b.ds.manifest_cid,
                    Bytes::from(b.ds.manifest_bytes.clone()),
                    CACHED,
                )
                .expect("manifest");
                m.manifests.entry((c, n)).or_insert(false);
                m.trees.entry(c).or_default();
            }
            Op::Leaves(c, mask) => {
                let idx: Vec<u64> = (0..CONTENTS[c].len() as u64)
                    .filter(|i| mask & (1 << i) != 0)
                    .collect();
                let r = s.put_leaf_blocks(&tree(&built[c][0]), &leaf_blocks(&built[c][0], &idx));
                match m.trees.get_mut(&c) {
                    Some(held) => {
                        r.expect("leaves");
                        held.extend(idx);
                    }
                    None => assert!(matches!(r, Err(StoreError::Invalid(_))) || idx.is_empty()),
                }
            }
            Op::Delete(c, n) => {
                let r = s
                    .delete_dataset(&built[c][n].ds.manifest_cid)
                    .expect("delete");
                assert_eq!(r, m.manifests.remove(&(c, n)).is_some());
                if !m.manifests.keys().any(|(c2, _)| *c2 == c) {
                    m.trees.remove(&c);
                }
            }
            Op::PutBlock(seed) => {
                s.put_block(&block_cid(seed), Bytes::from(blocks_of(&[seed])))
                    .expect("put block");
                m.loose.insert(seed);
            }
            Op::DeleteBlock(seed) => {
                let referenced = m
                    .trees
                    .iter()
                    .any(|(c, held)| held.iter().any(|&i| CONTENTS[*c][i as usize] == seed));
                let want = if referenced {
                    BlockDeletion::Referenced
                } else if m.loose.remove(&seed) {
                    BlockDeletion::Deleted
                } else {
                    BlockDeletion::NotFound
                };
                assert_eq!(s.delete_block(&block_cid(seed)).expect("delete"), want);
            }
            Op::Touch(c, n) => s.touch(&built[c][n].ds.manifest_cid).expect("touch"),
            Op::Unpin(c, n) => {
                let r = s
                    .set_flags(&built[c][n].ds.manifest_cid, CACHED)
                    .expect("set flags");
                assert_eq!(r, m.manifests.contains_key(&(c, n)));
                if let Some(p) = m.manifests.get_mut(&(c, n)) {
                    *p = false;
                }
            }
        }
        check_model(s, &m, &built);
    }
}

fn check_model(s: &dyn BlockStore, m: &Model, built: &[Vec<Built>]) {
    let mut seeds: HashSet<u64> = m.loose.clone().into_iter().collect();
    for (c, held) in &m.trees {
        seeds.extend(held.iter().map(|&i| CONTENTS[*c][i as usize]));
    }
    let manifest_bytes: u64 = m
        .manifests
        .keys()
        .map(|&(c, n)| built[c][n].ds.manifest_bytes.len() as u64)
        .sum();
    let sp = s.space().expect("space");
    assert_eq!(
        sp.quota_used_bytes,
        seeds.len() as u64 * BS as u64 + manifest_bytes
    );
    assert_eq!(sp.total_blocks, (seeds.len() + m.manifests.len()) as u64);
    for seed in 0..9 {
        assert_eq!(
            s.has_block(&block_cid(seed)).expect("has"),
            seeds.contains(&seed),
            "block {seed}"
        );
    }
    let listed = s.list_datasets(true).expect("list");
    let want: BTreeSet<Cid> = m
        .manifests
        .keys()
        .map(|&(c, n)| built[c][n].ds.manifest_cid)
        .collect();
    assert_eq!(cids(&listed).into_iter().collect::<BTreeSet<_>>(), want);
    for r in &listed {
        let (&(c, _), pinned) = m
            .manifests
            .iter()
            .find(|((c, n), _)| built[*c][*n].ds.manifest_cid == r.manifest_cid)
            .expect("listed manifest in the model");
        assert_eq!(r.flags.pinned, *pinned);
        let complete = m.trees[&c].len() == CONTENTS[c].len();
        assert_eq!(r.state == DatasetState::Complete, complete);
        let mut bm = vec![0u8; CONTENTS[c].len().div_ceil(8)];
        for &i in &m.trees[&c] {
            bm[(i / 8) as usize] |= 1 << (i % 8);
        }
        assert_eq!(s.bitmap(&r.tree_cid).expect("bitmap"), Some(bm));
    }
    // Listing is ordered by manifest CID bytes.
    let keys: Vec<[u8; 38]> = listed.iter().map(|r| r.manifest_cid.to_bytes()).collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

fn model_small(make: Make) {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};
    // Disk stores cost a directory and a database per case.
    let cases = if make(1)._dir.is_some() { 12 } else { 64 };
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&prop::collection::vec(op_strategy(), 1..40), |ops| {
            run_model(make, &ops);
            Ok(())
        })
        .expect("model test");
}

// --- disk only ----------------------------------------------------------------------------------

#[test]
fn fjall_reopen_persists_everything() {
    let dir = tempfile::tempdir().expect("temp dir");
    let quota = 3 * (4 * BS as u64 + 200);
    let (a, b, c, dl);
    {
        let s = FjallStore::open(dir.path(), quota).expect("open");
        a = upload(&s, &pattern(100, BS * 4), "a", CACHED);
        b = upload(&s, &pattern(101, BS * 4), "b", CACHED);
        // a read after b: b is least recently used, across the restart too.
        s.touch(&a.ds.manifest_cid).expect("touch");
        dl = build(&pattern(102, BS * 3), "dl");
        s.put_manifest(
            &dl.ds.manifest_cid,
            Bytes::from(dl.ds.manifest_bytes.clone()),
            PINNED,
        )
        .expect("manifest");
        s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[2]))
            .expect("leaf");
        s.sync().expect("sync");
    }
    {
        let s = FjallStore::open(dir.path(), quota).expect("reopen");
        assert_readable(&s, &a);
        assert_readable(&s, &b);
        let rec = s
            .dataset(&dl.ds.manifest_cid)
            .expect("dataset")
            .expect("stored");
        assert_eq!((rec.state, rec.flags), (DatasetState::Partial, PINNED));
        assert_eq!(s.bitmap(&tree(&dl)).expect("bitmap"), Some(vec![0b100]));
        let sp = s.space().expect("space");
        let (used, count) = expected(&[&a, &b]);
        assert_eq!(
            sp.quota_used_bytes,
            used + BS as u64 + dl.ds.manifest_bytes.len() as u64
        );
        assert_eq!(sp.total_blocks, count + 2);
        // Resume the download.
        s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[0, 1]))
            .expect("leaves");
        // Eviction order survived: b goes first.
        c = upload(&s, &pattern(103, BS * 4), "c", PINNED);
        assert!(s.dataset(&b.ds.manifest_cid).expect("dataset").is_none());
        assert!(s.dataset(&a.ds.manifest_cid).expect("dataset").is_some());
        assert_space(&s, &[&a, &c, &dl]);
    }
    let s = FjallStore::open(dir.path(), quota).expect("reopen");
    assert_space(&s, &[&a, &c, &dl]);
    assert_readable(&s, &a);
    assert_readable(&s, &dl);
    assert_eq!(
        s.dataset(&dl.ds.manifest_cid)
            .expect("dataset")
            .expect("stored")
            .state,
        DatasetState::Complete
    );
    assert!(s.disk_space().expect("disk space") > 0);
}

#[test]
fn fjall_reopen_rolls_back_staging() {
    let dir = tempfile::tempdir().expect("temp dir");
    let a;
    let pending = build(&blocks_of(&[110, 111, 112, 0]), "pending");
    {
        let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("open");
        a = upload(&s, &blocks_of(&[110, 113]), "a", PINNED);
        let id = s.begin_staging().expect("begin");
        s.put_staged_blocks(id, &staged(&pending.blocks))
            .expect("put");
        s.sync().expect("sync");
        // Dropped without commit or abort.
    }
    let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("reopen");
    assert_space(&s, &[&a]);
    assert!(s.has_block(&pending.blocks[0].cid).expect("shared with a"));
    assert!(!s.has_block(&pending.blocks[1].cid).expect("rolled back"));
    assert_eq!(
        cids(&s.list_datasets(true).expect("list")),
        vec![a.ds.manifest_cid]
    );
    // Staging ids are usable after a restart.
    upload(&s, &blocks_of(&[110, 111, 112, 0]), "pending", PINNED);
}

#[test]
fn fjall_refuses_future_format_and_second_open() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("open");
        assert!(matches!(
            FjallStore::open(dir.path(), BIG_QUOTA),
            Err(StoreError::Backend(_))
        ));
        drop(s);
    }
    {
        let db = ::fjall::Database::builder(dir.path())
            .open()
            .expect("open fjall");
        let meta = db
            .keyspace("meta", ::fjall::KeyspaceCreateOptions::default)
            .expect("meta keyspace");
        meta.insert("format_version", 2u32.to_be_bytes())
            .expect("insert");
        db.persist(::fjall::PersistMode::SyncAll).expect("persist");
    }
    match FjallStore::open(dir.path(), BIG_QUOTA) {
        Err(
            e @ StoreError::UnsupportedFormat {
                found: 2,
                supported: 1,
            },
        ) => {
            assert!(e.to_string().contains("format version 2"), "{e}");
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
}

// --- crash test ---------------------------------------------------------------------------------

/// Set in the child process: the store directory.
const CRASH_ENV: &str = "CAIRN_STORE_CRASH_CHILD_DIR";
const CRASH_BLOCK: usize = 64 * 1024;
const CRASH_BATCH: u64 = 16;
/// Staged blocks the parent waits for before the kill (40 MiB: several memtable flushes).
const CRASH_KILL_AFTER: u64 = 640;

fn crash_complete_dataset() -> Built {
    build(&pattern(7777, BS * 9 + 10), "complete.bin")
}

fn crash_staged_block(i: u64) -> (Cid, Vec<u8>) {
    // A few bytes of difference per block is enough to make every CID distinct.
    let mut data = vec![0xa5u8; CRASH_BLOCK];
    data[..8].copy_from_slice(&i.to_le_bytes());
    (Cid::of_block(&data), data)
}

/// The child half of `fjall_crash_mid_upload`: does nothing unless started by it.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let s = FjallStore::open(&dir, BIG_QUOTA).expect("child: open");
    upload(&s, &blocks_of(&[0]), "zero.bin", PINNED);
    let complete = crash_complete_dataset();
    upload_built(&s, &complete, PINNED).expect("child: upload");
    println!("CRASH-CHILD committed");
    let id = s.begin_staging().expect("child: begin");
    let started = Instant::now();
    let mut next = 0u64;
    // Bounded: the parent kills us long before.
    while started.elapsed() < Duration::from_secs(120) {
        let batch: Vec<(u64, Cid, Bytes)> = (next..next + CRASH_BATCH)
            .map(|i| {
                let (cid, data) = crash_staged_block(i);
                (i, cid, Bytes::from(data))
            })
            .collect();
        s.put_staged_blocks(id, &batch).expect("child: put");
        next += CRASH_BATCH;
        println!("CRASH-CHILD staged {next}");
    }
    panic!("child was not killed");
}

#[test]
fn fjall_crash_mid_upload() {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().expect("child stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut committed = false;
    let mut staged_seen = 0u64;
    while staged_seen < CRASH_KILL_AFTER {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // libtest may print "test crash_child ... " on the same line first.
            Ok(line) if line.ends_with("CRASH-CHILD committed") => committed = true,
            Ok(line) => {
                if let Some((_, n)) = line.split_once("CRASH-CHILD staged ") {
                    staged_seen = n.trim().parse().expect("count");
                }
            }
            Err(e) => {
                child.kill().ok();
                child.wait().ok();
                panic!(
                    "child made no progress in time ({e}); committed={committed}, staged={staged_seen}"
                );
            }
        }
    }
    assert!(committed);
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed");
    // Whatever the child wrote after its last line is at most a few batches more.
    drop(rx);
    reader.join().expect("reader thread");

    let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("reopen after the crash");
    let zero = build(&blocks_of(&[0]), "zero.bin");
    let complete = crash_complete_dataset();
    let listed = s.list_datasets(true).expect("list");
    let mut want = vec![zero.ds.manifest_cid, complete.ds.manifest_cid];
    want.sort_by_key(Cid::to_bytes);
    assert_eq!(
        cids(&listed),
        want,
        "only the committed datasets, no partial one"
    );
    assert!(listed.iter().all(|r| r.state == DatasetState::Complete));
    assert_readable(&s, &complete);
    assert_readable(&s, &zero);
    assert_space(&s, &[&zero, &complete]);
    for i in 0..staged_seen + 64 * CRASH_BATCH {
        let (cid, _) = crash_staged_block(i);
        assert!(!s.has_block(&cid).expect("has"), "staged block {i} is gone");
    }
    // And the store keeps working.
    let more = upload(&s, &pattern(7778, BS * 2), "more", PINNED);
    assert_space(&s, &[&zero, &complete, &more]);
}
