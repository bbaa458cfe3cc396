//! Lot booking: the plain reference replay ([`reference`]) and the
//! incremental, chunked book the engine runs ([`chunked`]).

pub mod chunked;
pub mod reference;

use crate::decimal::{Amount, Dec8};
use crate::position::{Lot, PositionSummary};

/// Arithmetic did not fit the number types (the caller names the position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// Checked-arithmetic helpers that turn `None` into [`Overflow`].
pub(crate) trait Checked: Sized {
    fn add(self, other: Self) -> Result<Self, Overflow>;
    fn sub(self, other: Self) -> Result<Self, Overflow>;
}

impl Checked for Amount {
    fn add(self, other: Amount) -> Result<Amount, Overflow> {
        self.checked_add(other).ok_or(Overflow)
    }
    fn sub(self, other: Amount) -> Result<Amount, Overflow> {
        self.checked_sub(other).ok_or(Overflow)
    }
}

impl Checked for Dec8 {
    fn add(self, other: Dec8) -> Result<Dec8, Overflow> {
        self.checked_add(other).ok_or(Overflow)
    }
    fn sub(self, other: Dec8) -> Result<Dec8, Overflow> {
        self.checked_sub(other).ok_or(Overflow)
    }
}

/// `q * p` as an Amount, checked.
pub(crate) fn notional(quantity: Dec8, price: Dec8) -> Result<Amount, Overflow> {
    quantity.checked_mul(price).ok_or(Overflow)
}

/// Summary of a set of open lots plus a realized P&L.
pub fn summarise(lots: &[Lot], realized_pnl: Amount) -> Result<PositionSummary, Overflow> {
    let mut summary = PositionSummary {
        realized_pnl,
        ..PositionSummary::default()
    };
    for lot in lots {
        summary.quantity = summary.quantity.add(lot.signed_quantity())?;
        summary.cost_basis = summary
            .cost_basis
            .add(lot.signed_value().ok_or(Overflow)?)?;
        summary.lot_count += 1;
    }
    Ok(summary)
}
