//! The durability layer's driver (durability.md, slice S1): one task owns every joined swarm's
//! sans-IO [`State`](cairn_proto::durability::State), feeds it gossip, swarm requests, timers
//! and API commands, and carries out what it asks (validation verdicts, publishes, requests,
//! subscriptions, persistence). The REST handlers talk to it through [`SwarmHandle`] over a
//! bounded channel.
//!
//! - `config`: the `[durability]` table;
//! - `persist`: what survives a restart (§16), in the store's metadata tables;
//! - `invite`: the `cairn-invite:` text form;
//! - `driver`: the task.

mod config;
mod driver;
mod invite;
mod persist;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_core::Cid;
use cairn_net::{GossipId, PeerId as NetPeer, SwarmResponder};
use cairn_proto::durability::Now;
use tokio::sync::{mpsc, oneshot};

pub use config::{DurabilityConfig, HumanDuration};
pub(crate) use driver::{Driver, DriverConfig, MEMBERS_PAGE};
pub(crate) use invite::ed25519_seed;

/// The encoded `Response{RpcError{BUSY}}` answered over the in-flight limit (§7.2).
pub(crate) fn busy_response() -> bytes::Bytes {
    use prost::Message as _;
    let r = cairn_core::durability::messages::Response {
        body: Some(cairn_core::durability::messages::response::Body::Error(
            cairn_core::durability::messages::RpcError {
                code: cairn_core::durability::messages::ErrorCode::Busy as i32,
                message: "busy".into(),
            },
        )),
    };
    bytes::Bytes::from(r.encode_to_vec())
}

/// Messages queued for the driver.
const DRIVER_QUEUE: usize = 1024;

/// The clock the driver reads (§19: time is passed in).
pub(crate) trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> Now;
}

/// The process clock: monotonic time since the driver started, and unix seconds.
#[derive(Debug)]
pub(crate) struct SystemClock {
    origin: Instant,
}

impl SystemClock {
    pub(crate) fn new() -> SystemClock {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Now {
        Now {
            mono: self.origin.elapsed(),
            unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }
    }
}

/// An API error with the §17 code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub(crate) struct SwarmError {
    /// `invalid_argument`, `not_authorized`, `unknown_swarm`, `unknown_dataset`, `conflict`,
    /// `too_large`, `unsatisfiable`, `rate_limited`, `not_ready`, `internal`.
    pub(crate) code: &'static str,
    pub(crate) message: String,
}

impl SwarmError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> SwarmError {
        SwarmError {
            code,
            message: message.into(),
        }
    }
    pub(crate) fn invalid(message: impl Into<String>) -> SwarmError {
        SwarmError::new("invalid_argument", message)
    }
    pub(crate) fn unknown_swarm() -> SwarmError {
        SwarmError::new("unknown_swarm", "this node is not a member of that swarm")
    }
    pub(crate) fn internal(message: impl std::fmt::Display) -> SwarmError {
        SwarmError::new("internal", message.to_string())
    }
}

pub(crate) type SwarmResult<T> = Result<T, SwarmError>;
type Reply<T> = oneshot::Sender<SwarmResult<T>>;

/// `POST /swarms` parameters, checked.
#[derive(Debug, Clone)]
pub(crate) struct CreateSwarm {
    pub(crate) name: String,
    pub(crate) open: bool,
    pub(crate) admins_only: bool,
    pub(crate) default_policy: cairn_core::durability::messages::DurabilityPolicy,
    pub(crate) max_dataset_bytes: u64,
    pub(crate) lost_after_secs: Option<u32>,
    pub(crate) expected_members: u64,
}

/// A dataset announce request.
#[derive(Debug, Clone)]
pub(crate) struct AnnounceRequest {
    pub(crate) cid: Cid,
    /// `None` = the swarm's default (auto).
    pub(crate) policy: Option<cairn_core::durability::Policy>,
    pub(crate) retain_until: u64,
}

/// REST-level commands.
#[derive(Debug)]
pub(crate) enum Api {
    Create(CreateSwarm, Reply<serde_json::Value>),
    List(Reply<serde_json::Value>),
    Show(String, Reply<serde_json::Value>),
    Invite {
        swarm: String,
        peer: String,
        admin: bool,
        expires_at: u64,
        reply: Reply<String>,
    },
    Join {
        swarm: String,
        invite: String,
        storer: bool,
        quota: Option<u64>,
        reply: Reply<serde_json::Value>,
    },
    Members(String, Reply<Vec<serde_json::Value>>),
    Revoke(String, String, Reply<()>),
    Leave(String, Reply<serde_json::Value>),
    Announce(String, AnnounceRequest, Reply<serde_json::Value>),
    Datasets(String, Reply<serde_json::Value>),
    Health(String, String, Reply<serde_json::Value>),
    Retire(String, String, Reply<()>),
    /// Bytes reserved for accepted, not yet filled slots.
    Reserved(oneshot::Sender<u64>),
    /// Whether a CID backs a live or pending slot (then it may not be deleted or hidden).
    Protects(Cid, oneshot::Sender<bool>),
}

/// Everything the driver reacts to.
#[derive(Debug)]
pub(crate) enum Msg {
    Gossip {
        topic: String,
        id: GossipId,
        source: NetPeer,
        data: bytes::Bytes,
    },
    Request {
        peer: NetPeer,
        request: bytes::Bytes,
        responder: SwarmResponder,
    },
    Peer {
        peer: NetPeer,
        connected: bool,
    },
    Api(Api),
    Internal(driver::Internal),
}

/// The cloneable handle to the driver.
#[derive(Debug, Clone)]
pub(crate) struct SwarmHandle {
    tx: mpsc::Sender<Msg>,
}

impl SwarmHandle {
    pub(crate) fn channel() -> (SwarmHandle, mpsc::Receiver<Msg>) {
        let (tx, rx) = mpsc::channel(DRIVER_QUEUE);
        (SwarmHandle { tx }, rx)
    }

    /// Queues a network event (waits for room: the driver never waits on the network).
    pub(crate) async fn deliver(&self, msg: Msg) {
        let _ = self.tx.send(msg).await;
    }

    pub(crate) fn sender(&self) -> mpsc::Sender<Msg> {
        self.tx.clone()
    }

    /// Sends an API command and awaits its answer (bounded).
    pub(crate) async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Api) -> SwarmResult<T> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Api(make(reply)))
            .await
            .map_err(|_| SwarmError::new("not_ready", "the swarm driver is not running"))?;
        match tokio::time::timeout(Duration::from_secs(60), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(SwarmError::internal("the swarm driver dropped the request")),
            Err(_) => Err(SwarmError::new("not_ready", "the swarm driver is busy")),
        }
    }

    /// Bytes reserved for pending slots (0 if the driver is gone).
    pub(crate) async fn reserved(&self) -> u64 {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Api(Api::Reserved(tx))).await.is_err() {
            return 0;
        }
        rx.await.unwrap_or(0)
    }

    /// Whether `cid` backs a held slot.
    pub(crate) async fn protects(&self, cid: Cid) -> bool {
        let (tx, rx) = oneshot::channel();
        if self
            .tx
            .send(Msg::Api(Api::Protects(cid, tx)))
            .await
            .is_err()
        {
            return false;
        }
        rx.await.unwrap_or(false)
    }
}

/// RFC 3339 UTC of unix seconds.
pub(crate) fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc3339_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(super::rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
