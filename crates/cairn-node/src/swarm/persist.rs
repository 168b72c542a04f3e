//! What survives a restart (durability.md §16), in the store's metadata tables. Every write is
//! fsynced before it returns; the driver writes before it sends the corresponding message.
//!
//! | Table | Key | Value |
//! |---|---|---|
//! | `swarms` | SwarmId | [`SwarmRecord`] (JSON, versioned) |
//! | `incarnation` | SwarmId | u64 big-endian |
//! | `snapshot` | SwarmId | the state machine's versioned snapshot (facts, member observations) |
//! | `held` | SwarmId ‖ DatasetCid ‖ u32be slot | [`HeldRecord`] (JSON, versioned): pending, live or spare (with `spare_until`) |
//! | `placement` | SwarmId ‖ DatasetCid | empty: a placement job to resume |
//! | `cached` | SwarmId ‖ DatasetCid | [`CachedRecord`] (JSON, versioned): a `none` dataset auto-fetched for the swarm |

use cairn_core::Cid;
use cairn_core::durability::SwarmId;
use cairn_store::{BlockStore, MetaOp};
use serde::{Deserialize, Serialize};

pub(crate) const SWARMS: &str = "swarms";
pub(crate) const INCARNATION: &str = "incarnation";
pub(crate) const SNAPSHOT: &str = "snapshot";
pub(crate) const HELD: &str = "held";
pub(crate) const PLACEMENT: &str = "placement";
pub(crate) const CACHED: &str = "cached";

/// Version of the JSON records.
pub(crate) const RECORD_VERSION: u32 = 1;

/// A joined swarm: identity in it and the settings of this node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SwarmRecord {
    pub(crate) version: u32,
    /// The encoded GenesisRecord.
    pub(crate) genesis: Vec<u8>,
    pub(crate) storer: bool,
    pub(crate) quota: u64,
    pub(crate) joined_at: u64,
    /// Our MemberCert envelope (invite swarms).
    pub(crate) cert: Option<Vec<u8>>,
    /// The issuer's admin cert, if the issuer was an admin.
    pub(crate) admin_cert: Option<Vec<u8>>,
}

/// A slot this node accepted (pending) or claimed (live).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct HeldRecord {
    pub(crate) version: u32,
    pub(crate) generation: u32,
    /// `pending` (accepted, filling), `live` (claimed, current holder) or `spare` (our claim
    /// was superseded or lost the tie-break, §8).
    pub(crate) state: String,
    /// Bytes reserved / held.
    pub(crate) size: u64,
    /// The SlotOffer envelope bytes.
    pub(crate) offer: Vec<u8>,
    /// The offer's `expires_at` (unix s).
    pub(crate) expires_at: u64,
    /// `spare`: when the spare may be dropped (unix s; §8 SPARE_TTL, if the dataset is healthy).
    #[serde(default)]
    pub(crate) spare_until: u64,
    /// True if this node fetched the data for the slot (dropping the spare then deletes it);
    /// false if it was already stored here (the announcer's upload, user data: only unpinned).
    #[serde(default)]
    pub(crate) fetched: bool,
}

/// A `none` dataset this node keeps for a swarm (auto-fetch, §6), inside the swarm's quota.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CachedRecord {
    pub(crate) version: u32,
    /// `pending` (fetching) or `complete`.
    pub(crate) state: String,
    /// Bytes counted against the swarm's quota.
    pub(crate) size: u64,
    /// The announce's `announced_at` (unix s): the eviction order, oldest first.
    pub(crate) announced_at: u64,
    /// When this node started keeping it (unix ms): breaks ties of `announced_at`.
    pub(crate) cached_at_ms: u64,
    /// The announce's `retain_until` (0 = forever).
    pub(crate) retain_until: u64,
    /// True if this node fetched the data for the swarm (then eviction deletes it); false if
    /// the dataset was already stored here (user data: never deleted or unpinned by eviction).
    pub(crate) owned: bool,
}

pub(crate) fn held_key(swarm: &SwarmId, d: &Cid, slot: u32) -> Vec<u8> {
    let mut k = swarm.as_bytes().to_vec();
    k.extend_from_slice(&d.to_bytes());
    k.extend_from_slice(&slot.to_be_bytes());
    k
}

pub(crate) fn job_key(swarm: &SwarmId, d: &Cid) -> Vec<u8> {
    let mut k = swarm.as_bytes().to_vec();
    k.extend_from_slice(&d.to_bytes());
    k
}

/// Everything stored about one swarm.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) swarm: SwarmId,
    pub(crate) record: SwarmRecord,
    pub(crate) incarnation: u64,
    pub(crate) snapshot: Option<Vec<u8>>,
    pub(crate) held: Vec<(Cid, u32, HeldRecord)>,
    pub(crate) jobs: Vec<Cid>,
    pub(crate) cached: Vec<(Cid, CachedRecord)>,
}

