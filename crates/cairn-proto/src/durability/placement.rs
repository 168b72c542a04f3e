//! Placement (durability.md §6, §8): HRW candidate order, `auto` resolution, the coordinator's
//! candidate walk, and claim resolution. Pure functions over values; no state.

use std::collections::BTreeSet;
use std::net::IpAddr;

use cairn_core::Cid;
use cairn_core::durability::policy::Policy;
use cairn_core::durability::{PeerId, hrw_score};

/// Largest slot count `auto` produces (N_MAX).
pub const AUTO_MAX_SLOTS: u32 = 20;
/// R for `auto` replication: min(6, S).
pub const AUTO_MAX_REPLICAS: u32 = 6;
/// `auto` uses erasure only from 16·K blocks (1 MiB per row at 64 KiB blocks).
pub const EC_BLOCKS_PER_ROW: u64 = 16;

/// The candidate order C(d): `eligible` sorted by score(`hrw`, d, peer), highest first, ties by
/// PeerId bytes ascending. Duplicates are removed.
pub fn candidate_order(dataset: &Cid, eligible: &[PeerId]) -> Vec<PeerId> {
    let mut scored: Vec<(u64, PeerId)> = eligible
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|p| (hrw_score(dataset, p), *p))
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().map(|(_, p)| p).collect()
}

/// `auto` cannot be resolved: no eligible storer (S = 0, REST 422 `unsatisfiable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no eligible storer: auto policy unsatisfiable")]
pub struct Unsatisfiable;

/// l0 for an erasure policy with M parity rows: max(1, M − 7).
pub fn repair_threshold(m: u32) -> u32 {
    m.saturating_sub(7).max(1)
}

/// Resolves `auto` from S eligible storers (the announcer included) and the plain manifest's
/// block count (§6).
///
/// With `erasure_enabled = false` (slice S1, before the protect step exists) the result is
/// always `replicate` with R = min(6, S). Otherwise the full §6 rule: n = min(20, S); n ≤ 6 or
/// fewer than 16·K blocks → `replicate` R = min(6, S); else K = ⌊n/3⌋ (7 ≤ n ≤ 13) or ⌊n/2⌋
/// (n ≥ 14), M = n − K, l0 = max(1, M − 7).
pub fn resolve_auto(s: u32, blocks: u64, erasure_enabled: bool) -> Result<Policy, Unsatisfiable> {
    if s == 0 {
        return Err(Unsatisfiable);
    }
    let replicate = Policy::Replicate {
        replicas: s.min(AUTO_MAX_REPLICAS),
    };
    if !erasure_enabled {
        return Ok(replicate);
    }
    let n = s.min(AUTO_MAX_SLOTS);
    if n <= 6 {
        return Ok(replicate);
    }
    let k = if n <= 13 { n / 3 } else { n / 2 };
    if blocks < EC_BLOCKS_PER_ROW * u64::from(k) {
        return Ok(replicate);
    }
    let m = n - k;
    Ok(Policy::Erasure {
        k,
        m,
        repair_at_missing: repair_threshold(m),
    })
}

/// A network prefix for the "one slot per /24 or /48" rule (§8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetPrefix {
    /// The first 3 bytes of a public IPv4 address.
    V4([u8; 3]),
    /// The first 6 bytes of a public IPv6 address.
    V6([u8; 6]),
}

/// The prefix of `ip`, or `None` for loopback, private, link-local and other non-public
/// ranges, which never match.
pub fn net_prefix(ip: IpAddr) -> Option<NetPrefix> {
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64
            {
                return None;
            }
            let o = v4.octets();
            Some(NetPrefix::V4([o[0], o[1], o[2]]))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return net_prefix(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // loopback, unspecified, unique local fc00::/7, link-local fe80::/10
            if v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
            {
                return None;
            }
            let o = v6.octets();
            Some(NetPrefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]]))
        }
    }
}

/// What the coordinator knows about one candidate, for the walk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CandidateInfo {
    /// Excluded by reputation (3 losses or failures in 30 d).
    pub excluded: bool,
    /// Declared lost for this dataset in the last 30 d.
    pub lost_for_dataset: bool,
    /// `free_log2` of its last beacon; `None` if no beacon yet (then never skipped for room).
    pub free_log2: Option<u32>,
    /// Holds, or was offered, a slot of this dataset.
    pub holds_or_offered: bool,
    /// Its known public network prefixes.
    pub prefixes: Vec<NetPrefix>,
}

