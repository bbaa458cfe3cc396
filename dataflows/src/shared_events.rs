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

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::engine::RawEvent;

/// Lines per chunk: small enough that a timestamp's lines (the batch size,
/// 1,000-10,000) split into several chunks, large enough that taking one
/// (an atomic add and an uncontended lock) is noise beside parsing it.
pub const CHUNK_LINES: usize = 512;

/// Most events a chunk reserves room for up front (a one-worker run's chunk
/// is its whole batch, whose size the user chooses); past it, it grows.
const RESERVE_EVENTS_MAX: usize = 1 << 16;

/// A timestamp's trade events in chunks, each taken once.
#[derive(Debug, Default)]
pub struct SharedEvents {
    chunks: Vec<Mutex<Vec<RawEvent>>>,
    next: AtomicUsize,
}

impl SharedEvents {
    /// Takes the next chunk not yet taken by any worker; `None` once all
    /// are taken. Each event is returned exactly once over all callers.
    pub fn take(&self) -> Option<Vec<RawEvent>> {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let chunk = self.chunks.get(i)?;
        // A poisoned lock means a worker panicked holding it; that worker's
        // failure ends the run, so the events are taken all the same.
        let mut events = match chunk.lock() {
            Ok(events) => events,
            Err(poisoned) => poisoned.into_inner(),
        };
        Some(std::mem::take(&mut *events))
    }
}

/// Builds [`SharedEvents`] from events pushed in source order.
#[derive(Debug)]
pub struct SharedEventsBuilder {
    chunk_lines: usize,
    chunks: Vec<Mutex<Vec<RawEvent>>>,
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
            self.chunks
                .push(Mutex::new(std::mem::take(&mut self.current)));
        }
    }

    /// The chunks so far, in the order pushed; the builder starts empty again.
    pub fn finish(&mut self) -> SharedEvents {
        if !self.current.is_empty() {
            self.chunks
                .push(Mutex::new(std::mem::take(&mut self.current)));
        }
        SharedEvents {
            chunks: std::mem::take(&mut self.chunks),
            next: AtomicUsize::new(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::engine::SourceRef;

    fn event(offset: u64) -> RawEvent {
        (
            SourceRef {
                partition: 0,
                offset,
            },
            offset.to_string().into_bytes(),
        )
    }

    #[test]
    fn chunks_keep_source_order_and_end() {
        let mut builder = SharedEventsBuilder::new(3);
        for i in 1..=7 {
            builder.push(event(i));
        }
        let shared = builder.finish();
        let lens: Vec<usize> = std::iter::from_fn(|| shared.take().map(|c| c.len())).collect();
        assert_eq!(lens, vec![3, 3, 1]);
        assert!(shared.take().is_none());
        // The builder starts again empty.
        assert!(builder.finish().take().is_none());
    }

    #[test]
    fn every_event_is_taken_exactly_once_across_threads() {
        let mut builder = SharedEventsBuilder::new(5);
        for i in 1..=1000 {
            builder.push(event(i));
        }
        let shared = Arc::new(builder.finish());
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let shared = Arc::clone(&shared);
                std::thread::spawn(move || {
                    let mut offsets = Vec::new();
                    while let Some(chunk) = shared.take() {
                        offsets.extend(chunk.into_iter().map(|(s, _)| s.offset));
                    }
                    offsets
                })
            })
            .collect();
        let mut all: Vec<u64> = takers
            .into_iter()
            .flat_map(|t| t.join().expect("a taker panicked"))
            .collect();
        all.sort_unstable();
        assert_eq!(all, (1..=1000).collect::<Vec<u64>>());
    }
}
