//! The gate's one-pass reading of a plain event: [`plain_event`] reads the
//! events real feeds send (an object of the table's fields and a few other
//! keys, each value a string without escapes, a small integer or `null`)
//! straight into a [`TradeVersion`], and declines anything else, which the
//! table-order checks of `fields` then read in full and word. Where it reads
//! an event it gives what those checks give (the property tests of
//! `gate::tests` hold it to that): it only accepts, so it needs no error
//! text and no order of checks, and it keeps no value it does not use.

use super::fields::{accepted_decimal, is_id, plain_date, plain_instant};
use super::json::plain_run;
use crate::id::Id;
use crate::trade::{Action, Side, TradeVersion};

/// A member value the one-pass reading takes.
#[derive(Clone, Copy)]
enum Value<'a> {
    /// A string with no escape.
    Text(&'a str),
    /// An integer of 1-18 digits (so below 2^63).
    Integer(u64),
    /// `null`.
    Null,
}

/// How many keys outside the table an event may carry and still be read
/// here (more go to the full checks).
const MAX_OTHER_KEYS: usize = 4;

/// The slots of the table's fields, in table order.
const TRADE_ID: usize = 0;
const VERSION: usize = 1;
const ACTION: usize = 2;
const ACCOUNT_ID: usize = 3;
const BOOK_ID: usize = 4;
const SECURITY_ID: usize = 5;
const SIDE: usize = 6;
const QUANTITY: usize = 7;
const PRICE: usize = 8;
const CURRENCY: usize = 9;
const TRADE_DATE: usize = 10;
const TRADE_TIME: usize = 11;
const SEQUENCE: usize = 12;
const CORRELATION_ID: usize = 13;

