//! The invite string (§5): `cairn-invite:` + base64url(`Invite`), written without padding and
//! read with or without.

use base64::Engine as _;
use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use cairn_core::durability::messages as pb;
use prost::Message as _;

/// The prefix of an invite's text form.
pub(crate) const PREFIX: &str = "cairn-invite:";
/// Longest accepted invite text (a real one is about 1 kB).
const MAX_TEXT: usize = 16 * 1024;

/// Encodes an invite.
pub(crate) fn encode(invite: &pb::Invite) -> String {
    format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(invite.encode_to_vec()))
}

/// Decodes an invite; `None` if it is not one.
pub(crate) fn decode(text: &str) -> Option<pb::Invite> {
    let text = text.trim();
    if text.len() > MAX_TEXT {
        return None;
    }
    let b64 = text.strip_prefix(PREFIX)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(b64)
        .or_else(|_| URL_SAFE.decode(b64))
        .ok()?;
    pb::Invite::decode(bytes.as_slice()).ok()
}

/// The libp2p protobuf private key encoding of an Ed25519 key (`node.key`): the 32-byte seed.
pub(crate) fn ed25519_seed(key_file: &[u8]) -> Option<[u8; 32]> {
    // PrivateKey { Type = 1 (varint, field 1), Data = bytes (field 2) }
    let mut i = 0;
    let mut key_type = None;
    let mut data = None;
    while i < key_file.len() {
        let tag = key_file[i];
        i += 1;
        match tag {
            0x08 => {
                key_type = Some(*key_file.get(i)?);
                i += 1;
            }
            0x12 => {
                let (len, n) = varint(&key_file[i..])?;
                i += n;
                let end = i.checked_add(usize::try_from(len).ok()?)?;
                data = Some(key_file.get(i..end)?);
                i = end;
            }
            _ => return None,
        }
    }
    if key_type != Some(1) {
        return None;
    }
    let data = data?;
    // libp2p writes the 64-byte keypair (secret ‖ public); accept a bare 32-byte secret too.
    <[u8; 32]>::try_from(data.get(..32)?).ok()
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let inv = pb::Invite {
            genesis: None,
            cert: None,
            admin_cert: None,
            bootstrap: vec!["/ip4/127.0.0.1/tcp/1".into()],
        };
        let text = encode(&inv);
        assert!(!text.contains('='));
        assert_eq!(decode(&text), Some(inv));
        assert_eq!(decode("cairn-invite:!!!"), None);
        assert_eq!(decode("hello"), None);
        assert_eq!(ed25519_seed(&[0x08, 0x01, 0x12, 0x02, 1, 2]), None);
        assert_eq!(ed25519_seed(&[0xff]), None);
        let mut file = vec![0x08, 0x01, 0x12, 0x40];
        file.extend([7u8; 64]);
        assert_eq!(ed25519_seed(&file), Some([7u8; 32]));
    }
}
