//! `cairn dataset …` (durability.md §17): add, list, health, verify, repair and retire a dataset
//! of a swarm, each one REST call under the API base. `health` and `verify` exit with the
//! report's state: 0 healthy, 3 degraded or critical, 4 lost.

use std::path::PathBuf;

use anyhow::{Context as _, anyhow};
use serde_json::{Value, json};

use crate::{
    client::Client,
    commands::parse_cid,
    durability_args::{parse_duration, parse_policy, parse_swarm, time_from_now},
    durability_cli::{
        answer, bytes_cell, cell, fields, list_cell, opt, policy_text, print_json, print_stdout,
        table, upload_bar,
    },
    failure::{Failure, Outcome, SwarmCode},
    swarm_cmd::usage,
};

/// The `dataset` commands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum DatasetCommand {
    /// Upload a file (or take a dataset already on the node) and announce it to a swarm
    Add(AddArgs),
    /// List a swarm's datasets as this node sees them
    List {
        /// The swarm id (z…, as `cairn swarm list` prints it)
        #[arg(value_name = "SWARM")]
        swarm: String,
    },
    /// Show a dataset's health; exits 0 healthy, 3 degraded or critical, 4 lost
    Health {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// The dataset's CID (or its content CID)
        #[arg(value_name = "CID")]
        cid: String,
        /// Probe every holder now instead of answering from the local view (about 10 s)
        #[arg(long)]
        fresh: bool,
    },
    /// Challenge every slot now and show the health with the verification; exits like health
    Verify {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// The dataset's CID
        #[arg(value_name = "CID")]
        cid: String,
    },
    /// Ask for a repair round of a dataset's missing slots
    Repair {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// The dataset's CID
        #[arg(value_name = "CID")]
        cid: String,
        /// Repair even if nothing is known missing (owner or admin; verifies first)
        #[arg(long)]
        force: bool,
    },
    /// Retire a dataset from a swarm (its announcer or an admin)
    Retire {
        /// The swarm id
        #[arg(value_name = "SWARM")]
        swarm: String,
        /// The dataset's CID
        #[arg(value_name = "CID")]
        cid: String,
    },
}

/// Arguments of `cairn dataset add`.
#[derive(Debug, clap::Args)]
#[command(
    group(clap::ArgGroup::new("source").required(true).args(["file", "cid"])),
    override_usage = "cairn dataset add [OPTIONS] <SWARM> <FILE | --cid <CID>>"
)]
pub(crate) struct AddArgs {
    /// The swarm id
    #[arg(value_name = "SWARM")]
    swarm: String,
    /// The file to upload (streamed)
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// Announce a dataset already stored on the node (its plain manifest CID) instead of a file
    #[arg(long, value_name = "CID")]
    cid: Option<String>,
    /// Durability policy: auto, none, replicate:R (1-16) or erasure:K+M (2 <= K, 1 <= M,
    /// K+M <= 64) [default: the swarm's]
    #[arg(long, value_name = "POLICY")]
    policy: Option<String>,
    /// Keep the dataset at least this long: 90s, 15m, 24h, 30d, 2w [default: until retired]
    #[arg(long, value_name = "DURATION")]
    retain: Option<String>,
}

/// Runs a `dataset` command.
pub(crate) fn run(client: &Client, command: &DatasetCommand, json: bool) -> Outcome<SwarmCode> {
    match command {
        DatasetCommand::Add(args) => add(client, args, json),
        DatasetCommand::List { swarm } => list(client, swarm, json),
        DatasetCommand::Health { swarm, cid, fresh } => health(client, swarm, cid, *fresh, json),
        DatasetCommand::Verify { swarm, cid } => verify(client, swarm, cid, json),
        DatasetCommand::Repair { swarm, cid, force } => repair(client, swarm, cid, *force, json),
        DatasetCommand::Retire { swarm, cid } => retire(client, swarm, cid, json),
    }
}

