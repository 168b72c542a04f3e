//! The SHA-256 Merkle tree of `wire.md` §2: keyed compression, the odd and single-leaf rules,
//! inclusion proofs and their binary encoding.

use sha2::{Digest as _, Sha256};

use crate::cid::Digest;

/// The all-zero node used as the sibling of an unpaired node.
pub const ZERO: Digest = [0u8; 32];
const KEY_NONE: u8 = 0x00;
const KEY_BOTTOM: u8 = 0x01;
const KEY_ODD: u8 = 0x02;
const KEY_ODD_BOTTOM: u8 = 0x03;

/// The deepest proof a decoder accepts (`MaxMerkleProofDepth`).
pub const MAX_PROOF_DEPTH: usize = 64;

/// `H(left ‖ right ‖ key)`.
pub fn compress(left: &Digest, right: &Digest, key: u8) -> Digest {
    let mut h = Sha256::new();
    h.update(left);
    h.update(right);
    h.update([key]);
    h.finalize().into()
}

/// Number of compression layers of a tree over `n ≥ 1` leaves: `max(1, ceil(log2 n))`.
pub fn depth(n: u64) -> usize {
    if n <= 2 {
        1
    } else {
        (64 - (n - 1).leading_zeros()) as usize
    }
}

/// Errors building a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// A tree needs at least one leaf.
    #[error("a Merkle tree needs at least one leaf")]
    NoLeaves,
    /// The leaf index is outside the tree.
    #[error("leaf index {index} out of range for {nleaves} leaves")]
    IndexOutOfRange {
        /// Requested index.
        index: u64,
        /// Leaves in the tree.
        nleaves: u64,
    },
}

/// A complete tree: every layer, leaves first, root last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleTree {
    layers: Vec<Vec<Digest>>,
}

impl MerkleTree {
    /// Builds the tree over `leaves` (`wire.md` §2.1).
    pub fn build(leaves: Vec<Digest>) -> Result<MerkleTree, MerkleError> {
        if leaves.is_empty() {
            return Err(MerkleError::NoLeaves);
        }
        let mut layers = vec![leaves];
        let mut bottom = true;
        loop {
            let cur = layers.last().expect("at least the leaf layer");
            if !bottom && cur.len() == 1 {
                break;
            }
            let (key, odd_key) = if bottom {
                (KEY_BOTTOM, KEY_ODD_BOTTOM)
            } else {
                (KEY_NONE, KEY_ODD)
            };
            let mut next = Vec::with_capacity(cur.len().div_ceil(2));
            for pair in cur.chunks(2) {
                match pair {
                    [l, r] => next.push(compress(l, r, key)),
                    [last] => next.push(compress(last, &ZERO, odd_key)),
                    _ => unreachable!("chunks(2) yields one or two items"),
                }
            }
            layers.push(next);
            bottom = false;
        }
        Ok(MerkleTree { layers })
    }

    /// The root.
    pub fn root(&self) -> Digest {
        self.layers.last().expect("a tree has a root layer")[0]
    }

    /// All layers, leaves first.
    pub fn layers(&self) -> &[Vec<Digest>] {
        &self.layers
    }

    /// The leaves.
    pub fn leaves(&self) -> &[Digest] {
        &self.layers[0]
    }

    /// Number of leaves.
    pub fn leaf_count(&self) -> u64 {
        self.layers[0].len() as u64
    }

    /// The inclusion proof of leaf `index` (`wire.md` §2.2).
    pub fn proof(&self, index: u64) -> Result<MerkleProof, MerkleError> {
        let nleaves = self.leaf_count();
        if index >= nleaves {
            return Err(MerkleError::IndexOutOfRange { index, nleaves });
        }
        let mut k = index as usize;
        let mut path = Vec::with_capacity(self.layers.len() - 1);
        for layer in &self.layers[..self.layers.len() - 1] {
            let sibling = k ^ 1;
            path.push(layer.get(sibling).copied().unwrap_or(ZERO));
            k >>= 1;
        }
        Ok(MerkleProof {
            index,
            nleaves,
            path,
        })
    }
}

/// Why a binary proof does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProofDecodeError {
    /// Fewer bytes than the fields need.
    #[error("proof is truncated")]
    Truncated,
    /// `mcodec` is not sha2-256.
    #[error("proof hash codec {0:#x} is not sha2-256")]
    Codec(u64),
    /// `pathCount` is 0 or above 64.
    #[error("proof path count {0} is not in 1..=64")]
    PathCount(u32),
    /// A path node is not 32 bytes.
    #[error("proof node length {0} is not 32")]
    NodeLength(u16),
    /// Bytes after the last node.
    #[error("trailing bytes after the proof")]
    Trailing,
}

