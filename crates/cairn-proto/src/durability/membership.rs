//! The member view (durability.md §5): genesis, certificates, join / leave / revoke, policy
//! updates, signals and member states.
//!
//! [`View`] is built from membership facts (the ctl scope) plus local observations (when a member
//! was first seen and last heard from). Facts are applied with [`View::apply`], which returns
//! the §18 [`Outcome`]; beacons go through [`View::apply_beacon`]; any other valid envelope a
//! member signed is a signal ([`View::signal`]).
//!
//! Order independence: terminal states absorb (a Revoke upgrades a Departed member, a Leave never
//! downgrades a Revoked one), the latest Join by `(issued_at, fact id)` sets the storer flag and
//! the policy with the highest `(seq, fact id)` wins, so two views that accepted the same set of
//! facts agree on every member's state, role and storer flag, whatever the arrival order. A fact
//! rejected because a prerequisite had not arrived yet (a Leave before its Join) is accepted when
//! anti-entropy delivers it again.

use std::collections::BTreeMap;

use cairn_core::durability::messages as pb;
use cairn_core::durability::policy::check_swarm_policy;
use cairn_core::durability::{Body, Envelope, FactId, Kind, PeerId, SwarmId, VerifiedGenesis};

use super::Params;
use super::validate::{Origin, Outcome, timestamp_ok};

/// Beacon flag bit 0: the member is exiting.
pub const FLAG_EXITING: u32 = 1;
/// Beacon flag bit 1: the member has low bandwidth.
pub const FLAG_LOW_BANDWIDTH: u32 = 2;

/// A member's lifecycle state (§5). Present / Absent is derived from signals, see
/// [`View::presence`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberState {
    /// Joined (or the owner), not departed or revoked.
    Active,
    /// Left with `Leave`. Terminal.
    Departed,
    /// Revoked by the owner or an admin. Terminal.
    Revoked,
}

/// Whether an Active member is heard from (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Presence {
    /// A signal within 3·H(N).
    Present,
    /// No signal for 3·H(N).
    Absent,
    /// ≥ 2 valid LostVotes (S2; never in S1).
    Lost,
}

/// The latest beacon of a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BeaconInfo {
    /// Its incarnation.
    pub incarnation: u64,
    /// Its sequence number within the incarnation.
    pub seq: u64,
    /// Local time (unix s) it was accepted, for the H/4 rate limit.
    pub received_at: u64,
    /// floor(log2(free bytes)); 0 = none.
    pub free_log2: u32,
    /// Slots the member says it holds.
    pub slots_held: u32,
    /// Its holdings digest (16 bytes).
    pub holdings_digest: Vec<u8>,
    /// Flags (bit 0 EXITING, bit 1 LOW_BANDWIDTH).
    pub flags: u32,
}

/// One member record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Lifecycle state.
    pub state: MemberState,
    /// Storer (may hold slots) or light, from the latest Join or beacon.
    pub storer: bool,
    /// Highest incarnation seen in a Join or beacon.
    pub incarnation: u64,
    /// `(issued_at, fact id)` of the Join that set `storer`, if any.
    join_key: Option<(u64, FactId)>,
    /// Local: when this node first saw the member (unix s). Member age counts from here.
    pub first_seen: u64,
    /// Local: the member's last signal (unix s).
    pub last_signal: u64,
    /// The latest accepted beacon.
    pub beacon: Option<BeaconInfo>,
}

impl Member {
    fn new(now: u64) -> Member {
        Member {
            state: MemberState::Active,
            storer: false,
            incarnation: 0,
            join_key: None,
            first_seen: now,
            last_signal: now,
            beacon: None,
        }
    }

    /// Whether its latest beacon says EXITING.
    pub fn exiting(&self) -> bool {
        self.beacon
            .as_ref()
            .is_some_and(|b| b.flags & FLAG_EXITING != 0)
    }
}

/// The validity window of a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Window {
    issued_at: u64,
    expires_at: u64,
}

impl Window {
    fn contains(&self, t: u64) -> bool {
        self.issued_at <= t && (self.expires_at == 0 || t <= self.expires_at)
    }
}

