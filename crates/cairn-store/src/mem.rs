//! The in-memory backend: ordered maps behind a mutex. Nothing survives the process.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use crate::engine::Engine;
use crate::kv::{Batch, Kv, Op, ScanFn, Table};
use crate::types::{Result, StoreError};

type Map = BTreeMap<Vec<u8>, Bytes>;

/// Ordered in-memory tables.
#[derive(Debug, Default)]
pub(crate) struct MemKv {
    tables: Mutex<[Map; Table::ALL.len()]>,
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

    fn scan(&self, table: Table, prefix: &[u8], f: &mut ScanFn<'_>) -> Result<()> {
        let tables = self.tables()?;
        let range =
            tables[table.index()].range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
        for (k, v) in range {
            if !k.starts_with(prefix) {
                break;
            }
            f(k, v)?;
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
        let engine = Engine::open(MemKv::default(), quota)
            .expect("opening an empty in-memory store cannot fail");
        MemStore { engine }
    }
}

crate::forward_block_store!(MemStore);
