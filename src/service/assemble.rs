//! Assembles the workers' reports into whole timestamps: a time is complete
//! once every worker's frontier has passed it (each worker sends its parts
//! of a time before the frontier that passes it), and complete times come
//! out in time order, each exactly once.

use std::collections::BTreeMap;

use deltabook_dataflows::driver::TimestampOutput;
use deltabook_dataflows::engine::Time;

use super::engine::{BatchInput, EngineMessage};

/// One whole engine timestamp: every worker's outputs and inputs.
#[derive(Debug, Default)]
pub struct AssembledTimestamp {
    /// Engine time.
    pub time: Time,
    /// The engine's outputs, merged over workers.
    pub output: TimestampOutput,
    /// What each worker read for this time.
    pub inputs: Vec<BatchInput>,
}

/// Collects parts until every worker has passed their time.
#[derive(Debug)]
pub struct Assembler {
    frontiers: Vec<Time>,
    pending: BTreeMap<Time, AssembledTimestamp>,
}

impl Assembler {
    /// For `workers` workers whose first reportable time is `first`.
    pub fn new(workers: usize, first: Time) -> Assembler {
        Assembler {
            frontiers: vec![first; workers.max(1)],
            pending: BTreeMap::new(),
        }
    }

    /// Takes one report; returns the timestamps it completed, in time order.
    /// Times with no part from any worker are not returned.
    pub fn push(&mut self, message: EngineMessage) -> Vec<AssembledTimestamp> {
        match message {
            EngineMessage::Part {
                worker: _,
                time,
                output,
                input,
            } => {
                let entry = self.pending.entry(time).or_default();
                entry.time = time;
                entry.output.merge(*output);
                entry.inputs.push(input);
                Vec::new()
            }
            EngineMessage::Frontier { worker, time } => {
                if let Some(slot) = self.frontiers.get_mut(worker) {
                    *slot = (*slot).max(time);
                }
                let complete = self.frontiers.iter().copied().min().unwrap_or(0);
                let later = self.pending.split_off(&complete);
                std::mem::replace(&mut self.pending, later)
                    .into_values()
                    .collect()
            }
        }
    }

    /// The earliest time some worker has not passed yet.
    pub fn frontier(&self) -> Time {
        self.frontiers.iter().copied().min().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltabook_dataflows::engine::SourceRef;

    fn part(worker: usize, time: Time, duplicates: u64) -> EngineMessage {
        EngineMessage::Part {
            worker,
            time,
            output: Box::new(TimestampOutput {
                duplicates: (0..duplicates)
                    .map(|offset| SourceRef {
                        partition: worker as u32,
                        offset,
                    })
                    .collect(),
                ..TimestampOutput::default()
            }),
            input: BatchInput::default(),
        }
    }

    fn frontier(worker: usize, time: Time) -> EngineMessage {
        EngineMessage::Frontier { worker, time }
    }

    #[test]
    fn a_time_completes_when_every_worker_has_passed_it() {
        let mut a = Assembler::new(2, 5);
        assert!(a.push(part(0, 5, 1)).is_empty());
        assert!(a.push(part(0, 6, 2)).is_empty());
        assert!(a.push(frontier(0, 7)).is_empty(), "worker 1 is still at 5");
        assert!(a.push(part(1, 5, 3)).is_empty());
        let done = a.push(frontier(1, 6));
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].time, 5);
        assert_eq!(done[0].output.duplicates.len(), 4, "both workers' parts");
        assert_eq!(done[0].inputs.len(), 2);
        let done = a.push(frontier(1, 9));
        assert_eq!(done.iter().map(|d| d.time).collect::<Vec<_>>(), vec![6]);
        assert_eq!(a.frontier(), 7);
        assert!(a.push(frontier(1, 8)).is_empty(), "frontiers never go back");
    }
}
