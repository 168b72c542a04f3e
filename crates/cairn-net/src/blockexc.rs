//! `/storage/blockexc/1.0.0` (`wire.md` §7): framing on streams, the per-peer outbound stream
//! with its request table, and the responder.
//!
//! Streams:
//! - each peer has at most one outbound stream (a [`Session`]), opened lazily by the first
//!   control message or request to it. Many requests are outstanding on it at once; responses
//!   are matched by request id. It closes after `idle_timeout` without traffic or pending
//!   requests, and on any stream error, failing the requests still pending on it;
//! - every stream, inbound or outbound, has one reader task (all three frame types accepted)
//!   and one writer task fed by a bounded queue of encoded frames, so responses are written on
//!   the stream that carried their request and writes never wait on reads;
//! - at most [`MAX_INBOUND_BLOCKEXC_STREAMS`] inbound streams at once.
//!
//! A frame's length is checked against its type's limit ([`FrameHeader::decode`]) before its
//! body is read or allocated; an unknown type, an oversized body or a body that does not decode
//! closes the stream.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use cairn_core::{
    Cid,
    wire::{
        BLOCKEXC_PROTOCOL, BlockAddress, BlockDelivery, BlockPresence, BlockRange, BlockexcError,
        FRAME_HEADER_LEN, Frame, FrameHeader, FrameType, MAX_BLOCK_PRESENCE_ENTRIES,
        MAX_INBOUND_BLOCKEXC_STREAMS, MAX_PRESENCE_WINDOW_BLOCKS, MAX_RANGE_ITERATIONS_PER_MESSAGE,
        Message, PresenceKind, WantBlocksRequest, WantBlocksRequestError, WantBlocksResponse,
        WantEntry, Wantlist,
    },
};
use futures::{
    AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _,
    io::{BufReader, BufWriter, ReadHalf, WriteHalf},
};
use libp2p::{PeerId, Stream, StreamProtocol};
use libp2p_stream::{Control, IncomingStreams};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{ContentServer, NetError, NetEvent, bans::BanList};

/// The protocol id as a libp2p value.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new(BLOCKEXC_PROTOCOL);

