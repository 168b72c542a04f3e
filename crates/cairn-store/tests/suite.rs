//! One behaviour suite, run against both backends ([`MemStore`] and [`FjallStore`]), each with
//! the default batch size and with tiny batches (so that commits, aborts and deletes take many
//! batches); crash and failure injection between batches on both backends (feature
//! `fault-injection`); plus disk-only tests: reopen, format version, and crashes (SIGKILL) in
//! the middle of an upload, a commit and a delete.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_core::{BlockSize, Cid, Dataset, HashedBlock, build_from_bytes};
use cairn_store::{
    BatchedOp, BlockDeletion, BlockStore, DatasetFlags, DatasetState, Fault, FjallStore, LeafBlock,
    MemStore, StoreError, StoreOptions,
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

type Check = Arc<dyn Fn() -> cairn_store::Result<()> + Send + Sync>;

/// A store under test; holds its directory (disk backend) alive. When dropped at the end of a
/// test that passed, checks the integrity of the store's tables.
struct Env {
    store: Arc<dyn BlockStore>,
    check: Check,
    _dir: Option<tempfile::TempDir>,
}

impl Env {
    fn mem(store: MemStore) -> Env {
        let store = Arc::new(store);
        let s = Arc::clone(&store);
        Env {
            store,
            check: Arc::new(move || s.check_integrity()),
            _dir: None,
        }
    }

    fn fjall(store: FjallStore, dir: tempfile::TempDir) -> Env {
        let store = Arc::new(store);
        let s = Arc::clone(&store);
        Env {
            store,
            check: Arc::new(move || s.check_integrity()),
            _dir: Some(dir),
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            (self.check)().expect("store integrity at the end of the test");
        }
    }
}

type Make = fn(u64) -> Env;

fn mem_env(quota: u64) -> Env {
    Env::mem(MemStore::new(quota))
}

fn fjall_env(quota: u64) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open(dir.path(), quota).expect("open fjall store");
    Env::fjall(store, dir)
}

/// Records per batch in the `*_batched` runs and in the batch-specific tests.
const BATCH: usize = 3;

fn batched() -> StoreOptions {
    StoreOptions::default().with_batch_records(BATCH)
}

fn mem_env_batched(quota: u64) -> Env {
    Env::mem(MemStore::with_options(quota, batched()))
}

fn fjall_env_batched(quota: u64) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open_with(dir.path(), quota, batched()).expect("open fjall store");
    Env::fjall(store, dir)
}

macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod mem {
            $( #[test] fn $name() { super::$name(super::mem_env) } )*
        }
        mod fjall {
            $( #[test] fn $name() { super::$name(super::fjall_env) } )*
        }
        mod mem_batched {
            $( #[test] fn $name() { super::$name(super::mem_env_batched) } )*
        }
        mod fjall_batched {
            $( #[test] fn $name() { super::$name(super::fjall_env_batched) } )*
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
    meta_tables,
);

/// Application metadata: put, get, prefix scans per table, atomic batches, deletes; no effect
/// on blocks, datasets or the quota.
fn meta_tables(make: Make) {
    let env = make(BIG_QUOTA);
    let s = &*env.store;
    let before = s.space().unwrap();
    assert_eq!(s.get_meta("swarms", b"a").unwrap(), None);
    s.put_meta("swarms", b"a1", b"one").unwrap();
    s.put_meta("swarms", b"a2", b"two").unwrap();
    s.put_meta("swarms", b"b1", b"three").unwrap();
    s.put_meta("swarmsx", b"a1", b"other table").unwrap();
    s.put_meta("swarms", b"a1", b"ONE").unwrap();
    assert_eq!(
        s.get_meta("swarms", b"a1").unwrap().as_deref(),
        Some(&b"ONE"[..])
    );
    let scan = s.scan_meta("swarms", b"a").unwrap();
    let keys: Vec<&[u8]> = scan.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"a1"[..], &b"a2"[..]]);
    assert_eq!(s.scan_meta("swarms", b"").unwrap().len(), 3);
    assert_eq!(s.scan_meta("swarmsx", b"").unwrap().len(), 1);
    s.write_meta(&[
        cairn_store::MetaOp::Delete {
            table: "swarms".into(),
            key: b"a2".to_vec(),
        },
        cairn_store::MetaOp::Put {
            table: "facts".into(),
            key: vec![0, 255, 0],
            value: Vec::new(),
        },
    ])
    .unwrap();
    assert_eq!(s.get_meta("swarms", b"a2").unwrap(), None);
    assert_eq!(
        s.get_meta("facts", &[0, 255, 0]).unwrap().as_deref(),
        Some(&b""[..])
    );
    s.delete_meta("swarms", b"nothing").unwrap();
    s.delete_meta("swarms", b"b1").unwrap();
    assert_eq!(s.scan_meta("swarms", b"").unwrap().len(), 1);
    assert!(matches!(
        s.put_meta("", b"k", b"v"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.get_meta("a\0b", b"k"),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.scan_meta(&"t".repeat(65), b""),
        Err(StoreError::Invalid(_))
    ));
    let after = s.space().unwrap();
    assert_eq!(before.quota_used_bytes, after.quota_used_bytes);
    assert!(s.list_datasets(true).unwrap().is_empty());
}

/// Metadata survives closing and reopening a disk store.
#[test]
fn fjall_meta_survives_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("open");
        s.put_meta("incarnation", b"swarm", &7u64.to_be_bytes())
            .unwrap();
        s.put_meta("incarnation", b"gone", b"x").unwrap();
        s.delete_meta("incarnation", b"gone").unwrap();
    }
    let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("reopen");
    assert_eq!(
        s.get_meta("incarnation", b"swarm").unwrap().as_deref(),
        Some(&7u64.to_be_bytes()[..])
    );
    assert_eq!(s.get_meta("incarnation", b"gone").unwrap(), None);
}

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
    let parts: Vec<(&Built, BTreeSet<u64>)> = datasets
        .iter()
        .map(|b| (*b, (0..b.blocks.len() as u64).collect()))
        .collect();
    expected_parts(&parts)
}

