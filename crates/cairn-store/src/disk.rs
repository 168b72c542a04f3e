//! The disk backend: a fjall database, one keyspace per table.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fjall::{
    CompressionType, Database, Keyspace, KeyspaceCreateOptions, KvSeparationOptions, PersistMode,
};

use crate::engine::Engine;
use crate::kv::{Batch, Kv, Op, ScanFn, Table};
use crate::types::{Result, StoreError, StoreOptions};

/// Block cache of the database (index and filter blocks, small values).
const CACHE_BYTES: u64 = 8 * 1024 * 1024;
/// Memtable size of the blocks keyspace. Writes halt at 4 sealed memtables waiting for their
/// flush, so block data in memory stays below 5 × this.
const BLOCKS_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// Memtable size of the other keyspaces (small records).
const META_MEMTABLE_BYTES: u64 = 8 * 1024 * 1024;
/// Total journal size before the oldest memtables are flushed (fjall's minimum).
const MAX_JOURNAL_BYTES: u64 = 64 * 1024 * 1024;
/// Memtable bytes (every keyspace, active and sealed) above which writers wait for flushes.
const WRITE_BUFFER_LIMIT: u64 = 48 * 1024 * 1024;
/// Longest a writer waits for flushes before writing anyway.
const THROTTLE_MAX_WAIT: Duration = Duration::from_secs(10);

fn backend(e: fjall::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

/// The smallest key above every key starting with `prefix`, if there is one.
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The fjall database and its keyspaces, indexed like [`Table::ALL`].
pub(crate) struct FjallKv {
    db: Database,
    spaces: Vec<Keyspace>,
}

impl std::fmt::Debug for FjallKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallKv").finish_non_exhaustive()
    }
}

impl FjallKv {
    fn open(path: &Path) -> Result<FjallKv> {
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(MAX_JOURNAL_BYTES)
            .open()
            .map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        let spaces = Table::ALL
            .iter()
            .map(|t| {
                let opts = move || match t {
                    Table::Blocks => KeyspaceCreateOptions::default()
                        .max_memtable_size(BLOCKS_MEMTABLE_BYTES)
                        .with_kv_separation(Some(
                            KvSeparationOptions::default().compression(CompressionType::None),
                        )),
                    _ => KeyspaceCreateOptions::default().max_memtable_size(META_MEMTABLE_BYTES),
                };
                db.keyspace(t.name(), opts).map_err(backend)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(FjallKv { db, spaces })
    }

    fn space(&self, t: Table) -> &Keyspace {
        &self.spaces[t.index()]
    }
}

impl Kv for FjallKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self
            .space(table)
            .get(key)
            .map_err(backend)?
            .map(Bytes::from))
    }

    fn scan_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()> {
        let start = from.max(prefix);
        let space = self.space(table);
        let iter = match prefix_end(prefix) {
            Some(end) => space.range(start..end.as_slice()),
            None => space.range(start..),
        };
        for guard in iter {
            let (k, v) = guard.into_inner().map_err(backend)?;
            if !k.starts_with(prefix) || f(&k, &v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut b = self.db.batch();
        for op in batch.ops {
            match op {
                Op::Put(t, k, v) => b.insert(self.space(t), k, v),
                Op::Del(t, k) => b.remove(self.space(t), k),
            }
        }
        b.commit().map_err(backend)
    }

    fn sync(&self) -> Result<()> {
        self.db.persist(PersistMode::SyncAll).map_err(backend)
    }

    /// Bounds the memory held in memtables. fjall rotates a full memtable only when one of its
    /// workers gets to the request; while they are busy flushing or compacting, the active
    /// memtable keeps growing (measured: several hundred MiB during a fast 1 GiB upload). So
    /// past [`WRITE_BUFFER_LIMIT`], seal the memtables here (which queues their flush) and wait
    /// for the flushes.
    ///
    /// `write_buffer_size`, `sealed_memtable_count` and `rotate_memtable` are public but
    /// `#[doc(hidden)]` in fjall 3.1; the version is pinned by the workspace.
    fn throttle(&self) -> Result<()> {
        if self.db.write_buffer_size() <= WRITE_BUFFER_LIMIT {
            return Ok(());
        }
        let started = Instant::now();
        loop {
            let pending: usize = self
                .spaces
                .iter()
                .map(Keyspace::sealed_memtable_count)
                .sum();
            if pending == 0 {
                // Nothing is being flushed: seal the blocks memtable, or if it is empty, the
                // others (small records; they only matter once blocks are flushed).
                if !self
                    .space(Table::Blocks)
                    .rotate_memtable()
                    .map_err(backend)?
                {
                    for ks in &self.spaces {
                        ks.rotate_memtable().map_err(backend)?;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
            if self.db.write_buffer_size() <= WRITE_BUFFER_LIMIT {
                return Ok(());
            }
            if started.elapsed() > THROTTLE_MAX_WAIT {
                tracing::warn!(
                    buffered = self.db.write_buffer_size(),
                    "memtable flushes are slow; writing anyway"
                );
                return Ok(());
            }
        }
    }
}

/// A [`BlockStore`](crate::BlockStore) on disk, in a fjall database.
///
/// Blocks live in a key-value-separated keyspace (blob files, no compression); every change is
/// made of atomic fjall batches, each leaving the store consistent; a committed upload is
/// fsynced once. At open, writes interrupted by a crash are rolled back or finished. `docs/on-disk-format.md` describes the layout.
#[derive(Debug)]
pub struct FjallStore {
    engine: Engine<FjallKv>,
}

impl FjallStore {
    /// Opens (or creates) the store in directory `path` with a quota of `quota` bytes.
    ///
    /// Fails with [`StoreError::UnsupportedFormat`] if the directory was written by a newer
    /// format, and with [`StoreError::Backend`] if another process has it open.
    pub fn open(path: impl AsRef<Path>, quota: u64) -> Result<FjallStore> {
        FjallStore::open_with(path, quota, StoreOptions::default())
    }

    /// [`FjallStore::open`] with options.
    pub fn open_with(
        path: impl AsRef<Path>,
        quota: u64,
        options: StoreOptions,
    ) -> Result<FjallStore> {
        let kv = FjallKv::open(path.as_ref())?;
        Ok(FjallStore {
            engine: Engine::open(kv, quota, &options)?,
        })
    }

    /// Bytes the database takes on disk (journals, tables and blob files).
    pub fn disk_space(&self) -> Result<u64> {
        self.engine.kv().db.disk_space().map_err(backend)
    }
}

impl FjallStore {
    /// Test support (feature `fault-injection`): checks the stored tables against each other
    /// and against the in-memory state (reference counts, leaf records and bitmaps, leftover
    /// records, counters); `StoreError::Corrupt` says what is wrong. Run it while no
    /// operation is in progress.
    #[cfg(feature = "fault-injection")]
    pub fn check_integrity(&self) -> Result<()> {
        self.engine.check_integrity()
    }
}

crate::forward_block_store!(FjallStore);
