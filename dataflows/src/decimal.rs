//! Exact decimal numbers: [`Dec8`] for quantities and prices as they arrive
//! (8 fractional digits, 128 bits) and [`Amount`] for everything derived from
//! them (16 fractional digits, 256 bits, about 60 integer digits).
//!
//! Nothing here ever rounds: a product of two `Dec8` is exact in `Amount`, and
//! every operation that could overflow is checked and returns `None`.

use std::fmt;
use std::str::FromStr;

use ethnum::I256;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Number of fractional digits of a [`Dec8`].
pub const DEC8_SCALE_DIGITS: u32 = 8;
/// Number of fractional digits of an [`Amount`].
pub const AMOUNT_SCALE_DIGITS: u32 = 16;
const DEC8_ONE: i128 = 100_000_000;
/// 10^(8 - places): the scale of a fraction written with `places` digits
/// (0-8).
const FRACTION_SCALE: [u64; 9] = [
    100_000_000,
    10_000_000,
    1_000_000,
    100_000,
    10_000,
    1_000,
    100,
    10,
    1,
];

/// An exact decimal with exactly 8 fractional digits, stored as an integer
/// count of 10^-8 units. Holds every quantity and price the gate accepts
/// (< 10^15 with at most 8 places) and sums of up to ~10^15 of them.
///
/// Aligned to 8 bytes, not an `i128`'s 16 (`packed(8)`): records of
/// decimals and 8-byte fields then need no padding, which makes the book's
/// copy of a trade 80 bytes instead of 96. The integer is read by value
/// (`{ d.0 }` where a reference would be taken), never borrowed.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[repr(C, packed(8))]
pub struct Dec8(pub i128);

/// Why a decimal string could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalParseError {
    /// Not of the form `digits[.digits]`.
    #[error("not a decimal of the form digits[.digits]")]
    Malformed,
    /// More fractional digits than the type holds; carries the count written.
    #[error("{0} decimal places")]
    TooManyDecimals(usize),
    /// The integer part does not fit.
    #[error("value too large")]
    TooLarge,
}

impl Dec8 {
    /// Zero.
    pub const ZERO: Dec8 = Dec8(0);

    /// Parses `digits[.digits]` (no sign, no exponent, at most 8 places,
    /// leading zeros allowed). Decimal places are counted as written, so
    /// `"1.000000000"` is `TooManyDecimals(9)`.
    pub fn parse(text: &str) -> Result<Dec8, DecimalParseError> {
        match Dec8::parse_plain(text.as_bytes()) {
            Some(value) => Ok(value),
            None => Dec8::parse_checked(text),
        }
    }

    /// The value of a text of 1-10 digits, optionally followed by `.` and
    /// 1-8 digits (every quantity and price of a real feed), read in one
    /// pass and accumulated in a `u64` (below 10^10 * 10^8 = 10^18). `None`
    /// for any other text, which [`Dec8::parse_checked`] reads; on `Some`
    /// both agree.
    #[inline(always)]
    fn parse_plain(bytes: &[u8]) -> Option<Dec8> {
        let digit = |at: usize| {
            bytes
                .get(at)
                .and_then(|b| b.checked_sub(b'0'))
                .filter(|d| *d <= 9)
        };
        let mut integer = 0u64;
        let mut at = 0;
        while let Some(d) = digit(at) {
            if at == 10 {
                return None;
            }
            integer = integer * 10 + u64::from(d);
            at += 1;
        }
        if at == 0 {
            return None;
        }
        let mut units = integer * DEC8_ONE as u64;
        if at < bytes.len() {
            if bytes.get(at) != Some(&b'.') {
                return None;
            }
            let start = at + 1;
            at = start;
            let mut fraction = 0u64;
            while let Some(d) = digit(at) {
                if at - start == DEC8_SCALE_DIGITS as usize {
                    return None;
                }
                fraction = fraction * 10 + u64::from(d);
                at += 1;
            }
            if at != bytes.len() {
                return None;
            }
            units += fraction * FRACTION_SCALE.get(at - start).filter(|_| at > start)?;
        }
        Some(Dec8(i128::from(units)))
    }