/// Exact `(quota_used_bytes, total_blocks)` for these manifests, each holding the blocks of the
/// given indices.
fn expected_parts(parts: &[(&Built, BTreeSet<u64>)]) -> (u64, u64) {
    let mut blocks = BTreeMap::new();
    let mut manifests = BTreeMap::new();
    for (b, held) in parts {
        for hb in &b.blocks {
            if hb.cid != Cid::EMPTY_BLOCK && held.contains(&hb.index) {
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
        (env.check)().expect("store integrity");
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

// --- batched operations, crashes and failures between batches (both backends) ------------------

/// A store that can be opened again over the same data, as a restarted process would: the disk
/// one from its directory, the memory one with `MemStore::restart`.
enum Reopenable {
    Mem(MemStore),
    /// The store, its directory and its quota.
    Fjall(Option<FjallStore>, tempfile::TempDir, u64),
}

/// Opens a store with a quota and options.
type MakeR = fn(u64, StoreOptions) -> Reopenable;

fn mem_reopenable(quota: u64, options: StoreOptions) -> Reopenable {
    Reopenable::Mem(MemStore::with_options(quota, options))
}

fn fjall_reopenable(quota: u64, options: StoreOptions) -> Reopenable {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = FjallStore::open_with(dir.path(), quota, options).expect("open fjall store");
    Reopenable::Fjall(Some(store), dir, quota)
}

impl Reopenable {
    fn s(&self) -> &dyn BlockStore {
        match self {
            Reopenable::Mem(s) => s,
            Reopenable::Fjall(Some(s), _, _) => s,
            Reopenable::Fjall(None, _, _) => panic!("the store failed to reopen"),
        }
    }

    /// Checks the integrity of the store's tables.
    fn check(&self) {
        let r = match self {
            Reopenable::Mem(s) => s.check_integrity(),
            Reopenable::Fjall(Some(s), _, _) => s.check_integrity(),
            Reopenable::Fjall(None, _, _) => return,
        };
        r.expect("store integrity");
    }

    /// Closes the store (the process "dies") and opens it again with `options`; checks the
    /// integrity of what the recovery left.
    fn try_restart(&mut self, options: StoreOptions) -> cairn_store::Result<()> {
        match self {
            Reopenable::Mem(s) => *s = s.restart(options)?,
            Reopenable::Fjall(s, dir, quota) => {
                *s = None;
                *s = Some(FjallStore::open_with(dir.path(), *quota, options)?);
            }
        }
        self.check();
        Ok(())
    }

    fn restart(&mut self) {
        self.try_restart(batched()).expect("reopen");
    }
}

impl Drop for Reopenable {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.check();
        }
    }
}

macro_rules! reopenable_backends {
    ($($name:ident),* $(,)?) => {
        mod mem_faults {
            $( #[test] fn $name() { super::$name(super::mem_reopenable) } )*
        }
        mod fjall_faults {
            $( #[test] fn $name() { super::$name(super::fjall_reopenable) } )*
        }
    };
}

reopenable_backends!(
    batched_commit_modes,
    crash_mid_commit_new_tree,
    crash_mid_commit_partial_tree,
    crash_mid_commit_complete_tree,
    crash_mid_delete,
    crash_mid_delete_partial,
    crash_mid_abort,
    crash_during_recovery,
    failed_commit_cleans_up,
    failed_commit_cleanup_fails_too,
    failed_delete_cleans_up,
    concurrent_commits_same_tree,
    busy_tree_holds_off_changes,
);

/// Makes the fault hook of a store return a fault, when armed, at one batch of one operation
/// (or at that batch and every later one).
#[derive(Debug, Default)]
struct Trigger {
    armed: Mutex<Option<(BatchedOp, u64, bool, Fault)>>,
    fired: AtomicBool,
}

impl Trigger {
    fn new() -> Arc<Trigger> {
        Arc::new(Trigger::default())
    }

    /// `fault` at batch `at` of `op`, and at every later batch if `and_after`.
    fn arm(&self, op: BatchedOp, at: u64, and_after: bool, fault: Fault) {
        *self.armed.lock().expect("trigger") = Some((op, at, and_after, fault));
        self.fired.store(false, Ordering::SeqCst);
    }

    fn disarm(&self) {
        *self.armed.lock().expect("trigger") = None;
    }

    fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    fn check(&self, op: BatchedOp, n: u64) -> Fault {
        match *self.armed.lock().expect("trigger") {
            Some((o, at, and_after, fault)) if o == op && (n == at || (and_after && n > at)) => {
                self.fired.store(true, Ordering::SeqCst);
                fault
            }
            _ => Fault::Continue,
        }
    }

    /// Options with [`BATCH`] records per batch and this trigger as fault hook.
    fn options(self: &Arc<Trigger>) -> StoreOptions {
        let t = Arc::clone(self);
        batched().with_fault_hook(Arc::new(move |op, n| t.check(op, n)))
    }
}

/// Number of batches a commit of `b` writes before its commit point.
fn commit_batches(b: &Built) -> u64 {
    b.blocks.len().div_ceil(BATCH) as u64
}

fn all_indices(b: &Built) -> BTreeSet<u64> {
    (0..b.blocks.len() as u64).collect()
}

/// The indices the bitmap of `b`'s tree says are held (none if the tree is unknown), after
/// checking that exactly those have leaf records, with the right block and a valid proof.
fn held(s: &dyn BlockStore, b: &Built) -> BTreeSet<u64> {
    let bm = s.bitmap(&tree(b)).expect("bitmap");
    let root = b.ds.tree.root();
    let mut out = BTreeSet::new();
    for hb in &b.blocks {
        let i = hb.index;
        let set = bm
            .as_ref()
            .is_some_and(|bm| bm[(i / 8) as usize] & (1 << (i % 8)) != 0);
        let leaf = s.leaf(&tree(b), i).expect("leaf");
        assert_eq!(leaf.is_some(), set, "leaf record {i} iff its bit is set");
        if let Some(leaf) = leaf {
            assert_eq!(leaf.block_cid, hb.cid);
            assert!(leaf.proof.verify(hb.cid.digest(), &root), "proof {i}");
            assert_eq!(
                s.leaf_block(&tree(b), i).expect("leaf block").as_deref(),
                Some(&hb.data[..])
            );
            out.insert(i);
        }
    }
    out
}

fn assert_space_parts(s: &dyn BlockStore, parts: &[(&Built, BTreeSet<u64>)]) {
    let sp = s.space().expect("space");
    let (used, count) = expected_parts(parts);
    assert_eq!(sp.quota_used_bytes, used, "quota_used_bytes");
    assert_eq!(sp.total_blocks, count, "total_blocks");
}

/// The listed manifests (partial ones included) are exactly those of `want`.
fn assert_listed(s: &dyn BlockStore, want: &[&Built]) {
    let listed: BTreeSet<Cid> = cids(&s.list_datasets(true).expect("list"))
        .into_iter()
        .collect();
    let want: BTreeSet<Cid> = want.iter().map(|b| b.ds.manifest_cid).collect();
    assert_eq!(listed, want);
}

/// `b` is not stored at all: no manifest, no tree, no leaf record; its blocks that no dataset
/// of `others` holds are gone, and the space is exactly that of `others`.
fn assert_gone(s: &dyn BlockStore, b: &Built, others: &[&Built]) {
    assert!(
        s.dataset(&b.ds.manifest_cid).expect("dataset").is_none(),
        "manifest gone"
    );
    assert_eq!(s.bitmap(&tree(b)).expect("bitmap"), None, "tree gone");
    for i in 0..b.blocks.len() as u64 {
        assert_eq!(s.leaf(&tree(b), i).expect("leaf"), None, "leaf {i} gone");
    }
    let kept: HashSet<Cid> = others
        .iter()
        .flat_map(|o| o.blocks.iter().map(|hb| hb.cid))
        .collect();
    for hb in &b.blocks {
        if hb.cid != Cid::EMPTY_BLOCK {
            assert_eq!(
                s.has_block(&hb.cid).expect("has"),
                kept.contains(&hb.cid),
                "block {}",
                hb.index
            );
        }
    }
    assert_listed(s, others);
    assert_space(s, others);
}

fn stage_all(s: &dyn BlockStore, b: &Built) -> cairn_store::StagingId {
    let id = s.begin_staging().expect("begin");
    for part in staged(&b.blocks).chunks(4) {
        s.put_staged_blocks(id, part).expect("put");
    }
    id
}

fn put_manifest_of(s: &dyn BlockStore, b: &Built, flags: DatasetFlags) {
    s.put_manifest(
        &b.ds.manifest_cid,
        Bytes::from(b.ds.manifest_bytes.clone()),
        flags,
    )
    .expect("manifest");
}

/// Shared blocks: `a` and `b` share seed 201 and the zero block; `b` repeats the zero block.
fn pair() -> (Vec<u8>, Built) {
    (
        blocks_of(&[200, 201, 0, 202]),
        build(
            &blocks_of(&[203, 201, 204, 0, 0, 205, 206, 207, 208, 209, 210]),
            "b",
        ),
    )
}

fn batched_commit_modes(make: MakeR) {
    let env = make(BIG_QUOTA, batched());
    let s = env.s();
    // A new tree over many batches, with repeated blocks.
    let (a_data, b) = pair();
    let a = upload(s, &a_data, "a", PINNED);
    upload_built(s, &b, PINNED).expect("upload b");
    assert_readable(s, &b);
    assert_eq!(held(s, &b), all_indices(&b));
    assert_space(s, &[&a, &b]);
    // The same content under another name: the tree is complete, the staged copies released.
    let b2 = build(
        &blocks_of(&[203, 201, 204, 0, 0, 205, 206, 207, 208, 209, 210]),
        "b2",
    );
    let rec = upload_built(s, &b2, CACHED).expect("upload b2");
    assert_eq!(rec.state, DatasetState::Complete);
    assert_space(s, &[&a, &b, &b2]);
    // A partial download completed by an upload of the same bytes, over many batches.
    let data: Vec<u8> = blocks_of(&(300..311).collect::<Vec<_>>());
    let dl = build(&data, "dl");
    put_manifest_of(s, &dl, CACHED);
    s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[1, 4, 5, 10]))
        .expect("leaves");
    let up = upload(s, &data, "up", PINNED);
    assert_eq!(held(s, &dl), all_indices(&dl));
    assert_eq!(
        s.dataset(&dl.ds.manifest_cid)
            .expect("dataset")
            .expect("stored")
            .state,
        DatasetState::Complete
    );
    assert_space(s, &[&a, &b, &b2, &dl, &up]);
    // An abort over many batches.
    let c = build(&blocks_of(&(400..411).collect::<Vec<_>>()), "c");
    let id = stage_all(s, &c);
    s.abort_staging(id).expect("abort");
    assert_space(s, &[&a, &b, &b2, &dl, &up]);
    // Everything survives a restart.
    let mut env = env;
    env.restart();
    let s = env.s();
    assert_space(s, &[&a, &b, &b2, &dl, &up]);
    assert_readable(s, &b);
    assert_readable(s, &dl);
    // Deletes over many batches.
    for x in [&b, &b2, &up, &dl] {
        assert!(s.delete_dataset(&x.ds.manifest_cid).expect("delete"));
    }
    assert_gone(s, &b, &[&a]);
    assert_gone(s, &dl, &[&a]);
    // A commit batch spanning two bitmap chunks (8192 indices each) of a partial tree.
    let zeros = vec![0u8; 8200 * BS];
    let zdl = build(&zeros, "zeros-dl");
    put_manifest_of(s, &zdl, CACHED);
    s.put_leaf_blocks(&tree(&zdl), &leaf_blocks(&zdl, &[0, 8191, 8192, 8199]))
        .expect("leaves");
    let zup = upload(s, &zeros, "zeros-up", PINNED);
    let bm = s.bitmap(&tree(&zdl)).expect("bitmap").expect("known tree");
    assert!(bm.iter().all(|&x| x == 0xff));
    assert_space(s, &[&a, &zdl, &zup]);
    assert!(s.delete_dataset(&zdl.ds.manifest_cid).expect("delete"));
    assert!(s.delete_dataset(&zup.ds.manifest_cid).expect("delete"));
    assert_space(s, &[&a]);
}

fn crash_mid_commit_new_tree(make: MakeR) {
    let (a_data, b) = pair();
    let chunks = commit_batches(&b);
    for at in 1..=chunks + 1 {
        let t = Trigger::new();
        let mut env = make(BIG_QUOTA, t.options());
        let a = upload(env.s(), &a_data, "a", PINNED);
        t.arm(BatchedOp::Commit, at, false, Fault::Crash);
        assert!(upload_built(env.s(), &b, PINNED).is_err(), "crash at {at}");
        assert!(t.fired());
        env.restart();
        let s = env.s();
        if at <= chunks {
            assert_gone(s, &b, &[&a]);
        } else {
            // The crash came after the commit point.
            assert_listed(s, &[&a, &b]);
            assert_readable(s, &b);
            assert_space(s, &[&a, &b]);
        }
        assert_readable(s, &a);
        // The store goes on.
        upload_built(s, &b, PINNED).expect("upload again");
        assert_readable(s, &b);
        assert_space(s, &[&a, &b]);
    }
}

fn crash_mid_commit_partial_tree(make: MakeR) {
    let data = blocks_of(&(300..311).collect::<Vec<_>>());
    let dl = build(&data, "dl");
    let up = build(&data, "up");
    let chunks = commit_batches(&up);
    let before: BTreeSet<u64> = [1, 4, 5, 10].into();
    for at in 1..=chunks + 1 {
        let t = Trigger::new();
        let mut env = make(BIG_QUOTA, t.options());
        put_manifest_of(env.s(), &dl, CACHED);
        let idx: Vec<u64> = before.iter().copied().collect();
        env.s()
            .put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &idx))
            .expect("leaves");
        t.arm(BatchedOp::Commit, at, false, Fault::Crash);
        assert!(upload_built(env.s(), &up, PINNED).is_err());
        env.restart();
        let s = env.s();
        // The commit's batches are download progress: indices [0, at·BATCH) are held.
        let mut want = before.clone();
        want.extend(0..(at * BATCH as u64).min(up.blocks.len() as u64));
        assert_eq!(held(s, &dl), want, "crash at {at}");
        if at <= chunks {
            assert_listed(s, &[&dl]);
            assert_space_parts(s, &[(&dl, want)]);
        } else {
            assert_listed(s, &[&dl, &up]);
            assert_space(s, &[&dl, &up]);
        }
        upload_built(s, &up, PINNED).expect("upload again");
        assert_readable(s, &dl);
        assert_space(s, &[&dl, &up]);
    }
}

