//! The gate's JSON reader: exactly what the contract needs to decide (a
//! repeated top-level key is seen, not overwritten; a number keeps its text;
//! numbers outside the `f64` range and arbitrarily deep containers in
//! ignored fields are still JSON), iterative, so no input can make it
//! recurse or panic.

use std::borrow::Cow;

use wide::u8x16;

/// A top-level member's value: scalars kept (numbers as their text, strings
/// borrowed from the input unless they hold escapes), containers only
/// validated.
pub(super) enum Val<'a> {
    Null,
    Bool,
    Num(&'a str),
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl Val<'_> {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool => "a boolean",
            Val::Num(_) => "a number",
            Val::Str(_) => "a string",
            Val::Array => "an array",
            Val::Object => "an object",
        }
    }
}

/// The high bit of each byte of `word` (8 bytes, little-endian) that
/// stops a plain run: `"`, `\\` or a control character (< 0x20). The
/// first set bit is always a true stop (later ones may be false positives
/// of the zero-byte trick, which is all a scan needs).
#[inline(always)]
fn stop_bits(word: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // A byte of `x` is zero -> its high bit is set in `zero_bytes(x)`.
    let zero_bytes = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    // Bytes < 0x20: (x - 0x20..) borrows into the high bit, only for
    // bytes that are not themselves >= 0x80.
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGHS;
    let quote = zero_bytes(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_bytes(word ^ (ONES * u64::from(b'\\')));
    control | quote | backslash
}

/// The 8 bytes of `bytes` at `at` as a little-endian word.
#[inline(always)]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

/// A run of 4-7 bytes as one word: its first 4 bytes, then its last 4
/// (they overlap when the run is shorter than 8).
#[inline(always)]
fn halves(bytes: &[u8]) -> u64 {
    let half_at = |at: usize| {
        let mut half = [0u8; 4];
        half.copy_from_slice(&bytes[at..at + 4]);
        u64::from(u32::from_le_bytes(half))
    };
    half_at(0) | half_at(bytes.len() - 4) << 32
}

/// Whether `byte` stops a plain run (the byte-at-a-time [`stop_bits`]).
#[inline(always)]
fn stops_run(byte: u8) -> bool {
    byte < 0x20 || byte == b'"' || byte == b'\\'
}

/// The stops among the 16 bytes of `bytes` at `at`, bit `i` for byte
/// `at + i`, exact (no false positives): one SSE2 compare per kind of stop
/// on x86-64 (`wide`'s safe vectors; portable code elsewhere).
#[inline(always)]
fn stop_mask16(bytes: &[u8], at: usize) -> u32 {
    let mut block = [0u8; 16];
    block.copy_from_slice(&bytes[at..at + 16]);
    let block = u8x16::new(block);
    let quote = block.simd_eq(u8x16::splat(b'"'));
    let backslash = block.simd_eq(u8x16::splat(b'\\'));
    // A byte is below 0x20 exactly when it equals its minimum with 0x1f.
    let control = block.min(u8x16::splat(0x1f)).simd_eq(block);
    (quote | backslash | control).to_bitmask()
}

/// Length of the longest prefix of `bytes` with no `"`, no `\\` and no
/// control character (< 0x20). Runs of 16 bytes or more are read 16 bytes
/// a step, the last block overlapping the one before it; shorter ones 8
/// bytes a step (SWAR), their last 1-7 bytes as a word that overlaps the
/// one before it (4-7 bytes alone: two overlapping halves of a word; fewer,
/// byte by byte). The gate reads strings with it: it passes the rest of
/// the line, so a key or a value is, as a rule, one 16-byte step, which
/// is inlined; the rest is out of line ([`plain_blocks_from`],
/// [`plain_run_short`]).
#[inline(always)]
pub(crate) fn plain_run(bytes: &[u8]) -> usize {
    if bytes.len() < 16 {
        return plain_run_short(bytes);
    }
    match stop_mask16(bytes, 0) {
        0 => plain_blocks_from(bytes, 16),
        found => found.trailing_zeros() as usize,
    }
}

/// [`plain_run`] of a run of 16 bytes or more whose bytes before `at`
/// are plain: the blocks from `at`, then a last block that overlaps them.
#[inline(never)]
fn plain_blocks_from(bytes: &[u8], mut at: usize) -> usize {
    let len = bytes.len();
    debug_assert!(len >= 16 && at <= len);
    while at + 16 <= len {
        let found = stop_mask16(bytes, at);
        if found != 0 {
            return at + found.trailing_zeros() as usize;
        }
        at += 16;
    }
    if at == len {
        return len;
    }
    // Every byte before `at` is plain, so the first stop of a block
    // overlapping them is the first stop of the run.
    match stop_mask16(bytes, len - 16) {
        0 => len,
        found => len - 16 + found.trailing_zeros() as usize,
    }
}

/// [`plain_run`] of a run of under 16 bytes.
#[inline(never)]
fn plain_run_short(bytes: &[u8]) -> usize {
    let len = bytes.len();
    debug_assert!(len < 16);
    let first = |stops: u64| (stops.trailing_zeros() / 8) as usize;
    if len >= 8 {
        let found = stop_bits(word_at(bytes, 0));
        if found != 0 {
            return first(found);
        }
        // As above: the last word overlaps the plain first one.
        return match stop_bits(word_at(bytes, len - 8)) {
            0 => len,
            found => len - 8 + first(found),
        };
    }
    if len >= 4 {
        return match first(stop_bits(halves(bytes))) {
            8 => len,
            byte if byte < 4 => byte,
            // Byte 4 of the word is byte `len - 4` of the run.
            byte => len - 4 + (byte - 4),
        };
    }
    bytes.iter().position(|&b| stops_run(b)).unwrap_or(len)
}

/// Whether all of `bytes` is plain (`plain_run(bytes) == bytes.len()`),
/// without finding where: the blocks' or words' stops are or-ed, with no
/// branch per step. The corrections writer checks with it that a string
/// needs no escape.
#[inline]
pub(crate) fn is_plain(bytes: &[u8]) -> bool {
    let len = bytes.len();
    if len >= 16 {
        // The last block overlaps the one before it.
        let mut found = stop_mask16(bytes, len - 16);
        for at in (0..len - 16).step_by(16) {
            found |= stop_mask16(bytes, at);
        }
        return found == 0;
    }
    let found = if len >= 8 {
        stop_bits(word_at(bytes, 0)) | stop_bits(word_at(bytes, len - 8))
    } else if len >= 4 {
        stop_bits(halves(bytes))
    } else {
        return !bytes.iter().any(|&b| stops_run(b));
    };
    found == 0
}

/// The top-level value of a JSON text.
pub(super) enum Top {
    /// An object (its members went to the caller, in document order, repeats kept).
    Object,
    /// Any other value, by type name.
    Other(&'static str),
}

/// Detail of a `not_json` rejection.
pub(super) type JsonResult<T> = Result<T, String>;

pub(super) struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> String {
        match self.peek() {
            None => "unexpected end of input".to_string(),
            Some(_) => format!("unexpected character at byte {}", self.pos),
        }
    }

    fn expect(&mut self, byte: u8) -> JsonResult<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn slice(&self, start: usize, end: usize) -> JsonResult<&'a str> {
        self.text
            .get(start..end)
            .ok_or_else(|| format!("invalid text at byte {start}"))
    }

    fn literal(&mut self, word: &str) -> JsonResult<()> {
        let matches = self
            .bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word.as_bytes()));
        if matches {
            self.pos += word.len();
            Ok(())
        } else {
            Err(format!("invalid literal at byte {}", self.pos))
        }
    }

    fn digits(&mut self) -> JsonResult<()> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == start {
            Err(self.unexpected())
        } else {
            Ok(())
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, returned as written.
    fn number(&mut self) -> JsonResult<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.unexpected()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        self.slice(start, self.pos)
    }

    fn hex4(&mut self) -> JsonResult<u32> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(format!("invalid \\u escape at byte {}", self.pos)),
            };
            value = value * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// After a backslash.
    fn escape(&mut self) -> JsonResult<char> {
        let at = self.pos.saturating_sub(1);
        let Some(byte) = self.peek() else {
            return Err(self.unexpected());
        };
        self.pos += 1;
        let lone = || format!("lone surrogate in \\u escape at byte {at}");
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = match high {
                    0xD800..=0xDBFF => {
                        if self.peek() != Some(b'\\') || self.bytes.get(self.pos + 1) != Some(&b'u')
                        {
                            return Err(lone());
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(lone());
                        }
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(lone()),
                    other => other,
                };
                char::from_u32(code).ok_or_else(lone)?
            }
            _ => return Err(format!("invalid escape at byte {at}")),
        })
    }

    /// A string, decoded: borrowed from the input when it has no escape.
    /// Inlined, with the rare case (an escape, a control character, no
    /// closing quote) out of line: the common case then stays in registers
    /// instead of being stored and reloaded by its caller.
    #[inline(always)]
    fn string(&mut self) -> JsonResult<Cow<'a, str>> {
        self.expect(b'"')?;
        let start = self.pos;
        // The common case: no escape and no control character before the
        // closing quote, so the text is the string. One pass, 8 bytes at a
        // time, to the first byte that is a quote, a backslash or a control
        // character.
        let end = start + plain_run(self.bytes.get(start..).unwrap_or_default());
        if self.bytes.get(end) == Some(&b'"') {
            let text = self.slice(start, end)?;
            self.pos = end + 1;
            return Ok(Cow::Borrowed(text));
        }
        self.escaped_string(start)
    }

    /// The rest of a string that starts at `start` and is not one plain
    /// run: decoded into an owned string, or the error.
    #[cold]
    #[inline(never)]
    fn escaped_string(&mut self, start: usize) -> JsonResult<Cow<'a, str>> {
        let mut out = String::from(self.slice(start, self.pos)?);
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err("unterminated string".to_string()),
                Some(b'"') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.pos += 1;
                    let decoded = self.escape()?;
                    out.push(decoded);
                    run = self.pos;
                }
                Some(0x00..=0x1f) => {
                    return Err(format!(
                        "unescaped control character in string at byte {}",
                        self.pos
                    ))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A string, a number, `true`, `false` or `null`.
    #[inline(always)]
    fn scalar(&mut self) -> JsonResult<Val<'a>> {
        match self.peek() {
            Some(b'"') => Ok(Val::Str(self.string()?)),
            Some(b't') => self.literal("true").map(|()| Val::Bool),
            Some(b'f') => self.literal("false").map(|()| Val::Bool),
            Some(b'n') => self.literal("null").map(|()| Val::Null),
            Some(b'-' | b'0'..=b'9') => Ok(Val::Num(self.number()?)),
            _ => Err(self.unexpected()),
        }
    }

    /// An object key and its colon; whitespace before the key already skipped.
    #[inline(always)]
    fn key(&mut self) -> JsonResult<Cow<'a, str>> {
        let key = self.string()?;
        self.skip_ws();
        self.expect(b':')?;
        Ok(key)
    }

    /// Validates one value of any depth without recursion.
    fn skip_value(&mut self) -> JsonResult<()> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(b'{');
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(b'[');
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // A value is complete: close containers until another value is due.
            loop {
                let Some(&top) = open.last() else {
                    return Ok(());
                };
                self.skip_ws();
                match (top, self.peek()) {
                    (_, Some(b',')) => {
                        self.pos += 1;
                        if top == b'{' {
                            self.skip_ws();
                            self.key()?;
                        }
                        break;
                    }
                    (b'{', Some(b'}')) | (b'[', Some(b']')) => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(self.unexpected()),
                }
            }
        }
    }

    /// A member value of the top-level object.
    #[inline(always)]
    fn value(&mut self) -> JsonResult<Val<'a>> {
        match self.peek() {
            Some(b'{') => self.skip_value().map(|()| Val::Object),
            Some(b'[') => self.skip_value().map(|()| Val::Array),
            _ => self.scalar(),
        }
    }

    /// The members of the top-level object, handed to `member` in document
    /// order, repeats kept.
    fn object_members(&mut self, member: &mut impl FnMut(Cow<'a, str>, Val<'a>)) -> JsonResult<()> {
        self.expect(b'{')?;
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            self.skip_ws();
            let key = self.key()?;
            self.skip_ws();
            let value = self.value()?;
            member(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.unexpected()),
            }
        }
    }
}

