//! Correction events (`corrections.md`): one per position per engine
//! timestamp at which the position's state changed.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::decimal::{Amount, Dec8};
use crate::gate::is_plain;
use crate::id::Id;
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

/// Appends `text` as a JSON string, escaped as serde_json escapes it
/// (control characters, `"` and `\`): text with none of those (ids, as
/// a rule; the gate's [`is_plain`] checks) is copied between quotes as it
/// is.
fn json_str(out: &mut Vec<u8>, text: &str) {
    if is_plain(text.as_bytes()) {
        json_plain(out, text);
    } else {
        // Writing into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Appends an enum's name (`as_str` of a side, action or lot method:
/// capital letters only, nothing to escape) in quotes, unchecked: 1.8M
/// of the 4.2M strings of a 1M-line stream's corrections are these.
fn json_name(out: &mut Vec<u8>, name: &'static str) {
    debug_assert!(is_plain(name.as_bytes()), "{name:?}");
    json_plain(out, name);
}

/// Appends `text`, which has nothing to escape, in quotes (one
/// reservation for the quotes and the text).
fn json_plain(out: &mut Vec<u8>, text: &str) {
    out.reserve(text.len() + 2);
    json_quoted(out, |o| o.extend_from_slice(text.as_bytes()));
}

/// Appends `write`'s text in quotes (text with nothing to escape: decimals,
/// dates, plain strings).
fn json_quoted(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    out.push(b'"');
    write(out);
    out.push(b'"');
}

/// Appends an integer as JSON.
fn json_int(out: &mut Vec<u8>, value: impl Serialize) {
    // Writing an integer into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &value);
}

fn write_summary(out: &mut Vec<u8>, quantity: &Dec8, cost: &Amount, pnl: &Amount, lots: i128) {
    out.extend_from_slice(b"{\"quantity\":");
    json_quoted(out, |o| quantity.append_to(o));
    out.extend_from_slice(b",\"cost_basis\":");
    json_quoted(out, |o| cost.append_to(o));
    out.extend_from_slice(b",\"realized_pnl\":");
    json_quoted(out, |o| pnl.append_to(o));
    out.extend_from_slice(b",\"lot_count\":");
    json_int(out, lots);
    out.push(b'}');
}

fn write_lots(out: &mut Vec<u8>, lots: &[Lot]) {
    out.push(b'[');
    for (i, lot) in lots.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"lot_id\":");
        json_str(out, &lot.lot_id);
        out.extend_from_slice(b",\"side\":");
        json_name(out, lot.side.as_str());
        out.extend_from_slice(b",\"open_date\":");
        json_quoted(out, |o| lot.open_date.append_to(o));
        out.extend_from_slice(b",\"quantity\":");
        json_quoted(out, |o| lot.quantity.append_to(o));
        out.extend_from_slice(b",\"price\":");
        json_quoted(out, |o| lot.price.append_to(o));
        out.push(b'}');
    }
    out.push(b']');
}

impl Cause {
    /// Appends [`Cause::to_json`] as compact JSON text, without building it.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        match self {
            Cause::MethodChange(m) => {
                out.extend_from_slice(b"{\"method_change\":");
                json_name(out, m.as_str());
                out.push(b'}');
            }
            Cause::Trade {
                trade_id,
                version,
                action,
                backdated,
                correlation_id,
            } => {
                out.extend_from_slice(b"{\"trade_id\":");
                json_str(out, trade_id);
                out.extend_from_slice(b",\"version\":");
                json_int(out, version);
                out.extend_from_slice(b",\"action\":");
                json_name(out, action.as_str());
                out.extend_from_slice(if *backdated {
                    b",\"backdated\":true"
                } else {
                    b",\"backdated\":false"
                });
                if let Some(id) = correlation_id {
                    out.extend_from_slice(b",\"correlation_id\":");
                    json_str(out, id);
                }
                out.push(b'}');
            }
        }
    }
}

impl Correction {
    /// `after - before`: quantity, cost basis, realized P&L and lot count.
    fn delta(&self) -> Result<(Dec8, Amount, Amount, i128), DeltaOverflow> {
        let overflow = || DeltaOverflow(self.position_key.to_string());
        let (before, after) = (&self.before, &self.after);
        let quantity = after
            .quantity
            .checked_sub(before.quantity)
            .ok_or_else(overflow)?;
        let cost = after
            .cost_basis
            .checked_sub(before.cost_basis)
            .ok_or_else(overflow)?;
        let pnl = after
            .realized_pnl
            .checked_sub(before.realized_pnl)
            .ok_or_else(overflow)?;
        let lots = i128::from(after.lot_count) - i128::from(before.lot_count);
        Ok((quantity, cost, pnl, lots))
    }

