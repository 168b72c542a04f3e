//! State shared by the request handlers.

use std::{path::PathBuf, sync::Arc};

use cairn_net::Identity;
use cairn_store::BlockStore;

use crate::config::LogControl;

/// What every handler can reach. Cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn BlockStore>,
    pub(crate) identity: Identity,
    pub(crate) data_dir: PathBuf,
    pub(crate) max_upload_size: Option<u64>,
    pub(crate) cors_origin: Option<String>,
    pub(crate) log_control: Option<Arc<dyn LogControl>>,
    pub(crate) fetcher: crate::fetch::Fetcher,
    pub(crate) protect_jobs: super::protect::ProtectJobs,
    pub(crate) swarms: crate::swarm::SwarmHandle,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("peer_id", &self.inner.identity.peer_id())
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.inner
    }
}

impl AppState {
    /// Runs blocking store work off the async threads.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> super::error::ApiResult<T>
    where
        F: FnOnce(&dyn BlockStore) -> cairn_store::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let store = self.store.clone();
        Ok(tokio::task::spawn_blocking(move || f(store.as_ref())).await??)
    }
}
