//! The upload pipeline: a byte stream in, a stored, durable dataset out.
//!
//! Three stages run at once, joined by bounded channels, so the network, hashing and disk work
//! overlap and memory stays bounded (a few MiB per upload, whatever the file size):
//!
//! 1. the async request task reads body chunks and forwards them;
//! 2. a blocking "hasher" cuts them into blocks and hashes them in parallel batches
//!    ([`DatasetBuilder`]);
//! 3. a blocking "writer" stores each batch in a staged write.
//!
//! At the end the tree and manifest are built and the staged write is committed, with one
//! fsync. Any failure, or the client going away (the request future is dropped), aborts the
//! staged write, so nothing of the upload stays behind.

use std::sync::{Arc, mpsc as std_mpsc};

use bytes::Bytes;
use cairn_core::{BlockSize, Cid, Dataset, DatasetBuilder, DatasetLeaves, HashedBlock};
use cairn_store::{BlockStore, DatasetFlags, StagingId, StoreError};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

/// Chunks buffered between the request task and the hasher.
const BODY_CHANNEL_CHUNKS: usize = 16;
/// Hashed batches buffered between the hasher and the writer.
const BATCH_CHANNEL_BATCHES: usize = 2;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    /// Zero bytes received.
    #[error("Cannot upload an empty file")]
    Empty,
    /// More than the configured maximum.
    #[error("Upload exceeds the maximum size of {0} bytes")]
    TooLarge(u64),
    /// The client's body stream failed (usually a disconnect).
    #[error("reading the upload body failed: {0}")]
    Body(String),
    /// The store refused (quota) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A worker thread died.
    #[error("upload worker failed: {0}")]
    Worker(String),
}

/// What to store and how.
#[derive(Debug, Clone)]
pub(crate) struct UploadRequest {
    pub(crate) block_size: BlockSize,
    pub(crate) filename: Option<String>,
    pub(crate) mimetype: Option<String>,
    pub(crate) max_size: Option<u64>,
    pub(crate) flags: DatasetFlags,
}

/// Aborts the staged write when dropped, unless disarmed after the commit.
struct StagingGuard {
    store: Arc<dyn BlockStore>,
    id: StagingId,
    armed: bool,
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        if self.armed {
            let store = self.store.clone();
            let id = self.id;
            let abort = move || {
                if let Err(e) = store.abort_staging(id) {
                    tracing::warn!(staging = id.0, error = %e, "aborting an upload failed");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn_blocking(abort);
                }
                Err(_) => abort(),
            }
        }
    }
}

/// Stores the dataset read from `body`; returns its manifest CID once it is durable.
pub(crate) async fn store_upload<S, E>(
    store: Arc<dyn BlockStore>,
    body: S,
    request: UploadRequest,
) -> Result<Cid, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let staging = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.begin_staging())
            .await
            .map_err(|e| UploadError::Worker(e.to_string()))??
    };
    let mut guard = StagingGuard {
        store: store.clone(),
        id: staging,
        armed: true,
    };

    let (chunk_tx, chunk_rx) = mpsc::channel::<Bytes>(BODY_CHANNEL_CHUNKS);
    let (batch_tx, batch_rx) = std_mpsc::sync_channel::<Vec<HashedBlock>>(BATCH_CHANNEL_BATCHES);
    let hasher =
        tokio::task::spawn_blocking(move || hash_stage(request.block_size, chunk_rx, batch_tx));
    let writer = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || write_stage(store.as_ref(), staging, batch_rx))
    };

    let read_result = read_body(body, chunk_tx, request.max_size).await;
    // The body sender is dropped by now: the hasher finishes, then the writer.
    let leaves = hasher
        .await
        .map_err(|e| UploadError::Worker(e.to_string()))?;
    let written = writer
        .await
        .map_err(|e| UploadError::Worker(e.to_string()))?;
    // A store error (e.g. quota) makes the writer stop, which stops the hasher, which makes
    // the body reader stop: report the root cause first.
    written?;
    read_result?;
    if leaves.dataset_size == 0 {
        return Err(UploadError::Empty);
    }
    let dataset: Dataset = leaves
        .into_dataset(request.filename, request.mimetype)
        .map_err(|e| UploadError::Worker(e.to_string()))?;
    let cid = dataset.manifest_cid;
    let flags = request.flags;
    let committed = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.commit_staging(staging, &dataset, flags))
            .await
            .map_err(|e| UploadError::Worker(e.to_string()))?
    };
    committed?;
    guard.armed = false;
    tracing::info!(cid = %cid, "upload stored");
    Ok(cid)
}

async fn read_body<S, E>(
    body: S,
    chunk_tx: mpsc::Sender<Bytes>,
    max_size: Option<u64>,
) -> Result<(), UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut received: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| UploadError::Body(e.to_string()))?;
        received += chunk.len() as u64;
        if let Some(max) = max_size
            && received > max
        {
            return Err(UploadError::TooLarge(max));
        }
        if chunk.is_empty() {
            continue;
        }
        if chunk_tx.send(chunk).await.is_err() {
            // The pipeline stopped (a store error); the caller reports it.
            return Ok(());
        }
    }
    Ok(())
}

fn hash_stage(
    block_size: BlockSize,
    mut chunks: mpsc::Receiver<Bytes>,
    batches: std_mpsc::SyncSender<Vec<HashedBlock>>,
) -> DatasetLeaves {
    let mut builder = DatasetBuilder::new(block_size);
    let mut writer_alive = true;
    while let Some(chunk) = chunks.blocking_recv() {
        let done = builder.push(&chunk);
        if !done.is_empty() && batches.send(done).is_err() {
            writer_alive = false;
            break;
        }
    }
    let (last, leaves) = builder.finish();
    if writer_alive && !last.is_empty() {
        let _ = batches.send(last);
    }
    leaves
}

fn write_stage(
    store: &dyn BlockStore,
    staging: StagingId,
    batches: std_mpsc::Receiver<Vec<HashedBlock>>,
) -> Result<(), StoreError> {
    for batch in batches {
        let blocks: Vec<(u64, Cid, Bytes)> = batch
            .into_iter()
            .map(|b| (b.index, b.cid, Bytes::from(b.data)))
            .collect();
        store.put_staged_blocks(staging, &blocks)?;
    }
    Ok(())
}
