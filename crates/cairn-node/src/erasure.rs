//! Erasure coding on stored datasets: protecting a local dataset, rebuilding rows of a protected
//! one from any K others, and completing the padding of a downloaded protected tree.
//!
//! Each job is a blocking function that streams batches of columns through the pure machines of
//! `cairn_core::erasure` (a reader thread fetches the next batch from the store while the
//! current one is coded on every core). New blocks go into a staged write first, so a failure,
//! a refusal (quota) or a crash leaves nothing behind; they become part of a dataset only once
//! everything verified.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
    mpsc,
};

use bytes::Bytes;
use cairn_core::{
    Cid, Codec, Dataset, Digest, EMPTY_DIGEST, ErasureError, Layout, Manifest, MerkleTree,
    ProtectEncoder, RebuildError, RowRebuild,
};
use cairn_store::{
    BlockStore, DatasetFlags, DatasetRecord, DatasetState, LeafBlock, StagingId, StoreError,
};

/// Data bytes read per batch of columns (the batch's parity is about `M/K` times that).
const BATCH_DATA_BYTES: u64 = 8 << 20;
/// Blocks per store write when recording rebuilt or padding leaves.
const LEAF_WRITE_BLOCKS: usize = 256;

/// Why an erasure job failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ErasureJobError {
    /// The dataset carries an erasure extension already.
    #[error("Dataset is already protected")]
    AlreadyProtected,
    /// Protecting needs every block of the original locally.
    #[error("the dataset is not complete locally")]
    NotComplete,
    /// The manifest is not a protected one.
    #[error("the dataset is not protected")]
    NotProtected,
    /// Fewer than K rows are held locally besides the rows to rebuild.
    #[error("only {held} complete rows are held locally, {needed} are needed to rebuild")]
    NotEnoughRows {
        /// Complete rows available as sources.
        held: u32,
        /// K.
        needed: u32,
    },
    /// A block the job needs is not in the store.
    #[error("block {index} of the dataset is missing from the store")]
    MissingBlock {
        /// Its tree index.
        index: u64,
    },
    /// A check failed: a source row or the manifest does not verify.
    #[error("rebuild failed: {0}")]
    Rebuild(#[from] RebuildError),
    /// The coder refused its input.
    #[error("erasure coding failed: {0}")]
    Erasure(#[from] ErasureError),
    /// The store refused (quota) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job was cancelled.
    #[error("cancelled")]
    Cancelled,
}

/// How far a job is, for progress reports; shared with the code that polls it.
#[derive(Debug, Default)]
pub(crate) struct JobProgress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
}

impl JobProgress {
    /// Columns done and columns in all.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Asks the job to stop at its next batch.
    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn check(&self) -> Result<(), ErasureJobError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(ErasureJobError::Cancelled);
        }
        Ok(())
    }
}

/// Aborts a staged write when dropped, unless disarmed.
struct Staging<'a> {
    store: &'a dyn BlockStore,
    id: StagingId,
    armed: bool,
}

impl<'a> Staging<'a> {
    fn begin(store: &'a dyn BlockStore) -> Result<Staging<'a>, StoreError> {
        Ok(Staging {
            store,
            id: store.begin_staging()?,
            armed: true,
        })
    }
}

impl Drop for Staging<'_> {
    fn drop(&mut self) {
        if self.armed
            && let Err(e) = self.store.abort_staging(self.id)
        {
            tracing::warn!(staging = self.id.0, error = %e, "dropping a staged erasure write failed");
        }
    }
}

/// Stores staged blocks on a thread of its own, one batch behind the coding, so disk writes
/// overlap the coding of the next batch.
struct StagedWriter<'s> {
    batches: Option<mpsc::SyncSender<Vec<(u64, Cid, Bytes)>>>,
    done: Option<std::thread::ScopedJoinHandle<'s, Result<(), StoreError>>>,
}