    /// Appends the event as compact JSON text: byte for byte what
    /// `to_json()?.to_string()` gives, written directly (no `Value` tree).
    pub fn write_json(&self, out: &mut Vec<u8>) -> Result<(), DeltaOverflow> {
        let (quantity, cost, pnl, lots) = self.delta()?;
        let mut parts = self.position_key.splitn(3, '_');
        out.extend_from_slice(b"{\"position_key\":");
        json_str(out, &self.position_key);
        for name in ["account_id", "book_id", "security_id"] {
            out.extend_from_slice(b",\"");
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            json_str(out, parts.next().unwrap_or_default());
        }
        out.extend_from_slice(b",\"as_of\":");
        json_int(out, self.as_of);
        out.extend_from_slice(b",\"cause\":[");
        for (i, cause) in self.cause.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            cause.write_json(out);
        }
        out.extend_from_slice(b"]");
        for (name, s) in [
            (&b",\"before\":"[..], &self.before),
            (b",\"after\":", &self.after),
        ] {
            out.extend_from_slice(name);
            let lots = s.lot_count.into();
            write_summary(out, &s.quantity, &s.cost_basis, &s.realized_pnl, lots);
        }
        out.extend_from_slice(b",\"delta\":");
        write_summary(out, &quantity, &cost, &pnl, lots);
        out.extend_from_slice(b",\"lots_closed\":");
        write_lots(out, &self.lots_closed);
        out.extend_from_slice(b",\"lots_opened\":");
        write_lots(out, &self.lots_opened);
        out.push(b'}');
        Ok(())
    }

    /// The event as the JSON object of `corrections.md`, keys in its order.
    pub fn to_json(&self) -> Result<Value, DeltaOverflow> {
        let mut parts = self.position_key.splitn(3, '_');
        let account = parts.next().unwrap_or_default();
        let book = parts.next().unwrap_or_default();
        let security = parts.next().unwrap_or_default();
        let cause: Vec<Value> = self.cause.iter().map(Cause::to_json).collect();
        let (quantity, cost, pnl, lots) = self.delta()?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::position::LotSide;
    use crate::trade::Date;

    fn summary(quantity: &str, lots: u64, cost: &str, pnl: &str) -> PositionSummary {
        PositionSummary {
            quantity: quantity.parse().unwrap(),
            lot_count: lots,
            cost_basis: cost.parse().unwrap(),
            realized_pnl: pnl.parse().unwrap(),
        }
    }

    fn lot(id: &str, side: LotSide, quantity: &str, price: &str) -> Lot {
        Lot {
            lot_id: id.into(),
            side,
            open_date: Date::from_ymd(2026, 1, 2),
            quantity: quantity.parse().unwrap(),
            price: price.parse().unwrap(),
        }
    }

    proptest::proptest! {
        /// A string is written exactly as serde_json writes it, escapes
        /// (control characters, quotes, backslashes) and non-ASCII included.
        #[test]
        fn strings_are_written_as_serde_json_writes_them(text in "(\\PC|[\\x00-\\x1f\"\\\\\\x7f])*") {
            let mut direct = Vec::new();
            json_str(&mut direct, &text);
            proptest::prop_assert_eq!(direct, serde_json::to_vec(&text).unwrap());
        }
    }

    /// Every ASCII character, at every place of strings of 1-33 bytes
    /// (16-byte blocks and an overlapping last block, two words, two
    /// halves, single bytes), is written as serde_json writes it.
    #[test]
    fn each_ascii_character_anywhere_is_written_as_serde_json_writes_it() {
        for c in (0u8..0x80).map(char::from) {
            for len in 1..=33 {
                for at in 0..len {
                    let mut text: Vec<char> = vec!['a'; len];
                    text[at] = c;
                    let text: String = text.into_iter().collect();
                    let mut direct = Vec::new();
                    json_str(&mut direct, &text);
                    assert_eq!(direct, serde_json::to_vec(&text).unwrap(), "{text:?}");
                }
            }
        }
    }

    /// The direct writer gives exactly serde_json's text of `to_json`.
    #[test]
    fn write_json_is_byte_identical_to_the_value_form() {
        let odd_ids = ["c-1", "quote\"back\\slash", "ctrl\u{1}\n\t", "ünï €", ""];
        let mut cases = vec![Correction {
            position_key: "ACC1_EQ-US_AIR.PA".into(),
            as_of: 7,
            cause: vec![Cause::MethodChange(LotMethod::Hifo)],
            before: summary("0", 0, "0", "0"),
            after: summary("10.5", 1, "1050.25", "0"),
            lots_closed: vec![],
            lots_opened: vec![lot("T1", LotSide::Long, "10.5", "100.02380952")],
        }];
        for (i, id) in odd_ids.iter().enumerate() {
            cases.push(Correction {
                position_key: "A_B_C:D".into(),
                as_of: u64::MAX - i as u64,
                cause: vec![
                    Cause::Trade {
                        trade_id: "T9".into(),
                        version: 3,
                        action: Action::Amend,
                        backdated: i % 2 == 0,
                        correlation_id: Some((*id).into()),
                    },
                    Cause::Trade {
                        trade_id: "T10".into(),
                        version: 1,
                        action: Action::Cancel,
                        backdated: false,
                        correlation_id: None,
                    },
                ],
                before: summary("-5", 2, "-500.5", "12.25"),
                after: summary("3", 1, "300", "-7.00000001"),
                lots_closed: vec![
                    lot("T2", LotSide::Short, "2", "100"),
                    lot("T3", LotSide::Short, "3", "100.1"),
                ],
                lots_opened: vec![lot("T9", LotSide::Long, "3", "100")],
            });
        }
        for case in cases {
            let mut direct = Vec::new();
            case.write_json(&mut direct).unwrap();
            let expected = case.to_json().unwrap().to_string();
            assert_eq!(String::from_utf8(direct).unwrap(), expected);
        }
    }
}
