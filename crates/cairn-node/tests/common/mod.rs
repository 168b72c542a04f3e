//! Helpers shared by the node's integration tests: real nodes on 127.0.0.1 with OS-chosen
//! ports, driven over HTTP.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use cairn_node::{Node, NodeConfig};

pub const BASE: &str = "/api/storage/v1";

pub struct TestNode {
    pub rt: tokio::runtime::Runtime,
    pub node: Option<Node>,
    pub url: String,
    pub addr: std::net::SocketAddr,
    pub agent: ureq::Agent,
    pub _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl TestNode {
    pub fn start() -> TestNode {
        TestNode::start_with(|_| {})
    }

    pub fn start_with(adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let dir = tempfile::tempdir().expect("tempdir");
        TestNode::start_in(dir, adjust)
    }

    pub fn start_in(dir: tempfile::TempDir, adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = NodeConfig {
            data_dir: dir.path().to_path_buf(),
            api_port: 0,
            listen_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            lookup_timeout: 5,
            ..NodeConfig::default()
        };
        adjust(&mut config);
        let node = rt.block_on(Node::start(config)).expect("node starts");
        let addr = node.api_addr();
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        TestNode {
            url: format!("http://{addr}"),
            addr,
            rt,
            node: Some(node),
            agent,
            _dir: dir,
        }
    }

    pub fn finish(resp: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut resp = resp.expect("request completes");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .body_mut()
            .with_config()
            .limit(u64::MAX)
            .read_to_vec()
            .expect("body");
        Reply {
            status,
            headers,
            body,
        }
    }

    pub fn get(&self, path: &str) -> Reply {
        Self::finish(self.agent.get(format!("{}{path}", self.url)).call())
    }

    pub fn get_with(&self, path: &str, header: (&str, &str)) -> Reply {
        Self::finish(
            self.agent
                .get(format!("{}{path}", self.url))
                .header(header.0, header.1)
                .call(),
        )
    }

    pub fn delete(&self, path: &str) -> Reply {
        Self::finish(self.agent.delete(format!("{}{path}", self.url)).call())
    }

    pub fn post(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) -> Reply {
        let mut req = self.agent.post(format!("{}{path}", self.url));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        Self::finish(req.send(body))
    }

    pub fn upload(&self, data: &[u8]) -> String {
        let r = self.post(&format!("{BASE}/data"), data, &[]);
        assert_eq!(r.status, 200, "upload failed: {}", r.text());
        assert!(
            r.header("content-type")
                .unwrap_or("")
                .starts_with("text/plain")
        );
        r.text()
    }

    pub fn space(&self) -> serde_json::Value {
        self.get(&format!("{BASE}/space")).json()
    }

    pub fn stop(mut self) -> tempfile::TempDir {
        let node = self.node.take().expect("running");
        self.rt.block_on(node.shutdown());
        let dir = tempfile::tempdir().expect("tempdir");
        std::mem::replace(&mut self._dir, dir)
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if let Some(node) = self.node.take() {
            self.rt.block_on(node.shutdown());
        }
    }
}

pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

impl TestNode {
    /// The node's p2p address with its peer id, for `bootstrap_node`.
    pub fn p2p_addr(&self) -> String {
        let node = self.node.as_ref().expect("running");
        let status = self
            .rt
            .block_on(node.network().status())
            .expect("network status");
        let addr = status
            .listen_addrs
            .iter()
            .find(|a| a.to_string().starts_with("/ip4/127.0.0.1/tcp/"))
            .expect("a loopback TCP listen address")
            .clone();
        format!("{addr}/p2p/{}", node.peer_id())
    }

    /// Starts a node that bootstraps from `peers`.
    pub fn start_joined(peers: &[&TestNode], adjust: impl FnOnce(&mut NodeConfig)) -> TestNode {
        let addrs: Vec<String> = peers.iter().map(|p| p.p2p_addr()).collect();
        TestNode::start_with(|c| {
            c.bootstrap_node = addrs;
            adjust(c);
        })
    }

    pub fn peer_id(&self) -> String {
        self.node.as_ref().expect("running").peer_id().to_owned()
    }

    /// Polls `GET path` until `done(json)` or the deadline; panics on timeout.
    pub fn wait_json(
        &self,
        path: &str,
        timeout: Duration,
        mut done: impl FnMut(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.get(path);
            if r.status == 200 {
                let v = r.json();
                if done(&v) {
                    return v;
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting on {path}: {} {}",
                r.status,
                r.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
