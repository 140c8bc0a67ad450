//! How a ceremony talks to the people in the room.

use std::io::Write;

use super::CeremonyError;
use crate::config::answers::{Answer, Answers};
use crate::config::Role;
use crate::secret::Secret;

/// The people running the ceremony, as the runner sees them. Every prompt
/// has a key (the step id, or `<step>.<what>`), which is how an answers file
/// names its answer.
pub trait Operator {
    /// Shows text to everyone in the room (and to the terminal recording).
    fn say(&mut self, text: &str);
    /// Names of the people filling `role`.
    fn participants(&mut self, key: &str, role: &Role) -> Result<Vec<String>, CeremonyError>;
    /// A yes/no confirmation by the person performing a step.
    fn confirm(&mut self, key: &str, question: &str) -> Result<bool, CeremonyError>;
    /// A witness reads a value back from paper; `shown` is what the screen
    /// shows (a scripted rehearsal may echo it, a person never sees it here).
    fn read_back(&mut self, key: &str, question: &str, shown: &str) -> Result<ReadBack, CeremonyError>;
    /// A PIN or passphrase, typed without echo.
    fn secret(&mut self, key: &str, question: &str) -> Result<Secret, CeremonyError>;
    /// Whether a person is answering (the log records which).
    fn is_interactive(&self) -> bool;
}

/// What a witness read back, and whether it was only echoed from the screen
/// (rehearsals), which the log records so nobody mistakes it for a check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    pub text: String,
    pub echoed: bool,
}

/// The answers-file value that echoes the screen at a read-back.
pub const AS_SHOWN: &str = "(as shown)";

/// Answers every prompt from an answers file, and prints what a person would
/// have seen, so a rehearsal's transcript reads like the real thing.
pub struct ScriptedOperator {
    answers: Answers,
    /// Rehearsals only: a read-back with no answer in the file echoes the
    /// value shown, because the rehearsal's own fingerprints cannot be known
    /// when the answers file is written. The log marks such answers.
    echo_read_backs: bool,
    out: Box<dyn Write>,
}

impl ScriptedOperator {
    pub fn new(answers: Answers, out: Box<dyn Write>) -> Self {
        ScriptedOperator { answers, echo_read_backs: false, out }
    }

    /// For `keyrite rehearse`: read-backs without an answer echo the screen.
    pub fn echoing_read_backs(mut self) -> Self {
        self.echo_read_backs = true;
        self
    }

    fn file(&self) -> std::path::PathBuf {
        self.answers.source.clone().unwrap_or_else(|| "(built in)".into())
    }

    fn answer(&self, key: &str) -> Result<&Answer, CeremonyError> {
        self.answers.answers.get(key).ok_or_else(|| CeremonyError::MissingAnswer { key: key.into(), file: self.file() })
    }
}

impl Operator for ScriptedOperator {
    fn say(&mut self, text: &str) {
        let _ = writeln!(self.out, "{text}");
    }

    fn participants(&mut self, key: &str, role: &Role) -> Result<Vec<String>, CeremonyError> {
        let names = self.answers.participants.get(&role.id).cloned().ok_or_else(|| CeremonyError::MissingAnswer {
            key: format!("participants.{}", role.id),
            file: self.file(),
        })?;
        let _ = writeln!(self.out, "  [{key}] {}: {}", role.title, names.join(", "));
        Ok(names)
    }

    fn confirm(&mut self, key: &str, question: &str) -> Result<bool, CeremonyError> {
        let yes = match self.answer(key)? {
            Answer::Yes(b) => *b,
            Answer::Text(t) => matches!(t.as_str(), "yes" | "y"),
        };
        let _ = writeln!(self.out, "  {question} [{key}] -> {}", if yes { "yes" } else { "no" });
        Ok(yes)
    }

    fn read_back(&mut self, key: &str, question: &str, shown: &str) -> Result<ReadBack, CeremonyError> {
        let got = match self.answers.answers.get(key) {
            Some(Answer::Text(t)) if t == AS_SHOWN => ReadBack { text: shown.to_string(), echoed: true },
            Some(Answer::Text(t)) => ReadBack { text: t.clone(), echoed: false },
            Some(Answer::Yes(_)) => {
                return Err(CeremonyError::Input {
                    what: format!("answer {key:?} in {}", self.file().display()),
                    detail: "a read-back answer must be the words the witness read, not true/false".into(),
                })
            }
            None if self.echo_read_backs => ReadBack { text: shown.to_string(), echoed: true },
            None => return Err(CeremonyError::MissingAnswer { key: key.into(), file: self.file() }),
        };
        let _ = writeln!(self.out, "  {question} [{key}] -> {}{}", got.text, if got.echoed { " (echoed)" } else { "" });
        Ok(got)
    }

    fn secret(&mut self, key: &str, _question: &str) -> Result<Secret, CeremonyError> {
        Err(CeremonyError::SecretNotScripted { key: key.into() })
    }

    fn is_interactive(&self) -> bool {
        false
    }
}

/// Normalises a read-back for comparison: case and spacing do not matter.
pub fn same_words(a: &str, b: &str) -> bool {
    let norm = |s: &str| s.split_whitespace().map(str::to_ascii_lowercase).collect::<Vec<_>>();
    norm(a) == norm(b)
}
