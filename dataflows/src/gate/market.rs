//! The gate for the two inputs of `reconciliation.md` beside trades: price
//! ticks ([`parse_price_tick`]) and custodian statements
//! ([`parse_statement`]). Same grammar, same kinds and the same order of
//! checks as the trade gate: JSON, object, repeated key, then the fields in
//! the table's order; unknown fields ignored, `null` absent.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::fields::{date_value, decimal_value, id_value, instant_value, object_checks, quote};
use super::json::{read_json, Val};
use super::{reject, RejectKind, Rejection};
use crate::decimal::{Dec8, DecimalParseError};
use crate::id::Id;
use crate::trade::{Date, Instant};

/// One accepted price tick.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PriceTick {
    /// The security priced.
    pub security_id: Id,
    /// The price, > 0 and < 10^15.
    pub price: Dec8,
    /// When the price holds (compared as an instant).
    pub as_of: Instant,
    /// Who sent it, when given.
    pub source: Option<Id>,
}

/// One accepted custodian statement of a position.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Statement {
    /// Account.
    pub account_id: Id,
    /// Book.
    pub book_id: Id,
    /// Security.
    pub security_id: Id,
    /// Signed quantity the custodian holds (|q| < 10^18, zero allowed).
    pub quantity: Dec8,
    /// The business date the statement is for.
    pub as_of_date: Date,
    /// Who sent it, when given.
    pub source: Option<Id>,
}

impl Statement {
    /// `{account_id}_{book_id}_{security_id}`.
    pub fn position_key(&self) -> Id {
        crate::id::format_id!("{}_{}_{}", self.account_id, self.book_id, self.security_id)
    }
}

/// Reads a JSON object and returns the values of `names` (absent or `null`
/// as `None`), after the not_json / not_object / repeated-key checks.
fn members<'a, const N: usize>(
    bytes: &'a [u8],
    names: [&str; N],
    what: &str,
) -> Result<[Option<Val<'a>>; N], Rejection> {
    let mut slots: [Option<Val<'a>>; N] = std::array::from_fn(|_| None);
    let mut seen: Vec<Cow<'a, str>> = Vec::new();
    let mut repeated: Option<Cow<'a, str>> = None;
    let top = read_json(bytes, |key, value| {
        if seen.contains(&key) {
            repeated.get_or_insert(key);
            return;
        }
        if let Some(i) = names.iter().position(|n| *n == key) {
            if !matches!(value, Val::Null) {
                slots[i] = Some(value);
            }
        }
        seen.push(key);
    });
    object_checks(top, repeated.as_deref(), what)?;
    Ok(slots)
}

/// A required id: absent -> `missing_field`; otherwise as [`id_value`].
fn required_id(name: &str, value: Option<&Val<'_>>) -> Result<Id, Rejection> {
    id_value(name, value)?.map_or_else(|| reject(RejectKind::MissingField, name), Ok)
}

/// Parses one price tick line: `security_id`, `price` (checked exactly like
/// a trade's price), `as_of` (RFC 3339), optional `source`.
pub fn parse_price_tick(bytes: &[u8]) -> Result<PriceTick, Rejection> {
    let [security_id, price, as_of, source] =
        members(bytes, ["security_id", "price", "as_of", "source"], "tick")?;
    let security_id = required_id("security_id", security_id.as_ref())?;
    let price = match price.as_ref() {
        None => return reject(RejectKind::MissingField, "price"),
        Some(value) => decimal_value("price", value)?,
    };
    let as_of = match as_of.as_ref() {
        None => return reject(RejectKind::MissingField, "as_of"),
        Some(Val::Str(text)) => instant_value(text).or_else(|why| {
            reject(
                RejectKind::MalformedField,
                format!("as_of {} {why}", quote(text)),
            )
        })?,
        Some(other) => {
            return reject(
                RejectKind::MalformedField,
                format!("as_of is {}, not a string", other.type_name()),
            )
        }
    };
    let source = id_value("source", source.as_ref())?;
    Ok(PriceTick {
        security_id,
        price,
        as_of,
        source,
    })
}

/// The largest custodian quantity, exclusive: 10^18.
const MAX_STATEMENT_EXP: u32 = 18;

/// A signed decimal `-?digits[.digits]`: form, then places, then magnitude.
fn signed_quantity(value: &Val<'_>) -> Result<Dec8, Rejection> {
    let Val::Str(text) = value else {
        return reject(
            RejectKind::MalformedField,
            format!("quantity is not a decimal string ({})", value.type_name()),
        );
    };
    let (negative, digits) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.as_ref()),
    };
    let malformed = || {
        reject(
            RejectKind::MalformedField,
            format!(
                "quantity {} is not of the form -?digits[.digits]",
                quote(text)
            ),
        )
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (int_part, frac_part) = match digits.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (digits, None),
    };
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return malformed();
    }
    let places = frac_part.map_or(0, str::len);
    if places > 8 {
        return reject(
            RejectKind::TooManyDecimals,
            format!("quantity has {places} decimal places"),
        );
    }
    let too_large = || {
        reject(
            RejectKind::MalformedField,
            format!("quantity must be > -10^{MAX_STATEMENT_EXP} and < 10^{MAX_STATEMENT_EXP}"),
        )
    };
    let magnitude = match Dec8::parse(digits) {
        Ok(value) => value,
        Err(DecimalParseError::TooLarge) => return too_large(),
        Err(_) => return malformed(),
    };
    if magnitude >= Dec8::pow10(MAX_STATEMENT_EXP) {
        return too_large();
    }
    Ok(if negative {
        magnitude.negated()
    } else {
        magnitude
    })
}

