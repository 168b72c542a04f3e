//! The in-memory backend: ordered maps behind a mutex. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use crate::engine::Engine;
use crate::kv::{Batch, Kv, Op, ScanFn, Table};
use crate::types::{Result, StoreError, StoreOptions};

type Map = BTreeMap<Vec<u8>, Bytes>;

/// Ordered in-memory tables. Clones share them.
#[derive(Debug, Default, Clone)]
pub(crate) struct MemKv {
    tables: Arc<Mutex<[Map; Table::ALL.len()]>>,
}

impl MemKv {
    fn tables(&self) -> Result<MutexGuard<'_, [Map; Table::ALL.len()]>> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Backend("memory store lock poisoned".into()))
    }
}

impl Kv for MemKv {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.tables()?[table.index()].get(key).cloned())
    }

    fn scan_from(
        &self,
        table: Table,
        prefix: &[u8],
        from: &[u8],
        f: &mut ScanFn<'_>,
    ) -> Result<()> {
        let tables = self.tables()?;
        let start = from.max(prefix);
        let range =
            tables[table.index()].range::<[u8], _>((Bound::Included(start), Bound::Unbounded));
        for (k, v) in range {
            if !k.starts_with(prefix) || f(k, v)?.is_break() {
                break;
            }
        }
        Ok(())
    }

    fn write(&self, batch: Batch) -> Result<()> {
        let mut tables = self.tables()?;
        for op in batch.ops {
            match op {
                Op::Put(t, k, v) => {
                    tables[t.index()].insert(k, v);
                }
                Op::Del(t, k) => {
                    tables[t.index()].remove(&k);
                }
            }
        }
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }
}

/// A [`BlockStore`](crate::BlockStore) in memory, with the same semantics as
/// [`FjallStore`](crate::FjallStore). For tests and ephemeral nodes.
#[derive(Debug)]
pub struct MemStore {
    engine: Engine<MemKv>,
}

impl MemStore {
    /// An empty store with a quota of `quota` bytes.
    pub fn new(quota: u64) -> MemStore {
        MemStore::with_options(quota, StoreOptions::default())
    }

    /// An empty store with a quota of `quota` bytes and these options.
    pub fn with_options(quota: u64, options: StoreOptions) -> MemStore {
        let engine = Engine::open(MemKv::default(), quota, &options)
            .expect("opening an empty in-memory store cannot fail");
        MemStore { engine }
    }

    /// Test support (feature `fault-injection`): a new store over the same tables, opened as a
    /// restarted process would open a disk store, recovery included. `self` stands for the
    /// process that died: do not use it afterwards, except to restart again (if this restart
    /// failed, for instance at a fault injected during recovery).
    #[cfg(feature = "fault-injection")]
    pub fn restart(&self, options: StoreOptions) -> Result<MemStore> {
        Ok(MemStore {
            engine: Engine::open(self.engine.kv().clone(), self.engine.quota(), &options)?,
        })
    }
}

impl MemStore {
    /// Test support (feature `fault-injection`): checks the stored tables against each other
    /// and against the in-memory state (reference counts, leaf records and bitmaps, leftover
    /// records, counters); `StoreError::Corrupt` says what is wrong. Run it while no
    /// operation is in progress.
    #[cfg(feature = "fault-injection")]
    pub fn check_integrity(&self) -> Result<()> {
        self.engine.check_integrity()
    }
}

crate::forward_block_store!(MemStore);
