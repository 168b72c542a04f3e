//! cairn's erasure coding (`wire.md` §4.2–§4.5): the stepped layout, Reed-Solomon parity with
//! `reed-solomon-simd` 3, the cell-based slot roots and their cell proofs, and the protected
//! manifest.
//!
//! Everything here is a pure function over byte slices. A protected dataset of `n` original
//! blocks has `rounded = ceil(n/K)·K` data-or-padding indices and `steps·M` parity indices
//! after them; row `r` is the `steps` consecutive indices from `r·steps`, column `s` the `K+M`
//! indices `s + r·steps`. Padding indices have the empty block: leaf and cell root `EMPTY`,
//! coder symbol `blockSize` zero bytes.

mod stream;

use std::ops::Range;

use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

pub use stream::{
    EncodedColumns, ProtectEncoder, ProtectedTree, RebuildError, RebuiltColumns, RowRebuild,
};

use crate::{
    chunk::BlockSize,
    cid::{Cid, Codec, Digest, EMPTY_DIGEST, sha256},
    dataset::hash_blocks,
    manifest::{ErasureExt, MAX_EC_ROWS, Manifest, StepLayout},
    merkle::{MerkleError, MerkleProof, MerkleTree},
};

/// Bytes per cell of a slot-root cell tree.
pub const CELL_SIZE: usize = 2048;
/// The `strategy` value of the stepped layout, the only one defined.
pub const STRATEGY_STEPPED: u32 = 1;

/// Why an erasure-coding operation fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErasureError {
    /// K and M out of bounds.
    #[error("erasure parameters must satisfy 2 <= K, 1 <= M, K + M <= 1024 (got K = {k}, M = {m})")]
    Params {
        /// Data rows.
        k: u32,
        /// Parity rows.
        m: u32,
    },
    /// An original dataset of 0 bytes.
    #[error("the original dataset is empty")]
    EmptyDataset,
    /// The protected dataset size overflows 64 bits.
    #[error("the protected dataset is too large")]
    TooLarge,
    /// A manifest without an erasure extension where one is needed.
    #[error("the manifest is not protected")]
    NotProtected,
    /// A protected manifest where an original one is needed.
    #[error("the manifest is already protected")]
    AlreadyProtected,
    /// An erasure extension that contradicts its manifest.
    #[error("invalid erasure extension: {0}")]
    InvalidExtension(&'static str),
    /// A list of the wrong length.
    #[error("expected {expected} {what}, got {got}")]
    Count {
        /// What was counted.
        what: &'static str,
        /// The required number.
        expected: u64,
        /// The number given.
        got: u64,
    },
    /// A block or shard of the wrong size.
    #[error("{what} {index} is {got} bytes, expected {expected}")]
    Size {
        /// What was measured.
        what: &'static str,
        /// Its position in the input.
        index: u64,
        /// The required size.
        expected: usize,
        /// Its size.
        got: usize,
    },
    /// Fewer than K shards of a column are available.
    #[error("column needs {needed} shards, only {available} are available")]
    NotEnoughShards {
        /// K.
        needed: u32,
        /// Shards given (padding included).
        available: u32,
    },
    /// A row, column or cell outside the layout.
    #[error("{what} {value} is out of range (limit {limit})")]
    OutOfRange {
        /// What is out of range.
        what: &'static str,
        /// The value.
        value: u64,
        /// The exclusive limit.
        limit: u64,
    },
    /// The blocks do not hash to the original manifest's tree.
    #[error("the blocks do not match the manifest's treeCid")]
    TreeMismatch,
    /// A block whose size is not a valid block size, so it has no cell tree.
    #[error("a block of {0} bytes has no cell tree (not a valid block size)")]
    CellBlockSize(usize),
    /// A tree could not be built or proven.
    #[error(transparent)]
    Merkle(#[from] MerkleError),
    /// The Reed-Solomon library refused its input.
    #[error("reed-solomon: {0}")]
    Codec(String),
}

impl From<reed_solomon_simd::Error> for ErasureError {
    fn from(e: reed_solomon_simd::Error) -> Self {
        ErasureError::Codec(e.to_string())
    }
}

/// What a protected-tree index holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IndexClass {
    /// An original block, `[0, n)`.
    Data,
    /// Padding, `[n, rounded)`: the empty block, zero symbol.
    Padding,
    /// A parity block, `[rounded, total)`.
    Parity,
}

