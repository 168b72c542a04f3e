//! The store logic, written once over [`Kv`], so the disk and memory stores behave identically.
//!
//! Every change goes through one store-wide mutex (reference counts, counters and the in-memory
//! indexes are read-modify-write) and lands in the key-value store as one atomic batch. Reads of a
//! single record (`get_block`, `leaf`, ...) take no lock.
//!
//! In memory, besides the counters: every dataset record (small: flags, access time and the
//! manifest bytes), every tree record, and per staged write a bitset of the staged indices. Block
//! reference counts and leaf records stay in the key-value store.

use std::collections::{BTreeMap, HashMap, hash_map::Entry};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use cairn_core::{Cid, Codec, Dataset, Manifest, MerkleProof};

use crate::codec::{
    CHUNK_BITS, CidKey, FORMAT_VERSION, MAX_BLOCKS, RefVal, TreeVal, VERSION_KEY, bitmap_key,
    chunk_count, chunk_len, cid_from, dataset_value, full_bitmap, leaf_block_cid, leaf_key,
    leaf_value, parse_dataset_value, parse_staging_key, staging_key,
};
use crate::kv::{Batch, Kv, Table};
use crate::types::{
    BlockDeletion, DatasetFlags, DatasetRecord, DatasetState, LeafBlock, LeafRecord, Result, Space,
    StagingId, StoreError,
};

/// Staging records rolled back per batch at open.
const RECOVERY_BATCH: usize = 4096;

/// What the store keeps in memory about a manifest.
#[derive(Debug, Clone)]
struct DsEntry {
    manifest_cid: Cid,
    bytes: Bytes,
    tree: Cid,
    blocks_count: u64,
    flags: DatasetFlags,
    last_access: u64,
}

/// What the store keeps in memory about a tree.
#[derive(Debug, Clone, Copy)]
struct TreeEntry {
    blocks_count: u64,
    held: u64,
    /// Stored manifests naming this tree (derived at open, not stored).
    manifests: u64,
}

impl TreeEntry {
    fn complete(&self) -> bool {
        self.held == self.blocks_count
    }

    fn encode(&self) -> Vec<u8> {
        TreeVal {
            blocks_count: self.blocks_count,
            held: self.held,
        }
        .encode()
        .to_vec()
    }
}

/// A staged write in progress.
#[derive(Debug, Default)]
struct StagingEntry {
    /// Bit i set iff index i is staged.
    staged: Vec<u64>,
    count: u64,
    max_index: Option<u64>,
    /// A commit is under way (outside the lock); other calls on this staging fail.
    busy: bool,
}

impl StagingEntry {
    fn has(&self, i: u64) -> bool {
        self.staged
            .get((i / 64) as usize)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }

    fn set(&mut self, i: u64) {
        let word = (i / 64) as usize;
        if self.staged.len() <= word {
            self.staged.resize(word + 1, 0);
        }
        self.staged[word] |= 1 << (i % 64);
        self.count += 1;
        self.max_index = self.max_index.max(Some(i));
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of stored blocks and manifests.
    used: u64,
    /// Stored blocks and manifests.
    stored: u64,
    datasets: BTreeMap<CidKey, DsEntry>,
    trees: HashMap<Cid, TreeEntry>,
    stagings: HashMap<u64, StagingEntry>,
    next_staging: u64,
    /// Logical clock of accesses, for LRU eviction.
    clock: u64,
}

impl State {
    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn record(&self, e: &DsEntry) -> DatasetRecord {
        let complete = self.trees.get(&e.tree).is_some_and(TreeEntry::complete);
        DatasetRecord {
            manifest_cid: e.manifest_cid,
            manifest_bytes: e.bytes.clone(),
            tree_cid: e.tree,
            blocks_count: e.blocks_count,
            state: if complete {
                DatasetState::Complete
            } else {
                DatasetState::Partial
            },
            flags: e.flags,
        }
    }
}

/// Reference count changes being prepared for one batch.
#[derive(Debug, Default)]
struct RefPlan {
    deltas: HashMap<CidKey, (i64, Option<Bytes>)>,
}

impl RefPlan {
    /// One more reference to `cid`, whose bytes are `data` (stored if the block is new).
    fn add(&mut self, cid: &Cid, data: &Bytes) {
        if *cid == Cid::EMPTY_BLOCK {
            return;
        }
        let e = self.deltas.entry(cid.to_bytes()).or_insert((0, None));
        e.0 += 1;
        if e.1.is_none() {
            e.1 = Some(data.clone());
        }
    }

