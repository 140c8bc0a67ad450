//! Flattened JWS (RFC 7515 §7.2.2) as ACME uses it (RFC 8555 §6.2), JWK
//! parsing, account-key quality and RFC 7638 thumbprints, on aws-lc-rs.
//!
//! Only the flattened JSON serialization is accepted, with exactly the
//! members `protected`, `payload` and `signature`: an unprotected `header` or
//! a `signatures` array is refused, as Boulder's `parseJWS` does, so nothing
//! that influences verification can sit outside the signature.

use aws_lc_rs::signature::{self as sig, ParsedPublicKey, UnparsedPublicKey};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use serde_json::{Map, Value};

/// The `alg` values this server verifies. Never `none`, never HS*: a MAC
/// keyed with a public key is forgeable by anyone.
pub const ALLOWED_ALGORITHMS: &[&str] = &["RS256", "ES256", "ES384", "ES512", "EdDSA"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwsError {
    /// Not a well-formed flattened JWS (→ `malformed`); the text says what.
    #[error("{0}")]
    Malformed(String),
    /// An algorithm outside [`ALLOWED_ALGORITHMS`], or one that does not fit
    /// the key (→ `badSignatureAlgorithm`).
    #[error("{0}")]
    BadAlgorithm(String),
    /// A key too weak or malformed (→ `badPublicKey`).
    #[error("{0}")]
    BadKey(String),
    /// The signature does not verify under the key.
    #[error("JWS signature does not verify")]
    BadSignature,
}

fn malformed(msg: impl Into<String>) -> JwsError {
    JwsError::Malformed(msg.into())
}

/// Base64url without padding, strictly (no `=`, no `+`/`/`).
pub fn b64_decode(field: &str, text: &str) -> Result<Vec<u8>, JwsError> {
    B64URL.decode(text).map_err(|_| malformed(format!("{field} is not unpadded base64url")))
}

pub fn b64_encode(bytes: &[u8]) -> String {
    B64URL.encode(bytes)
}

/// A parsed, not yet verified, flattened JWS.
#[derive(Debug, Clone)]
pub struct Jws {
    pub header: Protected,
    /// The decoded payload; empty for POST-as-GET.
    pub payload: Vec<u8>,
    signing_input: Vec<u8>,
    signature: Vec<u8>,
}

/// The protected header fields ACME defines.
#[derive(Debug, Clone)]
pub struct Protected {
    pub alg: String,
    pub nonce: Option<String>,
    pub url: Option<String>,
    pub jwk: Option<Jwk>,
    pub kid: Option<String>,
}

impl Jws {
    /// Parses the request body. Checks structure and `alg` only.
    pub fn parse(body: &[u8]) -> Result<Jws, JwsError> {
        let value: Value = serde_json::from_slice(body).map_err(|_| malformed("request body is not JSON"))?;
        let Value::Object(obj) = value else {
            return Err(malformed("request body is not a JSON object"));
        };
        if obj.contains_key("signatures") {
            return Err(malformed("JWS general serialization (`signatures`) is not accepted; use flattened JSON"));
        }
        if obj.contains_key("header") {
            return Err(malformed("JWS unprotected `header` is not accepted"));
        }
        if let Some(extra) = obj.keys().find(|k| !matches!(k.as_str(), "protected" | "payload" | "signature")) {
            return Err(malformed(format!("unexpected JWS member {extra:?}")));
        }
        let text = |k: &str| match obj.get(k) {
            Some(Value::String(s)) => Ok(s.as_str()),
            _ => Err(malformed(format!("JWS member `{k}` is missing or not a string"))),
        };
        let (protected_b64, payload_b64, signature_b64) = (text("protected")?, text("payload")?, text("signature")?);
        let signature = b64_decode("signature", signature_b64)?;
        if signature.is_empty() {
            return Err(malformed("JWS signature is empty"));
        }
        let payload = b64_decode("payload", payload_b64)?;
        let protected_json = b64_decode("protected", protected_b64)?;
        let Ok(Value::Object(h)) = serde_json::from_slice::<Value>(&protected_json) else {
            return Err(malformed("JWS protected header is not a JSON object"));
        };
        let header = Protected::from_map(&h)?;
        let signing_input = format!("{protected_b64}.{payload_b64}").into_bytes();
        Ok(Jws { header, payload, signing_input, signature })
    }

    /// Verifies the signature with `key` (after the key and `alg` checks).
    pub fn verify(&self, key: &Jwk) -> Result<(), JwsError> {
        key.check_alg(&self.header.alg)?;
        key.verify(&self.header.alg, &self.signing_input, &self.signature)
    }
}

impl Protected {
    fn from_map(h: &Map<String, Value>) -> Result<Protected, JwsError> {
        let alg = match h.get("alg") {
            Some(Value::String(a)) => a.clone(),
            _ => return Err(malformed("JWS protected header has no `alg`")),
        };
        if !ALLOWED_ALGORITHMS.contains(&alg.as_str()) {
            return Err(JwsError::BadAlgorithm(format!(
                "JWS algorithm {alg:?} is not accepted; use one of {}",
                ALLOWED_ALGORITHMS.join(", ")
            )));
        }
        if h.contains_key("crit") {
            // RFC 7515 §4.1.11: we understand no extensions.
            return Err(malformed("JWS `crit` extensions are not supported"));
        }
        let opt_str = |k: &str| match h.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(malformed(format!("JWS header `{k}` is not a string"))),
        };
        let jwk = match h.get("jwk") {
            None => None,
            Some(v) => Some(Jwk::from_json(v)?),
        };
        Ok(Protected { alg, nonce: opt_str("nonce")?, url: opt_str("url")?, jwk, kid: opt_str("kid")? })
    }
}

