//! An event's raw bytes, shared with the block of input they were read in.
//!
//! A file source reads its input in blocks and hands out each line as a
//! range of its block: no allocation and no copy per line, and the block's
//! memory is reused once every line of it is dropped
//! (`docs/bench/shared-lines-2026-12-03.md`). A payload made from a `Vec`
//! (a Kafka message, a test) is a block of its own.

use std::fmt;
use std::ops::{Deref, Range};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Bytes of one event: a range of a shared, immutable block. Cloning shares
/// the block; the bytes never change. Holding a payload keeps its whole
/// block alive, so what may be kept to the end of a run (a dead letter)
/// takes its own copy ([`Payload::into_vec`]).
#[derive(Clone)]
pub struct Payload {
    block: Arc<[u8]>,
    start: usize,
    end: usize,
}

/// A range outside its block.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("range {start}..{end} is outside a block of {len} bytes")]
pub struct OutOfBlock {
    /// The range's start.
    pub start: usize,
    /// The range's end.
    pub end: usize,
    /// The block's length.
    pub len: usize,
}

impl Payload {
    /// `block[range]`, sharing `block`; an error if the range is not within it.
    pub fn shared(block: &Arc<[u8]>, range: Range<usize>) -> Result<Payload, OutOfBlock> {
        if range.start > range.end || range.end > block.len() {
            return Err(OutOfBlock {
                start: range.start,
                end: range.end,
                len: block.len(),
            });
        }
        Ok(Payload {
            block: Arc::clone(block),
            start: range.start,
            end: range.end,
        })
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        // In range by construction (`shared` checks, `From<Vec>` covers the block).
        &self.block[self.start..self.end]
    }

    /// The bytes as a `Vec` of their own: copied, so that nothing keeps the
    /// block alive.
    pub fn into_vec(self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
}

impl Deref for Payload {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl AsRef<[u8]> for Payload {
    fn as_ref(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl From<Vec<u8>> for Payload {
    fn from(bytes: Vec<u8>) -> Payload {
        let end = bytes.len();
        Payload {
            block: Arc::from(bytes),
            start: 0,
            end,
        }
    }
}

impl From<&[u8]> for Payload {
    fn from(bytes: &[u8]) -> Payload {
        let end = bytes.len();
        Payload {
            block: Arc::from(bytes),
            start: 0,
            end,
        }
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Payload {}

impl PartialOrd for Payload {
    fn partial_cmp(&self, other: &Payload) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Payload {
    /// As the bytes compare.
    fn cmp(&self, other: &Payload) -> std::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl std::hash::Hash for Payload {
    /// As the bytes hash (`Vec<u8>` alike).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl fmt::Debug for Payload {
    /// As `Vec<u8>` formats.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_bytes(), f)
    }
}

impl Serialize for Payload {
    /// As `Vec<u8>` serializes (a sequence of bytes), so a payload sent
    /// between processes reads back as either.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_bytes().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        Vec::<u8>::deserialize(deserializer).map(Payload::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_payload_is_its_range_and_keeps_the_block_alive() {
        let block: Arc<[u8]> = Arc::from(&b"ab\ncd\n"[..]);
        let cd = Payload::shared(&block, 3..5).expect("in range");
        assert_eq!(&*cd, b"cd");
        assert_eq!(Arc::strong_count(&block), 2);
        drop(block);
        assert_eq!(cd.clone().into_vec(), b"cd".to_vec());
        assert_eq!(cd, Payload::from(b"cd".to_vec()));
    }

    #[test]
    fn a_range_outside_the_block_is_refused() {
        let block: Arc<[u8]> = Arc::from(&b"abc"[..]);
        assert_eq!(
            Payload::shared(&block, 2..4),
            Err(OutOfBlock {
                start: 2,
                end: 4,
                len: 3
            })
        );
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 2..1;
        assert!(Payload::shared(&block, reversed).is_err());
        assert_eq!(Payload::shared(&block, 3..3).map(|p| p.len()), Ok(0));
    }

    #[test]
    fn a_payload_serializes_as_a_vec_of_its_bytes() {
        let block: Arc<[u8]> = Arc::from(&b"xhello"[..]);
        let payload = Payload::shared(&block, 1..6).expect("in range");
        let json = serde_json::to_string(&payload).expect("serializes");
        assert_eq!(
            json,
            serde_json::to_string(&b"hello".to_vec()).expect("vec")
        );
        let back: Payload = serde_json::from_str(&json).expect("reads back");
        assert_eq!(back, payload);
        let as_vec: Vec<u8> = serde_json::from_str(&json).expect("reads as a vec");
        assert_eq!(as_vec, b"hello");
    }
}
