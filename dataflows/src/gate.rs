//! The validation gate of `trades.md`: turns the raw bytes of one event into a
//! [`TradeVersion`] or a [`Rejection`] naming the first failing check
//! ([`parse_event`]), and applies the duplicate / conflicting-duplicate rule,
//! the one rule that depends on arrival order ([`Gate`]).
//!
//! The JSON reader is written here rather than taken from `serde_json` so that
//! the gate decides exactly what the contract says: a repeated top-level key is
//! seen (not silently overwritten), a number keeps its text (`1.0` is not an
//! integer, `2^64` is an integer out of range), numbers outside the `f64`
//! range and arbitrarily deep containers in ignored fields are still JSON, and
//! no input can make it recurse or panic.

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};

use crate::decimal::{Dec8, DecimalParseError};
use crate::trade::{Action, Date, Instant, Side, TradeVersion};

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

fn reject<T>(kind: RejectKind, detail: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        kind,
        detail: detail.into(),
    })
}

// ---------------------------------------------------------------------------
// JSON reading
// ---------------------------------------------------------------------------

/// A top-level member's value: scalars kept (numbers as their text),
/// containers only validated.
enum Val<'a> {
    Null,
    Bool,
    Num(&'a str),
    Str(String),
    Array,
    Object,
}

impl Val<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Val::Null => "null",
            Val::Bool => "a boolean",
            Val::Num(_) => "a number",
            Val::Str(_) => "a string",
            Val::Array => "an array",
            Val::Object => "an object",
        }
    }
}

