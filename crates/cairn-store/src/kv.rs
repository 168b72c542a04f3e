//! The small key-value interface the store logic is written against, implemented by the fjall
//! backend (`disk.rs`) and the in-memory one (`mem.rs`).

use std::ops::ControlFlow;

use bytes::Bytes;

use crate::types::Result;

/// The tables (fjall keyspaces) of the store. `docs/on-disk-format.md` gives their layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Table {
    /// Format version and other store-wide values.
    Meta,
    /// Block CID → block bytes.
    Blocks,
    /// Block CID → reference count, length, flags.
    Refs,
    /// Tree CID ‖ index → block CID ‖ proof.
    Leaves,
    /// Manifest CID → flags, last access, manifest bytes.
    Datasets,
    /// Tree CID → blocks count, blocks held.
    Trees,
    /// Tree CID ‖ chunk number → a chunk of the block bitmap (partial trees only).
    Bitmaps,
    /// Staging id ‖ index → block CID.
    Staging,
    /// Tree CID → why its leaf records have no tree record (a commit or a delete in progress).
    Detached,
    /// Application metadata: table name ‖ 0x00 ‖ key → value (the node's durable state).
    App,
}

impl Table {
    /// Every table, in a fixed order (the index of each is its position here).
    pub(crate) const ALL: [Table; 10] = [
        Table::Meta,
        Table::Blocks,
        Table::Refs,
        Table::Leaves,
        Table::Datasets,
        Table::Trees,
        Table::Bitmaps,
        Table::Staging,
        Table::Detached,
        Table::App,
    ];

    /// The fjall keyspace name.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Table::Meta => "meta",
            Table::Blocks => "blocks",
            Table::Refs => "refs",
            Table::Leaves => "leaves",
            Table::Datasets => "datasets",
            Table::Trees => "trees",
            Table::Bitmaps => "bitmaps",
            Table::Staging => "staging",
            Table::Detached => "detached",
            Table::App => "app",
        }
    }

    /// Position in [`Table::ALL`].
    pub(crate) const fn index(self) -> usize {
        self as usize
    }
}

/// One change of a batch.
#[derive(Debug)]
pub(crate) enum Op {
    /// Insert or overwrite.
    Put(Table, Vec<u8>, Bytes),
    /// Remove (a no-op if absent).
    Del(Table, Vec<u8>),
}

/// Changes applied atomically, all or none, by [`Kv::write`].
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub(crate) ops: Vec<Op>,
}

impl Batch {
    pub(crate) fn put(&mut self, table: Table, key: impl Into<Vec<u8>>, value: impl Into<Bytes>) {
        self.ops.push(Op::Put(table, key.into(), value.into()));
    }

    pub(crate) fn del(&mut self, table: Table, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Del(table, key.into()));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The callback of [`Kv::scan_from`]: key, value; `Break` (or an error) stops the scan.
pub(crate) type ScanFn<'a> = dyn FnMut(&[u8], &[u8]) -> Result<ControlFlow<()>> + 'a;

/// An ordered key-value store with atomic batches. Reads see every batch written before them.
pub(crate) trait Kv: Send + Sync + std::fmt::Debug + 'static {
    /// The value under `key`.
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>>;

    /// Calls `f` with every pair whose key starts with `prefix` and is not below `from`, in key
    /// order, until `f` breaks. `from` starts with `prefix`. `f` must not call back into the
    /// store.
    fn scan_from(&self, table: Table, prefix: &[u8], from: &[u8], f: &mut ScanFn<'_>)
    -> Result<()>;

    /// Calls `f` with every pair whose key starts with `prefix`, in key order, until it breaks.
    fn scan(&self, table: Table, prefix: &[u8], f: &mut ScanFn<'_>) -> Result<()> {
        self.scan_from(table, prefix, prefix, f)
    }

    /// Applies `batch` atomically. Durable against a process crash once it returns; against a
    /// machine crash only after [`Kv::sync`].
    fn write(&self, batch: Batch) -> Result<()>;

    /// Makes every write so far durable (fsync).
    fn sync(&self) -> Result<()>;

    /// Waits, if needed, until the backend has room to buffer more writes. Called before a
    /// write, outside the store lock.
    fn throttle(&self) -> Result<()> {
        Ok(())
    }
}
