//! PKCS#11 URIs (RFC 7512): the one way keyrite names a key on a token in
//! files others read (the issuer configuration, the audit log).
//!
//! `pin-value` is refused: a PIN inside a URI ends up in shell history, argv
//! and configuration files. `pin-source` is kept, because it names a file.

use std::fmt;

/// A parsed PKCS#11 URI. Unknown path attributes are kept out (RFC 7512 lets
/// a consumer ignore them only if they are vendor attributes; we reject them
/// so a typo is not silently dropped).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pkcs11Uri {
    pub token: Option<String>,
    pub serial: Option<String>,
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub object: Option<String>,
    pub id: Option<Vec<u8>>,
    pub object_type: Option<String>,
    pub module_path: Option<String>,
    pub module_name: Option<String>,
    pub pin_source: Option<String>,
}

impl Pkcs11Uri {
    /// The URI of a private key, by token label, token serial, key label and ID.
    pub fn for_key(token: &str, serial: &str, object: &str, id: &[u8]) -> Self {
        Pkcs11Uri {
            token: Some(token.into()),
            serial: Some(serial.into()),
            object: Some(object.into()),
            id: if id.is_empty() { None } else { Some(id.to_vec()) },
            object_type: Some("private".into()),
            ..Default::default()
        }
    }

    pub fn parse(uri: &str) -> Result<Self, UriError> {
        let shown = redact(uri);
        let bad = |what: String| UriError::Bad { uri: shown.clone(), what };
        let rest = uri.strip_prefix("pkcs11:").ok_or_else(|| bad("does not start with \"pkcs11:\"".into()))?;
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let mut out = Pkcs11Uri::default();
        for part in path.split(';').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| bad(format!("attribute {part:?} has no '='")))?;
            let bytes = pct_decode(value).map_err(|e| bad(format!("attribute {name}: {e}")))?;
            let text = || String::from_utf8(bytes.clone()).map_err(|_| bad(format!("attribute {name} is not UTF-8")));
            let slot = match name {
                "token" => &mut out.token,
                "serial" => &mut out.serial,
                "manufacturer" => &mut out.manufacturer,
                "model" => &mut out.model,
                "object" => &mut out.object,
                "type" => {
                    let t = text()?;
                    if !matches!(t.as_str(), "private" | "public" | "cert" | "secret-key" | "data") {
                        return Err(bad(format!("type {t:?} is not one of private, public, cert, secret-key, data")));
                    }
                    set_once(&mut out.object_type, t, name).map_err(bad)?;
                    continue;
                }
                "id" => {
                    if out.id.replace(bytes.clone()).is_some() {
                        return Err(bad("attribute id appears twice".into()));
                    }
                    continue;
                }
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-manufacturer"
                | "slot-description"
                | "slot-id" => continue,
                other => return Err(bad(format!("unknown path attribute {other:?}"))),
            };
            set_once(slot, text()?, name).map_err(bad)?;
        }
        for part in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (name, value) = part.split_once('=').ok_or_else(|| bad(format!("query {part:?} has no '='")))?;
            let value = String::from_utf8(pct_decode(value).map_err(|e| bad(format!("query {name}: {e}")))?)
                .map_err(|_| bad(format!("query {name} is not UTF-8")))?;
            let slot = match name {
                "module-path" => &mut out.module_path,
                "module-name" => &mut out.module_name,
                "pin-source" => &mut out.pin_source,
                "pin-value" => {
                    return Err(bad(
                        "pin-value is refused: a PIN must never be written in a URI; use pin-source=file:... or the environment file's pin setting".into(),
                    ))
                }
                other => return Err(bad(format!("unknown query attribute {other:?}"))),
            };
            set_once(slot, value, name).map_err(bad)?;
        }
        Ok(out)
    }
}

/// The URI with any `pin-value` blanked, for error messages.
fn redact(uri: &str) -> String {
    match uri.find("pin-value=") {
        Some(start) => {
            let value_start = start + "pin-value=".len();
            let end = uri[value_start..].find('&').map_or(uri.len(), |i| value_start + i);
            format!("{}[redacted]{}", &uri[..value_start], &uri[end..])
        }
        None => uri.to_string(),
    }
}

fn set_once(slot: &mut Option<String>, value: String, name: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("attribute {name} appears twice"));
    }
    Ok(())
}