/// Encoded frames queued for one stream's writer.
const FRAME_QUEUE: usize = 128;
/// WantBlocksRequests of one stream being served, from lookup until their response is written;
/// the reader waits for a slot before reading on (back-pressure on a peer that pipelines faster
/// than it reads).
const MAX_REQUESTS_IN_SERVICE_PER_STREAM: usize = 16;
/// The same over all streams: bounds the memory of responses being built or queued (at most
/// 4325380 bytes each).
const MAX_REQUESTS_IN_SERVICE: usize = 64;
/// Read buffer of a stream. Small on purpose: it batches small frames, while a read at least
/// this large into an empty buffer goes straight into the body (no extra copy of block data).
const READ_BUFFER: usize = 8 * 1024;
/// Write buffer of a stream: small frames are coalesced, larger bodies bypass it.
const WRITE_BUFFER: usize = 16 * 1024;
/// A control body is read (and allocated) this much at a time, so a peer cannot make us
/// reserve 16 MiB it never sends.
const CONTROL_READ_STEP: usize = 64 * 1024;
/// Pause before the one retry of a failed stream opening.
const STREAM_REOPEN_DELAY: Duration = Duration::from_millis(50);
/// How long a stream reader waits for room in the event channel before dropping an event.
const EVENT_SEND_TIMEOUT: Duration = Duration::from_secs(5);

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One encoded frame: header and body, plus the service slots it holds until it is written.
/// The body is `body` followed by the buffers of `tail` (a response's block data, written from
/// the buffers the store handed over rather than copied into one).
#[derive(Debug)]
struct OutFrame {
    header: [u8; FRAME_HEADER_LEN],
    body: Vec<u8>,
    tail: Vec<Bytes>,
    slots: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl OutFrame {
    fn new(frame_type: FrameType, body: Vec<u8>) -> OutFrame {
        OutFrame::with_tail(frame_type, body, Vec::new())
    }

    fn with_tail(frame_type: FrameType, body: Vec<u8>, tail: Vec<Bytes>) -> OutFrame {
        let header = FrameHeader {
            frame_type,
            body_len: body.len() + tail.iter().map(Bytes::len).sum::<usize>(),
        }
        .encode();
        OutFrame {
            header,
            body,
            tail,
            slots: None,
        }
    }

    fn response(response: WantBlocksResponse) -> OutFrame {
        match response.encode_head() {
            Ok(head) => {
                let tail = response.blocks.into_iter().map(|b| b.data).collect();
                OutFrame::with_tail(FrameType::WantBlocksResponse, head, tail)
            }
            Err(e) => {
                // try_push keeps responses within the limits; this is a bug guard.
                tracing::error!(error = %e, "WantBlocksResponse over the limits, sending it empty");
                let body = WantBlocksResponse::empty(response.request_id, response.tree_cid)
                    .encode_body()
                    .unwrap_or_default();
                OutFrame::new(FrameType::WantBlocksResponse, body)
            }
        }
    }
}

/// What becomes of a pending request.
#[derive(Debug)]
enum Outcome {
    /// Its response, or the error that ends it.
    Done(Result<WantBlocksResponse, NetError>),
    /// The stream ended cleanly (idle close, EOF) before a response: asking again on a new
    /// stream is safe, a WantBlocksRequest is a read.
    Retry(NetError),
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    tree: Cid,
    reply: oneshot::Sender<Outcome>,
}

/// Our outbound stream to one peer and the requests outstanding on it.
#[derive(Debug)]
struct Session {
    peer: PeerId,
    frames: mpsc::Sender<OutFrame>,
    pending: Mutex<HashMap<u64, Pending>>,
    cancel: CancellationToken,
}

impl Session {
    /// Ends every pending request: with `error`, or (`retry`) asking the caller to retry.
    fn fail_all(&self, error: &NetError, retry: bool) {
        let pending: Vec<Pending> = lock(&self.pending).drain().map(|(_, p)| p).collect();
        for p in pending {
            let outcome = if retry {
                Outcome::Retry(error.clone())
            } else {
                Outcome::Done(Err(error.clone()))
            };
            let _ = p.reply.send(outcome);
        }
    }
}

/// The blockexc protocol state shared by the handle and the stream tasks.
pub(crate) struct Blockexc {
    control: Control,
    server: Arc<dyn ContentServer>,
    events: mpsc::Sender<NetEvent>,
    bans: Arc<BanList>,
    sessions: Mutex<HashMap<PeerId, Arc<Session>>>,
    /// Peers whose want-list message is being answered (one at a time per peer).
    busy: Mutex<HashSet<PeerId>>,
    inbound: Arc<Semaphore>,
    in_service: Arc<Semaphore>,
    next_request_id: AtomicU64,
    request_timeout: Duration,
    idle_timeout: Duration,
    shutdown: CancellationToken,
}

impl fmt::Debug for Blockexc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Blockexc")
            .field("sessions", &lock(&self.sessions).len())
            .field("inbound_free", &self.inbound.available_permits())
            .finish_non_exhaustive()
    }
}

/// Why a stream's read loop ended.
#[derive(Debug)]
enum ReadEnd {
    /// EOF, idle or shutdown: queued writes may finish.
    Clean,
    /// A framing, decoding or I/O error: the stream is dropped at once.
    Error(String),
}

