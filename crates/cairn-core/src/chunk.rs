//! Block sizes and chunking (`wire.md` §1.1).

use std::fmt;

/// Why a block size is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("blockSize must be a power of two between 4096 and 524288 bytes (got {0})")]
pub struct InvalidBlockSize(pub u64);

/// A valid block size: a power of two in `[4096, 524288]`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockSize(u32);

impl BlockSize {
    /// 4 KiB.
    pub const MIN: BlockSize = BlockSize(4096);
    /// 512 KiB.
    pub const MAX: BlockSize = BlockSize(524_288);
    /// 64 KiB, the default.
    pub const DEFAULT: BlockSize = BlockSize(65_536);

    /// Validates a block size.
    pub fn new(bytes: u64) -> Result<BlockSize, InvalidBlockSize> {
        if bytes.is_power_of_two()
            && (u64::from(Self::MIN.0)..=u64::from(Self::MAX.0)).contains(&bytes)
        {
            Ok(BlockSize(bytes as u32))
        } else {
            Err(InvalidBlockSize(bytes))
        }
    }

    /// The size in bytes.
    pub const fn get(self) -> u32 {
        self.0
    }

    /// The size in bytes, as `usize`.
    pub const fn as_usize(self) -> usize {
        self.0 as usize
    }

    /// `ceil(dataset_size / block_size)`.
    pub const fn blocks_count(self, dataset_size: u64) -> u64 {
        dataset_size.div_ceil(self.0 as u64)
    }
}

impl Default for BlockSize {
    fn default() -> Self {
        BlockSize::DEFAULT
    }
}

impl fmt::Debug for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for BlockSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Cuts a byte stream into blocks of exactly `block_size` bytes, zero-padding the last one.
///
/// Feed it slices of any size with [`Chunker::push`]; full blocks come out as owned buffers, so
/// memory stays at one partial block plus what the caller keeps.
#[derive(Debug)]
pub struct Chunker {
    block_size: BlockSize,
    partial: Vec<u8>,
    total: u64,
}

impl Chunker {
    /// A chunker for `block_size`.
    pub fn new(block_size: BlockSize) -> Self {
        Chunker {
            block_size,
            partial: Vec::with_capacity(block_size.as_usize()),
            total: 0,
        }
    }

    /// Bytes pushed so far (the dataset size once all input is in).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The block size.
    pub fn block_size(&self) -> BlockSize {
        self.block_size
    }

    /// Adds `data`, calling `emit` with each block it completes, in order.
    pub fn push(&mut self, mut data: &[u8], mut emit: impl FnMut(Vec<u8>)) {
        let bs = self.block_size.as_usize();
        self.total += data.len() as u64;
        while !data.is_empty() {
            let want = bs - self.partial.len();
            let take = want.min(data.len());
            if self.partial.is_empty() && take == bs {
                emit(data[..bs].to_vec());
            } else {
                self.partial.extend_from_slice(&data[..take]);
                if self.partial.len() == bs {
                    let block = std::mem::replace(&mut self.partial, Vec::with_capacity(bs));
                    emit(block);
                }
            }
            data = &data[take..];
        }
    }

    /// Ends the stream: returns the zero-padded last block, if any bytes are pending.
    pub fn finish(mut self) -> Option<Vec<u8>> {
        if self.partial.is_empty() {
            None
        } else {
            self.partial.resize(self.block_size.as_usize(), 0);
            Some(std::mem::take(&mut self.partial))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_size_validation() {
        assert!(BlockSize::new(4096).is_ok());
        assert!(BlockSize::new(524_288).is_ok());
        for bad in [0, 1, 2048, 4095, 6000, 1 << 20, u64::MAX] {
            assert_eq!(BlockSize::new(bad), Err(InvalidBlockSize(bad)));
        }
        assert_eq!(BlockSize::DEFAULT.blocks_count(18), 1);
        assert_eq!(BlockSize::MIN.blocks_count(8192), 2);
        assert_eq!(BlockSize::MIN.blocks_count(8193), 3);
    }

    #[test]
    fn chunker_pads_last_block_and_counts() {
        let mut c = Chunker::new(BlockSize::MIN);
        let mut blocks = Vec::new();
        let data: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        for piece in data.chunks(777) {
            c.push(piece, |b| blocks.push(b));
        }
        assert_eq!(c.total(), 10_000);
        blocks.extend(c.finish());
        assert_eq!(blocks.len(), 3);
        assert!(blocks.iter().all(|b| b.len() == 4096));
        let joined: Vec<u8> = blocks.concat();
        assert_eq!(&joined[..10_000], &data[..]);
        assert!(joined[10_000..].iter().all(|&b| b == 0));
    }
}
