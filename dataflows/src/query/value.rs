//! Values of query rows: exact decimal numbers, text, dates, booleans and
//! NULL. Arithmetic is exact; the one rounding a query can do is division
//! (and AVG), to [`DIVISION_SCALE`] fractional digits, half to even.

use std::cmp::Ordering;
use std::fmt;

use ethnum::I256;
use serde::{Deserialize, Serialize};

use crate::decimal::{Amount, Dec8, AMOUNT_SCALE_DIGITS, DEC8_SCALE_DIGITS, POW10_I128};
use crate::id::Id;
use crate::trade::Date;

/// Fractional digits of a quotient (`/` and `AVG`), rounded half to even.
pub const DIVISION_SCALE: u32 = 32;
/// The most fractional digits a number may carry (a product's scale is
/// the sum of its factors'); more is an error, never a rounding.
pub const MAX_SCALE: u32 = 64;

/// A failure while evaluating an expression on a row.
#[derive(
    Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, thiserror::Error,
)]
#[error("{0}")]
pub struct EvalError(pub String);

fn overflow(what: &str) -> EvalError {
    EvalError(format!(
        "numeric overflow in {what} (exact arithmetic, 256-bit)"
    ))
}

/// An exact decimal: `mantissa * 10^-scale`, normalised (no trailing zero
/// in the mantissa when `scale > 0`, zero has scale 0), so equal numbers
/// are equal structurally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Number {
    mantissa: I256,
    scale: u32,
}

fn pow10(exp: u32) -> Option<I256> {
    if let Some(small) = POW10_I128.get(exp as usize) {
        return Some(I256::from(*small));
    }
    let mut value = I256::from(POW10_I128[38]);
    for _ in 38..exp {
        value = value.checked_mul(I256::from(10u8))?;
    }
    Some(value)
}

/// The mantissa as `i64` when it fits (the common case: arithmetic on it
/// then runs in `i128`, exactly, without 256-bit operations).
fn small(mantissa: I256) -> Option<i64> {
    i64::try_from(mantissa).ok()
}

impl Number {
    /// Zero.
    pub const ZERO: Number = Number {
        mantissa: I256::ZERO,
        scale: 0,
    };

    /// `mantissa * 10^-scale`, normalised.
    pub fn new(mantissa: I256, scale: u32) -> Number {
        if let Ok(small) = i128::try_from(mantissa) {
            return Number::from_i128_scaled(small, scale);
        }
        let (mut mantissa, mut scale) = (mantissa, scale);
        let ten = I256::from(10u8);
        while scale > 0 && mantissa % ten == I256::ZERO {
            mantissa /= ten;
            scale -= 1;
        }
        Number { mantissa, scale }
    }

    /// `mantissa * 10^-scale`, normalised, for a mantissa that fits 128
    /// bits (what the 64-bit fast paths and the gate's decimals give):
    /// trailing zeros are stripped in 64 or 128 bits, never in 256.
    fn from_i128_scaled(mantissa: i128, scale: u32) -> Number {
        if mantissa == 0 {
            return Number::ZERO;
        }
        // Most numbers fit 64 bits, where division by a constant is a
        // multiplication; four digits at a time first.
        if let Ok(small) = i64::try_from(mantissa) {
            let (negative, mut magnitude, mut scale) = (small < 0, small.unsigned_abs(), scale);
            while scale >= 4 && magnitude % 10_000 == 0 {
                magnitude /= 10_000;
                scale -= 4;
            }
            while scale > 0 && magnitude % 10 == 0 {
                magnitude /= 10;
                scale -= 1;
            }
            // `magnitude` <= 2^63: its negation fits i128 whatever it is.
            let signed = if negative {
                -i128::from(magnitude)
            } else {
                i128::from(magnitude)
            };
            return Number {
                mantissa: I256::from(signed),
                scale,
            };
        }
        let (mut small, mut scale) = (mantissa, scale);
        while scale > 0 && small % 10 == 0 {
            small /= 10;
            scale -= 1;
        }
        Number {
            mantissa: I256::from(small),
            scale,
        }
    }

    /// An integer.
    pub fn from_i128(value: i128) -> Number {
        Number::new(I256::from(value), 0)
    }

    /// A quantity or price.
    pub fn from_dec8(value: Dec8) -> Number {
        Number::from_i128_scaled(value.0, DEC8_SCALE_DIGITS)
    }

    /// A derived amount.
    pub fn from_amount(value: Amount) -> Number {
        Number::new(value.0, AMOUNT_SCALE_DIGITS)
    }

