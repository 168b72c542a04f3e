//! Streaming a dataset (or a byte range of it) as an HTTP body, in order. Blocks that are not
//! local yet are awaited from the transfer fetching them, if there is one.

use std::{sync::Arc, time::Instant};

use bytes::Bytes;
use cairn_core::Cid;
use cairn_store::BlockStore;
use tokio::sync::mpsc;

use crate::{erasure::ReadRecovery, fetch::TransferLease};

/// Blocks read ahead of the client.
const READ_AHEAD_BLOCKS: usize = 8;
/// A protected dataset whose transfer brings nothing for this long is decoded instead.
pub(crate) const DECODE_AFTER_STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// Where the bytes of a dataset come from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DatasetSource {
    pub(crate) tree_cid: Cid,
    pub(crate) block_size: u64,
}

/// Streams bytes `[start, end)` of the dataset. A block that is missing (and not being fetched
/// by `transfer`) or cannot be read ends the stream with an error, which makes the server close
/// the connection (the client sees a short body). The lease keeps the transfer alive while the
/// stream is read. For a protected dataset, `recovery` decodes blocks that no transfer brings.
pub(crate) fn stream_range(
    store: Arc<dyn BlockStore>,
    source: DatasetSource,
    start: u64,
    end: u64,
    transfer: Option<TransferLease>,
    mut recovery: Option<ReadRecovery>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(READ_AHEAD_BLOCKS);
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        if start >= end {
            return;
        }
        let mut watch = transfer.as_ref().map(|t| t.transfer.watch());
        // When the transfer last brought a block, for deciding to decode instead.
        let mut last_held = u64::MAX;
        let mut stalled_since: Option<Instant> = None;
        let bs = source.block_size;
        let first = start / bs;
        let last = (end - 1) / bs;
        for index in first..=last {
            let item = loop {
                match store.leaf_block(&source.tree_cid, index) {
                    Ok(Some(block)) => {
                        let block_start = index * bs;
                        let from = start.saturating_sub(block_start).min(bs) as usize;
                        let to = (end - block_start).min(bs).min(block.len() as u64) as usize;
                        break Ok(block.slice(from.min(to)..to));
                    }
                    Ok(None) => {
                        let Some(rx) = watch.as_mut() else {
                            if let Some(recovery) = recovery.as_mut() {
                                match recovery.recover(index) {
                                    Ok(()) => continue,
                                    Err(e) => break Err(std::io::Error::other(e.to_string())),
                                }
                            }
                            break Err(std::io::Error::other(format!(
                                "block {index} of {} is missing",
                                source.tree_cid
                            )));
                        };
                        let outcome = rx.borrow_and_update().outcome.clone();
                        match outcome {
                            Some(Err(_)) if recovery.is_some() => watch = None,
                            Some(Err(e)) => {
                                break Err(std::io::Error::other(format!("download failed: {e}")));
                            }
                            Some(Ok(())) => watch = None,
                            None if recovery.is_some() => {
                                // A protected dataset: if the transfer brings no block for a
                                // while, this one may be lost everywhere; decode it instead.
                                let held = rx.borrow().progress.held;
                                let since = *stalled_since.get_or_insert_with(Instant::now);
                                if held != last_held {
                                    last_held = held;
                                    stalled_since = Some(Instant::now());
                                } else if since.elapsed() >= DECODE_AFTER_STALL {
                                    watch = None;
                                    continue;
                                }
                                let changed = runtime.block_on(tokio::time::timeout(
                                    DECODE_AFTER_STALL,
                                    rx.changed(),
                                ));
                                if let Ok(Err(_)) = changed {
                                    watch = None;
                                }
                            }
                            None => {
                                if runtime.block_on(rx.changed()).is_err() {
                                    watch = None;
                                }
                            }
                        }
                    }
                    Err(e) => break Err(std::io::Error::other(e.to_string())),
                }
            };
            let failed = item.is_err();
            if let Err(e) = &item {
                tracing::warn!(tree = %source.tree_cid, index, error = %e, "download stream aborted");
            }
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
        drop(transfer);
    });
    let mut rx = rx;
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
