//! The stateless checks of the gate, field by field in the table order of
//! `trades.md` ("Details of the gate"): [`parse_event`].

use std::borrow::Cow;

use super::ascii::line_text;
use super::json::{read_json, Top, Val};
use super::plain::plain_event;
use super::{reject, RejectKind, Rejection};
use crate::calendar::{date_exists, days_from_civil};
use crate::decimal::{Dec8, DecimalParseError, POW10_I128};
use crate::id::Id;
use crate::trade::{Action, Date, Instant, Side, TradeVersion};

const MAX_I63: u64 = i64::MAX as u64;
const MAX_DECIMAL_PLACES: usize = 8;

/// A value quoted for a detail, cut to a useful length.
pub(super) fn quote(text: &str) -> String {
    const MAX_CHARS: usize = 40;
    match text.char_indices().nth(MAX_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}...", text.get(..cut).unwrap_or_default()),
    }
}

/// A JSON number's text cut to a useful length.
fn short_number(raw: &str) -> String {
    const MAX_CHARS: usize = 40;
    match raw.get(..MAX_CHARS) {
        Some(head) if raw.len() > MAX_CHARS => format!("{head}..."),
        _ => raw.to_string(),
    }
}

/// A JSON number read as an integer.
enum Integer {
    /// Has a fraction or an exponent.
    Fractional,
    /// An integer below 0 or above `u64::MAX`.
    OutOfRange,
    /// A non-negative integer (`-0` is 0).
    Value(u64),
}

fn integer(raw: &str) -> Integer {
    match plain_integer(raw) {
        Some(value) => Integer::Value(value),
        None => checked_integer(raw),
    }
}

/// The value of a JSON number written as 1-18 digits (every `version` and
/// `sequence` of a real feed): it is a `u64` as written, since the reader
/// admits no leading zero. `None` for any other text, which
/// [`checked_integer`] reads; on `Some` both agree.
#[inline(always)]
fn plain_integer(raw: &str) -> Option<u64> {
    let bytes = raw.as_bytes();
    if bytes.is_empty() || bytes.len() > 18 {
        return None;
    }
    bytes.iter().try_fold(0u64, |value, &byte| {
        digit(byte).map(|d| value * 10 + u64::from(d))
    })
}

/// [`integer`] of any JSON number text.
fn checked_integer(raw: &str) -> Integer {
    if raw.contains(['.', 'e', 'E']) {
        return Integer::Fractional;
    }
    let (negative, digits) = match raw.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, raw),
    };
    match digits.parse::<u64>() {
        Ok(0) => Integer::Value(0),
        Ok(_) if negative => Integer::OutOfRange,
        Ok(value) => Integer::Value(value),
        Err(_) => Integer::OutOfRange,
    }
}

/// The fields of the trade-event table, in table order ([`slot_of`] maps a
/// name to its index here).
#[cfg(test)]
pub(super) const KNOWN: [&str; 14] = [
    "trade_id",
    "version",
    "action",
    "account_id",
    "book_id",
    "security_id",
    "side",
    "quantity",
    "price",
    "currency",
    "trade_date",
    "trade_time",
    "sequence",
    "correlation_id",
];

/// The slot of a known field (its index in [`KNOWN`]). Inlined, so a
/// lookup by a constant name is a constant.
#[inline(always)]
fn slot_of(name: &str) -> Option<usize> {
    Some(match name {
        "trade_id" => 0,
        "version" => 1,
        "action" => 2,
        "account_id" => 3,
        "book_id" => 4,
        "security_id" => 5,
        "side" => 6,
        "quantity" => 7,
        "price" => 8,
        "currency" => 9,
        "trade_date" => 10,
        "trade_time" => 11,
        "sequence" => 12,
        "correlation_id" => 13,
        _ => return None,
    })
}

/// The event's members as the reader hands them over: one slot per field
/// of the table (`null` is absent), other keys only remembered to find
/// repeats, and the first key seen twice.
#[derive(Default)]
struct Collector<'a> {
    slots: [Option<Val<'a>>; 14],
    seen: [bool; 14],
    others: Vec<Cow<'a, str>>,
    repeated: Option<Cow<'a, str>>,
}

