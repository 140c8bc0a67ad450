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
//! # or, on a token activated by custodians (see `[activation]`):
//! # pin = { shares = "root-r1-audit.jsonl" }
//! ```
//! or, without an HSM:
//! ```toml
//! [soft]
//! dir = "keystore"
//! passphrase = { file = "/run/keyrite/passphrase" }
//! # or, for a software root under custody (sealed under its backup KEK):
//! # sealing_key = { shares = "root-r1-audit.jsonl" }
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_toml, ConfigError};
use crate::hsm::pkcs11::TokenSelector;
use crate::hsm::uri::Pkcs11Uri;
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
    /// Rebuilt from custodians' activation cards: the path is the audit log
    /// of the root ceremony that split the PIN (it holds the commitments).
    /// PKCS#11 PINs only.
    Shares(PathBuf),
}

impl SecretSource {
    /// Reads the secret when no person is needed: from memory, an
    /// environment variable or a file. `None` for the sources that need
    /// someone: a prompt, or custodians' activation cards.
    ///
    /// A file must be readable by its owner only: a PIN file others can read
    /// is a PIN others know. Trailing line breaks are removed.
    pub fn read_unattended(&self) -> Result<Option<Secret>, SecretReadError> {
        match self {
            SecretSource::Prompt | SecretSource::Shares(_) => Ok(None),
            SecretSource::Memory(s) => Ok(Some(s.clone())),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.is_empty() => Ok(Some(Secret::from_string(v))),
                _ => Err(SecretReadError {
                    what: format!("environment variable {var}"),
                    detail: "it is not set or empty; export it before running keyrite".into(),
                }),
            },
            SecretSource::File(path) => {
                use std::os::unix::fs::PermissionsExt;
                let err = |detail: String| SecretReadError { what: format!("secret file {}", path.display()), detail };
                let meta = std::fs::metadata(path).map_err(|e| err(e.to_string()))?;
                if meta.permissions().mode() & 0o077 != 0 {
                    return Err(err("it is readable by group or others; chmod 600 it".into()));
                }
                let mut bytes = std::fs::read(path).map_err(|e| err(e.to_string()))?;
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                Ok(Some(Secret::new(bytes)))
            }
        }
    }
}

