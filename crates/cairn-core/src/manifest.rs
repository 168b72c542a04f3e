//! The Gen-2 manifest (`wire.md` §3) and cairn's erasure-coding extension in Header field 20
//! (`wire.md` §4.1).
//!
//! Encoding is byte-exact: fields 1–7 always written, in order, then 8, 9 and 20 when present.
//! Decoding skips unknown fields. A node keeps the bytes it received or created and never
//! re-encodes a decoded manifest, so [`Manifest`] is only ever built from bytes by `decode` or
//! turned into bytes once, by `encode`, when a dataset is created.

use crate::{
    chunk::BlockSize,
    cid::{Cid, CidError, Codec, SHA2_256, sha256},
    pb::{self, FieldReader, PbError, Value},
};

/// Largest encoded manifest (the manifest protocol cap).
pub const MAX_MANIFEST_SIZE: usize = 65_536;
/// Longest filename, in UTF-8 bytes (`MaxFilenameSize`).
pub const MAX_FILENAME_LEN: usize = 255;
/// Longest mimetype, in UTF-8 bytes (`MaxMimetypeSize`).
pub const MAX_MIMETYPE_LEN: usize = 128;
/// Largest `K + M` cairn accepts.
pub const MAX_EC_ROWS: u32 = 1024;

/// Why manifest bytes are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestError {
    /// Not valid protobuf.
    #[error("malformed manifest: {0}")]
    Protobuf(#[from] PbError),
    /// Empty input or more than 64 KiB.
    #[error("manifest size {0} is not in 1..=65536")]
    Size(usize),
    /// The outer message lacks its Header or has it twice.
    #[error("manifest must hold exactly one header")]
    Header,
    /// A known field has the wrong wire type.
    #[error("manifest field {0} has the wrong wire type")]
    WireType(u32),
    /// One of fields 1–7 is missing.
    #[error("manifest field {0} is missing")]
    Missing(u32),
    /// A field holds a value the spec forbids.
    #[error("manifest field {field} is invalid: {reason}")]
    Invalid {
        /// Field number.
        field: u32,
        /// What is wrong.
        reason: &'static str,
    },
    /// A CID field does not parse or has the wrong codec.
    #[error("manifest field {field} holds a bad CID: {source}")]
    Cid {
        /// Field number.
        field: u32,
        /// The CID error.
        source: CidError,
    },
}

/// Cairn's erasure-coding extension (`wire.md` §4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureExt {
    /// Data rows K.
    pub ec_k: u32,
    /// Parity rows M.
    pub ec_m: u32,
    /// Tree CID of the unprotected dataset.
    pub original_tree_cid: Cid,
    /// Size of the unprotected dataset.
    pub original_dataset_size: u64,
    /// Layout strategy; 1 = stepped, the only one defined.
    pub strategy: u32,
    /// One slot-root CID (codec 0xCD04) per row, K + M in all.
    pub slot_roots: Vec<Cid>,
}

/// Layout numbers of a protected dataset (`wire.md` §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepLayout {
    /// Original blocks count n.
    pub original_blocks: u64,
    /// `ceil(n / K) · K`.
    pub rounded: u64,
    /// `rounded / K`: blocks per row.
    pub steps: u64,
    /// `rounded + steps · M`.
    pub total: u64,
}