impl<'s> StagedWriter<'s> {
    fn spawn(
        scope: &'s std::thread::Scope<'s, '_>,
        store: &'s dyn BlockStore,
        staging: StagingId,
    ) -> StagedWriter<'s> {
        let (tx, rx) = mpsc::sync_channel::<Vec<(u64, Cid, Bytes)>>(1);
        let done = scope.spawn(move || {
            for batch in rx {
                store.put_staged_blocks(staging, &batch)?;
            }
            Ok(())
        });
        StagedWriter {
            batches: Some(tx),
            done: Some(done),
        }
    }

    /// Queues a batch; if the writer stopped, its error (a refusal such as the quota).
    fn write(&mut self, batch: Vec<(u64, Cid, Bytes)>) -> Result<(), ErasureJobError> {
        if self
            .batches
            .as_ref()
            .is_some_and(|tx| tx.send(batch).is_ok())
        {
            return Ok(());
        }
        self.join()
    }

    /// Waits for every queued batch to be stored.
    fn finish(mut self) -> Result<(), ErasureJobError> {
        self.join()
    }

    fn join(&mut self) -> Result<(), ErasureJobError> {
        drop(self.batches.take());
        match self.done.take().map(std::thread::ScopedJoinHandle::join) {
            Some(Ok(result)) => Ok(result?),
            Some(Err(_)) => Err(ErasureJobError::Store(StoreError::Corrupt(
                "the block writer panicked".into(),
            ))),
            None => Err(ErasureJobError::Store(StoreError::Corrupt(
                "the block writer stopped".into(),
            ))),
        }
    }
}

/// Blocks of one batch of columns, row-major over the rows read (empty at padding).
struct ColumnBatch {
    first: u64,
    columns: u64,
    blocks: Vec<Bytes>,
}

/// Columns per batch: about [`BATCH_DATA_BYTES`] of input, at least one column.
fn batch_columns(layout: &Layout, rows: u64) -> u64 {
    let per_column = rows * u64::from(layout.block_size().get());
    (BATCH_DATA_BYTES / per_column.max(1)).clamp(1, layout.steps())
}

/// Reads the blocks of `rows` of `tree` for every batch of columns, on a thread of its own,
/// and hands the batches over a channel of depth one, so reading overlaps coding.
fn read_batches<'s>(
    scope: &'s std::thread::Scope<'s, '_>,
    store: &'s dyn BlockStore,
    tree: Cid,
    layout: Layout,
    rows: Vec<u32>,
) -> mpsc::Receiver<Result<ColumnBatch, ErasureJobError>> {
    let (tx, rx) = mpsc::sync_channel(1);
    scope.spawn(move || {
        let per_batch = batch_columns(&layout, rows.len() as u64);
        let mut first = 0;
        while first < layout.steps() {
            let columns = per_batch.min(layout.steps() - first);
            let read = || -> Result<ColumnBatch, ErasureJobError> {
                let mut blocks = Vec::with_capacity(rows.len() * columns as usize);
                for &r in &rows {
                    for c in 0..columns {
                        let index = first + c + u64::from(r) * layout.steps();
                        if layout.is_padding(index) {
                            blocks.push(Bytes::new());
                            continue;
                        }
                        let block = store
                            .leaf_block(&tree, index)?
                            .ok_or(ErasureJobError::MissingBlock { index })?;
                        blocks.push(block);
                    }
                }
                Ok(ColumnBatch {
                    first,
                    columns,
                    blocks,
                })
            };
            let batch = read();
            let failed = batch.is_err();
            if tx.send(batch).is_err() || failed {
                return;
            }
            first += columns;
        }
    });
    rx
}

/// The leaves of a tree from its leaf records (`EMPTY` where `missing` allows a gap).
fn stored_leaves(
    store: &dyn BlockStore,
    tree: &Cid,
    count: u64,
    mut missing: impl FnMut(u64) -> bool,
) -> Result<Vec<Digest>, ErasureJobError> {
    let mut leaves = Vec::with_capacity(count as usize);
    for index in 0..count {
        match store.leaf(tree, index)? {
            Some(record) => leaves.push(*record.block_cid.digest()),
            None if missing(index) => leaves.push(EMPTY_DIGEST),
            None => return Err(ErasureJobError::MissingBlock { index }),
        }
    }
    Ok(leaves)
}

