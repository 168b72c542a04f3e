//! `/storage/manifest/1.0.0` (`wire.md` §6): one request, one response per stream.
//!
//! ```text
//! request  = cidLen:u16 ‖ cid[cidLen]                       1 ≤ cidLen ≤ 512
//! response = contentLen:u32 ‖ status:u8 ‖ manifest[contentLen − 1]
//! ```
//!
//! The streaming reader first reads the fixed-size prefix, validates it with
//! [`ManifestRequest::cid_len`] or [`ManifestResponseHeader::decode`] (so nothing is allocated for
//! a bad length), then reads the rest. A responder answers every request it cannot decode
//! (bad `cidLen`, invalid CID, codec other than 0xCD01) with NotFound.

use crate::{
    cid::{Cid, CidError, Codec},
    manifest::{MAX_MANIFEST_SIZE, Manifest},
};

/// The protocol id.
pub const MANIFEST_PROTOCOL: &str = "/storage/manifest/1.0.0";
/// Largest `cidLen` of a request.
pub const MAX_MANIFEST_REQUEST_CID_LEN: usize = 512;
/// Largest `contentLen` of a response: the status byte plus a 64 KiB manifest.
pub const MAX_MANIFEST_CONTENT_LEN: u32 = MAX_MANIFEST_SIZE as u32 + 1;
/// Bytes before the CID of a request (`cidLen`).
pub const MANIFEST_REQUEST_PREFIX_LEN: usize = 2;
/// Bytes before the manifest of a response (`contentLen ‖ status`).
pub const MANIFEST_RESPONSE_HEADER_LEN: usize = 5;

/// Why a manifest-protocol message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManifestProtocolError {
    /// The input ends early.
    #[error("manifest protocol message is truncated")]
    Truncated,
    /// Bytes after the end of the message.
    #[error("trailing bytes after the manifest protocol message")]
    Trailing,
    /// `cidLen` is 0 or above 512.
    #[error("manifest request cidLen {0} is not in 1..=512")]
    CidLength(usize),
    /// The requested CID is not a valid manifest CID.
    #[error("manifest request: {0}")]
    Cid(#[from] CidError),
    /// `contentLen` is 0 or above 65537.
    #[error("manifest response contentLen {0} is not in 1..=65537")]
    ContentLength(u32),
    /// A status other than 0 (Found) or 1 (NotFound).
    #[error("manifest response status {0} is unknown")]
    Status(u8),
    /// A NotFound response that carries bytes.
    #[error("NotFound manifest response with contentLen {0}, expected 1")]
    NotFoundLength(u32),
    /// A Found response with no manifest bytes.
    #[error("Found manifest response without manifest bytes")]
    EmptyManifest,
    /// The manifest bytes do not hash to the requested CID's digest.
    #[error("manifest bytes do not match the requested CID")]
    DigestMismatch,
}

/// A manifest request: the manifest CID asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestRequest {
    /// The manifest CID (codec 0xCD01).
    pub cid: Cid,
}

impl ManifestRequest {
    /// The request bytes: `cidLen ‖ cid`.
    pub fn encode(&self) -> Vec<u8> {
        let cid = self.cid.to_bytes();
        let mut out = Vec::with_capacity(MANIFEST_REQUEST_PREFIX_LEN + cid.len());
        out.extend_from_slice(&(cid.len() as u16).to_le_bytes());
        out.extend_from_slice(&cid);
        out
    }

    /// Validates the 2-byte prefix and returns `cidLen`, the number of bytes to read next.
    pub fn cid_len(prefix: [u8; 2]) -> Result<usize, ManifestProtocolError> {
        let len = usize::from(u16::from_le_bytes(prefix));
        if len == 0 || len > MAX_MANIFEST_REQUEST_CID_LEN {
            return Err(ManifestProtocolError::CidLength(len));
        }
        Ok(len)
    }

    /// Parses the CID bytes of a request: a strict CID with the manifest codec.
    pub fn decode_cid(cid: &[u8]) -> Result<ManifestRequest, ManifestProtocolError> {
        let cid = Cid::from_bytes(cid)?.expect_codec(Codec::Manifest)?;
        Ok(ManifestRequest { cid })
    }

    /// Parses a whole request (prefix and CID, nothing after).
    pub fn decode(bytes: &[u8]) -> Result<ManifestRequest, ManifestProtocolError> {
        let (prefix, rest) = bytes
            .split_first_chunk::<2>()
            .ok_or(ManifestProtocolError::Truncated)?;
        let len = Self::cid_len(*prefix)?;
        match rest.len().cmp(&len) {
            std::cmp::Ordering::Less => Err(ManifestProtocolError::Truncated),
            std::cmp::Ordering::Greater => Err(ManifestProtocolError::Trailing),
            std::cmp::Ordering::Equal => Self::decode_cid(rest),
        }
    }
}

/// The status byte of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ManifestStatus {
    /// 0: the manifest follows.
    Found,
    /// 1: the responder does not serve it.
    NotFound,
}

/// The validated fixed-size head of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ManifestResponseHeader {
    /// The status.
    pub status: ManifestStatus,
    /// Manifest bytes that follow (0 for NotFound, 1..=65536 for Found).
    pub manifest_len: usize,
}

