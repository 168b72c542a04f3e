//! The data endpoints (`rest-api.md` §2).

use axum::{
    Json,
    body::Body,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use cairn_core::{Cid, Codec, Manifest};
use cairn_store::{BlockDeletion, DatasetFlags, DatasetRecord, DatasetState};

use super::{
    dto::{AdvertiseDto, DataItem, DataList, DownloadStarted, SpaceDto},
    error::{ApiError, ApiResult, text_response},
    params,
    state::AppState,
};
use crate::{
    download::{DECODE_AFTER_STALL, DatasetSource, stream_range},
    erasure::ReadRecovery,
    fetch::{FetchError, Scope},
    upload::{UploadError, UploadRequest, store_upload},
};

/// `POST /data`. A refused upload closes the connection: its body may be unread, so the server
/// will not reuse the connection, and `Connection: close` tells the client not to either (a
/// pooled connection that the server already closed fails the client's next request).
pub(crate) async fn upload(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match store_upload_request(st, query, headers, body).await {
        Ok(response) => response,
        Err(e) => {
            let mut response = e.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn store_upload_request(
    st: AppState,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let query = params::query_map(query.as_deref());
    let block_size = params::block_size_param(&query)?;
    let advertise = params::advertise_param(&query)?;
    let protection = super::protect::protect_params(&query)?;
    let mimetype = params::mimetype_header(&headers)?;
    let filename = params::filename_header(&headers)?;
    let content_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let (Some(max), Some(len)) = (st.max_upload_size, content_length)
        && len > max
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::TooLarge(max).to_string(),
        ));
    }
    if content_length == Some(0) {
        return Err(ApiError::bad_request(UploadError::Empty.to_string()));
    }
    if let Some(len) = content_length {
        // A body that cannot fit even in an empty store is refused before it is read.
        let padded = block_size.blocks_count(len) * u64::from(block_size.get());
        let space = st.blocking(|s| s.space()).await?;
        if padded > space.quota_max_bytes {
            return Err(ApiError::new(
                StatusCode::INSUFFICIENT_STORAGE,
                format!(
                    "Not enough storage quota: {padded} bytes needed, {} bytes free",
                    space.quota_max_bytes.saturating_sub(space.quota_used_bytes)
                ),
            ));
        }
    }
    let request = UploadRequest {
        block_size,
        filename,
        mimetype,
        max_size: st.max_upload_size,
        flags: DatasetFlags {
            pinned: true,
            advertise,
        },
    };
    let stream = body.into_data_stream();
    match store_upload(st.store.clone(), stream, request).await {
        Ok(cid) => {
            let cid = match protection {
                Some(params) => {
                    let progress = std::sync::Arc::default();
                    super::protect::run_protect(&st, cid, params, progress)
                        .await
                        .map_err(super::protect::job_error)?
                }
                None => cid,
            };
            if advertise {
                provide_dataset(&st, cid);
            }
            Ok(text_response(StatusCode::OK, cid.to_string()))
        }
        Err(e) => Err(match e {
            UploadError::Empty => ApiError::bad_request(e.to_string()),
            UploadError::TooLarge(_) => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
            UploadError::Store(s) => s.into(),
            UploadError::Body(_) => ApiError::bad_request(e.to_string()),
            UploadError::Worker(_) => ApiError::internal(e),
        }),
    }
}

/// `GET /data`.
pub(crate) async fn list(State(st): State<AppState>) -> ApiResult<Json<DataList>> {
    let records = st.blocking(|s| s.list_datasets(false)).await?;
    let content = records.iter().filter_map(DataItem::from_record).collect();
    Ok(Json(DataList { content }))
}

fn decode_record(record: &DatasetRecord) -> ApiResult<Manifest> {
    Manifest::decode(&record.manifest_bytes)
        .map_err(|e| ApiError::internal(format!("stored manifest does not decode: {e}")))
}

/// The local record of a manifest CID, or `404`.
async fn local_manifest(st: &AppState, cid: Cid) -> ApiResult<(DatasetRecord, Manifest)> {
    let record = st
        .blocking(move |s| s.dataset(&cid))
        .await?
        .ok_or_else(|| ApiError::not_retrievable("manifest not found locally"))?;
    let manifest = decode_record(&record)?;
    Ok((record, manifest))
}

/// `GET /data/{cid}`: a locally stored manifest; missing blocks are fetched from peers.
pub(crate) async fn download(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let cid = params::parse_cid(&cid)?;
    match cid.codec() {
        Codec::Manifest => {
            let (record, manifest) = local_manifest(&st, cid).await?;
            serve_dataset(&st, record, manifest, &headers).await
        }
        _ => serve_block(&st, cid).await,
    }
}

/// `GET /data/{cid}/network/stream`: fetches the manifest and blocks from peers as needed and
/// streams in order as soon as the first blocks arrive. Newly fetched data is cached (unpinned).
pub(crate) async fn network_stream(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let cid = params::parse_cid(&cid)?;
    let query = params::query_map(query.as_deref());
    let advertise = params::advertise_param(&query)?;
    let mut response = match cid.codec() {
        Codec::Manifest => {
            let flags = DatasetFlags {
                pinned: false,
                advertise,
            };
            let (record, manifest) = st
                .fetcher
                .ensure_manifest(cid, flags, false)
                .await
                .map_err(fetch_error)?;
            serve_dataset(&st, record, manifest, &headers).await?
        }
        _ => serve_block(&st, cid).await?,
    };
    response.headers_mut().insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Content-Disposition"),
    );
    Ok(response)
}