impl Blockexc {
    pub(crate) fn new(
        control: Control,
        server: Arc<dyn ContentServer>,
        events: mpsc::Sender<NetEvent>,
        bans: Arc<BanList>,
        request_timeout: Duration,
        idle_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Blockexc> {
        Arc::new(Blockexc {
            control,
            server,
            events,
            bans,
            sessions: Mutex::new(HashMap::new()),
            busy: Mutex::new(HashSet::new()),
            inbound: Arc::new(Semaphore::new(MAX_INBOUND_BLOCKEXC_STREAMS)),
            in_service: Arc::new(Semaphore::new(MAX_REQUESTS_IN_SERVICE)),
            next_request_id: AtomicU64::new(1),
            request_timeout,
            idle_timeout,
            shutdown,
        })
    }

    /// True if an outbound stream to `peer` is open or being opened.
    pub(crate) fn has_session(&self, peer: &PeerId) -> bool {
        lock(&self.sessions)
            .get(peer)
            .is_some_and(|s| !s.cancel.is_cancelled())
    }

    /// Closes the outbound stream to `peer` and fails its pending requests with `error`.
    pub(crate) fn close_peer(&self, peer: &PeerId, error: &NetError) {
        let session = lock(&self.sessions).remove(peer);
        if let Some(session) = session {
            session.cancel.cancel();
            session.fail_all(error, false);
        }
    }

    /// The live session to `peer`, or a new one (its stream opens on its own task).
    fn session(self: &Arc<Self>, peer: PeerId) -> Arc<Session> {
        let mut sessions = lock(&self.sessions);
        if let Some(session) = sessions.get(&peer)
            && !session.cancel.is_cancelled()
        {
            return session.clone();
        }
        let (frames, queue) = mpsc::channel(FRAME_QUEUE);
        let session = Arc::new(Session {
            peer,
            frames,
            pending: Mutex::new(HashMap::new()),
            cancel: self.shutdown.child_token(),
        });
        sessions.insert(peer, session.clone());
        drop(sessions);
        tokio::spawn(self.clone().run_session(session.clone(), queue));
        session
    }

    /// Queues `frame` on the outbound stream to `peer`, opening it if needed. A session that
    /// closed in the meantime is replaced once.
    async fn send_frame(self: &Arc<Self>, peer: PeerId, frame: OutFrame) -> Result<(), NetError> {
        let mut frame = frame;
        for _ in 0..2 {
            let session = self.session(peer);
            match session.frames.send(frame).await {
                Ok(()) => return Ok(()),
                Err(mpsc::error::SendError(back)) => {
                    self.forget(&session);
                    frame = back;
                }
            }
        }
        Err(NetError::Request {
            peer,
            reason: "blockexc stream closed".into(),
        })
    }

    /// Removes `session` from the map if it is still the peer's current one.
    fn forget(&self, session: &Arc<Session>) {
        session.cancel.cancel();
        let mut sessions = lock(&self.sessions);
        if sessions
            .get(&session.peer)
            .is_some_and(|s| Arc::ptr_eq(s, session))
        {
            sessions.remove(&session.peer);
        }
    }

    /// Sends a control message to `peer` on its outbound stream.
    pub(crate) async fn send_control(
        self: &Arc<Self>,
        peer: PeerId,
        message: Message,
    ) -> Result<(), NetError> {
        if self.bans.is_banned(&peer) {
            return Err(NetError::Banned(peer));
        }
        let body = Frame::Control(message)
            .encode_body()
            .map_err(|e| NetError::Request {
                peer,
                reason: e.to_string(),
            })?;
        self.send_frame(peer, OutFrame::new(FrameType::Control, body))
            .await
    }

    /// Sends a WantBlocksRequest for `ranges` of `tree` and awaits its response. The caller
    /// bounds the time; a request abandoned by a timeout is removed from the table when the
    /// future is dropped.
    pub(crate) async fn want_blocks(
        self: &Arc<Self>,
        peer: PeerId,
        tree: Cid,
        ranges: Vec<(u64, u64)>,
    ) -> Result<WantBlocksResponse, NetError> {
        let fail = |reason: String| NetError::Request { peer, reason };
        if self.bans.is_banned(&peer) {
            return Err(NetError::Banned(peer));
        }
        let request_id = self.next_request_id.fetch_add(1, Ordering::Relaxed);
        let request = WantBlocksRequest {
            request_id,
            tree_cid: tree,
            ranges: ranges
                .into_iter()
                .map(|(start, count)| BlockRange { start, count })
                .collect(),
        };
        if request.ranges.is_empty() {
            return Err(fail("WantBlocksRequest without ranges".into()));
        }
        // The responder's own checks: a request that fails them would only get 0 blocks.
        request
            .check_responder()
            .map_err(|e| fail(format!("invalid WantBlocksRequest: {e}")))?;
        let body = request.encode_body().map_err(|e| fail(e.to_string()))?;
        let mut last = fail("blockexc stream closed".into());
        // A second stream is tried only if the first ended cleanly before answering.
        for _ in 0..2 {
            let frame = OutFrame::new(FrameType::WantBlocksRequest, body.clone());
            let session = self.session(peer);
            let (reply, response) = oneshot::channel();
            lock(&session.pending).insert(request_id, Pending { tree, reply });
            let _guard = PendingGuard {
                session: &session,
                request_id,
            };
            if session.frames.send(frame).await.is_err() {
                self.forget(&session);
                continue;
            }
            match response.await {
                Ok(Outcome::Done(result)) => return result,
                Ok(Outcome::Retry(error)) => last = error,
                Err(_) => return Err(fail("blockexc stream closed before the response".into())),
            }
        }
        Err(last)
    }

    /// Opens the outbound stream of `session` and runs its writer; its reader runs alongside.
    async fn run_session(
        self: Arc<Self>,
        session: Arc<Session>,
        mut queue: mpsc::Receiver<OutFrame>,
    ) {
        let peer = session.peer;
        let mut control = self.control.clone();
        let mut retried = false;
        let opened = loop {
            let opened = tokio::select! {
                () = session.cancel.cancelled() => None,
                opened = tokio::time::timeout(self.request_timeout, control.open_stream(peer, PROTOCOL)) => Some(opened),
            };
            // Opening can fail while the peer stays reachable (a connection going away, a
            // stream refused because the peer's accept queue was busy). Once more, then,
            // before the frames queued here (control messages included) are dropped.
            match opened {
                Some(Ok(Err(e))) if !retried => {
                    tracing::debug!(%peer, error = %e, "opening the blockexc stream failed, retrying once");
                    retried = true;
                    tokio::time::sleep(STREAM_REOPEN_DELAY).await;
                }
                other => break other,
            }
        };
        let stream = match opened {
            Some(Ok(Ok(stream))) => stream,
            other => {
                let reason = match other {
                    None => "blockexc session cancelled".to_owned(),
                    Some(Ok(Err(e))) => format!("opening the blockexc stream: {e}"),
                    Some(Err(_)) => "opening the blockexc stream timed out".to_owned(),
                    Some(Ok(Ok(_))) => String::new(),
                };
                tracing::debug!(%peer, %reason, "blockexc session failed");
                self.forget(&session);
                queue.close();
                session.fail_all(&NetError::Request { peer, reason }, false);
                return;
            }
        };
        tracing::debug!(%peer, "blockexc outbound stream open");
        let (read, write) = stream.split();
        let reader = tokio::spawn({
            let this = self.clone();
            let session = session.clone();
            async move {
                let end = this
                    .clone()
                    .read_loop(peer, read, session.frames.clone(), &session.cancel, None)
                    .await;
                if let ReadEnd::Error(reason) = &end {
                    tracing::debug!(%peer, %reason, "blockexc outbound stream failed");
                }
                // Whatever ended the reader ends the session: responses can no longer arrive.
                this.forget(&session);
                let (reason, retry) = match end {
                    ReadEnd::Clean => ("blockexc stream closed".to_owned(), true),
                    ReadEnd::Error(reason) => (reason, false),
                };
                session.fail_all(&NetError::Request { peer, reason }, retry);
            }
        });
        let idle = Some((self.idle_timeout, &*session));
        let written = write_loop(
            write,
            &mut queue,
            &session.cancel,
            self.request_timeout,
            idle,
        )
        .await;
        self.forget(&session);
        queue.close();
        // After an idle close, requests that raced in were never written: they may retry.
        let (reason, retry) = match written {
            Ok(()) => ("blockexc stream closed".to_owned(), true),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "blockexc outbound write failed");
                (format!("writing to the blockexc stream: {e}"), false)
            }
        };
        session.fail_all(&NetError::Request { peer, reason }, retry);
        let _ = reader.await;
        tracing::debug!(%peer, "blockexc outbound stream closed");
    }

    /// Accepts inbound blockexc streams until shutdown.
    pub(crate) async fn serve(self: Arc<Self>, mut incoming: IncomingStreams) {
        loop {
            let (peer, stream) = tokio::select! {
                () = self.shutdown.cancelled() => break,
                next = incoming.next() => match next {
                    Some(next) => next,
                    None => break,
                },
            };
            if self.bans.is_banned(&peer) {
                tracing::debug!(%peer, "dropping a blockexc stream from a banned peer");
                continue;
            }
            let Ok(permit) = self.inbound.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "{MAX_INBOUND_BLOCKEXC_STREAMS} inbound blockexc streams open, dropping one");
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.run_inbound(peer, stream).await;
                drop(permit);
            });
        }
    }

    async fn run_inbound(self: Arc<Self>, peer: PeerId, stream: Stream) {
        tracing::debug!(%peer, "blockexc inbound stream open");
        let (read, write) = stream.split();
        let (frames, mut queue) = mpsc::channel(FRAME_QUEUE);
        let cancel = self.shutdown.child_token();
        let stall = self.request_timeout;
        let writer = tokio::spawn({
            let cancel = cancel.clone();
            async move {
                if let Err(e) = write_loop(write, &mut queue, &cancel, stall, None).await {
                    tracing::debug!(%peer, error = %e, "blockexc inbound write failed");
                    // Nothing more can be answered on this stream: stop reading it too.
                    cancel.cancel();
                }
            }
        });
        let idle = Some(self.idle_timeout);
        match self.read_loop(peer, read, frames, &cancel, idle).await {
            ReadEnd::Clean => {}
            ReadEnd::Error(reason) => {
                tracing::debug!(%peer, %reason, "closing a blockexc inbound stream");
                cancel.cancel();
            }
        }
        // After a clean end the writer finishes the responses still being prepared.
        let _ = writer.await;
        tracing::debug!(%peer, "blockexc inbound stream closed");
    }

    /// Reads frames from one stream until EOF, an error, `cancel`, or (with `idle`) that long
    /// without a frame while no request of the stream is in service.
    async fn read_loop(
        self: Arc<Self>,
        peer: PeerId,
        read: ReadHalf<Stream>,
        replies: mpsc::Sender<OutFrame>,
        cancel: &CancellationToken,
        idle: Option<Duration>,
    ) -> ReadEnd {
        let mut reader = BufReader::with_capacity(READ_BUFFER, read);
        let in_service = Arc::new(Semaphore::new(MAX_REQUESTS_IN_SERVICE_PER_STREAM));
        loop {
            // Wait for the next frame's first byte; `fill_buf` consumes nothing, so giving up
            // on it (idle, cancel) loses no data.
            let ready = async {
                match idle {
                    None => Some(reader.fill_buf().await.map(|b| b.is_empty())),
                    Some(idle) => tokio::time::timeout(idle, reader.fill_buf())
                        .await
                        .ok()
                        .map(|r| r.map(|b| b.is_empty())),
                }
            };
            let ready = tokio::select! {
                () = cancel.cancelled() => return ReadEnd::Clean,
                ready = ready => ready,
            };
            match ready {
                None => {
                    if in_service.available_permits() == MAX_REQUESTS_IN_SERVICE_PER_STREAM {
                        tracing::debug!(%peer, "blockexc stream idle");
                        return ReadEnd::Clean;
                    }
                    continue;
                }
                Some(Ok(true)) => return ReadEnd::Clean,
                Some(Ok(false)) => {}
                Some(Err(e)) => return ReadEnd::Error(format!("read: {e}")),
            }
            let frame = tokio::select! {
                () = cancel.cancelled() => return ReadEnd::Clean,
                frame = read_frame(&mut reader) => frame,
            };
            let (frame_type, body) = match frame {
                Ok(frame) => frame,
                Err(reason) => return ReadEnd::Error(reason),
            };
            // A response's blocks are slices of its body: no copy of the block data.
            match Frame::decode_bytes(frame_type, Bytes::from(body)) {
                Ok(Frame::Control(message)) => self.on_control(peer, message).await,
                Ok(Frame::WantBlocksRequest(request)) => {
                    let slots = async {
                        let stream_slot = in_service.clone().acquire_owned().await.ok()?;
                        let slot = self.in_service.clone().acquire_owned().await.ok()?;
                        Some((stream_slot, slot))
                    };
                    let slots = tokio::select! {
                        () = cancel.cancelled() => return ReadEnd::Clean,
                        slots = slots => slots,
                    };
                    let Some(slots) = slots else {
                        return ReadEnd::Clean;
                    };
                    let server = self.server.clone();
                    let replies = replies.clone();
                    // Looked up and queued for the writer from the blocking pool: one hop per
                    // request. The queue holds at most the requests in service, so the send
                    // waits only while the writer catches up.
                    tokio::task::spawn_blocking(move || {
                        let mut frame = serve_blocks(&*server, &request);
                        // The slots are released once the frame is written.
                        frame.slots = Some(slots);
                        let _ = replies.blocking_send(frame);
                    });
                }
                Ok(Frame::WantBlocksResponse(response)) => self.on_response(peer, response),
                // An inconsistent body length is refused like bad ranges: with 0 blocks.
                Err(BlockexcError::WantBlocksRequest(WantBlocksRequestError::LengthMismatch {
                    request_id,
                    tree_cid,
                    ..
                })) => {
                    tracing::debug!(%peer, request_id, "WantBlocksRequest of inconsistent length");
                    let frame = OutFrame::response(WantBlocksResponse::empty(request_id, tree_cid));
                    if replies.send(frame).await.is_err() {
                        return ReadEnd::Clean;
                    }
                }
                Err(e) => return ReadEnd::Error(format!("bad {frame_type:?} frame: {e}")),
            }
        }
    }

    /// A response from `peer`: completes the request with its id (rule a: the tree must match);
    /// unknown ids are dropped.
    fn on_response(&self, peer: PeerId, response: WantBlocksResponse) {
        let session = lock(&self.sessions).get(&peer).cloned();
        let pending = session.and_then(|s| lock(&s.pending).remove(&response.request_id));
        let Some(pending) = pending else {
            tracing::debug!(%peer, request_id = response.request_id, "dropping a response to no pending request");
            return;
        };
        let result = if pending.tree == response.tree_cid {
            Ok(response)
        } else {
            Err(NetError::Request {
                peer,
                reason: "WantBlocksResponse for another tree".into(),
            })
        };
        let _ = pending.reply.send(Outcome::Done(result));
    }

    /// A control message from `peer`: presences go out as an event; want-have entries are
    /// answered (one message per peer at a time, others dropped meanwhile, as upstream).
    async fn on_control(self: &Arc<Self>, peer: PeerId, message: Message) {
        let wants = message.wantlist.entries.iter().any(|e| !e.cancel);
        let entries = if wants {
            message.wantlist.entries.clone()
        } else {
            Vec::new()
        };
        if !message.block_presences.is_empty() {
            let event = NetEvent::Control { peer, message };
            match tokio::time::timeout(EVENT_SEND_TIMEOUT, self.events.send(event)).await {
                Ok(_) => {}
                Err(_) => {
                    tracing::warn!(%peer, "event receiver is not keeping up, dropping a control message")
                }
            }
        }
        if !wants {
            return;
        }
        if !lock(&self.busy).insert(peer) {
            tracing::debug!(%peer, "want-list arrived while the previous one is answered, dropping it");
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            let server = this.server.clone();
            let presences =
                tokio::task::spawn_blocking(move || answer_wants(&*server, &entries)).await;
            match presences {
                Ok(presences) if !presences.is_empty() => {
                    let reply = Message {
                        wantlist: Wantlist::default(),
                        block_presences: presences,
                    };
                    let sent =
                        tokio::time::timeout(this.request_timeout, this.send_control(peer, reply))
                            .await;
                    if !matches!(sent, Ok(Ok(()))) {
                        tracing::debug!(%peer, "could not send presences");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "answering a want-list failed"),
            }
            lock(&this.busy).remove(&peer);
        });
    }
}

