//! The `[durability]` table of the node configuration (durability.md §14, "Configuration").
//!
//! Every key of the spec is accepted: durations as humantime strings (`"90s"`, `"72h"`,
//! `"7d"`, `"1h30m"`), the two bandwidth caps as integers (bytes/s, 0 = unlimited). Keys this
//! version does not know are kept (and written back by `serde`) but never an error, so a config
//! written for a later slice still loads. Values below the spec's minimums are allowed (tests,
//! demos) and reported by [`DurabilityConfig::warnings`], which the node logs at start.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as a humantime string in config files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// Why a duration string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {text:?}: {reason} (use e.g. \"90s\", \"10m\", \"72h\", \"7d\")")]
pub struct DurationError {
    text: String,
    reason: &'static str,
}

impl HumanDuration {
    /// Parses `"90s"`, `"1h30m"`, `"7d"`, `"250ms"`, `"2w"`; a bare number means seconds.
    pub fn parse(text: &str) -> Result<HumanDuration, DurationError> {
        let err = |reason| DurationError {
            text: text.to_owned(),
            reason,
        };
        let t = text.trim();
        if t.is_empty() {
            return Err(err("empty"));
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(HumanDuration(Duration::from_secs(secs)));
        }
        let mut total: u128 = 0; // milliseconds
        let mut rest = t;
        while !rest.is_empty() {
            rest = rest.trim_start();
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(err("expected a number"));
            }
            let n: u128 = rest[..digits]
                .parse()
                .map_err(|_| err("number too large"))?;
            rest = rest[digits..].trim_start();
            let unit_len = rest
                .find(|c: char| !c.is_ascii_alphabetic())
                .unwrap_or(rest.len());
            let unit = &rest[..unit_len];
            rest = &rest[unit_len..];
            let ms: u128 = match unit {
                "ms" | "msec" => 1,
                "s" | "sec" | "secs" | "second" | "seconds" => 1000,
                "m" | "min" | "mins" | "minute" | "minutes" => 60_000,
                "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000,
                "d" | "day" | "days" => 86_400_000,
                "w" | "week" | "weeks" => 7 * 86_400_000,
                "" => return Err(err("missing unit")),
                _ => return Err(err("unknown unit")),
            };
            total = total
                .checked_add(n.checked_mul(ms).ok_or_else(|| err("too large"))?)
                .ok_or_else(|| err("too large"))?;
        }
        let ms = u64::try_from(total).map_err(|_| err("too large"))?;
        Ok(HumanDuration(Duration::from_millis(ms)))
    }

    /// Whole seconds (rounded down).
    pub fn secs(&self) -> u64 {
        self.0.as_secs()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if !ms.is_multiple_of(1000) {
            return write!(f, "{ms}ms");
        }
        let s = ms / 1000;
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s != 0 && s.is_multiple_of(n) {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Secs(u64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => HumanDuration::parse(&t).map_err(serde::de::Error::custom),
            Raw::Secs(s) => Ok(HumanDuration(Duration::from_secs(s))),
        }
    }
}

