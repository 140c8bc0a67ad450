//! The offline CA's ceremonies: sign an intermediate from a USB request,
//! revoke, publish a CRL. They sign with the existing root key and keep
//! their state and their audit log in the CA directory.
//!
//! Everything that can be checked is checked before the CA's log is
//! touched: [`read_request`] checks the request bundle (manifest, hashes, no
//! extra or escaping files), the CSR (strict encoding, proof of possession,
//! key quality, nothing asked beyond the template) and its subject against
//! the template's; [`preflight`] the serial to revoke, that `state.json`
//! still holds every revocation the CA's audit log and last CRL record, and
//! that the outputs are absent. A bad bundle therefore leaves nothing signed
//! and nothing written.

use std::path::{Path, PathBuf};

use time::Duration;

use super::engine::{display_name, now_seconds, rfc3339, witness_read_back, Session};
use super::{CeremonyError, Operator};
use crate::audit::Artifact;
use crate::ca::{self, CaDir};
use crate::config::{Environment, InputBase, Plan, PlanInput, Step, StepKind};
use crate::faults;
use crate::files;
use crate::hsm::RandomSource;
use crate::profile::{self, DistinguishedName, IssueRequest, IssuerRef};
use crate::transfer::csr::{parse_csr, Csr};
use crate::transfer::{Bundle, BundleKind, BundleWriter, Limits};
use crate::words::{self, Fingerprint};

/// What the CA steps read in the preflight and produce as they go.
#[derive(Default)]
pub struct State {
    pub dir: Option<CaDir>,
    request: Option<Request>,
    pub intermediate_pem: Option<PathBuf>,
    pub response_bundle: Option<PathBuf>,
    pub crl_pem: Option<PathBuf>,
    pub crl_bundle: Option<PathBuf>,
}

/// A request bundle read and checked, before any PIN is asked for.
pub struct Request {
    csr: Csr,
    manifest_sha256: Fingerprint,
    requester: String,
    bundle_dir: PathBuf,
    /// What will be signed: the template's subject, or the CSR's when the
    /// template names none.
    subject_to_sign: DistinguishedName,
    /// The bundle's files for the plan digest: the manifest, then each
    /// listed file, named `<bundle>/<file>` in the input directory.
    inputs: Vec<PlanInput>,
}

impl Request {
    pub fn plan_inputs(&self) -> &[PlanInput] {
        &self.inputs
    }

    fn subject_differs(&self) -> bool {
        self.subject_to_sign != *self.csr.subject()
    }
}

/// Reads a sign-intermediate plan's request bundle from `input_dir` and
/// checks it all: the bundle, the CSR, and the CSR's subject against the
/// template's. `None` for other kinds.
pub fn read_request(plan: &Plan, input_dir: &Path) -> Result<Option<Request>, CeremonyError> {
    let Some(spec) = &plan.intermediate else { return Ok(None) };
    let bundle_dir = input_dir.join(&spec.request_bundle);
    let bundle = Bundle::open(&bundle_dir, BundleKind::IntermediateRequest, &Limits::default())?;
    let csr = parse_csr(bundle.file("csr.pem")?)?;
    let cert = plan
        .certificate
        .as_ref()
        .ok_or_else(|| CeremonyError::Step { step: 0, message: "the plan names no intermediate template".into() })?;
    csr.check_against(&cert.template)?;
    let subject_to_sign = cert.template.subject().cloned().unwrap_or_else(|| csr.subject().clone());
    if subject_to_sign != *csr.subject() && !cert.replace_csr_subject {
        return Err(CeremonyError::SubjectMismatch {
            bundle: bundle_dir,
            csr: csr.subject().to_string(),
            template: cert.template_path.clone(),
            signed: subject_to_sign.to_string(),
        });
    }
    let name = |file: &str| format!("{}/{file}", spec.request_bundle);
    let mut inputs = vec![PlanInput {
        base: InputBase::InputDir,
        name: name(crate::transfer::MANIFEST),
        sha256: bundle.manifest_sha256().hex.clone(),
    }];
    for file in bundle.file_names() {
        inputs.push(PlanInput::of(InputBase::InputDir, name(file), bundle.file(file)?));
    }
    Ok(Some(Request {
        requester: bundle.manifest().identity.clone(),
        manifest_sha256: bundle.manifest_sha256().clone(),
        csr,
        bundle_dir,
        subject_to_sign,
        inputs,
    }))
}

