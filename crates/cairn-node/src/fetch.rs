//! Fetching from the network: manifests by CID, and datasets through the multi-peer download
//! scheduler of `cairn-proto`.
//!
//! One [`Transfer`] runs per tree, however many callers want it (background downloads, streams,
//! local reads of incomplete data); each caller holds a download id or a subscription. A transfer
//! is a task that owns a [`Download`] scheduler and executes its actions: want-haves and
//! WantBlocks requests through the [`Network`] handle, verification of every delivered block
//! (CID and proof against the tree) before it is stored, bans of peers that lie.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use cairn_core::{
    Cid, Codec, Manifest,
    wire::{
        BlockAddress, BlockDelivery, DeliveryCheck, Message, PresenceKind, WantEntry, Wantlist,
    },
};
use cairn_net::{NetEvent, Network, PeerId};
use cairn_proto::download::{Action, Config as DownloadConfig, Download, Input, Progress};
use cairn_store::{BlockStore, DatasetFlags, DatasetRecord, LeafBlock, StoreError};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Providers asked for a manifest or a dataset.
const PROVIDER_LIMIT: usize = 16;
/// Inputs buffered for one transfer task.
const TRANSFER_INPUTS: usize = 1024;

/// Why a fetch failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum FetchError {
    /// No peer had the manifest within the lookup bound.
    #[error("manifest not found locally or on the network")]
    ManifestNotFound,
    /// The manifest bytes a peer sent do not decode.
    #[error("invalid manifest: {0}")]
    BadManifest(String),
    /// The store refused (quota) or failed.
    #[error("{0}")]
    Store(String),
    /// Not enough quota.
    #[error("{0}")]
    Quota(String),
    /// The transfer was cancelled.
    #[error("download cancelled")]
    Cancelled,
    /// The network layer is not running.
    #[error("network unavailable: {0}")]
    Network(String),
    /// No peer provided the missing blocks within the stall bound.
    #[error("no peer provided the missing blocks")]
    NoPeers,
}

impl From<StoreError> for FetchError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QuotaExceeded { .. } => FetchError::Quota(e.to_string()),
            other => FetchError::Store(other.to_string()),
        }
    }
}

/// Which blocks a transfer fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scope {
    /// Every block of the tree (padding excepted: it is never sent).
    All,
    /// Only the original data of a protected dataset, indices `[0, n)`: what a reader needs
    /// when no decoding is necessary (`wire.md` §4.6). The same as `All` for a plain dataset.
    Data,
}

/// State of a transfer, as its watchers see it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TransferState {
    pub(crate) progress: Progress,
    /// `Some` once finished: `Ok` complete, `Err` failed or cancelled.
    pub(crate) outcome: Option<Result<(), FetchError>>,
}

/// One running dataset transfer.
#[derive(Debug)]
pub(crate) struct Transfer {
    pub(crate) tree: Cid,
    /// What the transfer fetches.
    pub(crate) scope: Scope,
    pub(crate) manifest_cid: Cid,
    state: watch::Sender<TransferState>,
    inputs: mpsc::Sender<Input<PeerId>>,
    cancel: CancellationToken,
    /// Download ids and streams attached.
    users: AtomicUsize,
}

