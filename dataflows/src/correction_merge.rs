//! Merges the corrections that N workers produce, each in its own time
//! order, into one stream in the order of `corrections.jsonl`: by engine
//! timestamp, then by position key. A timestamp leaves once every worker
//! has said that it is complete and that its share was handed over, so a
//! run can write corrections as it goes instead of keeping them all.

use std::collections::BTreeMap;

use crate::correction::Correction;
use crate::engine::Time;

/// What a worker hands the merge.
#[derive(Debug)]
pub enum MergeMessage {
    /// The worker's corrections of one timestamp.
    Corrections(Time, Vec<Correction>),
    /// Every timestamp before this one is complete and the worker's share
    /// of it was handed over; `None` when the worker has finished.
    Through(usize, Option<Time>),
}

/// The merge of one run (see the module docs).
#[derive(Debug)]
pub struct CorrectionMerge {
    /// Per worker, the first timestamp it may still hand over (`None`: finished).
    through: Vec<Option<Time>>,
    pending: BTreeMap<Time, Vec<Correction>>,
}

impl CorrectionMerge {
    /// A merge over `workers` workers, none of which has handed anything over.
    pub fn new(workers: usize) -> CorrectionMerge {
        CorrectionMerge {
            through: vec![Some(0); workers],
            pending: BTreeMap::new(),
        }
    }

    /// Takes one message; returns the timestamps it completed, in order,
    /// each sorted by position key.
    pub fn take(&mut self, message: MergeMessage) -> Vec<Vec<Correction>> {
        match message {
            MergeMessage::Corrections(time, corrections) => {
                // The first share of a timestamp is kept as it came (with
                // one worker, the only one): only later shares are copied.
                let held = self.pending.entry(time).or_default();
                if held.is_empty() {
                    *held = corrections;
                } else {
                    held.extend(corrections);
                }
                Vec::new()
            }
            MergeMessage::Through(worker, time) => {
                if let Some(slot) = self.through.get_mut(worker) {
                    *slot = time;
                }
                let limit = self.through.iter().map(|t| t.unwrap_or(Time::MAX)).min();
                self.ready(limit.unwrap_or(Time::MAX))
            }
        }
    }

    /// Everything still held, in order (the run has ended).
    pub fn finish(&mut self) -> Vec<Vec<Correction>> {
        self.ready(Time::MAX)
    }

    fn ready(&mut self, before: Time) -> Vec<Vec<Correction>> {
        let mut out = Vec::new();
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() >= before {
                break;
            }
            let mut corrections = entry.remove();
            corrections.sort_by(|a, b| a.position_key.cmp(&b.position_key));
            out.push(corrections);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::PositionSummary;

    fn correction(time: Time, position: &str) -> Correction {
        Correction {
            position_key: position.into(),
            as_of: time,
            cause: Vec::new(),
            before: PositionSummary::default(),
            after: PositionSummary::default(),
            lots_closed: Vec::new(),
            lots_opened: Vec::new(),
        }
    }

    fn keys(batches: &[Vec<Correction>]) -> Vec<(Time, String)> {
        batches
            .iter()
            .flatten()
            .map(|c| (c.as_of, c.position_key.to_string()))
            .collect()
    }

    #[test]
    fn a_timestamp_leaves_once_every_worker_is_past_it_sorted_by_position() {
        let mut merge = CorrectionMerge::new(2);
        let m = MergeMessage::Corrections;
        assert!(merge.take(m(1, vec![correction(1, "B")])).is_empty());
        assert!(merge.take(m(2, vec![correction(2, "A")])).is_empty());
        // Worker 0 is past 1 and 2; worker 1 has said nothing yet.
        assert!(merge.take(MergeMessage::Through(0, Some(3))).is_empty());
        assert!(merge.take(m(1, vec![correction(1, "A")])).is_empty());
        let out = merge.take(MergeMessage::Through(1, Some(2)));
        assert_eq!(keys(&out), [(1, "A".into()), (1, "B".into())]);
        // Time 2 waits for worker 1.
        assert!(merge.take(m(2, vec![correction(2, "C")])).is_empty());
        let out = merge.take(MergeMessage::Through(1, None));
        assert_eq!(keys(&out), [(2, "A".into()), (2, "C".into())]);
        assert!(merge.finish().is_empty());
    }

    #[test]
    fn finish_hands_over_whatever_is_left_in_order() {
        let mut merge = CorrectionMerge::new(3);
        merge.take(MergeMessage::Corrections(
            5,
            vec![correction(5, "Z"), correction(5, "Y")],
        ));
        merge.take(MergeMessage::Corrections(4, vec![correction(4, "X")]));
        assert!(merge.take(MergeMessage::Through(2, None)).is_empty());
        assert_eq!(
            keys(&merge.finish()),
            [(4, "X".into()), (5, "Y".into()), (5, "Z".into())]
        );
    }
}
