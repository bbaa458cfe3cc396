//! Reads a lot-method map file: a JSON object `{scope: "FIFO"|"LIFO"|"HIFO"}`.

use anyhow::{bail, Context, Result};
use deltabook_dataflows::trade::{is_method_scope, LotMethod};

/// Parses a lot-method map; scopes are an account, `account_book` or a
/// position key. Any other shape is an error naming the offending entry.
pub fn parse_methods(text: &str) -> Result<Vec<(String, LotMethod)>> {
    let value: serde_json::Value =
        serde_json::from_str(text).context("lot-method map is not JSON")?;
    if !value.is_object() {
        bail!("lot-method map must be a JSON object")
    }
    // serde_json keeps the last of repeated keys: read the members again,
    // in order, to refuse a scope given twice (trade events refuse repeated
    // keys too).
    let members: Members = serde_json::from_str(text).context("lot-method map is not JSON")?;
    let mut seen = std::collections::HashSet::new();
    for (scope, _) in &members.0 {
        if !seen.insert(scope.as_str()) {
            bail!("lot-method map: {scope:?} is given more than once");
        }
    }
    let mut methods = Vec::with_capacity(members.0.len());
    for (scope, method) in &members.0 {
        if !is_method_scope(scope) {
            bail!("lot-method map: {scope:?} is not an account, account_book or position key");
        }
        let Some(method) = method.as_str().and_then(LotMethod::parse) else {
            bail!(
                "lot-method map: {scope:?} has {method}, expected \"FIFO\", \"LIFO\" or \"HIFO\""
            );
        };
        methods.push((scope.clone(), method));
    }
    methods.sort();
    Ok(methods)
}

/// A JSON object's members in document order, repeats kept.
struct Members(Vec<(String, serde_json::Value)>);

impl<'de> serde::Deserialize<'de> for Members {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Members, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Members;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Members, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, serde_json::Value>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_scopes_and_rejects_bad_entries() {
        let m = parse_methods(r#"{"ACC1":"LIFO","ACC1_EQ-US":"HIFO","ACC1_EQ-US_AAPL":"FIFO"}"#)
            .unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0], ("ACC1".to_string(), LotMethod::Lifo));
        assert!(parse_methods(r#"{"ACC1":"AVG"}"#).is_err());
        assert!(parse_methods(r#"{"A_B_C_D":"FIFO"}"#).is_err());
        assert!(parse_methods(r#"["FIFO"]"#).is_err());
        let repeated = parse_methods(r#"{"ACC1":"LIFO","ACC1":"FIFO"}"#).unwrap_err();
        assert!(
            repeated.to_string().contains("more than once"),
            "{repeated}"
        );
    }
}