/// Removes a request from its session's table when its caller stops waiting.
struct PendingGuard<'a> {
    session: &'a Session,
    request_id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(&self.session.pending).remove(&self.request_id);
    }
}

/// Reads one frame: the header, checked against its type's limit, then the body.
async fn read_frame(
    reader: &mut BufReader<ReadHalf<Stream>>,
) -> Result<(FrameType, Vec<u8>), String> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    reader
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("reading a frame header: {e}"))?;
    let header = FrameHeader::decode(header).map_err(|e| e.to_string())?;
    let len = header.body_len;
    // Requests and responses are allocated at once (≤ 4325380 bytes); a control body, up to
    // 16 MiB, grows as its bytes arrive.
    let step = match header.frame_type {
        FrameType::Control => CONTROL_READ_STEP,
        FrameType::WantBlocksRequest | FrameType::WantBlocksResponse => len,
    };
    let mut body = Vec::new();
    while body.len() < len {
        let start = body.len();
        body.resize(start + step.min(len - start), 0);
        reader
            .read_exact(&mut body[start..])
            .await
            .map_err(|e| format!("reading a {:?} body of {len} bytes: {e}", header.frame_type))?;
    }
    Ok((header.frame_type, body))
}

/// Writes queued frames, flushing whenever the queue runs dry. With `idle`, ends after that
/// long without a frame while the session has no request pending.
async fn write_loop(
    write: WriteHalf<Stream>,
    queue: &mut mpsc::Receiver<OutFrame>,
    cancel: &CancellationToken,
    stall: Duration,
    idle: Option<(Duration, &Session)>,
) -> std::io::Result<()> {
    let mut writer = BufWriter::with_capacity(WRITE_BUFFER, write);
    loop {
        let next = async {
            match idle {
                None => Some(queue.recv().await),
                Some((idle, _)) => tokio::time::timeout(idle, queue.recv()).await.ok(),
            }
        };
        let next = tokio::select! {
            () = cancel.cancelled() => break,
            next = next => next,
        };
        let frame = match next {
            Some(Some(frame)) => frame,
            Some(None) => break,
            None => {
                if idle.is_some_and(|(_, session)| lock(&session.pending).is_empty()) {
                    break;
                }
                continue;
            }
        };
        // A peer that stops reading must not hold our service slots forever: each frame
        // (and the flush) gets `stall` to go out.
        let stalled = || std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading");
        let written = async {
            write_frame(&mut writer, &frame, stall).await?;
            drop(frame);
            while let Ok(frame) = queue.try_recv() {
                write_frame(&mut writer, &frame, stall).await?;
            }
            tokio::time::timeout(stall, writer.flush())
                .await
                .map_err(|_| stalled())?
        };
        tokio::select! {
            () = cancel.cancelled() => break,
            written = written => written?,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), writer.close()).await;
    Ok(())
}