/// A PIN or passphrase that could not be read; never carries the secret.
#[derive(Debug, thiserror::Error)]
#[error("reading {what}: {detail}")]
pub struct SecretReadError {
    pub what: String,
    pub detail: String,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawSecretSource {
    Word(String),
    Env { env: String },
    File { file: PathBuf },
    Shares { shares: PathBuf },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    output_dir: Option<PathBuf>,
    /// Where a restore's inputs are (default: the output directory).
    input_dir: Option<PathBuf>,
    /// Unattended runs only: a directory standing for the custodians' own
    /// media, one share card file each.
    custodian_media: Option<PathBuf>,
    /// The offline CA's state directory (index, CRL numbers, audit log),
    /// for sign-intermediate, revoke and crl ceremonies.
    ca_dir: Option<PathBuf>,
    pkcs11: Option<RawPkcs11>,
    soft: Option<RawSoft>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPkcs11 {
    /// An RFC 7512 URI naming the token (and module) in one string, instead
    /// of `module`, `token_label` and `token_serial`.
    uri: Option<String>,
    module: Option<PathBuf>,
    token_label: Option<String>,
    token_serial: Option<String>,
    pin: Option<RawSecretSource>,
    /// The security officer's PIN: needed by ceremonies that make a backup.
    so_pin: Option<RawSecretSource>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSoft {
    dir: PathBuf,
    /// Not needed when the ceremony puts the store under custodians' shares.
    passphrase: Option<RawSecretSource>,
    /// A store under custody: its 256-bit sealing key (64 hex characters),
    /// as recombined from the custodians' shares.
    sealing_key: Option<RawSecretSource>,
}

/// Where the keys live.
#[derive(Debug, Clone)]
pub enum Backend {
    Pkcs11 { module: PathBuf, token: TokenSelector, pin: SecretSource, so_pin: Option<SecretSource> },
    Soft { dir: PathBuf, passphrase: Option<SecretSource>, sealing_key: Option<SecretSource> },
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
    pub input_dir: PathBuf,
    pub custodian_media: Option<PathBuf>,
    pub ca_dir: Option<PathBuf>,
    /// The file it came from, if any (rehearsals build one in memory).
    pub source: Option<PathBuf>,
}

impl Environment {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (_, raw): (String, RawEnvironment) = read_toml(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let backend = match (raw.pkcs11, raw.soft) {
            (Some(p), None) => pkcs11_backend(p, path)?,
            (None, Some(s)) => Backend::Soft {
                dir: resolve(s.dir),
                passphrase: s.passphrase.map(|p| secret_source(p, path, "soft.passphrase")).transpose()?,
                sealing_key: s.sealing_key.map(|p| secret_source(p, path, "soft.sealing_key")).transpose()?,
            },
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(path, "pkcs11/soft", "name exactly one backend, not both"))
            }
            (None, None) => {
                return Err(ConfigError::invalid(path, "pkcs11/soft", "name a backend: a [pkcs11] or a [soft] table"))
            }
        };
        let output_dir = raw.output_dir.map(resolve).unwrap_or_else(|| base.to_path_buf());
        Ok(Environment {
            backend,
            input_dir: raw.input_dir.map(resolve).unwrap_or_else(|| output_dir.clone()),
            output_dir,
            custodian_media: raw.custodian_media.map(resolve),
            ca_dir: raw.ca_dir.map(resolve),
            source: Some(path.to_path_buf()),
        })
    }
}

fn pkcs11_backend(p: RawPkcs11, path: &Path) -> Result<Backend, ConfigError> {
    let (mut module, mut label, mut serial, mut pin) = (p.module, p.token_label, p.token_serial, None);
    if let Some(uri) = &p.uri {
        let parsed = Pkcs11Uri::parse(uri).map_err(|e| ConfigError::invalid(path, "pkcs11.uri", e.to_string()))?;
        if parsed.object.is_some() || parsed.id.is_some() {
            return Err(ConfigError::invalid(
                path,
                "pkcs11.uri",
                "names a token, not a key: the ceremony file names the keys",
            ));
        }
        for (field, from_uri, given) in [
            ("module", parsed.module_path.is_some(), module.is_some()),
            ("token_label", parsed.token.is_some(), label.is_some()),
            ("token_serial", parsed.serial.is_some(), serial.is_some()),
        ] {
            if from_uri && given {
                return Err(ConfigError::invalid(
                    path,
                    format!("pkcs11.{field}"),
                    "is also in pkcs11.uri: give it once",
                ));
            }
        }
        module = module.or(parsed.module_path.map(PathBuf::from));
        label = label.or(parsed.token);
        serial = serial.or(parsed.serial);
        if let Some(source) = parsed.pin_source {
            let file = source.strip_prefix("file:").unwrap_or(&source);
            pin = Some(SecretSource::File(PathBuf::from(file)));
        }
    }
    let module = module.ok_or_else(|| {
        ConfigError::invalid(path, "pkcs11.module", "name the PKCS#11 module (or module-path in pkcs11.uri)")
    })?;
    let label = label
        .ok_or_else(|| ConfigError::invalid(path, "pkcs11.token_label", "name the token (or token= in pkcs11.uri)"))?;
    if label.is_empty() || label.len() > 32 {
        return Err(ConfigError::invalid(
            path,
            "pkcs11.token_label",
            "must be 1 to 32 characters (the PKCS#11 label field)",
        ));
    }
    let pin = match (p.pin, pin) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                path,
                "pkcs11.pin",
                "is also given as pin-source in pkcs11.uri: give it once",
            ))
        }
        (Some(raw), None) => secret_source(raw, path, "pkcs11.pin")?,
        (None, Some(from_uri)) => from_uri,
        (None, None) => {
            return Err(ConfigError::invalid(
                path,
                "pkcs11.pin",
                "say where the PIN comes from: \"prompt\", { env = \"VAR\" } or { file = \"/path\" }",
            ))
        }
    };
    let so_pin = p.so_pin.map(|raw| secret_source(raw, path, "pkcs11.so_pin")).transpose()?;
    Ok(Backend::Pkcs11 { module, token: TokenSelector { label, serial }, pin, so_pin })
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
        // Cards open a token's login (activation cards) or a software root
        // sealed under the backup KEK (backup cards); a passphrase is never
        // split this way.
        RawSecretSource::Shares { .. } if !field.starts_with("pkcs11.") && field != "soft.sealing_key" => {
            Err(ConfigError::invalid(
                path,
                field,
                "{ shares = ... } stands for a token PIN split among custodians ([activation] in a root ceremony) or, as soft.sealing_key, a software root sealed under its backup KEK; a passphrase is never split",
            ))
        }
        RawSecretSource::Shares { shares } => {
            let base = path.parent().unwrap_or(Path::new("."));
            Ok(SecretSource::Shares(if shares.is_absolute() { shares } else { base.join(shares) }))
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
    fn a_pkcs11_uri_names_module_token_and_pin_file() {
        let env =
            load("[pkcs11]\nuri = \"pkcs11:token=root%20hsm;serial=42?module-path=/m.so&pin-source=file:/run/pin\"\n")
                .expect("uri");
        match env.backend {
            Backend::Pkcs11 { module, token, pin: SecretSource::File(pin), .. } => {
                assert_eq!(module, PathBuf::from("/m.so"));
                assert_eq!(token, TokenSelector { label: "root hsm".into(), serial: Some("42".into()) });
                assert_eq!(pin, PathBuf::from("/run/pin"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let twice =
            load("[pkcs11]\nuri = \"pkcs11:token=a?module-path=/m.so\"\nmodule = \"/n.so\"\npin = \"prompt\"\n");
        assert!(twice.expect_err("twice").to_string().contains("is also in pkcs11.uri"));
    }

    #[test]
    fn a_pin_from_activation_cards_names_the_root_ceremony_log() {
        let env = load("[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin = { shares = \"root.jsonl\" }\nso_pin = { shares = \"/logs/root.jsonl\" }\n")
            .expect("shares");
        match env.backend {
            Backend::Pkcs11 { pin: SecretSource::Shares(pin), so_pin: Some(SecretSource::Shares(so)), .. } => {
                assert!(pin.ends_with("root.jsonl") && pin.is_absolute(), "{}", pin.display());
                assert_eq!(so, PathBuf::from("/logs/root.jsonl"));
            }
            other => panic!("unexpected {other:?}"),
        }
        let soft = load("[soft]\ndir = \"k\"\npassphrase = { shares = \"root.jsonl\" }\n");
        assert!(soft.expect_err("soft").to_string().contains("soft.passphrase"));
        let sealed = load("[soft]\ndir = \"k\"\nsealing_key = { shares = \"root.jsonl\" }\n").expect("sealing key");
        assert!(matches!(sealed.backend, Backend::Soft { sealing_key: Some(SecretSource::Shares(_)), .. }));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let err =
            load("[pkcs11]\nmodule = \"/m.so\"\ntoken_label = \"t\"\npin = \"prompt\"\nslot = 0\n").expect_err("slot");
        assert!(err.to_string().contains("slot"), "{err}");
    }
}