/// Opens the CA directory and checks the kind's inputs (`request`, read by
/// [`read_request`]); writes nothing.
pub fn preflight(plan: &Plan, env: &Environment, request: Option<Request>) -> Result<State, CeremonyError> {
    let dir = env.ca_dir.as_ref().ok_or_else(|| CeremonyError::Step {
        step: 0,
        message: format!(
            "a {} ceremony needs the CA directory: add ca_dir to the environment file (create it once with `keyrite ca init DIR --root ROOT.pem`)",
            plan.kind.name()
        ),
    })?;
    let ca = CaDir::open(dir)?;
    // A state.json put back from an older copy would let the next CRL drop
    // a revocation; it is refused here, before the CA's log is touched, and
    // again by `issue_crl` itself before anything is signed.
    ca.check_revocations(time::OffsetDateTime::now_utc())?;
    let mut state = State { request, ..State::default() };
    if let Some(r) = &plan.revocation {
        match ca.certificates().iter().find(|c| c.serial == r.serial) {
            None => {
                return Err(CeremonyError::Step {
                    step: 0,
                    message: format!(
                        "serial {} was not issued by this CA (see `keyrite ca export-index`); nothing was revoked",
                        r.serial
                    ),
                })
            }
            Some(c) if c.status == ca::CertStatus::Revoked => {
                return Err(CeremonyError::Step { step: 0, message: format!("serial {} is already revoked", r.serial) })
            }
            Some(_) => {}
        }
    }
    state.dir = Some(ca);
    Ok(state)
}

pub fn run_step(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    match step.kind {
        StepKind::ImportRequest => import(step, s, operator),
        StepKind::WitnessRequest => {
            // One value binds both: the CSR's DER holds its public key, so
            // 130 bits of the CSR's hash confirm the key as well as the rest.
            let fp = s.ca.request.as_ref().map(|r| r.csr.sha256().clone()).ok_or_else(|| no_request(step))?;
            witness_read_back(
                step,
                s,
                operator,
                "CSR SHA-256 (it covers the CSR's public key) on the requester's sheet",
                &fp,
            )
        }
        StepKind::SignIntermediate => sign_intermediate(step, s, operator),
        StepKind::Revoke => revoke(step, s, operator),
        StepKind::SignCrl => sign_crl(step, s, operator),
        other => Err(CeremonyError::Step { step: step.number, message: format!("{} is not a CA step", other.name()) }),
    }
}

fn no_request(step: &Step) -> CeremonyError {
    CeremonyError::Step { step: step.number, message: "no request was imported".into() }
}

fn ca_dir<'a>(step: &Step, s: &'a mut Session<'_>) -> Result<&'a mut CaDir, CeremonyError> {
    s.ca.dir
        .as_mut()
        .ok_or_else(|| CeremonyError::Step { step: step.number, message: "no CA directory is open".into() })
}

fn import(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let r = s.ca.request.as_ref().ok_or_else(|| no_request(step))?;
    let mut text = format!(
        "Request from {} ({})\n  manifest SHA-256     {}\n  CSR SHA-256          {}\n  CSR read-back        {}\n  public key SHA-256   {}\n  public key read-back {}\n{}",
        r.requester,
        r.bundle_dir.display(),
        r.manifest_sha256.hex,
        r.csr.sha256().hex,
        r.csr.sha256().read_back_grouped(),
        r.csr.spki_sha256().hex,
        r.csr.spki_sha256().read_back_grouped(),
        subjects(r, s.plan),
    );
    for line in r.csr.summary() {
        text.push_str(&format!("\n  {line}"));
    }
    text.push_str("\nThe template decides what is signed: requested extensions are shown, never copied.");
    operator.say(&text);
    let event = s
        .event(step, "request-imported")
        .input(Artifact { name: "manifest.json".into(), sha256: r.manifest_sha256.hex.clone() })
        .input(Artifact { name: "csr.pem".into(), sha256: r.csr.sha256().hex.clone() })
        .detail("requester", r.requester.as_str())
        .detail("subject", r.csr.subject().to_string())
        .detail("subject_to_sign", r.subject_to_sign.to_string())
        .detail("public_key_sha256", r.csr.spki_sha256().hex.as_str())
        .detail("csr_summary", r.csr.summary());
    s.log.append(event)?;
    Ok(())
}

/// The subject the CSR asks for beside the one that will be signed, and
/// why they differ when they do.
fn subjects(r: &Request, plan: &Plan) -> String {
    let template = plan.certificate.as_ref().map_or_else(String::new, |c| c.template_path.display().to_string());
    let why = if !r.subject_differs() {
        "the same as the CSR's".to_string()
    } else {
        format!("from template {template}; DIFFERS from the CSR's: the plan accepts it (replace_csr_subject = true)")
    };
    format!("  CSR subject          {}\n  subject to sign      {} ({why})", r.csr.subject(), r.subject_to_sign)
}

