//! `cairn swarm …` (durability.md §17): create, list, show, members, invite, join, revoke and
//! leave, each one REST call under the API base.

use anyhow::anyhow;
use serde_json::{Map, Value, json};

use crate::{
    client::Client,
    durability_args::{
        Policy, parse_duration, parse_invite, parse_member_state, parse_name, parse_peer,
        parse_policy, parse_swarm, time_from_now,
    },
    durability_cli::{answer, bytes_cell, cell, fields, opt, policy_text, print_json, table},
    failure::{Failure, Outcome, SwarmCode},
    size::{format_size, parse_size},
};

/// Members listed at most, across pages (a node pages by 100).
const MAX_MEMBER_PAGES: usize = 10_000;

/// The `swarm` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum SwarmCommand {
    /// Create a swarm owned by this node; prints its id (and the invite of an open swarm)
    Create(CreateArgs),
    /// List the swarms this node is a member of
    List,
    /// Show one swarm: this node's role, members, datasets, quota and the swarm policy
    Show {
        /// The swarm id (z…, as `cairn swarm list` prints it)
        #[arg(value_name = "SWARM")]
        swarm: String,
    },
    /// List a swarm's members (every page)
    Members {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// Only members in this state: present, absent, lost, departed or revoked
        #[arg(long, value_name = "S")]
        state: Option<String>,
    },
    /// Invite a peer (owner or admin only); prints the invite to hand to that peer
    Invite(InviteArgs),
    /// Join a swarm with an invite (`cairn-invite:…`)
    Join(JoinArgs),
    /// Revoke a member (owner or admin only); final for that peer id
    Revoke {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// The member's peer id (12D3KooW…)
        #[arg(value_name = "PEER_ID")]
        peer: String,
    },
    /// Leave a swarm, handing this node's slots off first unless --force
    Leave {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// Leave at once, without handing slots off (the swarm repairs them)
        #[arg(long)]
        force: bool,
    },
}

/// Who may announce datasets in a swarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Announcers {
    /// Any member
    Any,
    /// Owner and admins only
    Admins,
}

/// Arguments of `cairn swarm create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// The swarm's name (1 to 64 bytes)
    #[arg(value_name = "NAME")]
    name: String,
    /// Open admission: anyone with the swarm's invite may join [default: invite only]
    #[arg(long)]
    open: bool,
    /// Who may announce datasets [default: the node's, any]
    #[arg(long, value_enum, value_name = "WHO")]
    announcers: Option<Announcers>,
    /// Default durability policy of datasets: auto or none [default: the node's, auto]
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Expected number of members (1000 or more splits dataset gossip into 16 shards)
    #[arg(long, value_name = "N")]
    expected_members: Option<u32>,
}

/// Arguments of `cairn swarm invite`.
#[derive(Debug, clap::Args)]
pub(crate) struct InviteArgs {
    /// The swarm id
    #[arg(value_name = "SWARM")]
    swarm: String,
    /// The invited node's peer id (12D3KooW…, as its `cairn info` prints it)
    #[arg(long = "peer", value_name = "PEER_ID")]
    peer: String,
    /// Make the invited member an admin (owner only)
    #[arg(long)]
    admin: bool,
    /// The invite expires after this long: 90s, 15m, 24h, 30d, 2w [default: never]
    #[arg(long, value_name = "DURATION")]
    expires: Option<String>,
}

/// Arguments of `cairn swarm join`.
#[derive(Debug, clap::Args)]
pub(crate) struct JoinArgs {
    /// The invite (`cairn-invite:…`)
    #[arg(value_name = "INVITE")]
    invite: String,
    /// Join as a light member that never stores slots
    #[arg(long)]
    light: bool,
    /// Storage this node gives the swarm, e.g. 20GiB [default: the node's quota]
    #[arg(long, value_name = "SIZE", conflicts_with = "light")]
    quota: Option<String>,
}

