//! Rehearsal aids: what a rehearsal may lean on and a real ceremony may not.
//!
//! An answers file stands in for the people at the terminal,
//! `--allow-network` for the air-gapped laptop, the software key store for
//! an HSM, and a read-back that echoes the screen for a witness reading
//! paper. The preflight finds the aids a run uses. A plan that declares
//! `grade = "real"` refuses them all there, before anything is written; any
//! other plan runs with them, and the log records each one (in
//! `ceremony-started`, and again where it is used) under
//! [`crate::audit::REHEARSAL_GRADE`], so that `audit verify` reports the log
//! as rehearsal-grade and says why.

use super::{CeremonyError, Operator, RunOptions};
use crate::config::ceremony::Grade;
use crate::config::{Backend, Environment, Plan};

/// One rehearsal aid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aid {
    AnswersFile,
    NetworkAllowed,
    SoftwareKeyStore,
    EchoedReadBacks,
}

impl Aid {
    /// The reason the log records, and the refusal names.
    pub fn reason(self) -> &'static str {
        match self {
            Aid::AnswersFile => "prompts answered from an answers file, not by people at the terminal",
            Aid::NetworkAllowed => "the air-gap guard turned off with --allow-network",
            Aid::SoftwareKeyStore => "keys in the software key store, not in an HSM",
            Aid::EchoedReadBacks => "read-backs answered by echoing the screen, not read from paper by a witness",
        }
    }
}

/// The aids this run uses, in a fixed order.
pub fn in_use(env: &Environment, operator: &dyn Operator, options: &RunOptions) -> Vec<Aid> {
    [
        (!operator.is_interactive(), Aid::AnswersFile),
        (options.allow_network, Aid::NetworkAllowed),
        (matches!(env.backend, Backend::Soft { .. }), Aid::SoftwareKeyStore),
        (operator.echoes_read_backs(), Aid::EchoedReadBacks),
    ]
    .into_iter()
    .filter_map(|(used, aid)| used.then_some(aid))
    .collect()
}

/// Refuses every aid for a plan that declares itself real.
pub fn refuse_for_real(plan: &Plan, aids: &[Aid]) -> Result<(), CeremonyError> {
    if plan.grade != Grade::Real || aids.is_empty() {
        return Ok(());
    }
    Err(CeremonyError::RehearsalAids {
        plan: plan.path.clone(),
        aids: aids.iter().map(|a| a.reason()).collect::<Vec<_>>().join("; "),
    })
}

/// The reasons, as the log's `rehearsal_grade` list.
pub fn reasons(aids: &[Aid]) -> Vec<&'static str> {
    aids.iter().map(|a| a.reason()).collect()
}