fn sign_intermediate(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let plan = s.plan;
    let spec = plan.intermediate.as_ref().ok_or_else(|| no_request(step))?;
    let cert = plan
        .certificate
        .as_ref()
        .ok_or_else(|| CeremonyError::Step { step: step.number, message: "no intermediate template".into() })?;
    let key =
        plan.key.as_ref().ok_or_else(|| CeremonyError::Step { step: step.number, message: "no root [key]".into() })?;
    let response_dir = s.output(&spec.response_bundle);
    let (csr_der, csr_spki, csr_subject, subject_to_sign, csr_sha) = {
        let r = s.ca.request.as_ref().ok_or_else(|| no_request(step))?;
        operator.say(&subjects(r, plan));
        (
            r.csr.der().to_vec(),
            r.csr.spki_der().to_vec(),
            r.csr.subject().clone(),
            r.subject_to_sign.clone(),
            r.csr.sha256().hex.clone(),
        )
    };
    let subject_replaced = subject_to_sign != csr_subject;
    // The serial, made positive exactly as the profile will, is reserved in
    // the CA directory before anything is signed: a crash after this point
    // can skip the number, never reuse it.
    let mut serial = s.store.random_bytes(20)?;
    serial[0] &= 0x7f;
    if serial[0] == 0 {
        serial[0] = 1;
    }
    ca_dir(step, s)?.reserve_serial(&serial)?;
    faults::point("sign-intermediate:after-reserve");

    let root_der = ca_dir(step, s)?.root_cert_der().to_vec();
    let not_before = match cert.not_before {
        Some(t) => t,
        None => now_seconds(step)?,
    };
    let not_after = cert.template.not_after_for(not_before);
    let issued = {
        let signer = s.store.find(&key.label, Some(key.signature))?;
        let request = IssueRequest {
            profile: &cert.template,
            // The template's subject when it has one: the PKI team names
            // its intermediates, not the requester. read_request refused a
            // CSR asking for another unless the plan accepts the change.
            subject: if cert.template.subject().is_some() { None } else { Some(subject_to_sign) },
            subject_spki: &csr_spki,
            sans: Vec::new(),
            serial,
            not_before,
            not_after,
            issuer: IssuerRef::Certificate { der: &root_der },
        };
        profile::issue(&request, signer.signer.as_ref())?
    };
    faults::point("sign-intermediate:after-sign");

    let root_pem = pem_rfc7468::encode_string("CERTIFICATE", pem_rfc7468::LineEnding::LF, &root_der)
        .map_err(|e| CeremonyError::Step { step: step.number, message: format!("encoding the root as PEM: {e}") })?;
    let chain = format!("{}{}", issued.pem, root_pem);
    let mut writer = BundleWriter::create(&response_dir)?;
    writer.add("intermediate.pem", issued.pem.as_bytes())?;
    writer.add("chain.pem", chain.as_bytes())?;
    writer.add("root.pem", root_pem.as_bytes())?;
    let mut extra = serde_json::Map::new();
    extra.insert("serial".into(), issued.serial_hex.clone().into());
    extra.insert("csr_sha256".into(), csr_sha.clone().into());
    extra.insert("ceremony".into(), plan.id.clone().into());
    extra.insert("root_sha256".into(), words::sha256_hex(&root_der).into());
    let manifest = writer.finish(BundleKind::IntermediateResponse, &plan.title, extra)?;
    faults::point("sign-intermediate:after-bundle");
    let record = ca_dir(step, s)?.record_issued(&issued.der)?;
    faults::point("sign-intermediate:after-record");

    let warnings: Vec<String> = issued.findings.iter().map(|f| f.to_string()).collect();
    s.log.append(
        s.event(step, ca::EVENT_CERTIFICATE_SIGNED)
            .input(Artifact { name: "csr.pem".into(), sha256: csr_sha })
            .input(Artifact::of("csr.der", &csr_der))
            .output(Artifact::of("intermediate.der", &issued.der))
            .output(Artifact::of("intermediate.pem", issued.pem.as_bytes()))
            .detail("serial", issued.serial_hex.as_str())
            .detail("subject", record.subject.as_str())
            .detail("csr_subject", csr_subject.to_string())
            .detail("subject_replaced", subject_replaced)
            .detail("not_before", rfc3339(not_before))
            .detail("not_after", rfc3339(not_after))
            .detail("tbs_sha256", issued.tbs_sha256_hex.as_str())
            .detail("response_bundle", display_name(&response_dir))
            .detail("response_files", manifest.files.iter().map(|f| f.path.clone()).collect::<Vec<_>>())
            .detail("lint", "passed")
            .detail("lint_warnings", warnings),
    )?;
    operator.say(&format!(
        "Intermediate signed, linted and verified.\n  serial      {}\n  subject     {}\n  SHA-256     {}\n  words       {}\n  bundle      {}",
        issued.serial_hex,
        record.subject,
        issued.fingerprint.hex,
        issued.fingerprint.words,
        response_dir.display()
    ));
    s.ca.intermediate_pem = Some(response_dir.join("intermediate.pem"));
    s.ca.response_bundle = Some(response_dir);
    Ok(())
}

