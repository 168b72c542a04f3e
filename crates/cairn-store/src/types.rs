//! The [`BlockStore`] trait and the values it takes and returns.

use bytes::Bytes;
use cairn_core::{Cid, Dataset, MerkleProof};

/// Default storage quota: 20 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 20 * 1024 * 1024 * 1024;

/// Default of [`StoreOptions::batch_records`].
pub const DEFAULT_BATCH_RECORDS: usize = 4096;

/// Store tuning, for [`FjallStore::open_with`](crate::FjallStore::open_with) and
/// [`MemStore::with_options`](crate::MemStore::with_options).
#[derive(Clone)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Most leaf or staging records one write batch holds in the operations that go over a
    /// whole dataset ([`BatchedOp`]), so that their memory depends on this and not on the
    /// dataset's size: a leaf record with its proof takes about 0.7 KiB (160 000 blocks), so
    /// 4096 of them about 3 MiB. At least 1 (0 is taken as 1).
    pub batch_records: usize,
    /// Test support, see [`FaultHook`].
    #[cfg(feature = "fault-injection")]
    pub fault_hook: Option<FaultHook>,
}

impl Default for StoreOptions {
    fn default() -> StoreOptions {
        StoreOptions {
            batch_records: DEFAULT_BATCH_RECORDS,
            #[cfg(feature = "fault-injection")]
            fault_hook: None,
        }
    }
}

impl StoreOptions {
    /// These options with [`StoreOptions::batch_records`] set.
    #[must_use]
    pub fn with_batch_records(mut self, batch_records: usize) -> StoreOptions {
        self.batch_records = batch_records;
        self
    }

    /// These options with a [`FaultHook`].
    #[cfg(feature = "fault-injection")]
    #[must_use]
    pub fn with_fault_hook(mut self, hook: FaultHook) -> StoreOptions {
        self.fault_hook = Some(hook);
        self
    }
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("StoreOptions");
        d.field("batch_records", &self.batch_records);
        #[cfg(feature = "fault-injection")]
        d.field("fault_hook", &self.fault_hook.is_some());
        d.finish()
    }
}

/// The operations that write in several batches of at most [`StoreOptions::batch_records`]
/// records, each batch leaving the store consistent (`docs/on-disk-format.md` §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BatchedOp {
    /// [`BlockStore::commit_staging`].
    Commit,
    /// [`BlockStore::abort_staging`].
    Abort,
    /// [`BlockStore::delete_dataset`], and evictions.
    Delete,
    /// Recovery at open: finishing interrupted deletes, rolling back interrupted writes.
    Recovery,
}

/// Test support (feature `fault-injection`): what a [`FaultHook`] makes of the point it is
/// called at.
#[cfg(feature = "fault-injection")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Nothing: the operation goes on.
    Continue,
    /// The operation fails here with [`StoreError::Backend`], as if its next write had failed;
    /// the store stays usable and the operation cleans up what it can, as it would after a real
    /// write error.
    Error,
    /// A simulated crash: the operation stops here with [`StoreError::Backend`], cleaning
    /// nothing up, and every later call that takes the store's lock fails. Drop the store and
    /// open it again to recover (`FjallStore::open_with`, `MemStore::restart`).
    Crash,
}

/// Test support (feature `fault-injection`): called after every batch a [`BatchedOp`] writes,
/// with the number of batches that operation has written so far (a commit's last batch, its
/// commit point, included). It runs on the writing thread, sometimes with the store locked: it
/// must not call the store.
#[cfg(feature = "fault-injection")]
pub type FaultHook = std::sync::Arc<dyn Fn(BatchedOp, u64) -> Fault + Send + Sync>;

/// Store errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The write does not fit in the quota, even after evicting cached data.
    #[error("Not enough storage quota: {needed} bytes needed, {free} bytes free")]
    QuotaExceeded {
        /// Bytes the write needs.
        needed: u64,
        /// Bytes free (after evicting what could be evicted).
        free: u64,
    },
    /// The staging id is unknown (already committed or aborted).
    #[error("unknown staging id {0}")]
    UnknownStaging(u64),
    /// The caller broke a precondition (wrong block count, block not in staging, ...).
    #[error("invalid store operation: {0}")]
    Invalid(String),
    /// Stored bytes fail to decode: the store is damaged.
    #[error("corrupt store record: {0}")]
    Corrupt(String),
    /// The disk backend failed.
    #[error("storage backend error: {0}")]
    Backend(String),
    /// The store on disk was written in a format this version cannot read.
    #[error(
        "store format version {found} is not supported (this cairn reads version {supported}); \
         use a cairn that reads it, or another data directory"
    )]
    UnsupportedFormat {
        /// The version found on disk.
        found: u32,
        /// The version this code reads and writes.
        supported: u32,
    },
}

/// Result alias.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Flags of a stored dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatasetFlags {
    /// Pinned datasets (uploads, explicit stores) are never evicted.
    pub pinned: bool,
    /// Advertised on the DHT and served to peers.
    pub advertise: bool,
}

