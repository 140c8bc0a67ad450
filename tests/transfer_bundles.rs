//! USB transfer bundles: a round trip, and each way a stick can be wrong.

use std::fs;
use std::path::{Path, PathBuf};

use keyrite::transfer::{Bundle, BundleKind, BundleWriter, Limits, TransferError, MANIFEST};

const CSR: &[u8] = b"-----BEGIN CERTIFICATE REQUEST-----\nnot really\n-----END CERTIFICATE REQUEST-----\n";

fn make(dir: &Path) -> PathBuf {
    let bundle = dir.join("bundle");
    let mut w = BundleWriter::create(&bundle).expect("create");
    w.add("csr.pem", CSR).expect("add csr");
    w.add("notes.txt", b"from the issuing CA host\n").expect("add notes");
    let mut extra = serde_json::Map::new();
    extra.insert("ca".into(), "Issuing CA E1".into());
    w.finish(BundleKind::IntermediateRequest, "ops@issuing-ca-1", extra).expect("finish");
    bundle
}

fn open(dir: &Path) -> Result<Bundle, TransferError> {
    Bundle::open(dir, BundleKind::IntermediateRequest, &Limits::default())
}

/// Rewrites the manifest (write-once on disk, so remove it first).
fn edit_manifest(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(MANIFEST);
    let mut v: serde_json::Value = serde_json::from_slice(&fs::read(&path).expect("read")).expect("json");
    f(&mut v);
    fs::remove_file(&path).expect("rm");
    fs::write(&path, serde_json::to_vec_pretty(&v).expect("ser")).expect("write");
}

fn err_text(r: Result<Bundle, TransferError>) -> (TransferError, String) {
    let e = r.expect_err("the bundle must be refused");
    let s = e.to_string();
    (e, s)
}

#[test]
fn round_trip() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    let b = open(&dir).expect("open");
    assert_eq!(b.file("csr.pem").expect("csr"), CSR);
    assert_eq!(b.manifest().identity, "ops@issuing-ca-1");
    assert_eq!(b.manifest().kind, BundleKind::IntermediateRequest);
    assert_eq!(b.manifest().files.len(), 2);
    assert_eq!(b.manifest().extra["ca"], "Issuing CA E1");
    let manifest = fs::read(dir.join(MANIFEST)).expect("manifest");
    assert_eq!(b.manifest_sha256().hex, keyrite::words::sha256_hex(&manifest));
    assert_eq!(b.file_names().collect::<Vec<_>>(), ["csr.pem", "notes.txt"]);
    // The wrong kind is refused by name.
    let e = Bundle::open(&dir, BundleKind::CaBackup, &Limits::default()).expect_err("kind");
    assert!(matches!(e, TransferError::WrongKind { .. }), "{e}");
    // The writer never reuses a non-empty directory.
    assert!(matches!(BundleWriter::create(&dir), Err(TransferError::NotEmpty { .. })));
}

#[test]
fn writer_refuses_bad_names() {
    let tmp = tempfile::tempdir().expect("tmp");
    let mut w = BundleWriter::create(&tmp.path().join("b")).expect("create");
    for bad in ["../x", "a/b", ".hidden", "", "manifest.json", "a\0b"] {
        assert!(matches!(w.add(bad, b"x"), Err(TransferError::BadName { .. })), "{bad:?}");
    }
    w.add("x", b"1").expect("x");
    assert!(matches!(w.add("x", b"2"), Err(TransferError::Duplicate { .. })));
}

#[test]
fn a_changed_byte_is_a_hash_mismatch() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    let path = dir.join("csr.pem");
    let mut bytes = fs::read(&path).expect("read");
    bytes[40] ^= 1;
    fs::remove_file(&path).expect("rm");
    fs::write(&path, &bytes).expect("write");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::HashMismatch { ref file, .. } if file == "csr.pem"), "{s}");
    assert!(s.contains("hash mismatch for csr.pem: the file changed after the manifest was written"), "{s}");
}

