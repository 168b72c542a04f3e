//! WantBlocksRequest (frame type 1, `wire.md` §7.4) and WantBlocksResponse (frame type 2,
//! `wire.md` §7.5). All integers little-endian.

use std::ops::Range;

use ::bytes::Bytes;

use super::{EncodeError, control::BlockRange};
use crate::{
    cid::{CID_LEN, Cid, CidError, Codec},
    manifest::Manifest,
    merkle::{MAX_PROOF_DEPTH, MerkleProof, ProofDecodeError},
};

/// Largest WantBlocksRequest body (`MaxWantBlocksRequestBytes`).
pub const MAX_WANT_BLOCKS_REQUEST_BYTES: usize = 1280;
/// Most blocks one request may ask for, and one response may carry (`MaxBlocksPerBatch`).
pub const MAX_BLOCKS_PER_BATCH: u64 = 32;
/// `TargetBatchBytes`: the data allowance of a response beyond its metadata.
pub const TARGET_BATCH_BYTES: usize = 131_072;
/// Most block bytes one request may ask for: `Σcount · blockSize ≤ 4 MiB`.
pub const MAX_BATCH_DATA_BYTES: u64 = 4 * 1024 * 1024;
/// Largest metadata section of a response (`MaxMetadataSize`).
pub const MAX_METADATA_SIZE: usize = 4_194_304;
/// Largest WantBlocksResponse body (`MaxWantBlocksResponseBytes` = 4 + 4 MiB + 128 KiB).
pub const MAX_WANT_BLOCKS_RESPONSE_BYTES: usize = 4 + MAX_METADATA_SIZE + TARGET_BATCH_BYTES;
/// Largest `dataLen` of one response entry (the largest block size).
pub const MAX_BLOCK_DATA_LEN: usize = 524_288;
/// Exclusive bound on `start + count` of a requested range (2^63).
pub const MAX_RANGE_END: u64 = 1 << 63;

/// Fixed part of a request body: `requestId ‖ cidLen ‖ rangeCount`.
const REQUEST_FIXED_LEN: usize = 8 + 2 + 4;
/// Fixed part of the metadata: `requestId ‖ cidLen ‖ blockCount`.
const META_FIXED_LEN: usize = 8 + 2 + 4;
/// Fixed part of one entry: `index ‖ cidLen ‖ dataLen ‖ proofLen`.
const ENTRY_FIXED_LEN: usize = 8 + 2 + 4 + 2;

/// Why a WantBlocksRequest body does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WantBlocksRequestError {
    /// Body above 1280 bytes.
    #[error("WantBlocksRequest body of {0} bytes exceeds 1280")]
    BodyTooLarge(usize),
    /// The body ends before the tree CID or the range count.
    #[error("WantBlocksRequest is truncated")]
    Truncated,
    /// `cidLen = 0`.
    #[error("WantBlocksRequest has an empty treeCid")]
    EmptyCid,
    /// The tree CID is not a valid root CID.
    #[error("WantBlocksRequest treeCid: {0}")]
    Cid(#[from] CidError),
    /// The body is not `14 + cidLen + 16·rangeCount` bytes. The responder answers this with an
    /// empty response, so the id and tree are kept.
    #[error("WantBlocksRequest body is {actual} bytes, its header says {expected}")]
    LengthMismatch {
        /// The request id.
        request_id: u64,
        /// The tree CID.
        tree_cid: Cid,
        /// `14 + cidLen + 16·rangeCount`.
        expected: u64,
        /// The body length.
        actual: usize,
    },
}

