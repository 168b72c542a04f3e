//! The durability API (durability.md §17): swarms, members, datasets. Errors are JSON,
//! `{"error":{"code","message"}}`, unlike the Codex-compatible endpoints.

use axum::{
    Json,
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use cairn_core::durability::Policy;
use cairn_core::durability::messages as pb;
use cairn_core::durability::policy::{DEFAULT_MAX_DATASET_BYTES, MAX_REPLICAS};
use cairn_store::DatasetFlags;
use serde::Deserialize;

use super::{params, state::AppState};
use crate::swarm::{AnnounceRequest, Api, CreateSwarm, MEMBERS_PAGE, SwarmError};
use crate::upload::{UploadRequest, store_upload};

/// Smallest `lostAfterSecs` the API accepts (§5: 6 h).
const MIN_LOST_AFTER_SECS: u64 = 21_600;
/// Largest JSON body accepted.
const MAX_JSON: usize = 64 * 1024;

/// An error answer of the durability API.
#[derive(Debug)]
pub(crate) struct JsonError(SwarmError);

impl From<SwarmError> for JsonError {
    fn from(e: SwarmError) -> Self {
        JsonError(e)
    }
}

fn status_of(code: &str) -> StatusCode {
    match code {
        "invalid_argument" => StatusCode::BAD_REQUEST,
        "not_authorized" => StatusCode::FORBIDDEN,
        "unknown_swarm" | "unknown_dataset" | "not_found" => StatusCode::NOT_FOUND,
        "conflict" => StatusCode::CONFLICT,
        "too_large" => StatusCode::PAYLOAD_TOO_LARGE,
        "unsatisfiable" => StatusCode::UNPROCESSABLE_ENTITY,
        "rate_limited" => StatusCode::TOO_MANY_REQUESTS,
        "not_ready" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for JsonError {
    fn into_response(self) -> Response {
        let status = status_of(self.0.code);
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self.0.message, "internal error in the durability API");
        }
        (
            status,
            Json(serde_json::json!({"error": {"code": self.0.code, "message": self.0.message}})),
        )
            .into_response()
    }
}

type JsonResult<T> = Result<T, JsonError>;

fn invalid(message: impl Into<String>) -> JsonError {
    JsonError(SwarmError::invalid(message))
}

/// Parses a JSON body strictly (unknown fields are errors, §18); an empty body is `{}`.
fn body_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> JsonResult<T> {
    if body.len() > MAX_JSON {
        return Err(JsonError(SwarmError::new(
            "too_large",
            "request body over 64 KiB",
        )));
    }
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| invalid(format!("bad JSON body: {e}")))
}

/// A policy value: `"auto"`, `"none"`, `{"replicate":R}`, `{"erasure":{"k":K,"m":M}}`.
/// `Ok(None)` is auto.
fn parse_policy(v: &serde_json::Value) -> JsonResult<Option<Policy>> {
    match v {
        serde_json::Value::String(s) => parse_policy_text(s),
        serde_json::Value::Object(m) if m.len() == 1 => {
            if let Some(r) = m.get("replicate") {
                let r = r
                    .as_u64()
                    .filter(|r| (1..=u64::from(MAX_REPLICAS)).contains(r))
                    .ok_or_else(|| invalid("replicate must be 1..16"))?;
                return Ok(Some(Policy::Replicate { replicas: r as u32 }));
            }
            if m.contains_key("erasure") {
                return Err(JsonError(SwarmError::new(
                    "unsatisfiable",
                    "erasure is not available in slice S1",
                )));
            }
            Err(invalid("unknown policy"))
        }
        _ => Err(invalid("unknown policy")),
    }
}

