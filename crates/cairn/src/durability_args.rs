//! Local checks of the arguments of the `swarm` and `dataset` commands (durability.md §17), so
//! that a typo never reaches the node: durability policies, durations, SwarmIds, PeerIds,
//! invites and member states. Every error here is a usage error (exit 2 for these commands).

use std::{
    fmt,
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use cairn_core::durability::{PeerId, SwarmId};
use serde_json::{Value, json};

/// Largest replica count of `replicate:R`.
pub(crate) const MAX_REPLICAS: u32 = 16;
/// Largest K + M of `erasure:K+M` (durability.md §6, §14).
pub(crate) const MAX_ERASURE_SLOTS: u32 = 64;
/// Longest accepted duration (`--retain`, `--expires`): 100 years.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;
/// Longest swarm name, in bytes (durability.md §5).
pub(crate) const MAX_NAME_BYTES: usize = 64;
/// Longest invite text accepted (a real one is about 1 kB).
const MAX_INVITE_CHARS: usize = 64 * 1024;
/// The invite text prefix.
pub(crate) const INVITE_PREFIX: &str = "cairn-invite:";

/// A dataset durability policy as the CLI writes it (durability.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Policy {
    /// Resolved by the announcer from the swarm's size.
    Auto,
    /// No slots, no repair.
    None,
    /// R full copies.
    Replicate(u32),
    /// K data and M parity rows.
    Erasure { k: u32, m: u32 },
}

impl Policy {
    /// The JSON form of §17: `"auto"`, `"none"`, `{"replicate":R}` or `{"erasure":{"k":K,"m":M}}`.
    pub(crate) fn to_json(self) -> Value {
        match self {
            Policy::Auto => json!("auto"),
            Policy::None => json!("none"),
            Policy::Replicate(r) => json!({ "replicate": r }),
            Policy::Erasure { k, m } => json!({ "erasure": { "k": k, "m": m } }),
        }
    }
}

/// The CLI and query form: `auto`, `none`, `replicate:R`, `erasure:K+M`.
impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Policy::Auto => f.write_str("auto"),
            Policy::None => f.write_str("none"),
            Policy::Replicate(r) => write!(f, "replicate:{r}"),
            Policy::Erasure { k, m } => write!(f, "erasure:{k}+{m}"),
        }
    }
}

/// Parses `auto`, `none`, `replicate:R` (1 ≤ R ≤ 16) or `erasure:K+M` (2 ≤ K, 1 ≤ M,
/// K + M ≤ 64).
pub(crate) fn parse_policy(text: &str) -> anyhow::Result<Policy> {
    let bad = || {
        anyhow!(
            "invalid policy {text:?}: expected auto, none, replicate:R (1 <= R <= \
             {MAX_REPLICAS}) or erasure:K+M (2 <= K, 1 <= M, K + M <= {MAX_ERASURE_SLOTS})"
        )
    };
    match text {
        "auto" => return Ok(Policy::Auto),
        "none" => return Ok(Policy::None),
        _ => {}
    }
    if let Some(r) = text.strip_prefix("replicate:") {
        let r = parse_small(r).ok_or_else(bad)?;
        if !(1..=MAX_REPLICAS).contains(&r) {
            return Err(anyhow!(
                "invalid policy {text:?}: R must be between 1 and {MAX_REPLICAS}"
            ));
        }
        return Ok(Policy::Replicate(r));
    }
    if let Some(km) = text.strip_prefix("erasure:") {
        let (k, m) = km.split_once('+').ok_or_else(bad)?;
        let (k, m) = (
            parse_small(k).ok_or_else(bad)?,
            parse_small(m).ok_or_else(bad)?,
        );
        if k < 2 || m < 1 || k + m > MAX_ERASURE_SLOTS {
            return Err(anyhow!(
                "invalid policy {text:?}: K and M must satisfy 2 <= K, 1 <= M, K + M <= \
                 {MAX_ERASURE_SLOTS}"
            ));
        }
        return Ok(Policy::Erasure { k, m });
    }
    Err(bad())
}