fn crash_mid_commit_complete_tree(make: MakeR) {
    let data = blocks_of(&[500, 501, 0, 502, 503, 0, 504, 505]);
    let a = build(&data, "a");
    let dup = build(&data, "dup");
    let chunks = commit_batches(&dup);
    for at in 1..=chunks + 1 {
        let t = Trigger::new();
        let mut env = make(BIG_QUOTA, t.options());
        upload_built(env.s(), &a, CACHED).expect("upload");
        t.arm(BatchedOp::Commit, at, false, Fault::Crash);
        assert!(upload_built(env.s(), &dup, PINNED).is_err());
        env.restart();
        let s = env.s();
        assert_readable(s, &a);
        if at <= chunks {
            assert_listed(s, &[&a]);
            assert!(s.dataset(&dup.ds.manifest_cid).expect("dataset").is_none());
            assert_space(s, &[&a]);
        } else {
            assert_listed(s, &[&a, &dup]);
            assert_space(s, &[&a, &dup]);
        }
    }
}

/// Runs `op` with a crash at batch 1, 2, ... of `kind` until it runs through; each time checks
/// the reopened store with `check`.
fn crash_each_batch(
    make: MakeR,
    kind: BatchedOp,
    setup: &dyn Fn(&dyn BlockStore),
    op: &dyn Fn(&dyn BlockStore) -> cairn_store::Result<()>,
    check: &dyn Fn(&dyn BlockStore),
) -> u64 {
    for at in 1..100 {
        let t = Trigger::new();
        let mut env = make(BIG_QUOTA, t.options());
        setup(env.s());
        t.arm(kind, at, false, Fault::Crash);
        let r = op(env.s());
        if !t.fired() {
            r.expect("the operation runs through");
            return at - 1;
        }
        assert!(r.is_err());
        env.restart();
        check(env.s());
    }
    panic!("the operation never ran through");
}

