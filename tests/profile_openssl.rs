//! Issues roots, intermediates and leaves through the public `profile` API
//! and has the real `openssl` binary judge them. The tests fail (not skip)
//! when openssl is missing: a chain nobody outside keyrite checked proves
//! little.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Command;

use keyrite::hsm::soft::SoftKey;
use keyrite::hsm::{HsmError, KeyAlgorithm, SignatureAlgorithm, Signer};
use keyrite::profile::{self, IssueRequest, Issued, IssuerRef, Profile, ProfileError, San};
use time::{Duration, OffsetDateTime};

fn template(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(name);
    Profile::load(&path).expect("shipped template loads")
}

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc() - Duration::minutes(5);
    t.replace_nanosecond(0).expect("whole second")
}

fn serial() -> Vec<u8> {
    use keyrite::hsm::RandomSource;
    keyrite::hsm::soft::SystemRng.random_bytes(16).expect("rng")
}

fn openssl(args: &[&str]) -> (bool, String) {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the openssl binary is required for these tests and could not run: {e}"));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn write(dir: &Path, name: &str, cert: &Issued) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, &cert.pem).expect("write pem");
    path
}

fn text(path: &Path) -> String {
    let (ok, out) = openssl(&["x509", "-noout", "-text", "-in", path.to_str().expect("utf-8 path")]);
    assert!(ok, "{out}");
    out
}

/// The trimmed line after the one containing `header`.
fn after<'a>(text: &'a str, header: &str) -> &'a str {
    let mut lines = text.lines();
    lines.by_ref().find(|l| l.contains(header)).unwrap_or_else(|| panic!("no {header:?} in\n{text}"));
    lines.next().map(str::trim).unwrap_or("")
}

fn issue_root(key: &dyn Signer) -> Issued {
    let root = template("root-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &root,
        subject: None,
        subject_spki: key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: root.not_after_for(nb),
        issuer: IssuerRef::SelfSigned,
    };
    profile::issue(&req, key).expect("root issues")
}

fn check_root(key: &dyn Signer) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = issue_root(key);
    let path = write(dir.path(), "root.pem", &root);
    let p = path.to_str().expect("utf-8");
    let (ok, out) = openssl(&["verify", "-CAfile", p, p]);
    assert!(ok && out.contains(": OK"), "{out}");
    let t = text(&path);
    assert_eq!(after(&t, "X509v3 Basic Constraints: critical"), "CA:TRUE", "{t}");
    assert_eq!(after(&t, "X509v3 Key Usage: critical"), "Certificate Sign, CRL Sign", "{t}");
    assert!(t.contains("X509v3 Subject Key Identifier"), "{t}");
    assert!(!t.contains("Extended Key Usage"), "{t}");
    let summary = profile::certificate_summary(&root.der).expect("summary");
    assert_eq!(summary.subject, "CN=keyrite Example Root CA R1,OU=Certificate Authority,O=keyrite Example,C=DE");
    assert_eq!(summary.subject, summary.issuer);
    assert_eq!(summary.serial_hex, root.serial_hex);
    assert_eq!(summary.fingerprint, root.fingerprint);
}

