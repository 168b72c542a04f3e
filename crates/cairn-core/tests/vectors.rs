//! Reproduces every value of `tests/vectors/vectors.json` (a copy of the spec's vectors,
//! generated independently by `make_vectors.py`).
//!
//! Every JSON leaf must be read by a test: each section test ends by asserting that all leaves
//! under its key were consumed, and `top_level` asserts the set of sections, so a key added to
//! the JSON fails the suite until a test checks it.

use std::{cell::RefCell, collections::BTreeSet};

use cairn_core::{
    BlockSize, Cid, Codec, Dataset, Digest, EMPTY_DIGEST, Manifest, ManifestError, MerkleProof,
    MerkleTree, build_from_bytes,
    erasure::{self, CELL_SIZE, CellProof, IndexClass, Layout},
    merkle::{self, ZERO, compress},
    pb::{self, FieldReader, Value as PbValue},
    sha256,
    wire::{
        BlockAddress, BlockDelivery, BlockPresence, BlockRange, DeliveryCheck, DeliveryError,
        Frame, FrameHeader, FrameType, ManifestRequest, ManifestResponse, Message, PresenceKind,
        WantBlocksRequest, WantBlocksResponse, WantEntry, Wantlist, check_manifest_digest,
    },
};
use serde_json::Value;

// ---------------------------------------------------------------- tracked JSON

struct Vectors {
    root: Value,
    seen: RefCell<BTreeSet<String>>,
}

impl Vectors {
    fn load() -> Vectors {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/vectors.json");
        let text = std::fs::read_to_string(path).expect("read vectors.json");
        Vectors {
            root: serde_json::from_str(&text).expect("parse vectors.json"),
            seen: RefCell::new(BTreeSet::new()),
        }
    }

    fn root(&self) -> J<'_> {
        J {
            v: &self.root,
            path: String::new(),
            seen: &self.seen,
        }
    }

    /// The leaves (and empty containers) under `section` that no test read.
    fn unconsumed(&self, section: &str) -> Vec<String> {
        let mut missing = Vec::new();
        let node = self.root.get(section).expect("section exists");
        collect_unseen(
            node,
            &format!(".{section}"),
            &self.seen.borrow(),
            &mut missing,
        );
        missing
    }

    /// Every leaf (and empty container) under `section` was read.
    fn assert_consumed(&self, section: &str) {
        let missing = self.unconsumed(section);
        assert!(
            missing.is_empty(),
            "vector values not checked: {missing:#?}"
        );
    }
}

fn collect_unseen(v: &Value, path: &str, seen: &BTreeSet<String>, out: &mut Vec<String>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                collect_unseen(child, &format!("{path}.{k}"), seen, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for (i, child) in items.iter().enumerate() {
                collect_unseen(child, &format!("{path}[{i}]"), seen, out);
            }
        }
        _ => {
            if !seen.contains(path) {
                out.push(path.to_owned());
            }
        }
    }
}

struct J<'a> {
    v: &'a Value,
    path: String,
    seen: &'a RefCell<BTreeSet<String>>,
}

impl<'a> J<'a> {
    fn get(&self, key: &str) -> J<'a> {
        let v = self
            .v
            .get(key)
            .unwrap_or_else(|| panic!("missing {}.{key}", self.path));
        J {
            v,
            path: format!("{}.{key}", self.path),
            seen: self.seen,
        }
    }

    fn has(&self, key: &str) -> bool {
        self.v.get(key).is_some()
    }

    fn keys(&self) -> BTreeSet<String> {
        self.v
            .as_object()
            .unwrap_or_else(|| panic!("{} is not an object", self.path))
            .keys()
            .cloned()
            .collect()
    }

    fn arr(&self) -> Vec<J<'a>> {
        let items = self
            .v
            .as_array()
            .unwrap_or_else(|| panic!("{} is not an array", self.path));
        self.mark();
        items
            .iter()
            .enumerate()
            .map(|(i, v)| J {
                v,
                path: format!("{}[{i}]", self.path),
                seen: self.seen,
            })
            .collect()
    }

    fn mark(&self) {
        self.seen.borrow_mut().insert(self.path.clone());
    }

    fn str(&self) -> &'a str {
        self.mark();
        self.v
            .as_str()
            .unwrap_or_else(|| panic!("{} is not a string", self.path))
    }

    fn opt_str(&self) -> Option<&'a str> {
        self.mark();
        match self.v {
            Value::Null => None,
            Value::String(s) => Some(s),
            _ => panic!("{} is neither null nor a string", self.path),
        }
    }

    /// A prose field: only its presence is checked.
    fn prose(&self) {
        assert!(!self.str().is_empty(), "{} is empty", self.path);
    }

    fn u64(&self) -> u64 {
        self.mark();
        self.v
            .as_u64()
            .unwrap_or_else(|| panic!("{} is not an unsigned integer", self.path))
    }

    fn usize(&self) -> usize {
        self.u64() as usize
    }

    fn bool(&self) -> bool {
        self.mark();
        self.v
            .as_bool()
            .unwrap_or_else(|| panic!("{} is not a bool", self.path))
    }

    fn hex(&self) -> Vec<u8> {
        hex::decode(self.str()).unwrap_or_else(|e| panic!("{}: bad hex: {e}", self.path))
    }

    fn digest(&self) -> Digest {
        self.hex()
            .try_into()
            .unwrap_or_else(|_| panic!("{} is not 32 bytes", self.path))
    }

    fn cid(&self) -> Cid {
        self.str()
            .parse()
            .unwrap_or_else(|e| panic!("{}: bad CID: {e}", self.path))
    }

    fn u64s(&self) -> Vec<u64> {
        self.arr().iter().map(J::u64).collect()
    }

    fn digests(&self) -> Vec<Digest> {
        self.arr().iter().map(J::digest).collect()
    }

    fn cids(&self) -> Vec<Cid> {
        self.arr().iter().map(J::cid).collect()
    }

    fn layers(&self) -> Vec<Vec<Digest>> {
        self.arr().iter().map(J::digests).collect()
    }
}