/// A plain decimal number of at most 4 digits (no sign, no spaces).
fn parse_small(text: &str) -> Option<u32> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// A duration written as a whole number and one unit: `90s`, `15m`, `24h`, `30d`, `2w`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    /// Seconds, at least 1.
    pub(crate) secs: u64,
}

/// Parses a duration: a positive whole number followed by `s`, `m`, `h`, `d` or `w`.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<Span> {
    let bad = |why: &str| anyhow!("invalid duration {text:?}: {why}");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| bad("a unit is required, e.g. 90s, 24h or 30d"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(bad("expected a number and a unit, e.g. 30d"));
    }
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad("unknown unit (use s, m, h, d or w)")),
    };
    let number: u64 = number.parse().map_err(|_| bad("number too large"))?;
    let secs = number
        .checked_mul(unit_secs)
        .filter(|s| *s <= MAX_DURATION_SECS)
        .ok_or_else(|| bad("longer than 100 years"))?;
    if secs == 0 {
        return Err(bad("must be longer than zero"));
    }
    Ok(Span { secs })
}

/// Seconds since the Unix epoch now.
pub(crate) fn unix_now() -> anyhow::Result<u64> {
    Ok(SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// `unix` seconds as RFC 3339 UTC, `YYYY-MM-DDTHH:MM:SSZ`.
pub(crate) fn rfc3339(unix: u64) -> String {
    let days = unix / 86_400;
    let rem = unix % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem / 60 % 60,
        rem % 60
    )
}

/// The proleptic Gregorian date of `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The RFC 3339 time `span` from now.
pub(crate) fn time_from_now(span: Span) -> anyhow::Result<String> {
    Ok(rfc3339(unix_now()? + span.secs))
}

/// Parses a SwarmId's text form (`z` ‖ base58btc(`12 20` ‖ 32 bytes)); returns its canonical
/// text.
pub(crate) fn parse_swarm(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let id = SwarmId::from_text(text).ok_or_else(|| {
        anyhow!("invalid swarm id {text:?}: expected the z… id printed by `cairn swarm list`")
    })?;
    Ok(id.to_text())
}

/// Parses a PeerId's base58btc text (`12D3KooW…`, Ed25519 only); returns its canonical text.
pub(crate) fn parse_peer(text: &str) -> anyhow::Result<String> {
    let text = text.trim();
    let bad = || anyhow!("invalid peer id {text:?}: expected an Ed25519 peer id (12D3KooW…)");
    let bytes = base58_decode(text).ok_or_else(bad)?;
    let peer = PeerId::from_bytes(&bytes).map_err(|_| bad())?;
    Ok(peer.to_base58())
}

/// The member states `swarm members --state` accepts.
pub(crate) const MEMBER_STATES: [&str; 5] = ["present", "absent", "lost", "departed", "revoked"];

/// Checks a member state filter.
pub(crate) fn parse_member_state(text: &str) -> anyhow::Result<String> {
    if MEMBER_STATES.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err(anyhow!(
            "invalid member state {text:?}: expected one of {}",
            MEMBER_STATES.join(", ")
        ))
    }
}

/// Checks a swarm name: 1 to 64 bytes, no control characters.
pub(crate) fn parse_name(text: &str) -> anyhow::Result<String> {
    if text.trim().is_empty() {
        bail!("the swarm name must not be empty");
    }
    if text.len() > MAX_NAME_BYTES {
        bail!(
            "the swarm name is {} bytes long; at most {MAX_NAME_BYTES} are allowed",
            text.len()
        );
    }
    if text.chars().any(char::is_control) {
        bail!("the swarm name must not contain control characters");
    }
    Ok(text.to_owned())
}

/// A checked invite: its text as given (trimmed) and the SwarmId it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invite {
    pub(crate) text: String,
    pub(crate) swarm: String,
}

