//! The `swarm` and `dataset` commands (durability.md §17) against a fake node: a small HTTP
//! server on 127.0.0.1 that answers canned JSON per path and records every request. Checks the
//! request each verb sends, the printed output, `--json` pass-through, the exit codes
//! (0/1/2/3/4) and that bad arguments are refused before any request.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{TcpListener, TcpStream},
    process::{Command, Output, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use cairn_core::{
    Cid,
    durability::{Keypair, SwarmId},
};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// Any command must finish within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// A connection to the fake node is dropped after this long without data.
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// The API base every path below sits under.
const BASE: &str = "/api/storage/v1";

// ---------------------------------------------------------------------------------------------
// The fake node

/// One request the fake node received.
#[derive(Debug, Clone)]
struct Request {
    method: String,
    /// The path after the API base.
    path: String,
    /// Decoded query pairs, in order.
    query: Vec<(String, String)>,
    /// Lower-case header names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of {} {} is not JSON ({e}): {:?}",
                self.method,
                self.path,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

/// A canned answer: the first route whose method, path and (if given) query pair match.
#[derive(Debug, Clone)]
struct Route {
    method: &'static str,
    path: String,
    query: Option<(&'static str, &'static str)>,
    status: u16,
    body: String,
}

fn route(method: &'static str, path: impl Into<String>, status: u16, body: Value) -> Route {
    Route {
        method,
        path: path.into(),
        query: None,
        status,
        body: if body.is_null() {
            String::new()
        } else {
            body.to_string()
        },
    }
}

/// A node that answers `routes` until dropped.
struct FakeNode {
    api: String,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FakeNode {
    fn start(routes: Vec<Route>) -> FakeNode {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let api = format!("http://{}", listener.local_addr().unwrap());
        listener.set_nonblocking(true).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (requests, stop) = (requests.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            // A broken connection is the client's problem; the test sees it.
                            let _ = serve(stream, &routes, &requests);
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(2));
                        }
                        Err(e) => panic!("accept: {e}"),
                    }
                }
            })
        };
        FakeNode {
            api,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    /// Runs `cairn --api <this node> args…`.
    fn cairn(&self, args: &[&str]) -> Output {
        let mut all = vec!["--api", &self.api];
        all.extend_from_slice(args);
        run(&all)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// The only request received.
    fn only_request(&self) -> Request {
        let requests = self.requests();
        assert_eq!(requests.len(), 1, "{requests:#?}");
        requests.into_iter().next().unwrap()
    }

    fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

impl Drop for FakeNode {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Answers one request on `stream` (then closes it).
fn serve(
    stream: TcpStream,
    routes: &[Route],
    requests: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
        if let Some((name, value)) = line.trim_end().split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if header("expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        writer.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        writer.flush()?;
    }
    let mut body = Vec::new();
    if let Some(len) = header("content-length").and_then(|v| v.parse::<u64>().ok()) {
        reader.by_ref().take(len).read_to_end(&mut body)?;
    } else if header("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let path = path.strip_prefix(BASE).unwrap_or(path).to_owned();
    let query: Vec<(String, String)> = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect();
    let request = Request {
        method,
        path,
        query,
        headers,
        body,
    };
    let found = routes.iter().find(|r| {
        r.method == request.method
            && r.path == request.path
            && r.query.is_none_or(|(n, v)| request.query(n) == Some(v))
    });
    let (status, answer) = match found {
        Some(route) => (route.status, route.body.clone()),
        None => (
            404,
            json!({"error": {"code": "no_route", "message": "the fake node has no such route"}})
                .to_string(),
        ),
    };
    requests.lock().unwrap().push(request);
    let response = format!(
        "HTTP/1.1 {status} Fake\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{answer}",
        answer.len()
    );
    writer.write_all(response.as_bytes())?;
    writer.flush()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = text.get(i + 1..i + 3)
            && let Ok(byte) = u8::from_str_radix(hex, 16)
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Running the binary

/// Runs `cairn args…` with no `CAIRN_*` variables, killing it (and failing) after
/// `COMMAND_TIMEOUT`.
fn run(args: &[&str]) -> Output {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CAIRN_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf);
        buf
    });
    let err = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cairn {args:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        stdout(output),
        stderr(output)
    );
}

/// Stdout parsed as one JSON document.
#[track_caller]
fn stdout_json(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", stdout(output)))
}

// ---------------------------------------------------------------------------------------------
// Fixtures

fn swarm_id() -> String {
    SwarmId([7; 32]).to_text()
}

fn peer(seed: u8) -> String {
    Keypair::from_seed(&[seed; 32]).peer_id().to_base58()
}

fn cid(data: &[u8]) -> String {
    Cid::of_block(data).to_string()
}

/// `cairn-invite:` + base64url(Invite{genesis: GenesisRecord{genesis, owner_public_key},
/// bootstrap}) and the SwarmId it names.
fn invite() -> (String, String) {
    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        assert!(bytes.len() < 128);
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }
    fn base64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }
    let genesis = b"\x08\x01\x12\x06photos".to_vec();
    let mut record = field(1, &genesis);
    record.extend(field(2, &[0x42; 36]));
    let mut invite = field(1, &record);
    invite.extend(field(4, b"/ip4/127.0.0.1/tcp/4001"));
    (
        format!("cairn-invite:{}", base64url(&invite)),
        SwarmId::of_genesis(&genesis).to_text(),
    )
}