/// Runs a `swarm` command.
pub(crate) fn run(client: &Client, command: &SwarmCommand, json: bool) -> Outcome<SwarmCode> {
    match command {
        SwarmCommand::Create(args) => create(client, args, json),
        SwarmCommand::List => list(client, json),
        SwarmCommand::Show { swarm } => show(client, swarm, json),
        SwarmCommand::Members { swarm, state } => members(client, swarm, state.as_deref(), json),
        SwarmCommand::Invite(args) => invite(client, args, json),
        SwarmCommand::Join(args) => join(client, args, json),
        SwarmCommand::Revoke { swarm, peer } => revoke(client, swarm, peer, json),
        SwarmCommand::Leave { swarm, force } => leave(client, swarm, *force, json),
    }
}

/// A usage error (exit 2) from a parser's message.
pub(crate) fn usage<T>(result: anyhow::Result<T>) -> Outcome<T> {
    result.map_err(Failure::usage)
}

/// The body of `POST /swarms`.
fn create_body(args: &CreateArgs) -> Outcome<Value> {
    let name = usage(parse_name(&args.name))?;
    let mut body = Map::new();
    body.insert("name".into(), json!(name));
    body.insert(
        "admission".into(),
        json!(if args.open { "open" } else { "invite" }),
    );
    if let Some(announcers) = args.announcers {
        let value = match announcers {
            Announcers::Any => "any",
            Announcers::Admins => "admins",
        };
        body.insert("announcers".into(), json!(value));
    }
    if let Some(policy) = &args.policy {
        let policy = usage(parse_policy(policy))?;
        if !matches!(policy, Policy::Auto | Policy::None) {
            return Err(Failure::usage(anyhow!(
                "a swarm's default policy is auto or none (got {policy}); give a dataset its own \
                 with `cairn dataset add --policy`"
            )));
        }
        body.insert("defaultPolicy".into(), policy.to_json());
    }
    if let Some(n) = args.expected_members {
        body.insert("expectedMembers".into(), json!(n));
    }
    Ok(Value::Object(body))
}

/// `swarm create NAME` → `POST /swarms`.
fn create(client: &Client, args: &CreateArgs, json: bool) -> Outcome<SwarmCode> {
    let body = create_body(args)?;
    let created = client.post_json_body("/swarms", Some(&body))?;
    answer(json, &created, |c| {
        let mut text = fields(&[("swarm", opt(&c["swarmId"])), ("invite", opt(&c["invite"]))]);
        if c["invite"].is_null() {
            text.push_str(&format!(
                "\ninvite members with: cairn swarm invite {} --peer PEER_ID",
                cell(&c["swarmId"])
            ));
        }
        text
    })
}

/// `swarm list` → `GET /swarms`.
fn list(client: &Client, json: bool) -> Outcome<SwarmCode> {
    let swarms = client.get_json_query("/swarms", &[])?;
    answer(json, &swarms, list_text)
}

fn list_text(swarms: &Value) -> String {
    let rows: Vec<Vec<String>> = swarms
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                cell(&s["swarmId"]),
                cell(&s["name"]),
                cell(&s["role"]),
                cell(&s["members"]),
                cell(&s["datasets"]),
                cell(&s["state"]),
                format!(
                    "{} / {}",
                    bytes_cell(&s["usedBytes"]),
                    bytes_cell(&s["quotaBytes"])
                ),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "this node is not a member of any swarm".to_owned();
    }
    table(
        &[
            "SWARM",
            "NAME",
            "ROLE",
            "MEMBERS",
            "DATASETS",
            "STATE",
            "USED / QUOTA",
        ],
        &rows,
    )
    .join("\n")
}

/// `swarm show SWARM` → `GET /swarms/{id}`.
fn show(client: &Client, swarm: &str, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(swarm))?;
    let value = client.get_json_query(&format!("/swarms/{swarm}"), &[])?;
    answer(json, &value, show_text)
}