/// Maps a fetch failure to the API's answers.
fn fetch_error(e: FetchError) -> ApiError {
    match e {
        FetchError::ManifestNotFound
        | FetchError::BadManifest(_)
        | FetchError::Network(_)
        | FetchError::NoPeers => ApiError::not_retrievable(e),
        FetchError::Quota(m) => ApiError::new(StatusCode::INSUFFICIENT_STORAGE, m),
        FetchError::Cancelled => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        FetchError::Store(m) => ApiError::internal(m),
    }
}

async fn serve_block(st: &AppState, cid: Cid) -> ApiResult<Response> {
    if cid.codec() != Codec::Block {
        return Err(ApiError::not_retrievable("not a manifest or block CID"));
    }
    let block = st
        .blocking(move |s| s.get_block(&cid))
        .await?
        .ok_or_else(|| ApiError::not_retrievable("block not found locally"))?;
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CONTENT_DISPOSITION, "attachment"),
        ],
        block,
    )
        .into_response())
}

/// Refuses a fetch that cannot fit in the quota even with the store emptied of what it may evict.
async fn check_room(st: &AppState, record: &DatasetRecord, manifest: &Manifest) -> ApiResult<()> {
    let tree = record.tree_cid;
    let (space, info) = st
        .blocking(move |s| Ok((s.space()?, s.tree_info(&tree)?)))
        .await?;
    let held = info.map_or(0, |i| i.held);
    let needed =
        (manifest.blocks_count().saturating_sub(held)) * u64::from(manifest.block_size.get());
    if needed > space.quota_max_bytes {
        return Err(ApiError::new(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "Not enough storage quota: {needed} bytes needed, {} bytes free",
                space.quota_max_bytes.saturating_sub(space.quota_used_bytes)
            ),
        ));
    }
    Ok(())
}