/// Protects the complete, plain dataset `record` with K data and M parity rows (`wire.md` §4):
/// parity, protected tree, slot roots and protected manifest, committed with `flags`. Running
/// it again gives the same manifest CID.
pub(crate) fn protect(
    store: &dyn BlockStore,
    record: &DatasetRecord,
    original: &Manifest,
    k: u32,
    m: u32,
    flags: DatasetFlags,
    progress: &JobProgress,
) -> Result<DatasetRecord, ErasureJobError> {
    if original.erasure.is_some() {
        return Err(ErasureJobError::AlreadyProtected);
    }
    if record.state != DatasetState::Complete {
        return Err(ErasureJobError::NotComplete);
    }
    // Bounds first, so bad parameters fail before any reading.
    let layout = Layout::new(k, m, original.block_size, original.dataset_size)?;
    progress.total.store(layout.steps(), Ordering::Relaxed);
    let tree = record.tree_cid;
    let leaves = stored_leaves(store, &tree, layout.original_blocks(), |_| false)?;
    let mut encoder = ProtectEncoder::new(original, leaves, k, m)?;
    let mut staging = Staging::begin(store)?;
    let data_rows: Vec<u32> = (0..k).collect();
    std::thread::scope(|scope| -> Result<(), ErasureJobError> {
        let batches = read_batches(scope, store, tree, layout, data_rows);
        let mut writer = StagedWriter::spawn(scope, store, staging.id);
        for batch in batches {
            progress.check()?;
            let batch = batch?;
            let encoded = encoder.encode_columns(batch.first, batch.columns, &batch.blocks)?;
            encoder.accept(&encoded)?;
            // The data blocks (referenced again by the protected tree), padding, then parity.
            let mut staged: Vec<(u64, Cid, Bytes)> =
                Vec::with_capacity(batch.blocks.len() * (k + m) as usize / k as usize);
            for (i, block) in batch.blocks.into_iter().enumerate() {
                let (r, c) = (i as u64 / batch.columns, i as u64 % batch.columns);
                let index = batch.first + c + r * layout.steps();
                let cid = if block.is_empty() {
                    Cid::EMPTY_BLOCK
                } else {
                    Cid::new(Codec::Block, encoder.leaf(index))
                };
                staged.push((index, cid, block));
            }
            staged.extend(
                encoded
                    .into_parity_blocks(&layout)
                    .map(|(index, leaf, block)| {
                        (index, Cid::new(Codec::Block, leaf), Bytes::from(block))
                    }),
            );
            writer.write(staged)?;
            progress
                .done
                .store(encoder.next_column(), Ordering::Relaxed);
        }
        writer.finish()
    })?;
    let built = encoder.finish()?;
    let dataset = Dataset {
        tree: built.tree,
        manifest: built.manifest,
        manifest_bytes: built.manifest_bytes,
        manifest_cid: built.manifest_cid,
    };
    let committed = store.commit_staging(staging.id, &dataset, flags)?;
    staging.armed = false;
    tracing::info!(
        original = %record.manifest_cid,
        protected = %committed.manifest_cid,
        k, m, "dataset protected"
    );
    Ok(committed)
}

/// What a rebuild did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RebuildReport {
    /// Rows read (always K).
    pub(crate) rows_read: u32,
    /// Bytes read from the store.
    pub(crate) bytes_read: u64,
    /// Blocks written (rebuilt, padding excluded).
    pub(crate) blocks_rebuilt: u64,
}

/// Which rows of a protected tree are fully held: every live index has a leaf record.
pub(crate) fn held_rows(
    store: &dyn BlockStore,
    record: &DatasetRecord,
    layout: &Layout,
) -> Result<Vec<bool>, ErasureJobError> {
    if record.state == DatasetState::Complete {
        return Ok(vec![true; layout.rows() as usize]);
    }
    let bitmap = store.bitmap(&record.tree_cid)?.unwrap_or_default();
    let has = |i: u64| {
        layout.is_padding(i)
            || bitmap
                .get((i / 8) as usize)
                .is_some_and(|b| b & (1 << (i % 8)) != 0)
    };
    Ok((0..layout.rows())
        .map(|r| layout.row(r).is_ok_and(|mut range| range.all(has)))
        .collect())
}

