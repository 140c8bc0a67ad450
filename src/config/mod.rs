//! The `config` room: ceremony files, environment files and answers files,
//! parsed strictly and turned into a validated plan.
//!
//! Three files, three jobs, kept apart on purpose:
//! - the **ceremony file** (`ceremonies/*.toml`) is the script: what is done,
//!   by whom, with which key and template. It never names a PIN, slot or
//!   module, so the rehearsal and the real run use the same file, byte for
//!   byte, and its SHA-256 means the same thing in both;
//! - the **environment file** says where the keys live on this machine: which
//!   PKCS#11 module and which token (by label and serial), or which software
//!   key store, where a PIN comes from, and where outputs go;
//! - the **answers file** answers the prompts for an unattended run.
//!
//! Raw serde structs reject unknown keys; `Plan::from_raw` then checks every
//! cross-field rule, so the ceremony code never re-checks its input.

pub mod acme;
pub mod answers;
pub mod ceremony;
pub mod digest;
pub mod environment;
pub mod issuer;
pub mod rate_limits;
pub mod values;

use std::path::PathBuf;

pub use answers::Answers;
pub use ceremony::{
    BackupSpec, CeremonyKind, CertificateSpec, CrlSpec, IntermediateSpec, KeySpec, Plan, RestoreSpec, RevocationSpec,
    Role, Step, StepKind,
};
pub use digest::{InputBase, PlanDigest, PlanInput};
pub use environment::{Backend, Environment, SecretSource};

/// Errors reading or validating configuration. Every message names the file
/// and, where there is one, the field.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: field `{field}`: {message}")]
    Invalid { path: PathBuf, field: String, message: String },
    #[error("{path}: {message}")]
    Template { path: PathBuf, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(path: &std::path::Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid { path: path.to_path_buf(), field: field.into(), message: message.into() }
    }
}

/// Reads a TOML file into a raw struct, naming the file and the offending
/// key (serde's message includes it for unknown fields) on failure.
pub(crate) fn read_toml<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> Result<(String, T), ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let value = parse_toml(&text, path)?;
    Ok((text, value))
}

pub(crate) fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &std::path::Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().replace('\n', " "),
    })
}