/// The top-level value of a JSON text.
enum Top<'a> {
    /// An object's members in document order (repeats kept).
    Object(Vec<(String, Val<'a>)>),
    /// Any other value, by type name.
    Other(&'static str),
}

/// Detail of a `not_json` rejection.
type JsonResult<T> = Result<T, String>;

struct Reader<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.pos += 1;
        }
    }

    fn unexpected(&self) -> String {
        match self.peek() {
            None => "unexpected end of input".to_string(),
            Some(_) => format!("unexpected character at byte {}", self.pos),
        }
    }

    fn expect(&mut self, byte: u8) -> JsonResult<()> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.unexpected())
        }
    }

    fn slice(&self, start: usize, end: usize) -> JsonResult<&'a str> {
        self.text
            .get(start..end)
            .ok_or_else(|| format!("invalid text at byte {start}"))
    }

    fn literal(&mut self, word: &str) -> JsonResult<()> {
        let matches = self
            .bytes
            .get(self.pos..)
            .is_some_and(|rest| rest.starts_with(word.as_bytes()));
        if matches {
            self.pos += word.len();
            Ok(())
        } else {
            Err(format!("invalid literal at byte {}", self.pos))
        }
    }

    fn digits(&mut self) -> JsonResult<()> {
        let start = self.pos;
        while matches!(self.peek(), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
        if self.pos == start {
            Err(self.unexpected())
        } else {
            Ok(())
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`, returned as written.
    fn number(&mut self) -> JsonResult<&'a str> {
        let start = self.pos;
        if self.peek() == Some(b'-') {
            self.pos += 1;
        }
        match self.peek() {
            Some(b'0') => self.pos += 1,
            Some(b'1'..=b'9') => self.digits()?,
            _ => return Err(self.unexpected()),
        }
        if self.peek() == Some(b'.') {
            self.pos += 1;
            self.digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            self.digits()?;
        }
        self.slice(start, self.pos)
    }

    fn hex4(&mut self) -> JsonResult<u32> {
        let mut value = 0u32;
        for _ in 0..4 {
            let digit = match self.peek() {
                Some(c @ b'0'..=b'9') => c - b'0',
                Some(c @ b'a'..=b'f') => c - b'a' + 10,
                Some(c @ b'A'..=b'F') => c - b'A' + 10,
                _ => return Err(format!("invalid \\u escape at byte {}", self.pos)),
            };
            value = value * 16 + u32::from(digit);
            self.pos += 1;
        }
        Ok(value)
    }

    /// After a backslash.
    fn escape(&mut self) -> JsonResult<char> {
        let at = self.pos.saturating_sub(1);
        let Some(byte) = self.peek() else {
            return Err(self.unexpected());
        };
        self.pos += 1;
        let lone = || format!("lone surrogate in \\u escape at byte {at}");
        Ok(match byte {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = match high {
                    0xD800..=0xDBFF => {
                        if self.peek() != Some(b'\\') || self.bytes.get(self.pos + 1) != Some(&b'u')
                        {
                            return Err(lone());
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xDC00..=0xDFFF).contains(&low) {
                            return Err(lone());
                        }
                        0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                    }
                    0xDC00..=0xDFFF => return Err(lone()),
                    other => other,
                };
                char::from_u32(code).ok_or_else(lone)?
            }
            _ => return Err(format!("invalid escape at byte {at}")),
        })
    }

    /// A string, decoded.
    fn string(&mut self) -> JsonResult<String> {
        self.expect(b'"')?;
        let mut out = String::new();
        let mut run = self.pos;
        loop {
            match self.peek() {
                None => return Err("unterminated string".to_string()),
                Some(b'"') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    out.push_str(self.slice(run, self.pos)?);
                    self.pos += 1;
                    let decoded = self.escape()?;
                    out.push(decoded);
                    run = self.pos;
                }
                Some(0x00..=0x1f) => {
                    return Err(format!(
                        "unescaped control character in string at byte {}",
                        self.pos
                    ))
                }
                Some(_) => self.pos += 1,
            }
        }
    }

    /// A string, a number, `true`, `false` or `null`.
    fn scalar(&mut self) -> JsonResult<Val<'a>> {
        match self.peek() {
            Some(b'"') => Ok(Val::Str(self.string()?)),
            Some(b't') => self.literal("true").map(|()| Val::Bool),
            Some(b'f') => self.literal("false").map(|()| Val::Bool),
            Some(b'n') => self.literal("null").map(|()| Val::Null),
            Some(b'-' | b'0'..=b'9') => Ok(Val::Num(self.number()?)),
            _ => Err(self.unexpected()),
        }
    }

    /// An object key and its colon; whitespace before the key already skipped.
    fn key(&mut self) -> JsonResult<String> {
        let key = self.string()?;
        self.skip_ws();
        self.expect(b':')?;
        Ok(key)
    }

    /// Validates one value of any depth without recursion.
    fn skip_value(&mut self) -> JsonResult<()> {
        let mut open: Vec<u8> = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(b'{');
                        self.key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(b'[');
                        continue;
                    }
                }
                _ => {
                    self.scalar()?;
                }
            }
            // A value is complete: close containers until another value is due.
            loop {
                let Some(&top) = open.last() else {
                    return Ok(());
                };
                self.skip_ws();
                match (top, self.peek()) {
                    (_, Some(b',')) => {
                        self.pos += 1;
                        if top == b'{' {
                            self.skip_ws();
                            self.key()?;
                        }
                        break;
                    }
                    (b'{', Some(b'}')) | (b'[', Some(b']')) => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(self.unexpected()),
                }
            }
        }
    }

    /// A member value of the top-level object.
    fn value(&mut self) -> JsonResult<Val<'a>> {
        match self.peek() {
            Some(b'{') => self.skip_value().map(|()| Val::Object),
            Some(b'[') => self.skip_value().map(|()| Val::Array),
            _ => self.scalar(),
        }
    }

    /// The members of the top-level object, repeats kept.
    fn object_members(&mut self) -> JsonResult<Vec<(String, Val<'a>)>> {
        self.expect(b'{')?;
        let mut members = Vec::new();
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(members);
        }
        loop {
            self.skip_ws();
            let key = self.key()?;
            self.skip_ws();
            let value = self.value()?;
            members.push((key, value));
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(members);
                }
                _ => return Err(self.unexpected()),
            }
        }
    }
}

/// Reads one complete JSON text (RFC 8259; whitespace around it allowed).
fn read_json(bytes: &[u8]) -> JsonResult<Top<'_>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| format!("invalid UTF-8 at byte {}", e.valid_up_to()))?;
    let mut reader = Reader {
        text,
        bytes,
        pos: 0,
    };
    reader.skip_ws();
    if reader.peek().is_none() {
        return Err("empty or blank input".to_string());
    }
    let top = if reader.peek() == Some(b'{') {
        Top::Object(reader.object_members()?)
    } else {
        Top::Other(reader.value()?.type_name())
    };
    reader.skip_ws();
    if reader.peek().is_some() {
        return Err(format!(
            "unexpected text after the JSON value at byte {}",
            reader.pos
        ));
    }
    Ok(top)
}

// ---------------------------------------------------------------------------
// Field checks
// ---------------------------------------------------------------------------

const MAX_I63: u64 = i64::MAX as u64;
const MAX_DECIMAL_PLACES: usize = 8;

/// A value quoted for a detail, cut to a useful length.
fn quote(text: &str) -> String {
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

/// The members of the event, `null` values dropped (null is absent).
struct Fields<'m, 'a> {
    map: HashMap<&'m str, &'m Val<'a>>,
}

impl<'m, 'a> Fields<'m, 'a> {
    /// Rejects a repeated key (`malformed_field`), the first one repeated.
    fn new(members: &'m [(String, Val<'a>)]) -> Result<Fields<'m, 'a>, Rejection> {
        let mut all: HashMap<&'m str, &'m Val<'a>> =
            HashMap::with_capacity_and_hasher(members.len(), Default::default());
        for (key, value) in members {
            if all.insert(key.as_str(), value).is_some() {
                return reject(
                    RejectKind::MalformedField,
                    format!("key {} is repeated", quote(key)),
                );
            }
        }
        all.retain(|_, value| !matches!(value, Val::Null));
        Ok(Fields { map: all })
    }

    fn get(&self, name: &str) -> Option<&'m Val<'a>> {
        self.map.get(name).copied()
    }
}

fn is_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-'))
}

/// A required id: `missing_field` when absent, `bad_id` otherwise wrong.
fn id_field(fields: &Fields<'_, '_>, name: &str) -> Result<String, Rejection> {
    match fields.get(name) {
        None => reject(RejectKind::MissingField, name),
        Some(Val::Str(text)) if is_id(text) => Ok(text.clone()),
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

/// A decimal string: form, then zero, then places, then magnitude.
fn decimal_value(name: &str, value: &Val<'_>) -> Result<Dec8, Rejection> {
    let Val::Str(text) = value else {
        return reject(
            RejectKind::MalformedField,
            format!("{name} is not a decimal string ({})", value.type_name()),
        );
    };
    let all_digits = |part: &str| !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
    let (int_part, frac_part) = match text.split_once('.') {
        Some((int_part, frac_part)) => (int_part, Some(frac_part)),
        None => (text.as_str(), None),
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

fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// A real Gregorian date in years 0001-9999.
fn date_exists(year: u32, month: u32, day: u32) -> bool {
    (1..=9999).contains(&year) && day >= 1 && day <= days_in_month(year, month)
}

/// Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
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
fn ymd_at(bytes: &[u8]) -> Option<(u32, u32, u32)> {
    if bytes.get(4) != Some(&b'-') || bytes.get(7) != Some(&b'-') {
        return None;
    }
    Some((
        digits_at(bytes, 0, 4)?,
        digits_at(bytes, 5, 2)?,
        digits_at(bytes, 8, 2)?,
    ))
}

fn date_value(text: &str) -> Result<Date, String> {
    let bytes = text.as_bytes();
    let Some((year, month, day)) = ymd_at(bytes).filter(|_| bytes.len() == 10) else {
        return Err(format!("trade_date {} is not YYYY-MM-DD", quote(text)));
    };
    if year == 0 {
        return Err(format!("trade_date {} is in year 0000", quote(text)));
    }
    if !date_exists(year, month, day) {
        return Err(format!("trade_date {} does not exist", quote(text)));
    }
    Ok(Date::from_ymd(year, month, day))
}

/// RFC 3339 `date-time` -> instant; the error says what is wrong.
fn instant_value(text: &str) -> Result<Instant, &'static str> {
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
    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
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

/// Stateless checks: parses one event (the raw bytes of a line or message)
/// into a [`TradeVersion`] with defaults filled in, or returns the FIRST
/// failing check of trades.md (JSON, object, repeated key, then the fields in
/// table order with `bad_version` right after `action`). Never panics.
pub fn parse_event(bytes: &[u8]) -> Result<TradeVersion, Rejection> {
    let members = match read_json(bytes) {
        Err(detail) => return reject(RejectKind::NotJson, detail),
        Ok(Top::Other(type_name)) => {
            return reject(
                RejectKind::NotObject,
                format!("the event is {type_name}, not an object"),
            )
        }
        Ok(Top::Object(members)) => members,
    };
    let fields = Fields::new(&members)?;

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
            Some(text.clone())
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
        Some(Val::Str(text)) => match date_value(text) {
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
        Some(Val::Str(text)) => Some(text.clone()),
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

// ---------------------------------------------------------------------------
// The stateful gate
// ---------------------------------------------------------------------------

/// Outcome of admitting one event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// First acceptance of this `(trade_id, version)`: it changes state.
    Accepted(TradeVersion),
    /// Identical (after parsing) to the accepted copy: acknowledged, ignored.
    Duplicate(TradeVersion),
    /// Breaks a rule (including `conflicting_duplicate`): changes no state.
    Rejected(Rejection),
}

/// Stateful gate: [`parse_event`] plus the duplicate / conflicting-duplicate
/// rule, which depends on arrival order. Remembers a 128-bit fingerprint of
/// every accepted `(trade_id, version)`; the first copy accepted stays.
/// Kept per trade id (one key per trade, its versions in a short list), so
/// a lookup allocates nothing.
#[derive(Default)]
pub struct Gate {
    accepted: HashMap<String, Vec<(u64, u128)>>,
}

/// The version's fingerprint: XXH3-128 of [`TradeVersion::canonical_bytes`].
/// Equal versions (as by the derived `PartialEq`) always have equal
/// fingerprints, and the value is stable across processes, toolchains and
/// releases, so it can be persisted and compared after a restart.
pub fn fingerprint(version: &TradeVersion) -> u128 {
    let mut bytes = Vec::with_capacity(160);
    version.canonical_bytes(&mut bytes);
    xxhash_rust::xxh3::xxh3_128(&bytes)
}

impl Gate {
    /// A gate that has accepted nothing.
    pub fn new() -> Gate {
        Gate::default()
    }

    /// Admits one event: `Rejected` if [`parse_event`] fails, otherwise
    /// exactly [`Gate::admit_parsed`] of the parsed version.
    pub fn admit(&mut self, bytes: &[u8]) -> Admission {
        match parse_event(bytes) {
            Ok(version) => self.admit_parsed(version),
            Err(rejection) => Admission::Rejected(rejection),
        }
    }

    /// The duplicate rule alone, for a version [`parse_event`] produced:
    /// `Accepted` (and remembered) the first time its `(trade_id, version)`
    /// is seen; `Duplicate` if that pair was accepted with equal content;
    /// otherwise `Rejected` with `conflicting_duplicate`, the first copy
    /// staying accepted. Only `Accepted` changes the gate's state.
    pub fn admit_parsed(&mut self, version: TradeVersion) -> Admission {
        let print = fingerprint(&version);
        self.admit_fingerprinted(version, print)
    }

    /// [`Gate::admit_parsed`] for a version whose [`fingerprint`] the caller
    /// has computed already (and keeps, e.g. to persist it).
    pub fn admit_fingerprinted(&mut self, version: TradeVersion, print: u128) -> Admission {
        let known = match self.accepted.get_mut(&version.trade_id) {
            Some(versions) => match versions.iter().find(|(v, _)| *v == version.version) {
                Some((_, known)) => Some(*known),
                None => {
                    versions.push((version.version, print));
                    None
                }
            },
            None => {
                self.accepted
                    .insert(version.trade_id.clone(), vec![(version.version, print)]);
                None
            }
        };
        match known {
            None => Admission::Accepted(version),
            Some(known) if known == print => Admission::Duplicate(version),
            Some(_) => Admission::Rejected(Rejection {
                kind: RejectKind::ConflictingDuplicate,
                detail: format!(
                    "{} v{} already accepted with different content",
                    version.trade_id, version.version
                ),
            }),
        }
    }

    /// Remembers the `(version, fingerprint)` pairs accepted for `trade_id`
    /// (a restart restoring the gate's state). Pairs already known are kept
    /// as they are: the first copy accepted stays.
    pub fn restore(&mut self, trade_id: String, fingerprints: Vec<(u64, u128)>) {
        match self.accepted.get_mut(&trade_id) {
            Some(versions) => {
                for (version, print) in fingerprints {
                    if !versions.iter().any(|(v, _)| *v == version) {
                        versions.push((version, print));
                    }
                }
            }
            None => {
                self.accepted.insert(trade_id, fingerprints);
            }
        }
    }

    /// Number of distinct `(trade_id, version)` pairs accepted so far.
    pub fn accepted_count(&self) -> usize {
        self.accepted.values().map(Vec::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use RejectKind::*;

    /// A complete, valid NEW event, field by field (raw JSON values).
    const BASE: &[(&str, &str)] = &[
        ("trade_id", r#""T-1""#),
        ("version", "1"),
        ("action", r#""NEW""#),
        ("account_id", r#""ACC1""#),
        ("book_id", r#""EQ-US""#),
        ("security_id", r#""AAPL""#),
        ("side", r#""BUY""#),
        ("quantity", r#""10""#),
        ("price", r#""100.5""#),
        ("currency", r#""USD""#),
        ("trade_date", r#""2026-01-02""#),
        ("trade_time", r#""2026-01-02T10:00:00Z""#),
        ("sequence", "7"),
        ("correlation_id", r#""corr-1""#),
    ];

    /// A minimal valid CANCEL.
    const CANCEL: &[(&str, &str)] = &[
        ("trade_id", r#""T-1""#),
        ("version", "2"),
        ("action", r#""CANCEL""#),
        ("account_id", r#""ACC1""#),
        ("book_id", r#""EQ-US""#),
        ("security_id", r#""AAPL""#),
    ];

    /// `base` with `set` replacing (or appending) fields and `drop` removed.
    fn build(base: &[(&str, &str)], set: &[(&str, &str)], drop: &[&str]) -> String {
        let mut fields: Vec<(String, String)> = base
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        for (key, value) in set {
            match fields.iter_mut().find(|(k, _)| k == key) {
                Some(field) => field.1 = value.to_string(),
                None => fields.push((key.to_string(), value.to_string())),
            }
        }
        fields.retain(|(k, _)| !drop.contains(&k.as_str()));
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!("{{{}}}", body.join(","))
    }

    fn with(set: &[(&str, &str)]) -> String {
        build(BASE, set, &[])
    }

    fn without(drop: &[&str]) -> String {
        build(BASE, &[], drop)
    }

    fn ok(text: &str) -> TradeVersion {
        parse_event(text.as_bytes()).unwrap_or_else(|r| panic!("{text}: rejected {r}"))
    }

    fn rejection(text: &str) -> Rejection {
        match parse_event(text.as_bytes()) {
            Ok(tv) => panic!("{text}: accepted {tv:?}"),
            Err(r) => r,
        }
    }

    fn kind(text: &str) -> RejectKind {
        rejection(text).kind
    }

    fn utc(text: &str) -> Instant {
        ok(&with(&[("trade_time", &format!("{text:?}"))]))
            .trade_time
            .unwrap_or_else(|| panic!("{text}: no time"))
    }

    fn dec(text: &str) -> Dec8 {
        Dec8::parse(text).unwrap()
    }

    // --- kinds and rejection ------------------------------------------------

    #[test]
    fn kinds_spell_as_in_the_spec() {
        let spelled: Vec<&str> = RejectKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            spelled,
            [
                "not_json",
                "not_object",
                "missing_field",
                "malformed_field",
                "unknown_enum",
                "non_positive",
                "too_many_decimals",
                "bad_date",
                "bad_id",
                "bad_version",
                "conflicting_duplicate"
            ]
        );
        for kind in RejectKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
            assert_eq!(serde_json::from_str::<RejectKind>(&json).unwrap(), kind);
        }
    }

    #[test]
    fn display_is_kind_colon_detail() {
        let r = rejection(&with(&[("quantity", r#""0""#)]));
        assert_eq!(r.to_string(), "non_positive: quantity must be > 0");
        assert_eq!(
            rejection(&without(&["quantity"])).to_string(),
            "missing_field: quantity"
        );
        assert_eq!(
            rejection(&with(&[("quantity", r#""1.000000000""#)])).to_string(),
            "too_many_decimals: quantity has 9 decimal places"
        );
        assert_eq!(
            rejection(&with(&[("price", "100")])).to_string(),
            "malformed_field: price is not a decimal string (a number)"
        );
        let back: Rejection = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn every_kind_is_reachable() {
        let mut gate = Gate::new();
        assert!(matches!(
            gate.admit(with(&[]).as_bytes()),
            Admission::Accepted(_)
        ));
        let mut seen = std::collections::BTreeSet::new();
        for text in [
            "nope".to_string(),
            "[]".to_string(),
            without(&["trade_id"]),
            with(&[("version", "1.5")]),
            with(&[("side", r#""HOLD""#)]),
            with(&[("price", r#""0""#)]),
            with(&[("price", r#""1.123456789""#)]),
            with(&[("trade_date", r#""2026-02-29""#)]),
            with(&[("book_id", r#""EQ_US""#)]),
            with(&[("action", r#""AMEND""#)]),
            with(&[("price", r#""100.6""#)]),
        ] {
            match gate.admit(text.as_bytes()) {
                Admission::Rejected(r) => {
                    assert!(!r.detail.is_empty());
                    assert!(!r.detail.starts_with(r.kind.as_str()), "{r}");
                    seen.insert(r.kind);
                }
                other => panic!("{text}: {other:?}"),
            }
        }
        assert_eq!(seen.into_iter().collect::<Vec<_>>(), RejectKind::ALL);
    }

    // --- a valid event --------------------------------------------------------

    #[test]
    fn full_event_parses_every_field() {
        let tv = ok(&with(&[]));
        assert_eq!(
            tv,
            TradeVersion {
                trade_id: "T-1".into(),
                version: 1,
                action: Action::New,
                account_id: "ACC1".into(),
                book_id: "EQ-US".into(),
                security_id: "AAPL".into(),
                side: Some(Side::Buy),
                quantity: Some(dec("10")),
                price: Some(dec("100.5")),
                currency: Some("USD".into()),
                trade_date: Some(Date::from_ymd(2026, 1, 2)),
                trade_time: Some(Instant {
                    secs: 1_767_348_000,
                    nanos: 0
                }),
                sequence: Some(7),
                correlation_id: Some("corr-1".into()),
            }
        );
    }

    #[test]
    fn defaults_are_version_1_and_new() {
        let tv = ok(&without(&[
            "version",
            "action",
            "currency",
            "trade_time",
            "sequence",
            "correlation_id",
        ]));
        assert_eq!((tv.version, tv.action), (1, Action::New));
        assert_eq!(tv.currency, None);
        assert_eq!(tv.trade_time, None);
        assert_eq!(tv.sequence, None);
        assert_eq!(tv.correlation_id, None);
        assert_eq!(ok(&with(&[("side", r#""SELL""#)])).side, Some(Side::Sell));
    }

    #[test]
    fn null_is_absent() {
        assert_eq!(
            ok(&with(&[("version", "null"), ("action", "null")])),
            ok(&without(&["version", "action"]))
        );
        for optional in ["currency", "trade_time", "sequence", "correlation_id"] {
            assert_eq!(
                ok(&with(&[(optional, "null")])),
                ok(&without(&[optional])),
                "{optional}"
            );
        }
        for required in [
            "trade_id",
            "account_id",
            "book_id",
            "security_id",
            "side",
            "quantity",
            "price",
            "trade_date",
        ] {
            let r = rejection(&with(&[(required, "null")]));
            assert_eq!((r.kind, r.detail.as_str()), (MissingField, required));
        }
        // On a CANCEL the fields required only of NEW/AMEND may be null.
        let tv = ok(&build(
            CANCEL,
            &[("side", "null"), ("quantity", "null")],
            &[],
        ));
        assert_eq!((tv.side, tv.quantity), (None, None));
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let extra = with(&[
            ("venue", r#"{"mic":"XNAS","legs":[1,2.5,{"x":null}]}"#),
            ("Quantity", r#""-1""#),
            ("note", "1e400"),
            ("flag", "true"),
        ]);
        assert_eq!(ok(&extra), ok(&with(&[])));
    }

    #[test]
    fn whitespace_escapes_and_deep_nesting_are_json() {
        let text = format!(" \t\r\n{}\r\n", with(&[]));
        assert_eq!(ok(&text), ok(&with(&[])));
        let untimed = without(&["trade_time"]);
        let spaced = untimed.replace(':', " : ").replace(',', " ,\n ");
        assert_eq!(ok(&spaced), ok(&untimed));
        // Escapes are decoded before the checks.
        let tv = ok(&with(&[
            ("trade_id", r#""T\u002d1""#),
            ("correlation_id", r#""a\"b\\c\/\n\u00e9\ud83d\ude00""#),
        ]));
        assert_eq!(tv.trade_id, "T-1");
        assert_eq!(tv.correlation_id.as_deref(), Some("a\"b\\c/\né\u{1F600}"));
        // A container of any depth in an ignored field: no recursion limit.
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(ok(&with(&[("deep", &deep)])), ok(&with(&[])));
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(50_000), "}".repeat(50_000));
        assert_eq!(ok(&with(&[("deep", &deep_objects)])), ok(&with(&[])));
    }

    // --- not_json / not_object / repeated key ------------------------------

    #[test]
    fn not_json() {
        let base = with(&[]);
        for text in [
            "",
            " ",
            "\n",
            "\r\n",
            "\t \t",
            "NaN",
            "Infinity",
            "-Infinity",
            "{",
            "}",
            "{}}",
            "{} {}",
            "{}x",
            r#"{"a":NaN}"#,
            r#"{"a":Infinity}"#,
            r#"{"a":-Infinity}"#,
            r#"{'a':1}"#,
            r#"{a:1}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e}"#,
            r#"{"a":0x10}"#,
            r#"{"a":tru}"#,
            r#"{"a":True}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":[1 2]}"#,
            r#"{"a":{"b"}}"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":"\udc00"}"#,
            r#"{"a":"\ud800\u0041"}"#,
            "{\"a\":\"tab\there\"}",
            "{\"a\":\"unterminated}",
            "\u{feff}{}",
            "[1,2",
        ] {
            assert_eq!(kind(text), NotJson, "{text:?}");
        }
        // Truncated events and invalid UTF-8, even inside a string.
        assert_eq!(kind(&base[..base.len() - 1]), NotJson);
        assert_eq!(kind(&base[1..]), NotJson);
        let mut bad = base.clone().into_bytes();
        bad.insert(10, 0xff);
        assert_eq!(parse_event(&bad).unwrap_err().kind, NotJson);
        assert_eq!(
            parse_event(b"{\"trade_id\":\"\xc3\"}").unwrap_err().kind,
            NotJson
        );
        assert_eq!(parse_event(&[0xff]).unwrap_err().kind, NotJson);
        assert_eq!(rejection("").to_string(), "not_json: empty or blank input");
    }

    #[test]
    fn not_object() {
        for text in [
            "[]",
            "[{\"trade_id\":\"T-1\"}]",
            "1",
            "-0.5e3",
            "\"{}\"",
            "null",
            "true",
            " false ",
        ] {
            assert_eq!(kind(text), NotObject, "{text:?}");
        }
        assert_eq!(
            rejection("[]").to_string(),
            "not_object: the event is an array, not an object"
        );
        // An invalid array is not JSON first.
        assert_eq!(kind("[1,]"), NotJson);
    }

    #[test]
    fn repeated_key_is_malformed() {
        let base = with(&[]);
        let twice = base.replacen('{', r#"{"trade_id":"T-1","#, 1);
        let r = rejection(&twice);
        assert_eq!(
            r.to_string(),
            r#"malformed_field: key "trade_id" is repeated"#
        );
        // Same value, null value, ignored field, or a key spelled with an escape.
        assert_eq!(
            kind(&base.replacen('{', r#"{"price":"100.5","#, 1)),
            MalformedField
        );
        assert_eq!(
            kind(&base.replacen('{', r#"{"currency":null,"#, 1)),
            MalformedField
        );
        assert_eq!(
            kind(&with(&[("x", "1")]).replacen('{', r#"{"x":1,"#, 1)),
            MalformedField
        );
        assert_eq!(
            kind(&base.replacen('{', r#"{"sid\u0065":"BUY","#, 1)),
            MalformedField
        );
        // The repeated-key check comes before every field check.
        assert_eq!(kind(r#"{"a":1,"a":2}"#), MalformedField);
        assert_eq!(kind(r#"{"trade_id":5,"trade_id":"T"}"#), MalformedField);
        // ...but after the JSON check.
        assert_eq!(kind(r#"{"a":1,"a":2"#), NotJson);
        // Repeated keys inside nested values are ignored data.
        assert_eq!(ok(&with(&[("x", r#"{"k":1,"k":2}"#)])), ok(&base));
    }

    // --- ids -----------------------------------------------------------------

    #[test]
    fn ids() {
        for name in ["trade_id", "account_id", "book_id", "security_id"] {
            let r = rejection(&without(&[name]));
            assert_eq!((r.kind, r.detail.as_str()), (MissingField, name));
            for bad in [
                "5",
                "true",
                "[]",
                r#"{"a":"b"}"#,
                r#""""#,
                r#""T_1""#,
                r#""T 1""#,
                r#""T/1""#,
                r#""Tü""#,
                r#"" T1""#,
                &format!("\"{}\"", "A".repeat(65)),
            ] {
                let r = rejection(&with(&[(name, bad)]));
                assert_eq!(r.kind, BadId, "{name} = {bad}");
                assert!(r.detail.starts_with(name), "{r}");
            }
            let long = "a".repeat(64);
            for good in ["a", "Z.9:-x", "0", long.as_str()] {
                ok(&with(&[(name, &format!("\"{good}\""))]));
            }
        }
        assert_eq!(ok(&with(&[("book_id", r#""a.B:9-z""#)])).book_id, "a.B:9-z");
    }

    // --- version, action, bad_version ---------------------------------------

    #[test]
    fn version_is_a_json_integer_in_range() {
        for bad in [
            "1.0",
            "1e0",
            "2E1",
            r#""2""#,
            "true",
            "[2]",
            "0",
            "-0",
            "-1",
            "9223372036854775808",
            "18446744073709551615",
            "18446744073709551616",
            "1e400",
            "123456789012345678901234567890123456789012345678901234567890",
        ] {
            let r = rejection(&with(&[("version", bad)]));
            assert_eq!(r.kind, MalformedField, "version = {bad}");
            assert!(r.detail.starts_with("version"), "{r}");
            assert!(r.detail.len() < 120, "{r}");
        }
        assert_eq!(
            ok(&with(&[("version", "9223372036854775807")])).version,
            i64::MAX as u64
        );
        assert_eq!(ok(&with(&[("version", "1")])).version, 1);
    }

    #[test]
    fn action_enum() {
        for (text, action) in [
            ("NEW", Action::New),
            ("AMEND", Action::Amend),
            ("CANCEL", Action::Cancel),
        ] {
            let tv = ok(&with(&[
                ("version", "2"),
                ("action", &format!("\"{text}\"")),
            ]));
            assert_eq!(tv.action, action);
        }
        for unknown in [r#""new""#, r#""Amend""#, r#""BUY""#, r#""""#, r#"" NEW""#] {
            assert_eq!(
                kind(&with(&[("action", unknown)])),
                UnknownEnum,
                "{unknown}"
            );
        }
        for non_string in ["1", "true", r#"["NEW"]"#, "{}"] {
            assert_eq!(
                kind(&with(&[("action", non_string)])),
                MalformedField,
                "{non_string}"
            );
        }
    }

    #[test]
    fn amend_and_cancel_need_an_explicit_version_of_at_least_2() {
        for action in [r#""AMEND""#, r#""CANCEL""#] {
            for version in [None, Some("null"), Some("1")] {
                let text = match version {
                    None => build(BASE, &[("action", action)], &["version"]),
                    Some(v) => with(&[("action", action), ("version", v)]),
                };
                assert_eq!(kind(&text), BadVersion, "{text}");
            }
            ok(&with(&[("action", action), ("version", "2")]));
        }
        assert_eq!(
            rejection(&with(&[("action", r#""AMEND""#)])).to_string(),
            "bad_version: AMEND needs version >= 2, got 1"
        );
        // NEW may carry any version >= 1.
        assert_eq!(ok(&with(&[("version", "5")])).version, 5);
        // A malformed version is reported as such, before bad_version.
        assert_eq!(
            kind(&with(&[("action", r#""AMEND""#), ("version", "0")])),
            MalformedField
        );
        assert_eq!(
            kind(&with(&[("action", r#""CANCEL""#), ("version", r#""3""#)])),
            MalformedField
        );
        // An AMEND restates everything a NEW requires.
        let amend = with(&[("action", r#""AMEND""#), ("version", "2")]);
        for name in ["side", "quantity", "price", "trade_date"] {
            let text = build(BASE, &[("action", r#""AMEND""#), ("version", "2")], &[name]);
            let r = rejection(&text);
            assert_eq!((r.kind, r.detail.as_str()), (MissingField, name));
        }
        ok(&amend);
    }

    // --- check order ---------------------------------------------------------

    #[test]
    fn first_failing_check_in_table_order_names_the_event() {
        let cases: &[(String, RejectKind, &str)] = &[
            // trade_id before everything
            (
                build(BASE, &[("version", "0"), ("side", "1")], &["trade_id"]),
                MissingField,
                "trade_id",
            ),
            (
                with(&[("trade_id", "1"), ("version", "1.5")]),
                BadId,
                "trade_id",
            ),
            // version before action
            (
                with(&[("version", "1.5"), ("action", r#""X""#)]),
                MalformedField,
                "version",
            ),
            // action before bad_version
            (
                build(BASE, &[("action", "7")], &["version"]),
                MalformedField,
                "action",
            ),
            // bad_version right after action, before account_id
            (
                build(
                    BASE,
                    &[("action", r#""CANCEL""#)],
                    &["version", "account_id"],
                ),
                BadVersion,
                "CANCEL",
            ),
            (
                with(&[("account_id", r#""a b""#), ("book_id", "1")]),
                BadId,
                "account_id",
            ),
            (
                with(&[("book_id", r#""a b""#), ("security_id", "1")]),
                BadId,
                "book_id",
            ),
            (
                build(BASE, &[("book_id", "1")], &["security_id"]),
                BadId,
                "book_id",
            ),
            (
                build(BASE, &[("security_id", "[]")], &["side"]),
                BadId,
                "security_id",
            ),
            (
                build(BASE, &[], &["side", "quantity"]),
                MissingField,
                "side",
            ),
            (
                with(&[("side", r#""buy""#), ("quantity", r#""-1""#)]),
                UnknownEnum,
                "side",
            ),
            (
                with(&[("quantity", r#""0""#), ("price", r#""x""#)]),
                NonPositive,
                "quantity",
            ),
            (
                with(&[("quantity", "1"), ("price", r#""0""#)]),
                MalformedField,
                "quantity",
            ),
            (
                build(BASE, &[("price", r#""0.0""#)], &["quantity"]),
                MissingField,
                "quantity",
            ),
            (
                with(&[("price", r#""1.123456789""#), ("currency", r#""usd""#)]),
                TooManyDecimals,
                "price",
            ),
            (
                with(&[("currency", "1"), ("trade_date", r#""x""#)]),
                MalformedField,
                "currency",
            ),
            (
                build(BASE, &[("currency", r#""US""#)], &["trade_date"]),
                MalformedField,
                "currency",
            ),
            (
                with(&[("trade_date", r#""2026-02-30""#), ("trade_time", "1")]),
                BadDate,
                "trade_date",
            ),
            (
                with(&[("trade_time", "1"), ("sequence", "-1")]),
                MalformedField,
                "trade_time",
            ),
            (
                with(&[("sequence", "-1"), ("correlation_id", "1")]),
                MalformedField,
                "sequence",
            ),
            (
                with(&[("correlation_id", "1")]),
                MalformedField,
                "correlation_id",
            ),
        ];
        for (text, expected, field) in cases {
            let r = rejection(text);
            assert_eq!(r.kind, *expected, "{text}: {r}");
            assert!(r.detail.starts_with(field), "{text}: {r}");
        }
    }

    // --- side ----------------------------------------------------------------

    #[test]
    fn side_enum() {
        assert_eq!(kind(&without(&["side"])), MissingField);
        for unknown in [r#""buy""#, r#""Sell""#, r#""LONG""#, r#""""#] {
            assert_eq!(kind(&with(&[("side", unknown)])), UnknownEnum, "{unknown}");
        }
        for non_string in ["0", "false", r#"["BUY"]"#] {
            assert_eq!(
                kind(&with(&[("side", non_string)])),
                MalformedField,
                "{non_string}"
            );
        }
    }

    // --- decimals ------------------------------------------------------------

    #[test]
    fn decimals() {
        for name in ["quantity", "price"] {
            let check = |raw: &str| rejection(&with(&[(name, raw)]));
            for malformed in [
                "10",
                "10.5",
                "true",
                r#"["10"]"#,
                r#""""#,
                r#""-1""#,
                r#""-0""#,
                r#""+1""#,
                r#""1e5""#,
                r#""1E5""#,
                r#"".5""#,
                r#""5.""#,
                r#"".""#,
                r#""1.2.3""#,
                r#"" 1""#,
                r#""1 ""#,
                r#""1,5""#,
                r#""0x10""#,
                r#""NaN""#,
                r#""١""#,
            ] {
                let r = check(malformed);
                assert_eq!(r.kind, MalformedField, "{name} = {malformed}: {r}");
                assert!(r.detail.starts_with(name), "{r}");
            }
            for zero in [
                r#""0""#,
                r#""000""#,
                r#""0.0""#,
                r#""0.00000000""#,
                r#""0.000000000""#,
                r#""00.0000000000000""#,
            ] {
                assert_eq!(
                    check(zero).to_string(),
                    format!("non_positive: {name} must be > 0")
                );
            }
            for (raw, places) in [
                (r#""1.000000000""#, 9),
                (r#""0.000000001""#, 9),
                (r#""5.12345678901234567890""#, 20),
                (r#""1000000000000000.000000000""#, 9),
            ] {
                assert_eq!(
                    check(raw).to_string(),
                    format!("too_many_decimals: {name} has {places} decimal places")
                );
            }
            for too_large in [
                r#""1000000000000000""#,
                r#""1000000000000000.0""#,
                r#""999999999999999999999999999999999999999""#,
            ] {
                assert_eq!(
                    check(too_large).to_string(),
                    format!("malformed_field: {name} must be < 10^15")
                );
            }
            for (raw, value) in [
                (r#""007.5""#, "7.5"),
                (r#""10.0""#, "10"),
                (r#""0.00000001""#, "0.00000001"),
                (r#""999999999999999.99999999""#, "999999999999999.99999999"),
                (r#""0000000000000000000000000000000000000001""#, "1"),
            ] {
                let tv = ok(&with(&[(name, raw)]));
                let got = if name == "quantity" {
                    tv.quantity
                } else {
                    tv.price
                };
                assert_eq!(got, Some(dec(value)), "{name} = {raw}");
            }
        }
    }

    // --- currency ------------------------------------------------------------

    #[test]
    fn currency() {
        for bad in [
            r#""usd""#,
            r#""Usd""#,
            r#""US""#,
            r#""USDX""#,
            r#""""#,
            r#""U$D""#,
            r#""ÜSD""#,
            "840",
            "true",
        ] {
            let r = rejection(&with(&[("currency", bad)]));
            assert_eq!(r.kind, MalformedField, "{bad}");
            assert!(r.detail.starts_with("currency"), "{r}");
        }
        // The ISO list is not checked.
        assert_eq!(
            ok(&with(&[("currency", r#""XYZ""#)])).currency.as_deref(),
            Some("XYZ")
        );
    }

    // --- trade_date ----------------------------------------------------------

    #[test]
    fn trade_date() {
        assert_eq!(kind(&without(&["trade_date"])), MissingField);
        for bad in [
            r#""2026-02-29""#,
            r#""1900-02-29""#,
            r#""2026-13-01""#,
            r#""2026-00-10""#,
            r#""2026-01-00""#,
            r#""2026-01-32""#,
            r#""2026-04-31""#,
            r#""0000-01-01""#,
            r#""0000-02-29""#,
            r#""2026-1-01""#,
            r#""26-01-01""#,
            r#""20260101""#,
            r#""2026/01/01""#,
            r#""2026-01-01T00:00:00Z""#,
            r#"" 2026-01-01""#,
            r#""2026-01-01 ""#,
            r#""+2026-01-01""#,
            r#""""#,
            "20260101",
            "true",
            r#"["2026-01-01"]"#,
        ] {
            let r = rejection(&with(&[("trade_date", bad)]));
            assert_eq!(r.kind, BadDate, "{bad}");
            assert!(r.detail.starts_with("trade_date"), "{r}");
        }
        for (good, ymd) in [
            ("2024-02-29", (2024, 2, 29)),
            ("2000-02-29", (2000, 2, 29)),
            ("0001-01-01", (1, 1, 1)),
            ("9999-12-31", (9999, 12, 31)),
            ("2026-04-30", (2026, 4, 30)),
        ] {
            let tv = ok(&with(&[("trade_date", &format!("\"{good}\""))]));
            assert_eq!(tv.trade_date.map(Date::ymd), Some(ymd));
        }
    }

    // --- trade_time ----------------------------------------------------------

    #[test]
    fn trade_time_forms() {
        for good in [
            "2026-01-02T10:00:00Z",
            "2026-01-02t10:00:00z",
            "2026-01-02T10:00:00+02:00",
            "2026-01-02T10:00:00-05:30",
            "2026-01-02T10:00:00-00:00",
            "2026-01-02T10:00:00+23:59",
            "2026-01-02T10:00:00.5Z",
            "2026-01-02T10:00:00.123456789Z",
            "2026-01-02T23:59:60Z",
            "2024-02-29T00:00:00Z",
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59.999999999Z",
            // Its date need not equal trade_date.
            "1999-07-04T12:00:00Z",
        ] {
            utc(good);
        }
        for bad in [
            "2026-01-02 10:00:00Z",
            "2026-01-02T10:00:00.1234567890Z",
            "2026-01-02T10:00:00.Z",
            "2026-01-02T10:00:00",
            "2026-01-02T10:00Z",
            "2026-01-02T10:00:00ZZ",
            "2026-01-02T10:00:00Z ",
            " 2026-01-02T10:00:00Z",
            "2026-01-02T10:00:00+0200",
            "2026-01-02T10:00:00+02",
            "2026-01-02T10:00:00+2:00",
            "2026-01-02T10:00:00+24:00",
            "2026-01-02T10:00:00+02:60",
            "2026-01-02T10:00:00UTC",
            "2026-01-02T24:00:00Z",
            "2026-01-02T10:60:00Z",
            "2026-01-02T10:00:61Z",
            "2026-01-02T1:00:00Z",
            "2026-02-29T10:00:00Z",
            "2026-13-01T10:00:00Z",
            "2026-01-00T10:00:00Z",
            "0000-01-01T00:00:00Z",
            "2026-01-02",
            "10:00:00Z",
            "",
            "2026-01-02T10:00:00,5Z",
            "2026-01-02T10:00:00.٥Z",
        ] {
            let r = rejection(&with(&[("trade_time", &format!("{bad:?}"))]));
            assert_eq!(r.kind, MalformedField, "{bad:?}");
            assert!(r.detail.starts_with("trade_time"), "{r}");
        }
        for non_string in ["1767348000", "true", "{}"] {
            assert_eq!(kind(&with(&[("trade_time", non_string)])), MalformedField);
        }
    }

    #[test]
    fn trade_time_is_an_instant_in_utc() {
        assert_eq!(utc("1970-01-01T00:00:00Z"), Instant { secs: 0, nanos: 0 });
        assert_eq!(utc("1969-12-31T23:59:59Z").secs, -1);
        assert_eq!(utc("2026-01-01T00:00:00Z").secs, 1_767_225_600);
        assert_eq!(utc("2000-03-01T00:00:00Z").secs, 11_017 * 86_400);
        assert_eq!(utc("0001-01-01T00:00:00Z").secs, -62_135_596_800);
        assert_eq!(utc("9999-12-31T23:59:59Z").secs, 253_402_300_799);
        assert_eq!(
            utc("2026-01-01T10:00:00+02:00"),
            utc("2026-01-01T08:00:00Z")
        );
        assert_eq!(
            utc("2026-01-01T01:00:00+02:00"),
            utc("2025-12-31T23:00:00Z")
        );
        assert_eq!(
            utc("2025-12-31T19:30:00-05:30"),
            utc("2026-01-01T01:00:00z")
        );
        assert_eq!(
            utc("2026-01-01T10:00:00-00:00"),
            utc("2026-01-01T10:00:00Z")
        );
        assert_eq!(
            utc("2026-01-01T10:00:00+00:00"),
            utc("2026-01-01T10:00:00Z")
        );
        assert_eq!(utc("2026-01-01T10:00:00.5Z").nanos, 500_000_000);
        assert_eq!(utc("2026-01-01T10:00:00.000000001Z").nanos, 1);
        assert_eq!(utc("2026-01-01T10:00:00.123456789Z").nanos, 123_456_789);
        assert_eq!(
            utc("2026-01-01T10:00:00.50Z"),
            utc("2026-01-01T10:00:00.5Z")
        );
        assert!(utc("2026-01-01T10:00:00+02:00") < utc("2026-01-01T09:00:00Z"));
    }

    #[test]
    fn leap_second_sorts_after_59_and_before_the_next_minute() {
        let before = utc("2016-12-31T23:59:59.999999999Z");
        let leap = utc("2016-12-31T23:59:60Z");
        let leap_half = utc("2016-12-31T23:59:60.5Z");
        let next = utc("2017-01-01T00:00:00Z");
        assert_eq!(
            leap,
            Instant {
                secs: utc("2016-12-31T23:59:59Z").secs,
                nanos: 1_000_000_000
            }
        );
        assert_eq!(leap_half.nanos, 1_500_000_000);
        assert!(before < leap && leap < leap_half && leap_half < next);
        // With an offset: the same leap second seen from +01:00.
        assert_eq!(utc("2017-01-01T00:59:60+01:00"), leap);
    }

    // --- sequence and correlation_id ----------------------------------------

    #[test]
    fn sequence() {
        assert_eq!(ok(&with(&[("sequence", "0")])).sequence, Some(0));
        assert_eq!(
            ok(&with(&[("sequence", "9223372036854775807")])).sequence,
            Some(i64::MAX as u64)
        );
        for bad in [
            "-1",
            "1.5",
            "1.0",
            "1e2",
            r#""3""#,
            "9223372036854775808",
            "18446744073709551616",
            "true",
        ] {
            let r = rejection(&with(&[("sequence", bad)]));
            assert_eq!(r.kind, MalformedField, "{bad}");
            assert!(r.detail.starts_with("sequence"), "{r}");
        }
    }

    #[test]
    fn correlation_id() {
        for any in [r#""""#, r#""x y_z/é""#, r#""\u0000""#] {
            ok(&with(&[("correlation_id", any)]));
        }
        for bad in ["1", "true", "[]", "{}"] {
            assert_eq!(
                kind(&with(&[("correlation_id", bad)])),
                MalformedField,
                "{bad}"
            );
        }
    }

    // --- CANCEL --------------------------------------------------------------

    #[test]
    fn cancel_needs_only_ids_and_version() {
        let tv = ok(&build(CANCEL, &[], &[]));
        assert_eq!(tv.action, Action::Cancel);
        assert_eq!(tv.version, 2);
        assert_eq!(
            (tv.side, tv.quantity, tv.price, tv.trade_date),
            (None, None, None, None)
        );
        assert_eq!(tv.booked(), None);
        for name in ["trade_id", "account_id", "book_id", "security_id"] {
            assert_eq!(kind(&build(CANCEL, &[], &[name])), MissingField, "{name}");
        }
    }

    #[test]
    fn fields_present_on_a_cancel_are_still_validated() {
        let cancel = |set: &[(&str, &str)]| build(CANCEL, set, &[]);
        assert_eq!(kind(&cancel(&[("quantity", r#""0""#)])), NonPositive);
        assert_eq!(kind(&cancel(&[("quantity", r#""abc""#)])), MalformedField);
        assert_eq!(
            kind(&cancel(&[("price", r#""1.123456789""#)])),
            TooManyDecimals
        );
        assert_eq!(kind(&cancel(&[("side", r#""HOLD""#)])), UnknownEnum);
        assert_eq!(kind(&cancel(&[("trade_date", r#""2026-02-30""#)])), BadDate);
        assert_eq!(kind(&cancel(&[("currency", r#""eur""#)])), MalformedField);
        let tv = ok(&cancel(&[("side", r#""SELL""#), ("quantity", r#""5""#)]));
        assert_eq!((tv.side, tv.quantity), (Some(Side::Sell), Some(dec("5"))));
    }

    // --- the stateful gate ---------------------------------------------------

    fn admit(gate: &mut Gate, text: &str) -> Admission {
        gate.admit(text.as_bytes())
    }

    #[test]
    fn equal_content_is_a_duplicate() {
        let mut gate = Gate::new();
        let first = with(&[("quantity", r#""10""#)]);
        assert!(matches!(admit(&mut gate, &first), Admission::Accepted(_)));
        for same in [
            first.clone(),
            with(&[("quantity", r#""10.0""#)]),
            with(&[("quantity", r#""010.00000000""#), ("price", r#""100.50""#)]),
            with(&[("trade_time", r#""2026-01-02T12:00:00+02:00""#)]),
            with(&[("extra", r#""ignored""#)]),
            without(&["version", "action"]),
            format!(" {first}\n"),
        ] {
            match admit(&mut gate, &same) {
                Admission::Duplicate(tv) => assert_eq!(tv, ok(&first)),
                other => panic!("{same}: {other:?}"),
            }
        }
        assert_eq!(gate.accepted_count(), 1);
    }

    #[test]
    fn different_content_is_a_conflicting_duplicate_and_the_first_stays() {
        let mut gate = Gate::new();
        let v2 =
            |price: &str| with(&[("action", r#""AMEND""#), ("version", "2"), ("price", price)]);
        assert!(matches!(
            admit(&mut gate, &v2(r#""100.5""#)),
            Admission::Accepted(_)
        ));
        match admit(&mut gate, &v2(r#""101""#)) {
            Admission::Rejected(r) => assert_eq!(
                r.to_string(),
                "conflicting_duplicate: T-1 v2 already accepted with different content"
            ),
            other => panic!("{other:?}"),
        }
        for changed in [
            with(&[
                ("action", r#""AMEND""#),
                ("version", "2"),
                ("currency", "null"),
            ]),
            with(&[
                ("action", r#""AMEND""#),
                ("version", "2"),
                ("sequence", "8"),
            ]),
            with(&[("action", r#""CANCEL""#), ("version", "2")]),
            with(&[
                ("action", r#""AMEND""#),
                ("version", "2"),
                ("trade_time", r#""2026-01-02T10:00:00.000000001Z""#),
            ]),
        ] {
            assert_eq!(
                match admit(&mut gate, &changed) {
                    Admission::Rejected(r) => r.kind,
                    other => panic!("{changed}: {other:?}"),
                },
                ConflictingDuplicate
            );
        }
        // The first copy is still the accepted one.
        assert!(matches!(
            admit(&mut gate, &v2(r#""100.50""#)),
            Admission::Duplicate(_)
        ));
        assert_eq!(gate.accepted_count(), 1);
        // The same content under another version or trade is new.
        assert!(matches!(
            admit(&mut gate, &with(&[])),
            Admission::Accepted(_)
        ));
        assert!(matches!(
            admit(&mut gate, &with(&[("trade_id", r#""T-2""#)])),
            Admission::Accepted(_)
        ));
        assert_eq!(gate.accepted_count(), 3);
    }

    #[test]
    fn lower_version_after_a_higher_one_is_still_accepted() {
        let mut gate = Gate::new();
        let new_v5 = with(&[("version", "5")]);
        let amend_v3 = with(&[
            ("action", r#""AMEND""#),
            ("version", "3"),
            ("quantity", r#""7""#),
        ]);
        assert!(matches!(admit(&mut gate, &new_v5), Admission::Accepted(tv) if tv.version == 5));
        assert!(matches!(admit(&mut gate, &amend_v3), Admission::Accepted(tv) if tv.version == 3));
        assert_eq!(gate.accepted_count(), 2);
    }

    #[test]
    fn rejected_events_change_nothing() {
        let mut gate = Gate::default();
        for bad in ["", "{}", "[]", &with(&[("quantity", r#""0""#)])] {
            assert!(matches!(admit(&mut gate, bad), Admission::Rejected(_)));
        }
        assert_eq!(gate.accepted_count(), 0);
        // A rejected copy does not reserve its (trade_id, version).
        assert!(matches!(
            admit(&mut gate, &with(&[])),
            Admission::Accepted(_)
        ));
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2026, 1, 1), 20_454);
        assert_eq!(days_from_civil(1, 1, 1), -719_162);
        let mut previous = days_from_civil(1, 1, 1) - 1;
        for year in [1u32, 4, 100, 400, 1900, 1970, 2000, 2024, 2026, 9999] {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    let days = days_from_civil(i64::from(year), i64::from(month), i64::from(day));
                    if (month, day) != (1, 1) {
                        assert_eq!(days, previous + 1, "{year}-{month}-{day}");
                    }
                    previous = days;
                }
            }
        }
        assert!(is_leap(2000) && is_leap(2024) && !is_leap(1900) && !is_leap(2026));
    }

    // --- properties ----------------------------------------------------------

    const FIELD_NAMES: &[&str] = &[
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
        "extra",
    ];

    /// A JSON value, as text, biased towards values the fields almost accept.
    fn json_value() -> impl Strategy<Value = String> {
        let interesting = prop::sample::select(vec![
            "null",
            "true",
            "false",
            "0",
            "-0",
            "1",
            "2",
            "-1",
            "1.0",
            "1e400",
            "-1e-400",
            "9223372036854775807",
            "9223372036854775808",
            "18446744073709551616",
            r#""""#,
            r#""T-1""#,
            r#""NEW""#,
            r#""AMEND""#,
            r#""CANCEL""#,
            r#""BUY""#,
            r#""SELL""#,
            r#""USD""#,
            r#""0""#,
            r#""0.000000000""#,
            r#""10.5""#,
            r#""1.123456789""#,
            r#""999999999999999.99999999""#,
            r#""1000000000000000""#,
            r#""2024-02-29""#,
            r#""0000-01-01""#,
            r#""2026-01-02T23:59:60.999999999-23:59""#,
            r#""9999-12-31T23:59:60+00:00""#,
            r#""0001-01-01T00:00:00+23:59""#,
            r#""\ud83d\ude00""#,
            "[]",
            r#"{"a":[1,{"b":null}]}"#,
        ])
        .prop_map(str::to_string);
        let leaf = prop_oneof![
            interesting,
            any::<i64>().prop_map(|n| n.to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(|f| serde_json::to_string(&f).unwrap()),
            "[0-9.]{0,20}".prop_map(|s| format!("\"{s}\"")),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}".prop_map(|s| format!("\"{s}\"")),
            "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,11})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
                .prop_map(|s| format!("\"{s}\"")),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(|items| format!("[{}]", items.join(",")))
        })
    }

    fn json_object() -> impl Strategy<Value = String> {
        prop::collection::vec(
            (prop::sample::select(FIELD_NAMES.to_vec()), json_value()),
            0..18,
        )
        .prop_map(|members| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", body.join(","))
        })
    }

    /// What an accepted version must satisfy whatever the input was.
    fn check_accepted(tv: &TradeVersion) {
        let limit = Dec8::pow10(15);
        assert!(tv.version >= 1 && tv.version <= i64::MAX as u64);
        assert!(tv.action == Action::New || tv.version >= 2);
        for id in [&tv.trade_id, &tv.account_id, &tv.book_id, &tv.security_id] {
            assert!(is_id(id), "{id:?}");
        }
        for value in [tv.quantity, tv.price].into_iter().flatten() {
            assert!(value > Dec8::ZERO && value < limit);
        }
        if tv.action != Action::Cancel {
            assert!(tv.booked().is_some());
        }
        if let Some(date) = tv.trade_date {
            let (y, m, d) = date.ymd();
            assert!(date_exists(y, m, d));
        }
        if let Some(t) = tv.trade_time {
            assert!(t.nanos < 2_000_000_000);
        }
        assert!(tv.sequence.is_none_or(|s| s <= i64::MAX as u64));
    }

    proptest! {
        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(tv) = parse_event(&bytes) {
                check_accepted(&tv);
            }
        }

        #[test]
        fn never_panics_on_arbitrary_objects_of_the_fields(text in json_object()) {
            let result = parse_event(text.as_bytes());
            match &result {
                Ok(tv) => check_accepted(tv),
                Err(r) => {
                    prop_assert!(r.kind != NotJson && r.kind != NotObject, "{}: {}", text, r);
                    prop_assert!(!r.detail.is_empty());
                }
            }
            // Deterministic, and the gate agrees with parse_event.
            prop_assert_eq!(&parse_event(text.as_bytes()), &result);
            let mut gate = Gate::new();
            match (gate.admit(text.as_bytes()), result) {
                (Admission::Accepted(a), Ok(b)) => prop_assert_eq!(a, b),
                (Admission::Rejected(a), Err(b)) => prop_assert_eq!(a, b),
                (other, _) => prop_assert!(false, "{:?}", other),
            }
        }

        #[test]
        fn json_reader_agrees_with_serde_json_on_mutated_events(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4)
        ) {
            let mut bytes = with(&[("extra", r#"{"a":[1,-2.5e3,"\u00e9",true,null]}"#)]).into_bytes();
            for (index, byte, op) in edits {
                let at = index.index(bytes.len() + 1);
                match op {
                    0 => bytes.insert(at, byte),
                    1 if at < bytes.len() => { bytes.remove(at); }
                    _ if at < bytes.len() => bytes[at] = byte,
                    _ => {}
                }
            }
            let ours = parse_event(&bytes);
            if let Ok(tv) = &ours {
                check_accepted(tv);
            }
            match serde_json::from_slice::<serde_json::Value>(&bytes) {
                Ok(_) => prop_assert!(
                    !matches!(&ours, Err(r) if r.kind == NotJson),
                    "{:?}: {:?}", String::from_utf8_lossy(&bytes), ours
                ),
                Err(e) if e.to_string().contains("out of range") => {}
                Err(_) => prop_assert!(
                    matches!(&ours, Err(r) if r.kind == NotJson),
                    "{:?}: {:?}", String::from_utf8_lossy(&bytes), ours
                ),
            }
        }
    }
}
