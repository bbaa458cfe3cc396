//! The validation gate of `trades.md`: turns the raw bytes of one event into a
//! [`TradeVersion`] or a [`Rejection`] naming the first failing check
//! ([`parse_event`]), and applies the duplicate / conflicting-duplicate rule,
//! the one rule that depends on arrival order ([`DuplicateRule`]).
//!
//! - `ascii`: the UTF-8 check of a line, its all-ASCII case vectorised;
//! - `json`: the JSON reader (written here rather than taken from
//!   `serde_json`, so the gate decides exactly what the contract says);
//! - `fields`: the field rules, in table order;
//! - `plain`: the one-pass reading of a plain event, which only accepts
//!   (anything else goes to `fields`);
//! - `dedup`: the duplicate rule and the version fingerprint.
//!
//! Calendar arithmetic is [`crate::calendar`].

mod ascii;
mod dedup;
mod fields;
mod json;
mod market;
mod plain;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use crate::trade::TradeVersion;
pub use dedup::{fingerprint, Admission, DuplicateRule, Prints, Verdict};
pub(crate) use fields::date_value;
pub use fields::parse_event;
pub(crate) use json::is_plain;
pub use market::{parse_price_tick, parse_statement, PriceTick, Statement};

/// Stable rejection kinds of trades.md. `as_str` (and the serde form) is the
/// snake_case spelling written in `rejected.jsonl` and the dead-letter output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// Not JSON: invalid UTF-8, empty or blank, a syntax error, `NaN` or
    /// `Infinity`, text after the value.
    NotJson,
    /// Valid JSON whose top-level value is not an object.
    NotObject,
    /// A required field is absent or `null`.
    MissingField,
    /// A field of the wrong type or form, a repeated key, an integer out of
    /// range, a decimal >= 10^15.
    MalformedField,
    /// `action` or `side` is a string that names no known value.
    UnknownEnum,
    /// `quantity` or `price` is zero.
    NonPositive,
    /// `quantity` or `price` is written with more than 8 decimal places.
    TooManyDecimals,
    /// `trade_date` is not a string, not `YYYY-MM-DD`, impossible or in year 0000.
    BadDate,
    /// An id is not a string of 1-64 chars of `A-Za-z0-9.:-`.
    BadId,
    /// `AMEND` or `CANCEL` without an explicit `version` >= 2.
    BadVersion,
    /// The same `(trade_id, version)` was already accepted with other content.
    ConflictingDuplicate,
}

impl RejectKind {
    /// Every kind, in declaration order.
    pub const ALL: [RejectKind; 11] = [
        RejectKind::NotJson,
        RejectKind::NotObject,
        RejectKind::MissingField,
        RejectKind::MalformedField,
        RejectKind::UnknownEnum,
        RejectKind::NonPositive,
        RejectKind::TooManyDecimals,
        RejectKind::BadDate,
        RejectKind::BadId,
        RejectKind::BadVersion,
        RejectKind::ConflictingDuplicate,
    ];

    /// The spelling of trades.md: `not_json`, `not_object`, `missing_field`,
    /// `malformed_field`, `unknown_enum`, `non_positive`, `too_many_decimals`,
    /// `bad_date`, `bad_id`, `bad_version`, `conflicting_duplicate`.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::NotJson => "not_json",
            RejectKind::NotObject => "not_object",
            RejectKind::MissingField => "missing_field",
            RejectKind::MalformedField => "malformed_field",
            RejectKind::UnknownEnum => "unknown_enum",
            RejectKind::NonPositive => "non_positive",
            RejectKind::TooManyDecimals => "too_many_decimals",
            RejectKind::BadDate => "bad_date",
            RejectKind::BadId => "bad_id",
            RejectKind::BadVersion => "bad_version",
            RejectKind::ConflictingDuplicate => "conflicting_duplicate",
        }
    }
}

/// Why an event was rejected. Display is "kind: detail", e.g.
/// "non_positive: quantity must be > 0"; the detail names the field and never
/// repeats the kind.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, thiserror::Error,
)]
#[error("{}: {}", .kind.as_str(), .detail)]
pub struct Rejection {
    /// The stable kind.
    pub kind: RejectKind,
    /// A short human-readable explanation naming the field.
    pub detail: String,
}

#[cold]
pub(crate) fn reject<T>(kind: RejectKind, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        kind,
        detail: detail.into(),
    })
}
