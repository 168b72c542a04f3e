//! Property tests: round trips of every codec, decoders that never panic, proof soundness
//! against single-bit tampering, and erasure-coding reconstruction.

use cairn_core::{
    BlockSize, Cid, Codec, Digest, ErasureExt, Manifest, MerkleProof, MerkleTree,
    erasure::{ErasureError, Layout},
    merkle, sha256,
    wire::{
        BlockAddress, BlockDelivery, BlockPresence, BlockRange, Frame, FrameHeader, FrameType,
        ManifestRequest, ManifestResponse, Message, PresenceKind, WantBlocksRequest,
        WantBlocksResponse, WantEntry, Wantlist,
    },
};
use proptest::{collection::vec, option, prelude::*, sample::Index};

// ---------------------------------------------------------------- strategies

fn digest() -> impl Strategy<Value = Digest> {
    any::<[u8; 32]>()
}

fn codec() -> impl Strategy<Value = Codec> {
    prop_oneof![
        Just(Codec::Manifest),
        Just(Codec::Block),
        Just(Codec::Root),
        Just(Codec::SlotRoot),
    ]
}

fn cid_of(codec: Codec) -> impl Strategy<Value = Cid> {
    digest().prop_map(move |d| Cid::new(codec, d))
}

fn any_cid() -> impl Strategy<Value = Cid> {
    (codec(), digest()).prop_map(|(c, d)| Cid::new(c, d))
}

fn block_size() -> impl Strategy<Value = BlockSize> {
    (12u32..=19).prop_map(|e| BlockSize::new(1 << e).expect("power of two in range"))
}

/// A non-empty UTF-8 string of at most `max` bytes.
fn text(max: usize) -> impl Strategy<Value = Option<String>> {
    option::of(
        "\\PC{1,60}".prop_filter_map("too long", move |s: String| (s.len() <= max).then_some(s)),
    )
}

fn plain_manifest() -> impl Strategy<Value = Manifest> {
    (
        cid_of(Codec::Root),
        block_size(),
        1u64..,
        text(255),
        text(128),
    )
        .prop_map(
            |(tree_cid, block_size, dataset_size, filename, mimetype)| Manifest {
                tree_cid,
                block_size,
                dataset_size,
                filename,
                mimetype,
                erasure: None,
            },
        )
}

fn protected_manifest() -> impl Strategy<Value = Manifest> {
    (
        2u32..=40,
        1u32..=40,
        block_size(),
        1u64..=1 << 44,
        cid_of(Codec::Root),
        cid_of(Codec::Root),
        text(255),
        text(128),
        any::<u64>(),
    )
        .prop_map(
            |(k, m, block_size, original_size, tree_cid, original, filename, mimetype, seed)| {
                let layout = Layout::new(k, m, block_size, original_size).expect("valid layout");
                let slot_roots = (0..k + m)
                    .map(|r| {
                        Cid::new(
                            Codec::SlotRoot,
                            sha256(&[seed.to_le_bytes(), u64::from(r).to_le_bytes()].concat()),
                        )
                    })
                    .collect();
                Manifest {
                    tree_cid,
                    block_size,
                    dataset_size: layout.protected_dataset_size(),
                    filename,
                    mimetype,
                    erasure: Some(ErasureExt {
                        ec_k: k,
                        ec_m: m,
                        original_tree_cid: original,
                        original_dataset_size: original_size,
                        strategy: 1,
                        slot_roots,
                    }),
                }
            },
        )
}

fn proof() -> impl Strategy<Value = MerkleProof> {
    (any::<u64>(), any::<u64>(), vec(digest(), 1..=64)).prop_map(|(index, nleaves, path)| {
        MerkleProof {
            index,
            nleaves,
            path,
        }
    })
}

fn address() -> impl Strategy<Value = BlockAddress> {
    (cid_of(Codec::Root), any::<u64>())
        .prop_map(|(tree_cid, index)| BlockAddress { tree_cid, index })
}

fn range() -> impl Strategy<Value = BlockRange> {
    (any::<u64>(), any::<u64>()).prop_map(|(start, count)| BlockRange { start, count })
}

