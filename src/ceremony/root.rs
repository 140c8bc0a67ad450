//! The root key ceremony's own steps: generate the root key in the token,
//! sign the root certificate (lint before, verify after, write once), and
//! have the witness read its fingerprint back.

use std::path::PathBuf;

use super::engine::{display_name, key_event, now_seconds, rfc3339, witness_read_back, Session};
use super::{CeremonyError, Operator};
use crate::audit::Artifact;
use crate::config::{Step, StepKind};
use crate::files::{self, Mode};
use crate::hsm::pkcs11::Extractability;
use crate::hsm::RandomSource;
use crate::profile::{self, IssueRequest, IssuerRef};
use crate::words::{self, Fingerprint};

/// What the root steps have produced so far.
#[derive(Debug, Default)]
pub struct State {
    pub key_uri: Option<String>,
    pub issued: Option<profile::Issued>,
    pub certificate_pem: Option<PathBuf>,
    pub certificate_der: Option<PathBuf>,
}

pub fn run_step(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    match step.kind {
        StepKind::GenerateKey => generate_key(step, s, operator),
        StepKind::SignRoot => sign_root(step, s, operator),
        StepKind::WitnessRoot => {
            let fp = s.root.issued.as_ref().map(|i| i.fingerprint.clone()).ok_or_else(|| CeremonyError::Step {
                step: step.number,
                message: "no certificate has been signed yet".into(),
            })?;
            witness_read_back(step, s, operator, "root certificate SHA-256", &fp)
        }
        other => {
            Err(CeremonyError::Step { step: step.number, message: format!("{} is not a root step", other.name()) })
        }
    }
}

fn generate_key(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let spec = s.plan.key.clone().ok_or_else(|| no_key(step))?;
    // With custody, the key may leave the token, but only wrapped by a key
    // the security officer marked trusted; without, it may never leave.
    let extractability =
        if s.plan.backup.is_some() { Extractability::WrapWithTrustedOnly } else { Extractability::Never };
    let (spki, uri) = {
        let key = s.store.generate_with(&spec.label, spec.algorithm, spec.signature, extractability)?;
        (key.signer.spki_der().to_vec(), key.uri.clone())
    };
    let fp = Fingerprint::sha256(&spki);
    let protection = match extractability {
        Extractability::Never => "generated in the store; private key sensitive, never extractable, local (read back and checked)",
        Extractability::WrapWithTrustedOnly => "generated in the store; private key sensitive, always sensitive, local, extractable only wrapped by a trusted key for the custodians' backup (read back and checked)",
    };
    s.log
        .append(key_event(s.event(step, "key-generated"), "root", &spec, &uri, &fp).detail("protection", protection))?;
    operator.say(&format!(
        "Root key {:?} generated in {}. Public key SHA-256:\n  {}\n  {}",
        spec.label,
        s.store.facts().label(),
        fp.hex,
        fp.words
    ));
    s.root.key_uri = Some(uri.to_string());
    Ok(())
}

fn sign_root(step: &Step, s: &mut Session<'_>, operator: &mut dyn Operator) -> Result<(), CeremonyError> {
    let spec = s.plan.key.clone().ok_or_else(|| no_key(step))?;
    let cert = s.plan.certificate.clone().ok_or_else(|| CeremonyError::Step {
        step: step.number,
        message: "the plan names no certificate template".into(),
    })?;
    let (pem_name, der_name) = match (&s.plan.outputs.certificate_pem, &s.plan.outputs.certificate_der) {
        (Some(p), Some(d)) => (p.clone(), d.clone()),
        _ => {
            return Err(CeremonyError::Step {
                step: step.number,
                message: "the plan names no certificate outputs".into(),
            })
        }
    };
    // Serial: 20 bytes from the token's RNG; the profile makes it positive
    // and at most 20 octets, keeping well over the 64 bits the BRs require.
    let serial = s.store.random_bytes(20)?;
    let not_before = match cert.not_before {
        Some(t) => t,
        None => now_seconds(step)?,
    };
    let not_after = cert.template.not_after_for(not_before);
    let (issued, uri, spki) = {
        let key = s.store.find(&spec.label, Some(spec.signature))?;
        let request = IssueRequest {
            profile: &cert.template,
            subject: None,
            subject_spki: key.signer.spki_der(),
            sans: Vec::new(),
            serial,
            not_before,
            not_after,
            issuer: IssuerRef::SelfSigned,
        };
        (profile::issue(&request, key.signer.as_ref())?, key.uri.clone(), key.signer.spki_der().to_vec())
    };
    let (pem_path, der_path) = (s.output(&pem_name), s.output(&der_name));
    files::write_new(&der_path, &issued.der, Mode::Public)?;
    files::write_new(&pem_path, issued.pem.as_bytes(), Mode::Public)?;
    let warnings: Vec<String> = issued.findings.iter().map(|f| f.to_string()).collect();
    s.log.append(
        s.event(step, "certificate-signed")
            .input(Artifact { name: format!("public key {}", spec.label), sha256: words::sha256_hex(&spki) })
            .output(Artifact::of(display_name(&der_path), &issued.der))
            .output(Artifact::of(display_name(&pem_path), issued.pem.as_bytes()))
            .detail("serial", issued.serial_hex.as_str())
            .detail("not_before", rfc3339(not_before))
            .detail("not_after", rfc3339(not_after))
            .detail("tbs_sha256", issued.tbs_sha256_hex.as_str())
            .detail("signed_by", uri.as_str())
            .detail("lint", "passed")
            .detail("lint_warnings", warnings),
    )?;
    operator.say(&format!(
        "Root certificate signed, linted and verified.\n  serial      {}\n  SHA-256     {}\n  words       {}\n  written to  {} and {}",
        issued.serial_hex,
        issued.fingerprint.hex,
        issued.fingerprint.words,
        pem_path.display(),
        der_path.display()
    ));
    s.root.issued = Some(issued);
    s.root.certificate_pem = Some(pem_path);
    s.root.certificate_der = Some(der_path);
    Ok(())
}

fn no_key(step: &Step) -> CeremonyError {
    CeremonyError::Step { step: step.number, message: "the plan names no [key]".into() }
}
