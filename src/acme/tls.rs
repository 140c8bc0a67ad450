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

use super::ca::{self, SignerHandle};
use super::AcmeError;
use crate::profile::{Profile, San};

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

fn certified(chain: Vec<Vec<u8>>, key: &Zeroizing<Vec<u8>>) -> Result<CertifiedKey, AcmeError> {
    let certs: Vec<CertificateDer<'static>> = chain.into_iter().map(CertificateDer::from).collect();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.to_vec()));
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| AcmeError::Tls(e.to_string()))
}

/// The rustls configuration serving whatever `current` holds.
pub fn server_config(current: Arc<CurrentCert>) -> Result<rustls::ServerConfig, AcmeError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| AcmeError::Tls(e.to_string()))?
        .with_no_client_auth()
        .with_cert_resolver(current);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// A certificate from files: served as it is.
pub fn from_files(chain: Vec<Vec<u8>>, key: Zeroizing<Vec<u8>>) -> Result<Arc<CurrentCert>, AcmeError> {
    Ok(Arc::new(CurrentCert::new(certified(chain, &key)?)))
}

/// What the renewal task needs to issue the next certificate.
pub struct Reissue {
    names: Vec<San>,
    profile: Profile,
    chain_pem: String,
    /// `None`: the template's default validity.
    lifetime: Option<time::Duration>,
    /// When the current certificate should be replaced.
    renew_at: OffsetDateTime,
}

/// Issues the first certificate; returns it and how to renew it.
pub async fn issue_at_start(
    signer: &SignerHandle,
    profile: &Profile,
    names: Vec<San>,
    chain_pem: &str,
    lifetime: Option<Duration>,
) -> Result<(Arc<CurrentCert>, Reissue), AcmeError> {
    if names.is_empty() {
        return Err(AcmeError::Config("the server certificate needs at least one name".into()));
    }
    let lifetime = lifetime.map(super::to_time);
    let (key, renew_at) = issue(signer, profile, &names, chain_pem, lifetime).await?;
    let reissue = Reissue { names, profile: profile.clone(), chain_pem: chain_pem.to_string(), lifetime, renew_at };
    Ok((Arc::new(CurrentCert::new(key)), reissue))
}

/// Renews `current` at two thirds of each certificate's lifetime until
/// `stop` turns true.
pub async fn keep_renewed(
    current: Arc<CurrentCert>,
    mut reissue: Reissue,
    state: super::wfe::Shared,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let wait = (reissue.renew_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        let wait = Duration::try_from(wait).unwrap_or(Duration::ZERO);
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match issue(&state.signer, &reissue.profile, &reissue.names, &reissue.chain_pem, reissue.lifetime).await {
            Ok((key, renew_at)) => {
                current.replace(key);
                reissue.renew_at = renew_at;
                tracing::info!(next_renewal = %renew_at, "the server's own TLS certificate was renewed");
            }
            Err(e) => {
                reissue.renew_at = OffsetDateTime::now_utc() + RETRY_AFTER_FAILURE;
                tracing::error!(error = %e, "the server's own TLS certificate was not renewed; retrying in a minute");
            }
        }
    }
}

/// A fresh P-256 key (it never leaves memory) and a leaf for `names`.
async fn issue(
    signer: &SignerHandle,
    profile: &Profile,
    names: &[San],
    chain_pem: &str,
    lifetime: Option<time::Duration>,
) -> Result<(CertifiedKey, OffsetDateTime), AcmeError> {
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
    let tls_err = |m: &str| AcmeError::Tls(m.to_string());
    let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).map_err(|_| tls_err("key generation"))?;
    let pkcs8 = Zeroizing::new(pair.to_pkcs8v1().map_err(|_| tls_err("PKCS#8"))?.as_ref().to_vec());
    let spki = pair.public_key().as_der().map_err(|_| tls_err("SPKI"))?.as_ref().to_vec();
    let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc());
    let not_before = now - time::Duration::minutes(1);
    let not_after = match lifetime {
        Some(l) => not_before + l,
        None => profile.not_after_for(not_before),
    };
    let issued = signer
        .issue(ca::LeafRequest { spki_der: spki, sans: names.to_vec(), not_before, not_after, profile: None })
        .await?;
    let mut chain = vec![issued.der];
    chain.extend(super::pem_blocks(chain_pem));
    let renew_at = not_before + (not_after - not_before) * 2 / 3;
    Ok((certified(chain, &pkcs8)?, renew_at))
}
