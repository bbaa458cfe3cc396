//! Shared helpers of the integration tests: an independent model of the spec
//! (gate in arrival order, highest version live, plain replay per position)
//! and a runner wrapper.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use deltabook_dataflows::booking::reference;
use deltabook_dataflows::gate::{Admission, DuplicateRule};
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::runner::{self, BookOutcome, RunOptions};
use deltabook_dataflows::trade::{BookedTrade, LotMethod, TradeVersion};

/// Final state as sorted rows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalState {
    pub lots: Vec<(String, Lot)>,
    pub positions: Vec<(String, PositionSummary)>,
}

/// Most specific configured method of a position (FIFO by default).
pub fn resolve(methods: &[(String, LotMethod)], position: &str) -> LotMethod {
    let parts: Vec<&str> = position.split('_').collect();
    let scopes = [
        position.to_string(),
        format!("{}_{}", parts[0], parts[1]),
        parts[0].to_string(),
    ];
    for scope in scopes {
        if let Some((_, m)) = methods.iter().find(|(s, _)| *s == scope) {
            return *m;
        }
    }
    LotMethod::Fifo
}

/// The spec, computed directly: no dataflow, no increments.
pub fn model(lines: &[Vec<u8>], methods: &[(String, LotMethod)]) -> FinalState {
    let mut gate = DuplicateRule::new();
    let mut live: HashMap<String, TradeVersion> = HashMap::new();
    for line in lines {
        if let Admission::Accepted(v) = gate.admit(line) {
            let newer = live
                .get(&v.trade_id)
                .is_none_or(|cur| cur.version < v.version);
            if newer {
                live.insert(v.trade_id.clone(), v);
            }
        }
    }
    let mut by_position: BTreeMap<String, Vec<BookedTrade>> = BTreeMap::new();
    for v in live.values() {
        if let Some(b) = v.booked() {
            by_position.entry(v.position_key()).or_default().push(b);
        }
    }
    let mut state = FinalState {
        lots: Vec::new(),
        positions: Vec::new(),
    };
    for (position, trades) in by_position {
        let booking = reference::book(resolve(methods, &position), &trades).expect("no overflow");
        state
            .lots
            .extend(booking.lots.into_iter().map(|l| (position.clone(), l)));
        if !booking.summary.is_omitted() {
            state.positions.push((position, booking.summary));
        }
    }
    state
        .lots
        .sort_by(|a, b| (&a.0, &a.1.lot_id).cmp(&(&b.0, &b.1.lot_id)));
    state
}

/// Runs the engine in memory.
pub fn run(
    lines: &[Vec<u8>],
    methods: &[(String, LotMethod)],
    batch_size: usize,
    workers: usize,
) -> BookOutcome {
    let options = RunOptions::new(methods.to_vec(), batch_size, workers);
    runner::run(Arc::new(lines.to_vec()), &options, None).expect("engine run")
}

/// The engine's final state as sorted rows (omitted positions dropped).
pub fn final_state(outcome: &BookOutcome) -> FinalState {
    let mut lots = outcome.lots.clone();
    lots.sort_by(|a, b| (&a.0, &a.1.lot_id).cmp(&(&b.0, &b.1.lot_id)));
    let mut positions: Vec<_> = outcome
        .positions
        .iter()
        .filter(|(_, s)| !s.is_omitted())
        .cloned()
        .collect();
    positions.sort_by(|a, b| a.0.cmp(&b.0));
    FinalState { lots, positions }
}

/// Lines of a generated stream.
pub fn generated(seed: u64, positions: usize, trades: usize) -> Vec<Vec<u8>> {
    let config = deltabook::generate::GenerateConfig::new(seed, positions, trades);
    let mut bytes = Vec::new();
    deltabook::generate::generate(&config, &mut bytes).expect("generate");
    bytes
        .split(|b| *b == b'\n')
        .map(|l| l.to_vec())
        .collect::<Vec<_>>()[..trades]
        .to_vec()
}