/// An inclusion proof: the sibling at each level, bottom to top, `ZERO` where none exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleProof {
    /// Index of the proven leaf.
    pub index: u64,
    /// Number of leaves in the tree.
    pub nleaves: u64,
    /// Siblings, bottom to top.
    pub path: Vec<Digest>,
}

impl MerkleProof {
    /// Climbs from `leaf` to the root this proof implies, making every check of `verify` except
    /// the final comparison (`wire.md` §4.5 `climb`). `None` if a check fails.
    pub fn climb(&self, leaf: &Digest) -> Option<Digest> {
        if self.nleaves == 0 || self.index >= self.nleaves || self.path.len() != depth(self.nleaves)
        {
            return None;
        }
        let mut h = *leaf;
        let mut j = self.index;
        let mut m = self.nleaves;
        let mut key = KEY_BOTTOM;
        for p in &self.path {
            h = if j & 1 == 1 {
                compress(p, &h, key)
            } else if j == m - 1 {
                if *p != ZERO {
                    return None;
                }
                compress(&h, p, key + 2)
            } else {
                compress(&h, p, key)
            };
            key = KEY_NONE;
            j >>= 1;
            m = m.div_ceil(2);
        }
        Some(h)
    }

    /// True iff the proof takes `leaf` to `root`.
    pub fn verify(&self, leaf: &Digest, root: &Digest) -> bool {
        self.climb(leaf).is_some_and(|h| &h == root)
    }

    /// Size of the binary encoding.
    pub fn encoded_len(&self) -> usize {
        28 + 34 * self.path.len()
    }

    /// Appends the binary encoding of `wire.md` §2.3 (little-endian) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.reserve(self.encoded_len());
        out.extend_from_slice(&crate::cid::SHA2_256.to_le_bytes());
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.nleaves.to_le_bytes());
        out.extend_from_slice(&(self.path.len() as u32).to_le_bytes());
        for node in &self.path {
            out.extend_from_slice(&32u16.to_le_bytes());
            out.extend_from_slice(node);
        }
    }

    /// The binary encoding of `wire.md` §2.3.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.encode_into(&mut out);
        out
    }

    /// Decodes `wire.md` §2.3, bounds-checking every read; `bytes` must hold exactly one proof.
    pub fn decode(bytes: &[u8]) -> Result<MerkleProof, ProofDecodeError> {
        let mut r = crate::bytes::Reader::new(bytes);
        let truncated = |_| ProofDecodeError::Truncated;
        let mcodec = r.u64_le().map_err(truncated)?;
        if mcodec != crate::cid::SHA2_256 {
            return Err(ProofDecodeError::Codec(mcodec));
        }
        let index = r.u64_le().map_err(truncated)?;
        let nleaves = r.u64_le().map_err(truncated)?;
        let count = r.u32_le().map_err(truncated)?;
        if count == 0 || count as usize > MAX_PROOF_DEPTH {
            return Err(ProofDecodeError::PathCount(count));
        }
        let mut path = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let len = r.u16_le().map_err(truncated)?;
            if len != 32 {
                return Err(ProofDecodeError::NodeLength(len));
            }
            path.push(r.array::<32>().map_err(truncated)?);
        }
        if !r.is_empty() {
            return Err(ProofDecodeError::Trailing);
        }
        Ok(MerkleProof {
            index,
            nleaves,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depths() {
        for (n, d) in [(1, 1), (2, 1), (3, 2), (4, 2), (5, 3), (8, 3), (9, 4)] {
            assert_eq!(depth(n), d, "depth({n})");
        }
    }

    #[test]
    fn empty_tree_is_an_error() {
        assert_eq!(MerkleTree::build(vec![]), Err(MerkleError::NoLeaves));
    }

    #[test]
    fn single_leaf_root_is_compressed() {
        let leaf = [7u8; 32];
        let tree = MerkleTree::build(vec![leaf]).expect("one leaf");
        assert_eq!(tree.root(), compress(&leaf, &ZERO, KEY_ODD_BOTTOM));
        let proof = tree.proof(0).expect("index 0");
        assert_eq!(proof.path, vec![ZERO]);
        assert!(proof.verify(&leaf, &tree.root()));
        assert!(tree.proof(1).is_err());
    }
}
