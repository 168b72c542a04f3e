//! The network message formats of the Gen-2 protocols, as pure encode/decode functions:
//! `/storage/manifest/1.0.0` (`wire.md` §6) and `/storage/blockexc/1.0.0` (`wire.md` §7).
//!
//! Every claimed length is checked against its documented limit before it is used or
//! allocated, and decoders never panic on arbitrary bytes. Stream handling (reading the
//! fixed-size prefixes, timeouts, bans) belongs to the network layer, which calls:
//! - [`ManifestRequest::cid_len`] / [`ManifestResponseHeader::decode`] on the prefixes of the
//!   manifest protocol, then [`check_manifest_digest`] before storing or decoding a manifest;
//! - [`FrameHeader::decode`] on each 5-byte blockexc frame header, then [`Frame::decode_body`];
//! - [`WantBlocksRequest::check_responder`] before any lookup, and
//!   [`WantBlocksRequest::check_requester`] before sending;
//! - [`DeliveryCheck::check`] on each delivered block (acceptance rules c–f).

mod accept;
mod control;
mod frame;
mod manifest_protocol;
mod want_blocks;

pub use accept::{DeliveryCheck, DeliveryError};
pub use control::{
    BlockAddress, BlockPresence, BlockRange, ControlError, MAX_BLOCK_PRESENCE_ENTRIES,
    MAX_CONTROL_BODY, MAX_PRESENCE_WINDOW_BLOCKS, MAX_RANGE_ITERATIONS_PER_MESSAGE,
    MAX_WANT_LIST_ENTRIES, Message, PresenceKind, WantEntry, Wantlist,
};
pub use frame::{
    BLOCKEXC_PROTOCOL, BlockexcError, FRAME_HEADER_LEN, Frame, FrameError, FrameHeader, FrameType,
    MAX_INBOUND_BLOCKEXC_STREAMS,
};
pub use manifest_protocol::{
    MANIFEST_PROTOCOL, MANIFEST_REQUEST_PREFIX_LEN, MANIFEST_RESPONSE_HEADER_LEN,
    MAX_MANIFEST_CONTENT_LEN, MAX_MANIFEST_REQUEST_CID_LEN, ManifestProtocolError, ManifestRequest,
    ManifestResponse, ManifestResponseHeader, ManifestStatus, check_manifest_digest,
};
pub use want_blocks::{
    BlockDelivery, MAX_BATCH_DATA_BYTES, MAX_BLOCK_DATA_LEN, MAX_BLOCKS_PER_BATCH,
    MAX_METADATA_SIZE, MAX_RANGE_END, MAX_WANT_BLOCKS_REQUEST_BYTES,
    MAX_WANT_BLOCKS_RESPONSE_BYTES, RangeError, TARGET_BATCH_BYTES, WantBlocksRequest,
    WantBlocksRequestError, WantBlocksResponse, WantBlocksResponseError,
};

pub use crate::merkle::MAX_PROOF_DEPTH as MAX_MERKLE_PROOF_DEPTH;

/// Why a message cannot be encoded within the limits its receiver enforces.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A section is longer than its limit.
    #[error("{what} of {len} bytes exceeds {max}")]
    TooLarge {
        /// What is too long.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A list has more elements than allowed.
    #[error("{count} {what} exceed {max}")]
    TooMany {
        /// What is too many.
        what: &'static str,
        /// How many there are.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A proof whose path is empty or deeper than 64.
    #[error("proof of block {index} has {len} path nodes, not 1..=64")]
    ProofDepth {
        /// The block index.
        index: u64,
        /// Its path length.
        len: usize,
    },
}
