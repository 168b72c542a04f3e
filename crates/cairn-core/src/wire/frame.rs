//! blockexc framing (`wire.md` §7.2): `frameLen:u32 ‖ type:u8 ‖ body[frameLen − 1]`.

use super::{
    EncodeError,
    control::{
        ControlError, MAX_BLOCK_PRESENCE_ENTRIES, MAX_CONTROL_BODY, MAX_WANT_LIST_ENTRIES, Message,
    },
    want_blocks::{
        MAX_WANT_BLOCKS_REQUEST_BYTES, MAX_WANT_BLOCKS_RESPONSE_BYTES, WantBlocksRequest,
        WantBlocksRequestError, WantBlocksResponse, WantBlocksResponseError,
    },
};

/// The protocol id.
pub const BLOCKEXC_PROTOCOL: &str = "/storage/blockexc/1.0.0";
/// Bytes of a frame header (`frameLen ‖ type`).
pub const FRAME_HEADER_LEN: usize = 5;
/// Most concurrent inbound blockexc streams a node accepts (`DefaultMaxInflight`).
pub const MAX_INBOUND_BLOCKEXC_STREAMS: usize = 100;

/// The three frame types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// 0: control protobuf.
    Control,
    /// 1: WantBlocksRequest.
    WantBlocksRequest,
    /// 2: WantBlocksResponse.
    WantBlocksResponse,
}

impl FrameType {
    /// The type byte.
    pub const fn code(self) -> u8 {
        match self {
            FrameType::Control => 0,
            FrameType::WantBlocksRequest => 1,
            FrameType::WantBlocksResponse => 2,
        }
    }

    /// The frame type of a type byte, if defined.
    pub const fn from_code(code: u8) -> Option<FrameType> {
        match code {
            0 => Some(FrameType::Control),
            1 => Some(FrameType::WantBlocksRequest),
            2 => Some(FrameType::WantBlocksResponse),
            _ => None,
        }
    }

    /// Largest body of this type.
    pub const fn max_body_len(self) -> usize {
        match self {
            FrameType::Control => MAX_CONTROL_BODY,
            FrameType::WantBlocksRequest => MAX_WANT_BLOCKS_REQUEST_BYTES,
            FrameType::WantBlocksResponse => MAX_WANT_BLOCKS_RESPONSE_BYTES,
        }
    }
}

/// Why a frame is refused. Any of these closes the stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `frameLen = 0`: no type byte.
    #[error("blockexc frame of length 0")]
    Empty,
    /// A type other than 0, 1, 2.
    #[error("blockexc frame type {0} is unknown")]
    UnknownType(u8),
    /// The body exceeds its type's limit.
    #[error("blockexc {frame_type:?} body of {len} bytes exceeds {max}")]
    BodyTooLarge {
        /// The frame type.
        frame_type: FrameType,
        /// The claimed body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ends inside the frame.
    #[error("blockexc frame is truncated")]
    Truncated,
    /// Bytes after the frame.
    #[error("trailing bytes after the blockexc frame")]
    Trailing,
}

/// A validated frame header: the body length is within its type's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// The frame type.
    pub frame_type: FrameType,
    /// Body bytes that follow.
    pub body_len: usize,
}

impl FrameHeader {
    /// A header for a body of `body_len` bytes, checked against the type's limit.
    pub fn new(frame_type: FrameType, body_len: usize) -> Result<FrameHeader, FrameError> {
        let max = frame_type.max_body_len();
        if body_len > max {
            return Err(FrameError::BodyTooLarge {
                frame_type,
                len: body_len,
                max,
            });
        }
        Ok(FrameHeader {
            frame_type,
            body_len,
        })
    }

    /// Validates the 5 header bytes: `frameLen ≥ 1`, a known type, and a body within the type's
    /// limit. Call before reading or allocating the body.
    pub fn decode(header: [u8; FRAME_HEADER_LEN]) -> Result<FrameHeader, FrameError> {
        let [a, b, c, d, code] = header;
        let frame_len = u32::from_le_bytes([a, b, c, d]);
        if frame_len == 0 {
            return Err(FrameError::Empty);
        }
        let frame_type = FrameType::from_code(code).ok_or(FrameError::UnknownType(code))?;
        FrameHeader::new(frame_type, (frame_len - 1) as usize)
    }

    /// The 5 header bytes. (A header from [`Self::new`] or [`Self::decode`] has a body of at
    /// most 16 MiB, so `frameLen` always fits.)
    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let frame_len = u32::try_from(self.body_len)
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let mut out = [0u8; FRAME_HEADER_LEN];
        out[..4].copy_from_slice(&frame_len.to_le_bytes());
        out[4] = self.frame_type.code();
        out
    }
}