fn crash_mid_delete(make: MakeR) {
    let (a_data, b) = pair();
    let a = build(&a_data, "a");
    let batches = crash_each_batch(
        make,
        BatchedOp::Delete,
        &|s| {
            upload_built(s, &a, PINNED).expect("upload a");
            upload_built(s, &b, PINNED).expect("upload b");
        },
        &|s| s.delete_dataset(&b.ds.manifest_cid).map(|_| ()),
        &|s| {
            assert_gone(s, &b, &[&a]);
            assert_readable(s, &a);
            upload_built(s, &b, PINNED).expect("upload again");
            assert_space(s, &[&a, &b]);
        },
    );
    // The commit point, the leaf record batches, a last one (bitmaps, detached record).
    assert_eq!(batches, 1 + commit_batches(&b) + 1);
}

fn crash_mid_delete_partial(make: MakeR) {
    // 9000 zero blocks: one block, two bitmap chunks.
    let dl = build(&vec![0u8; 9000 * BS], "zeros");
    let idx: Vec<u64> = vec![0, 1, 2, 8191, 8192, 8999];
    crash_each_batch(
        make,
        BatchedOp::Delete,
        &|s| {
            put_manifest_of(s, &dl, CACHED);
            s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &idx))
                .expect("leaves");
        },
        &|s| s.delete_dataset(&dl.ds.manifest_cid).map(|_| ()),
        &|s| {
            assert!(s.dataset(&dl.ds.manifest_cid).expect("dataset").is_none());
            assert_eq!(s.bitmap(&tree(&dl)).expect("bitmap"), None);
            assert_space(s, &[]);
            // No leftover leaf record or bitmap chunk: the manifest again starts from nothing.
            put_manifest_of(s, &dl, CACHED);
            let bm = s.bitmap(&tree(&dl)).expect("bitmap").expect("known tree");
            assert!(bm.iter().all(|&x| x == 0));
            for &i in &idx {
                assert_eq!(s.leaf(&tree(&dl), i).expect("leaf"), None);
            }
            assert_space_parts(s, &[(&dl, BTreeSet::new())]);
        },
    );
}