async fn write_frame(
    writer: &mut BufWriter<WriteHalf<Stream>>,
    frame: &OutFrame,
    stall: Duration,
) -> std::io::Result<()> {
    let write = async {
        writer.write_all(&frame.header).await?;
        writer.write_all(&frame.body).await?;
        for part in &frame.tail {
            writer.write_all(part).await?;
        }
        Ok(())
    };
    tokio::time::timeout(stall, write)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading"))?
}

/// The response to a WantBlocksRequest (`wire.md` §7.4): 0 blocks if the ranges fail the
/// pre-lookup checks, else the held blocks in request order, as many as fit the limits.
fn serve_blocks(server: &dyn ContentServer, request: &WantBlocksRequest) -> OutFrame {
    let mut response = WantBlocksResponse::empty(request.request_id, request.tree_cid);
    match request.check_responder() {
        Err(e) => tracing::debug!(error = %e, "refusing a WantBlocksRequest"),
        Ok(_) => {
            let indices: Vec<u64> = request.indices().collect();
            if !indices.is_empty() {
                let mut seen = HashSet::with_capacity(indices.len());
                for block in server.blocks(&request.tree_cid, &indices) {
                    if !request.contains(block.index) || !seen.insert(block.index) {
                        continue;
                    }
                    let delivery = BlockDelivery {
                        index: block.index,
                        block_cid: block.cid,
                        // Written from the store's buffer, not copied.
                        data: block.data,
                        proof: Some(block.proof),
                    };
                    if response.try_push(delivery).is_err() {
                        break;
                    }
                }
            }
        }
    }
    OutFrame::response(response)
}

