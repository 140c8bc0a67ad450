//! `keyrite ceremony print`: the script as a paper document, in the manner
//! of IANA's annotated ceremony scripts. Each step has a box for the
//! performer's initials and the time; the plan hash (the digest over the
//! ceremony file, its template and its input files, each listed with its
//! SHA-256 and the recipe to recompute it with `sha256sum`) is printed so
//! the witness can read it back at the witness-plan step; the last page has
//! lines for every participant's signature and for the final checkpoint.

use std::fmt::Write;

use crate::config::{InputBase, Plan, PlanDigest, StepKind};
use crate::words::READ_BACK_WORDS;

/// Output format of the printable script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Markdown,
    Html,
}

/// Renders the script; `digest` is the plan digest over the plan's files
/// and its inputs (see [`super::inputs::plan_digest`]).
pub fn render(plan: &Plan, digest: &PlanDigest, format: Format) -> String {
    match format {
        Format::Markdown => markdown(plan, digest),
        Format::Html => html(plan, digest),
    }
}

/// The summary rows with the plan hash.
fn rows(plan: &Plan, digest: &PlanDigest) -> Vec<(&'static str, String)> {
    let mut rows = plan.summary();
    rows.push(("Plan SHA-256", digest.fingerprint().hex.clone()));
    rows.push(("Plan read-back", digest.fingerprint().read_back_grouped()));
    rows
}

/// The inputs as `sha256sum` prints them, one block per directory, and
/// the commands that recompute the plan hash without keyrite.
struct InputsSection {
    /// (what the names are relative to, the `sha256sum` lines)
    blocks: Vec<(String, String)>,
    recipe: String,
}

fn inputs_section(plan: &Plan, digest: &PlanDigest) -> InputsSection {
    let ceremony_dir = plan.path.parent().map(|p| p.display().to_string()).filter(|p| !p.is_empty());
    let ceremony_dir = ceremony_dir.unwrap_or_else(|| ".".into());
    let mut blocks = Vec::new();
    let mut recipe = String::new();
    for (base, dir, label) in [
        (
            InputBase::CeremonyDir,
            ceremony_dir.as_str(),
            format!("Relative to the ceremony file's directory (`{ceremony_dir}`):"),
        ),
        (
            InputBase::InputDir,
            "INPUT_DIR",
            "Relative to the input directory (INPUT_DIR below: the medium that holds them):".to_string(),
        ),
    ] {
        let inputs: Vec<_> = digest.inputs_in(base).collect();
        if inputs.is_empty() {
            continue;
        }
        blocks.push((label, inputs.iter().map(|i| i.sha256sum_line()).collect()));
        let names: Vec<String> = inputs.iter().map(|i| shell_quote(&i.name)).collect();
        let redirect = if recipe.is_empty() { ">" } else { ">>" };
        let _ = writeln!(recipe, "(cd {} && sha256sum {}) {redirect} inputs.sha256", shell_quote(dir), names.join(" "));
    }
    let _ = writeln!(recipe, "sha256sum inputs.sha256   # prints the plan SHA-256");
    InputsSection { blocks, recipe }
}

