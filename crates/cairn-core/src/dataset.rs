//! Streaming dataset builder: bytes in, hashed blocks out, tree and manifest at the end.
//!
//! [`DatasetBuilder`] cuts its input into blocks, hashes them in batches spread over the
//! machine's cores, and hands each hashed block back to the caller at once, so a 10 GB file never
//! sits in memory: the builder keeps one partial block, one batch and the 32-byte leaves.

use crate::{
    chunk::{BlockSize, Chunker},
    cid::{Cid, Codec, Digest, sha256},
    manifest::Manifest,
    merkle::{MerkleError, MerkleTree},
};

/// Blocks hashed together in one parallel batch (2 MiB at 64 KiB).
const BATCH_BLOCKS: usize = 32;

/// A block with its index in the dataset and its CID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashedBlock {
    /// Position in the dataset.
    pub index: u64,
    /// `CIDv1(0xCD02, H(data))`.
    pub cid: Cid,
    /// Exactly `blockSize` bytes.
    pub data: Vec<u8>,
}

/// A finished dataset: its tree and its manifest (bytes and CID).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The Merkle tree over the block digests.
    pub tree: MerkleTree,
    /// The manifest.
    pub manifest: Manifest,
    /// Its exact encoding.
    pub manifest_bytes: Vec<u8>,
    /// Its CID.
    pub manifest_cid: Cid,
}

impl Dataset {
    /// Builds the tree and the manifest from the block digests, in order.
    pub fn from_leaves(
        leaves: Vec<Digest>,
        block_size: BlockSize,
        dataset_size: u64,
        filename: Option<String>,
        mimetype: Option<String>,
    ) -> Result<Dataset, MerkleError> {
        let tree = MerkleTree::build(leaves)?;
        let manifest = Manifest {
            tree_cid: Cid::new(Codec::Root, tree.root()),
            block_size,
            dataset_size,
            filename: filename.filter(|s| !s.is_empty()),
            mimetype: mimetype.filter(|s| !s.is_empty()),
            erasure: None,
        };
        let manifest_bytes = manifest.encode();
        let manifest_cid = Manifest::cid_of(&manifest_bytes);
        Ok(Dataset {
            tree,
            manifest,
            manifest_bytes,
            manifest_cid,
        })
    }
}

/// Hashes every block, spreading the work over up to `threads` threads.
pub fn hash_blocks<B: AsRef<[u8]> + Sync>(blocks: &[B], threads: usize) -> Vec<Digest> {
    let threads = threads.clamp(1, blocks.len().max(1));
    if threads == 1 {
        return blocks.iter().map(|b| sha256(b.as_ref())).collect();
    }
    let per = blocks.len().div_ceil(threads);
    std::thread::scope(|s| {
        let mut parts = blocks.chunks(per);
        let first = parts.next().unwrap_or_default();
        let handles: Vec<_> = parts
            .map(|part| {
                s.spawn(move || part.iter().map(|b| sha256(b.as_ref())).collect::<Vec<_>>())
            })
            .collect();
        let mut out: Vec<Digest> = first.iter().map(|b| sha256(b.as_ref())).collect();
        for h in handles {
            out.extend(h.join().expect("hashing thread does not panic"));
        }
        out
    })
}

/// Streams a dataset: push bytes, receive hashed blocks, finish with the tree and manifest.
#[derive(Debug)]
pub struct DatasetBuilder {
    chunker: Chunker,
    pending: Vec<Vec<u8>>,
    leaves: Vec<Digest>,
    threads: usize,
}

impl DatasetBuilder {
    /// A builder for `block_size`, hashing on every available core.
    pub fn new(block_size: BlockSize) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        DatasetBuilder {
            chunker: Chunker::new(block_size),
            pending: Vec::with_capacity(BATCH_BLOCKS),
            leaves: Vec::new(),
            threads,
        }
    }

    /// Bytes pushed so far.
    pub fn dataset_size(&self) -> u64 {
        self.chunker.total()
    }

    /// Blocks hashed so far.
    pub fn blocks_hashed(&self) -> u64 {
        self.leaves.len() as u64
    }

    /// Adds `data`; returns the blocks whose hashing completed (possibly none), in order.
    pub fn push(&mut self, data: &[u8]) -> Vec<HashedBlock> {
        let pending = &mut self.pending;
        self.chunker.push(data, |b| pending.push(b));
        if self.pending.len() >= BATCH_BLOCKS {
            self.hash_pending()
        } else {
            Vec::new()
        }
    }

    fn hash_pending(&mut self) -> Vec<HashedBlock> {
        let blocks = std::mem::take(&mut self.pending);
        let digests = hash_blocks(&blocks, self.threads);
        let first = self.leaves.len() as u64;
        self.leaves.extend_from_slice(&digests);
        blocks
            .into_iter()
            .zip(digests)
            .enumerate()
            .map(|(i, (data, digest))| HashedBlock {
                index: first + i as u64,
                cid: Cid::new(Codec::Block, digest),
                data,
            })
            .collect()
    }

    /// Ends the input: returns the last hashed blocks (the final one zero-padded) and a
    /// [`DatasetLeaves`] from which the tree and manifest are built.
    pub fn finish(mut self) -> (Vec<HashedBlock>, DatasetLeaves) {
        let block_size = self.chunker.block_size();
        let dataset_size = self.chunker.total();
        let chunker = std::mem::replace(&mut self.chunker, Chunker::new(block_size));
        self.pending.extend(chunker.finish());
        let last = self.hash_pending();
        (
            last,
            DatasetLeaves {
                leaves: self.leaves,
                block_size,
                dataset_size,
            },
        )
    }
}

