//! The server's own HTTPS certificate.
//!
//! Given files, they are served as they are (renewing them is the job of
//! whoever made them). Issued at start from the intermediate, the
//! certificate is renewed by the server itself: a task issues a fresh one
//! (new key, same names) once two thirds of its lifetime have passed and
//! swaps it in behind a resolver, so connections made after that get the new
//! one and open connections are not disturbed. A server left running for
//! months never serves an expired certificate.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;
use zeroize::Zeroizing;

use super::clock::{span, ClockExt, SharedClock};
use super::ra::issuance::IssuanceEngine;
use super::ra::validity;
use crate::profile::{Profile, San};

/// Why the server's own certificate could not be set up. Messages carry
/// their cause's text; no variant has a `#[source]`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// rustls refused the certificate, the key or the configuration.
    #[error("TLS setup: {0}")]
    Setup(String),
    /// A fresh key could not be made.
    #[error("TLS key: {0}")]
    Key(String),
    /// The intermediate did not issue the certificate.
    #[error("the server's own certificate was not issued: {0}")]
    Issue(String),
}

/// If renewing fails, try again after this long (the old certificate still
/// has a third of its life).
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(60);

/// The certificate handed to every new TLS connection; swapped on renewal.
#[derive(Debug)]
pub struct CurrentCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl CurrentCert {
    fn new(key: CertifiedKey) -> Self {
        CurrentCert { current: RwLock::new(Arc::new(key)) }
    }

    fn replace(&self, key: CertifiedKey) {
        match self.current.write() {
            Ok(mut c) => *c = Arc::new(key),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(key),
        }
    }

    /// The leaf being served now (DER).
    pub fn leaf_der(&self) -> Option<Vec<u8>> {
        let c = self.current.read().unwrap_or_else(|p| p.into_inner());
        c.cert.first().map(|d| d.as_ref().to_vec())
    }
}

impl ResolvesServerCert for CurrentCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn certified(chain: Vec<Vec<u8>>, key: &Zeroizing<Vec<u8>>) -> Result<CertifiedKey, TlsError> {
    let certs: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| TlsError::Setup(e.to_string()))
}

/// The rustls configuration serving whatever `current` holds.
pub fn server_config(current: Arc<CurrentCert>) -> Result<rustls::ServerConfig, TlsError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Setup(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(current);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A certificate from files: served as it is.
pub fn from_files(chain: Vec<Vec<u8>>, key: Zeroizing<Vec<u8>>) -> Result<Arc<CurrentCert>, TlsError> {
    Ok(Arc::new(CurrentCert::new(certified(chain, &key)?)))
}

/// What the renewal task needs to issue the next certificate, and
/// nothing more.
pub struct Reissue {
    names: Vec<San>,
    profile: Profile,
    chain_pem: String,
    /// `None`: the template's default validity.
    lifetime: Option<time::Duration>,
    /// When the current certificate should be replaced.
    renew_at: OffsetDateTime,
    engine: Arc<IssuanceEngine>,
    clock: SharedClock,
}

/// Issues the first certificate; returns it and how to renew it.
pub async fn issue_at_start(
    engine: Arc<IssuanceEngine>,
    clock: SharedClock,
    profile: &Profile,
    names: Vec<San>,
    chain_pem: &str,
    lifetime: Option<Duration>,
) -> Result<(Arc<CurrentCert>, Reissue), TlsError> {
    let mut reissue = Reissue {
        names,
        profile: profile.clone(),
        chain_pem: chain_pem.to_string(),
        lifetime: lifetime.map(span),
        renew_at: clock.now_second(),
        engine,
        clock,
    };
    let key = reissue.issue().await?;
    Ok((Arc::new(CurrentCert::new(key)), reissue))
}

/// Renews `current` at two thirds of each certificate's lifetime until
/// `stop` turns true.
pub async fn keep_renewed(current: Arc<CurrentCert>, mut reissue: Reissue, mut stop: watch::Receiver<bool>) {
    loop {
        let wait = (reissue.renew_at - reissue.clock.now()).max(time::Duration::ZERO);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match reissue.issue().await {
            Ok(key) => {
                current.replace(key);
                tracing::info!(next_renewal = %reissue.renew_at, "the server's own TLS certificate was renewed");
            }
            Err(e) => {
                reissue.renew_at = reissue.clock.now() + RETRY_AFTER_FAILURE;
                tracing::error!(error = %e, "the server's own TLS certificate was not renewed; retrying in a minute");
            }
        }
    }
}

impl Reissue {
    /// A fresh P-256 key (it never leaves memory) and a leaf for the names,
    /// through the one write path; sets the next renewal time.
    async fn issue(&mut self) -> Result<CertifiedKey, TlsError> {
        use aws_lc_rs::encoding::AsDer;
        use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
        let key_err = |m: &str| TlsError::Key(m.to_string());
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| key_err("key generation"))?;
        let pkcs8 = Zeroizing::new(pair.to_pkcs8v1().map_err(|_| key_err("PKCS#8"))?.as_ref().to_vec());
        let spki = pair.public_key().as_der().map_err(|_| key_err("SPKI"))?.as_ref().to_vec();
        let v = validity::for_server(self.clock.now_second(), self.lifetime, &self.profile, self.engine.issuer());
        let issued =
            self.engine.issue_server(&self.names, spki, v).await.map_err(|e| TlsError::Issue(e.to_string()))?;
        let mut chain = vec![issued.der];
        chain.extend(pem_certificates(&self.chain_pem).map_err(TlsError::Setup)?);
        self.renew_at = v.not_before + (v.not_after - v.not_before) * 2 / 3;
        certified(chain, &pkcs8)
    }
}

/// The DER of each CERTIFICATE block in a PEM bundle, in order; any block
/// that does not decode, or any other label, is refused (never skipped).
pub fn pem_certificates(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    const END: &str = "-----END ";
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(start) = rest.find("-----BEGIN ") {
        let tail = &rest[start..];
        let end = tail.find(END).ok_or("a PEM block has no END line")?;
        let close = tail[end + END.len()..].find("-----").ok_or("a PEM block's END line is cut")?;
        let block_len = end + END.len() + close + "-----".len();
        let (label, der) = pem_rfc7468::decode_vec(&tail.as_bytes()[..block_len])
            .map_err(|e| format!("PEM block {} does not decode: {e}", out.len() + 1))?;
        if label != "CERTIFICATE" {
            return Err(format!("PEM block {} is a {label}, not a CERTIFICATE", out.len() + 1));
        }
        out.push(der);
        rest = &tail[block_len..];
    }
    Ok(out)
}