async fn serve_dataset(
    st: &AppState,
    record: DatasetRecord,
    manifest: Manifest,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let cid = record.manifest_cid;
    let recovery = ReadRecovery::new(st.store.clone(), st.fetcher.clone(), cid, &manifest);
    let transfer = if record.state == DatasetState::Complete {
        None
    } else if let Some(recovery) = &recovery {
        // A protected dataset: its data rows may be complete, or rebuildable from local rows;
        // otherwise fetch the data rows only (parity is fetched only to decode).
        check_room(st, &record, &manifest).await?;
        let probe = recovery.clone();
        let local = tokio::task::spawn_blocking(move || probe.rebuild_locally()).await?;
        match local.map_err(super::protect::job_error)? {
            true => None,
            false => Some(st.fetcher.attach_scoped(&record, &manifest, Scope::Data)),
        }
    } else {
        check_room(st, &record, &manifest).await?;
        Some(st.fetcher.attach(&record, &manifest))
    };
    let size = manifest
        .erasure
        .as_ref()
        .map_or(manifest.dataset_size, |e| e.original_dataset_size);
    let range = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(spec) => match parse_range(spec, size) {
            RangeSpec::Satisfiable(a, b) => Some((a, b)),
            RangeSpec::Ignored => None,
            RangeSpec::Unsatisfiable => return Ok(unsatisfiable(size)),
        },
        None => None,
    };
    let (start, end) = range.map_or((0, size), |(a, b)| (a, b + 1));
    let block_size = u64::from(manifest.block_size.get());
    if let Some(lease) = &transfer {
        // Until the first block is here, a failure can still be answered with a status.
        let tree = record.tree_cid;
        let first = start / block_size;
        let store = st.store.clone();
        let ready = move || matches!(store.leaf(&tree, first), Ok(Some(_)));
        if recovery.is_some() {
            // The stream decodes what the transfer cannot bring; a failure here is not final.
            let _ = tokio::time::timeout(DECODE_AFTER_STALL, lease.transfer.wait_for(ready)).await;
        } else {
            lease.transfer.wait_for(ready).await.map_err(fetch_error)?;
        }
    }
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || store.touch(&cid));
    let source = DatasetSource {
        tree_cid: manifest.tree_cid,
        block_size,
    };
    let body = Body::from_stream(stream_range(
        st.store.clone(),
        source,
        start,
        end,
        transfer,
        recovery,
    ));
    let mut response = Response::new(body);
    *response.status_mut() = if range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let h = response.headers_mut();
    let content_type = manifest
        .mimetype
        .as_deref()
        .and_then(|m| HeaderValue::from_str(m).ok())
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    h.insert(header::CONTENT_TYPE, content_type);
    let disposition = manifest
        .filename
        .as_deref()
        .and_then(|f| HeaderValue::from_str(&format!("attachment; filename=\"{f}\"")).ok())
        .unwrap_or(HeaderValue::from_static("attachment"));
    h.insert(header::CONTENT_DISPOSITION, disposition);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if let Some((a, b)) = range {
        h.insert(
            header::CONTENT_RANGE,
            HeaderValue::from_str(&format!("bytes {a}-{b}/{size}"))
                .expect("digits are a valid header value"),
        );
    }
    Ok(response)
}

/// `416` for a range that starts past the end.
fn unsatisfiable(size: u64) -> Response {
    (
        StatusCode::RANGE_NOT_SATISFIABLE,
        [
            (header::CONTENT_RANGE, format!("bytes */{size}")),
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_owned()),
        ],
        format!("Range not satisfiable for a dataset of {size} bytes"),
    )
        .into_response()
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Inclusive byte range.
    Satisfiable(u64, u64),
    /// Not a single `bytes=` range: serve the whole body.
    Ignored,
    Unsatisfiable,
}

/// A single `bytes=a-b`, `bytes=a-` or `bytes=-n` range; anything else is ignored.
fn parse_range(spec: &str, size: u64) -> RangeSpec {
    let Some(ranges) = spec.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignored;
    };
    if ranges.contains(',') {
        return RangeSpec::Ignored;
    }
    let Some((a, b)) = ranges.trim().split_once('-') else {
        return RangeSpec::Ignored;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeSpec::Ignored;
            };
            let end = if b.is_empty() {
                size.saturating_sub(1)
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e.min(size.saturating_sub(1)),
                    _ => return RangeSpec::Ignored,
                }
            };
            (start, end)
        }
        (true, false) => {
            let Ok(n) = b.parse::<u64>() else {
                return RangeSpec::Ignored;
            };
            if n == 0 {
                return RangeSpec::Unsatisfiable;
            }
            (size.saturating_sub(n), size.saturating_sub(1))
        }
        (true, true) => return RangeSpec::Ignored,
    };
    if parsed.0 >= size {
        RangeSpec::Unsatisfiable
    } else {
        RangeSpec::Satisfiable(parsed.0, parsed.1)
    }
}