#[test]
fn ecdsa_p256_root_verifies_with_openssl() {
    check_root(&SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key"));
}

#[test]
fn ecdsa_p384_root_verifies_with_openssl() {
    check_root(&SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("key"));
}

#[test]
fn rsa_3072_root_verifies_with_openssl() {
    check_root(&SoftKey::generate("root", KeyAlgorithm::Rsa3072).expect("key"));
}

#[test]
fn rsa_3072_pss_root_verifies_with_openssl() {
    let key = SoftKey::generate("root", KeyAlgorithm::Rsa3072)
        .and_then(|k| k.with_signature(SignatureAlgorithm::RsaPssSha256))
        .expect("key");
    check_root(&key);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(dir.path(), "root.pem", &issue_root(&key));
    let t = text(&path);
    assert!(t.contains("Signature Algorithm: rsassaPss"), "{t}");
}

#[test]
fn rsa_4096_root_verifies_with_openssl() {
    check_root(&SoftKey::generate("root", KeyAlgorithm::Rsa4096).expect("key"));
}

fn issue_intermediate(root: &Issued, root_key: &dyn Signer, subject_key: &dyn Signer) -> Result<Issued, ProfileError> {
    let inter = template("intermediate-ca-constrained.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &inter,
        subject: None,
        subject_spki: subject_key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: nb + Duration::days(365),
        issuer: IssuerRef::Certificate { der: &root.der },
    };
    profile::issue(&req, root_key)
}

#[test]
fn root_intermediate_leaf_chain_verifies_with_openssl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP384).expect("key");
    let inter_key = SoftKey::generate("inter", KeyAlgorithm::EcdsaP256).expect("key");
    let leaf_key = SoftKey::generate("leaf", KeyAlgorithm::EcdsaP256).expect("key");

    let root = issue_root(&root_key);
    let inter = issue_intermediate(&root, &root_key, &inter_key).expect("intermediate issues");
    let root_pem = write(dir.path(), "root.pem", &root);
    let inter_pem = write(dir.path(), "intermediate.pem", &inter);
    let (r, i) = (root_pem.to_str().expect("utf-8"), inter_pem.to_str().expect("utf-8"));
    let (ok, out) = openssl(&["verify", "-CAfile", r, i]);
    assert!(ok && out.contains(": OK"), "{out}");
    let t = text(&inter_pem);
    assert_eq!(after(&t, "X509v3 Basic Constraints: critical"), "CA:TRUE, pathlen:0", "{t}");
    assert_eq!(after(&t, "X509v3 Key Usage: critical"), "Digital Signature, Certificate Sign, CRL Sign", "{t}");
    assert!(t.contains("X509v3 Name Constraints: critical"), "{t}");
    assert!(t.contains("X509v3 Authority Key Identifier"), "{t}");
    assert!(t.contains("URI:http://crl.example.com/root-r1.crl"), "{t}");
    assert!(t.contains("CA Issuers - URI:http://pki.example.com/root-r1.der"), "{t}");
    assert!(t.contains("Policy: 2.23.140.1.2.1"), "{t}");

    let leaf_profile = template("tls-leaf.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &leaf_profile,
        subject: None,
        subject_spki: leaf_key.spki_der(),
        sans: vec![San::Dns("www.example.com".into()), San::Ip("10.1.2.3".parse().expect("ip"))],
        serial: serial(),
        not_before: nb,
        not_after: leaf_profile.not_after_for(nb),
        issuer: IssuerRef::Certificate { der: &inter.der },
    };
    let leaf = profile::issue(&req, &inter_key).expect("leaf issues");
    let leaf_pem = write(dir.path(), "leaf.pem", &leaf);
    let l = leaf_pem.to_str().expect("utf-8");
    let (ok, out) = openssl(&["verify", "-CAfile", r, "-untrusted", i, l]);
    assert!(ok && out.contains(": OK"), "{out}");
    let t = text(&leaf_pem);
    assert_eq!(after(&t, "X509v3 Key Usage: critical"), "Digital Signature", "EC leaf: no Key Encipherment\n{t}");
    assert_eq!(after(&t, "X509v3 Extended Key Usage"), "TLS Web Server Authentication", "{t}");
    let san = after(&t, "X509v3 Subject Alternative Name: critical");
    assert!(san.contains("DNS:www.example.com") && san.contains("IP Address:10.1.2.3"), "{t}");
    assert!(!t.contains("CA:TRUE"), "{t}");
    assert!(leaf.findings.iter().all(|f| f.severity == profile::Severity::Warning));

    // An RSA leaf keeps key-encipherment from the template.
    let rsa_leaf_key = SoftKey::generate("leaf-rsa", KeyAlgorithm::Rsa3072).expect("key");
    let req = IssueRequest { subject_spki: rsa_leaf_key.spki_der(), serial: serial(), ..req };
    let rsa_leaf = profile::issue(&req, &inter_key).expect("rsa leaf issues");
    let t = text(&write(dir.path(), "rsa-leaf.pem", &rsa_leaf));
    assert_eq!(after(&t, "X509v3 Key Usage: critical"), "Digital Signature, Key Encipherment", "{t}");

    // The name constraints bite: openssl refuses a leaf outside them.
    let req = IssueRequest { sans: vec![San::Dns("www.example.org".into())], serial: serial(), ..req };
    let outside = profile::issue(&req, &inter_key).expect("keyrite does not check the issuer's constraints");
    let o = write(dir.path(), "outside.pem", &outside);
    let (ok, out) = openssl(&["verify", "-CAfile", r, "-untrusted", i, o.to_str().expect("utf-8")]);
    assert!(!ok, "{out}");
}

