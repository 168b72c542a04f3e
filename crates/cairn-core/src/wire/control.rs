//! The blockexc control protobuf (frame type 0, `wire.md` §7.3).
//!
//! Encoding follows upstream's `required` fields: every non-repeated field is written, also when
//! zero or false, in field-number order; repeated fields sit at their field-number position; the
//! want list is always present. Decoding skips unknown fields (including Gen-1's `Message` field
//! 3), fills absent scalars with their zero value and rejects what §7.3 lists.

use crate::{
    cid::{Cid, CidError, Codec},
    pb::{self, FieldReader, PbError, Value},
};

/// Largest control body (`MaxMessageSize`, 16 MiB).
pub const MAX_CONTROL_BODY: usize = 16 * 1024 * 1024;
/// Most want-list entries in one message (`MaxWantListEntries`).
pub const MAX_WANT_LIST_ENTRIES: usize = 1024;
/// Most block presences in one message (`MaxBlockPresenceEntries`).
pub const MAX_BLOCK_PRESENCE_ENTRIES: usize = 1024;
/// Largest `rangeCount` a responder scans for one entry (`MaxPresenceWindowBlocks`).
pub const MAX_PRESENCE_WINDOW_BLOCKS: u64 = 262_144;
/// Most indices a responder scans per incoming message (`MaxRangeIterationsPerMessage`).
pub const MAX_RANGE_ITERATIONS_PER_MESSAGE: u64 = 16_384;

/// Why a control message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// Not valid protobuf.
    #[error("malformed control message: {0}")]
    Protobuf(#[from] PbError),
    /// A known field with the wrong wire type.
    #[error("control message: {message} field {field} has the wrong wire type")]
    WireType {
        /// The message type.
        message: &'static str,
        /// The field number.
        field: u32,
    },
    /// An entry or presence without its address.
    #[error("control message: {0} without an address")]
    MissingAddress(&'static str),
    /// An address without its tree CID.
    #[error("control message: block address without a treeCid")]
    MissingTreeCid,
    /// The tree CID is not a valid root CID.
    #[error("control message: invalid treeCid: {0}")]
    Cid(#[from] CidError),
    /// `wantType` other than 0 (WantHave).
    #[error("control message: wantType {0} is not WantHave (0)")]
    WantType(u64),
    /// `kind` above 2.
    #[error("control message: presence kind {0} is unknown")]
    PresenceKind(u64),
    /// More than 1024 want-list entries.
    #[error("control message: more than 1024 want-list entries")]
    TooManyEntries,
    /// More than 1024 block presences.
    #[error("control message: more than 1024 block presences")]
    TooManyPresences,
}

/// A block of a tree: `(treeCid, index)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockAddress {
    /// The tree root CID (codec 0xCD03).
    pub tree_cid: Cid,
    /// The leaf index.
    pub index: u64,
}

/// A run of block indices `[start, start + count)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BlockRange {
    /// First index.
    pub start: u64,
    /// Number of indices.
    pub count: u64,
}

/// A want-list entry. `wantType` is always WantHave (0), so it has no field here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WantEntry {
    /// First block asked about.
    pub address: BlockAddress,
    /// Informational; cairn sends 0.
    pub priority: i32,
    /// Withdraws the entry.
    pub cancel: bool,
    /// Ask for a DontHave answer when nothing is held.
    pub send_dont_have: bool,
    /// Blocks `[index, index + rangeCount)`; 0 asks for the single block `index`.
    pub range_count: u64,
    /// The requester's download id, echoed in presences.
    pub download_id: u64,
}

/// The want list of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wantlist {
    /// Entries, in order.
    pub entries: Vec<WantEntry>,
    /// Informational.
    pub full: bool,
}

/// What a presence says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PresenceKind {
    /// 0: nothing of the asked window is held.
    DontHave,
    /// 1: the ranges are held.
    HaveRange,
    /// 2: the whole tree is held.
    Complete,
}

impl PresenceKind {
    /// The wire value.
    pub const fn code(self) -> u64 {
        match self {
            PresenceKind::DontHave => 0,
            PresenceKind::HaveRange => 1,
            PresenceKind::Complete => 2,
        }
    }

