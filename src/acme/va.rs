//! The validation authority: http-01 (RFC 8555 §8.3), dns-01 (§8.4) and
//! tls-alpn-01 (RFC 8737), for DNS names and IP addresses (RFC 8738).
//!
//! Names are resolved through the configured resolver (`addr:port`, asked
//! over UDP and, for truncated answers, TCP) after a static host map that
//! lets tests and split-horizon sites pin names. Every network step has a
//! timeout, the number of validations in flight is bounded by a semaphore,
//! and a failed attempt is retried a bounded number of times with
//! exponential backoff before the challenge turns invalid (step-ca #168).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{digest, SHA256};
use axum::http::StatusCode;
use der::Decode;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use tokio::sync::Semaphore;

use super::identifier::{check_syntax, Checked, Identifier};
use super::jws::b64_encode;
use super::model::ChallengeType;
use super::problem::{Problem, ProblemType};
use crate::config::acme::ValidationSettings;

/// Boulder's limits: 10 redirects, 128 bytes of body, 2000-byte paths.
const MAX_REDIRECTS: usize = 10;
const MAX_BODY: usize = 128;
const MAX_PATH: usize = 2000;
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER_OID: const_oid::ObjectIdentifier = const_oid::ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.1.31");

pub struct Validator {
    cfg: ValidationSettings,
    resolver: Option<TokioResolver>,
    permits: Semaphore,
}

fn prob(kind: ProblemType, detail: impl Into<String>) -> Problem {
    Problem::new(kind, StatusCode::BAD_REQUEST, detail)
}