fn show_text(s: &Value) -> String {
    let exit = (!s["exit"].is_null()).then(|| {
        format!(
            "{} slots left to hand off, started {}",
            cell(&s["exit"]["slotsLeft"]),
            cell(&s["exit"]["startedAt"])
        )
    });
    let mut text = fields(&[
        ("swarm", opt(&s["swarmId"])),
        ("name", opt(&s["name"])),
        ("role", opt(&s["role"])),
        ("state", opt(&s["state"])),
        ("members", opt(&s["members"])),
        ("datasets", opt(&s["datasets"])),
        (
            "storage",
            Some(format!(
                "{} used of {}",
                bytes_cell(&s["usedBytes"]),
                bytes_cell(&s["quotaBytes"])
            )),
        ),
        ("incarnation", opt(&s["incarnation"])),
        ("exit", exit),
    ]);
    match &s["policy"] {
        Value::Object(policy) => {
            text.push_str("\npolicy:");
            let width = policy.keys().map(String::len).max().unwrap_or(0);
            for (key, value) in policy {
                let shown = if key.ends_with("Policy") {
                    policy_text(value)
                } else if key.ends_with("Bytes") {
                    bytes_cell(value)
                } else {
                    cell(value)
                };
                text.push_str(&format!("\n  {key:<width$}  {shown}"));
            }
        }
        Value::Null => {}
        other => text.push_str(&format!("\npolicy  {}", cell(other))),
    }
    text
}

/// `swarm members SWARM [--state S]` → `GET /swarms/{id}/members?state=&cursor=`, following
/// `next` until the last page. With `--json`, a single page is printed as is; several are
/// printed as one `{members:[…], next:null}` document.
fn members(client: &Client, swarm: &str, state: Option<&str>, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(swarm))?;
    let state = state.map(|s| usage(parse_member_state(s))).transpose()?;
    let path = format!("/swarms/{swarm}/members");
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut query = Vec::new();
        if let Some(state) = &state {
            query.push(("state", state.clone()));
        }
        if let Some(cursor) = &cursor {
            query.push(("cursor", cursor.clone()));
        }
        let page = client.get_json_query(&path, &query)?;
        let next = match &page["next"] {
            Value::Null => None,
            Value::String(next) => Some(next.clone()),
            other => Some(other.to_string()),
        };
        pages.push(page);
        match next {
            None => break,
            Some(next) if cursor.as_ref() == Some(&next) => {
                return Err(anyhow!("the node returned the same members cursor twice").into());
            }
            Some(_) if pages.len() >= MAX_MEMBER_PAGES => {
                return Err(anyhow!("more than {MAX_MEMBER_PAGES} pages of members").into());
            }
            Some(next) => cursor = Some(next),
        }
    }
    let value = if pages.len() == 1 {
        pages.pop().unwrap_or_default()
    } else {
        let all: Vec<Value> = pages
            .iter()
            .flat_map(|p| p["members"].as_array().cloned().unwrap_or_default())
            .collect();
        json!({ "members": all, "next": null })
    };
    answer(json, &value, members_text)
}

fn members_text(page: &Value) -> String {
    let rows: Vec<Vec<String>> = page["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let free = m["freeBytesLog2"]
                .as_u64()
                .filter(|n| *n < 64)
                .map_or_else(|| cell(&m["freeBytesLog2"]), |n| format_size(1 << n));
            vec![
                cell(&m["peerId"]),
                if m["admin"] == Value::Bool(true) {
                    "admin"
                } else {
                    "member"
                }
                .to_owned(),
                match m["storer"].as_bool() {
                    Some(true) => "storer",
                    Some(false) => "light",
                    None => "-",
                }
                .to_owned(),
                cell(&m["state"]),
                cell(&m["incarnation"]),
                cell(&m["lastSeenAt"]),
                cell(&m["slotsHeld"]),
                free,
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no members".to_owned();
    }
    table(
        &[
            "PEER ID",
            "ROLE",
            "KIND",
            "STATE",
            "INCARNATION",
            "LAST SEEN",
            "SLOTS",
            "FREE",
        ],
        &rows,
    )
    .join("\n")
}

/// The body of `POST /swarms/{id}/invites`.
fn invite_body(args: &InviteArgs) -> Outcome<Value> {
    let peer = usage(parse_peer(&args.peer))?;
    let mut body = json!({ "peerId": peer, "admin": args.admin });
    if let Some(expires) = &args.expires {
        let span = usage(parse_duration(expires))?;
        body["expiresAt"] = json!(time_from_now(span)?);
    }
    Ok(body)
}

/// `swarm invite SWARM --peer P` → `POST /swarms/{id}/invites`; prints the invite.
fn invite(client: &Client, args: &InviteArgs, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(&args.swarm))?;
    let body = invite_body(args)?;
    let value = client.post_json_body(&format!("/swarms/{swarm}/invites"), Some(&body))?;
    answer(json, &value, |v| cell(&v["invite"]))
}