/// Why the ranges of a request are refused (responder pre-lookup checks and requester rules).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// A range with `count = 0`.
    #[error("range at {start} has count 0")]
    ZeroCount {
        /// Its start.
        start: u64,
    },
    /// `start + count` overflows or exceeds 2^63.
    #[error("range ({start}, {count}) ends beyond 2^63")]
    Overflow {
        /// Its start.
        start: u64,
        /// Its count.
        count: u64,
    },
    /// More than 32 blocks in all.
    #[error("request asks for {0} blocks, more than 32")]
    TooManyBlocks(u64),
    /// (Requester) no ranges at all.
    #[error("request has no ranges")]
    NoRanges,
    /// (Requester) ranges not ascending and disjoint.
    #[error("range at {start} is not after the previous one")]
    Unordered {
        /// Start of the offending range.
        start: u64,
    },
    /// (Requester) a range beyond the tree.
    #[error("range ({start}, {count}) is outside [0, {blocks_count})")]
    OutOfBounds {
        /// Its start.
        start: u64,
        /// Its count.
        count: u64,
        /// Blocks of the tree.
        blocks_count: u64,
    },
    /// (Requester) a padding index of a protected tree.
    #[error("index {0} is erasure-coding padding")]
    Padding(u64),
    /// (Requester) `Σcount · blockSize > 4 MiB`.
    #[error("request asks for {0} bytes of blocks, more than 4 MiB")]
    BatchTooLarge(u64),
    /// (Requester) the request is not for the manifest's tree.
    #[error("request treeCid is not the manifest's")]
    TreeMismatch,
    /// (Requester) the encoded body would exceed 1280 bytes.
    #[error("request body of {0} bytes exceeds 1280")]
    BodyTooLarge(usize),
}

/// A request for blocks with their proofs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantBlocksRequest {
    /// Unique among the requester's outstanding requests to the peer.
    pub request_id: u64,
    /// The tree (codec 0xCD03).
    pub tree_cid: Cid,
    /// Requested runs, in order.
    pub ranges: Vec<BlockRange>,
}

impl WantBlocksRequest {
    /// Length of the encoded body: `14 + 38 + 16·rangeCount`.
    pub fn encoded_len(&self) -> usize {
        REQUEST_FIXED_LEN + CID_LEN + 16 * self.ranges.len()
    }

