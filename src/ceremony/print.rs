//! `keyrite ceremony print`: the script as a paper document, in the manner
//! of IANA's annotated ceremony scripts. Each step has a box for the
//! performer's initials and the time; the plan hash is printed so the witness
//! can read it back at the witness-plan step; the last page has lines for
//! every participant's signature and for the final checkpoint.

use std::fmt::Write;

use crate::config::{Plan, StepKind};

/// Output format of the printable script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// Renders the script.
pub fn render(plan: &Plan, format: Format) -> String {
    let md = markdown(plan);
    match format {
        Format::Markdown => md,
        Format::Html => html(plan),
    }
}

fn markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", plan.title);
    let _ = writeln!(s, "Ceremony `{}` ({}), script `{}`.\n", plan.id, plan.kind.name(), plan.path.display());
    if !plan.description.trim().is_empty() {
        let _ = writeln!(s, "{}\n", plan.description.trim());
    }
    let _ = writeln!(s, "| | |\n|---|---|");
    let _ = writeln!(s, "| Plan SHA-256 | `{}` |", plan.fingerprint.hex);
    let _ = writeln!(s, "| Plan words | {} |", plan.fingerprint.words);
    let _ =
        writeln!(s, "| Template | `{}` (SHA-256 `{}`) |", plan.template_path.display(), plan.template_fingerprint.hex);
    let _ = writeln!(s, "| Key | {} ({}, {}) |", plan.key.label, plan.key.algorithm, plan.key.signature);
    let _ = writeln!(s, "| Audit key | {} ({}) |", plan.audit_key.label, plan.audit_key.algorithm);
    let _ = writeln!(
        s,
        "| Outputs | {}, {}, {} |\n",
        plan.outputs.certificate_pem, plan.outputs.certificate_der, plan.outputs.audit_log
    );
    let _ = writeln!(s, "## Participants\n\n| Role | Name | Signature |\n|---|---|---|");
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "| {} | | |", role.title);
        }
    }
    let _ = writeln!(s, "\n## Steps\n");
    for step in &plan.steps {
        let role = plan.role(&step.role).map_or(step.role.as_str(), |r| r.title.as_str());
        let _ = writeln!(s, "### Step {}: {}\n", step.number, step.title);
        let _ = writeln!(s, "*{}* — performed by the {role}.\n", step.kind.name());
        if !step.text.trim().is_empty() {
            let _ = writeln!(s, "{}\n", step.text.trim());
        }
        match step.kind {
            StepKind::WitnessPlan => {
                let _ = writeln!(
                    s,
                    "Witness reads aloud the first three plan words: **{}**\n",
                    plan.fingerprint.first_words(3)
                );
            }
            StepKind::WitnessRoot => {
                let _ =
                    writeln!(s, "Root certificate SHA-256 (write it here): ______________________________________\n");
            }
            StepKind::Checkpoint | StepKind::Close => {
                let _ = writeln!(s, "Checkpoint tree size: ______  root: ________________________________________\n");
            }
            _ => {}
        }
        let witness =
            step.witness.as_deref().map(|w| plan.role(w).map_or(w, |r| r.title.as_str())).unwrap_or("Internal Witness");
        let _ = writeln!(
            s,
            "| Initials ({role}) | Initials ({witness}) | Time (UTC) | Exceptions |\n|---|---|---|---|\n| | | | |\n"
        );
    }
    let _ = writeln!(s, "## Final checkpoint\n\nCopy the final checkpoint printed by keyrite:\n\n```\n\n\n\n\n```\n");
    let _ = writeln!(s, "## Signatures\n\nBy signing, each participant attests that the ceremony followed this script, with the exceptions noted.\n");
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "{}: ______________________  Date: __________\n", role.title);
        }
    }
    s
}

fn html(plan: &Plan) -> String {
    // A self-contained page: prints on any machine in the room, no assets.
    let body = markdown(plan);
    let mut out = String::from("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>");
    out.push_str(&escape(&plan.title));
    out.push_str("</title><style>body{font-family:serif;max-width:48em;margin:2em auto}pre{white-space:pre-wrap;font-family:monospace;font-size:11pt}</style></head><body><pre>\n");
    out.push_str(&escape(&body));
    out.push_str("</pre></body></html>\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}