impl ManifestResponseHeader {
    /// Validates `contentLen ‖ status` before anything is allocated.
    pub fn decode(
        header: [u8; MANIFEST_RESPONSE_HEADER_LEN],
    ) -> Result<Self, ManifestProtocolError> {
        let [a, b, c, d, status] = header;
        let content_len = u32::from_le_bytes([a, b, c, d]);
        if content_len == 0 || content_len > MAX_MANIFEST_CONTENT_LEN {
            return Err(ManifestProtocolError::ContentLength(content_len));
        }
        let manifest_len = (content_len - 1) as usize;
        match status {
            0 if manifest_len == 0 => Err(ManifestProtocolError::EmptyManifest),
            0 => Ok(ManifestResponseHeader {
                status: ManifestStatus::Found,
                manifest_len,
            }),
            1 if manifest_len != 0 => Err(ManifestProtocolError::NotFoundLength(content_len)),
            1 => Ok(ManifestResponseHeader {
                status: ManifestStatus::NotFound,
                manifest_len: 0,
            }),
            other => Err(ManifestProtocolError::Status(other)),
        }
    }
}

/// A manifest response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestResponse {
    /// The exact stored manifest bytes (1..=65536 of them).
    Found(Vec<u8>),
    /// Not served.
    NotFound,
}

impl ManifestResponse {
    /// The response bytes. Fails for a Found response with 0 or more than 65536 bytes.
    pub fn encode(&self) -> Result<Vec<u8>, ManifestProtocolError> {
        match self {
            ManifestResponse::NotFound => Ok(vec![1, 0, 0, 0, 1]),
            ManifestResponse::Found(bytes) => {
                if bytes.is_empty() {
                    return Err(ManifestProtocolError::EmptyManifest);
                }
                if bytes.len() > MAX_MANIFEST_SIZE {
                    return Err(ManifestProtocolError::ContentLength(
                        u32::try_from(bytes.len() + 1).unwrap_or(u32::MAX),
                    ));
                }
                let mut out = Vec::with_capacity(MANIFEST_RESPONSE_HEADER_LEN + bytes.len());
                out.extend_from_slice(&(bytes.len() as u32 + 1).to_le_bytes());
                out.push(0);
                out.extend_from_slice(bytes);
                Ok(out)
            }
        }
    }

    /// Parses a whole response. The manifest bytes are not checked here: call
    /// [`check_manifest_digest`] before storing or decoding them.
    pub fn decode(bytes: &[u8]) -> Result<ManifestResponse, ManifestProtocolError> {
        let (header, rest) = bytes
            .split_first_chunk::<MANIFEST_RESPONSE_HEADER_LEN>()
            .ok_or(ManifestProtocolError::Truncated)?;
        let header = ManifestResponseHeader::decode(*header)?;
        match rest.len().cmp(&header.manifest_len) {
            std::cmp::Ordering::Less => Err(ManifestProtocolError::Truncated),
            std::cmp::Ordering::Greater => Err(ManifestProtocolError::Trailing),
            std::cmp::Ordering::Equal => Ok(match header.status {
                ManifestStatus::Found => ManifestResponse::Found(rest.to_vec()),
                ManifestStatus::NotFound => ManifestResponse::NotFound,
            }),
        }
    }
}

/// The requester's check on a Found response (`wire.md` §6): `H(bytes)` must equal the digest of
/// the requested manifest CID. Run it before storing or decoding the bytes.
pub fn check_manifest_digest(requested: &Cid, bytes: &[u8]) -> Result<(), ManifestProtocolError> {
    if requested.codec() == Codec::Manifest && Manifest::cid_of(bytes) == *requested {
        Ok(())
    } else {
        Err(ManifestProtocolError::DigestMismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits() {
        let h = |len: u32, status: u8| {
            let mut b = [0u8; 5];
            b[..4].copy_from_slice(&len.to_le_bytes());
            b[4] = status;
            ManifestResponseHeader::decode(b)
        };
        assert_eq!(h(0, 0), Err(ManifestProtocolError::ContentLength(0)));
        assert_eq!(
            h(65_538, 0),
            Err(ManifestProtocolError::ContentLength(65_538))
        );
        assert_eq!(h(1, 0), Err(ManifestProtocolError::EmptyManifest));
        assert_eq!(h(2, 1), Err(ManifestProtocolError::NotFoundLength(2)));
        assert_eq!(h(1, 2), Err(ManifestProtocolError::Status(2)));
        assert_eq!(h(65_537, 0).map(|h| h.manifest_len), Ok(65_536));
        assert_eq!(
            h(1, 1),
            Ok(ManifestResponseHeader {
                status: ManifestStatus::NotFound,
                manifest_len: 0
            })
        );
    }

    #[test]
    fn request_limits() {
        assert_eq!(
            ManifestRequest::cid_len([0, 0]),
            Err(ManifestProtocolError::CidLength(0))
        );
        assert_eq!(
            ManifestRequest::cid_len(513u16.to_le_bytes()),
            Err(ManifestProtocolError::CidLength(513))
        );
        let block = ManifestRequest::decode(&{
            let mut b = vec![38, 0];
            b.extend_from_slice(&Cid::EMPTY_BLOCK.to_bytes());
            b
        });
        assert!(matches!(block, Err(ManifestProtocolError::Cid(_))));
    }
}
