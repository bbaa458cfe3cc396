//! Bitemporal clauses at the end of a query: `AS OF DATE 'YYYY-MM-DD'`
//! (business time) and `AS KNOWN AT <engine timestamp>` (system time),
//! in either order, each at most once.
//!
//! They are read off the end of the statement with `sqlparser`'s own
//! tokenizer (so a quoted string or a comment that merely contains the
//! words is never mistaken for them); the SQL before them is parsed as
//! usual.

use sqlparser::dialect::GenericDialect;
use sqlparser::tokenizer::{Location, Token, TokenWithSpan, Tokenizer};

use super::plan::{error_at, QueryError};
use super::value::date_of_text;
use crate::engine::Time;
use crate::trade::Date;

/// When a query looks: now (both `None`), or as of a business date and/or
/// as known at an earlier engine timestamp.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AsOf {
    /// `AS OF DATE d`: lots and positions booked from the live trades with
    /// `trade_date <= d` only; `trades` holds those trades only.
    pub date: Option<Date>,
    /// `AS KNOWN AT t`: every table as it stood when engine timestamp `t`
    /// closed (updates at later timestamps are not read).
    pub known_at: Option<Time>,
}

fn is_word(token: &Token, word: &str) -> bool {
    matches!(token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// The byte offset of `location` (1-based line and column, in characters) in `text`.
fn byte_offset(text: &str, location: Location) -> usize {
    let (mut line, mut column) = (1u64, 1u64);
    for (offset, c) in text.char_indices() {
        if line == location.line && column == location.column {
            return offset;
        }
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    text.len()
}

/// A statement split from its trailing bitemporal clauses.
#[derive(Debug, PartialEq, Eq)]
pub struct Split<'a> {
    /// The SQL before the clauses.
    pub statement: &'a str,
    /// The clauses.
    pub as_of: AsOf,
    /// Where `AS OF DATE` starts, when given (for errors about it).
    pub date_at: Option<Location>,
}

/// Splits `sql` into the statement and its trailing bitemporal clauses.
/// A clause given twice, a malformed date or a timestamp that is not a
/// non-negative integer is an error at its position. SQL that does not
/// tokenize is returned whole, for the parser to report.
pub fn split_as_of(sql: &str) -> Result<Split<'_>, QueryError> {
    let whole = Split {
        statement: sql,
        as_of: AsOf::default(),
        date_at: None,
    };
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize_with_location() else {
        return Ok(whole);
    };
    let mut tokens: Vec<&TokenWithSpan> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_) | Token::EOF))
        .collect();
    // A trailing semicolon stays with the statement.
    if tokens.last().is_some_and(|t| t.token == Token::SemiColon) {
        tokens.pop();
    }
    let mut as_of = AsOf::default();
    let mut date_at = None;
    let mut cut = None;
    loop {
        let n = tokens.len();
        if n < 4 || !is_word(&tokens[n - 4].token, "AS") {
            break;
        }
        let (first, second, value) = (&tokens[n - 3], &tokens[n - 2], &tokens[n - 1]);
        let start = tokens[n - 4].span.start;
        if is_word(&first.token, "OF") && is_word(&second.token, "DATE") {
            let Token::SingleQuotedString(text) = &value.token else {
                return Err(error_at(
                    value.span.start,
                    "AS OF DATE needs a date literal 'YYYY-MM-DD'",
                ));
            };
            let date = date_of_text(text)
                .map_err(|e| error_at(value.span.start, format!("AS OF DATE: {}", e.0)))?;
            if as_of.date.replace(date).is_some() {
                return Err(error_at(start, "AS OF DATE is given twice"));
            }
            date_at = Some(start);
        } else if is_word(&first.token, "KNOWN") && is_word(&second.token, "AT") {
            let time = match &value.token {
                Token::Number(text, false) => text.parse::<Time>().ok(),
                _ => None,
            }
            .ok_or_else(|| {
                error_at(
                    value.span.start,
                    "AS KNOWN AT needs an engine timestamp (a non-negative integer, as a correction's as_of)",
                )
            })?;
            if as_of.known_at.replace(time).is_some() {
                return Err(error_at(start, "AS KNOWN AT is given twice"));
            }
        } else {
            break;
        }
        cut = Some(start);
        tokens.truncate(n - 4);
    }
    let Some(cut) = cut else {
        return Ok(whole);
    };
    Ok(Split {
        statement: &sql[..byte_offset(sql, cut)],
        as_of,
        date_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clauses_are_read_off_the_end_in_either_order() {
        let split =
            split_as_of("SELECT * FROM positions AS OF DATE '2026-11-02' AS KNOWN AT 17").unwrap();
        let (rest, as_of) = (split.statement, split.as_of);
        assert_eq!(rest.trim_end(), "SELECT * FROM positions");
        assert_eq!(split.date_at, Some(Location::new(1, 25)));
        assert_eq!(as_of.date, Some(Date::from_ymd(2026, 11, 2)));
        assert_eq!(as_of.known_at, Some(17));
        let split =
            split_as_of("SELECT 1\nFROM lots as known at 3 as of date '2026-01-31';").unwrap();
        let (rest, as_of) = (split.statement, split.as_of);
        assert_eq!(rest.trim_end(), "SELECT 1\nFROM lots");
        assert_eq!(as_of.date, Some(Date::from_ymd(2026, 1, 31)));
        assert_eq!(as_of.known_at, Some(3));
    }

    #[test]
    fn words_inside_strings_or_aliases_are_not_clauses() {
        let sql = "SELECT 'AS OF DATE' FROM trades";
        assert_eq!(split_as_of(sql).unwrap().statement, sql);
        let sql = "SELECT * FROM trades AS known";
        let split = split_as_of(sql).unwrap();
        assert_eq!((split.statement, split.as_of), (sql, AsOf::default()));
    }

    #[test]
    fn malformed_clauses_are_refused_at_their_position() {
        let err = split_as_of("SELECT * FROM lots AS OF DATE '2026-02-30'").unwrap_err();
        assert!(
            matches!(&err, QueryError::At { line: 1, column: 31, message } if message.starts_with("AS OF DATE")),
            "{err}"
        );
        let err = split_as_of("SELECT * FROM lots AS KNOWN AT 1.5").unwrap_err();
        assert!(err.to_string().contains("engine timestamp"), "{err}");
        let err = split_as_of("SELECT * FROM lots AS KNOWN AT 1 AS KNOWN AT 2").unwrap_err();
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