impl Transfer {
    /// Waits until `ready()` holds or the transfer ends; the error if it failed.
    pub(crate) async fn wait_for(&self, mut ready: impl FnMut() -> bool) -> Result<(), FetchError> {
        let mut rx = self.watch();
        loop {
            if ready() {
                return Ok(());
            }
            let outcome = rx.borrow_and_update().outcome.clone();
            match outcome {
                Some(Err(e)) => return Err(e),
                Some(Ok(())) => return Ok(()),
                None => {
                    if rx.changed().await.is_err() {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Subscribes to the transfer's state.
    pub(crate) fn watch(&self) -> watch::Receiver<TransferState> {
        self.state.subscribe()
    }

    fn release(&self) {
        if self.users.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.cancel.cancel();
        }
    }
}

/// A caller's hold on a transfer; the transfer is cancelled when the last one is dropped or
/// cancelled (streams hold one while they read).
#[derive(Debug)]
pub(crate) struct TransferLease {
    pub(crate) transfer: Arc<Transfer>,
}

impl Drop for TransferLease {
    fn drop(&mut self) {
        self.transfer.release();
    }
}

#[derive(Debug, Default)]
struct Registry {
    by_tree: HashMap<(Cid, Scope), Arc<Transfer>>,
    /// Background downloads by id, with their lease.
    by_id: HashMap<u64, (Cid, TransferLease)>,
}

/// Fetches manifests and datasets from peers.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    inner: Arc<FetcherInner>,
}

#[derive(Debug)]
struct FetcherInner {
    store: Arc<dyn BlockStore>,
    net: Network,
    registry: Mutex<Registry>,
    next_id: AtomicU64,
    /// Payload bytes of verified blocks received from peers since start.
    bytes_received: AtomicU64,
    download: DownloadConfig,
    /// A transfer that gets no block for this long (or finds no peer at all) fails.
    stall_timeout: Duration,
}

impl Fetcher {
    pub(crate) fn new(
        store: Arc<dyn BlockStore>,
        net: Network,
        stall_timeout: Duration,
    ) -> Fetcher {
        Fetcher {
            inner: Arc::new(FetcherInner {
                store,
                net,
                registry: Mutex::new(Registry::default()),
                next_id: AtomicU64::new(1),
                bytes_received: AtomicU64::new(0),
                download: DownloadConfig::default(),
                stall_timeout,
            }),
        }
    }

    /// Payload bytes of verified blocks received from peers since the node started.
    pub(crate) fn bytes_received(&self) -> u64 {
        self.inner.bytes_received.load(Ordering::Relaxed)
    }

    pub(crate) fn network(&self) -> &Network {
        &self.inner.net
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.inner
            .registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn BlockStore) -> cairn_store::Result<T> + Send + 'static,
    ) -> Result<T, FetchError> {
        let store = self.inner.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| FetchError::Store(e.to_string()))?
            .map_err(FetchError::from)
    }

    /// The stored record of `cid`, fetching and storing the manifest from the network when it
    /// is not local. `flags` apply to a newly stored manifest; an existing one is upgraded
    /// (pinned / advertise raised) when `upgrade` is set.
    pub(crate) async fn ensure_manifest(
        &self,
        cid: Cid,
        flags: DatasetFlags,
        upgrade: bool,
    ) -> Result<(DatasetRecord, Manifest), FetchError> {
        if let Some(record) = self.blocking(move |s| s.dataset(&cid)).await? {
            let record = if upgrade
                && (flags.pinned && !record.flags.pinned
                    || flags.advertise != record.flags.advertise)
            {
                let merged = DatasetFlags {
                    pinned: record.flags.pinned || flags.pinned,
                    advertise: flags.advertise,
                };
                self.blocking(move |s| s.set_flags(&cid, merged)).await?;
                self.blocking(move |s| s.dataset(&cid))
                    .await?
                    .ok_or(FetchError::ManifestNotFound)?
            } else {
                record
            };
            let manifest = Manifest::decode(&record.manifest_bytes)
                .map_err(|e| FetchError::BadManifest(e.to_string()))?;
            return Ok((record, manifest));
        }
        if cid.codec() != Codec::Manifest {
            return Err(FetchError::ManifestNotFound);
        }
        let net = &self.inner.net;
        let providers = net
            .find_providers(cid, PROVIDER_LIMIT)
            .await
            .map_err(|e| FetchError::Network(e.to_string()))?;
        for peer in providers {
            if let Some(found) = self.manifest_from(peer, cid, flags).await? {
                return Ok(found);
            }
        }
        Err(FetchError::ManifestNotFound)
    }

    /// Asks `peer` for the manifest `cid` and stores it if it is valid; `None` if the peer does
    /// not have it, fails, or sends bytes that do not decode.
    async fn manifest_from(
        &self,
        peer: PeerId,
        cid: Cid,
        flags: DatasetFlags,
    ) -> Result<Option<(DatasetRecord, Manifest)>, FetchError> {
        let bytes = match self.inner.net.fetch_manifest(peer, cid).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(e) => {
                tracing::debug!(%peer, %cid, error = %e, "manifest request failed");
                return Ok(None);
            }
        };
        let manifest = match Manifest::decode(&bytes) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%peer, %cid, error = %e, "peer sent an invalid manifest");
                return Ok(None);
            }
        };
        let record = self
            .blocking(move |s| s.put_manifest(&cid, bytes, flags))
            .await?;
        Ok(Some((record, manifest)))
    }

    /// Starts (or joins) the transfer of a stored manifest's dataset and returns a lease on it.
    pub(crate) fn attach(&self, record: &DatasetRecord, manifest: &Manifest) -> TransferLease {
        self.attach_scoped(record, manifest, Scope::All)
    }

    /// Like [`Self::attach`], for `scope`'s blocks only; joins a running transfer that covers
    /// them (a full one covers a data-only one).
    pub(crate) fn attach_scoped(
        &self,
        record: &DatasetRecord,
        manifest: &Manifest,
        scope: Scope,
    ) -> TransferLease {
        let scope = if manifest.erasure.is_some() {
            scope
        } else {
            Scope::All
        };
        let mut reg = self.registry();
        let covering: &[Scope] = match scope {
            Scope::All => &[Scope::All],
            Scope::Data => &[Scope::All, Scope::Data],
        };
        for covering in covering {
            if let Some(t) = reg.by_tree.get(&(record.tree_cid, *covering))
                && t.state.borrow().outcome.is_none()
                && !t.cancel.is_cancelled()
            {
                t.users.fetch_add(1, Ordering::AcqRel);
                return TransferLease {
                    transfer: t.clone(),
                };
            }
        }
        let (inputs, inputs_rx) = mpsc::channel(TRANSFER_INPUTS);
        let transfer = Arc::new(Transfer {
            tree: record.tree_cid,
            scope,
            manifest_cid: record.manifest_cid,
            state: watch::Sender::new(TransferState::default()),
            inputs,
            cancel: CancellationToken::new(),
            users: AtomicUsize::new(1),
        });
        reg.by_tree
            .insert((record.tree_cid, scope), transfer.clone());
        drop(reg);
        let this = self.clone();
        let t = transfer.clone();
        let manifest = manifest.clone();
        let advertise = record.flags.advertise;
        tokio::spawn(async move {
            let outcome = this.run_transfer(&t, manifest, advertise, inputs_rx).await;
            if let Err(e) = &outcome {
                tracing::warn!(tree = %t.tree, error = %e, "download ended without completing");
            }
            t.state.send_modify(|s| {
                s.outcome.get_or_insert(outcome);
            });
            let mut reg = this.registry();
            let key = (t.tree, t.scope);
            if reg.by_tree.get(&key).is_some_and(|x| Arc::ptr_eq(x, &t)) {
                reg.by_tree.remove(&key);
            }
        });
        TransferLease { transfer }
    }

    /// Starts a background download with its own id.
    pub(crate) fn start_background(&self, record: &DatasetRecord, manifest: &Manifest) -> u64 {
        let lease = self.attach(record, manifest);
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        self.registry()
            .by_id
            .insert(id, (record.manifest_cid, lease));
        id
    }

    /// A fresh download id for a dataset that needs no transfer (already complete).
    pub(crate) fn finished_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Progress of a background download; `None` once finished or unknown.
    pub(crate) fn progress(&self, id: u64) -> Option<Progress> {
        let mut reg = self.registry();
        let (_, lease) = reg.by_id.get(&id)?;
        let state = lease.transfer.state.borrow().clone();
        if state.outcome.is_some() {
            reg.by_id.remove(&id);
            return None;
        }
        Some(state.progress)
    }

    /// Cancels a background download of `manifest_cid`; false if unknown.
    pub(crate) fn cancel(&self, manifest_cid: &Cid, id: u64) -> bool {
        let mut reg = self.registry();
        match reg.by_id.get(&id) {
            Some((cid, _)) if cid == manifest_cid => {
                reg.by_id.remove(&id);
                true
            }
            _ => false,
        }
    }

    /// Routes a network event to the transfers it concerns.
    pub(crate) fn dispatch(&self, event: NetEvent) {
        let transfers: Vec<Arc<Transfer>> = self.registry().by_tree.values().cloned().collect();
        match event {
            NetEvent::PeerConnected(peer) => {
                for t in transfers {
                    let _ = t.inputs.try_send(Input::PeerAdded(peer));
                }
            }
            NetEvent::PeerDisconnected(peer) => {
                for t in transfers {
                    let _ = t.inputs.try_send(Input::PeerRemoved(peer));
                }
            }
            NetEvent::Control { peer, message } => {
                for presence in message.block_presences {
                    // A tree may have a data-only and a full transfer at once: both learn.
                    let mut of_tree = transfers
                        .iter()
                        .filter(|t| t.tree == presence.address.tree_cid)
                        .peekable();
                    if of_tree.peek().is_none() {
                        continue;
                    }
                    let input = match presence.kind {
                        PresenceKind::Complete => Input::Presence {
                            peer,
                            ranges: Vec::new(),
                            complete: true,
                        },
                        PresenceKind::HaveRange => Input::Presence {
                            peer,
                            ranges: presence.ranges.iter().map(|r| (r.start, r.count)).collect(),
                            complete: false,
                        },
                        PresenceKind::DontHave => Input::Presence {
                            peer,
                            ranges: Vec::new(),
                            complete: false,
                        },
                    };
                    tracing::debug!(%peer, kind = ?presence.kind, "presence received");
                    for t in of_tree {
                        if t.inputs.try_send(input.clone()).is_err() {
                            tracing::warn!(%peer, tree = %t.tree, "transfer inputs full, dropping a presence");
                        }
                    }
                }
            }
            // Durability traffic (gossip, swarm requests) is not the fetcher's; dropping a
            // swarm request's responder closes its stream.
            NetEvent::Gossip { .. } | NetEvent::SwarmRequest { .. } => {}
        }
    }

    async fn run_transfer(
        &self,
        t: &Arc<Transfer>,
        manifest: Manifest,
        advertise: bool,
        mut inputs: mpsc::Receiver<Input<PeerId>>,
    ) -> Result<(), FetchError> {
        let tree = t.tree;
        let check = Arc::new(DeliveryCheck::new(&manifest));
        let bitmap = self
            .blocking(move |s| s.bitmap(&tree))
            .await?
            .unwrap_or_default();
        // A data-only transfer skips parity: every index from `rounded` on.
        let skip_from = match (&t.scope, cairn_core::Layout::from_manifest(&manifest)) {
            (Scope::Data, Ok(layout)) => layout.rounded(),
            _ => u64::MAX,
        };
        let mut download = {
            let check = check.clone();
            Download::new(
                self.inner.download.clone(),
                manifest.blocks_count(),
                manifest.block_size.get(),
                &bitmap,
                move |i| i >= skip_from || check.is_padding(i),
            )
        };
        let publish = |d: &Download<PeerId>| {
            let p = d.progress();
            t.state.send_modify(|s| s.progress = p);
        };
        publish(&download);
        let (discovered_tx, mut discovered) = tokio::sync::oneshot::channel();
        if !download.is_complete() {
            self.spawn_peer_discovery(t, discovered_tx);
        }
        let mut peers = std::collections::HashSet::new();
        let mut discovery_done = false;
        let mut last_progress = tokio::time::Instant::now();
        let mut stall_check = tokio::time::interval(Duration::from_secs(1));
        let download_id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let mut pending = Vec::new();
        loop {
            if download.is_complete() {
                break;
            }
            for action in pending.drain(..) {
                self.execute(t, &check, download_id, action);
            }
            let deadline = download.next_deadline();
            // Biased: inputs queued before the discovery signal are seen before it.
            let input = tokio::select! {
                biased;
                () = t.cancel.cancelled() => return Err(FetchError::Cancelled),
                input = inputs.recv() => input,
                _ = &mut discovered, if !discovery_done => {
                    discovery_done = true;
                    None
                }
                () = sleep_until(deadline) => None,
                _ = stall_check.tick() => None,
            };
            let stalled = last_progress.elapsed() > self.inner.stall_timeout;
            if (discovery_done && peers.is_empty()) || stalled {
                return Err(FetchError::NoPeers);
            }
            let now = std::time::Instant::now();
            pending = match input {
                Some(input) => {
                    match &input {
                        Input::PeerAdded(p) => {
                            peers.insert(*p);
                        }
                        Input::PeerRemoved(p) | Input::Misbehaved(p) => {
                            peers.remove(p);
                        }
                        Input::BatchAnswered { received, .. } if !received.is_empty() => {
                            last_progress = tokio::time::Instant::now();
                        }
                        _ => {}
                    }
                    let progressed =
                        matches!(input, Input::BatchAnswered { .. } | Input::HaveLocally(_));
                    let actions = download.handle(input, now);
                    if progressed {
                        publish(&download);
                    }
                    actions
                }
                None => download.tick(now),
            };
            if pending.iter().any(|a| matches!(a, Action::Complete)) {
                break;
            }
            // A store failure reported by a batch task ends the transfer.
            if let Some(Err(e)) = t.state.borrow().outcome.clone() {
                return Err(e);
            }
        }
        publish(&download);
        let manifest_cid = t.manifest_cid;
        self.blocking(|s| s.sync()).await?;
        if manifest.erasure.is_some() && t.scope == Scope::All {
            // Padding is never sent: record it now that every other leaf is known.
            let store = self.inner.store.clone();
            let finished = tokio::task::spawn_blocking(move || {
                let Some(record) = store.dataset(&manifest_cid)? else {
                    return Ok(());
                };
                crate::erasure::complete_padding(store.as_ref(), &record, &manifest)
            })
            .await
            .map_err(|e| FetchError::Store(e.to_string()))?;
            finished.map_err(|e| FetchError::Store(e.to_string()))?;
        }
        // A data-only transfer leaves the parity missing: nothing to announce.
        if advertise && t.scope == Scope::All {
            let net = self.inner.net.clone();
            tokio::spawn(async move {
                let _ = net.provide(manifest_cid).await;
                let _ = net.provide(tree).await;
            });
        }
        tracing::info!(%manifest_cid, "download complete");
        Ok(())
    }

    /// Adds every connected peer and the providers of the dataset to the transfer; signals
    /// `done` once the lookup is over.
    fn spawn_peer_discovery(&self, t: &Arc<Transfer>, done: tokio::sync::oneshot::Sender<()>) {
        let net = self.inner.net.clone();
        let inputs = t.inputs.clone();
        let manifest_cid = t.manifest_cid;
        let cancel = t.cancel.clone();
        tokio::spawn(async move {
            if let Ok(status) = net.status().await {
                for peer in status.connected {
                    let _ = inputs.send(Input::PeerAdded(peer.peer_id)).await;
                }
            }
            tokio::select! {
                () = cancel.cancelled() => {}
                found = net.find_providers(manifest_cid, PROVIDER_LIMIT) => {
                    for peer in found.unwrap_or_default() {
                        let _ = inputs.send(Input::PeerAdded(peer)).await;
                    }
                }
            }
            let _ = done.send(());
        });
    }

    fn execute(
        &self,
        t: &Arc<Transfer>,
        check: &Arc<DeliveryCheck>,
        download_id: u64,
        action: Action<PeerId>,
    ) {
        let net = self.inner.net.clone();
        match action {
            Action::AskPresence { peer, start, count } => {
                let message = Message {
                    wantlist: Wantlist {
                        entries: vec![WantEntry {
                            address: BlockAddress {
                                tree_cid: t.tree,
                                index: start,
                            },
                            priority: 0,
                            cancel: false,
                            send_dont_have: true,
                            range_count: count,
                            download_id,
                        }],
                        full: false,
                    },
                    block_presences: Vec::new(),
                };
                let inputs = t.inputs.clone();
                tracing::debug!(%peer, start, count, "asking for presence");
                tokio::spawn(async move {
                    if let Err(e) = net.send_control(peer, message).await {
                        tracing::debug!(%peer, error = %e, "presence request failed");
                        let _ = inputs.send(Input::PeerRemoved(peer)).await;
                    }
                });
            }
            Action::RequestBlocks {
                peer,
                request_id,
                ranges,
            } => {
                let check = check.clone();
                let t = t.clone();
                let this = self.clone();
                tokio::spawn(async move {
                    this.fetch_batch(&net, t, check, peer, request_id, ranges)
                        .await;
                });
            }
            Action::Ban(peer) => {
                tokio::spawn(async move {
                    let _ = net.ban(peer).await;
                });
            }
            Action::Complete => {}
        }
    }
}