/// The state of a stored manifest's dataset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetState {
    /// Manifest stored, some blocks missing (a download in progress or interrupted).
    Partial,
    /// Every block present.
    Complete,
}

/// A stored manifest and what the store knows about its dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetRecord {
    /// The manifest CID.
    pub manifest_cid: Cid,
    /// The exact manifest bytes.
    pub manifest_bytes: Bytes,
    /// Its tree CID (decoded from the manifest).
    pub tree_cid: Cid,
    /// Number of blocks in the tree.
    pub blocks_count: u64,
    /// Partial or complete.
    pub state: DatasetState,
    /// Pin and advertise flags.
    pub flags: DatasetFlags,
}

/// What the store knows about a tree, for serving peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeInfo {
    /// Blocks in the tree.
    pub blocks_count: u64,
    /// Blocks held.
    pub held: u64,
    /// True if some stored manifest of the tree is advertised.
    pub advertised: bool,
}

/// What a leaf record holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeafRecord {
    /// CID of the block at this index.
    pub block_cid: Cid,
    /// Its inclusion proof against the tree root.
    pub proof: MerkleProof,
}

/// A verified block for a known tree, as a download receives it.
#[derive(Debug, Clone)]
pub struct LeafBlock {
    /// Index in the tree.
    pub index: u64,
    /// Block CID (already checked against `data`).
    pub cid: Cid,
    /// The bytes (empty only for the erasure padding block).
    pub data: Bytes,
    /// Proof (already verified against the tree root).
    pub proof: MerkleProof,
}

/// Result of deleting a single block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockDeletion {
    /// The block was stored and is now gone.
    Deleted,
    /// Nothing was stored under that CID.
    NotFound,
    /// A dataset references the block; it was kept.
    Referenced,
}

/// The storage summary of `GET /space`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Space {
    /// Stored blocks, manifests included.
    pub total_blocks: u64,
    /// The configured quota.
    pub quota_max_bytes: u64,
    /// Bytes of stored blocks and manifests.
    pub quota_used_bytes: u64,
    /// Bytes reserved for pending slots (0 until the durability layer).
    pub quota_reserved_bytes: u64,
}

/// Identifies a write in progress (an upload) until it is committed or aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StagingId(pub u64);