/// The stepped layout of a protected dataset (`wire.md` §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    k: u32,
    m: u32,
    block_size: BlockSize,
    original_dataset_size: u64,
    n: u64,
    rounded: u64,
    steps: u64,
    total: u64,
}

impl Layout {
    /// The layout for `K` data rows, `M` parity rows and an original dataset of
    /// `original_dataset_size` bytes in blocks of `block_size`. Checks the bounds of §4.1.
    pub fn new(
        k: u32,
        m: u32,
        block_size: BlockSize,
        original_dataset_size: u64,
    ) -> Result<Layout, ErasureError> {
        if k < 2 || m < 1 || u64::from(k) + u64::from(m) > u64::from(MAX_EC_ROWS) {
            return Err(ErasureError::Params { k, m });
        }
        if original_dataset_size == 0 {
            return Err(ErasureError::EmptyDataset);
        }
        let n = block_size.blocks_count(original_dataset_size);
        // n ≤ 2^52 and K + M ≤ 1024: none of these overflow.
        let rounded = n.div_ceil(u64::from(k)) * u64::from(k);
        let steps = rounded / u64::from(k);
        let total = rounded + steps * u64::from(m);
        if total.checked_mul(u64::from(block_size.get())).is_none() {
            return Err(ErasureError::TooLarge);
        }
        Ok(Layout {
            k,
            m,
            block_size,
            original_dataset_size,
            n,
            rounded,
            steps,
            total,
        })
    }

    /// The layout of a protected manifest, checking its extension against the manifest
    /// (`wire.md` §4.1; [`Manifest::decode`] has already done so for decoded manifests).
    pub fn from_manifest(manifest: &Manifest) -> Result<Layout, ErasureError> {
        let ext = manifest
            .erasure
            .as_ref()
            .ok_or(ErasureError::NotProtected)?;
        if ext.strategy != STRATEGY_STEPPED {
            return Err(ErasureError::InvalidExtension(
                "strategy must be 1 (stepped)",
            ));
        }
        let layout = Layout::new(
            ext.ec_k,
            ext.ec_m,
            manifest.block_size,
            ext.original_dataset_size,
        )?;
        if layout.protected_dataset_size() != manifest.dataset_size {
            return Err(ErasureError::InvalidExtension(
                "datasetSize does not match the protected layout",
            ));
        }
        if ext.slot_roots.len() as u64 != u64::from(layout.rows()) {
            return Err(ErasureError::InvalidExtension(
                "slotRoots must hold exactly K + M roots",
            ));
        }
        if ext.original_tree_cid.codec() != Codec::Root
            || ext.slot_roots.iter().any(|c| c.codec() != Codec::SlotRoot)
        {
            return Err(ErasureError::InvalidExtension("CID of the wrong codec"));
        }
        Ok(layout)
    }

    /// Data rows K.
    pub fn k(&self) -> u32 {
        self.k
    }

    /// Parity rows M.
    pub fn m(&self) -> u32 {
        self.m
    }

    /// All rows, `K + M` (also the number of slots and of shards per column).
    pub fn rows(&self) -> u32 {
        self.k + self.m
    }

    /// The block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// Size of the original dataset in bytes.
    pub fn original_dataset_size(&self) -> u64 {
        self.original_dataset_size
    }

    /// Original block count `n`.
    pub fn original_blocks(&self) -> u64 {
        self.n
    }

    /// `ceil(n / K) · K`: data and padding indices.
    pub fn rounded(&self) -> u64 {
        self.rounded
    }

    /// `rounded / K`: columns, and blocks per row.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// `rounded + steps · M`: leaves of the protected tree.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// `total · blockSize`, the protected manifest's `datasetSize`.
    pub fn protected_dataset_size(&self) -> u64 {
        self.total * u64::from(self.block_size.get())
    }

    /// Cells per block, `blockSize / 2048`.
    pub fn cells_per_block(&self) -> u64 {
        (self.block_size.as_usize() / CELL_SIZE) as u64
    }

