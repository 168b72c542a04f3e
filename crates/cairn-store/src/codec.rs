//! Byte layouts of keys and values (`docs/on-disk-format.md`). Integers are big-endian so that
//! keys sort numerically.

use bytes::Bytes;
use cairn_core::{Cid, cid::CID_LEN};

use crate::types::{DatasetFlags, Result, StoreError};

/// A binary CID, the key of most tables.
pub(crate) type CidKey = [u8; CID_LEN];

/// The on-disk format this code writes and reads.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// Key of the format version in the meta table.
pub(crate) const VERSION_KEY: &[u8] = b"format_version";

/// `detached` record value: a commit is writing the tree's leaf records.
pub(crate) const DETACHED_COMMIT: u8 = 1;
/// `detached` record value: a delete is removing the tree's leaf records.
pub(crate) const DETACHED_DELETE: u8 = 2;

/// Bytes per bitmap chunk.
pub(crate) const CHUNK_BYTES: u64 = 1024;
/// Block indices per bitmap chunk.
pub(crate) const CHUNK_BITS: u64 = CHUNK_BYTES * 8;

/// Largest tree the store accepts (2^32 blocks: 16 TiB at 4 KiB blocks), which keeps bitmap
/// chunk numbers within 32 bits.
pub(crate) const MAX_BLOCKS: u64 = 1 << 32;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_owned())
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_be_bytes(b))
}

/// Parses a stored binary CID.
pub(crate) fn cid_from(bytes: &[u8], what: &str) -> Result<Cid> {
    Cid::from_bytes(bytes).map_err(|e| StoreError::Corrupt(format!("{what}: bad CID: {e}")))
}

/// `treeCid ‖ index` (46 bytes).
pub(crate) fn leaf_key(tree: &CidKey, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(CID_LEN + 8);
    k.extend_from_slice(tree);
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// `treeCid ‖ chunk` (42 bytes).
pub(crate) fn bitmap_key(tree: &CidKey, chunk: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(CID_LEN + 4);
    k.extend_from_slice(tree);
    // MAX_BLOCKS / CHUNK_BITS fits 32 bits; trees are checked against MAX_BLOCKS on entry.
    k.extend_from_slice(&(chunk as u32).to_be_bytes());
    k
}

/// `stagingId ‖ index` (16 bytes).
pub(crate) fn staging_key(id: u64, index: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(16);
    k.extend_from_slice(&id.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

/// Splits a staging key into id and index.
pub(crate) fn parse_staging_key(key: &[u8]) -> Result<(u64, u64)> {
    if key.len() != 16 {
        return Err(corrupt("staging key length"));
    }
    let id = be_u64(key, 0).ok_or_else(|| corrupt("staging key"))?;
    let index = be_u64(key, 8).ok_or_else(|| corrupt("staging key"))?;
    Ok((id, index))
}

/// Leaf record value: `blockCid ‖ proof`.
pub(crate) fn leaf_value(block: &Cid, proof: &cairn_core::MerkleProof) -> Bytes {
    let mut v = Vec::with_capacity(CID_LEN + proof.encoded_len());
    v.extend_from_slice(&block.to_bytes());
    proof.encode_into(&mut v);
    Bytes::from(v)
}

/// The block CID at the start of a leaf record value.
pub(crate) fn leaf_block_cid(value: &[u8]) -> Result<Cid> {
    let cid = value
        .get(..CID_LEN)
        .ok_or_else(|| corrupt("leaf record too short"))?;
    cid_from(cid, "leaf record")
}

/// Reference record of a stored block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RefVal {
    /// Leaf and staging records pointing at the block.
    pub(crate) count: u64,
    /// Byte length of the block.
    pub(crate) len: u64,
    /// Stored on its own by `put_block`: kept at count 0, until `delete_block`.
    pub(crate) loose: bool,
}

impl RefVal {
    pub(crate) const LEN: usize = 17;

    pub(crate) fn encode(&self) -> [u8; Self::LEN] {
        let mut v = [0u8; Self::LEN];
        v[..8].copy_from_slice(&self.count.to_be_bytes());
        v[8..16].copy_from_slice(&self.len.to_be_bytes());
        v[16] = u8::from(self.loose);
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<RefVal> {
        if v.len() != Self::LEN || v[16] > 1 {
            return Err(corrupt("reference record"));
        }
        Ok(RefVal {
            count: be_u64(v, 0).ok_or_else(|| corrupt("reference record"))?,
            len: be_u64(v, 8).ok_or_else(|| corrupt("reference record"))?,
            loose: v[16] == 1,
        })
    }
}

/// Tree record: blocks count and how many are held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TreeVal {
    pub(crate) blocks_count: u64,
    pub(crate) held: u64,
}

impl TreeVal {
    pub(crate) fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.blocks_count.to_be_bytes());
        v[8..].copy_from_slice(&self.held.to_be_bytes());
        v
    }

    pub(crate) fn decode(v: &[u8]) -> Result<TreeVal> {
        let t = (v.len() == 16)
            .then(|| Some((be_u64(v, 0)?, be_u64(v, 8)?)))
            .flatten()
            .map(|(blocks_count, held)| TreeVal { blocks_count, held })
            .ok_or_else(|| corrupt("tree record"))?;
        if t.held > t.blocks_count || t.blocks_count == 0 || t.blocks_count > MAX_BLOCKS {
            return Err(corrupt("tree record counts"));
        }
        Ok(t)
    }
}