fn pct_decode(value: &str) -> Result<Vec<u8>, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or("truncated %-escape")?;
            let text = std::str::from_utf8(hex).map_err(|_| "bad %-escape")?;
            out.push(u8::from_str_radix(text, 16).map_err(|_| format!("bad %-escape %{text}"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

/// RFC 7512 §2.3: unreserved characters and a few path-safe ones stay as
/// they are; everything else is %-encoded.
fn pct_encode(bytes: &[u8], out: &mut String) {
    for b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b':'
                    | b'['
                    | b']'
                    | b'@'
                    | b'!'
                    | b'$'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b'&'
            )
        {
            out.push(*b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl fmt::Display for Pkcs11Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut path = Vec::new();
        let mut push = |name: &str, value: &[u8]| {
            let mut s = format!("{name}=");
            pct_encode(value, &mut s);
            path.push(s);
        };
        if let Some(v) = &self.model {
            push("model", v.as_bytes());
        }
        if let Some(v) = &self.manufacturer {
            push("manufacturer", v.as_bytes());
        }
        if let Some(v) = &self.serial {
            push("serial", v.as_bytes());
        }
        if let Some(v) = &self.token {
            push("token", v.as_bytes());
        }
        if let Some(v) = &self.id {
            // IDs are binary: always %-encode every byte, as RFC 7512 examples do.
            path.push(format!("id={}", v.iter().map(|b| format!("%{b:02X}")).collect::<String>()));
        }
        if let Some(v) = &self.object {
            let mut s = "object=".to_string();
            pct_encode(v.as_bytes(), &mut s);
            path.push(s);
        }
        if let Some(v) = &self.object_type {
            path.push(format!("type={v}"));
        }
        write!(f, "pkcs11:{}", path.join(";"))?;
        let mut query = Vec::new();
        for (name, value) in
            [("module-path", &self.module_path), ("module-name", &self.module_name), ("pin-source", &self.pin_source)]
        {
            if let Some(v) = value {
                let mut s = format!("{name}=");
                pct_encode(v.as_bytes(), &mut s);
                query.push(s);
            }
        }
        if !query.is_empty() {
            write!(f, "?{}", query.join("&"))?;
        }
        Ok(())
    }
}

/// Errors parsing a PKCS#11 URI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    #[error("PKCS#11 URI {uri:?}: {what} (RFC 7512 form: pkcs11:token=LABEL;object=KEY;type=private)")]
    Bad { uri: String, what: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7512_examples_parse() {
        let u = Pkcs11Uri::parse("pkcs11:token=The%20Software%20PKCS%2311%20Softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;object=my-certificate;type=cert;id=%69%95%3E%5C%F4%BD%EC%91").expect("parse");
        assert_eq!(u.token.as_deref(), Some("The Software PKCS#11 Softtoken"));
        assert_eq!(u.manufacturer.as_deref(), Some("Snake Oil, Inc."));
        assert_eq!(u.id.as_deref(), Some(&[0x69, 0x95, 0x3e, 0x5c, 0xf4, 0xbd, 0xec, 0x91][..]));
        let u =
            Pkcs11Uri::parse("pkcs11:object=my-sign-key;type=private?module-path=/mnt/libmypkcs11.so.1").expect("q");
        assert_eq!(u.module_path.as_deref(), Some("/mnt/libmypkcs11.so.1"));
    }

    #[test]
    fn our_uris_round_trip() {
        let u = Pkcs11Uri::for_key("keyrite root", "0a1b", "root-2026", &[1, 2, 0xff]);
        let text = u.to_string();
        assert_eq!(text, "pkcs11:serial=0a1b;token=keyrite%20root;id=%01%02%FF;object=root-2026;type=private");
        assert_eq!(Pkcs11Uri::parse(&text).expect("reparse"), u);
    }

    #[test]
    fn a_pin_in_a_uri_is_refused_without_echoing_it() {
        let err = Pkcs11Uri::parse("pkcs11:token=t?pin-value=123456").expect_err("pin-value");
        let msg = err.to_string();
        assert!(msg.contains("pin-value is refused"), "{msg}");
        assert!(!msg.contains("123456"), "the PIN must not be echoed: {msg}");
        let bad = Pkcs11Uri::parse("pkcs11:tokn=x").expect_err("typo");
        assert!(bad.to_string().contains("unknown path attribute \"tokn\""));
    }
}