    /// The numbers in the manifest module's form.
    pub fn step_layout(&self) -> StepLayout {
        StepLayout {
            original_blocks: self.n,
            rounded: self.rounded,
            steps: self.steps,
            total: self.total,
        }
    }

    /// Padding indices `[n, rounded)`.
    pub fn padding(&self) -> Range<u64> {
        self.n..self.rounded
    }

    /// Parity indices `[rounded, total)`.
    pub fn parity(&self) -> Range<u64> {
        self.rounded..self.total
    }

    /// The class of `index`, or `None` beyond the tree.
    pub fn class(&self, index: u64) -> Option<IndexClass> {
        if index < self.n {
            Some(IndexClass::Data)
        } else if index < self.rounded {
            Some(IndexClass::Padding)
        } else if index < self.total {
            Some(IndexClass::Parity)
        } else {
            None
        }
    }

    /// True iff `index` is a padding index.
    pub fn is_padding(&self, index: u64) -> bool {
        self.class(index) == Some(IndexClass::Padding)
    }

    /// The row (slot) holding `index`.
    pub fn row_of(&self, index: u64) -> Option<u32> {
        (index < self.total).then(|| (index / self.steps) as u32)
    }

    /// The column (codeword) holding `index`; its shard number is its row.
    pub fn column_of(&self, index: u64) -> Option<u64> {
        (index < self.total).then(|| index % self.steps)
    }

    /// The indices of row `r`: `[r·steps, (r+1)·steps)`.
    pub fn row(&self, r: u32) -> Result<Range<u64>, ErasureError> {
        self.check_row(r)?;
        let start = u64::from(r) * self.steps;
        Ok(start..start + self.steps)
    }

    /// The tree index of shard `r` of column `s`: `s + r·steps` (for a parity shard `r = K + j`
    /// this is `rounded + s + j·steps`).
    pub fn shard_index(&self, s: u64, r: u32) -> Result<u64, ErasureError> {
        self.check_column(s)?;
        self.check_row(r)?;
        Ok(s + u64::from(r) * self.steps)
    }

    /// The `K + M` tree indices of column `s`, in shard order.
    pub fn column(&self, s: u64) -> Result<Vec<u64>, ErasureError> {
        self.check_column(s)?;
        Ok((0..u64::from(self.rows()))
            .map(|r| s + r * self.steps)
            .collect())
    }

    /// `live(r)`: the non-padding positions of row `r`, a prefix of the row.
    pub fn live(&self, r: u32) -> Result<u64, ErasureError> {
        self.check_row(r)?;
        Ok(if r >= self.k {
            self.steps
        } else {
            self.n
                .saturating_sub(u64::from(r) * self.steps)
                .min(self.steps)
        })
    }

    /// The cell geometry of row `r`, which a cell-proof verifier takes from the manifest.
    pub fn cell_geometry(&self, r: u32) -> Result<CellGeometry, ErasureError> {
        Ok(CellGeometry {
            cells: self.cells_per_block(),
            steps: self.steps,
            live: self.live(r)?,
        })
    }

    fn check_row(&self, r: u32) -> Result<(), ErasureError> {
        if r >= self.rows() {
            return Err(ErasureError::OutOfRange {
                what: "row",
                value: u64::from(r),
                limit: u64::from(self.rows()),
            });
        }
        Ok(())
    }

    fn check_column(&self, s: u64) -> Result<(), ErasureError> {
        if s >= self.steps {
            return Err(ErasureError::OutOfRange {
                what: "column",
                value: s,
                limit: self.steps,
            });
        }
        Ok(())
    }

    fn check_block(&self, what: &'static str, index: u64, len: usize) -> Result<(), ErasureError> {
        let expected = self.block_size.as_usize();
        if len != expected {
            return Err(ErasureError::Size {
                what,
                index,
                expected,
                got: len,
            });
        }
        Ok(())
    }

    // ------------------------------------------------------------------ parity (§4.4)

    /// The M parity shards of one column from its K original symbols in shard order
    /// (`blockSize` bytes each; zeros for padding).
    pub fn encode_column<B: AsRef<[u8]>>(
        &self,
        originals: &[B],
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        count("original shards", u64::from(self.k), originals.len())?;
        for (r, shard) in originals.iter().enumerate() {
            self.check_block("original shard", r as u64, shard.as_ref().len())?;
        }
        let mut encoder = self.encoder()?;
        for shard in originals {
            encoder.add_original_shard(shard)?;
        }
        let result = encoder.encode()?;
        Ok(result.recovery_iter().map(<[u8]>::to_vec).collect())
    }