    /// One reference to `cid` fewer.
    fn release(&mut self, cid: &Cid) {
        if *cid == Cid::EMPTY_BLOCK {
            return;
        }
        self.deltas.entry(cid.to_bytes()).or_insert((0, None)).0 -= 1;
    }
}

#[derive(Debug)]
enum RefChange {
    Create(CidKey, Bytes, RefVal),
    Update(CidKey, RefVal),
    Delete(CidKey),
}

/// A [`RefPlan`] checked against the stored reference records.
#[derive(Debug, Default)]
struct Resolved {
    changes: Vec<RefChange>,
    add_bytes: u64,
    del_bytes: u64,
    add_blocks: u64,
    del_blocks: u64,
}

impl Resolved {
    fn emit(self, batch: &mut Batch) -> Counts {
        for c in self.changes {
            match c {
                RefChange::Create(k, data, r) => {
                    batch.put(Table::Blocks, k, data);
                    batch.put(Table::Refs, k, r.encode().to_vec());
                }
                RefChange::Update(k, r) => batch.put(Table::Refs, k, r.encode().to_vec()),
                RefChange::Delete(k) => {
                    batch.del(Table::Blocks, k);
                    batch.del(Table::Refs, k);
                }
            }
        }
        Counts {
            add_bytes: self.add_bytes,
            del_bytes: self.del_bytes,
            add_items: self.add_blocks,
            del_items: self.del_blocks,
        }
    }
}

/// Changes to the quota counters made by one batch.
#[derive(Debug, Default, Clone, Copy)]
struct Counts {
    add_bytes: u64,
    del_bytes: u64,
    add_items: u64,
    del_items: u64,
}

impl Counts {
    fn apply(self, st: &mut State) {
        st.used = (st.used + self.add_bytes).saturating_sub(self.del_bytes);
        st.stored = (st.stored + self.add_items).saturating_sub(self.del_items);
    }
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

/// Checks a block's CID against its bytes' shape (the hash itself was checked by the caller).
fn check_block(cid: &Cid, data: &Bytes) -> Result<()> {
    if cid.codec() != Codec::Block {
        return Err(invalid(format!("{cid} is not a block CID")));
    }
    if (*cid == Cid::EMPTY_BLOCK) != data.is_empty() {
        return Err(invalid(format!(
            "block {cid}: only the empty block CID may have empty bytes"
        )));
    }
    Ok(())
}

/// The store logic over a key-value backend.
pub(crate) struct Engine<K: Kv> {
    kv: K,
    quota: u64,
    state: Mutex<State>,
}

impl<K: Kv> std::fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kv", &self.kv)
            .field("quota", &self.quota)
            .finish_non_exhaustive()
    }
}

impl<K: Kv> Engine<K> {
    /// Opens the store over `kv`: checks the format version, rolls back every leftover staging
    /// record (a write interrupted by a crash) and loads the indexes and counters.
    pub(crate) fn open(kv: K, quota: u64) -> Result<Engine<K>> {
        check_version(&kv)?;
        let rolled_back = rollback_staging(&kv)?;
        let state = load_state(&kv)?;
        if rolled_back > 0 {
            kv.sync()?;
            tracing::info!(
                records = rolled_back,
                "rolled back interrupted staged writes"
            );
        }
        Ok(Engine {
            kv,
            quota,
            state: Mutex::new(state),
        })
    }