/// A health report in the shape of durability.md §17, in `state`.
fn report(state: &str) -> Value {
    json!({"swarmId": swarm_id(), "datasetCid": cid(b"d"), "contentCid": cid(b"c"),
     "policy": {"kind": "erasure", "k": 2, "m": 1, "replicas": 0, "repairAtMissing": 1},
     "state": state, "available": state != "lost",
     "counts": {"slots": 3, "reachable": 2, "suspect": 0, "missing": 1, "unclaimed": 0,
                "spares": 0},
     "distinctHolders": 3,
     "repair": null,
     "slots": [
        {"index": 0, "holder": peer(1), "generation": 0, "state": "live",
         "lastSeenAt": "2025-06-01T10:00:00Z", "source": "self",
         "lastVerifiedAt": "2025-06-01T09:00:00Z"},
        {"index": 1, "holder": peer(2), "generation": 0, "state": "live",
         "lastSeenAt": "2025-06-01T10:00:00Z", "source": "watcher", "lastVerifiedAt": null},
        {"index": 2, "holder": peer(3), "generation": 0, "state": "missing",
         "lastSeenAt": null, "source": "facts", "lastVerifiedAt": null}],
     "view": {"computedAt": "2025-06-01T10:00:05Z", "fresh": false,
              "oldestObservationSecs": 5},
     "confidence": {"verifiedSlots": 1, "samplesPerSlot": 20, "maxUndetectedLoss99": 0.206},
     "providers": null})
}

// ---------------------------------------------------------------------------------------------
// swarm

#[test]
fn swarm_create_posts_the_policy_and_prints_the_id() {
    let created = json!({"swarmId": swarm_id(), "genesis": "Zm9v", "invite": "cairn-invite:abc"});
    let node = FakeNode::start(vec![route("POST", "/swarms", 201, created.clone())]);

    let output = node.cairn(&[
        "swarm",
        "create",
        "photos",
        "--open",
        "--announcers",
        "admins",
        "--policy",
        "none",
        "--expected-members",
        "1500",
    ]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.as_str()),
        ("POST", "/swarms")
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.json(),
        json!({"name": "photos", "admission": "open", "announcers": "admins",
               "defaultPolicy": "none", "expectedMembers": 1500})
    );
    let text = stdout(&output);
    assert!(text.contains(&format!("swarm   {}", swarm_id())), "{text}");
    assert!(text.contains("invite  cairn-invite:abc"), "{text}");

    // Defaults: only the name and the (invite) admission are sent; --json prints the answer.
    node.clear();
    let output = node.cairn(&["swarm", "create", "photos", "--json"]);
    assert_code(&output, 0);
    assert_eq!(
        node.only_request().json(),
        json!({"name": "photos", "admission": "invite"})
    );
    assert_eq!(stdout_json(&output), created);
}

