//! Swarm and dataset policies: validity rules and the typed form of a resolved dataset policy
//! (durability.md §5, §6, §14).

use super::messages as pb;

/// Largest K + M of an explicit `erasure` policy.
pub const MAX_EC_SLOTS: u32 = 64;
/// Largest R of an explicit `replicate` policy.
pub const MAX_REPLICAS: u32 = 16;
/// 10 GiB, the API default of `max_dataset_bytes`.
pub const DEFAULT_MAX_DATASET_BYTES: u64 = 10 << 30;
/// 72 h, the default `lost_after_secs`.
pub const DEFAULT_LOST_AFTER_SECS: u32 = 72 * 3600;

/// Checks a `SwarmPolicy`: known enums, `dataset_shards` a power of two in 1..=256, non-zero
/// `lost_after_secs` and `max_dataset_bytes`, and a default policy that is `none`, `auto` or a
/// valid explicit policy.
pub fn check_swarm_policy(p: &pb::SwarmPolicy) -> Result<(), &'static str> {
    match pb::Admission::try_from(p.admission) {
        Ok(pb::Admission::Invite | pb::Admission::Open) => {}
        _ => return Err("admission unspecified"),
    }
    match pb::AnnouncerRule::try_from(p.announcers) {
        Ok(pb::AnnouncerRule::AnyMember | pb::AnnouncerRule::AdminsOnly) => {}
        _ => return Err("announcers unspecified"),
    }
    if !(1..=256).contains(&p.dataset_shards) || !p.dataset_shards.is_power_of_two() {
        return Err("dataset_shards is not a power of two in 1..256");
    }
    if p.lost_after_secs == 0 {
        return Err("lost_after_secs is zero");
    }
    if p.max_dataset_bytes == 0 {
        return Err("max_dataset_bytes is zero");
    }
    let dp = p.default_policy.as_ref().ok_or("no default policy")?;
    if pb::PolicyKind::try_from(dp.kind) != Ok(pb::PolicyKind::Auto) {
        Policy::from_proto(dp)?;
    }
    Ok(())
}

/// The policy `POST /swarms` writes when the request sets nothing but the admission mode and the
/// shard count (§5).
pub fn default_swarm_policy(open: bool, dataset_shards: u32) -> pb::SwarmPolicy {
    pb::SwarmPolicy {
        admission: if open {
            pb::Admission::Open
        } else {
            pb::Admission::Invite
        } as i32,
        announcers: pb::AnnouncerRule::AnyMember as i32,
        default_policy: Some(pb::DurabilityPolicy {
            kind: pb::PolicyKind::Auto as i32,
            ..Default::default()
        }),
        max_dataset_bytes: DEFAULT_MAX_DATASET_BYTES,
        lost_after_secs: DEFAULT_LOST_AFTER_SECS,
        dataset_shards,
        auto_fetch_none: true,
        min_member_age_secs: if open { 7 * 86_400 } else { 86_400 },
    }
}

/// A resolved dataset policy, as a `DatasetAnnounce` carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    /// No slots, no promise.
    None,
    /// `replicas` full copies.
    Replicate {
        /// R, 1..=16.
        replicas: u32,
    },
    /// K + M rows of the stepped layout.
    Erasure {
        /// K ≥ 2.
        k: u32,
        /// M ≥ 1.
        m: u32,
        /// l0, the repair threshold, 1..=M.
        repair_at_missing: u32,
    },
}

