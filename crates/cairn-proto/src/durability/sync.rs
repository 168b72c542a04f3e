//! Facts and anti-entropy (durability.md §7.3).
//!
//! [`AntiEntropy`] stores the facts of each scope (`ctl`, and one per shard) in 256 buckets keyed
//! by the first byte of the fact id; a bucket digest is the XOR of its ids and the root the XOR of
//! the buckets. [`answer`] serves a `SyncRequest` from a [`FactSet`]; a [`Round`] runs the
//! requester side: root → bucket digests → `have` pages until the differing buckets are pulled.
//! Received facts are handed back to the caller, which validates them like gossip (without the
//! timestamp window) and inserts the accepted ones.

use std::collections::BTreeMap;

use cairn_core::durability::messages::{self as pb, SyncScope, sync_request::Step};
use cairn_core::durability::{FactId, SwarmId};
use prost::Message;

/// Buckets per scope.
pub const BUCKETS: usize = 256;
/// Response budget: the envelopes of one page stay below 1 MiB with their framing.
pub const MAX_PAGE_BYTES: usize = (1 << 20) - 4096;
/// Request budget for the ids of a `have` step (the request limit is 64 KiB).
pub const MAX_HAVE_IDS_BYTES: usize = 60 * 1024;
/// Pages one round follows before giving up on a responder.
pub const MAX_PAGES_PER_ROUND: u32 = 256;

/// A fact scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// Membership and votes.
    Ctl,
    /// Dataset facts of one shard.
    Shard(u32),
}

impl Scope {
    /// The wire form `(scope, shard)`.
    pub fn to_wire(self) -> (SyncScope, u32) {
        match self {
            Scope::Ctl => (SyncScope::Ctl, 0),
            Scope::Shard(s) => (SyncScope::Shard, s),
        }
    }

    /// Reads the wire form.
    pub fn from_wire(scope: i32, shard: u32) -> Option<Scope> {
        match SyncScope::try_from(scope) {
            Ok(SyncScope::Ctl) => Some(Scope::Ctl),
            Ok(SyncScope::Shard) => Some(Scope::Shard(shard)),
            _ => None,
        }
    }
}

/// A stored fact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFact {
    /// The canonical envelope bytes.
    pub bytes: Vec<u8>,
    /// When it expires (unix s), if ever.
    pub expires_at: Option<u64>,
}

/// The facts of one scope, with bucket digests kept up to date.
#[derive(Debug, Clone)]
pub struct FactSet {
    facts: BTreeMap<FactId, StoredFact>,
    buckets: Vec<[u8; 32]>,
}

impl Default for FactSet {
    fn default() -> Self {
        FactSet {
            facts: BTreeMap::new(),
            buckets: vec![[0; 32]; BUCKETS],
        }
    }
}

fn xor_into(acc: &mut [u8; 32], id: &FactId) {
    for (a, b) in acc.iter_mut().zip(id.0.iter()) {
        *a ^= b;
    }
}

impl FactSet {
    /// Inserts a fact; false if it was already there.
    pub fn insert(&mut self, id: FactId, fact: StoredFact) -> bool {
        if self.facts.contains_key(&id) {
            return false;
        }
        xor_into(&mut self.buckets[usize::from(id.bucket())], &id);
        self.facts.insert(id, fact);
        true
    }

    /// Removes a fact.
    pub fn remove(&mut self, id: &FactId) -> Option<StoredFact> {
        let f = self.facts.remove(id)?;
        xor_into(&mut self.buckets[usize::from(id.bucket())], id);
        Some(f)
    }

    /// Whether the fact is stored.
    pub fn contains(&self, id: &FactId) -> bool {
        self.facts.contains_key(id)
    }

    /// A stored fact.
    pub fn get(&self, id: &FactId) -> Option<&StoredFact> {
        self.facts.get(id)
    }

    /// Sets a fact's expiry.
    pub fn set_expiry(&mut self, id: &FactId, expires_at: Option<u64>) {
        if let Some(f) = self.facts.get_mut(id) {
            f.expires_at = expires_at;
        }
    }

    /// Number of facts.
    pub fn len(&self) -> usize {
        self.facts.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.facts.is_empty()
    }