fn revoke(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let spec = s
        .plan
        .revocation
        .clone()
        .ok_or_else(|| CeremonyError::Step { step: step.number, message: "the plan names nothing to revoke".into() })?;
    let time = match spec.time {
        Some(t) => t,
        None => now_seconds(step)?,
    };
    let record = ca_dir(step, s)?.revoke(&spec.serial, spec.reason, time)?;
    faults::point("revoke:after-record");
    let mut event = ca::certificate_revoked_event(&record);
    event.step = step.id.clone();
    s.log.append(event.role(step.role.as_str()).actor(s.actor_of(&step.role)))?;
    operator.say(&format!("Revoked serial {} ({}), reason {}.", spec.serial, record.subject, spec.reason.name()));
    Ok(())
}

fn sign_crl(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let plan = s.plan;
    let spec = plan
        .crl
        .clone()
        .ok_or_else(|| CeremonyError::Step { step: step.number, message: "the plan has no [crl] table".into() })?;
    let key =
        plan.key.as_ref().ok_or_else(|| CeremonyError::Step { step: step.number, message: "no root [key]".into() })?;
    let bundle_dir = s.output(&spec.bundle);
    files::ensure_absent(&bundle_dir)?;
    let this_update = now_seconds(step)?;
    let next_update = this_update + Duration::days(i64::from(spec.next_update_days));
    let crl = {
        let signer = s.store.find(&key.label, Some(key.signature))?;
        let ca =
            s.ca.dir
                .as_mut()
                .ok_or_else(|| CeremonyError::Step { step: step.number, message: "no CA directory".into() })?;
        ca.issue_crl(signer.signer.as_ref(), this_update, next_update, spec.issuing_distribution_point.clone())?
    };
    faults::point("crl:after-record");
    let mut event = ca::crl_signed_event(&crl);
    event.step = step.id.clone();
    let event = event.role(step.role.as_str()).actor(s.actor_of(&step.role));
    s.log.append(event.detail("next_update_rfc3339", rfc3339(next_update)))?;

    let mut writer = BundleWriter::create(&bundle_dir)?;
    writer.add("crl.der", &crl.der)?;
    writer.add("crl.pem", crl.pem.as_bytes())?;
    let mut extra = serde_json::Map::new();
    extra.insert("crl_number".into(), crl.crl_number.into());
    extra.insert("entries".into(), (crl.entries as u64).into());
    extra.insert("next_update".into(), rfc3339(next_update).into());
    writer.finish(BundleKind::Crl, &plan.title, extra)?;
    operator.say(&format!(
        "CRL number {} signed, linted and verified: {} revoked entries, next update {}.\n  SHA-256 {}\n  bundle  {}",
        crl.crl_number,
        crl.entries,
        rfc3339(next_update),
        crl.fingerprint.hex,
        bundle_dir.display()
    ));
    s.ca.crl_pem = Some(bundle_dir.join("crl.pem"));
    s.ca.crl_bundle = Some(bundle_dir);
    Ok(())
}

/// `keyrite ca init`: a CA directory for a root certificate (PEM or DER).
pub fn init_dir(dir: &std::path::Path, root: &std::path::Path) -> Result<CaDir, CeremonyError> {
    let bytes = std::fs::read(root).map_err(|e| files::FileError::io(root, "reading", e))?;
    let der = if bytes.starts_with(b"-----BEGIN") {
        pem_rfc7468::decode_vec(&bytes)
            .map_err(|e| CeremonyError::Input { what: root.display().to_string(), detail: format!("not PEM: {e}") })?
            .1
    } else {
        bytes
    };
    Ok(CaDir::init(dir, &der)?)
}
