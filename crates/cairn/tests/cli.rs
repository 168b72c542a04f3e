//! Runs the built `cairn` binary: exit codes of the error paths, and an end-to-end session
//! against a node started with `cairn start`.

use std::{
    io::{BufRead, BufReader, Read},
    net::TcpListener,
    path::Path,
    process::{Child, Command, Output, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread,
    time::{Duration, Instant},
};

const BIN: &str = env!("CARGO_BIN_EXE_cairn");
/// Any single client command must finish within this.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// The node must print its API address within this.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// The node must exit after SIGTERM within this.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// `cairn` with no `CAIRN_*` variables inherited from the test's environment.
fn cairn() -> Command {
    let mut command = Command::new(BIN);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CAIRN_") {
            command.env_remove(name);
        }
    }
    command
}

/// Drains a pipe on a thread, so a chatty child never blocks on a full pipe.
fn drain(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Runs `command` to completion, killing it (and failing) after `COMMAND_TIMEOUT`.
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cairn");
    let stdout = drain(child.stdout.take().unwrap());
    let stderr = drain(child.stderr.take().unwrap());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{command:?} did not finish within {COMMAND_TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing the output when it differs.
#[track_caller]
fn assert_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "stdout: {}\nstderr: {}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// A local port with no listener (bound, then released).
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn unreachable_node_exits_2_with_a_hint() {
    let api = format!("http://127.0.0.1:{}", closed_port());
    let output = run(cairn().args(["ls", "--api", &api]));
    assert_code(&output, 2);
    let stderr = text(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "error: cannot reach the cairn node at {api} (is it running? start one with \"cairn start\")"
        )),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());

    // The same for the other client commands, and with the address from CAIRN_API.
    for args in [&["space"][..], &["info", "--json"], &["upload", BIN]] {
        let output = run(cairn().args(args).env("CAIRN_API", &api));
        assert_code(&output, 2);
    }
}

#[test]
fn missing_upload_file_exits_64() {
    let api = format!("http://127.0.0.1:{}", closed_port());
    let output = run(cairn().args(["upload", "/nonexistent", "--api", &api]));
    assert_code(&output, 64);
    assert!(text(&output.stderr).contains("/nonexistent"));
}

#[test]
fn malformed_cids_exit_64_without_asking_the_node() {
    // The node address is unreachable: a 64 proves the CID was refused locally.
    let api = format!("http://127.0.0.1:{}", closed_port());
    for args in [
        &["download", "not-a-cid"][..],
        &["rm", "zzzz"],
        &["download", "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"],
    ] {
        let output = run(cairn().args(args).args(["--api", &api]));
        assert_code(&output, 64);
        assert!(text(&output.stderr).contains("invalid CID"), "{args:?}");
    }
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [
        &["--no-such-flag"][..],
        &["no-such-command"],
        &[],
        &["download"],
        &["start", "--api-port", "http"],
        &["start", "--storage-quota", "lots"],
        &["ls", "--api", "https://127.0.0.1:1"],
        &["upload", "--block-size", "1000", BIN],
    ] {
        let output = run(cairn().args(args));
        assert_code(&output, 64);
    }
    let output = run(cairn().env("CAIRN_API_PORT", "eighty").arg("start"));
    assert_code(&output, 64);
    assert!(text(&output.stderr).contains("CAIRN_API_PORT"));

    let output = run(cairn().arg("--help"));
    assert_code(&output, 0);
    let help = text(&output.stdout);
    assert!(
        help.contains("Exit codes:") && help.contains("64"),
        "{help}"
    );
    let output = run(cairn().args(["start", "--help"]));
    assert_code(&output, 0);
    assert!(text(&output.stdout).contains("CAIRN_STORAGE_QUOTA"));
}

/// A `cairn start` child, killed on drop if the test did not stop it.
struct NodeProcess {
    child: Child,
    stderr: Arc<Mutex<Vec<u8>>>,
    api: String,
}

impl NodeProcess {
    fn start(data_dir: &Path) -> NodeProcess {
        let mut child = cairn()
            .args(["start", "--api-port", "0", "--log-level", "info"])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cairn start");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        {
            let mut pipe = child.stderr.take().unwrap();
            let stderr = stderr.clone();
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = pipe.read(&mut buf) {
                    stderr.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        let (lines_tx, lines_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut node = NodeProcess {
            child,
            stderr,
            api: String::new(),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let mut seen = Vec::new();
        while node.api.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("REST API: ") {
                        node.api = url.trim().to_owned();
                    }
                    seen.push(line);
                }
                Err(_) => panic!(
                    "no \"REST API:\" line within {START_TIMEOUT:?}; stdout: {seen:?}; stderr: {}",
                    node.logs()
                ),
            }
        }
        assert!(
            seen.iter().any(|l| l.starts_with("peer id: 12D3")),
            "{seen:?}"
        );
        assert!(node.api.starts_with("http://127.0.0.1:"), "{}", node.api);
        assert!(node.api.ends_with("/api/storage/v1"), "{}", node.api);
        node
    }

    fn logs(&self) -> String {
        text(&self.stderr.lock().unwrap())
    }

    /// Runs a client command against this node.
    fn client(&self, args: &[&str]) -> Output {
        run(cairn().args(args).args(["--api", &self.api]))
    }