    /// Every fact, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&FactId, &StoredFact)> {
        self.facts.iter()
    }

    /// The ids whose expiry is ≤ `now_unix`.
    pub fn expired(&self, now_unix: u64) -> Vec<FactId> {
        self.facts
            .iter()
            .filter(|(_, f)| f.expires_at.is_some_and(|t| t <= now_unix))
            .map(|(id, _)| *id)
            .collect()
    }

    /// The root: XOR of the bucket digests (= XOR of every id).
    pub fn root(&self) -> [u8; 32] {
        let mut r = [0u8; 32];
        for b in &self.buckets {
            xor_into(&mut r, &FactId(*b));
        }
        r
    }

    /// The 256 bucket digests, concatenated (8 KiB).
    pub fn bucket_digests(&self) -> Vec<u8> {
        self.buckets.concat()
    }

    /// The ids of one bucket, ascending.
    pub fn bucket_ids(&self, bucket: u8) -> impl Iterator<Item = &FactId> {
        let lo = FactId({
            let mut a = [0u8; 32];
            a[0] = bucket;
            a
        });
        self.facts
            .range(lo..)
            .map(|(id, _)| id)
            .take_while(move |id| id.bucket() == bucket)
    }
}

/// Why a sync message is unusable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// A malformed request (answer `RpcError{MALFORMED}`).
    #[error("malformed sync request: {0}")]
    Malformed(&'static str),
    /// A response that does not fit the round's step.
    #[error("unexpected sync response: {0}")]
    Unexpected(&'static str),
}

/// Serves a request from `set` (the scope's facts). Step 1 (root): `equal`, or the bucket
/// digests. Step 3 (have): the facts of the named buckets that the requester lacks, in id order,
/// at most [`MAX_PAGE_BYTES`] per page, continued with `page_token` (the last id sent).
pub fn answer(set: &FactSet, req: &pb::SyncRequest) -> Result<pb::SyncResponse, SyncError> {
    match &req.step {
        None => Err(SyncError::Malformed("no step")),
        Some(Step::Root(root)) => {
            if root.len() != 32 {
                return Err(SyncError::Malformed("root is not 32 bytes"));
            }
            if root.as_slice() == set.root() {
                Ok(pb::SyncResponse {
                    equal: true,
                    ..Default::default()
                })
            } else {
                Ok(pb::SyncResponse {
                    bucket_digests: set.bucket_digests(),
                    ..Default::default()
                })
            }
        }
        Some(Step::Have(have)) => {
            if have.ids.len() % 32 != 0 {
                return Err(SyncError::Malformed("ids not a multiple of 32 bytes"));
            }
            if have.buckets.iter().any(|&b| b >= BUCKETS as u32) {
                return Err(SyncError::Malformed("bucket over 255"));
            }
            let after = match req.page_token.len() {
                0 => None,
                32 => FactId::from_slice(&req.page_token),
                _ => return Err(SyncError::Malformed("page token is not 32 bytes")),
            };
            let held: std::collections::BTreeSet<&[u8]> = have.ids.chunks_exact(32).collect();
            let mut buckets: Vec<u8> = have.buckets.iter().map(|&b| b as u8).collect();
            buckets.sort_unstable();
            buckets.dedup();
            let mut resp = pb::SyncResponse::default();
            let mut used = 0usize;
            let mut last: Option<FactId> = None;
            for b in buckets {
                for id in set.bucket_ids(b) {
                    if after.is_some_and(|a| *id <= a) || held.contains(id.0.as_slice()) {
                        continue;
                    }
                    let Some(f) = set.get(id) else { continue };
                    let cost = f.bytes.len() + 8;
                    if used + cost > MAX_PAGE_BYTES
                        && let Some(last) = last
                    {
                        resp.next_page_token = last.0.to_vec();
                        return Ok(resp);
                    }
                    if let Ok(env) = pb::SignedEnvelope::decode(f.bytes.as_slice()) {
                        used += cost;
                        resp.facts.push(env);
                        last = Some(*id);
                    }
                }
            }
            Ok(resp)
        }
    }
}

/// Where a round is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Root,
    Have {
        current: Vec<u8>,
        page_token: Vec<u8>,
    },
}

/// The requester side of one sync round with one partner for one scope.
#[derive(Debug, Clone)]
pub struct Round {
    swarm_id: SwarmId,
    scope: Scope,
    stage: Stage,
    pending: Vec<u8>,
    pages: u32,
}

/// What a round does next.
#[derive(Debug, Clone, PartialEq)]
pub struct Next {
    /// Facts received, to validate and store.
    pub facts: Vec<pb::SignedEnvelope>,
    /// The next request, or `None` when the round is over.
    pub request: Option<pb::SyncRequest>,
}

