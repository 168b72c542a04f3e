//! The REST API (`rest-api.md`), served under `/api/storage/v1` and its alias `/api/codex/v1`.

mod data;
mod dto;
mod error;
mod node_info;
mod openapi;
mod params;
mod protect;
pub(crate) mod state;
mod swarms;

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post},
};

use self::{error::text_response, state::AppState};

/// The primary base path.
pub(crate) const STORAGE_BASE: &str = "/api/storage/v1";
/// The Gen-1 alias.
pub(crate) const CODEX_BASE: &str = "/api/codex/v1";

/// Marketplace paths, answered with 501 under both bases.
const MARKETPLACE_PATHS: &[&str] = &[
    "/sales/slots",
    "/sales/slots/{id}",
    "/sales/availability",
    "/sales/availability/{id}",
    "/sales/availability/{id}/reservations",
    "/storage/request/{cid}",
    "/storage/purchases",
    "/storage/purchases/{id}",
];

fn api_routes() -> Router<AppState> {
    let mut router = Router::new()
        .route(
            "/data",
            post(data::upload).get(data::list).options(options_data),
        )
        .route(
            "/data/{cid}",
            get(data::download)
                .delete(data::delete)
                .options(options_item),
        )
        .route("/data/{cid}/exists", get(data::exists))
        .route("/data/{cid}/network", post(data::network_download))
        .route("/data/{cid}/network/stream", get(data::network_stream))
        .route("/data/{cid}/network/manifest", get(data::network_manifest))
        .route(
            "/data/{cid}/network/progress/{id}",
            get(data::download_progress),
        )
        .route(
            "/data/{cid}/network/{id}",
            axum::routing::delete(data::cancel_download),
        )
        .route(
            "/data/{cid}/advertise",
            get(data::get_advertise).post(data::set_advertise),
        )
        .route("/data/{cid}/protect", post(protect::protect))
        .route("/data/{cid}/protect/{job}", get(protect::protect_job))
        .route("/space", get(data::space))
        .route("/spr", get(node_info::spr))
        .route("/peerid", get(node_info::peer_id))
        .route("/node/peerid", get(node_info::peer_id))
        .route("/connect/{peer}", get(node_info::connect))
        .route("/debug/info", get(node_info::debug_info))
        .route("/debug/chronicles/loglevel", post(node_info::set_loglevel))
        .route("/debug/peer/{peer}", get(node_info::debug_peer))
        .route("/openapi.json", get(openapi::document))
        .route("/swarms", post(swarms::create).get(swarms::list))
        .route("/swarms/{id}", get(swarms::show))
        .route("/swarms/{id}/invites", post(swarms::invite))
        .route("/swarms/{id}/join", post(swarms::join))
        .route("/swarms/{id}/members", get(swarms::members))
        .route(
            "/swarms/{id}/members/{peer}",
            axum::routing::delete(swarms::revoke),
        )
        .route("/swarms/{id}/leave", post(swarms::leave))
        .route(
            "/swarms/{id}/datasets",
            post(swarms::announce).get(swarms::datasets),
        )
        .route(
            "/swarms/{id}/datasets/{cid}",
            axum::routing::delete(swarms::retire),
        )
        .route("/swarms/{id}/datasets/{cid}/health", get(swarms::health))
        .route("/swarms/{id}/{*rest}", any(swarms::not_routed));
    for path in MARKETPLACE_PATHS {
        router = router.route(path, any(node_info::marketplace));
    }
    router
}

/// The whole HTTP application.
pub(crate) fn router(state: AppState) -> Router {
    let api = api_routes();
    Router::new()
        .nest(STORAGE_BASE, api.clone())
        .nest(CODEX_BASE, api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            finish_response,
        ))
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

async fn not_found() -> Response {
    text_response(StatusCode::NOT_FOUND, "Not found")
}

/// `OPTIONS /data`.
async fn options_data(State(st): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    if st.cors_origin.is_some() {
        response.headers_mut().insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type, content-disposition"),
        );
    }
    response
}

/// `OPTIONS /data/{cid}`.
async fn options_item() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// Adds CORS headers when configured, and gives bodies to the router's bare 405 answers.
async fn finish_response(State(st): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let requested = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_METHOD)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let mut response = next.run(request).await;
    if response.status() == StatusCode::METHOD_NOT_ALLOWED
        && !response.headers().contains_key(header::CONTENT_TYPE)
    {
        let allow = response.headers().get(header::ALLOW).cloned();
        response = text_response(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed");
        if let Some(allow) = allow {
            response.headers_mut().insert(header::ALLOW, allow);
        }
    }
    if let Some(origin) = &st.cors_origin {
        let shown = if method == Method::OPTIONS {
            requested.unwrap_or_else(|| "GET".to_owned())
        } else {
            method.to_string()
        };
        let h = response.headers_mut();
        if let Ok(origin) = HeaderValue::from_str(origin) {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
        if let Ok(methods) = HeaderValue::from_str(&format!("{shown}, OPTIONS")) {
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
        }
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("86400"),
        );
    }
    response
}