    /// The body bytes. Fails if it would exceed 1280 bytes.
    pub fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        let len = self.encoded_len();
        if len > MAX_WANT_BLOCKS_REQUEST_BYTES {
            return Err(EncodeError::TooLarge {
                what: "WantBlocksRequest body",
                len,
                max: MAX_WANT_BLOCKS_REQUEST_BYTES,
            });
        }
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&(CID_LEN as u16).to_le_bytes());
        out.extend_from_slice(&self.tree_cid.to_bytes());
        out.extend_from_slice(&(self.ranges.len() as u32).to_le_bytes());
        for range in &self.ranges {
            out.extend_from_slice(&range.start.to_le_bytes());
            out.extend_from_slice(&range.count.to_le_bytes());
        }
        Ok(out)
    }

    /// Decodes a body. Structure only: the range rules are [`Self::check_responder`] (before any
    /// lookup) and [`Self::check_requester`].
    pub fn decode_body(body: &[u8]) -> Result<WantBlocksRequest, WantBlocksRequestError> {
        use WantBlocksRequestError as E;
        if body.len() > MAX_WANT_BLOCKS_REQUEST_BYTES {
            return Err(E::BodyTooLarge(body.len()));
        }
        let mut r = crate::bytes::Reader::new(body);
        let request_id = r.u64_le().map_err(|_| E::Truncated)?;
        let cid_len = r.u16_le().map_err(|_| E::Truncated)?;
        if cid_len == 0 {
            return Err(E::EmptyCid);
        }
        let cid = r.take(usize::from(cid_len)).map_err(|_| E::Truncated)?;
        let tree_cid = Cid::from_bytes(cid)?.expect_codec(Codec::Root)?;
        let range_count = r.u32_le().map_err(|_| E::Truncated)?;
        let expected = REQUEST_FIXED_LEN as u64 + u64::from(cid_len) + 16 * u64::from(range_count);
        if expected != body.len() as u64 {
            return Err(E::LengthMismatch {
                request_id,
                tree_cid,
                expected,
                actual: body.len(),
            });
        }
        // rangeCount is now bounded by the 1280-byte body.
        let mut ranges = Vec::with_capacity(range_count as usize);
        for _ in 0..range_count {
            let start = r.u64_le().map_err(|_| E::Truncated)?;
            let count = r.u64_le().map_err(|_| E::Truncated)?;
            ranges.push(BlockRange { start, count });
        }
        Ok(WantBlocksRequest {
            request_id,
            tree_cid,
            ranges,
        })
    }

    /// The responder's checks before any lookup (`wire.md` §7.4): no `count = 0`, no
    /// `start + count` beyond 2^63, `Σcount ≤ 32`. Returns `Σcount`. (The body length was
    /// checked by [`Self::decode_body`]; whether the tree is held and advertised is the node's
    /// check.) A failure is answered with an empty response ([`WantBlocksResponse::empty`]).
    pub fn check_responder(&self) -> Result<u64, RangeError> {
        let mut total: u64 = 0;
        for range in &self.ranges {
            if range.count == 0 {
                return Err(RangeError::ZeroCount { start: range.start });
            }
            match range.start.checked_add(range.count) {
                Some(end) if end <= MAX_RANGE_END => {}
                _ => {
                    return Err(RangeError::Overflow {
                        start: range.start,
                        count: range.count,
                    });
                }
            }
            total = total.saturating_add(range.count);
            if total > MAX_BLOCKS_PER_BATCH {
                return Err(RangeError::TooManyBlocks(total));
            }
        }
        Ok(total)
    }

    /// The requester's rules (`wire.md` §7.4) for a request on `manifest`'s tree: at least one
    /// range; ranges ascending, disjoint, `count ≥ 1`, inside `[0, blocksCount)`, no padding
    /// index; `Σcount ≤ 32`, `Σcount · blockSize ≤ 4 MiB`; body ≤ 1280 bytes. Returns `Σcount`.
    pub fn check_requester(&self, manifest: &Manifest) -> Result<u64, RangeError> {
        if self.tree_cid != manifest.tree_cid {
            return Err(RangeError::TreeMismatch);
        }
        if self.ranges.is_empty() {
            return Err(RangeError::NoRanges);
        }
        let len = self.encoded_len();
        if len > MAX_WANT_BLOCKS_REQUEST_BYTES {
            return Err(RangeError::BodyTooLarge(len));
        }
        let total = self.check_responder()?;
        let blocks_count = manifest.blocks_count();
        let padding = padding_range(manifest);
        let mut next_free = 0;
        for range in &self.ranges {
            if range.start < next_free {
                return Err(RangeError::Unordered { start: range.start });
            }
            // check_responder ruled out overflow.
            let end = range.start + range.count;
            if end > blocks_count {
                return Err(RangeError::OutOfBounds {
                    start: range.start,
                    count: range.count,
                    blocks_count,
                });
            }
            if range.start < padding.end && padding.start < end {
                return Err(RangeError::Padding(range.start.max(padding.start)));
            }
            next_free = end;
        }
        let bytes = total * u64::from(manifest.block_size.get());
        if bytes > MAX_BATCH_DATA_BYTES {
            return Err(RangeError::BatchTooLarge(bytes));
        }
        Ok(total)
    }

    /// True iff `index` lies in one of the requested ranges (acceptance rule b).
    pub fn contains(&self, index: u64) -> bool {
        self.ranges
            .iter()
            .any(|r| index >= r.start && index - r.start < r.count)
    }

    /// The requested indices in request order. Call after [`Self::check_responder`], which
    /// bounds their number by 32.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.ranges
            .iter()
            .flat_map(|r| r.start..r.start.saturating_add(r.count))
    }
}