    /// [`Dec8::parse`] of any text, every check in order.
    fn parse_checked(text: &str) -> Result<Dec8, DecimalParseError> {
        // One pass over the bytes: the integer digits, then `.` and the
        // fractional digits; the checks in the order above.
        let bytes = text.as_bytes();
        let int_len = bytes
            .iter()
            .position(|b| !b.is_ascii_digit())
            .unwrap_or(bytes.len());
        let (int_part, rest) = bytes.split_at(int_len);
        let frac: &[u8] = match rest {
            [] => &[],
            [b'.', frac @ ..] if !frac.is_empty() && frac.iter().all(u8::is_ascii_digit) => frac,
            _ => return Err(DecimalParseError::Malformed),
        };
        if int_part.is_empty() {
            return Err(DecimalParseError::Malformed);
        }
        if frac.len() > DEC8_SCALE_DIGITS as usize {
            return Err(DecimalParseError::TooManyDecimals(frac.len()));
        }
        let leading_zeros = int_part.iter().take_while(|b| **b == b'0').count();
        let significant = int_part.get(leading_zeros..).unwrap_or_default();
        // 10^29 units of 10^-8 still fit an i128 comfortably; anything longer is too large.
        if significant.len() > 29 {
            return Err(DecimalParseError::TooLarge);
        }
        // Up to 18 digits fit a u64, which is cheaper to accumulate in.
        let digits_u64 = |part: &[u8]| {
            part.iter()
                .fold(0u64, |acc, b| acc * 10 + u64::from(b - b'0'))
        };
        let scale = FRACTION_SCALE.get(frac.len()).copied().unwrap_or(1);
        // The common case: at most 10 integer digits, so the whole value in
        // units of 10^-8 is below 10^18 and is built in a u64.
        if significant.len() <= 10 {
            let units = digits_u64(significant) * DEC8_ONE as u64 + digits_u64(frac) * scale;
            return Ok(Dec8(i128::from(units)));
        }
        let int_part = match significant.len() {
            0..=18 => i128::from(digits_u64(significant)),
            _ => significant
                .iter()
                .fold(0i128, |acc, b| acc * 10 + i128::from(b - b'0')),
        };
        Ok(Dec8(
            int_part * DEC8_ONE + i128::from(digits_u64(frac) * scale),
        ))
    }

    /// The value 10^exp (exp <= 29).
    pub fn pow10(exp: u32) -> Dec8 {
        Dec8(10i128.pow(exp) * DEC8_ONE)
    }

    /// True when the value is zero.
    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Checked sum.
    pub fn checked_add(self, other: Dec8) -> Option<Dec8> {
        self.0.checked_add(other.0).map(Dec8)
    }

    /// Checked difference.
    pub fn checked_sub(self, other: Dec8) -> Option<Dec8> {
        self.0.checked_sub(other.0).map(Dec8)
    }

    /// Negation (cannot overflow for values the gate admits).
    pub fn negated(self) -> Dec8 {
        Dec8(-self.0)
    }

    /// The smaller of two values.
    pub fn min(self, other: Dec8) -> Dec8 {
        if self <= other {
            self
        } else {
            other
        }
    }

    /// This value as an [`Amount`] (exact).
    pub fn to_amount(self) -> Amount {
        Amount(I256::from(self.0) * I256::from(DEC8_ONE))
    }

    /// The exact product `self * other` as an [`Amount`]; `None` on overflow
    /// (impossible for two values below 10^29).
    pub fn checked_mul(self, other: Dec8) -> Option<Amount> {
        // Two mantissas that fit 64 bits multiply exactly in 128 (every
        // quantity and price below ~9.2e10 does): one machine multiply
        // instead of a 256-bit one.
        if let (Ok(a), Ok(b)) = (i64::try_from(self.0), i64::try_from(other.0)) {
            return Some(Amount(I256::from(i128::from(a) * i128::from(b))));
        }
        I256::from(self.0)
            .checked_mul(I256::from(other.0))
            .map(Amount)
    }
}

/// An exact decimal with 16 fractional digits in 256 bits: notional, cost
/// basis, realized P&L. Every operation is checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub I256);

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount(I256::ZERO);

    /// Checked sum.
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0.checked_add(other.0).map(Amount)
    }

    /// Checked difference.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// Checked negation.
    pub fn checked_neg(self) -> Option<Amount> {
        self.0.checked_neg().map(Amount)
    }

    /// True when the value is zero.
    pub fn is_zero(self) -> bool {
        self.0 == I256::ZERO
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0.into_words().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let (hi, lo) = <(i128, i128)>::deserialize(deserializer)?;
        Ok(Amount(I256::from_words(hi, lo)))
    }
}