fn bs(n: u64) -> BlockSize {
    BlockSize::new(n).expect("valid block size")
}

/// The key byte used at each level when climbing from `index` (`wire.md` §2.2).
fn path_keys(index: u64, nleaves: u64) -> Vec<u64> {
    let (mut j, mut m, mut base) = (index, nleaves, 1);
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

/// Climbs with explicit key bytes (independent of `MerkleProof::climb`).
fn climb_with_keys(leaf: &Digest, index: u64, path: &[Digest], keys: &[u64]) -> Digest {
    assert_eq!(path.len(), keys.len());
    let mut h = *leaf;
    let mut j = index;
    for (p, &k) in path.iter().zip(keys) {
        h = if j & 1 == 1 {
            compress(p, &h, k as u8)
        } else {
            compress(&h, p, k as u8)
        };
        j >>= 1;
    }
    h
}

// ---------------------------------------------------------------- datasets

/// Checks a dataset vector (`someFileContents`, `trees.N`) against `data`; returns the
/// no-name manifest.
fn check_dataset(j: &J<'_>, data: &[u8]) -> Dataset {
    let block_size = bs(j.get("blockSize").u64());
    let (blocks, ds) = build_from_bytes(data, block_size, None, None).expect("build");
    assert_eq!(j.get("datasetSize").u64(), data.len() as u64);
    assert_eq!(ds.manifest.dataset_size, data.len() as u64);
    assert_eq!(j.get("blocksCount").u64(), blocks.len() as u64);
    assert_eq!(ds.manifest.blocks_count(), blocks.len() as u64);

    let leaves = j.get("leaves_hex").digests();
    assert_eq!(ds.tree.leaves(), &leaves[..]);
    for (block, leaf) in blocks.iter().zip(&leaves) {
        assert_eq!(sha256(&block.data), *leaf);
        assert_eq!(block.data.len(), block_size.as_usize());
    }
    let cids = j.get("blockCids").arr();
    assert_eq!(cids.len(), blocks.len());
    for (block, cid) in blocks.iter().zip(&cids) {
        assert_eq!(block.cid.to_string(), cid.str());
        assert_eq!(block.cid, cid.cid());
        assert_eq!(block.cid, Cid::of_block(&block.data));
    }
    assert_eq!(ds.tree.root(), j.get("root_hex").digest());
    assert_eq!(
        ds.manifest.tree_cid.to_bytes().to_vec(),
        j.get("treeCid_hex").hex()
    );
    assert_eq!(ds.manifest.tree_cid.to_string(), j.get("treeCid").str());
    assert_eq!(
        Cid::from_bytes(&j.get("treeCid_hex").hex()),
        Ok(ds.manifest.tree_cid)
    );
    assert_eq!(ds.tree.layers(), &j.get("layers_hex").layers()[..]);
    assert_eq!(
        MerkleTree::build(leaves.clone()).expect("tree"),
        ds.tree,
        "MerkleTree::build over the vector leaves"
    );

    let p = j.get("proof");
    let index = p.get("index").u64();
    let proof = ds.tree.proof(index).expect("proof");
    assert_eq!(proof.nleaves, p.get("nleaves").u64());
    assert_eq!(proof.path, p.get("path_hex").digests());
    let binary = p.get("binary_hex").hex();
    assert_eq!(proof.encode(), binary);
    assert_eq!(proof.encoded_len(), binary.len());
    assert_eq!(MerkleProof::decode(&binary), Ok(proof.clone()));
    assert!(proof.verify(&leaves[index as usize], &ds.tree.root()));
    // Every other proof of the tree verifies too.
    for i in 0..leaves.len() as u64 {
        assert!(
            ds.tree
                .proof(i)
                .expect("proof")
                .verify(&leaves[i as usize], &ds.tree.root())
        );
    }

    if j.has("manifests") {
        for m in j.get("manifests").arr() {
            let filename = m.get("filename").opt_str().map(str::to_owned);
            let mimetype = m.get("mimetype").opt_str().map(str::to_owned);
            let named = Dataset::from_leaves(
                leaves.clone(),
                block_size,
                data.len() as u64,
                filename.clone(),
                mimetype.clone(),
            )
            .expect("dataset");
            let bytes = m.get("bytes_hex").hex();
            assert_eq!(named.manifest_bytes, bytes);
            assert_eq!(m.get("length").usize(), bytes.len());
            assert_eq!(
                named.manifest_cid.to_bytes().to_vec(),
                m.get("manifestCid_hex").hex()
            );
            assert_eq!(named.manifest_cid.to_string(), m.get("manifestCid").str());
            assert_eq!(named.manifest_cid.codec(), Codec::Manifest);
            let decoded = Manifest::decode(&bytes).expect("decode manifest");
            assert_eq!(decoded, named.manifest);
            assert_eq!(decoded.filename, filename);
            assert_eq!(decoded.mimetype, mimetype);
            assert_eq!(decoded.erasure, None);
        }
    }
    ds
}

fn byte_i_blocks(n: u8) -> Vec<u8> {
    (0..n).flat_map(|i| [i; 4096]).collect()
}

// ---------------------------------------------------------------- tests

#[test]
fn top_level() {
    let v = Vectors::load();
    let root = v.root();
    let expected: BTreeSet<String> = [
        "generator",
        "spec",
        "varints",
        "emptyDigest_hex",
        "emptyCid",
        "someFileContents",
        "trees",
        "blockexc",
        "erasure",
        "cellTree",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(root.keys(), expected, "sections of vectors.json");
    assert!(root.get("generator").str().ends_with("make_vectors.py"));
    assert!(root.get("spec").str().ends_with("wire.md"));

    let varints = root.get("varints");
    for key in varints.keys() {
        let value = u64::from_str_radix(key.trim_start_matches("0x"), 16).expect("hex key");
        let mut out = Vec::new();
        pb::put_varint(&mut out, value);
        assert_eq!(out, varints.get(&key).hex(), "varint {key}");
        assert_eq!(out.len(), pb::varint_len(value));
    }

    assert_eq!(root.get("emptyDigest_hex").digest(), EMPTY_DIGEST);
    assert_eq!(sha256(b""), EMPTY_DIGEST);
    assert_eq!(Cid::EMPTY_BLOCK.to_string(), root.get("emptyCid").str());
    assert_eq!(root.get("emptyCid").cid(), Cid::EMPTY_BLOCK);
    assert_eq!(Cid::of_block(b""), Cid::EMPTY_BLOCK);
    for section in [
        "generator",
        "spec",
        "varints",
        "emptyDigest_hex",
        "emptyCid",
    ] {
        v.assert_consumed(section);
    }
}

#[test]
fn some_file_contents() {
    let v = Vectors::load();
    let j = v.root().get("someFileContents");
    let content = j.get("content_utf8").str();
    assert_eq!(j.get("name").str(), content);
    let ds = check_dataset(&j, content.as_bytes());
    assert_eq!(ds.manifest.tree_cid, j.get("knownTreeCid").cid());
    assert!(j.get("knownTreeCidReproduced").bool());

    let mp = j.get("manifestProtocol");
    let m0 = j.get("manifests").arr()[0].get("bytes_hex").hex();
    let request = ManifestRequest {
        cid: ds.manifest_cid,
    };
    let request_bytes = mp.get("request_hex").hex();
    assert_eq!(request.encode(), request_bytes);
    assert_eq!(ManifestRequest::decode(&request_bytes), Ok(request));
    let found = ManifestResponse::Found(m0.clone());
    let found_bytes = mp.get("responseFound_hex").hex();
    assert_eq!(found.encode(), Ok(found_bytes.clone()));
    assert_eq!(ManifestResponse::decode(&found_bytes), Ok(found));
    assert_eq!(check_manifest_digest(&request.cid, &m0), Ok(()));
    assert!(check_manifest_digest(&request.cid, &m0[1..]).is_err());
    let not_found_bytes = mp.get("responseNotFound_hex").hex();
    assert_eq!(
        ManifestResponse::NotFound.encode(),
        Ok(not_found_bytes.clone())
    );
    assert_eq!(
        ManifestResponse::decode(&not_found_bytes),
        Ok(ManifestResponse::NotFound)
    );
    v.assert_consumed("someFileContents");
}

#[test]
fn trees() {
    let v = Vectors::load();
    let trees = v.root().get("trees");
    let expected: BTreeSet<String> = ["2", "3", "5", "8"].map(str::to_owned).into();
    assert_eq!(trees.keys(), expected);
    for n in [2u8, 3, 5, 8] {
        let j = trees.get(&n.to_string());
        assert_eq!(
            j.get("name").str(),
            format!("{n} blocks of 4096, block i = byte i")
        );
        let ds = check_dataset(&j, &byte_i_blocks(n));
        assert_eq!(ds.tree.layers().len(), merkle::depth(u64::from(n)) + 1);
    }
    v.assert_consumed("trees");
}

#[test]
fn blockexc() {
    let v = Vectors::load();
    let j = v.root().get("blockexc");
    let (_, tree8) = build_from_bytes(&byte_i_blocks(8), BlockSize::MIN, None, None).expect("8");
    let (blocks3, tree3) =
        build_from_bytes(&byte_i_blocks(3), BlockSize::MIN, None, None).expect("3");

    // WantBlocksRequest (§9.3).
    let r = j.get("wantBlocksRequest");
    r.get("description").prose();
    let request = WantBlocksRequest {
        request_id: 1,
        tree_cid: tree8.manifest.tree_cid,
        ranges: vec![
            BlockRange { start: 0, count: 3 },
            BlockRange { start: 5, count: 2 },
        ],
    };
    let body = r.get("body_hex").hex();
    let frame = r.get("frame_hex").hex();
    assert_eq!(request.encode_body(), Ok(body.clone()));
    assert_eq!(request.encoded_len(), body.len());
    let as_frame = Frame::WantBlocksRequest(request.clone());
    assert_eq!(as_frame.encode(), Ok(frame.clone()));
    assert_eq!(WantBlocksRequest::decode_body(&body), Ok(request.clone()));
    assert_eq!(Frame::decode(&frame), Ok(as_frame));
    assert_eq!(request.check_responder(), Ok(5));
    assert_eq!(request.check_requester(&tree8.manifest), Ok(5));
    assert_eq!(request.indices().collect::<Vec<_>>(), vec![0, 1, 2, 5, 6]);
    assert!(request.contains(6) && !request.contains(3) && !request.contains(7));

    // Control message (§9.4).
    let c = j.get("controlMessage");
    c.get("description").prose();
    let address = BlockAddress {
        tree_cid: tree8.manifest.tree_cid,
        index: 0,
    };
    let message = Message {
        wantlist: Wantlist {
            entries: vec![WantEntry {
                address,
                priority: 0,
                cancel: false,
                send_dont_have: true,
                range_count: 8,
                download_id: 42,
            }],
            full: false,
        },
        block_presences: vec![BlockPresence {
            address,
            kind: PresenceKind::HaveRange,
            ranges: vec![
                BlockRange { start: 0, count: 3 },
                BlockRange { start: 5, count: 2 },
            ],
            download_id: 42,
        }],
    };
    let pb_bytes = c.get("protobuf_hex").hex();
    let frame = c.get("frame_hex").hex();
    assert_eq!(message.encode(), pb_bytes);
    assert_eq!(Message::decode(&pb_bytes), Ok(message.clone()));
    let as_frame = Frame::Control(message);
    assert_eq!(as_frame.encode(), Ok(frame.clone()));
    assert_eq!(Frame::decode(&frame), Ok(as_frame));

    // WantBlocksResponse (§9.5).
    let w = j.get("wantBlocksResponse");
    w.get("description").prose();
    let block = &blocks3[2];
    assert_eq!(block.data, vec![2u8; 4096]);
    let response = WantBlocksResponse {
        request_id: 7,
        tree_cid: tree3.manifest.tree_cid,
        blocks: vec![BlockDelivery {
            index: 2,
            block_cid: block.cid,
            data: block.data.clone().into(),
            proof: Some(tree3.tree.proof(2).expect("proof")),
        }],
    };
    let frame = w.get("frame_hex").hex();
    let header: [u8; 5] = w.get("frameHeader_hex").hex().try_into().expect("5 bytes");
    assert_eq!(&frame[..5], &header);
    assert_eq!(
        FrameHeader::decode(header),
        Ok(FrameHeader {
            frame_type: FrameType::WantBlocksResponse,
            body_len: frame.len() - 5,
        })
    );
    let meta_len = w.get("metaLen").usize();
    assert_eq!(response.metadata_len(), meta_len);
    assert_eq!(
        u32::from_le_bytes(frame[5..9].try_into().expect("4 bytes")) as usize,
        meta_len
    );
    assert_eq!(&frame[9..9 + meta_len], &w.get("metadata_hex").hex()[..]);
    let as_frame = Frame::WantBlocksResponse(response.clone());
    assert_eq!(as_frame.encode(), Ok(frame.clone()));
    assert_eq!(response.encoded_len(), frame.len() - 5);
    assert_eq!(Frame::decode(&frame), Ok(as_frame));
    assert_eq!(
        WantBlocksResponse::decode_body(&frame[5..]),
        Ok(response.clone())
    );
    // The described block passes acceptance c–f; tampering fails it.
    let check = DeliveryCheck::new(&tree3.manifest);
    assert_eq!(check.check(&response.blocks[0]), Ok(()));
    let mut bad = response.blocks[0].clone();
    let mut flipped = bad.data.to_vec();
    flipped[0] ^= 1;
    bad.data = flipped.into();
    assert_eq!(
        check.check(&bad),
        Err(DeliveryError::DataDigest { index: 2 })
    );
    let mut bad = response.blocks[0].clone();
    bad.proof = None;
    assert_eq!(
        check.check(&bad),
        Err(DeliveryError::MissingProof { index: 2 })
    );
    let mut bad = response.blocks[0].clone();
    bad.index = 3;
    assert!(matches!(
        check.check(&bad),
        Err(DeliveryError::IndexOutOfRange { .. })
    ));
    v.assert_consumed("blockexc");
}

/// Checks one cell proof of a row against its JSON, with `row_blocks` the row's live blocks.
fn check_cell_proof(j: &J<'_>, layout: &Layout, row_blocks: &[&[u8]], slot_root: &Digest) {
    let r = j.get("row").u64() as u32;
    let c = j.get("cellIndex").u64();
    let geometry = layout.cell_geometry(r).expect("geometry");
    let (p, q) = geometry.locate(c).expect("live cell");
    assert_eq!(j.get("position").u64(), p);
    assert_eq!(j.get("cellInBlock").u64(), q);
    assert_eq!(
        j.get("treeIndex").u64(),
        layout.row(r).expect("row").start + p
    );
    let block = row_blocks[p as usize];
    let cell = erasure::cell_bytes(block, q).expect("cell");
    if j.has("cell_hex") {
        assert_eq!(cell, &j.get("cell_hex").hex()[..]);
    }
    let leaf = sha256(cell);
    assert_eq!(j.get("cellLeaf_hex").digest(), leaf);

    let row_tree = layout.row_tree(r, row_blocks).expect("row tree");
    let proof = CellProof::new(&row_tree, &geometry, block, c).expect("proof");
    assert_eq!(proof.block_path, j.get("blockPath_hex").digests());
    assert_eq!(proof.row_path, j.get("rowPath_hex").digests());
    let block_keys = j.get("blockPathKeys").u64s();
    let row_keys = j.get("rowPathKeys").u64s();
    assert_eq!(block_keys, path_keys(q, geometry.cells));
    assert_eq!(row_keys, path_keys(p, geometry.steps));
    let cell_root = j.get("blockCellRoot_hex").digest();
    assert_eq!(erasure::cell_root(block), Ok(cell_root));
    assert_eq!(
        climb_with_keys(&leaf, q, &proof.block_path, &block_keys),
        cell_root
    );
    assert_eq!(j.get("slotRoot_hex").digest(), *slot_root);
    assert_eq!(
        climb_with_keys(&cell_root, p, &proof.row_path, &row_keys),
        *slot_root
    );

    assert!(proof.verify(cell, c, &geometry, slot_root));
    let mut bad = cell.to_vec();
    bad[0] ^= 1;
    assert!(!proof.verify(&bad, c, &geometry, slot_root));
    // The same proof does not prove another cell, nor any cell beyond the live ones.
    assert!(!proof.verify(cell, c ^ 1, &geometry, slot_root));
    assert!(!proof.verify(cell, geometry.live_cells(), &geometry, slot_root));
}

fn kind_name(class: IndexClass) -> &'static str {
    match class {
        IndexClass::Data => "data",
        IndexClass::Padding => "padding",
        IndexClass::Parity => "parity",
    }
}

/// The bytes of field 20 of an encoded manifest's header.
fn field_20(manifest: &[u8]) -> Vec<u8> {
    let mut outer = FieldReader::new(manifest);
    let Some((1, PbValue::Bytes(header))) = outer.next_field().expect("outer") else {
        panic!("no header");
    };
    let mut r = FieldReader::new(header);
    while let Some((field, value)) = r.next_field().expect("header") {
        if let (20, PbValue::Bytes(b)) = (field, value) {
            return b.to_vec();
        }
    }
    panic!("no field 20");
}

#[test]
fn erasure() {
    let v = Vectors::load();
    let j = v.root().get("erasure");
    j.get("description").prose();
    let k = j.get("ecK").u64() as u32;
    let m = j.get("ecM").u64() as u32;
    let block_size = bs(j.get("blockSize").u64());
    let size = j.get("originalDatasetSize").u64();
    let data: Vec<u8> = (0..size).map(|i| ((7 * i + 3) % 251) as u8).collect();
    let (hashed, original) = build_from_bytes(&data, block_size, None, None).expect("original");
    let blocks: Vec<Vec<u8>> = hashed.into_iter().map(|b| b.data).collect();
    assert_eq!(original.manifest_bytes, j.get("originalManifest_hex").hex());
    assert_eq!(original.manifest_cid, j.get("originalManifestCid").cid());
    assert_eq!(original.manifest.tree_cid, j.get("originalTreeCid").cid());

    // Layout (§4.2).
    let layout = Layout::new(k, m, block_size, size).expect("layout");
    assert_eq!(layout.original_blocks(), j.get("originalBlocksCount").u64());
    assert_eq!(layout.rounded(), j.get("rounded").u64());
    assert_eq!(layout.steps(), j.get("steps").u64());
    assert_eq!(layout.total(), j.get("protectedBlocksCount").u64());
    assert_eq!(
        layout.protected_dataset_size(),
        j.get("protectedDatasetSize").u64()
    );
    let columns = j.get("columns").arr();
    assert_eq!(columns.len() as u64, layout.steps());
    for (s, col) in columns.iter().enumerate() {
        assert_eq!(col.get("column").u64(), s as u64);
        let idx = layout.column(s as u64).expect("column");
        assert_eq!(col.get("data").u64s(), idx[..k as usize]);
        assert_eq!(col.get("parity").u64s(), idx[k as usize..]);
        for (r, &i) in idx.iter().enumerate() {
            assert_eq!(layout.shard_index(s as u64, r as u32), Ok(i));
            assert_eq!(layout.column_of(i), Some(s as u64));
            assert_eq!(layout.row_of(i), Some(r as u32));
        }
    }
    let rows = j.get("rows").arr();
    assert_eq!(rows.len() as u32, layout.rows());
    for (r, row) in rows.iter().enumerate() {
        assert_eq!(
            row.u64s(),
            layout.row(r as u32).expect("row").collect::<Vec<_>>()
        );
    }
    let kinds: Vec<String> = j
        .get("indexKinds")
        .arr()
        .iter()
        .map(|k| k.str().to_owned())
        .collect();
    let ours: Vec<String> = (0..layout.total())
        .map(|i| kind_name(layout.class(i).expect("class")).to_owned())
        .collect();
    assert_eq!(kinds, ours);
    assert_eq!(layout.class(layout.total()), None);

    // Parity (§4.4), protected tree, slot roots (§4.5), manifest (§4.1).
    let protected = erasure::protect(&original.manifest, &blocks, k, m).expect("protect");
    assert_eq!(protected.layout, layout);
    let wire_lengths = j.get("wireLengths").u64s();
    let symbols = j.get("symbol_sha256_hex").digests();
    let zero = vec![0u8; block_size.as_usize()];
    for i in 0..layout.total() {
        let stored = protected.block(&blocks, i).expect("block");
        assert_eq!(
            stored.len() as u64,
            wire_lengths[i as usize],
            "wire length {i}"
        );
        let symbol = if layout.is_padding(i) {
            &zero[..]
        } else {
            stored
        };
        assert_eq!(sha256(symbol), symbols[i as usize], "symbol {i}");
    }
    assert_eq!(
        protected.parity[(5 - layout.rounded()) as usize] == blocks[1],
        j.get("parityEqualsDataBlock1").bool()
    );
    // M = 1: the parity is the XOR of the column's symbols (wire.md §4.4).
    let xor: Vec<u8> = blocks[0]
        .iter()
        .zip(&blocks[2])
        .map(|(a, b)| a ^ b)
        .collect();
    assert_eq!(protected.parity[0], xor);

    let leaves = j.get("leaves_hex").digests();
    assert_eq!(protected.tree.leaves(), &leaves[..]);
    let leaf_cids = j.get("leafCids").cids();
    for (leaf, cid) in leaves.iter().zip(&leaf_cids) {
        assert_eq!(Cid::new(Codec::Block, *leaf), *cid);
    }
    assert_eq!(j.get("emptyCid").cid(), Cid::EMPTY_BLOCK);
    assert_eq!(leaf_cids[3], Cid::EMPTY_BLOCK);
    assert_eq!(
        Cid::new(Codec::Root, protected.tree.root()),
        j.get("protectedTreeCid").cid()
    );
    assert_eq!(protected.manifest.tree_cid, j.get("protectedTreeCid").cid());

    let cells = j.get("slotRootCells");
    assert_eq!(cells.get("cellSize").usize(), CELL_SIZE);
    assert_eq!(cells.get("cellsPerBlock").u64(), layout.cells_per_block());
    assert_eq!(
        protected.cell_roots,
        cells.get("blockCellRoots_hex").digests()
    );
    let ex = cells.get("exampleBlock");
    let ex_index = ex.get("index").usize();
    assert_eq!(
        erasure::cell_leaves(&blocks[ex_index]),
        Ok(ex.get("cellLeaves_hex").digests())
    );
    assert_eq!(
        erasure::cell_root(&blocks[ex_index]),
        Ok(ex.get("cellRoot_hex").digest())
    );
    let live = cells.get("livePositions").u64s();
    let challenge = cells.get("challengeCellCount").u64s();
    let row_layers = cells.get("rowLayers_hex").arr();
    let mut row_blocks: Vec<Vec<&[u8]>> = Vec::new();
    for r in 0..layout.rows() {
        assert_eq!(layout.live(r), Ok(live[r as usize]));
        let geometry = layout.cell_geometry(r).expect("geometry");
        assert_eq!(geometry.live_cells(), challenge[r as usize]);
        let live_blocks: Vec<&[u8]> = layout
            .row(r)
            .expect("row")
            .take(live[r as usize] as usize)
            .map(|i| protected.block(&blocks, i).expect("block"))
            .collect();
        let tree = layout.row_tree(r, &live_blocks).expect("row tree");
        assert_eq!(tree.layers(), &row_layers[r as usize].layers()[..]);
        assert_eq!(tree.root(), protected.slot_roots[r as usize]);
        row_blocks.push(live_blocks);
    }
    let check_proof = |p: &J<'_>| {
        let r = p.get("row").u64() as usize;
        check_cell_proof(p, &layout, &row_blocks[r], &protected.slot_roots[r]);
    };
    let example = cells.get("exampleCellProof");
    check_proof(&example);
    let all = cells.get("allCellProofs").arr();
    assert_eq!(all.len() as u64, challenge.iter().sum::<u64>());
    let mut expected_pairs = Vec::new();
    for r in 0..layout.rows() {
        for c in 0..challenge[r as usize] {
            expected_pairs.push((u64::from(r), c));
        }
    }
    let mut got_pairs = Vec::new();
    for p in &all {
        got_pairs.push((p.get("row").u64(), p.get("cellIndex").u64()));
        check_proof(p);
    }
    assert_eq!(got_pairs, expected_pairs);

    let slot_root_cids = j.get("slotRoots").cids();
    let slot_root_bytes: Vec<Vec<u8>> = j.get("slotRoots_hex").arr().iter().map(J::hex).collect();
    for (r, digest) in protected.slot_roots.iter().enumerate() {
        let cid = Cid::new(Codec::SlotRoot, *digest);
        assert_eq!(cid, slot_root_cids[r]);
        assert_eq!(cid.to_bytes().to_vec(), slot_root_bytes[r]);
    }

    assert_eq!(
        field_20(&protected.manifest_bytes),
        j.get("ecExtension_hex").hex()
    );
    let manifest_bytes = j.get("protectedManifest_hex").hex();
    assert_eq!(protected.manifest_bytes, manifest_bytes);
    assert_eq!(
        j.get("protectedManifestLength").usize(),
        manifest_bytes.len()
    );
    assert_eq!(protected.manifest_cid, j.get("protectedManifestCid").cid());
    assert_eq!(Manifest::cid_of(&manifest_bytes), protected.manifest_cid);
    let decoded = Manifest::decode(&manifest_bytes).expect("decode protected manifest");
    assert_eq!(decoded, protected.manifest);
    assert_eq!(Layout::from_manifest(&decoded), Ok(layout));
    assert_eq!(decoded.blocks_count(), layout.total());

    // Negative vectors (§9.6), rebuilt from the valid manifest and rejected.
    let invalid = j.get("invalidProtectedManifests").arr();
    assert_eq!(invalid.len(), 3);
    for bad in &invalid {
        let reason = bad.get("reason").str();
        let mut variant = protected.manifest.clone();
        let ext = variant.erasure.as_mut().expect("ext");
        let expected_error = if reason.starts_with("no slotRoots") {
            ext.slot_roots.clear();
            None
        } else if reason.starts_with("K+M-1") {
            ext.slot_roots.pop();
            None
        } else if reason.contains("0xCD03") {
            for root in &mut ext.slot_roots {
                *root = Cid::new(Codec::Root, *root.digest());
            }
            Some(20)
        } else {
            panic!("unknown negative vector: {reason}");
        };
        let bytes = bad.get("bytes_hex").hex();
        assert_eq!(variant.encode(), bytes, "{reason}");
        assert_eq!(bad.get("length").usize(), bytes.len());
        assert_eq!(Manifest::cid_of(&bytes), bad.get("manifestCid").cid());
        let err = Manifest::decode(&bytes).expect_err(reason);
        match expected_error {
            Some(field) => assert!(
                matches!(err, ManifestError::Cid { field: f, .. } if f == field),
                "{reason}: {err:?}"
            ),
            None => assert!(
                matches!(err, ManifestError::Invalid { field: 20, .. }),
                "{reason}: {err:?}"
            ),
        }
        assert!(Layout::from_manifest(&variant).is_err(), "{reason}");
    }

    // Padding is delivered as the empty block with an ordinary proof (§4.3).
    let check = DeliveryCheck::new(&decoded);
    assert!(check.is_padding(3) && !check.is_padding(2) && !check.is_padding(4));
    for i in 0..layout.total() {
        let data = protected.block(&blocks, i).expect("block").to_vec();
        let delivery = BlockDelivery {
            index: i,
            block_cid: Cid::new(Codec::Block, leaves[i as usize]),
            data: data.into(),
            proof: Some(protected.tree.proof(i).expect("proof")),
        };
        assert_eq!(check.check(&delivery), Ok(()), "index {i}");
    }
    // A zero-length block at a data index is refused.
    let empty_at_data = BlockDelivery {
        index: 2,
        block_cid: Cid::EMPTY_BLOCK,
        data: Default::default(),
        proof: Some(protected.tree.proof(2).expect("proof")),
    };
    assert!(matches!(
        check.check(&empty_at_data),
        Err(DeliveryError::DataLength { index: 2, len: 0 })
    ));

    // Any K rows rebuild every column.
    for lost in 0..layout.rows() {
        for s in 0..layout.steps() {
            let shards: Vec<Option<Vec<u8>>> = layout
                .column(s)
                .expect("column")
                .iter()
                .enumerate()
                .map(|(r, &i)| {
                    (r as u32 != lost).then(|| protected.block(&blocks, i).expect("b").to_vec())
                })
                .collect();
            let rebuilt = layout.rebuild_column(s, &shards).expect("rebuild");
            for (r, &i) in layout.column(s).expect("column").iter().enumerate() {
                let expected = if layout.is_padding(i) {
                    zero.clone()
                } else {
                    protected.block(&blocks, i).expect("b").to_vec()
                };
                assert_eq!(
                    rebuilt[r], expected,
                    "lost row {lost}, column {s}, shard {r}"
                );
            }
        }
    }
    v.assert_consumed("erasure");
}