/// The padding indices `[n, rounded)` of a protected manifest; empty otherwise.
pub(crate) fn padding_range(manifest: &Manifest) -> Range<u64> {
    match &manifest.erasure {
        Some(ext) => {
            let layout = ext.layout(manifest.block_size);
            layout.original_blocks..layout.rounded
        }
        None => 0..0,
    }
}

/// Why a WantBlocksResponse body does not parse (`wire.md` §7.5 steps 1–4).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WantBlocksResponseError {
    /// Step 1: body above 4325380 bytes.
    #[error("WantBlocksResponse body of {0} bytes exceeds 4325380")]
    BodyTooLarge(usize),
    /// The body is shorter than `metaLen`.
    #[error("WantBlocksResponse is truncated")]
    Truncated,
    /// Step 2: `metaLen > 4 MiB` or `4 + metaLen > body length`.
    #[error("WantBlocksResponse metaLen {meta_len} does not fit (body {body_len} bytes)")]
    MetadataLength {
        /// Claimed metadata length.
        meta_len: u32,
        /// Body length.
        body_len: usize,
    },
    /// Step 3: a read past the end of the metadata.
    #[error("WantBlocksResponse metadata is truncated")]
    MetadataTruncated,
    /// Step 3: a `cidLen` of 0.
    #[error("WantBlocksResponse has an empty CID")]
    EmptyCid,
    /// The tree CID is not a valid root CID.
    #[error("WantBlocksResponse treeCid: {0}")]
    TreeCid(CidError),
    /// Step 3: `blockCount > 32`.
    #[error("WantBlocksResponse blockCount {0} exceeds 32")]
    BlockCount(u32),
    /// A block CID is not a valid cairn CID (its codec is checked on acceptance, rule d).
    #[error("WantBlocksResponse entry {entry}: invalid block CID: {error}")]
    BlockCid {
        /// Entry number.
        entry: usize,
        /// The CID error.
        error: CidError,
    },
    /// Step 3: `dataLen > 524288`.
    #[error("WantBlocksResponse entry {entry}: dataLen {len} exceeds 524288")]
    DataLength {
        /// Entry number.
        entry: usize,
        /// Claimed length.
        len: u32,
    },
    /// Step 3: a proof that fails `wire.md` §2.3.
    #[error("WantBlocksResponse entry {entry}: bad proof: {error}")]
    Proof {
        /// Entry number.
        entry: usize,
        /// The proof error.
        error: ProofDecodeError,
    },
    /// Step 3: bytes after the last entry inside `metaLen`.
    #[error("WantBlocksResponse metadata has trailing bytes")]
    TrailingMetadata,
    /// Step 4: the data section is not `Σ dataLen` bytes.
    #[error("WantBlocksResponse data is {actual} bytes, entries say {expected}")]
    DataMismatch {
        /// `Σ dataLen`.
        expected: u64,
        /// `body length − 4 − metaLen`.
        actual: usize,
    },
}

/// One block of a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDelivery {
    /// Leaf index in the tree.
    pub index: u64,
    /// The block CID (codec 0xCD02 for an acceptable entry).
    pub block_cid: Cid,
    /// The block bytes (`blockSize`, or 0 for a padding index). A decoded response's blocks
    /// share the frame buffer they were read into ([`WantBlocksResponse::decode_bytes`]).
    pub data: Bytes,
    /// The inclusion proof; `None` encodes as `proofLen = 0`, which the requester rejects.
    pub proof: Option<MerkleProof>,
}

impl BlockDelivery {
    fn meta_len(&self) -> usize {
        ENTRY_FIXED_LEN + CID_LEN + self.proof.as_ref().map_or(0, MerkleProof::encoded_len)
    }
}

/// A response to a [`WantBlocksRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantBlocksResponse {
    /// The request's id.
    pub request_id: u64,
    /// The request's tree.
    pub tree_cid: Cid,
    /// Delivered blocks, in request order.
    pub blocks: Vec<BlockDelivery>,
}