impl<'a> Collector<'a> {
    #[inline]
    fn add(&mut self, key: Cow<'a, str>, value: Val<'a>) {
        let again = match slot_of(&key) {
            Some(i) => {
                let again = self.seen[i];
                self.seen[i] = true;
                if !again && !matches!(value, Val::Null) {
                    self.slots[i] = Some(value);
                }
                again
            }
            None => {
                let again = self.others.contains(&key);
                if !again {
                    self.others.push(key.clone());
                }
                again
            }
        };
        if again && self.repeated.is_none() {
            self.repeated = Some(key);
        }
    }
}

/// The fields of a valid JSON object with no repeated key.
struct Fields<'s, 'a> {
    slots: &'s [Option<Val<'a>>; 14],
}

impl<'a> Fields<'_, 'a> {
    #[inline(always)]
    fn get(&self, name: &str) -> Option<&Val<'a>> {
        slot_of(name).and_then(|i| self.slots[i].as_ref())
    }
}

#[cfg(test)]
proptest::proptest! {
    /// The fast path accepts exactly what the table-order checks accept,
    /// with the same value.
    #[test]
    fn accepted_decimal_agrees_with_the_checks(text in "[0-9]{0,18}(\\.[0-9]{0,10})?|[0-9.x -]{0,12}") {
        proptest::prop_assert_eq!(accepted_decimal(&text), checked_decimal("q", &text).ok());
    }
}

#[cfg(test)]
proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

    /// The integer fast path reads what the full reading does, or declines.
    #[test]
    fn plain_integer_agrees_with_the_checks(text in "-?[0-9]{0,21}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{1,3})?") {
        if let Some(value) = plain_integer(&text) {
            proptest::prop_assert!(matches!(checked_integer(&text), Integer::Value(v) if v == value));
        }
    }

    /// The date fast path gives what the full checks give, or declines.
    #[test]
    fn plain_date_agrees_with_the_checks(text in "[0-9]{4}-[0-9]{2}-[0-9]{2}|[0-9-]{8,11}") {
        if let Some(date) = plain_date(&text) {
            proptest::prop_assert_eq!(checked_date("d", &text), Ok(date));
        }
    }

    /// The instant fast path gives what the full checks give, or declines:
    /// years, months, days, hours, minutes, seconds and offsets on both
    /// sides of their limits, `T`, `t` or a space, fractions of 0-11
    /// digits, every offset form, and a stray byte at the end.
    #[test]
    fn plain_instant_agrees_with_the_checks(
        text in "(000[01]|19[0-9]{2}|20[0-9]{2}|99[0-9]{2})-(0[0-9]|1[0-3])-([0-2][0-9]|3[0-2])(T|T|T|t| )([01][0-9]|2[0-5]):[0-6][0-9]:[0-6][0-9](\\.[0-9]{0,11})?([Zz]|[+-]([01][0-9]|2[0-5]):[0-6][0-9]|[+-][0-9]{4})?[Z0-9]?"
    ) {
        if let Some(instant) = plain_instant(&text) {
            proptest::prop_assert_eq!(checked_instant(&text), Ok(instant));
        }
    }
}

/// The fast paths take the forms real feeds write (they are what they
/// are for), and decline the ones the full checks must word.
#[cfg(test)]
#[test]
fn the_fast_paths_take_the_common_forms() {
    for (text, value) in [
        ("1", 1),
        ("0", 0),
        ("123456789012345678", 123_456_789_012_345_678),
    ] {
        assert_eq!(plain_integer(text), Some(value), "{text}");
    }
    for text in ["1234567890123456789", "-0", "1.0", "1e3", ""] {
        assert_eq!(plain_integer(text), None, "{text}");
    }
    assert_eq!(plain_date("2026-01-02"), Some(Date(20_260_102)));
    assert_eq!(plain_date("2024-02-29"), Some(Date(20_240_229)));
    for text in ["2026-02-29", "0000-01-01", "2026-1-02", "2026-01-02 "] {
        assert_eq!(plain_date(text), None, "{text}");
    }
    for text in [
        "2026-01-02T09:30:29Z",
        "2026-01-02T09:30:29.4Z",
        "2026-01-02T09:30:29.444Z",
        "2026-01-02T09:30:29.123456789Z",
        "2026-01-02T09:42:23.110174+00:00",
        "2026-01-02T23:59:59-13:30",
        "2026-01-02t09:30:29z",
        "2026-01-02t09:30:29.5+01:00",
        "2026-01-02T09:30:29.818332z",
    ] {
        let fast = plain_instant(text);
        assert!(fast.is_some(), "{text}");
        assert_eq!(fast, checked_instant(text).ok(), "{text}");
    }
    for text in [
        "2026-01-02T09:30:29.Z",
        "2026-01-02T09:30:29.1234567890Z",
        "2026-01-02T23:59:60Z",
        "2026-01-02 09:30:29Z",
        "2026-01-02T09:30:29+24:00",
        "2026-01-02T09:30:29",
    ] {
        assert_eq!(plain_instant(text), None, "{text}");
    }
}