    /// Reads `digits[.digits]` as written in SQL (at most [`MAX_SCALE`] places).
    pub fn parse(text: &str) -> Option<Number> {
        let (int_part, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int_part.is_empty() && frac.is_empty())
            || !digits_ok(int_part)
            || !digits_ok(frac)
            || frac.len() > MAX_SCALE as usize
        {
            return None;
        }
        let all = format!("{int_part}{frac}");
        let mantissa = I256::from_str_radix(&all, 10).ok()?;
        Some(Number::new(mantissa, frac.len() as u32))
    }

    /// True for zero.
    pub fn is_zero(self) -> bool {
        self.mantissa == I256::ZERO
    }

    /// The mantissa at a larger scale, if it fits.
    fn at_scale(self, scale: u32) -> Option<I256> {
        debug_assert!(scale >= self.scale);
        self.mantissa.checked_mul(pow10(scale - self.scale)?)
    }

    /// Both mantissas at the larger scale in 128 bits, when both fit 64
    /// bits and the scales differ by at most 18 digits (then the aligned
    /// values, and their sum, are exact in 128 bits): the fast path of `+`
    /// and of the order.
    fn aligned_small(self, other: Number) -> Option<(i128, i128, u32)> {
        let (a, b) = (small(self.mantissa)?, small(other.mantissa)?);
        let scale = self.scale.max(other.scale);
        let (up_a, up_b) = (scale - self.scale, scale - other.scale);
        if up_a > 18 || up_b > 18 {
            return None;
        }
        Some((
            i128::from(a) * POW10_I128[up_a as usize],
            i128::from(b) * POW10_I128[up_b as usize],
            scale,
        ))
    }

    fn aligned(self, other: Number) -> Option<(I256, I256, u32)> {
        let scale = self.scale.max(other.scale);
        Some((self.at_scale(scale)?, other.at_scale(scale)?, scale))
    }

    /// Exact sum.
    pub fn checked_add(self, other: Number) -> Result<Number, EvalError> {
        // Fast path: aligned in 128 bits, where the sum is exact too.
        if let Some((a, b, scale)) = self.aligned_small(other) {
            return Ok(Number::from_i128_scaled(a + b, scale));
        }
        let (a, b, scale) = self.aligned(other).ok_or_else(|| overflow("+"))?;
        let sum = a.checked_add(b).ok_or_else(|| overflow("+"))?;
        Ok(Number::new(sum, scale))
    }

    /// Exact difference.
    pub fn checked_sub(self, other: Number) -> Result<Number, EvalError> {
        self.checked_add(other.negated())
    }

    /// Exact product.
    pub fn checked_mul(self, other: Number) -> Result<Number, EvalError> {
        let scale = self.scale + other.scale;
        let number = match (small(self.mantissa), small(other.mantissa)) {
            // Exact in 128 bits.
            (Some(a), Some(b)) => Number::from_i128_scaled(i128::from(a) * i128::from(b), scale),
            _ => Number::new(
                self.mantissa
                    .checked_mul(other.mantissa)
                    .ok_or_else(|| overflow("*"))?,
                scale,
            ),
        };
        if number.scale > MAX_SCALE {
            return Err(EvalError(format!(
                "a product needs more than {MAX_SCALE} fractional digits"
            )));
        }
        Ok(number)
    }