fn entry() -> impl Strategy<Value = WantEntry> {
    (
        address(),
        any::<i32>(),
        any::<bool>(),
        any::<bool>(),
        any::<u64>(),
        any::<u64>(),
    )
        .prop_map(
            |(address, priority, cancel, send_dont_have, range_count, download_id)| WantEntry {
                address,
                priority,
                cancel,
                send_dont_have,
                range_count,
                download_id,
            },
        )
}

fn presence() -> impl Strategy<Value = BlockPresence> {
    (
        address(),
        prop_oneof![
            Just(PresenceKind::DontHave),
            Just(PresenceKind::HaveRange),
            Just(PresenceKind::Complete)
        ],
        vec(range(), 0..6),
        any::<u64>(),
    )
        .prop_map(|(address, kind, ranges, download_id)| BlockPresence {
            address,
            kind,
            ranges,
            download_id,
        })
}

fn message() -> impl Strategy<Value = Message> {
    (vec(entry(), 0..8), any::<bool>(), vec(presence(), 0..8)).prop_map(
        |(entries, full, block_presences)| Message {
            wantlist: Wantlist { entries, full },
            block_presences,
        },
    )
}

fn want_request() -> impl Strategy<Value = WantBlocksRequest> {
    (any::<u64>(), cid_of(Codec::Root), vec(range(), 0..=76)).prop_map(
        |(request_id, tree_cid, ranges)| WantBlocksRequest {
            request_id,
            tree_cid,
            ranges,
        },
    )
}

fn delivery() -> impl Strategy<Value = BlockDelivery> {
    (
        any::<u64>(),
        any_cid(),
        vec(any::<u8>(), 0..=2048),
        option::of(proof()),
    )
        .prop_map(|(index, block_cid, data, proof)| BlockDelivery {
            index,
            block_cid,
            data: data.into(),
            proof,
        })
}

fn want_response() -> impl Strategy<Value = WantBlocksResponse> {
    (any::<u64>(), cid_of(Codec::Root), vec(delivery(), 0..=6)).prop_map(
        |(request_id, tree_cid, blocks)| WantBlocksResponse {
            request_id,
            tree_cid,
            blocks,
        },
    )
}

/// Random edits of a valid encoding: overwrite, truncate, insert.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Truncate(Index),
    Insert(Index, u8),
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    vec(
        prop_oneof![
            4 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            1 => any::<Index>().prop_map(Edit::Truncate),
            1 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        ],
        1..6,
    )
}

fn apply(mut bytes: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for edit in edits {
        match edit {
            Edit::Set(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = *b;
            }
            Edit::Truncate(i) => bytes.truncate(i.index(bytes.len() + 1)),
            Edit::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
            Edit::Set(..) => {}
        }
    }
    bytes
}

/// Runs every decoder on `bytes`; they must return, not panic.
fn decode_everything(bytes: &[u8]) {
    let _ = Manifest::decode(bytes);
    let _ = MerkleProof::decode(bytes);
    let _ = Cid::from_bytes(bytes);
    let _ = Cid::read_prefix(bytes);
    let _ = Message::decode(bytes);
    let _ = WantBlocksRequest::decode_body(bytes);
    let _ = WantBlocksResponse::decode_body(bytes);
    let _ = ManifestRequest::decode(bytes);
    let _ = ManifestResponse::decode(bytes);
    let _ = Frame::decode(bytes);
    for t in [
        FrameType::Control,
        FrameType::WantBlocksRequest,
        FrameType::WantBlocksResponse,
    ] {
        let _ = Frame::decode_body(t, bytes);
    }
    if let Some(header) = bytes.first_chunk::<5>() {
        let _ = FrameHeader::decode(*header);
        let _ = cairn_core::wire::ManifestResponseHeader::decode(*header);
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = text.parse::<Cid>();
    }
}

