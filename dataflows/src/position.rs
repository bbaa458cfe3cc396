//! Output rows: open lots and position summaries, as in `lots.csv` and
//! `positions.csv`.

use serde::{Deserialize, Serialize};

use crate::decimal::{Amount, Dec8};
use crate::id::Id;
use crate::trade::Date;

/// Direction of an open lot.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum LotSide {
    /// Opened by a BUY.
    Long,
    /// Opened by a SELL.
    Short,
}

impl LotSide {
    /// `LONG` or `SHORT`.
    pub fn as_str(self) -> &'static str {
        match self {
            LotSide::Long => "LONG",
            LotSide::Short => "SHORT",
        }
    }
}

/// One open lot. `quantity` is always > 0; the direction is `side`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Lot {
    /// The id of the trade that opened it.
    pub lot_id: Id,
    /// LONG or SHORT.
    pub side: LotSide,
    /// The opening trade's `trade_date`.
    pub open_date: Date,
    /// Remaining quantity, > 0.
    pub quantity: Dec8,
    /// The opening trade's price.
    pub price: Dec8,
}

impl Lot {
    /// `quantity * price`, negative for a short lot (its contribution to cost basis).
    pub fn signed_value(&self) -> Option<Amount> {
        let value = self.quantity.checked_mul(self.price)?;
        match self.side {
            LotSide::Long => Some(value),
            LotSide::Short => value.checked_neg(),
        }
    }
    /// Quantity, negative for a short lot.
    pub fn signed_quantity(&self) -> Dec8 {
        match self.side {
            LotSide::Long => self.quantity,
            LotSide::Short => self.quantity.negated(),
        }
    }
}

/// A position's state as in `positions.csv` (and `before`/`after` of a
/// correction). A flat position is all zero.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PositionSummary {
    /// Signed quantity: sum of open lots, short negative.
    pub quantity: Dec8,
    /// Number of open lots.
    pub lot_count: u64,
    /// Sum of `quantity * price` over open lots, short lots negative.
    pub cost_basis: Amount,
    /// Sum of realized P&L over every relief.
    pub realized_pnl: Amount,
}

impl PositionSummary {
    /// True when `positions.csv` omits this position: no open lot and zero realized P&L.
    pub fn is_omitted(&self) -> bool {
        self.lot_count == 0 && self.realized_pnl.is_zero()
    }
}

/// A booking computation that does not fit the number types; names the position.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, thiserror::Error,
)]
#[error("arithmetic overflow while booking position {position_key}")]
pub struct OverflowError {
    /// The position whose sums overflowed.
    pub position_key: Id,
}
