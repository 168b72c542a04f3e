//! `/storage/manifest/1.0.0` (`wire.md` §6): one request and one response per stream.
//!
//! The byte formats are `cairn_core::wire`'s; this module reads the fixed-size prefixes, checks
//! them before reading (or allocating for) what follows, and moves the bytes.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use cairn_core::{
    Cid,
    wire::{
        MANIFEST_PROTOCOL, MANIFEST_RESPONSE_HEADER_LEN, ManifestRequest, ManifestResponse,
        ManifestResponseHeader, ManifestStatus, check_manifest_digest,
    },
};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{ContentServer, NetError, bans::BanList};

/// Most manifest requests served at once; further streams are dropped.
const MAX_INBOUND_MANIFEST_STREAMS: usize = 100;

/// The protocol id as a libp2p value.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(MANIFEST_PROTOCOL);

/// Accepts inbound manifest streams until `shutdown` and answers each on its own task.
pub(crate) async fn serve(
    mut incoming: IncomingStreams,
    server: Arc<dyn ContentServer>,
    bans: Arc<BanList>,
    timeout: Duration,
    shutdown: CancellationToken,
) {
    let limit = Arc::new(Semaphore::new(MAX_INBOUND_MANIFEST_STREAMS));
    loop {
        let (peer, stream) = tokio::select! {
            () = shutdown.cancelled() => break,
            next = incoming.next() => match next {
                Some(next) => next,
                None => break,
            },
        };
        if bans.is_banned(&peer) {
            tracing::debug!(%peer, "dropping a manifest stream from a banned peer");
            continue;
        }
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "too many manifest requests in flight, dropping a stream");
            continue;
        };
        let server = server.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, answer(stream, server)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "manifest request failed"),
                Err(_) => tracing::debug!(%peer, "manifest request timed out"),
            }
            drop(permit);
        });
    }
}

/// Reads one request and writes one response. Every request that cannot be decoded, names a
/// CID other than a manifest's, or asks for a manifest not served is answered with NotFound.
async fn answer(mut stream: Stream, server: Arc<dyn ContentServer>) -> std::io::Result<()> {
    let mut prefix = [0u8; 2];
    stream.read_exact(&mut prefix).await?;
    let response = match ManifestRequest::cid_len(prefix) {
        Err(e) => {
            tracing::debug!(error = %e, "bad manifest request");
            ManifestResponse::NotFound
        }
        Ok(len) => {
            let mut cid = vec![0u8; len];
            stream.read_exact(&mut cid).await?;
            match ManifestRequest::decode_cid(&cid) {
                Err(e) => {
                    tracing::debug!(error = %e, "bad manifest request");
                    ManifestResponse::NotFound
                }
                Ok(request) => {
                    let found =
                        tokio::task::spawn_blocking(move || server.manifest(&request.cid)).await;
                    match found {
                        Ok(Some(bytes)) => ManifestResponse::Found(bytes.to_vec()),
                        Ok(None) => ManifestResponse::NotFound,
                        Err(e) => {
                            tracing::warn!(error = %e, "manifest lookup failed");
                            ManifestResponse::NotFound
                        }
                    }
                }
            }
        }
    };
    let bytes = match response.encode() {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::warn!(error = %e, "stored manifest cannot be sent");
            ManifestResponse::NotFound.encode().unwrap_or_default()
        }
    };
    stream.write_all(&bytes).await?;
    stream.flush().await?;
    stream.close().await
}

/// Asks `peer` for manifest `cid`: `Ok(None)` on NotFound, the bytes (checked against the CID)
/// on Found. The caller bounds the time and makes sure the peer is connected.
pub(crate) async fn fetch(
    mut control: Control,
    peer: PeerId,
    cid: Cid,
) -> Result<Option<Bytes>, NetError> {
    let fail = |reason: String| NetError::Request { peer, reason };
    let mut stream = control
        .open_stream(peer, PROTOCOL)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let io = |e: std::io::Error| fail(format!("manifest stream: {e}"));
    stream
        .write_all(&ManifestRequest { cid }.encode())
        .await
        .map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut header = [0u8; MANIFEST_RESPONSE_HEADER_LEN];
    stream.read_exact(&mut header).await.map_err(io)?;
    // contentLen and status are checked before anything is allocated.
    let header = ManifestResponseHeader::decode(header).map_err(|e| fail(e.to_string()))?;
    let result = match header.status {
        ManifestStatus::NotFound => None,
        ManifestStatus::Found => {
            let mut bytes = vec![0u8; header.manifest_len];
            stream.read_exact(&mut bytes).await.map_err(io)?;
            check_manifest_digest(&cid, &bytes).map_err(|e| fail(e.to_string()))?;
            Some(Bytes::from(bytes))
        }
    };
    // Best effort: the response is complete whatever the close does.
    let _ = stream.close().await;
    Ok(result)
}