impl Fetcher {
    /// Requests one batch, verifies every block, stores the good ones and reports the result to
    /// the transfer.
    async fn fetch_batch(
        &self,
        net: &Network,
        t: Arc<Transfer>,
        check: Arc<DeliveryCheck>,
        peer: PeerId,
        request_id: u64,
        ranges: Vec<(u64, u64)>,
    ) {
        let failed = Input::BatchFailed { peer, request_id };
        let response = match net.want_blocks(peer, t.tree, ranges.clone()).await {
            Ok(r) if r.tree_cid == t.tree => r,
            Ok(_) => {
                let _ = t.inputs.send(failed).await;
                return;
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "block request failed");
                let _ = t.inputs.send(failed).await;
                return;
            }
        };
        if response.blocks.is_empty() {
            let input = Input::BatchAnswered {
                peer,
                request_id,
                received: Vec::new(),
                bytes: 0,
            };
            let _ = t.inputs.send(input).await;
            return;
        }
        // Verification (SHA-256 and proof of every block), storing and the report run in one
        // blocking call: hashing stays off the async workers, and the batch costs a single hop.
        let this = self.clone();
        let report = Report {
            t,
            input: Some(failed),
        };
        tokio::task::spawn_blocking(move || {
            let t = &report.t;
            let input = match verify_and_store(
                &*this.inner.store,
                &t.tree,
                &check,
                peer,
                &ranges,
                response.blocks,
            ) {
                Ok(Some((received, bytes))) => {
                    this.inner
                        .bytes_received
                        .fetch_add(bytes, Ordering::Relaxed);
                    Input::BatchAnswered {
                        peer,
                        request_id,
                        received,
                        bytes,
                    }
                }
                Ok(None) => Input::Misbehaved(peer),
                Err(e) => {
                    let err = FetchError::from(e);
                    tracing::warn!(tree = %t.tree, error = %err, "storing downloaded blocks failed");
                    t.state.send_modify(|s| {
                        s.outcome.get_or_insert(Err(err));
                    });
                    t.cancel.cancel();
                    return;
                }
            };
            report.send(input);
        });
    }
}

