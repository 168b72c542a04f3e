//! A blocking REST client for a running node (`rest-api.md`), with errors classified into exit
//! codes: unreachable (2), the node answered with an error (1), bad input (64).

use std::{fmt, io::Read, time::Duration};

use anyhow::{Context, anyhow};
use ureq::{
    Agent, Body,
    http::{Response, StatusCode, Uri},
};

use crate::failure::{Failure, Outcome};

/// The primary API base path.
pub(crate) const API_BASE: &str = "/api/storage/v1";
/// The Gen-1 alias, accepted in `--api` too.
const CODEX_BASE: &str = "/api/codex/v1";

/// Default `--api`.
pub(crate) const DEFAULT_API: &str = "http://127.0.0.1:8080";

/// Connecting to the node takes at most this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Small JSON requests (`ls`, `space`, `info`, `rm`) take at most this long in all.
const SHORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Error bodies are read up to this size.
const ERROR_BODY_LIMIT: u64 = 64 * 1024;

/// The node answered with a non-success status.
#[derive(Debug)]
pub(crate) struct NodeAnswer {
    pub(crate) status: StatusCode,
    pub(crate) message: String,
}

impl fmt::Display for NodeAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the node answered {}", self.status)?;
        if !self.message.is_empty() {
            write!(f, ": {}", self.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for NodeAnswer {}

impl NodeAnswer {
    /// The error body as JSON, when it is JSON.
    pub(crate) fn body_json(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.message).ok()
    }

    /// `(code, message)` of a JSON error body `{"error":{"code":"…","message":"…"}}`
    /// (durability.md §17).
    pub(crate) fn api_error(&self) -> Option<(String, String)> {
        let body = self.body_json()?;
        let error = body.get("error")?;
        let code = error.get("code")?.as_str()?.to_owned();
        let message = error
            .get("message")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        Some((code, message))
    }
}

/// A connection to one node's REST API.
#[derive(Debug)]
pub(crate) struct Client {
    /// `http://host:port[/prefix]/api/storage/v1`.
    base: String,
    /// The node's address as the user should see it in messages.
    shown: String,
    agent: Agent,
}

impl Client {
    /// A client for `api`: `http://host:port`, optionally with a path prefix or the API base path.
    /// A bare `host:port` means `http://host:port`.
    pub(crate) fn new(api: &str) -> Outcome<Client> {
        let (base, shown) = api_base(api).map_err(Failure::usage)?;
        let config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .user_agent(format!("cairn/{}", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Client {
            base,
            shown,
            agent: config.into(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `GET path`, answered with JSON.
    pub(crate) fn get_json(&self, path: &str) -> Outcome<serde_json::Value> {
        self.get_json_query(path, &[])
    }

    /// `GET path`, answered with text; `timeout` bounds the whole request.
    pub(crate) fn get_text(&self, path: &str, timeout: std::time::Duration) -> Outcome<String> {
        let response = self
            .agent
            .get(self.url(path))
            .config()
            .timeout_global(Some(timeout))
            .build()
            .call()
            .map_err(|e| self.transport_error(e))?;
        let mut response = self.check(response)?;
        let text = response
            .body_mut()
            .read_to_string()
            .with_context(|| format!("reading the answer to GET {path}"))?;
        Ok(text)
    }

    /// `POST path?query` with an empty body, answered with JSON.
    pub(crate) fn post_json(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Outcome<serde_json::Value> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(SHORT_REQUEST_TIMEOUT))
            .build();
        for (name, value) in query {
            request = request.query(*name, value);
        }
        let response = request.send_empty().map_err(|e| self.transport_error(e))?;
        let response = self.check(response)?;
        read_json_answer(response, "POST", path)
    }

    /// `GET path?query`, answered with JSON.
    pub(crate) fn get_json_query(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Outcome<serde_json::Value> {
        let mut request = self
            .agent
            .get(self.url(path))
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(SHORT_REQUEST_TIMEOUT))
            .build();
        for (name, value) in query {
            request = request.query(*name, value);
        }
        let response = request.call().map_err(|e| self.transport_error(e))?;
        let response = self.check(response)?;
        read_json_answer(response, "GET", path)
    }

    /// `POST path` with a JSON body (or an empty one), answered with JSON; an empty answer (such
    /// as a 202 or 204 without a body) is `null`.
    pub(crate) fn post_json_body(
        &self,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Outcome<serde_json::Value> {
        let request = self
            .agent
            .post(self.url(path))
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(SHORT_REQUEST_TIMEOUT))
            .build();
        let sent = match body {
            Some(body) => {
                let bytes = serde_json::to_vec(body).context("encoding the request body")?;
                request
                    .header("Content-Type", "application/json")
                    .send(&bytes[..])
            }
            None => request.send_empty(),
        };
        let response = sent.map_err(|e| self.transport_error(e))?;
        let response = self.check(response)?;
        read_json_answer(response, "POST", path)
    }

    /// `DELETE path`, answered with JSON or nothing (`null`).
    pub(crate) fn delete_json(&self, path: &str) -> Outcome<serde_json::Value> {
        let response = self
            .agent
            .delete(self.url(path))
            .header("Accept", "application/json")
            .config()
            .timeout_global(Some(SHORT_REQUEST_TIMEOUT))
            .build()
            .call()
            .map_err(|e| self.transport_error(e))?;
        let response = self.check(response)?;
        read_json_answer(response, "DELETE", path)
    }

    /// `DELETE path`.
    pub(crate) fn delete(&self, path: &str) -> Outcome {
        let response = self
            .agent
            .delete(self.url(path))
            .config()
            .timeout_global(Some(SHORT_REQUEST_TIMEOUT))
            .build()
            .call()
            .map_err(|e| self.transport_error(e))?;
        self.check(response)?;
        Ok(())
    }

    /// `GET path` whose body the caller streams.
    pub(crate) fn get_stream(&self, path: &str) -> Outcome<Response<Body>> {
        let response = self
            .agent
            .get(self.url(path))
            .call()
            .map_err(|e| self.transport_error(e))?;
        self.check(response)
    }

    /// `POST path?query` with `len` bytes streamed from `body`; returns the text answer.
    pub(crate) fn post_stream(
        &self,
        path: &str,
        query: &[(&str, String)],
        headers: &[(&str, String)],
        body: &mut dyn Read,
        len: u64,
    ) -> Outcome<String> {
        let mut request = self
            .agent
            .post(self.url(path))
            .header("Content-Length", len.to_string())
            // Lets the node refuse bad headers or parameters before the body is sent.
            .header("Expect", "100-continue");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        for (name, value) in query {
            request = request.query(*name, value);
        }
        let response = request
            .send(ureq::SendBody::from_reader(body))
            .map_err(|e| self.transport_error(e))?;
        let response = self.check(response)?;
        let text = response
            .into_body()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .read_to_string()
            .with_context(|| format!("reading the answer to POST {path}"))?;
        Ok(text)
    }

    /// Turns a non-success answer into a [`NodeAnswer`] error (exit 1).
    fn check(&self, response: Response<Body>) -> Outcome<Response<Body>> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = response
            .into_body()
            .with_config()
            .limit(ERROR_BODY_LIMIT)
            .lossy_utf8(true)
            .read_to_string()
            .unwrap_or_default()
            .trim()
            .to_owned();
        Err(anyhow::Error::new(NodeAnswer { status, message }).into())
    }

    /// Classifies a failed request: unreachable node (2), bad request we built (64), or a
    /// transfer that broke (1).
    fn transport_error(&self, err: ureq::Error) -> Failure {
        if is_unreachable(&err) {
            return Failure::unreachable(anyhow::Error::new(err).context(format!(
                "cannot reach the cairn node at {} (is it running? start one with \"cairn start\")",
                self.shown
            )));
        }
        match err {
            ureq::Error::Http(_) | ureq::Error::BadUri(_) => {
                Failure::usage(anyhow::Error::new(err).context("invalid request"))
            }
            err => anyhow::Error::new(err)
                .context(format!("the request to the node at {} failed", self.shown))
                .into(),
        }
    }
}

/// Reads a JSON answer; an empty body is `null`.
fn read_json_answer(
    response: Response<Body>,
    method: &str,
    path: &str,
) -> Outcome<serde_json::Value> {
    let text = response
        .into_body()
        .read_to_string()
        .with_context(|| format!("reading the answer to {method} {path}"))?;
    if text.trim().is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let value = serde_json::from_str(&text)
        .with_context(|| format!("the answer to {method} {path} is not the JSON expected"))?;
    Ok(value)
}

/// Whether `err` means nothing answered at the address.
fn is_unreachable(err: &ureq::Error) -> bool {
    use std::io::ErrorKind;
    match err {
        ureq::Error::HostNotFound | ureq::Error::ConnectionFailed => true,
        ureq::Error::Timeout(timeout) => {
            matches!(timeout, ureq::Timeout::Connect | ureq::Timeout::Resolve)
        }
        ureq::Error::Io(io) => matches!(
            io.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::NetworkDown
                | ErrorKind::AddrNotAvailable
        ),
        _ => false,
    }
}

/// Splits `--api` into the API base URL and the form shown in messages.
fn api_base(api: &str) -> anyhow::Result<(String, String)> {
    let trimmed = api.trim();
    let with_scheme = if trimmed.contains("://") {
        trimmed.to_owned()
    } else {
        format!("http://{trimmed}")
    };
    let uri: Uri = with_scheme
        .parse()
        .with_context(|| format!("invalid --api URL {api:?}"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(anyhow!(
                "invalid --api URL {api:?}: https is not supported, use http://"
            ));
        }
        _ => {
            return Err(anyhow!(
                "invalid --api URL {api:?}: expected http://HOST:PORT"
            ));
        }
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| anyhow!("invalid --api URL {api:?}: expected http://HOST:PORT"))?;
    let host_port = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, rest)| rest);
    let port = host_port
        .strip_prefix(authority.host())
        .unwrap_or_default()
        .strip_prefix(':');
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Err(anyhow!("invalid --api URL {api:?}: bad port"));
    }
    if uri.query().is_some() {
        return Err(anyhow!("invalid --api URL {api:?}: a query is not allowed"));
    }
    let path = uri.path().trim_end_matches('/');
    let shown = format!("http://{authority}{path}");
    let base = if path.ends_with(API_BASE) || path.ends_with(CODEX_BASE) {
        shown.clone()
    } else {
        format!("{shown}{API_BASE}")
    };
    Ok((base, shown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(api: &str) -> String {
        api_base(api).unwrap().0
    }

    #[test]
    fn api_urls() {
        assert_eq!(base(DEFAULT_API), "http://127.0.0.1:8080/api/storage/v1");
        assert_eq!(
            base("http://127.0.0.1:8080/"),
            "http://127.0.0.1:8080/api/storage/v1"
        );
        assert_eq!(
            base("localhost:9000"),
            "http://localhost:9000/api/storage/v1"
        );
        assert_eq!(
            base("http://[::1]:8080"),
            "http://[::1]:8080/api/storage/v1"
        );
        assert_eq!(
            base("http://node.lan:8080/api/storage/v1/"),
            "http://node.lan:8080/api/storage/v1"
        );
        assert_eq!(
            base("http://node.lan:8080/api/codex/v1"),
            "http://node.lan:8080/api/codex/v1"
        );
        assert_eq!(
            base("http://proxy.lan/cairn"),
            "http://proxy.lan/cairn/api/storage/v1"
        );
        assert_eq!(api_base("http://h:1/").unwrap().1, "http://h:1");
    }

    #[test]
    fn bad_api_urls() {
        for bad in [
            "https://h:1",
            "ftp://h",
            "http://",
            "http://h:1/?x=1",
            "http://h:notaport",
            "h:99999",
            "",
        ] {
            assert!(api_base(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn refused_connection_is_unreachable() {
        // Bind then drop a listener: the port is very likely closed afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.get_json("/space").unwrap_err();
        assert_eq!(err.code, crate::failure::Code::Unreachable);
        assert!(
            format!("{:#}", err.error).contains("cannot reach the cairn node at http://127.0.0.1:")
        );
    }

    #[test]
    fn json_error_bodies() {
        let answer = NodeAnswer {
            status: StatusCode::CONFLICT,
            message: r#"{"error":{"code":"conflict","message":"a repair round is active"}}"#.into(),
        };
        assert_eq!(
            answer.api_error(),
            Some(("conflict".into(), "a repair round is active".into()))
        );
        assert_eq!(answer.body_json().unwrap()["error"]["code"], "conflict");
        for body in [
            "not json",
            "",
            r#"{"error":"flat"}"#,
            r#"{"error":{"message":"no code"}}"#,
            "[1]",
        ] {
            let answer = NodeAnswer {
                status: StatusCode::BAD_REQUEST,
                message: body.into(),
            };
            assert_eq!(answer.api_error(), None, "{body}");
        }
    }

    #[test]
    fn node_answers_are_formatted() {
        let answer = NodeAnswer {
            status: StatusCode::NOT_FOUND,
            message: "The requested CID could not be retrieved (no manifest).".into(),
        };
        assert_eq!(
            answer.to_string(),
            "the node answered 404 Not Found: The requested CID could not be retrieved (no manifest)."
        );
        let empty = NodeAnswer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: String::new(),
        };
        assert_eq!(
            empty.to_string(),
            "the node answered 500 Internal Server Error"
        );
    }
}
