//! Binary COPY helpers: values tokio-postgres does not encode itself
//! (exact decimals as `numeric`, JSON text as `json`), and a writer that
//! streams rows into one `COPY ... FROM STDIN (FORMAT binary)`.

use std::error::Error;
use std::pin::Pin;

use bytes::{BufMut, BytesMut};
use deltabook_dataflows::calendar::days_from_civil;
use deltabook_dataflows::decimal::Dec8;
use deltabook_dataflows::trade::Date;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};
use tokio_postgres::Transaction;

use super::PgError;

/// A [`Dec8`] as PostgreSQL `numeric` (binary format: base-10000 digits,
/// exact; display scale = the decimal places of its normal form).
#[derive(Clone, Copy, Debug)]
pub(super) struct Numeric(pub Dec8);

impl ToSql for Numeric {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let units = self.0 .0;
        let magnitude = units.unsigned_abs();
        let int_part = magnitude / 100_000_000;
        let frac = (magnitude % 100_000_000) as u32;
        let mut digits: Vec<i16> = Vec::with_capacity(12);
        let mut rest = int_part;
        while rest > 0 {
            digits.push((rest % 10_000) as i16);
            rest /= 10_000;
        }
        let int_groups = digits.len() as i16;
        digits.reverse();
        digits.push((frac / 10_000) as i16);
        digits.push((frac % 10_000) as i16);
        let scale = if frac == 0 {
            0
        } else {
            8 - frac.trailing_zeros_decimal()
        };
        out.put_i16(digits.len() as i16);
        out.put_i16(int_groups - 1);
        out.put_u16(if units < 0 { 0x4000 } else { 0 });
        out.put_i16(scale as i16);
        for d in digits {
            out.put_i16(d);
        }
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::NUMERIC
    }

    to_sql_checked!();
}

/// Trailing decimal zeros of a non-zero number.
trait TrailingZerosDecimal {
    fn trailing_zeros_decimal(self) -> u32;
}

impl TrailingZerosDecimal for u32 {
    fn trailing_zeros_decimal(mut self) -> u32 {
        let mut zeros = 0;
        while self != 0 && self.is_multiple_of(10) {
            self /= 10;
            zeros += 1;
        }
        zeros
    }
}

/// A [`Date`] as PostgreSQL `date` (binary format: days since 2000-01-01).
#[derive(Clone, Copy, Debug)]
pub(super) struct PgDate(pub Date);

impl ToSql for PgDate {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        let (y, m, d) = self.0.ymd();
        let days = days_from_civil(i64::from(y), m, d) - days_from_civil(2000, 1, 1);
        // The gate admits years 1-9999 only: well inside i32 days.
        out.put_i32(i32::try_from(days)?);
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::DATE
    }

    to_sql_checked!();
}

/// JSON text as PostgreSQL `json` (its binary format is the text itself).
#[derive(Debug)]
pub(super) struct JsonText<'a>(pub &'a str);

impl ToSql for JsonText<'_> {
    fn to_sql(
        &self,
        _ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.put_slice(self.0.as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        *ty == Type::JSON
    }

    to_sql_checked!();
}

/// Starts `COPY {table_and_columns} FROM STDIN (FORMAT binary)` inside
/// `tx`; write rows with `writer.as_mut().write(&[..]).await` (values in the
/// order of `types`) and end with `writer.as_mut().finish().await`.
pub(super) async fn start(
    tx: &Transaction<'_>,
    table_and_columns: &str,
    types: &[Type],
) -> Result<Pin<Box<BinaryCopyInWriter>>, PgError> {
    let sink = tx
        .copy_in(&format!(
            "COPY {table_and_columns} FROM STDIN (FORMAT binary)"
        ))
        .await?;
    Ok(Box::pin(BinaryCopyInWriter::new(sink, types)))
}