/// Rebuilds rows `targets` of the protected dataset `record` from K rows held locally, checks
/// everything against the manifest (source and rebuilt slot roots, protected and original
/// trees), then records the rebuilt blocks with their proofs. Reads exactly K rows. On any
/// failure nothing is kept.
pub(crate) fn rebuild_rows(
    store: &dyn BlockStore,
    record: &DatasetRecord,
    manifest: &Manifest,
    targets: &[u32],
    progress: &JobProgress,
) -> Result<RebuildReport, ErasureJobError> {
    let layout = Layout::from_manifest(manifest).map_err(|e| match e {
        ErasureError::NotProtected => ErasureJobError::NotProtected,
        other => other.into(),
    })?;
    let held = held_rows(store, record, &layout)?;
    // Prefer data rows as sources: decoding is then a copy for most columns.
    let sources: Vec<u32> = (0..layout.rows())
        .filter(|r| held[*r as usize] && !targets.contains(r))
        .take(layout.k() as usize)
        .collect();
    if sources.len() < layout.k() as usize {
        return Err(ErasureJobError::NotEnoughRows {
            held: sources.len() as u32,
            needed: layout.k(),
        });
    }
    let mut rebuild = RowRebuild::new(manifest, &sources, targets)?;
    progress.total.store(layout.steps(), Ordering::Relaxed);
    let tree = record.tree_cid;
    let staging = Staging::begin(store)?;
    let mut bytes_read = 0u64;
    let mut rebuilt: Vec<(u64, Cid)> = Vec::new();
    std::thread::scope(|scope| -> Result<(), ErasureJobError> {
        let batches = read_batches(scope, store, tree, layout, rebuild.sources().to_vec());
        let mut writer = StagedWriter::spawn(scope, store, staging.id);
        for batch in batches {
            progress.check()?;
            let batch = batch?;
            bytes_read += batch.blocks.iter().map(|b| b.len() as u64).sum::<u64>();
            let columns = rebuild.rebuild_columns(batch.first, batch.columns, &batch.blocks)?;
            let staged: Vec<(u64, Cid, Bytes)> = columns
                .target_blocks(&rebuild)
                .map(|(index, leaf, block)| {
                    (
                        index,
                        Cid::new(Codec::Block, leaf),
                        Bytes::copy_from_slice(block),
                    )
                })
                .collect();
            rebuilt.extend(staged.iter().map(|(index, cid, _)| (*index, *cid)));
            rebuild.accept(&columns)?;
            writer.write(staged)?;
            progress
                .done
                .store(rebuild.next_column(), Ordering::Relaxed);
        }
        writer.finish()
    })?;
    let proofs = rebuild.finish()?;
    // Verified: record the rebuilt blocks and the targets' padding under the tree.
    let padding = targets
        .iter()
        .filter_map(|&r| layout.row(r).ok())
        .flatten()
        .filter(|&i| layout.is_padding(i))
        .map(|i| (i, Cid::EMPTY_BLOCK));
    let entries: Vec<(u64, Cid)> = rebuilt.iter().copied().chain(padding).collect();
    record_leaves(store, &tree, &proofs, &entries)?;
    // The leaf records now reference the blocks: dropping the staging keeps them.
    drop(staging);
    store.sync()?;
    Ok(RebuildReport {
        rows_read: sources.len() as u32,
        bytes_read,
        blocks_rebuilt: rebuilt.len() as u64,
    })
}

/// Writes leaf records for `(index, cid)` of blocks already in the store (staged or held),
/// with proofs from `tree`.
fn record_leaves(
    store: &dyn BlockStore,
    tree_cid: &Cid,
    tree: &MerkleTree,
    entries: &[(u64, Cid)],
) -> Result<(), ErasureJobError> {
    for chunk in entries.chunks(LEAF_WRITE_BLOCKS) {
        let mut blocks = Vec::with_capacity(chunk.len());
        for &(index, cid) in chunk {
            let data = store
                .get_block(&cid)?
                .ok_or(ErasureJobError::MissingBlock { index })?;
            let proof = tree.proof(index).map_err(ErasureError::from)?;
            blocks.push(LeafBlock {
                index,
                cid,
                data,
                proof,
            });
        }
        store.put_leaf_blocks(tree_cid, &blocks)?;
    }
    Ok(())
}

/// Completes a protected tree whose every non-padding block is held: padding is never sent,
/// so its leaf records are added here, with proofs from the tree rebuilt from the stored
/// leaves (checked against `treeCid`). Does nothing for plain or already complete datasets.
pub(crate) fn complete_padding(
    store: &dyn BlockStore,
    record: &DatasetRecord,
    manifest: &Manifest,
) -> Result<(), ErasureJobError> {
    if record.state == DatasetState::Complete || manifest.erasure.is_none() {
        return Ok(());
    }
    let layout = Layout::from_manifest(manifest)?;
    let tree_cid = record.tree_cid;
    let leaves = stored_leaves(store, &tree_cid, layout.total(), |i| layout.is_padding(i))?;
    let tree = MerkleTree::build(leaves).map_err(ErasureError::from)?;
    if tree.root() != *tree_cid.digest() {
        return Err(RebuildError::TreeMismatch("treeCid").into());
    }
    let entries: Vec<(u64, Cid)> = layout.padding().map(|i| (i, Cid::EMPTY_BLOCK)).collect();
    record_leaves(store, &tree_cid, &tree, &entries)?;
    store.sync()?;
    Ok(())
}