/// Reports a batch as failed to its transfer unless its outcome was sent (a store failure, or a
/// panic while verifying).
struct Report {
    t: Arc<Transfer>,
    input: Option<Input<PeerId>>,
}

impl Report {
    /// Sends the batch's outcome (from the blocking pool).
    fn send(mut self, input: Input<PeerId>) {
        self.input = None;
        let _ = self.t.inputs.blocking_send(input);
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(input) = self.input.take() {
            let _ = self.t.inputs.try_send(input);
        }
    }
}

/// Verifies the delivered blocks of one batch and stores them: the indices received and their
/// payload bytes; `None` if the peer sent a block that fails the checks (nothing is stored
/// then). Blocks outside the requested `ranges` and repeated indices are ignored.
fn verify_and_store(
    store: &dyn BlockStore,
    tree: &Cid,
    check: &DeliveryCheck,
    peer: PeerId,
    ranges: &[(u64, u64)],
    deliveries: Vec<BlockDelivery>,
) -> Result<Option<(Vec<u64>, u64)>, StoreError> {
    let in_ranges = |i: u64| ranges.iter().any(|&(s, c)| i >= s && i < s + c);
    let mut blocks = Vec::with_capacity(deliveries.len());
    let mut bytes = 0u64;
    for delivery in deliveries {
        if !in_ranges(delivery.index)
            || blocks.iter().any(|b: &LeafBlock| b.index == delivery.index)
        {
            continue;
        }
        if let Err(e) = check.check(&delivery) {
            tracing::warn!(%peer, index = delivery.index, error = %e, "peer sent a bad block");
            return Ok(None);
        }
        let Some(proof) = delivery.proof else {
            return Ok(None);
        };
        bytes += delivery.data.len() as u64;
        blocks.push(LeafBlock {
            index: delivery.index,
            cid: delivery.block_cid,
            data: delivery.data,
            proof,
        });
    }
    if !blocks.is_empty() {
        store.put_leaf_blocks(tree, &blocks)?;
    }
    Ok(Some((blocks.iter().map(|b| b.index).collect(), bytes)))
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(tokio::time::Instant::from_std(d)).await,
        None => tokio::time::sleep(Duration::from_secs(3600)).await,
    }
}