#[test]
fn swarm_list_show_and_members() {
    let id = swarm_id();
    let swarms = json!([{"swarmId": id, "name": "photos", "role": "owner", "members": 2,
        "datasets": 1, "state": "active", "quotaBytes": 1_073_741_824u64, "usedBytes": 2048}]);
    let shown = json!({"swarmId": id, "name": "photos", "role": "owner", "members": 2,
        "datasets": 1, "state": "active", "quotaBytes": 1_073_741_824u64, "usedBytes": 2048,
        "policy": {"admission": "invite", "defaultPolicy": "auto"}, "incarnation": 3,
        "exit": null});
    let member = |seed: u8, state: &str| {
        json!({"peerId": peer(seed), "admin": seed == 1, "storer": true, "state": state,
               "incarnation": 1, "lastSeenAt": "2025-06-01T10:00:00Z", "slotsHeld": 2,
               "freeBytesLog2": 30})
    };
    let page1 = json!({"members": [member(1, "present")], "next": "c2"});
    let page2 = json!({"members": [member(2, "present")], "next": null});
    let mut second = route("GET", format!("/swarms/{id}/members"), 200, page2.clone());
    second.query = Some(("cursor", "c2"));
    let node = FakeNode::start(vec![
        route("GET", "/swarms", 200, swarms.clone()),
        route("GET", format!("/swarms/{id}"), 200, shown.clone()),
        second,
        route("GET", format!("/swarms/{id}/members"), 200, page1),
    ]);

    let output = node.cairn(&["swarm", "list"]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.starts_with("SWARM "), "{text}");
    assert!(
        text.contains("photos  owner  2        1         active  2.00 KiB / 1.00 GiB"),
        "{text}"
    );
    assert_eq!(
        stdout_json(&node.cairn(&["--json", "swarm", "list"])),
        swarms
    );

    let output = node.cairn(&["swarm", "show", &id]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.contains("role         owner"), "{text}");
    assert!(
        text.contains("storage      2.00 KiB used of 1.00 GiB"),
        "{text}"
    );
    assert!(text.contains("defaultPolicy  auto"), "{text}");
    assert_eq!(
        stdout_json(&node.cairn(&["swarm", "show", &id, "--json"])),
        shown
    );

    node.clear();
    let output = node.cairn(&["swarm", "members", &id, "--state", "present"]);
    assert_code(&output, 0);
    let requests = node.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    assert_eq!(requests[0].path, format!("/swarms/{id}/members"));
    assert_eq!(
        requests[0].query,
        [("state".to_owned(), "present".to_owned())]
    );
    assert_eq!(requests[1].query("cursor"), Some("c2"));
    assert_eq!(requests[1].query("state"), Some("present"));
    let text = stdout(&output);
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(text.contains(&format!("{}  admin ", peer(1))), "{text}");
    assert!(text.contains(&format!("{}  member", peer(2))), "{text}");
    assert!(text.contains("1.00 GiB"), "{text}");

    // --json: the pages are joined into one document of the same shape.
    let output = node.cairn(&["--json", "swarm", "members", &id]);
    assert_code(&output, 0);
    assert_eq!(
        stdout_json(&output),
        json!({"members": [member(1, "present"), member(2, "present")], "next": null})
    );
}