/// The presences answering want-have `entries` (`wire.md` §7.3): entries of trees not served are
/// ignored, windows above `MaxPresenceWindowBlocks` skipped, at most
/// `MaxRangeIterationsPerMessage` indices scanned in all (the last window truncated).
fn answer_wants(server: &dyn ContentServer, entries: &[WantEntry]) -> Vec<BlockPresence> {
    let mut budget = MAX_RANGE_ITERATIONS_PER_MESSAGE;
    let mut presences = Vec::new();
    for entry in entries {
        if entry.cancel || entry.range_count > MAX_PRESENCE_WINDOW_BLOCKS {
            continue;
        }
        if budget == 0 || presences.len() >= MAX_BLOCK_PRESENCE_ENTRIES {
            break;
        }
        let BlockAddress { tree_cid, index } = entry.address;
        let window = entry
            .range_count
            .max(1)
            .min(budget)
            .min(u64::MAX - index)
            .max(1);
        let Some((runs, complete)) = server.presence(&tree_cid, index, window) else {
            continue;
        };
        budget = budget.saturating_sub(window);
        let (kind, ranges) = if complete {
            (PresenceKind::Complete, Vec::new())
        } else if !runs.is_empty() {
            let ranges = runs
                .into_iter()
                .filter(|&(_, count)| count > 0)
                .map(|(start, count)| BlockRange { start, count })
                .collect();
            (PresenceKind::HaveRange, ranges)
        } else if entry.send_dont_have {
            (PresenceKind::DontHave, Vec::new())
        } else {
            continue;
        };
        presences.push(BlockPresence {
            address: entry.address,
            kind,
            ranges,
            download_id: entry.download_id,
        });
    }
    presences
}

