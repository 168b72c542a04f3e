//! Content identifiers (CIDv1 with sha2-256), `wire.md` §1.2.
//!
//! Every CID cairn deals with is a CIDv1 over a sha2-256 digest with one of four multicodecs, so
//! it is always 38 bytes: `01 ‖ varint(codec) ‖ 12 ‖ 20 ‖ digest`. We keep it as a small `Copy`
//! value (codec + digest) rather than a general CID: parsing is strict, comparisons are cheap and
//! nothing allocates.

use std::{fmt, str::FromStr};

use sha2::{Digest as _, Sha256};

/// A SHA-256 digest.
pub type Digest = [u8; 32];

/// Length of a binary cairn CID.
pub const CID_LEN: usize = 38;

/// The multicodec code of sha2-256.
pub const SHA2_256: u64 = 0x12;

/// The digest of the empty byte string, `H("")`. Also the leaf of an erasure-coding padding
/// position (`wire.md` §4.3).
pub const EMPTY_DIGEST: Digest = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// SHA-256 of `data`.
pub fn sha256(data: &[u8]) -> Digest {
    Sha256::digest(data).into()
}

/// The multicodecs cairn uses in CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Codec {
    /// `storage-manifest` (0xCD01): manifest blocks.
    Manifest,
    /// `storage-block` (0xCD02): data, parity and padding blocks.
    Block,
    /// `storage-root` (0xCD03): Merkle tree roots.
    Root,
    /// `codex-slot-root` (0xCD04): slot roots of protected manifests.
    SlotRoot,
}

impl Codec {
    /// The multicodec code.
    pub const fn code(self) -> u64 {
        match self {
            Codec::Manifest => 0xCD01,
            Codec::Block => 0xCD02,
            Codec::Root => 0xCD03,
            Codec::SlotRoot => 0xCD04,
        }
    }

    /// The codec for a multicodec code, if cairn knows it.
    pub const fn from_code(code: u64) -> Option<Codec> {
        match code {
            0xCD01 => Some(Codec::Manifest),
            0xCD02 => Some(Codec::Block),
            0xCD03 => Some(Codec::Root),
            0xCD04 => Some(Codec::SlotRoot),
            _ => None,
        }
    }

    /// The varint bytes of the code (all four codes take three bytes).
    const fn varint(self) -> [u8; 3] {
        match self {
            Codec::Manifest => [0x81, 0x9a, 0x03],
            Codec::Block => [0x82, 0x9a, 0x03],
            Codec::Root => [0x83, 0x9a, 0x03],
            Codec::SlotRoot => [0x84, 0x9a, 0x03],
        }
    }
}

/// Why bytes or text are not a valid cairn CID. The `Display` texts start with upstream's words
/// ("Incorrect Cid", "Unsupported Cid", "Overrun Cid"), which REST clients match on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text is not multibase we can read, or the bytes are not a CID at all.
    #[error("Incorrect Cid: {0}")]
    Incorrect(&'static str),
    /// A well-formed CID that cairn does not use (CIDv0, another codec or hash).
    #[error("Unsupported Cid: {0}")]
    Unsupported(&'static str),
    /// Trailing bytes after the CID.
    #[error("Overrun Cid: trailing bytes after the digest")]
    Overrun,
    /// A valid cairn CID, but not of the codec the caller needs.
    #[error("CID has codec {found:#x}, expected {expected:#x}")]
    WrongCodec {
        /// The codec found.
        found: u64,
        /// The codec required.
        expected: u64,
    },
}

/// A CIDv1 with a sha2-256 multihash and one of cairn's codecs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    codec: Codec,
    digest: Digest,
}

impl Cid {
    /// The CID of `digest` under `codec`.
    pub const fn new(codec: Codec, digest: Digest) -> Cid {
        Cid { codec, digest }
    }

    /// The block CID of `data`: `CIDv1(0xCD02, H(data))`.
    pub fn of_block(data: &[u8]) -> Cid {
        Cid::new(Codec::Block, sha256(data))
    }

    /// The CID of the 0-byte block (`wire.md` §1.2).
    pub const EMPTY_BLOCK: Cid = Cid::new(Codec::Block, EMPTY_DIGEST);

    /// The codec.
    pub const fn codec(&self) -> Codec {
        self.codec
    }

    /// The 32-byte sha2-256 digest.
    pub const fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The 38-byte binary form.
    pub fn to_bytes(&self) -> [u8; CID_LEN] {
        let mut out = [0u8; CID_LEN];
        out[0] = 0x01;
        out[1..4].copy_from_slice(&self.codec.varint());
        out[4] = SHA2_256 as u8;
        out[5] = 32;
        out[6..].copy_from_slice(&self.digest);
        out
    }

    /// The DHT key: the multihash bytes `12 20 ‖ digest` (`wire.md` §5.3).
    pub fn multihash_bytes(&self) -> [u8; 34] {
        let mut out = [0u8; 34];
        out[0] = SHA2_256 as u8;
        out[1] = 32;
        out[2..].copy_from_slice(&self.digest);
        out
    }