/// Makes the missing data blocks of a protected dataset readable while it is streamed
/// (`wire.md` §4.6): rebuild the missing data rows from K rows held locally, or, when fewer are
/// held, fetch whole rows (parity included) from peers until K are, then rebuild. Rebuilt rows
/// are verified and stored, so the next read needs no decoding.
#[derive(Debug, Clone)]
pub(crate) struct ReadRecovery {
    store: Arc<dyn BlockStore>,
    fetcher: crate::fetch::Fetcher,
    manifest_cid: Cid,
    manifest: Manifest,
    layout: Layout,
    attempted: bool,
}

impl ReadRecovery {
    /// `None` for a plain manifest.
    pub(crate) fn new(
        store: Arc<dyn BlockStore>,
        fetcher: crate::fetch::Fetcher,
        manifest_cid: Cid,
        manifest: &Manifest,
    ) -> Option<ReadRecovery> {
        let layout = Layout::from_manifest(manifest).ok()?;
        Some(ReadRecovery {
            store,
            fetcher,
            manifest_cid,
            manifest: manifest.clone(),
            layout,
            attempted: false,
        })
    }

    fn record(&self) -> Result<DatasetRecord, ErasureJobError> {
        self.store
            .dataset(&self.manifest_cid)?
            .ok_or(ErasureJobError::NotComplete)
    }

    /// Data rows with a missing live block, and the number of other rows held in full.
    fn survey(&self, record: &DatasetRecord) -> Result<(Vec<u32>, u32), ErasureJobError> {
        let held = held_rows(self.store.as_ref(), record, &self.layout)?;
        let targets: Vec<u32> = (0..self.layout.k())
            .filter(|&r| !held[r as usize])
            .collect();
        let sources = held.iter().filter(|h| **h).count() as u32;
        Ok((targets, sources))
    }

    /// Rebuilds the missing data rows if K other rows are held locally; true if the data is
    /// then complete. Never touches the network.
    pub(crate) fn rebuild_locally(&self) -> Result<bool, ErasureJobError> {
        let record = self.record()?;
        let (targets, sources) = self.survey(&record)?;
        if targets.is_empty() {
            return Ok(true);
        }
        if sources < self.layout.k() {
            return Ok(false);
        }
        let report = rebuild_rows(
            self.store.as_ref(),
            &record,
            &self.manifest,
            &targets,
            &JobProgress::default(),
        )?;
        tracing::info!(
            cid = %self.manifest_cid, rows = ?targets, bytes_read = report.bytes_read,
            "decoded missing data rows"
        );
        Ok(true)
    }

    /// Called by a reader (on a blocking thread) when block `index` is missing and no transfer
    /// will bring it: fetch rows until K are held, then rebuild. One attempt per reader.
    pub(crate) fn recover(&mut self, index: u64) -> Result<(), ErasureJobError> {
        if std::mem::replace(&mut self.attempted, true) {
            return Err(ErasureJobError::MissingBlock { index });
        }
        if self.rebuild_locally()? {
            return Ok(());
        }
        let record = self.record()?;
        let runtime = tokio::runtime::Handle::current();
        let lease = {
            let _entered = runtime.enter();
            self.fetcher
                .attach_scoped(&record, &self.manifest, crate::fetch::Scope::All)
        };
        let enough = || {
            self.record()
                .and_then(|r| self.survey(&r))
                .is_ok_and(|(targets, sources)| targets.is_empty() || sources >= self.layout.k())
        };
        let fetched = runtime.block_on(lease.transfer.wait_for(enough));
        // Enough rows (or a failure): stop fetching the rest.
        drop(lease);
        if let Err(e) = fetched
            && !enough()
        {
            tracing::warn!(cid = %self.manifest_cid, error = %e, "fetching rows to decode failed");
            return Err(ErasureJobError::MissingBlock { index });
        }
        if self.rebuild_locally()? {
            Ok(())
        } else {
            Err(ErasureJobError::MissingBlock { index })
        }
    }
}