#[cfg(test)]
#[test]
fn every_known_field_has_its_own_slot() {
    for (i, name) in KNOWN.iter().enumerate() {
        assert_eq!(slot_of(name), Some(i), "{name}");
    }
    assert_eq!(slot_of("junk"), None);
}

/// The bytes an id may hold: `A-Za-z0-9.:-`.
const ID_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        table[b] = c.is_ascii_alphanumeric() || c == b'.' || c == b':' || c == b'-';
        b += 1;
    }
    table
};

#[inline]
pub(super) fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len()) && text.bytes().all(|b| ID_BYTE[usize::from(b)])
}

/// A required id: `missing_field` when absent, `bad_id` otherwise wrong.
/// Inlined with its common case (a valid id) apart, so the id is built in
/// its place rather than copied out of nested results.
#[inline(always)]
fn id_field(fields: &Fields<'_, '_>, name: &str) -> Result<Id, Rejection> {
    match fields.get(name) {
        Some(Val::Str(text)) if is_id(text) => Ok(Id::from(text.as_ref())),
        value => id_field_rejection(name, value),
    }
}

/// Why [`id_field`] refused `value` (never a valid id).
#[cold]
#[inline(never)]
fn id_field_rejection(name: &str, value: Option<&Val<'_>>) -> Result<Id, Rejection> {
    id_value(name, value)?.map_or_else(|| reject(RejectKind::MissingField, name), Ok)
}

/// An id's value: `None` when absent; not a string or outside the
/// alphabet -> `bad_id`.
pub(super) fn id_value(name: &str, value: Option<&Val<'_>>) -> Result<Option<Id>, Rejection> {
    match value {
        None => Ok(None),
        Some(Val::Str(text)) if is_id(text) => Ok(Some(Id::from(text.as_ref()))),
        Some(Val::Str(text)) => reject(
            RejectKind::BadId,
            format!("{name} {} is not 1-64 chars of A-Za-z0-9.:-", quote(text)),
        ),
        Some(other) => reject(
            RejectKind::BadId,
            format!("{name} is {}, not a string", other.type_name()),
        ),
    }
}

/// An optional integer field in `min..=2^63-1`; anything else `malformed_field`.
fn integer_field(fields: &Fields<'_, '_>, name: &str, min: u64) -> Result<Option<u64>, Rejection> {
    match fields.get(name) {
        None => Ok(None),
        Some(Val::Num(raw)) => match integer(raw) {
            Integer::Value(value) if (min..=MAX_I63).contains(&value) => Ok(Some(value)),
            Integer::Fractional => reject(
                RejectKind::MalformedField,
                format!("{name} {} is not an integer", short_number(raw)),
            ),
            Integer::Value(_) | Integer::OutOfRange => reject(
                RejectKind::MalformedField,
                format!("{name} {} is outside {min}..={MAX_I63}", short_number(raw)),
            ),
        },
        Some(other) => reject(
            RejectKind::MalformedField,
            format!("{name} is {}, not an integer", other.type_name()),
        ),
    }
}