/// The coordinator's walk over C(d) (§8): which candidate gets the next slot.
#[derive(Debug, Clone)]
pub struct Walk<'a> {
    /// C(d).
    pub order: &'a [PeerId],
    /// The slot size in bytes (blocksCount · blockSize for `replicate`, steps · blockSize for a
    /// row).
    pub slot_size: u64,
    /// Whether the dataset is `erasure` (allows the third pass).
    pub erasure: bool,
    /// Prefixes of the current holders of slots of this dataset.
    pub holder_prefixes: &'a [NetPrefix],
}

impl Walk<'_> {
    /// The next candidate for a slot, or `None` if none is left (the slot stays unclaimed).
    /// `info` describes a candidate. Pass 1 skips holders / offered nodes and shared prefixes;
    /// pass 2 drops the prefix rule; pass 3 (`erasure` only) allows holders of another row.
    /// Every pass skips excluded, recently lost and too-small candidates.
    pub fn next(&self, info: impl Fn(&PeerId) -> CandidateInfo) -> Option<PeerId> {
        let passes: &[u8] = if self.erasure { &[1, 2, 3] } else { &[1, 2] };
        for &pass in passes {
            for p in self.order {
                let c = info(p);
                if c.excluded || c.lost_for_dataset {
                    continue;
                }
                if let Some(f) = c.free_log2
                    && !room_for(f, self.slot_size)
                {
                    continue;
                }
                if pass < 3 && c.holds_or_offered {
                    continue;
                }
                if pass == 1 && c.prefixes.iter().any(|x| self.holder_prefixes.contains(x)) {
                    continue;
                }
                return Some(*p);
            }
        }
        None
    }
}

/// Whether 2^free_log2 bytes hold `slot_size` (free_log2 = 0 means "none": only an empty slot
/// fits).
pub fn room_for(free_log2: u32, slot_size: u64) -> bool {
    if free_log2 == 0 {
        return slot_size == 0;
    }
    free_log2 >= 64 || (1u64 << free_log2) >= slot_size
}

/// A valid claim of one slot, as claim resolution needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClaimKey {
    /// The claim's generation.
    pub generation: u32,
    /// The claimant.
    pub holder: PeerId,
}