/// Room for the decimal digits of any unsigned 256-bit integer (78).
const MAX_DIGITS: usize = 78;

/// Where a decimal's text goes: a formatter (`Display`) or a byte buffer
/// (the JSON and CSV writers, without the formatting machinery).
trait TextSink {
    fn put(&mut self, text: &[u8]) -> fmt::Result;
}

impl TextSink for fmt::Formatter<'_> {
    fn put(&mut self, text: &[u8]) -> fmt::Result {
        // Only ASCII digits, `-` and `.` reach here.
        self.write_str(std::str::from_utf8(text).map_err(|_| fmt::Error)?)
    }
}

impl TextSink for Vec<u8> {
    fn put(&mut self, text: &[u8]) -> fmt::Result {
        self.extend_from_slice(text);
        Ok(())
    }
}

/// Writes the decimal digits of `value` right-aligned at the end of `buf`
/// ([`u64_digits`] once the value fits 64 bits); returns their count.
///
/// # Panics
/// When `buf` is shorter than the digits (an engine bug: callers size it).
fn u128_digits(mut value: u128, buf: &mut [u8]) -> usize {
    let end = buf.len();
    let mut at = end;
    while value > u128::from(u64::MAX) {
        at -= 1;
        buf[at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
    at -= u64_digits(value as u64, &mut buf[..at]);
    end - at
}

/// Writes the decimal digits of `value` (no leading zeros; `0` for zero)
/// right-aligned at the end of `buf`, two digits per division; returns
/// their count.
///
/// # Panics
/// When `buf` is shorter than the digits (an engine bug: callers size it).
fn u64_digits(mut value: u64, buf: &mut [u8]) -> usize {
    const PAIRS: &[u8; 200] = b"0001020304050607080910111213141516171819\
        2021222324252627282930313233343536373839\
        4041424344454647484950515253545556575859\
        6061626364656667686970717273747576777879\
        8081828384858687888990919293949596979899";
    let end = buf.len();
    let mut at = end;
    while value >= 100 {
        let pair = (value % 100) as usize * 2;
        value /= 100;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    }
    if value >= 10 {
        let pair = value as usize * 2;
        at -= 2;
        buf[at..at + 2].copy_from_slice(&PAIRS[pair..pair + 2]);
    } else {
        at -= 1;
        buf[at] = b'0' + value as u8;
    }
    end - at
}

/// `10^exp` for every `exp` that fits `i128` (up to 38), built at compile time.
pub(crate) const POW10_I128: [i128; 39] = {
    let mut table = [1i128; 39];
    let mut i = 1;
    while i < 39 {
        table[i] = table[i - 1] * 10;
        i += 1;
    }
    table
};

/// `10^k` as a `u64`, for `k <= 19`.
#[inline(always)]
fn pow10_u64(k: usize) -> u64 {
    debug_assert!(k <= 19);
    // 10^19 < 2^64: the cast keeps the value.
    POW10_I128[k] as u64
}

/// `frac` (not 0, below 10^`places`) without its trailing zeros, and the
/// places it keeps (stripped 8, 4, 2 and 1 at a time: at the widest scale,
/// 16 places, at most 15 go), each step dividing by a constant.
#[inline(always)]
fn strip_trailing_zeros(mut frac: u64, mut places: usize) -> (u64, usize) {
    debug_assert!(frac != 0);
    strip_zeros_step::<8>(&mut frac, &mut places);
    strip_zeros_step::<4>(&mut frac, &mut places);
    strip_zeros_step::<2>(&mut frac, &mut places);
    strip_zeros_step::<1>(&mut frac, &mut places);
    (frac, places)
}

/// One step of [`strip_trailing_zeros`]: drops `ZEROS` trailing zeros of
/// `frac` (and as many places) when it has them.
#[inline(always)]
fn strip_zeros_step<const ZEROS: usize>(frac: &mut u64, places: &mut usize) {
    let unit = pow10_u64(ZEROS);
    if frac.is_multiple_of(unit) {
        *frac /= unit;
        *places -= ZEROS;
    }
}

/// Writes a decimal normalised: no trailing zeros, no exponent, no `-0`.
/// `int_digits` writes the integer part's digits (no leading zeros; `0`
/// for zero) right-aligned at the end of the slice it is given and returns
/// their count; `frac` is the fraction in units of 10^-scale (`frac <
/// 10^scale`). The text is assembled right to left in one stack buffer
/// (fraction, point, integer digits, sign) and put once. Allocates nothing.
#[inline(always)]
fn write_decimal(
    out: &mut impl TextSink,
    negative: bool,
    frac: u64,
    scale: usize,
    int_digits: impl FnOnce(&mut [u8]) -> usize,
) -> fmt::Result {
    debug_assert!(scale <= AMOUNT_SCALE_DIGITS as usize && frac < pow10_u64(scale));
    // A sign, up to 78 integer digits, a point and up to 16 places.
    let mut buf = [0u8; 1 + MAX_DIGITS + 1 + AMOUNT_SCALE_DIGITS as usize];
    let mut at = buf.len();
    if frac != 0 {
        // Zero-padded on the left to the places it keeps.
        let (frac, places) = strip_trailing_zeros(frac, scale);
        let start = at - places;
        buf[start..at].fill(b'0');
        u64_digits(frac, &mut buf[start..at]);
        at = start - 1;
        buf[at] = b'.';
    }
    let digits = int_digits(&mut buf[..at]);
    at -= digits;
    let int_is_zero = digits == 1 && buf[at] == b'0';
    if negative && (frac != 0 || !int_is_zero) {
        at -= 1;
        buf[at] = b'-';
    }
    out.put(&buf[at..])
}

/// Writes `magnitude` units of 10^-`SCALE` ([`write_decimal`]), split
/// into integer part and fraction with 64-bit division when it fits 64
/// bits. `SCALE` is a constant of each decimal type, so that split divides
/// by a constant (a multiplication, not a `div`).
fn write_scaled_u128<const SCALE: usize>(
    out: &mut impl TextSink,
    negative: bool,
    magnitude: u128,
) -> fmt::Result {
    let unit = pow10_u64(SCALE);
    let (int, frac) = match u64::try_from(magnitude) {
        Ok(small) => (u128::from(small / unit), small % unit),
        Err(_) => {
            let int = magnitude / u128::from(unit);
            // The remainder is below `unit`, a u64.
            (int, (magnitude - int * u128::from(unit)) as u64)
        }
    };
    write_decimal(out, negative, frac, SCALE, |buf| u128_digits(int, buf))
}

impl Dec8 {
    fn write_text(&self, out: &mut impl TextSink) -> fmt::Result {
        write_scaled_u128::<{ DEC8_SCALE_DIGITS as usize }>(out, self.0 < 0, self.0.unsigned_abs())
    }

    /// Appends exactly the `Display` text to `out`, without the formatting
    /// machinery (the output writers' hot path).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = self.write_text(out);
    }
}

impl fmt::Display for Dec8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f)
    }
}