impl WantBlocksResponse {
    /// A response with no blocks: the rejection of a request, or "nothing held".
    pub fn empty(request_id: u64, tree_cid: Cid) -> WantBlocksResponse {
        WantBlocksResponse {
            request_id,
            tree_cid,
            blocks: Vec::new(),
        }
    }

    /// Length of the metadata section.
    pub fn metadata_len(&self) -> usize {
        META_FIXED_LEN
            + CID_LEN
            + self
                .blocks
                .iter()
                .map(BlockDelivery::meta_len)
                .sum::<usize>()
    }

    /// Length of the encoded body: `4 + metaLen + Σ dataLen`.
    pub fn encoded_len(&self) -> usize {
        4 + self.metadata_len() + self.blocks.iter().map(|b| b.data.len()).sum::<usize>()
    }

    /// Adds `block` if the response stays within every limit of §7.5 (32 blocks, 4 MiB of
    /// metadata, 4325380 bytes of body); otherwise hands it back. Responders fill responses with
    /// this, so they send fewer blocks rather than an oversized response.
    pub fn try_push(&mut self, block: BlockDelivery) -> Result<(), BlockDelivery> {
        let meta = self.metadata_len() + block.meta_len();
        let body = self.encoded_len() + block.meta_len() + block.data.len();
        if self.blocks.len() as u64 >= MAX_BLOCKS_PER_BATCH
            || block.data.len() > MAX_BLOCK_DATA_LEN
            || block.proof.as_ref().is_some_and(|p| !proof_depth_ok(p))
            || meta > MAX_METADATA_SIZE
            || body > MAX_WANT_BLOCKS_RESPONSE_BYTES
        {
            return Err(block);
        }
        self.blocks.push(block);
        Ok(())
    }

