//! The swarm request-response protocol `/cairn/durability/1.0.0` (`durability.md` §7.2): one
//! request and one response per stream, each an unsigned-varint length-prefixed frame. This
//! layer moves the frame bodies (protobuf `Request` / `Response`) as opaque bytes; it checks
//! every claimed length against its limit before it allocates.

use std::{
    collections::{HashMap, VecDeque},
    io,
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use libp2p::{PeerId, StreamProtocol, request_response};
use tokio::sync::oneshot;

use crate::NetError;

/// The protocol id.
pub const SWARM_PROTOCOL: &str = "/cairn/durability/1.0.0";
/// Largest request frame body (`durability.md` §7.2: 64 KiB).
pub const SWARM_MAX_REQUEST: usize = 64 * 1024;
/// Largest response frame body (1 MiB).
pub const SWARM_MAX_RESPONSE: usize = 1024 * 1024;
/// Inbound requests one peer may have in flight; the next ones get the busy answer.
pub const SWARM_MAX_IN_FLIGHT: usize = 8;
/// Bad frames from one peer within [`BAD_FRAME_WINDOW`] that get it disconnected (§18).
pub(crate) const BAD_FRAME_LIMIT: usize = 10;
pub(crate) const BAD_FRAME_WINDOW: Duration = Duration::from_secs(60);
/// How long such a peer stays disconnected (§18: 10 min).
pub(crate) const BAD_FRAME_BAN: Duration = Duration::from_secs(600);
/// Streams per connection (inbound + outbound) the request-response handler runs at once:
/// room for the in-flight limit, the requests it answers busy, and our own requests.
pub(crate) const MAX_CONCURRENT_STREAMS: usize = 4 * SWARM_MAX_IN_FLIGHT;

/// The longest unsigned varint accepted (a u64).
const MAX_VARINT_BYTES: usize = 10;

/// Reads an unsigned varint (minimal encoding only).
async fn read_varint<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<u64> {
    let mut value = 0u64;
    for i in 0..MAX_VARINT_BYTES {
        let mut byte = [0u8; 1];
        io.read_exact(&mut byte).await?;
        let b = byte[0];
        let bits = u64::from(b & 0x7f);
        if i == MAX_VARINT_BYTES - 1 && b > 1 {
            return Err(invalid("varint overflows 64 bits"));
        }
        value |= bits << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return Err(invalid("non-minimal varint"));
            }
            return Ok(value);
        }
    }
    Err(invalid("varint too long"))
}

fn write_varint(mut value: u64, out: &mut Vec<u8>) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Reads one length-prefixed frame of at most `limit` bytes. The claimed length is checked
/// before anything is allocated.
pub(crate) async fn read_frame<T: AsyncRead + Unpin>(
    io: &mut T,
    limit: usize,
) -> io::Result<Bytes> {
    let claimed = read_varint(io).await?;
    let len = usize::try_from(claimed)
        .ok()
        .filter(|len| *len <= limit)
        .ok_or_else(|| {
            invalid(&format!(
                "frame of {claimed} bytes over the {limit}-byte limit"
            ))
        })?;
    let mut body = vec![0u8; len];
    io.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// Writes one length-prefixed frame; refuses a body over `limit`.
pub(crate) async fn write_frame<T: AsyncWrite + Unpin>(
    io: &mut T,
    body: &[u8],
    limit: usize,
) -> io::Result<()> {
    if body.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes over the {limit}-byte limit", body.len()),
        ));
    }
    let mut frame = Vec::with_capacity(MAX_VARINT_BYTES + body.len());
    write_varint(body.len() as u64, &mut frame);
    frame.extend_from_slice(body);
    io.write_all(&frame).await?;
    io.flush().await
}

/// A request as the codec reads it. A frame that does not parse is passed up as `Bad`
/// instead of an error, because request-response reports nothing about requests that fail to
/// read, and the swarm task must count them against the peer (§18).
#[derive(Debug, Clone)]
pub(crate) enum SwarmFrame {
    /// A well-formed frame body.
    Frame(Bytes),
    /// A malformed, truncated or oversized frame; the rest of the stream is not read.
    Bad(String),
}

/// The request-response codec: frames of opaque bytes with the §7.2 limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SwarmCodec;

impl request_response::Codec for SwarmCodec {
    type Protocol = StreamProtocol;
    type Request = SwarmFrame;
    type Response = Bytes;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<SwarmFrame>
    where
        T: AsyncRead + Unpin + Send,
    {
        match read_frame(io, SWARM_MAX_REQUEST).await {
            Ok(body) => Ok(SwarmFrame::Frame(body)),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof
                ) =>
            {
                Ok(SwarmFrame::Bad(e.to_string()))
            }
            Err(e) => Err(e),
        }
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Bytes>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, SWARM_MAX_RESPONSE).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: SwarmFrame,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            SwarmFrame::Frame(body) => write_frame(io, &body, SWARM_MAX_REQUEST).await,
            SwarmFrame::Bad(_) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a request frame",
            )),
        }
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Bytes,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &response, SWARM_MAX_RESPONSE).await
    }
}

/// How the node settled an inbound request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Answer with these bytes.
    Respond(Bytes),
    /// The request did not decode: close the stream and count a bad frame against the peer.
    Malformed,
}

