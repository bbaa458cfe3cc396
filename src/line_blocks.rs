//! Lines of a reader cut from shared blocks: the input is read a block at a
//! time and each line handed out as a range of its block
//! ([`deltabook_dataflows::payload::Payload`]), so a line costs no
//! allocation and no copy of its own, and a block whose lines have all been
//! dropped is read into again (`docs/bench/shared-lines-2026-12-03.md`).

use std::collections::VecDeque;
use std::io::{ErrorKind, Read};
use std::sync::Arc;

use deltabook_dataflows::payload::Payload;
use deltabook_dataflows::runner::SourceLine;

/// Bytes read into a block (more when a line is longer).
pub const BLOCK_BYTES: usize = 256 << 10;

/// Blocks kept for reuse once the lines cut from them are dropped: more
/// than a run has in flight (a few batches of ~2 MB), so reading reuses
/// memory already mapped instead of faulting in fresh pages.
const SPARE_BLOCKS_MAX: usize = 64;

/// Splits a reader into lines (the newline removed; a final newline does
/// not make an extra empty line; `\r` is kept). A line longer than
/// `max_bytes` comes as [`SourceLine::TooLong`] with its length and is
/// skipped to its end: at most `max_bytes` of it plus one read are held.
pub struct BlockLines<R> {
    reader: R,
    max_bytes: usize,
    block_bytes: usize,
    /// The block lines are cut from.
    block: Arc<[u8]>,
    /// Bytes of `block` read.
    filled: usize,
    /// Where the next line starts.
    next: usize,
    /// Just past the last newline in `block[..filled]`: the lines before
    /// it are whole.
    whole_end: usize,
    /// The reader is exhausted.
    at_end: bool,
    /// Blocks handed out before, oldest first: reused once nothing else holds them.
    spare: VecDeque<Arc<[u8]>>,
    /// Blocks allocated (not reused) so far.
    blocks_allocated: usize,
}

impl<R: Read> BlockLines<R> {
    /// Lines of `reader`, each at most `max_bytes` long, read [`BLOCK_BYTES`] at a time.
    pub fn new(reader: R, max_bytes: usize) -> BlockLines<R> {
        BlockLines::with_block_bytes(reader, max_bytes, BLOCK_BYTES)
    }

    /// [`BlockLines::new`] reading `block_bytes` (at least 1) at a time.
    pub fn with_block_bytes(reader: R, max_bytes: usize, block_bytes: usize) -> BlockLines<R> {
        BlockLines {
            reader,
            max_bytes,
            block_bytes: block_bytes.max(1),
            block: Arc::from(Vec::new()),
            filled: 0,
            next: 0,
            whole_end: 0,
            at_end: false,
            spare: VecDeque::new(),
            blocks_allocated: 0,
        }
    }

    /// How many blocks were allocated so far; every other block read was
    /// a spare one reused.
    pub fn blocks_allocated(&self) -> usize {
        self.blocks_allocated
    }