/// The CLI syntax: `auto`, `none`, `replicate:R`, `erasure:K+M`.
fn parse_policy_text(s: &str) -> JsonResult<Option<Policy>> {
    match s {
        "auto" => Ok(None),
        "none" => Ok(Some(Policy::None)),
        _ => {
            if let Some(r) = s.strip_prefix("replicate:") {
                let r: u32 = r.parse().map_err(|_| invalid("bad replicate count"))?;
                if !(1..=MAX_REPLICAS).contains(&r) {
                    return Err(invalid("replicate must be 1..16"));
                }
                return Ok(Some(Policy::Replicate { replicas: r }));
            }
            if s.starts_with("erasure:") {
                return Err(JsonError(SwarmError::new(
                    "unsatisfiable",
                    "erasure is not available in slice S1",
                )));
            }
            Err(invalid(format!("unknown policy {s:?}")))
        }
    }
}

fn default_policy_proto(p: Option<Policy>) -> pb::DurabilityPolicy {
    match p {
        None => pb::DurabilityPolicy {
            kind: pb::PolicyKind::Auto as i32,
            ..Default::default()
        },
        Some(p) => p.to_proto(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CreateBody {
    name: String,
    admission: Option<String>,
    announcers: Option<String>,
    default_policy: Option<serde_json::Value>,
    max_dataset_bytes: Option<u64>,
    lost_after_secs: Option<u64>,
    expected_members: Option<u64>,
}

/// `POST /swarms`.
pub(crate) async fn create(State(st): State<AppState>, body: Bytes) -> JsonResult<Response> {
    let b: CreateBody = body_json(&body)?;
    if b.name.is_empty() || b.name.len() > 64 {
        return Err(invalid("name must be 1..64 bytes"));
    }
    let open = match b.admission.as_deref() {
        None | Some("invite") => false,
        Some("open") => true,
        Some(_) => return Err(invalid("admission must be invite or open")),
    };
    let admins_only = match b.announcers.as_deref() {
        None | Some("any") => false,
        Some("admins") => true,
        Some(_) => return Err(invalid("announcers must be any or admins")),
    };
    let default_policy = match &b.default_policy {
        None => None,
        Some(v) => parse_policy(v)?,
    };
    let lost_after_secs = match b.lost_after_secs {
        None => None,
        Some(s) if s < MIN_LOST_AFTER_SECS => {
            return Err(invalid("lostAfterSecs below 21600 (6 h)"));
        }
        Some(s) => Some(u32::try_from(s).map_err(|_| invalid("lostAfterSecs too large"))?),
    };
    let max_dataset_bytes = b.max_dataset_bytes.unwrap_or(DEFAULT_MAX_DATASET_BYTES);
    if max_dataset_bytes == 0 {
        return Err(invalid("maxDatasetBytes must be above 0"));
    }
    let req = CreateSwarm {
        name: b.name,
        open,
        admins_only,
        default_policy: default_policy_proto(default_policy),
        max_dataset_bytes,
        lost_after_secs,
        expected_members: b.expected_members.unwrap_or(0),
    };
    let v = st.swarms.ask(|r| Api::Create(req, r)).await?;
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /swarms`.
pub(crate) async fn list(State(st): State<AppState>) -> JsonResult<Response> {
    let v = st.swarms.ask(Api::List).await?;
    Ok(Json(v).into_response())
}

/// `GET /swarms/{id}`.
pub(crate) async fn show(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> JsonResult<Response> {
    let v = st.swarms.ask(|r| Api::Show(id, r)).await?;
    Ok(Json(v).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct InviteBody {
    peer_id: String,
    #[serde(default)]
    admin: bool,
    expires_at: Option<serde_json::Value>,
}

/// Unix seconds from a number or an RFC 3339 UTC string (`…Z`).
fn parse_time(v: &serde_json::Value) -> JsonResult<u64> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let s = v.as_str().ok_or_else(|| invalid("bad time"))?;
    let bad = || invalid("times are unix seconds or RFC 3339 UTC (2030-01-01T00:00:00Z)");
    let s = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.split('.').next().unwrap_or("").parse())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if d.len() != 3 || t.len() != 3 || !(1..=12).contains(&d[1]) || !(1..=31).contains(&d[2]) {
        return Err(bad());
    }
    let (y, m) = if d[1] <= 2 {
        (d[0] - 1, d[1] + 9)
    } else {
        (d[0], d[1] - 3)
    };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d[2] - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2];
    u64::try_from(secs).map_err(|_| bad())
}

/// `POST /swarms/{id}/invites`.
pub(crate) async fn invite(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonResult<Response> {
    let b: InviteBody = body_json(&body)?;
    let expires_at = match &b.expires_at {
        None | Some(serde_json::Value::Null) => 0,
        Some(v) => parse_time(v)?,
    };
    let text = st
        .swarms
        .ask(|reply| Api::Invite {
            swarm: id,
            peer: b.peer_id,
            admin: b.admin,
            expires_at,
            reply,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({"invite": text})),
    )
        .into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JoinBody {
    invite: String,
    storer: Option<bool>,
    quota_bytes: Option<u64>,
}

/// `POST /swarms/{id}/join`.
pub(crate) async fn join(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonResult<Response> {
    let b: JoinBody = body_json(&body)?;
    let v = st
        .swarms
        .ask(|reply| Api::Join {
            swarm: id,
            invite: b.invite,
            storer: b.storer.unwrap_or(true),
            quota: b.quota_bytes,
            reply,
        })
        .await?;
    Ok(Json(v).into_response())
}

/// `GET /swarms/{id}/members?state=&cursor=`.
pub(crate) async fn members(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> JsonResult<Response> {
    let q = params::query_map(query.as_deref());
    let filter = match q.get("state").map(String::as_str) {
        None | Some("") => None,
        Some(s @ ("present" | "absent" | "lost" | "departed" | "revoked")) => Some(s.to_owned()),
        Some(_) => {
            return Err(invalid(
                "state must be present, absent, lost, departed or revoked",
            ));
        }
    };
    let cursor = q.get("cursor").filter(|c| !c.is_empty()).cloned();
    let all = st.swarms.ask(|r| Api::Members(id, r)).await?;
    let mut page: Vec<serde_json::Value> = all
        .into_iter()
        .filter(|m| filter.as_deref().is_none_or(|f| m["state"] == f))
        .filter(|m| {
            cursor
                .as_deref()
                .is_none_or(|c| m["peerId"].as_str().is_some_and(|p| p > c))
        })
        .take(MEMBERS_PAGE + 1)
        .collect();
    let next = if page.len() > MEMBERS_PAGE {
        page.truncate(MEMBERS_PAGE);
        page.last().map(|m| m["peerId"].clone())
    } else {
        None
    };
    Ok(Json(serde_json::json!({"members": page, "next": next})).into_response())
}

/// `DELETE /swarms/{id}/members/{peerId}` (revoke).
pub(crate) async fn revoke(
    State(st): State<AppState>,
    Path((id, peer)): Path<(String, String)>,
) -> JsonResult<Response> {
    st.swarms.ask(|r| Api::Revoke(id, peer, r)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LeaveBody {
    graceful: Option<bool>,
}

/// `POST /swarms/{id}/leave`. Slice S1 has only the non-graceful leave (§1): every held slot is
/// released (LEAVING) and `Leave` published at once, whatever `graceful` says.
pub(crate) async fn leave(
    State(st): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> JsonResult<Response> {
    let b: LeaveBody = body_json(&body)?;
    tracing::debug!(graceful = ?b.graceful, "leave requested (S1: always the non-graceful leave)");
    let v = st.swarms.ask(|r| Api::Leave(id, r)).await?;
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct AnnounceBody {
    cid: String,
    policy: Option<serde_json::Value>,
    retain_until: Option<serde_json::Value>,
}

/// `POST /swarms/{id}/datasets`: JSON `{cid, policy?, retainUntil?}` announces a stored
/// dataset; any other content type is a raw upload (`?filename=`, `?policy=`, `?retain=`).
pub(crate) async fn announce(
    State(st): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> JsonResult<Response> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let req = if is_json {
        let bytes = axum::body::to_bytes(body, MAX_JSON)
            .await
            .map_err(|_| JsonError(SwarmError::new("too_large", "request body over 64 KiB")))?;
        let b: AnnounceBody = body_json(&bytes)?;
        let cid = params::parse_cid(&b.cid).map_err(|_| invalid("cid is not a CID"))?;
        let policy = match &b.policy {
            None => None,
            Some(v) => parse_policy(v)?,
        };
        let retain_until = match &b.retain_until {
            None | Some(serde_json::Value::Null) => 0,
            Some(v) => parse_time(v)?,
        };
        AnnounceRequest {
            cid,
            policy,
            retain_until,
        }
    } else {
        let q = params::query_map(query.as_deref());
        let policy = match q.get("policy") {
            None => None,
            Some(p) => parse_policy_text(p)?,
        };
        let retain_until = match q.get("retain") {
            None => 0,
            Some(r) => {
                let d =
                    crate::swarm::HumanDuration::parse(r).map_err(|e| invalid(e.to_string()))?;
                now + d.secs()
            }
        };
        let filename = q.get("filename").cloned();
        let request = UploadRequest {
            block_size: cairn_core::BlockSize::DEFAULT,
            filename,
            mimetype: None,
            max_size: st.max_upload_size,
            flags: DatasetFlags {
                pinned: true,
                advertise: true,
            },
        };
        let cid = store_upload(st.store.clone(), body.into_data_stream(), request)
            .await
            .map_err(|e| match e {
                crate::upload::UploadError::Empty => invalid(e.to_string()),
                crate::upload::UploadError::TooLarge(_) => {
                    JsonError(SwarmError::new("too_large", e.to_string()))
                }
                other => JsonError(SwarmError::internal(other)),
            })?;
        super::data::provide_dataset(&st, cid);
        AnnounceRequest {
            cid,
            policy,
            retain_until,
        }
    };
    let v = st.swarms.ask(|r| Api::Announce(id, req, r)).await?;
    Ok((StatusCode::ACCEPTED, Json(v)).into_response())
}

/// `GET /swarms/{id}/datasets`.
pub(crate) async fn datasets(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> JsonResult<Response> {
    let v = st.swarms.ask(|r| Api::Datasets(id, r)).await?;
    Ok(Json(v).into_response())
}

/// `GET /swarms/{id}/datasets/{cid}/health` (`?fresh=true` answers from the local view in S1).
pub(crate) async fn health(
    State(st): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
) -> JsonResult<Response> {
    let v = st.swarms.ask(|r| Api::Health(id, cid, r)).await?;
    Ok(Json(v).into_response())
}

/// `DELETE /swarms/{id}/datasets/{cid}` (retire).
pub(crate) async fn retire(
    State(st): State<AppState>,
    Path((id, cid)): Path<(String, String)>,
) -> JsonResult<Response> {
    st.swarms.ask(|r| Api::Retire(id, cid, r)).await?;
    Ok(StatusCode::ACCEPTED.into_response())
}

/// Paths of slice S2 (`verify`, `repair`) and anything else under a swarm: 404.
pub(crate) async fn not_routed() -> JsonResult<Response> {
    Err(JsonError(SwarmError::new(
        "not_found",
        "not available in this version (slice S1)",
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_policies() {
        assert_eq!(
            parse_time(&serde_json::json!("1970-01-01T00:00:00Z")).unwrap(),
            0
        );
        assert_eq!(
            parse_time(&serde_json::json!("2023-11-14T22:13:20Z")).unwrap(),
            1_700_000_000
        );
        assert_eq!(parse_time(&serde_json::json!(5)).unwrap(), 5);
        assert!(parse_time(&serde_json::json!("tomorrow")).is_err());
        assert_eq!(parse_policy_text("auto").unwrap(), None);
        assert_eq!(
            parse_policy(&serde_json::json!({"replicate": 3})).unwrap(),
            Some(Policy::Replicate { replicas: 3 })
        );
        assert!(parse_policy(&serde_json::json!({"replicate": 0})).is_err());
        assert!(parse_policy_text("replicate:17").is_err());
        assert!(parse_policy(&serde_json::json!(7)).is_err());
    }
}