/// A block and metadata store. Implementations are cheap to share (`Arc<dyn BlockStore>`) and
/// safe to call from many threads at once.
pub trait BlockStore: Send + Sync + std::fmt::Debug + 'static {
    // --- blocks -------------------------------------------------------------------------------

    /// True iff the block is stored. The empty block is always present; a stored manifest is a
    /// block too (under its manifest CID).
    fn has_block(&self, cid: &Cid) -> Result<bool>;

    /// The bytes of a stored block (the empty block is `Some(empty)`, a stored manifest CID gives
    /// the manifest bytes).
    fn get_block(&self, cid: &Cid) -> Result<Option<Bytes>>;

    /// Deletes a block that no dataset references.
    ///
    /// The empty block is virtual and never deleted (`NotFound`); a stored manifest CID gives
    /// `Referenced` (delete it with [`BlockStore::delete_dataset`]).
    fn delete_block(&self, cid: &Cid) -> Result<BlockDeletion>;

    /// Stores a standalone block, outside any dataset (bytes already checked against `cid`). It
    /// counts in the quota and stays until [`BlockStore::delete_block`] removes it, even when no
    /// leaf or staging record references it; it is never evicted. Storing a block already held
    /// marks it standalone. Fails with `QuotaExceeded` (storing nothing) if it does not fit.
    fn put_block(&self, cid: &Cid, data: Bytes) -> Result<()>;

    // --- uploads (tree unknown until the end) --------------------------------------------------

    /// Starts a staged write. Its blocks count in the quota but belong to no dataset until
    /// [`BlockStore::commit_staging`]; a crash before that rolls them back at the next open.
    fn begin_staging(&self) -> Result<StagingId>;

    /// Stores blocks of a staged write, in any order; `index` is the block's position in the
    /// dataset. Fails with `QuotaExceeded` (storing none of them) if they do not fit.
    fn put_staged_blocks(&self, staging: StagingId, blocks: &[(u64, Cid, Bytes)]) -> Result<()>;

    /// Turns a staged write into a complete dataset: leaf records with proofs from
    /// `dataset.tree`, the manifest and its record, then one fsync. Every index of the tree must
    /// have been staged. If the tree is already stored, the staged blocks are released and only
    /// the manifest is added. Returns the new record.
    ///
    /// The leaf records are written in bounded batches before a last small batch adds the
    /// manifest: a crash at any point leaves the dataset either complete or absent (and, if its
    /// tree was being downloaded, that download further along). A refusal (`Invalid`, quota)
    /// leaves the staging as it was; if the commit fails after it started writing (a backend
    /// error), the staging only accepts [`BlockStore::abort_staging`].
    fn commit_staging(
        &self,
        staging: StagingId,
        dataset: &Dataset,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord>;

    /// Drops a staged write: releases its blocks (deleting those nothing else references).
    fn abort_staging(&self, staging: StagingId) -> Result<()>;

    // --- downloads (manifest known first) ------------------------------------------------------

    /// Stores a manifest (bytes already checked against `manifest_cid` and decoded by the
    /// caller). Its dataset starts `Partial` unless every block is already held. Storing an
    /// existing manifest keeps its record, but `pinned` and `advertise` are raised to the
    /// given flags if set.
    fn put_manifest(
        &self,
        manifest_cid: &Cid,
        manifest_bytes: Bytes,
        flags: DatasetFlags,
    ) -> Result<DatasetRecord>;

    /// Stores verified blocks of `tree_cid` with their leaf records and marks them in the
    /// bitmap. Blocks already held are skipped. When the last one arrives, every manifest of
    /// the tree becomes `Complete`. Fails with `QuotaExceeded` (storing none) if they do not fit.
    fn put_leaf_blocks(&self, tree_cid: &Cid, blocks: &[LeafBlock]) -> Result<()>;

    /// Makes everything written so far durable (fsync).
    fn sync(&self) -> Result<()>;

    // --- reading -------------------------------------------------------------------------------

    /// The record of a stored manifest.
    fn dataset(&self, manifest_cid: &Cid) -> Result<Option<DatasetRecord>>;

    /// Every stored manifest, ordered by manifest CID bytes; `Partial` ones only if asked.
    fn list_datasets(&self, include_partial: bool) -> Result<Vec<DatasetRecord>>;

    /// The leaf record of `(tree_cid, index)`.
    fn leaf(&self, tree_cid: &Cid, index: u64) -> Result<Option<LeafRecord>>;

    /// The bytes of block `index` of `tree_cid`.
    fn leaf_block(&self, tree_cid: &Cid, index: u64) -> Result<Option<Bytes>>;

    /// Which blocks of `tree_cid` are held: one bit per index (LSB first within each byte),
    /// `ceil(blocksCount / 8)` bytes; `None` if the tree is unknown.
    fn bitmap(&self, tree_cid: &Cid) -> Result<Option<Vec<u8>>>;

    /// Block counts and advertise state of a tree; `None` if no manifest names it.
    fn tree_info(&self, tree_cid: &Cid) -> Result<Option<TreeInfo>>;

    /// Records a read of a dataset, for least-recently-used eviction of cached data.
    fn touch(&self, manifest_cid: &Cid) -> Result<()>;

    // --- changing state ------------------------------------------------------------------------

    /// Sets the flags of a stored dataset; false if the manifest is not stored.
    fn set_flags(&self, manifest_cid: &Cid, flags: DatasetFlags) -> Result<bool>;

    /// Deletes a manifest, and the leaf records and blocks of its tree that no other manifest
    /// or dataset references. False if nothing was stored. Pinning does not prevent an
    /// explicit delete (the user asked for it); it prevents eviction.
    ///
    /// The manifest goes in one batch; the tree's leaf records and blocks then go in bounded
    /// batches (a crash leaves the rest to the next open). If a commit is writing the same tree,
    /// the delete waits for it.
    fn delete_dataset(&self, manifest_cid: &Cid) -> Result<bool>;

    /// The storage summary.
    fn space(&self) -> Result<Space>;

    // --- application metadata ------------------------------------------------------------------

    /// The value stored under `key` in metadata table `table`.
    ///
    /// Metadata tables are small named key-value maps for the node's own durable state (the
    /// durability layer's swarms, facts, held slots). They never count against the quota and
    /// are independent of blocks and datasets. A table name is 1..=64 bytes without a NUL byte;
    /// anything else is [`StoreError::Invalid`].
    fn get_meta(&self, table: &str, key: &[u8]) -> Result<Option<Bytes>>;

    /// Every `(key, value)` of `table` whose key starts with `prefix`, in key order.
    fn scan_meta(&self, table: &str, prefix: &[u8]) -> Result<Vec<(Vec<u8>, Bytes)>>;

    /// Applies `ops` atomically (all or none) and makes them durable (fsync) before returning.
    fn write_meta(&self, ops: &[MetaOp]) -> Result<()>;

    /// Stores `value` under `key` in `table`, durably (see [`BlockStore::write_meta`]).
    fn put_meta(&self, table: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.write_meta(&[MetaOp::Put {
            table: table.to_owned(),
            key: key.to_vec(),
            value: value.to_vec(),
        }])
    }

    /// Removes `key` from `table` (a no-op if absent), durably.
    fn delete_meta(&self, table: &str, key: &[u8]) -> Result<()> {
        self.write_meta(&[MetaOp::Delete {
            table: table.to_owned(),
            key: key.to_vec(),
        }])
    }
}

/// One change of [`BlockStore::write_meta`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetaOp {
    /// Insert or overwrite.
    Put {
        /// The metadata table.
        table: String,
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Remove (a no-op if absent).
    Delete {
        /// The metadata table.
        table: String,
        /// The key.
        key: Vec<u8>,
    },
}
