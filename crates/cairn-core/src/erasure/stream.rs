//! Streaming erasure coding: protect a dataset and rebuild rows one batch of columns at a time.
//!
//! Both machines follow the same pattern. The caller reads the blocks of a batch of consecutive
//! columns from wherever they live (a store, the network), hands them to a `&self` method that
//! does the heavy work on every core and returns the batch's results, stores what it must, and
//! passes the results back with `accept`, in column order. Only the 32-byte digests of every
//! index stay in memory (about 0.5 MiB per GiB of data at 64 KiB blocks), never the data, so a
//! 10 GB dataset is processed in the memory of one batch.
//!
//! Shard buffers are *row-major*: for `rows` rows and a batch of `count` columns starting at
//! `first`, entry `i·count + j` is the block of row `rows[i]` in column `first + j`, that is
//! tree index `first + j + rows[i]·steps`. A padding index is given as an empty slice (its
//! symbol is `blockSize` zero bytes and it is never stored).

use reed_solomon_simd::ReedSolomonEncoder;

use super::{ErasureError, Layout, cell_root, count};
use crate::{
    cid::{Digest, EMPTY_DIGEST, sha256},
    manifest::Manifest,
    merkle::MerkleTree,
};

/// Columns processed per thread at least, so a small batch does not pay for thread spawns.
const MIN_COLUMNS_PER_THREAD: usize = 2;

/// Runs `work` over `columns` split into contiguous parts, one per available core, and returns
/// the parts' results in column order.
fn par_columns<T: Send>(
    columns: usize,
    work: impl Fn(std::ops::Range<usize>) -> Result<T, ErasureError> + Sync,
) -> Result<Vec<T>, ErasureError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(columns / MIN_COLUMNS_PER_THREAD).max(1);
    if threads == 1 {
        return Ok(vec![work(0..columns)?]);
    }
    let per = columns.div_ceil(threads);
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = (per..columns)
            .step_by(per)
            .map(|start| scope.spawn(move || work(start..(start + per).min(columns))))
            .collect();
        let mut out = vec![work(0..per.min(columns))?];
        for handle in handles {
            match handle.join() {
                Ok(part) => out.push(part?),
                Err(_) => return Err(ErasureError::Codec("a coding thread panicked".into())),
            }
        }
        Ok(out)
    })
}

/// The leaf of a stored block, or `EMPTY` at a padding index.
fn leaf_of(layout: &Layout, index: u64, block: &[u8]) -> Digest {
    if layout.is_padding(index) {
        EMPTY_DIGEST
    } else {
        sha256(block)
    }
}

/// The cell root of a stored block, or `EMPTY` at a padding index.
fn cell_root_of(layout: &Layout, index: u64, block: &[u8]) -> Result<Digest, ErasureError> {
    if layout.is_padding(index) {
        Ok(EMPTY_DIGEST)
    } else {
        cell_root(block)
    }
}