/// What a membership fact changed, for the caller (events, health re-evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Nothing visible (a re-join, a standalone cert, a stale policy).
    None,
    /// A member became Active.
    Joined(PeerId),
    /// A member departed.
    Departed(PeerId),
    /// A member was revoked.
    Revoked(PeerId),
    /// The swarm policy changed.
    Policy,
}

/// The member view of one swarm.
#[derive(Debug, Clone)]
pub struct View {
    genesis: VerifiedGenesis,
    policy: pb::SwarmPolicy,
    policy_key: (u64, FactId),
    members: BTreeMap<PeerId, Member>,
    admins: BTreeMap<PeerId, Vec<Window>>,
}

impl View {
    /// A view holding only the genesis: the owner is an Active member, first seen at `now_unix`.
    pub fn new(genesis: VerifiedGenesis, now_unix: u64) -> View {
        let policy = genesis.genesis.policy.clone().unwrap_or_default();
        let mut members = BTreeMap::new();
        members.insert(genesis.owner, Member::new(now_unix));
        View {
            genesis,
            policy,
            policy_key: (0, FactId([0; 32])),
            members,
            admins: BTreeMap::new(),
        }
    }

    /// The swarm id.
    pub fn swarm_id(&self) -> SwarmId {
        self.genesis.swarm_id
    }

    /// The verified genesis.
    pub fn genesis(&self) -> &VerifiedGenesis {
        &self.genesis
    }

    /// The owner.
    pub fn owner(&self) -> PeerId {
        self.genesis.owner
    }

    /// The current swarm policy (genesis, or the PolicyUpdate with the highest seq).
    pub fn policy(&self) -> &pb::SwarmPolicy {
        &self.policy
    }

    /// The seq of the current policy (0 = genesis).
    pub fn policy_seq(&self) -> u64 {
        self.policy_key.0
    }