    /// The kind of a wire value, if defined.
    pub const fn from_code(code: u64) -> Option<PresenceKind> {
        match code {
            0 => Some(PresenceKind::DontHave),
            1 => Some(PresenceKind::HaveRange),
            2 => Some(PresenceKind::Complete),
            _ => None,
        }
    }
}

/// A presence answer (or an unsolicited announcement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPresence {
    /// The address of the entry it answers.
    pub address: BlockAddress,
    /// What is held.
    pub kind: PresenceKind,
    /// Held runs (for HaveRange).
    pub ranges: Vec<BlockRange>,
    /// The download id of the entry it answers.
    pub download_id: u64,
}

/// A control message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Always encoded, also when empty.
    pub wantlist: Wantlist,
    /// Presences, in order.
    pub block_presences: Vec<BlockPresence>,
}

fn put_message(out: &mut Vec<u8>, field: u32, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    pb::put_bytes_field(out, field, &inner);
}

impl BlockAddress {
    fn encode_into(&self, out: &mut Vec<u8>) {
        pb::put_bytes_field(out, 1, &self.tree_cid.to_bytes());
        pb::put_varint_field(out, 2, self.index);
    }

    fn decode(bytes: &[u8]) -> Result<BlockAddress, ControlError> {
        const NAME: &str = "BlockAddress";
        let mut tree_cid = None;
        let mut index = 0;
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    tree_cid = Some(Cid::from_bytes(b)?.expect_codec(Codec::Root)?);
                }
                (2, Value::Varint(v)) => index = v,
                (1 | 2, _) => return Err(wire_type(NAME, field)),
                _ => {}
            }
        }
        Ok(BlockAddress {
            tree_cid: tree_cid.ok_or(ControlError::MissingTreeCid)?,
            index,
        })
    }
}

impl BlockRange {
    fn decode(bytes: &[u8]) -> Result<BlockRange, ControlError> {
        let mut range = BlockRange::default();
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Varint(v)) => range.start = v,
                (2, Value::Varint(v)) => range.count = v,
                (1 | 2, _) => return Err(wire_type("Range", field)),
                _ => {}
            }
        }
        Ok(range)
    }
}

impl WantEntry {
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_message(out, 1, |o| self.address.encode_into(o));
        // int32 as the plain varint of its 64-bit two's complement.
        pb::put_varint_field(out, 2, i64::from(self.priority) as u64);
        pb::put_varint_field(out, 3, u64::from(self.cancel));
        pb::put_varint_field(out, 4, 0);
        pb::put_varint_field(out, 5, u64::from(self.send_dont_have));
        pb::put_varint_field(out, 6, self.range_count);
        pb::put_varint_field(out, 7, self.download_id);
    }

    fn decode(bytes: &[u8]) -> Result<WantEntry, ControlError> {
        const NAME: &str = "Entry";
        let mut address = None;
        let (mut priority, mut cancel, mut send_dont_have) = (0, false, false);
        let (mut range_count, mut download_id) = (0, 0);
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => address = Some(BlockAddress::decode(b)?),
                // protobuf int32: the low 32 bits of the varint.
                (2, Value::Varint(v)) => priority = v as u32 as i32,
                (3, Value::Varint(v)) => cancel = v != 0,
                (4, Value::Varint(0)) => {}
                (4, Value::Varint(v)) => return Err(ControlError::WantType(v)),
                (5, Value::Varint(v)) => send_dont_have = v != 0,
                (6, Value::Varint(v)) => range_count = v,
                (7, Value::Varint(v)) => download_id = v,
                (1..=7, _) => return Err(wire_type(NAME, field)),
                _ => {}
            }
        }
        Ok(WantEntry {
            address: address.ok_or(ControlError::MissingAddress(NAME))?,
            priority,
            cancel,
            send_dont_have,
            range_count,
            download_id,
        })
    }
}

impl Wantlist {
    fn encode_into(&self, out: &mut Vec<u8>) {
        for entry in &self.entries {
            put_message(out, 1, |o| entry.encode_into(o));
        }
        pb::put_varint_field(out, 2, u64::from(self.full));
    }

