//! The node key and signed peer records.

use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use libp2p::{
    Multiaddr, PeerId,
    core::{PeerRecord, SignedEnvelope},
    identity::Keypair,
};
use sha2::{Digest as _, Sha256};

/// File name of the key inside the data directory (libp2p protobuf encoding of the keypair).
const KEY_FILE: &str = "node.key";

/// Why the identity could not be loaded, created or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Reading or writing the key file failed.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The key file does not hold a libp2p keypair.
    #[error("key file {path} is not a valid libp2p keypair: {reason}")]
    Decode {
        /// The key file.
        path: PathBuf,
        /// What failed.
        reason: String,
    },
    /// Signing a peer record failed.
    #[error("signing the peer record: {0}")]
    Sign(String),
    /// A text SPR does not parse or its signature is invalid.
    #[error("invalid signed peer record: {0}")]
    InvalidSpr(String),
}

/// The node's libp2p identity.
#[derive(Clone)]
pub struct Identity {
    keypair: Keypair,
    peer_id: PeerId,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A fresh Ed25519 identity (not persisted).
    pub fn generate() -> Identity {
        Identity::from_keypair(Keypair::generate_ed25519())
    }

    fn from_keypair(keypair: Keypair) -> Identity {
        let peer_id = keypair.public().to_peer_id();
        Identity { keypair, peer_id }
    }

    /// Loads the key from `data_dir`, or creates and persists an Ed25519 key there (mode 0600,
    /// written to a temporary file, synced, then renamed, so a crash never leaves half a key).
    pub fn load_or_create(data_dir: &Path) -> Result<Identity, IdentityError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source| IdentityError::Io {
            path: path.clone(),
            source,
        };
        match fs::read(&path) {
            Ok(bytes) => {
                let keypair =
                    Keypair::from_protobuf_encoding(&bytes).map_err(|e| IdentityError::Decode {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Ok(Identity::from_keypair(keypair))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let identity = Identity::generate();
                let bytes = identity
                    .keypair
                    .to_protobuf_encoding()
                    .map_err(|e| IdentityError::Sign(e.to_string()))?;
                let tmp = data_dir.join(format!("{KEY_FILE}.tmp"));
                let mut options = fs::OpenOptions::new();
                options.write(true).create(true).truncate(true);
                #[cfg(unix)]
                std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
                let mut file = options.open(&tmp).map_err(io)?;
                file.write_all(&bytes).map_err(io)?;
                file.sync_all().map_err(io)?;
                fs::rename(&tmp, &path).map_err(io)?;
                if let Ok(dir) = fs::File::open(data_dir) {
                    let _ = dir.sync_all();
                }
                tracing::info!(peer_id = %identity.peer_id, "created a new node key");
                Ok(identity)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The keypair (for the swarm's transport and identify).
    pub(crate) fn keypair(&self) -> &Keypair {
        &self.keypair
    }

    /// The peer id.
    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// The raw public key bytes (32 bytes for Ed25519), as `/debug/info` reports them.
    pub fn public_key_raw(&self) -> Vec<u8> {
        match self.keypair.public().try_into_ed25519() {
            Ok(key) => key.to_bytes().to_vec(),
            Err(_) => self.keypair.public().encode_protobuf(),
        }
    }

    /// Hex of SHA-256 of the peer id bytes (the Gen-1 `nodeId`).
    pub fn node_id_hex(&self) -> String {
        node_id_hex(&self.peer_id)
    }

    /// A signed peer record listing `addrs`, in the standard libp2p format (domain
    /// `libp2p-routing-state`, payload type 0x0301).
    pub fn signed_peer_record(&self, addrs: Vec<Multiaddr>) -> Result<Spr, IdentityError> {
        let record = PeerRecord::new_interop(&self.keypair, addrs)
            .map_err(|e| IdentityError::Sign(e.to_string()))?;
        Ok(Spr(record))
    }
}

/// Hex of SHA-256 of a peer id's bytes.
pub fn node_id_hex(peer: &PeerId) -> String {
    hex::encode(Sha256::digest(peer.to_bytes()))
}

/// A signed peer record.
#[derive(Debug, Clone)]
pub struct Spr(PeerRecord);

impl Spr {
    /// Text form: `spr:` ‖ base64url (no padding) of the signed envelope.
    pub fn to_text(&self) -> String {
        let bytes = self.0.to_signed_envelope().into_protobuf_encoding();
        format!("spr:{}", URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Parses the text form, with or without `=` padding, and checks the signature.
    pub fn from_text(text: &str) -> Result<Spr, IdentityError> {
        let body = text
            .strip_prefix("spr:")
            .ok_or_else(|| IdentityError::InvalidSpr("missing spr: prefix".into()))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(body.trim_end_matches('='))
            .map_err(|e| IdentityError::InvalidSpr(e.to_string()))?;
        let envelope = SignedEnvelope::from_protobuf_encoding(&bytes)
            .map_err(|e| IdentityError::InvalidSpr(e.to_string()))?;
        let record = PeerRecord::from_signed_envelope_interop(envelope)
            .map_err(|e| IdentityError::InvalidSpr(e.to_string()))?;
        Ok(Spr(record))
    }

    /// The signer.
    pub fn peer_id(&self) -> PeerId {
        self.0.peer_id()
    }

    /// The listed addresses.
    pub fn addresses(&self) -> &[Multiaddr] {
        self.0.addresses()
    }

    /// The sequence number.
    pub fn seq(&self) -> u64 {
        self.0.seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_persists_across_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Identity::load_or_create(dir.path()).expect("create");
        let b = Identity::load_or_create(dir.path()).expect("load");
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(a.public_key_raw().len(), 32);
        assert_eq!(a.node_id_hex().len(), 64);
    }

    #[test]
    fn corrupt_key_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::write(dir.path().join(KEY_FILE), b"garbage").expect("write");
        let err = Identity::load_or_create(dir.path()).expect_err("must fail");
        assert!(
            err.to_string().contains("not a valid libp2p keypair"),
            "{err}"
        );
    }

    #[test]
    fn spr_round_trip_with_and_without_padding() {
        let id = Identity::generate();
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().expect("multiaddr");
        let spr = id.signed_peer_record(vec![addr.clone()]).expect("sign");
        let text = spr.to_text();
        assert!(text.starts_with("spr:"));
        let back = Spr::from_text(&text).expect("parse");
        assert_eq!(back.peer_id(), id.peer_id());
        assert_eq!(back.addresses(), &[addr]);
        let pad = "=".repeat((4 - (text.len() - 4) % 4) % 4);
        assert!(Spr::from_text(&format!("{text}{pad}")).is_ok());
        let empty = id.signed_peer_record(vec![]).expect("sign");
        assert!(Spr::from_text(&empty.to_text()).is_ok());
        assert!(Spr::from_text("spr:AAAA").is_err());
    }
}
