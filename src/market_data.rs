//! Synthetic price ticks and custodian statements for a trade file
//! (`reconciliation.md`): what `deltabook generate --prices-out
//! --custodian-out` writes beside the trades, and what the shipped samples
//! are. Deterministic for a seed.
//!
//! - Ticks: one per security per trade date at 16:00Z, a random walk around
//!   the security's first traded price; then a few late ticks older than
//!   the live one (they change nothing), a few ties on the last instant
//!   (the later line wins) and a few invalid lines.
//! - Statements: for every account but the last, the internal quantity of
//!   each position as of the second-to-last trade date, computed from the
//!   trades (first accepted copy of each version, highest version live), with
//!   about 1 in 8 changed (QUANTITY_MISMATCH), 1 in 10 left out
//!   (MISSING_EXTERNAL), one position per account that was never traded
//!   (MISSING_INTERNAL), an older statement before the live one, and a few
//!   invalid lines. The last account has no statement (not covered).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};

use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::gate::parse_event;
use deltabook_dataflows::id::Id;
use deltabook_dataflows::trade::{Date, TradeVersion};

use crate::generate::Rng;

/// What was written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MarketDataStats {
    /// Tick lines.
    pub ticks: usize,
    /// Statement lines.
    pub statements: usize,
}

/// The live booked trades of `lines`: (position, account, security, date, signed quantity, price).
fn live_trades(lines: &[Vec<u8>]) -> Vec<(Id, Id, Id, Date, Dec8, Dec8)> {
    let mut accepted: BTreeSet<(Id, u64)> = BTreeSet::new();
    let mut live: HashMap<Id, TradeVersion> = HashMap::new();
    for line in lines {
        let Ok(v) = parse_event(line) else { continue };
        if !accepted.insert((v.trade_id.clone(), v.version)) {
            continue;
        }
        if live
            .get(&v.trade_id)
            .is_none_or(|cur| cur.version < v.version)
        {
            live.insert(v.trade_id.clone(), v);
        }
    }
    let mut out: Vec<_> = live
        .values()
        .filter_map(|v| {
            let booked = v.booked()?;
            let signed = booked.signed_quantity();
            Some((
                v.position_key(),
                v.account_id.clone(),
                v.security_id.clone(),
                booked.key.trade_date,
                signed,
                booked.price,
            ))
        })
        .collect();
    out.sort();
    out
}

/// A price drifted by `step` thousandths (at least 0.01).
fn drift(price: i128, rng: &mut Rng) -> i128 {
    let step = rng.below(41) as i128 - 20; // -2.0% ..= +2.0%
    (price + price * step / 1000).max(1_000_000)
}

