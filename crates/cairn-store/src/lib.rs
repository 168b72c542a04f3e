//! cairn's block and metadata store.
//!
//! One trait, [`BlockStore`], with two backends: [`FjallStore`] on disk and [`MemStore`] in
//! memory. One test suite (`tests/suite.rs`) runs against both.
//!
//! What is stored:
//! - **blocks** by block CID, each with a reference count (how many leaf or staging records
//!   point at it); a block whose count drops to 0 is deleted at once, unless it was stored on
//!   its own by [`BlockStore::put_block`];
//! - **leaf records**: `(treeCid, index) → (block CID, proof)`;
//! - **manifests** by manifest CID (the exact bytes), each with a [`DatasetRecord`];
//! - **trees**: per treeCid, its block count and a block **bitmap** (which indices are held), for
//!   resuming downloads and serving partial datasets;
//! - **staging** records of writes in progress (uploads), so a crash never leaves a partial
//!   dataset: at open, every staging record is rolled back and its unreferenced blocks reclaimed.
//!
//! Operations over a whole dataset (committing an upload, aborting one, deleting a dataset,
//! recovering at open) write in batches of at most [`StoreOptions::batch_records`] records, so
//! their memory does not grow with the dataset; each batch leaves the store consistent, and a
//! crash between batches is finished or rolled back at the next open.
//!
//! Quota: `quota_used_bytes` counts the bytes of stored blocks and manifests exactly. A write that
//! would pass the quota first evicts cached (unpinned, complete, not being written) datasets,
//! least recently used first, and fails with [`StoreError::QuotaExceeded`] if that is not enough.
//! Pinned datasets are never evicted.
//!
//! All methods are blocking; async callers use `spawn_blocking`.
//!
//! Both backends share one implementation of these rules (`engine.rs`), written over a small
//! ordered key-value interface; the on-disk layout is in `docs/on-disk-format.md`.

#[cfg(feature = "fault-injection")]
mod check;
mod codec;
mod disk;
mod engine;
mod kv;
mod mem;
mod types;

pub use disk::FjallStore;
pub use mem::MemStore;
pub use types::*;

/// Implements [`BlockStore`] for a type with an `engine` field by forwarding every method.
macro_rules! forward_block_store {
    ($ty:ty) => {
        impl $crate::BlockStore for $ty {
            fn has_block(&self, cid: &cairn_core::Cid) -> $crate::Result<bool> {
                self.engine.has_block(cid)
            }
            fn get_block(&self, cid: &cairn_core::Cid) -> $crate::Result<Option<bytes::Bytes>> {
                self.engine.get_block(cid)
            }
            fn delete_block(&self, cid: &cairn_core::Cid) -> $crate::Result<$crate::BlockDeletion> {
                self.engine.delete_block(cid)
            }
            fn put_block(&self, cid: &cairn_core::Cid, data: bytes::Bytes) -> $crate::Result<()> {
                self.engine.put_block(cid, data)
            }
            fn begin_staging(&self) -> $crate::Result<$crate::StagingId> {
                self.engine.begin_staging()
            }
            fn put_staged_blocks(
                &self,
                staging: $crate::StagingId,
                blocks: &[(u64, cairn_core::Cid, bytes::Bytes)],
            ) -> $crate::Result<()> {
                self.engine.put_staged_blocks(staging, blocks)
            }
            fn commit_staging(
                &self,
                staging: $crate::StagingId,
                dataset: &cairn_core::Dataset,
                flags: $crate::DatasetFlags,
            ) -> $crate::Result<$crate::DatasetRecord> {
                self.engine.commit_staging(staging, dataset, flags)
            }
            fn abort_staging(&self, staging: $crate::StagingId) -> $crate::Result<()> {
                self.engine.abort_staging(staging)
            }
            fn put_manifest(
                &self,
                manifest_cid: &cairn_core::Cid,
                manifest_bytes: bytes::Bytes,
                flags: $crate::DatasetFlags,
            ) -> $crate::Result<$crate::DatasetRecord> {
                self.engine
                    .put_manifest(manifest_cid, manifest_bytes, flags)
            }
            fn put_leaf_blocks(
                &self,
                tree_cid: &cairn_core::Cid,
                blocks: &[$crate::LeafBlock],
            ) -> $crate::Result<()> {
                self.engine.put_leaf_blocks(tree_cid, blocks)
            }
            fn sync(&self) -> $crate::Result<()> {
                self.engine.sync()
            }
            fn dataset(
                &self,
                manifest_cid: &cairn_core::Cid,
            ) -> $crate::Result<Option<$crate::DatasetRecord>> {
                self.engine.dataset(manifest_cid)
            }
            fn list_datasets(
                &self,
                include_partial: bool,
            ) -> $crate::Result<Vec<$crate::DatasetRecord>> {
                self.engine.list_datasets(include_partial)
            }
            fn leaf(
                &self,
                tree_cid: &cairn_core::Cid,
                index: u64,
            ) -> $crate::Result<Option<$crate::LeafRecord>> {
                self.engine.leaf(tree_cid, index)
            }
            fn leaf_block(
                &self,
                tree_cid: &cairn_core::Cid,
                index: u64,
            ) -> $crate::Result<Option<bytes::Bytes>> {
                self.engine.leaf_block(tree_cid, index)
            }
            fn bitmap(&self, tree_cid: &cairn_core::Cid) -> $crate::Result<Option<Vec<u8>>> {
                self.engine.bitmap(tree_cid)
            }
            fn tree_info(
                &self,
                tree_cid: &cairn_core::Cid,
            ) -> $crate::Result<Option<$crate::TreeInfo>> {
                self.engine.tree_info(tree_cid)
            }
            fn touch(&self, manifest_cid: &cairn_core::Cid) -> $crate::Result<()> {
                self.engine.touch(manifest_cid)
            }
            fn set_flags(
                &self,
                manifest_cid: &cairn_core::Cid,
                flags: $crate::DatasetFlags,
            ) -> $crate::Result<bool> {
                self.engine.set_flags(manifest_cid, flags)
            }
            fn delete_dataset(&self, manifest_cid: &cairn_core::Cid) -> $crate::Result<bool> {
                self.engine.delete_dataset(manifest_cid)
            }
            fn space(&self) -> $crate::Result<$crate::Space> {
                self.engine.space()
            }
            fn get_meta(&self, table: &str, key: &[u8]) -> $crate::Result<Option<bytes::Bytes>> {
                self.engine.get_meta(table, key)
            }
            fn scan_meta(
                &self,
                table: &str,
                prefix: &[u8],
            ) -> $crate::Result<Vec<(Vec<u8>, bytes::Bytes)>> {
                self.engine.scan_meta(table, prefix)
            }
            fn write_meta(&self, ops: &[$crate::MetaOp]) -> $crate::Result<()> {
                self.engine.write_meta(ops)
            }
        }
    };
}
pub(crate) use forward_block_store;