impl Validator {
    pub fn new(cfg: ValidationSettings) -> Self {
        let resolver = cfg.resolver.and_then(|addr| {
            // UDP first, TCP for truncated answers, both on the configured port.
            let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                .into_iter()
                .map(|mut c| {
                    c.port = addr.port();
                    c
                })
                .collect();
            let server = NameServerConfig::new(addr.ip(), true, connections);
            let config = ResolverConfig::from_parts(None, vec![], vec![server]);
            let mut opts = ResolverOpts::default();
            opts.timeout = cfg.timeout;
            opts.attempts = 2;
            // Validation must see the zone as it is now, not as cached.
            opts.cache_size = 0;
            match TokioResolver::builder_with_config(config, TokioRuntimeProvider::default()).with_options(opts).build()
            {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = %e, "cannot build the DNS resolver; dns-01 and name lookups will fail");
                    None
                }
            }
        });
        let permits = Semaphore::new(cfg.max_concurrent.max(1));
        Validator { cfg, resolver, permits }
    }

    /// Validates with bounded retries; the last failure is the answer.
    pub async fn validate(
        self: &Arc<Self>,
        kind: ChallengeType,
        id: &Identifier,
        token: &str,
        key_authorization: &str,
    ) -> Result<(), Problem> {
        let _permit =
            self.permits.acquire().await.map_err(|_| prob(ProblemType::ServerInternal, "validator shut down"))?;
        let attempts = self.cfg.attempts.max(1);
        let mut wait = self.cfg.backoff;
        let mut last = prob(ProblemType::ServerInternal, "no validation attempt was made");
        for attempt in 0..attempts {
            let result = match kind {
                ChallengeType::Http01 => self.http01(id, token, key_authorization).await,
                ChallengeType::Dns01 => self.dns01(id, key_authorization).await,
                ChallengeType::TlsAlpn01 => self.tls_alpn01(id, key_authorization).await,
            };
            match result {
                Ok(()) => return Ok(()),
                Err(p) => {
                    tracing::info!(challenge = kind.name(), identifier = %id.value, attempt, problem = %p, "validation attempt failed");
                    last = p;
                }
            }
            if attempt + 1 < attempts {
                tokio::time::sleep(wait).await;
                wait = wait.saturating_mul(2);
            }
        }
        Err(last)
    }

    /// CAA for a DNS identifier whose challenge passed (a no-op unless CAA
    /// identities are configured; IP addresses have no CAA).
    pub async fn check_caa(
        &self,
        id: &Identifier,
        wildcard: bool,
        account_uri: &str,
        method: ChallengeType,
    ) -> Result<(), Problem> {
        if self.cfg.caa_identities.is_empty() || id.kind != "dns" {
            return Ok(());
        }
        let Some(resolver) = &self.resolver else {
            return Err(prob(ProblemType::Caa, "CAA checking needs a configured resolver"));
        };
        let name = id.value.trim_start_matches("*.");
        let (owner, records) =
            super::caa::relevant_set(resolver, name, self.cfg.timeout).await.map_err(|e| prob(ProblemType::Dns, e))?;
        let request =
            super::caa::Request { identities: &self.cfg.caa_identities, wildcard, account_uri, method: method.name() };
        super::caa::decide(&owner, &records, &request)
            .map_err(|e| Problem::new(ProblemType::Caa, StatusCode::FORBIDDEN, e))
    }

    /// Resolves a host name (or takes an IP literal as is).
    async fn resolve(&self, host: &str) -> Result<Vec<IpAddr>, Problem> {
        if let Ok(ip) = host.trim_matches(['[', ']']).parse::<IpAddr>() {
            return Ok(vec![ip]);
        }
        if let Some(ips) = self.cfg.static_hosts.get(host) {
            return Ok(ips.clone());
        }
        let ips: Vec<IpAddr> = match &self.resolver {
            Some(r) => tokio::time::timeout(self.cfg.timeout, r.lookup_ip(host))
                .await
                .map_err(|_| prob(ProblemType::Dns, format!("DNS lookup of {host} timed out")))?
                .map_err(|e| prob(ProblemType::Dns, format!("DNS lookup of {host} failed: {e}")))?
                .iter()
                .collect(),
            None => tokio::time::timeout(self.cfg.timeout, tokio::net::lookup_host((host, 0)))
                .await
                .map_err(|_| prob(ProblemType::Dns, format!("DNS lookup of {host} timed out")))?
                .map_err(|e| prob(ProblemType::Dns, format!("DNS lookup of {host} failed: {e}")))?
                .map(|a| a.ip())
                .collect(),
        };
        if ips.is_empty() {
            return Err(prob(ProblemType::Dns, format!("{host} has no A or AAAA record")));
        }
        Ok(ips)
    }

    async fn http01(&self, id: &Identifier, token: &str, expected: &str) -> Result<(), Problem> {
        let mut host = id.value.clone();
        let mut port = self.cfg.http01_port;
        let mut path = format!("/.well-known/acme-challenge/{token}");
        for _ in 0..=MAX_REDIRECTS {
            let ips = self.resolve(&host).await?;
            let addr = SocketAddr::new(ips[0], port);
            // RFC 8738 §3 / vault#28480: an IPv6 literal is bracketed.
            let host_header = match host.parse::<IpAddr>() {
                Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
                _ => host.clone(),
            };
            let (status, location, body) =
                tokio::time::timeout(self.cfg.timeout, http_get(addr, &host_header, port, &path))
                    .await
                    .map_err(|_| prob(ProblemType::Connection, format!("http-01 request to {addr} timed out")))??;
            if status.is_redirection() {
                let Some(location) = location else {
                    return Err(prob(ProblemType::Connection, "http-01 redirect without a Location"));
                };
                (host, port, path) = self.follow(&host, port, &location)?;
                continue;
            }
            if status != StatusCode::OK {
                return Err(prob(ProblemType::Unauthorized, format!("http-01 response status {status} from {addr}")));
            }
            if body.len() > MAX_BODY {
                return Err(prob(
                    ProblemType::IncorrectResponse,
                    "http-01 response is longer than 128 bytes, so it is not the key authorization",
                ));
            }
            let text = String::from_utf8_lossy(&body);
            let got = text.trim_end();
            if verify_slices_are_equal(got.as_bytes(), expected.as_bytes()).is_err() {
                return Err(prob(ProblemType::IncorrectResponse, "http-01 response is not the key authorization"));
            }
            return Ok(());
        }
        Err(prob(ProblemType::Connection, "http-01 followed too many redirects"))
    }

    /// Resolves a redirect target; only plain http to the http-01 port.
    fn follow(&self, host: &str, port: u16, location: &str) -> Result<(String, u16, String), Problem> {
        let refuse = |why: &str| prob(ProblemType::Connection, format!("http-01 redirect refused: {why}"));
        if location.starts_with('/') {
            if location.len() > MAX_PATH {
                return Err(refuse("path longer than 2000 bytes"));
            }
            return Ok((host.to_string(), port, location.to_string()));
        }
        let rest = location.strip_prefix("http://").ok_or_else(|| refuse("only http:// redirects are followed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if path.len() > MAX_PATH {
            return Err(refuse("path longer than 2000 bytes"));
        }
        let (new_host, new_port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| refuse("bad IPv6 literal"))?;
            (h.to_string(), tail.strip_prefix(':').map(|p| p.parse::<u16>()).transpose())
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p.parse::<u16>()).transpose()),
                None => (authority.to_string(), Ok(None)),
            }
        };
        let new_port = new_port.map_err(|_| refuse("bad port"))?.unwrap_or(80);
        if new_port != self.cfg.http01_port {
            return Err(refuse("redirects may only go to the http-01 port"));
        }
        let kind = if new_host.parse::<IpAddr>().is_ok() { "ip" } else { "dns" };
        check_syntax(&Identifier { kind: kind.into(), value: new_host.to_ascii_lowercase() })
            .map_err(|e| refuse(&e.to_string()))?;
        Ok((new_host.to_ascii_lowercase(), new_port, path.to_string()))
    }

    async fn dns01(&self, id: &Identifier, key_authorization: &str) -> Result<(), Problem> {
        let Some(resolver) = &self.resolver else {
            return Err(prob(ProblemType::Dns, "dns-01 needs a configured resolver"));
        };
        let name = format!("_acme-challenge.{}.", id.value.trim_start_matches("*."));
        let expected = b64_encode(digest(&SHA256, key_authorization.as_bytes()).as_ref());
        let lookup = tokio::time::timeout(self.cfg.timeout, resolver.txt_lookup(name.as_str()))
            .await
            .map_err(|_| prob(ProblemType::Dns, format!("TXT lookup of {name} timed out")))?
            .map_err(|e| prob(ProblemType::Dns, format!("TXT lookup of {name} failed: {e}")))?;
        let found = lookup
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::TXT(txt) => Some(txt),
                _ => None,
            })
            .any(|txt| {
                let value: Vec<u8> = txt.txt_data.iter().flat_map(|part| part.iter().copied()).collect();
                verify_slices_are_equal(&value, expected.as_bytes()).is_ok()
            });
        if found {
            Ok(())
        } else {
            Err(prob(ProblemType::IncorrectResponse, format!("no TXT record at {name} holds the expected digest")))
        }
    }

    async fn tls_alpn01(&self, id: &Identifier, key_authorization: &str) -> Result<(), Problem> {
        let checked = check_syntax(id).map_err(|e| prob(ProblemType::Malformed, e.to_string()))?;
        let (sni, host) = match &checked {
            Checked::Dns { name, .. } => (name.clone(), name.clone()),
            Checked::Ip(ip) => (reverse_name(ip), ip.to_string()),
        };
        let ips = self.resolve(&host).await?;
        let addr = SocketAddr::new(ips[0], self.cfg.tls_alpn01_port);
        let expected = digest(&SHA256, key_authorization.as_bytes());
        let cert = tokio::time::timeout(self.cfg.timeout, tls_alpn_handshake(addr, &sni))
            .await
            .map_err(|_| prob(ProblemType::Connection, format!("tls-alpn-01 handshake with {addr} timed out")))??;
        check_alpn_certificate(&cert, &checked, expected.as_ref())
    }
}

