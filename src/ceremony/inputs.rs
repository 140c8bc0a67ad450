//! What a ceremony reads from the environment's input directory (a request
//! bundle, a restore's backup, certificate and log), read once and checked,
//! and the plan digest over those files and the plan's own.
//!
//! `ceremony print` and the ceremony's preflight both come through
//! [`read`], so the digest printed on paper and the one on screen are made
//! by the same code from the same kind of reading; in the preflight the
//! digest is taken from the very bytes the ceremony then uses.

use std::path::Path;

use super::{ca, custody, CeremonyError};
use crate::config::{InputBase, Plan, PlanDigest, PlanInput};

/// The input directory's files, read and checked.
pub struct InputFiles {
    pub restore: Option<custody::RestoreInputs>,
    pub request: Option<ca::Request>,
}

/// Reads and checks everything `plan` takes from `input_dir`.
pub fn read(plan: &Plan, input_dir: &Path) -> Result<InputFiles, CeremonyError> {
    let restore = match &plan.restore {
        Some(spec) => Some(custody::read_restore_inputs(spec, input_dir)?),
        None => None,
    };
    let request = ca::read_request(plan, input_dir)?;
    Ok(InputFiles { restore, request })
}

impl InputFiles {
    /// The plan digest over the plan's files and these.
    pub fn digest(&self, plan: &Plan) -> PlanDigest {
        let mut more = Vec::new();
        if let Some(r) = &self.restore {
            more.extend(r.artifacts().into_iter().map(|a| PlanInput {
                base: InputBase::InputDir,
                name: a.name,
                sha256: a.sha256,
            }));
        }
        if let Some(r) = &self.request {
            more.extend(r.plan_inputs().iter().cloned());
        }
        plan.digest_with(more)
    }
}

/// The plan digest as the ceremony will compute it, for `ceremony print` and
/// `ceremony check`. A plan that reads from the input directory needs it
/// (`input_dir`), since its files are part of what is approved.
pub fn plan_digest(plan: &Plan, input_dir: Option<&Path>) -> Result<PlanDigest, CeremonyError> {
    match input_dir {
        Some(dir) => Ok(read(plan, dir)?.digest(plan)),
        None if !plan.reads_input_dir() => Ok(plan.digest_with(Vec::new())),
        None => Err(CeremonyError::Input {
            what: format!("the plan digest of {}", plan.path.display()),
            detail: format!(
                "it covers {} from the input directory too: pass --input-dir DIR (the medium that holds them)",
                plan.input_dir_description()
            ),
        }),
    }
}
