//! One engine timestamp's trade events, shared by the workers of a process
//! and taken in chunks by whichever worker asks first.
//!
//! Parsing is stateless: where a line is parsed changes no output (the
//! versions stage orders a timestamp's events by source). The stateful
//! stages are not: a position is booked by the worker that owns its key, so
//! a stream with a few hot positions loads one worker more than another.
//! A worker takes a chunk, feeds it to the dataflow and steps it before it
//! takes the next, so a worker still busy with its own positions takes
//! fewer chunks and the other one parses more.
//!
//! The thread that read the lines may parse chunks too
//! ([`SharedEvents::read_ahead`]): from the last chunk backwards, while
//! the workers take chunks from the first, so the two meet wherever the
//! workers' pace puts them. A worker then feeds a chunk the gate has read
//! already, and parses nothing.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use crate::engine::{RawEvent, TradeEvent};

/// Lines per chunk: small enough that a timestamp's lines (the batch size,
/// 1,000-10,000) split into several chunks, large enough that taking one
/// (an atomic add and an uncontended lock) is noise beside parsing it.
pub const CHUNK_LINES: usize = 512;

/// Most events a chunk reserves room for up front (a builder may be asked
/// for chunks of any size); past it, it grows.
const RESERVE_EVENTS_MAX: usize = 1 << 16;

/// A chunk of a timestamp's trade events, in source order.
#[derive(Debug)]
pub enum EventChunk {
    /// As read.
    Raw(Vec<RawEvent>),
    /// Read by the gate ahead of the workers ([`TradeEvent::parse`] of each).
    Read(Vec<TradeEvent>),
}

/// A timestamp's trade events in chunks, each taken once.
#[derive(Debug, Default)]
pub struct SharedEvents {
    /// `None` once taken.
    chunks: Vec<Mutex<Option<EventChunk>>>,
    /// Chunks the workers have claimed, from the first.
    next: AtomicUsize,
    /// Chunks `read_ahead` has claimed, from the last.
    from_back: AtomicUsize,
}

/// A chunk's lock. A poisoned lock means a thread panicked holding it; that
/// thread's failure ends the run, so the chunk is used all the same.
fn lock(chunk: &Mutex<Option<EventChunk>>) -> MutexGuard<'_, Option<EventChunk>> {
    match chunk.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl SharedEvents {
    /// Takes the next chunk not yet taken by any worker; `None` once all
    /// are taken. Each event is returned exactly once over all callers,
    /// raw or read by the gate.
    pub fn take(&self) -> Option<EventChunk> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        lock(self.chunks.get(i)?).take()
    }

    /// Reads chunks with the gate, from the last one backwards, until it
    /// meets a chunk the workers have claimed; returns how many it read. A
    /// worker that claims a chunk being read waits for it (no longer than
    /// it would take to read it itself). What the workers feed is the
    /// same either way: [`TradeEvent::parse`] of each event.
    pub fn read_ahead(&self) -> usize {
        let mut read = 0;
        // The next chunk from the back, while the workers have not claimed it.
        let next_from_back = || {
            let claimed = self.from_back.fetch_add(1, Ordering::Relaxed);
            let i = self.chunks.len().checked_sub(claimed + 1)?;
            (i >= self.next.load(Ordering::Relaxed)).then_some(i)
        };
        while let Some(chunk) = next_from_back().and_then(|i| self.chunks.get(i)) {
            let mut chunk = lock(chunk);
            if let Some(EventChunk::Raw(events)) = chunk.as_mut() {
                let events = std::mem::take(events);
                *chunk = Some(EventChunk::Read(
                    events.into_iter().map(TradeEvent::parse).collect(),
                ));
                read += 1;
            }
        }
        read
    }
}

/// Builds [`SharedEvents`] from events pushed in source order.
#[derive(Debug)]
pub struct SharedEventsBuilder {
    chunk_lines: usize,
    chunks: Vec<Mutex<Option<EventChunk>>>,
    current: Vec<RawEvent>,
}

impl SharedEventsBuilder {
    /// A builder cutting chunks of `chunk_lines` events (at least 1).
    pub fn new(chunk_lines: usize) -> SharedEventsBuilder {
        SharedEventsBuilder {
            chunk_lines: chunk_lines.max(1),
            chunks: Vec::new(),
            current: Vec::new(),
        }
    }

