//! Answers files: the non-interactive twin of every prompt.
//!
//! ```toml
//! [participants]
//! ceremony-administrator = ["Alice Example"]
//! internal-witness = ["Bob Example"]
//!
//! [answers]
//! "confirm-room" = true                  # a confirmation
//! "witness-plan-hash" = "acid boring ..." # a read-back: the words the witness read
//! ```
//! Keys are step ids (and `<step>.<what>` for steps that ask more than once).
//! An answers file never holds a PIN, passphrase or share: those come from
//! the environment file's sources, and an answers file that tries is refused.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{read_toml, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnswers {
    #[serde(default)]
    participants: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    answers: BTreeMap<String, toml::Value>,
}

/// One answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Yes(bool),
    Text(String),
}

/// A parsed answers file.
#[derive(Debug, Clone, Default)]
pub struct Answers {
    pub participants: BTreeMap<String, Vec<String>>,
    pub answers: BTreeMap<String, Answer>,
    pub source: Option<PathBuf>,
}

impl Answers {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let (text, _): (String, toml::Value) = read_toml(path)?;
        Self::from_toml_str(&text, path)
    }

    pub fn from_toml_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let raw: RawAnswers = super::parse_toml(text, path)?;
        let mut answers = BTreeMap::new();
        for (key, value) in raw.answers {
            let lower = key.to_ascii_lowercase();
            if ["pin", "passphrase", "share", "secret", "password"].iter().any(|w| lower.contains(w)) {
                return Err(ConfigError::invalid(
                    path,
                    format!("answers.{key}"),
                    "an answers file never holds a PIN, passphrase or share; use the environment file's pin source",
                ));
            }
            let answer = match value {
                toml::Value::Boolean(b) => Answer::Yes(b),
                toml::Value::String(s) => Answer::Text(s),
                other => {
                    return Err(ConfigError::invalid(
                        path,
                        format!("answers.{key}"),
                        format!("must be true/false or a string, not {}", other.type_str()),
                    ))
                }
            };
            answers.insert(key, answer);
        }
        for (role, names) in &raw.participants {
            if names.is_empty() || names.iter().any(|n| n.trim().is_empty()) {
                return Err(ConfigError::invalid(
                    path,
                    format!("participants.{role}"),
                    "list at least one non-empty name",
                ));
            }
        }
        Ok(Answers { participants: raw.participants, answers, source: Some(path.to_path_buf()) })
    }
}