    /// The next line; `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<SourceLine>> {
        loop {
            if self.next < self.whole_end {
                let rest = &self.block[self.next..self.whole_end];
                // `whole_end` follows a newline, so there is one.
                let length = memchr::memchr(b'\n', rest).unwrap_or(rest.len());
                let start = self.next;
                self.next = (start + length + 1).min(self.whole_end);
                return self.line(start, start + length).map(Some);
            }
            if self.at_end {
                if self.next < self.filled {
                    // The last line, without a newline.
                    let start = self.next;
                    self.next = self.filled;
                    return self.line(start, self.filled).map(Some);
                }
                return Ok(None);
            }
            if let Some(too_long) = self.read_block()? {
                return Ok(Some(too_long));
            }
        }
    }

    /// `block[start..end]` as a line: shared, or its length if too long.
    /// The range is within what was read (an error would be this reader's
    /// bug, reported, never a line made up).
    fn line(&self, start: usize, end: usize) -> std::io::Result<SourceLine> {
        let length = end.saturating_sub(start);
        if length > self.max_bytes {
            return Ok(SourceLine::TooLong(length as u64));
        }
        Payload::shared(&self.block, start..end)
            .map(SourceLine::Event)
            .map_err(std::io::Error::other)
    }

    /// Reads the next block, starting with the unfinished line of this one.
    /// Returns the length of a line it skipped as too long, if it did.
    fn read_block(&mut self) -> std::io::Result<Option<SourceLine>> {
        let carried = self.filled - self.next;
        if carried > self.max_bytes {
            return self.skip_long_line(carried as u64).map(Some);
        }
        // Room for the carried line to grow: a line longer than a block
        // doubles it until the line ends or passes `max_bytes`.
        let mut block = self.spare_block(self.block_bytes.max(carried.saturating_mul(2)));
        let Some(buffer) = Arc::get_mut(&mut block) else {
            return Err(std::io::Error::other("a fresh block is shared"));
        };
        buffer[..carried].copy_from_slice(&self.block[self.next..self.filled]);
        let mut filled = carried;
        let mut whole_end = 0;
        // Until the block is full, the reader ends, or (a pipe's short
        // reads) a line is whole.
        while filled < buffer.len() && whole_end == 0 {
            let read = read_some(&mut self.reader, &mut buffer[filled..])?;
            if read == 0 {
                self.at_end = true;
                break;
            }
            if let Some(at) = memchr::memrchr(b'\n', &buffer[filled..filled + read]) {
                whole_end = filled + at + 1;
            }
            filled += read;
        }
        let old = std::mem::replace(&mut self.block, block);
        self.retire(old);
        self.filled = filled;
        self.next = 0;
        self.whole_end = whole_end;
        Ok(None)
    }

    /// Skips the rest of a line of which `length` bytes (more than
    /// `max_bytes`) are read, to its newline or the end; the bytes after
    /// the newline start the next block. Returns the line's length.
    fn skip_long_line(&mut self, mut length: u64) -> std::io::Result<SourceLine> {
        let mut block = self.spare_block(self.block_bytes);
        let Some(buffer) = Arc::get_mut(&mut block) else {
            return Err(std::io::Error::other("a fresh block is shared"));
        };
        let (next, filled) = loop {
            let read = read_some(&mut self.reader, buffer)?;
            if read == 0 {
                self.at_end = true;
                break (0, 0);
            }
            match memchr::memchr(b'\n', &buffer[..read]) {
                Some(at) => {
                    length += at as u64;
                    break (at + 1, read);
                }
                None => length += read as u64,
            }
        };
        let whole_end =
            memchr::memrchr(b'\n', &buffer[next..filled]).map_or(next, |at| next + at + 1);
        let old = std::mem::replace(&mut self.block, block);
        self.retire(old);
        self.filled = filled;
        self.next = next;
        self.whole_end = whole_end;
        Ok(SourceLine::TooLong(length))
    }

    /// A block of at least `bytes` that nothing else holds: the oldest
    /// spare one whose lines are all dropped (a line held long keeps only
    /// its own block from reuse), else a new one. At most
    /// [`SPARE_BLOCKS_MAX`] looked at, once per block read.
    fn spare_block(&mut self, bytes: usize) -> Arc<[u8]> {
        let free = self
            .spare
            .iter_mut()
            .position(|block| block.len() >= bytes && Arc::get_mut(block).is_some());
        if let Some(block) = free.and_then(|at| self.spare.remove(at)) {
            return block;
        }
        self.blocks_allocated += 1;
        std::iter::repeat_n(0u8, bytes).collect()
    }

    /// Keeps a block handed out for reuse (dropping the oldest kept past
    /// [`SPARE_BLOCKS_MAX`]).
    fn retire(&mut self, block: Arc<[u8]>) {
        if block.is_empty() {
            return;
        }
        if self.spare.len() >= SPARE_BLOCKS_MAX {
            self.spare.pop_front();
        }
        self.spare.push_back(block);
    }
}