#[cfg(test)]
mod tests {
    use cairn_core::Codec;

    use super::*;
    use crate::ServedBlock;

    /// Holds blocks [10, 20) and [30, 40) of one tree of 100 blocks.
    struct Partial;

    fn tree() -> Cid {
        Cid::new(Codec::Root, [7; 32])
    }

    impl ContentServer for Partial {
        fn manifest(&self, _: &Cid) -> Option<Bytes> {
            None
        }
        fn presence(&self, t: &Cid, start: u64, count: u64) -> Option<(Vec<(u64, u64)>, bool)> {
            if *t != tree() {
                return None;
            }
            let end = start.saturating_add(count);
            let runs = [(10u64, 20u64), (30, 40)]
                .into_iter()
                .filter_map(|(a, b)| {
                    let (s, e) = (a.max(start), b.min(end));
                    (s < e).then(|| (s, e - s))
                })
                .collect();
            Some((runs, false))
        }
        fn blocks(&self, _: &Cid, _: &[u64]) -> Vec<ServedBlock> {
            Vec::new()
        }
    }

    fn want(index: u64, range_count: u64, send_dont_have: bool) -> WantEntry {
        WantEntry {
            address: BlockAddress {
                tree_cid: tree(),
                index,
            },
            priority: 0,
            cancel: false,
            send_dont_have,
            range_count,
            download_id: 9,
        }
    }

