//! The `ceremony` room: walks the operators through a plan, step by step,
//! and leaves the audit log behind.
//!
//! The runner talks to people through the [`Operator`] trait: the terminal
//! (dialoguer, in `cli`) or a [`ScriptedOperator`] that answers from an
//! answers file, so a rehearsal, CI and the real ceremony run the same code.
//! One file per ceremony kind, written top-down in the order things happen.

pub mod activation;
pub mod aids;
pub mod airgap;
pub mod ca;
pub mod continuity;
pub mod custody;
pub mod engine;
pub mod inputs;
pub mod operator;
pub mod print;
pub mod rehearse;
pub mod root;

use std::path::PathBuf;

pub use operator::{Operator, ReadBack, ScriptedOperator};

use crate::audit::AuditError;
use crate::config::ConfigError;
use crate::files::FileError;
use crate::hsm::HsmError;
use crate::profile::ProfileError;

/// Options that change how a ceremony runs, but not what it does.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Run even though a network interface is up (rehearsals, tests). The
    /// interfaces found are logged either way.
    pub allow_network: bool,
}

/// Why a ceremony stopped. Messages name the step, file or token and say
/// what to do next; none carries a PIN, passphrase or share.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error(transparent)]
    Audit(#[from] AuditError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Ca(#[from] crate::ca::CaError),
    #[error(transparent)]
    Transfer(#[from] crate::transfer::TransferError),
    #[error(transparent)]
    Csr(#[from] crate::transfer::csr::CsrError),
    #[error("network interfaces are up: {interfaces}. A ceremony runs air-gapped: take them down (or unplug), or pass --allow-network for a rehearsal")]
    NetworkUp { interfaces: String },
    /// The air-gap guard could not list the network interfaces, so it cannot
    /// say there is no network, and refuses.
    #[error("the air-gap guard cannot tell whether this machine is networked ({reason}); nothing was written. Run where /proc is mounted (see docs/ceremony-files.md, \"Rehearsing air-gapped\"), or pass --allow-network for a rehearsal")]
    NetworkUnknown { reason: String },
    #[error("{plan}: this plan declares grade = \"real\", and this run uses rehearsal aids it refuses: {aids}. A real ceremony is answered by the people in the room at a terminal, on an air-gapped laptop, with its keys in an HSM, and its witnesses read values back from paper. Nothing was written; run without them, or rehearse with a plan that does not say grade = \"real\"")]
    RehearsalAids { plan: PathBuf, aids: String },
    #[error(
        "step {step} ({title}): the {role} declined: {question}. The ceremony stopped; nothing further was signed"
    )]
    Declined { step: usize, title: String, role: String, question: String },
    #[error("step {step} ({title}): the witness read back {got:?}, but the value on screen begins {expected:?}. The ceremony stopped; compare the printed script with the file (`keyrite ceremony print`)")]
    ReadBackMismatch { step: usize, title: String, expected: String, got: String },
    #[error("step {step} ({title}): the witness read back {got:?}, which agrees with the value on screen but carries only {bits} bits; a read-back must carry at least {} bits: the first {} words ({expected:?}) or 32 hex digits. The ceremony stopped; run it again and read the whole read-back value", crate::words::READ_BACK_BITS, crate::words::READ_BACK_WORDS)]
    ReadBackTooShort { step: usize, title: String, expected: String, got: String, bits: usize },
    #[error("{bundle}: the CSR asks for subject {csr:?}, but template {template} signs {signed:?}, and the plan refuses a difference. Ask the requester for a CSR with the template's subject, or accept the change in the witnessed plan: replace_csr_subject = true under [certificate] (then print the script again: its plan hash changes). Nothing was signed")]
    SubjectMismatch { bundle: PathBuf, csr: String, template: PathBuf, signed: String },
    #[error("step {step}: role {role:?} needs at least {min} participant(s), {got} recorded")]
    TooFewParticipants { step: usize, role: String, min: usize, got: usize },
    #[error("no answer for prompt {key:?} in the answers file {file}; add it (see docs/ceremony-files.md)")]
    MissingAnswer { key: String, file: PathBuf },
    #[error("prompt {key:?} needs a secret, and an answers file never holds one; set a pin source ({{ env = \"VAR\" }} or {{ file = \"/path\" }}) in the environment file")]
    SecretNotScripted { key: String },
    #[error("reading {what}: {detail}")]
    Input { what: String, detail: String },
    #[error("step {step}: {message}")]
    Step { step: usize, message: String },
    #[error("{log}: {message}")]
    Continuity { log: PathBuf, message: String },
}
