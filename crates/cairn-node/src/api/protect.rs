//! Erasure coding endpoints (`rest-api.md` §2.13): `POST /data/{cid}/protect`, its job
//! endpoint, and the `?k=&m=` parameters of `POST /data`.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use cairn_core::{Cid, Codec, manifest::MAX_EC_ROWS};
use cairn_store::{DatasetFlags, DatasetState};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    dto::DataItem,
    error::{ApiError, ApiResult},
    params,
    state::AppState,
};
use crate::erasure::{self, ErasureJobError, JobProgress};

/// Finished jobs kept for polling; the oldest go first.
const FINISHED_JOBS_KEPT: usize = 256;

/// Erasure parameters of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProtectParams {
    pub(crate) k: u32,
    pub(crate) m: u32,
}

/// `k` and `m` from a query: `None` if neither is given, `400` with the messages of §2.13 if
/// one is missing, not an integer, or out of the bounds of `wire.md` §4.1.
pub(crate) fn protect_params(query: &HashMap<String, String>) -> ApiResult<Option<ProtectParams>> {
    let (k, m) = (query.get("k"), query.get("m"));
    if k.is_none() && m.is_none() {
        return Ok(None);
    }
    let parse = |v: Option<&String>| v.and_then(|v| v.trim().parse::<u64>().ok());
    let (Some(k), Some(m)) = (parse(k), parse(m)) else {
        return Err(ApiError::bad_request("Invalid k or m parameter"));
    };
    if k < 2 || m < 1 || k + m > u64::from(MAX_EC_ROWS) {
        return Err(ApiError::bad_request(
            "k and m must satisfy 2 <= k, 1 <= m, k + m <= 1024",
        ));
    }
    Ok(Some(ProtectParams {
        k: k as u32,
        m: m as u32,
    }))
}

/// A job error as an HTTP answer.
pub(crate) fn job_error(e: ErasureJobError) -> ApiError {
    match e {
        ErasureJobError::AlreadyProtected => ApiError::new(StatusCode::CONFLICT, e.to_string()),
        ErasureJobError::NotComplete => ApiError::not_retrievable(e),
        ErasureJobError::Store(s) => s.into(),
        ErasureJobError::Erasure(_) => ApiError::bad_request(e.to_string()),
        other => ApiError::internal(other),
    }
}

/// One protect job.
#[derive(Debug)]
struct Job {
    original: Cid,
    progress: Arc<JobProgress>,
    /// `Some` once finished: the protected CID or the error message.
    outcome: Option<Result<Cid, String>>,
}

/// The protect jobs started with `?async=true`.
#[derive(Debug, Default)]
pub(crate) struct ProtectJobs {
    inner: Mutex<JobTable>,
}

#[derive(Debug, Default)]
struct JobTable {
    next_id: u64,
    jobs: BTreeMap<u64, Job>,
}

impl ProtectJobs {
    fn table(&self) -> std::sync::MutexGuard<'_, JobTable> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, original: Cid, progress: Arc<JobProgress>) -> u64 {
        let mut table = self.table();
        table.next_id += 1;
        let id = table.next_id;
        table.jobs.insert(
            id,
            Job {
                original,
                progress,
                outcome: None,
            },
        );
        let finished: Vec<u64> = table
            .jobs
            .iter()
            .filter(|(_, j)| j.outcome.is_some())
            .map(|(id, _)| *id)
            .collect();
        for id in finished
            .iter()
            .take(finished.len().saturating_sub(FINISHED_JOBS_KEPT))
        {
            table.jobs.remove(id);
        }
        id
    }

    fn finish(&self, id: u64, outcome: Result<Cid, String>) {
        if let Some(job) = self.table().jobs.get_mut(&id) {
            job.outcome = Some(outcome);
        }
    }
}