#[cfg(test)]
mod tests {
    use cairn_core::{BlockSize, build_from_bytes, protect as protect_in_memory, sha256};
    use cairn_store::MemStore;

    use super::*;

    /// A store holding the protected form of some data, with only the rows `keep`; the block
    /// of index `corrupt` (if any) is stored with one byte flipped under its true CID, as a
    /// rotting disk would leave it.
    fn seeded(keep: &[u32], corrupt: Option<u64>) -> (MemStore, DatasetRecord, Manifest, Vec<u8>) {
        let data: Vec<u8> = (0..20 * 4096u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let (blocks, dataset) =
            build_from_bytes(&data, BlockSize::MIN, None, None).expect("dataset");
        let blocks: Vec<Vec<u8>> = blocks.into_iter().map(|b| b.data).collect();
        let p = protect_in_memory(&dataset.manifest, &blocks, 4, 3).expect("protect");
        let store = MemStore::new(1 << 30);
        let flags = DatasetFlags {
            pinned: true,
            advertise: false,
        };
        store
            .put_manifest(&p.manifest_cid, p.manifest_bytes.clone().into(), flags)
            .expect("manifest");
        let layout = p.layout;
        let mut leaf_blocks = Vec::new();
        for &r in keep {
            for index in layout
                .row(r)
                .expect("row")
                .filter(|&i| !layout.is_padding(i))
            {
                let mut bytes = p.block(&blocks, index).expect("block").to_vec();
                let cid = Cid::new(Codec::Block, sha256(&bytes));
                if corrupt == Some(index) {
                    bytes[10] ^= 0xff;
                }
                leaf_blocks.push(LeafBlock {
                    index,
                    cid,
                    data: bytes.into(),
                    proof: p.tree.proof(index).expect("proof"),
                });
            }
        }
        store
            .put_leaf_blocks(&p.manifest.tree_cid, &leaf_blocks)
            .expect("leaves");
        let record = store
            .dataset(&p.manifest_cid)
            .expect("read")
            .expect("stored");
        (store, record, p.manifest, data)
    }

    #[test]
    fn rebuild_restores_rows_reading_exactly_k() {
        let (store, record, manifest, data) = seeded(&[1, 3, 4, 6], None);
        let report = rebuild_rows(&store, &record, &manifest, &[0, 2], &JobProgress::default())
            .expect("rebuild");
        let layout = Layout::from_manifest(&manifest).expect("layout");
        assert_eq!(report.rows_read, 4);
        assert_eq!(report.bytes_read, 4 * layout.steps() * 4096);
        let mut read = Vec::new();
        for i in 0..layout.original_blocks() {
            read.extend_from_slice(
                &store
                    .leaf_block(&record.tree_cid, i)
                    .expect("read")
                    .expect("held"),
            );
        }
        read.truncate(data.len());
        assert_eq!(read, data);
    }

    #[test]
    fn a_corrupt_source_row_is_named_and_nothing_is_kept() {
        let layout_steps = 5; // 20 blocks, K = 4: 5 columns.
        let (store, record, manifest, _) = seeded(&[1, 3, 4, 6], Some(3 * layout_steps + 2));
        let before = store.space().expect("space");
        let err = rebuild_rows(&store, &record, &manifest, &[0, 2], &JobProgress::default())
            .expect_err("a corrupt row");
        assert!(
            matches!(
                err,
                ErasureJobError::Rebuild(RebuildError::BadSourceRow { row: 3 })
            ),
            "{err}"
        );
        assert!(err.to_string().contains("row 3"), "{err}");
        assert_eq!(store.space().expect("space"), before);
        assert!(store.leaf(&record.tree_cid, 0).expect("read").is_none());
    }

    #[test]
    fn fewer_than_k_rows_are_refused_before_reading() {
        let (store, record, manifest, _) = seeded(&[1, 4, 6], None);
        let err = rebuild_rows(&store, &record, &manifest, &[0], &JobProgress::default())
            .expect_err("3 rows");
        assert!(
            matches!(err, ErasureJobError::NotEnoughRows { held: 3, needed: 4 }),
            "{err}"
        );
    }
}
