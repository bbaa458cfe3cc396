//! Correction events (`corrections.md`): one per position per engine
//! timestamp at which the position's state changed.

use crate::id::Id;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::decimal::Amount;
use crate::position::{Lot, PositionSummary};
use crate::trade::{Action, LotMethod};

/// Why a position changed: a trade version accepted at this timestamp, or a
/// change of the position's lot method.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Cause {
    /// The position was re-booked under a new method.
    MethodChange(LotMethod),
    /// A trade version that became live and touched the position.
    Trade {
        /// Trade id.
        trade_id: Id,
        /// The version that became live.
        version: u64,
        /// Its action.
        action: Action,
        /// The trade sorts before the latest trade already booked in the position.
        backdated: bool,
        /// Carried from the event.
        correlation_id: Option<Id>,
    },
}

/// One correction event. `delta` is derived (`after - before`) when rendered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Correction {
    /// `{account_id}_{book_id}_{security_id}`.
    pub position_key: Id,
    /// Engine timestamp at which the change became true.
    pub as_of: u64,
    /// Method changes first, then trades by `(trade_id, version)`.
    pub cause: Vec<Cause>,
    /// Summary before the change (all zero when flat).
    pub before: PositionSummary,
    /// Summary after the change.
    pub after: PositionSummary,
    /// Lot rows retracted, sorted by `lot_id`.
    pub lots_closed: Vec<Lot>,
    /// Lot rows asserted, sorted by `lot_id`.
    pub lots_opened: Vec<Lot>,
}

/// A correction whose `delta` does not fit the number types.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("correction delta overflows for position {0}")]
pub struct DeltaOverflow(pub String);

fn summary_json(s: &PositionSummary) -> Value {
    json!({
        "quantity": s.quantity.to_string(),
        "cost_basis": s.cost_basis.to_string(),
        "realized_pnl": s.realized_pnl.to_string(),
        "lot_count": s.lot_count,
    })
}

/// A lot as a JSON object with the columns of `lots.csv` (minus the key).
pub fn lot_json(lot: &Lot) -> Value {
    json!({
        "lot_id": lot.lot_id,
        "side": lot.side.as_str(),
        "open_date": lot.open_date.to_string(),
        "quantity": lot.quantity.to_string(),
        "price": lot.price.to_string(),
    })
}

impl Cause {
    /// The cause as an entry of an event's `cause` list (`corrections.md`).
    pub fn to_json(&self) -> Value {
        match self {
            Cause::MethodChange(m) => json!({ "method_change": m.as_str() }),
            Cause::Trade {
                trade_id,
                version,
                action,
                backdated,
                correlation_id,
            } => {
                let mut o = Map::new();
                o.insert("trade_id".into(), json!(trade_id));
                o.insert("version".into(), json!(version));
                o.insert("action".into(), json!(action.as_str()));
                o.insert("backdated".into(), json!(backdated));
                if let Some(id) = correlation_id {
                    o.insert("correlation_id".into(), json!(id));
                }
                Value::Object(o)
            }
        }
    }
}

impl Correction {
    /// The event as the JSON object of `corrections.md`, keys in its order.
    pub fn to_json(&self) -> Result<Value, DeltaOverflow> {
        let overflow = || DeltaOverflow(self.position_key.to_string());
        let mut parts = self.position_key.splitn(3, '_');
        let account = parts.next().unwrap_or_default();
        let book = parts.next().unwrap_or_default();
        let security = parts.next().unwrap_or_default();
        let cause: Vec<Value> = self.cause.iter().map(Cause::to_json).collect();
        let quantity = self
            .after
            .quantity
            .checked_sub(self.before.quantity)
            .ok_or_else(overflow)?;
        let cost: Amount = self
            .after
            .cost_basis
            .checked_sub(self.before.cost_basis)
            .ok_or_else(overflow)?;
        let pnl: Amount = self
            .after
            .realized_pnl
            .checked_sub(self.before.realized_pnl)
            .ok_or_else(overflow)?;
        let lots = self.after.lot_count as i128 - self.before.lot_count as i128;
        let mut o = Map::new();
        o.insert("position_key".into(), json!(self.position_key));
        o.insert("account_id".into(), json!(account));
        o.insert("book_id".into(), json!(book));
        o.insert("security_id".into(), json!(security));
        o.insert("as_of".into(), json!(self.as_of));
        o.insert("cause".into(), Value::Array(cause));
        o.insert("before".into(), summary_json(&self.before));
        o.insert("after".into(), summary_json(&self.after));
        o.insert(
            "delta".into(),
            json!({
                "quantity": quantity.to_string(),
                "cost_basis": cost.to_string(),
                "realized_pnl": pnl.to_string(),
                "lot_count": lots as i64,
            }),
        );
        o.insert(
            "lots_closed".into(),
            Value::Array(self.lots_closed.iter().map(lot_json).collect()),
        );
        o.insert(
            "lots_opened".into(),
            Value::Array(self.lots_opened.iter().map(lot_json).collect()),
        );
        Ok(Value::Object(o))
    }
}