#[test]
fn a_missing_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    fs::remove_file(dir.join("notes.txt")).expect("rm");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::Missing { ref file, .. } if file == "notes.txt"), "{s}");
    assert!(s.contains("notes.txt is listed in the manifest but missing"), "{s}");
}

#[test]
fn a_missing_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    fs::remove_file(dir.join(MANIFEST)).expect("rm");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::NoManifest { .. }), "{s}");
}

#[test]
fn an_extra_file_or_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    fs::write(dir.join("second.csr"), b"x").expect("write");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::Unlisted { ref file, .. } if file == "second.csr"), "{s}");
    assert!(s.contains("second.csr is in the bundle but not in the manifest"), "{s}");
    fs::remove_file(dir.join("second.csr")).expect("rm");
    fs::create_dir(dir.join(".Trashes")).expect("mkdir");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::Unlisted { ref file, .. } if file == ".Trashes"), "{s}");
}

#[test]
fn a_dotdot_path_in_the_manifest() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    fs::write(tmp.path().join("x"), CSR).expect("outside file");
    edit_manifest(&dir, |v| v["files"][0]["path"] = "../x".into());
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::BadName { ref file, .. } if file == "../x"), "{s}");
    assert!(s.contains("\"../x\" is not a plain file name"), "{s}");
    edit_manifest(&dir, |v| v["files"][0]["path"] = "/etc/passwd".into());
    assert!(matches!(open(&dir), Err(TransferError::BadName { .. })));
}

#[test]
fn a_symlink() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    let path = dir.join("notes.txt");
    let target = tmp.path().join("elsewhere.txt");
    fs::write(&target, b"from the issuing CA host\n").expect("target");
    fs::remove_file(&path).expect("rm");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::Symlink { ref file, .. } if file == "notes.txt"), "{s}");
    assert!(s.contains("notes.txt is a symbolic link"), "{s}");
    // A symlinked manifest is refused too.
    let tmp2 = tempfile::tempdir().expect("tmp");
    let dir2 = make(tmp2.path());
    let m = dir2.join(MANIFEST);
    let copy = tmp2.path().join("m.json");
    fs::copy(&m, &copy).expect("copy");
    fs::remove_file(&m).expect("rm");
    std::os::unix::fs::symlink(&copy, &m).expect("symlink");
    assert!(matches!(open(&dir2), Err(TransferError::Symlink { .. })));
}

#[test]
fn an_oversized_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    let limits = Limits { max_file_bytes: 64, ..Limits::default() };
    let e = Bundle::open(&dir, BundleKind::IntermediateRequest, &limits).expect_err("too large");
    let s = e.to_string();
    assert!(matches!(e, TransferError::TooLarge { ref file, limit: 64, .. } if file == "csr.pem"), "{s}");
    // A file that grew beyond what the manifest says is caught before reading it all.
    let path = dir.join("notes.txt");
    fs::remove_file(&path).expect("rm");
    fs::write(&path, vec![b'a'; 10_000]).expect("write");
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::SizeMismatch { ref file, .. } if file == "notes.txt"), "{s}");
    // An oversized manifest.
    let limits = Limits { max_manifest_bytes: 100, ..Limits::default() };
    let e = Bundle::open(&dir, BundleKind::IntermediateRequest, &limits).expect_err("manifest");
    assert!(matches!(e, TransferError::TooLarge { ref file, .. } if file == MANIFEST), "{e}");
}

#[test]
fn a_manifest_listing_a_file_twice() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    edit_manifest(&dir, |v| {
        let first = v["files"][0].clone();
        v["files"].as_array_mut().expect("array").push(first);
    });
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::ListedTwice { ref file, .. } if file == "csr.pem"), "{s}");
}

#[test]
fn a_manifest_with_unknown_fields() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = make(tmp.path());
    edit_manifest(&dir, |v| v["signed_by"] = "nobody".into());
    let (e, s) = err_text(open(&dir));
    assert!(matches!(e, TransferError::BadManifest { .. }), "{s}");
    assert!(s.contains("signed_by"), "{s}");
}