/// Reads every stored swarm; records that do not decode are skipped with a warning.
pub(crate) fn load_all(store: &dyn BlockStore) -> cairn_store::Result<Vec<Loaded>> {
    let mut out = Vec::new();
    for (k, v) in store.scan_meta(SWARMS, b"")? {
        let Some(swarm) = SwarmId::from_slice(&k) else {
            tracing::warn!("skipping a swarm record with a bad key");
            continue;
        };
        let record: SwarmRecord = match serde_json::from_slice(&v) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(swarm = %swarm.to_text(), error = %e, "skipping an undecodable swarm record");
                continue;
            }
        };
        let incarnation = store
            .get_meta(INCARNATION, swarm.as_bytes())?
            .and_then(|b| <[u8; 8]>::try_from(&b[..]).ok())
            .map_or(0, u64::from_be_bytes);
        let snapshot = store
            .get_meta(SNAPSHOT, swarm.as_bytes())?
            .map(|b| b.to_vec());
        let mut held = Vec::new();
        for (k, v) in store.scan_meta(HELD, swarm.as_bytes())? {
            let rest = &k[32..];
            if rest.len() < 4 {
                continue;
            }
            let (cid, slot) = rest.split_at(rest.len() - 4);
            let (Ok(cid), Ok(slot)) = (Cid::from_bytes(cid), <[u8; 4]>::try_from(slot)) else {
                continue;
            };
            if let Ok(r) = serde_json::from_slice::<HeldRecord>(&v) {
                held.push((cid, u32::from_be_bytes(slot), r));
            }
        }
        let jobs = store
            .scan_meta(PLACEMENT, swarm.as_bytes())?
            .into_iter()
            .filter_map(|(k, _)| Cid::from_bytes(&k[32..]).ok())
            .collect();
        let cached = store
            .scan_meta(CACHED, swarm.as_bytes())?
            .into_iter()
            .filter_map(|(k, v)| {
                let cid = Cid::from_bytes(k.get(32..)?).ok()?;
                let r = serde_json::from_slice::<CachedRecord>(&v).ok()?;
                Some((cid, r))
            })
            .collect();
        out.push(Loaded {
            swarm,
            record,
            incarnation,
            snapshot,
            held,
            jobs,
            cached,
        });
    }
    Ok(out)
}

/// A swarm's record, incarnation and snapshot, as one atomic write.
pub(crate) fn swarm_ops(
    swarm: &SwarmId,
    record: &SwarmRecord,
    incarnation: u64,
    snapshot: Vec<u8>,
) -> Vec<MetaOp> {
    vec![
        MetaOp::Put {
            table: SWARMS.into(),
            key: swarm.as_bytes().to_vec(),
            value: serde_json::to_vec(record).unwrap_or_default(),
        },
        MetaOp::Put {
            table: INCARNATION.into(),
            key: swarm.as_bytes().to_vec(),
            value: incarnation.to_be_bytes().to_vec(),
        },
        MetaOp::Put {
            table: SNAPSHOT.into(),
            key: swarm.as_bytes().to_vec(),
            value: snapshot,
        },
    ]
}

/// Deletes everything stored about a swarm.
pub(crate) fn forget_swarm(store: &dyn BlockStore, swarm: &SwarmId) -> cairn_store::Result<()> {
    let mut ops = Vec::new();
    for t in [SWARMS, INCARNATION, SNAPSHOT] {
        ops.push(MetaOp::Delete {
            table: t.into(),
            key: swarm.as_bytes().to_vec(),
        });
    }
    for t in [HELD, PLACEMENT, CACHED] {
        for (k, _) in store.scan_meta(t, swarm.as_bytes())? {
            ops.push(MetaOp::Delete {
                table: t.into(),
                key: k,
            });
        }
    }
    store.write_meta(&ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_records_of_older_nodes_read_as_not_spare_and_not_fetched() {
        let old =
            br#"{"version":1,"generation":0,"state":"live","size":5,"offer":[1,2],"expires_at":9}"#;
        let h: HeldRecord = serde_json::from_slice(old).unwrap();
        assert_eq!((h.spare_until, h.fetched), (0, false));
        let spare = HeldRecord {
            state: "spare".into(),
            spare_until: 1234,
            fetched: true,
            ..h
        };
        let back: HeldRecord =
            serde_json::from_slice(&serde_json::to_vec(&spare).unwrap()).unwrap();
        assert_eq!(back.state, "spare");
        assert_eq!((back.spare_until, back.fetched), (1234, true));
    }
}