/// Counts signatures, to prove refusals happen before the key is used.
struct Counting<'a> {
    inner: &'a SoftKey,
    signs: Cell<usize>,
    flip: bool,
}

impl Signer for Counting<'_> {
    fn key_algorithm(&self) -> KeyAlgorithm {
        self.inner.key_algorithm()
    }
    fn signature_algorithm(&self) -> SignatureAlgorithm {
        self.inner.signature_algorithm()
    }
    fn spki_der(&self) -> &[u8] {
        self.inner.spki_der()
    }
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, HsmError> {
        self.signs.set(self.signs.get() + 1);
        let mut sig = self.inner.sign(message)?;
        if self.flip {
            if let Some(b) = sig.last_mut() {
                *b ^= 0x01;
            }
        }
        Ok(sig)
    }
    fn describe(&self) -> String {
        format!("counting wrapper of {}", self.inner.describe())
    }
}

fn counting(inner: &SoftKey, flip: bool) -> Counting<'_> {
    Counting { inner, signs: Cell::new(0), flip }
}

#[test]
fn a_signer_that_is_not_the_issuer_is_refused_before_signing() {
    let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key");
    let other = SoftKey::generate("other", KeyAlgorithm::EcdsaP256).expect("key");
    let root = issue_root(&root_key);
    let impostor = counting(&other, false);
    let err = issue_intermediate(&root, &impostor, &other).expect_err("refused");
    assert!(matches!(err, ProfileError::WrongSigner { .. }), "{err}");
    assert!(err.to_string().contains("not the issuer certificate's public key"), "{err}");
    assert_eq!(impostor.signs.get(), 0);

    // And a self-signed root whose signer is not the subject key.
    let root_profile = template("root-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &root_profile,
        subject: None,
        subject_spki: root_key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: root_profile.not_after_for(nb),
        issuer: IssuerRef::SelfSigned,
    };
    let err = profile::issue(&req, &impostor).expect_err("refused");
    assert!(matches!(err, ProfileError::WrongSigner { .. }), "{err}");
    assert_eq!(impostor.signs.get(), 0);
}

#[test]
fn a_validity_over_the_maximum_is_refused() {
    let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key");
    let signer = counting(&root_key, false);
    let root_profile = template("root-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &root_profile,
        subject: None,
        subject_spki: root_key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: nb + Duration::days(9133),
        issuer: IssuerRef::SelfSigned,
    };
    let err = profile::issue(&req, &signer).expect_err("refused");
    let msg = err.to_string();
    assert!(matches!(err, ProfileError::Request { field: "not_after", .. }), "{msg}");
    assert!(msg.contains("max_validity") && msg.contains("root-ca.toml"), "{msg}");
    assert_eq!(signer.signs.get(), 0);

    // Exactly the maximum (inclusive end) is fine.
    let req = IssueRequest { not_after: nb + Duration::days(9132) - Duration::seconds(1), ..req };
    profile::issue(&req, &signer).expect("max validity is allowed");
}