/// An optional enum field: non-string `malformed_field`, unknown `unknown_enum`.
fn enum_field<T: Copy>(
    fields: &Fields<'_, '_>,
    name: &str,
    choices: &[(&str, T)],
) -> Result<Option<T>, Rejection> {
    match fields.get(name) {
        None => Ok(None),
        Some(Val::Str(text)) => match choices.iter().find(|(spelling, _)| spelling == text) {
            Some(&(_, value)) => Ok(Some(value)),
            None => {
                let names: Vec<&str> = choices.iter().map(|(spelling, _)| *spelling).collect();
                reject(
                    RejectKind::UnknownEnum,
                    format!("{name} {} is not one of {}", quote(text), names.join(", ")),
                )
            }
        },
        Some(other) => reject(
            RejectKind::MalformedField,
            format!("{name} is {}, not a string", other.type_name()),
        ),
    }
}

/// The value of a decimal string the gate accepts as it stands: what
/// [`Dec8::parse`] reads, when it is not zero and below 10^15. `None` for
/// anything else, which [`checked_decimal`] then checks in table order; on
/// `Some` both agree.
pub(super) fn accepted_decimal(text: &str) -> Option<Dec8> {
    Dec8::parse(text)
        .ok()
        .filter(|value| !value.is_zero() && *value < Dec8::pow10(15))
}

/// A decimal string: form, then zero, then places, then magnitude.
pub(super) fn decimal_value(name: &str, value: &Val<'_>) -> Result<Dec8, Rejection> {
    let Val::Str(text) = value else {
        return reject(
            RejectKind::MalformedField,
            format!("{name} is not a decimal string ({})", value.type_name()),
        );
    };
    match accepted_decimal(text) {
        Some(parsed) => Ok(parsed),
        None => checked_decimal(name, text),
    }
}

/// [`decimal_value`] of a string, every check in table order.
fn checked_decimal(name: &str, text: &str) -> Result<Dec8, Rejection> {
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (int_part, frac_part) = match text.split_once('.') {
        Some((int_part, frac_part)) => (int_part, Some(frac_part)),
        None => (text, None),
    };
    if !all_digits(int_part) || !frac_part.is_none_or(all_digits) {
        return reject(
            RejectKind::MalformedField,
            format!("{name} {} is not of the form digits[.digits]", quote(text)),
        );
    }
    if text.bytes().all(|b| b == b'0' || b == b'.') {
        return reject(RejectKind::NonPositive, format!("{name} must be > 0"));
    }
    let places = frac_part.map_or(0, str::len);
    if places > MAX_DECIMAL_PLACES {
        return reject(
            RejectKind::TooManyDecimals,
            format!("{name} has {places} decimal places"),
        );
    }
    match Dec8::parse(text) {
        Ok(parsed) if parsed < Dec8::pow10(15) => Ok(parsed),
        Ok(_) | Err(DecimalParseError::TooLarge) => reject(
            RejectKind::MalformedField,
            format!("{name} must be < 10^15"),
        ),
        Err(DecimalParseError::TooManyDecimals(count)) => reject(
            RejectKind::TooManyDecimals,
            format!("{name} has {count} decimal places"),
        ),
        Err(DecimalParseError::Malformed) => reject(
            RejectKind::MalformedField,
            format!("{name} {} is not of the form digits[.digits]", quote(text)),
        ),
    }
}

/// `n` ASCII digits at `at`.
fn digits_at(bytes: &[u8], at: usize, n: usize) -> Option<u32> {
    let mut value = 0u32;
    for i in 0..n {
        let byte = *bytes.get(at + i)?;
        if !byte.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u32::from(byte - b'0');
    }
    Some(value)
}