    /// The body bytes. Fails if a limit of §7.5 is exceeded.
    pub fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        let mut out = self.encode_head()?;
        out.reserve_exact(self.encoded_len() - out.len());
        for block in &self.blocks {
            out.extend_from_slice(&block.data);
        }
        Ok(out)
    }

    /// The body up to its data section: `metaLen ‖ metadata`. The body is this followed by each
    /// block's `data` in order, so a writer can send the blocks from their own buffers instead
    /// of copying them into one. Fails if a limit of §7.5 is exceeded.
    pub fn encode_head(&self) -> Result<Vec<u8>, EncodeError> {
        if self.blocks.len() as u64 > MAX_BLOCKS_PER_BATCH {
            return Err(EncodeError::TooMany {
                what: "WantBlocksResponse blocks",
                count: self.blocks.len(),
                max: MAX_BLOCKS_PER_BATCH as usize,
            });
        }
        for block in &self.blocks {
            if block.data.len() > MAX_BLOCK_DATA_LEN {
                return Err(EncodeError::TooLarge {
                    what: "WantBlocksResponse block data",
                    len: block.data.len(),
                    max: MAX_BLOCK_DATA_LEN,
                });
            }
            if let Some(proof) = &block.proof
                && !proof_depth_ok(proof)
            {
                return Err(EncodeError::ProofDepth {
                    index: block.index,
                    len: proof.path.len(),
                });
            }
        }
        let meta_len = self.metadata_len();
        if meta_len > MAX_METADATA_SIZE {
            return Err(EncodeError::TooLarge {
                what: "WantBlocksResponse metadata",
                len: meta_len,
                max: MAX_METADATA_SIZE,
            });
        }
        let len = self.encoded_len();
        if len > MAX_WANT_BLOCKS_RESPONSE_BYTES {
            return Err(EncodeError::TooLarge {
                what: "WantBlocksResponse body",
                len,
                max: MAX_WANT_BLOCKS_RESPONSE_BYTES,
            });
        }
        let mut out = Vec::with_capacity(4 + meta_len);
        out.extend_from_slice(&(meta_len as u32).to_le_bytes());
        out.extend_from_slice(&self.request_id.to_le_bytes());
        out.extend_from_slice(&(CID_LEN as u16).to_le_bytes());
        out.extend_from_slice(&self.tree_cid.to_bytes());
        out.extend_from_slice(&(self.blocks.len() as u32).to_le_bytes());
        for block in &self.blocks {
            out.extend_from_slice(&block.index.to_le_bytes());
            out.extend_from_slice(&(CID_LEN as u16).to_le_bytes());
            out.extend_from_slice(&block.block_cid.to_bytes());
            out.extend_from_slice(&(block.data.len() as u32).to_le_bytes());
            match &block.proof {
                Some(proof) => {
                    out.extend_from_slice(&(proof.encoded_len() as u16).to_le_bytes());
                    proof.encode_into(&mut out);
                }
                None => out.extend_from_slice(&0u16.to_le_bytes()),
            }
        }
        Ok(out)
    }

    /// Parses a body following `wire.md` §7.5 steps 1–4 in order, each check before the
    /// allocation it guards. Acceptance of the entries (rules a–f) is separate: see
    /// [`DeliveryCheck`](super::DeliveryCheck).
    pub fn decode_body(body: &[u8]) -> Result<WantBlocksResponse, WantBlocksResponseError> {
        Self::decode_with(body, |range| Bytes::copy_from_slice(&body[range]))
    }

    /// [`Self::decode_body`] on an owned body: each block's `data` is a slice of `body`, not a
    /// copy.
    pub fn decode_bytes(body: Bytes) -> Result<WantBlocksResponse, WantBlocksResponseError> {
        Self::decode_with(&body, |range| body.slice(range))
    }

    /// The parse, with `data` giving the bytes of a range of `body` for one block.
    fn decode_with(
        body: &[u8],
        data_of: impl Fn(Range<usize>) -> Bytes,
    ) -> Result<WantBlocksResponse, WantBlocksResponseError> {
        use WantBlocksResponseError as E;
        // Step 1.
        if body.len() > MAX_WANT_BLOCKS_RESPONSE_BYTES {
            return Err(E::BodyTooLarge(body.len()));
        }
        // Step 2.
        let (len_bytes, rest) = body.split_first_chunk::<4>().ok_or(E::Truncated)?;
        let meta_len = u32::from_le_bytes(*len_bytes);
        if meta_len as usize > MAX_METADATA_SIZE || meta_len as usize > rest.len() {
            return Err(E::MetadataLength {
                meta_len,
                body_len: body.len(),
            });
        }
        let (meta, data) = rest.split_at(meta_len as usize);
        // Step 3.
        let truncated = |_| E::MetadataTruncated;
        let mut r = crate::bytes::Reader::new(meta);
        let request_id = r.u64_le().map_err(truncated)?;
        let cid_len = r.u16_le().map_err(truncated)?;
        if cid_len == 0 {
            return Err(E::EmptyCid);
        }
        let tree_cid = Cid::from_bytes(r.take(usize::from(cid_len)).map_err(truncated)?)
            .and_then(|c| c.expect_codec(Codec::Root))
            .map_err(E::TreeCid)?;
        let block_count = r.u32_le().map_err(truncated)?;
        if u64::from(block_count) > MAX_BLOCKS_PER_BATCH {
            return Err(E::BlockCount(block_count));
        }
        let mut entries = Vec::with_capacity(block_count as usize);
        let mut data_total: u64 = 0;
        for entry in 0..block_count as usize {
            let index = r.u64_le().map_err(truncated)?;
            let cid_len = r.u16_le().map_err(truncated)?;
            if cid_len == 0 {
                return Err(E::EmptyCid);
            }
            let block_cid = Cid::from_bytes(r.take(usize::from(cid_len)).map_err(truncated)?)
                .map_err(|error| E::BlockCid { entry, error })?;
            let data_len = r.u32_le().map_err(truncated)?;
            if data_len as usize > MAX_BLOCK_DATA_LEN {
                return Err(E::DataLength {
                    entry,
                    len: data_len,
                });
            }
            let proof_len = r.u16_le().map_err(truncated)?;
            let proof = match proof_len {
                0 => None,
                n => Some(
                    MerkleProof::decode(r.take(usize::from(n)).map_err(truncated)?)
                        .map_err(|error| E::Proof { entry, error })?,
                ),
            };
            data_total += u64::from(data_len);
            entries.push((index, block_cid, data_len as usize, proof));
        }
        if !r.is_empty() {
            return Err(E::TrailingMetadata);
        }
        // Step 4.
        if data.len() as u64 != data_total {
            return Err(E::DataMismatch {
                expected: data_total,
                actual: data.len(),
            });
        }
        let mut at = body.len() - data.len();
        let blocks = entries
            .into_iter()
            .map(|(index, block_cid, len, proof)| {
                let range = at..at + len;
                at += len;
                BlockDelivery {
                    index,
                    block_cid,
                    data: data_of(range),
                    proof,
                }
            })
            .collect();
        Ok(WantBlocksResponse {
            request_id,
            tree_cid,
            blocks,
        })
    }
}