    /// Parses a binary CID strictly: version 1, a cairn codec, sha2-256, 32-byte digest, minimal
    /// varints and no trailing bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let (cid, used) = Cid::read_prefix(bytes)?;
        if used != bytes.len() {
            return Err(CidError::Overrun);
        }
        Ok(cid)
    }

    /// Parses a binary CID from the start of `bytes`; returns it and the number of bytes used.
    pub fn read_prefix(bytes: &[u8]) -> Result<(Cid, usize), CidError> {
        let mut pos = 0;
        let version = read_varint(bytes, &mut pos)?;
        match version {
            1 => {}
            0x12 => return Err(CidError::Unsupported("CIDv0 is not supported")),
            _ => return Err(CidError::Incorrect("unknown CID version")),
        }
        let code = read_varint(bytes, &mut pos)?;
        let codec = Codec::from_code(code).ok_or(CidError::Unsupported("unknown multicodec"))?;
        let hash = read_varint(bytes, &mut pos)?;
        if hash != SHA2_256 {
            return Err(CidError::Unsupported("multihash is not sha2-256"));
        }
        let len = read_varint(bytes, &mut pos)?;
        if len != 32 {
            return Err(CidError::Unsupported("digest length is not 32"));
        }
        let digest: Digest = bytes
            .get(pos..pos + 32)
            .ok_or(CidError::Incorrect("truncated digest"))?
            .try_into()
            .expect("slice of 32 bytes");
        Ok((Cid { codec, digest }, pos + 32))
    }

    /// Checks that the CID has `codec`.
    pub fn expect_codec(self, codec: Codec) -> Result<Cid, CidError> {
        if self.codec == codec {
            Ok(self)
        } else {
            Err(CidError::WrongCodec {
                found: self.codec.code(),
                expected: codec.code(),
            })
        }
    }
}

/// Reads a minimally encoded unsigned LEB128 varint of at most 9 bytes (multiformats' limit).
fn read_varint(bytes: &[u8], pos: &mut usize) -> Result<u64, CidError> {
    let mut value: u64 = 0;
    for i in 0..9 {
        let byte = *bytes
            .get(*pos)
            .ok_or(CidError::Incorrect("truncated varint"))?;
        *pos += 1;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            if byte == 0 && i > 0 {
                return Err(CidError::Incorrect("varint is not minimally encoded"));
            }
            return Ok(value);
        }
    }
    Err(CidError::Incorrect("varint too long"))
}

impl fmt::Display for Cid {
    /// The text form: `z` ‖ base58btc(binary CID).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 64];
        let n = bs58::encode(self.to_bytes())
            .onto(&mut buf[..])
            .expect("52 base58 digits fit in 64 bytes");
        f.write_str("z")?;
        f.write_str(std::str::from_utf8(&buf[..n]).expect("base58 is ASCII"))
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Cid {
    type Err = CidError;

    /// Parses the text form. Accepts base58btc (`z…`), the form cairn prints, and base32 lower
    /// (`b…`), the `cid` crate's default; rejects CIDv0 (`Qm…`).
    fn from_str(s: &str) -> Result<Cid, CidError> {
        if s.starts_with("Qm") && s.len() == 46 {
            return Err(CidError::Unsupported("CIDv0 is not supported"));
        }
        let mut chars = s.chars();
        let bytes = match chars.next() {
            Some('z') => bs58::decode(chars.as_str())
                .into_vec()
                .map_err(|_| CidError::Incorrect("invalid base58btc"))?,
            Some('b') => {
                base32_lower_decode(chars.as_str()).ok_or(CidError::Incorrect("invalid base32"))?
            }
            Some(_) => return Err(CidError::Incorrect("unsupported multibase prefix")),
            None => return Err(CidError::Incorrect("empty CID")),
        };
        Cid::from_bytes(&bytes)
    }
}

/// RFC 4648 base32, lower case, no padding (multibase `b`).
fn base32_lower_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 5 / 8);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in s.bytes() {
        let v = match c {
            b'a'..=b'z' => c - b'a',
            b'2'..=b'7' => c - b'2' + 26,
            _ => return None,
        };
        acc = (acc << 5) | u32::from(v);
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_block_cid_text() {
        assert_eq!(
            Cid::EMPTY_BLOCK.to_string(),
            "zDxWB8EDDsokSpiTXNRpv1jS2LXjEdLgTiDfxFd7Eo8CSPKVj93r"
        );
        assert_eq!(sha256(b""), EMPTY_DIGEST);
    }

    #[test]
    fn rejects_bad_text() {
        assert!(matches!("".parse::<Cid>(), Err(CidError::Incorrect(_))));
        assert!(matches!(
            "zzzz0".parse::<Cid>(),
            Err(CidError::Incorrect(_))
        ));
        assert!(
            "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"
                .parse::<Cid>()
                .is_err()
        );
        let mut bytes = Cid::EMPTY_BLOCK.to_bytes().to_vec();
        bytes.push(0);
        assert_eq!(Cid::from_bytes(&bytes), Err(CidError::Overrun));
        assert!(Cid::from_bytes(&bytes[..30]).is_err());
    }
}