    /// Merges the fields of one encoded want list into `self` (protobuf merge semantics, so a
    /// repeated `Message.wantlist` cannot slip past the entry limit).
    fn merge(&mut self, bytes: &[u8]) -> Result<(), ControlError> {
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => {
                    if self.entries.len() >= MAX_WANT_LIST_ENTRIES {
                        return Err(ControlError::TooManyEntries);
                    }
                    self.entries.push(WantEntry::decode(b)?);
                }
                (2, Value::Varint(v)) => self.full = v != 0,
                (1 | 2, _) => return Err(wire_type("Wantlist", field)),
                _ => {}
            }
        }
        Ok(())
    }
}

impl BlockPresence {
    fn encode_into(&self, out: &mut Vec<u8>) {
        put_message(out, 1, |o| self.address.encode_into(o));
        pb::put_varint_field(out, 2, self.kind.code());
        for range in &self.ranges {
            put_message(out, 3, |o| {
                pb::put_varint_field(o, 1, range.start);
                pb::put_varint_field(o, 2, range.count);
            });
        }
        pb::put_varint_field(out, 4, self.download_id);
    }

    fn decode(bytes: &[u8]) -> Result<BlockPresence, ControlError> {
        const NAME: &str = "BlockPresence";
        let mut address = None;
        let mut kind = PresenceKind::DontHave;
        let mut ranges = Vec::new();
        let mut download_id = 0;
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => address = Some(BlockAddress::decode(b)?),
                (2, Value::Varint(v)) => {
                    kind = PresenceKind::from_code(v).ok_or(ControlError::PresenceKind(v))?;
                }
                (3, Value::Bytes(b)) => ranges.push(BlockRange::decode(b)?),
                (4, Value::Varint(v)) => download_id = v,
                (1..=4, _) => return Err(wire_type(NAME, field)),
                _ => {}
            }
        }
        Ok(BlockPresence {
            address: address.ok_or(ControlError::MissingAddress(NAME))?,
            kind,
            ranges,
            download_id,
        })
    }
}

impl Message {
    /// The byte-exact protobuf encoding of `wire.md` §7.3 (the frame body). Limits are checked
    /// by [`Frame::encode`](super::Frame::encode), not here.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            8 + 64 * self.wantlist.entries.len() + 96 * self.block_presences.len(),
        );
        put_message(&mut out, 1, |o| self.wantlist.encode_into(o));
        for presence in &self.block_presences {
            put_message(&mut out, 4, |o| presence.encode_into(o));
        }
        out
    }

    /// Checks the entry and presence counts a decoder enforces.
    pub fn check_limits(&self) -> Result<(), ControlError> {
        if self.wantlist.entries.len() > MAX_WANT_LIST_ENTRIES {
            return Err(ControlError::TooManyEntries);
        }
        if self.block_presences.len() > MAX_BLOCK_PRESENCE_ENTRIES {
            return Err(ControlError::TooManyPresences);
        }
        Ok(())
    }

    /// Decodes a control body. The caller has already checked the body against
    /// [`MAX_CONTROL_BODY`] (see [`FrameHeader`](super::FrameHeader)).
    pub fn decode(bytes: &[u8]) -> Result<Message, ControlError> {
        let mut msg = Message::default();
        let mut r = FieldReader::new(bytes);
        while let Some((field, value)) = r.next_field()? {
            match (field, value) {
                (1, Value::Bytes(b)) => msg.wantlist.merge(b)?,
                (4, Value::Bytes(b)) => {
                    if msg.block_presences.len() >= MAX_BLOCK_PRESENCE_ENTRIES {
                        return Err(ControlError::TooManyPresences);
                    }
                    msg.block_presences.push(BlockPresence::decode(b)?);
                }
                (1 | 4, _) => return Err(wire_type("Message", field)),
                // Field 3 (Gen-1 block payload) and anything else unknown.
                _ => {}
            }
        }
        Ok(msg)
    }
}

