//! The store logic, written once over [`Kv`], so the disk and memory stores behave identically.
//!
//! Every change goes through one store-wide mutex (reference counts, counters and the in-memory
//! indexes are read-modify-write) and lands in the key-value store in atomic batches. Reads of a
//! single record (`get_block`, `leaf`, ...) take no lock.
//!
//! Operations over a whole dataset (commit, abort, delete, recovery at open) write batches of at
//! most `batch_records` records, each leaving the store consistent, so their memory does not
//! grow with the dataset (`docs/on-disk-format.md` §3 gives the rules). A commit writes its leaf
//! records without holding the lock between batches; the tree it writes is *busy* meanwhile and
//! other changes to that tree's manifests wait for it (`wait_idle`).
//!
//! In memory, besides the counters: every dataset record (small: flags, access time and the
//! manifest bytes), every tree record, and per staged write a bitset of the staged indices. Block
//! reference counts and leaf records stay in the key-value store.

use std::collections::{BTreeMap, HashMap, HashSet, hash_map::Entry};
use std::ops::ControlFlow;
use std::sync::{Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use cairn_core::{Cid, Codec, Dataset, Manifest, MerkleProof};

use crate::codec::{
    CHUNK_BITS, CidKey, DETACHED_COMMIT, DETACHED_DELETE, FORMAT_VERSION, MAX_BLOCKS, RefVal,
    TreeVal, VERSION_KEY, bitmap_key, chunk_count, chunk_len, cid_from, dataset_value, full_bitmap,
    leaf_block_cid, leaf_key, leaf_value, parse_dataset_value, parse_staging_key, staging_key,
};
use crate::kv::{Batch, Kv, Table};
use crate::types::{
    BatchedOp, BlockDeletion, DatasetFlags, DatasetRecord, DatasetState, LeafBlock, LeafRecord,
    Result, Space, StagingId, StoreError, StoreOptions,
};

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

/// Where a staged write is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Taking blocks.
    #[default]
    Open,
    /// A commit is under way (partly outside the lock); other calls on this staging fail.
    Committing,
    /// A commit failed after it had moved some staging records: only an abort is accepted.
    Failed,
}

/// A staged write in progress.
#[derive(Debug, Default)]
struct StagingEntry {
    /// Bit i set iff index i is staged.
    staged: Vec<u64>,
    count: u64,
    max_index: Option<u64>,
    phase: Phase,
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