impl Policy {
    /// Reads a resolved policy. `auto` and unspecified kinds are refused, as are R outside
    /// 1..=16, K < 2, M < 1, K + M > 64, l0 outside 1..=M, and `repair_at_missing` ≠ 1 for
    /// `replicate` ("REPLICATE uses 1"). Fields that the kind does not use must be zero.
    pub fn from_proto(p: &pb::DurabilityPolicy) -> Result<Policy, &'static str> {
        match pb::PolicyKind::try_from(p.kind) {
            Ok(pb::PolicyKind::None) => {
                if p.replicas != 0 || p.ec_k != 0 || p.ec_m != 0 || p.repair_at_missing != 0 {
                    return Err("none policy with parameters");
                }
                Ok(Policy::None)
            }
            Ok(pb::PolicyKind::Replicate) => {
                if !(1..=MAX_REPLICAS).contains(&p.replicas) {
                    return Err("replicas outside 1..16");
                }
                if p.ec_k != 0 || p.ec_m != 0 || p.repair_at_missing != 1 {
                    return Err("replicate policy with erasure parameters or l0 != 1");
                }
                Ok(Policy::Replicate {
                    replicas: p.replicas,
                })
            }
            Ok(pb::PolicyKind::Erasure) => {
                let (k, m, l0) = (p.ec_k, p.ec_m, p.repair_at_missing);
                if k < 2 || m < 1 || k.saturating_add(m) > MAX_EC_SLOTS {
                    return Err("erasure K/M outside limits");
                }
                if !(1..=m).contains(&l0) || p.replicas != 0 {
                    return Err("erasure l0 outside 1..M");
                }
                Ok(Policy::Erasure {
                    k,
                    m,
                    repair_at_missing: l0,
                })
            }
            Ok(pb::PolicyKind::Auto) => Err("auto is not a resolved policy"),
            _ => Err("unspecified policy kind"),
        }
    }

    /// The wire form.
    pub fn to_proto(&self) -> pb::DurabilityPolicy {
        match *self {
            Policy::None => pb::DurabilityPolicy {
                kind: pb::PolicyKind::None as i32,
                ..Default::default()
            },
            Policy::Replicate { replicas } => pb::DurabilityPolicy {
                kind: pb::PolicyKind::Replicate as i32,
                replicas,
                repair_at_missing: 1,
                ..Default::default()
            },
            Policy::Erasure {
                k,
                m,
                repair_at_missing,
            } => pb::DurabilityPolicy {
                kind: pb::PolicyKind::Erasure as i32,
                ec_k: k,
                ec_m: m,
                repair_at_missing,
                ..Default::default()
            },
        }
    }

    /// Number of slots: 0, R or K + M.
    pub fn slots(&self) -> u32 {
        match *self {
            Policy::None => 0,
            Policy::Replicate { replicas } => replicas,
            Policy::Erasure { k, m, .. } => k + m,
        }
    }

    /// K: the slots needed to read the data (1 for `replicate`, 0 for `none`).
    pub fn k(&self) -> u32 {
        match *self {
            Policy::None => 0,
            Policy::Replicate { .. } => 1,
            Policy::Erasure { k, .. } => k,
        }
    }

    /// l0: repair is due when this many slots are missing (1 for `replicate`).
    pub fn repair_at_missing(&self) -> u32 {
        match *self {
            Policy::None => 0,
            Policy::Replicate { .. } => 1,
            Policy::Erasure {
                repair_at_missing, ..
            } => repair_at_missing,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swarm_policy_rules() {
        let ok = default_swarm_policy(false, 16);
        assert_eq!(check_swarm_policy(&ok), Ok(()));
        let mut p = ok.clone();
        p.admission = 0;
        assert!(check_swarm_policy(&p).is_err());
        let mut p = ok.clone();
        p.announcers = 7;
        assert!(check_swarm_policy(&p).is_err());
        for bad in [0, 3, 512] {
            let mut p = ok.clone();
            p.dataset_shards = bad;
            assert!(check_swarm_policy(&p).is_err(), "{bad}");
        }
        let mut p = ok.clone();
        p.dataset_shards = 256;
        assert!(check_swarm_policy(&p).is_ok());
        let mut p = ok.clone();
        p.lost_after_secs = 0;
        assert!(check_swarm_policy(&p).is_err());
        let mut p = ok.clone();
        p.max_dataset_bytes = 0;
        assert!(check_swarm_policy(&p).is_err());
        let mut p = ok;
        p.default_policy = None;
        assert!(check_swarm_policy(&p).is_err());
    }

    #[test]
    fn dataset_policy_rules() {
        for p in [
            Policy::None,
            Policy::Replicate { replicas: 6 },
            Policy::Erasure {
                k: 10,
                m: 10,
                repair_at_missing: 3,
            },
        ] {
            assert_eq!(Policy::from_proto(&p.to_proto()), Ok(p));
        }
        let bad = |kind: pb::PolicyKind, replicas, ec_k, ec_m, l0| pb::DurabilityPolicy {
            kind: kind as i32,
            replicas,
            ec_k,
            ec_m,
            repair_at_missing: l0,
        };
        use pb::PolicyKind::*;
        for p in [
            bad(Auto, 0, 0, 0, 0),
            bad(Unspecified, 0, 0, 0, 0),
            bad(Replicate, 0, 0, 0, 1),
            bad(Replicate, 17, 0, 0, 1),
            bad(Replicate, 3, 0, 0, 0),
            bad(Erasure, 0, 1, 1, 1),
            bad(Erasure, 0, 40, 25, 1),
            bad(Erasure, 0, 4, 4, 5),
            bad(Erasure, 0, 4, 4, 0),
            bad(None, 1, 0, 0, 0),
        ] {
            assert!(Policy::from_proto(&p).is_err(), "{p:?}");
        }
        assert_eq!(Policy::Replicate { replicas: 4 }.slots(), 4);
        assert_eq!(
            Policy::Erasure {
                k: 3,
                m: 7,
                repair_at_missing: 1
            }
            .slots(),
            10
        );
    }
}
