//! Durability codec properties: signed envelopes round-trip byte for byte, any bit flip is
//! refused, and decoding arbitrary bytes never panics.

use cairn_core::durability::messages as pb;
use cairn_core::durability::{Envelope, Keypair, Kind, SwarmId, verify_genesis};
use proptest::prelude::*;
use prost::Message;

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn envelope_round_trip_and_bit_flips(seed in any::<[u8; 32]>(), payload in proptest::collection::vec(any::<u8>(), 0..200), flip in any::<prop::sample::Index>()) {
        let kp = Keypair::from_seed(&seed);
        let env = Envelope::sign(&kp, SwarmId([1; 32]), Kind::Beacon, payload);
        let back = Envelope::decode(env.as_bytes()).unwrap();
        prop_assert_eq!(&back, &env);
        prop_assert_eq!(back.as_bytes(), env.as_bytes());
        let mut bytes = env.as_bytes().to_vec();
        let i = flip.index(bytes.len());
        bytes[i] ^= 0x01;
        prop_assert!(Envelope::decode(&bytes).is_err());
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        if let Ok(e) = Envelope::decode(&bytes) {
            let _ = e.body();
        }
        let _ = pb::Request::decode(bytes.as_slice());
        let _ = pb::Response::decode(bytes.as_slice());
        if let Ok(r) = pb::GenesisRecord::decode(bytes.as_slice()) {
            let _ = verify_genesis(&r);
        }
        let _ = pb::Invite::decode(bytes.as_slice());
    }
}

#[test]
fn request_response_round_trip() {
    let req = pb::Request {
        body: Some(pb::request::Body::Sync(pb::SyncRequest {
            swarm_id: vec![1; 32],
            scope: pb::SyncScope::Shard as i32,
            shard: 3,
            step: Some(pb::sync_request::Step::Have(pb::BucketHave {
                buckets: vec![0, 7, 255],
                ids: vec![9; 64],
            })),
            page_token: vec![],
        })),
    };
    let bytes = req.encode_to_vec();
    assert_eq!(pb::Request::decode(bytes.as_slice()).unwrap(), req);
    let resp = pb::Response {
        body: Some(pb::response::Body::Error(pb::RpcError {
            code: pb::ErrorCode::Busy as i32,
            message: "busy".into(),
        })),
    };
    // Field 15 of Response: key byte 0x7a.
    assert_eq!(resp.encode_to_vec()[0], 0x7a);
    assert_eq!(
        pb::Response::decode(resp.encode_to_vec().as_slice()).unwrap(),
        resp
    );
}