    /// Fails unless the staging takes calls other than an abort.
    fn check_open(&self, id: u64) -> Result<()> {
        match self.phase {
            Phase::Open => Ok(()),
            Phase::Committing => Err(invalid(format!("staging {id} is being committed"))),
            Phase::Failed => Err(invalid(format!(
                "staging {id} failed during its commit; abort it"
            ))),
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of stored blocks and manifests.
    used: u64,
    /// Stored blocks and manifests.
    stored: u64,
    /// Bytes set aside for the manifests of commits in progress (count against the quota).
    reserved: u64,
    datasets: BTreeMap<CidKey, DsEntry>,
    trees: HashMap<Cid, TreeEntry>,
    stagings: HashMap<u64, StagingEntry>,
    next_staging: u64,
    /// Logical clock of accesses, for LRU eviction.
    clock: u64,
    /// Trees a commit is writing. Their manifests are neither added, deleted nor evicted until
    /// it ends (callers wait on `Engine::idle`).
    busy: HashSet<Cid>,
    /// Trees with a `detached` record whose cleanup failed in this process: cleaned up before
    /// the tree is stored again (and at the next open in any case).
    detached: HashSet<Cid>,
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

/// How a commit finds its tree when it starts. Changes to the tree's manifests wait for the
/// commit, so a `New` tree stays unrecorded and a `Complete` one complete until the commit ends;
/// a `Partial` one may be completed meanwhile by downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No tree record: the leaf records are written under a `detached` record.
    New,
    /// Partially downloaded: missing indices get leaf records, held ones are released.
    Partial,
    /// Already complete: the staged blocks are duplicates and are released.
    Complete,
}

fn invalid(msg: impl Into<String>) -> StoreError {
    StoreError::Invalid(msg.into())
}

fn poisoned() -> StoreError {
    StoreError::Backend("store lock poisoned by a panic".into())
}

/// The smallest key above `key` (to resume a scan after it).
fn successor(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.extend_from_slice(key);
    k.push(0);
    k
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
    /// Most records per batch of a [`BatchedOp`].
    batch: usize,
    state: Mutex<State>,
    /// Signalled when a tree stops being busy.
    idle: Condvar,
    #[cfg(feature = "fault-injection")]
    fault_hook: Option<crate::types::FaultHook>,
    /// Set when the fault hook simulated a crash: the store then refuses every locked call.
    #[cfg(feature = "fault-injection")]
    crashed: std::sync::atomic::AtomicBool,
}

impl<K: Kv> std::fmt::Debug for Engine<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("kv", &self.kv)
            .field("quota", &self.quota)
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl<K: Kv> Engine<K> {
    /// Opens the store over `kv`: checks the format version, finishes or rolls back what a
    /// crash interrupted (detached trees, staging records) and loads the indexes and counters.
    pub(crate) fn open(kv: K, quota: u64, options: &StoreOptions) -> Result<Engine<K>> {
        check_version(&kv)?;
        let engine = Engine {
            kv,
            quota,
            batch: options.batch_records.max(1),
            state: Mutex::new(State::default()),
            idle: Condvar::new(),
            #[cfg(feature = "fault-injection")]
            fault_hook: options.fault_hook.clone(),
            #[cfg(feature = "fault-injection")]
            crashed: std::sync::atomic::AtomicBool::new(false),
        };
        engine.recover()?;
        let state = load_state(&engine.kv)?;
        *engine.lock()? = state;
        Ok(engine)
    }

    /// The value under `key` in application metadata table `table`.
    pub(crate) fn get_meta(&self, table: &str, key: &[u8]) -> Result<Option<Bytes>> {
        self.kv.get(Table::App, &app_key(table, key)?)
    }

    /// Every pair of metadata table `table` whose key starts with `prefix`.
    pub(crate) fn scan_meta(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>> {
        let full = app_key(table, prefix)?;
        let skip = full.len() - prefix.len();
        let mut out = Vec::new();
        self.kv.scan(Table::App, &full, &mut |k, v| {
            out.push((k[skip..].to_vec(), Bytes::copy_from_slice(v)));
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(out)
    }

    /// Applies metadata changes atomically, then syncs.
    pub(crate) fn write_meta(&self, ops: &[crate::types::MetaOp]) -> Result<()> {
        use crate::types::MetaOp;
        let mut batch = Batch::default();
        for op in ops {
            match op {
                MetaOp::Put { table, key, value } => {
                    batch.put(Table::App, app_key(table, key)?, value.clone())
                }
                MetaOp::Delete { table, key } => batch.del(Table::App, app_key(table, key)?),
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        self.kv.throttle()?;
        self.kv.write(batch)?;
        self.kv.sync()
    }

    /// The backend (for tests and tools).
    pub(crate) fn kv(&self) -> &K {
        &self.kv
    }

    /// The quota.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn quota(&self) -> u64 {
        self.quota
    }

    /// The in-memory state [`Engine::check_integrity`] compares the tables with.
    #[cfg(feature = "fault-injection")]
    pub(crate) fn snapshot(&self) -> Result<crate::check::Snapshot> {
        let st = self.lock()?;
        Ok(crate::check::Snapshot {
            used: st.used,
            stored: st.stored,
            trees: st
                .trees
                .iter()
                .map(|(k, t)| (*k, (t.blocks_count, t.held, t.manifests)))
                .collect(),
            datasets: st.datasets.iter().map(|(k, e)| (*k, e.tree)).collect(),
            stagings: st.stagings.keys().copied().collect(),
            detached: st.detached.iter().copied().collect(),
            busy: st.busy.len(),
        })
    }

    /// True once the fault hook simulated a crash.
    fn crashed(&self) -> bool {
        #[cfg(feature = "fault-injection")]
        {
            self.crashed.load(std::sync::atomic::Ordering::SeqCst)
        }
        #[cfg(not(feature = "fault-injection"))]
        {
            false
        }
    }

    /// Called after each batch of a [`BatchedOp`]: the fault hook's chance to stop it.
    fn after_batch(&self, op: BatchedOp, batches: u64) -> Result<()> {
        #[cfg(feature = "fault-injection")]
        if let Some(hook) = &self.fault_hook {
            match hook(op, batches) {
                crate::types::Fault::Continue => {}
                crate::types::Fault::Error => {
                    return Err(StoreError::Backend(format!(
                        "injected error after batch {batches} of {op:?}"
                    )));
                }
                crate::types::Fault::Crash => {
                    self.crashed
                        .store(true, std::sync::atomic::Ordering::SeqCst);
                    self.idle.notify_all();
                    return Err(StoreError::Backend(format!(
                        "injected crash after batch {batches} of {op:?}"
                    )));
                }
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        let _ = (op, batches);
        Ok(())
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        if self.crashed() {
            return Err(StoreError::Backend(
                "the store stopped at an injected fault; open it again".into(),
            ));
        }
        self.state.lock().map_err(|_| poisoned())
    }

    /// Waits until no commit is writing `tree`.
    fn wait_idle<'a>(
        &self,
        mut st: MutexGuard<'a, State>,
        tree: &Cid,
    ) -> Result<MutexGuard<'a, State>> {
        while st.busy.contains(tree) {
            st = self.idle.wait(st).map_err(|_| poisoned())?;
            if self.crashed() {
                return Err(StoreError::Backend(
                    "the store stopped at an injected fault; open it again".into(),
                ));
            }
        }
        Ok(st)
    }

    fn get_ref(&self, key: &CidKey) -> Result<Option<RefVal>> {
        self.kv
            .get(Table::Refs, key)?
            .map(|v| RefVal::decode(&v))
            .transpose()
    }

    /// Reads the current reference records of every block in `plan`.
    fn resolve(&self, plan: &RefPlan) -> Result<Resolved> {
        self.resolve_with(plan, false)
    }

    /// Like [`Engine::resolve`]; if `lenient` (recovery at open), a release that finds no
    /// reference record, or a count already at 0, is logged and skipped instead of failing.
    fn resolve_with(&self, plan: &RefPlan, lenient: bool) -> Result<Resolved> {
        let mut r = Resolved::default();
        for (key, (delta, data)) in &plan.deltas {
            match self.get_ref(key)? {
                None => {
                    if *delta < 0 {
                        if lenient {
                            tracing::warn!("releasing a block that has no reference record");
                            continue;
                        }
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
                    let count = match u64::try_from(count) {
                        Ok(c) => c,
                        Err(_) if lenient => {
                            tracing::warn!("block reference count below zero");
                            0
                        }
                        Err(_) => {
                            return Err(StoreError::Corrupt(
                                "block reference count below zero".into(),
                            ));
                        }
                    };
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

    /// Reads up to `batch` pairs of `table` under `prefix`, from key `from` on, mapped by `f`,
    /// and moves `from` past the last one. Also says whether more may follow.
    fn page<T>(
        &self,
        table: Table,
        prefix: &[u8],
        from: &mut Vec<u8>,
        mut f: impl FnMut(&[u8], &[u8]) -> Result<T>,
    ) -> Result<(Vec<T>, bool)> {
        let mut out = Vec::new();
        let mut last = None;
        self.kv.scan_from(table, prefix, from, &mut |k, v| {
            out.push(f(k, v)?);
            if out.len() >= self.batch {
                last = Some(successor(k));
                return Ok(ControlFlow::Break(()));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let more = last.is_some();
        if let Some(next) = last {
            *from = next;
        }
        Ok((out, more))
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
            let taken = st.used.saturating_add(st.reserved);
            if needed == 0 || taken.saturating_add(needed) <= self.quota {
                return Ok(plan);
            }
            if !self.evict_one(st, exclude)? {
                return Err(StoreError::QuotaExceeded {
                    needed,
                    free: self.quota.saturating_sub(taken),
                });
            }
        }
    }

    /// Evicts the least recently used cached dataset: complete, unpinned, not of `exclude` nor
    /// of a tree being committed.
    fn evict_one(&self, st: &mut State, exclude: Option<&Cid>) -> Result<bool> {
        let victim = st
            .datasets
            .iter()
            .filter(|(_, e)| {
                !e.flags.pinned
                    && Some(&e.tree) != exclude
                    && !st.busy.contains(&e.tree)
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

    /// Deletes a manifest and, if it was the last of its tree, the tree: first one batch
    /// removes the manifest and tree records and marks the tree detached (the commit point),
    /// then its leaf records and bitmap go in batches ([`Engine::clean_detached`]). The tree
    /// must not be busy.
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
        let tkey = tree_cid.to_bytes();
        let last = tree.manifests <= 1;
        let mut batch = Batch::default();
        batch.del(Table::Datasets, *key);
        if last {
            batch.del(Table::Trees, tkey);
            batch.put(Table::Detached, tkey, vec![DETACHED_DELETE]);
        }
        self.kv.write(batch)?;
        st.datasets.remove(key);
        if last {
            st.trees.remove(&tree_cid);
        } else if let Some(t) = st.trees.get_mut(&tree_cid) {
            t.manifests -= 1;
        }
        Counts {
            del_bytes: mlen,
            del_items: 1,
            ..Counts::default()
        }
        .apply(st);
        if last {
            let mut batches = 1;
            let cleaned = self.after_batch(BatchedOp::Delete, batches).and_then(|()| {
                self.clean_detached(st, &tree_cid, BatchedOp::Delete, false, &mut batches)
            });
            if let Err(e) = cleaned {
                if !self.crashed() {
                    st.detached.insert(tree_cid);
                }
                return Err(e);
            }
        }
        Ok(true)
    }

    /// Deletes the leaf records (releasing their blocks) and bitmap chunks of a tree that has no
    /// tree record, in batches, then its `detached` record. `lenient` at open (see
    /// [`Engine::resolve_with`]).
    fn clean_detached(
        &self,
        st: &mut State,
        tree: &Cid,
        op: BatchedOp,
        lenient: bool,
        batches: &mut u64,
    ) -> Result<()> {
        let tkey = tree.to_bytes();
        self.release_records(st, Table::Leaves, &tkey, op, lenient, batches, |_, v| {
            leaf_block_cid(v)
        })?;
        let mut from = tkey.to_vec();
        loop {
            let (keys, more) =
                self.page(Table::Bitmaps, &tkey, &mut from, |k, _| Ok(k.to_vec()))?;
            let mut batch = Batch::default();
            for k in keys {
                batch.del(Table::Bitmaps, k);
            }
            if !more {
                batch.del(Table::Detached, tkey);
            }
            self.kv.write(batch)?;
            *batches += 1;
            self.after_batch(op, *batches)?;
            if !more {
                break;
            }
        }
        st.detached.remove(tree);
        Ok(())
    }

    /// Deletes the staging records of `staging` (every staging if `None`), releasing their
    /// blocks, in batches. Returns how many records went.
    fn release_staging(
        &self,
        st: &mut State,
        staging: Option<u64>,
        op: BatchedOp,
        lenient: bool,
        batches: &mut u64,
    ) -> Result<u64> {
        let prefix = staging
            .map(|s| s.to_be_bytes().to_vec())
            .unwrap_or_default();
        self.release_records(st, Table::Staging, &prefix, op, lenient, batches, |k, v| {
            parse_staging_key(k)?;
            cid_from(v, "staging record")
        })
    }

    /// Deletes every record of `table` under `prefix`, releasing the block each one names
    /// (`block_of(key, value)`), one batch per page. Returns how many records went.
    // The batching context (op, lenient, batches) is shared with the callers' signatures.
    #[allow(clippy::too_many_arguments)]
    fn release_records(
        &self,
        st: &mut State,
        table: Table,
        prefix: &[u8],
        op: BatchedOp,
        lenient: bool,
        batches: &mut u64,
        block_of: impl Fn(&[u8], &[u8]) -> Result<Cid>,
    ) -> Result<u64> {
        let mut from = prefix.to_vec();
        let mut released = 0;
        loop {
            let (page, more) = self.page(table, prefix, &mut from, |k, v| {
                Ok((k.to_vec(), block_of(k, v)?))
            })?;
            if !page.is_empty() {
                released += page.len() as u64;
                let mut batch = Batch::default();
                let mut plan = RefPlan::default();
                for (k, cid) in page {
                    plan.release(&cid);
                    batch.del(table, k);
                }
                let counts = self.resolve_with(&plan, lenient)?.emit(&mut batch);
                self.kv.write(batch)?;
                counts.apply(st);
                *batches += 1;
                self.after_batch(op, *batches)?;
            }
            if !more {
                break;
            }
        }
        Ok(released)
    }

    /// At open: finishes the cleanup of every detached tree (an interrupted delete, or the
    /// leaf records of an interrupted commit) and rolls back every staging record (an upload
    /// neither committed nor aborted). Counters are recomputed afterwards by `load_state`.
    fn recover(&self) -> Result<()> {
        let mut st = self.lock()?;
        let mut trees = Vec::new();
        self.kv.scan(Table::Detached, &[], &mut |k, _| {
            trees.push(cid_from(k, "detached record")?);
            Ok(ControlFlow::Continue(()))
        })?;
        let mut batches = 0;
        for tree in &trees {
            if self.kv.get(Table::Trees, &tree.to_bytes())?.is_some() {
                tracing::warn!(%tree, "detached record of a recorded tree; dropping the record");
                let mut batch = Batch::default();
                batch.del(Table::Detached, tree.to_bytes());
                self.kv.write(batch)?;
                batches += 1;
                continue;
            }
            self.clean_detached(&mut st, tree, BatchedOp::Recovery, true, &mut batches)?;
        }
        let rolled_back =
            self.release_staging(&mut st, None, BatchedOp::Recovery, true, &mut batches)?;
        if batches > 0 {
            self.kv.sync()?;
            tracing::info!(
                detached_trees = trees.len(),
                staging_records = rolled_back,
                "recovered from interrupted writes"
            );
        }
        Ok(())
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
        entry.check_open(staging.0)?;
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
            e.check_open(staging.0)?;
            if e.count != n || e.max_index.is_some_and(|m| m >= n) {
                return Err(invalid(format!(
                    "staging {} holds {} blocks, the dataset has {n}",
                    staging.0, e.count
                )));
            }
            e.phase = Phase::Committing;
        }
        let result = self.commit_busy(staging.0, dataset, flags);
        if result.is_err()
            && let Ok(mut st) = self.lock()
            && let Some(e) = st.stagings.get_mut(&staging.0)
            && e.phase == Phase::Committing
        {
            e.phase = Phase::Open;
        }
        result
    }

    /// The commit of a staging marked `Committing`. Every index `0..n` is staged (checked).
    ///
    /// Batches, each consistent on its own: per `batch` indices, the staging records go and
    /// their references move to new leaf records (a new tree: under a `detached` record, so a
    /// crash has them deleted at open; a partial tree: bits set in its bitmap, as a download
    /// would) or are released (indices already held). Then one small batch, the commit point,
    /// writes the tree record (dropping the `detached` one) and the dataset record. The
    /// manifest's quota is reserved at the start, so that last batch cannot fail for room.
    fn commit_busy(
        &self,
        sid: u64,
        dataset: &Dataset,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord> {
        let n = dataset.tree.leaf_count();
        let leaves = dataset.tree.leaves();
        let tree_cid = dataset.manifest.tree_cid;

        // Outside the lock: every staged block must be the tree's leaf at its index.
        let mut bad = None;
        self.kv
            .scan(Table::Staging, &sid.to_be_bytes(), &mut |k, v| {
                let (_, index) = parse_staging_key(k)?;
                let cid = cid_from(v, "staging record")?;
                let leaf = usize::try_from(index).ok().and_then(|i| leaves.get(i));
                if leaf.is_none_or(|d| cid != Cid::new(Codec::Block, *d)) {
                    bad = Some(index);
                    return Ok(ControlFlow::Break(()));
                }
                Ok(ControlFlow::Continue(()))
            })?;
        if let Some(index) = bad {
            return Err(invalid(format!(
                "staged block {index} is not the tree's leaf {index}"
            )));
        }

        let mkey = dataset.manifest_cid.to_bytes();
        let (mode, mlen) = {
            let st = self.lock()?;
            let mut st = self.wait_idle(st, &tree_cid)?;
            if !st.trees.contains_key(&tree_cid) && st.detached.contains(&tree_cid) {
                let mut batches = 0;
                self.clean_detached(&mut st, &tree_cid, BatchedOp::Commit, false, &mut batches)?;
            }
            let mlen = if st.datasets.contains_key(&mkey) {
                0
            } else {
                dataset.manifest_bytes.len() as u64
            };
            // Room for the manifest; the tree being committed is not evicted meanwhile.
            self.with_room(&mut st, Some(&tree_cid), |_| Ok(((), mlen, 0)))?;
            let mode = match st.trees.get(&tree_cid) {
                None => Mode::New,
                Some(t) if t.blocks_count != n => {
                    return Err(StoreError::Corrupt(format!(
                        "tree {tree_cid} is recorded with {} blocks, not {n}",
                        t.blocks_count
                    )));
                }
                Some(t) if t.complete() => Mode::Complete,
                Some(_) => Mode::Partial,
            };
            st.reserved += mlen;
            st.busy.insert(tree_cid);
            (mode, mlen)
        };

        let mut batches = 0;
        let result = self
            .commit_chunks(sid, dataset, mode, &mut batches)
            .and_then(|()| self.commit_point(sid, dataset, flags, mlen));
        match result {
            Ok(record) => {
                self.after_batch(BatchedOp::Commit, batches + 1)?;
                self.kv.sync()?;
                Ok(record)
            }
            Err(e) => {
                if !self.crashed() {
                    self.commit_failed(sid, &tree_cid, mode, mlen, batches);
                }
                Err(e)
            }
        }
    }

    /// The batches of a commit before its commit point (see [`Engine::commit_busy`]).
    fn commit_chunks(
        &self,
        sid: u64,
        dataset: &Dataset,
        mode: Mode,
        batches: &mut u64,
    ) -> Result<()> {
        let n = dataset.tree.leaf_count();
        let leaves = dataset.tree.leaves();
        let step = self.batch as u64;
        let mut start = 0;
        while start < n {
            let end = start.saturating_add(step).min(n);
            self.kv.throttle()?;
            // Outside the lock: this batch's leaf records (a complete tree needs none).
            let values = if mode == Mode::Complete {
                Vec::new()
            } else {
                (start..end)
                    .map(|i| {
                        let proof = dataset
                            .tree
                            .proof(i)
                            .map_err(|e| invalid(format!("proof of leaf {i}: {e}")))?;
                        Ok(leaf_value(
                            &Cid::new(Codec::Block, leaves[i as usize]),
                            &proof,
                        ))
                    })
                    .collect::<Result<Vec<_>>>()?
            };
            {
                let mut st = self.lock()?;
                self.commit_chunk(&mut st, sid, dataset, start..end, values, *batches == 0)?;
            }
            *batches += 1;
            self.after_batch(BatchedOp::Commit, *batches)?;
            start = end;
        }
        Ok(())
    }

    /// One batch of a commit: the staging records of `range` go; their references move to leaf
    /// records `values` or are released.
    fn commit_chunk(
        &self,
        st: &mut State,
        sid: u64,
        dataset: &Dataset,
        range: std::ops::Range<u64>,
        values: Vec<Bytes>,
        first: bool,
    ) -> Result<()> {
        let n = dataset.tree.leaf_count();
        let leaves = dataset.tree.leaves();
        let tree_cid = dataset.manifest.tree_cid;
        let tkey = tree_cid.to_bytes();
        let block_cid = |i: u64| Cid::new(Codec::Block, leaves[i as usize]);
        let missing_values = || StoreError::Corrupt("commit batch without its leaf records".into());

        let mut batch = Batch::default();
        let mut plan = RefPlan::default();
        for i in range.clone() {
            batch.del(Table::Staging, staging_key(sid, i));
        }
        let mut updated = None;
        match st.trees.get(&tree_cid).copied() {
            None => {
                if values.len() as u64 != range.end - range.start {
                    return Err(missing_values());
                }
                if first {
                    batch.put(Table::Detached, tkey, vec![DETACHED_COMMIT]);
                }
                for (i, value) in range.zip(values) {
                    batch.put(Table::Leaves, leaf_key(&tkey, i), value);
                }
            }
            Some(t) if t.complete() => {
                for i in range {
                    plan.release(&block_cid(i));
                }
            }
            Some(t) => {
                if values.len() as u64 != range.end - range.start {
                    return Err(missing_values());
                }
                let mut chunks = self.load_chunks(&tkey, n, range.clone())?;
                let mut held = t.held;
                for (i, value) in range.zip(values) {
                    let chunk = chunks
                        .get_mut(&(i / CHUNK_BITS))
                        .ok_or_else(|| StoreError::Corrupt("bitmap chunk not loaded".into()))?;
                    let bit = i % CHUNK_BITS;
                    let byte = &mut chunk[(bit / 8) as usize];
                    let mask = 1u8 << (bit % 8);
                    if *byte & mask != 0 {
                        plan.release(&block_cid(i));
                    } else {
                        *byte |= mask;
                        held += 1;
                        batch.put(Table::Leaves, leaf_key(&tkey, i), value);
                    }
                }
                let t = TreeEntry { held, ..t };
                if t.complete() {
                    for c in 0..chunk_count(n) {
                        batch.del(Table::Bitmaps, bitmap_key(&tkey, c));
                    }
                } else {
                    for (c, bytes) in chunks {
                        batch.put(Table::Bitmaps, bitmap_key(&tkey, c), bytes);
                    }
                }
                batch.put(Table::Trees, tkey, t.encode());
                updated = Some(t);
            }
        }
        let counts = self.resolve(&plan)?.emit(&mut batch);
        self.kv.write(batch)?;
        counts.apply(st);
        if let Some(t) = updated {
            st.trees.insert(tree_cid, t);
        }
        Ok(())
    }

    /// The last batch of a commit: tree record, dataset record; the commit is then done.
    fn commit_point(
        &self,
        sid: u64,
        dataset: &Dataset,
        flags: DatasetFlags,
        mlen: u64,
    ) -> Result<DatasetRecord> {
        let n = dataset.tree.leaf_count();
        let tree_cid = dataset.manifest.tree_cid;
        let tkey = tree_cid.to_bytes();
        let mkey = dataset.manifest_cid.to_bytes();
        let mut st = self.lock()?;
        let mut batch = Batch::default();
        let tree = match st.trees.get(&tree_cid).copied() {
            None => {
                let t = TreeEntry {
                    blocks_count: n,
                    held: n,
                    manifests: 0,
                };
                batch.put(Table::Trees, tkey, t.encode());
                batch.del(Table::Detached, tkey);
                t
            }
            Some(t) if t.complete() => t,
            Some(_) => {
                return Err(StoreError::Corrupt(format!(
                    "tree {tree_cid} is not complete after its commit"
                )));
            }
        };
        let mut counts = Counts::default();
        let manifest_new = !st.datasets.contains_key(&mkey);
        let entry = match st.datasets.get(&mkey) {
            Some(old) => DsEntry {
                flags: DatasetFlags {
                    pinned: old.flags.pinned || flags.pinned,
                    advertise: old.flags.advertise || flags.advertise,
                },
                ..old.clone()
            },
            None => {
                counts.add_bytes += dataset.manifest_bytes.len() as u64;
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

        st.reserved = st.reserved.saturating_sub(mlen);
        counts.apply(&mut st);
        st.trees.insert(
            tree_cid,
            TreeEntry {
                manifests: tree.manifests + u64::from(manifest_new),
                ..tree
            },
        );
        st.datasets.insert(mkey, entry.clone());
        st.stagings.remove(&sid);
        st.busy.remove(&tree_cid);
        self.idle.notify_all();
        Ok(st.record(&entry))
    }

    /// Cleans up after a commit that failed before its commit point, having written `batches`
    /// batches: the reservation and the busy mark go; if batches were written, the leaf records
    /// of a new tree are deleted (more batches of the commit) and the staging only accepts an
    /// abort (which releases its remaining records).
    fn commit_failed(&self, sid: u64, tree: &Cid, mode: Mode, mlen: u64, mut batches: u64) {
        let Ok(mut st) = self.lock() else {
            return;
        };
        st.reserved = st.reserved.saturating_sub(mlen);
        if batches > 0 {
            if mode == Mode::New
                && !st.trees.contains_key(tree)
                && let Err(e) =
                    self.clean_detached(&mut st, tree, BatchedOp::Commit, false, &mut batches)
            {
                tracing::warn!(%tree, error = %e, "cleaning up a failed commit failed");
                if !self.crashed() {
                    st.detached.insert(*tree);
                }
            }
            if let Some(e) = st.stagings.get_mut(&sid) {
                e.phase = Phase::Failed;
            }
        }
        st.busy.remove(tree);
        self.idle.notify_all();
    }

    pub(crate) fn abort_staging(&self, staging: StagingId) -> Result<()> {
        let mut st = self.lock()?;
        match st.stagings.get(&staging.0) {
            None => return Err(StoreError::UnknownStaging(staging.0)),
            Some(e) if e.phase == Phase::Committing => {
                return Err(invalid(format!("staging {} is being committed", staging.0)));
            }
            Some(_) => {}
        }
        let mut batches = 0;
        match self.release_staging(
            &mut st,
            Some(staging.0),
            BatchedOp::Abort,
            false,
            &mut batches,
        ) {
            Ok(_) => {
                st.stagings.remove(&staging.0);
                Ok(())
            }
            Err(e) => {
                if batches > 0
                    && let Some(entry) = st.stagings.get_mut(&staging.0)
                {
                    entry.phase = Phase::Failed;
                }
                Err(e)
            }
        }
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
        let st = self.lock()?;
        let mut st = self.wait_idle(st, &tree_cid)?;
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
        if !st.trees.contains_key(&tree_cid) && st.detached.contains(&tree_cid) {
            let mut batches = 0;
            self.clean_detached(&mut st, &tree_cid, BatchedOp::Delete, false, &mut batches)?;
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

    /// The raw leaf record of `(tree_cid, index)`: block CID ‖ encoded proof.
    fn leaf_value(&self, tree_cid: &Cid, index: u64) -> Result<Option<Bytes>> {
        self.kv
            .get(Table::Leaves, &leaf_key(&tree_cid.to_bytes(), index))
    }

    pub(crate) fn leaf(&self, tree_cid: &Cid, index: u64) -> Result<Option<LeafRecord>> {
        let Some(v) = self.leaf_value(tree_cid, index)? else {
            return Ok(None);
        };
        let block_cid = leaf_block_cid(&v)?;
        let proof = MerkleProof::decode(&v[cairn_core::cid::CID_LEN..])
            .map_err(|e| StoreError::Corrupt(format!("leaf record proof: {e}")))?;
        Ok(Some(LeafRecord { block_cid, proof }))
    }

    pub(crate) fn leaf_block(&self, tree_cid: &Cid, index: u64) -> Result<Option<Bytes>> {
        let Some(v) = self.leaf_value(tree_cid, index)? else {
            return Ok(None);
        };
        let cid = leaf_block_cid(&v)?;
        if cid == Cid::EMPTY_BLOCK {
            return Ok(Some(Bytes::new()));
        }
        self.kv.get(Table::Blocks, &cid.to_bytes())
    }

    pub(crate) fn tree_info(&self, tree_cid: &Cid) -> Result<Option<crate::TreeInfo>> {
        let st = self.lock()?;
        let Some(tree) = st.trees.get(tree_cid).copied() else {
            return Ok(None);
        };
        let advertised = st
            .datasets
            .values()
            .any(|d| d.tree == *tree_cid && d.flags.advertise);
        Ok(Some(crate::TreeInfo {
            blocks_count: tree.blocks_count,
            held: tree.held,
            advertised,
        }))
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
        let key = manifest_cid.to_bytes();
        let mut st = self.lock()?;
        // A commit into this dataset's tree finishes first.
        while let Some(tree) = st.datasets.get(&key).map(|e| e.tree)
            && st.busy.contains(&tree)
        {
            st = self.wait_idle(st, &tree)?;
        }
        self.delete_locked(&mut st, &key)
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

/// The key of an application metadata record: table name ‖ 0x00 ‖ key.
fn app_key(table: &str, key: &[u8]) -> Result<Vec<u8>> {
    if table.is_empty() || table.len() > 64 || table.as_bytes().contains(&0) {
        return Err(StoreError::Invalid(format!(
            "metadata table name {table:?} must be 1..=64 bytes without NUL"
        )));
    }
    let mut k = Vec::with_capacity(table.len() + 1 + key.len());
    k.extend_from_slice(table.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    Ok(k)
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
    kv.scan(table, &[], &mut |_, _| {
        empty = false;
        Ok(ControlFlow::Break(()))
    })?;
    Ok(empty)
}

/// Loads dataset and tree records and recomputes the counters.
fn load_state(kv: &impl Kv) -> Result<State> {
    let mut st = State::default();
    kv.scan(Table::Refs, &[], &mut |_, v| {
        let r = RefVal::decode(v)?;
        st.used += r.len;
        st.stored += 1;
        Ok(ControlFlow::Continue(()))
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
        Ok(ControlFlow::Continue(()))
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
        Ok(ControlFlow::Continue(()))
    })?;
    let orphans = st.trees.values().filter(|t| t.manifests == 0).count();
    if orphans > 0 {
        tracing::warn!(orphans, "tree records without a manifest");
    }
    Ok(st)
}
