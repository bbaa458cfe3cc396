//! Reads a lot-method map file: a JSON object `{scope: "FIFO"|"LIFO"|"HIFO"}`.

use anyhow::{bail, Context, Result};
use deltabook_dataflows::trade::{is_method_scope, LotMethod};

/// Parses a lot-method map; scopes are an account, `account_book` or a
/// position key. Any other shape is an error naming the offending entry.
pub fn parse_methods(text: &str) -> Result<Vec<(String, LotMethod)>> {
    let value: serde_json::Value =
        serde_json::from_str(text).context("lot-method map is not JSON")?;
    let Some(object) = value.as_object() else {
        bail!("lot-method map must be a JSON object")
    };
    let mut methods = Vec::with_capacity(object.len());
    for (scope, method) in object {
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
    }
}
