//! Every error message of acme-serve's rooms (`acme`, `client`,
//! `config::acme`), rendered in one place for review, as rustls does: run
//! `cargo test --lib error_messages -- --nocapture` to read them all.
//!
//! The policy they are held to: the message says what failed and carries
//! its cause's text, and no error also names that cause as its `source()`
//! (an error chain printed with `{:#}` would show it twice). Each message
//! names the object at fault (a file, an option, a serial, a key) where
//! there is one.

use std::error::Error;
use std::net::SocketAddr;
use std::path::PathBuf;

use super::ca::CaError;
use super::crl::CrlError;
use super::issuance_log::LogError;
use super::launch::LaunchError;
use super::ra::issuance::IssuanceError;
use super::server::AcmeError;
use super::store::StoreError;
use super::tls::TlsError;
use crate::client::bench::BenchError;
use crate::client::ClientError;
use crate::config::acme::AcmeConfigError;
use crate::config::rate_limits::RateLimitError;
use crate::hsm::HsmError;

fn all() -> Vec<Box<dyn Error>> {
    let addr: SocketAddr = "127.0.0.1:443".parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 443)));
    let hsm = || HsmError::BadPublicKey("the key is not P-256".into());
    let store = || StoreError::Database("disk I/O error".into());
    let config = || AcmeConfigError::Option { option: "--lifetime".into(), problem: "must be positive".into() };
    vec![
        Box::new(config()),
        Box::new(AcmeConfigError::File { path: PathBuf::from("limits.toml"), problem: "unknown field `burst`".into() }),
        Box::new(RateLimitError::File { path: "limits.toml".into(), problem: "cannot read".into() }),
        Box::new(RateLimitError::Syntax("expected `=`".into())),
        Box::new(RateLimitError::Field { field: "override #1".into(), problem: "name exactly one".into() }),
        Box::new(store()),
        Box::new(StoreError::Corrupt("missing field `id`".into())),
        Box::new(StoreError::Conflict("a unique value is already in use".into())),
        Box::new(StoreError::Stale),
        Box::new(StoreError::Refused("the external account key is revoked".into())),
        Box::new(StoreError::AlreadyReplaced("order-1".into())),
        Box::new(StoreError::NotPending("0a1b".into())),
        Box::new(StoreError::Log("issuance log entry refused: details key `pin`".into())),
        Box::new(LogError::Rejected("details key `pin` looks secret".into())),
        Box::new(LogError::Signer("signing checkpoint 4 failed: token removed".into())),
        Box::new(LogError::Head("size 3 and its Merkle range disagree".into())),
        Box::new(CaError::SignerOpen(hsm())),
        Box::new(CaError::AuditKey("softhsm key int is the issuing key".into())),
        Box::new(CaError::SignerGone),
        Box::new(CaError::Rng(hsm())),
        Box::new(CaError::Thread("Resource temporarily unavailable".into())),
        Box::new(CaError::Crl("lint: nextUpdate before thisUpdate".into())),
        Box::new(CaError::Deadline),
        Box::new(CaError::AuditSign(hsm())),
        Box::new(CrlError::Store(store())),
        Box::new(CrlError::Signer(CaError::SignerGone)),
        Box::new(CrlError::BadSerial("zz".into())),
        Box::new(CrlError::Bind { addr, cause: "Address already in use".into() }),
        Box::new(TlsError::Setup("no certificates".into())),
        Box::new(TlsError::Key("key generation".into())),
        Box::new(TlsError::Issue("the signer failed".into())),
        Box::new(IssuanceError::Claimed),
        Box::new(IssuanceError::Reserve("disk I/O error".into())),
        Box::new(IssuanceError::Signer(CaError::Deadline)),
        Box::new(IssuanceError::Unstored { serial: "0a1b".into(), cause: "disk full".into() }),
        Box::new(IssuanceError::Resolved("0a1b".into())),
        Box::new(IssuanceError::Log("checkpoint".into())),
        Box::new(AcmeError::Config(config())),
        Box::new(AcmeError::Bind { addr, cause: "Address already in use".into() }),
        Box::new(AcmeError::Store(store())),
        Box::new(AcmeError::Ca(CaError::SignerGone)),
        Box::new(AcmeError::Tls(TlsError::Key("SPKI".into()))),
        Box::new(AcmeError::Crl(CrlError::BadSerial("zz".into()))),
        Box::new(AcmeError::Nonce(super::nonce::NonceError::Rng)),
        Box::new(AcmeError::Issuer("the issuer certificate has no subjectKeyIdentifier".into())),
        Box::new(AcmeError::Issuance(IssuanceError::Claimed)),
        Box::new(AcmeError::Task { what: "signer start", cause: "panicked".into() }),
        Box::new(LaunchError::Acme(AcmeError::Store(store()))),
        Box::new(LaunchError::Config(config())),
        Box::new(LaunchError::File { path: PathBuf::from("tls.pem"), problem: "holds no CERTIFICATE block".into() }),
        Box::new(LaunchError::Runtime("too many open files".into())),
        Box::new(LaunchError::Signals("not supported".into())),
        Box::new(ClientError::Protocol("newOrder: rateLimited".into())),
        Box::new(ClientError::Responder("cannot listen on 127.0.0.1:80".into())),
        Box::new(BenchError::Config("--concurrency must be at least 1".into())),
        Box::new(super::eab::EabError::Malformed("externalAccountBinding has no `kid`".into())),
        Box::new(super::eab::EabError::Unauthorized("externalAccountBinding MAC does not verify".into())),
        Box::new(super::identifier::IdentifierError::Unsupported("email".into())),
        Box::new(super::jws::JwsError::BadSignature),
        Box::new(super::nonce::NonceError::Used),
        Box::new(super::ari::AriError::BadCertId),
        Box::new(super::model::RngFailure),
    ]
}

#[test]
fn every_message_reads_well_and_carries_its_cause_once() {
    for e in all() {
        let text = e.to_string();
        println!("{text}");
        assert!(!text.trim().is_empty(), "an empty message");
        assert_eq!(text.trim(), text, "{text:?}: no stray whitespace");
        assert!(!text.ends_with('.'), "{text:?}: messages end without a period, so they chain");
        // One cause policy: the message carries it; no `source()` repeats it.
        assert!(e.source().is_none(), "{text:?} has a source() too: a chain would print its cause twice");
    }
    // Wrapping errors show their cause's text once.
    let wrapped = AcmeError::Store(StoreError::Database("disk I/O error".into())).to_string();
    assert_eq!(wrapped.matches("disk I/O error").count(), 1, "{wrapped}");
    let wrapped = LaunchError::Acme(AcmeError::Ca(CaError::SignerOpen(HsmError::BadPublicKey("x".into()))));
    assert_eq!(wrapped.to_string().matches("bad public key: x").count(), 1, "{wrapped}");
}
