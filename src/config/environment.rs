//! The environment file: where this machine keeps its keys, and where the
//! PINs come from. The one file that differs between a rehearsal and the real
//! ceremony.
//!
//! ```toml
//! output_dir = "/media/ceremony-usb"
//! [pkcs11]
//! module = "/usr/lib/softhsm/libsofthsm2.so"
//! token_label = "keyrite-root"
//! token_serial = "3f1c0e5a9d2b7c44"   # optional, required if labels repeat
//! pin = "prompt"                        # or { env = "VAR" } or { file = "/path" }
//! ```
//! or, without an HSM:
//! ```toml
//! [soft]
//! dir = "keystore"
//! passphrase = { file = "/run/keyrite/passphrase" }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_toml, ConfigError};
use crate::hsm::pkcs11::TokenSelector;
use crate::secret::Secret;

/// Where a PIN or passphrase comes from. Never argv, never the ceremony file.
#[derive(Debug, Clone)]
pub enum SecretSource {
    /// Asked for on the terminal, without echo.
    Prompt,
    /// Read from an environment variable the user names.
    Env(String),
    /// Read from a file (trailing newline removed); must not be readable by
    /// group or others.
    File(PathBuf),
    /// Already in memory: rehearsals, which make their own throwaway PINs.
    Memory(Secret),
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecretSource {
    Word(String),
    Env { env: String },
    File { file: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    output_dir: Option<PathBuf>,
    pkcs11: Option<RawPkcs11>,
    soft: Option<RawSoft>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    module: PathBuf,
    token_label: String,
    token_serial: Option<String>,
    pin: RawSecretSource,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoft {
    dir: PathBuf,
    passphrase: RawSecretSource,
}

/// Where the keys live.
#[derive(Debug, Clone)]
pub enum Backend {
    Pkcs11 { module: PathBuf, token: TokenSelector, pin: SecretSource },
    Soft { dir: PathBuf, passphrase: SecretSource },
}

impl Backend {
    /// "softhsm"/"pkcs11" or "soft", as `rehearsal.json` and the log say it.
    pub fn name(&self) -> &'static str {
        match self {
            Backend::Pkcs11 { module, .. } if module.to_string_lossy().contains("softhsm") => "softhsm",
            Backend::Pkcs11 { .. } => "pkcs11",
            Backend::Soft { .. } => "soft",
        }
    }
}

/// A validated environment.
#[derive(Debug, Clone)]
pub struct Environment {
    pub backend: Backend,
    pub output_dir: PathBuf,
    /// The file it came from, if any (rehearsals build one in memory).
    pub source: Option<PathBuf>,
}

impl Environment {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (_, raw): (String, RawEnvironment) = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let backend = match (raw.pkcs11, raw.soft) {
            (Some(p), None) => {
                if p.token_label.is_empty() || p.token_label.len() > 32 {
                    return Err(ConfigError::invalid(
                        path,
                        "pkcs11.token_label",
                        "must be 1 to 32 characters (the PKCS#11 label field)",
                    ));
                }
                Backend::Pkcs11 {
                    module: p.module,
                    token: TokenSelector { label: p.token_label, serial: p.token_serial },
                    pin: secret_source(p.pin, path, "pkcs11.pin")?,
                }
            }
            (None, Some(s)) => {
                Backend::Soft { dir: resolve(s.dir), passphrase: secret_source(s.passphrase, path, "soft.passphrase")? }
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(path, "pkcs11/soft", "name exactly one backend, not both"))
            }
            (None, None) => {
                return Err(ConfigError::invalid(path, "pkcs11/soft", "name a backend: a [pkcs11] or a [soft] table"))
            }
        };
        Ok(Environment {
            backend,
            output_dir: raw.output_dir.map(resolve).unwrap_or_else(|| base.to_path_buf()),
            source: Some(path.to_path_buf()),
        })
    }
}

fn secret_source(raw: RawSecretSource, path: &Path, field: &str) -> Result<SecretSource, ConfigError> {
    match raw {
        RawSecretSource::Word(w) if w == "prompt" => Ok(SecretSource::Prompt),
        RawSecretSource::Word(_) => Err(ConfigError::invalid(
            path,
            field,
            "a PIN or passphrase is never written in the environment file; use \"prompt\", { env = \"VAR\" } or { file = \"/path\" }",
        )),
        RawSecretSource::Env { env } if !env.is_empty() => Ok(SecretSource::Env(env)),
        RawSecretSource::Env { .. } => Err(ConfigError::invalid(path, field, "env must name a variable")),
        RawSecretSource::File { file } => {
            let base = path.parent().unwrap_or(Path::new("."));
            Ok(SecretSource::File(if file.is_absolute() { file } else { base.join(file) }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Environment, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("env.toml");
        std::fs::write(&path, text).expect("write");
        Environment::load(&path)
    }

    #[test]
    fn a_pin_written_in_the_file_is_refused_without_echoing_it() {
        let err =
            load("[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin = \"123456\"\n").expect_err("literal pin");
        let msg = err.to_string();
        assert!(msg.contains("pkcs11.pin"), "{msg}");
        assert!(!msg.contains("123456"), "{msg}");
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err =
            load("[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin = \"prompt\"\nslot = 0\n").expect_err("slot");
        assert!(err.to_string().contains("slot"), "{err}");
    }
}