/// `swarm join INVITE` → `POST /swarms/{id}/join`, `{id}` being the invite's swarm.
fn join(client: &Client, args: &JoinArgs, json: bool) -> Outcome<SwarmCode> {
    let invite = usage(parse_invite(&args.invite))?;
    let mut body = json!({ "invite": invite.text, "storer": !args.light });
    if let Some(quota) = &args.quota {
        let bytes = parse_size(quota).map_err(Failure::usage)?;
        if bytes == 0 {
            return Err(Failure::usage(anyhow!("--quota must be more than 0 bytes")));
        }
        body["quotaBytes"] = json!(bytes);
    }
    let value = client.post_json_body(&format!("/swarms/{}/join", invite.swarm), Some(&body))?;
    answer(json, &value, |v| {
        format!(
            "joined swarm {} ({}) as {}",
            cell(&v["name"]),
            v["swarmId"].as_str().unwrap_or(&invite.swarm),
            cell(&v["role"])
        )
    })
}

/// `swarm revoke SWARM PEER_ID` → `DELETE /swarms/{id}/members/{peerId}`.
fn revoke(client: &Client, swarm: &str, peer: &str, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(swarm))?;
    let peer = usage(parse_peer(peer))?;
    let value = client.delete_json(&format!("/swarms/{swarm}/members/{peer}"))?;
    if json {
        // 204 has no body: say what was done in the same spirit as `cairn rm --json`.
        let shown = if value.is_null() {
            json!({ "swarmId": swarm, "peerId": peer, "revoked": true })
        } else {
            value
        };
        print_json(&shown)?;
        return Ok(SwarmCode::Ok);
    }
    answer(false, &value, |_| {
        format!("revoked {peer} from swarm {swarm}")
    })
}