/// `DELETE /data/{cid}`.
pub(crate) async fn delete(
    State(st): State<AppState>,
    Path(cid): Path<String>,
) -> ApiResult<Response> {
    let cid = params::parse_cid(&cid)?;
    match cid.codec() {
        Codec::Manifest => {
            if st.swarms.protects(cid).await {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "The dataset backs a durability slot held for a swarm; release it first",
                ));
            }
            st.blocking(move |s| s.delete_dataset(&cid)).await?;
        }
        Codec::Block => {
            if st.blocking(move |s| s.delete_block(&cid)).await? == BlockDeletion::Referenced {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "Directly deleting a block that is part of a dataset is not allowed.",
                ));
            }
        }
        Codec::Root | Codec::SlotRoot => {}
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /data/{cid}/exists`.
pub(crate) async fn exists(
    State(st): State<AppState>,
    Path(cid): Path<String>,
) -> ApiResult<Json<serde_json::Value>> {
    let cid = params::parse_cid(&cid)?;
    let present = match cid.codec() {
        Codec::Manifest => st.blocking(move |s| s.dataset(&cid)).await?.is_some(),
        Codec::Block => st.blocking(move |s| s.has_block(&cid)).await?,
        Codec::Root | Codec::SlotRoot => false,
    };
    let mut map = serde_json::Map::new();
    map.insert(cid.to_string(), serde_json::Value::Bool(present));
    Ok(Json(serde_json::Value::Object(map)))
}

fn manifest_cid(text: &str) -> ApiResult<Cid> {
    let cid = params::parse_cid(text)?;
    if cid.codec() != Codec::Manifest {
        return Err(ApiError::bad_request("CID is not a manifest CID"));
    }
    Ok(cid)
}

/// The manifest of a `/network` request, local or fetched from peers. `store` marks an explicit
/// store (pinned, flags applied to an existing record too); otherwise new data is only cached.
async fn network_manifest_of(
    st: &AppState,
    cid: &str,
    query: Option<String>,
    store: bool,
) -> ApiResult<(Cid, DatasetRecord, Manifest)> {
    let cid = params::parse_cid(cid)?;
    let query = params::query_map(query.as_deref());
    let advertise = params::advertise_param(&query)?;
    if cid.codec() != Codec::Manifest {
        return Err(ApiError::not_retrievable("not a manifest CID"));
    }
    let flags = DatasetFlags {
        pinned: store,
        advertise,
    };
    let (record, manifest) = st
        .fetcher
        .ensure_manifest(cid, flags, store)
        .await
        .map_err(fetch_error)?;
    Ok((cid, record, manifest))
}

/// `POST /data/{cid}/network`: stores the dataset on this node (pinned), fetching what is
/// missing in the background.
pub(crate) async fn network_download(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<DownloadStarted>> {
    let (cid, record, manifest) = network_manifest_of(&st, &cid, query, true).await?;
    let download_id = if record.state == DatasetState::Complete {
        st.fetcher.finished_id()
    } else {
        check_room(&st, &record, &manifest).await?;
        st.fetcher.start_background(&record, &manifest)
    };
    Ok(Json(DownloadStarted {
        item: DataItem::new(&cid, &manifest),
        download_id,
    }))
}

/// `GET /data/{cid}/network/manifest`: fetches and stores the manifest only.
pub(crate) async fn network_manifest(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<DataItem>> {
    let (cid, _, manifest) = network_manifest_of(&st, &cid, query, false).await?;
    Ok(Json(DataItem::new(&cid, &manifest)))
}

/// `GET /data/{cid}/network/progress/{downloadId}`.
pub(crate) async fn download_progress(
    State(st): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
) -> ApiResult<Json<serde_json::Value>> {
    params::parse_cid(&cid)?;
    let id = params::download_id(&id)?;
    Ok(Json(match st.fetcher.progress(id) {
        Some(p) => serde_json::json!({
            "active": true,
            "received": p.held,
            "total": p.total,
            "bytes": p.bytes,
        }),
        None => serde_json::json!({ "active": false }),
    }))
}

/// `DELETE /data/{cid}/network/{downloadId}`.
pub(crate) async fn cancel_download(
    State(st): State<AppState>,
    Path((cid, id)): Path<(String, String)>,
) -> ApiResult<Response> {
    let cid = params::parse_cid(&cid)?;
    let id = params::download_id(&id)?;
    if st.fetcher.cancel(&cid, id) {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "Background download not found",
        ))
    }
}

/// `GET /data/{cid}/advertise`.
pub(crate) async fn get_advertise(
    State(st): State<AppState>,
    Path(cid): Path<String>,
) -> ApiResult<Json<AdvertiseDto>> {
    let cid = manifest_cid(&cid)?;
    let record = st
        .blocking(move |s| s.dataset(&cid))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Dataset not found"))?;
    Ok(Json(AdvertiseDto {
        cid: cid.to_string(),
        advertise: record.flags.advertise,
    }))
}

/// `POST /data/{cid}/advertise?advertise=`.
pub(crate) async fn set_advertise(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<AdvertiseDto>> {
    let cid = manifest_cid(&cid)?;
    let query = params::query_map(query.as_deref());
    let advertise = query
        .get("advertise")
        .and_then(|v| params::parse_bool(v))
        .ok_or_else(|| ApiError::bad_request("Missing or invalid advertise parameter"))?;
    if !advertise && st.swarms.protects(cid).await {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "The dataset backs a durability slot held for a swarm and must stay advertised",
        ));
    }
    let record = st
        .blocking(move |s| s.dataset(&cid))
        .await?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "Dataset not found"))?;
    let flags = DatasetFlags {
        advertise,
        ..record.flags
    };
    st.blocking(move |s| s.set_flags(&cid, flags)).await?;
    if advertise {
        if record.state == DatasetState::Complete {
            provide_dataset(&st, cid);
        }
    } else {
        let net = st.fetcher.network().clone();
        let tree = record.tree_cid;
        tokio::spawn(async move {
            let _ = net.stop_providing(cid).await;
            let _ = net.stop_providing(tree).await;
        });
    }
    Ok(Json(AdvertiseDto {
        cid: cid.to_string(),
        advertise,
    }))
}

/// `GET /space`.
pub(crate) async fn space(State(st): State<AppState>) -> ApiResult<Json<SpaceDto>> {
    let mut space = st.blocking(|s| s.space()).await?;
    space.quota_reserved_bytes = st.swarms.reserved().await;
    Ok(Json(space.into()))
}

/// Provides a complete dataset's manifest CID and tree CID on the DHT, in the background.
pub(crate) fn provide_dataset(st: &AppState, manifest_cid: Cid) {
    let st = st.clone();
    tokio::spawn(async move {
        let Ok(Some(record)) = st.blocking(move |s| s.dataset(&manifest_cid)).await else {
            return;
        };
        let net = st.fetcher.network();
        for cid in [record.manifest_cid, record.tree_cid] {
            if let Err(e) = net.provide(cid).await {
                tracing::warn!(%cid, error = %e, "providing failed");
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), RangeSpec::Satisfiable(0, 9));
        assert_eq!(
            parse_range("bytes=90-", 100),
            RangeSpec::Satisfiable(90, 99)
        );
        assert_eq!(
            parse_range("bytes=-10", 100),
            RangeSpec::Satisfiable(90, 99)
        );
        assert_eq!(
            parse_range("bytes=50-1000", 100),
            RangeSpec::Satisfiable(50, 99)
        );
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignored);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignored);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Ignored);
    }
}