fn wire_type(message: &'static str, field: u32) -> ControlError {
    ControlError::WireType { message, field }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address() -> BlockAddress {
        BlockAddress {
            tree_cid: Cid::new(Codec::Root, [9; 32]),
            index: 3,
        }
    }

    fn entry() -> WantEntry {
        WantEntry {
            address: address(),
            priority: -1,
            cancel: true,
            send_dont_have: false,
            range_count: 0,
            download_id: 7,
        }
    }

    #[test]
    fn negative_priority_takes_ten_bytes() {
        let mut out = Vec::new();
        entry().encode_into(&mut out);
        // Address: 0a 2a (0a 26 <cid> 10 03), then the priority key.
        let at = 2 + 0x2a;
        assert_eq!(out[at], 0x10);
        assert_eq!(
            &out[at + 1..at + 11],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
        assert_eq!(WantEntry::decode(&out), Ok(entry()));
    }

    #[test]
    fn empty_message_still_has_a_wantlist() {
        assert_eq!(Message::default().encode(), vec![0x0a, 0x02, 0x10, 0x00]);
        assert_eq!(Message::decode(&[]), Ok(Message::default()));
    }

    #[test]
    fn rejections() {
        // wantType 1.
        let mut e = Vec::new();
        entry().encode_into(&mut e);
        // Address (44 bytes), priority (11), cancel (2), then wantType.
        let at = 44 + 11 + 2;
        assert_eq!(e[at], 0x20);
        e[at + 1] = 1;
        assert_eq!(WantEntry::decode(&e), Err(ControlError::WantType(1)));
        // Missing address.
        let mut e = Vec::new();
        pb::put_varint_field(&mut e, 2, 0);
        assert_eq!(
            WantEntry::decode(&e),
            Err(ControlError::MissingAddress("Entry"))
        );
        // Address without treeCid.
        let mut a = Vec::new();
        pb::put_varint_field(&mut a, 2, 5);
        assert_eq!(BlockAddress::decode(&a), Err(ControlError::MissingTreeCid));
        // treeCid of the wrong codec.
        let mut a = Vec::new();
        pb::put_bytes_field(&mut a, 1, &Cid::EMPTY_BLOCK.to_bytes());
        assert!(matches!(
            BlockAddress::decode(&a),
            Err(ControlError::Cid(CidError::WrongCodec { .. }))
        ));
        // kind 3.
        let p = BlockPresence {
            address: address(),
            kind: PresenceKind::Complete,
            ranges: vec![],
            download_id: 0,
        };
        let mut b = Vec::new();
        p.encode_into(&mut b);
        let at = 44;
        assert_eq!(b[at], 0x10);
        b[at + 1] = 3;
        assert_eq!(
            BlockPresence::decode(&b),
            Err(ControlError::PresenceKind(3))
        );
    }

    #[test]
    fn entry_and_presence_limits() {
        let full = Message {
            wantlist: Wantlist {
                entries: vec![entry(); MAX_WANT_LIST_ENTRIES],
                full: true,
            },
            block_presences: vec![],
        };
        let bytes = full.encode();
        assert_eq!(Message::decode(&bytes), Ok(full.clone()));
        // One more entry in a second wantlist field is still over the limit.
        let mut more = bytes.clone();
        put_message(&mut more, 1, |o| {
            put_message(o, 1, |o| entry().encode_into(o))
        });
        assert_eq!(Message::decode(&more), Err(ControlError::TooManyEntries));

        let presence = BlockPresence {
            address: address(),
            kind: PresenceKind::DontHave,
            ranges: vec![],
            download_id: 1,
        };
        let msg = Message {
            wantlist: Wantlist::default(),
            block_presences: vec![presence; MAX_BLOCK_PRESENCE_ENTRIES + 1],
        };
        assert_eq!(msg.check_limits(), Err(ControlError::TooManyPresences));
        assert_eq!(
            Message::decode(&msg.encode()),
            Err(ControlError::TooManyPresences)
        );
    }

    #[test]
    fn unknown_fields_and_gen1_payload_are_skipped() {
        let msg = Message {
            wantlist: Wantlist {
                entries: vec![entry()],
                full: false,
            },
            block_presences: vec![],
        };
        let mut bytes = msg.encode();
        pb::put_bytes_field(&mut bytes, 3, b"gen-1 block payload");
        pb::put_varint_field(&mut bytes, 5, 99);
        assert_eq!(Message::decode(&bytes), Ok(msg));
    }
}