fn crash_mid_abort(make: MakeR) {
    let (a_data, b) = pair();
    let a = build(&a_data, "a");
    let batches = crash_each_batch(
        make,
        BatchedOp::Abort,
        &|s| {
            upload_built(s, &a, PINNED).expect("upload a");
        },
        &|s| {
            let id = stage_all(s, &b);
            s.abort_staging(id)
        },
        &|s| assert_gone(s, &b, &[&a]),
    );
    assert_eq!(batches, commit_batches(&b));
}

fn crash_during_recovery(make: MakeR) {
    let (a_data, b) = pair();
    let c = build(&blocks_of(&[400, 401, 402, 403]), "c");
    for at in 1..20 {
        let t = Trigger::new();
        let mut env = make(BIG_QUOTA, t.options());
        let a = upload(env.s(), &a_data, "a", PINNED);
        // Left behind by the crash: a staging never committed, and a commit cut after two
        // batches (two batches of detached leaf records, the rest still staged).
        stage_all(env.s(), &c);
        t.arm(BatchedOp::Commit, 2, false, Fault::Crash);
        assert!(upload_built(env.s(), &b, PINNED).is_err());
        // The restart itself crashes at batch `at` of its recovery.
        let t2 = Trigger::new();
        t2.arm(BatchedOp::Recovery, at, false, Fault::Crash);
        let r = env.try_restart(t2.options());
        let fired = t2.fired();
        assert_eq!(r.is_err(), fired);
        if fired {
            env.restart();
        }
        let s = env.s();
        assert_gone(s, &b, &[&a]);
        assert_gone(s, &c, &[&a]);
        if !fired {
            assert!(at > 3, "recovery took {} batches", at - 1);
            break;
        }
    }
}

fn failed_commit_cleans_up(make: MakeR) {
    let (a_data, b) = pair();
    let t = Trigger::new();
    let env = make(BIG_QUOTA, t.options());
    let s = env.s();
    let a = upload(s, &a_data, "a", PINNED);
    let id = stage_all(s, &b);
    t.arm(BatchedOp::Commit, 2, false, Fault::Error);
    assert!(matches!(
        s.commit_staging(id, &b.ds, PINNED),
        Err(StoreError::Backend(_))
    ));
    t.disarm();
    // The leaf records written went; the staging only takes an abort now.
    assert!(s.dataset(&b.ds.manifest_cid).expect("dataset").is_none());
    for i in 0..b.blocks.len() as u64 {
        assert_eq!(s.leaf(&tree(&b), i).expect("leaf"), None);
    }
    assert!(matches!(
        s.commit_staging(id, &b.ds, PINNED),
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        s.put_staged_blocks(id, &staged(&b.blocks)[..1]),
        Err(StoreError::Invalid(_))
    ));
    s.abort_staging(id).expect("abort");
    assert_gone(s, &b, &[&a]);
    upload_built(s, &b, PINNED).expect("upload again");
    assert_space(s, &[&a, &b]);

    // Into a partial tree: the batches written stay as download progress.
    let data = blocks_of(&(300..311).collect::<Vec<_>>());
    let dl = build(&data, "dl");
    let up = build(&data, "up");
    put_manifest_of(s, &dl, CACHED);
    s.put_leaf_blocks(&tree(&dl), &leaf_blocks(&dl, &[10]))
        .expect("leaves");
    let id = stage_all(s, &up);
    t.arm(BatchedOp::Commit, 1, false, Fault::Error);
    assert!(s.commit_staging(id, &up.ds, PINNED).is_err());
    t.disarm();
    s.abort_staging(id).expect("abort");
    let want: BTreeSet<u64> = [0, 1, 2, 10].into();
    assert_eq!(held(s, &dl), want);
    assert_space_parts(
        s,
        &[(&a, all_indices(&a)), (&b, all_indices(&b)), (&dl, want)],
    );
    // A failure before any batch leaves the staging usable.
    let id = stage_all(s, &up);
    let other = build(&pattern(9, BS * 3), "other");
    assert!(matches!(
        s.commit_staging(id, &other.ds, PINNED),
        Err(StoreError::Invalid(_))
    ));
    s.commit_staging(id, &up.ds, PINNED).expect("commit");
    assert_space(s, &[&a, &b, &dl, &up]);
}

