//! How a ceremony talks to the people in the room.

use std::io::Write;
use std::path::PathBuf;

use super::CeremonyError;
use crate::config::answers::{Answer, Answers};
use crate::config::Role;
use crate::secret::Secret;

/// Which card a custodian holds. A custodian of a root with backup and
/// activation holds several cards; each kind has its own file name and says
/// on its face what it opens, so one is never taken for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CardKind {
    /// A share of the root key backup's key-encryption key.
    Backup,
    /// A share of the seed of the token's user PIN.
    UserActivation,
    /// A share of the seed of the token's security officer PIN.
    SoActivation,
}

impl CardKind {
    /// How the card file is named after the custodian's slug.
    pub fn file_suffix(self) -> &'static str {
        match self {
            CardKind::Backup => ".card.txt",
            CardKind::UserActivation => ".activation.card.txt",
            CardKind::SoActivation => ".so-activation.card.txt",
        }
    }

    /// What the card opens, as printed on it and said on screen.
    pub fn title(self) -> &'static str {
        match self {
            CardKind::Backup => "backup (root key-encryption key)",
            CardKind::UserActivation => "activation (user PIN)",
            CardKind::SoActivation => "activation (security officer PIN)",
        }
    }
}

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
    /// Gives `custodian` their card of `kind` (card `number` of the set) so
    /// that only they see it; returns the file it was written to, if it was.
    fn hand_out_card(
        &mut self,
        key: &str,
        custodian: &str,
        number: u8,
        card: &Secret,
        kind: CardKind,
    ) -> Result<Option<PathBuf>, CeremonyError>;
    /// `custodian` enters the words of their card of `kind` (attempt 1, 2, ...).
    fn take_card(&mut self, key: &str, custodian: &str, attempt: u32, kind: CardKind) -> Result<Secret, CeremonyError>;
    /// Whether a person is answering (the log records which).
    fn is_interactive(&self) -> bool;

    /// A witness types a value from the paper log that the screen does not
    /// show: the last checkpoint of a log a ceremony continues or reads. The
    /// anchor is what the paper says, never what the file says, so nothing
    /// is echoed from the screen here.
    fn paper(&mut self, key: &str, question: &str) -> Result<PaperAnswer, CeremonyError> {
        let read = self.read_back(key, question, "")?;
        Ok(PaperAnswer {
            text: read.text,
            answered_by: if self.is_interactive() { ANSWERED_BY_PERSON } else { ANSWERED_BY_FILE },
        })
    }

    /// Whether a read-back may be answered by echoing what the screen
    /// shows instead of what a witness read (a rehearsal aid; a person at
    /// the terminal never can).
    fn echoes_read_backs(&self) -> bool {
        false
    }

    /// Unattended runs: the people the answers file lists for `role`, who
    /// bring their cards when a token is activated in the preflight (before
    /// attendance is taken). `None` when a person answers: then
    /// [`Operator::custodian_name`] asks who comes, one at a time.
    fn scripted_participants(&self, role: &str) -> Option<Vec<String>> {
        let _ = role;
        None
    }

    /// Asks for the name of the next custodian to enter a card; an empty
    /// answer means nobody else comes.
    fn custodian_name(&mut self, key: &str, question: &str) -> Result<String, CeremonyError> {
        let _ = question;
        Err(CeremonyError::Input {
            what: format!("prompt {key:?}"),
            detail:
                "this operator cannot ask for custodians' names; run interactively or list them in the answers file"
                    .into(),
        })
    }
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

/// A value typed from the paper log, and who typed it, as the log records
/// it (`answered_by`, in the style of witness read-backs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperAnswer {
    pub text: String,
    pub answered_by: &'static str,
}

pub const ANSWERED_BY_PERSON: &str = "person";
pub const ANSWERED_BY_FILE: &str = "answers file";
/// `keyrite rehearse` knows each ceremony's final checkpoint and passes it
/// to the next ceremony itself; the log says so, so that a rehearsal log can
/// never pass for one whose anchors a witness read from paper.
pub const ANSWERED_BY_REHEARSAL: &str =
    "keyrite rehearse: the previous ceremony's final checkpoint, passed in memory (rehearsal: not read from paper)";

/// Answers every prompt from an answers file, and prints what a person would
/// have seen, so a rehearsal's transcript reads like the real thing.
pub struct ScriptedOperator {
    answers: Answers,
    /// Where share cards go and come back from: one file per custodian, as
    /// if each had their own USB stick. Unattended runs only.
    custodian_media: Option<PathBuf>,
    /// Rehearsals only: a read-back with no answer in the file echoes the
    /// value shown, because the rehearsal's own fingerprints cannot be known
    /// when the answers file is written. The log marks such answers.
    echo_read_backs: bool,
    /// Rehearsals only: paper values `keyrite rehearse` passes in memory
    /// (prompt key, text); the log marks them [`ANSWERED_BY_REHEARSAL`].
    rehearsal_paper: Vec<(String, String)>,
    out: Box<dyn Write>,
}