const FLAG_PINNED: u8 = 0x01;
const FLAG_ADVERTISE: u8 = 0x02;

/// Dataset record: `flags ‖ lastAccess ‖ manifest bytes`.
pub(crate) fn dataset_value(flags: DatasetFlags, last_access: u64, manifest: &[u8]) -> Bytes {
    let mut v = Vec::with_capacity(9 + manifest.len());
    let mut f = 0;
    if flags.pinned {
        f |= FLAG_PINNED;
    }
    if flags.advertise {
        f |= FLAG_ADVERTISE;
    }
    v.push(f);
    v.extend_from_slice(&last_access.to_be_bytes());
    v.extend_from_slice(manifest);
    Bytes::from(v)
}

/// Splits a dataset record into flags, last access and manifest bytes.
pub(crate) fn parse_dataset_value(v: &[u8]) -> Result<(DatasetFlags, u64, Bytes)> {
    let f = *v.first().ok_or_else(|| corrupt("dataset record"))?;
    if f & !(FLAG_PINNED | FLAG_ADVERTISE) != 0 {
        return Err(corrupt("dataset record flags"));
    }
    let last = be_u64(v, 1).ok_or_else(|| corrupt("dataset record"))?;
    let flags = DatasetFlags {
        pinned: f & FLAG_PINNED != 0,
        advertise: f & FLAG_ADVERTISE != 0,
    };
    Ok((flags, last, Bytes::copy_from_slice(&v[9..])))
}

/// Number of bitmap chunks of a tree.
pub(crate) fn chunk_count(blocks_count: u64) -> u64 {
    blocks_count.div_ceil(CHUNK_BITS)
}

/// Byte length of chunk `chunk` of a tree's bitmap (the last one may be short).
pub(crate) fn chunk_len(blocks_count: u64, chunk: u64) -> usize {
    let total = blocks_count.div_ceil(8);
    total.saturating_sub(chunk * CHUNK_BYTES).min(CHUNK_BYTES) as usize
}

/// The bitmap of a complete tree: `ceil(n / 8)` bytes, every index set, trailing bits clear.
pub(crate) fn full_bitmap(blocks_count: u64) -> Vec<u8> {
    let mut v = vec![0xffu8; blocks_count.div_ceil(8) as usize];
    let rest = blocks_count % 8;
    if rest != 0
        && let Some(last) = v.last_mut()
    {
        *last = (1u8 << rest) - 1;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let r = RefVal {
            count: 7,
            len: 65536,
            loose: true,
        };
        assert_eq!(RefVal::decode(&r.encode()).expect("decodes"), r);
        let t = TreeVal {
            blocks_count: 10,
            held: 3,
        };
        assert_eq!(TreeVal::decode(&t.encode()).expect("decodes"), t);
        let flags = DatasetFlags {
            pinned: true,
            advertise: false,
        };
        let v = dataset_value(flags, 42, b"abc");
        let (f, last, m) = parse_dataset_value(&v).expect("decodes");
        assert_eq!((f, last, &m[..]), (flags, 42, &b"abc"[..]));
        assert_eq!(
            parse_staging_key(&staging_key(3, 9)).expect("parses"),
            (3, 9)
        );
    }

    #[test]
    fn bitmap_shapes() {
        assert_eq!(full_bitmap(1), vec![0x01]);
        assert_eq!(full_bitmap(8), vec![0xff]);
        assert_eq!(full_bitmap(10), vec![0xff, 0x03]);
        assert_eq!(chunk_count(8192), 1);
        assert_eq!(chunk_count(8193), 2);
        assert_eq!(chunk_len(8193, 0), 1024);
        assert_eq!(chunk_len(8193, 1), 1);
        assert_eq!(chunk_len(10, 0), 2);
    }
}
