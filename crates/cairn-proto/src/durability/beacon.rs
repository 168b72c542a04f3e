//! Beacons (durability.md §9, the Beacon paragraph): the interval H(N), jitter, the holdings
//! digest, and the sender's incarnation / sequence bookkeeping.
//!
//! Receiving a beacon is [`View::apply_beacon`](super::membership::View::apply_beacon) (signer,
//! window, staleness, H/4 rate limit); comparing its digest with the claim table is
//! [`digest_mismatch`].

use cairn_core::Cid;
use cairn_core::durability::messages as pb;
use sha2::{Digest as _, Sha256};

use super::Rng;

pub use super::membership::{FLAG_EXITING, FLAG_LOW_BANDWIDTH, beacon_interval_secs};

/// The holdings digest: the first 16 bytes of SHA-256 over the ascending concatenation of
/// `DatasetCid ‖ u32be(slot) ‖ u32be(generation)` for every slot held (spares excluded). With no
/// slots it is the prefix of SHA-256 of the empty string. Input order does not matter.
pub fn holdings_digest<'a>(slots: impl IntoIterator<Item = &'a (Cid, u32, u32)>) -> [u8; 16] {
    let mut items: Vec<[u8; 46]> = slots
        .into_iter()
        .map(|(d, s, g)| {
            let mut b = [0u8; 46];
            b[..38].copy_from_slice(&d.to_bytes());
            b[38..42].copy_from_slice(&s.to_be_bytes());
            b[42..].copy_from_slice(&g.to_be_bytes());
            b
        })
        .collect();
    items.sort_unstable();
    items.dedup();
    let mut h = Sha256::new();
    for i in &items {
        h.update(i);
    }
    let full = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&full[..16]);
    out
}

/// Whether shard `s` is set in a 32-byte probe / holdings mask (bit s mod 8, LSB first, of byte
/// s div 8). An empty mask means every shard.
pub fn mask_has(mask: &[u8], shard: u32) -> bool {
    if mask.is_empty() {
        return true;
    }
    mask.get((shard / 8) as usize)
        .is_some_and(|b| b & (1 << (shard % 8)) != 0)
}

/// Whether a beacon's digest disagrees with what the claim table says the signer holds (the
/// receiver then sends a HoldingsQuery). Only meaningful for a receiver following every shard.
pub fn digest_mismatch(beacon_digest: &[u8], claimed: &[(Cid, u32, u32)]) -> bool {
    beacon_digest != holdings_digest(claimed)
}

/// H(N) ± 10 %, in milliseconds.
pub fn jittered_interval_ms(h_secs: u64, rng: &mut Rng) -> u64 {
    let base = h_secs.saturating_mul(1000);
    let spread = base / 10;
    base - spread + rng.below(2 * spread + 1)
}

/// The sender side: incarnation and a strictly increasing seq per incarnation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sender {
    /// Current incarnation (persisted; +1 at every start and refutation).
    pub incarnation: u64,
    /// Last seq sent in this incarnation.
    pub seq: u64,
}

impl Sender {
    /// A sender at `incarnation` that has not beaconed yet.
    pub fn new(incarnation: u64) -> Sender {
        Sender {
            incarnation,
            seq: 0,
        }
    }

    /// Bumps the incarnation (start, refutation) and restarts the seq.
    pub fn bump(&mut self) {
        self.incarnation += 1;
        self.seq = 0;
    }

    /// The next beacon.
    pub fn next(
        &mut self,
        now_unix: u64,
        storer: bool,
        free_log2: u32,
        held: &[(Cid, u32, u32)],
        flags: u32,
    ) -> pb::Beacon {
        self.seq += 1;
        pb::Beacon {
            incarnation: self.incarnation,
            seq: self.seq,
            sent_at: now_unix,
            storer,
            free_log2,
            slots_held: u32::try_from(held.len()).unwrap_or(u32::MAX),
            holdings_digest: holdings_digest(held).to_vec(),
            flags,
        }
    }
}

/// floor(log2(free bytes)), 0 when nothing is free.
pub fn free_log2(free_bytes: u64) -> u32 {
    free_bytes.checked_ilog2().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_core::Codec;
    use cairn_core::cid::sha256;

    #[test]
    fn interval_formula() {
        assert_eq!(beacon_interval_secs(0), 300);
        assert_eq!(beacon_interval_secs(10), 300);
        assert_eq!(beacon_interval_secs(1000), 12_500); // 3.5 h
        assert_eq!(beacon_interval_secs(10_000), 125_000); // 35 h
    }

    #[test]
    fn jitter_within_ten_percent() {
        let mut rng = Rng::new(1);
        for _ in 0..1000 {
            let v = jittered_interval_ms(300, &mut rng);
            assert!((270_000..=330_000).contains(&v), "{v}");
        }
    }

    #[test]
    fn digest_rules() {
        assert_eq!(holdings_digest(&[]), sha256(b"")[..16]);
        let a = (Cid::new(Codec::Manifest, [1; 32]), 0, 0);
        let b = (Cid::new(Codec::Manifest, [2; 32]), 3, 1);
        assert_eq!(holdings_digest(&[a, b]), holdings_digest(&[b, a]));
        let mut concat = Vec::new();
        for (d, s, g) in [a, b] {
            concat.extend_from_slice(&d.to_bytes());
            concat.extend_from_slice(&s.to_be_bytes());
            concat.extend_from_slice(&g.to_be_bytes());
        }
        assert_eq!(holdings_digest(&[b, a]), sha256(&concat)[..16]);
        assert!(digest_mismatch(&holdings_digest(&[a]), &[a, b]));
        assert!(!digest_mismatch(&holdings_digest(&[a, b]), &[b, a]));
    }

    #[test]
    fn masks() {
        let mut m = [0u8; 32];
        m[1] = 0b0000_0100; // shard 10
        assert!(mask_has(&m, 10));
        assert!(!mask_has(&m, 9));
        assert!(!mask_has(&m, 300));
        assert!(mask_has(&[], 7));
    }

    #[test]
    fn sender_seq_and_incarnation() {
        let mut s = Sender::new(4);
        let b1 = s.next(10, true, 30, &[], 0);
        let b2 = s.next(20, true, 30, &[], FLAG_EXITING);
        assert_eq!((b1.incarnation, b1.seq, b2.seq), (4, 1, 2));
        assert_eq!(b2.flags, 1);
        s.bump();
        assert_eq!(s.next(30, true, 0, &[], 0).seq, 1);
        assert_eq!(s.incarnation, 5);
        assert_eq!(free_log2(0), 0);
        assert_eq!(free_log2(1 << 30), 30);
        assert_eq!(free_log2((1 << 30) + 5), 30);
    }
}
