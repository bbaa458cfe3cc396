//! Emptied per-timestamp buffers kept for the next timestamps, so a buffer
//! grown once is not grown again (each growth copies the data and faults in
//! fresh pages).

/// Spare buffers kept at most: the buffers of the timestamps in flight are
/// live anyway; two spare ones cover the next timestamps.
const SPARE_BUFFERS_MAX: usize = 2;

/// At most [`SPARE_BUFFERS_MAX`] empty buffers with their capacity.
pub(super) struct SpareBuffers<T>(Vec<Vec<T>>);

impl<T> Default for SpareBuffers<T> {
    fn default() -> SpareBuffers<T> {
        SpareBuffers(Vec::new())
    }
}

impl<T> SpareBuffers<T> {
    /// An empty buffer: a spare one when there is one.
    pub(super) fn take(&mut self) -> Vec<T> {
        self.0.pop().unwrap_or_default()
    }

    /// Keeps `buffer` (emptied) for a later [`take`](Self::take), unless
    /// enough are kept already.
    pub(super) fn give_back(&mut self, mut buffer: Vec<T>) {
        if self.0.len() < SPARE_BUFFERS_MAX {
            buffer.clear();
            self.0.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_comes_back_empty_with_its_room() {
        let mut spare = SpareBuffers::default();
        let mut buffer = spare.take();
        assert_eq!(buffer.capacity(), 0);
        buffer.extend(0..100);
        spare.give_back(buffer);
        let again = spare.take();
        assert!(again.is_empty());
        assert!(again.capacity() >= 100);
        // No more are kept than the limit.
        for _ in 0..SPARE_BUFFERS_MAX + 3 {
            spare.give_back(vec![1u8]);
        }
        assert_eq!(spare.0.len(), SPARE_BUFFERS_MAX);
    }
}