    /// Adds the next event.
    pub fn push(&mut self, event: RawEvent) {
        if self.current.capacity() == 0 {
            self.current
                .reserve_exact(self.chunk_lines.min(RESERVE_EVENTS_MAX));
        }
        self.current.push(event);
        if self.current.len() >= self.chunk_lines {
            let chunk = EventChunk::Raw(std::mem::take(&mut self.current));
            self.chunks.push(Mutex::new(Some(chunk)));
        }
    }

    /// The chunks so far, in the order pushed; the builder starts empty again.
    pub fn finish(&mut self) -> SharedEvents {
        if !self.current.is_empty() {
            let chunk = EventChunk::Raw(std::mem::take(&mut self.current));
            self.chunks.push(Mutex::new(Some(chunk)));
        }
        SharedEvents {
            chunks: std::mem::take(&mut self.chunks),
            next: AtomicUsize::new(0),
            from_back: AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::SourceRef;

    fn event(offset: u64) -> RawEvent {
        let line = if offset.is_multiple_of(3) {
            format!(
                r#"{{"trade_id":"T{offset}","account_id":"A","book_id":"B","security_id":"S","side":"BUY","quantity":"1","price":"2","trade_date":"2026-01-02"}}"#
            )
        } else {
            offset.to_string()
        };
        (
            SourceRef {
                partition: 0,
                offset,
            },
            line.into_bytes().into(),
        )
    }

    /// The offsets of a chunk's events, and whether the gate had read it.
    fn offsets(chunk: EventChunk) -> (Vec<u64>, bool) {
        match chunk {
            EventChunk::Raw(events) => (events.into_iter().map(|(s, _)| s.offset).collect(), false),
            EventChunk::Read(events) => {
                let offsets = events
                    .into_iter()
                    .map(|event| match event {
                        TradeEvent::Candidate {
                            source, version, ..
                        } => {
                            // Read as the gate reads it.
                            assert_eq!(version.trade_id.as_str(), format!("T{}", source.offset));
                            source.offset
                        }
                        TradeEvent::Rejected(dead) => {
                            assert!(
                                !dead.source.offset.is_multiple_of(3),
                                "a valid event was rejected"
                            );
                            dead.source.offset
                        }
                        TradeEvent::Restore(_) => panic!("no restored trade was pushed"),
                    })
                    .collect();
                (offsets, true)
            }
        }
    }

    #[test]
    fn chunks_keep_source_order_and_end() {
        let mut builder = SharedEventsBuilder::new(3);
        for i in 1..=7 {
            builder.push(event(i));
        }
        let shared = builder.finish();
        let taken: Vec<Vec<u64>> =
            std::iter::from_fn(|| shared.take().map(|c| offsets(c).0)).collect();
        assert_eq!(taken, vec![vec![1, 2, 3], vec![4, 5, 6], vec![7]]);
        assert!(shared.take().is_none());
        // The builder starts again empty.
        assert!(builder.finish().take().is_none());
    }

    /// A chunk a worker has taken is not read; every other one is read
    /// once, in place, and reaches the worker read, in source order.
    #[test]
    fn chunks_read_ahead_reach_the_workers_read() {
        let mut builder = SharedEventsBuilder::new(2);
        for i in 1..=8 {
            builder.push(event(i));
        }
        let shared = builder.finish();
        // A worker claims the first chunk; the reader reads the other three.
        let first = shared.take().map(offsets);
        assert_eq!(first, Some((vec![1, 2], false)));
        assert_eq!(shared.read_ahead(), 3);
        assert_eq!(shared.read_ahead(), 0);
        let rest: Vec<(Vec<u64>, bool)> =
            std::iter::from_fn(|| shared.take().map(offsets)).collect();
        assert_eq!(
            rest,
            vec![(vec![3, 4], true), (vec![5, 6], true), (vec![7, 8], true)]
        );
    }

    #[test]
    fn every_event_is_taken_exactly_once_across_threads() {
        let mut builder = SharedEventsBuilder::new(5);
        for i in 1..=1000 {
            builder.push(event(i));
        }
        let shared = Arc::new(builder.finish());
        let reader = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || shared.read_ahead())
        };
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut taken = Vec::new();
                    while let Some(chunk) = shared.take() {
                        taken.extend(offsets(chunk).0);
                    }
                    taken
                })
            })
            .collect();
        let read = reader.join().expect("the reader panicked");
        assert!(read <= 200);
        let mut all: Vec<u64> = takers
            .into_iter()
            .flat_map(|t| t.join().expect("a taker panicked"))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=1000).collect::<Vec<u64>>());
    }
}