/// Parses `cairn-invite:` + base64url(`Invite`) far enough to find the SwarmId it is for:
/// SHA-256(`"cairn/swarm/v1"` ‖ `Invite.genesis.genesis`). Signatures are the node's business.
pub(crate) fn parse_invite(text: &str) -> anyhow::Result<Invite> {
    let text = text.trim();
    let bad = |why: &str| anyhow!("invalid invite: {why}");
    let body = text
        .strip_prefix(INVITE_PREFIX)
        .ok_or_else(|| bad("it must start with \"cairn-invite:\""))?;
    if body.len() > MAX_INVITE_CHARS {
        return Err(bad("too long"));
    }
    let bytes = base64url_decode(body).ok_or_else(|| bad("not base64url after the prefix"))?;
    let record = proto_field(&bytes, 1)
        .map_err(|_| bad("not an encoded Invite"))?
        .ok_or_else(|| bad("it has no genesis record"))?;
    let genesis = proto_field(record, 1)
        .map_err(|_| bad("its genesis record is malformed"))?
        .filter(|g| !g.is_empty())
        .ok_or_else(|| bad("its genesis record is empty"))?;
    Ok(Invite {
        text: text.to_owned(),
        swarm: SwarmId::of_genesis(genesis).to_text(),
    })
}

/// The last length-delimited field `number` of the protobuf message `bytes` (proto3 semantics
/// for a non-repeated message or bytes field), checking the whole message's framing.
fn proto_field(bytes: &[u8], number: u64) -> Result<Option<&[u8]>, ()> {
    let mut rest = bytes;
    let mut found = None;
    while !rest.is_empty() {
        let key = read_varint(&mut rest)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return Err(());
        }
        match wire_type {
            0 => {
                read_varint(&mut rest)?;
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                rest = rest.get(n..).ok_or(())?;
            }
            2 => {
                let len = usize::try_from(read_varint(&mut rest)?).map_err(|_| ())?;
                let value = rest.get(..len).ok_or(())?;
                rest = &rest[len..];
                if field == number {
                    found = Some(value);
                }
            }
            _ => return Err(()),
        }
    }
    Ok(found)
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, ()> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first().ok_or(())?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(())
}

/// Decodes base64url (RFC 4648 §5), with or without `=` padding.
fn base64url_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for byte in text.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (canonical encoding).
    (acc == 0).then_some(out)
}

/// Decodes base58btc (the Bitcoin alphabet); `None` on any other character or an empty string.
fn base58_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 58] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    // A PeerId is 38 bytes (52 digits); refuse anything much longer before the quadratic loop.
    if text.is_empty() || text.len() > 128 {
        return None;
    }
    let mut bytes: Vec<u8> = Vec::new(); // little-endian
    for c in text.bytes() {
        let mut carry = ALPHABET.iter().position(|&a| a == c)? as u32;
        for byte in &mut bytes {
            carry += u32::from(*byte) * 58;
            *byte = (carry & 0xff) as u8;
            carry >>= 8;
        }
        while carry > 0 {
            bytes.push((carry & 0xff) as u8);
            carry >>= 8;
        }
    }
    let zeros = text.bytes().take_while(|&c| c == b'1').count();
    let mut out = vec![0u8; zeros];
    out.extend(bytes.iter().rev());
    Some(out)
}

#[cfg(test)]
mod tests {
    use cairn_core::durability::Keypair;

    use super::*;