fn proof_depth_ok(proof: &MerkleProof) -> bool {
    (1..=MAX_PROOF_DEPTH).contains(&proof.path.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::MerkleTree;

    fn tree_cid() -> Cid {
        Cid::new(Codec::Root, [1; 32])
    }

    fn request(ranges: &[(u64, u64)]) -> WantBlocksRequest {
        WantBlocksRequest {
            request_id: 5,
            tree_cid: tree_cid(),
            ranges: ranges
                .iter()
                .map(|&(start, count)| BlockRange { start, count })
                .collect(),
        }
    }

    #[test]
    fn responder_checks() {
        assert_eq!(request(&[(0, 32)]).check_responder(), Ok(32));
        assert_eq!(
            request(&[(0, 30), (40, 3)]).check_responder(),
            Err(RangeError::TooManyBlocks(33))
        );
        assert_eq!(
            request(&[(4, 0)]).check_responder(),
            Err(RangeError::ZeroCount { start: 4 })
        );
        assert!(matches!(
            request(&[(u64::MAX, 2)]).check_responder(),
            Err(RangeError::Overflow { .. })
        ));
        assert!(matches!(
            request(&[((1 << 63) - 1, 2)]).check_responder(),
            Err(RangeError::Overflow { .. })
        ));
        assert_eq!(request(&[((1 << 63) - 1, 1)]).check_responder(), Ok(1));
        // Many huge ranges: the sum saturates instead of overflowing.
        assert!(
            request(&[(0, 1 << 62), (1 << 62, 1 << 62)])
                .check_responder()
                .is_err()
        );
    }

    #[test]
    fn length_mismatch_keeps_id_and_tree() {
        let mut body = request(&[(0, 1)]).encode_body().expect("encode");
        body.push(0);
        assert_eq!(
            WantBlocksRequest::decode_body(&body),
            Err(WantBlocksRequestError::LengthMismatch {
                request_id: 5,
                tree_cid: tree_cid(),
                expected: 14 + 38 + 16,
                actual: 14 + 38 + 16 + 1,
            })
        );
        assert!(request(&[(0, 1); 77]).encode_body().is_err());
        assert!(request(&[(0, 1); 76]).encode_body().is_ok());
    }

    #[test]
    fn response_limits() {
        let tree = MerkleTree::build(vec![[2; 32]; 3]).expect("tree");
        let block = |i: u64, len: usize| BlockDelivery {
            index: i,
            block_cid: Cid::new(Codec::Block, [2; 32]),
            data: vec![0; len].into(),
            proof: Some(tree.proof(i % 3).expect("proof")),
        };
        let mut resp = WantBlocksResponse::empty(1, tree_cid());
        for i in 0..32 {
            assert!(resp.try_push(block(i, 4096)).is_ok());
        }
        assert!(resp.try_push(block(32, 4096)).is_err());
        let body = resp.encode_body().expect("encode");
        assert_eq!(body.len(), resp.encoded_len());
        assert_eq!(WantBlocksResponse::decode_body(&body), Ok(resp));

        // The body cap stops 512 KiB blocks after 8 (4 MiB + metadata ≤ 4325380).
        let mut big = WantBlocksResponse::empty(1, tree_cid());
        let mut n = 0;
        while big.try_push(block(n, MAX_BLOCK_DATA_LEN)).is_ok() {
            n += 1;
        }
        assert_eq!(n, 8);

        // Step 1 and step 2 limits.
        let huge = vec![0u8; MAX_WANT_BLOCKS_RESPONSE_BYTES + 1];
        assert_eq!(
            WantBlocksResponse::decode_body(&huge),
            Err(WantBlocksResponseError::BodyTooLarge(huge.len()))
        );
        let mut claims = (MAX_METADATA_SIZE as u32 + 1).to_le_bytes().to_vec();
        claims.resize(MAX_METADATA_SIZE + 100, 0);
        assert!(matches!(
            WantBlocksResponse::decode_body(&claims),
            Err(WantBlocksResponseError::MetadataLength { .. })
        ));
        assert!(matches!(
            WantBlocksResponse::decode_body(&[10, 0, 0, 0, 1]),
            Err(WantBlocksResponseError::MetadataLength { .. })
        ));
    }

    #[test]
    fn response_step3_and_step4() {
        let tree = MerkleTree::build(vec![[2; 32]; 3]).expect("tree");
        let resp = WantBlocksResponse {
            request_id: 9,
            tree_cid: tree_cid(),
            blocks: vec![BlockDelivery {
                index: 1,
                block_cid: Cid::new(Codec::Block, [2; 32]),
                data: vec![7; 4096].into(),
                proof: Some(tree.proof(1).expect("proof")),
            }],
        };
        let body = resp.encode_body().expect("encode");
        // Step 4: one byte more or less of data.
        let mut more = body.clone();
        more.push(0);
        assert!(matches!(
            WantBlocksResponse::decode_body(&more),
            Err(WantBlocksResponseError::DataMismatch { .. })
        ));
        assert!(matches!(
            WantBlocksResponse::decode_body(&body[..body.len() - 1]),
            Err(WantBlocksResponseError::DataMismatch { .. })
        ));
        // blockCount 33.
        let mut bad = body.clone();
        let at = 4 + 8 + 2 + 38;
        bad[at..at + 4].copy_from_slice(&33u32.to_le_bytes());
        assert_eq!(
            WantBlocksResponse::decode_body(&bad),
            Err(WantBlocksResponseError::BlockCount(33))
        );
        // dataLen above 512 KiB.
        let mut bad = body.clone();
        let at = 4 + 8 + 2 + 38 + 4 + 8 + 2 + 38;
        bad[at..at + 4].copy_from_slice(&(524_289u32).to_le_bytes());
        assert!(matches!(
            WantBlocksResponse::decode_body(&bad),
            Err(WantBlocksResponseError::DataLength {
                entry: 0,
                len: 524_289
            })
        ));
        // A proof with pathCount 0.
        let mut bad = body.clone();
        let at = 4 + 8 + 2 + 38 + 4 + 8 + 2 + 38 + 4 + 2 + 24;
        bad[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
        assert!(matches!(
            WantBlocksResponse::decode_body(&bad),
            Err(WantBlocksResponseError::Proof { entry: 0, .. })
        ));
        // Trailing metadata: grow metaLen by one, keeping the body length.
        let mut bad = body.clone();
        let meta_len = u32::from_le_bytes(bad[..4].try_into().expect("4 bytes"));
        bad[..4].copy_from_slice(&(meta_len + 1).to_le_bytes());
        assert_eq!(
            WantBlocksResponse::decode_body(&bad),
            Err(WantBlocksResponseError::TrailingMetadata)
        );
    }
}
