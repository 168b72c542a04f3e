//! cairn's block and metadata store.
//!
//! One trait, [`BlockStore`], with two backends: [`FjallStore`] on disk and [`MemStore`] in
//! memory. One test suite (`tests/suite.rs`) runs against both.
//!
//! What is stored:
//! - **blocks** by block CID, each with a reference count (how many leaf or staging records
//!   point at it); a block with no reference is garbage;
//! - **leaf records**: `(treeCid, index) → (block CID, proof)`;
//! - **manifests** by manifest CID (the exact bytes), each with a [`DatasetRecord`];
//! - **trees**: per treeCid, its block count and a block **bitmap** (which indices are held), for
//!   resuming downloads and serving partial datasets;
//! - **staging** records of writes in progress (uploads), so a crash never leaves a partial
//!   dataset: at open, every staging record is rolled back and its unreferenced blocks reclaimed.
//!
//! Quota: `quota_used_bytes` counts the bytes of stored blocks and manifests exactly. A write that
//! would pass the quota first evicts cached (unpinned, complete, not being written) datasets,
//! least recently used first, and fails with [`StoreError::QuotaExceeded`] if that is not enough.
//! Pinned datasets are never evicted.
//!
//! All methods are blocking; async callers use `spawn_blocking`.

mod types;

pub use types::*;