/// The event of `text` when it is a plain event every check accepts;
/// `None` when it is not plain or some check would refuse it (the full
/// checks then run). On `Some`, `fields::checked_event` gives the same.
#[inline(always)]
pub(super) fn plain_event(text: &str) -> Option<TradeVersion> {
    let bytes = text.as_bytes();
    let mut at = skip_ws(bytes, 0);
    if bytes.get(at) != Some(&b'{') {
        return None;
    }
    let mut slots: [Option<Value<'_>>; 14] = [None; 14];
    let mut seen = 0u16;
    let mut others: [&[u8]; MAX_OTHER_KEYS] = [&[]; MAX_OTHER_KEYS];
    let mut other_count = 0;
    loop {
        at = skip_ws(bytes, at + 1);
        if bytes.get(at) != Some(&b'"') {
            return None;
        }
        let key_start = at + 1;
        let key_end = key_start + plain_run(bytes.get(key_start..)?);
        if bytes.get(key_end) != Some(&b'"') {
            return None;
        }
        at = skip_ws(bytes, key_end + 1);
        if bytes.get(at) != Some(&b':') {
            return None;
        }
        let (value, after) = value_at(text, skip_ws(bytes, at + 1))?;
        match known_slot(bytes, key_start, key_end - key_start) {
            Some(slot) => {
                let bit = 1u16 << slot;
                if seen & bit != 0 {
                    return None;
                }
                seen |= bit;
                if !matches!(value, Value::Null) {
                    *slots.get_mut(slot)? = Some(value);
                }
            }
            None => {
                // Without escapes, equal raw keys are equal keys.
                let key = bytes.get(key_start..key_end)?;
                let earlier = others.get(..other_count)?;
                if earlier.contains(&key) || other_count == MAX_OTHER_KEYS {
                    return None;
                }
                *others.get_mut(other_count)? = key;
                other_count += 1;
            }
        }
        at = skip_ws(bytes, after);
        match bytes.get(at) {
            Some(b',') => {}
            Some(b'}') => break,
            _ => return None,
        }
    }
    if skip_ws(bytes, at + 1) != bytes.len() {
        return None;
    }
    event_of(&slots)
}

/// The index of the first byte at or after `at` that is not JSON
/// whitespace (`bytes.len()` if none). Every token starts above `b' '`,
/// so a token right at `at` (the common case) costs one comparison.
#[inline(always)]
fn skip_ws(bytes: &[u8], at: usize) -> usize {
    match bytes.get(at) {
        Some(&byte) if byte > b' ' => at,
        _ => skip_ws_run(bytes, at),
    }
}

/// [`skip_ws`] past a run of whitespace, out of line.
#[inline(never)]
fn skip_ws_run(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The value starting at `at` and the index after it: a string without
/// escapes, an integer of 1-18 digits, or `null`; `None` for any other.
#[inline(always)]
fn value_at(text: &str, at: usize) -> Option<(Value<'_>, usize)> {
    let bytes = text.as_bytes();
    match *bytes.get(at)? {
        b'"' => {
            let start = at + 1;
            let end = start + plain_run(bytes.get(start..)?);
            if bytes.get(end) != Some(&b'"') {
                return None;
            }
            Some((Value::Text(text.get(start..end)?), end + 1))
        }
        first @ b'0'..=b'9' => {
            let mut value = 0u64;
            let mut end = at;
            while let Some(digit) = bytes.get(end).and_then(|b| b.checked_sub(b'0')) {
                if digit > 9 {
                    break;
                }
                if end - at == 18 {
                    return None;
                }
                value = value * 10 + u64::from(digit);
                end += 1;
            }
            // A leading zero before another digit is not JSON.
            if first == b'0' && end - at > 1 {
                return None;
            }
            Some((Value::Integer(value), end))
        }
        b'n' if bytes.get(at..at + 4) == Some(b"null") => Some((Value::Null, at + 4)),
        _ => None,
    }
}

/// A key's bytes `line[start..start + len]` read as a little-endian word:
/// the first eight (zero past `len`), and for keys longer than eight the
/// last eight. The key is followed by its closing quote, so a word that
/// runs past it stays inside the line or the reading declines.
#[inline(always)]
fn key_words(line: &[u8], start: usize, len: usize) -> Option<(u64, u64)> {
    let word = |at: usize| {
        line.get(at..)?
            .first_chunk::<8>()
            .map(|w| u64::from_le_bytes(*w))
    };
    let head = word(start)?;
    Some(match len {
        0..=7 => (head & ((1u64 << (8 * len)) - 1), 0),
        8 => (head, 0),
        _ => (head, word(start + len - 8)?),
    })
}

/// Up to eight bytes of `bytes` from `from`, as a little-endian word.
const fn le_word(bytes: &[u8], from: usize) -> u64 {
    let mut word = 0u64;
    let mut i = 0;
    while i < 8 && from + i < bytes.len() {
        word |= (bytes[from + i] as u64) << (8 * i);
        i += 1;
    }
    word
}

/// [`key_words`] of a key written in the source.
const fn name_words(name: &str) -> (u64, u64) {
    let bytes = name.as_bytes();
    let tail = if bytes.len() > 8 {
        le_word(bytes, bytes.len() - 8)
    } else {
        0
    };
    (le_word(bytes, 0), tail)
}

/// The slot of a table field from its key's length and words; `None` for
/// any other key.
#[inline(always)]
fn known_slot(line: &[u8], start: usize, len: usize) -> Option<usize> {
    const K_TRADE_ID: (u64, u64) = name_words("trade_id");
    const K_VERSION: (u64, u64) = name_words("version");
    const K_ACTION: (u64, u64) = name_words("action");
    const K_ACCOUNT_ID: (u64, u64) = name_words("account_id");
    const K_BOOK_ID: (u64, u64) = name_words("book_id");
    const K_SECURITY_ID: (u64, u64) = name_words("security_id");
    const K_SIDE: (u64, u64) = name_words("side");
    const K_QUANTITY: (u64, u64) = name_words("quantity");
    const K_PRICE: (u64, u64) = name_words("price");
    const K_CURRENCY: (u64, u64) = name_words("currency");
    const K_TRADE_DATE: (u64, u64) = name_words("trade_date");
    const K_TRADE_TIME: (u64, u64) = name_words("trade_time");
    const K_SEQUENCE: (u64, u64) = name_words("sequence");
    const K_CORRELATION_ID: (u64, u64) = name_words("correlation_id");
    if !(4..=14).contains(&len) {
        return None;
    }
    let words = key_words(line, start, len)?;
    Some(match (len, words) {
        (4, K_SIDE) => SIDE,
        (5, K_PRICE) => PRICE,
        (6, K_ACTION) => ACTION,
        (7, K_VERSION) => VERSION,
        (7, K_BOOK_ID) => BOOK_ID,
        (8, K_TRADE_ID) => TRADE_ID,
        (8, K_QUANTITY) => QUANTITY,
        (8, K_CURRENCY) => CURRENCY,
        (8, K_SEQUENCE) => SEQUENCE,
        (10, K_ACCOUNT_ID) => ACCOUNT_ID,
        (10, K_TRADE_DATE) => TRADE_DATE,
        (10, K_TRADE_TIME) => TRADE_TIME,
        (11, K_SECURITY_ID) => SECURITY_ID,
        (14, K_CORRELATION_ID) => CORRELATION_ID,
        _ => return None,
    })
}

/// A field required except on CANCEL: `None` when it is missing.
#[inline(always)]
fn required<T>(value: Option<T>, action: Action) -> Option<Option<T>> {
    (value.is_some() || action == Action::Cancel).then_some(value)
}

/// The event of the collected fields when every check accepts them.
#[inline(always)]
fn event_of(slots: &[Option<Value<'_>>; 14]) -> Option<TradeVersion> {
    // `Some(None)`: absent; `None`: present with a value of another kind.
    let text = |slot: usize| match slots.get(slot).copied().flatten() {
        None => Some(None),
        Some(Value::Text(text)) => Some(Some(text)),
        Some(_) => None,
    };
    let integer = |slot: usize| match slots.get(slot).copied().flatten() {
        None => Some(None),
        Some(Value::Integer(value)) => Some(Some(value)),
        Some(_) => None,
    };
    let id = |slot: usize| text(slot)?.filter(|text| is_id(text)).map(Id::from);

    let trade_id = id(TRADE_ID)?;
    let version = integer(VERSION)?;
    let action = match text(ACTION)? {
        None | Some("NEW") => Action::New,
        Some("AMEND") => Action::Amend,
        Some("CANCEL") => Action::Cancel,
        Some(_) => return None,
    };
    let version = match (action, version) {
        (_, Some(0)) => return None,
        (Action::New, version) => version.unwrap_or(1),
        (_, Some(version)) if version >= 2 => version,
        (_, _) => return None,
    };
    let account_id = id(ACCOUNT_ID)?;
    let book_id = id(BOOK_ID)?;
    let security_id = id(SECURITY_ID)?;
    let side = match text(SIDE)? {
        None => None,
        Some("BUY") => Some(Side::Buy),
        Some("SELL") => Some(Side::Sell),
        Some(_) => return None,
    };
    let side = required(side, action)?;
    let decimal = |slot: usize| match text(slot)? {
        None => Some(None),
        Some(text) => accepted_decimal(text).map(Some),
    };
    let quantity = required(decimal(QUANTITY)?, action)?;
    let price = required(decimal(PRICE)?, action)?;
    let currency = match text(CURRENCY)? {
        None => None,
        Some(text) if text.len() == 3 && text.bytes().all(|b| b.is_ascii_uppercase()) => {
            Some(Id::from(text))
        }
        Some(_) => return None,
    };
    let trade_date = match text(TRADE_DATE)? {
        None => None,
        Some(text) => Some(plain_date(text)?),
    };
    let trade_date = required(trade_date, action)?;
    let trade_time = match text(TRADE_TIME)? {
        None => None,
        Some(text) => Some(plain_instant(text)?),
    };
    let sequence = integer(SEQUENCE)?;
    let correlation_id = text(CORRELATION_ID)?.map(Id::from);
    Some(TradeVersion {
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
