//! Node and debug endpoints (`rest-api.md` §3, §4).

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use cairn_net::PeerId;
use serde_json::json;

use super::{
    error::{ApiError, ApiResult, text_response},
    params,
    state::AppState,
};

/// The version this binary reports.
const VERSION: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// The source revision, when the build sets `CAIRN_REVISION`.
const REVISION: &str = match option_env!("CAIRN_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// True when the `Accept` header ranks `text/plain` above `application/json` (or lists it alone).
fn prefers_text(headers: &HeaderMap) -> bool {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mut text_q = None;
    let mut json_q = None;
    for item in accept.split(',') {
        let mut parts = item.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        match media.as_str() {
            "text/plain" => text_q = Some(q),
            "application/json" => json_q = Some(q),
            _ => {}
        }
    }
    match (text_q, json_q) {
        (Some(t), Some(j)) => t > j,
        (Some(t), None) => t > 0.0,
        _ => false,
    }
}

fn spr_text(st: &AppState) -> ApiResult<String> {
    st.identity
        .signed_peer_record(Vec::new())
        .map(|spr| spr.to_text())
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("SPR not ready: {e}"),
            )
        })
}

/// `GET /spr`.
pub(crate) async fn spr(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let text = spr_text(&st)?;
    Ok(if prefers_text(&headers) {
        text_response(StatusCode::OK, text)
    } else {
        Json(json!({ "spr": text })).into_response()
    })
}

/// `GET /peerid` and `GET /node/peerid`.
pub(crate) async fn peer_id(State(st): State<AppState>, headers: HeaderMap) -> Response {
    let id = st.identity.peer_id().to_string();
    if prefers_text(&headers) {
        text_response(StatusCode::OK, id)
    } else {
        Json(json!({ "id": id })).into_response()
    }
}

/// `GET /debug/info`, pretty-printed, with the Gen-1 and Gen-2 fields.
pub(crate) async fn debug_info(State(st): State<AppState>) -> ApiResult<Response> {
    let spr = spr_text(&st)?;
    let peer = st.identity.peer_id().to_string();
    let info = json!({
        "id": peer,
        "addrs": [],
        "announceAddresses": [],
        "spr": spr,
        "repo": st.data_dir.display().to_string(),
        "libp2pPubKey": hex::encode(st.identity.public_key_raw()),
        "table": {
            "localNode": {
                "nodeId": st.identity.node_id_hex(),
                "peerId": peer,
                "record": spr,
                "address": "",
                "seen": false,
                "addresses": [],
                "lastSeen": null,
            },
            "nodes": [],
        },
        "storage": { "version": VERSION, "revision": REVISION },
        "codex": { "version": VERSION, "revision": REVISION },
        "nat": {
            "reachability": "Unknown",
            "clientMode": false,
            "relayRunning": false,
            "portMapping": "none",
        },
        "connections": [],
    });
    let body = serde_json::to_string_pretty(&info).map_err(ApiError::internal)?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}

/// Converts a chronicles-style spec (`LEVEL` or `LEVEL;topic,topic:LEVEL;…`) into a tracing
/// filter directive.
pub(crate) fn loglevel_directive(spec: &str) -> Result<String, String> {
    fn level(name: &str) -> Result<&'static str, String> {
        match name.trim().to_ascii_uppercase().as_str() {
            "TRACE" => Ok("trace"),
            "DEBUG" => Ok("debug"),
            "INFO" | "NOTICE" => Ok("info"),
            "WARN" => Ok("warn"),
            "ERROR" | "FATAL" => Ok("error"),
            other => Err(format!("Unknown log level: {other}")),
        }
    }
    let mut parts = spec.split(';').filter(|p| !p.trim().is_empty());
    let first = parts.next().ok_or_else(|| "Missing log level".to_owned())?;
    let mut directives = Vec::new();
    let mut rest: Vec<&str> = parts.collect();
    if first.contains(':') {
        rest.insert(0, first);
        directives.push("info".to_owned());
    } else {
        directives.push(level(first)?.to_owned());
    }
    for item in rest {
        let (topics, lvl) = item
            .rsplit_once(':')
            .ok_or_else(|| format!("Expected topic:LEVEL, got '{item}'"))?;
        let lvl = level(lvl)?;
        for topic in topics.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if !topic
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':' || c == '-')
            {
                return Err(format!("Invalid log topic '{topic}'"));
            }
            directives.push(format!("{}={lvl}", topic.replace('-', "_")));
        }
    }
    Ok(directives.join(","))
}

/// `POST /debug/chronicles/loglevel?level=`.
pub(crate) async fn set_loglevel(
    State(st): State<AppState>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let query = params::query_map(query.as_deref());
    let spec = query
        .get("level")
        .filter(|l| !l.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing log level"))?;
    let directive = loglevel_directive(spec).map_err(ApiError::bad_request)?;
    if let Some(control) = &st.log_control {
        control
            .set_filter(&directive)
            .map_err(ApiError::bad_request)?;
    }
    tracing::info!(%directive, "log level changed");
    Ok(StatusCode::OK.into_response())
}

fn parse_peer_id(text: &str) -> ApiResult<PeerId> {
    text.parse::<PeerId>()
        .map_err(|e| ApiError::bad_request(format!("Invalid peer id: {e}")))
}

/// `GET /debug/peer/{peerId}`: this node knows no peers until the network layer runs.
pub(crate) async fn debug_peer(Path(peer): Path<String>) -> ApiResult<Response> {
    parse_peer_id(&peer)?;
    Err(ApiError::bad_request("Unable to find Peer!"))
}

/// `GET /connect/{peerId}`: needs the network layer, which this node does not run yet.
pub(crate) async fn connect(Path(peer): Path<String>) -> ApiResult<Response> {
    parse_peer_id(&peer)?;
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "Peer connections are not available: the network layer is not running on this node.",
    ))
}

/// Marketplace paths (`rest-api.md` §5).
pub(crate) async fn marketplace() -> Response {
    text_response(
        StatusCode::NOT_IMPLEMENTED,
        "The marketplace is not supported by this node: cairn stores data altruistically \
         (no contracts, no payments).",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn loglevel_specs() {
        assert_eq!(loglevel_directive("DEBUG").as_deref(), Ok("debug"));
        assert_eq!(loglevel_directive("notice").as_deref(), Ok("info"));
        assert_eq!(
            loglevel_directive("INFO;cairn_store,cairn_node:TRACE;x:fatal").as_deref(),
            Ok("info,cairn_store=trace,cairn_node=trace,x=error")
        );
        assert!(loglevel_directive("LOUD").is_err());
        assert!(loglevel_directive("").is_err());
        assert!(loglevel_directive("INFO;bad topic:DEBUG").is_err());
    }

    #[test]
    fn accept_negotiation() {
        let mut h = HeaderMap::new();
        assert!(!prefers_text(&h));
        for (accept, text) in [
            ("text/plain", true),
            ("*/*", false),
            ("application/json", false),
            ("text/plain;q=0.5, application/json", false),
            ("text/plain, application/json;q=0.9", true),
        ] {
            h.insert(header::ACCEPT, HeaderValue::from_static(accept));
            assert_eq!(prefers_text(&h), text, "{accept}");
        }
    }
}