/// Checks a row-major shard buffer: `rows · count` entries, each `blockSize` bytes, or empty
/// exactly at padding indices.
fn check_shards<B: AsRef<[u8]>>(
    layout: &Layout,
    rows: &[u32],
    first: u64,
    columns: u64,
    shards: &[B],
) -> Result<(), ErasureError> {
    count("shards", rows.len() as u64 * columns, shards.len())?;
    if columns == 0
        || first
            .checked_add(columns)
            .is_none_or(|end| end > layout.steps)
    {
        return Err(ErasureError::OutOfRange {
            what: "column batch end",
            value: first.saturating_add(columns),
            limit: layout.steps,
        });
    }
    for (i, &r) in rows.iter().enumerate() {
        for j in 0..columns {
            let index = layout.shard_index(first + j, r)?;
            let len = shards[i * columns as usize + j as usize].as_ref().len();
            let expected = if layout.is_padding(index) {
                0
            } else {
                layout.block_size.as_usize()
            };
            if len != expected {
                return Err(ErasureError::Size {
                    what: "block at index",
                    index,
                    expected,
                    got: len,
                });
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------- protect

/// The parity and digests of one batch of columns, from [`ProtectEncoder::encode_columns`].
#[derive(Debug, Clone)]
pub struct EncodedColumns {
    first: u64,
    columns: u64,
    /// Parity blocks, row-major over the M parity rows (`j·columns + c` is parity row `K + j`,
    /// column `first + c`).
    parity: Vec<Vec<u8>>,
    parity_leaves: Vec<Digest>,
    /// Cell roots of the K data rows then the M parity rows, row-major.
    cell_roots: Vec<Digest>,
}

impl EncodedColumns {
    /// The parity blocks with their tree indices and CIDs, to store.
    pub fn parity_blocks(&self, layout: &Layout) -> impl Iterator<Item = (u64, Digest, &[u8])> {
        let columns = self.columns;
        let first = self.first;
        let k = layout.k;
        let steps = layout.steps;
        self.parity
            .iter()
            .zip(&self.parity_leaves)
            .enumerate()
            .map(move |(i, (block, leaf))| {
                let (j, c) = (i as u64 / columns, i as u64 % columns);
                (
                    first + c + (u64::from(k) + j) * steps,
                    *leaf,
                    block.as_slice(),
                )
            })
    }

    /// Like [`Self::parity_blocks`], giving up the blocks without copying them (call
    /// [`ProtectEncoder::accept`] first).
    pub fn into_parity_blocks(
        self,
        layout: &Layout,
    ) -> impl Iterator<Item = (u64, Digest, Vec<u8>)> {
        let columns = self.columns;
        let first = self.first;
        let k = layout.k;
        let steps = layout.steps;
        self.parity
            .into_iter()
            .zip(self.parity_leaves)
            .enumerate()
            .map(move |(i, (block, leaf))| {
                let (j, c) = (i as u64 / columns, i as u64 % columns);
                (first + c + (u64::from(k) + j) * steps, leaf, block)
            })
    }

    /// The first column of the batch.
    pub fn first(&self) -> u64 {
        self.first
    }

    /// Columns in the batch.
    pub fn columns(&self) -> u64 {
        self.columns
    }
}

/// What [`ProtectEncoder::finish`] produces: everything a node needs to commit the protected
/// dataset, except the parity blocks (already handed out batch by batch).
#[derive(Debug, Clone)]
pub struct ProtectedTree {
    /// The protected tree over all `total` leaves.
    pub tree: MerkleTree,
    /// `slotRoot(r)` for every row.
    pub slot_roots: Vec<Digest>,
    /// The protected manifest.
    pub manifest: Manifest,
    /// Its exact encoding.
    pub manifest_bytes: Vec<u8>,
    /// Its CID.
    pub manifest_cid: crate::cid::Cid,
}

/// Protects a dataset in column batches (`wire.md` §4.2–§4.5).
///
/// The caller reads the K data rows of each batch of columns (see the module docs), calls
/// [`Self::encode_columns`], stores the parity it returns, and calls [`Self::accept`]; then
/// [`Self::finish`] builds the protected tree, the slot roots and the protected manifest. Data
/// blocks are read once and never copied; the original leaves are taken as given (they come
/// from the original tree's verified leaf records).
#[derive(Debug, Clone)]
pub struct ProtectEncoder {
    layout: Layout,
    original: Manifest,
    leaves: Vec<Digest>,
    cell_roots: Vec<Digest>,
    next: u64,
}

impl ProtectEncoder {
    /// Starts protecting `original` (a plain manifest) whose tree has leaves `original_leaves`,
    /// with `K` data and `M` parity rows. Fails if the leaves are not `original.tree_cid`'s.
    pub fn new(
        original: &Manifest,
        original_leaves: Vec<Digest>,
        k: u32,
        m: u32,
    ) -> Result<ProtectEncoder, ErasureError> {
        if original.erasure.is_some() {
            return Err(ErasureError::AlreadyProtected);
        }
        let layout = Layout::new(k, m, original.block_size, original.dataset_size)?;
        count("original leaves", layout.n, original_leaves.len())?;
        let tree = MerkleTree::build(original_leaves)?;
        if tree.root() != *original.tree_cid.digest() {
            return Err(ErasureError::TreeMismatch);
        }
        let mut leaves = tree.leaves().to_vec();
        drop(tree);
        leaves.resize(layout.total as usize, EMPTY_DIGEST);
        Ok(ProtectEncoder {
            layout,
            original: original.clone(),
            leaves,
            cell_roots: vec![EMPTY_DIGEST; layout.total as usize],
            next: 0,
        })
    }

    /// The layout being built.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The next column [`Self::accept`] expects; `steps` when every column is in.
    pub fn next_column(&self) -> u64 {
        self.next
    }

    /// The protected leaf of `index` as known so far: original leaves from the start, `EMPTY`
    /// at padding, parity leaves once their batch is accepted (`EMPTY` before).
    pub fn leaf(&self, index: u64) -> Digest {
        self.leaves
            .get(index as usize)
            .copied()
            .unwrap_or(EMPTY_DIGEST)
    }

    /// The parity of columns `[first, first + columns)` from their K data rows (row-major,
    /// rows `0..K`; empty slices at padding indices), row-major over the M parity rows. This
    /// is the coding alone, on every core; [`Self::encode_columns`] adds the digests.
    pub fn parity_columns<B: AsRef<[u8]> + Sync>(
        &self,
        first: u64,
        columns: u64,
        data: &[B],
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        let layout = &self.layout;
        let data_rows: Vec<u32> = (0..layout.k).collect();
        check_shards(layout, &data_rows, first, columns, data)?;
        let (k, m) = (layout.k as usize, layout.m as usize);
        let cols = columns as usize;
        let block_size = layout.block_size.as_usize();
        // Each part: parity [j][c] of its columns.
        let parts: Vec<Vec<Vec<Vec<u8>>>> = par_columns(cols, |range| {
            let zero = vec![0u8; block_size];
            let mut encoder = ReedSolomonEncoder::new(k, m, block_size)?;
            let mut parity = vec![Vec::with_capacity(range.len()); m];
            for c in range {
                for r in 0..k {
                    let block = data[r * cols + c].as_ref();
                    encoder.add_original_shard(if block.is_empty() { &zero[..] } else { block })?;
                }
                let result = encoder.encode()?;
                for (j, shard) in result.recovery_iter().enumerate() {
                    parity[j].push(shard.to_vec());
                }
            }
            Ok(parity)
        })?;
        let mut parts = parts;
        let mut parity = Vec::with_capacity(m * cols);
        for j in 0..m {
            for part in &mut parts {
                parity.append(&mut part[j]);
            }
        }
        Ok(parity)
    }

    /// Encodes columns `[first, first + columns)` from their K data rows (as
    /// [`Self::parity_columns`]): the parity blocks, their leaves, and the cell roots of every
    /// block of the batch. Uses every core; touches no state, so the caller may read the next
    /// batch meanwhile.
    pub fn encode_columns<B: AsRef<[u8]> + Sync>(
        &self,
        first: u64,
        columns: u64,
        data: &[B],
    ) -> Result<EncodedColumns, ErasureError> {
        let parity = self.parity_columns(first, columns, data)?;
        let layout = &self.layout;
        let k = layout.k as usize;
        let cols = columns as usize;
        // Every block of the batch, row-major over rows 0..K+M, with its tree index.
        let data_part = data.len();
        let block = |i: usize| -> &[u8] {
            if i < data_part {
                data[i].as_ref()
            } else {
                &parity[i - data_part]
            }
        };
        let rows = k + layout.m as usize;
        // Column by column, so both cores get the same mix of data and parity; each part:
        // cell roots [row][c], parity leaves [j][c].
        type Part = (Vec<Vec<Digest>>, Vec<Vec<Digest>>);
        let parts: Vec<Part> = par_columns(cols, |range| {
            let mut cells = vec![Vec::with_capacity(range.len()); rows];
            let mut leaves = vec![Vec::with_capacity(range.len()); rows - k];
            for c in range {
                for (r, row_cells) in cells.iter_mut().enumerate() {
                    let bytes = block(r * cols + c);
                    let index = first + c as u64 + r as u64 * layout.steps;
                    row_cells.push(cell_root_of(layout, index, bytes)?);
                    if r >= k {
                        leaves[r - k].push(sha256(bytes));
                    }
                }
            }
            Ok((cells, leaves))
        })?;
        let mut cell_roots = Vec::with_capacity(rows * cols);
        let mut parity_leaves = Vec::with_capacity(parity.len());
        for r in 0..rows {
            for part in &parts {
                cell_roots.extend_from_slice(&part.0[r]);
            }
        }
        for j in 0..rows - k {
            for part in &parts {
                parity_leaves.extend_from_slice(&part.1[j]);
            }
        }
        debug_assert_eq!(cell_roots.len(), (k + layout.m as usize) * cols);
        Ok(EncodedColumns {
            first,
            columns,
            parity,
            parity_leaves,
            cell_roots,
        })
    }

    /// Records a batch's digests. Batches must come in column order.
    pub fn accept(&mut self, batch: &EncodedColumns) -> Result<(), ErasureError> {
        if batch.first != self.next {
            return Err(ErasureError::OutOfRange {
                what: "column batch (out of order)",
                value: batch.first,
                limit: self.next,
            });
        }
        let layout = self.layout;
        let cols = batch.columns;
        for (i, root) in batch.cell_roots.iter().enumerate() {
            let (r, c) = (i as u64 / cols, i as u64 % cols);
            self.cell_roots[(batch.first + c + r * layout.steps) as usize] = *root;
        }
        for (index, leaf, _) in batch.parity_blocks(&layout) {
            self.leaves[index as usize] = leaf;
        }
        self.next += cols;
        Ok(())
    }

    /// Builds the protected tree, the slot roots and the protected manifest once every column
    /// is in.
    pub fn finish(self) -> Result<ProtectedTree, ErasureError> {
        if self.next != self.layout.steps {
            return Err(ErasureError::Count {
                what: "encoded columns",
                expected: self.layout.steps,
                got: self.next,
            });
        }
        let slot_roots = self.layout.slot_roots(&self.cell_roots)?;
        let tree = MerkleTree::build(self.leaves)?;
        let manifest = self
            .layout
            .protected_manifest(&self.original, &tree.root(), &slot_roots)?;
        let manifest_bytes = manifest.encode();
        let manifest_cid = Manifest::cid_of(&manifest_bytes);
        Ok(ProtectedTree {
            tree,
            slot_roots,
            manifest,
            manifest_bytes,
            manifest_cid,
        })
    }
}

// ---------------------------------------------------------------------- rebuild

/// The rebuilt blocks and digests of one batch of columns, from [`RowRebuild::rebuild_columns`].
#[derive(Debug, Clone)]
pub struct RebuiltColumns {
    first: u64,
    columns: u64,
    /// Target blocks, row-major over the targets (empty at padding).
    blocks: Vec<Vec<u8>>,
    /// Leaves of every row, row-major over all `K + M` rows.
    leaves: Vec<Digest>,
    /// Cell roots of the sources then the targets, row-major.
    cell_roots: Vec<Digest>,
}

impl RebuiltColumns {
    /// The rebuilt blocks with their tree indices and leaves (padding positions skipped), to
    /// stage until [`RowRebuild::finish`] has verified them.
    pub fn target_blocks<'a>(
        &'a self,
        rebuild: &'a RowRebuild,
    ) -> impl Iterator<Item = (u64, Digest, &'a [u8])> + 'a {
        let columns = self.columns;
        let first = self.first;
        let layout = rebuild.layout;
        let rows = layout.rows() as u64;
        self.blocks
            .iter()
            .enumerate()
            .filter(|(_, block)| !block.is_empty())
            .map(move |(i, block)| {
                let (t, c) = (i as u64 / columns, i as u64 % columns);
                let r = u64::from(rebuild.targets[t as usize]);
                let index = first + c + r * layout.steps;
                debug_assert!(r < rows);
                (
                    index,
                    self.leaves[(r * columns + c) as usize],
                    block.as_slice(),
                )
            })
    }

    /// Columns in the batch.
    pub fn columns(&self) -> u64 {
        self.columns
    }
}

/// Why a rebuild failed its final checks. Nothing rebuilt may be kept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RebuildError {
    /// A source row does not hash to its slot root: its holder (or disk) gave bad data.
    #[error("source row {row} does not match its slot root")]
    BadSourceRow {
        /// The row.
        row: u32,
    },
    /// A rebuilt row does not hash to its slot root although every source did: the manifest
    /// is inconsistent.
    #[error("rebuilt row {row} does not match its slot root")]
    BadRebuiltRow {
        /// The row.
        row: u32,
    },
    /// Every row matches its slot root but the leaves do not give the manifest's tree.
    #[error("the rebuilt dataset does not match the manifest's {0}")]
    TreeMismatch(&'static str),
    /// A coding, size or layout error.
    #[error(transparent)]
    Erasure(#[from] ErasureError),
}

/// Rebuilds rows of a protected dataset from any K other rows (`wire.md` §4.4, `durability.md`
/// §12.3): column by column, decode the K source symbols, re-encode the parity, hash every
/// block of every row. [`Self::finish`] then checks each source row and each rebuilt row
/// against its slot root, the protected tree against `treeCid` and the data leaves against
/// `originalTreeCid`, and returns the protected tree, whose proofs the rebuilt blocks are
/// stored and served with.
///
/// It reads exactly the live blocks of the K source rows, nothing else.
#[derive(Debug, Clone)]
pub struct RowRebuild {
    layout: Layout,
    tree_root: Digest,
    original_root: Digest,
    slot_roots: Vec<Digest>,
    sources: Vec<u32>,
    targets: Vec<u32>,
    leaves: Vec<Digest>,
    /// Cell roots of the sources then the targets, `steps` each.
    cell_roots: Vec<Vec<Digest>>,
    next: u64,
}

impl RowRebuild {
    /// Prepares the rebuild of rows `targets` of the protected dataset of `manifest` from the K
    /// rows `sources` (distinct, in any order, none of them a target).
    pub fn new(
        manifest: &Manifest,
        sources: &[u32],
        targets: &[u32],
    ) -> Result<RowRebuild, ErasureError> {
        let layout = Layout::from_manifest(manifest)?;
        let ext = manifest
            .erasure
            .as_ref()
            .ok_or(ErasureError::NotProtected)?;
        count("source rows", u64::from(layout.k), sources.len())?;
        if targets.is_empty() {
            return Err(ErasureError::Count {
                what: "target rows",
                expected: 1,
                got: 0,
            });
        }
        let mut seen = vec![false; layout.rows() as usize];
        for &r in sources.iter().chain(targets) {
            layout.check_row(r)?;
            if std::mem::replace(&mut seen[r as usize], true) {
                return Err(ErasureError::InvalidExtension(
                    "source and target rows must be distinct",
                ));
            }
        }
        let mut sources = sources.to_vec();
        sources.sort_unstable();
        Ok(RowRebuild {
            layout,
            tree_root: *manifest.tree_cid.digest(),
            original_root: *ext.original_tree_cid.digest(),
            slot_roots: ext.slot_roots.iter().map(|c| *c.digest()).collect(),
            cell_roots: vec![
                Vec::with_capacity(layout.steps as usize);
                sources.len() + targets.len()
            ],
            sources,
            targets: targets.to_vec(),
            leaves: vec![EMPTY_DIGEST; layout.total as usize],
            next: 0,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The source rows, in the order [`Self::rebuild_columns`] wants their blocks.
    pub fn sources(&self) -> &[u32] {
        &self.sources
    }

    /// The rows being rebuilt.
    pub fn targets(&self) -> &[u32] {
        &self.targets
    }

    /// The next column [`Self::accept`] expects; `steps` when every column is in.
    pub fn next_column(&self) -> u64 {
        self.next
    }

    /// Rebuilds columns `[first, first + columns)` from the blocks of the source rows
    /// (row-major in [`Self::sources`] order; empty slices at padding indices). Uses every core;
    /// touches no state.
    pub fn rebuild_columns<B: AsRef<[u8]> + Sync>(
        &self,
        first: u64,
        columns: u64,
        shards: &[B],
    ) -> Result<RebuiltColumns, ErasureError> {
        let layout = &self.layout;
        check_shards(layout, &self.sources, first, columns, shards)?;
        let rows = layout.rows() as usize;
        let cols = columns as usize;
        let tracked: Vec<u32> = self.sources.iter().chain(&self.targets).copied().collect();
        // Each part: leaves [row][c], cell roots [tracked][c], target blocks [t][c].
        type Part = (Vec<Vec<Digest>>, Vec<Vec<Digest>>, Vec<Vec<Vec<u8>>>);
        let parts: Vec<Part> = par_columns(cols, |range| {
            let mut leaves = vec![Vec::with_capacity(range.len()); rows];
            let mut cells = vec![Vec::with_capacity(range.len()); tracked.len()];
            let mut blocks = vec![Vec::with_capacity(range.len()); self.targets.len()];
            let mut column: Vec<Option<&[u8]>> = vec![None; rows];
            for c in range {
                let s = first + c as u64;
                column.iter_mut().for_each(|slot| *slot = None);
                for (i, &r) in self.sources.iter().enumerate() {
                    let block = shards[i * cols + c].as_ref();
                    column[r as usize] = (!block.is_empty()).then_some(block);
                }
                let all = layout.rebuild_column(s, &column)?;
                for (r, shard) in all.iter().enumerate() {
                    let index = s + r as u64 * layout.steps;
                    leaves[r].push(leaf_of(layout, index, shard));
                }
                for (t, &r) in tracked.iter().enumerate() {
                    let index = s + u64::from(r) * layout.steps;
                    cells[t].push(cell_root_of(layout, index, &all[r as usize])?);
                }
                let mut all = all;
                for (t, &r) in self.targets.iter().enumerate() {
                    let index = s + u64::from(r) * layout.steps;
                    let block = if layout.is_padding(index) {
                        Vec::new()
                    } else {
                        std::mem::take(&mut all[r as usize])
                    };
                    blocks[t].push(block);
                }
            }
            Ok((leaves, cells, blocks))
        })?;
        let mut leaves = Vec::with_capacity(rows * cols);
        let mut cell_roots = Vec::with_capacity(tracked.len() * cols);
        let mut blocks = Vec::with_capacity(self.targets.len() * cols);
        for r in 0..rows {
            for part in &parts {
                leaves.extend_from_slice(&part.0[r]);
            }
        }
        for t in 0..tracked.len() {
            for part in &parts {
                cell_roots.extend_from_slice(&part.1[t]);
            }
        }
        let mut parts = parts;
        for t in 0..self.targets.len() {
            for part in &mut parts {
                blocks.append(&mut part.2[t]);
            }
        }
        Ok(RebuiltColumns {
            first,
            columns,
            blocks,
            leaves,
            cell_roots,
        })
    }

    /// Records a batch's digests. Batches must come in column order.
    pub fn accept(&mut self, batch: &RebuiltColumns) -> Result<(), ErasureError> {
        if batch.first != self.next {
            return Err(ErasureError::OutOfRange {
                what: "column batch (out of order)",
                value: batch.first,
                limit: self.next,
            });
        }
        let cols = batch.columns;
        let steps = self.layout.steps;
        for (i, leaf) in batch.leaves.iter().enumerate() {
            let (r, c) = (i as u64 / cols, i as u64 % cols);
            self.leaves[(batch.first + c + r * steps) as usize] = *leaf;
        }
        for (t, roots) in batch.cell_roots.chunks(cols as usize).enumerate() {
            self.cell_roots[t].extend_from_slice(roots);
        }
        self.next += cols;
        Ok(())
    }

    /// Checks everything (see the type docs) and returns the protected tree.
    pub fn finish(self) -> Result<MerkleTree, RebuildError> {
        if self.next != self.layout.steps {
            return Err(ErasureError::Count {
                what: "rebuilt columns",
                expected: self.layout.steps,
                got: self.next,
            }
            .into());
        }
        let slot_root = |cells: &[Digest]| -> Result<Digest, ErasureError> {
            Ok(MerkleTree::build(cells.to_vec())?.root())
        };
        for (i, &row) in self.sources.iter().enumerate() {
            if slot_root(&self.cell_roots[i])? != self.slot_roots[row as usize] {
                return Err(RebuildError::BadSourceRow { row });
            }
        }
        let k = self.sources.len();
        for (t, &row) in self.targets.iter().enumerate() {
            if slot_root(&self.cell_roots[k + t])? != self.slot_roots[row as usize] {
                return Err(RebuildError::BadRebuiltRow { row });
            }
        }
        let n = self.layout.n as usize;
        let original = MerkleTree::build(self.leaves[..n].to_vec()).map_err(ErasureError::from)?;
        if original.root() != self.original_root {
            return Err(RebuildError::TreeMismatch("originalTreeCid"));
        }
        drop(original);
        let tree = MerkleTree::build(self.leaves).map_err(ErasureError::from)?;
        if tree.root() != self.tree_root {
            return Err(RebuildError::TreeMismatch("treeCid"));
        }
        Ok(tree)
    }
}
