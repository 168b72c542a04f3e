//! JSON bodies of the REST API (`rest-api.md` §1.1), field names as Codex clients expect them.

use cairn_core::{Cid, Manifest};
use cairn_store::{DatasetRecord, Space};
use serde::Serialize;
use utoipa::ToSchema;

/// A manifest as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ManifestItem {
    pub(crate) tree_cid: String,
    pub(crate) dataset_size: u64,
    pub(crate) block_size: u32,
    pub(crate) filename: Option<String>,
    pub(crate) mimetype: Option<String>,
    pub(crate) protected: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ec_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) ec_m: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) original_tree_cid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) original_dataset_size: Option<u64>,
}

impl From<&Manifest> for ManifestItem {
    fn from(m: &Manifest) -> Self {
        let ec = m.erasure.as_ref();
        ManifestItem {
            tree_cid: m.tree_cid.to_string(),
            dataset_size: m.dataset_size,
            block_size: m.block_size.get(),
            filename: m.filename.clone(),
            mimetype: m.mimetype.clone(),
            protected: ec.is_some(),
            ec_k: ec.map(|e| e.ec_k),
            ec_m: ec.map(|e| e.ec_m),
            original_tree_cid: ec.map(|e| e.original_tree_cid.to_string()),
            original_dataset_size: ec.map(|e| e.original_dataset_size),
        }
    }
}

/// A stored dataset: its manifest CID and manifest.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DataItem {
    pub(crate) cid: String,
    pub(crate) manifest: ManifestItem,
}

impl DataItem {
    pub(crate) fn new(cid: &Cid, manifest: &Manifest) -> Self {
        DataItem {
            cid: cid.to_string(),
            manifest: manifest.into(),
        }
    }

    /// From a store record; `None` if its manifest bytes no longer decode (never for bytes the
    /// node checked before storing them).
    pub(crate) fn from_record(record: &DatasetRecord) -> Option<Self> {
        Manifest::decode(&record.manifest_bytes)
            .ok()
            .map(|m| DataItem::new(&record.manifest_cid, &m))
    }
}

/// `GET /data`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DataList {
    pub(crate) content: Vec<DataItem>,
}

/// `POST /data/{cid}/network`: the item plus the id of the background download.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DownloadStarted {
    #[serde(flatten)]
    pub(crate) item: DataItem,
    pub(crate) download_id: u64,
}

/// `GET /space`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SpaceDto {
    pub(crate) total_blocks: u64,
    pub(crate) quota_max_bytes: u64,
    pub(crate) quota_used_bytes: u64,
    pub(crate) quota_reserved_bytes: u64,
}

impl From<Space> for SpaceDto {
    fn from(s: Space) -> Self {
        SpaceDto {
            total_blocks: s.total_blocks,
            quota_max_bytes: s.quota_max_bytes,
            quota_used_bytes: s.quota_used_bytes,
            quota_reserved_bytes: s.quota_reserved_bytes,
        }
    }
}

/// `GET`/`POST /data/{cid}/advertise`.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AdvertiseDto {
    pub(crate) cid: String,
    pub(crate) advertise: bool,
}