/// The `[durability]` table: node-local overrides of §14's timers. `None` keeps the default or
/// formula. Keys are the spec's (`beacon_interval`); the kebab-case spelling is accepted too.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DurabilityConfig {
    /// H(N), the beacon interval (default max(5 min, 12.5 s × N)).
    #[serde(alias = "beacon-interval", skip_serializing_if = "Option::is_none")]
    pub beacon_interval: Option<HumanDuration>,
    /// ELIGIBLE_WINDOW (default max(7 d, 3·H(N))).
    #[serde(alias = "eligible-window", skip_serializing_if = "Option::is_none")]
    pub eligible_window: Option<HumanDuration>,
    /// `min_member_age` written into swarms this node creates (24 h invite / 7 d open).
    #[serde(alias = "min-member-age", skip_serializing_if = "Option::is_none")]
    pub min_member_age: Option<HumanDuration>,
    /// SYNC_INTERVAL (10 min ± 20 %).
    #[serde(alias = "sync-interval", skip_serializing_if = "Option::is_none")]
    pub sync_interval: Option<HumanDuration>,
    /// T_PROBE (S2).
    #[serde(alias = "probe-interval", skip_serializing_if = "Option::is_none")]
    pub probe_interval: Option<HumanDuration>,
    /// PROBE_TIMEOUT (S2).
    #[serde(alias = "probe-timeout", skip_serializing_if = "Option::is_none")]
    pub probe_timeout: Option<HumanDuration>,
    /// G_LOST written into swarms this node creates (72 h; minimum 6 h).
    #[serde(alias = "lost-after", skip_serializing_if = "Option::is_none")]
    pub lost_after: Option<HumanDuration>,
    /// EPOCH (24 h; all members of a swarm must agree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<HumanDuration>,
    /// CHALLENGE_SAMPLES (S2; 20, also the maximum).
    #[serde(alias = "challenge-samples", skip_serializing_if = "Option::is_none")]
    pub challenge_samples: Option<u32>,
    /// CHALLENGE_TIMEOUT (S2).
    #[serde(alias = "challenge-timeout", skip_serializing_if = "Option::is_none")]
    pub challenge_timeout: Option<HumanDuration>,
    /// OFFER_TIMEOUT (2 min).
    #[serde(alias = "offer-timeout", skip_serializing_if = "Option::is_none")]
    pub offer_timeout: Option<HumanDuration>,
    /// CLAIM_TIMEOUT (12 h).
    #[serde(alias = "claim-timeout", skip_serializing_if = "Option::is_none")]
    pub claim_timeout: Option<HumanDuration>,
    /// SPARE_TTL (7 d).
    #[serde(alias = "spare-ttl", skip_serializing_if = "Option::is_none")]
    pub spare_ttl: Option<HumanDuration>,
    /// LEADER_STAGGER (S2).
    #[serde(alias = "leader-stagger", skip_serializing_if = "Option::is_none")]
    pub leader_stagger: Option<HumanDuration>,
    /// REPAIR_OFFER_WAIT (S2).
    #[serde(alias = "repair-offer-wait", skip_serializing_if = "Option::is_none")]
    pub repair_offer_wait: Option<HumanDuration>,
    /// ROUND_DEADLINE (S2).
    #[serde(alias = "round-deadline", skip_serializing_if = "Option::is_none")]
    pub round_deadline: Option<HumanDuration>,
    /// ROUND_BACKOFF base (S2).
    #[serde(alias = "round-backoff", skip_serializing_if = "Option::is_none")]
    pub round_backoff: Option<HumanDuration>,
    /// HANDOFF_TIMEOUT (S2).
    #[serde(alias = "handoff-timeout", skip_serializing_if = "Option::is_none")]
    pub handoff_timeout: Option<HumanDuration>,
    /// RETIRE_GRACE (24 h).
    #[serde(alias = "retire-grace", skip_serializing_if = "Option::is_none")]
    pub retire_grace: Option<HumanDuration>,
    /// SCRUB_PERIOD (S2).
    #[serde(alias = "scrub-period", skip_serializing_if = "Option::is_none")]
    pub scrub_period: Option<HumanDuration>,
    /// Upload bandwidth cap for durability transfers, bytes/s (0 = unlimited).
    #[serde(alias = "upload-cap", skip_serializing_if = "Option::is_none")]
    pub upload_cap: Option<u64>,
    /// Download bandwidth cap for durability transfers, bytes/s (0 = unlimited).
    #[serde(alias = "download-cap", skip_serializing_if = "Option::is_none")]
    pub download_cap: Option<u64>,
    /// Keys this version does not use, kept as given.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// §14 defaults the node uses.
pub(crate) const DEFAULT_OFFER_TIMEOUT: Duration = Duration::from_secs(120);
/// RETIRE_GRACE.
pub(crate) const DEFAULT_RETIRE_GRACE: Duration = Duration::from_secs(86_400);

impl DurabilityConfig {
    /// The state machine's parameters.
    pub(crate) fn params(&self) -> cairn_proto::durability::Params {
        let d = cairn_proto::durability::Params::default();
        cairn_proto::durability::Params {
            beacon_interval_secs: self.beacon_interval.map(|d| d.secs().max(1)),
            eligible_window_secs: self.eligible_window.map(|d| d.secs()),
            sync_interval_secs: self
                .sync_interval
                .map_or(d.sync_interval_secs, |d| d.secs().max(1)),
            claim_timeout_secs: self
                .claim_timeout
                .map_or(d.claim_timeout_secs, |d| d.secs()),
            spare_ttl_secs: self.spare_ttl.map_or(d.spare_ttl_secs, |d| d.secs()),
            erasure_enabled: false,
        }
    }

    /// OFFER_TIMEOUT.
    pub(crate) fn offer_timeout(&self) -> Duration {
        self.offer_timeout.map_or(DEFAULT_OFFER_TIMEOUT, |d| d.0)
    }

    /// RETIRE_GRACE.
    pub(crate) fn retire_grace(&self) -> Duration {
        self.retire_grace.map_or(DEFAULT_RETIRE_GRACE, |d| d.0)
    }

    /// `lost_after_secs` for a genesis this node creates.
    pub(crate) fn lost_after_secs(&self) -> u32 {
        self.lost_after.map_or(
            cairn_core::durability::policy::DEFAULT_LOST_AFTER_SECS,
            |d| u32::try_from(d.secs()).unwrap_or(u32::MAX).max(1),
        )
    }

    /// `min_member_age_secs` for a genesis this node creates.
    pub(crate) fn min_member_age_secs(&self, open: bool) -> u32 {
        match self.min_member_age {
            Some(d) => u32::try_from(d.secs()).unwrap_or(u32::MAX),
            None if open => 7 * 86_400,
            None => 86_400,
        }
    }

