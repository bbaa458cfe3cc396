//! The gate's UTF-8 check of a line, with its common case (every byte
//! ASCII, as in the events feeds send) decided 16 bytes a step:
//! [`line_text`].
//!
//! One of the crate's two `unsafe` blocks (the other is `prefetch.rs`'s
//! hint, which reads nothing). An ASCII byte string is valid
//! UTF-8 by definition (UTF-8 encodes U+0000-U+007F as the bytes
//! 0x00-0x7F), so a line every byte of which is below 0x80 is taken as
//! `str` without the general check. That check, `std::str::from_utf8`,
//! cost ~40 ns of the plain reading's ~380 a line (~200 instructions of
//! ~3,300; `docs/bench/ascii-lines-and-reserve-2026-12-05.md`), and no
//! safe conversion exists that does not repeat it.

#![allow(unsafe_code)] // `from_utf8_unchecked` of a line checked to be ASCII

use wide::u8x16;

/// `bytes` as text: exactly `std::str::from_utf8(bytes).ok()`. A line
/// whose bytes are all ASCII is recognised with 16-byte vector loads (SSE2
/// on x86-64, portable code elsewhere) and no per-byte decoding; any other
/// goes to the full check.
#[inline]
pub(crate) fn line_text(bytes: &[u8]) -> Option<&str> {
    if is_ascii(bytes) {
        // SAFETY: every byte of `bytes` is below 0x80 (`is_ascii`), and a
        // sequence of such bytes is valid UTF-8 (each is a one-byte code
        // point U+0000-U+007F), which is all `from_utf8_unchecked` asks.
        Some(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes).ok()
    }
}

/// Whether every byte of `bytes` is below 0x80: the high bits of 16-byte
/// blocks or-ed together (the last block overlapping the one before it),
/// one test at the end; lines under 16 bytes byte by byte.
#[inline]
fn is_ascii(bytes: &[u8]) -> bool {
    let (blocks, _) = bytes.as_chunks::<16>();
    let mut high = match bytes.last_chunk::<16>() {
        Some(last) => u8x16::new(*last),
        None => return bytes.is_ascii(),
    };
    for block in blocks {
        high |= u8x16::new(*block);
    }
    high.to_bitmask() == 0
}

#[cfg(test)]
mod tests {
    use super::{is_ascii, line_text};

    /// Lines of 0-70 ASCII bytes with one other byte at each place (or
    /// none): the block test finds a high byte in every block, in the
    /// overlapping last block and in the short lines, and the text is the
    /// standard check's in every case (valid multi-byte characters, lone
    /// continuation bytes and truncated sequences among the others).
    #[test]
    fn a_high_byte_is_found_at_every_place() {
        let others: [&[u8]; 6] = [
            b"\x7f",
            b"\x80",
            b"\xff",
            "é".as_bytes(),
            "€".as_bytes(),
            &"€".as_bytes()[..2],
        ];
        for len in 0..=70usize {
            for at in 0..=len {
                for other in others {
                    let mut bytes = vec![b'a'; len];
                    if at < len {
                        bytes.splice(at..at + 1, other.iter().copied());
                    }
                    assert_eq!(is_ascii(&bytes), bytes.is_ascii(), "{bytes:?}");
                    assert_eq!(
                        line_text(&bytes),
                        std::str::from_utf8(&bytes).ok(),
                        "{bytes:?}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        /// Any bytes, mostly ASCII: the same text (or none) as the
        /// standard check.
        #[test]
        fn line_text_is_from_utf8(bytes in proptest::collection::vec(proptest::prop_oneof![
            8 => 0x00u8..0x80,
            1 => proptest::prelude::any::<u8>(),
        ], 0..300)) {
            proptest::prop_assert_eq!(line_text(&bytes), std::str::from_utf8(&bytes).ok());
        }
    }
}