/// The leaves of a fully read dataset.
#[derive(Debug, Clone)]
pub struct DatasetLeaves {
    /// Block digests in order.
    pub leaves: Vec<Digest>,
    /// Block size.
    pub block_size: BlockSize,
    /// True (unpadded) size.
    pub dataset_size: u64,
}

impl DatasetLeaves {
    /// Builds the tree and manifest. Fails for an empty dataset (no tree exists for 0 leaves).
    pub fn into_dataset(
        self,
        filename: Option<String>,
        mimetype: Option<String>,
    ) -> Result<Dataset, MerkleError> {
        Dataset::from_leaves(
            self.leaves,
            self.block_size,
            self.dataset_size,
            filename,
            mimetype,
        )
    }
}

/// Builds a dataset from bytes in memory: its blocks and the [`Dataset`]. For tests and small
/// inputs.
pub fn build_from_bytes(
    data: &[u8],
    block_size: BlockSize,
    filename: Option<String>,
    mimetype: Option<String>,
) -> Result<(Vec<HashedBlock>, Dataset), MerkleError> {
    let mut builder = DatasetBuilder::new(block_size);
    let mut blocks = builder.push(data);
    let (last, leaves) = builder.finish();
    blocks.extend(last);
    let dataset = leaves.into_dataset(filename, mimetype)?;
    Ok((blocks, dataset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn some_file_contents() {
        let (blocks, ds) =
            build_from_bytes(b"some file contents", BlockSize::DEFAULT, None, None).expect("build");
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            ds.manifest.tree_cid.to_string(),
            "zDzSvJTezk7bJNQqFq8k1iHXY84psNuUfZVusA5bBQQUSuyzDSVL"
        );
        assert_eq!(
            ds.manifest_cid.to_string(),
            "zDvZRwzmDuZWyWGSH6qZqF7ft1AGzxqxqRNQXfpPRKPPr389wS6s"
        );
    }

    #[test]
    fn streaming_equals_one_shot_for_any_split() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + 3) as u8).collect();
        let (blocks, ds) = build_from_bytes(&data, BlockSize::MIN, None, None).expect("build");
        for piece in [1usize, 4095, 4096, 65_537] {
            let mut b = DatasetBuilder::new(BlockSize::MIN);
            let mut got = Vec::new();
            for p in data.chunks(piece) {
                got.extend(b.push(p));
            }
            let (last, leaves) = b.finish();
            got.extend(last);
            assert_eq!(got, blocks);
            let ds2 = leaves.into_dataset(None, None).expect("build");
            assert_eq!(ds2.manifest_cid, ds.manifest_cid);
        }
    }

    /// The single-threaded and the parallel hashing paths agree, whatever the machine's core
    /// count: the thread count is forced, not taken from `available_parallelism`.
    #[test]
    fn parallel_hashing_equals_single_threaded() {
        // 7 full blocks and a partial last one, zero-padded as the chunker pads it.
        let bs = BlockSize::MIN.get() as usize;
        let data: Vec<u8> = (0..7 * bs + 1234)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect();
        let mut blocks: Vec<Vec<u8>> = data.chunks(bs).map(<[u8]>::to_vec).collect();
        assert_eq!(blocks.len(), 8);
        blocks.last_mut().expect("blocks").resize(bs, 0);
        let naive: Vec<Digest> = blocks.iter().map(|b| sha256(b)).collect();
        assert_eq!(hash_blocks(&blocks, 1), naive);
        // 2, 3 and 4 split 8 blocks evenly or not; 8 gives one block per thread; 64 more
        // threads than blocks.
        for threads in [2, 3, 4, 8, 64] {
            assert_eq!(hash_blocks(&blocks, threads), naive, "{threads} threads");
        }
        // Unequal lengths stay in order too (the unpadded partial block last).
        let raw: Vec<&[u8]> = data.chunks(bs).collect();
        let naive_raw: Vec<Digest> = raw.iter().map(|b| sha256(b)).collect();
        assert_eq!(hash_blocks(&raw, 4), naive_raw);
        assert_eq!(hash_blocks::<Vec<u8>>(&[], 4), Vec::<Digest>::new());

        // The builder gives the same blocks and dataset with 1 thread and with 4, for an input
        // spanning more than one batch, whose last block is partial.
        let big: Vec<u8> = (0..(BATCH_BLOCKS + 5) * bs + 777)
            .map(|i| (i % 251) as u8)
            .collect();
        let build = |threads: usize| {
            let mut b = DatasetBuilder::new(BlockSize::MIN);
            b.threads = threads;
            let mut got = Vec::new();
            for piece in big.chunks(10_000) {
                got.extend(b.push(piece));
            }
            let (last, leaves) = b.finish();
            got.extend(last);
            (got, leaves.into_dataset(None, None).expect("dataset"))
        };
        let (one, ds_one) = build(1);
        let (four, ds_four) = build(4);
        assert_eq!(one.len(), BATCH_BLOCKS + 6);
        assert_eq!(one, four);
        assert_eq!(ds_one.manifest_cid, ds_four.manifest_cid);
        assert_eq!(ds_one.manifest.dataset_size, big.len() as u64);
        for (i, block) in one.iter().enumerate() {
            assert_eq!(block.index, i as u64);
            assert_eq!(block.cid, Cid::new(Codec::Block, sha256(&block.data)));
        }
        let tail = &one.last().expect("blocks").data;
        assert_eq!(&tail[..777], &big[big.len() - 777..]);
        assert!(tail[777..].iter().all(|&b| b == 0), "zero padding");
    }

    #[test]
    fn empty_input_has_no_dataset() {
        assert!(build_from_bytes(b"", BlockSize::DEFAULT, None, None).is_err());
    }
}