fn shell_quote(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./+:,=@".contains(&b)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

const INPUTS_INTRO: &str = "The plan hash covers every file that decides what this ceremony does: the ceremony file, its template and the files it reads from the input directory. It is the SHA-256 of exactly the lines `sha256sum` prints for these files, in this order, named as listed.";

fn markdown(plan: &Plan, digest: &PlanDigest) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {}\n", plan.title);
    let _ = writeln!(s, "Ceremony `{}` ({}), script `{}`.\n", plan.id, plan.kind.name(), plan.path.display());
    if !plan.description.trim().is_empty() {
        let _ = writeln!(s, "{}\n", plan.description.trim());
    }
    let _ = writeln!(s, "| | |\n|---|---|");
    for (k, v) in rows(plan, digest) {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s);
    let inputs = inputs_section(plan, digest);
    let _ = writeln!(s, "## Inputs\n\n{INPUTS_INTRO}\n");
    for (label, lines) in &inputs.blocks {
        let _ = writeln!(s, "{label}\n\n```\n{lines}```\n");
    }
    let _ = writeln!(s, "To recompute it without keyrite:\n\n```\n{}```\n", inputs.recipe);
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
                    "Witness reads aloud the {READ_BACK_WORDS} read-back words of the plan hash: **{}**\n",
                    digest.fingerprint().read_back_grouped()
                );
            }
            StepKind::WitnessRoot => {
                let _ =
                    writeln!(s, "Root certificate SHA-256 (write it here): ______________________________________\n");
                let _ = writeln!(s, "Its {READ_BACK_WORDS} read-back words: ______________________________________\n");
            }
            StepKind::WitnessRequest => {
                let _ = writeln!(s, "Witness reads the CSR's {READ_BACK_WORDS} read-back words (or the first 32 hex digits of its SHA-256) from the requester's signed sheet; they cover the CSR's public key too. Copy them here: ______________________________________\n");
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

fn html(plan: &Plan, digest: &PlanDigest) -> String {
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
    for (k, v) in rows(plan, digest) {
        let v =
            if k.contains("SHA-256") || k.contains("read-back") { format!("<code>{}</code>", e(&v)) } else { e(&v) };
        let _ = writeln!(s, "<tr><th>{k}</th><td>{v}</td></tr>");
    }
    let inputs = inputs_section(plan, digest);
    let _ = writeln!(s, "</table>\n<h2>Inputs</h2>\n<p>{}</p>", e(INPUTS_INTRO));
    for (label, lines) in &inputs.blocks {
        let _ = writeln!(s, "<p>{}</p>\n<pre>{}</pre>", e(&label.replace('`', "")), e(lines));
    }
    let _ = writeln!(s, "<p>To recompute it without keyrite:</p>\n<pre>{}</pre>", e(&inputs.recipe));
    let _ = writeln!(
        s,
        "<h2>Participants</h2>\n<table class=\"box\"><tr><th>Role</th><th>Name</th><th>Signature</th></tr>"
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
                    "<p>Witness reads aloud the {READ_BACK_WORDS} read-back words of the plan hash: <strong class=\"words\">{}</strong></p>",
                    digest.fingerprint().read_back_grouped()
                );
            }
            StepKind::WitnessRoot => {
                let _ = writeln!(s, "<table class=\"box\"><tr><th>Root certificate SHA-256 (write it here)</th></tr><tr><td></td></tr><tr><th>Its {READ_BACK_WORDS} read-back words</th></tr><tr><td></td></tr></table>");
            }
            StepKind::WitnessRequest => {
                let _ = writeln!(s, "<p>Witness reads the CSR's {READ_BACK_WORDS} read-back words (or the first 32 hex digits of its SHA-256) from the requester's signed sheet; they cover the CSR's public key too.</p><table class=\"box\"><tr><th>CSR read-back words, as read from the sheet</th></tr><tr><td></td></tr></table>");
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
    fn the_printed_script_has_the_plan_hash_its_inputs_a_box_per_step_and_signature_lines() {
        let plan = plan();
        let digest = plan.digest_with(Vec::new());
        for format in [Format::Markdown, Format::Html] {
            let text = render(&plan, &digest, format);
            assert!(text.contains(&digest.fingerprint().hex), "plan hash printed");
            assert!(text.contains(&digest.fingerprint().read_back_grouped()), "read-back words printed");
            for input in digest.inputs() {
                assert!(text.contains(input.sha256sum_line().trim_end()), "{} listed", input.name);
            }
            assert!(text.contains("../templates/root-ca.toml"), "the template is an input");
            let boxes = text.matches("Initials (").count();
            assert_eq!(boxes, plan.steps.len() * 2, "two initials boxes per step ({format:?})");
            for role in &plan.roles {
                assert!(text.contains(&role.title));
            }
        }
        for format in [Format::Markdown, Format::Html] {
            assert!(render(&plan, &digest, format).contains(AUDIT_KEY_BOX), "a box for the audit key ({format:?})");
        }
        let html = render(&plan, &digest, Format::Html);
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(!html.contains("<script"), "a printable page runs nothing");
    }
}