/// The reverse-DNS name RFC 8738 §6 puts in the SNI for an IP address.
pub fn reverse_name(ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let nibbles: Vec<String> =
                v6.octets().iter().rev().flat_map(|b| [b & 0xf, b >> 4]).map(|n| format!("{n:x}")).collect();
            format!("{}.ip6.arpa", nibbles.join("."))
        }
    }
}

type HttpResult = Result<(StatusCode, Option<String>, Vec<u8>), Problem>;

async fn http_get(addr: SocketAddr, host: &str, port: u16, path: &str) -> HttpResult {
    let conn_err = |e: &dyn std::fmt::Display| prob(ProblemType::Connection, format!("http-01 to {addr}: {e}"));
    let stream = tokio::net::TcpStream::connect(addr).await.map_err(|e| conn_err(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| conn_err(&e))?;
    let driver = tokio::spawn(conn);
    let host_header = if port == 80 { host.to_string() } else { format!("{host}:{port}") };
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host_header)
        .header(hyper::header::USER_AGENT, "keyrite-acme-va")
        .header(hyper::header::ACCEPT, "*/*")
        .body(http_body_util::Empty::<bytes_alias::Bytes>::new())
        .map_err(|e| conn_err(&e))?;
    let resp = sender.send_request(req).await.map_err(|e| conn_err(&e))?;
    let status = resp.status();
    let location = resp.headers().get(hyper::header::LOCATION).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut body = Vec::new();
    let mut incoming = resp.into_body();
    // Read one byte past the limit, then stop: a large body is refused
    // without being downloaded.
    while body.len() <= MAX_BODY {
        match incoming.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    body.extend_from_slice(data);
                }
            }
            Some(Err(e)) => return Err(conn_err(&e)),
            None => break,
        }
    }
    driver.abort();
    Ok((status, location, body))
}