    /// Quotient to [`DIVISION_SCALE`] fractional digits, half to even.
    pub fn checked_div(self, other: Number) -> Result<Number, EvalError> {
        if other.is_zero() {
            return Err(EvalError("division by zero".into()));
        }
        // self / other = (ma * 10^(D + sb - sa)) / mb * 10^-D
        let shift = DIVISION_SCALE + other.scale;
        let (numerator, denominator) = if shift >= self.scale {
            let n = self
                .mantissa
                .checked_mul(pow10(shift - self.scale).ok_or_else(|| overflow("/"))?)
                .ok_or_else(|| overflow("/"))?;
            (n, other.mantissa)
        } else {
            let d = other
                .mantissa
                .checked_mul(pow10(self.scale - shift).ok_or_else(|| overflow("/"))?)
                .ok_or_else(|| overflow("/"))?;
            (self.mantissa, d)
        };
        let mut quotient = numerator / denominator;
        let remainder = numerator % denominator;
        if remainder != I256::ZERO {
            // Compare 2|r| with |d|; ties go to the even quotient.
            let twice = remainder.unsigned_abs() * ethnum::U256::from(2u8);
            let whole = denominator.unsigned_abs();
            let negative = (numerator < I256::ZERO) != (denominator < I256::ZERO);
            let away = match twice.cmp(&whole) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => quotient % I256::from(2u8) != I256::ZERO,
            };
            if away {
                quotient += if negative { -I256::ONE } else { I256::ONE };
            }
        }
        Ok(Number::new(quotient, DIVISION_SCALE))
    }

    /// `-self`.
    pub fn negated(self) -> Number {
        Number {
            mantissa: -self.mantissa,
            scale: self.scale,
        }
    }

    /// `-self`, `None` when it does not fit (the most negative mantissa).
    pub fn checked_neg(self) -> Option<Number> {
        Some(Number {
            mantissa: self.mantissa.checked_neg()?,
            scale: self.scale,
        })
    }

    /// `|self|`.
    pub fn abs(self) -> Number {
        if self.mantissa < I256::ZERO {
            self.negated()
        } else {
            self
        }
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Number) -> Ordering {
        let sign = |n: &Number| n.mantissa.cmp(&I256::ZERO);
        match sign(self).cmp(&sign(other)) {
            Ordering::Equal => {}
            unequal => return unequal,
        }
        if let Some((a, b, _)) = self.aligned_small(*other) {
            return a.cmp(&b);
        }
        match self.aligned(*other) {
            Some((a, b, _)) => a.cmp(&b),
            // The one that does not fit at the common scale is the larger
            // in magnitude (both have the same sign here).
            None => {
                let self_overflows = self.at_scale(self.scale.max(other.scale)).is_none();
                let larger_magnitude = if self_overflows {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
                if self.mantissa < I256::ZERO {
                    larger_magnitude.reverse()
                } else {
                    larger_magnitude
                }
            }
        }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Number) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Number {
    /// The spec's normal form: no exponent, no trailing zeros, `0` for zero.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.mantissa.unsigned_abs().to_string();
        let scale = self.scale as usize;
        if self.mantissa < I256::ZERO {
            f.write_str("-")?;
        }
        if scale == 0 {
            return f.write_str(&digits);
        }
        if digits.len() > scale {
            let (int_part, frac) = digits.split_at(digits.len() - scale);
            write!(f, "{int_part}.{frac}")
        } else {
            write!(f, "0.{}{digits}", "0".repeat(scale - digits.len()))
        }
    }
}

impl Serialize for Number {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (high, low) = self.mantissa.into_words();
        (high, low, self.scale).serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Number {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Number, D::Error> {
        let (high, low, scale) = <(i128, i128, u32)>::deserialize(deserializer)?;
        Ok(Number::new(I256::from_words(high, low), scale))
    }
}

/// One value of a query row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// TRUE / FALSE.
    Bool(bool),
    /// An exact decimal (integers included).
    Number(Number),
    /// A date.
    Date(Date),
    /// Text.
    Text(Id),
}

/// A row: one value per column.
pub type Row = Vec<Value>;

impl Value {
    /// The type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::Date(_) => "date",
            Value::Text(_) => "text",
        }
    }

    /// SQL comparison: `None` when either side is NULL; text compared with
    /// a date is read as a `YYYY-MM-DD` date.
    pub fn compare(&self, other: &Value) -> Result<Option<Ordering>, EvalError> {
        Ok(Some(match (self, other) {
            (Value::Null, _) | (_, Value::Null) => return Ok(None),
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Number(a), Value::Number(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Text(a), Value::Text(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Date(a), Value::Text(b)) => a.cmp(&date_of_text(b)?),
            (Value::Text(a), Value::Date(b)) => date_of_text(a)?.cmp(b),
            (a, b) => {
                return Err(EvalError(format!(
                    "cannot compare {} with {}",
                    a.type_name(),
                    b.type_name()
                )))
            }
        }))
    }

    /// The order of ORDER BY between two non-NULL values (where NULLs go
    /// is the ORDER BY item's to say): [`Value::compare`], and across
    /// types that do not compare, by type.
    pub fn sort_cmp(&self, other: &Value) -> Ordering {
        match self.compare(other) {
            Ok(Some(order)) => order,
            _ => self.cmp(other),
        }
    }
}

/// Reads a `YYYY-MM-DD` text as a date (the gate's rule: the date must exist).
pub fn date_of_text(text: &str) -> Result<Date, EvalError> {
    crate::gate::date_value("date", text).map_err(EvalError)
}