/// Cancels a synchronous job when its request goes away.
struct CancelOnDrop(Arc<JobProgress>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// Runs a protect job off the async threads; provides the result if it is advertised.
pub(crate) async fn run_protect(
    st: &AppState,
    original: Cid,
    params: ProtectParams,
    progress: Arc<JobProgress>,
) -> Result<Cid, ErasureJobError> {
    let store = st.store.clone();
    let job_progress = progress.clone();
    let record = tokio::task::spawn_blocking(move || {
        let record = store
            .dataset(&original)?
            .ok_or(ErasureJobError::NotComplete)?;
        let manifest = cairn_core::Manifest::decode(&record.manifest_bytes)
            .map_err(|e| ErasureJobError::Store(cairn_store::StoreError::Corrupt(e.to_string())))?;
        let flags = DatasetFlags {
            pinned: true,
            advertise: record.flags.advertise,
        };
        erasure::protect(
            store.as_ref(),
            &record,
            &manifest,
            params.k,
            params.m,
            flags,
            &job_progress,
        )
    })
    .await
    .map_err(|_| ErasureJobError::Cancelled)??;
    if record.flags.advertise {
        super::data::provide_dataset(st, record.manifest_cid);
    }
    Ok(record.manifest_cid)
}

/// `POST /data/{cid}/protect?k=&m=[&async=true]`.
pub(crate) async fn protect(
    State(st): State<AppState>,
    Path(cid): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let cid = params::parse_cid(&cid)?;
    if cid.codec() != Codec::Manifest {
        return Err(ApiError::bad_request("the CID is not a manifest CID"));
    }
    let query = params::query_map(query.as_deref());
    let params =
        protect_params(&query)?.ok_or_else(|| ApiError::bad_request("Invalid k or m parameter"))?;
    let is_async = match query.get("async") {
        None => false,
        Some(v) => {
            params::parse_bool(v).ok_or_else(|| ApiError::bad_request("Invalid async parameter"))?
        }
    };
    let record = st
        .blocking(move |s| s.dataset(&cid))
        .await?
        .ok_or_else(|| ApiError::not_retrievable("manifest not found locally"))?;
    let manifest = cairn_core::Manifest::decode(&record.manifest_bytes)
        .map_err(|e| ApiError::internal(format!("stored manifest does not decode: {e}")))?;
    if manifest.erasure.is_some() {
        return Err(job_error(ErasureJobError::AlreadyProtected));
    }
    if record.state != DatasetState::Complete {
        return Err(job_error(ErasureJobError::NotComplete));
    }
    let progress = Arc::new(JobProgress::default());
    if is_async {
        let id = st.protect_jobs.add(cid, progress.clone());
        let job_state = st.clone();
        tokio::spawn(async move {
            let outcome = run_protect(&job_state, cid, params, progress)
                .await
                .map_err(|e| job_error(e).message);
            if let Err(e) = &outcome {
                tracing::warn!(%cid, error = %e, "protect job failed");
            }
            job_state.protect_jobs.finish(id, outcome);
        });
        let body = serde_json::json!({"cid": null, "jobId": id.to_string()});
        return Ok((StatusCode::ACCEPTED, Json(body)).into_response());
    }
    let _cancel = CancelOnDrop(progress.clone());
    let protected = run_protect(&st, cid, params, progress)
        .await
        .map_err(job_error)?;
    let record = st
        .blocking(move |s| s.dataset(&protected))
        .await?
        .ok_or_else(|| ApiError::internal("the protected dataset vanished"))?;
    let item = DataItem::from_record(&record)
        .ok_or_else(|| ApiError::internal("the protected manifest does not decode"))?;
    Ok(Json(item).into_response())
}

/// `GET /data/{cid}/protect/{jobId}`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProtectJobDto {
    active: bool,
    done: u64,
    total: u64,
    cid: Option<String>,
    error: Option<String>,
}

/// `GET /data/{cid}/protect/{jobId}`.
pub(crate) async fn protect_job(
    State(st): State<AppState>,
    Path((cid, job)): Path<(String, String)>,
) -> ApiResult<Json<ProtectJobDto>> {
    let cid = params::parse_cid(&cid)?;
    let id: u64 = job
        .parse()
        .map_err(|_| ApiError::bad_request("Invalid job id"))?;
    let table = st.protect_jobs.table();
    let job = table
        .jobs
        .get(&id)
        .filter(|j| j.original == cid)
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "No such protect job"))?;
    let (done, total) = job.progress.get();
    let (cid, error) = match &job.outcome {
        None => (None, None),
        Some(Ok(cid)) => (Some(cid.to_string()), None),
        Some(Err(e)) => (None, Some(e.clone())),
    };
    Ok(Json(ProtectJobDto {
        active: job.outcome.is_none(),
        done,
        total,
        cid,
        error,
    }))
}