    /// The backend (for tests and tools).
    pub(crate) fn kv(&self) -> &K {
        &self.kv
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| StoreError::Backend("store lock poisoned by a panic".into()))
    }

    fn get_ref(&self, key: &CidKey) -> Result<Option<RefVal>> {
        self.kv
            .get(Table::Refs, key)?
            .map(|v| RefVal::decode(&v))
            .transpose()
    }

    /// Reads the current reference records of every block in `plan`.
    fn resolve(&self, plan: &RefPlan) -> Result<Resolved> {
        let mut r = Resolved::default();
        for (key, (delta, data)) in &plan.deltas {
            match self.get_ref(key)? {
                None => {
                    if *delta < 0 {
                        return Err(StoreError::Corrupt(
                            "releasing a block that has no reference record".into(),
                        ));
                    }
                    if *delta == 0 {
                        continue;
                    }
                    let data = data
                        .clone()
                        .ok_or_else(|| StoreError::Corrupt("new block without bytes".into()))?;
                    let len = data.len() as u64;
                    r.add_bytes += len;
                    r.add_blocks += 1;
                    let val = RefVal {
                        count: delta.unsigned_abs(),
                        len,
                        loose: false,
                    };
                    r.changes.push(RefChange::Create(*key, data, val));
                }
                Some(old) => {
                    if *delta == 0 {
                        continue;
                    }
                    let count = i128::from(old.count) + i128::from(*delta);
                    let count = u64::try_from(count).map_err(|_| {
                        StoreError::Corrupt("block reference count below zero".into())
                    })?;
                    if count == 0 && !old.loose {
                        r.del_bytes += old.len;
                        r.del_blocks += 1;
                        r.changes.push(RefChange::Delete(*key));
                    } else {
                        r.changes
                            .push(RefChange::Update(*key, RefVal { count, ..old }));
                    }
                }
            }
        }
        Ok(r)
    }

    /// Runs `build` until its write fits in the quota, evicting one cached dataset (least
    /// recently used first, never one of tree `exclude`) each time it does not. `build` returns
    /// its plan with the bytes the write adds and frees.
    fn with_room<T>(
        &self,
        st: &mut State,
        exclude: Option<&Cid>,
        mut build: impl FnMut(&State) -> Result<(T, u64, u64)>,
    ) -> Result<T> {
        loop {
            let (plan, add, del) = build(st)?;
            let needed = add.saturating_sub(del);
            if needed == 0 || st.used.saturating_add(needed) <= self.quota {
                return Ok(plan);
            }
            if !self.evict_one(st, exclude)? {
                return Err(StoreError::QuotaExceeded {
                    needed,
                    free: self.quota.saturating_sub(st.used),
                });
            }
        }
    }

    /// Evicts the least recently used cached dataset: complete, unpinned, not of `exclude`.
    fn evict_one(&self, st: &mut State, exclude: Option<&Cid>) -> Result<bool> {
        let victim = st
            .datasets
            .iter()
            .filter(|(_, e)| {
                !e.flags.pinned
                    && Some(&e.tree) != exclude
                    && st.trees.get(&e.tree).is_some_and(TreeEntry::complete)
            })
            .min_by_key(|(k, e)| (e.last_access, **k))
            .map(|(k, _)| *k);
        let Some(key) = victim else {
            return Ok(false);
        };
        tracing::debug!(manifest = ?st.datasets.get(&key).map(|e| e.manifest_cid), "evicting cached dataset");
        self.delete_locked(st, &key)
    }

    /// Deletes a manifest and, if it was the last of its tree, the tree.
    fn delete_locked(&self, st: &mut State, key: &CidKey) -> Result<bool> {
        let Some(ds) = st.datasets.get(key) else {
            return Ok(false);
        };
        let tree_cid = ds.tree;
        let mlen = ds.bytes.len() as u64;
        let tree = *st
            .trees
            .get(&tree_cid)
            .ok_or_else(|| StoreError::Corrupt("dataset without tree record".into()))?;
        let mut batch = Batch::default();
        batch.del(Table::Datasets, *key);
        let mut counts = Counts {
            del_bytes: mlen,
            del_items: 1,
            ..Counts::default()
        };
        let last = tree.manifests <= 1;
        if last {
            let tkey = tree_cid.to_bytes();
            let mut plan = RefPlan::default();
            let mut scan_err = None;
            self.kv.scan(Table::Leaves, &tkey, &mut |k, v| {
                match leaf_block_cid(v) {
                    Ok(cid) => plan.release(&cid),
                    Err(e) => scan_err = Some(e),
                }
                batch.del(Table::Leaves, k.to_vec());
                Ok(())
            })?;
            if let Some(e) = scan_err {
                return Err(e);
            }
            if !tree.complete() {
                for c in 0..chunk_count(tree.blocks_count) {
                    batch.del(Table::Bitmaps, bitmap_key(&tkey, c));
                }
            }
            batch.del(Table::Trees, tkey);
            let c = self.resolve(&plan)?.emit(&mut batch);
            counts.del_bytes += c.del_bytes;
            counts.del_items += c.del_items;
        }
        self.kv.write(batch)?;
        st.datasets.remove(key);
        if last {
            st.trees.remove(&tree_cid);
        } else if let Some(t) = st.trees.get_mut(&tree_cid) {
            t.manifests -= 1;
        }
        counts.apply(st);
        Ok(true)
    }

    /// Reads the bitmap chunks holding `indices` (missing chunks are all clear).
    fn load_chunks(
        &self,
        tkey: &CidKey,
        blocks_count: u64,
        indices: impl Iterator<Item = u64>,
    ) -> Result<BTreeMap<u64, Vec<u8>>> {
        let mut chunks = BTreeMap::new();
        for i in indices {
            let c = i / CHUNK_BITS;
            if let std::collections::btree_map::Entry::Vacant(v) = chunks.entry(c) {
                let len = chunk_len(blocks_count, c);
                let bytes = match self.kv.get(Table::Bitmaps, &bitmap_key(tkey, c))? {
                    Some(b) if b.len() == len => b.to_vec(),
                    Some(_) => return Err(StoreError::Corrupt("bitmap chunk length".into())),
                    None => vec![0u8; len],
                };
                v.insert(bytes);
            }
        }
        Ok(chunks)
    }

    /// Writes a dataset record.
    fn put_dataset(&self, batch: &mut Batch, e: &DsEntry) {
        batch.put(
            Table::Datasets,
            e.manifest_cid.to_bytes(),
            dataset_value(e.flags, e.last_access, &e.bytes),
        );
    }

    // --- the BlockStore operations ----------------------------------------------------------

    pub(crate) fn has_block(&self, cid: &Cid) -> Result<bool> {
        if *cid == Cid::EMPTY_BLOCK {
            return Ok(true);
        }
        if cid.codec() == Codec::Manifest {
            return Ok(self.lock()?.datasets.contains_key(&cid.to_bytes()));
        }
        Ok(self.kv.get(Table::Refs, &cid.to_bytes())?.is_some())
    }

    pub(crate) fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>> {
        if *cid == Cid::EMPTY_BLOCK {
            return Ok(Some(Bytes::new()));
        }
        if cid.codec() == Codec::Manifest {
            let st = self.lock()?;
            return Ok(st.datasets.get(&cid.to_bytes()).map(|e| e.bytes.clone()));
        }
        self.kv.get(Table::Blocks, &cid.to_bytes())
    }

    pub(crate) fn put_block(&self, cid: &Cid, data: Bytes) -> Result<()> {
        check_block(cid, &data)?;
        if *cid == Cid::EMPTY_BLOCK {
            return Ok(());
        }
        self.kv.throttle()?;
        let key = cid.to_bytes();
        let mut st = self.lock()?;
        let old = self.with_room(&mut st, None, |_| {
            let old = self.get_ref(&key)?;
            let add = if old.is_none() { data.len() as u64 } else { 0 };
            Ok((old, add, 0))
        })?;
        let mut batch = Batch::default();
        match old {
            Some(r) if r.loose => return Ok(()),
            Some(r) => {
                let r = RefVal { loose: true, ..r };
                batch.put(Table::Refs, key, r.encode().to_vec());
                self.kv.write(batch)?;
            }
            None => {
                let r = RefVal {
                    count: 0,
                    len: data.len() as u64,
                    loose: true,
                };
                batch.put(Table::Blocks, key, data);
                batch.put(Table::Refs, key, r.encode().to_vec());
                self.kv.write(batch)?;
                st.used += r.len;
                st.stored += 1;
            }
        }
        Ok(())
    }

    pub(crate) fn delete_block(&self, cid: &Cid) -> Result<BlockDeletion> {
        if *cid == Cid::EMPTY_BLOCK {
            return Ok(BlockDeletion::NotFound);
        }
        let key = cid.to_bytes();
        let mut st = self.lock()?;
        if cid.codec() == Codec::Manifest {
            return Ok(if st.datasets.contains_key(&key) {
                BlockDeletion::Referenced
            } else {
                BlockDeletion::NotFound
            });
        }
        match self.get_ref(&key)? {
            None => Ok(BlockDeletion::NotFound),
            Some(r) if r.count > 0 => Ok(BlockDeletion::Referenced),
            Some(r) => {
                let mut batch = Batch::default();
                batch.del(Table::Blocks, key);
                batch.del(Table::Refs, key);
                self.kv.write(batch)?;
                Counts {
                    del_bytes: r.len,
                    del_items: 1,
                    ..Counts::default()
                }
                .apply(&mut st);
                Ok(BlockDeletion::Deleted)
            }
        }
    }

    pub(crate) fn begin_staging(&self) -> Result<StagingId> {
        let mut st = self.lock()?;
        st.next_staging += 1;
        let id = st.next_staging;
        st.stagings.insert(id, StagingEntry::default());
        Ok(StagingId(id))
    }

    pub(crate) fn put_staged_blocks(
        &self,
        staging: StagingId,
        blocks: &[(u64, Cid, Bytes)],
    ) -> Result<()> {
        for (index, cid, data) in blocks {
            check_block(cid, data)?;
            if *index >= MAX_BLOCKS {
                return Err(invalid(format!("block index {index} is out of range")));
            }
        }
        self.kv.throttle()?;
        let mut st = self.lock()?;
        let entry = st
            .stagings
            .get(&staging.0)
            .ok_or(StoreError::UnknownStaging(staging.0))?;
        if entry.busy {
            return Err(invalid(format!("staging {} is being committed", staging.0)));
        }
        // The new (index, position) pairs; indices staged before must name the same block.
        let mut seen: HashMap<u64, &Cid> = HashMap::new();
        let mut fresh = Vec::with_capacity(blocks.len());
        for (pos, (index, cid, _)) in blocks.iter().enumerate() {
            let prev = match seen.get(index) {
                Some(prev) => Some(**prev),
                None if entry.has(*index) => {
                    let v = self
                        .kv
                        .get(Table::Staging, &staging_key(staging.0, *index))?
                        .ok_or_else(|| StoreError::Corrupt("staged index without record".into()))?;
                    Some(cid_from(&v, "staging record")?)
                }
                None => None,
            };
            match prev {
                Some(prev) if prev == *cid => {}
                Some(_) => {
                    return Err(invalid(format!(
                        "index {index} of staging {} already holds another block",
                        staging.0
                    )));
                }
                None => {
                    seen.insert(*index, cid);
                    fresh.push(pos);
                }
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        let resolved = self.with_room(&mut st, None, |_| {
            let mut plan = RefPlan::default();
            for &pos in &fresh {
                let (_, cid, data) = &blocks[pos];
                plan.add(cid, data);
            }
            let r = self.resolve(&plan)?;
            let (add, del) = (r.add_bytes, r.del_bytes);
            Ok((r, add, del))
        })?;
        let mut batch = Batch::default();
        let counts = resolved.emit(&mut batch);
        for &pos in &fresh {
            let (index, cid, _) = &blocks[pos];
            batch.put(
                Table::Staging,
                staging_key(staging.0, *index),
                cid.to_bytes().to_vec(),
            );
        }
        self.kv.write(batch)?;
        counts.apply(&mut st);
        let entry = st
            .stagings
            .get_mut(&staging.0)
            .ok_or(StoreError::UnknownStaging(staging.0))?;
        for &pos in &fresh {
            entry.set(blocks[pos].0);
        }
        Ok(())
    }

    pub(crate) fn commit_staging(
        &self,
        staging: StagingId,
        dataset: &Dataset,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord> {
        let n = dataset.tree.leaf_count();
        let tree_cid = dataset.manifest.tree_cid;
        if Cid::new(Codec::Root, dataset.tree.root()) != tree_cid {
            return Err(invalid("the manifest's tree CID is not the tree's root"));
        }
        if dataset.manifest.blocks_count() != n {
            return Err(invalid(format!(
                "the manifest counts {} blocks, the tree {n}",
                dataset.manifest.blocks_count()
            )));
        }
        if n > MAX_BLOCKS {
            return Err(invalid("dataset has too many blocks"));
        }
        if Manifest::cid_of(&dataset.manifest_bytes) != dataset.manifest_cid {
            return Err(invalid("manifest CID does not match the manifest bytes"));
        }
        {
            let mut st = self.lock()?;
            let e = st
                .stagings
                .get_mut(&staging.0)
                .ok_or(StoreError::UnknownStaging(staging.0))?;
            if e.busy {
                return Err(invalid(format!("staging {} is being committed", staging.0)));
            }
            if e.count != n || e.max_index.is_some_and(|m| m >= n) {
                return Err(invalid(format!(
                    "staging {} holds {} blocks, the dataset has {n}",
                    staging.0, e.count
                )));
            }
            e.busy = true;
        }
        let result = self.commit_busy(staging.0, dataset, flags);
        if result.is_err()
            && let Ok(mut st) = self.lock()
            && let Some(e) = st.stagings.get_mut(&staging.0)
        {
            e.busy = false;
        }
        result
    }

    fn commit_busy(
        &self,
        sid: u64,
        dataset: &Dataset,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord> {
        let n = dataset.tree.leaf_count();
        let leaves = dataset.tree.leaves();
        let tree_cid = dataset.manifest.tree_cid;
        let tkey = tree_cid.to_bytes();
        let block_cid = |i: u64| Cid::new(Codec::Block, leaves[i as usize]);

        // Outside the lock: every staged block must be the tree's leaf at its index, and the
        // leaf records are prepared.
        let mut bad = None;
        self.kv
            .scan(Table::Staging, &sid.to_be_bytes(), &mut |k, v| {
                let (_, index) = parse_staging_key(k)?;
                let cid = cid_from(v, "staging record")?;
                if index >= n || cid != block_cid(index) {
                    bad.get_or_insert(index);
                }
                Ok(())
            })?;
        if let Some(index) = bad {
            return Err(invalid(format!(
                "staged block {index} is not the tree's leaf {index}"
            )));
        }
        let mut leaf_values = Vec::with_capacity(n as usize);
        for i in 0..n {
            let proof = dataset
                .tree
                .proof(i)
                .map_err(|e| invalid(format!("proof of leaf {i}: {e}")))?;
            leaf_values.push(leaf_value(&block_cid(i), &proof));
        }

        let mkey = dataset.manifest_cid.to_bytes();
        let mut st = self.lock()?;
        let manifest_new = !st.datasets.contains_key(&mkey);
        let mlen = if manifest_new {
            dataset.manifest_bytes.len() as u64
        } else {
            0
        };
        // Room for the manifest; the tree being committed is not evicted meanwhile.
        self.with_room(&mut st, Some(&tree_cid), |_| Ok(((), mlen, 0)))?;

        let mut batch = Batch::default();
        let mut plan = RefPlan::default();
        let tree = st.trees.get(&tree_cid).copied();
        match tree {
            // Already complete: the staged blocks are duplicates.
            Some(t) if t.complete() => {
                for i in 0..n {
                    plan.release(&block_cid(i));
                }
            }
            // Partially downloaded: keep what is held, fill in the rest.
            Some(t) => {
                if t.blocks_count != n {
                    return Err(StoreError::Corrupt(format!(
                        "tree {tree_cid} is recorded with {} blocks, not {n}",
                        t.blocks_count
                    )));
                }
                let chunks = self.load_chunks(&tkey, n, (0..n).step_by(CHUNK_BITS as usize))?;
                for (i, value) in leaf_values.into_iter().enumerate() {
                    let i = i as u64;
                    let chunk = &chunks[&(i / CHUNK_BITS)];
                    let bit = i % CHUNK_BITS;
                    if chunk[(bit / 8) as usize] & (1 << (bit % 8)) != 0 {
                        plan.release(&block_cid(i));
                    } else {
                        batch.put(Table::Leaves, leaf_key(&tkey, i), value);
                    }
                }
                for c in 0..chunk_count(n) {
                    batch.del(Table::Bitmaps, bitmap_key(&tkey, c));
                }
            }
            None => {
                for (i, value) in leaf_values.into_iter().enumerate() {
                    batch.put(Table::Leaves, leaf_key(&tkey, i as u64), value);
                }
            }
        }
        let new_tree = TreeEntry {
            blocks_count: n,
            held: n,
            manifests: tree.map_or(0, |t| t.manifests) + u64::from(manifest_new),
        };
        batch.put(Table::Trees, tkey, new_tree.encode());
        for i in 0..n {
            batch.del(Table::Staging, staging_key(sid, i));
        }
        let mut counts = self.resolve(&plan)?.emit(&mut batch);
        let entry = match st.datasets.get(&mkey) {
            Some(old) => DsEntry {
                flags: DatasetFlags {
                    pinned: old.flags.pinned || flags.pinned,
                    advertise: old.flags.advertise || flags.advertise,
                },
                ..old.clone()
            },
            None => {
                counts.add_bytes += mlen;
                counts.add_items += 1;
                DsEntry {
                    manifest_cid: dataset.manifest_cid,
                    bytes: Bytes::copy_from_slice(&dataset.manifest_bytes),
                    tree: tree_cid,
                    blocks_count: n,
                    flags,
                    last_access: st.tick(),
                }
            }
        };
        self.put_dataset(&mut batch, &entry);
        self.kv.write(batch)?;

        counts.apply(&mut st);
        st.trees.insert(tree_cid, new_tree);
        st.datasets.insert(mkey, entry.clone());
        st.stagings.remove(&sid);
        let record = st.record(&entry);
        drop(st);
        self.kv.sync()?;
        Ok(record)
    }

    pub(crate) fn abort_staging(&self, staging: StagingId) -> Result<()> {
        let mut st = self.lock()?;
        match st.stagings.get(&staging.0) {
            None => return Err(StoreError::UnknownStaging(staging.0)),
            Some(e) if e.busy => {
                return Err(invalid(format!("staging {} is being committed", staging.0)));
            }
            Some(_) => {}
        }
        let mut batch = Batch::default();
        let mut plan = RefPlan::default();
        self.kv
            .scan(Table::Staging, &staging.0.to_be_bytes(), &mut |k, v| {
                plan.release(&cid_from(v, "staging record")?);
                batch.del(Table::Staging, k.to_vec());
                Ok(())
            })?;
        let counts = self.resolve(&plan)?.emit(&mut batch);
        self.kv.write(batch)?;
        counts.apply(&mut st);
        st.stagings.remove(&staging.0);
        Ok(())
    }

    pub(crate) fn put_manifest(
        &self,
        manifest_cid: &Cid,
        manifest_bytes: Bytes,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord> {
        if Manifest::cid_of(&manifest_bytes) != *manifest_cid {
            return Err(invalid("manifest CID does not match the manifest bytes"));
        }
        let manifest = Manifest::decode(&manifest_bytes)
            .map_err(|e| invalid(format!("manifest does not decode: {e}")))?;
        let blocks_count = manifest.blocks_count();
        if blocks_count > MAX_BLOCKS {
            return Err(invalid("dataset has too many blocks"));
        }
        let tree_cid = manifest.tree_cid;
        let mkey = manifest_cid.to_bytes();
        let mut st = self.lock()?;
        if let Some(old) = st.datasets.get(&mkey) {
            let raised = DatasetFlags {
                pinned: old.flags.pinned || flags.pinned,
                advertise: old.flags.advertise || flags.advertise,
            };
            let entry = DsEntry {
                flags: raised,
                ..old.clone()
            };
            if raised != old.flags {
                let mut batch = Batch::default();
                self.put_dataset(&mut batch, &entry);
                self.kv.write(batch)?;
                st.datasets.insert(mkey, entry.clone());
            }
            return Ok(st.record(&entry));
        }
        if let Some(t) = st.trees.get(&tree_cid)
            && t.blocks_count != blocks_count
        {
            return Err(invalid(format!(
                "tree {tree_cid} is stored with {} blocks, the manifest says {blocks_count}",
                t.blocks_count
            )));
        }
        let mlen = manifest_bytes.len() as u64;
        self.with_room(&mut st, None, |_| Ok(((), mlen, 0)))?;
        let tree = st.trees.get(&tree_cid).copied().unwrap_or(TreeEntry {
            blocks_count,
            held: 0,
            manifests: 0,
        });
        let entry = DsEntry {
            manifest_cid: *manifest_cid,
            bytes: manifest_bytes,
            tree: tree_cid,
            blocks_count,
            flags,
            last_access: st.tick(),
        };
        let mut batch = Batch::default();
        self.put_dataset(&mut batch, &entry);
        if tree.manifests == 0 {
            batch.put(Table::Trees, tree_cid.to_bytes(), tree.encode());
        }
        self.kv.write(batch)?;
        st.trees.insert(
            tree_cid,
            TreeEntry {
                manifests: tree.manifests + 1,
                ..tree
            },
        );
        st.datasets.insert(mkey, entry.clone());
        Counts {
            add_bytes: mlen,
            add_items: 1,
            ..Counts::default()
        }
        .apply(&mut st);
        Ok(st.record(&entry))
    }

    pub(crate) fn put_leaf_blocks(&self, tree_cid: &Cid, blocks: &[LeafBlock]) -> Result<()> {
        for b in blocks {
            check_block(&b.cid, &b.data)?;
        }
        self.kv.throttle()?;
        let tkey = tree_cid.to_bytes();
        let mut st = self.lock()?;
        let tree = *st
            .trees
            .get(tree_cid)
            .ok_or_else(|| invalid(format!("tree {tree_cid} has no stored manifest")))?;
        if let Some(b) = blocks.iter().find(|b| b.index >= tree.blocks_count) {
            return Err(invalid(format!(
                "index {} out of range for a tree of {} blocks",
                b.index, tree.blocks_count
            )));
        }
        if tree.complete() || blocks.is_empty() {
            return Ok(());
        }
        let mut chunks =
            self.load_chunks(&tkey, tree.blocks_count, blocks.iter().map(|b| b.index))?;
        let mut fresh = Vec::with_capacity(blocks.len());
        for b in blocks {
            let chunk = chunks
                .get_mut(&(b.index / CHUNK_BITS))
                .ok_or_else(|| StoreError::Corrupt("bitmap chunk not loaded".into()))?;
            let bit = b.index % CHUNK_BITS;
            let byte = &mut chunk[(bit / 8) as usize];
            let mask = 1u8 << (bit % 8);
            if *byte & mask == 0 {
                *byte |= mask;
                fresh.push(b);
            }
        }
        if fresh.is_empty() {
            return Ok(());
        }
        // A partial tree is never evicted, so the chunks read above stay valid.
        let resolved = self.with_room(&mut st, None, |_| {
            let mut plan = RefPlan::default();
            for b in &fresh {
                plan.add(&b.cid, &b.data);
            }
            let r = self.resolve(&plan)?;
            let (add, del) = (r.add_bytes, r.del_bytes);
            Ok((r, add, del))
        })?;
        let mut batch = Batch::default();
        let counts = resolved.emit(&mut batch);
        for b in &fresh {
            batch.put(
                Table::Leaves,
                leaf_key(&tkey, b.index),
                leaf_value(&b.cid, &b.proof),
            );
        }
        let tree = TreeEntry {
            held: tree.held + fresh.len() as u64,
            ..tree
        };
        if tree.complete() {
            for c in 0..chunk_count(tree.blocks_count) {
                batch.del(Table::Bitmaps, bitmap_key(&tkey, c));
            }
        } else {
            for (c, bytes) in chunks {
                batch.put(Table::Bitmaps, bitmap_key(&tkey, c), bytes);
            }
        }
        batch.put(Table::Trees, tkey, tree.encode());
        self.kv.write(batch)?;
        counts.apply(&mut st);
        st.trees.insert(*tree_cid, tree);
        Ok(())
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.kv.sync()
    }

    pub(crate) fn dataset(&self, manifest_cid: &Cid) -> Result<Option<DatasetRecord>> {
        let st = self.lock()?;
        Ok(st
            .datasets
            .get(&manifest_cid.to_bytes())
            .map(|e| st.record(e)))
    }

    pub(crate) fn list_datasets(&self, include_partial: bool) -> Result<Vec<DatasetRecord>> {
        let st = self.lock()?;
        Ok(st
            .datasets
            .values()
            .map(|e| st.record(e))
            .filter(|r| include_partial || r.state == DatasetState::Complete)
            .collect())
    }

    pub(crate) fn leaf(&self, tree_cid: &Cid, index: u64) -> Result<Option<LeafRecord>> {
        let Some(v) = self
            .kv
            .get(Table::Leaves, &leaf_key(&tree_cid.to_bytes(), index))?
        else {
            return Ok(None);
        };
        let block_cid = leaf_block_cid(&v)?;
        let proof = MerkleProof::decode(&v[cairn_core::cid::CID_LEN..])
            .map_err(|e| StoreError::Corrupt(format!("leaf record proof: {e}")))?;
        Ok(Some(LeafRecord { block_cid, proof }))
    }

    pub(crate) fn leaf_block(&self, tree_cid: &Cid, index: u64) -> Result<Option<Bytes>> {
        let Some(v) = self
            .kv
            .get(Table::Leaves, &leaf_key(&tree_cid.to_bytes(), index))?
        else {
            return Ok(None);
        };
        let cid = leaf_block_cid(&v)?;
        if cid == Cid::EMPTY_BLOCK {
            return Ok(Some(Bytes::new()));
        }
        self.kv.get(Table::Blocks, &cid.to_bytes())
    }

    pub(crate) fn bitmap(&self, tree_cid: &Cid) -> Result<Option<Vec<u8>>> {
        let st = self.lock()?;
        let Some(tree) = st.trees.get(tree_cid).copied() else {
            return Ok(None);
        };
        if tree.complete() {
            return Ok(Some(full_bitmap(tree.blocks_count)));
        }
        let tkey = tree_cid.to_bytes();
        let mut out = Vec::with_capacity(tree.blocks_count.div_ceil(8) as usize);
        for c in 0..chunk_count(tree.blocks_count) {
            let len = chunk_len(tree.blocks_count, c);
            match self.kv.get(Table::Bitmaps, &bitmap_key(&tkey, c))? {
                Some(b) if b.len() == len => out.extend_from_slice(&b),
                Some(_) => return Err(StoreError::Corrupt("bitmap chunk length".into())),
                None => out.resize(out.len() + len, 0),
            }
        }
        Ok(Some(out))
    }

    pub(crate) fn touch(&self, manifest_cid: &Cid) -> Result<()> {
        let mut st = self.lock()?;
        let key = manifest_cid.to_bytes();
        if !st.datasets.contains_key(&key) {
            return Ok(());
        }
        let now = st.tick();
        let Some(e) = st.datasets.get_mut(&key) else {
            return Ok(());
        };
        e.last_access = now;
        let e = e.clone();
        let mut batch = Batch::default();
        self.put_dataset(&mut batch, &e);
        self.kv.write(batch)
    }

    pub(crate) fn set_flags(&self, manifest_cid: &Cid, flags: DatasetFlags) -> Result<bool> {
        let mut st = self.lock()?;
        let key = manifest_cid.to_bytes();
        let Some(e) = st.datasets.get_mut(&key) else {
            return Ok(false);
        };
        if e.flags != flags {
            let mut updated = e.clone();
            updated.flags = flags;
            let mut batch = Batch::default();
            self.put_dataset(&mut batch, &updated);
            self.kv.write(batch)?;
            e.flags = flags;
        }
        Ok(true)
    }

    pub(crate) fn delete_dataset(&self, manifest_cid: &Cid) -> Result<bool> {
        let mut st = self.lock()?;
        self.delete_locked(&mut st, &manifest_cid.to_bytes())
    }

    pub(crate) fn space(&self) -> Result<Space> {
        let st = self.lock()?;
        Ok(Space {
            total_blocks: st.stored,
            quota_max_bytes: self.quota,
            quota_used_bytes: st.used,
            quota_reserved_bytes: 0,
        })
    }
}

/// Checks the format version, writing it into a new store.
fn check_version(kv: &impl Kv) -> Result<()> {
    match kv.get(Table::Meta, VERSION_KEY)? {
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt("format version record".into()))?;
            if found != FORMAT_VERSION {
                return Err(StoreError::UnsupportedFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            Ok(())
        }
        None => {
            // Blocks are covered by their reference records; probing them would read a value.
            for t in Table::ALL {
                if t != Table::Meta && t != Table::Blocks && !table_is_empty(kv, t)? {
                    return Err(StoreError::Corrupt(format!(
                        "table {} holds data but the store has no format version",
                        t.name()
                    )));
                }
            }
            let mut batch = Batch::default();
            batch.put(
                Table::Meta,
                VERSION_KEY,
                FORMAT_VERSION.to_be_bytes().to_vec(),
            );
            kv.write(batch)?;
            kv.sync()
        }
    }
}

/// True iff `table` holds nothing.
fn table_is_empty(kv: &impl Kv, table: Table) -> Result<bool> {
    let mut empty = true;
    // The scan stops at the first pair: the callback's error is the way to stop it early.
    let r = kv.scan(table, &[], &mut |_, _| {
        empty = false;
        Err(StoreError::Invalid("stop".into()))
    });
    match r {
        Err(e) if empty => Err(e),
        _ => Ok(empty),
    }
}

/// Rolls back every staging record: releases its block and deletes it. Returns how many.
fn rollback_staging(kv: &impl Kv) -> Result<usize> {
    let mut records = Vec::new();
    kv.scan(Table::Staging, &[], &mut |k, v| {
        parse_staging_key(k)?;
        records.push((k.to_vec(), cid_from(v, "staging record")?));
        Ok(())
    })?;
    for part in records.chunks(RECOVERY_BATCH) {
        let mut deltas: HashMap<CidKey, u64> = HashMap::new();
        let mut batch = Batch::default();
        for (k, cid) in part {
            batch.del(Table::Staging, k.clone());
            if *cid != Cid::EMPTY_BLOCK {
                *deltas.entry(cid.to_bytes()).or_default() += 1;
            }
        }
        for (key, n) in deltas {
            let Some(v) = kv.get(Table::Refs, &key)? else {
                tracing::warn!("staging record names a block without reference record");
                continue;
            };
            let r = RefVal::decode(&v)?;
            let count = r.count.saturating_sub(n);
            if count == 0 && !r.loose {
                batch.del(Table::Blocks, key);
                batch.del(Table::Refs, key);
            } else {
                batch.put(Table::Refs, key, RefVal { count, ..r }.encode().to_vec());
            }
        }
        kv.write(batch)?;
    }
    Ok(records.len())
}

/// Loads dataset and tree records and recomputes the counters.
fn load_state(kv: &impl Kv) -> Result<State> {
    let mut st = State::default();
    kv.scan(Table::Refs, &[], &mut |_, v| {
        let r = RefVal::decode(v)?;
        st.used += r.len;
        st.stored += 1;
        Ok(())
    })?;
    kv.scan(Table::Trees, &[], &mut |k, v| {
        let tree = cid_from(k, "tree key")?;
        let t = TreeVal::decode(v)?;
        st.trees.insert(
            tree,
            TreeEntry {
                blocks_count: t.blocks_count,
                held: t.held,
                manifests: 0,
            },
        );
        Ok(())
    })?;
    kv.scan(Table::Datasets, &[], &mut |k, v| {
        let manifest_cid = cid_from(k, "dataset key")?;
        let (flags, last_access, bytes) = parse_dataset_value(v)?;
        let manifest = Manifest::decode(&bytes)
            .map_err(|e| StoreError::Corrupt(format!("stored manifest {manifest_cid}: {e}")))?;
        let tree = manifest.tree_cid;
        match st.trees.entry(tree) {
            Entry::Occupied(mut t) => t.get_mut().manifests += 1,
            Entry::Vacant(_) => {
                return Err(StoreError::Corrupt(format!(
                    "manifest {manifest_cid} has no tree record"
                )));
            }
        }
        st.used += bytes.len() as u64;
        st.stored += 1;
        st.clock = st.clock.max(last_access);
        st.datasets.insert(
            manifest_cid.to_bytes(),
            DsEntry {
                manifest_cid,
                bytes,
                tree,
                blocks_count: manifest.blocks_count(),
                flags,
                last_access,
            },
        );
        Ok(())
    })?;
    let orphans = st.trees.values().filter(|t| t.manifests == 0).count();
    if orphans > 0 {
        tracing::warn!(orphans, "tree records without a manifest");
    }
    Ok(st)
}