/// The checked swarm id and CID of a dataset command, in their canonical text.
fn swarm_and_cid(swarm: &str, cid: &str) -> Outcome<(String, String)> {
    Ok((usage(parse_swarm(swarm))?, parse_cid(cid)?.to_string()))
}

/// `dataset add SWARM FILE` → `POST /swarms/{id}/datasets` with the file as
/// `application/octet-stream` and `?filename=&policy=&retain=`; `dataset add SWARM --cid CID` →
/// the same path with the JSON body `{cid, policy?, retainUntil?}`.
fn add(client: &Client, args: &AddArgs, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(&args.swarm))?;
    let policy = args
        .policy
        .as_deref()
        .map(|p| usage(parse_policy(p)))
        .transpose()?;
    let retain = args
        .retain
        .as_deref()
        .map(|r| usage(parse_duration(r)).map(|span| (r, span)))
        .transpose()?;
    let path = format!("/swarms/{swarm}/datasets");
    let added = match (&args.cid, &args.file) {
        (Some(cid), _) => {
            let cid = parse_cid(cid)?.to_string();
            let mut body = json!({ "cid": cid });
            if let Some(policy) = policy {
                body["policy"] = policy.to_json();
            }
            if let Some((_, span)) = retain {
                body["retainUntil"] = json!(time_from_now(span)?);
            }
            client.post_json_body(&path, Some(&body))?
        }
        (None, Some(file)) => {
            let (handle, len) = crate::commands::open_upload_file(file)?;
            let mut query = Vec::new();
            if let Some(name) = file.file_name() {
                query.push(("filename", name.to_string_lossy().into_owned()));
            }
            if let Some(policy) = policy {
                query.push(("policy", policy.to_string()));
            }
            if let Some((text, _)) = retain {
                query.push(("retain", text.to_owned()));
            }
            let headers = [("Content-Type", "application/octet-stream".to_owned())];
            let bar = upload_bar(len, json);
            let mut body = bar.wrap_read(handle);
            let sent = client.post_stream(&path, &query, &headers, &mut body, len);
            bar.finish_and_clear();
            let text = sent?;
            if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).with_context(|| {
                    format!("the answer to POST {path} is not the JSON expected")
                })?
            }
        }
        (None, None) => {
            return Err(Failure::usage(anyhow!("give a FILE or --cid CID")));
        }
    };
    answer(json, &added, |a| {
        let content = a["contentCid"]
            .as_str()
            .filter(|c| Some(*c) != a["datasetCid"].as_str())
            .map(str::to_owned);
        fields(&[
            ("dataset", opt(&a["datasetCid"])),
            ("content", content),
            (
                "policy",
                (!a["policy"].is_null()).then(|| policy_text(&a["policy"])),
            ),
            ("state", opt(&a["state"])),
        ])
    })
}

/// `dataset list SWARM` → `GET /swarms/{id}/datasets`.
fn list(client: &Client, swarm: &str, json: bool) -> Outcome<SwarmCode> {
    let swarm = usage(parse_swarm(swarm))?;
    let value = client.get_json_query(&format!("/swarms/{swarm}/datasets"), &[])?;
    answer(json, &value, list_text)
}

fn list_text(datasets: &Value) -> String {
    let rows: Vec<Vec<String>> = datasets
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|d| {
            vec![
                cell(&d["datasetCid"]),
                bytes_cell(&d["size"]),
                policy_text(&d["policy"]),
                cell(&d["state"]),
                cell(&d["retainUntil"]),
                cell(&d["announcer"]),
            ]
        })
        .collect();
    if rows.is_empty() {
        return "no datasets in this swarm".to_owned();
    }
    table(
        &[
            "DATASET",
            "SIZE",
            "POLICY",
            "STATE",
            "RETAIN UNTIL",
            "ANNOUNCER",
        ],
        &rows,
    )
    .join("\n")
}