/// A public key as a JWK, restricted to the types ACME accounts may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Jwk {
    /// Big-endian modulus and exponent without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    Ec {
        curve: Curve,
        x: Vec<u8>,
        y: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    P256,
    P384,
    P521,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }
    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
    fn alg(self) -> &'static str {
        match self {
            Curve::P256 => "ES256",
            Curve::P384 => "ES384",
            Curve::P521 => "ES512",
        }
    }
    fn verification(self) -> &'static sig::EcdsaVerificationAlgorithm {
        match self {
            Curve::P256 => &sig::ECDSA_P256_SHA256_FIXED,
            Curve::P384 => &sig::ECDSA_P384_SHA384_FIXED,
            Curve::P521 => &sig::ECDSA_P521_SHA512_FIXED,
        }
    }
}

fn strip_zeros(b: &[u8]) -> Vec<u8> {
    b.iter().skip_while(|x| **x == 0).copied().collect()
}

/// Odd primes below 1000, for the small-factor check on RSA moduli
/// (Boulder's goodkey checks the primes below 752).
fn small_primes() -> impl Iterator<Item = u32> {
    (3u32..1000).step_by(2).filter(|n| (3u32..).step_by(2).take_while(|d| d * d <= *n).all(|d| n % d != 0))
}

fn mod_small(n: &[u8], p: u32) -> u32 {
    n.iter().fold(0u32, |acc, b| ((acc << 8) | u32::from(*b)) % p)
}

impl Jwk {
    /// Parses a JWK object. Private members (`d`, `p`, ...) are refused: a
    /// client that sends its private key has a bug we should not hide.
    pub fn from_json(v: &Value) -> Result<Jwk, JwsError> {
        let Value::Object(m) = v else {
            return Err(JwsError::BadKey("`jwk` is not a JSON object".into()));
        };
        let bad = |msg: String| JwsError::BadKey(msg);
        let field = |k: &str| match m.get(k) {
            Some(Value::String(s)) => {
                B64URL.decode(s).map_err(|_| bad(format!("JWK member `{k}` is not unpadded base64url")))
            }
            _ => Err(bad(format!("JWK member `{k}` is missing"))),
        };
        if ["d", "p", "q", "dp", "dq", "qi", "k"].iter().any(|k| m.contains_key(*k)) {
            return Err(bad("JWK contains private key material".into()));
        }
        let key = match m.get("kty").and_then(Value::as_str) {
            Some("RSA") => {
                let (n, e) = (field("n")?, field("e")?);
                if n.first() == Some(&0) || e.first() == Some(&0) {
                    return Err(bad("RSA JWK integers have leading zero octets (RFC 7518 §6.3.1)".into()));
                }
                Jwk::Rsa { n, e }
            }
            Some("EC") => {
                let curve = match m.get("crv").and_then(Value::as_str) {
                    Some("P-256") => Curve::P256,
                    Some("P-384") => Curve::P384,
                    Some("P-521") => Curve::P521,
                    other => return Err(bad(format!("EC curve {other:?} is not accepted"))),
                };
                Jwk::Ec { curve, x: field("x")?, y: field("y")? }
            }
            Some("OKP") => match m.get("crv").and_then(Value::as_str) {
                Some("Ed25519") => Jwk::Ed25519 { x: field("x")? },
                other => return Err(bad(format!("OKP curve {other:?} is not accepted"))),
            },
            other => return Err(bad(format!("JWK key type {other:?} is not accepted"))),
        };
        if let Some(alg) = m.get("alg") {
            // RFC 7517 §4.4: if the JWK names an algorithm, it binds the key.
            let Some(alg) = alg.as_str() else {
                return Err(bad("JWK `alg` is not a string".into()));
            };
            key.check_alg(alg)
                .map_err(|_| JwsError::BadAlgorithm(format!("JWK `alg` {alg:?} does not fit the key")))?;
        }
        Ok(key)
    }

