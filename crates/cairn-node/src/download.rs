//! Streaming a locally stored dataset (or a byte range of it) as an HTTP body.

use std::sync::Arc;

use bytes::Bytes;
use cairn_core::Cid;
use cairn_store::BlockStore;
use tokio::sync::mpsc;

/// Blocks read ahead of the client.
const READ_AHEAD_BLOCKS: usize = 8;

/// Where the bytes of a dataset come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DatasetSource {
    pub(crate) tree_cid: Cid,
    pub(crate) block_size: u64,
}

/// Streams bytes `[start, end)` of the dataset. A block that cannot be read ends the stream
/// with an error, which makes the server close the connection (the client sees a short body).
pub(crate) fn stream_range(
    store: Arc<dyn BlockStore>,
    source: DatasetSource,
    start: u64,
    end: u64,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD_BLOCKS);
    tokio::task::spawn_blocking(move || {
        if start >= end {
            return;
        }
        let bs = source.block_size;
        let first = start / bs;
        let last = (end - 1) / bs;
        for index in first..=last {
            let item = match store.leaf_block(&source.tree_cid, index) {
                Ok(Some(block)) => {
                    let block_start = index * bs;
                    let from = start.saturating_sub(block_start).min(bs) as usize;
                    let to = (end - block_start).min(bs).min(block.len() as u64) as usize;
                    Ok(block.slice(from.min(to)..to))
                }
                Ok(None) => Err(std::io::Error::other(format!(
                    "block {index} of {} is missing",
                    source.tree_cid
                ))),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!(tree = %source.tree_cid, index, error = %e, "download stream aborted");
            }
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    tokio_stream_from(rx)
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
