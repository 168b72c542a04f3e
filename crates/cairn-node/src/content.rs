//! What peers may read from this node: the [`ContentServer`] the network layer calls, backed by
//! the store. Only advertised datasets are served (`rest-api.md` §2.10).

use std::sync::Arc;

use bytes::Bytes;
use cairn_core::{Cid, Codec};
use cairn_net::{ContentServer, ServedBlock};
use cairn_store::{BlockStore, TreeInfo};

/// Serves manifests, presences and blocks from the store.
#[derive(Debug)]
pub(crate) struct StoreContent {
    store: Arc<dyn BlockStore>,
    /// Test-only liar mode: every block whose index is 3 mod 7 is served with a flipped byte.
    corrupt: bool,
}

impl StoreContent {
    pub(crate) fn new(store: Arc<dyn BlockStore>, corrupt: bool) -> Self {
        if corrupt {
            tracing::warn!("test mode: this node serves corrupted blocks");
        }
        StoreContent { store, corrupt }
    }

    /// What the store knows of `tree`, if some advertised manifest of it is stored.
    fn advertised_tree(&self, tree: &Cid) -> Option<TreeInfo> {
        match self.store.tree_info(tree) {
            Ok(Some(info)) if info.advertised => Some(info),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(%tree, error = %e, "reading tree info for a peer failed");
                None
            }
        }
    }
}

/// Maximal runs of set bits of `bitmap` (LSB first) within `[start, end)`.
pub(crate) fn held_runs(bitmap: &[u8], start: u64, end: u64) -> Vec<(u64, u64)> {
    let bit = |i: u64| {
        bitmap
            .get((i / 8) as usize)
            .is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    let mut runs = Vec::new();
    let mut run_start = None;
    for i in start..end {
        match (bit(i), run_start) {
            (true, None) => run_start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i - s));
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = run_start {
        runs.push((s, end - s));
    }
    runs
}

impl ContentServer for StoreContent {
    fn manifest(&self, cid: &Cid) -> Option<Bytes> {
        if cid.codec() != Codec::Manifest {
            return None;
        }
        match self.store.dataset(cid) {
            Ok(Some(record)) if record.flags.advertise => Some(record.manifest_bytes),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(%cid, error = %e, "reading a manifest for a peer failed");
                None
            }
        }
    }

    fn presence(&self, tree: &Cid, start: u64, count: u64) -> Option<(Vec<(u64, u64)>, bool)> {
        let info = self.advertised_tree(tree)?;
        let end = start.saturating_add(count).min(info.blocks_count);
        let start = start.min(end);
        if info.held == info.blocks_count {
            let runs = if start < end {
                vec![(start, end - start)]
            } else {
                Vec::new()
            };
            return Some((runs, true));
        }
        let bitmap = self.store.bitmap(tree).ok()??;
        Some((held_runs(&bitmap, start, end), false))
    }

    fn blocks(&self, tree: &Cid, indices: &[u64]) -> Vec<ServedBlock> {
        if self.advertised_tree(tree).is_none() {
            return Vec::new();
        }
        let mut out = Vec::with_capacity(indices.len());
        for &index in indices {
            let Ok(Some(leaf)) = self.store.leaf(tree, index) else {
                continue;
            };
            let data = if leaf.block_cid == Cid::EMPTY_BLOCK {
                Bytes::new()
            } else {
                match self.store.get_block(&leaf.block_cid) {
                    Ok(Some(data)) => data,
                    _ => continue,
                }
            };
            let data = if self.corrupt && index % 7 == 3 && !data.is_empty() {
                let mut bad = data.to_vec();
                bad[0] ^= 0xff;
                Bytes::from(bad)
            } else {
                data
            };
            out.push(ServedBlock {
                index,
                cid: leaf.block_cid,
                data,
                proof: leaf.proof,
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs() {
        let bm = [0b1011_0111u8, 0b0000_0001];
        assert_eq!(held_runs(&bm, 0, 10), vec![(0, 3), (4, 2), (7, 2)]);
        assert_eq!(held_runs(&bm, 1, 5), vec![(1, 2), (4, 1)]);
        assert_eq!(held_runs(&bm, 9, 12), vec![]);
    }
}
