//! Lot booking: the plain reference replay ([`reference`]) and the
//! incremental, chunked book the engine runs ([`chunked`]).

pub mod chunked;
pub mod hifo;
pub mod reference;

use crate::decimal::{Amount, Dec8};
use crate::position::{Lot, PositionSummary};

/// Arithmetic did not fit the number types (the caller names the position).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overflow;

/// Why a book could not apply a change. Either way the position is
/// quarantined and the fault reported; neither is ever ignored.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BookError {
    /// Sums exceed the number types.
    #[error("arithmetic overflow: sums exceed 256-bit fixed point")]
    Overflow,
    /// The input broke an invariant the engine relies on (an engine bug:
    /// e.g. a retraction of a trade that is not booked).
    #[error("engine invariant broken: {0}")]
    Invariant(String),
}

impl From<Overflow> for BookError {
    fn from(_: Overflow) -> BookError {
        BookError::Overflow
    }
}

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