impl ErasureExt {
    /// The stepped layout for this extension and `block_size`.
    pub fn layout(&self, block_size: BlockSize) -> StepLayout {
        // Saturating, so that an unvalidated extension cannot overflow; decoded manifests are
        // validated and far from the limits.
        let k = u64::from(self.ec_k.max(1));
        let n = block_size.blocks_count(self.original_dataset_size);
        let rounded = n.div_ceil(k).saturating_mul(k);
        let steps = rounded / k;
        StepLayout {
            original_blocks: n,
            rounded,
            steps,
            total: rounded.saturating_add(steps.saturating_mul(u64::from(self.ec_m))),
        }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64 + 40 * self.slot_roots.len());
        pb::put_varint_field(&mut out, 1, u64::from(self.ec_k));
        pb::put_varint_field(&mut out, 2, u64::from(self.ec_m));
        pb::put_bytes_field(&mut out, 3, &self.original_tree_cid.to_bytes());
        pb::put_varint_field(&mut out, 4, self.original_dataset_size);
        pb::put_varint_field(&mut out, 5, u64::from(self.strategy));
        for root in &self.slot_roots {
            pb::put_bytes_field(&mut out, 6, &root.to_bytes());
        }
        out
    }

    fn decode(bytes: &[u8]) -> Result<ErasureExt, ManifestError> {
        let mut k = None;
        let mut m = None;
        let mut original = None;
        let mut original_size = None;
        let mut strategy = None;
        let mut slot_roots = Vec::new();
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            let outer = 20;
            match (field, value) {
                (1, Value::Varint(v)) => k = Some(small(v, outer)?),
                (2, Value::Varint(v)) => m = Some(small(v, outer)?),
                (3, Value::Bytes(b)) => {
                    original = Some(
                        Cid::from_bytes(b)
                            .and_then(|c| c.expect_codec(Codec::Root))
                            .map_err(|source| ManifestError::Cid {
                                field: outer,
                                source,
                            })?,
                    );
                }
                (4, Value::Varint(v)) => original_size = Some(v),
                (5, Value::Varint(v)) => strategy = Some(small(v, outer)?),
                (6, Value::Bytes(b)) => {
                    if slot_roots.len() > MAX_EC_ROWS as usize {
                        return Err(invalid(outer, "too many slot roots"));
                    }
                    slot_roots.push(
                        Cid::from_bytes(b)
                            .and_then(|c| c.expect_codec(Codec::SlotRoot))
                            .map_err(|source| ManifestError::Cid {
                                field: outer,
                                source,
                            })?,
                    );
                }
                (1..=6, _) => return Err(ManifestError::WireType(outer)),
                _ => {}
            }
        }
        let missing = |_| ManifestError::Missing(20);
        Ok(ErasureExt {
            ec_k: k.ok_or(()).map_err(missing)?,
            ec_m: m.ok_or(()).map_err(missing)?,
            original_tree_cid: original.ok_or(()).map_err(missing)?,
            original_dataset_size: original_size.ok_or(()).map_err(missing)?,
            strategy: strategy.ok_or(()).map_err(missing)?,
            slot_roots,
        })
    }

    fn validate(&self, block_size: BlockSize, dataset_size: u64) -> Result<(), ManifestError> {
        if self.strategy != 1 {
            return Err(invalid(20, "strategy must be 1 (stepped)"));
        }
        if self.ec_k < 2
            || self.ec_m < 1
            || u64::from(self.ec_k) + u64::from(self.ec_m) > u64::from(MAX_EC_ROWS)
        {
            return Err(invalid(
                20,
                "k and m must satisfy 2 <= k, 1 <= m, k + m <= 1024",
            ));
        }
        if self.original_dataset_size == 0 {
            return Err(invalid(20, "originalDatasetSize must be at least 1"));
        }
        let layout = self.layout(block_size);
        if layout.total.checked_mul(u64::from(block_size.get())) != Some(dataset_size) {
            return Err(invalid(
                20,
                "datasetSize does not match the protected layout",
            ));
        }
        if self.slot_roots.len() != (self.ec_k + self.ec_m) as usize {
            return Err(invalid(20, "slotRoots must hold exactly K + M roots"));
        }
        Ok(())
    }
}

fn small(v: u64, field: u32) -> Result<u32, ManifestError> {
    u32::try_from(v).map_err(|_| invalid(field, "value does not fit 32 bits"))
}

fn invalid(field: u32, reason: &'static str) -> ManifestError {
    ManifestError::Invalid { field, reason }
}

/// A decoded manifest Header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Root CID of the dataset's Merkle tree (codec 0xCD03).
    pub tree_cid: Cid,
    /// Block size.
    pub block_size: BlockSize,
    /// Unpadded dataset size, ≥ 1.
    pub dataset_size: u64,
    /// Original file name, if any (never empty).
    pub filename: Option<String>,
    /// Media type, if any (never empty).
    pub mimetype: Option<String>,
    /// Erasure-coding extension of a protected manifest.
    pub erasure: Option<ErasureExt>,
}