impl Amount {
    fn write_text(&self, out: &mut impl TextSink) -> fmt::Result {
        let magnitude = self.0.unsigned_abs();
        let negative = self.0.is_negative();
        let scale = AMOUNT_SCALE_DIGITS as usize;
        match u128::try_from(magnitude) {
            Ok(small) => {
                write_scaled_u128::<{ AMOUNT_SCALE_DIGITS as usize }>(out, negative, small)
            }
            // Past 128 bits (beyond any single trade's notional): rare.
            Err(_) => {
                let unit = ethnum::U256::from(pow10_u64(scale));
                let frac = (magnitude % unit).as_u64();
                let int = (magnitude / unit).to_string();
                write_decimal(out, negative, frac, scale, |buf| {
                    let start = buf.len() - int.len();
                    buf[start..].copy_from_slice(int.as_bytes());
                    int.len()
                })
            }
        }
    }

    /// Appends exactly the `Display` text to `out`, without the formatting
    /// machinery (the output writers' hot path).
    pub fn append_to(&self, out: &mut Vec<u8>) {
        // Writing into a Vec cannot fail.
        let _ = self.write_text(out);
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_text(f)
    }
}

/// Why a normalised decimal string could not be read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a normalised decimal: {0}")]
pub struct AmountParseError(pub String);