/// `dataset health SWARM CID [--fresh]` → `GET /swarms/{id}/datasets/{cid}/health[?fresh=true]`.
fn health(client: &Client, swarm: &str, cid: &str, fresh: bool, json: bool) -> Outcome<SwarmCode> {
    let (swarm, cid) = swarm_and_cid(swarm, cid)?;
    let query = if fresh {
        vec![("fresh", "true".to_owned())]
    } else {
        Vec::new()
    };
    let report =
        client.get_json_query(&format!("/swarms/{swarm}/datasets/{cid}/health"), &query)?;
    print_report(&report, json)
}

/// `dataset verify SWARM CID` → `POST /swarms/{id}/datasets/{cid}/verify`.
fn verify(client: &Client, swarm: &str, cid: &str, json: bool) -> Outcome<SwarmCode> {
    let (swarm, cid) = swarm_and_cid(swarm, cid)?;
    let report = client.post_json_body(&format!("/swarms/{swarm}/datasets/{cid}/verify"), None)?;
    print_report(&report, json)
}

/// Prints a health report and turns its state into the exit code.
fn print_report(report: &Value, json: bool) -> Outcome<SwarmCode> {
    if json {
        print_json(report)?;
    } else {
        print_stdout(&report_text(report))?;
    }
    match report["state"].as_str().and_then(state_code) {
        Some(code) => Ok(code),
        None => Err(anyhow!(
            "the node reported an unknown health state: {}",
            report["state"]
        )
        .into()),
    }
}

/// The exit code of a health state (durability.md §11, §17).
fn state_code(state: &str) -> Option<SwarmCode> {
    match state {
        "healthy" | "unmanaged" => Some(SwarmCode::Ok),
        "degraded" | "critical" => Some(SwarmCode::Degraded),
        "lost" => Some(SwarmCode::Lost),
        _ => None,
    }
}

