//! The OpenAPI 3.1 document of the API, built from one table of endpoints so it cannot drift
//! from the router by more than that table. Both base paths serve it, each naming itself as the
//! server URL.

use axum::{Json, extract::OriginalUri};
use utoipa::openapi::{
    ComponentsBuilder, HttpMethod, InfoBuilder, OpenApi, OpenApiBuilder, PathItem, PathsBuilder,
    ResponseBuilder, ServerBuilder,
    content::ContentBuilder,
    path::{OperationBuilder, ParameterBuilder, ParameterIn},
    request_body::RequestBodyBuilder,
};

use super::{
    CODEX_BASE, STORAGE_BASE,
    dto::{AdvertiseDto, DataItem, DataList, ManifestItem, SpaceDto},
};

/// (method, path, summary, responses)
type Endpoint = (
    HttpMethod,
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const ENDPOINTS: &[Endpoint] = &[
    (
        HttpMethod::Post,
        "/data",
        "Upload a file; returns the manifest CID as text/plain",
        &[
            ("200", "Manifest CID"),
            ("400", "Bad parameter or empty body"),
            ("413", "Upload too large"),
            ("422", "Invalid filename or MIME type"),
            ("507", "Not enough storage quota"),
        ],
    ),
    (
        HttpMethod::Get,
        "/data",
        "List local datasets",
        &[("200", "DataList")],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}",
        "Download a local dataset or block (Range supported)",
        &[
            ("200", "The bytes"),
            ("206", "A byte range"),
            ("400", "Malformed CID"),
            ("404", "Not stored"),
            ("503", "Blocks missing locally"),
        ],
    ),
    (
        HttpMethod::Delete,
        "/data/{cid}",
        "Delete a dataset or an unreferenced block",
        &[
            ("204", "Deleted or nothing stored"),
            ("400", "Malformed CID"),
            ("409", "Block is part of a dataset"),
        ],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}/exists",
        "Whether the CID is stored locally: {\"<cid>\": bool}",
        &[("200", "Presence"), ("400", "Malformed CID")],
    ),
    (
        HttpMethod::Post,
        "/data/{cid}/network",
        "Store a dataset on this node (background download)",
        &[
            ("200", "DataItem plus downloadId"),
            ("404", "Manifest not available"),
            ("409", "Cannot start"),
        ],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}/network/stream",
        "Download, fetching from the network as needed",
        &[("200", "The bytes"), ("404", "Manifest not available")],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}/network/manifest",
        "Fetch and store the manifest only",
        &[("200", "DataItem"), ("404", "Manifest not available")],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}/network/progress/{downloadId}",
        "Progress of a background download",
        &[("200", "Progress"), ("400", "Invalid download ID")],
    ),
    (
        HttpMethod::Delete,
        "/data/{cid}/network/{downloadId}",
        "Cancel a background download",
        &[
            ("204", "Cancelled"),
            ("400", "Invalid download ID"),
            ("404", "Background download not found"),
        ],
    ),
    (
        HttpMethod::Get,
        "/data/{cid}/advertise",
        "Read the advertise flag",
        &[
            ("200", "AdvertiseDto"),
            ("400", "Not a manifest CID"),
            ("404", "Dataset not found"),
        ],
    ),
    (
        HttpMethod::Post,
        "/data/{cid}/advertise",
        "Set the advertise flag (?advertise=true|false)",
        &[
            ("200", "AdvertiseDto"),
            ("400", "Bad parameter"),
            ("404", "Dataset not found"),
        ],
    ),
    (
        HttpMethod::Get,
        "/space",
        "Storage summary",
        &[("200", "SpaceDto")],
    ),
    (
        HttpMethod::Get,
        "/spr",
        "Signed peer record (JSON, or text/plain by Accept)",
        &[("200", "SPR")],
    ),
    (
        HttpMethod::Get,
        "/peerid",
        "Peer id (JSON, or text/plain by Accept)",
        &[("200", "Peer id")],
    ),
    (
        HttpMethod::Get,
        "/node/peerid",
        "Alias of /peerid",
        &[("200", "Peer id")],
    ),
    (
        HttpMethod::Get,
        "/connect/{peerId}",
        "Dial a peer",
        &[
            ("200", "Connected"),
            ("400", "Bad peer id"),
            ("503", "No network layer"),
        ],
    ),
    (
        HttpMethod::Get,
        "/debug/info",
        "Node information",
        &[("200", "Debug info")],
    ),
    (
        HttpMethod::Post,
        "/debug/chronicles/loglevel",
        "Change the log level (?level=)",
        &[("200", "Changed"), ("400", "Missing or invalid level")],
    ),
    (
        HttpMethod::Get,
        "/debug/peer/{peerId}",
        "What the node knows of a peer",
        &[("200", "Peer"), ("400", "Unable to find Peer!")],
    ),
    (
        HttpMethod::Get,
        "/openapi.json",
        "This document",
        &[("200", "OpenAPI 3.1")],
    ),
];

fn build(base: &str) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (method, path, summary, responses) in ENDPOINTS {
        let mut op = OperationBuilder::new().summary(Some(*summary));
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                op = op.parameter(
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Path)
                        .required(utoipa::openapi::Required::True),
                );
            }
        }
        if *path == "/data" && *method == HttpMethod::Post {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/octet-stream", ContentBuilder::new().build())
                    .build(),
            ));
        }
        for (code, description) in *responses {
            op = op.response(
                *code,
                ResponseBuilder::new().description(*description).build(),
            );
        }
        paths = paths.path(*path, PathItem::new(method.clone(), op.build()));
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("cairn REST API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Codex / Logos Storage compatible API of a cairn node. Errors are text/plain.",
                )),
        )
        .servers(Some(vec![ServerBuilder::new().url(base).build()]))
        .paths(paths.build())
        .components(Some(
            ComponentsBuilder::new()
                .schema_from::<DataItem>()
                .schema_from::<DataList>()
                .schema_from::<ManifestItem>()
                .schema_from::<SpaceDto>()
                .schema_from::<AdvertiseDto>()
                .build(),
        ))
        .build()
}

/// `GET /openapi.json`.
pub(crate) async fn document(OriginalUri(uri): OriginalUri) -> Json<OpenApi> {
    let base = if uri.path().starts_with(CODEX_BASE) {
        CODEX_BASE
    } else {
        STORAGE_BASE
    };
    Json(build(base))
}