impl FromStr for Amount {
    type Err = AmountParseError;
    /// Reads `[-]digits[.digits]` with at most 16 places (the inverse of `Display`).
    fn from_str(text: &str) -> Result<Amount, AmountParseError> {
        let err = || AmountParseError(text.to_string());
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (int_part, frac) = body.split_once('.').unwrap_or((body, ""));
        if int_part.is_empty() || frac.len() > AMOUNT_SCALE_DIGITS as usize {
            return Err(err());
        }
        let all = format!(
            "{}{}{}",
            int_part,
            frac,
            "0".repeat(AMOUNT_SCALE_DIGITS as usize - frac.len())
        );
        if !all.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let magnitude = I256::from_str_radix(&all, 10).map_err(|_| err())?;
        Ok(Amount(if negative { -magnitude } else { magnitude }))
    }
}

impl FromStr for Dec8 {
    type Err = AmountParseError;
    /// Reads `[-]digits[.digits]` with at most 8 places (the inverse of `Display`).
    fn from_str(text: &str) -> Result<Dec8, AmountParseError> {
        let err = || AmountParseError(text.to_string());
        let (negative, body) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let value = Dec8::parse(body).map_err(|_| err())?;
        Ok(if negative { value.negated() } else { value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::{Just, Strategy};

    proptest::proptest! {
        /// The u64 fast path and the i128 path read every accepted form to
        /// the value of its digits (integer and fraction folded in i128).
        #[test]
        fn parse_agrees_with_folding_the_digits(int_part in "[0-9]{1,30}", frac in "([0-9]{1,8})?") {
            let text = if frac.is_empty() { int_part.clone() } else { format!("{int_part}.{frac}") };
            let significant = int_part.trim_start_matches('0');
            let fold = |digits: &str| digits.bytes().fold(0i128, |acc, b| acc * 10 + i128::from(b - b'0'));
            let expected = if significant.len() > 29 {
                Err(DecimalParseError::TooLarge)
            } else {
                let scale = 10i128.pow(8 - frac.len() as u32);
                Ok(Dec8(fold(significant) * 100_000_000 + fold(&frac) * scale))
            };
            proptest::prop_assert_eq!(Dec8::parse(&text), expected);
        }

        /// The one-pass reading agrees with the checked one wherever it
        /// reads a text at all (digits, dots and other bytes, long and
        /// short runs), and reads the plain forms.
        #[test]
        fn plain_parse_agrees_with_the_checked_one(text in "[0-9]{0,12}(\\.[0-9]{0,10})?|[0-9.a -]{0,14}") {
            if let Some(value) = Dec8::parse_plain(text.as_bytes()) {
                proptest::prop_assert_eq!(Ok(value), Dec8::parse_checked(&text));
            }
            let (int_part, fraction) = match text.split_once('.') {
                Some((int_part, fraction)) => (int_part, Some(fraction)),
                None => (text.as_str(), None),
            };
            let plain_form = (1..=10).contains(&int_part.len())
                && fraction.is_none_or(|f| (1..=8).contains(&f.len()));
            if plain_form && Dec8::parse_checked(&text).is_ok() {
                proptest::prop_assert!(Dec8::parse_plain(text.as_bytes()).is_some(), "{}", text);
            }
        }
    }

    proptest::proptest! {
        /// The 64-bit fast path of `checked_mul` gives the 256-bit product,
        /// on both sides of its boundary and with either sign.
        #[test]
        fn products_agree_with_256_bit_multiplication(
            a in proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(i128::from),
                proptest::num::i128::ANY,
                (-3i128..3).prop_map(|d| i128::from(i64::MAX) + d),
                (-3i128..3).prop_map(|d| i128::from(i64::MIN) + d),
            ],
            b in proptest::prop_oneof![
                proptest::num::i64::ANY.prop_map(i128::from),
                proptest::num::i128::ANY,
                (-3i128..3).prop_map(|d| i128::from(i64::MIN) + d),
            ],
        ) {
            let expected = I256::from(a).checked_mul(I256::from(b)).map(Amount);
            proptest::prop_assert_eq!(Dec8(a).checked_mul(Dec8(b)), expected);
        }
    }

    /// The formatting before the allocation-free one: digits as a
    /// string, padded, split and trimmed.
    fn reference_text(negative: bool, digits: String, scale: usize) -> String {
        let digits = if digits.len() <= scale {
            format!("{}{}", "0".repeat(scale + 1 - digits.len()), digits)
        } else {
            digits
        };
        let (int_part, frac_part) = digits.split_at(digits.len() - scale);
        let frac_part = frac_part.trim_end_matches('0');
        let is_zero = int_part.bytes().all(|b| b == b'0') && frac_part.is_empty();
        let sign = if negative && !is_zero { "-" } else { "" };
        if frac_part.is_empty() {
            format!("{sign}{int_part}")
        } else {
            format!("{sign}{int_part}.{frac_part}")
        }
    }

    proptest::proptest! {
        /// Both decimals print as the reference formatting does, on both
        /// sides of the 64- and 128-bit boundaries and with either sign.
        #[test]
        fn display_agrees_with_the_reference_formatting(
            value in proptest::prop_oneof![
                -1_000_000_000i128..1_000_000_000,
                proptest::num::i64::ANY.prop_map(i128::from),
                proptest::num::i128::ANY,
                (-3i128..3).prop_map(|d| i128::from(u64::MAX) + d),
                (-3i128..3).prop_map(|d| -i128::from(u64::MAX) + d),
                Just(i128::MIN),
                // Round values: the fraction's trailing zeros are dropped.
                (proptest::num::i64::ANY, 0u32..=19)
                    .prop_map(|(v, e)| i128::from(v) * 10i128.pow(e)),
            ],
            times in proptest::prop_oneof![Just(1i128), proptest::num::i128::ANY],
        ) {
            let dec = Dec8(value);
            proptest::prop_assert_eq!(
                dec.to_string(),
                reference_text(value < 0, value.unsigned_abs().to_string(), 8)
            );
            let mut bytes = Vec::new();
            dec.append_to(&mut bytes);
            proptest::prop_assert_eq!(bytes, dec.to_string().into_bytes());
            let amount = Amount(I256::from(value) * I256::from(times));
            proptest::prop_assert_eq!(
                amount.to_string(),
                reference_text(
                    amount.0.is_negative(),
                    amount.0.unsigned_abs().to_string(),
                    16
                )
            );
            let mut bytes = b"prefix ".to_vec();
            amount.append_to(&mut bytes);
            proptest::prop_assert_eq!(bytes, format!("prefix {amount}").into_bytes());
        }
    }

    #[test]
    fn parses_and_normalises() {
        assert_eq!(Dec8::parse("10").unwrap(), Dec8::parse("10.0").unwrap());
        assert_eq!(Dec8::parse("007.5").unwrap().to_string(), "7.5");
        assert_eq!({ Dec8::parse("0.00000001").unwrap().0 }, 1);
        assert_eq!(Dec8::parse("100.50000000").unwrap().to_string(), "100.5");
        assert_eq!(Dec8::parse("0").unwrap().to_string(), "0");
        assert_eq!(Dec8(-5).to_string(), "-0.00000005");
        assert_eq!(Dec8(0).negated().to_string(), "0");
    }

    #[test]
    fn rejects_malformed_and_counts_places_as_written() {
        for bad in ["", ".5", "5.", "-1", "+1", "1e5", "1.2.3", " 1", "1,0"] {
            assert_eq!(
                Dec8::parse(bad),
                Err(DecimalParseError::Malformed),
                "{bad:?}"
            );
        }
        assert_eq!(
            Dec8::parse("1.000000000"),
            Err(DecimalParseError::TooManyDecimals(9))
        );
        assert_eq!(
            Dec8::parse(&"9".repeat(40)),
            Err(DecimalParseError::TooLarge)
        );
    }

    #[test]
    fn products_are_exact_at_the_limits() {
        let q = Dec8::parse("999999999999999.99999999").unwrap();
        let p = Dec8::parse("999999999999999.99999999").unwrap();
        let n = q.checked_mul(p).unwrap();
        assert_eq!(
            n.to_string(),
            "999999999999999999999980000000.0000000000000001"
        );
        let twice = n.checked_add(n).unwrap();
        assert_eq!(
            twice.to_string(),
            "1999999999999999999999960000000.0000000000000002"
        );
        assert_eq!("-12.5".parse::<Amount>().unwrap().to_string(), "-12.5");
        assert_eq!("-0".parse::<Amount>().unwrap().to_string(), "0");
        let max = Amount(I256::MAX);
        assert!(max.checked_add(n).is_none());
    }
}