/// The key byte used at each level when climbing from `index` in a tree of `nleaves`.
fn path_keys(index: u64, nleaves: u64) -> Vec<u8> {
    let (mut j, mut m, mut base) = (index, nleaves, 1u8);
    let mut keys = Vec::new();
    for _ in 0..merkle::depth(nleaves) {
        keys.push(if j & 1 == 0 && j == m - 1 {
            base + 2
        } else {
            base
        });
        base = 0;
        j >>= 1;
        m = m.div_ceil(2);
    }
    keys
}

fn leaves(seed: u64, n: usize) -> Vec<Digest> {
    (0..n as u64)
        .map(|i| sha256(&[seed.to_le_bytes(), i.to_le_bytes()].concat()))
        .collect()
}

/// Deterministic pseudo-random bytes.
fn bytes_from(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// ---------------------------------------------------------------- round trips

proptest! {
    #[test]
    fn manifest_round_trip(m in plain_manifest()) {
        let bytes = m.encode();
        prop_assert_eq!(Manifest::decode(&bytes), Ok(m));
    }

    #[test]
    fn protected_manifest_round_trip(m in protected_manifest()) {
        let bytes = m.encode();
        let decoded = Manifest::decode(&bytes);
        prop_assert_eq!(&decoded, &Ok(m.clone()));
        let layout = Layout::from_manifest(&m).expect("layout");
        prop_assert_eq!(layout.total(), m.blocks_count());
        // One slot root too few, or a wrong datasetSize, is rejected.
        let mut fewer = m.clone();
        fewer.erasure.as_mut().expect("ext").slot_roots.pop();
        prop_assert!(Manifest::decode(&fewer.encode()).is_err());
        let mut off = m;
        off.dataset_size += u64::from(off.block_size.get());
        prop_assert!(Manifest::decode(&off.encode()).is_err());
    }

    #[test]
    fn proof_round_trip(p in proof()) {
        let bytes = p.encode();
        prop_assert_eq!(bytes.len(), p.encoded_len());
        prop_assert_eq!(MerkleProof::decode(&bytes), Ok(p));
    }

    #[test]
    fn control_round_trip(msg in message()) {
        prop_assert_eq!(Message::decode(&msg.encode()), Ok(msg.clone()));
        let frame = Frame::Control(msg);
        let bytes = frame.encode().expect("within limits");
        prop_assert_eq!(Frame::decode(&bytes), Ok(frame));
    }

    #[test]
    fn want_blocks_request_round_trip(req in want_request()) {
        let body = req.encode_body().expect("76 ranges fit 1280 bytes");
        prop_assert_eq!(body.len(), req.encoded_len());
        prop_assert_eq!(WantBlocksRequest::decode_body(&body), Ok(req.clone()));
        let frame = Frame::WantBlocksRequest(req);
        prop_assert_eq!(Frame::decode(&frame.encode().expect("encode")), Ok(frame));
    }

    #[test]
    fn want_blocks_response_round_trip(resp in want_response()) {
        let body = resp.encode_body().expect("within limits");
        prop_assert_eq!(body.len(), resp.encoded_len());
        prop_assert_eq!(WantBlocksResponse::decode_body(&body), Ok(resp.clone()));
        // The head followed by each block's data is the body.
        let mut parts = resp.encode_head().expect("within limits");
        for block in &resp.blocks {
            parts.extend_from_slice(&block.data);
        }
        prop_assert_eq!(&parts, &body);
        // Decoding an owned body gives the same response, its blocks slices of the body.
        let owned = bytes::Bytes::from(body.clone());
        let decoded = WantBlocksResponse::decode_bytes(owned.clone()).expect("decodes");
        prop_assert_eq!(&decoded, &resp);
        let range = owned.as_ptr_range();
        for block in decoded.blocks.iter().filter(|b| !b.data.is_empty()) {
            prop_assert!(range.contains(&block.data.as_ptr()));
        }
        prop_assert_eq!(
            Frame::decode_bytes(FrameType::WantBlocksResponse, owned),
            Ok(Frame::WantBlocksResponse(resp.clone()))
        );
        let frame = Frame::WantBlocksResponse(resp);
        prop_assert_eq!(Frame::decode(&frame.encode().expect("encode")), Ok(frame));
    }

    #[test]
    fn manifest_protocol_round_trip(cid in cid_of(Codec::Manifest), bytes in vec(any::<u8>(), 1..=4096)) {
        let req = ManifestRequest { cid };
        prop_assert_eq!(ManifestRequest::decode(&req.encode()), Ok(req));
        let found = ManifestResponse::Found(bytes);
        prop_assert_eq!(ManifestResponse::decode(&found.encode().expect("encode")), Ok(found));
        let nf = ManifestResponse::NotFound;
        prop_assert_eq!(ManifestResponse::decode(&nf.encode().expect("encode")), Ok(nf));
    }

    #[test]
    fn cid_round_trip(cid in any_cid(), trailing in vec(any::<u8>(), 0..8)) {
        let text = cid.to_string();
        prop_assert!(text.starts_with('z'));
        prop_assert_eq!(text.parse::<Cid>(), Ok(cid));
        let bytes = cid.to_bytes();
        prop_assert_eq!(Cid::from_bytes(&bytes), Ok(cid));
        let mut longer = bytes.to_vec();
        longer.extend_from_slice(&trailing);
        prop_assert_eq!(Cid::read_prefix(&longer), Ok((cid, 38)));
        prop_assert_eq!(Cid::from_bytes(&longer).is_ok(), trailing.is_empty());
    }
}

// ---------------------------------------------------------------- no panics

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in vec(any::<u8>(), 0..600)) {
        decode_everything(&bytes);
    }

    #[test]
    fn arbitrary_text_never_panics(
        any_text in "\\PC{0,80}",
        b58 in "z[1-9A-HJ-NP-Za-km-z]{0,70}",
        b32 in "b[a-z2-7]{0,80}",
    ) {
        for s in [any_text, b58, b32] {
            let _ = s.parse::<Cid>();
        }
    }

    #[test]
    fn arbitrary_frame_headers_never_panic(header in any::<[u8; 5]>()) {
        if let Ok(h) = FrameHeader::decode(header) {
            prop_assert!(h.body_len <= h.frame_type.max_body_len());
            prop_assert_eq!(h.encode(), header);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn edited_encodings_never_panic(
        plain in plain_manifest(),
        protected in protected_manifest(),
        msg in message(),
        req in want_request(),
        resp in want_response(),
        p in proof(),
        e in edits(),
    ) {
        let mut inputs = vec![plain.encode(), protected.encode(), msg.encode(), p.encode()];
        for frame in [
            Frame::Control(msg),
            Frame::WantBlocksRequest(req),
            Frame::WantBlocksResponse(resp),
        ] {
            let bytes = frame.encode().expect("encode");
            inputs.push(bytes[5..].to_vec());
            inputs.push(bytes);
        }
        for input in inputs {
            decode_everything(&apply(input, &e));
        }
    }
}

// ---------------------------------------------------------------- Merkle proofs

proptest! {
    #[test]
    fn every_proof_verifies(n in 1usize..=300, seed in any::<u64>()) {
        let leaves = leaves(seed, n);
        let tree = MerkleTree::build(leaves.clone()).expect("tree");
        prop_assert_eq!(tree.layers().len(), merkle::depth(n as u64) + 1);
        for (i, leaf) in leaves.iter().enumerate() {
            let proof = tree.proof(i as u64).expect("proof");
            prop_assert_eq!(proof.path.len(), merkle::depth(n as u64));
            prop_assert!(proof.verify(leaf, &tree.root()));
            prop_assert_eq!(MerkleProof::decode(&proof.encode()), Ok(proof));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Flipping any single bit of the leaf, a path node, the index, the leaf count or the root
    /// breaks verification. The one exception is inherent to the tree: a leaf count with the
    /// same depth and the same key bytes along the proof's path yields the same root (the
    /// sibling values are taken from the path), which is why a requester checks
    /// `proof.nleaves = blocksCount` from the manifest (`wire.md` §7.5 e).
    #[test]
    fn single_bit_flips_fail(n in 1usize..=300, seed in any::<u64>(), pick in any::<Index>()) {
        let leaves = leaves(seed, n);
        let tree = MerkleTree::build(leaves.clone()).expect("tree");
        let root = tree.root();
        let index = pick.index(n);
        let leaf = leaves[index];
        let proof = tree.proof(index as u64).expect("proof");
        prop_assert!(proof.verify(&leaf, &root));

        for bit in 0..256 {
            let mut l = leaf;
            l[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!proof.verify(&l, &root), "leaf bit {}", bit);
            let mut r = root;
            r[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(!proof.verify(&leaf, &r), "root bit {}", bit);
            for level in 0..proof.path.len() {
                let mut p = proof.clone();
                p.path[level][bit / 8] ^= 1 << (bit % 8);
                prop_assert!(!p.verify(&leaf, &root), "level {} bit {}", level, bit);
            }
        }
        for bit in 0..64 {
            let mut p = proof.clone();
            p.index ^= 1 << bit;
            prop_assert!(!p.verify(&leaf, &root), "index bit {}", bit);

            let mut p = proof.clone();
            p.nleaves ^= 1 << bit;
            let same_shape = p.nleaves > p.index
                && merkle::depth(p.nleaves) == merkle::depth(proof.nleaves)
                && path_keys(p.index, p.nleaves) == path_keys(proof.index, proof.nleaves);
            prop_assert_eq!(p.verify(&leaf, &root), same_shape, "nleaves bit {}", bit);
        }
        // Shorter or longer paths are refused.
        let mut p = proof.clone();
        p.path.push([0; 32]);
        prop_assert!(!p.verify(&leaf, &root));
        let mut p = proof;
        p.path.pop();
        prop_assert!(!p.verify(&leaf, &root));
    }
}

// ---------------------------------------------------------------- erasure coding

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Any K of the K + M shards of a column rebuild it; with fewer, decoding fails cleanly.
    /// Padding shards count as available (they are known zeros).
    #[test]
    fn any_k_shards_rebuild_a_column(
        k in 2u32..=6,
        m in 1u32..=6,
        blocks in 1u64..=14,
        tail in 0u64..4096,
        seed in any::<u64>(),
        col in any::<Index>(),
        keep in vec(any::<bool>(), 12),
    ) {
        let bs = BlockSize::MIN;
        let size = (blocks - 1) * 4096 + tail.max(1);
        let layout = Layout::new(k, m, bs, size).expect("layout");
        let data: Vec<Vec<u8>> = (0..layout.original_blocks())
            .map(|i| bytes_from(seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15), 4096))
            .collect();
        let parity = layout.encode_parity(&data).expect("parity");
        prop_assert_eq!(parity.len() as u64, layout.steps() * u64::from(m));
        let s = col.index(layout.steps() as usize) as u64;
        let indices = layout.column(s).expect("column");
        let zero = vec![0u8; 4096];
        let full: Vec<Vec<u8>> = indices
            .iter()
            .map(|&i| {
                if i < layout.original_blocks() {
                    data[i as usize].clone()
                } else if i < layout.rounded() {
                    zero.clone()
                } else {
                    parity[(i - layout.rounded()) as usize].clone()
                }
            })
            .collect();
        // The column's parity equals a direct encoding of its symbols.
        prop_assert_eq!(
            layout.encode_column(&full[..k as usize]).expect("encode"),
            full[k as usize..].to_vec()
        );
        let shards: Vec<Option<&[u8]>> = full
            .iter()
            .zip(&keep)
            .map(|(b, &kept)| kept.then_some(&b[..]))
            .collect();
        let available = indices
            .iter()
            .zip(&shards)
            .filter(|(i, s)| s.is_some() || layout.is_padding(**i))
            .count() as u32;
        match layout.rebuild_column(s, &shards) {
            Ok(rebuilt) => {
                prop_assert!(available >= k);
                prop_assert_eq!(rebuilt, full);
            }
            Err(e) => {
                prop_assert!(available < k, "unexpected error {:?}", e);
                prop_assert_eq!(e, ErasureError::NotEnoughShards { needed: k, available });
            }
        }
    }
}
