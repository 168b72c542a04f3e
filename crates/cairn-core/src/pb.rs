//! Minimal hand-written protobuf encoding, for the formats whose exact bytes matter (manifest,
//! control messages): fields are written in the order the caller writes them, scalars are never
//! elided, and the reader skips unknown fields of any valid wire type.

/// Wire type of varint fields.
pub const WIRE_VARINT: u8 = 0;
/// Wire type of 64-bit fields.
pub const WIRE_FIXED64: u8 = 1;
/// Wire type of length-delimited fields.
pub const WIRE_LEN: u8 = 2;
/// Wire type of 32-bit fields.
pub const WIRE_FIXED32: u8 = 5;

/// Appends the unsigned LEB128 varint of `v`.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Number of bytes of the varint of `v`.
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends a varint field (key and value), also when the value is zero.
pub fn put_varint_field(out: &mut Vec<u8>, field: u32, v: u64) {
    put_varint(out, u64::from(field) << 3 | u64::from(WIRE_VARINT));
    put_varint(out, v);
}

/// Appends a length-delimited field.
pub fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_varint(out, u64::from(field) << 3 | u64::from(WIRE_LEN));
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Why protobuf bytes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PbError {
    /// Input ended inside a field.
    #[error("truncated protobuf")]
    Truncated,
    /// A varint longer than 10 bytes or overflowing 64 bits.
    #[error("malformed varint")]
    Varint,
    /// Wire types 3, 4, 6, 7 or field number 0.
    #[error("invalid protobuf key")]
    InvalidKey,
}

/// A value read from the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 1.
    Fixed64(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire type 5.
    Fixed32(u32),
}

impl Value<'_> {
    /// The wire type of this value.
    pub fn wire_type(&self) -> u8 {
        match self {
            Value::Varint(_) => WIRE_VARINT,
            Value::Fixed64(_) => WIRE_FIXED64,
            Value::Bytes(_) => WIRE_LEN,
            Value::Fixed32(_) => WIRE_FIXED32,
        }
    }
}

/// Iterates over the fields of one message.
#[derive(Debug, Clone)]
pub struct FieldReader<'a> {
    buf: &'a [u8],
}

impl<'a> FieldReader<'a> {
    /// Reads the fields of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        FieldReader { buf }
    }

    fn varint(&mut self) -> Result<u64, PbError> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or(PbError::Truncated)?;
            self.buf = rest;
            if i == 9 && b > 1 {
                return Err(PbError::Varint);
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(PbError::Varint)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], PbError> {
        if self.buf.len() < n {
            return Err(PbError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// The next field, or `None` at the end of the message.
    pub fn next_field(&mut self) -> Result<Option<(u32, Value<'a>)>, PbError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(PbError::InvalidKey);
        }
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Value::Varint(self.varint()?),
            WIRE_FIXED64 => Value::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            WIRE_LEN => {
                let len = self.varint()?;
                let len = usize::try_from(len).map_err(|_| PbError::Truncated)?;
                Value::Bytes(self.take(len)?)
            }
            WIRE_FIXED32 => Value::Fixed32(u32::from_le_bytes(
                self.take(4)?.try_into().expect("4 bytes"),
            )),
            _ => return Err(PbError::InvalidKey),
        };
        Ok(Some((field as u32, value)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out.len(), varint_len(v), "{v}");
            let mut r = FieldReader::new(&out);
            assert_eq!(r.varint(), Ok(v));
        }
    }
}
