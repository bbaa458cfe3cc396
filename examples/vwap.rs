//! A quant's own dataflow beside the engine: per-security VWAP and net
//! exposure of the live trades, printed as they change.
//!
//! ```sh
//! cargo run --release --example vwap -- data/sample-trades.jsonl
//! ```
//!
//! The closure given to [`Attach`] runs on every worker before the first
//! event. It imports the engine's `trades` table (the live version of every
//! booked trade: an amendment retracts the old version and asserts the new
//! one, a cancel retracts it), keys it by security and sums with a
//! `reduce`. Every change of a security's figures is printed with the
//! engine timestamp it became true at. At the end the example checks its
//! figures against the same sums asked of the engine in SQL, and exits 1 if
//! they differ.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use deltabook::book_file::JsonlFile;
use deltabook_dataflows::id::Id;
use deltabook_dataflows::query::{Number, Plan, Table, TableSet, Value};
use deltabook_dataflows::runner::{self, Attach, RunOptions};
use deltabook_dataflows::trade::Side;

/// `(vwap, net quantity)` of one security.
type Figures = (Option<Number>, Number);

fn number(value: Option<deltabook_dataflows::decimal::Dec8>) -> Number {
    value.map_or(Number::ZERO, Number::from_dec8)
}

fn main() -> Result<()> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "data/sample-trades.jsonl".into());
    // (security, figures) -> net multiplicity, over every worker.
    let live: Arc<Mutex<BTreeMap<(Id, Figures), isize>>> = Arc::default();
    let sink = Arc::clone(&live);
    let attach = Attach::new(TableSet::NONE.with(Table::Trades), move |scope, tables| {
        let Some(trades) = tables.trades.as_mut() else {
            return;
        };
        let sink = Arc::clone(&sink);
        trades
            .import(scope)
            .as_collection(|_trade_id, t| {
                let signed = match t.side {
                    Some(Side::Sell) => number(t.quantity).negated(),
                    _ => number(t.quantity),
                };
                (
                    t.security_id.clone(),
                    (number(t.quantity), number(t.price), signed),
                )
            })
            .reduce(|_security, input, output| {
                let (mut quantity, mut notional, mut net) =
                    (Number::ZERO, Number::ZERO, Number::ZERO);
                for ((q, p, signed), count) in input {
                    let count = Number::from_i128(*count as i128);
                    // Exact 256-bit decimals; an overflow would leave the sum short,
                    // and the check against SQL at the end would fail.
                    let add = |sum: Number, x: Number| {
                        x.checked_mul(count)
                            .and_then(|x| sum.checked_add(x))
                            .unwrap_or(sum)
                    };
                    quantity = add(quantity, *q);
                    notional = add(notional, p.checked_mul(*q).unwrap_or(Number::ZERO));
                    net = add(net, *signed);
                }
                output.push(((notional.checked_div(quantity).ok(), net), 1));
            })
            .inspect(move |((security, figures), time, diff)| {
                if *diff > 0 {
                    let vwap = figures.0.map_or("-".to_string(), |v| v.to_string());
                    println!(
                        "t={time:<4} {security:<12} vwap {vwap:<40} net {}",
                        figures.1
                    );
                }
                if let Ok(mut live) = sink.lock() {
                    *live.entry((security.clone(), *figures)).or_insert(0) += diff;
                }
            });
    });
    let mut options = RunOptions::new(Vec::new(), 1000, 2);
    options.keep_corrections = false;
    options.attach = Some(attach);
    // The same sums asked in SQL, to check the dataflow above.
    let sql = "SELECT security_id, side, SUM(quantity) AS q, SUM(quantity * price) AS n \
               FROM trades GROUP BY security_id, side";
    options.query = Some(Arc::new(Plan::compile(sql)?));
    let source = Arc::new(JsonlFile::open(std::path::Path::new(&path))?);
    let outcome = runner::run(source, &options, None)?;
    let answer = outcome.query.context("the SQL answer")?;

    let mut expected: BTreeMap<Id, (Number, Number, Number)> = BTreeMap::new();
    for row in &answer.rows {
        let [Value::Text(security), Value::Text(side), Value::Number(q), Value::Number(n)] =
            row.as_slice()
        else {
            bail!("unexpected SQL row {row:?}");
        };
        let entry =
            expected
                .entry(security.clone())
                .or_insert((Number::ZERO, Number::ZERO, Number::ZERO));
        entry.0 = entry.0.checked_add(*q)?;
        entry.1 = entry.1.checked_add(*n)?;
        let signed = if side.as_str() == "SELL" {
            q.negated()
        } else {
            *q
        };
        entry.2 = entry.2.checked_add(signed)?;
    }
    let expected: BTreeMap<Id, Figures> = expected
        .into_iter()
        .map(|(security, (q, n, net))| (security, (n.checked_div(q).ok(), net)))
        .collect();
    let live = live.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    let mut ours: BTreeMap<Id, Figures> = BTreeMap::new();
    for ((security, figures), count) in live.iter() {
        match count {
            0 => {}
            1 => {
                ours.insert(security.clone(), *figures);
            }
            other => bail!("{security} held {other} times"),
        }
    }
    if ours != expected {
        bail!("the dataflow's figures differ from SQL's:\n{ours:?}\n{expected:?}");
    }
    eprintln!(
        "{} securities; the dataflow's final figures equal SQL's over the same tables",
        ours.len()
    );
    Ok(())
}