/// A CA certificate with an empty subject, made directly with rcgen (keyrite
/// would never make one) but signed by a SoftKey, so that keyrite accepts it
/// as an issuer and lint must catch the empty issuer name.
fn empty_subject_ca(key: &SoftKey) -> Vec<u8> {
    struct Rc<'a>(&'a SoftKey, Vec<u8>);
    impl rcgen::PublicKeyData for Rc<'_> {
        fn der_bytes(&self) -> &[u8] {
            &self.1
        }
        fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
            &rcgen::PKCS_ECDSA_P256_SHA256
        }
    }
    impl rcgen::SigningKey for Rc<'_> {
        fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
            self.0.sign(msg).map_err(|_| rcgen::Error::RemoteKeyError)
        }
    }
    let bits =
        spki::SubjectPublicKeyInfoRef::try_from(key.spki_der()).expect("spki").subject_public_key.raw_bytes().to_vec();
    let mut p = rcgen::CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    p.not_before = now() - Duration::days(1);
    p.not_after = now() + Duration::days(3650);
    p.self_signed(&Rc(key, bits)).expect("rcgen signs").der().to_vec()
}

#[test]
fn a_failing_lint_stops_issuance_before_the_real_key_signs() {
    let bad_root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key");
    let bad_root = empty_subject_ca(&bad_root_key);
    let signer = counting(&bad_root_key, false);
    let inter_key = SoftKey::generate("inter", KeyAlgorithm::EcdsaP256).expect("key");
    let inter = template("intermediate-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &inter,
        subject: None,
        subject_spki: inter_key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: nb + Duration::days(365),
        issuer: IssuerRef::Certificate { der: &bad_root },
    };
    let err = profile::issue(&req, &signer).expect_err("lint refuses");
    let ProfileError::Lint { findings, .. } = &err else { panic!("expected a lint error, got {err}") };
    assert!(findings.iter().any(|f| f.rule == "issuer-not-empty"), "{err}");
    assert!(err.to_string().contains("nothing was signed with the real key"), "{err}");
    assert_eq!(signer.signs.get(), 0, "the real key must not sign a certificate that failed lint");

    // lint_certificate on its own flags the issuer too (its subject is empty).
    let findings = profile::lint_certificate(&bad_root).expect("parses");
    assert!(findings.iter().any(|f| f.rule == "issuer-not-empty"), "{findings:?}");
}

#[test]
fn a_corrupted_signature_is_caught_by_verification() {
    let root_key = SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key");
    let flipper = counting(&root_key, true);
    let root_profile = template("root-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &root_profile,
        subject: None,
        subject_spki: root_key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: root_profile.not_after_for(nb),
        issuer: IssuerRef::SelfSigned,
    };
    let err = profile::issue(&req, &flipper).expect_err("verification fails");
    assert!(matches!(err, ProfileError::Verify { check: "signature", .. }), "{err}");
    assert!(err.to_string().contains("must not be used"), "{err}");
    assert_eq!(flipper.signs.get(), 1, "signed exactly once");
}

#[test]
fn signer_errors_come_back_as_hsm_errors() {
    struct Broken(SoftKey);
    impl Signer for Broken {
        fn key_algorithm(&self) -> KeyAlgorithm {
            self.0.key_algorithm()
        }
        fn signature_algorithm(&self) -> SignatureAlgorithm {
            self.0.signature_algorithm()
        }
        fn spki_der(&self) -> &[u8] {
            self.0.spki_der()
        }
        fn sign(&self, _: &[u8]) -> Result<Vec<u8>, HsmError> {
            Err(HsmError::BadSignature("token removed".into()))
        }
        fn describe(&self) -> String {
            "broken token".into()
        }
    }
    let key = Broken(SoftKey::generate("root", KeyAlgorithm::EcdsaP256).expect("key"));
    let root_profile = template("root-ca.toml");
    let nb = now();
    let req = IssueRequest {
        profile: &root_profile,
        subject: None,
        subject_spki: key.spki_der(),
        sans: vec![],
        serial: serial(),
        not_before: nb,
        not_after: root_profile.not_after_for(nb),
        issuer: IssuerRef::SelfSigned,
    };
    let err = profile::issue(&req, &key).expect_err("fails");
    let ProfileError::Signer { source: HsmError::BadSignature(m), signer } = &err else { panic!("{err}") };
    assert_eq!(m, "token removed");
    assert_eq!(signer, "broken token");
}