/// Reads one complete JSON text (RFC 8259; whitespace around it allowed).
/// When it is an object, each member goes to `member` as it is read (so a
/// caller must not act on them before this returns `Ok`: a later byte may
/// still make the text not JSON).
pub(super) fn read_json<'a>(
    bytes: &'a [u8],
    mut member: impl FnMut(Cow<'a, str>, Val<'a>),
) -> JsonResult<Top> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let mut reader = Reader {
        text,
        bytes,
        pos: 0,
    };
    reader.skip_ws();
    if reader.peek().is_none() {
        return Err("empty or blank input".to_string());
    }
    let top = if reader.peek() == Some(b'{') {
        reader.object_members(&mut member)?;
        Top::Object
    } else {
        Top::Other(reader.value()?.type_name())
    };
    reader.skip_ws();
    if reader.peek().is_some() {
        return Err(format!(
            "unexpected text after the JSON value at byte {}",
            reader.pos
        ));
    }
    Ok(top)
}

#[cfg(test)]
proptest::proptest! {
    /// The block and word scans stop where a byte-by-byte scan does (and
    /// `is_plain` says whether it stops at all).
    #[test]
    fn plain_run_stops_at_the_first_quote_backslash_or_control(
        bytes in proptest::collection::vec(proptest::prop_oneof![
            4 => 0x20u8..0x7f,
            1 => proptest::prelude::any::<u8>(),
        ], 0..40)
    ) {
        let naive = bytes
            .iter()
            .position(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
            .unwrap_or(bytes.len());
        proptest::prop_assert_eq!(plain_run(&bytes), naive);
        proptest::prop_assert_eq!(is_plain(&bytes), naive == bytes.len());
    }
}

#[cfg(test)]
mod plain_run_tests {
    use super::{is_plain, plain_run};

    /// Runs of 0-50 copies of one byte with another at each place (or
    /// none), for bytes around every bound the scans test (the stops, their
    /// neighbours and their high-bit twins): the stop is found in every
    /// block, overlapping last block, word, overlapping last word and half.
    #[test]
    fn plain_run_finds_a_stop_at_every_place() {
        let fills = [b'a', 0x20, 0x7f, 0x80, 0xa2, 0xdc, 0xff];
        let others = [
            0x00, 0x01, 0x1f, 0x20, 0x21, b'"', 0x23, 0x5b, b'\\', 0x5d, 0x7f, 0x80, 0x9f, 0xa0,
            0xa2, 0xdc, 0xff,
        ];
        for len in 0..=50usize {
            for fill in fills {
                for at in 0..=len {
                    for other in others {
                        let mut bytes = vec![fill; len];
                        if let Some(byte) = bytes.get_mut(at) {
                            *byte = other;
                        }
                        let naive = bytes
                            .iter()
                            .position(|b| *b < 0x20 || *b == b'"' || *b == b'\\')
                            .unwrap_or(len);
                        assert_eq!(plain_run(&bytes), naive, "{bytes:?}");
                        assert_eq!(is_plain(&bytes), naive == len, "{bytes:?}");
                    }
                }
            }
        }
    }
}
