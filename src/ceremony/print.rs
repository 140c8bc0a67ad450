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
    match format {
        Format::Markdown => markdown(plan),
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
    for (k, v) in plan.summary() {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);
    let _ = writeln!(s, "## Participants\n\n| Role | Name | Signature |\n|---|---|---|");
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "| {} | | |", role.title);
        }
    }
    if let Some(what) = anchor_box(plan) {
        let _ = writeln!(
            s,
            "\n## Anchor\n\n{what}: note SHA-256, copied from the paper log of the ceremony that wrote it (the witness types at least its first 13 words at the preflight; the screen does not show it):\n\n______________________________________________________________________\n"
        );
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
            StepKind::GenerateAuditKey | StepKind::UseAuditKey => {
                let _ = writeln!(
                    s,
                    "{AUDIT_KEY_BOX} (copy from the screen; auditors pin it): ______________________________________\n"
                );
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
    let _ = writeln!(s, "## Final checkpoint\n\nCopy the final checkpoint printed by keyrite (if the ceremony aborts, its abort checkpoint, with the reason):\n\n```\n\n\n\n\n```\n\nNote SHA-256 (26 words): ______________________________________________________________________\n");
    let _ = writeln!(s, "## Signatures\n\nBy signing, each participant attests that the ceremony followed this script, with the exceptions noted.\n");
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "{}: ______________________  Date: __________\n", role.title);
        }
    }
    s
}