    /// A member record.
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
        self.members.get(peer)
    }

    /// All member records, in PeerId order.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, &Member)> {
        self.members.iter()
    }

    /// Whether `peer` is an Active member.
    pub fn is_active(&self, peer: &PeerId) -> bool {
        self.members
            .get(peer)
            .is_some_and(|m| m.state == MemberState::Active)
    }

    /// Whether `peer` is an Active storer.
    pub fn is_active_storer(&self, peer: &PeerId) -> bool {
        self.members
            .get(peer)
            .is_some_and(|m| m.state == MemberState::Active && m.storer)
    }

    /// Whether `peer` holds an owner-signed admin certificate valid at `at`.
    pub fn is_admin_at(&self, peer: &PeerId, at: u64) -> bool {
        self.admins
            .get(peer)
            .is_some_and(|ws| ws.iter().any(|w| w.contains(at)))
    }

    /// Whether `peer` holds any known admin certificate.
    pub fn is_admin(&self, peer: &PeerId) -> bool {
        self.admins.contains_key(peer)
    }

    /// Whether `peer` may act as the owner or an admin at time `at`.
    pub fn is_owner_or_admin_at(&self, peer: &PeerId, at: u64) -> bool {
        *peer == self.owner() || self.is_admin_at(peer, at)
    }

    /// Number of Active storers (N in H(N)).
    pub fn active_storers(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.state == MemberState::Active && m.storer)
            .count()
    }

    /// H(N) in seconds: max(5 min, 12.5 s × N), or the configured override.
    pub fn beacon_interval_secs(&self, params: &Params) -> u64 {
        params
            .beacon_interval_secs
            .unwrap_or_else(|| beacon_interval_secs(self.active_storers()))
    }

    /// Present or Absent (no signal for 3·H(N)). Lost never happens in S1.
    pub fn presence(&self, peer: &PeerId, now_unix: u64, params: &Params) -> Option<Presence> {
        let m = self
            .members
            .get(peer)
            .filter(|m| m.state == MemberState::Active)?;
        let window = 3 * self.beacon_interval_secs(params);
        Some(if now_unix.saturating_sub(m.last_signal) <= window {
            Presence::Present
        } else {
            Presence::Absent
        })
    }

    /// The eligible storers (§5): Active storers, not Lost, not EXITING, member age ≥
    /// `min_member_age_secs` of the policy, a signal within ELIGIBLE_WINDOW = max(7 d, 3·H(N)).
    pub fn eligible_storers(&self, now_unix: u64, params: &Params) -> Vec<PeerId> {
        let window = params
            .eligible_window_secs
            .unwrap_or_else(|| (7 * 86_400).max(3 * self.beacon_interval_secs(params)));
        let min_age = u64::from(self.policy.min_member_age_secs);
        self.members
            .iter()
            .filter(|(_, m)| {
                m.state == MemberState::Active
                    && m.storer
                    && !m.exiting()
                    && now_unix.saturating_sub(m.first_seen) >= min_age
                    && now_unix.saturating_sub(m.last_signal) <= window
            })
            .map(|(p, _)| *p)
            .collect()
    }

    /// Records a signal from `peer` at `now_unix` (any valid envelope it signed, a beacon, an
    /// ack). Unknown peers are not recorded.
    pub fn signal(&mut self, peer: &PeerId, now_unix: u64) {
        if let Some(m) = self.members.get_mut(peer) {
            m.last_signal = m.last_signal.max(now_unix);
        }
    }

    /// Restores the local observations of a member (after a restart).
    pub fn restore_local(&mut self, peer: &PeerId, first_seen: u64, last_signal: u64) {
        if let Some(m) = self.members.get_mut(peer) {
            m.first_seen = first_seen;
            m.last_signal = last_signal;
        }
    }

    /// Applies a membership fact (kinds MemberCert, Join, Leave, Revoke, PolicyUpdate). The
    /// envelope's swarm and topic were checked by the caller. On `Err` nothing changed.
    pub fn apply(
        &mut self,
        now_unix: u64,
        origin: Origin,
        env: &Envelope,
        body: &Body,
    ) -> Result<Change, Outcome> {
        let signer = env.signer();
        match body {
            Body::MemberCert(cert) => {
                let window = self.check_cert(env, cert, now_unix, origin)?;
                if cert.admin {
                    let member = peer_field(&cert.member)?;
                    self.add_admin(member, window);
                }
                Ok(Change::None)
            }
            Body::Join {
                join,
                cert,
                admin_cert,
            } => self.apply_join(
                now_unix,
                origin,
                env,
                join,
                cert.as_ref(),
                admin_cert.as_ref(),
            ),
            Body::Leave(leave) => {
                if !timestamp_ok(origin, now_unix, leave.issued_at) {
                    return Err(Outcome::ignore("timestamp outside now ± 1 h"));
                }
                if leave.reason.len() > 128 {
                    return Err(Outcome::malformed("leave reason over 128 bytes"));
                }
                if !self.is_active(&signer) {
                    return Err(Outcome::not_member("leave from a non-member"));
                }
                if let Some(m) = self.members.get_mut(&signer) {
                    m.state = MemberState::Departed;
                }
                Ok(Change::Departed(signer))
            }
            Body::Revoke(revoke) => {
                if !timestamp_ok(origin, now_unix, revoke.issued_at) {
                    return Err(Outcome::ignore("timestamp outside now ± 1 h"));
                }
                let target = peer_field(&revoke.member)?;
                if !self.is_active(&signer) || !self.is_owner_or_admin_at(&signer, revoke.issued_at)
                {
                    return Err(Outcome::not_member("revoke by neither owner nor admin"));
                }
                if target == self.owner() {
                    return Err(Outcome::not_member("nobody may revoke the owner"));
                }
                if signer != self.owner() && self.is_admin(&target) {
                    return Err(Outcome::not_member("only the owner may revoke an admin"));
                }
                let m = self
                    .members
                    .entry(target)
                    .or_insert_with(|| Member::new(now_unix));
                m.state = MemberState::Revoked;
                Ok(Change::Revoked(target))
            }
            Body::PolicyUpdate(update) => {
                if !timestamp_ok(origin, now_unix, update.issued_at) {
                    return Err(Outcome::ignore("timestamp outside now ± 1 h"));
                }
                if signer != self.owner() {
                    return Err(Outcome::not_member("policy update not signed by the owner"));
                }
                let policy = update
                    .policy
                    .as_ref()
                    .ok_or(Outcome::malformed("policy update without policy"))?;
                check_swarm_policy(policy).map_err(Outcome::malformed)?;
                let genesis_shards = self
                    .genesis
                    .genesis
                    .policy
                    .as_ref()
                    .map_or(1, |p| p.dataset_shards);
                if policy.dataset_shards != genesis_shards {
                    return Err(Outcome::malformed("policy update changes dataset_shards"));
                }
                if update.seq == 0 {
                    return Err(Outcome::malformed("policy update with seq 0"));
                }
                let key = (update.seq, env.id());
                if key > self.policy_key {
                    self.policy = policy.clone();
                    self.policy_key = key;
                    Ok(Change::Policy)
                } else {
                    Ok(Change::None)
                }
            }
            _ => Err(Outcome::mismatch("not a membership fact")),
        }
    }

    fn apply_join(
        &mut self,
        now_unix: u64,
        origin: Origin,
        env: &Envelope,
        join: &pb::Join,
        cert: Option<&Envelope>,
        admin_cert: Option<&Envelope>,
    ) -> Result<Change, Outcome> {
        let signer = env.signer();
        if !timestamp_ok(origin, now_unix, join.issued_at) {
            return Err(Outcome::ignore("timestamp outside now ± 1 h"));
        }
        if let Some(m) = self.members.get(&signer)
            && m.state != MemberState::Active
        {
            return Err(Outcome::not_member(
                "join from a departed or revoked PeerId",
            ));
        }
        let open = self.policy.admission == pb::Admission::Open as i32;
        let mut learnt_admin = Vec::new();
        match cert {
            None if signer == self.owner() || open => {}
            None => {
                return Err(Outcome::not_member(
                    "join without a certificate in an invite swarm",
                ));
            }
            Some(cert_env) => {
                let Ok(Body::MemberCert(c)) = cert_env.body() else {
                    return Err(Outcome::malformed("join cert is not a MemberCert"));
                };
                if c.member != signer.as_bytes() {
                    return Err(Outcome::malformed("join cert names another member"));
                }
                let issuer = cert_env.signer();
                let window = Window {
                    issued_at: c.issued_at,
                    expires_at: c.expires_at,
                };
                if !window.contains(join.issued_at) {
                    return Err(Outcome::not_member(
                        "join cert not valid at the join's issued_at",
                    ));
                }
                if issuer == self.owner() {
                    if c.admin {
                        learnt_admin.push((signer, window));
                    }
                } else {
                    if c.admin {
                        return Err(Outcome::not_member("admin cert not issued by the owner"));
                    }
                    // The issuer's admin cert: carried, or already known.
                    let mut issuer_ok = false;
                    if let Some(ac_env) = admin_cert {
                        let Ok(Body::MemberCert(ac)) = ac_env.body() else {
                            return Err(Outcome::malformed("admin cert is not a MemberCert"));
                        };
                        let aw = Window {
                            issued_at: ac.issued_at,
                            expires_at: ac.expires_at,
                        };
                        if ac_env.signer() == self.owner()
                            && ac.admin
                            && ac.member == issuer.as_bytes()
                            && aw.contains(c.issued_at)
                            && aw.contains(join.issued_at)
                        {
                            issuer_ok = true;
                            learnt_admin.push((issuer, aw));
                        }
                    }
                    let known_admin = self.is_admin_at(&issuer, c.issued_at)
                        && self.is_admin_at(&issuer, join.issued_at);
                    if !issuer_ok && !known_admin {
                        return Err(Outcome::not_member("join cert issuer is not an admin"));
                    }
                }
            }
        }
        for (p, w) in learnt_admin {
            self.add_admin(p, w);
        }
        let existed = self.members.contains_key(&signer);
        let m = self
            .members
            .entry(signer)
            .or_insert_with(|| Member::new(now_unix));
        let key = (join.issued_at, env.id());
        if m.join_key.is_none_or(|k| key > k) {
            m.join_key = Some(key);
            m.storer = join.storer;
        }
        m.incarnation = m.incarnation.max(join.incarnation);
        m.last_signal = m.last_signal.max(now_unix);
        Ok(if existed {
            Change::None
        } else {
            Change::Joined(signer)
        })
    }

    /// Checks a standalone MemberCert: signed by the owner (any cert) or by an admin valid at
    /// the cert's `issued_at` (non-admin certs only).
    fn check_cert(
        &self,
        env: &Envelope,
        cert: &pb::MemberCert,
        now_unix: u64,
        origin: Origin,
    ) -> Result<Window, Outcome> {
        if !timestamp_ok(origin, now_unix, cert.issued_at) {
            return Err(Outcome::ignore("timestamp outside now ± 1 h"));
        }
        peer_field(&cert.member)?;
        let issuer = env.signer();
        let ok = if cert.admin {
            issuer == self.owner()
        } else {
            self.is_active(&issuer) && self.is_owner_or_admin_at(&issuer, cert.issued_at)
        };
        if !ok {
            return Err(Outcome::not_member(
                "certificate issuer is neither owner nor admin",
            ));
        }
        Ok(Window {
            issued_at: cert.issued_at,
            expires_at: cert.expires_at,
        })
    }

    fn add_admin(&mut self, peer: PeerId, window: Window) {
        let ws = self.admins.entry(peer).or_default();
        if !ws.contains(&window) {
            ws.push(window);
            ws.sort();
        }
    }

    /// Applies a beacon (not a fact): checks the signer, the `sent_at` window, staleness and
    /// the H/4 rate limit, then records presence, capacity, flags and the storer bit. Returns
    /// the previous beacon's holdings digest on success.
    pub fn apply_beacon(
        &mut self,
        now_unix: u64,
        origin: Origin,
        signer: PeerId,
        beacon: &pb::Beacon,
        params: &Params,
    ) -> Result<(), Outcome> {
        if !self.is_active(&signer) {
            return Err(Outcome::not_member("beacon from a non-member"));
        }
        if beacon.holdings_digest.len() != 16 {
            return Err(Outcome::malformed("holdings digest is not 16 bytes"));
        }
        if !timestamp_ok(origin, now_unix, beacon.sent_at) {
            return Err(Outcome::ignore("timestamp outside now ± 1 h"));
        }
        let min_gap = self.beacon_interval_secs(params) / 4;
        let Some(m) = self.members.get_mut(&signer) else {
            return Err(Outcome::not_member("beacon from a non-member"));
        };
        if beacon.incarnation < m.incarnation {
            return Err(Outcome::ignore("beacon with a stale incarnation"));
        }
        if let Some(prev) = &m.beacon
            && beacon.incarnation == prev.incarnation
        {
            if beacon.seq <= prev.seq {
                return Err(Outcome::ignore("beacon with a stale seq"));
            }
            if now_unix.saturating_sub(prev.received_at) < min_gap {
                return Err(Outcome::rate_limited(signer, "beacons more often than H/4"));
            }
        }
        m.incarnation = beacon.incarnation;
        m.storer = beacon.storer;
        m.last_signal = m.last_signal.max(now_unix);
        m.beacon = Some(BeaconInfo {
            incarnation: beacon.incarnation,
            seq: beacon.seq,
            received_at: now_unix,
            free_log2: beacon.free_log2,
            slots_held: beacon.slots_held,
            holdings_digest: beacon.holdings_digest.clone(),
            flags: beacon.flags,
        });
        Ok(())
    }
}

/// H(N) = max(5 min, 12.5 s × N), in seconds (rounded down).
pub fn beacon_interval_secs(active_storers: usize) -> u64 {
    (active_storers as u64)
        .saturating_mul(25)
        .div_euclid(2)
        .max(300)
}

/// Parses a PeerId field of a payload (§18: an invalid value is a malformed message).
pub(crate) fn peer_field(bytes: &[u8]) -> Result<PeerId, Outcome> {
    PeerId::from_bytes(bytes).map_err(|_| Outcome::malformed("invalid PeerId field"))
}

/// The kinds [`View::apply`] handles.
pub fn is_membership_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::MemberCert | Kind::Join | Kind::Leave | Kind::Revoke | Kind::PolicyUpdate
    )
}
