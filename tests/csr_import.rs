//! CSR import with real `openssl req` requests.

use std::path::{Path, PathBuf};
use std::process::Command;

use keyrite::profile::Profile;
use keyrite::transfer::csr::{parse_csr, CsrError};

const OPENSSL: &str = "/usr/bin/openssl";

fn template() -> Profile {
    Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("templates/intermediate-ca.toml")).expect("template")
}

/// Runs `openssl req` for a fresh key; returns the CSR path. Fails (never
/// skips) when openssl is missing.
fn openssl_csr(dir: &Path, name: &str, newkey: &[&str], extra: &[&str]) -> PathBuf {
    assert!(Path::new(OPENSSL).exists(), "{OPENSSL} is required for these tests");
    let out = dir.join(format!("{name}.csr"));
    let mut cmd = Command::new(OPENSSL);
    cmd.args(["req", "-new", "-nodes", "-keyout"])
        .arg(dir.join(format!("{name}.key")))
        .args(newkey)
        .args(["-subj", "/C=DE/O=keyrite Example/CN=keyrite Example Issuing CA E1"])
        .args(["-addext", "basicConstraints=critical,CA:TRUE,pathlen:0"])
        .args(extra)
        .arg("-out")
        .arg(&out);
    let status = cmd.output().expect("run openssl");
    assert!(status.status.success(), "openssl req failed: {}", String::from_utf8_lossy(&status.stderr));
    out
}

fn ec(dir: &Path, name: &str, extra: &[&str]) -> Vec<u8> {
    std::fs::read(openssl_csr(dir, name, &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"], extra))
        .expect("read")
}

#[test]
fn ec_p256_csr_is_accepted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pem = ec(tmp.path(), "p256", &["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    let csr = parse_csr(&pem).expect("parse");
    csr.check_against(&template()).expect("fits the template");
    assert_eq!(csr.subject().common_name.as_deref(), Some("keyrite Example Issuing CA E1"));
    assert_eq!(csr.subject().country.as_deref(), Some("DE"));
    let names: Vec<_> = csr.requested_extensions().iter().map(|e| (e.name, e.critical)).collect();
    assert_eq!(names, [("basicConstraints", true), ("keyUsage", true)]);
    assert_eq!(csr.requested_extensions()[0].summary, "CA:TRUE, pathLen:0");
    assert_eq!(csr.sha256().hex, keyrite::words::sha256_hex(csr.der()));
    assert_eq!(csr.spki_sha256().hex, keyrite::words::sha256_hex(csr.spki_der()));
    // The same request as DER parses to the same thing.
    let der = pem_rfc7468::decode_vec(&pem).expect("pem").1;
    let again = parse_csr(&der).expect("der");
    assert_eq!(again.sha256(), csr.sha256());
    assert!(csr.summary().iter().any(|l| l.contains("ecdsa-p256")), "{:?}", csr.summary());
}

#[test]
fn ec_p384_signed_with_sha256_is_accepted() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path =
        openssl_csr(tmp.path(), "p384", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha256"], &[]);
    let csr = parse_csr(&std::fs::read(path).expect("read")).expect("parse");
    csr.check_against(&template()).expect("fits");
}

#[test]
fn rsa_3072_accepted_and_rsa_2048_refused_by_key_policy() {
    let tmp = tempfile::tempdir().expect("tmp");
    let p = openssl_csr(tmp.path(), "rsa3072", &["-newkey", "rsa:3072"], &[]);
    let csr = parse_csr(&std::fs::read(p).expect("read")).expect("parse 3072");
    csr.check_against(&template()).expect("3072 fits");

    let p = openssl_csr(tmp.path(), "rsa2048", &["-newkey", "rsa:2048"], &[]);
    let csr = parse_csr(&std::fs::read(p).expect("read")).expect("parse 2048");
    let e = csr.check_against(&template()).expect_err("2048 is too small");
    assert!(matches!(e, CsrError::KeyRefused { .. }), "{e}");
    assert!(e.to_string().contains("2048"), "{e}");
}

#[test]
fn broken_signature_fails_proof_of_possession() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pem = ec(tmp.path(), "p256", &[]);
    let mut der = pem_rfc7468::decode_vec(&pem).expect("pem").1;
    // The last byte is inside the signature's s value.
    let last = der.len() - 1;
    der[last] ^= 0x01;
    let e = parse_csr(&der).expect_err("PoP must fail");
    assert!(matches!(e, CsrError::ProofOfPossession(_)), "{e}");
    // A changed subject byte breaks it the same way.
    let mut der = pem_rfc7468::decode_vec(&pem).expect("pem").1;
    let at = der.windows(4).position(|w| w == b"keyr").expect("subject text");
    der[at] = b'K';
    assert!(matches!(parse_csr(&der), Err(CsrError::ProofOfPossession(_))));
}

#[test]
fn path_len_2_asks_for_more_than_the_template_allows() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = dir_csr(tmp.path(), "basicConstraints=critical,CA:TRUE,pathlen:2");
    let csr = parse_csr(&std::fs::read(path).expect("read")).expect("parse");
    let e = csr.check_against(&template()).expect_err("pathLen 2");
    assert!(matches!(e, CsrError::MoreThanTemplate { extension: "basicConstraints", .. }), "{e}");
    assert!(e.to_string().contains("asks for more than the template allows"), "{e}");
    assert!(e.to_string().contains("pathLen 2"), "{e}");

    let path = dir_csr(tmp.path(), "basicConstraints=critical,CA:TRUE");
    let csr = parse_csr(&std::fs::read(path).expect("read")).expect("parse");
    let e = csr.check_against(&template()).expect_err("unlimited");
    assert!(e.to_string().contains("no path length limit"), "{e}");
}

fn dir_csr(dir: &Path, bc: &str) -> PathBuf {
    let out = dir.join(format!("{}.csr", bc.len()));
    let o = Command::new(OPENSSL)
        .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout"])
        .arg(dir.join("k.pem"))
        .args(["-subj", "/CN=Int", "-addext", bc, "-out"])
        .arg(&out)
        .output()
        .expect("openssl");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    out
}

#[test]
fn key_usage_and_eku_beyond_the_template_are_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pem = ec(tmp.path(), "ku", &["-addext", "keyUsage=critical,keyCertSign,cRLSign,nonRepudiation"]);
    let e = parse_csr(&pem).expect("parse").check_against(&template()).expect_err("ku");
    assert!(matches!(e, CsrError::MoreThanTemplate { extension: "keyUsage", .. }), "{e}");
    assert!(e.to_string().contains("content-commitment"), "{e}");

    let pem = ec(tmp.path(), "eku", &["-addext", "extendedKeyUsage=serverAuth,codeSigning"]);
    let e = parse_csr(&pem).expect("parse").check_against(&template()).expect_err("eku");
    assert!(matches!(e, CsrError::MoreThanTemplate { extension: "extendedKeyUsage", .. }), "{e}");

    let pem = ec(tmp.path(), "eku-ok", &["-addext", "extendedKeyUsage=serverAuth"]);
    parse_csr(&pem).expect("parse").check_against(&template()).expect("serverAuth is granted");
}