/// `swarm leave SWARM [--force]` → `POST /swarms/{id}/leave` `{graceful}`.
fn leave(client: &Client, swarm: &str, force: bool, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(swarm))?;
    let body = json!({ "graceful": !force });
    let value = client.post_json_body(&format!("/swarms/{swarm}/leave"), Some(&body))?;
    answer(json, &value, |v| {
        let mut text = format!("leaving swarm {swarm}");
        if let Some(n) = opt(&v["slotsToHandOff"]) {
            text.push_str(&format!(": {n} slots to hand off"));
        }
        if let Some(state) = opt(&v["state"]) {
            text.push_str(&format!(" (state {state})"));
        }
        text
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::failure::Code;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: SwarmCommand,
    }

    fn parse(args: &[&str]) -> SwarmCommand {
        Cli::try_parse_from(std::iter::once("swarm").chain(args.iter().copied()))
            .unwrap()
            .command
    }

    fn create_args(args: &[&str]) -> CreateArgs {
        let mut all = vec!["create"];
        all.extend_from_slice(args);
        match parse(&all) {
            SwarmCommand::Create(args) => args,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_bodies() {
        assert_eq!(
            create_body(&create_args(&["photos"])).unwrap(),
            json!({"name": "photos", "admission": "invite"})
        );
        assert_eq!(
            create_body(&create_args(&[
                "photos",
                "--open",
                "--announcers",
                "admins",
                "--policy",
                "none",
                "--expected-members",
                "1500"
            ]))
            .unwrap(),
            json!({"name": "photos", "admission": "open", "announcers": "admins",
                   "defaultPolicy": "none", "expectedMembers": 1500})
        );
        for bad in [
            &["photos", "--policy", "replicate:3"][..],
            &["photos", "--policy", "sometimes"],
            &[""],
        ] {
            let err = create_body(&create_args(bad)).unwrap_err();
            assert_eq!(err.code, Code::Usage, "{bad:?}");
        }
    }

    #[test]
    fn invite_bodies() {
        let peer = cairn_core::durability::Keypair::from_seed(&[1; 32])
            .peer_id()
            .to_base58();
        let SwarmCommand::Invite(args) = parse(&["invite", "zS", "--peer", &peer, "--admin"])
        else {
            panic!("not invite")
        };
        assert_eq!(
            invite_body(&args).unwrap(),
            json!({"peerId": peer, "admin": true})
        );
        let SwarmCommand::Invite(args) =
            parse(&["invite", "zS", "--peer", &peer, "--expires", "1d"])
        else {
            panic!("not invite")
        };
        let body = invite_body(&args).unwrap();
        assert_eq!(body["admin"], json!(false));
        assert!(body["expiresAt"].as_str().unwrap().ends_with('Z'));
        let SwarmCommand::Invite(args) =
            parse(&["invite", "zS", "--peer", &peer, "--expires", "1y"])
        else {
            panic!("not invite")
        };
        assert_eq!(invite_body(&args).unwrap_err().code, Code::Usage);
    }

    #[test]
    fn light_and_quota_conflict() {
        assert!(
            Cli::try_parse_from([
                "swarm",
                "join",
                "cairn-invite:x",
                "--light",
                "--quota",
                "1GiB"
            ])
            .is_err()
        );
    }

    #[test]
    fn list_layout() {
        let text = list_text(
            &json!([{"swarmId": "zS1", "name": "photos", "role": "owner",
            "members": 3, "datasets": 2, "state": "active", "quotaBytes": 1_073_741_824u64,
            "usedBytes": 1024}]),
        );
        assert_eq!(
            text,
            "SWARM  NAME    ROLE   MEMBERS  DATASETS  STATE   USED / QUOTA\n\
             zS1    photos  owner  3        2         active  1.00 KiB / 1.00 GiB"
        );
        assert_eq!(
            list_text(&json!([])),
            "this node is not a member of any swarm"
        );
    }

    #[test]
    fn show_layout() {
        let text = show_text(&json!({"swarmId": "zS1", "name": "photos", "role": "admin",
            "members": 3, "datasets": 2, "state": "exiting", "quotaBytes": 2048, "usedBytes": 0,
            "incarnation": 4, "exit": {"slotsLeft": 2, "startedAt": "2025-01-01T00:00:00Z"},
            "policy": {"admission": "invite", "defaultPolicy": "auto",
                       "maxDatasetBytes": 10_737_418_240u64}}));
        assert!(text.contains("role         admin"), "{text}");
        assert!(text.contains("storage      0 B used of 2.00 KiB"), "{text}");
        assert!(
            text.contains("exit         2 slots left to hand off, started 2025-01-01T00:00:00Z"),
            "{text}"
        );
        assert!(text.contains("\n  maxDatasetBytes  10.0 GiB"), "{text}");
        assert!(text.contains("\n  defaultPolicy    auto"), "{text}");
    }

    #[test]
    fn members_layout() {
        let text = members_text(&json!({"members": [{"peerId": "12D3KooWa", "admin": true,
            "storer": true, "state": "present", "incarnation": 2, "lastSeenAt": "t",
            "slotsHeld": 5, "freeBytesLog2": 30}, {"peerId": "12D3KooWb", "admin": false,
            "storer": false, "state": "absent", "incarnation": 1, "lastSeenAt": null,
            "slotsHeld": 0, "freeBytesLog2": 0}], "next": null}));
        assert_eq!(
            text,
            "PEER ID    ROLE    KIND    STATE    INCARNATION  LAST SEEN  SLOTS  FREE\n\
             12D3KooWa  admin   storer  present  2            t          5      1.00 GiB\n\
             12D3KooWb  member  light   absent   1            -          0      1 B"
        );
        assert_eq!(
            members_text(&json!({"members": [], "next": null})),
            "no members"
        );
    }
}