impl Manifest {
    /// Number of blocks: `ceil(datasetSize / blockSize)`.
    pub fn blocks_count(&self) -> u64 {
        self.block_size.blocks_count(self.dataset_size)
    }

    /// True iff the manifest carries the erasure-coding extension.
    pub fn is_protected(&self) -> bool {
        self.erasure.is_some()
    }

    /// The byte-exact encoding of `wire.md` §3.2. Empty filename or mimetype are left out.
    pub fn encode(&self) -> Vec<u8> {
        let mut header = Vec::with_capacity(160);
        pb::put_varint_field(&mut header, 1, 0);
        pb::put_bytes_field(&mut header, 2, &self.tree_cid.to_bytes());
        pb::put_varint_field(&mut header, 3, u64::from(self.block_size.get()));
        pb::put_varint_field(&mut header, 4, self.dataset_size);
        pb::put_varint_field(&mut header, 5, Codec::Block.code());
        pb::put_varint_field(&mut header, 6, SHA2_256);
        pb::put_varint_field(&mut header, 7, 2);
        if let Some(name) = self.filename.as_deref().filter(|s| !s.is_empty()) {
            pb::put_bytes_field(&mut header, 8, name.as_bytes());
        }
        if let Some(mime) = self.mimetype.as_deref().filter(|s| !s.is_empty()) {
            pb::put_bytes_field(&mut header, 9, mime.as_bytes());
        }
        if let Some(ext) = &self.erasure {
            pb::put_bytes_field(&mut header, 20, &ext.encode());
        }
        let mut out = Vec::with_capacity(header.len() + 4);
        pb::put_bytes_field(&mut out, 1, &header);
        out
    }

    /// Decodes and validates manifest bytes (`wire.md` §3.3, §4.1).
    pub fn decode(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.is_empty() || bytes.len() > MAX_MANIFEST_SIZE {
            return Err(ManifestError::Size(bytes.len()));
        }
        let mut header = None;
        let mut outer = FieldReader::new(bytes);
        while let Some((field, value)) = outer.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) if header.is_none() => header = Some(b),
                (1, Value::Bytes(_)) => return Err(ManifestError::Header),
                (1, _) => return Err(ManifestError::WireType(1)),
                _ => {}
            }
        }
        let header = header.ok_or(ManifestError::Header)?;

        let mut seen = [false; 8];
        let mut tree_cid = None;
        let mut block_size = None;
        let mut dataset_size = 0;
        let mut filename = None;
        let mut mimetype = None;
        let mut erasure = None;
        let mut r = FieldReader::new(header);
        while let Some((field, value)) = r.next_field()? {
            if (1..=9).contains(&field) || field == 20 {
                let want = if matches!(field, 2 | 8 | 9 | 20) {
                    pb::WIRE_LEN
                } else {
                    pb::WIRE_VARINT
                };
                if value.wire_type() != want {
                    return Err(ManifestError::WireType(field));
                }
            }
            if let Some(slot) = seen.get_mut(field as usize) {
                *slot = true;
            }
            match (field, value) {
                (1, Value::Varint(v)) if v != 0 => {
                    return Err(invalid(1, "manifestVersion must be 0"));
                }
                (2, Value::Bytes(b)) => {
                    tree_cid = Some(
                        Cid::from_bytes(b)
                            .and_then(|c| c.expect_codec(Codec::Root))
                            .map_err(|source| ManifestError::Cid { field: 2, source })?,
                    );
                }
                (3, Value::Varint(v)) => {
                    block_size = Some(BlockSize::new(v).map_err(|_| {
                        invalid(3, "blockSize must be a power of two in [4096, 524288]")
                    })?);
                }
                (4, Value::Varint(v)) => {
                    if v == 0 {
                        return Err(invalid(4, "datasetSize must be at least 1"));
                    }
                    dataset_size = v;
                }
                (5, Value::Varint(v)) if v != Codec::Block.code() => {
                    return Err(invalid(5, "codec must be 0xCD02"));
                }
                (6, Value::Varint(v)) if v != SHA2_256 => {
                    return Err(invalid(6, "hcodec must be 0x12"));
                }
                (7, Value::Varint(v)) if v != 2 => {
                    return Err(invalid(7, "version must be 2"));
                }
                (8, Value::Bytes(b)) => filename = text(b, 8, MAX_FILENAME_LEN)?,
                (9, Value::Bytes(b)) => mimetype = text(b, 9, MAX_MIMETYPE_LEN)?,
                (20, Value::Bytes(b)) => erasure = Some(ErasureExt::decode(b)?),
                _ => {}
            }
        }
        if let Some(missing) = (1..=7).find(|&f| !seen[f]) {
            return Err(ManifestError::Missing(missing as u32));
        }
        let block_size = block_size.expect("field 3 seen");
        if let Some(ext) = &erasure {
            ext.validate(block_size, dataset_size)?;
        }
        Ok(Manifest {
            tree_cid: tree_cid.expect("field 2 seen"),
            block_size,
            dataset_size,
            filename,
            mimetype,
            erasure,
        })
    }

    /// The manifest CID of encoded manifest bytes: `CIDv1(0xCD01, H(bytes))`.
    pub fn cid_of(bytes: &[u8]) -> Cid {
        Cid::new(Codec::Manifest, sha256(bytes))
    }
}

