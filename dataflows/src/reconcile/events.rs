//! Break events (`reconciliation.md`, "In the service"): one per position
//! whose break changed at an engine timestamp, `OPENED`, `CHANGED` or
//! `RESOLVED`, with the break before and after and what moved it: the trade
//! versions of that position's correction at the same timestamp (same shape
//! as `corrections.md`), its statement when that changed, else the
//! account's statements (another statement moved the account's date).
//! Folding a position's events in `as_of` order gives its row of the
//! breaks table.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::{account_of, BreakRow, LiveStatement};
use crate::correction::Correction;
use crate::engine::{Diff, Time};
use crate::id::Id;

/// How a break changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakChange {
    /// A break appeared.
    Opened,
    /// A break's numbers, date or kind changed.
    Changed,
    /// A break went away.
    Resolved,
}

impl BreakChange {
    /// The spelling in events.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakChange::Opened => "OPENED",
            BreakChange::Changed => "CHANGED",
            BreakChange::Resolved => "RESOLVED",
        }
    }
}

/// One break event.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakEvent {
    /// The position.
    pub position_key: Id,
    /// The engine timestamp of the change.
    pub as_of: Time,
    /// Opened, changed or resolved.
    pub change: BreakChange,
    /// The break before (none when opened).
    pub before: Option<BreakRow>,
    /// The break after (none when resolved).
    pub after: Option<BreakRow>,
    /// What moved it.
    pub cause: Vec<Value>,
}

/// A break as the JSON object of a `breaks.csv` row.
pub fn break_json(row: &BreakRow) -> Value {
    json!({
        "position_key": row.position_key,
        "as_of_date": row.as_of_date.to_string(),
        "kind": row.kind.as_str(),
        "internal_quantity": row.internal_quantity.to_string(),
        "custodian_quantity": row.custodian_quantity.to_string(),
        "difference": row.difference.to_string(),
    })
}

impl BreakEvent {
    /// The event as JSON, keys in the spec's order.
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("position_key".into(), json!(self.position_key));
        o.insert("as_of".into(), json!(self.as_of));
        o.insert("event".into(), json!(self.change.as_str()));
        o.insert(
            "before".into(),
            self.before.as_ref().map_or(Value::Null, break_json),
        );
        o.insert(
            "after".into(),
            self.after.as_ref().map_or(Value::Null, break_json),
        );
        o.insert("cause".into(), Value::Array(self.cause.clone()));
        Value::Object(o)
    }
}

/// The break events of one timestamp from its break updates, corrections
/// and live-statement updates (all of the timestamp, merged over workers).
/// Sorted by position key.
pub fn break_events(
    time: Time,
    breaks: &[(BreakRow, Diff)],
    corrections: &[Correction],
    statements: &[(LiveStatement, Diff)],
) -> Vec<BreakEvent> {
    // Net change per row first (robust to unconsolidated updates).
    let mut net: BTreeMap<&BreakRow, Diff> = BTreeMap::new();
    for (row, diff) in breaks {
        *net.entry(row).or_insert(0) += diff;
    }
    let mut changed: BTreeMap<&str, (Option<&BreakRow>, Option<&BreakRow>)> = BTreeMap::new();
    for (row, diff) in net {
        let entry = changed.entry(row.position_key.as_str()).or_default();
        if diff < 0 {
            entry.0 = Some(row);
        } else if diff > 0 {
            entry.1 = Some(row);
        }
    }
    let mut by_position: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for c in corrections {
        if changed.contains_key(c.position_key.as_str()) {
            let entry = by_position.entry(c.position_key.as_str()).or_default();
            entry.extend(c.cause.iter().map(|x| x.to_json()));
        }
    }
    for (statement, diff) in statements {
        if *diff > 0 && changed.contains_key(statement.position_key.as_str()) {
            by_position
                .entry(statement.position_key.as_str())
                .or_default()
                .push(json!({"statement": {
                    "position_key": statement.position_key,
                    "as_of_date": statement.as_of_date.to_string(),
                    "quantity": statement.quantity.to_string(),
                }}));
        }
    }
    let mut events = Vec::with_capacity(changed.len());
    for (position, (before, after)) in changed {
        let change = match (before, after) {
            (None, Some(_)) => BreakChange::Opened,
            (Some(_), None) => BreakChange::Resolved,
            (Some(b), Some(a)) if b != a => BreakChange::Changed,
            _ => continue,
        };
        let mut cause = by_position.remove(position).unwrap_or_default();
        if cause.is_empty() {
            cause.push(json!({"account_statements": account_of(position)}));
        }
        events.push(BreakEvent {
            position_key: Id::from(position),
            as_of: time,
            change,
            before: before.cloned(),
            after: after.cloned(),
            cause,
        });
    }
    events
}
