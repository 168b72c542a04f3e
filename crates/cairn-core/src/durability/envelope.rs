//! Signed envelopes: signing, canonical decoding, signature checks and typed payloads
//! (durability.md §4).
//!
//! The signature covers `"cairn/durability/v1" ‖ swarm_id ‖ u32be(kind) ‖ payload`, with the
//! payload bytes exactly as carried. An envelope must be canonically encoded (what prost writes:
//! fields in order, empty fields omitted, minimal varints, no unknown fields); [`Envelope::decode`]
//! re-encodes and refuses any difference, for nested envelopes too ([`Envelope::body`]), so the
//! fact id SHA-256(envelope bytes) is the same however the envelope travelled.

use prost::Message;

use super::identity::{Keypair, PeerId, PublicKey, SIGNATURE_LEN};
use super::ids::{FactId, SwarmId};
use super::messages as pb;
use super::messages::Kind;
use crate::cid::sha256;

/// Domain tag of envelope signatures.
pub const ENVELOPE_DOMAIN: &[u8] = b"cairn/durability/v1";
/// Largest gossip message (`max_transmit_size`, §7.1).
pub const MAX_GOSSIP_BYTES: usize = 64 * 1024;

/// Why bytes are not an acceptable envelope. Every variant is a §18 `Reject`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Larger than the 64 KiB gossip limit (§18 row 1).
    #[error("envelope of {0} bytes exceeds the 64 KiB limit")]
    Oversize(usize),
    /// Not a protobuf `SignedEnvelope`, or a payload that does not decode as its kind (row 1).
    #[error("undecodable {0}")]
    Undecodable(&'static str),
    /// Decodes, but is not the canonical encoding (row 1).
    #[error("non-canonical encoding of {0}")]
    NonCanonical(&'static str),
    /// `kind` is not a v1 kind (row 1).
    #[error("unknown kind {0}")]
    UnknownKind(i32),
    /// `swarm_id` is not 32 bytes (row 3).
    #[error("swarm id is not 32 bytes")]
    BadSwarmId,
    /// A nested envelope is for another swarm (row 3).
    #[error("nested envelope is for another swarm")]
    NestedSwarmMismatch,
    /// A nested envelope has a kind other than the schema requires (row 3).
    #[error("nested envelope has kind {found:?}, expected {expected:?}")]
    NestedKindMismatch {
        /// What the envelope says.
        found: Kind,
        /// What the field requires.
        expected: Kind,
    },
    /// `signer` is not an Ed25519 libp2p public key (row 2).
    #[error("signer is not an Ed25519 public key")]
    BadSigner,
    /// The signature does not verify (row 2).
    #[error("bad signature")]
    BadSignature,
}

impl EnvelopeError {
    /// Whether this error gets the P4 invalid-message penalty (§18 rows 1–2) rather than a plain
    /// Reject (row 3).
    pub fn is_p4(&self) -> bool {
        !matches!(
            self,
            EnvelopeError::BadSwarmId
                | EnvelopeError::NestedSwarmMismatch
                | EnvelopeError::NestedKindMismatch { .. }
        )
    }
}

/// The bytes an envelope signature covers.
pub fn signing_bytes(swarm_id: &SwarmId, kind: Kind, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENVELOPE_DOMAIN.len() + 36 + payload.len());
    out.extend_from_slice(ENVELOPE_DOMAIN);
    out.extend_from_slice(swarm_id.as_bytes());
    out.extend_from_slice(&(kind as i32 as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A canonically encoded envelope whose signature verified.
///
/// Only [`Envelope::sign`] and [`Envelope::decode`] build one, so holding an `Envelope` means
/// the signature is good. Membership and authorisation are checked by the state machines.
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    swarm_id: SwarmId,
    kind: Kind,
    payload: Vec<u8>,
    signer: PublicKey,
    signer_id: PeerId,
    signature: [u8; SIGNATURE_LEN],
    id: FactId,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("kind", &self.kind)
            .field("signer", &self.signer_id)
            .field("id", &self.id)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

impl Envelope {
    /// Signs `payload` (the encoding of the message named by `kind`) for `swarm_id`.
    pub fn sign(key: &Keypair, swarm_id: SwarmId, kind: Kind, payload: Vec<u8>) -> Envelope {
        let signature = key.sign(&signing_bytes(&swarm_id, kind, &payload));
        let signer = key.public();
        let proto = pb::SignedEnvelope {
            swarm_id: swarm_id.as_bytes().to_vec(),
            kind: kind as i32,
            payload,
            signer: signer.to_protobuf().to_vec(),
            signature: signature.to_vec(),
        };
        let bytes = proto.encode_to_vec();
        Envelope {
            swarm_id,
            kind,
            payload: proto.payload,
            signer,
            signer_id: signer.peer_id(),
            signature,
            id: FactId(sha256(&bytes)),
            bytes,
        }
    }

    /// Signs the encoding of `msg`.
    pub fn sign_message<M: Message>(
        key: &Keypair,
        swarm_id: SwarmId,
        kind: Kind,
        msg: &M,
    ) -> Envelope {
        Envelope::sign(key, swarm_id, kind, msg.encode_to_vec())
    }

    /// Decodes gossip or sync bytes: size limit, protobuf, canonical form, kind, swarm id length,
    /// signer key and signature, in that order. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
        if bytes.len() > MAX_GOSSIP_BYTES {
            return Err(EnvelopeError::Oversize(bytes.len()));
        }
        let proto = pb::SignedEnvelope::decode(bytes)
            .map_err(|_| EnvelopeError::Undecodable("SignedEnvelope"))?;
        if proto.encoded_len() != bytes.len() || proto.encode_to_vec() != bytes {
            return Err(EnvelopeError::NonCanonical("SignedEnvelope"));
        }
        let kind =
            Kind::try_from(proto.kind).map_err(|_| EnvelopeError::UnknownKind(proto.kind))?;
        if kind == Kind::Unspecified {
            return Err(EnvelopeError::UnknownKind(0));
        }
        let swarm_id = SwarmId::from_slice(&proto.swarm_id).ok_or(EnvelopeError::BadSwarmId)?;
        let signer =
            PublicKey::from_protobuf(&proto.signer).map_err(|_| EnvelopeError::BadSigner)?;
        let signature: [u8; SIGNATURE_LEN] = proto
            .signature
            .as_slice()
            .try_into()
            .map_err(|_| EnvelopeError::BadSignature)?;
        if !signer.verify(&signing_bytes(&swarm_id, kind, &proto.payload), &signature) {
            return Err(EnvelopeError::BadSignature);
        }
        Ok(Envelope {
            swarm_id,
            kind,
            payload: proto.payload,
            signer,
            signer_id: signer.peer_id(),
            signature,
            id: FactId(sha256(bytes)),
            bytes: bytes.to_vec(),
        })
    }

    /// Decodes a nested envelope taken from a prost message (re-encoded: canonical by
    /// construction of prost, so callers that need the carried bytes use [`Envelope::body`]).
    pub fn from_proto(proto: &pb::SignedEnvelope) -> Result<Envelope, EnvelopeError> {
        Envelope::decode(&proto.encode_to_vec())
    }

    /// The swarm.
    pub fn swarm_id(&self) -> &SwarmId {
        &self.swarm_id
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The payload as carried.
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// The signer's public key.
    pub fn signer_key(&self) -> &PublicKey {
        &self.signer
    }

    /// The signer's PeerId.
    pub fn signer(&self) -> PeerId {
        self.signer_id
    }

    /// The 64-byte signature.
    pub fn signature(&self) -> &[u8; SIGNATURE_LEN] {
        &self.signature
    }

    /// The fact id, SHA-256 of the canonical envelope bytes.
    pub fn id(&self) -> FactId {
        self.id
    }

    /// The canonical envelope bytes (what is published, stored and hashed).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The prost form, e.g. to nest this envelope in another message.
    pub fn to_proto(&self) -> pb::SignedEnvelope {
        pb::SignedEnvelope {
            swarm_id: self.swarm_id.as_bytes().to_vec(),
            kind: self.kind as i32,
            payload: self.payload.clone(),
            signer: self.signer.to_protobuf().to_vec(),
            signature: self.signature.to_vec(),
        }
    }

    /// Decodes the payload as the message its kind names. Nested envelopes are decoded from the
    /// bytes carried in the payload (canonical form, signature, same swarm, expected kind). A
    /// singular envelope field that occurs twice is non-canonical.
    pub fn body(&self) -> Result<Body, EnvelopeError> {
        fn msg<M: Message + Default>(
            payload: &[u8],
            name: &'static str,
        ) -> Result<M, EnvelopeError> {
            M::decode(payload).map_err(|_| EnvelopeError::Undecodable(name))
        }
        let p = self.payload.as_slice();
        Ok(match self.kind {
            Kind::Unspecified => return Err(EnvelopeError::UnknownKind(0)),
            Kind::MemberCert => Body::MemberCert(msg(p, "MemberCert")?),
            Kind::Join => {
                let join: pb::Join = msg(p, "Join")?;
                let cert = self.nested_one(p, 1, Kind::MemberCert)?;
                let admin_cert = self.nested_one(p, 2, Kind::MemberCert)?;
                Body::Join {
                    join,
                    cert,
                    admin_cert,
                }
            }
            Kind::Leave => Body::Leave(msg(p, "Leave")?),
            Kind::Revoke => Body::Revoke(msg(p, "Revoke")?),
            Kind::PolicyUpdate => Body::PolicyUpdate(msg(p, "PolicyUpdate")?),
            Kind::Beacon => Body::Beacon(msg(p, "Beacon")?),
            Kind::LostVote => Body::LostVote(msg(p, "LostVote")?),
            Kind::DatasetAnnounce => Body::DatasetAnnounce(msg(p, "DatasetAnnounce")?),
            Kind::DatasetRetire => Body::DatasetRetire(msg(p, "DatasetRetire")?),
            Kind::SlotOffer => Body::SlotOffer(msg(p, "SlotOffer")?),
            Kind::SlotClaim => {
                let claim: pb::SlotClaim = msg(p, "SlotClaim")?;
                let raw_entries = fields(p, 1)?;
                if raw_entries.len() != claim.entries.len() {
                    return Err(EnvelopeError::NonCanonical("SlotClaim"));
                }
                let mut authorizations = Vec::with_capacity(raw_entries.len());
                for raw in raw_entries {
                    authorizations.push(self.nested_one(raw, 4, Kind::SlotOffer)?);
                }
                Body::SlotClaim {
                    claim,
                    authorizations,
                }
            }
            Kind::SlotRelease => Body::SlotRelease(msg(p, "SlotRelease")?),
            Kind::Challenge => Body::Challenge(msg(p, "Challenge")?),
            Kind::ChallengeResponse => Body::ChallengeResponse(msg(p, "ChallengeResponse")?),
            Kind::ChallengeFailure => {
                let _: pb::ChallengeFailure = msg(p, "ChallengeFailure")?;
                let challenge = self.nested_one(p, 1, Kind::Challenge)?;
                let response = self.nested_one(p, 2, Kind::ChallengeResponse)?;
                Body::ChallengeFailure {
                    challenge,
                    response,
                }
            }
            Kind::RepairRequest => Body::RepairRequest(msg(p, "RepairRequest")?),
            Kind::RepairClaim => Body::RepairClaim(msg(p, "RepairClaim")?),
        })
    }

    /// The envelope in singular field `field` of `message`, if present.
    fn nested_one(
        &self,
        message: &[u8],
        field: u32,
        expected: Kind,
    ) -> Result<Option<Envelope>, EnvelopeError> {
        let raw = fields(message, field)?;
        match raw.as_slice() {
            [] => Ok(None),
            [one] => {
                let env = Envelope::decode(one)?;
                if env.swarm_id != self.swarm_id {
                    return Err(EnvelopeError::NestedSwarmMismatch);
                }
                if env.kind != expected {
                    return Err(EnvelopeError::NestedKindMismatch {
                        found: env.kind,
                        expected,
                    });
                }
                Ok(Some(env))
            }
            _ => Err(EnvelopeError::NonCanonical("nested envelope")),
        }
    }
}

/// A decoded payload, with its nested envelopes verified.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
#[allow(clippy::large_enum_variant)] // short-lived, decoded once per message
pub enum Body {
    MemberCert(pb::MemberCert),
    Join {
        join: pb::Join,
        /// `Join.cert`, verified.
        cert: Option<Envelope>,
        /// `Join.admin_cert`, verified.
        admin_cert: Option<Envelope>,
    },
    Leave(pb::Leave),
    Revoke(pb::Revoke),
    PolicyUpdate(pb::PolicyUpdate),
    Beacon(pb::Beacon),
    LostVote(pb::LostVote),
    DatasetAnnounce(pb::DatasetAnnounce),
    DatasetRetire(pb::DatasetRetire),
    SlotOffer(pb::SlotOffer),
    SlotClaim {
        claim: pb::SlotClaim,
        /// One per entry, in entry order: the verified `authorization`, if present.
        authorizations: Vec<Option<Envelope>>,
    },
    SlotRelease(pb::SlotRelease),
    Challenge(pb::Challenge),
    ChallengeResponse(pb::ChallengeResponse),
    ChallengeFailure {
        /// The verified challenge.
        challenge: Option<Envelope>,
        /// The verified response.
        response: Option<Envelope>,
    },
    RepairRequest(pb::RepairRequest),
    RepairClaim(pb::RepairClaim),
}

/// The raw values of every length-delimited occurrence of `field` in `message` (a minimal
/// protobuf walker: the nested envelopes must be checked as carried, not as prost re-encodes
/// them). Fails on malformed input.
fn fields(message: &[u8], field: u32) -> Result<Vec<&[u8]>, EnvelopeError> {
    const ERR: EnvelopeError = EnvelopeError::Undecodable("protobuf field");
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < message.len() {
        let key = read_varint(message, &mut pos).ok_or(ERR)?;
        let wire = (key & 7) as u8;
        let number = key >> 3;
        match wire {
            0 => {
                read_varint(message, &mut pos).ok_or(ERR)?;
            }
            1 => {
                pos = pos
                    .checked_add(8)
                    .filter(|&p| p <= message.len())
                    .ok_or(ERR)?
            }
            5 => {
                pos = pos
                    .checked_add(4)
                    .filter(|&p| p <= message.len())
                    .ok_or(ERR)?
            }
            2 => {
                let len =
                    usize::try_from(read_varint(message, &mut pos).ok_or(ERR)?).map_err(|_| ERR)?;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= message.len())
                    .ok_or(ERR)?;
                if number == u64::from(field) {
                    out.push(&message[pos..end]);
                }
                pos = end;
            }
            _ => return Err(ERR),
        }
    }
    Ok(out)
}

fn read_varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf.get(*pos)?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm() -> SwarmId {
        SwarmId([9; 32])
    }

    #[test]
    fn sign_decode_round_trip() {
        let kp = Keypair::from_seed(&[1; 32]);
        let leave = pb::Leave {
            issued_at: 5,
            reason: "bye".into(),
        };
        let env = Envelope::sign_message(&kp, swarm(), Kind::Leave, &leave);
        let back = Envelope::decode(env.as_bytes()).unwrap();
        assert_eq!(back, env);
        assert_eq!(back.signer(), kp.peer_id());
        assert_eq!(back.id(), FactId(sha256(env.as_bytes())));
        assert_eq!(back.body().unwrap(), Body::Leave(leave));
        assert_eq!(Envelope::from_proto(&env.to_proto()).unwrap(), env);
    }

    #[test]
    fn signing_bytes_layout() {
        let b = signing_bytes(&swarm(), Kind::SlotClaim, b"xy");
        assert_eq!(&b[..19], b"cairn/durability/v1");
        assert_eq!(&b[19..51], &[9; 32]);
        assert_eq!(&b[51..55], &[0, 0, 0, 23]);
        assert_eq!(&b[55..], b"xy");
    }

    #[test]
    fn rejects_tampering() {
        let kp = Keypair::from_seed(&[1; 32]);
        let env = Envelope::sign(&kp, swarm(), Kind::Leave, vec![8, 5]);
        let mut proto = env.to_proto();
        proto.payload = vec![8, 6];
        assert_eq!(
            Envelope::decode(&proto.encode_to_vec()),
            Err(EnvelopeError::BadSignature)
        );
        let mut proto = env.to_proto();
        proto.kind = Kind::Join as i32;
        assert_eq!(
            Envelope::decode(&proto.encode_to_vec()),
            Err(EnvelopeError::BadSignature)
        );
        let mut proto = env.to_proto();
        proto.kind = 99;
        assert_eq!(
            Envelope::decode(&proto.encode_to_vec()),
            Err(EnvelopeError::UnknownKind(99))
        );
        let mut proto = env.to_proto();
        proto.signer = vec![1, 2, 3];
        assert_eq!(
            Envelope::decode(&proto.encode_to_vec()),
            Err(EnvelopeError::BadSigner)
        );
        let mut proto = env.to_proto();
        proto.swarm_id = vec![1; 31];
        assert_eq!(
            Envelope::decode(&proto.encode_to_vec()),
            Err(EnvelopeError::BadSwarmId)
        );
    }

    #[test]
    fn rejects_non_canonical() {
        let kp = Keypair::from_seed(&[1; 32]);
        let env = Envelope::sign(&kp, swarm(), Kind::Leave, vec![8, 5]);
        // Unknown trailing field.
        let mut bytes = env.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x30, 0x01]);
        assert_eq!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::NonCanonical("SignedEnvelope"))
        );
        // Fields out of order: move the swarm id (field 1) to the end.
        let sid_len = 2 + 32;
        let mut reordered = env.as_bytes()[sid_len..].to_vec();
        reordered.extend_from_slice(&env.as_bytes()[..sid_len]);
        assert_eq!(
            Envelope::decode(&reordered),
            Err(EnvelopeError::NonCanonical("SignedEnvelope"))
        );
        // Non-minimal varint for the kind (field 2).
        let mut proto = env.to_proto();
        proto.kind = 3;
        let canon = proto.encode_to_vec();
        let at = canon.iter().position(|&b| b == 0x10).unwrap();
        let mut padded = canon[..at + 1].to_vec();
        padded.extend_from_slice(&[0x83, 0x00]);
        padded.extend_from_slice(&canon[at + 2..]);
        assert!(Envelope::decode(&padded).is_err());
        assert_eq!(
            Envelope::decode(&[0xff]),
            Err(EnvelopeError::Undecodable("SignedEnvelope"))
        );
        assert!(matches!(
            Envelope::decode(&vec![0; MAX_GOSSIP_BYTES + 1]),
            Err(EnvelopeError::Oversize(_))
        ));
    }

    #[test]
    fn nested_envelopes_are_checked_as_carried() {
        let owner = Keypair::from_seed(&[1; 32]);
        let member = Keypair::from_seed(&[2; 32]);
        let cert = pb::MemberCert {
            member: member.peer_id().as_bytes().to_vec(),
            admin: false,
            issued_at: 1,
            expires_at: 0,
        };
        let cert_env = Envelope::sign_message(&owner, swarm(), Kind::MemberCert, &cert);
        let join = pb::Join {
            cert: Some(cert_env.to_proto()),
            storer: true,
            incarnation: 1,
            issued_at: 2,
            ..Default::default()
        };
        let env = Envelope::sign_message(&member, swarm(), Kind::Join, &join);
        let Body::Join {
            cert: Some(c),
            admin_cert: None,
            ..
        } = env.body().unwrap()
        else {
            panic!("join body")
        };
        assert_eq!(c, cert_env);

        // A non-canonical nested envelope (unknown field appended) is refused even though the
        // outer signature covers it.
        let mut bad_cert = cert_env.as_bytes().to_vec();
        bad_cert.extend_from_slice(&[0x30, 0x01]);
        let mut payload = Vec::new();
        crate::pb::put_bytes_field(&mut payload, 1, &bad_cert);
        let env = Envelope::sign(&member, swarm(), Kind::Join, payload);
        assert_eq!(
            env.body(),
            Err(EnvelopeError::NonCanonical("SignedEnvelope"))
        );

        // Twice the singular field.
        let mut payload = Vec::new();
        crate::pb::put_bytes_field(&mut payload, 1, cert_env.as_bytes());
        crate::pb::put_bytes_field(&mut payload, 1, cert_env.as_bytes());
        let env = Envelope::sign(&member, swarm(), Kind::Join, payload);
        assert_eq!(
            env.body(),
            Err(EnvelopeError::NonCanonical("nested envelope"))
        );

        // Another swarm.
        let foreign = Envelope::sign_message(&owner, SwarmId([1; 32]), Kind::MemberCert, &cert);
        let join = pb::Join {
            cert: Some(foreign.to_proto()),
            ..Default::default()
        };
        let env = Envelope::sign_message(&member, swarm(), Kind::Join, &join);
        assert_eq!(env.body(), Err(EnvelopeError::NestedSwarmMismatch));
    }
}