/// One `read` into `buffer`, retried when interrupted; 0 at the end.
fn read_some(reader: &mut impl Read, buffer: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match reader.read(buffer) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// A reader handing out at most `step` bytes per read (a pipe's short reads).
    struct Trickle<'a> {
        text: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buffer: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buffer.len()).min(self.text.len());
            buffer[..n].copy_from_slice(&self.text[..n]);
            self.text = &self.text[n..];
            Ok(n)
        }
    }

    fn lines(text: &[u8], max: usize, block_bytes: usize, step: usize) -> Vec<SourceLine> {
        let mut reader = BlockLines::with_block_bytes(Trickle { text, step }, max, block_bytes);
        let mut out = Vec::new();
        while let Some(line) = reader.next_line().expect("reading from memory") {
            out.push(line);
        }
        out
    }

    /// What the lines must be: split on `\n`, no line after a final
    /// newline, lines over `max` by length.
    fn reference(text: &[u8], max: usize) -> Vec<SourceLine> {
        if text.is_empty() {
            return Vec::new();
        }
        let text = text.strip_suffix(b"\n").unwrap_or(text);
        text.split(|b| *b == b'\n')
            .map(|line| {
                if line.len() > max {
                    SourceLine::TooLong(line.len() as u64)
                } else {
                    SourceLine::Event(Payload::from(line))
                }
            })
            .collect()
    }

    fn event(text: &str) -> SourceLine {
        SourceLine::Event(Payload::from(text.as_bytes()))
    }

    #[test]
    fn lines_are_split_and_long_ones_reported_by_length() {
        for (block, step) in [(1, 1), (3, 2), (3, 100), (1 << 10, 1 << 10)] {
            assert_eq!(lines(b"", 10, block, step), vec![]);
            assert_eq!(
                lines(b"ab\ncd\n", 10, block, step),
                vec![event("ab"), event("cd")]
            );
            assert_eq!(
                lines(b"ab\n\ncd", 10, block, step),
                vec![event("ab"), event(""), event("cd")]
            );
            assert_eq!(
                lines(b"0123456789\n0123456789A\nok", 10, block, step),
                vec![event("0123456789"), SourceLine::TooLong(11), event("ok")]
            );
            assert_eq!(lines(b"\r\n", 10, block, step), vec![event("\r")]);
            assert_eq!(lines(b"\n", 10, block, step), vec![event("")]);
            assert_eq!(
                lines(b"0123456789AB", 10, block, step),
                vec![SourceLine::TooLong(12)]
            );
        }
    }

    /// Reads 100 nine-byte lines through 64-byte blocks (16 blocks),
    /// keeping the lines `keep` picks by number; returns the blocks allocated.
    /// Kept lines must read the same at the end: a block read into while
    /// a line still held it would change them.
    fn blocks_allocated_keeping(keep: impl Fn(usize) -> bool) -> usize {
        let text: Vec<u8> = (0..100)
            .flat_map(|i| format!("line {i:03}\n").into_bytes())
            .collect();
        let mut reader = BlockLines::with_block_bytes(&text[..], 100, 64);
        let mut kept = Vec::new();
        let mut count = 0;
        while let Some(line) = reader.next_line().expect("reading from memory") {
            let SourceLine::Event(payload) = line else {
                panic!("no line is too long")
            };
            assert_eq!(&*payload, format!("line {count:03}").as_bytes());
            if keep(count) {
                kept.push((count, payload));
            }
            count += 1;
        }
        assert_eq!(count, 100);
        for (i, payload) in kept {
            assert_eq!(&*payload, format!("line {i:03}").as_bytes());
        }
        reader.blocks_allocated()
    }

    /// Blocks are reused once the lines cut from them are dropped, and
    /// never while a line still holds them.
    #[test]
    fn a_block_is_reused_only_when_its_lines_are_gone() {
        // Every line kept: no block is free again, each one read is new.
        assert_eq!(blocks_allocated_keeping(|_| true), 16);
        // Every tenth kept (a line each 90 bytes): the blocks holding no
        // kept line come back, though older ones are still held.
        let allocated = blocks_allocated_keeping(|n| n % 10 == 0);
        assert!(allocated < 16, "{allocated} blocks allocated, none reused");
        // Nothing kept: the block before the one being read is always
        // free, so two blocks take turns.
        assert_eq!(blocks_allocated_keeping(|_| false), 2);
    }

    proptest! {
        /// Any text, any block size, any read size: the reference's lines.
        #[test]
        fn lines_match_the_reference(
            text in proptest::collection::vec(
                prop_oneof![Just(b'\n'), Just(b'a'), Just(b'\r'), Just(b'z')], 0..200),
            max in 0usize..12,
            block in 1usize..20,
            step in 1usize..30,
        ) {
            prop_assert_eq!(lines(&text, max, block, step), reference(&text, max));
        }
    }
}