    /// Human-readable warnings: overrides below the spec's minimums, and unknown keys.
    pub fn warnings(&self) -> Vec<String> {
        let mut w = Vec::new();
        let below = |w: &mut Vec<String>, key: &str, v: Option<HumanDuration>, min: u64| {
            if let Some(v) = v
                && v.0 < Duration::from_secs(min)
            {
                w.push(format!(
                    "durability.{key} = {v} is below the spec minimum of {}; use only for tests \
                     and demos",
                    HumanDuration(Duration::from_secs(min))
                ));
            }
        };
        below(&mut w, "beacon_interval", self.beacon_interval, 300);
        below(&mut w, "eligible_window", self.eligible_window, 7 * 86_400);
        below(&mut w, "min_member_age", self.min_member_age, 86_400);
        below(&mut w, "sync_interval", self.sync_interval, 600);
        below(&mut w, "lost_after", self.lost_after, 6 * 3600);
        below(&mut w, "offer_timeout", self.offer_timeout, 120);
        below(&mut w, "claim_timeout", self.claim_timeout, 12 * 3600);
        below(&mut w, "spare_ttl", self.spare_ttl, 7 * 86_400);
        below(&mut w, "retire_grace", self.retire_grace, 86_400);
        below(&mut w, "probe_timeout", self.probe_timeout, 10);
        below(&mut w, "challenge_timeout", self.challenge_timeout, 30);
        below(&mut w, "handoff_timeout", self.handoff_timeout, 86_400);
        below(&mut w, "round_deadline", self.round_deadline, 12 * 3600);
        if let Some(e) = self.epoch
            && e.0 != Duration::from_secs(86_400)
        {
            w.push(format!(
                "durability.epoch = {e} differs from the default 24h; every member of a swarm \
                 must use the same value"
            ));
        }
        if self.challenge_samples.is_some_and(|n| n > 20 || n == 0) {
            w.push("durability.challenge_samples must be in 1..=20; ignored".to_owned());
        }
        for key in self.other.keys() {
            w.push(format!(
                "durability.{key} is not a setting of this version; kept and ignored"
            ));
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let p = |t: &str| HumanDuration::parse(t).map(|d| d.0);
        assert_eq!(p("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(p("72h"), Ok(Duration::from_secs(72 * 3600)));
        assert_eq!(p("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(p("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(p("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(p("15"), Ok(Duration::from_secs(15)));
        for bad in ["", "h", "5x", "99999999999999999999999d", "-5s"] {
            assert!(p(bad).is_err(), "{bad}");
        }
        assert_eq!(HumanDuration(Duration::from_secs(5400)).to_string(), "90m");
        assert_eq!(HumanDuration(Duration::from_secs(86_400)).to_string(), "1d");
        assert_eq!(HumanDuration(Duration::from_secs(0)).to_string(), "0s");
    }

    #[test]
    fn every_spec_key_and_unknown_keys() {
        let json = serde_json::json!({
            "beacon_interval": "10s", "eligible_window": "1m", "min_member_age": "0s",
            "sync_interval": "5s", "probe_interval": "1m", "probe_timeout": "2s",
            "lost_after": "1h", "epoch": "1h", "challenge_samples": 10,
            "challenge_timeout": "5s", "offer_timeout": "10s", "claim_timeout": "1h",
            "spare_ttl": "1h", "leader_stagger": "1m", "repair_offer_wait": "1m",
            "round_deadline": "1h", "round_backoff": "1m", "handoff_timeout": "1h",
            "retire_grace": "10s", "scrub_period": "1d", "upload_cap": 0,
            "download-cap": 1000, "future_key": {"x": 1}
        });
        let c: DurabilityConfig = serde_json::from_value(json).unwrap();
        assert_eq!(c.beacon_interval.unwrap().secs(), 10);
        assert_eq!(c.download_cap, Some(1000));
        assert_eq!(c.scrub_period.unwrap().secs(), 86_400);
        assert!(c.other.contains_key("future_key"));
        let w = c.warnings();
        assert!(w.iter().any(|m| m.contains("beacon_interval")));
        assert!(w.iter().any(|m| m.contains("future_key")));
        let p = c.params();
        assert_eq!(p.beacon_interval_secs, Some(10));
        assert_eq!(p.sync_interval_secs, 5);
        assert_eq!(c.lost_after_secs(), 3600);
        assert_eq!(c.min_member_age_secs(false), 0);
        // Round trip.
        let back: DurabilityConfig =
            serde_json::from_value(serde_json::to_value(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        assert!(DurabilityConfig::default().warnings().is_empty());
        assert!(
            serde_json::from_value::<DurabilityConfig>(serde_json::json!({"lost_after": "soon"}))
                .is_err()
        );
    }
}