/// Parses one custodian statement line: `account_id`, `book_id`,
/// `security_id`, signed `quantity`, `as_of_date`, optional `source`.
pub fn parse_statement(bytes: &[u8]) -> Result<Statement, Rejection> {
    let [account_id, book_id, security_id, quantity, as_of_date, source] = members(
        bytes,
        [
            "account_id",
            "book_id",
            "security_id",
            "quantity",
            "as_of_date",
            "source",
        ],
        "statement",
    )?;
    let account_id = required_id("account_id", account_id.as_ref())?;
    let book_id = required_id("book_id", book_id.as_ref())?;
    let security_id = required_id("security_id", security_id.as_ref())?;
    let quantity = match quantity.as_ref() {
        None => return reject(RejectKind::MissingField, "quantity"),
        Some(value) => signed_quantity(value)?,
    };
    let as_of_date = match as_of_date.as_ref() {
        None => return reject(RejectKind::MissingField, "as_of_date"),
        Some(Val::Str(text)) => {
            date_value("as_of_date", text).or_else(|detail| reject(RejectKind::BadDate, detail))?
        }
        Some(other) => {
            return reject(
                RejectKind::BadDate,
                format!("as_of_date is {}, not a string", other.type_name()),
            )
        }
    };
    let source = id_value("source", source.as_ref())?;
    Ok(Statement {
        account_id,
        book_id,
        security_id,
        quantity,
        as_of_date,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind_of<T: std::fmt::Debug>(result: Result<T, Rejection>) -> RejectKind {
        match result {
            Ok(value) => panic!("accepted {value:?}"),
            Err(rejection) => rejection.kind,
        }
    }

    #[test]
    fn a_tick_parses_and_its_instant_is_utc() {
        let tick = parse_price_tick(
            br#"{"security_id":"AAPL","price":"187.50","as_of":"2026-03-02T15:30:00+01:00","source":"BBG","x":1}"#,
        )
        .expect("valid");
        assert_eq!(tick.security_id, "AAPL");
        assert_eq!(tick.price, Dec8::parse("187.5").expect("decimal"));
        let utc = parse_price_tick(
            br#"{"security_id":"AAPL","price":"1","as_of":"2026-03-02T14:30:00Z"}"#,
        )
        .expect("valid");
        assert_eq!(tick.as_of, utc.as_of);
        assert_eq!(utc.source, None);
    }

    #[test]
    fn tick_checks_run_in_table_order() {
        assert_eq!(kind_of(parse_price_tick(b"nope")), RejectKind::NotJson);
        assert_eq!(kind_of(parse_price_tick(b"[1]")), RejectKind::NotObject);
        assert_eq!(
            kind_of(parse_price_tick(br#"{"price":"1","price":"2"}"#)),
            RejectKind::MalformedField
        );
        assert_eq!(
            kind_of(parse_price_tick(br#"{"price":"0","as_of":"x"}"#)),
            RejectKind::MissingField
        );
        assert_eq!(
            kind_of(parse_price_tick(br#"{"security_id":"A B","price":"0"}"#)),
            RejectKind::BadId
        );
        assert_eq!(
            kind_of(parse_price_tick(
                br#"{"security_id":"A","price":"0","as_of":"x"}"#
            )),
            RejectKind::NonPositive
        );
        assert_eq!(
            kind_of(parse_price_tick(
                br#"{"security_id":"A","price":"1.123456789"}"#
            )),
            RejectKind::TooManyDecimals
        );
        assert_eq!(
            kind_of(parse_price_tick(
                br#"{"security_id":"A","price":"1000000000000000"}"#
            )),
            RejectKind::MalformedField
        );
        assert_eq!(
            kind_of(parse_price_tick(br#"{"security_id":"A","price":"1"}"#)),
            RejectKind::MissingField
        );
        assert_eq!(
            kind_of(parse_price_tick(
                br#"{"security_id":"A","price":"1","as_of":"2026-03-02 14:30:00Z"}"#
            )),
            RejectKind::MalformedField
        );
        assert_eq!(
            kind_of(parse_price_tick(
                br#"{"security_id":"A","price":"1","as_of":"2026-03-02T14:30:00Z","source":7}"#
            )),
            RejectKind::BadId
        );
    }

    #[test]
    fn statement_quantities_are_signed_and_bounded() {
        let line = |q: &str| {
            format!(
                r#"{{"account_id":"A","book_id":"B","security_id":"S","quantity":{q},"as_of_date":"2026-03-02"}}"#
            )
        };
        let ok = |q: &str| parse_statement(line(q).as_bytes()).expect("valid").quantity;
        assert_eq!(ok(r#""-12.5""#), Dec8::parse("12.5").expect("d").negated());
        assert_eq!(ok(r#""0""#), Dec8::ZERO);
        assert_eq!(ok(r#""-0""#), Dec8::ZERO);
        assert_eq!(
            ok(r#""999999999999999999.99999999""#),
            Dec8::parse("999999999999999999.99999999").expect("d")
        );
        let kind = |q: &str| kind_of(parse_statement(line(q).as_bytes()));
        assert_eq!(kind("12"), RejectKind::MalformedField);
        assert_eq!(kind(r#""+1""#), RejectKind::MalformedField);
        assert_eq!(kind(r#""1.""#), RejectKind::MalformedField);
        assert_eq!(kind(r#""-1.123456789""#), RejectKind::TooManyDecimals);
        assert_eq!(kind(r#""1000000000000000000""#), RejectKind::MalformedField);
        assert_eq!(
            kind(r#""-1000000000000000000""#),
            RejectKind::MalformedField
        );
        // Places are checked before magnitude.
        assert_eq!(
            kind(r#""1000000000000000000.123456789""#),
            RejectKind::TooManyDecimals
        );
    }

    #[test]
    fn statement_checks_run_in_table_order() {
        assert_eq!(
            kind_of(parse_statement(br#"{"book_id":"B","quantity":"x"}"#)),
            RejectKind::MissingField
        );
        assert_eq!(
            kind_of(parse_statement(
                br#"{"account_id":"A","book_id":"B","security_id":"S","quantity":"1","as_of_date":"2026-02-30"}"#
            )),
            RejectKind::BadDate
        );
        assert_eq!(
            kind_of(parse_statement(
                br#"{"account_id":"A","book_id":"B","security_id":"S","quantity":"1"}"#
            )),
            RejectKind::MissingField
        );
        let s = parse_statement(
            br#"{"account_id":"A","book_id":"B","security_id":"S","quantity":"1","as_of_date":"2026-02-28","source":null}"#,
        )
        .expect("valid");
        assert_eq!(s.position_key(), "A_B_S");
        assert_eq!(s.as_of_date.to_string(), "2026-02-28");
    }
}