impl Round {
    /// Starts a round: the first request carries the root.
    pub fn start(swarm_id: SwarmId, scope: Scope, set: &FactSet) -> (Round, pb::SyncRequest) {
        let round = Round {
            swarm_id,
            scope,
            stage: Stage::Root,
            pending: Vec::new(),
            pages: 0,
        };
        let req = round.request(Step::Root(set.root().to_vec()), Vec::new());
        (round, req)
    }

    /// The round's scope.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    fn request(&self, step: Step, page_token: Vec<u8>) -> pb::SyncRequest {
        let (scope, shard) = self.scope.to_wire();
        pb::SyncRequest {
            swarm_id: self.swarm_id.as_bytes().to_vec(),
            scope: scope as i32,
            shard,
            step: Some(step),
            page_token,
        }
    }

    /// The `have` for buckets from the pending queue: as many whole buckets as fit in
    /// [`MAX_HAVE_IDS_BYTES`] (at least one, truncated if it alone is larger).
    fn next_have(&mut self, set: &FactSet) -> Option<pb::SyncRequest> {
        if self.pending.is_empty() {
            return None;
        }
        let mut buckets = Vec::new();
        let mut ids = Vec::new();
        while let Some(&b) = self.pending.first() {
            let bucket_ids: Vec<u8> = set.bucket_ids(b).flat_map(|id| id.0).collect();
            if !buckets.is_empty() && ids.len() + bucket_ids.len() > MAX_HAVE_IDS_BYTES {
                break;
            }
            self.pending.remove(0);
            buckets.push(b);
            ids.extend_from_slice(&bucket_ids[..bucket_ids.len().min(MAX_HAVE_IDS_BYTES)]);
        }
        self.stage = Stage::Have {
            current: buckets.clone(),
            page_token: Vec::new(),
        };
        let have = pb::BucketHave {
            buckets: buckets.iter().map(|&b| u32::from(b)).collect(),
            ids,
        };
        Some(self.request(Step::Have(have), Vec::new()))
    }

    /// Feeds the partner's response. `set` is the scope's facts *after* the caller stored the
    /// facts of earlier pages.
    pub fn on_response(
        &mut self,
        set: &FactSet,
        resp: &pb::SyncResponse,
    ) -> Result<Next, SyncError> {
        self.pages += 1;
        if self.pages > MAX_PAGES_PER_ROUND {
            return Ok(Next {
                facts: Vec::new(),
                request: None,
            });
        }
        match &self.stage {
            Stage::Root => {
                if resp.equal {
                    return Ok(Next {
                        facts: Vec::new(),
                        request: None,
                    });
                }
                if resp.bucket_digests.len() != BUCKETS * 32 {
                    return Err(SyncError::Unexpected(
                        "bucket digests are not 256 x 32 bytes",
                    ));
                }
                let ours = set.bucket_digests();
                self.pending = (0..BUCKETS)
                    .filter(|&b| {
                        resp.bucket_digests[b * 32..(b + 1) * 32] != ours[b * 32..(b + 1) * 32]
                    })
                    .map(|b| b as u8)
                    .collect();
                Ok(Next {
                    facts: Vec::new(),
                    request: self.next_have(set),
                })
            }
            Stage::Have { current, .. } => {
                let facts = resp.facts.clone();
                let request = if resp.next_page_token.is_empty() {
                    self.next_have(set)
                } else {
                    let current = current.clone();
                    let ids: Vec<u8> = current
                        .iter()
                        .flat_map(|&b| set.bucket_ids(b).flat_map(|id| id.0).collect::<Vec<_>>())
                        .collect();
                    let have = pb::BucketHave {
                        buckets: current.iter().map(|&b| u32::from(b)).collect(),
                        ids: ids[..ids.len().min(MAX_HAVE_IDS_BYTES)].to_vec(),
                    };
                    let token = resp.next_page_token.clone();
                    self.stage = Stage::Have {
                        current,
                        page_token: token.clone(),
                    };
                    Some(self.request(Step::Have(have), token))
                };
                Ok(Next { facts, request })
            }
        }
    }
}

/// The facts of every scope.
#[derive(Debug, Clone, Default)]
pub struct AntiEntropy {
    scopes: BTreeMap<Scope, FactSet>,
}

impl AntiEntropy {
    /// An empty store.
    pub fn new() -> AntiEntropy {
        AntiEntropy::default()
    }

    /// The facts of a scope (an empty set if none).
    pub fn scope(&self, scope: Scope) -> Option<&FactSet> {
        self.scopes.get(&scope)
    }

