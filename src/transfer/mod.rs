//! The `transfer` room: what crosses the air gap on a USB stick.
//!
//! A bundle is one directory holding a few files and a `manifest.json` that
//! names each file with its size and SHA-256. The writer puts the manifest in
//! last, so a bundle whose copy was interrupted has no manifest and is
//! refused as a whole. The reader trusts nothing on the stick: the manifest is
//! size-capped and parsed strictly, every name must be a plain file name,
//! every listed file must be there with the listed size and hash, nothing
//! else may be there, and symlinks are refused outright (a symlink could
//! point the reader at a file on the air-gapped machine itself).
//!
//! [`csr`] parses the certificate requests that arrive in bundles.

pub mod csr;

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::files::{self, FileError, Mode};
use crate::words::{self, Fingerprint};

/// The manifest's file name inside a bundle.
pub const MANIFEST: &str = "manifest.json";
/// The manifest format this code writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// What a bundle carries; the reader states which kind it expects, so a
/// response bundle can never be mistaken for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BundleKind {
    IntermediateRequest,
    IntermediateResponse,
    CaBackup,
    Crl,
}

impl BundleKind {
    pub fn name(self) -> &'static str {
        match self {
            BundleKind::IntermediateRequest => "intermediate-request",
            BundleKind::IntermediateResponse => "intermediate-response",
            BundleKind::CaBackup => "ca-backup",
            BundleKind::Crl => "crl",
        }
    }
}

impl std::fmt::Display for BundleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One file the manifest lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestFile {
    /// A plain file name inside the bundle directory.
    pub path: String,
    pub size: u64,
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format_version: u32,
    pub kind: BundleKind,
    /// RFC 3339, UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// Who produced the bundle (free text: an operator, a host, a ceremony id).
    pub identity: String,
    pub files: Vec<ManifestFile>,
    /// Kind-specific facts (e.g. the CA's name, a CRL number). Not
    /// interpreted here.
    #[serde(default)]
    pub extra: Map<String, Value>,
}

/// How much a reader is willing to load from a stick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_manifest_bytes: u64,
    pub max_file_bytes: u64,
    pub max_files: usize,
    pub max_total_bytes: u64,
}

impl Default for Limits {
    /// Sized for requests, responses and backups of a root CA; a CRL bundle
    /// with a large CRL needs [`Limits::max_file_bytes`] raised.
    fn default() -> Self {
        Limits {
            max_manifest_bytes: 64 * 1024,
            max_file_bytes: 16 * 1024 * 1024,
            max_files: 64,
            max_total_bytes: 64 * 1024 * 1024,
        }
    }
}

/// Errors reading or writing a bundle. Each names the bundle and, where
/// there is one, the file, and says what to do next.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    #[error(transparent)]
    File(#[from] FileError),
    #[error("{dir}: the bundle directory must not exist or must be empty; choose a new directory")]
    NotEmpty { dir: PathBuf },
    #[error("{dir}: {file:?} is not a plain file name ({problem}); bundle files are single names such as \"csr.pem\"")]
    BadName { dir: PathBuf, file: String, problem: &'static str },
    #[error("{dir}: {file:?} was added twice; each file is written once")]
    Duplicate { dir: PathBuf, file: String },
    #[error("{dir}: no {MANIFEST}: the bundle is incomplete (the copy was interrupted or the producer failed); produce it again")]
    NoManifest { dir: PathBuf },
    #[error("{dir}/{MANIFEST}: {problem}; the bundle is not one keyrite wrote: produce it again")]
    BadManifest { dir: PathBuf, problem: String },
    #[error("{dir}: this is a {found} bundle, but a {expected} bundle was expected; check which stick you inserted")]
    WrongKind { dir: PathBuf, expected: BundleKind, found: BundleKind },
    #[error("{dir}: the manifest lists {file} more than once; the bundle is malformed: produce it again")]
    ListedTwice { dir: PathBuf, file: String },
    #[error("{dir}: {file} is listed in the manifest but missing from the bundle; copy the complete bundle again")]
    Missing { dir: PathBuf, file: String },
    #[error("{dir}: {file} is in the bundle but not in the manifest; bundles must hold exactly the listed files: remove it or produce the bundle again")]
    Unlisted { dir: PathBuf, file: String },
    #[error("{dir}: {file} is a symbolic link; bundles hold regular files only: copy the real file or produce the bundle again")]
    Symlink { dir: PathBuf, file: String },
    #[error("{dir}: {file} is not a regular file (a directory or device); remove it")]
    NotAFile { dir: PathBuf, file: String },
    #[error(
        "{dir}: {file} is {actual} bytes, larger than the limit of {limit}; this is not a file keyrite expects here"
    )]
    TooLarge { dir: PathBuf, file: String, actual: u64, limit: u64 },
    #[error("{dir}: the bundle lists {count} files, more than the limit of {limit}")]
    TooManyFiles { dir: PathBuf, count: usize, limit: usize },
    #[error("{dir}: size mismatch for {file}: the manifest says {listed} bytes, the file has {actual}: the file changed or was truncated after the manifest was written; copy the bundle again")]
    SizeMismatch { dir: PathBuf, file: String, listed: u64, actual: u64 },
    #[error("{dir}: hash mismatch for {file}: the file changed after the manifest was written (SHA-256 {actual}, manifest says {listed}); do not use it: copy the bundle again from the producer")]
    HashMismatch { dir: PathBuf, file: String, listed: String, actual: String },
    #[error("{dir}: {file} is not listed in this bundle")]
    NotInBundle { dir: PathBuf, file: String },
}