/// `YYYY-MM-DD` at the start of `bytes`, not checked for existence.
#[inline(always)]
fn ymd_at(bytes: &[u8]) -> Option<(u32, u32, u32)> {
    let &[y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = bytes.first_chunk::<10>()? else {
        return None;
    };
    let year = two_digits(y0, y1)? * 100 + two_digits(y2, y3)?;
    Some((year, two_digits(m0, m1)?, two_digits(d0, d1)?))
}

/// The digit `byte` stands for, or `None`.
#[inline(always)]
fn digit(byte: u8) -> Option<u32> {
    let value = byte.wrapping_sub(b'0');
    (value <= 9).then_some(u32::from(value))
}

/// `d d` as a number.
#[inline(always)]
fn two_digits(tens: u8, units: u8) -> Option<u32> {
    Some(digit(tens)? * 10 + digit(units)?)
}

/// A real date written `YYYY-MM-DD` in the first 10 bytes, in years
/// 0001-9999: its parts. `None` for anything else (the slow path then says
/// what is wrong).
#[inline(always)]
fn plain_ymd(bytes: &[u8]) -> Option<(u32, u32, u32)> {
    ymd_at(bytes).filter(|&(year, month, day)| date_exists(year, month, day))
}

/// The date of a `YYYY-MM-DD` text the gate accepts as it stands. `None`
/// for any other text, which [`checked_date`] checks; on `Some` both agree.
#[inline(always)]
pub(super) fn plain_date(text: &str) -> Option<Date> {
    let bytes = text.as_bytes();
    if bytes.len() != 10 {
        return None;
    }
    let (year, month, day) = plain_ymd(bytes)?;
    Some(Date::from_ymd(year, month, day))
}

/// The instant of an RFC 3339 date-time in the forms feeds write
/// (`YYYY-MM-DDTHH:MM:SS` with `T` or `t`, an optional fraction of 1-9
/// digits, then `Z`, `z` or `+HH:MM` / `-HH:MM`; no leap second): what
/// [`instant_value`] gives.
/// `None` for any other text, which [`checked_instant`] then checks in
/// full; on `Some` both agree.
#[inline(always)]
pub(super) fn plain_instant(text: &str) -> Option<Instant> {
    let bytes = text.as_bytes();
    let (year, month, day) = plain_ymd(bytes)?;
    let &[b'T' | b't', h0, h1, b':', n0, n1, b':', s0, s1] = bytes.get(10..19)? else {
        return None;
    };
    let (hour, minute, second) = (
        two_digits(h0, h1)?,
        two_digits(n0, n1)?,
        two_digits(s0, s1)?,
    );
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let mut at = 19;
    let mut nanos = 0;
    if bytes.get(at) == Some(&b'.') {
        let start = at + 1;
        let mut fraction = 0u32;
        at = start;
        while let Some(d) = bytes.get(at).and_then(|b| digit(*b)) {
            if at - start == 9 {
                return None;
            }
            fraction = fraction * 10 + d;
            at += 1;
        }
        // One unit of an n-digit fraction is 10^(9 - n) nanoseconds (n in 1..=9).
        let places = at - start;
        let unit = POW10_I128
            .get(9usize.checked_sub(places)?)
            .filter(|_| places > 0)?;
        nanos = fraction * u32::try_from(*unit).ok()?;
    }
    let offset_secs = match bytes.get(at..)? {
        [b'Z' | b'z'] => 0,
        &[sign @ (b'+' | b'-'), h0, h1, b':', m0, m1] => {
            let (offset_hour, offset_minute) = (two_digits(h0, h1)?, two_digits(m0, m1)?);
            if offset_hour > 23 || offset_minute > 59 {
                return None;
            }
            let magnitude = i64::from(offset_hour * 3600 + offset_minute * 60);
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Some(Instant {
        secs: local - offset_secs,
        nanos,
    })
}

/// A `YYYY-MM-DD` date of field `name`; the error says what is wrong.
pub(crate) fn date_value(name: &str, text: &str) -> Result<Date, String> {
    match plain_date(text) {
        Some(date) => Ok(date),
        None => checked_date(name, text),
    }
}

/// [`date_value`], every check in order.
fn checked_date(name: &str, text: &str) -> Result<Date, String> {
    let bytes = text.as_bytes();
    let Some((year, month, day)) = ymd_at(bytes).filter(|_| bytes.len() == 10) else {
        return Err(format!("{name} {} is not YYYY-MM-DD", quote(text)));
    };
    if year == 0 {
        return Err(format!("{name} {} is in year 0000", quote(text)));
    }
    if !date_exists(year, month, day) {
        return Err(format!("{name} {} does not exist", quote(text)));
    }
    Ok(Date::from_ymd(year, month, day))
}

/// RFC 3339 `date-time` -> instant; the error says what is wrong.
pub(super) fn instant_value(text: &str) -> Result<Instant, &'static str> {
    match plain_instant(text) {
        Some(instant) => Ok(instant),
        None => checked_instant(text),
    }
}

/// [`instant_value`], every check in order.
fn checked_instant(text: &str) -> Result<Instant, &'static str> {
    const FORM: &str = "is not an RFC 3339 date-time YYYY-MM-DDTHH:MM:SS[.f](Z|+HH:MM|-HH:MM)";
    let bytes = text.as_bytes();
    let (year, month, day) = ymd_at(bytes).ok_or(FORM)?;
    match bytes.get(10) {
        Some(b'T' | b't') => {}
        Some(b' ') => return Err("uses a space where RFC 3339 requires T"),
        _ => return Err(FORM),
    }
    if bytes.get(13) != Some(&b':') || bytes.get(16) != Some(&b':') {
        return Err(FORM);
    }
    let hour = digits_at(bytes, 11, 2).ok_or(FORM)?;
    let minute = digits_at(bytes, 14, 2).ok_or(FORM)?;
    let second = digits_at(bytes, 17, 2).ok_or(FORM)?;
    let mut at = 19;
    let mut nanos = 0u32;
    if bytes.get(at) == Some(&b'.') {
        at += 1;
        let start = at;
        while bytes.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        let count = at - start;
        if count == 0 {
            return Err(FORM);
        }
        if count > 9 {
            return Err("has more than 9 fractional digits");
        }
        let fraction = digits_at(bytes, start, count).ok_or(FORM)?;
        nanos = fraction * 10u32.pow(9 - count as u32);
    }
    let offset_secs: i64 = match bytes.get(at) {
        Some(b'Z' | b'z') => {
            at += 1;
            0
        }
        Some(&sign @ (b'+' | b'-')) => {
            if bytes.get(at + 3) != Some(&b':') {
                return Err(FORM);
            }
            let offset_hour = digits_at(bytes, at + 1, 2).ok_or(FORM)?;
            let offset_minute = digits_at(bytes, at + 4, 2).ok_or(FORM)?;
            if offset_hour > 23 || offset_minute > 59 {
                return Err("has an offset out of range");
            }
            at += 6;
            let magnitude = i64::from(offset_hour * 3600 + offset_minute * 60);
            if sign == b'-' {
                -magnitude
            } else {
                magnitude
            }
        }
        _ => return Err(FORM),
    };
    if at != bytes.len() {
        return Err(FORM);
    }
    if year == 0 {
        return Err("is in year 0000");
    }
    if !date_exists(year, month, day) {
        return Err("has a date that does not exist");
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err("has a time of day out of range");
    }
    // A leap second is kept as the :59 second with nanos >= 10^9 (see Instant).
    let (second, nanos) = if second == 60 {
        (59, nanos + 1_000_000_000)
    } else {
        (second, nanos)
    };
    let days = days_from_civil(i64::from(year), month, day);
    let local = days * 86_400 + i64::from(hour * 3600 + minute * 60 + second);
    Ok(Instant {
        secs: local - offset_secs,
        nanos,
    })
}

/// A required-except-on-CANCEL field.
fn required<T>(value: Option<T>, name: &str, action: Action) -> Result<Option<T>, Rejection> {
    if value.is_none() && action != Action::Cancel {
        return reject(RejectKind::MissingField, name);
    }
    Ok(value)
}

/// The first three checks of every gate: the text is JSON (`not_json`),
/// an object (`not_object`, naming `what` it should be), with no repeated
/// key (`malformed_field`).
pub(super) fn object_checks(
    top: Result<Top, String>,
    repeated: Option<&str>,
    what: &str,
) -> Result<(), Rejection> {
    match top {
        Err(detail) => return reject(RejectKind::NotJson, detail),
        Ok(Top::Other(type_name)) => {
            return reject(
                RejectKind::NotObject,
                format!("the {what} is {type_name}, not an object"),
            )
        }
        Ok(Top::Object) => {}
    }
    if let Some(key) = repeated {
        return reject(
            RejectKind::MalformedField,
            format!("key {} is repeated", quote(key)),
        );
    }
    Ok(())
}

/// Stateless checks: parses one event (the raw bytes of a line or message)
/// into a [`TradeVersion`] with defaults filled in, or returns the FIRST
/// failing check of trades.md (JSON, object, repeated key, then the fields in
/// table order with `bad_version` right after `action`). Never panics.
/// A plain event is read in one pass ([`plain_event`]); any other, and
/// every rejection, by [`checked_event`].
pub fn parse_event(bytes: &[u8]) -> Result<TradeVersion, Rejection> {
    match line_text(bytes).and_then(plain_event) {
        Some(version) => Ok(version),
        None => checked_event(bytes),
    }
}

/// [`parse_event`] of any input, every check in table order.
/// Out of line and cold: it reads only the rare lines the plain reading
/// declines (every rejection among them); inlined, it made `parse_event`
/// 20-22 KB of code where the plain reading alone is 8-10 KB.
#[cold]
#[inline(never)]
pub(super) fn checked_event(bytes: &[u8]) -> Result<TradeVersion, Rejection> {
    let mut members = Collector::default();
    let top = read_json(bytes, |key, value| members.add(key, value));
    object_checks(top, members.repeated.as_deref(), "event")?;
    let fields = Fields {
        slots: &members.slots,
    };

    let trade_id = id_field(&fields, "trade_id")?;
    let version = integer_field(&fields, "version", 1)?;
    let action = enum_field(
        &fields,
        "action",
        &[
            ("NEW", Action::New),
            ("AMEND", Action::Amend),
            ("CANCEL", Action::Cancel),
        ],
    )?
    .unwrap_or(Action::New);
    let version = match (action, version) {
        (Action::New, version) => version.unwrap_or(1),
        (_, Some(version)) if version >= 2 => version,
        (_, Some(version)) => {
            return reject(
                RejectKind::BadVersion,
                format!("{} needs version >= 2, got {version}", action.as_str()),
            )
        }
        (_, None) => {
            return reject(
                RejectKind::BadVersion,
                format!("{} needs an explicit version >= 2", action.as_str()),
            )
        }
    };
    let account_id = id_field(&fields, "account_id")?;
    let book_id = id_field(&fields, "book_id")?;
    let security_id = id_field(&fields, "security_id")?;
    let side = enum_field(&fields, "side", &[("BUY", Side::Buy), ("SELL", Side::Sell)])?;
    let side = required(side, "side", action)?;
    let mut decimals = [None, None];
    for (slot, name) in decimals.iter_mut().zip(["quantity", "price"]) {
        let value = match fields.get(name) {
            None => None,
            Some(value) => Some(decimal_value(name, value)?),
        };
        *slot = required(value, name, action)?;
    }
    let [quantity, price] = decimals;
    let currency = match fields.get("currency") {
        None => None,
        Some(Val::Str(text)) if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(Id::from(text.as_ref()))
        }
        Some(Val::Str(text)) => {
            return reject(
                RejectKind::MalformedField,
                format!("currency {} is not three upper-case letters", quote(text)),
            )
        }
        Some(other) => {
            return reject(
                RejectKind::MalformedField,
                format!("currency is {}, not a string", other.type_name()),
            )
        }
    };
    let trade_date = match fields.get("trade_date") {
        None => None,
        Some(Val::Str(text)) => match date_value("trade_date", text) {
            Ok(date) => Some(date),
            Err(detail) => return reject(RejectKind::BadDate, detail),
        },
        Some(other) => {
            return reject(
                RejectKind::BadDate,
                format!("trade_date is {}, not a string", other.type_name()),
            )
        }
    };
    let trade_date = required(trade_date, "trade_date", action)?;
    let trade_time = match fields.get("trade_time") {
        None => None,
        Some(Val::Str(text)) => match instant_value(text) {
            Ok(instant) => Some(instant),
            Err(why) => {
                return reject(
                    RejectKind::MalformedField,
                    format!("trade_time {} {why}", quote(text)),
                )
            }
        },
        Some(other) => {
            return reject(
                RejectKind::MalformedField,
                format!("trade_time is {}, not a string", other.type_name()),
            )
        }
    };
    let sequence = integer_field(&fields, "sequence", 0)?;
    let correlation_id = match fields.get("correlation_id") {
        None => None,
        Some(Val::Str(text)) => Some(Id::from(text.as_ref())),
        Some(other) => {
            return reject(
                RejectKind::MalformedField,
                format!("correlation_id is {}, not a string", other.type_name()),
            )
        }
    };

    Ok(TradeVersion {
        trade_id,
        version,
        action,
        account_id,
        book_id,
        security_id,
        side,
        quantity,
        price,
        currency,
        trade_date,
        trade_time,
        sequence,
        correlation_id,
    })
}
