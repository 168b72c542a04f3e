//! Node and debug endpoints (`rest-api.md` §3, §4).

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use cairn_net::{Multiaddr, NetError, NetStatus, PeerId, Protocol, node_id_hex};
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

/// The network status, or an empty one if the network layer is not answering.
async fn net_status(st: &AppState) -> NetStatus {
    st.fetcher
        .network()
        .status()
        .await
        .unwrap_or_else(|_| NetStatus {
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            connected: Vec::new(),
            routing_table_size: 0,
        })
}

/// The addresses peers should dial: the external ones, else the listen addresses.
fn announced(status: &NetStatus) -> Vec<Multiaddr> {
    if status.external_addrs.is_empty() {
        status.listen_addrs.clone()
    } else {
        status.external_addrs.clone()
    }
}

fn spr_text(st: &AppState, addrs: Vec<Multiaddr>) -> ApiResult<String> {
    st.identity
        .signed_peer_record(addrs)
        .map(|spr| spr.to_text())
        .map_err(|e| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("SPR not ready: {e}"),
            )
        })
}

/// `ip:port` of the first IP/TCP address, or "".
fn ip_port(addrs: &[Multiaddr]) -> String {
    addrs
        .iter()
        .find_map(|a| {
            let mut ip = None;
            let mut port = None;
            for p in a.iter() {
                match p {
                    Protocol::Ip4(v) => ip = Some(v.to_string()),
                    Protocol::Ip6(v) => ip = Some(format!("[{v}]")),
                    Protocol::Tcp(v) => port = Some(v),
                    _ => {}
                }
            }
            Some(format!("{}:{}", ip?, port?))
        })
        .unwrap_or_default()
}

/// `GET /spr`.
pub(crate) async fn spr(State(st): State<AppState>, headers: HeaderMap) -> ApiResult<Response> {
    let status = net_status(&st).await;
    let text = spr_text(&st, announced(&status))?;
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
    let status = net_status(&st).await;
    let addrs = announced(&status);
    let spr = spr_text(&st, addrs.clone())?;
    let peer = st.identity.peer_id().to_string();
    let strs = |v: &[Multiaddr]| v.iter().map(ToString::to_string).collect::<Vec<_>>();
    let nodes: Vec<_> = status
        .connected
        .iter()
        .map(|p| {
            json!({
                "nodeId": node_id_hex(&p.peer_id),
                "peerId": p.peer_id.to_string(),
                "record": "",
                "address": ip_port(&p.addresses),
                "seen": true,
                "addresses": strs(&p.addresses),
                "lastSeen": std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            })
        })
        .collect();
    let connections: Vec<_> = status
        .connected
        .iter()
        .map(|p| json!({ "peerId": p.peer_id.to_string(), "direct": p.direct }))
        .collect();
    let info = json!({
        "id": peer,
        "addrs": strs(&status.listen_addrs),
        "announceAddresses": strs(&addrs),
        "spr": spr,
        "repo": st.data_dir.display().to_string(),
        "libp2pPubKey": hex::encode(st.identity.public_key_raw()),
        "table": {
            "localNode": {
                "nodeId": st.identity.node_id_hex(),
                "peerId": peer,
                "record": spr,
                "address": ip_port(&addrs),
                "seen": false,
                "addresses": strs(&addrs),
                "lastSeen": null,
            },
            "nodes": nodes,
            "size": status.routing_table_size,
        },
        "storage": { "version": VERSION, "revision": REVISION },
        "codex": { "version": VERSION, "revision": REVISION },
        "nat": {
            "reachability": "Unknown",
            "clientMode": false,
            "relayRunning": false,
            "portMapping": "none",
        },
        "connections": connections,
        "transfer": { "bytesReceived": st.fetcher.bytes_received() },
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

/// `GET /debug/peer/{peerId}`: what this node knows of a connected peer.
pub(crate) async fn debug_peer(
    State(st): State<AppState>,
    Path(peer): Path<String>,
) -> ApiResult<Response> {
    let peer = parse_peer_id(&peer)?;
    let status = net_status(&st).await;
    let info = status
        .connected
        .iter()
        .find(|p| p.peer_id == peer)
        .ok_or_else(|| ApiError::bad_request("Unable to find Peer!"))?;
    let addresses: Vec<_> = info
        .addresses
        .iter()
        .map(|a| json!({ "address": a.to_string() }))
        .collect();
    Ok(
        Json(json!({ "peerId": peer.to_string(), "seqNo": 0, "addresses": addresses }))
            .into_response(),
    )
}

/// `GET /connect/{peerId}?addrs=…`: dials the peer; downloads then ask it for blocks too.
pub(crate) async fn connect(
    State(st): State<AppState>,
    Path(peer): Path<String>,
    RawQuery(query): RawQuery,
) -> ApiResult<Response> {
    let peer = parse_peer_id(&peer)?;
    let mut addrs = Vec::new();
    for pair in query.as_deref().unwrap_or("").split('&') {
        let Some(("addrs", value)) = pair.split_once('=') else {
            continue;
        };
        let value = params::percent_decode(value);
        let addr = value
            .parse::<Multiaddr>()
            .map_err(|e| ApiError::bad_request(format!("Invalid multiaddress '{value}': {e}")))?;
        addrs.push(addr);
    }
    match st.fetcher.network().connect(peer, addrs).await {
        Ok(()) => Ok(text_response(
            StatusCode::OK,
            "Successfully connected to peer",
        )),
        Err(NetError::PeerNotFound) => Err(ApiError::bad_request("Unable to find Peer!")),
        Err(NetError::Dial(reason)) => {
            tracing::info!(%peer, %reason, "dial failed");
            Err(ApiError::bad_request("Unable to dial peer"))
        }
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Unknown error dialling peer: {e}"),
        )),
    }
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
