//! Tests of the gate: every rule of trades.md, the first-failing-check
//! order, the duplicate rule, and properties over random input.

use super::fields::{is_id, KNOWN};
use super::*;
use crate::calendar::{date_exists, days_from_civil, days_in_month, is_leap};
use crate::decimal::Dec8;
use crate::trade::{Action, Date, Instant, Side, TradeVersion};
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
    let mut gate = DuplicateRule::new();
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

fn admit(gate: &mut DuplicateRule, text: &str) -> Admission {
    gate.admit(text.as_bytes())
}

#[test]
fn equal_content_is_a_duplicate() {
    let mut gate = DuplicateRule::new();
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
    let mut gate = DuplicateRule::new();
    let v2 = |price: &str| with(&[("action", r#""AMEND""#), ("version", "2"), ("price", price)]);
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

/// Many trade ids (more than one chunk of the store's slots, and several
/// growths of its table): each keeps its own versions, read back in
/// another order than they were admitted.
#[test]
fn many_trades_each_keep_their_own_versions() {
    const TRADES: usize = 10_000;
    let mut gate = DuplicateRule::new();
    let event = |n: usize, version: u64, price: &str| {
        let id = format!("\"T-{n}\"");
        let version_text = version.to_string();
        let action = if version == 1 {
            r#""NEW""#
        } else {
            r#""AMEND""#
        };
        with(&[
            ("trade_id", id.as_str()),
            ("action", action),
            ("version", version_text.as_str()),
            ("price", price),
        ])
    };
    for n in 0..TRADES {
        let admission = admit(&mut gate, &event(n, 1, r#""1""#));
        assert!(
            matches!(admission, Admission::Accepted(_)),
            "{n}: {admission:?}"
        );
    }
    // Every third trade amended once.
    for n in (0..TRADES).step_by(3) {
        let admission = admit(&mut gate, &event(n, 2, r#""2""#));
        assert!(
            matches!(admission, Admission::Accepted(_)),
            "{n}: {admission:?}"
        );
    }
    assert_eq!(gate.accepted_count(), TRADES + TRADES.div_ceil(3));
    for n in (0..TRADES).rev() {
        match admit(&mut gate, &event(n, 1, r#""1""#)) {
            Admission::Duplicate(tv) => assert_eq!(tv.trade_id, format!("T-{n}")),
            other => panic!("{n}: {other:?}"),
        }
        match admit(&mut gate, &event(n, 1, r#""3""#)) {
            Admission::Rejected(r) => assert_eq!(r.kind, ConflictingDuplicate, "{n}"),
            other => panic!("{n}: {other:?}"),
        }
        // Version 2: known (a duplicate) for the amended trades, new
        // (accepted now) for the others.
        match (n % 3 == 0, admit(&mut gate, &event(n, 2, r#""2""#))) {
            (true, Admission::Duplicate(_)) | (false, Admission::Accepted(_)) => {}
            (amended, other) => panic!("{n} (amended: {amended}): {other:?}"),
        }
    }
    assert_eq!(gate.accepted_count(), 2 * TRADES);
}

#[test]
fn lower_version_after_a_higher_one_is_still_accepted() {
    let mut gate = DuplicateRule::new();
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
    let mut gate = DuplicateRule::default();
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
                let days = days_from_civil(i64::from(year), month, day);
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

/// The table's fields and one unknown key.
fn field_names() -> Vec<&'static str> {
    KNOWN.iter().copied().chain(["extra"]).collect()
}

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
    prop::collection::vec((prop::sample::select(field_names()), json_value()), 0..18).prop_map(
        |members| {
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("\"{k}\":{v}"))
                .collect();
            format!("{{{}}}", body.join(","))
        },
    )
}

/// What an accepted version must satisfy whatever the input was.
fn check_accepted(tv: &TradeVersion) {
    // The fingerprint (encoded on the stack) is XXH3-128 of the
    // canonical bytes as a plain `Vec` receives them.
    let mut canonical = Vec::new();
    tv.canonical_bytes(&mut canonical);
    assert_eq!(fingerprint(tv), xxhash_rust::xxh3::xxh3_128(&canonical));
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
        let mut gate = DuplicateRule::new();
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

/// Values for a field of [`BASE`]: those a feed writes (accepted), and
/// near misses of each check (a wrong type, a bad form, a limit, a zero).
fn plain_field_values(name: &str) -> (Vec<&'static str>, Vec<&'static str>) {
    match name {
        "trade_id" | "account_id" | "book_id" | "security_id" => (
            vec![r#""T-1""#, r#""ACC:9.x""#],
            vec![r#""""#, r#""a b""#, r#""é""#, "7", "null"],
        ),
        "version" | "sequence" => (
            vec!["1", "2", "10", "123456789012345678", "null"],
            vec![
                "0",
                "9223372036854775808",
                "01",
                "1.0",
                "-1",
                "1e2",
                r#""2""#,
            ],
        ),
        "action" => (
            vec![r#""NEW""#, r#""AMEND""#, r#""CANCEL""#, "null"],
            vec![r#""new""#, "1"],
        ),
        "side" => (
            vec![r#""BUY""#, r#""SELL""#],
            vec![r#""HOLD""#, "null", "true"],
        ),
        "quantity" | "price" => (
            vec![
                r#""10""#,
                r#""100.5""#,
                r#""0.00000001""#,
                r#""999999999999999.99999999""#,
                r#""0012.50""#,
            ],
            vec![
                r#""0""#,
                r#""0.0""#,
                r#""1.""#,
                r#""1.123456789""#,
                r#""1000000000000000""#,
                "10",
                "null",
            ],
        ),
        "currency" => (vec![r#""USD""#, "null"], vec![r#""usd""#, r#""EURO""#, "1"]),
        "trade_date" => (
            vec![r#""2026-01-02""#, r#""2024-02-29""#],
            vec![r#""2026-02-29""#, r#""2026-1-02""#, "null"],
        ),
        "trade_time" => (
            vec![
                r#""2026-01-02T10:00:00Z""#,
                r#""2026-01-02T09:42:23.110174+00:00""#,
                "null",
            ],
            vec![
                r#""2026-01-02T23:59:60Z""#,
                r#""2026-01-02 10:00:00Z""#,
                "5",
            ],
        ),
        _ => (
            vec![r#""corr-1""#, r#""""#, "null"],
            vec![r#""é\u00e9""#, "[1]"],
        ),
    }
}

/// Events as feeds write them, with every kind of near miss: each field
/// of [`BASE`] kept or not, its value mostly one a feed writes and
/// sometimes a near miss ([`plain_field_values`]), the members shuffled,
/// whitespace anywhere between tokens, sometimes keys outside the table
/// (some repeated, some with containers or escapes) or a table key twice.
fn plain_events() -> impl Strategy<Value = String> {
    let members = BASE
        .iter()
        .map(|(name, _)| {
            let (good, near) = plain_field_values(name);
            let value =
                prop_oneof![24 => prop::sample::select(good), 1 => prop::sample::select(near)];
            (value, prop::bool::weighted(0.97))
                .prop_map(move |(value, keep)| keep.then(|| (name.to_string(), value.to_string())))
        })
        .collect::<Vec<_>>();
    let extra = prop::sample::select(vec![
        None,
        None,
        None,
        None,
        None,
        Some(("venue", r#""XNYS""#)),
        Some(("venue", "null")),
        Some(("note", r#""a\"b""#)),
        Some(("n", "12")),
        Some(("source", r#"{"a":[1]}"#)),
        Some(("side", r#""BUY""#)),
    ]);
    let whitespace = prop::sample::select(vec!["", "", "", " ", "\t", "\r\n "]);
    (
        members,
        prop::collection::vec(extra, 0..6),
        any::<u64>(),
        prop::collection::vec(whitespace, 64),
    )
        .prop_map(|(members, extras, seed, spaces)| {
            let mut members: Vec<(String, String)> = members.into_iter().flatten().collect();
            members.extend(
                extras
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_string())),
            );
            // A deterministic shuffle from the drawn seed.
            let mut state = seed;
            for i in (1..members.len()).rev() {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                members.swap(i, (state >> 33) as usize % (i + 1));
            }
            let mut space = spaces.iter().cycle();
            let mut ws = || *space.next().unwrap_or(&"");
            let body: Vec<String> = members
                .iter()
                .map(|(k, v)| format!("{}\"{k}\"{}:{}{v}{}", ws(), ws(), ws(), ws()))
                .collect();
            format!("{}{{{}}}{}", ws(), body.join(","), ws())
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Where the one-pass reading reads an event, the table-order checks
    /// accept it as the same version; and it reads the plain events they
    /// accept (no escape, no container, no leap second, at most four
    /// other keys).
    #[test]
    fn the_plain_reading_agrees_with_the_checks(text in plain_events()) {
        let plain = std::str::from_utf8(text.as_bytes()).ok().and_then(super::plain::plain_event);
        let checked = super::fields::checked_event(text.as_bytes());
        if let Some(version) = &plain {
            prop_assert_eq!(Ok(version), checked.as_ref(), "{}", text);
        }
        let plain_form = !text.contains('\\')
            && !text.contains('[')
            && text.matches('{').count() == 1
            && !text.contains(":60");
        if checked.is_ok() && plain_form {
            prop_assert!(plain.is_some(), "declined {}", text);
        }
    }

    /// The same on objects of the table's fields with random JSON values,
    /// and on random bytes.
    #[test]
    fn the_plain_reading_agrees_with_the_checks_on_random_objects(text in json_object()) {
        if let Some(version) = super::plain::plain_event(&text) {
            prop_assert_eq!(Ok(version), super::fields::checked_event(text.as_bytes()), "{}", text);
        }
    }

    /// Plain events with high bytes put anywhere (mostly invalid UTF-8,
    /// sometimes a valid multi-byte character): `parse_event`, which checks
    /// UTF-8 before the one-pass reading, gives what the table-order
    /// checks give.
    #[test]
    fn parse_event_agrees_with_the_checks_on_high_bytes(
        text in plain_events(),
        at in any::<prop::sample::Index>(),
        high in prop::collection::vec(0x80u8..=0xff, 1..4),
    ) {
        let mut bytes = text.into_bytes();
        let at = at.index(bytes.len() + 1);
        bytes.splice(at..at, high);
        prop_assert_eq!(super::parse_event(&bytes), super::fields::checked_event(&bytes));
    }

    #[test]
    fn the_plain_reading_agrees_with_the_checks_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Some(version) = std::str::from_utf8(&bytes).ok().and_then(super::plain::plain_event) {
            prop_assert_eq!(Ok(version), super::fields::checked_event(&bytes));
        }
    }
}

/// One line of a stream for the batch-admission property: a trade id of
/// a few, a version of a few, one of two contents (equal copies are
/// duplicates, different ones conflicting duplicates), or a line the
/// stateless gate rejects.
fn batch_line((trade, version, content, broken): (u8, u8, u8, bool)) -> String {
    if broken {
        return with(&[("version", "0")]);
    }
    let trade = format!(r#""T-{trade}""#);
    let version = version.to_string();
    let quantity = format!(r#""{}""#, 100 + u32::from(content));
    with(&[
        ("trade_id", &trade),
        ("version", &version),
        ("quantity", &quantity),
    ])
}

proptest! {
    /// `admit_all` over a stream gives each line the admission `admit`
    /// one line at a time gives it, in order, and leaves the same memory:
    /// admitting every possible line afterwards agrees too. Streams
    /// shorter and longer than its read-ahead, with duplicates,
    /// conflicting duplicates and rejections mixed.
    #[test]
    fn admitting_a_batch_is_admitting_each_line_in_turn(
        stream in prop::collection::vec((0u8..5, 1u8..4, 0u8..2, prop::bool::weighted(0.1)), 0..40)
    ) {
        let lines: Vec<String> = stream.into_iter().map(batch_line).collect();
        let mut one_at_a_time = DuplicateRule::new();
        let expected: Vec<Admission> =
            lines.iter().map(|l| one_at_a_time.admit(l.as_bytes())).collect();
        let mut batched = DuplicateRule::new();
        let mut got = Vec::new();
        batched.admit_all(lines.iter().map(|l| l.as_bytes()), |a| got.push(a));
        prop_assert_eq!(&got, &expected);
        prop_assert_eq!(batched.accepted_count(), one_at_a_time.accepted_count());
        for trade in 0..5 {
            for version in 1..4 {
                for content in 0..2 {
                    let line = batch_line((trade, version, content, false));
                    prop_assert_eq!(
                        batched.admit(line.as_bytes()),
                        one_at_a_time.admit(line.as_bytes())
                    );
                }
            }
        }
    }
}