    /// Every parity block, in index order (`rounded`, `rounded + 1`, …), from the `n` original
    /// blocks: column `s` feeds shards `r = 0..K` (index `s + r·steps`, zeros for padding) to
    /// `ReedSolomonEncoder::new(K, M, blockSize)`; recovery shard `j` is index
    /// `rounded + s + j·steps`.
    pub fn encode_parity<B: AsRef<[u8]>>(
        &self,
        data_blocks: &[B],
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        count("original blocks", self.n, data_blocks.len())?;
        for (i, block) in data_blocks.iter().enumerate() {
            self.check_block("original block", i as u64, block.as_ref().len())?;
        }
        let zero = vec![0u8; self.block_size.as_usize()];
        let parity_len = (self.total - self.rounded) as usize;
        let mut parity = vec![Vec::new(); parity_len];
        let mut encoder = self.encoder()?;
        for s in 0..self.steps {
            for r in 0..u64::from(self.k) {
                let index = s + r * self.steps;
                let symbol = data_blocks
                    .get(index as usize)
                    .map_or(&zero[..], AsRef::as_ref);
                encoder.add_original_shard(symbol)?;
            }
            let result = encoder.encode()?;
            for (j, shard) in result.recovery_iter().enumerate() {
                parity[(s + j as u64 * self.steps) as usize] = shard.to_vec();
            }
        }
        Ok(parity)
    }