    /// The `alg` this key must sign with.
    pub fn check_alg(&self, alg: &str) -> Result<(), JwsError> {
        let ok = match self {
            Jwk::Rsa { .. } => alg == "RS256",
            Jwk::Ec { curve, .. } => alg == curve.alg(),
            Jwk::Ed25519 { .. } => alg == "EdDSA",
        };
        if ok {
            Ok(())
        } else {
            Err(JwsError::BadAlgorithm(format!("JWS algorithm {alg:?} does not match the key type")))
        }
    }

    /// Account-key quality, after Boulder's `goodkey`: RSA moduli of 2048,
    /// 3072 or 4096 bits with e = 65537 and no small prime factor; EC points
    /// of the right length that lie on the curve; Ed25519 keys of 32 bytes.
    pub fn check_quality(&self) -> Result<(), JwsError> {
        let bad = |m: &str| Err(JwsError::BadKey(m.to_string()));
        match self {
            Jwk::Rsa { n, e } => {
                let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(JwsError::BadKey(format!(
                        "RSA key of {bits} bits is not accepted; use 2048, 3072 or 4096"
                    )));
                }
                if e.as_slice() != [1, 0, 1] {
                    return bad("RSA public exponent must be 65537");
                }
                if n.last().is_some_and(|b| b % 2 == 0) {
                    return bad("RSA modulus is even");
                }
                if small_primes().any(|p| mod_small(n, p) == 0) {
                    return bad("RSA modulus has a small prime factor");
                }
                ParsedPublicKey::new(&sig::RSA_PKCS1_2048_8192_SHA256, self.rsa_der()?)
                    .map_err(|_| JwsError::BadKey("RSA key is rejected by aws-lc".into()))?;
            }
            Jwk::Ec { curve, x, y } => {
                let len = curve.coordinate_len();
                if x.len() != len || y.len() != len {
                    return Err(JwsError::BadKey(format!("{} coordinates must be {len} bytes", curve.name())));
                }
                ParsedPublicKey::new(curve.verification(), self.ec_point())
                    .map_err(|_| JwsError::BadKey(format!("the point is not on {}", curve.name())))?;
            }
            Jwk::Ed25519 { x } => {
                if x.len() != 32 {
                    return bad("Ed25519 public key must be 32 bytes");
                }
                ParsedPublicKey::new(&sig::ED25519, x)
                    .map_err(|_| JwsError::BadKey("Ed25519 key is rejected by aws-lc".into()))?;
            }
        }
        Ok(())
    }

    fn ec_point(&self) -> Vec<u8> {
        match self {
            Jwk::Ec { x, y, .. } => [&[0x04u8][..], x, y].concat(),
            _ => Vec::new(),
        }
    }

    fn rsa_der(&self) -> Result<Vec<u8>, JwsError> {
        use der::{asn1::UintRef, Encode, Sequence};
        #[derive(Sequence)]
        struct RsaPublicKey<'a> {
            n: UintRef<'a>,
            e: UintRef<'a>,
        }
        let Jwk::Rsa { n, e } = self else {
            return Err(JwsError::BadKey("not an RSA key".into()));
        };
        let bad = |_| JwsError::BadKey("RSA key does not encode".into());
        RsaPublicKey { n: UintRef::new(n).map_err(bad)?, e: UintRef::new(e).map_err(bad)? }.to_der().map_err(bad)
    }

    fn verify(&self, alg: &str, input: &[u8], signature: &[u8]) -> Result<(), JwsError> {
        let result = match self {
            Jwk::Rsa { n, e } => sig::RsaPublicKeyComponents { n: n.as_slice(), e: e.as_slice() }.verify(
                &sig::RSA_PKCS1_2048_8192_SHA256,
                input,
                signature,
            ),
            Jwk::Ec { curve, .. } => {
                UnparsedPublicKey::new(curve.verification(), self.ec_point()).verify(input, signature)
            }
            Jwk::Ed25519 { x } => UnparsedPublicKey::new(&sig::ED25519, x).verify(input, signature),
        };
        let _ = alg;
        result.map_err(|_| JwsError::BadSignature)
    }

    /// The RFC 7638 canonical JSON: required members only, sorted, no
    /// whitespace.
    pub fn canonical_json(&self) -> String {
        match self {
            Jwk::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64_encode(e), b64_encode(n)),
            Jwk::Ec { curve, x, y } => {
                format!(r#"{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}"#, curve.name(), b64_encode(x), b64_encode(y))
            }
            Jwk::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, b64_encode(x)),
        }
    }

    /// RFC 7638 thumbprint (SHA-256, base64url).
    pub fn thumbprint(&self) -> String {
        b64_encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.canonical_json().as_bytes()).as_ref())
    }

    /// The key as DER SubjectPublicKeyInfo.
    pub fn to_spki_der(&self) -> Result<Vec<u8>, JwsError> {
        use const_oid::db::{rfc5912, rfc8410};
        use der::asn1::{Any, BitString};
        use der::Encode;
        use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
        let bad = |_| JwsError::BadKey("key does not encode as SubjectPublicKeyInfo".into());
        let (algorithm, bits) = match self {
            Jwk::Rsa { .. } => (
                AlgorithmIdentifierOwned { oid: rfc5912::RSA_ENCRYPTION, parameters: Some(Any::null()) },
                self.rsa_der()?,
            ),
            Jwk::Ec { curve, .. } => {
                let c = match curve {
                    Curve::P256 => rfc5912::SECP_256_R_1,
                    Curve::P384 => rfc5912::SECP_384_R_1,
                    Curve::P521 => rfc5912::SECP_521_R_1,
                };
                (
                    AlgorithmIdentifierOwned { oid: rfc5912::ID_EC_PUBLIC_KEY, parameters: Some(Any::from(&c)) },
                    self.ec_point(),
                )
            }
            Jwk::Ed25519 { x } => (AlgorithmIdentifierOwned { oid: rfc8410::ID_ED_25519, parameters: None }, x.clone()),
        };
        let spki =
            SubjectPublicKeyInfoOwned { algorithm, subject_public_key: BitString::from_bytes(&bits).map_err(bad)? };
        spki.to_der().map_err(bad)
    }

    /// The key of a DER SubjectPublicKeyInfo (a CSR's or a certificate's).
    pub fn from_spki_der(der: &[u8]) -> Result<Jwk, JwsError> {
        use const_oid::db::{rfc5912, rfc8410};
        let bad = |m: &str| JwsError::BadKey(m.to_string());
        let spki = spki::SubjectPublicKeyInfoRef::try_from(der).map_err(|_| bad("not a SubjectPublicKeyInfo"))?;
        let bits = spki.subject_public_key.raw_bytes();
        let oid = spki.algorithm.oid;
        if oid == rfc5912::RSA_ENCRYPTION {
            let (n, e) = crate::hsm::rsa_public_key_parts(bits).map_err(|_| bad("RSA key does not parse"))?;
            return Ok(Jwk::Rsa { n: strip_zeros(&n), e: strip_zeros(&e) });
        }
        if oid == rfc5912::ID_EC_PUBLIC_KEY {
            let c = spki.algorithm.parameters_oid().map_err(|_| bad("EC key without a named curve"))?;
            let curve = if c == rfc5912::SECP_256_R_1 {
                Curve::P256
            } else if c == rfc5912::SECP_384_R_1 {
                Curve::P384
            } else if c == rfc5912::SECP_521_R_1 {
                Curve::P521
            } else {
                return Err(bad("unsupported EC curve"));
            };
            let len = curve.coordinate_len();
            if bits.len() != 1 + 2 * len || bits[0] != 0x04 {
                return Err(bad("EC point is not uncompressed"));
            }
            return Ok(Jwk::Ec { curve, x: bits[1..1 + len].to_vec(), y: bits[1 + len..].to_vec() });
        }
        if oid == rfc8410::ID_ED_25519 {
            return Ok(Jwk::Ed25519 { x: bits.to_vec() });
        }
        Err(bad("unsupported public key algorithm"))
    }

    /// The JWK as a JSON value (the canonical members).
    pub fn to_value(&self) -> Value {
        serde_json::from_str(&self.canonical_json()).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7638_example_thumbprint() {
        let jwk = serde_json::json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        let key = Jwk::from_json(&jwk).map_err(|e| e.to_string());
        assert_eq!(key.map(|k| k.thumbprint()), Ok("NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs".to_string()));
    }

    #[test]
    fn small_primes_are_primes() {
        let v: Vec<u32> = small_primes().take(5).collect();
        assert_eq!(v, vec![3, 5, 7, 11, 13]);
        assert_eq!(small_primes().last(), Some(997));
    }
}