fn text(bytes: &[u8], field: u32, max: usize) -> Result<Option<String>, ManifestError> {
    if bytes.len() > max {
        return Err(invalid(field, "too long"));
    }
    let s = std::str::from_utf8(bytes).map_err(|_| invalid(field, "not UTF-8"))?;
    Ok((!s.is_empty()).then(|| s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Manifest {
        Manifest {
            tree_cid: Cid::new(Codec::Root, [3; 32]),
            block_size: BlockSize::DEFAULT,
            dataset_size: 18,
            filename: Some("a.txt".into()),
            mimetype: None,
            erasure: None,
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        assert_eq!(Manifest::decode(&m.encode()), Ok(m));
    }

    #[test]
    fn rejects_missing_and_bad_fields() {
        assert_eq!(Manifest::decode(&[]), Err(ManifestError::Size(0)));
        let bytes = sample().encode();
        // Truncation anywhere fails cleanly.
        for n in 1..bytes.len() {
            assert!(Manifest::decode(&bytes[..n]).is_err(), "prefix {n}");
        }
        // Gen-1 shape: field 1 as bytes inside the header.
        let mut header = Vec::new();
        pb::put_bytes_field(&mut header, 1, &[1, 2]);
        let mut outer = Vec::new();
        pb::put_bytes_field(&mut outer, 1, &header);
        assert_eq!(Manifest::decode(&outer), Err(ManifestError::WireType(1)));
    }

    #[test]
    fn huge_k_and_m_are_rejected_without_overflow() {
        for (k, m) in [(u32::MAX, 1), (2, u32::MAX), (u32::MAX, u32::MAX)] {
            let mut m0 = sample();
            m0.erasure = Some(ErasureExt {
                ec_k: k,
                ec_m: m,
                original_tree_cid: Cid::new(Codec::Root, [4; 32]),
                original_dataset_size: u64::MAX,
                strategy: 1,
                slot_roots: vec![],
            });
            assert!(matches!(
                Manifest::decode(&m0.encode()),
                Err(ManifestError::Invalid { field: 20, .. })
            ));
            let ext = m0.erasure.as_ref().expect("ext");
            let _ = ext.layout(BlockSize::MIN);
        }
    }

    #[test]
    fn unknown_fields_are_skipped() {
        let m = sample();
        let mut header = Vec::new();
        let inner = &m.encode()[2..];
        header.extend_from_slice(inner);
        pb::put_varint_field(&mut header, 10, 5);
        pb::put_bytes_field(&mut header, 11, b"xyz");
        let mut outer = Vec::new();
        pb::put_bytes_field(&mut outer, 1, &header);
        pb::put_varint_field(&mut outer, 2, 9);
        assert_eq!(Manifest::decode(&outer), Ok(m));
    }
}