/// The current holder among the valid claims of one slot (§8): highest generation, then the
/// higher score(`hrw`, d, ·), then (equal scores, practically never) the lower PeerId.
pub fn winner<'a>(
    dataset: &Cid,
    claims: impl IntoIterator<Item = &'a ClaimKey>,
) -> Option<ClaimKey> {
    claims
        .into_iter()
        .max_by(|a, b| {
            a.generation
                .cmp(&b.generation)
                .then_with(|| hrw_score(dataset, &a.holder).cmp(&hrw_score(dataset, &b.holder)))
                .then_with(|| b.holder.cmp(&a.holder))
        })
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::Codec;
    use cairn_core::durability::Keypair;

    fn peers(n: u8) -> Vec<PeerId> {
        (1..=n)
            .map(|i| Keypair::from_seed(&[i; 32]).peer_id())
            .collect()
    }

    fn cid(b: u8) -> Cid {
        Cid::new(Codec::Manifest, [b; 32])
    }

    #[test]
    fn order_is_by_score_then_peer() {
        let d = cid(1);
        let ps = peers(10);
        let order = candidate_order(&d, &ps);
        assert_eq!(order.len(), 10);
        for w in order.windows(2) {
            assert!(hrw_score(&d, &w[0]) >= hrw_score(&d, &w[1]));
        }
        let mut rev = ps.clone();
        rev.reverse();
        rev.push(ps[0]);
        assert_eq!(
            candidate_order(&d, &rev),
            order,
            "input order and duplicates do not matter"
        );
        assert_ne!(
            candidate_order(&cid(2), &ps),
            order,
            "another dataset, another order"
        );
    }

    #[test]
    fn auto_s1_is_replicate_min_6_s() {
        assert_eq!(resolve_auto(0, 1000, false), Err(Unsatisfiable));
        for s in 1..=30 {
            assert_eq!(
                resolve_auto(s, 1 << 20, false),
                Ok(Policy::Replicate { replicas: s.min(6) })
            );
        }
    }

    #[test]
    fn auto_full_rule_matches_spec_table() {
        let big = 1 << 20;
        assert_eq!(
            resolve_auto(6, big, true),
            Ok(Policy::Replicate { replicas: 6 })
        );
        let ec = |k, m, l0| {
            Ok(Policy::Erasure {
                k,
                m,
                repair_at_missing: l0,
            })
        };
        assert_eq!(resolve_auto(7, big, true), ec(2, 5, 1));
        assert_eq!(resolve_auto(8, big, true), ec(2, 6, 1));
        assert_eq!(resolve_auto(9, big, true), ec(3, 6, 1));
        assert_eq!(resolve_auto(10, big, true), ec(3, 7, 1));
        assert_eq!(resolve_auto(12, big, true), ec(4, 8, 1));
        assert_eq!(resolve_auto(14, big, true), ec(7, 7, 1));
        assert_eq!(resolve_auto(16, big, true), ec(8, 8, 1));
        assert_eq!(resolve_auto(18, big, true), ec(9, 9, 2));
        assert_eq!(resolve_auto(20, big, true), ec(10, 10, 3));
        assert_eq!(resolve_auto(500, big, true), ec(10, 10, 3));
        // Small datasets replicate: 16·K blocks needed.
        assert_eq!(
            resolve_auto(20, 159, true),
            Ok(Policy::Replicate { replicas: 6 })
        );
        assert_eq!(resolve_auto(20, 160, true), ec(10, 10, 3));
    }

    #[test]
    fn prefixes() {
        assert_eq!(net_prefix("127.0.0.1".parse().unwrap()), None);
        assert_eq!(net_prefix("10.1.2.3".parse().unwrap()), None);
        assert_eq!(net_prefix("192.168.1.1".parse().unwrap()), None);
        assert_eq!(net_prefix("::1".parse().unwrap()), None);
        assert_eq!(net_prefix("fd00::1".parse().unwrap()), None);
        assert_eq!(
            net_prefix("8.8.4.4".parse().unwrap()),
            Some(NetPrefix::V4([8, 8, 4]))
        );
        assert_eq!(
            net_prefix("2001:db8:1:2::1".parse().unwrap()),
            Some(NetPrefix::V6([0x20, 0x01, 0x0d, 0xb8, 0, 1]))
        );
        assert_eq!(
            net_prefix("::ffff:8.8.8.8".parse().unwrap()),
            Some(NetPrefix::V4([8, 8, 8]))
        );
    }

    #[test]
    fn walk_passes() {
        let ps = peers(4);
        let order = candidate_order(&cid(3), &ps);
        let pre = [NetPrefix::V4([1, 2, 3])];
        let walk = Walk {
            order: &order,
            slot_size: 1000,
            erasure: false,
            holder_prefixes: &pre,
        };
        // Nothing known: the first candidate.
        assert_eq!(walk.next(|_| CandidateInfo::default()), Some(order[0]));
        // Excluded, lost and too small candidates are skipped in every pass.
        let w = walk.next(|p| CandidateInfo {
            excluded: *p == order[0],
            lost_for_dataset: *p == order[1],
            free_log2: (*p == order[2]).then_some(9), // 512 B < 1000
            ..Default::default()
        });
        assert_eq!(w, Some(order[3]));
        // Pass 1 skips a shared prefix; pass 2 takes it when nothing else is left.
        let shared = |p: &PeerId| CandidateInfo {
            prefixes: vec![NetPrefix::V4([1, 2, 3])],
            holds_or_offered: *p != order[1],
            ..Default::default()
        };
        assert_eq!(walk.next(shared), Some(order[1]));
        let mixed = |p: &PeerId| CandidateInfo {
            prefixes: if *p == order[0] {
                vec![NetPrefix::V4([1, 2, 3])]
            } else {
                vec![]
            },
            ..Default::default()
        };
        assert_eq!(walk.next(mixed), Some(order[1]));
        // Holders are skipped; replicate never reuses one (no third pass).
        let all_hold = |_: &PeerId| CandidateInfo {
            holds_or_offered: true,
            ..Default::default()
        };
        assert_eq!(walk.next(all_hold), None);
        let ec = Walk {
            erasure: true,
            ..walk
        };
        assert_eq!(ec.next(all_hold), Some(order[0]));
        assert!(room_for(10, 1024));
        assert!(!room_for(10, 1025));
        assert!(!room_for(0, 1));
        assert!(room_for(64, u64::MAX));
    }

    #[test]
    fn claim_winner() {
        let d = cid(4);
        let ps = peers(3);
        let mut by_score = ps.clone();
        by_score.sort_by_key(|p| std::cmp::Reverse(hrw_score(&d, p)));
        let claims = [
            ClaimKey {
                generation: 0,
                holder: by_score[0],
            },
            ClaimKey {
                generation: 0,
                holder: by_score[1],
            },
        ];
        assert_eq!(winner(&d, &claims).map(|c| c.holder), Some(by_score[0]));
        let claims2 = [
            claims[0],
            claims[1],
            ClaimKey {
                generation: 1,
                holder: by_score[2],
            },
        ];
        assert_eq!(winner(&d, &claims2).map(|c| c.holder), Some(by_score[2]));
        assert_eq!(winner(&d, &[]), None);
    }
}