/// Any blockexc decoding failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BlockexcError {
    /// Framing.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// A control body.
    #[error(transparent)]
    Control(#[from] ControlError),
    /// A WantBlocksRequest body.
    #[error(transparent)]
    WantBlocksRequest(#[from] WantBlocksRequestError),
    /// A WantBlocksResponse body.
    #[error(transparent)]
    WantBlocksResponse(#[from] WantBlocksResponseError),
}

/// A decoded blockexc frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Type 0.
    Control(Message),
    /// Type 1.
    WantBlocksRequest(WantBlocksRequest),
    /// Type 2.
    WantBlocksResponse(WantBlocksResponse),
}

impl Frame {
    /// The frame's type.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Control(_) => FrameType::Control,
            Frame::WantBlocksRequest(_) => FrameType::WantBlocksRequest,
            Frame::WantBlocksResponse(_) => FrameType::WantBlocksResponse,
        }
    }

    /// The body bytes, within every limit a decoder enforces.
    pub fn encode_body(&self) -> Result<Vec<u8>, EncodeError> {
        match self {
            Frame::Control(msg) => {
                check_count(
                    "want-list entries",
                    msg.wantlist.entries.len(),
                    MAX_WANT_LIST_ENTRIES,
                )?;
                check_count(
                    "block presences",
                    msg.block_presences.len(),
                    MAX_BLOCK_PRESENCE_ENTRIES,
                )?;
                let body = msg.encode();
                if body.len() > MAX_CONTROL_BODY {
                    return Err(EncodeError::TooLarge {
                        what: "control body",
                        len: body.len(),
                        max: MAX_CONTROL_BODY,
                    });
                }
                Ok(body)
            }
            Frame::WantBlocksRequest(req) => req.encode_body(),
            Frame::WantBlocksResponse(resp) => resp.encode_body(),
        }
    }

    /// The whole frame: header and body.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let body = self.encode_body()?;
        let header = FrameHeader {
            frame_type: self.frame_type(),
            body_len: body.len(),
        };
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + body.len());
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decodes a body of `frame_type` (its length is checked against the type's limit again).
    pub fn decode_body(frame_type: FrameType, body: &[u8]) -> Result<Frame, BlockexcError> {
        FrameHeader::new(frame_type, body.len())?;
        Ok(match frame_type {
            FrameType::Control => Frame::Control(Message::decode(body)?),
            FrameType::WantBlocksRequest => {
                Frame::WantBlocksRequest(WantBlocksRequest::decode_body(body)?)
            }
            FrameType::WantBlocksResponse => {
                Frame::WantBlocksResponse(WantBlocksResponse::decode_body(body)?)
            }
        })
    }

    /// [`Self::decode_body`] on an owned body: the blocks of a WantBlocksResponse share `body`
    /// instead of being copied out of it.
    pub fn decode_bytes(
        frame_type: FrameType,
        body: ::bytes::Bytes,
    ) -> Result<Frame, BlockexcError> {
        match frame_type {
            FrameType::WantBlocksResponse => {
                FrameHeader::new(frame_type, body.len())?;
                Ok(Frame::WantBlocksResponse(WantBlocksResponse::decode_bytes(
                    body,
                )?))
            }
            _ => Frame::decode_body(frame_type, &body),
        }
    }

    /// Decodes exactly one whole frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, BlockexcError> {
        let (header, body) = bytes
            .split_first_chunk::<FRAME_HEADER_LEN>()
            .ok_or(FrameError::Truncated)?;
        let header = FrameHeader::decode(*header)?;
        match body.len().cmp(&header.body_len) {
            std::cmp::Ordering::Less => Err(FrameError::Truncated.into()),
            std::cmp::Ordering::Greater => Err(FrameError::Trailing.into()),
            std::cmp::Ordering::Equal => Frame::decode_body(header.frame_type, body),
        }
    }
}

fn check_count(what: &'static str, count: usize, max: usize) -> Result<(), EncodeError> {
    if count > max {
        Err(EncodeError::TooMany { what, count, max })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_limits() {
        let h = |len: u32, t: u8| {
            let mut b = [0u8; 5];
            b[..4].copy_from_slice(&len.to_le_bytes());
            b[4] = t;
            FrameHeader::decode(b)
        };
        assert_eq!(h(0, 0), Err(FrameError::Empty));
        assert_eq!(h(1, 3), Err(FrameError::UnknownType(3)));
        assert_eq!(h(1, 0).map(|h| h.body_len), Ok(0));
        assert!(h(16 * 1024 * 1024 + 1, 0).is_ok());
        assert!(h(16 * 1024 * 1024 + 2, 0).is_err());
        assert!(h(1281, 1).is_ok());
        assert!(h(1282, 1).is_err());
        assert!(h(4_325_381, 2).is_ok());
        assert!(h(4_325_382, 2).is_err());
        assert!(h(u32::MAX, 2).is_err());
    }
}