/// Writes ticks and statements for the trade `lines`.
pub fn generate_market_data(
    lines: &[Vec<u8>],
    seed: u64,
    prices: &mut impl Write,
    custodian: &mut impl Write,
) -> io::Result<MarketDataStats> {
    let mut rng = Rng::new(seed ^ 0x005E_ED0F_7A1C);
    let trades = live_trades(lines);
    let mut stats = MarketDataStats::default();
    let dates: BTreeSet<Date> = trades.iter().map(|t| t.3).collect();
    let mut first_price: BTreeMap<&str, Dec8> = BTreeMap::new();
    for t in &trades {
        first_price.entry(t.2.as_str()).or_insert(t.5);
    }
    let mut last_tick: Vec<(String, String, i128)> = Vec::new();
    for (security, price) in &first_price {
        let mut units = price.0;
        for date in &dates {
            units = drift(units, &mut rng);
            writeln!(
                prices,
                r#"{{"security_id":"{security}","price":"{}","as_of":"{date}T16:00:00Z","source":"EOD"}}"#,
                Dec8(units)
            )?;
            stats.ticks += 1;
        }
        if let Some(last) = dates.last() {
            last_tick.push((security.to_string(), last.to_string(), units));
        }
    }
    for (i, (security, date, units)) in last_tick.iter().enumerate() {
        if i % 4 == 0 {
            // Late and old: changes nothing.
            writeln!(
                prices,
                r#"{{"security_id":"{security}","price":"1.01","as_of":"2020-01-02T16:00:00Z","source":"LATE"}}"#
            )?;
            stats.ticks += 1;
        }
        if i % 5 == 0 {
            // The same instant as the live tick, written with an offset and
            // a cent higher: the later line wins.
            writeln!(
                prices,
                r#"{{"security_id":"{security}","price":"{}","as_of":"{date}T17:00:00+01:00","source":"CORR"}}"#,
                Dec8(units + 1_000_000)
            )?;
            stats.ticks += 1;
        }
    }
    for bad in [
        r#"{"security_id":"AAPL","price":"0","as_of":"2026-01-02T16:00:00Z"}"#,
        r#"{"security_id":"AAPL","price":"1.5","as_of":"2026-01-02 16:00:00Z"}"#,
        r#"{"security_id":"AAPL","price":12.5,"as_of":"2026-01-02T16:00:00Z"}"#,
    ] {
        writeln!(prices, "{bad}")?;
        stats.ticks += 1;
    }

    let statement_date = dates.iter().rev().nth(1).or(dates.last()).copied();
    let Some(statement_date) = statement_date else {
        return Ok(stats);
    };
    let mut by_position: BTreeMap<(&str, &str), Dec8> = BTreeMap::new();
    for t in &trades {
        let q = by_position
            .entry((t.1.as_str(), t.0.as_str()))
            .or_insert(Dec8::ZERO);
        if t.3 <= statement_date {
            *q = q.checked_add(t.4).unwrap_or(*q);
        }
    }
    let accounts: BTreeSet<&str> = by_position.keys().map(|(a, _)| *a).collect();
    let uncovered = accounts.last().copied();
    let earlier = dates.iter().next().copied().unwrap_or(statement_date);
    let write_statement = |out: &mut dyn Write, position: &str, q: Dec8, date: Date| {
        let mut parts = position.split('_');
        let (a, b, s) = (
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
            parts.next().unwrap_or_default(),
        );
        writeln!(
            out,
            r#"{{"account_id":"{a}","book_id":"{b}","security_id":"{s}","quantity":"{q}","as_of_date":"{date}","source":"CUST"}}"#
        )
    };
    for ((account, position), quantity) in &by_position {
        if Some(*account) == uncovered || rng.chance(0.1) {
            continue;
        }
        if rng.chance(0.2) {
            // An older statement first: the live one is the later date.
            write_statement(custodian, position, Dec8::ZERO, earlier)?;
            stats.statements += 1;
        }
        let reported = if rng.chance(0.125) {
            quantity
                .checked_add(Dec8((1 + rng.below(50) as i128) * 100_000_000))
                .unwrap_or(*quantity)
        } else {
            *quantity
        };
        write_statement(custodian, position, reported, statement_date)?;
        stats.statements += 1;
    }
    for account in &accounts {
        if Some(*account) == uncovered {
            continue;
        }
        let book = by_position
            .keys()
            .find(|(a, _)| a == account)
            .and_then(|(_, p)| p.split('_').nth(1))
            .unwrap_or("BOOK");
        let never_traded = format!("{account}_{book}_CUSTONLY");
        write_statement(
            custodian,
            &never_traded,
            Dec8(250 * 100_000_000),
            statement_date,
        )?;
        stats.statements += 1;
    }
    for bad in [
        r#"{"account_id":"ACC1","book_id":"B","security_id":"X","quantity":"1.123456789","as_of_date":"2026-01-02"}"#,
        r#"{"account_id":"ACC1","book_id":"B","security_id":"X","quantity":"10","as_of_date":"2026-02-30"}"#,
        r#"{"account_id":"ACC 1","book_id":"B","security_id":"X","quantity":"10","as_of_date":"2026-01-02"}"#,
    ] {
        writeln!(custodian, "{bad}")?;
        stats.statements += 1;
    }
    Ok(stats)
}