    /// The facts of a scope, created if needed.
    pub fn scope_mut(&mut self, scope: Scope) -> &mut FactSet {
        self.scopes.entry(scope).or_default()
    }

    /// Whether any scope holds the fact.
    pub fn contains(&self, id: &FactId) -> bool {
        self.scopes.values().any(|s| s.contains(id))
    }

    /// Every scope.
    pub fn scopes(&self) -> impl Iterator<Item = (&Scope, &FactSet)> {
        self.scopes.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::durability::{Envelope, Keypair, Kind};

    fn fact(i: u32) -> (FactId, StoredFact) {
        let kp = Keypair::from_seed(&[1; 32]);
        let env = Envelope::sign_message(
            &kp,
            SwarmId([0; 32]),
            Kind::Leave,
            &pb::Leave {
                issued_at: u64::from(i),
                reason: String::new(),
            },
        );
        (
            env.id(),
            StoredFact {
                bytes: env.as_bytes().to_vec(),
                expires_at: None,
            },
        )
    }

    fn set_of(range: std::ops::Range<u32>) -> FactSet {
        let mut s = FactSet::default();
        for i in range {
            let (id, f) = fact(i);
            s.insert(id, f);
        }
        s
    }

    #[test]
    fn digests_are_xor() {
        let mut s = set_of(0..50);
        let (id, f) = fact(7);
        assert!(!s.insert(id, f));
        let mut r = [0u8; 32];
        for (id, _) in s.iter() {
            xor_into(&mut r, id);
        }
        assert_eq!(s.root(), r);
        s.remove(&id);
        xor_into(&mut r, &id);
        assert_eq!(s.root(), r);
        assert_eq!(s.bucket_digests().len(), 8192);
        assert_eq!(FactSet::default().root(), [0; 32]);
    }

    /// Runs a round of `a` pulling from `b` until done; returns a's set.
    fn pull(mut a: FactSet, b: &FactSet) -> FactSet {
        let (mut round, mut req) = Round::start(SwarmId([0; 32]), Scope::Ctl, &a);
        loop {
            let resp = answer(b, &req).unwrap();
            let next = round.on_response(&a, &resp).unwrap();
            for f in next.facts {
                let bytes = f.encode_to_vec();
                let env = Envelope::decode(&bytes).unwrap();
                a.insert(
                    env.id(),
                    StoredFact {
                        bytes,
                        expires_at: None,
                    },
                );
            }
            match next.request {
                Some(r) => req = r,
                None => return a,
            }
        }
    }

    #[test]
    fn round_converges() {
        let a = set_of(0..30);
        let b = set_of(20..200);
        let a2 = pull(a, &b);
        assert_eq!(a2.len(), 200);
        // b lacks 0..20, a2 has all: roots differ until b pulls.
        let b2 = pull(b, &a2);
        assert_eq!(b2.root(), a2.root());
        // Equal roots end at once.
        let (mut round, req) = Round::start(SwarmId([0; 32]), Scope::Ctl, &a2);
        let resp = answer(&b2, &req).unwrap();
        assert!(resp.equal);
        assert_eq!(round.on_response(&a2, &resp).unwrap().request, None);
    }

    #[test]
    fn malformed_requests() {
        let s = set_of(0..3);
        let mk = |step, token: Vec<u8>| pb::SyncRequest {
            step,
            page_token: token,
            ..Default::default()
        };
        assert!(answer(&s, &mk(None, vec![])).is_err());
        assert!(answer(&s, &mk(Some(Step::Root(vec![0; 3])), vec![])).is_err());
        let have =
            |buckets: Vec<u32>, ids: Vec<u8>| Some(Step::Have(pb::BucketHave { buckets, ids }));
        assert!(answer(&s, &mk(have(vec![256], vec![]), vec![])).is_err());
        assert!(answer(&s, &mk(have(vec![1], vec![0; 31]), vec![])).is_err());
        assert!(answer(&s, &mk(have(vec![1], vec![]), vec![0; 5])).is_err());
        let all: Vec<u32> = (0..256).collect();
        assert_eq!(
            answer(&s, &mk(have(all, vec![]), vec![]))
                .unwrap()
                .facts
                .len(),
            3
        );
    }

    #[test]
    fn bucket_ids_range() {
        let s = set_of(0..300);
        let mut n = 0;
        for b in 0..=255u8 {
            for id in s.bucket_ids(b) {
                assert_eq!(id.bucket(), b);
                n += 1;
            }
        }
        assert_eq!(n, 300);
    }
}
