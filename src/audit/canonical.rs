//! Canonical JSON for log lines.
//!
//! A line's hash is the hash of its bytes, so the same entry must always
//! serialise to the same bytes, whoever writes it and whichever serde_json
//! features the build happens to unify. We therefore serialise ourselves
//! instead of trusting `serde_json::to_string`: object keys sorted by UTF-16
//! code units, no insignificant whitespace, strings escaped the way
//! ECMAScript's `JSON.stringify` does, and integers only. For the values the
//! log holds (strings, booleans, null, integers within ±(2^53 − 1), arrays and
//! objects) that is exactly RFC 8785, the JSON Canonicalization Scheme (JCS),
//! so an auditor can re-check a line with any JCS implementation.
//!
//! Floats are refused rather than canonicalised: RFC 8785's number
//! formatting is subtle, and nothing in a ceremony record needs a fraction.

use serde_json::Value;

/// The largest integer JCS (an IEEE 754 double) represents exactly.
pub const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

/// Why a value has no canonical form in this log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CanonicalError(pub String);

/// Serialises `value` canonically (RFC 8785 for our value set).
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalError> {
    let mut out = String::with_capacity(256);
    write_value(&mut out, value, &mut Vec::new())?;
    Ok(out)
}

/// Where in the value a writer is, for error messages only: kept as a stack
/// of borrowed segments and formatted only when something is refused, since
/// every line of a long log goes through here.
enum Seg<'a> {
    Key(&'a str),
    Index(usize),
}

fn at(path: &[Seg<'_>]) -> String {
    let mut s = String::from("$");
    for seg in path {
        match seg {
            Seg::Key(k) => {
                s.push('.');
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

fn write_value<'a>(out: &mut String, value: &'a Value, path: &mut Vec<Seg<'a>>) -> Result<(), CanonicalError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                if u > MAX_SAFE_INTEGER {
                    return Err(CanonicalError(format!(
                        "{}: integer {u} is beyond 2^53-1; store it as a string",
                        at(path)
                    )));
                }
                out.push_str(&u.to_string());
            } else if let Some(i) = n.as_i64() {
                if i.unsigned_abs() > MAX_SAFE_INTEGER {
                    return Err(CanonicalError(format!(
                        "{}: integer {i} is beyond 2^53-1; store it as a string",
                        at(path)
                    )));
                }
                out.push_str(&i.to_string());
            } else {
                return Err(CanonicalError(format!(
                    "{}: number {n} is not an integer; the audit log holds no floats, store it as a string",
                    at(path)
                )));
            }
        }
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                path.push(Seg::Index(i));
                write_value(out, item, path)?;
                path.pop();
            }
            out.push(']');
        }
        Value::Object(map) => {
            // RFC 8785 §3.2.3 orders by UTF-16 code units, which differs from
            // UTF-8 byte order only for some non-BMP characters; do it right
            // anyway so the rule holds for any key.
            let mut keys: Vec<(&String, &Value)> = map.iter().collect();
            keys.sort_by(|a, b| a.0.encode_utf16().cmp(b.0.encode_utf16()));
            out.push('{');
            for (i, (key, v)) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                path.push(Seg::Key(key));
                write_value(out, v, path)?;
                path.pop();
            }
            out.push('}');
        }
    }
    Ok(())
}

/// ECMAScript string escaping (RFC 8785 §3.2.2.2): the two mandatory escapes,
/// short forms for the five named controls, `\u00xx` lowercase for the rest
/// of C0, everything else (including `/` and non-ASCII) verbatim. Runs of
/// characters that need no escape are copied whole.
fn write_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        if b >= 0x20 && b != b'"' && b != b'\\' {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            c => out.push_str(&format!("\\u{:04x}", c)),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_output_is_compact() {
        let v = json!({"b": 1, "a": {"z": [true, null, "x"], "y": -5}, "A": ""});
        assert_eq!(to_canonical_string(&v).expect("canonical"), r#"{"A":"","a":{"y":-5,"z":[true,null,"x"]},"b":1}"#);
    }

    #[test]
    fn strings_are_escaped_like_jcs() {
        let v = json!("a\"b\\c\n\t\u{1}/é€😀");
        assert_eq!(to_canonical_string(&v).expect("canonical"), "\"a\\\"b\\\\c\\n\\t\\u0001/é€😀\"");
    }

    #[test]
    fn keys_sort_by_utf16_code_units() {
        // U+FF61 sorts before U+1F600 in UTF-8 bytes (EF.. < F0..) but after
        // it in UTF-16 code units (FF61 > D83D), as RFC 8785 requires.
        let v = json!({"\u{1F600}": 1, "\u{FF61}": 2});
        assert_eq!(to_canonical_string(&v).expect("canonical"), "{\"\u{1F600}\":1,\"\u{FF61}\":2}");
    }

    #[test]
    fn floats_and_huge_integers_are_refused() {
        assert!(to_canonical_string(&json!({"x": 1.5})).is_err());
        assert!(to_canonical_string(&json!(MAX_SAFE_INTEGER + 1)).is_err());
        assert!(to_canonical_string(&json!(-(MAX_SAFE_INTEGER as i64) - 1)).is_err());
        assert_eq!(to_canonical_string(&json!(MAX_SAFE_INTEGER)).expect("ok"), MAX_SAFE_INTEGER.to_string());
    }

    #[test]
    fn reparsing_a_canonical_line_gives_the_same_bytes() {
        let v = json!({"details": {"k": "v"}, "seq": 3, "inputs": [{"name": "n", "sha256": "00"}]});
        let s = to_canonical_string(&v).expect("canonical");
        let back: Value = serde_json::from_str(&s).expect("parse");
        assert_eq!(to_canonical_string(&back).expect("canonical"), s);
    }
}