    #[test]
    fn policies() {
        assert_eq!(parse_policy("auto").unwrap(), Policy::Auto);
        assert_eq!(parse_policy("none").unwrap(), Policy::None);
        assert_eq!(parse_policy("replicate:1").unwrap(), Policy::Replicate(1));
        assert_eq!(parse_policy("replicate:16").unwrap(), Policy::Replicate(16));
        assert_eq!(
            parse_policy("erasure:10+10").unwrap(),
            Policy::Erasure { k: 10, m: 10 }
        );
        assert_eq!(
            parse_policy("erasure:2+1").unwrap(),
            Policy::Erasure { k: 2, m: 1 }
        );
        assert_eq!(
            parse_policy("erasure:32+32").unwrap(),
            Policy::Erasure { k: 32, m: 32 }
        );
        for bad in [
            "",
            "Auto",
            "replicate",
            "replicate:",
            "replicate:0",
            "replicate:17",
            "replicate:-1",
            "replicate:+3",
            "replicate: 3",
            "replicate:99999999999",
            "erasure:1+1",
            "erasure:4+0",
            "erasure:33+32",
            "erasure:4",
            "erasure:4+",
            "erasure:+4",
            "erasure:4+4+4",
            "erasure:4-4",
            "replicate=3",
            "mirror:3",
        ] {
            assert!(parse_policy(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            parse_policy("erasure:40+40")
                .unwrap_err()
                .to_string()
                .contains("K + M <= 64")
        );
    }

    #[test]
    fn policy_forms() {
        assert_eq!(Policy::Auto.to_json(), json!("auto"));
        assert_eq!(Policy::None.to_json(), json!("none"));
        assert_eq!(Policy::Replicate(3).to_json(), json!({"replicate": 3}));
        assert_eq!(
            Policy::Erasure { k: 4, m: 2 }.to_json(),
            json!({"erasure": {"k": 4, "m": 2}})
        );
        for text in ["auto", "none", "replicate:3", "erasure:4+2"] {
            assert_eq!(parse_policy(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap().secs, 90);
        assert_eq!(parse_duration("15m").unwrap().secs, 900);
        assert_eq!(parse_duration("24h").unwrap().secs, 86_400);
        assert_eq!(parse_duration("30d").unwrap().secs, 30 * 86_400);
        assert_eq!(parse_duration("2w").unwrap().secs, 14 * 86_400);
        assert_eq!(parse_duration("36500d").unwrap().secs, 36_500 * 86_400);
        for bad in [
            "",
            "30",
            "d",
            "0d",
            "-1d",
            "1.5d",
            "30 d",
            "30D",
            "30days",
            "1d12h",
            "36501d",
            "99999999999999999999s",
            "30dd",
            " 30d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rfc3339_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
        let later = time_from_now(Span { secs: 86_400 }).unwrap();
        assert!(later.ends_with('Z') && later.len() == 20, "{later}");
    }

    fn peer(seed: u8) -> String {
        Keypair::from_seed(&[seed; 32]).peer_id().to_base58()
    }

    #[test]
    fn peer_ids() {
        let id = peer(7);
        assert_eq!(parse_peer(&id).unwrap(), id);
        assert_eq!(parse_peer(&format!(" {id}\n")).unwrap(), id);
        for bad in [
            "",
            "12D3KooW",
            "not a peer",
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG",
            &id[..id.len() - 1],
            &format!("{id}1"),
            &id.replace('1', "0"),
            &"z".repeat(500),
        ] {
            assert!(parse_peer(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn swarm_ids() {
        let id = SwarmId([9; 32]).to_text();
        assert_eq!(parse_swarm(&id).unwrap(), id);
        for bad in ["", "z", "zzzz", &id[1..], &id[..id.len() - 2], "my-swarm"] {
            assert!(parse_swarm(bad).is_err(), "{bad:?} accepted");
        }
        // A CID is not a swarm id.
        let cid = cairn_core::Cid::of_block(b"x").to_string();
        assert!(parse_swarm(&cid).is_err());
    }

    #[test]
    fn base58_matches_the_core_encoder() {
        let id = peer(3);
        let bytes = base58_decode(&id).unwrap();
        assert_eq!(PeerId::from_bytes(&bytes).unwrap().to_base58(), id);
        assert_eq!(base58_decode("1112").unwrap(), [0, 0, 0, 1]);
        assert_eq!(base58_decode("0"), None);
        assert_eq!(base58_decode("l"), None);
    }

    /// Encodes base64url without padding (test helper).
    fn b64(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i) & 63) as usize]));
            }
        }
        out
    }

    fn field(number: u8, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![number << 3 | 2, bytes.len() as u8];
        out.extend_from_slice(bytes);
        out
    }

    #[test]
    fn base64url() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zg==").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64url_decode("-_8").unwrap(), [0xfb, 0xff]);
        for bad in ["Z", "Zh", "Zm9v+", "Zm9v/", "a b", "Zm9vY"] {
            assert!(base64url_decode(bad).is_none(), "{bad:?} accepted");
        }
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(base64url_decode(&b64(&bytes)).unwrap(), bytes);
    }

    #[test]
    fn invites() {
        let genesis = b"\x08\x01\x12\x04test".to_vec();
        // Invite{genesis: GenesisRecord{genesis, owner_public_key}, bootstrap: ["/ip4/…"]}
        let mut record = field(1, &genesis);
        record.extend(field(2, &[1; 36]));
        let mut invite = field(1, &record);
        invite.extend(field(4, b"/ip4/127.0.0.1/tcp/1"));
        let text = format!("{INVITE_PREFIX}{}", b64(&invite));
        let parsed = parse_invite(&format!("  {text}\n")).unwrap();
        assert_eq!(parsed.text, text);
        assert_eq!(parsed.swarm, SwarmId::of_genesis(&genesis).to_text());
        // Padding is accepted too.
        let padded = format!("{text}{}", "=".repeat((4 - b64(&invite).len() % 4) % 4));
        assert_eq!(parse_invite(&padded).unwrap().swarm, parsed.swarm);

        let no_genesis = format!("{INVITE_PREFIX}{}", b64(&field(4, b"/ip4/1.2.3.4")));
        let truncated = format!("{INVITE_PREFIX}{}", b64(&invite[..invite.len() - 3]));
        let empty_genesis = format!("{INVITE_PREFIX}{}", b64(&field(1, &field(2, b"k"))));
        for bad in [
            "",
            "cairn-invite:",
            &text[INVITE_PREFIX.len()..],
            "cairn-invite:***",
            &no_genesis,
            &truncated,
            &empty_genesis,
            "cairn-invite:_____________________________________________",
        ] {
            assert!(parse_invite(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn protobuf_walker() {
        // varint field 2, fixed64 field 3, fixed32 field 4, then bytes field 1.
        let mut msg = vec![0x10, 0x96, 0x01, 0x19];
        msg.extend([0; 8]);
        msg.push(0x25);
        msg.extend([0; 4]);
        msg.extend(field(1, b"abc"));
        assert_eq!(proto_field(&msg, 1).unwrap(), Some(&b"abc"[..]));
        assert_eq!(proto_field(&msg, 5).unwrap(), None);
        assert!(proto_field(&[0x0b], 1).is_err()); // group wire type
        assert!(proto_field(&[0x0a, 0x05, 1], 1).is_err()); // length past the end
        assert!(proto_field(&[0x02, 0x00], 1).is_err()); // field 0
        assert!(proto_field(&[0x08, 0xff], 1).is_err()); // truncated varint
        assert!(proto_field(&[0xff; 11], 1).is_err()); // overlong varint
    }

    #[test]
    fn member_states_and_names() {
        for state in MEMBER_STATES {
            assert_eq!(parse_member_state(state).unwrap(), state);
        }
        assert!(parse_member_state("active").is_err());
        assert!(parse_member_state("").is_err());
        assert_eq!(parse_name("photos").unwrap(), "photos");
        assert!(parse_name(&"é".repeat(32)).is_ok());
        assert!(parse_name(&"é".repeat(33)).is_err());
        assert!(parse_name("").is_err());
        assert!(parse_name("  ").is_err());
        assert!(parse_name("a\nb").is_err());
    }
}