    /// Sends SIGTERM and waits (bounded) for a clean exit.
    fn terminate(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .is_ok_and(|s| s.success());
        if !sent {
            // No `kill` program: stop it the hard way (the Drop below does).
            return;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "exit {status:?} after SIGTERM: {}",
                    self.logs()
                );
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no exit within {STOP_TIMEOUT:?} of SIGTERM: {}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Deterministic, non-repeating test bytes.
fn test_bytes(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn end_to_end_upload_ls_download_rm() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"));

    // upload (several blocks at a 64 KiB block size)
    let data = test_bytes(300_000);
    let file = dir.path().join("report.bin");
    std::fs::write(&file, &data).unwrap();
    let file_arg = file.to_str().unwrap();
    let output = node.client(&["upload", file_arg, "--block-size", "64KiB"]);
    assert_code(&output, 0);
    let cid = text(&output.stdout).trim().to_owned();
    assert!(cid.starts_with('z'), "{cid}");

    // the same upload with --json gives the same CID
    let output = node.client(&["upload", file_arg, "--json"]);
    assert_code(&output, 0);
    let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json["cid"], cid.as_str());

    // ls, as JSON and as a table
    let output = node.client(&["ls", "--json"]);
    assert_code(&output, 0);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let items = list["content"].as_array().unwrap();
    let item = items
        .iter()
        .find(|i| i["cid"] == cid.as_str())
        .unwrap_or_else(|| panic!("{cid} not in {list}"));
    assert_eq!(item["manifest"]["datasetSize"], 300_000);
    assert_eq!(item["manifest"]["filename"], "report.bin");
    assert_eq!(item["manifest"]["mimetype"], serde_json::Value::Null);
    let output = node.client(&["ls"]);
    assert_code(&output, 0);
    let table = text(&output.stdout);
    assert!(table.starts_with("CID"), "{table}");
    assert!(
        table.contains(&cid) && table.contains("report.bin"),
        "{table}"
    );

    // download to a file, and to stdout
    let target = dir.path().join("out").join("copy.bin");
    std::fs::create_dir(target.parent().unwrap()).unwrap();
    let output = node.client(&["download", &cid, "-o", target.to_str().unwrap()]);
    assert_code(&output, 0);
    assert!(
        std::fs::read(&target).unwrap() == data,
        "downloaded bytes differ"
    );
    let leftovers: Vec<_> = std::fs::read_dir(target.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [std::ffi::OsString::from("copy.bin")]);
    let output = node.client(&["download", &cid]);
    assert_code(&output, 0);
    assert!(output.stdout == data, "bytes on stdout differ");

    // space and info
    let output = node.client(&["space", "--json"]);
    assert_code(&output, 0);
    let space: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        space["quotaUsedBytes"].as_u64().unwrap() >= 300_000,
        "{space}"
    );
    assert_code(&node.client(&["space"]), 0);
    let output = node.client(&["info", "--json"]);
    assert_code(&output, 0);
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(info["id"].as_str().unwrap().starts_with("12D3"), "{info}");
    assert_code(&node.client(&["info"]), 0);

    // rm, then the dataset is gone and downloading it is a node error (exit 1)
    let output = node.client(&["rm", &cid]);
    assert_code(&output, 0);
    let output = node.client(&["ls", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert!(
        !list["content"]
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["cid"] == cid.as_str()),
        "{list}"
    );
    let missing = dir.path().join("missing.bin");
    let output = node.client(&["download", &cid, "-o", missing.to_str().unwrap()]);
    assert_code(&output, 1);
    assert!(
        text(&output.stderr).contains("the node answered 404"),
        "{}",
        text(&output.stderr)
    );
    assert!(!missing.exists(), "a failed download left a file");

    // node errors carry the status and message: an empty upload
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let output = node.client(&["upload", empty.to_str().unwrap()]);
    assert_code(&output, 1);
    assert!(
        text(&output.stderr).contains("400 Bad Request: Cannot upload an empty file"),
        "{}",
        text(&output.stderr)
    );

    node.terminate();
}

#[test]
fn protect_and_upload_with_erasure_coding() {
    let dir = tempfile::tempdir().unwrap();
    let node = NodeProcess::start(&dir.path().join("node"));
    let data = test_bytes(500_000);
    let file = dir.path().join("archive.bin");
    std::fs::write(&file, &data).unwrap();
    let file_arg = file.to_str().unwrap();
    let output = node.client(&["upload", file_arg]);
    assert_code(&output, 0);
    let cid = text(&output.stdout).trim().to_owned();

    // protect prints the protected CID; --json prints its item
    let output = node.client(&["protect", &cid, "--k", "3", "--m", "2"]);
    assert_code(&output, 0);
    let protected = text(&output.stdout).trim().to_owned();
    assert!(
        protected.starts_with('z') && protected != cid,
        "{protected}"
    );
    let output = node.client(&["protect", &cid, "--k", "3", "--m", "2", "--json"]);
    assert_code(&output, 0);
    let item: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(item["cid"], protected.as_str());
    assert_eq!(item["manifest"]["protected"], true);
    assert_eq!(item["manifest"]["ecK"], 3);

    // the protected dataset downloads as the original bytes
    let output = node.client(&["download", &protected]);
    assert_code(&output, 0);
    assert!(output.stdout == data, "bytes differ");

    // upload --k --m gives the same protected CID
    let output = node.client(&["upload", file_arg, "--k", "3", "--m", "2"]);
    assert_code(&output, 0);
    assert_eq!(text(&output.stdout).trim(), protected);

    // bad parameters are usage errors; protecting twice is a node error
    let output = node.client(&["protect", &cid, "--k", "1", "--m", "2"]);
    assert_code(&output, 64);
    assert!(
        text(&output.stderr).contains("2 <= k"),
        "{}",
        text(&output.stderr)
    );
    let output = node.client(&["upload", file_arg, "--k", "3"]);
    assert_code(&output, 64);
    let output = node.client(&["protect", &protected, "--k", "2", "--m", "1"]);
    assert_code(&output, 1);
    assert!(
        text(&output.stderr).contains("409") && text(&output.stderr).contains("already protected"),
        "{}",
        text(&output.stderr)
    );
    node.terminate();
}