fn html(plan: &Plan) -> String {
    // A self-contained page that prints on any machine in the room: no
    // scripts, no external assets, one step per block, boxes as table cells.
    let e = escape;
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>\n\
         body{{font-family:Georgia,serif;max-width:50em;margin:2em auto;line-height:1.4}}\n\
         table{{border-collapse:collapse;width:100%;margin:.5em 0}} td,th{{border:1px solid #000;padding:.3em;vertical-align:top;text-align:left}}\n\
         .box td{{height:2.5em}} code,.words{{font-family:monospace}} .step{{page-break-inside:avoid;margin-top:1.5em}}\n\
         .sig{{margin:2em 0 0;border-top:1px solid #000;width:60%}}\n</style></head><body>\n",
        e(&plan.title)
    );
    let _ = writeln!(s, "<h1>{}</h1>", e(&plan.title));
    let _ = writeln!(
        s,
        "<p>Ceremony <code>{}</code> ({}), script <code>{}</code>.</p>",
        e(&plan.id),
        plan.kind.name(),
        e(&plan.path.display().to_string())
    );
    if !plan.description.trim().is_empty() {
        let _ = writeln!(s, "<p>{}</p>", e(plan.description.trim()));
    }
    let _ = writeln!(s, "<table>");
    for (k, v) in plan.summary() {
        let v = if k.contains("SHA-256") || k.contains("words") { format!("<code>{}</code>", e(&v)) } else { e(&v) };
        let _ = writeln!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let _ = writeln!(
        s,
        "</table>\n<h2>Participants</h2>\n<table class=\"box\"><tr><th>Role</th><th>Name</th><th>Signature</th></tr>"
    );
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "<tr><td>{}</td><td></td><td></td></tr>", e(&role.title));
        }
    }
    if let Some(what) = anchor_box(plan) {
        let _ = writeln!(
            s,
            "</table>\n<h2>Anchor</h2>\n<table class=\"box\"><tr><th>{}: note SHA-256, copied from the paper log of the ceremony that wrote it (the witness types at least its first 13 words at the preflight; the screen does not show it)</th></tr><tr><td></td></tr>",
            e(&what)
        );
    }
    let _ = writeln!(s, "</table>\n<h2>Steps</h2>");
    for step in &plan.steps {
        let role = plan.role(&step.role).map_or(step.role.as_str(), |r| r.title.as_str());
        let witness =
            step.witness.as_deref().map(|w| plan.role(w).map_or(w, |r| r.title.as_str())).unwrap_or("Internal Witness");
        let _ = writeln!(s, "<div class=\"step\"><h3>Step {}: {}</h3>", step.number, e(&step.title));
        let _ = writeln!(s, "<p><em>{}</em> — performed by the {}.</p>", step.kind.name(), e(role));
        if !step.text.trim().is_empty() {
            let _ = writeln!(s, "<p>{}</p>", e(step.text.trim()));
        }
        match step.kind {
            StepKind::WitnessPlan => {
                let _ = writeln!(
                    s,
                    "<p>Witness reads aloud the first three plan words: <strong class=\"words\">{}</strong></p>",
                    plan.fingerprint.first_words(3)
                );
            }
            StepKind::WitnessRoot => {
                let _ = writeln!(s, "<table class=\"box\"><tr><th>Root certificate SHA-256 (write it here)</th></tr><tr><td></td></tr></table>");
            }
            StepKind::Checkpoint | StepKind::Close => {
                let _ = writeln!(s, "<table class=\"box\"><tr><th>Checkpoint tree size</th><th>Root (first words)</th></tr><tr><td></td><td></td></tr></table>");
            }
            StepKind::GenerateAuditKey | StepKind::UseAuditKey => {
                let _ = writeln!(s, "<table class=\"box\"><tr><th>{AUDIT_KEY_BOX} (copy from the screen; auditors pin it)</th></tr><tr><td></td></tr></table>");
            }
            _ => {}
        }
        let _ = writeln!(
            s,
            "<table class=\"box\"><tr><th>Initials ({})</th><th>Initials ({})</th><th>Time (UTC)</th><th>Exceptions</th></tr><tr><td></td><td></td><td></td><td></td></tr></table></div>",
            e(role),
            e(witness)
        );
    }
    let _ = writeln!(s, "<h2>Final checkpoint</h2><p>Copy the final checkpoint printed by keyrite (if the ceremony aborts, its abort checkpoint, with the reason):</p><table class=\"box\"><tr><td style=\"height:8em\"></td></tr><tr><th>Note SHA-256 (26 words)</th></tr><tr><td></td></tr></table>");
    let _ = writeln!(s, "<h2>Signatures</h2><p>By signing, each participant attests that the ceremony followed this script, with the exceptions noted.</p>");
    for role in &plan.roles {
        for _ in 0..role.min {
            let _ = writeln!(s, "<p class=\"sig\">{}, name and date</p>", e(&role.title));
        }
    }
    s.push_str("</body></html>\n");
    s
}

/// The box where the audit key's SHA-256 is copied at the step that makes
/// or finds it: what `keyrite audit verify --audit-key-sha256` is given.
const AUDIT_KEY_BOX: &str = "Audit key SHA-256";

/// The paper checkpoint a ceremony's witness types at the preflight, when
/// it continues or reads a log another ceremony wrote.
fn anchor_box(plan: &Plan) -> Option<String> {
    if plan.kind.uses_ca_dir() {
        return Some("Last checkpoint of the CA's audit log".into());
    }
    plan.restore.as_ref().map(|r| format!("Final checkpoint of {}", r.ceremony_log))
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        Plan::load(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ceremonies/root-init.toml")).expect("plan")
    }

    #[test]
    fn the_printed_script_has_the_plan_hash_a_box_per_step_and_signature_lines() {
        let plan = plan();
        for format in [Format::Markdown, Format::Html] {
            let text = render(&plan, format);
            assert!(text.contains(&plan.fingerprint.hex), "plan hash printed");
            assert!(text.contains(&plan.fingerprint.first_words(3)), "read-back words printed");
            let boxes = text.matches("Initials (").count();
            assert_eq!(boxes, plan.steps.len() * 2, "two initials boxes per step ({format:?})");
            for role in &plan.roles {
                assert!(text.contains(&role.title));
            }
        }
        for format in [Format::Markdown, Format::Html] {
            assert!(render(&plan, format).contains(AUDIT_KEY_BOX), "a box for the audit key ({format:?})");
        }
        let html = render(&plan, Format::Html);
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(!html.contains("<script"), "a printable page runs nothing");
    }
}