/// The answer slot of an inbound swarm request. Answer with [`respond`](Self::respond); call
/// [`malformed`](Self::malformed) when the request does not decode; dropping it closes the
/// stream without an answer. An unanswered request expires after the swarm request timeout.
#[derive(Debug)]
pub struct SwarmResponder {
    peer: PeerId,
    reply: oneshot::Sender<Reply>,
}

impl SwarmResponder {
    pub(crate) fn new(peer: PeerId) -> (SwarmResponder, oneshot::Receiver<Reply>) {
        let (reply, receiver) = oneshot::channel();
        (SwarmResponder { peer, reply }, receiver)
    }

    /// The requester (the connection's remote peer).
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Whether the request is still waiting for an answer (it has not expired and the stream
    /// is open as far as the network layer knows).
    pub fn is_open(&self) -> bool {
        !self.reply.is_closed()
    }

    /// Sends `response` (the body of a protobuf `Response` frame, at most
    /// [`SWARM_MAX_RESPONSE`] bytes).
    pub fn respond(self, response: Bytes) -> Result<(), NetError> {
        if response.len() > SWARM_MAX_RESPONSE {
            return Err(NetError::TooLarge {
                size: response.len(),
                limit: SWARM_MAX_RESPONSE,
            });
        }
        let peer = self.peer;
        self.reply
            .send(Reply::Respond(response))
            .map_err(|_| NetError::Request {
                peer,
                reason: "the request expired before it was answered".into(),
            })
    }

    /// Closes the stream without an answer and counts a bad frame against the peer
    /// (`durability.md` §18: an undecodable request).
    pub fn malformed(self) {
        let _ = self.reply.send(Reply::Malformed);
    }
}

/// Bad frames per peer in a sliding window; bounded by the peers that sent one recently.
#[derive(Debug, Default)]
pub(crate) struct BadFrames {
    seen: HashMap<PeerId, VecDeque<Instant>>,
}

impl BadFrames {
    /// Counts one bad frame from `peer`; true when it reached the limit (the count restarts).
    pub(crate) fn strike(&mut self, peer: PeerId, now: Instant) -> bool {
        let times = self.seen.entry(peer).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= BAD_FRAME_WINDOW)
        {
            times.pop_front();
        }
        times.push_back(now);
        if times.len() >= BAD_FRAME_LIMIT {
            self.seen.remove(&peer);
            return true;
        }
        false
    }

    /// Forgets strikes older than the window.
    pub(crate) fn expire(&mut self, now: Instant) {
        self.seen.retain(|_, times| {
            times
                .back()
                .is_some_and(|t| now.duration_since(*t) < BAD_FRAME_WINDOW)
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    use futures::executor::block_on;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        block_on(write_frame(&mut out, body, usize::MAX)).expect("write");
        out
    }

    #[test]
    fn frames_round_trip() {
        for len in [0usize, 1, 127, 128, 300, SWARM_MAX_REQUEST] {
            let body = vec![0xab; len];
            let bytes = frame(&body);
            let mut prefix = Vec::new();
            write_varint(len as u64, &mut prefix);
            assert_eq!(&bytes[..prefix.len()], prefix.as_slice());
            let got =
                block_on(read_frame(&mut Cursor::new(bytes), SWARM_MAX_REQUEST)).expect("read");
            assert_eq!(got.as_ref(), body.as_slice());
        }
        assert_eq!(frame(&[7u8; 300])[..2], [0xac, 0x02]);
    }

    #[test]
    fn oversized_frames_are_refused_before_allocating() {
        // A frame claiming 2^60 bytes followed by nothing: refused on the claim alone.
        let mut claim = Vec::new();
        write_varint(1 << 60, &mut claim);
        let err =
            block_on(read_frame(&mut Cursor::new(claim), SWARM_MAX_REQUEST)).expect_err("refused");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // One byte over the limit.
        let bytes = frame(&vec![0; SWARM_MAX_REQUEST + 1]);
        assert!(block_on(read_frame(&mut Cursor::new(bytes), SWARM_MAX_REQUEST)).is_err());
        // Writing over the limit fails too.
        let mut out = Vec::new();
        assert!(block_on(write_frame(&mut out, &[0; 11], 10)).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_prefixes() {
        let read = |bytes: &[u8]| block_on(read_frame(&mut Cursor::new(bytes.to_vec()), 1 << 20));
        // Truncated varint, truncated body, non-minimal varint, 11-byte varint.
        assert!(read(&[0x80]).is_err());
        assert!(read(&[0x05, 1, 2]).is_err());
        assert!(read(&[0x81, 0x00]).is_err());
        assert!(read(&[0xff; 11]).is_err());
        assert!(read(&[]).is_err());
        assert_eq!(read(&[0x00]).expect("empty frame").len(), 0);
    }

    #[test]
    fn bad_frames_disconnect_at_the_limit() {
        let mut bad = BadFrames::default();
        let peer = PeerId::random();
        let start = Instant::now();
        for i in 0..BAD_FRAME_LIMIT - 1 {
            assert!(!bad.strike(peer, start + Duration::from_secs(i as u64)));
        }
        assert!(bad.strike(peer, start + Duration::from_secs(10)));
        // Spread over more than a minute: never reaches the limit.
        for i in 0..30u64 {
            assert!(!bad.strike(peer, start + Duration::from_secs(100 + i * 7)));
        }
        bad.expire(start + Duration::from_secs(1000));
        assert_eq!(bad.len(), 0);
    }
}
