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
    schema::ObjectBuilder,
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

/// (method, path, summary, request body content types, responses: (code, description, JSON?))
type SwarmEndpoint = (
    HttpMethod,
    &'static str,
    &'static str,
    &'static [&'static str],
    &'static [(&'static str, &'static str, bool)],
);

/// The durability API (durability.md §17). Bodies and answers are JSON objects (errors:
/// `{"error":{"code","message"}}`), described here as generic objects.
const SWARM_ENDPOINTS: &[SwarmEndpoint] = &[
    (
        HttpMethod::Post,
        "/swarms",
        "Create a swarm: {name, open?, announcers?, defaultPolicy?, maxDatasetBytes?, lostAfterSecs?, expectedMembers?}",
        &["application/json"],
        &[
            ("201", "{swarmId, genesis, invite}", true),
            ("400", "Bad request", true),
        ],
    ),
    (
        HttpMethod::Get,
        "/swarms",
        "List joined swarms",
        &[],
        &[(
            "200",
            "[{swarmId, name, role, members, datasets, state, quotaBytes, usedBytes}]",
            true,
        )],
    ),
    (
        HttpMethod::Get,
        "/swarms/{id}",
        "A swarm: summary, policy, incarnation, gossip verdicts, traffic",
        &[],
        &[
            ("200", "Swarm", true),
            ("400", "Not a SwarmId", true),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Post,
        "/swarms/{id}/invites",
        "Invite a peer (owner/admin): {peerId, admin?, expiresAt?}",
        &["application/json"],
        &[
            ("201", "{invite}", true),
            ("400", "Bad request", true),
            ("403", "Not the owner or an admin", true),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Post,
        "/swarms/{id}/join",
        "Join with an invite: {invite, storer?, quotaBytes?}",
        &["application/json"],
        &[
            ("200", "{swarmId, name, role}", true),
            ("400", "Bad invite or another swarm's", true),
            ("403", "The invite does not admit this node", true),
            ("409", "Already a member", true),
        ],
    ),
    (
        HttpMethod::Get,
        "/swarms/{id}/members",
        "Members (?state=present|absent|lost|departed|revoked&cursor=)",
        &[],
        &[
            (
                "200",
                "{members:[{peerId, admin, storer, state, incarnation, lastSeenAt, slotsHeld, freeBytesLog2}], next}",
                true,
            ),
            ("400", "Bad parameter", true),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Delete,
        "/swarms/{id}/members/{peerId}",
        "Revoke a member (owner/admin)",
        &[],
        &[
            ("204", "Revoked", false),
            ("403", "Not allowed", true),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Post,
        "/swarms/{id}/leave",
        "Leave the swarm (releases every held slot)",
        &["application/json"],
        &[
            ("202", "{slotsToHandOff, state}", true),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Post,
        "/swarms/{id}/datasets",
        "Upload and announce raw bytes (?filename=&policy=&retain=), or announce a stored dataset: {cid, policy?, retainUntil?}",
        &["application/octet-stream", "application/json"],
        &[
            ("202", "{datasetCid, contentCid, policy, state}", true),
            ("400", "Bad request", true),
            ("403", "Not allowed to announce", true),
            ("404", "Unknown swarm or dataset", true),
            ("413", "Over maxDatasetBytes", true),
            ("422", "Unsatisfiable policy", true),
        ],
    ),
    (
        HttpMethod::Get,
        "/swarms/{id}/datasets",
        "Datasets of the swarm (local view)",
        &[],
        &[
            (
                "200",
                "[{datasetCid, contentCid, size, policy, announcer, announcedAt, retainUntil, state}]",
                true,
            ),
            ("404", "Unknown swarm", true),
        ],
    ),
    (
        HttpMethod::Delete,
        "/swarms/{id}/datasets/{cid}",
        "Retire a dataset (announcer/admin)",
        &[],
        &[
            ("202", "Retiring", false),
            ("403", "Not allowed", true),
            ("404", "Unknown swarm or dataset", true),
            ("409", "Already retired", true),
        ],
    ),
    (
        HttpMethod::Get,
        "/swarms/{id}/datasets/{cid}/health",
        "Health report (?fresh=true answers from the local view)",
        &[],
        &[
            (
                "200",
                "{swarmId, datasetCid, contentCid, policy, state, available, counts, distinctHolders, repair, slots, view, confidence, providers}",
                true,
            ),
            ("404", "Unknown swarm or dataset", true),
        ],
    ),
];

/// A JSON object of any shape.
fn json_object() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().build()))
        .build()
}

fn path_parameters(mut op: OperationBuilder, path: &str) -> OperationBuilder {
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
    op
}

fn build(base: &str) -> OpenApi {
    let mut paths = PathsBuilder::new();
    for (method, path, summary, bodies, responses) in SWARM_ENDPOINTS {
        let mut op =
            path_parameters(OperationBuilder::new().summary(Some(*summary)), path).tag("swarms");
        if !bodies.is_empty() {
            let mut body = RequestBodyBuilder::new();
            for ct in *bodies {
                let content = if *ct == "application/json" {
                    json_object()
                } else {
                    ContentBuilder::new().build()
                };
                body = body.content(*ct, content);
            }
            op = op.request_body(Some(body.build()));
        }
        for (code, description, json) in *responses {
            let mut r = ResponseBuilder::new().description(*description);
            if *json {
                r = r.content("application/json", json_object());
            }
            op = op.response(*code, r.build());
        }
        paths = paths.path(*path, PathItem::new(method.clone(), op.build()));
    }
    for (method, path, summary, responses) in ENDPOINTS {
        let mut op = path_parameters(OperationBuilder::new().summary(Some(*summary)), path);
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