#[test]
fn cell_tree() {
    let v = Vectors::load();
    let j = v.root().get("cellTree");
    j.get("description").prose();
    let k = j.get("ecK").u64() as u32;
    let block_size = bs(j.get("blockSize").u64());
    let size = j.get("originalDatasetSize").u64();
    let data: Vec<u8> = (0..size).map(|i| ((11 * i + 5) % 253) as u8).collect();
    let (hashed, _) = build_from_bytes(&data, block_size, None, None).expect("dataset");
    let blocks: Vec<Vec<u8>> = hashed.into_iter().map(|b| b.data).collect();
    // Data-row slot roots do not depend on M; any valid M gives the same numbers.
    let layout = Layout::new(k, 1, block_size, size).expect("layout");
    assert_eq!(layout.original_blocks(), j.get("originalBlocksCount").u64());
    assert_eq!(layout.rounded(), j.get("rounded").u64());
    assert_eq!(layout.steps(), j.get("steps").u64());
    assert_eq!(j.get("cellSize").usize(), CELL_SIZE);
    assert_eq!(layout.cells_per_block(), j.get("cellsPerBlock").u64());

    let rows = j.get("rows").arr();
    assert_eq!(rows.len() as u32, k);
    let live = j.get("livePositions").u64s();
    let challenge = j.get("challengeCellCount").u64s();
    let cell_roots = j.get("blockCellRoots_hex").digests();
    assert_eq!(cell_roots.len() as u64, layout.rounded());
    let row_layers = j.get("rowLayers_hex").arr();
    let slot_root_bytes: Vec<Vec<u8>> = j.get("slotRoots_hex").arr().iter().map(J::hex).collect();
    let slot_root_cids = j.get("slotRoots").cids();
    let mut row_blocks = Vec::new();
    let mut slot_roots = Vec::new();
    for r in 0..k {
        let indices: Vec<u64> = layout.row(r).expect("row").collect();
        assert_eq!(rows[r as usize].u64s(), indices);
        assert_eq!(layout.live(r), Ok(live[r as usize]));
        let geometry = layout.cell_geometry(r).expect("geometry");
        assert_eq!(geometry.live_cells(), challenge[r as usize]);
        let live_blocks: Vec<&[u8]> = indices
            .iter()
            .take(live[r as usize] as usize)
            .map(|&i| &blocks[i as usize][..])
            .collect();
        let ours = layout.row_cell_roots(r, &live_blocks).expect("cell roots");
        for (p, &i) in indices.iter().enumerate() {
            assert_eq!(ours[p], cell_roots[i as usize], "cell root of {i}");
            if layout.is_padding(i) {
                assert_eq!(ours[p], EMPTY_DIGEST);
            }
        }
        let tree = layout.row_tree(r, &live_blocks).expect("row tree");
        assert_eq!(tree.layers(), &row_layers[r as usize].layers()[..]);
        let cid = Cid::new(Codec::SlotRoot, tree.root());
        assert_eq!(cid.to_bytes().to_vec(), slot_root_bytes[r as usize]);
        assert_eq!(cid, slot_root_cids[r as usize]);
        assert_eq!(layout.slot_root(r, &live_blocks), Ok(tree.root()));
        // The unpaired last node of the row tree's level 0.
        assert_eq!(
            tree.layers()[1][1],
            compress(&ours[2], &ZERO, 3),
            "row {r} level 1"
        );
        slot_roots.push(tree.root());
        row_blocks.push(live_blocks);
    }

    let ex = j.get("exampleBlock");
    let index = ex.get("index").usize();
    let tree = erasure::cell_tree(&blocks[index]).expect("cell tree");
    assert_eq!(tree.leaves(), &ex.get("cellLeaves_hex").digests()[..]);
    assert_eq!(tree.layers(), &ex.get("layers_hex").layers()[..]);
    assert_eq!(tree.root(), ex.get("cellRoot_hex").digest());

    for p in j.get("cellProofs").arr() {
        let r = p.get("row").usize();
        check_cell_proof(&p, &layout, &row_blocks[r], &slot_roots[r]);
    }
    v.assert_consumed("cellTree");
}

#[test]
fn tracker_reports_unread_values() {
    let v = Vectors {
        root: serde_json::json!({"s": {"a": 1, "b": [2, 3], "c": [], "d": null}}),
        seen: RefCell::new(BTreeSet::new()),
    };
    let s = v.root().get("s");
    assert_eq!(s.get("a").u64(), 1);
    assert_eq!(s.get("b").arr()[0].u64(), 2);
    assert_eq!(v.unconsumed("s"), vec![".s.b[1]", ".s.c", ".s.d"]);
    assert_eq!(s.get("b").u64s(), vec![2, 3]);
    assert!(s.get("c").u64s().is_empty());
    assert_eq!(s.get("d").opt_str(), None);
    v.assert_consumed("s");
}
