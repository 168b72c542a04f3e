//! Node identities as the durability layer carries them (durability.md §4).
//!
//! A node's key is its libp2p Ed25519 identity. On the wire:
//! - a **public key** (`SignedEnvelope.signer`, `GenesisRecord.owner_public_key`) is the libp2p
//!   `PublicKey` protobuf encoding, `08 01 12 20 ‖ key` (KeyType Ed25519 = 1, 32 key bytes);
//! - a **PeerId** (`Genesis.owner`, `MemberCert.member`, `SlotOffer.assignee`, …) is
//!   `PeerId::to_bytes()`, which for an Ed25519 key is the identity multihash of that encoding:
//!   `00 24 08 01 12 20 ‖ key`, 38 bytes.
//!
//! v1 accepts Ed25519 only, so both forms have a fixed length and a PeerId is a plain 38-byte
//! value here. The node hands cairn-core the 32-byte secret seed of its libp2p key
//! ([`Keypair::from_seed`]); signatures made here verify under libp2p and vice versa.

use std::fmt;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

/// Length of an Ed25519 PeerId in bytes.
pub const PEER_ID_LEN: usize = 38;
/// Length of the libp2p protobuf encoding of an Ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 36;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;

/// The libp2p protobuf prefix of an Ed25519 public key: field 1 (KeyType) = 1, field 2 length 32.
const KEY_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x20];
/// The identity-multihash prefix of a PeerId whose key encoding is 36 bytes.
const PEER_PREFIX: [u8; 2] = [0x00, 0x24];

/// Why bytes are not a v1 identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// Not the 38-byte identity multihash of an Ed25519 key.
    #[error("not an Ed25519 PeerId")]
    BadPeerId,
    /// Not the libp2p protobuf encoding of an Ed25519 public key.
    #[error("not an Ed25519 libp2p public key")]
    BadPublicKey,
}

/// A member's PeerId (Ed25519 only in v1): the 38 bytes of `PeerId::to_bytes()`.
///
/// Ordered by its bytes, which is the tie-break order of rendezvous scores (§4).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    /// Parses `PeerId::to_bytes()` of an Ed25519 key. Any other form is refused.
    pub fn from_bytes(bytes: &[u8]) -> Result<PeerId, IdentityError> {
        let arr: [u8; PEER_ID_LEN] = bytes.try_into().map_err(|_| IdentityError::BadPeerId)?;
        if arr[..2] != PEER_PREFIX || arr[2..6] != KEY_PREFIX {
            return Err(IdentityError::BadPeerId);
        }
        // The embedded key must be a valid Ed25519 point, so that a PeerId always has a key.
        PublicKey::from_protobuf(&arr[2..]).map_err(|_| IdentityError::BadPeerId)?;
        Ok(PeerId(arr))
    }

    /// The 38 bytes, as signed and hashed.
    pub const fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }

    /// The public key this PeerId embeds.
    pub fn public_key(&self) -> PublicKey {
        // Checked at construction.
        PublicKey::from_protobuf(&self.0[2..]).unwrap_or_else(|_| unreachable!("checked key"))
    }

    /// The base58btc text form (`12D3Koo…`).
    pub fn to_base58(&self) -> String {
        bs58::encode(self.0).into_string()
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.to_base58();
        // The first characters are the same for every Ed25519 PeerId; the tail identifies.
        write!(f, "PeerId(…{})", &s[s.len().saturating_sub(8)..])
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base58())
    }
}

/// An Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses the libp2p protobuf encoding (`08 01 12 20 ‖ 32 bytes`).
    pub fn from_protobuf(bytes: &[u8]) -> Result<PublicKey, IdentityError> {
        if bytes.len() != PUBLIC_KEY_LEN || bytes[..4] != KEY_PREFIX {
            return Err(IdentityError::BadPublicKey);
        }
        let raw: [u8; 32] = bytes[4..]
            .try_into()
            .map_err(|_| IdentityError::BadPublicKey)?;
        let key = VerifyingKey::from_bytes(&raw).map_err(|_| IdentityError::BadPublicKey)?;
        Ok(PublicKey(key))
    }

    /// The libp2p protobuf encoding.
    pub fn to_protobuf(&self) -> [u8; PUBLIC_KEY_LEN] {
        let mut out = [0u8; PUBLIC_KEY_LEN];
        out[..4].copy_from_slice(&KEY_PREFIX);
        out[4..].copy_from_slice(self.0.as_bytes());
        out
    }

    /// The PeerId of this key.
    pub fn peer_id(&self) -> PeerId {
        let mut out = [0u8; PEER_ID_LEN];
        out[..2].copy_from_slice(&PEER_PREFIX);
        out[2..].copy_from_slice(&self.to_protobuf());
        PeerId(out)
    }

    /// Whether `signature` is a valid Ed25519 signature of `message` under this key (strict
    /// verification: no small-order keys, canonical `S`).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
            return false;
        };
        self.0.verify_strict(message, &sig).is_ok()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({:?})", self.peer_id())
    }
}

/// An Ed25519 signing key. Built from the 32-byte secret seed of the node's libp2p key.
#[derive(Clone)]
pub struct Keypair(SigningKey);

impl Keypair {
    /// The key whose secret seed is `seed` (libp2p `ed25519::SecretKey` bytes).
    pub fn from_seed(seed: &[u8; 32]) -> Keypair {
        Keypair(SigningKey::from_bytes(seed))
    }

    /// The public key.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// The PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    /// Signs `message` (deterministic, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.0.sign(message).to_bytes()
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Keypair({:?})", self.peer_id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_layout_and_round_trip() {
        let kp = Keypair::from_seed(&[7; 32]);
        let id = kp.peer_id();
        assert_eq!(&id.as_bytes()[..6], &[0x00, 0x24, 0x08, 0x01, 0x12, 0x20]);
        assert_eq!(PeerId::from_bytes(id.as_bytes()), Ok(id));
        assert!(id.to_base58().starts_with("12D3KooW"));
        assert_eq!(id.public_key(), kp.public());
        let pk = kp.public().to_protobuf();
        assert_eq!(PublicKey::from_protobuf(&pk), Ok(kp.public()));
    }

    #[test]
    fn rejects_other_forms() {
        let id = Keypair::from_seed(&[1; 32]).peer_id();
        assert_eq!(
            PeerId::from_bytes(&id.as_bytes()[..37]),
            Err(IdentityError::BadPeerId)
        );
        let mut sha = *id.as_bytes();
        sha[0] = 0x12;
        assert_eq!(PeerId::from_bytes(&sha), Err(IdentityError::BadPeerId));
        let mut other_type = *id.as_bytes();
        other_type[3] = 0x02; // secp256k1
        assert_eq!(
            PeerId::from_bytes(&other_type),
            Err(IdentityError::BadPeerId)
        );
        assert!(PublicKey::from_protobuf(&[0x08, 0x01, 0x12, 0x20]).is_err());
    }

    #[test]
    fn sign_and_verify() {
        let kp = Keypair::from_seed(&[3; 32]);
        let sig = kp.sign(b"hello");
        assert!(kp.public().verify(b"hello", &sig));
        assert!(!kp.public().verify(b"hellp", &sig));
        assert!(!kp.public().verify(b"hello", &sig[..63]));
        let other = Keypair::from_seed(&[4; 32]);
        assert!(!other.public().verify(b"hello", &sig));
    }
}