    #[test]
    fn presences_follow_the_rules() {
        let got = answer_wants(
            &Partial,
            &[
                want(0, 100, false),
                want(50, 10, false),
                want(50, 10, true),
                want(0, MAX_PRESENCE_WINDOW_BLOCKS + 1, true),
                WantEntry {
                    address: BlockAddress {
                        tree_cid: Cid::new(Codec::Root, [1; 32]),
                        index: 0,
                    },
                    ..want(0, 1, true)
                },
                want(15, 0, false),
            ],
        );
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].kind, PresenceKind::HaveRange);
        assert_eq!(
            got[0].ranges,
            vec![
                BlockRange {
                    start: 10,
                    count: 10
                },
                BlockRange {
                    start: 30,
                    count: 10
                }
            ]
        );
        assert_eq!(got[0].download_id, 9);
        assert_eq!(got[1].kind, PresenceKind::DontHave);
        assert_eq!(got[1].address.index, 50);
        assert_eq!(
            got[2].ranges,
            vec![BlockRange {
                start: 15,
                count: 1
            }]
        );
    }

    #[test]
    fn presence_scan_is_bounded_per_message() {
        // 16384 indices in all: the second entry is truncated to 384, the third not scanned.
        let got = answer_wants(
            &Partial,
            &[
                want(1000, 16_000, false),
                want(0, 1000, false),
                want(0, 100, false),
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].address.index, 0);
        assert_eq!(got[0].ranges.len(), 2);
    }

    #[test]
    fn bad_ranges_get_empty_responses() {
        struct Panics;
        impl ContentServer for Panics {
            fn manifest(&self, _: &Cid) -> Option<Bytes> {
                None
            }
            fn presence(&self, _: &Cid, _: u64, _: u64) -> Option<(Vec<(u64, u64)>, bool)> {
                None
            }
            fn blocks(&self, _: &Cid, _: &[u64]) -> Vec<ServedBlock> {
                panic!("no lookup for a refused request")
            }
        }
        for ranges in [
            vec![(0, 0)],
            vec![(0, 33)],
            vec![(u64::MAX, 2)],
            vec![(0, 20), (40, 13)],
        ] {
            let request = WantBlocksRequest {
                request_id: 3,
                tree_cid: tree(),
                ranges: ranges
                    .into_iter()
                    .map(|(start, count)| BlockRange { start, count })
                    .collect(),
            };
            let frame = serve_blocks(&Panics, &request);
            let response =
                WantBlocksResponse::decode_body(&frame.body).expect("a valid empty response");
            assert_eq!(response, WantBlocksResponse::empty(3, tree()));
            assert_eq!(frame.header[4], 2);
        }
    }
}