/// Checks that `name` can only ever mean a file directly inside the bundle.
fn check_name(dir: &Path, name: &str) -> Result<(), TransferError> {
    let problem = if name.is_empty() {
        Some("it is empty")
    } else if name.contains('\0') {
        Some("it contains a NUL byte")
    } else if name.contains('/') || name.contains('\\') {
        Some("it contains a path separator")
    } else if name.starts_with('.') {
        Some("it starts with a dot (hidden, `.` or `..`)")
    } else if name == MANIFEST {
        Some("the manifest's own name is reserved")
    } else if name.len() > 128 {
        Some("it is longer than 128 bytes")
    } else if name.chars().any(char::is_control) {
        Some("it contains control characters")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(TransferError::BadName { dir: dir.to_path_buf(), file: name.to_string(), problem }),
        None => Ok(()),
    }
}

/// Writes a bundle: files first, manifest last.
#[derive(Debug)]
pub struct BundleWriter {
    dir: PathBuf,
    files: Vec<ManifestFile>,
}

impl BundleWriter {
    /// Starts a bundle in `dir`, which must not exist or be empty.
    pub fn create(dir: &Path) -> Result<BundleWriter, TransferError> {
        match fs::read_dir(dir) {
            Ok(mut entries) => {
                if entries.next().is_some() {
                    return Err(TransferError::NotEmpty { dir: dir.to_path_buf() });
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => files::create_dir(dir, Mode::Public)?,
            Err(e) => return Err(FileError::io(dir, "listing bundle directory", e).into()),
        }
        Ok(BundleWriter { dir: dir.to_path_buf(), files: Vec::new() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Adds one file (written at once, never overwritten).
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> Result<(), TransferError> {
        check_name(&self.dir, name)?;
        if self.files.iter().any(|f| f.path == name) {
            return Err(TransferError::Duplicate { dir: self.dir.clone(), file: name.to_string() });
        }
        files::write_new(&self.dir.join(name), bytes, Mode::Public)?;
        self.files.push(ManifestFile {
            path: name.to_string(),
            size: bytes.len() as u64,
            sha256: words::sha256_hex(bytes),
        });
        Ok(())
    }

    /// Writes the manifest, which completes the bundle.
    pub fn finish(
        self,
        kind: BundleKind,
        identity: &str,
        extra: Map<String, Value>,
    ) -> Result<Manifest, TransferError> {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            kind,
            created: OffsetDateTime::now_utc().replace_nanosecond(0).unwrap_or_else(|_| OffsetDateTime::now_utc()),
            identity: identity.to_string(),
            files: self.files,
            extra,
        };
        let mut text = serde_json::to_vec_pretty(&manifest).map_err(|e| TransferError::BadManifest {
            dir: self.dir.clone(),
            problem: format!("cannot serialise: {e}"),
        })?;
        text.push(b'\n');
        files::write_new(&self.dir.join(MANIFEST), &text, Mode::Public)?;
        Ok(manifest)
    }
}

/// A bundle that passed every check, with its files in memory.
#[derive(Debug, Clone)]
pub struct Bundle {
    dir: PathBuf,
    manifest: Manifest,
    manifest_sha256: Fingerprint,
    contents: BTreeMap<String, Vec<u8>>,
}

impl Bundle {
    /// Opens and checks a bundle; see the module documentation.
    pub fn open(dir: &Path, expected: BundleKind, limits: &Limits) -> Result<Bundle, TransferError> {
        let d = || dir.to_path_buf();
        let meta = fs::symlink_metadata(dir).map_err(|e| FileError::io(dir, "opening bundle directory", e))?;
        if meta.file_type().is_symlink() {
            return Err(TransferError::Symlink { dir: d(), file: ".".into() });
        }
        let manifest_path = dir.join(MANIFEST);
        let manifest_bytes = match read_capped(dir, &manifest_path, MANIFEST, limits.max_manifest_bytes, None) {
            Err(TransferError::Missing { .. }) => return Err(TransferError::NoManifest { dir: d() }),
            other => other?,
        };
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| TransferError::BadManifest { dir: d(), problem: format!("not a keyrite manifest: {e}") })?;
        if manifest.format_version != FORMAT_VERSION {
            return Err(TransferError::BadManifest {
                dir: d(),
                problem: format!(
                    "format version {} is not the version {FORMAT_VERSION} this keyrite reads",
                    manifest.format_version
                ),
            });
        }
        if manifest.kind != expected {
            return Err(TransferError::WrongKind { dir: d(), expected, found: manifest.kind });
        }
        if manifest.files.len() > limits.max_files {
            return Err(TransferError::TooManyFiles { dir: d(), count: manifest.files.len(), limit: limits.max_files });
        }
        let mut listed = BTreeMap::new();
        let mut total = 0u64;
        for f in &manifest.files {
            check_name(dir, &f.path)?;
            if !crate::audit::entry::is_sha256_hex(&f.sha256) {
                return Err(TransferError::BadManifest {
                    dir: d(),
                    problem: format!("the sha256 of {} is not 64 lower-case hex digits", f.path),
                });
            }
            if listed.insert(f.path.clone(), f).is_some() {
                return Err(TransferError::ListedTwice { dir: d(), file: f.path.clone() });
            }
            if f.size > limits.max_file_bytes {
                return Err(TransferError::TooLarge {
                    dir: d(),
                    file: f.path.clone(),
                    actual: f.size,
                    limit: limits.max_file_bytes,
                });
            }
            total = total.saturating_add(f.size);
        }
        if total > limits.max_total_bytes {
            return Err(TransferError::TooLarge {
                dir: d(),
                file: "(all files together)".into(),
                actual: total,
                limit: limits.max_total_bytes,
            });
        }

        // Everything in the directory must be listed: an extra file could be
        // a second CSR someone hopes an operator picks up by hand.
        let entries = fs::read_dir(dir).map_err(|e| FileError::io(dir, "listing bundle directory", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| FileError::io(dir, "listing bundle directory", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let ft = entry.file_type().map_err(|e| FileError::io(&entry.path(), "checking file type", e))?;
            if ft.is_symlink() {
                return Err(TransferError::Symlink { dir: d(), file: name });
            }
            if name == MANIFEST {
                continue;
            }
            if !listed.contains_key(&name) {
                return Err(TransferError::Unlisted { dir: d(), file: name });
            }
            if !ft.is_file() {
                return Err(TransferError::NotAFile { dir: d(), file: name });
            }
        }

        let mut contents = BTreeMap::new();
        for (name, f) in listed {
            let bytes = read_capped(dir, &dir.join(&name), &name, limits.max_file_bytes, Some(f.size))?;
            let actual = words::sha256_hex(&bytes);
            if actual != f.sha256 {
                return Err(TransferError::HashMismatch { dir: d(), file: name, listed: f.sha256.clone(), actual });
            }
            contents.insert(name, bytes);
        }
        Ok(Bundle { dir: d(), manifest_sha256: Fingerprint::sha256(&manifest_bytes), manifest, contents })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// SHA-256 of the manifest's exact bytes: one value that pins every file,
    /// for the audit log and the paper log.
    pub fn manifest_sha256(&self) -> &Fingerprint {
        &self.manifest_sha256
    }

    /// A listed file's verified bytes.
    pub fn file(&self, name: &str) -> Result<&[u8], TransferError> {
        self.contents
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| TransferError::NotInBundle { dir: self.dir.clone(), file: name.to_string() })
    }

    /// The names of the files, sorted.
    pub fn file_names(&self) -> impl Iterator<Item = &str> {
        self.contents.keys().map(String::as_str)
    }
}

/// Reads one regular file, refusing symlinks and anything over `cap` bytes
/// (checked on the metadata and again while reading, since the file can
/// grow in between). With `expected`, the size must match it exactly.
fn read_capped(dir: &Path, path: &Path, name: &str, cap: u64, expected: Option<u64>) -> Result<Vec<u8>, TransferError> {
    let d = || dir.to_path_buf();
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(TransferError::Missing { dir: d(), file: name.to_string() })
        }
        Err(e) => return Err(FileError::io(path, "checking", e).into()),
    };
    if meta.file_type().is_symlink() {
        return Err(TransferError::Symlink { dir: d(), file: name.to_string() });
    }
    if !meta.is_file() {
        return Err(TransferError::NotAFile { dir: d(), file: name.to_string() });
    }
    if meta.len() > cap {
        return Err(TransferError::TooLarge { dir: d(), file: name.to_string(), actual: meta.len(), limit: cap });
    }
    if let Some(listed) = expected {
        if meta.len() != listed {
            return Err(TransferError::SizeMismatch { dir: d(), file: name.to_string(), listed, actual: meta.len() });
        }
    }
    // The name could be swapped for a symlink between the check above and
    // the open; the opened file must be the very inode that was checked.
    use std::os::unix::fs::MetadataExt;
    let file = fs::File::open(path).map_err(|e| FileError::io(path, "opening", e))?;
    let opened = file.metadata().map_err(|e| FileError::io(path, "checking", e))?;
    if opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(TransferError::Symlink { dir: d(), file: name.to_string() });
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| FileError::io(path, "reading", e))?;
    let actual = bytes.len() as u64;
    if actual > cap {
        return Err(TransferError::TooLarge { dir: d(), file: name.to_string(), actual, limit: cap });
    }
    if let Some(listed) = expected {
        if actual != listed {
            return Err(TransferError::SizeMismatch { dir: d(), file: name.to_string(), listed, actual });
        }
    }
    Ok(bytes)
}