impl fmt::Display for Value {
    /// How a value is written in CSV and JSON output (NULL is empty).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(true) => f.write_str("true"),
            Value::Bool(false) => f.write_str("false"),
            Value::Number(n) => n.fmt(f),
            Value::Date(d) => d.fmt(f),
            Value::Text(t) => f.write_str(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;

    proptest! {
        /// The 64-bit fast paths of `+`, `*` and the order give what 256-bit
        /// arithmetic gives, at and past the edges where they apply
        /// (mantissas near the i64 limits, scales up to 31 apart; a
        /// product's scale stays within MAX_SCALE).
        #[test]
        fn fast_paths_agree_with_256_bit_arithmetic(
            a in prop_oneof![any::<i64>(), -1000i64..1000],
            b in prop_oneof![any::<i64>(), -1000i64..1000],
            sa in 0u32..32,
            sb in 0u32..32,
        ) {
            let (x, y) = (Number::new(I256::from(a), sa), Number::new(I256::from(b), sb));
            let scale = x.scale.max(y.scale);
            let aligned = |v: Number| v.mantissa * pow10(scale - v.scale).unwrap_or(I256::ZERO);
            let sum = Number::new(aligned(x) + aligned(y), scale);
            prop_assert_eq!(x.checked_add(y), Ok(sum));
            let product = Number::new(x.mantissa * y.mantissa, x.scale + y.scale);
            prop_assert_eq!(x.checked_mul(y), Ok(product));
            // The order: the aligned mantissas' order (exact in 256 bits
            // for scales this close).
            prop_assert_eq!(x.cmp(&y), aligned(x).cmp(&aligned(y)));
        }

        /// The 64/128-bit normalisation gives the normal form a plain
        /// 256-bit loop gives (no trailing zero unless the scale is 0, and
        /// the same value), whatever the trailing zeros and the sign.
        #[test]
        fn normalising_in_128_bits_agrees_with_256_bits(
            digits in prop_oneof![any::<i64>().prop_map(i128::from), any::<i128>(), -1000i128..1000],
            zeros in 0u32..20,
            scale in 0u32..40,
        ) {
            let Some(mantissa) = 10i128.checked_pow(zeros).and_then(|p| digits.checked_mul(p)) else {
                return Ok(());
            };
            let (mut m, mut s) = (I256::from(mantissa), scale);
            let ten = I256::from(10u8);
            while s > 0 && m != I256::ZERO && m % ten == I256::ZERO {
                m /= ten;
                s -= 1;
            }
            let expected = if m == I256::ZERO { Number::ZERO } else { Number { mantissa: m, scale: s } };
            prop_assert_eq!(Number::from_i128_scaled(mantissa, scale), expected);
        }
    }

    fn n(text: &str) -> Number {
        match text.strip_prefix('-') {
            Some(rest) => Number::parse(rest).map(Number::negated),
            None => Number::parse(text),
        }
        .unwrap_or_else(|| panic!("bad number {text}"))
    }

    #[test]
    fn normal_form_and_exact_arithmetic() {
        assert_eq!(n("1.500").to_string(), "1.5");
        assert_eq!(n("0.000").to_string(), "0");
        assert_eq!(n("-0.05").to_string(), "-0.05");
        assert_eq!(n("1.5"), n("1.50"));
        assert_eq!(
            n("0.1").checked_add(n("0.2")).map(|x| x.to_string()),
            Ok("0.3".into())
        );
        assert_eq!(
            n("1.25").checked_mul(n("-4")).map(|x| x.to_string()),
            Ok("-5".into())
        );
        assert_eq!(
            n("3").checked_sub(n("3.5")).map(|x| x.to_string()),
            Ok("-0.5".into())
        );
        let third = n("1").checked_div(n("3")).map(|x| x.to_string());
        assert_eq!(third, Ok(format!("0.{}", "3".repeat(32))));
        let two_thirds = n("2").checked_div(n("3")).map(|x| x.to_string());
        assert_eq!(two_thirds, Ok(format!("0.{}7", "6".repeat(31))));
        assert_eq!(
            n("10").checked_div(n("4")).map(|x| x.to_string()),
            Ok("2.5".into())
        );
        assert!(n("1").checked_div(Number::ZERO).is_err());
        let big = Number::new(I256::MAX, 0);
        assert!(big.checked_add(n("1")).is_err());
    }

    #[test]
    fn numeric_order_across_scales() {
        assert!(n("1.5") < n("2"));
        assert!(n("-1.5") < n("-1.25"));
        assert!(n("100") > n("99.99999999"));
        // 10^70 does not fit at scale 30; it is still the larger.
        let huge = Number::new(pow10(70).unwrap_or(I256::MAX), 0);
        assert!(huge > n("0.000000000000000000000000000001"));
        assert!(huge.negated() < n("-0.000000000000000000000000000001"));
    }

    #[test]
    fn dates_compare_with_text() {
        let d = Value::Date(Date::from_ymd(2026, 11, 2));
        let t = Value::Text("2026-11-03".into());
        assert_eq!(d.compare(&t), Ok(Some(Ordering::Less)));
        assert!(d.compare(&Value::Text("soon".into())).is_err());
        assert_eq!(d.compare(&Value::Null), Ok(None));
    }
}