#[test]
fn swarm_invite_join_revoke_leave() {
    let id = swarm_id();
    let (invite_text, invite_swarm) = invite();
    let target = peer(9);
    let node = FakeNode::start(vec![
        route(
            "POST",
            format!("/swarms/{id}/invites"),
            201,
            json!({"invite": invite_text}),
        ),
        route(
            "POST",
            format!("/swarms/{invite_swarm}/join"),
            200,
            json!({"swarmId": invite_swarm, "name": "photos", "role": "storer"}),
        ),
        route(
            "DELETE",
            format!("/swarms/{id}/members/{target}"),
            204,
            Value::Null,
        ),
        route(
            "POST",
            format!("/swarms/{id}/leave"),
            202,
            json!({"slotsToHandOff": 4, "state": "exiting"}),
        ),
    ]);

    // invite: the body, an RFC 3339 expiry about 30 days ahead, the invite alone on stdout.
    let output = node.cairn(&[
        "swarm",
        "invite",
        &id,
        "--peer",
        &target,
        "--admin",
        "--expires",
        "30d",
    ]);
    assert_code(&output, 0);
    assert_eq!(stdout(&output).trim(), invite_text);
    let body = node.only_request().json();
    assert_eq!(body["peerId"], json!(target));
    assert_eq!(body["admin"], json!(true));
    let expires = body["expiresAt"].as_str().expect("expiresAt");
    assert_eq!(expires.len(), 20, "{expires}");
    assert!(
        expires.ends_with('Z') && expires.as_bytes()[10] == b'T',
        "{expires}"
    );
    node.clear();
    let output = node.cairn(&["swarm", "invite", &id, "--peer", &target]);
    assert_code(&output, 0);
    assert_eq!(
        node.only_request().json(),
        json!({"peerId": target, "admin": false})
    );

    // join: the path names the invite's swarm; storer and quota.
    node.clear();
    let output = node.cairn(&["swarm", "join", &invite_text, "--quota", "20GiB"]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(request.path, format!("/swarms/{invite_swarm}/join"));
    assert_eq!(
        request.json(),
        json!({"invite": invite_text, "storer": true, "quotaBytes": 20u64 << 30})
    );
    assert_eq!(
        stdout(&output).trim(),
        format!("joined swarm photos ({invite_swarm}) as storer")
    );
    node.clear();
    let output = node.cairn(&["--json", "swarm", "join", &invite_text, "--light"]);
    assert_code(&output, 0);
    assert_eq!(
        node.only_request().json(),
        json!({"invite": invite_text, "storer": false})
    );
    assert_eq!(stdout_json(&output)["role"], json!("storer"));

    // revoke: DELETE, 204 without a body.
    node.clear();
    let output = node.cairn(&["swarm", "revoke", &id, &target]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(request.method, "DELETE");
    assert_eq!(request.path, format!("/swarms/{id}/members/{target}"));
    assert_eq!(
        stdout(&output).trim(),
        format!("revoked {target} from swarm {id}")
    );
    let output = node.cairn(&["swarm", "revoke", &id, &target, "--json"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout_json(&output),
        json!({"swarmId": id, "peerId": target, "revoked": true})
    );

    // leave: graceful unless --force.
    node.clear();
    let output = node.cairn(&["swarm", "leave", &id]);
    assert_code(&output, 0);
    assert_eq!(node.only_request().json(), json!({"graceful": true}));
    assert_eq!(
        stdout(&output).trim(),
        format!("leaving swarm {id}: 4 slots to hand off (state exiting)")
    );
    node.clear();
    let output = node.cairn(&["swarm", "leave", &id, "--force", "--json"]);
    assert_code(&output, 0);
    assert_eq!(node.only_request().json(), json!({"graceful": false}));
    assert_eq!(
        stdout_json(&output),
        json!({"slotsToHandOff": 4, "state": "exiting"})
    );
}

// ---------------------------------------------------------------------------------------------
// dataset

#[test]
fn dataset_add_streams_a_file_or_announces_a_cid() {
    let id = swarm_id();
    let added = json!({"datasetCid": cid(b"protected"), "contentCid": cid(b"plain"),
        "policy": {"kind": "erasure", "k": 4, "m": 2, "replicas": 0, "repairAtMissing": 1},
        "state": "placing"});
    let node = FakeNode::start(vec![route(
        "POST",
        format!("/swarms/{id}/datasets"),
        202,
        added.clone(),
    )]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("holiday photos.tar");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&file, &data).unwrap();
    let file_arg = file.to_str().unwrap();

    let output = node.cairn(&[
        "dataset",
        "add",
        &id,
        file_arg,
        "--policy",
        "erasure:4+2",
        "--retain",
        "30d",
    ]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(request.method, "POST");
    assert_eq!(request.path, format!("/swarms/{id}/datasets"));
    assert_eq!(
        request.header("content-type"),
        Some("application/octet-stream")
    );
    assert_eq!(request.query("filename"), Some("holiday photos.tar"));
    assert_eq!(request.query("policy"), Some("erasure:4+2"));
    assert_eq!(request.query("retain"), Some("30d"));
    assert!(request.body == data, "the uploaded bytes differ");
    let text = stdout(&output);
    assert!(
        text.contains(&format!("dataset  {}", cid(b"protected"))),
        "{text}"
    );
    assert!(
        text.contains(&format!("content  {}", cid(b"plain"))),
        "{text}"
    );
    assert!(
        text.contains("policy   erasure 4+2 (repair at 1 missing)"),
        "{text}"
    );
    assert!(text.contains("state    placing"), "{text}");

    // No policy or retention: only the filename.
    node.clear();
    let output = node.cairn(&["--json", "dataset", "add", &id, file_arg]);
    assert_code(&output, 0);
    assert_eq!(stdout_json(&output), added);
    let request = node.only_request();
    assert_eq!(
        request.query,
        [("filename".to_owned(), "holiday photos.tar".to_owned())]
    );

    // --cid: a JSON body with the policy in its JSON form and an RFC 3339 retainUntil.
    node.clear();
    let plain = cid(b"plain");
    let output = node.cairn(&[
        "dataset",
        "add",
        &id,
        "--cid",
        &plain,
        "--policy",
        "replicate:3",
        "--retain",
        "24h",
    ]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert!(request.query.is_empty(), "{:?}", request.query);
    let body = request.json();
    assert_eq!(body["cid"], json!(plain));
    assert_eq!(body["policy"], json!({"replicate": 3}));
    let until = body["retainUntil"].as_str().expect("retainUntil");
    assert!(until.len() == 20 && until.ends_with('Z'), "{until}");
    assert_eq!(body.as_object().unwrap().len(), 3, "{body}");

    for (policy, expected) in [
        ("auto", json!("auto")),
        ("none", json!("none")),
        ("erasure:10+10", json!({"erasure": {"k": 10, "m": 10}})),
    ] {
        node.clear();
        let output = node.cairn(&["dataset", "add", &id, "--cid", &plain, "--policy", policy]);
        assert_code(&output, 0);
        assert_eq!(
            node.only_request().json(),
            json!({"cid": plain, "policy": expected})
        );
    }
}

#[test]
fn dataset_list_repair_and_retire() {
    let id = swarm_id();
    let d = cid(b"d");
    let datasets = json!([{"datasetCid": d, "contentCid": d, "size": 2048,
        "policy": {"kind": "replicate", "k": 1, "m": 2, "replicas": 3, "repairAtMissing": 1},
        "announcer": peer(1), "announcedAt": "2025-06-01T10:00:00Z",
        "retainUntil": null, "state": "healthy"}]);
    let node = FakeNode::start(vec![
        route(
            "GET",
            format!("/swarms/{id}/datasets"),
            200,
            datasets.clone(),
        ),
        route(
            "POST",
            format!("/swarms/{id}/datasets/{d}/repair"),
            202,
            json!({"round": 3, "leader": peer(2), "missing": [1, 2], "state": "requested"}),
        ),
        route(
            "DELETE",
            format!("/swarms/{id}/datasets/{d}"),
            202,
            Value::Null,
        ),
    ]);

    let output = node.cairn(&["dataset", "list", &id]);
    assert_code(&output, 0);
    let text = stdout(&output);
    assert!(text.starts_with("DATASET"), "{text}");
    assert!(
        text.contains(&format!(
            "{d}  2.00 KiB  replicate 3 (repair at 1 missing)  healthy  -             {}",
            peer(1)
        )),
        "{text}"
    );
    assert_eq!(
        stdout_json(&node.cairn(&["dataset", "list", &id, "--json"])),
        datasets
    );

    node.clear();
    let output = node.cairn(&["dataset", "repair", &id, &d]);
    assert_code(&output, 0);
    assert_eq!(node.only_request().json(), json!({"force": false}));
    assert_eq!(
        stdout(&output).trim(),
        format!(
            "repair round 3 requested: leader {}, missing slots 1, 2",
            peer(2)
        )
    );
    node.clear();
    let output = node.cairn(&["dataset", "repair", &id, &d, "--force"]);
    assert_code(&output, 0);
    assert_eq!(node.only_request().json(), json!({"force": true}));

    node.clear();
    let output = node.cairn(&["dataset", "retire", &id, &d]);
    assert_code(&output, 0);
    let request = node.only_request();
    assert_eq!(
        (request.method.as_str(), request.path.clone()),
        ("DELETE", format!("/swarms/{id}/datasets/{d}"))
    );
    assert_eq!(
        stdout(&output).trim(),
        format!("retiring {d} from swarm {id}")
    );
    let output = node.cairn(&["dataset", "retire", &id, &d, "--json"]);
    assert_code(&output, 0);
    assert_eq!(
        stdout_json(&output),
        json!({"swarmId": id, "datasetCid": d, "retired": true})
    );
}

#[test]
fn health_and_verify_exit_with_the_state() {
    let id = swarm_id();
    let d = cid(b"d");
    let health = format!("/swarms/{id}/datasets/{d}/health");
    for (state, code) in [
        ("healthy", 0),
        ("unmanaged", 0),
        ("degraded", 3),
        ("critical", 3),
        ("lost", 4),
        ("confused", 1),
    ] {
        let mut verified = report(state);
        verified["verification"] = json!({"verifiedAt": "2025-06-01T10:01:00Z",
            "samplesPerSlot": 20, "passed": 2, "failed": [], "unreachable": [2],
            "maxUndetectedLoss99": 0.206});
        let node = FakeNode::start(vec![
            route("GET", health.clone(), 200, report(state)),
            route(
                "POST",
                format!("/swarms/{id}/datasets/{d}/verify"),
                200,
                verified.clone(),
            ),
        ]);

        let output = node.cairn(&["dataset", "health", &id, &d]);
        assert_code(&output, code);
        let request = node.only_request();
        assert_eq!(
            (request.method.as_str(), request.path.as_str()),
            ("GET", health.as_str())
        );
        assert!(request.query.is_empty());
        let text = stdout(&output);
        assert!(text.contains(&format!("state       {state}")), "{text}");
        assert!(
            text.contains("slots       3: 2 reachable, 0 suspect, 1 missing"),
            "{text}"
        );
        assert!(
            text.contains(&format!("2     {}  0    missing", peer(3))),
            "{text}"
        );
        if code == 1 {
            assert!(
                stderr(&output).contains("unknown health state"),
                "{}",
                stderr(&output)
            );
        }

        // --fresh and --json: the same exit code, the report as is.
        node.clear();
        let output = node.cairn(&["--json", "dataset", "health", &id, &d, "--fresh"]);
        assert_code(&output, code);
        assert_eq!(node.only_request().query("fresh"), Some("true"));
        assert_eq!(stdout_json(&output), report(state));

        node.clear();
        let output = node.cairn(&["dataset", "verify", &id, &d]);
        assert_code(&output, code);
        let request = node.only_request();
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, format!("/swarms/{id}/datasets/{d}/verify"));
        let text = stdout(&output);
        assert!(
            text.contains(
                "verified    at 2025-06-01T10:01:00Z: 2 passed, failed none, unreachable 2"
            ),
            "{text}"
        );
        let output = node.cairn(&["dataset", "verify", &id, &d, "--json"]);
        assert_code(&output, code);
        assert_eq!(stdout_json(&output), verified);
    }
}

// ---------------------------------------------------------------------------------------------
// errors

#[test]
fn node_errors_print_code_and_message_and_exit_1() {
    let id = swarm_id();
    let d = cid(b"d");
    let conflict = json!({"error": {"code": "conflict", "message": "a repair round is active"}});
    let node = FakeNode::start(vec![
        route(
            "POST",
            format!("/swarms/{id}/datasets/{d}/repair"),
            409,
            conflict.clone(),
        ),
        route(
            "GET",
            format!("/swarms/{id}/datasets/{d}/health"),
            503,
            json!({"error": {"code": "not_ready", "message": "syncing shard 3"}}),
        ),
        Route {
            method: "GET",
            path: "/swarms".into(),
            query: None,
            status: 500,
            body: "disk on fire".into(),
        },
    ]);

    let output = node.cairn(&["dataset", "repair", &id, &d]);
    assert_code(&output, 1);
    assert_eq!(
        stderr(&output).trim(),
        "error: conflict: a repair round is active"
    );
    assert!(output.stdout.is_empty());
    // With --json the error JSON is on stdout too.
    let output = node.cairn(&["dataset", "repair", &id, &d, "--json"]);
    assert_code(&output, 1);
    assert_eq!(stdout_json(&output), conflict);

    // A node error on health is 1, not a health state.
    let output = node.cairn(&["dataset", "health", &id, &d]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("error: not_ready: syncing shard 3"));

    // A body that is not the JSON error: status and text.
    let output = node.cairn(&["swarm", "list"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("500") && stderr(&output).contains("disk on fire"),
        "{}",
        stderr(&output)
    );

    // An unknown path answers the fake's JSON 404.
    let output = node.cairn(&["swarm", "show", &SwarmId([1; 32]).to_text()]);
    assert_code(&output, 1);
    assert!(stderr(&output).contains("error: no_route: "));
}

#[test]
fn an_unreachable_node_exits_1() {
    // Bind then drop a listener: the port is very likely closed afterwards.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("http://127.0.0.1:{port}");
    let output = run(&["--api", &api, "swarm", "list"]);
    assert_code(&output, 1);
    assert!(
        stderr(&output).contains("cannot reach the cairn node"),
        "{}",
        stderr(&output)
    );
    // The other commands keep their code 2 for this.
    assert_code(&run(&["--api", &api, "ls"]), 2);
}

#[test]
fn bad_arguments_exit_2_without_a_request() {
    let node = FakeNode::start(Vec::new());
    let id = swarm_id();
    let d = cid(b"d");
    let p = peer(1);
    let (invite_text, _) = invite();
    let long_name = "n".repeat(65);
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.bin");
    let missing = missing.to_str().unwrap();
    let present = dir.path().join("present.bin");
    std::fs::write(&present, b"x").unwrap();
    let present = present.to_str().unwrap();
    let dir_arg = dir.path().to_str().unwrap();

    let cases: Vec<Vec<&str>> = vec![
        // clap's own usage errors
        vec!["swarm"],
        vec!["swarm", "bogus"],
        vec!["swarm", "list", "--bogus"],
        vec!["swarm", "create"],
        vec!["swarm", "create", "x", "--announcers", "everyone"],
        vec!["swarm", "create", "x", "--expected-members", "-1"],
        vec!["swarm", "invite", &id],
        vec!["swarm", "join", &invite_text, "--light", "--quota", "1GiB"],
        vec!["dataset"],
        vec!["dataset", "add", &id],
        vec!["dataset", "add", &id, present, "--cid", &d],
        vec!["dataset", "health", &id],
        // checked by cairn
        vec!["swarm", "create", &long_name],
        vec!["swarm", "create", ""],
        vec!["swarm", "create", "x", "--policy", "replicate:3"],
        vec!["swarm", "create", "x", "--policy", "most"],
        vec!["swarm", "show", "photos"],
        vec!["swarm", "show", &d],
        vec!["swarm", "members", &id, "--state", "sleeping"],
        vec!["swarm", "invite", &id, "--peer", "12D3KooWnope"],
        vec!["swarm", "invite", &id, "--peer", &p, "--expires", "30"],
        vec!["swarm", "invite", &id, "--peer", &p, "--expires", "0d"],
        vec!["swarm", "invite", "zNope", "--peer", &p],
        vec!["swarm", "join", "not-an-invite"],
        vec!["swarm", "join", "cairn-invite:!!!"],
        vec!["swarm", "join", &invite_text, "--quota", "lots"],
        vec!["swarm", "join", &invite_text, "--quota", "0"],
        vec!["swarm", "revoke", &id, "bob"],
        vec!["swarm", "revoke", &d, &p],
        vec!["swarm", "leave", "x"],
        vec!["dataset", "add", &id, "--cid", "zNotACid"],
        vec![
            "dataset",
            "add",
            &id,
            "--cid",
            &d,
            "--policy",
            "replicate:0",
        ],
        vec![
            "dataset",
            "add",
            &id,
            "--cid",
            &d,
            "--policy",
            "replicate:17",
        ],
        vec![
            "dataset",
            "add",
            &id,
            "--cid",
            &d,
            "--policy",
            "erasure:1+3",
        ],
        vec![
            "dataset",
            "add",
            &id,
            "--cid",
            &d,
            "--policy",
            "erasure:40+40",
        ],
        vec![
            "dataset",
            "add",
            &id,
            "--cid",
            &d,
            "--policy",
            "erasure:4+0",
        ],
        vec!["dataset", "add", &id, "--cid", &d, "--retain", "forever"],
        vec!["dataset", "add", &id, missing],
        vec!["dataset", "add", &id, dir_arg],
        vec!["dataset", "add", &d, present],
        vec!["dataset", "list", "z"],
        vec!["dataset", "health", &id, "not-a-cid"],
        vec!["dataset", "health", &d, &d],
        vec!["dataset", "verify", &id, "Qm"],
        vec!["dataset", "repair", &id, ""],
        vec!["dataset", "retire", "", &d],
    ];
    for case in &cases {
        let output = node.cairn(case);
        assert_code(&output, 2);
        assert!(
            stderr(&output).contains("error"),
            "{case:?}: {}",
            stderr(&output)
        );
        assert!(node.requests().is_empty(), "{case:?} sent a request");
    }

    // A bad --api is a usage error for these commands too (64 for the others).
    assert_code(&run(&["--api", "ftp://h", "swarm", "list"]), 2);
    assert_code(&run(&["--api", "ftp://h", "ls"]), 64);
    // The other commands keep 64 for usage errors.
    assert_code(&run(&["ls", "--bogus"]), 64);
    // Help is not an error.
    assert_code(&run(&["swarm", "--help"]), 0);
    let help = stdout(&run(&["dataset", "health", "--help"]));
    assert!(help.contains("4   `dataset health` / `dataset verify`: the dataset is lost"));
}