#[test]
fn an_unexpected_extension_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let pem = ec(tmp.path(), "pol", &["-addext", "certificatePolicies=1.2.3.4"]);
    let e = parse_csr(&pem).expect_err("unexpected extension");
    assert!(matches!(e, CsrError::UnexpectedExtension { .. }), "{e}");
    assert!(e.to_string().contains("asks for more than the template allows"), "{e}");
    assert!(e.to_string().contains("2.5.29.32"), "{e}");
}

#[test]
fn sha1_signed_csr_is_refused() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = openssl_csr(tmp.path(), "sha1", &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"], &[]);
    let e = parse_csr(&std::fs::read(path).expect("read")).expect_err("sha1");
    assert!(matches!(e, CsrError::Sha1 { .. }), "{e}");
}

#[test]
fn malformed_inputs() {
    assert!(matches!(parse_csr(&vec![0x30; 20_000]), Err(CsrError::TooLarge { .. })));
    let cert = b"-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n";
    assert!(matches!(parse_csr(cert), Err(CsrError::PemLabel(_))));
    assert!(matches!(parse_csr(b"\x30\x00"), Err(CsrError::Der(_))));
    let tmp = tempfile::tempdir().expect("tmp");
    let pem = ec(tmp.path(), "ber", &[]);
    let mut der = pem_rfc7468::decode_vec(&pem).expect("pem").1;
    der.push(0);
    assert!(parse_csr(&der).is_err(), "trailing bytes");
    // A subject attribute keyrite cannot carry over.
    let o = Command::new(OPENSSL)
        .args(["req", "-new", "-nodes", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-keyout"])
        .arg(tmp.path().join("k2.pem"))
        .args(["-subj", "/CN=Int/emailAddress=a@example.com", "-out"])
        .arg(tmp.path().join("mail.csr"))
        .output()
        .expect("openssl");
    assert!(o.status.success());
    let e = parse_csr(&std::fs::read(tmp.path().join("mail.csr")).expect("read")).expect_err("email");
    assert!(matches!(e, CsrError::Subject { .. }), "{e}");
    assert!(e.to_string().contains("1.2.840.113549.1.9.1"), "{e}");
}