impl ScriptedOperator {
    pub fn new(answers: Answers, out: Box<dyn Write>) -> Self {
        ScriptedOperator { answers, custodian_media: None, echo_read_backs: false, rehearsal_paper: Vec::new(), out }
    }

    /// Share cards are written to, and read back from, `dir`.
    pub fn with_custodian_media(mut self, dir: PathBuf) -> Self {
        self.custodian_media = Some(dir);
        self
    }

    fn card_path(&self, custodian: &str, kind: CardKind) -> Result<PathBuf, CeremonyError> {
        let dir = self.custodian_media.as_ref().ok_or_else(|| CeremonyError::Input {
            what: "share cards".into(),
            detail: "an unattended run with custodians needs custodian_media in the environment file (a directory standing for the custodians' own media)".into(),
        })?;
        Ok(dir.join(format!("{}{}", super::custody::slug(custodian), kind.file_suffix())))
    }

    /// Hands back the transcript's writer, for the next ceremony of a run.
    pub fn into_output(self) -> Box<dyn Write> {
        self.out
    }

    /// For `keyrite rehearse`: read-backs without an answer echo the screen.
    pub fn echoing_read_backs(mut self) -> Self {
        self.echo_read_backs = true;
        self
    }

    /// For `keyrite rehearse`: the paper value for prompt `key` (the last
    /// checkpoint of a log the next ceremony continues), which the rehearsal
    /// knows from the ceremony that wrote it.
    pub fn with_rehearsal_paper(mut self, key: &str, text: &str) -> Self {
        self.rehearsal_paper.push((key.to_string(), text.to_string()));
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

    fn paper(&mut self, key: &str, question: &str) -> Result<PaperAnswer, CeremonyError> {
        let answer = if let Some((_, text)) = self.rehearsal_paper.iter().find(|(k, _)| k == key) {
            PaperAnswer { text: text.clone(), answered_by: ANSWERED_BY_REHEARSAL }
        } else {
            match self.answers.answers.get(key) {
                Some(Answer::Text(t)) if t == AS_SHOWN => {
                    return Err(CeremonyError::Input {
                        what: format!("answer {key:?} in {}", self.file().display()),
                        detail: "a value from the paper log cannot be echoed from the screen: it is there to check what the file says. Copy it from the paper log".into(),
                    })
                }
                Some(Answer::Text(t)) => PaperAnswer { text: t.clone(), answered_by: ANSWERED_BY_FILE },
                Some(Answer::Yes(_)) => {
                    return Err(CeremonyError::Input {
                        what: format!("answer {key:?} in {}", self.file().display()),
                        detail: "the answer must be what the paper log says (words or hex), not true/false".into(),
                    })
                }
                None => return Err(CeremonyError::MissingAnswer { key: key.into(), file: self.file() }),
            }
        };
        let _ = writeln!(self.out, "  {question} [{key}] -> {} ({})", answer.text, answer.answered_by);
        Ok(answer)
    }

    fn hand_out_card(
        &mut self,
        key: &str,
        custodian: &str,
        number: u8,
        card: &Secret,
        kind: CardKind,
    ) -> Result<Option<PathBuf>, CeremonyError> {
        let path = self.card_path(custodian, kind)?;
        if let Some(dir) = path.parent() {
            crate::files::create_dir(dir, crate::files::Mode::Private)?;
        }
        crate::files::write_new(&path, card.expose(), crate::files::Mode::Private)?;
        let what = if kind == CardKind::Backup { "share".to_string() } else { format!("{} card", kind.title()) };
        let _ =
            writeln!(self.out, "  [{key}] {what} {number} written for {custodian} to {} (mode 0600)", path.display());
        Ok(Some(path))
    }

    fn take_card(
        &mut self,
        key: &str,
        custodian: &str,
        _attempt: u32,
        kind: CardKind,
    ) -> Result<Secret, CeremonyError> {
        let path = self.card_path(custodian, kind)?;
        let card = std::fs::read(&path).map_err(|e| CeremonyError::Input {
            what: format!("{custodian}'s {} card {}", kind.title(), path.display()),
            detail: e.to_string(),
        })?;
        let what = if kind == CardKind::Backup { "share".to_string() } else { format!("{} card", kind.title()) };
        let _ = writeln!(self.out, "  [{key}] {custodian} enters their {what} from {}", path.display());
        Ok(crate::shares::words_from_card(&Secret::new(card)))
    }

    fn scripted_participants(&self, role: &str) -> Option<Vec<String>> {
        Some(self.answers.participants.get(role).cloned().unwrap_or_default())
    }

    fn is_interactive(&self) -> bool {
        false
    }

    fn echoes_read_backs(&self) -> bool {
        self.echo_read_backs || self.answers.answers.values().any(|a| matches!(a, Answer::Text(t) if t == AS_SHOWN))
    }
}
