//! The requester's acceptance of delivered blocks (`wire.md` §7.5, rules c–f).
//!
//! Rules a (request id and tree match an outstanding request) and b (the index was asked for,
//! first occurrence only) need the node's request table and come first; then every entry goes
//! through [`DeliveryCheck::check`]. Any failure here means: discard the whole response, store
//! nothing from it, ban the peer from the download and disconnect it.

use std::ops::Range;

use super::want_blocks::{BlockDelivery, padding_range};
use crate::{
    chunk::BlockSize,
    cid::{Codec, Digest, EMPTY_DIGEST, sha256},
    manifest::Manifest,
};

/// Why a delivered block is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryError {
    /// Rule c: the index is not below `blocksCount`.
    #[error("block index {index} is not below blocksCount {blocks_count}")]
    IndexOutOfRange {
        /// The index.
        index: u64,
        /// The manifest's block count.
        blocks_count: u64,
    },
    /// Rule d: the CID is not a block CID (codec 0xCD02).
    #[error("block {index}: CID codec {codec:#x} is not storage-block")]
    NotABlockCid {
        /// The index.
        index: u64,
        /// The codec found.
        codec: u64,
    },
    /// Rule d: `H(data)` is not the CID's digest.
    #[error("block {index}: data does not hash to its CID")]
    DataDigest {
        /// The index.
        index: u64,
    },
    /// Rule e: no proof.
    #[error("block {index}: no proof")]
    MissingProof {
        /// The index.
        index: u64,
    },
    /// Rule e: the proof is for another index.
    #[error("block {index}: proof is for index {proof_index}")]
    ProofIndex {
        /// The index.
        index: u64,
        /// The proof's index.
        proof_index: u64,
    },
    /// Rule e: the proof is for a tree of another size.
    #[error("block {index}: proof is for {nleaves} leaves, the tree has {blocks_count}")]
    ProofLeaves {
        /// The index.
        index: u64,
        /// The proof's leaf count.
        nleaves: u64,
        /// The manifest's block count.
        blocks_count: u64,
    },
    /// Rule e: the proof does not take the block to the tree root.
    #[error("block {index}: proof does not verify against treeCid")]
    ProofInvalid {
        /// The index.
        index: u64,
    },
    /// Rule f: the data is neither `blockSize` bytes nor an empty padding block.
    #[error("block {index}: {len} bytes is neither blockSize nor an empty padding block")]
    DataLength {
        /// The index.
        index: u64,
        /// The data length.
        len: usize,
    },
}

/// The manifest facts that rules c–f check against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCheck {
    tree_root: Digest,
    blocks_count: u64,
    block_size: BlockSize,
    padding: Range<u64>,
}

impl DeliveryCheck {
    /// The checks for blocks of `manifest`'s tree. For a protected manifest the padding indices
    /// come from its erasure extension.
    pub fn new(manifest: &Manifest) -> DeliveryCheck {
        DeliveryCheck {
            tree_root: *manifest.tree_cid.digest(),
            blocks_count: manifest.blocks_count(),
            block_size: manifest.block_size,
            padding: padding_range(manifest),
        }
    }

    /// Number of leaves of the tree.
    pub fn blocks_count(&self) -> u64 {
        self.blocks_count
    }

    /// True iff `index` is an erasure-coding padding index.
    pub fn is_padding(&self, index: u64) -> bool {
        self.padding.contains(&index)
    }

    /// Rules c–f for one entry: `index < blocksCount`; a block CID whose digest is `H(data)`;
    /// a proof for this index and `blocksCount` leaves that verifies against the tree root;
    /// `blockSize` bytes, or 0 bytes with digest `EMPTY` at a padding index.
    pub fn check(&self, block: &BlockDelivery) -> Result<(), DeliveryError> {
        let index = block.index;
        // c
        if index >= self.blocks_count {
            return Err(DeliveryError::IndexOutOfRange {
                index,
                blocks_count: self.blocks_count,
            });
        }
        // f, the length part first: it is cheap and bounds the hashing below.
        let len = block.data.len();
        let padding = len == 0 && self.is_padding(index);
        if len != self.block_size.as_usize() && !padding {
            return Err(DeliveryError::DataLength { index, len });
        }
        // d
        if block.block_cid.codec() != Codec::Block {
            return Err(DeliveryError::NotABlockCid {
                index,
                codec: block.block_cid.codec().code(),
            });
        }
        let digest = block.block_cid.digest();
        let actual = if padding {
            EMPTY_DIGEST
        } else {
            sha256(&block.data)
        };
        if *digest != actual {
            return Err(DeliveryError::DataDigest { index });
        }
        // e
        let proof = block
            .proof
            .as_ref()
            .ok_or(DeliveryError::MissingProof { index })?;
        if proof.index != index {
            return Err(DeliveryError::ProofIndex {
                index,
                proof_index: proof.index,
            });
        }
        if proof.nleaves != self.blocks_count {
            return Err(DeliveryError::ProofLeaves {
                index,
                nleaves: proof.nleaves,
                blocks_count: self.blocks_count,
            });
        }
        if !proof.verify(digest, &self.tree_root) {
            return Err(DeliveryError::ProofInvalid { index });
        }
        Ok(())
    }
}
