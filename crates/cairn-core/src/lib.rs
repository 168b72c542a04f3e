//! cairn's data model and codecs: CIDs, chunking, the SHA-256 Merkle tree and its proofs, and the
//! Gen-2 manifest, byte-exact with `wire.md`.
//!
//! Layout:
//! - [`cid`]: CIDv1 values with cairn's four codecs, base58btc text form;
//! - [`chunk`]: block sizes and the zero-padding chunker;
//! - [`merkle`]: tree construction, proofs and their binary form;
//! - [`manifest`]: manifest encode/decode, including the erasure extension (field 20);
//! - [`dataset`]: the streaming, multi-core dataset builder;
//! - [`erasure`]: the stepped erasure-coding layout, Reed-Solomon parity, slot roots and cell
//!   proofs, protected manifests;
//! - [`durability`]: the durability layer's messages, identities, signed envelopes and ids;
//! - [`wire`]: the `/storage/manifest/1.0.0` and `/storage/blockexc/1.0.0` messages;
//! - [`pb`]: the small protobuf writer/reader the byte-exact formats use.
//!
//! This crate does no I/O, spawns no tasks and reads no clock. Decoders never panic on
//! arbitrary input.

mod bytes;
pub mod chunk;
pub mod cid;
pub mod dataset;
pub mod durability;
pub mod erasure;
pub mod manifest;
pub mod merkle;
pub mod pb;
pub mod wire;

pub use chunk::{BlockSize, Chunker, InvalidBlockSize};
pub use cid::{Cid, CidError, Codec, Digest, EMPTY_DIGEST, sha256};
pub use dataset::{Dataset, DatasetBuilder, DatasetLeaves, HashedBlock, build_from_bytes};
pub use erasure::{
    CELL_SIZE, CellGeometry, CellProof, EncodedColumns, ErasureError, IndexClass, Layout,
    ProtectEncoder, ProtectedDataset, ProtectedTree, RebuildError, RebuiltColumns, RowRebuild,
    protect,
};
pub use manifest::{ErasureExt, Manifest, ManifestError};
pub use merkle::{MerkleProof, MerkleTree, ProofDecodeError};