fn failed_commit_cleanup_fails_too(make: MakeR) {
    let (a_data, b) = pair();
    let t = Trigger::new();
    let mut env = make(BIG_QUOTA, t.options());
    let s = env.s();
    let a = upload(s, &a_data, "a", PINNED);
    let id = stage_all(s, &b);
    // Every batch from the second on fails, the cleanup's too.
    t.arm(BatchedOp::Commit, 2, true, Fault::Error);
    assert!(s.commit_staging(id, &b.ds, PINNED).is_err());
    t.disarm();
    s.abort_staging(id).expect("abort");
    assert!(s.dataset(&b.ds.manifest_cid).expect("dataset").is_none());
    // The detached leaf records still hold their blocks...
    assert!(s.space().expect("space").quota_used_bytes > expected(&[&a]).0);
    // ...until the tree is stored again, which cleans them up first.
    upload_built(s, &b, PINNED).expect("upload again");
    assert_readable(s, &b);
    assert_space(s, &[&a, &b]);
    env.restart();
    assert_space(env.s(), &[&a, &b]);

    // Same, but the process restarts before the tree comes back: recovery cleans up.
    let c = build(&blocks_of(&(400..411).collect::<Vec<_>>()), "c");
    let t = Trigger::new();
    env.try_restart(t.options()).expect("reopen");
    let s = env.s();
    let id = stage_all(s, &c);
    t.arm(BatchedOp::Commit, 2, true, Fault::Error);
    assert!(s.commit_staging(id, &c.ds, PINNED).is_err());
    env.restart();
    assert_gone(env.s(), &c, &[&a, &b]);
}

fn failed_delete_cleans_up(make: MakeR) {
    let (a_data, b) = pair();
    let t = Trigger::new();
    let mut env = make(BIG_QUOTA, t.options());
    let s = env.s();
    let a = upload(s, &a_data, "a", PINNED);
    upload_built(s, &b, PINNED).expect("upload b");
    t.arm(BatchedOp::Delete, 2, true, Fault::Error);
    assert!(s.delete_dataset(&b.ds.manifest_cid).is_err());
    t.disarm();
    // Deleted (the commit point passed), its leaf records not all cleaned up yet.
    assert_listed(s, &[&a]);
    assert_eq!(s.bitmap(&tree(&b)).expect("bitmap"), None);
    // Storing the manifest again cleans them up first: a fresh, empty download.
    put_manifest_of(s, &b, CACHED);
    assert_eq!(held(s, &b), BTreeSet::new());
    assert_space_parts(s, &[(&a, all_indices(&a)), (&b, BTreeSet::new())]);
    s.put_leaf_blocks(
        &tree(&b),
        &leaf_blocks(&b, &all_indices(&b).into_iter().collect::<Vec<_>>()),
    )
    .expect("leaves");
    assert_readable(s, &b);
    assert_space(s, &[&a, &b]);
    // A failed delete followed by a restart: recovery finishes it.
    t.arm(BatchedOp::Delete, 2, true, Fault::Error);
    assert!(s.delete_dataset(&b.ds.manifest_cid).is_err());
    env.restart();
    assert_gone(env.s(), &b, &[&a]);
}

/// A fault hook that, once armed, pauses a commit after its first batch until resumed.
struct Pause {
    armed: AtomicBool,
    paused: Mutex<std::sync::mpsc::Sender<()>>,
    resume: Mutex<std::sync::mpsc::Receiver<()>>,
}

impl Pause {
    /// The pause, the receiver told when the commit pauses, the sender that resumes it.
    fn new() -> (
        Arc<Pause>,
        std::sync::mpsc::Receiver<()>,
        std::sync::mpsc::Sender<()>,
    ) {
        let (paused_tx, paused_rx) = std::sync::mpsc::channel();
        let (resume_tx, resume_rx) = std::sync::mpsc::channel();
        let pause = Arc::new(Pause {
            armed: AtomicBool::new(false),
            paused: Mutex::new(paused_tx),
            resume: Mutex::new(resume_rx),
        });
        (pause, paused_rx, resume_tx)
    }

    fn options(self: &Arc<Pause>) -> StoreOptions {
        let p = Arc::clone(self);
        batched().with_fault_hook(Arc::new(move |op, n| {
            if op == BatchedOp::Commit && n == 1 && p.armed.swap(false, Ordering::SeqCst) {
                p.paused.lock().expect("pause").send(()).expect("paused");
                // Bounded, so that a failing test does not hang.
                let resumed = p
                    .resume
                    .lock()
                    .expect("pause")
                    .recv_timeout(Duration::from_secs(20));
                if resumed.is_err() {
                    return Fault::Error;
                }
            }
            Fault::Continue
        }))
    }
}

/// Runs `f` on another thread; after a while, checks that it is still blocked.
fn blocked<'s, T: Send + 's>(
    scope: &'s std::thread::Scope<'s, '_>,
    f: impl FnOnce() -> T + Send + 's,
) -> std::thread::ScopedJoinHandle<'s, T> {
    let done = Arc::new(AtomicBool::new(false));
    let d = Arc::clone(&done);
    let handle = scope.spawn(move || {
        let r = f();
        d.store(true, Ordering::SeqCst);
        r
    });
    std::thread::sleep(Duration::from_millis(100));
    assert!(!done.load(Ordering::SeqCst), "waits for the commit");
    handle
}

