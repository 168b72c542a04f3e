//! The client subcommands: `upload`, `download`, `ls`, `rm`, `space`, `info`.

use std::{
    fs::File,
    io::{self, IsTerminal as _, Read, Write},
    path::{Path, PathBuf},
    str::FromStr,
};

use anyhow::{Context, anyhow};
use cairn_core::{BlockSize, Cid};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    client::Client,
    failure::{Failure, Outcome, eprint_line},
    size::{ByteSize, format_size},
};

/// Parses a CID locally, so a typo never reaches the node (exit 64).
pub(crate) fn parse_cid(text: &str) -> Outcome<Cid> {
    Cid::from_str(text).map_err(|e| Failure::usage(anyhow!("invalid CID {text:?}: {e}")))
}

/// Prints the node's JSON (pretty, one document) on stdout.
fn print_json(value: &Value) -> Outcome {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    print_stdout(&text)
}

/// Writes one line to stdout. A closed pipe (`cairn ls | head -1`) ends the output quietly.
fn print_stdout(text: &str) -> Outcome {
    let mut out = io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout").into())
        }
        _ => Ok(()),
    }
}

/// A byte progress bar on stderr, hidden when stderr is not a terminal or `hidden` is set.
fn progress_bar(len: Option<u64>, hidden: bool, message: &'static str) -> ProgressBar {
    if hidden || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let (bar, template) = match len {
        Some(len) => (
            ProgressBar::new(len),
            "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ),
        None => (
            ProgressBar::new_spinner(),
            "{spinner} {msg} {bytes} {bytes_per_sec}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(message);
    bar
}

/// Arguments of `cairn upload`.
#[derive(Debug, clap::Args)]
pub(crate) struct UploadArgs {
    /// The file to upload (streamed, never read whole into memory)
    #[arg(value_name = "FILE")]
    pub(crate) file: PathBuf,
    /// Content-Type to record in the manifest (none is sent by default)
    #[arg(long, value_name = "TYPE")]
    pub(crate) mime: Option<String>,
    /// Block size: a power of two from 4KiB to 512KiB, as bytes or a size like 64KiB [default:
    /// the node's, 64KiB]
    #[arg(long, value_name = "N")]
    pub(crate) block_size: Option<ByteSize>,
    /// Also erasure-code the upload with K data rows (needs --m); prints the protected CID
    #[arg(long, value_name = "K", requires = "m")]
    pub(crate) k: Option<u32>,
    /// Parity rows M of the erasure code (needs --k)
    #[arg(long, value_name = "M", requires = "k")]
    pub(crate) m: Option<u32>,
}

/// `cairn upload FILE`: prints the manifest CID.
pub(crate) fn upload(client: &Client, args: &UploadArgs, json: bool) -> Outcome {
    let block_size = args
        .block_size
        .map(|size| BlockSize::new(size.0).map_err(Failure::usage))
        .transpose()?;
    let path = &args.file;
    let (file, len) = open_upload_file(path)?;

    let mut headers = Vec::new();
    if let Some(name) = path.file_name() {
        headers.push((
            "Content-Disposition",
            content_disposition(&name.to_string_lossy()),
        ));
    }
    if let Some(mime) = &args.mime {
        headers.push(("Content-Type", mime.clone()));
    }
    let mut query: Vec<(&str, String)> = block_size
        .map(|b| ("blockSize", b.get().to_string()))
        .into_iter()
        .collect();
    if let (Some(k), Some(m)) = (args.k, args.m) {
        check_erasure_params(k, m)?;
        query.push(("k", k.to_string()));
        query.push(("m", m.to_string()));
    }

    let bar = progress_bar(Some(len), json, "uploading");
    let mut body = bar.wrap_read(file);
    let answer = client.post_stream("/data", &query, &headers, &mut body, len);
    bar.finish_and_clear();
    let answer = answer?;
    let cid = answer.trim();
    Cid::from_str(cid)
        .with_context(|| format!("the node answered with something that is not a CID: {cid:?}"))?;
    if json {
        print_json(&json!({ "cid": cid }))
    } else {
        print_stdout(cid)
    }
}

/// Opens a regular file to upload; a missing or odd file is a usage error.
pub(crate) fn open_upload_file(path: &Path) -> Outcome<(File, u64)> {
    let file = File::open(path)
        .with_context(|| format!("cannot open {}", path.display()))
        .map_err(Failure::usage)?;
    let metadata = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(Failure::usage)?;
    if !metadata.is_file() {
        return Err(Failure::usage(anyhow!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok((file, metadata.len()))
}

/// `attachment; filename="name"`, or the RFC 5987 form when `name` is not plain printable ASCII.
fn content_disposition(name: &str) -> String {
    let plain = name
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
    if plain {
        return format!("attachment; filename=\"{name}\"");
    }
    let mut encoded = String::new();
    for byte in name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("attachment; filename*=UTF-8''{encoded}")
}

/// Arguments of `cairn download`.
#[derive(Debug, clap::Args)]
pub(crate) struct DownloadArgs {
    /// The dataset's manifest CID
    #[arg(value_name = "CID")]
    pub(crate) cid: String,
    /// Write to FILE (replaced only once the download is complete) instead of stdout
    #[arg(short, long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

/// `cairn download CID [-o FILE]`, fetching from the network as needed.
pub(crate) fn download(client: &Client, args: &DownloadArgs, json: bool) -> Outcome {
    let cid = parse_cid(&args.cid)?;
    let output = args.output.as_deref().filter(|p| *p != Path::new("-"));
    // The temporary file is created before asking the node, so a bad path fails fast. It is
    // deleted on drop: only a complete download is renamed into place.
    let temp = output.map(temp_file_beside).transpose()?;

    let response = client.get_stream(&format!("/data/{cid}/network/stream"))?;
    let expected = response.body().content_length();
    let bar = progress_bar(expected, json, "downloading");
    let mut body = bar.wrap_read(response.into_body().into_reader());

    let copied = match (&temp, output) {
        (Some(temp), Some(path)) => {
            let mut file = io::BufWriter::with_capacity(256 * 1024, temp.as_file());
            let copied = copy(&mut body, &mut file).map_err(|e| e.into_failure(path))?;
            file.flush()
                .and_then(|()| temp.as_file().sync_all())
                .with_context(|| format!("writing {}", path.display()))?;
            copied
        }
        _ => {
            let mut out = io::stdout().lock();
            let copied = copy(&mut body, &mut out);
            match copied.and_then(|n| out.flush().map(|()| n).map_err(CopyError::Write)) {
                Ok(n) => n,
                // Whoever reads our stdout has gone (`cairn download … | head -c 100`).
                Err(CopyError::Write(e)) if e.kind() == io::ErrorKind::BrokenPipe => {
                    bar.finish_and_clear();
                    return Ok(());
                }
                Err(e) => return Err(e.into_failure(Path::new("stdout"))),
            }
        }
    };
    bar.finish_and_clear();
    if let Some(expected) = expected.filter(|e| *e != copied) {
        return Err(anyhow!(
            "the download broke off after {copied} of {expected} bytes (the node closed the \
             connection)"
        )
        .into());
    }

    if let (Some(temp), Some(path)) = (temp, output) {
        temp.persist(path)
            .with_context(|| format!("moving the download into place at {}", path.display()))?;
        if json {
            print_json(&json!({ "cid": cid.to_string(), "path": path, "bytes": copied }))?;
        } else {
            eprint_line(&format!(
                "wrote {} to {}",
                format_size(copied),
                path.display()
            ));
        }
    }
    Ok(())
}

/// A temporary file in the directory of `path`, to be renamed onto it.
fn temp_file_beside(path: &Path) -> Outcome<tempfile::NamedTempFile> {
    if path.is_dir() {
        return Err(Failure::usage(anyhow!(
            "{} is a directory; give a file name",
            path.display()
        )));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut builder = tempfile::Builder::new();
    builder.prefix(".cairn-download-").suffix(".part");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // Like a normally created file: 0666 minus the umask (tempfile's default is 0600).
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder.tempfile_in(dir).map_err(|e| {
        let missing = e.kind() == io::ErrorKind::NotFound;
        let err =
            anyhow::Error::new(e).context(format!("cannot create a file in {}", dir.display()));
        if missing {
            Failure::usage(err)
        } else {
            err.into()
        }
    })
}

/// Why [`copy`] stopped.
#[derive(Debug)]
enum CopyError {
    /// Receiving from the node failed after `copied` bytes.
    Read { copied: u64, error: io::Error },
    /// Writing the output failed.
    Write(io::Error),
}

impl CopyError {
    fn into_failure(self, to_name: &Path) -> Failure {
        match self {
            CopyError::Read { copied, error } => anyhow::Error::new(error)
                .context(format!("the download broke off after {copied} bytes"))
                .into(),
            CopyError::Write(error) => anyhow::Error::new(error)
                .context(format!("writing to {}", to_name.display()))
                .into(),
        }
    }
}

/// Copies `from` (the node) into `to`, telling read errors from write errors.
fn copy(from: &mut dyn Read, to: &mut dyn Write) -> Result<u64, CopyError> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut copied = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(CopyError::Read { copied, error }),
        };
        to.write_all(&buf[..n]).map_err(CopyError::Write)?;
        copied += n as u64;
    }
}

/// `GET /data`'s answer.
#[derive(Debug, Deserialize)]
struct DataList {
    content: Vec<DataItem>,
}

#[derive(Debug, Deserialize)]
struct DataItem {
    cid: String,
    manifest: ManifestItem,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestItem {
    dataset_size: u64,
    block_size: u64,
    filename: Option<String>,
    mimetype: Option<String>,
    #[serde(default)]
    protected: bool,
    ec_k: Option<u64>,
    ec_m: Option<u64>,
    original_dataset_size: Option<u64>,
}

/// `cairn ls`: the datasets stored on the node.
pub(crate) fn ls(client: &Client, json: bool) -> Outcome {
    let value = client.get_json("/data")?;
    if json {
        return print_json(&value);
    }
    let list: DataList =
        serde_json::from_value(value).context("the node's dataset list has an unexpected shape")?;
    print_stdout(&ls_table(&list).join("\n"))
}

fn ls_table(list: &DataList) -> Vec<String> {
    if list.content.is_empty() {
        return vec!["no datasets stored on this node".to_owned()];
    }
    let rows: Vec<[String; 5]> = list
        .content
        .iter()
        .map(|item| {
            let m = &item.manifest;
            let size = format_size(m.original_dataset_size.unwrap_or(m.dataset_size));
            let mut kind = format_size(m.block_size);
            if m.protected {
                match (m.ec_k, m.ec_m) {
                    (Some(k), Some(m)) => kind.push_str(&format!(", ec {k}+{m}")),
                    _ => kind.push_str(", protected"),
                }
            }
            [
                item.cid.clone(),
                size,
                kind,
                m.filename.clone().unwrap_or_else(|| "-".into()),
                m.mimetype.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["CID", "SIZE", "BLOCKS", "FILENAME", "MIMETYPE"].map(String::from);
    let mut widths = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    std::iter::once(&header)
        .chain(&rows)
        .map(|row| {
            let cells: Vec<String> = row
                .iter()
                .zip(widths)
                .map(|(cell, width)| format!("{cell:<width$}"))
                .collect();
            cells.join("  ").trim_end().to_owned()
        })
        .collect()
}

/// `cairn rm CID`.
pub(crate) fn rm(client: &Client, cid: &str, json: bool) -> Outcome {
    let cid = parse_cid(cid)?;
    client.delete(&format!("/data/{cid}"))?;
    if json {
        print_json(&json!({ "cid": cid.to_string(), "deleted": true }))
    } else {
        print_stdout(&format!("deleted {cid}"))
    }
}

/// `GET /space`'s answer.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Space {
    total_blocks: u64,
    quota_max_bytes: u64,
    quota_used_bytes: u64,
    #[serde(default)]
    quota_reserved_bytes: u64,
}

/// `cairn space`: storage use.
pub(crate) fn space(client: &Client, json: bool) -> Outcome {
    let value = client.get_json("/space")?;
    if json {
        return print_json(&value);
    }
    let space: Space = serde_json::from_value(value)
        .context("the node's space summary has an unexpected shape")?;
    print_stdout(&space_text(&space))
}

fn space_text(space: &Space) -> String {
    let bytes = |n: u64| format!("{} ({n} bytes)", format_size(n));
    let free = space
        .quota_max_bytes
        .saturating_sub(space.quota_used_bytes)
        .saturating_sub(space.quota_reserved_bytes);
    let percent = if space.quota_max_bytes == 0 {
        0.0
    } else {
        space.quota_used_bytes as f64 * 100.0 / space.quota_max_bytes as f64
    };
    format!(
        "blocks:    {}\nquota:     {}\nused:      {} {percent:.1}%\nreserved:  {}\nfree:      {}",
        space.total_blocks,
        bytes(space.quota_max_bytes),
        bytes(space.quota_used_bytes),
        bytes(space.quota_reserved_bytes),
        bytes(free),
    )
}

/// `cairn info`: the node's identity and addresses.
pub(crate) fn info(client: &Client, json: bool) -> Outcome {
    let value = client.get_json("/debug/info")?;
    if json {
        return print_json(&value);
    }
    print_stdout(&info_text(&value))
}

fn info_text(info: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut lines = Vec::new();
    let mut field = |name: &str, value: Option<String>| {
        if let Some(value) = value {
            lines.push(format!("{name:<13}{value}"));
        }
    };
    field("peer id:", text(&info["id"]));
    let version = text(&info["storage"]["version"]).map(|v| {
        match text(&info["storage"]["revision"]).filter(|r| !r.is_empty()) {
            Some(rev) => format!("{v} ({rev})"),
            None => v,
        }
    });
    field("version:", version);
    field("data dir:", text(&info["repo"]));
    let addrs = list(&info["addrs"]);
    field(
        "addresses:",
        Some(if addrs.is_empty() {
            "(none)".to_owned()
        } else {
            addrs.join(", ")
        }),
    );
    let announce = list(&info["announceAddresses"]);
    if !announce.is_empty() {
        field("announced:", Some(announce.join(", ")));
    }
    field(
        "connections:",
        info["connections"].as_array().map(|c| c.len().to_string()),
    );
    field(
        "peers known:",
        info["table"]["nodes"]
            .as_array()
            .map(|n| n.len().to_string()),
    );
    field("spr:", text(&info["spr"]).filter(|s| !s.is_empty()));
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failure::Code;

    #[test]
    fn cids_are_checked_locally() {
        let cid = Cid::of_block(b"hello").to_string();
        assert_eq!(parse_cid(&cid).unwrap().to_string(), cid);
        for bad in [
            "",
            "not-a-cid",
            "zzzz",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            &cid[..20],
        ] {
            let err = parse_cid(bad).unwrap_err();
            assert_eq!(err.code, Code::Usage, "{bad}");
            assert!(
                format!("{:#}", err.error).starts_with("invalid CID"),
                "{bad}"
            );
        }
    }

    #[test]
    fn content_disposition_forms() {
        assert_eq!(
            content_disposition("photo 1.jpg"),
            "attachment; filename=\"photo 1.jpg\""
        );
        assert_eq!(
            content_disposition("été.txt"),
            "attachment; filename*=UTF-8''%C3%A9t%C3%A9.txt"
        );
        assert_eq!(
            content_disposition("a\"b"),
            "attachment; filename*=UTF-8''a%22b"
        );
    }

    #[test]
    fn ls_table_layout() {
        let list: DataList = serde_json::from_value(json!({"content": [
            {"cid": "zA", "manifest": {"treeCid": "zT", "datasetSize": 18, "blockSize": 65536,
             "filename": "a.txt", "mimetype": null, "protected": false}},
            {"cid": "zBBBBB", "manifest": {"treeCid": "zT", "datasetSize": 4096, "blockSize": 4096,
             "filename": null, "mimetype": "text/plain", "protected": true, "ecK": 4, "ecM": 2,
             "originalDatasetSize": 3000}}
        ]}))
        .unwrap();
        assert_eq!(
            ls_table(&list),
            [
                "CID     SIZE      BLOCKS            FILENAME  MIMETYPE",
                "zA      18 B      64.0 KiB          a.txt     -",
                "zBBBBB  2.93 KiB  4.00 KiB, ec 4+2  -         text/plain",
            ]
            .map(String::from)
        );
        let empty: DataList = serde_json::from_value(json!({"content": []})).unwrap();
        assert_eq!(ls_table(&empty), ["no datasets stored on this node"]);
    }

    #[test]
    fn space_layout() {
        let space: Space = serde_json::from_value(json!({"totalBlocks": 3, "quotaMaxBytes": 1000,
            "quotaUsedBytes": 250, "quotaReservedBytes": 0}))
        .unwrap();
        let text = space_text(&space);
        assert!(text.contains("blocks:    3"), "{text}");
        assert!(
            text.contains("used:      250 B (250 bytes) 25.0%"),
            "{text}"
        );
        assert!(text.contains("free:      750 B (750 bytes)"), "{text}");
    }

    #[test]
    fn info_layout() {
        let text = info_text(&json!({"id": "12D3KooW", "addrs": [], "spr": "spr:abc",
            "repo": "/data", "storage": {"version": "v0.1.0", "revision": "abc1234"},
            "connections": [], "table": {"nodes": []}}));
        assert_eq!(
            text,
            "peer id:     12D3KooW\nversion:     v0.1.0 (abc1234)\ndata dir:    /data\n\
             addresses:   (none)\nconnections: 0\npeers known: 0\nspr:         spr:abc"
        );
    }
}

/// Splits `…/p2p/<id>` into the peer id and the address before it; a bare peer id has none.
fn split_peer_addr(addr: &str) -> Result<(String, Option<String>), Failure> {
    let addr = addr.trim();
    if !addr.starts_with('/') {
        if addr.is_empty() || !addr.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(Failure::usage(anyhow::anyhow!(
                "'{addr}' is neither a multiaddr nor a peer id"
            )));
        }
        return Ok((addr.to_owned(), None));
    }
    let Some((base, peer)) = addr.rsplit_once("/p2p/") else {
        return Err(Failure::usage(anyhow::anyhow!(
            "the address '{addr}' must end with /p2p/<peer id>"
        )));
    };
    if peer.is_empty() || peer.contains('/') {
        return Err(Failure::usage(anyhow::anyhow!(
            "the address '{addr}' must end with /p2p/<peer id>"
        )));
    }
    Ok((peer.to_owned(), (!base.is_empty()).then(|| base.to_owned())))
}

/// Percent-encodes a query value (multiaddrs hold `/`).
fn query_escape(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `cairn connect ADDR`.
pub(crate) fn connect(client: &Client, addr: &str, json: bool) -> Outcome {
    let (peer, base) = split_peer_addr(addr)?;
    let mut path = format!("/connect/{peer}");
    if let Some(base) = base {
        path.push_str(&format!("?addrs={}", query_escape(&base)));
    }
    let text = client.get_text(&path, std::time::Duration::from_secs(60))?;
    if json {
        print_json(&json!({ "peerId": peer, "connected": true }))
    } else {
        print_stdout(&format!("{} ({peer})", text.trim()))
    }
}

/// `cairn peers`.
pub(crate) fn peers(client: &Client, json: bool) -> Outcome {
    let info = client.get_json("/debug/info")?;
    let nodes = info["table"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if json {
        return print_json(&Value::Array(nodes));
    }
    if nodes.is_empty() {
        return print_stdout("no connected peers");
    }
    let lines: Vec<String> = nodes
        .iter()
        .map(|n| {
            let addrs: Vec<&str> = n["addresses"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            format!(
                "{}  {}",
                n["peerId"].as_str().unwrap_or("?"),
                if addrs.is_empty() {
                    "(no address)".to_owned()
                } else {
                    addrs.join(", ")
                }
            )
        })
        .collect();
    print_stdout(&lines.join("\n"))
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    #[test]
    fn peer_addresses() {
        let (peer, base) =
            split_peer_addr("/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWabc").expect("valid");
        assert_eq!(peer, "12D3KooWabc");
        assert_eq!(base.as_deref(), Some("/ip4/127.0.0.1/tcp/4001"));
        assert_eq!(split_peer_addr("12D3KooWabc").expect("bare").1, None);
        assert!(split_peer_addr("/ip4/127.0.0.1/tcp/4001").is_err());
        assert!(split_peer_addr("not a peer").is_err());
        assert_eq!(query_escape("/ip4/1.2.3.4"), "%2Fip4%2F1.2.3.4");
    }
}

/// The bounds of `wire.md` §4.1, checked before anything is sent (exit 64).
fn check_erasure_params(k: u32, m: u32) -> Outcome {
    if k < 2 || m < 1 || u64::from(k) + u64::from(m) > 1024 {
        return Err(Failure::usage(anyhow!(
            "k and m must satisfy 2 <= k, 1 <= m, k + m <= 1024 (got k = {k}, m = {m})"
        )));
    }
    Ok(())
}

/// Arguments of `cairn protect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProtectArgs {
    /// The manifest CID of a dataset stored on the node
    #[arg(value_name = "CID")]
    pub(crate) cid: String,
    /// Data rows K (any K of the K + M rows rebuild the dataset)
    #[arg(long, value_name = "K")]
    pub(crate) k: u32,
    /// Parity rows M (how many rows may be lost)
    #[arg(long, value_name = "M")]
    pub(crate) m: u32,
}

/// How often `cairn protect` polls its job.
const PROTECT_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// `cairn protect CID --k K --m M`: runs the node's protect job with a progress bar and prints
/// the protected manifest CID (with `--json`, the protected dataset's item).
pub(crate) fn protect(client: &Client, args: &ProtectArgs, json: bool) -> Outcome {
    let cid = parse_cid(&args.cid)?;
    check_erasure_params(args.k, args.m)?;
    let query = [
        ("k", args.k.to_string()),
        ("m", args.m.to_string()),
        ("async", "true".to_owned()),
    ];
    let started = client.post_json(&format!("/data/{cid}/protect"), &query)?;
    let job = started["jobId"]
        .as_str()
        .ok_or_else(|| anyhow!("the node did not answer with a job id: {started}"))?
        .to_owned();
    let bar = if json || !io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(0);
        let style =
            ProgressStyle::with_template("{msg} [{wide_bar}] {pos}/{len} columns eta {eta}")
                .map(|s| s.progress_chars("=> "))
                .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.set_message("protecting");
        bar
    };
    let path = format!("/data/{cid}/protect/{job}");
    let outcome = loop {
        let state = client.get_json(&path)?;
        bar.set_length(state["total"].as_u64().unwrap_or(0));
        bar.set_position(state["done"].as_u64().unwrap_or(0));
        if state["active"] == Value::Bool(false) {
            break state;
        }
        std::thread::sleep(PROTECT_POLL);
    };
    bar.finish_and_clear();
    if let Some(error) = outcome["error"].as_str() {
        return Err(anyhow!("protecting {cid} failed: {error}").into());
    }
    let protected = outcome["cid"]
        .as_str()
        .ok_or_else(|| anyhow!("the job ended without a CID: {outcome}"))?
        .to_owned();
    if json {
        let item = client.get_json(&format!("/data/{protected}/network/manifest"))?;
        print_json(&item)
    } else {
        print_stdout(&protected)
    }
}