mod bytes_alias {
    pub use axum::body::Bytes;
}

#[derive(Debug)]
struct AcceptAnyCert;

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCert {
    // The certificate is judged by RFC 8737's rules after the handshake,
    // not by a trust store: it is self-signed by design.
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    // The handshake signature is still checked: it proves the responder
    // holds the certificate's key. Not through rustls' helpers: they parse
    // the certificate with webpki, which refuses the critical
    // acmeIdentifier extension every RFC 8737 certificate carries
    // (UnsupportedCriticalExtension), so no real tls-alpn-01 responder
    // could ever pass.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        // TLS 1.3 forbids PKCS#1 v1.5 and ties ECDSA curves to hashes; the
        // table below only pairs curves with their own hash.
        if matches!(
            dss.scheme,
            rustls::SignatureScheme::RSA_PKCS1_SHA256
                | rustls::SignatureScheme::RSA_PKCS1_SHA384
                | rustls::SignatureScheme::RSA_PKCS1_SHA512
        ) {
            return Err(rustls::Error::PeerMisbehaved(
                rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme,
            ));
        }
        verify_handshake_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        use rustls::SignatureScheme as S;
        vec![
            S::ECDSA_NISTP256_SHA256,
            S::ECDSA_NISTP384_SHA384,
            S::ED25519,
            S::RSA_PSS_SHA256,
            S::RSA_PSS_SHA384,
            S::RSA_PSS_SHA512,
            S::RSA_PKCS1_SHA256,
            S::RSA_PKCS1_SHA384,
            S::RSA_PKCS1_SHA512,
        ]
    }
}

/// Checks a handshake signature against the public key of `cert`, parsed
/// with x509-cert (which, unlike webpki, leaves extensions to us).
fn verify_handshake_signature(
    message: &[u8],
    cert: &rustls::pki_types::CertificateDer<'_>,
    dss: &rustls::DigitallySignedStruct,
) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
    use aws_lc_rs::signature as sig;
    use rustls::SignatureScheme as S;
    let alg: &dyn sig::VerificationAlgorithm = match dss.scheme {
        S::ECDSA_NISTP256_SHA256 => &sig::ECDSA_P256_SHA256_ASN1,
        S::ECDSA_NISTP384_SHA384 => &sig::ECDSA_P384_SHA384_ASN1,
        S::ED25519 => &sig::ED25519,
        S::RSA_PSS_SHA256 => &sig::RSA_PSS_2048_8192_SHA256,
        S::RSA_PSS_SHA384 => &sig::RSA_PSS_2048_8192_SHA384,
        S::RSA_PSS_SHA512 => &sig::RSA_PSS_2048_8192_SHA512,
        S::RSA_PKCS1_SHA256 => &sig::RSA_PKCS1_2048_8192_SHA256,
        S::RSA_PKCS1_SHA384 => &sig::RSA_PKCS1_2048_8192_SHA384,
        S::RSA_PKCS1_SHA512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        _ => return Err(rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoSignatureSchemesInCommon)),
    };
    let bad_cert = || rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding);
    let parsed = x509_cert::Certificate::from_der(cert.as_ref()).map_err(|_| bad_cert())?;
    let key = parsed.tbs_certificate().subject_public_key_info().subject_public_key.raw_bytes();
    sig::UnparsedPublicKey::new(alg, key)
        .verify(message, dss.signature())
        .map_err(|_| rustls::Error::InvalidCertificate(rustls::CertificateError::BadSignature))?;
    Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
}

