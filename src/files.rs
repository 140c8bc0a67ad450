//! Writing files so that a crash leaves the old state or the new, never a torn
//! one, and so that an output, once written, is never overwritten.
//!
//! Every artifact keyrite produces goes through [`write_new`]: the bytes land in
//! a temporary file in the same directory, are fsynced, and are then
//! hard-linked to their final name. `link(2)` fails if the name exists, so two
//! runs racing for one output cannot both win, and a reader never sees a
//! half-written file. State files that legitimately change (the CA index, the
//! next CRL number) go through [`replace`], which renames over the old file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Who may read a file keyrite writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Certificates, CRLs, logs: readable by everyone (0644).
    Public,
    /// Sealed keys, share cards, anything a custodian holds: owner only (0600).
    Private,
}

impl Mode {
    fn bits(self) -> u32 {
        match self {
            Mode::Public => 0o644,
            Mode::Private => 0o600,
        }
    }
}

/// A file operation that failed, with the path it concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    #[error("{path}: already exists; keyrite never overwrites an output: move it away or choose another path")]
    Exists { path: PathBuf },
    #[error("{path}: {action} failed: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl FileError {
    pub fn io(path: &Path, action: &'static str, source: io::Error) -> Self {
        FileError::Io { path: path.to_path_buf(), action, source }
    }
}

/// Fails if `path` exists (used to check every output before a ceremony
/// touches a token).
pub fn ensure_absent(path: &Path) -> Result<(), FileError> {
    match fs::symlink_metadata(path) {
        Ok(_) => Err(FileError::Exists { path: path.to_path_buf() }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(FileError::io(path, "checking", e)),
    }
}

/// Writes `bytes` to `path`, which must not exist; atomic and durable.
pub fn write_new(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), FileError> {
    write_new_with(path, mode, |w| w.write_all(bytes))
}

/// Like [`write_new`], for an output too large to hold in memory (an
/// export of tens of millions of lines): `write` streams the bytes into
/// the temporary file, which is fsynced and linked into place only if it
/// succeeds. An error it returns is reported as the write's failure.
pub fn write_new_with(
    path: &Path,
    mode: Mode,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), FileError> {
    ensure_absent(path)?;
    let dir = parent_dir(path);
    let tmp = write_temp(&dir, path, write, mode)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(FileError::Exists { path: path.to_path_buf() })
        }
        Err(e) => return Err(FileError::io(path, "linking into place", e)),
    }
    sync_dir(&dir)
}

/// Replaces `path` (or creates it) with `bytes` atomically and durably.
pub fn replace(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), FileError> {
    let dir = parent_dir(path);
    let tmp = write_temp(&dir, path, |w| w.write_all(bytes), mode)?;
    if let Err(e) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(FileError::io(path, "renaming into place", e));
    }
    sync_dir(&dir)
}

/// Creates a directory (and parents) readable only by its owner when `mode`
/// is private.
pub fn create_dir(path: &Path, mode: Mode) -> Result<(), FileError> {
    use std::os::unix::fs::DirBuilderExt;
    let bits = if mode == Mode::Private { 0o700 } else { 0o755 };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(bits)
        .create(path)
        .map_err(|e| FileError::io(path, "creating directory", e))
}

/// Appends one line to a log file and fsyncs it before returning.
pub fn append_line(file: &mut File, path: &Path, line: &[u8]) -> Result<(), FileError> {
    file.write_all(line).map_err(|e| FileError::io(path, "appending", e))?;
    file.sync_data().map_err(|e| FileError::io(path, "fsync", e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn write_temp(
    dir: &Path,
    target: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    mode: Mode,
) -> Result<PathBuf, FileError> {
    let mut write = Some(write);
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    for attempt in 0..16u32 {
        let mut nonce = [0u8; 6];
        aws_lc_rs::rand::fill(&mut nonce)
            .map_err(|_| FileError::io(target, "drawing a temp name", io::Error::other("RNG failure")))?;
        let tmp = dir.join(format!(".{name}.{}.{attempt}.tmp", hex::encode(nonce)));
        let mut file = match OpenOptions::new().write(true).create_new(true).mode(mode.bits()).open(&tmp) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(FileError::io(target, "creating temp file", e)),
        };
        let Some(write) = write.take() else { break };
        let mut buffered = io::BufWriter::with_capacity(1 << 16, &mut file);
        let result = write(&mut buffered).and_then(|()| buffered.flush());
        drop(buffered);
        let result = result.and_then(|()| file.sync_all());
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(FileError::io(target, "writing temp file", e));
        }
        return Ok(tmp);
    }
    Err(FileError::io(target, "creating temp file", io::Error::other("no free temp name")))
}

fn sync_dir(dir: &Path) -> Result<(), FileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| FileError::io(dir, "fsync of directory", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_existing_output_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("root.pem");
        write_new(&path, b"first", Mode::Public).expect("first write");
        let err = write_new(&path, b"second", Mode::Public).expect_err("second write must fail");
        assert!(matches!(err, FileError::Exists { .. }));
        assert_eq!(fs::read(&path).expect("read"), b"first");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "no temp file may be left behind");
    }

    #[test]
    fn private_files_are_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("share.txt");
        write_new(&path, b"words", Mode::Private).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