    /// The K original symbols of column `s` from any K of its `K + M` shards. `shards[r]` is
    /// shard `r` (index `s + r·steps`) or `None` if unavailable; padding shards are known
    /// (zeros) and need not be given. Padding symbols come back as zeros.
    pub fn decode_column<B: AsRef<[u8]>>(
        &self,
        s: u64,
        shards: &[Option<B>],
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        self.check_column(s)?;
        count("column shards", u64::from(self.rows()), shards.len())?;
        let zero = vec![0u8; self.block_size.as_usize()];
        let mut known: Vec<Option<&[u8]>> = Vec::with_capacity(shards.len());
        for (r, shard) in shards.iter().enumerate() {
            let index = s + r as u64 * self.steps;
            let shard = if self.is_padding(index) {
                Some(&zero[..])
            } else {
                shard.as_ref().map(AsRef::as_ref)
            };
            if let Some(bytes) = shard {
                self.check_block("shard", r as u64, bytes.len())?;
            }
            known.push(shard);
        }
        let k = self.k as usize;
        let available = known.iter().flatten().count() as u32;
        if known[..k].iter().all(Option::is_some) {
            return Ok(known[..k].iter().flatten().map(|b| b.to_vec()).collect());
        }
        if available < self.k {
            return Err(ErasureError::NotEnoughShards {
                needed: self.k,
                available,
            });
        }
        let mut decoder =
            ReedSolomonDecoder::new(self.k as usize, self.m as usize, self.block_size.as_usize())?;
        for (r, shard) in known.iter().enumerate() {
            if let Some(bytes) = shard {
                if r < k {
                    decoder.add_original_shard(r, bytes)?;
                } else {
                    decoder.add_recovery_shard(r - k, bytes)?;
                }
            }
        }
        let result = decoder.decode()?;
        known[..k]
            .iter()
            .enumerate()
            .map(|(r, shard)| match shard {
                Some(bytes) => Ok(bytes.to_vec()),
                None => result
                    .restored_original(r)
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| ErasureError::Codec(format!("shard {r} was not restored"))),
            })
            .collect()
    }

    /// All `K + M` shards of column `s` from any K of them: [`Self::decode_column`], then the
    /// missing parity shards re-encoded. A rebuilt block must be verified (slot root or tree)
    /// before it is stored or served (`wire.md` §4.4).
    pub fn rebuild_column<B: AsRef<[u8]>>(
        &self,
        s: u64,
        shards: &[Option<B>],
    ) -> Result<Vec<Vec<u8>>, ErasureError> {
        let originals = self.decode_column(s, shards)?;
        let parity_given = &shards[self.k as usize..];
        let parity = if parity_given.iter().all(Option::is_some) {
            parity_given
                .iter()
                .flatten()
                .map(|b| b.as_ref().to_vec())
                .collect()
        } else {
            let encoded = self.encode_column(&originals)?;
            encoded
                .into_iter()
                .zip(parity_given)
                .map(|(enc, given)| given.as_ref().map_or(enc, |b| b.as_ref().to_vec()))
                .collect()
        };
        let mut all = originals;
        all.extend::<Vec<Vec<u8>>>(parity);
        Ok(all)
    }

    fn encoder(&self) -> Result<ReedSolomonEncoder, ErasureError> {
        Ok(ReedSolomonEncoder::new(
            self.k as usize,
            self.m as usize,
            self.block_size.as_usize(),
        )?)
    }

    // ------------------------------------------------------------------ slot roots (§4.5)

    /// The `steps` cell roots of row `r` from its `live(r)` live blocks, in position order;
    /// padding positions get `EMPTY`.
    pub fn row_cell_roots<B: AsRef<[u8]>>(
        &self,
        r: u32,
        live_blocks: &[B],
    ) -> Result<Vec<Digest>, ErasureError> {
        let live = self.live(r)?;
        count("live blocks", live, live_blocks.len())?;
        let mut roots = Vec::with_capacity(self.steps as usize);
        for (p, block) in live_blocks.iter().enumerate() {
            self.check_block("row block", p as u64, block.as_ref().len())?;
            roots.push(cell_root(block.as_ref())?);
        }
        roots.resize(self.steps as usize, EMPTY_DIGEST);
        Ok(roots)
    }

    /// The row tree of row `r` (leaves: its cell roots), from its live blocks.
    pub fn row_tree<B: AsRef<[u8]>>(
        &self,
        r: u32,
        live_blocks: &[B],
    ) -> Result<MerkleTree, ErasureError> {
        Ok(MerkleTree::build(self.row_cell_roots(r, live_blocks)?)?)
    }

    /// `slotRoot(r)` from the live blocks of row `r`. This is also the check of a fetched or
    /// rebuilt row against `slotRoots[r]`.
    pub fn slot_root<B: AsRef<[u8]>>(
        &self,
        r: u32,
        live_blocks: &[B],
    ) -> Result<Digest, ErasureError> {
        Ok(self.row_tree(r, live_blocks)?.root())
    }

    /// All `K + M` slot roots from the cell roots of every index (`EMPTY` at padding).
    pub fn slot_roots(&self, cell_roots: &[Digest]) -> Result<Vec<Digest>, ErasureError> {
        count("cell roots", self.total, cell_roots.len())?;
        cell_roots
            .chunks(self.steps as usize)
            .map(|row| Ok(MerkleTree::build(row.to_vec())?.root()))
            .collect()
    }

    // ------------------------------------------------------------------ protected tree

    /// The leaves of the protected tree: the `n` original leaves, `EMPTY` for each padding
    /// index, then the parity leaves in index order.
    pub fn protected_leaves(
        &self,
        data_leaves: &[Digest],
        parity_leaves: &[Digest],
    ) -> Result<Vec<Digest>, ErasureError> {
        count("original leaves", self.n, data_leaves.len())?;
        count(
            "parity leaves",
            self.total - self.rounded,
            parity_leaves.len(),
        )?;
        let mut leaves = Vec::with_capacity(self.total as usize);
        leaves.extend_from_slice(data_leaves);
        leaves.resize(self.rounded as usize, EMPTY_DIGEST);
        leaves.extend_from_slice(parity_leaves);
        Ok(leaves)
    }

    /// The protected manifest of `original` (`wire.md` §4.1): `treeCid` the protected tree,
    /// the original block size, `datasetSize = total · blockSize`, filename and mimetype copied,
    /// and the extension with `strategy = 1` and the `K + M` slot roots (codec 0xCD04).
    pub fn protected_manifest(
        &self,
        original: &Manifest,
        protected_root: &Digest,
        slot_roots: &[Digest],
    ) -> Result<Manifest, ErasureError> {
        if original.erasure.is_some() {
            return Err(ErasureError::AlreadyProtected);
        }
        if original.block_size != self.block_size
            || original.dataset_size != self.original_dataset_size
        {
            return Err(ErasureError::InvalidExtension(
                "the layout is not the original manifest's",
            ));
        }
        count("slot roots", u64::from(self.rows()), slot_roots.len())?;
        Ok(Manifest {
            tree_cid: Cid::new(Codec::Root, *protected_root),
            block_size: self.block_size,
            dataset_size: self.protected_dataset_size(),
            filename: original.filename.clone(),
            mimetype: original.mimetype.clone(),
            erasure: Some(ErasureExt {
                ec_k: self.k,
                ec_m: self.m,
                original_tree_cid: original.tree_cid,
                original_dataset_size: self.original_dataset_size,
                strategy: STRATEGY_STEPPED,
                slot_roots: slot_roots
                    .iter()
                    .map(|d| Cid::new(Codec::SlotRoot, *d))
                    .collect(),
            }),
        })
    }
}

