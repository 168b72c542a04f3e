//! Byte sizes: parsing `20GiB`, `500MB`, `1048576` and printing `1.5 GiB`.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A byte count given as plain bytes or with a unit.
///
/// Units (case-insensitive, optional space before them): `B`; SI `kB MB GB TB PB` (powers of
/// 1000); IEC `KiB MiB GiB TiB PiB` and the single letters `K M G T P` (powers of 1024). A
/// fractional number is allowed with a unit (`1.5GiB`) and rounded down to whole bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ByteSize(pub(crate) u64);

/// Why a size does not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SizeError(String);

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SizeError {}

/// The help text's description of the accepted forms.
pub(crate) const SIZE_FORMS: &str =
    "bytes, or a number with a unit: kB/MB/GB/TB (x1000) or KiB/MiB/GiB/TiB (x1024)";

/// Parses a byte count; see [`ByteSize`] for the accepted forms.
pub(crate) fn parse_size(text: &str) -> Result<u64, SizeError> {
    let err = |why: &str| SizeError(format!("invalid size {text:?}: {why}"));
    let trimmed = text.trim();
    let number_end = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(number_end);
    let unit = unit.trim_start();
    if number.is_empty() {
        return Err(err("expected a number, e.g. 500MB or 20GiB"));
    }
    let multiplier = unit_multiplier(unit)
        .ok_or_else(|| err("unknown unit (use B, kB, MB, GB, TB, KiB, MiB, GiB or TiB)"))?;
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    if fraction.contains('.') || (whole.is_empty() && fraction.is_empty()) {
        return Err(err("malformed number"));
    }
    let whole: u128 = if whole.is_empty() {
        0
    } else {
        whole
            .parse::<u64>()
            .map_err(|_| err("number too large"))?
            .into()
    };
    // Extra fractional digits beyond 18 cannot change the result by a whole byte at any unit we
    // support (1 PiB < 10^16), so they are dropped before the exact integer arithmetic below.
    let fraction = &fraction[..fraction.len().min(18)];
    let fraction_part = if fraction.is_empty() {
        0
    } else {
        if multiplier == 1 && fraction.bytes().any(|b| b != b'0') {
            return Err(err("a byte count must be a whole number"));
        }
        let digits: u128 = fraction.parse().map_err(|_| err("malformed number"))?;
        let scale = 10u128.pow(fraction.len() as u32);
        digits * u128::from(multiplier) / scale
    };
    let total = whole * u128::from(multiplier) + fraction_part;
    u64::try_from(total).map_err(|_| err("larger than 2^64 - 1 bytes"))
}

fn unit_multiplier(unit: &str) -> Option<u64> {
    const KI: u64 = 1024;
    let unit = unit.to_ascii_lowercase();
    Some(match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000u64.pow(2),
        "gb" => 1000u64.pow(3),
        "tb" => 1000u64.pow(4),
        "pb" => 1000u64.pow(5),
        "k" | "kib" => KI,
        "m" | "mib" => KI.pow(2),
        "g" | "gib" => KI.pow(3),
        "t" | "tib" => KI.pow(4),
        "p" | "pib" => KI.pow(5),
        _ => return None,
    })
}

/// Formats a byte count for people: `18 B`, `64.0 KiB`, `1.50 GiB`.
pub(crate) fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let decimals = if value < 10.0 { 2 } else { 1 };
    format!("{value:.decimals$} {}", UNITS[unit])
}

impl FromStr for ByteSize {
    type Err = SizeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_size(s).map(ByteSize)
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    /// Accepts an unsigned integer (bytes) or a string in any form [`parse_size`] reads.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;

        impl de::Visitor<'_> for Visitor {
            type Value = ByteSize;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a byte count: an integer or a string such as \"20GiB\"")
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
                Ok(ByteSize(v))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
                u64::try_from(v)
                    .map(ByteSize)
                    .map_err(|_| E::custom("a byte count cannot be negative"))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
                parse_size(v).map(ByteSize).map_err(E::custom)
            }
        }

        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_bytes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size(" 42 "), Ok(42));
        assert_eq!(parse_size("42B"), Ok(42));
        assert_eq!(parse_size("42 b"), Ok(42));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_size("7.0"), Ok(7));
    }

    #[test]
    fn units() {
        assert_eq!(parse_size("20GiB"), Ok(20 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("500 mb"), Ok(500_000_000));
        assert_eq!(parse_size("1kB"), Ok(1000));
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert_eq!(parse_size("1k"), Ok(1024));
        assert_eq!(parse_size("2M"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_size("3g"), Ok(3 << 30));
        assert_eq!(parse_size("1TB"), Ok(1_000_000_000_000));
        assert_eq!(parse_size("1TiB"), Ok(1 << 40));
        assert_eq!(parse_size("1PiB"), Ok(1 << 50));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
    }

    #[test]
    fn fractions_round_down() {
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("0.5KiB"), Ok(512));
        assert_eq!(parse_size(".5kB"), Ok(500));
        assert_eq!(parse_size("1.0001kB"), Ok(1000));
        assert_eq!(
            parse_size("1.123456789012345678901234GiB"),
            Ok(1_206_302_541)
        );
    }

    #[test]
    fn rejects_bad_input() {
        for bad in [
            "", " ", "GiB", "-1", "1.5", "1..5GiB", "1.2.3MB", ".", "1XB", "12 34", "1e9",
            "20 GiBs", "0x10",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("16777216TiB").is_err());
        let msg = parse_size("12XB").unwrap_err().to_string();
        assert!(
            msg.contains("\"12XB\"") && msg.contains("unknown unit"),
            "{msg}"
        );
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(format_size(0), "0 B");
        assert_eq!(format_size(1023), "1023 B");
        assert_eq!(format_size(1024), "1.00 KiB");
        assert_eq!(format_size(65_536), "64.0 KiB");
        assert_eq!(format_size(1_610_612_736), "1.50 GiB");
        assert_eq!(format_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn deserializes_from_integers_and_strings() {
        #[derive(Deserialize)]
        struct T {
            a: ByteSize,
            b: ByteSize,
        }
        let t: T = toml::from_str("a = 1024\nb = \"2MiB\"").unwrap();
        assert_eq!((t.a, t.b), (ByteSize(1024), ByteSize(2 << 20)));
        assert!(toml::from_str::<T>("a = -1\nb = 1").is_err());
        assert!(toml::from_str::<T>("a = \"lots\"\nb = 1").is_err());
    }
}