/// While a commit writes a tree, changes to that tree's manifests wait for it and eviction
/// passes it over; other work goes on.
fn busy_tree_holds_off_changes(make: MakeR) {
    let data = blocks_of(&[800, 801, 802, 803, 804, 805, 806, 807]);
    let a = build(&data, "a");
    let up = build(&data, "up");
    let dl = build(&data, "dl");
    let other = build(&blocks_of(&[810, 811]), "other");
    // Room for a, its duplicate's manifest, dl's manifest and a little more, not for another
    // block.
    let quota = expected(&[&a, &up, &dl]).0 + 1000;
    let (pause, paused, resume) = Pause::new();
    let env = make(quota, pause.options());
    let s = env.s();

    // A new tree: a download of it starting meanwhile waits, then finds it complete.
    pause.armed.store(true, Ordering::SeqCst);
    std::thread::scope(|scope| {
        let commit = scope.spawn(|| upload_built(s, &a, CACHED));
        paused.recv().expect("commit paused");
        let manifest = blocked(scope, || put_manifest_of(s, &dl, CACHED));
        // The commit's manifest has its room reserved: a block taking the rest and one byte
        // more does not fit.
        let free = quota - s.space().expect("space").quota_used_bytes;
        let len = free - a.ds.manifest_bytes.len() as u64 + 1;
        let block = vec![7u8; len as usize];
        assert!(matches!(
            s.put_block(&Cid::of_block(&block), Bytes::from(block)),
            Err(StoreError::QuotaExceeded { needed, free: f }) if needed == len && f == len - 1
        ));
        // Other trees are not held up.
        put_manifest_of(s, &other, CACHED);
        assert!(s.delete_dataset(&other.ds.manifest_cid).expect("delete"));
        resume.send(()).expect("resume");
        commit.join().expect("commit thread").expect("commit");
        manifest.join().expect("manifest thread");
    });
    assert_eq!(held(s, &dl), all_indices(&dl));
    assert_space(s, &[&a, &dl]);

    // A complete tree: its cached datasets are not evicted and not deleted meanwhile.
    pause.armed.store(true, Ordering::SeqCst);
    std::thread::scope(|scope| {
        let commit = scope.spawn(|| upload_built(s, &up, PINNED));
        paused.recv().expect("commit paused");
        let block = pattern(820, BS);
        assert!(matches!(
            s.put_block(&Cid::of_block(&block), Bytes::from(block)),
            Err(StoreError::QuotaExceeded { .. })
        ));
        let delete = blocked(scope, || s.delete_dataset(&dl.ds.manifest_cid));
        resume.send(()).expect("resume");
        commit.join().expect("commit thread").expect("commit");
        assert!(delete.join().expect("delete thread").expect("delete"));
    });
    assert_listed(s, &[&a, &up]);
    assert_readable(s, &up);
    assert_space(s, &[&a, &up]);
}

fn concurrent_commits_same_tree(make: MakeR) {
    let env = make(BIG_QUOTA, batched());
    let data = blocks_of(&[
        600, 601, 602, 0, 603, 601, 604, 605, 606, 607, 608, 609, 610,
    ]);
    let names: Vec<Built> = (0..6).map(|i| build(&data, &format!("n{i}"))).collect();
    let dl = build(&data, "dl");
    let other = build(&blocks_of(&[601, 700, 701, 702, 703, 704, 705]), "other");
    let s = env.s();
    std::thread::scope(|scope| {
        for b in &names {
            scope.spawn(move || {
                upload_built(s, b, PINNED).expect("upload");
            });
        }
        scope.spawn(|| {
            upload_built(s, &other, CACHED).expect("upload other");
        });
        let dl = &dl;
        scope.spawn(move || {
            put_manifest_of(s, dl, CACHED);
            for i in (0..dl.blocks.len() as u64).rev() {
                s.put_leaf_blocks(&tree(dl), &leaf_blocks(dl, &[i]))
                    .expect("leaf");
            }
        });
    });
    let mut all: Vec<&Built> = names.iter().collect();
    all.push(&dl);
    all.push(&other);
    assert_listed(s, &all);
    assert!(s.list_datasets(false).expect("list").len() == all.len());
    assert_eq!(held(s, &dl), all_indices(&dl));
    assert_space(s, &all);
    std::thread::scope(|scope| {
        for b in &all {
            scope.spawn(move || {
                assert!(s.delete_dataset(&b.ds.manifest_cid).expect("delete"));
            });
        }
        // Uploads of the same tree while it is being deleted.
        scope.spawn(|| {
            upload_built(s, &names[0], PINNED).expect("upload during deletes");
        });
    });
    let d = s.dataset(&names[0].ds.manifest_cid).expect("dataset");
    if d.is_some() {
        assert_readable(s, &names[0]);
        assert_space(s, &[&names[0]]);
    } else {
        assert_space(s, &[]);
    }
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
        meta.insert("format_version", 3u32.to_be_bytes())
            .expect("insert");
        db.persist(::fjall::PersistMode::SyncAll).expect("persist");
    }
    match FjallStore::open(dir.path(), BIG_QUOTA) {
        Err(
            e @ StoreError::UnsupportedFormat {
                found: 3,
                supported: 2,
            },
        ) => {
            assert!(e.to_string().contains("format version 3"), "{e}");
        }
        other => panic!("expected UnsupportedFormat, got {other:?}"),
    }
    // Version 1 (before batched commits and deletes) is refused too: no migration.
    {
        let db = ::fjall::Database::builder(dir.path())
            .open()
            .expect("open fjall");
        let meta = db
            .keyspace("meta", ::fjall::KeyspaceCreateOptions::default)
            .expect("meta keyspace");
        meta.insert("format_version", 1u32.to_be_bytes())
            .expect("insert");
        db.persist(::fjall::PersistMode::SyncAll).expect("persist");
    }
    assert!(matches!(
        FjallStore::open(dir.path(), BIG_QUOTA),
        Err(StoreError::UnsupportedFormat {
            found: 1,
            supported: 2
        })
    ));
}

// --- crash tests (SIGKILL) -----------------------------------------------------------------------

/// Set in the child process: the store directory.
const CRASH_ENV: &str = "CAIRN_STORE_CRASH_CHILD_DIR";
/// Set in the child process: what it does until it is killed (`upload`, `commit`, `delete`).
const CRASH_MODE_ENV: &str = "CAIRN_STORE_CRASH_CHILD_MODE";
const CRASH_BLOCK: usize = 64 * 1024;
const CRASH_BATCH: u64 = 16;
/// Staged blocks the parent waits for before the kill (40 MiB: several memtable flushes).
const CRASH_KILL_AFTER: u64 = 640;
/// Records per batch of the child's commits and deletes.
const CRASH_BATCH_RECORDS: usize = 16;
/// The batch of the child's commit or delete after which it waits to be killed.
const CRASH_PAUSE_AT: u64 = 5;

fn crash_complete_dataset() -> Built {
    build(&pattern(7777, BS * 9 + 10), "complete.bin")
}

/// 200 blocks (13 batches of 16), the zero block among them (shared with `zero.bin`).
fn crash_big_dataset() -> Built {
    let seeds: Vec<u64> = (0..200)
        .map(|i| if i % 10 == 3 { 0 } else { 9000 + i })
        .collect();
    build(&blocks_of(&seeds), "big.bin")
}