fn count(what: &'static str, expected: u64, got: usize) -> Result<(), ErasureError> {
    if got as u64 != expected {
        return Err(ErasureError::Count {
            what,
            expected,
            got: got as u64,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------- cells (§4.5)

/// The cell leaves of a stored block: `H` of each 2048-byte cell. The block must have a valid
/// block size (so 2 to 256 cells, a power of two).
pub fn cell_leaves(block: &[u8]) -> Result<Vec<Digest>, ErasureError> {
    if BlockSize::new(block.len() as u64).is_err() {
        return Err(ErasureError::CellBlockSize(block.len()));
    }
    Ok(block.chunks_exact(CELL_SIZE).map(sha256).collect())
}

/// The cell tree of a stored block.
pub fn cell_tree(block: &[u8]) -> Result<MerkleTree, ErasureError> {
    Ok(MerkleTree::build(cell_leaves(block)?)?)
}

/// The cell root of a stored block (a padding position's cell root is `EMPTY` instead).
pub fn cell_root(block: &[u8]) -> Result<Digest, ErasureError> {
    Ok(cell_tree(block)?.root())
}

/// Cell `q` of a block: bytes `[q·2048, (q+1)·2048)`.
pub fn cell_bytes(block: &[u8], q: u64) -> Option<&[u8]> {
    let start = usize::try_from(q).ok()?.checked_mul(CELL_SIZE)?;
    block.get(start..start.checked_add(CELL_SIZE)?)
}

/// What a cell-proof verifier takes from the manifest for row `r`: cells per block, `steps`
/// and `live(r)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellGeometry {
    /// Cells per block, `blockSize / 2048`.
    pub cells: u64,
    /// Positions per row.
    pub steps: u64,
    /// Live (non-padding) positions of the row.
    pub live: u64,
}

impl CellGeometry {
    /// `live · cells`: the cells that can be sampled.
    pub fn live_cells(&self) -> u64 {
        self.live.saturating_mul(self.cells)
    }

    /// Position `p` and cell-in-block `q` of live cell `c`; `None` if `c ≥ live · cells`.
    pub fn locate(&self, c: u64) -> Option<(u64, u64)> {
        (c < self.live_cells()).then(|| (c / self.cells, c % self.cells))
    }
}

/// A proof that a 2048-byte cell belongs to a row: its path in its block's cell tree, then its
/// block's path in the row tree, both bottom-up with `ZERO` where there is no sibling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellProof {
    /// `log2(cells)` nodes.
    pub block_path: Vec<Digest>,
    /// `depth(steps)` nodes.
    pub row_path: Vec<Digest>,
}

impl CellProof {
    /// The proof of cell `q` of the block at position `p`, from that block's cell tree and the
    /// row tree.
    pub fn from_trees(
        cell_tree: &MerkleTree,
        row_tree: &MerkleTree,
        p: u64,
        q: u64,
    ) -> Result<CellProof, ErasureError> {
        Ok(CellProof {
            block_path: cell_tree.proof(q)?.path,
            row_path: row_tree.proof(p)?.path,
        })
    }

    /// The proof of live cell `c` of a row, from the row tree and the bytes of the block at
    /// position `c div cells`.
    pub fn new(
        row_tree: &MerkleTree,
        geometry: &CellGeometry,
        block: &[u8],
        c: u64,
    ) -> Result<CellProof, ErasureError> {
        let (p, q) = geometry.locate(c).ok_or(ErasureError::OutOfRange {
            what: "cell",
            value: c,
            limit: geometry.live_cells(),
        })?;
        let cells = cell_tree(block)?;
        count("cells per block", geometry.cells, cells.leaves().len())?;
        CellProof::from_trees(&cells, row_tree, p, q)
    }

    /// Climbs from `cell` (live cell `c` of a row of `geometry`) to the slot root the proof
    /// implies, with every check of `verify` (`wire.md` §4.5); `None` if one fails.
    pub fn climb(&self, cell: &[u8], c: u64, geometry: &CellGeometry) -> Option<Digest> {
        if cell.len() != CELL_SIZE {
            return None;
        }
        let (p, q) = geometry.locate(c)?;
        let block = MerkleProof {
            index: q,
            nleaves: geometry.cells,
            path: self.block_path.clone(),
        };
        let cell_root = block.climb(&sha256(cell))?;
        let row = MerkleProof {
            index: p,
            nleaves: geometry.steps,
            path: self.row_path.clone(),
        };
        row.climb(&cell_root)
    }

    /// True iff the proof takes `cell` (live cell `c`) to `slot_root`.
    pub fn verify(&self, cell: &[u8], c: u64, geometry: &CellGeometry, slot_root: &Digest) -> bool {
        self.climb(cell, c, geometry)
            .is_some_and(|h| &h == slot_root)
    }
}

// ---------------------------------------------------------------------- protect

/// A protected dataset built in memory: everything a node stores and announces.
#[derive(Debug, Clone)]
pub struct ProtectedDataset {
    /// The layout.
    pub layout: Layout,
    /// The parity blocks, in index order from `rounded`.
    pub parity: Vec<Vec<u8>>,
    /// The protected tree over all `total` leaves (`EMPTY` at padding).
    pub tree: MerkleTree,
    /// The cell root of every index (`EMPTY` at padding).
    pub cell_roots: Vec<Digest>,
    /// `slotRoot(r)` for every row.
    pub slot_roots: Vec<Digest>,
    /// The protected manifest.
    pub manifest: Manifest,
    /// Its exact encoding.
    pub manifest_bytes: Vec<u8>,
    /// Its CID.
    pub manifest_cid: Cid,
}

impl ProtectedDataset {
    /// The stored bytes of protected index `index`: an original block, the empty block for
    /// padding, or a parity block.
    pub fn block<'a, B: AsRef<[u8]>>(
        &'a self,
        data_blocks: &'a [B],
        index: u64,
    ) -> Option<&'a [u8]> {
        match self.layout.class(index)? {
            IndexClass::Data => data_blocks.get(index as usize).map(AsRef::as_ref),
            IndexClass::Padding => Some(&[]),
            IndexClass::Parity => self
                .parity
                .get((index - self.layout.rounded) as usize)
                .map(Vec::as_slice),
        }
    }
}

