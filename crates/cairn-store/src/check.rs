//! Test support (feature `fault-injection`): a full consistency check of the stored tables
//! against each other and against the in-memory state, for tests to run after crashes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::ControlFlow;

use cairn_core::Cid;

use crate::codec::{
    CHUNK_BITS, CidKey, RefVal, TreeVal, chunk_count, chunk_len, cid_from, leaf_block_cid,
    parse_staging_key,
};
use crate::engine::Engine;
use crate::kv::{Kv, Table};
use crate::types::{Result, StoreError};

fn fail(msg: impl Into<String>) -> StoreError {
    StoreError::Corrupt(msg.into())
}

/// Every pair of `table`.
fn all(kv: &impl Kv, table: Table) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    kv.scan(table, &[], &mut |k, v| {
        out.push((k.to_vec(), v.to_vec()));
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// What the checks need from the engine's in-memory state.
#[derive(Debug)]
pub(crate) struct Snapshot {
    pub(crate) used: u64,
    pub(crate) stored: u64,
    /// Tree → (blocks count, held, manifests).
    pub(crate) trees: HashMap<Cid, (u64, u64, u64)>,
    /// Manifest CIDs with their tree.
    pub(crate) datasets: BTreeMap<CidKey, Cid>,
    pub(crate) stagings: BTreeSet<u64>,
    pub(crate) detached: BTreeSet<Cid>,
    /// Commits in progress.
    pub(crate) busy: usize,
}

impl<K: Kv> Engine<K> {
    /// Checks every rule of `docs/on-disk-format.md` that relates tables to each other: each
    /// reference count equals the leaf and staging records naming the block; leaf records
    /// belong to a recorded tree (matching its bitmap and `held`) or to a detached one; no
    /// record is left over (staging records of no staging, `detached` records nobody is
    /// cleaning up, bitmap chunks of complete or unknown trees); the counters are exact. Only
    /// meaningful while no operation is running.
    pub(crate) fn check_integrity(&self) -> Result<()> {
        let snap = self.snapshot()?;
        if snap.busy > 0 {
            return Err(fail("a commit is running"));
        }
        let kv = self.kv();

        // Datasets and trees match memory.
        let mut manifests_per_tree: HashMap<Cid, u64> = HashMap::new();
        let mut manifest_bytes = 0u64;
        let datasets = all(kv, Table::Datasets)?;
        for (k, v) in &datasets {
            let cid = cid_from(k, "dataset key")?;
            let tree = snap
                .datasets
                .get(&cid.to_bytes())
                .ok_or_else(|| fail(format!("dataset record {cid} not in memory")))?;
            *manifests_per_tree.entry(*tree).or_default() += 1;
            manifest_bytes += (v.len() - 9) as u64;
        }
        if datasets.len() != snap.datasets.len() {
            return Err(fail("dataset records and memory differ"));
        }
        let trees = all(kv, Table::Trees)?;
        if trees.len() != snap.trees.len() {
            return Err(fail("tree records and memory differ"));
        }
        let mut recorded = HashMap::new();
        for (k, v) in &trees {
            let cid = cid_from(k, "tree key")?;
            let t = TreeVal::decode(v)?;
            let (n, held, manifests) = *snap
                .trees
                .get(&cid)
                .ok_or_else(|| fail(format!("tree record {cid} not in memory")))?;
            if (t.blocks_count, t.held) != (n, held) {
                return Err(fail(format!("tree {cid}: record and memory differ")));
            }
            if manifests == 0 || manifests_per_tree.get(&cid) != Some(&manifests) {
                return Err(fail(format!("tree {cid}: manifest count")));
            }
            recorded.insert(cid, t);
        }

        // Detached records: exactly the trees memory knows to be awaiting cleanup.
        let mut detached = BTreeSet::new();
        for (k, _) in all(kv, Table::Detached)? {
            let cid = cid_from(&k, "detached key")?;
            if recorded.contains_key(&cid) {
                return Err(fail(format!("detached record of recorded tree {cid}")));
            }
            detached.insert(cid);
        }
        if detached != snap.detached {
            return Err(fail(format!(
                "detached records {detached:?}, expected {:?}",
                snap.detached
            )));
        }

        // Leaf and staging records, and the references they hold.
        let mut names: HashMap<Cid, u64> = HashMap::new();
        let mut leaves: HashMap<Cid, BTreeSet<u64>> = HashMap::new();
        for (k, v) in all(kv, Table::Leaves)? {
            let tree = cid_from(&k[..38], "leaf key")?;
            let index =
                u64::from_be_bytes(k[38..].try_into().map_err(|_| fail("leaf key length"))?);
            if !recorded.contains_key(&tree) && !detached.contains(&tree) {
                return Err(fail(format!("leaf record {index} of unknown tree {tree}")));
            }
            let block = leaf_block_cid(&v)?;
            if block != Cid::EMPTY_BLOCK {
                *names.entry(block).or_default() += 1;
            }
            leaves.entry(tree).or_default().insert(index);
        }
        for (k, v) in all(kv, Table::Staging)? {
            let (sid, _) = parse_staging_key(&k)?;
            if !snap.stagings.contains(&sid) {
                return Err(fail(format!("staging record of unknown staging {sid}")));
            }
            let block = cid_from(&v, "staging record")?;
            if block != Cid::EMPTY_BLOCK {
                *names.entry(block).or_default() += 1;
            }
        }

        // Bitmaps: chunks only for partial recorded trees, matching their leaf records.
        let mut chunks: HashMap<Cid, BTreeMap<u64, Vec<u8>>> = HashMap::new();
        for (k, v) in all(kv, Table::Bitmaps)? {
            let tree = cid_from(&k[..38], "bitmap key")?;
            let c = u64::from(u32::from_be_bytes(
                k[38..].try_into().map_err(|_| fail("bitmap key length"))?,
            ));
            chunks.entry(tree).or_default().insert(c, v);
        }
        for (cid, t) in &recorded {
            let held = leaves.get(cid).map_or(0, |l| l.len() as u64);
            if held != t.held {
                return Err(fail(format!(
                    "tree {cid}: {held} leaf records, held {}",
                    t.held
                )));
            }
            let tree_chunks = chunks.remove(cid).unwrap_or_default();
            if t.held == t.blocks_count {
                if !tree_chunks.is_empty() {
                    return Err(fail(format!("bitmap chunks of complete tree {cid}")));
                }
                continue;
            }
            let set = leaves.get(cid).cloned().unwrap_or_default();
            for c in 0..chunk_count(t.blocks_count) {
                let len = chunk_len(t.blocks_count, c);
                let bytes = tree_chunks.get(&c).cloned().unwrap_or_else(|| vec![0; len]);
                if bytes.len() != len {
                    return Err(fail(format!("tree {cid}: bitmap chunk {c} length")));
                }
                for (byte_i, byte) in bytes.iter().enumerate() {
                    for bit in 0..8 {
                        let i = c * CHUNK_BITS + byte_i as u64 * 8 + bit;
                        if (byte & (1 << bit) != 0) != set.contains(&i) {
                            return Err(fail(format!("tree {cid}: bit {i} and leaf records")));
                        }
                    }
                }
            }
        }
        if let Some(tree) = chunks.keys().find(|t| !detached.contains(t)) {
            return Err(fail(format!("bitmap chunks of unknown tree {tree}")));
        }

        // Reference records: counts exact, blocks present, counters exact.
        let mut used = manifest_bytes;
        let refs = all(kv, Table::Refs)?;
        for (k, v) in &refs {
            let cid = cid_from(k, "refs key")?;
            let r = RefVal::decode(v)?;
            let named = names.remove(&cid).unwrap_or(0);
            if r.count != named {
                return Err(fail(format!(
                    "block {cid}: count {} but {named} records name it",
                    r.count
                )));
            }
            if r.count == 0 && !r.loose {
                return Err(fail(format!("block {cid}: unreferenced, not standalone")));
            }
            match kv.get(Table::Blocks, k)? {
                Some(b) if b.len() as u64 == r.len => {}
                _ => return Err(fail(format!("block {cid}: bytes missing or wrong length"))),
            }
            used += r.len;
        }
        if let Some((cid, _)) = names.iter().next() {
            return Err(fail(format!("block {cid} named but not stored")));
        }
        let mut blocks = 0usize;
        kv.scan(Table::Blocks, &[], &mut |_, _| {
            blocks += 1;
            Ok(ControlFlow::Continue(()))
        })?;
        if blocks != refs.len() {
            return Err(fail("blocks without reference record"));
        }
        let stored = (refs.len() + datasets.len()) as u64;
        if (snap.used, snap.stored) != (used, stored) {
            return Err(fail(format!(
                "counters ({}, {}), tables say ({used}, {stored})",
                snap.used, snap.stored
            )));
        }
        Ok(())
    }
}