/// A health report (and a verification, if any) for people.
fn report_text(r: &Value) -> String {
    let content = r["contentCid"]
        .as_str()
        .filter(|c| Some(*c) != r["datasetCid"].as_str())
        .map(str::to_owned);
    let state = opt(&r["state"]).map(|state| match r["available"].as_bool() {
        Some(true) => format!("{state}, data available"),
        Some(false) => format!("{state}, data unavailable"),
        None => state,
    });
    let counts = &r["counts"];
    let slots = (!counts.is_null()).then(|| {
        format!(
            "{}: {} reachable, {} suspect, {} missing ({} unclaimed, {} spares)",
            cell(&counts["slots"]),
            cell(&counts["reachable"]),
            cell(&counts["suspect"]),
            cell(&counts["missing"]),
            cell(&counts["unclaimed"]),
            cell(&counts["spares"]),
        )
    });
    let repair = &r["repair"];
    let repair = (!repair.is_null()).then(|| {
        format!(
            "round {}, {}, leader {}, missing {}, deadline {}",
            cell(&repair["round"]),
            cell(&repair["state"]),
            cell(&repair["leader"]),
            list_cell(&repair["missing"]),
            cell(&repair["deadline"]),
        )
    });
    let view = &r["view"];
    let view = (!view.is_null()).then(|| {
        format!(
            "computed {}{}, oldest observation {} s",
            cell(&view["computedAt"]),
            if view["fresh"] == Value::Bool(true) {
                " (fresh)"
            } else {
                ""
            },
            cell(&view["oldestObservationSecs"]),
        )
    });
    let confidence = &r["confidence"];
    let confidence = (!confidence.is_null()).then(|| {
        format!(
            "{} slots verified, {} samples per slot, max undetected loss {} (99%)",
            cell(&confidence["verifiedSlots"]),
            cell(&confidence["samplesPerSlot"]),
            percent(&confidence["maxUndetectedLoss99"]),
        )
    });
    let providers = match &r["providers"] {
        Value::Null => None,
        Value::Array(list) if list.is_empty() => Some("0".to_owned()),
        Value::Array(list) => Some(format!(
            "{}: {}",
            list.len(),
            list.iter().map(cell).collect::<Vec<_>>().join(", ")
        )),
        other => Some(cell(other)),
    };
    let v = &r["verification"];
    let verification = (!v.is_null()).then(|| {
        let passed = match &v["passed"] {
            Value::Array(slots) => slots.len().to_string(),
            other => cell(other),
        };
        format!(
            "at {}: {passed} passed, failed {}, unreachable {}, max undetected loss {} (99%)",
            cell(&v["verifiedAt"]),
            list_cell(&v["failed"]),
            list_cell(&v["unreachable"]),
            percent(&v["maxUndetectedLoss99"]),
        )
    });
    let mut text = fields(&[
        ("dataset", opt(&r["datasetCid"])),
        ("content", content),
        ("swarm", opt(&r["swarmId"])),
        ("state", state),
        (
            "policy",
            (!r["policy"].is_null()).then(|| policy_text(&r["policy"])),
        ),
        ("slots", slots),
        (
            "holders",
            opt(&r["distinctHolders"]).map(|n| format!("{n} distinct")),
        ),
        ("providers", providers),
        ("repair", repair),
        ("view", view),
        ("confidence", confidence),
        ("verified", verification),
    ]);
    let rows: Vec<Vec<String>> = r["slots"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| {
            vec![
                cell(&s["index"]),
                cell(&s["holder"]),
                cell(&s["generation"]),
                cell(&s["state"]),
                cell(&s["lastSeenAt"]),
                cell(&s["source"]),
                cell(&s["lastVerifiedAt"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        text.push_str("\n\n");
        text.push_str(
            &table(
                &[
                    "SLOT",
                    "HOLDER",
                    "GEN",
                    "STATE",
                    "LAST SEEN",
                    "SOURCE",
                    "LAST VERIFIED",
                ],
                &rows,
            )
            .join("\n"),
        );
    }
    text
}

/// A fraction as a percentage with one decimal (`0.206` → `20.6%`).
fn percent(value: &Value) -> String {
    value
        .as_f64()
        .map_or_else(|| cell(value), |f| format!("{:.1}%", f * 100.0))
}

/// `dataset repair SWARM CID [--force]` → `POST /swarms/{id}/datasets/{cid}/repair` `{force}`.
fn repair(client: &Client, swarm: &str, cid: &str, force: bool, json: bool) -> Outcome<SwarmCode> {
    let (swarm, cid) = swarm_and_cid(swarm, cid)?;
    let body = json!({ "force": force });
    let value = client.post_json_body(
        &format!("/swarms/{swarm}/datasets/{cid}/repair"),
        Some(&body),
    )?;
    answer(json, &value, |v| {
        format!(
            "repair round {} {}: leader {}, missing slots {}",
            cell(&v["round"]),
            cell(&v["state"]),
            cell(&v["leader"]),
            list_cell(&v["missing"]),
        )
    })
}

/// `dataset retire SWARM CID` → `DELETE /swarms/{id}/datasets/{cid}`.
fn retire(client: &Client, swarm: &str, cid: &str, json: bool) -> Outcome<SwarmCode> {
    let (swarm, cid) = swarm_and_cid(swarm, cid)?;
    let value = client.delete_json(&format!("/swarms/{swarm}/datasets/{cid}"))?;
    if json {
        let shown = if value.is_null() {
            json!({ "swarmId": swarm, "datasetCid": cid, "retired": true })
        } else {
            value
        };
        print_json(&shown)?;
        return Ok(SwarmCode::Ok);
    }
    print_stdout(&format!("retiring {cid} from swarm {swarm}"))?;
    Ok(SwarmCode::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The report of durability.md §17.
    fn spec_report() -> Value {
        json!({"swarmId":"zQmS","datasetCid":"zDvD","contentCid":"zDvC",
         "policy":{"kind":"erasure","k":10,"m":10,"replicas":0,"repairAtMissing":3},
         "state":"critical","available":true,
         "counts":{"slots":20,"reachable":16,"suspect":1,"missing":3,"unclaimed":0,"spares":1},
         "distinctHolders":20,
         "repair":{"round":2,"leader":"12D3KooL","state":"running","missing":[4,11,17],
                   "deadline":"2025-01-01T00:00:00Z"},
         "slots":[{"index":0,"holder":"12D3KooA","generation":0,"state":"live",
                   "lastSeenAt":"2025-01-01T00:00:00Z","source":"self","lastVerifiedAt":null},
                  {"index":4,"holder":"12D3KooBB","generation":1,"state":"repairing",
                   "lastSeenAt":null,"source":"facts","lastVerifiedAt":null}],
         "view":{"computedAt":"2025-01-01T00:00:00Z","fresh":false,"oldestObservationSecs":5400},
         "confidence":{"verifiedSlots":16,"samplesPerSlot":20,"maxUndetectedLoss99":0.206},
         "providers":null})
    }

    #[test]
    fn report_layout() {
        let text = report_text(&spec_report());
        let expected = "\
dataset     zDvD
content     zDvC
swarm       zQmS
state       critical, data available
policy      erasure 10+10 (repair at 3 missing)
slots       20: 16 reachable, 1 suspect, 3 missing (0 unclaimed, 1 spares)
holders     20 distinct
repair      round 2, running, leader 12D3KooL, missing 4, 11, 17, deadline 2025-01-01T00:00:00Z
view        computed 2025-01-01T00:00:00Z, oldest observation 5400 s
confidence  16 slots verified, 20 samples per slot, max undetected loss 20.6% (99%)

SLOT  HOLDER     GEN  STATE      LAST SEEN             SOURCE  LAST VERIFIED
0     12D3KooA   0    live       2025-01-01T00:00:00Z  self    -
4     12D3KooBB  1    repairing  -                     facts   -";
        assert_eq!(text, expected);
    }

    #[test]
    fn verification_and_unmanaged_layout() {
        let mut report = spec_report();
        report["verification"] = json!({"verifiedAt": "T", "samplesPerSlot": 20, "passed": 18,
            "failed": [3], "unreachable": [], "maxUndetectedLoss99": 0.206});
        let text = report_text(&report);
        assert!(
            text.contains(
                "verified    at T: 18 passed, failed 3, unreachable none, max undetected loss \
                 20.6% (99%)"
            ),
            "{text}"
        );
        let text = report_text(&json!({"datasetCid": "zD", "contentCid": "zD",
            "state": "unmanaged", "available": true, "policy": {"kind": "none"},
            "providers": ["12D3KooA", "12D3KooB"], "slots": []}));
        assert_eq!(
            text,
            "dataset    zD\nstate      unmanaged, data available\npolicy     none\n\
             providers  2: 12D3KooA, 12D3KooB"
        );
        // Nothing in the report: no panic, no lines.
        assert_eq!(report_text(&json!({})), "");
        assert_eq!(report_text(&json!([1, 2])), "");
    }

    #[test]
    fn states_map_to_exit_codes() {
        assert_eq!(state_code("healthy"), Some(SwarmCode::Ok));
        assert_eq!(state_code("unmanaged"), Some(SwarmCode::Ok));
        assert_eq!(state_code("degraded"), Some(SwarmCode::Degraded));
        assert_eq!(state_code("critical"), Some(SwarmCode::Degraded));
        assert_eq!(state_code("lost"), Some(SwarmCode::Lost));
        assert_eq!(state_code("placing"), None);
        assert_eq!(state_code(""), None);
    }

    #[test]
    fn list_layout() {
        let text = list_text(
            &json!([{"datasetCid": "zD1", "contentCid": "zC1", "size": 2048,
            "policy": {"kind": "replicate", "replicas": 3, "repairAtMissing": 1},
            "announcer": "12D3KooA", "announcedAt": "T", "retainUntil": null,
            "state": "placing"}]),
        );
        assert_eq!(
            text,
            "DATASET  SIZE      POLICY                             STATE    RETAIN UNTIL  \
             ANNOUNCER\n\
             zD1      2.00 KiB  replicate 3 (repair at 1 missing)  placing  -             \
             12D3KooA"
        );
        assert_eq!(list_text(&json!([])), "no datasets in this swarm");
    }
}