/// Protects the dataset of `original` (whose `n` blocks are `blocks`) with `K` data and `M`
/// parity rows: parity, protected tree, slot roots and protected manifest. Fails if the blocks
/// do not hash to `original.tree_cid`.
pub fn protect<B: AsRef<[u8]> + Sync>(
    original: &Manifest,
    blocks: &[B],
    k: u32,
    m: u32,
) -> Result<ProtectedDataset, ErasureError> {
    if original.erasure.is_some() {
        return Err(ErasureError::AlreadyProtected);
    }
    let layout = Layout::new(k, m, original.block_size, original.dataset_size)?;
    count("original blocks", layout.n, blocks.len())?;
    for (i, block) in blocks.iter().enumerate() {
        layout.check_block("original block", i as u64, block.as_ref().len())?;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let data_leaves = hash_blocks(blocks, threads);
    if MerkleTree::build(data_leaves.clone())?.root() != *original.tree_cid.digest() {
        return Err(ErasureError::TreeMismatch);
    }
    let parity = layout.encode_parity(blocks)?;
    let parity_leaves = hash_blocks(&parity, threads);
    let tree = MerkleTree::build(layout.protected_leaves(&data_leaves, &parity_leaves)?)?;

    let mut cell_roots = Vec::with_capacity(layout.total as usize);
    for block in blocks {
        cell_roots.push(cell_root(block.as_ref())?);
    }
    cell_roots.resize(layout.rounded as usize, EMPTY_DIGEST);
    for block in &parity {
        cell_roots.push(cell_root(block)?);
    }
    let slot_roots = layout.slot_roots(&cell_roots)?;
    let manifest = layout.protected_manifest(original, &tree.root(), &slot_roots)?;
    let manifest_bytes = manifest.encode();
    let manifest_cid = Manifest::cid_of(&manifest_bytes);
    Ok(ProtectedDataset {
        layout,
        parity,
        tree,
        cell_roots,
        slot_roots,
        manifest,
        manifest_bytes,
        manifest_cid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(n_bytes: u64, k: u32, m: u32) -> Layout {
        Layout::new(k, m, BlockSize::MIN, n_bytes).expect("layout")
    }

    #[test]
    fn bounds() {
        assert!(Layout::new(1, 1, BlockSize::MIN, 1).is_err());
        assert!(Layout::new(2, 0, BlockSize::MIN, 1).is_err());
        assert!(Layout::new(2, 1022, BlockSize::MIN, 1).is_ok());
        assert!(Layout::new(2, 1023, BlockSize::MIN, 1).is_err());
        assert!(Layout::new(u32::MAX, u32::MAX, BlockSize::MIN, 1).is_err());
        assert_eq!(
            Layout::new(2, 1, BlockSize::MIN, 0),
            Err(ErasureError::EmptyDataset)
        );
        assert_eq!(
            Layout::new(2, 1000, BlockSize::MAX, u64::MAX),
            Err(ErasureError::TooLarge)
        );
        // M > K is allowed.
        assert!(Layout::new(3, 7, BlockSize::MIN, 1).is_ok());
    }

    #[test]
    fn n_below_k_is_one_padded_column() {
        let l = layout(4096, 4, 2);
        assert_eq!((l.rounded(), l.steps(), l.total()), (4, 1, 6));
        assert_eq!(l.padding(), 1..4);
        assert_eq!(l.column(0).expect("column"), vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(l.live(0), Ok(1));
        assert_eq!(l.live(1), Ok(0));
        assert_eq!(l.live(4), Ok(1));
        // With only padding for the other originals, one data shard rebuilds the column.
        let block = vec![9u8; 4096];
        let parity = l.encode_parity(&[&block]).expect("parity");
        let got = l
            .decode_column(0, &[None, None, None, None, Some(&parity[0][..]), None])
            .expect("decode");
        assert_eq!(got[0], block);
        assert!(got[1..].iter().all(|s| s.iter().all(|&b| b == 0)));
    }

    #[test]
    fn rebuild_restores_parity_rows() {
        let l = layout(5 * 4096, 2, 3);
        let blocks: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i.wrapping_mul(37); 4096]).collect();
        let parity = l.encode_parity(&blocks).expect("parity");
        for s in 0..l.steps() {
            let idx = l.column(s).expect("column");
            let full: Vec<Vec<u8>> = idx
                .iter()
                .map(|&i| match l.class(i).expect("class") {
                    IndexClass::Data => blocks[i as usize].clone(),
                    IndexClass::Padding => vec![0; 4096],
                    IndexClass::Parity => parity[(i - l.rounded()) as usize].clone(),
                })
                .collect();
            // Keep only the last two shards (both parity).
            let shards: Vec<Option<&[u8]>> = full
                .iter()
                .enumerate()
                .map(|(r, b)| (r >= 3).then_some(&b[..]))
                .collect();
            assert_eq!(l.rebuild_column(s, &shards).expect("rebuild"), full);
        }
    }

    #[test]
    fn cell_helpers() {
        assert!(cell_leaves(&[0u8; 2048]).is_err());
        assert!(cell_leaves(&[0u8; 6144]).is_err());
        assert_eq!(cell_leaves(&[0u8; 4096]).map(|l| l.len()), Ok(2));
        assert_eq!(cell_bytes(&[0u8; 4096], 1).map(<[u8]>::len), Some(2048));
        assert_eq!(cell_bytes(&[0u8; 4096], 2), None);
        assert_eq!(cell_bytes(&[0u8; 4096], u64::MAX), None);
    }
}