async fn tls_alpn_handshake(addr: SocketAddr, sni: &str) -> Result<Vec<u8>, Problem> {
    let tls_err = |e: &dyn std::fmt::Display| prob(ProblemType::Tls, format!("tls-alpn-01 with {addr}: {e}"));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_err(&e))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"acme-tls/1".to_vec()];
    // RFC 8737 §4: no resumption, every validation is a full handshake.
    config.resumption = rustls::client::Resumption::disabled();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).map_err(|e| tls_err(&e))?;
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| prob(ProblemType::Connection, format!("tls-alpn-01 to {addr}: {e}")))?;
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, stream).await.map_err(|e| tls_err(&e))?;
    let (_, conn) = tls.get_ref();
    if conn.alpn_protocol() != Some(b"acme-tls/1") {
        return Err(prob(ProblemType::Tls, "tls-alpn-01 server did not negotiate acme-tls/1"));
    }
    let cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .ok_or_else(|| prob(ProblemType::Tls, "tls-alpn-01 server sent no certificate"))?;
    Ok(cert.as_ref().to_vec())
}

/// RFC 8737 §3: exactly one SAN naming the identifier, the acmeIdentifier
/// extension present once, critical, holding the 32-byte digest, and no
/// other critical extension we do not understand.
pub fn check_alpn_certificate(der_bytes: &[u8], id: &Checked, expected: &[u8]) -> Result<(), Problem> {
    use x509_cert::ext::pkix::name::GeneralName;
    use x509_cert::ext::pkix::SubjectAltName;
    let bad = |m: &str| prob(ProblemType::IncorrectResponse, format!("tls-alpn-01 certificate: {m}"));
    let cert = x509_cert::Certificate::from_der(der_bytes).map_err(|_| bad("does not parse"))?;
    let exts = cert.tbs_certificate().extensions().map(|e| e.as_slice()).unwrap_or(&[]);
    let mut digest_seen = 0;
    let mut san_ok = false;
    for ext in exts {
        let oid = ext.extn_id;
        if oid == ACME_IDENTIFIER_OID {
            digest_seen += 1;
            if !ext.critical {
                return Err(bad("acmeIdentifier extension is not critical"));
            }
            let inner = der::asn1::OctetString::from_der(ext.extn_value.as_bytes())
                .map_err(|_| bad("acmeIdentifier is not an OCTET STRING"))?;
            if inner.as_bytes().len() != 32 || verify_slices_are_equal(inner.as_bytes(), expected).is_err() {
                return Err(bad("acmeIdentifier does not hold the key authorization digest"));
            }
        } else if oid == const_oid::db::rfc5280::ID_CE_SUBJECT_ALT_NAME {
            let san = SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|_| bad("bad subjectAltName"))?;
            san_ok = match (san.0.as_slice(), id) {
                ([GeneralName::DnsName(d)], Checked::Dns { name, .. }) => d.to_string().eq_ignore_ascii_case(name),
                ([GeneralName::IpAddress(o)], Checked::Ip(ip)) => match ip {
                    IpAddr::V4(v4) => o.as_bytes() == v4.octets(),
                    IpAddr::V6(v6) => o.as_bytes() == v6.octets(),
                },
                _ => false,
            };
        } else if ext.critical
            && oid != const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS
            && oid != const_oid::db::rfc5280::ID_CE_KEY_USAGE
            && oid != const_oid::db::rfc5280::ID_CE_EXT_KEY_USAGE
        {
            return Err(bad("carries an unknown critical extension"));
        }
    }
    if digest_seen != 1 {
        return Err(bad("needs exactly one acmeIdentifier extension"));
    }
    if !san_ok {
        return Err(bad("needs exactly one subjectAltName naming the identifier"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(reverse_name(&IpAddr::from([127, 0, 0, 1])), "1.0.0.127.in-addr.arpa");
        let v6: IpAddr = "2001:db8::1".parse().unwrap_or(IpAddr::from([0u8; 16]));
        assert!(reverse_name(&v6).starts_with("1.0.0.0.0.0.0.0"));
        assert!(reverse_name(&v6).ends_with("8.b.d.0.1.0.0.2.ip6.arpa"));
    }
}
