//! Writers for the reference output files. Each writer sorts its rows as the
//! spec requires, so the bytes depend only on the set of rows.

use std::io::{self, Write};

use deltabook_dataflows::correction::Correction;
use deltabook_dataflows::engine::DeadLetter;
use deltabook_dataflows::id::Id;
use deltabook_dataflows::position::{Lot, PositionSummary};
use deltabook_dataflows::query::{csv_field, csv_line, Row};
use deltabook_dataflows::reconcile::{BreakRow, GapRow, ValuationRow};
use deltabook_dataflows::runner::CorrectionWriter;
use deltabook_dataflows::sorted::sort_keyed_rows;

/// Errors of the file sinks.
#[derive(Debug, thiserror::Error)]
pub enum FileSinkError {
    /// Writing failed.
    #[error("writing output: {0}")]
    Io(#[from] io::Error),
    /// A correction's delta did not fit the number types.
    #[error(transparent)]
    Delta(#[from] deltabook_dataflows::correction::DeltaOverflow),
}

/// Writes `lots.csv`: header, then rows sorted by `(position_key, lot_id)`.
pub fn write_lots_csv(out: &mut impl Write, lots: &mut [(Id, Lot)]) -> Result<(), FileSinkError> {
    // The whole row is the order's tie-break, so rows that compare equal
    // are equal and the order is the stable sort's by `(position_key,
    // lot_id)`, which a position holds once.
    sort_keyed_rows(lots);
    writeln!(out, "position_key,lot_id,side,open_date,quantity,price")?;
    let mut row = CsvRow::default();
    for (key, lot) in lots.iter() {
        row.text(key)
            .text(&lot.lot_id)
            .text(lot.side.as_str())
            .field(|b| lot.open_date.append_to(b))
            .field(|b| lot.quantity.append_to(b))
            .field(|b| lot.price.append_to(b))
            .write_to(out)?;
    }
    Ok(())
}

/// Writes `positions.csv`: header, then rows sorted by `position_key`,
/// omitting positions with no open lot and zero realized P&L.
pub fn write_positions_csv(
    out: &mut impl Write,
    positions: &mut [(Id, PositionSummary)],
) -> Result<(), FileSinkError> {
    // The summary breaks ties, so equal rows are equal (a position key
    // appears once).
    sort_keyed_rows(positions);
    writeln!(
        out,
        "position_key,quantity,lot_count,cost_basis,realized_pnl"
    )?;
    let mut row = CsvRow::default();
    for (key, s) in positions.iter().filter(|(_, s)| !s.is_omitted()) {
        row.text(key)
            .field(|b| s.quantity.append_to(b))
            // Writing an integer into a Vec cannot fail.
            .field(|b| drop(serde_json::to_writer(b, &s.lot_count)))
            .field(|b| s.cost_basis.append_to(b))
            .field(|b| s.realized_pnl.append_to(b))
            .write_to(out)?;
    }
    Ok(())
}

/// One CSV row built in a reused buffer, its values written without the
/// formatting machinery (`append_to`), then written out at once.
#[derive(Default)]
struct CsvRow {
    bytes: Vec<u8>,
    fields: usize,
}

impl CsvRow {
    /// Appends a field (a comma before every field but the first).
    fn field(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> &mut CsvRow {
        if self.fields > 0 {
            self.bytes.push(b',');
        }
        self.fields += 1;
        write(&mut self.bytes);
        self
    }

    /// Appends a text field as it is (the spec's CSV files quote nothing).
    fn text(&mut self, text: &str) -> &mut CsvRow {
        self.field(|b| b.extend_from_slice(text.as_bytes()))
    }

    /// Writes the row and its newline, and starts an empty one.
    fn write_to(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        self.bytes.push(b'\n');
        let written = out.write_all(&self.bytes);
        self.bytes.clear();
        self.fields = 0;
        written
    }
}

/// Writes `rejected.jsonl`: `{"line": N, "reason": "KIND: detail"}` sorted by line.
pub fn write_rejected_jsonl(
    out: &mut impl Write,
    rejected: &mut [DeadLetter],
) -> Result<(), FileSinkError> {
    rejected.sort_by_key(|d| d.source);
    for d in rejected.iter() {
        let row = serde_json::json!({ "line": d.source.offset, "reason": d.reason.to_string() });
        writeln!(out, "{row}")?;
    }
    Ok(())
}

/// Writes `corrections.jsonl`, one event per line, sorted by `(as_of, position_key)`.
pub fn write_corrections_jsonl(
    out: &mut impl Write,
    corrections: &mut [Correction],
) -> Result<(), FileSinkError> {
    corrections.sort_by(|a, b| (a.as_of, &a.position_key).cmp(&(b.as_of, &b.position_key)));
    let mut writer = CorrectionsJsonl::new(out);
    writer.write_ordered(corrections)?;
    writer.finish()
}

/// `corrections.jsonl` written as a run goes: each call appends corrections
/// already in file order (by `as_of`, then `position_key`), one JSON object
/// per line. As a [`CorrectionWriter`] it takes a run's merged stream.
///
/// It buffers itself: lines are written straight into a buffer of
/// [`CorrectionsJsonl::BUFFER_BYTES`], handed to `out` whole once full
/// (a `BufWriter` around `out` passes writes that large straight
/// through). What is buffered reaches `out` only on [`CorrectionsJsonl::finish`].
pub struct CorrectionsJsonl<W: Write> {
    out: W,
    buffer: Vec<u8>,
}

impl<W: Write> CorrectionsJsonl<W> {
    /// Bytes buffered before they are handed to `out`.
    pub const BUFFER_BYTES: usize = 1 << 20;

    /// A writer appending to `out`.
    pub fn new(out: W) -> CorrectionsJsonl<W> {
        CorrectionsJsonl {
            out,
            buffer: Vec::with_capacity(Self::BUFFER_BYTES),
        }
    }

    /// Appends `corrections`, which the caller has put in file order.
    pub fn write_ordered(&mut self, corrections: &[Correction]) -> Result<(), FileSinkError> {
        for c in corrections {
            c.write_json(&mut self.buffer)?;
            self.buffer.push(b'\n');
            if self.buffer.len() >= Self::BUFFER_BYTES {
                self.out.write_all(&self.buffer)?;
                self.buffer.clear();
            }
        }
        Ok(())
    }

    /// Hands what is buffered to `out` and flushes it.
    pub fn finish(&mut self) -> Result<(), FileSinkError> {
        self.out.write_all(&self.buffer)?;
        self.buffer.clear();
        self.out.flush()?;
        Ok(())
    }
}

impl<W: Write + Send> CorrectionWriter for CorrectionsJsonl<W> {
    fn write(&mut self, corrections: &[Correction]) -> Result<(), String> {
        self.write_ordered(corrections).map_err(|e| e.to_string())
    }

    fn finish(&mut self) -> Result<(), String> {
        CorrectionsJsonl::finish(self).map_err(|e| e.to_string())
    }
}

/// Writes `valuations.csv`: header, then rows sorted by `position_key`.
pub fn write_valuations_csv(
    out: &mut impl Write,
    rows: &mut [ValuationRow],
) -> Result<(), FileSinkError> {
    rows.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    writeln!(out, "position_key,price,market_value,unrealized_pnl")?;
    for r in rows.iter() {
        writeln!(
            out,
            "{},{},{},{}",
            r.position_key, r.price, r.market_value, r.unrealized_pnl
        )?;
    }
    Ok(())
}

/// Writes `breaks.csv`: header, then rows sorted by `position_key`.
pub fn write_breaks_csv(out: &mut impl Write, rows: &mut [BreakRow]) -> Result<(), FileSinkError> {
    rows.sort_by(|a, b| a.position_key.cmp(&b.position_key));
    writeln!(
        out,
        "position_key,as_of_date,kind,internal_quantity,custodian_quantity,difference"
    )?;
    for r in rows.iter() {
        writeln!(
            out,
            "{},{},{},{},{},{}",
            r.position_key,
            r.as_of_date,
            r.kind.as_str(),
            r.internal_quantity,
            r.custodian_quantity,
            r.difference
        )?;
    }
    Ok(())
}

/// Writes a query's answer as CSV: a header of the select list's names,
/// then one line per row in the order given (values in the spec's normal
/// form, NULL empty, fields with a comma, quote or line break quoted).
pub fn write_query_csv(
    out: &mut impl Write,
    columns: &[String],
    rows: &[Row],
) -> Result<(), FileSinkError> {
    let header: Vec<String> = columns.iter().map(|c| csv_field(c)).collect();
    writeln!(out, "{}", header.join(","))?;
    for row in rows {
        writeln!(out, "{}", csv_line(row))?;
    }
    Ok(())
}

/// Writes `gaps.csv`: header, then rows sorted by account byte-wise, then
/// `first_missing` as a number.
pub fn write_gaps_csv(out: &mut impl Write, rows: &mut [GapRow]) -> Result<(), FileSinkError> {
    rows.sort_by(|a, b| (&a.account_id, a.first_missing).cmp(&(&b.account_id, b.first_missing)));
    writeln!(out, "account_id,first_missing,last_missing")?;
    for r in rows.iter() {
        writeln!(
            out,
            "{},{},{}",
            r.account_id, r.first_missing, r.last_missing
        )?;
    }
    Ok(())
}