fn crash_staged_block(i: u64) -> (Cid, Vec<u8>) {
    // A few bytes of difference per block is enough to make every CID distinct.
    let mut data = vec![0xa5u8; CRASH_BLOCK];
    data[..8].copy_from_slice(&i.to_le_bytes());
    (Cid::of_block(&data), data)
}

/// The child half of the `fjall_crash_*` tests: does nothing unless started by one.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CRASH_ENV) else {
        return;
    };
    let mode = std::env::var(CRASH_MODE_ENV).unwrap_or_default();
    if mode == "upload" {
        crash_child_upload(&dir);
    } else {
        crash_child_batched(&dir, &mode);
    }
}

/// Stages blocks until killed.
fn crash_child_upload(dir: &str) {
    let s = FjallStore::open(dir, BIG_QUOTA).expect("child: open");
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

/// Commits (`commit`) or deletes (`delete`) the big dataset and waits to be killed in the middle,
/// after batch [`CRASH_PAUSE_AT`].
fn crash_child_batched(dir: &str, mode: &str) {
    let op = match mode {
        "commit" => BatchedOp::Commit,
        "delete" => BatchedOp::Delete,
        other => panic!("unknown crash child mode {other:?}"),
    };
    let armed = Arc::new(AtomicBool::new(false));
    let hook_armed = Arc::clone(&armed);
    let options = StoreOptions::default()
        .with_batch_records(CRASH_BATCH_RECORDS)
        .with_fault_hook(Arc::new(move |o, n| {
            if hook_armed.load(Ordering::SeqCst) && o == op && n == CRASH_PAUSE_AT {
                println!("CRASH-CHILD paused");
                // Bounded: the parent kills us long before.
                std::thread::sleep(Duration::from_secs(120));
            }
            Fault::Continue
        }));
    let s = FjallStore::open_with(dir, BIG_QUOTA, options).expect("child: open");
    upload(&s, &blocks_of(&[0]), "zero.bin", PINNED);
    upload_built(&s, &crash_complete_dataset(), PINNED).expect("child: upload");
    let big = crash_big_dataset();
    if op == BatchedOp::Delete {
        upload_built(&s, &big, PINNED).expect("child: upload big");
    }
    s.sync().expect("child: sync");
    println!("CRASH-CHILD committed");
    armed.store(true, Ordering::SeqCst);
    if op == BatchedOp::Commit {
        upload_built(&s, &big, PINNED).expect("child: commit");
    } else {
        s.delete_dataset(&big.ds.manifest_cid)
            .expect("child: delete");
    }
    panic!("child was not killed");
}

/// Starts the child in `mode`, feeds its output lines to `done` until it returns true, then
/// kills it (SIGKILL) and returns its store directory.
fn crash_child_run(mode: &str, mut done: impl FnMut(&str) -> bool) -> tempfile::TempDir {
    use std::io::BufRead;
    use std::process::{Command, Stdio};

    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = Command::new(std::env::current_exe().expect("test binary path"))
        .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
        .env(CRASH_ENV, dir.path())
        .env(CRASH_MODE_ENV, mode)
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
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                if done(&line) {
                    break;
                }
            }
            Err(e) => {
                child.kill().ok();
                child.wait().ok();
                panic!("child ({mode}) made no progress in time ({e})");
            }
        }
    }
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("reap the child");
    assert!(!status.success(), "the child was killed");
    drop(rx);
    reader.join().expect("reader thread");
    dir
}

#[test]
fn fjall_crash_mid_upload() {
    let mut committed = false;
    let mut staged_seen = 0u64;
    let dir = crash_child_run("upload", |line| {
        // libtest may print "test crash_child ... " on the same line first.
        if line.ends_with("CRASH-CHILD committed") {
            committed = true;
        } else if let Some((_, n)) = line.split_once("CRASH-CHILD staged ") {
            staged_seen = n.trim().parse().expect("count");
        }
        staged_seen >= CRASH_KILL_AFTER
    });
    assert!(committed);
    // Whatever the child wrote after its last line is at most a few batches more.

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
    s.check_integrity().expect("integrity after recovery");
    // And the store keeps working.
    let more = upload(&s, &pattern(7778, BS * 2), "more", PINNED);
    assert_space(&s, &[&zero, &complete, &more]);
}

/// Kills the child in `mode` in the middle of its commit or delete of the big dataset and checks
/// that the reopened store holds exactly the two other datasets.
fn fjall_crash_mid_batched(mode: &str) {
    let mut committed = false;
    let dir = crash_child_run(mode, |line| {
        if line.ends_with("CRASH-CHILD committed") {
            committed = true;
        }
        line.ends_with("CRASH-CHILD paused")
    });
    assert!(committed);
    let s = FjallStore::open_with(dir.path(), BIG_QUOTA, batched()).expect("reopen");
    let zero = build(&blocks_of(&[0]), "zero.bin");
    let complete = crash_complete_dataset();
    let big = crash_big_dataset();
    assert_gone(&s, &big, &[&zero, &complete]);
    assert!(
        s.list_datasets(true)
            .expect("list")
            .iter()
            .all(|r| r.state == DatasetState::Complete)
    );
    assert_readable(&s, &zero);
    assert_readable(&s, &complete);
    s.check_integrity().expect("integrity after recovery");
    // And the store keeps working.
    upload_built(&s, &big, PINNED).expect("upload again");
    assert_readable(&s, &big);
    assert_space(&s, &[&zero, &complete, &big]);
    drop(s);
    let s = FjallStore::open(dir.path(), BIG_QUOTA).expect("reopen");
    assert_space(&s, &[&zero, &complete, &big]);
    s.check_integrity().expect("integrity");
}

#[test]
fn fjall_crash_mid_commit() {
    fjall_crash_mid_batched("commit");
}

#[test]
fn fjall_crash_mid_delete() {
    fjall_crash_mid_batched("delete");
}
