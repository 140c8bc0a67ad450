//! The `cli` room: parse arguments, pick an operator (terminal or answers
//! file), call into the library, print, and turn errors into exit codes.
//! `anyhow` lives here and nowhere else.

mod acme;
mod bench;
mod terminal;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::audit::{self, VerifyOptions};
use crate::ceremony::{engine, inputs, print, rehearse, Operator, RunOptions, ScriptedOperator};
use crate::config::{Answers, Environment, Plan};
use crate::files::{self, Mode};

#[derive(Parser)]
#[command(name = "keyrite", version, about = "Run your own certificate authority the way the best public CAs do")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a full rehearsal ceremony on a throwaway token (SoftHSM if installed, else the software key store)
    Rehearse {
        /// Directory for the rehearsal (must be new or empty); default: a fresh
        /// keyrite-rehearsal-* directory under $TMPDIR (or /tmp), made for each run
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Which key store to rehearse on
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
        /// Keep acme-serve running afterwards as a sandbox for ACME clients (until Ctrl-C)
        #[arg(long)]
        serve: bool,
        /// Where acme-serve listens (default: a free port on 127.0.0.1)
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// The port http-01 validation connects to on the client's host
        #[arg(long)]
        http01_port: Option<u16>,
        /// The port tls-alpn-01 validation connects to (default 443)
        #[arg(long)]
        tlsalpn01_port: Option<u16>,
        /// The DNS server (ADDR:PORT) for dns-01 and for resolving names to validate
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// acme-serve's rate limits file (see docs/acme-operations.md); benchmarks pass benches/no-limits.toml
        #[arg(long)]
        rate_limits: Option<PathBuf>,
    },
    /// Ceremony scripts: check, print, run
    #[command(subcommand)]
    Ceremony(CeremonyCommand),
    /// The audit log
    #[command(subcommand)]
    Audit(AuditCommand),
    /// PKCS#11 tokens
    #[command(subcommand)]
    Hsm(HsmCommand),
    /// Custodians' shares
    #[command(subcommand)]
    Shares(SharesCommand),
    /// The online intermediate CA: request its certificate, install the response
    #[command(subcommand)]
    Intermediate(IntermediateCommand),
    /// The offline CA directory: index, backup, verification
    #[command(subcommand)]
    Ca(CaCommand),
    /// Run the RFC 8555 ACME server that issues short-lived TLS leaves from the intermediate
    // Boxed: its many flags would make every `Command` as large.
    AcmeServe(Box<acme::AcmeServeArgs>),
    /// ACME tools: External Account Binding keys for acme-serve, and a load generator for any ACME server
    #[command(subcommand)]
    Acme(acme::AcmeCommand),
}

#[derive(Subcommand)]
enum IntermediateCommand {
    /// Generate the intermediate key and write a request bundle (csr.pem) for the offline root
    Request {
        /// Environment file: which token (or software store) holds the key, where the PIN comes from
        #[arg(long)]
        env: PathBuf,
        /// The request bundle directory (the USB stick; must be new or empty)
        #[arg(long)]
        out: PathBuf,
        /// The new key's label in the key store
        #[arg(long)]
        label: String,
        #[arg(long, default_value = "ecdsa-p256", value_parser = ["ecdsa-p256", "ecdsa-p384", "rsa-3072", "rsa-4096"])]
        algorithm: String,
        /// Where the local request record (request.json) goes; install later writes issuer.toml here
        /// (default: the environment file's output_dir)
        #[arg(long)]
        issuer_dir: Option<PathBuf>,
        #[arg(long)]
        subject_cn: String,
        #[arg(long)]
        subject_o: Option<String>,
        #[arg(long)]
        subject_ou: Option<String>,
        #[arg(long)]
        subject_c: Option<String>,
        /// Who asks (the manifest's identity); default: the host name
        #[arg(long)]
        requester: Option<String>,
    },
    /// Check a response bundle against the pinned root and the local key, then write issuer.toml
    Install {
        /// The response bundle directory from the offline ceremony
        response: PathBuf,
        #[arg(long)]
        env: PathBuf,
        /// SHA-256 (hex) of the root certificate, from the root ceremony's paper log
        #[arg(long = "root-sha256")]
        root_sha256: String,
        /// The issuer directory (where request.json is and issuer.toml goes)
        #[arg(long)]
        out: PathBuf,
        /// The key's label, when there is no request.json in the issuer directory
        #[arg(long)]
        key_label: Option<String>,
    },
    /// Re-run the install checks on an issuer.toml, as acme-serve does at start
    Check {
        /// The issuer configuration (issuer.toml)
        issuer: PathBuf,
        #[arg(long)]
        env: PathBuf,
        /// Check as of this time (RFC 3339) instead of now, e.g. before a renewal
        #[arg(long)]
        at: Option<String>,
    },
}

#[derive(Subcommand)]
enum CaCommand {
    /// Create the offline CA's directory for a root certificate (once, after the root ceremony)
    Init {
        ca_dir: PathBuf,
        /// The root certificate, PEM or DER
        #[arg(long)]
        root: PathBuf,
    },
    /// Print the CA's index in OpenSSL index.txt format
    ExportIndex { ca_dir: PathBuf },
    /// Write a ca-backup bundle of the CA directory
    Backup {
        ca_dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// Who makes the backup (the manifest's identity)
        #[arg(long, default_value = "keyrite ca backup")]
        identity: String,
    },
    /// Check the CA directory's state, files and CRL numbers
    Verify { ca_dir: PathBuf },
}

#[derive(Subcommand)]
enum SharesCommand {
    /// Check one share alone against its commitment in a ceremony's audit log (offline)
    Verify {
        /// The audit log of the ceremony that issued the share
        #[arg(long)]
        log: PathBuf,
        /// A share card file (or a file with just the words); without it the words are asked for, hidden
        #[arg(long)]
        card: Option<PathBuf>,
        #[command(flatten)]
        pins: PinArgs,
    },
}

/// What ties a log to the paper record.
#[derive(clap::Args)]
struct PinArgs {
    /// SHA-256 of an audit public key, from the paper log's audit key box: hex (any case, colons allowed)
    /// or words, all of it or at least 32 hex digits / 13 words; repeatable
    #[arg(long = "audit-key-sha256")]
    audit_keys: Vec<String>,
    /// A checkpoint from the paper log: its note SHA-256 (words or hex, at least 13 words / 32 hex digits)
    /// or tree root (hex), typed inline, or a file holding one of these or the note; repeatable
    #[arg(long)]
    checkpoint: Vec<String>,
    /// Check the file's own consistency only, with nothing pinned (a rewritten, re-signed log passes such a check)
    #[arg(long)]
    unpinned: bool,
}

impl PinArgs {
    fn options(&self, expect_closed: bool) -> Result<VerifyOptions> {
        let mut paper = Vec::new();
        for value in &self.checkpoint {
            let path = std::path::Path::new(value);
            // A file when one exists by that name (a copied note), else the
            // value typed inline.
            if path.is_file() {
                paper.push(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?);
            } else {
                paper.push(value.clone());
            }
        }
        Ok(VerifyOptions {
            pinned_audit_keys: self.audit_keys.clone(),
            paper_checkpoints: paper,
            expect_closed,
            unpinned: self.unpinned,
            ..VerifyOptions::default()
        })
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Auto,
    Softhsm,
    Soft,
}

#[derive(Subcommand)]
enum CeremonyCommand {
    /// Validate a ceremony file and its template, and show the plan hash
    Check {
        ceremony: PathBuf,
        /// The input directory (request bundle, restore inputs): the plan hash covers its files too
        #[arg(long)]
        input_dir: Option<PathBuf>,
    },
    /// Render the script as a printable document with initials boxes and signature lines
    Print {
        ceremony: PathBuf,
        /// The input directory (request bundle, restore inputs): the plan hash covers its files too
        #[arg(long)]
        input_dir: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = PrintFormat::Markdown)]
        format: PrintFormat,
        /// Write to this file (never overwritten) instead of standard output
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Run a ceremony
    Run {
        ceremony: PathBuf,
        /// Environment file: which module and token (or software store), where PINs come from
        #[arg(long)]
        env: PathBuf,
        /// Answer every prompt from this file instead of the terminal
        #[arg(long)]
        answers: Option<PathBuf>,
        /// Run even though a network interface is up (rehearsals only; logged)
        #[arg(long)]
        allow_network: bool,
        /// Output directory (overrides the environment file's output_dir)
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum PrintFormat {
    Markdown,
    Html,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify a log offline: hash chain, Merkle tree, checkpoint signatures, and what the paper pins
    Verify {
        log: PathBuf,
        #[command(flatten)]
        pins: PinArgs,
        /// Accept a log whose ceremony is still open (no closing checkpoint)
        #[arg(long)]
        allow_open: bool,
        /// Fail (exit 1) when the log records rehearsal aids (answers file, --allow-network, software key store, echoed read-backs)
        #[arg(long)]
        require_real: bool,
    },
}

#[derive(Subcommand)]
enum HsmCommand {
    /// List the tokens a PKCS#11 module shows
    List {
        #[arg(long)]
        module: PathBuf,
    },
}

/// The binary's entry point: runs, prints errors with their causes, and
/// maps them to exit codes (0 ok, 1 failure, 2 usage).
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("keyrite: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Rehearse { dir, backend, serve, listen, http01_port, tlsalpn01_port, dns, rate_limits } => {
            let choice = match backend {
                BackendArg::Auto => rehearse::BackendChoice::Auto,
                BackendArg::Softhsm => rehearse::BackendChoice::SoftHsm,
                BackendArg::Soft => rehearse::BackendChoice::Soft,
            };
            let options = rehearse::RehearseOptions {
                serve,
                listen,
                http01_port,
                tlsalpn01_port,
                dns,
                rate_limits,
                ..rehearse::RehearseOptions::new(choice)
            };
            if serve {
                crate::acme::launch::install_tracing();
            }
            let dir = match dir {
                Some(dir) => dir,
                None => rehearse::fresh_dir(&std::env::temp_dir())?,
            };
            println!("Rehearsal directory: {}", dir.display());
            let r = rehearse::run(&dir, &options, Box::new(std::io::stdout())).context("rehearsal failed")?;
            println!("Rehearsal complete on {}: root certificate {}", r.backend, r.root_cert);
            println!("Everything it made is in {} (rehearsal.json lists it)", dir.display());
        }
        Command::Ceremony(CeremonyCommand::Check { ceremony, input_dir }) => {
            let plan = Plan::load(&ceremony)?;
            let digest = match (&input_dir, plan.reads_input_dir()) {
                (None, true) => None,
                _ => Some(inputs::plan_digest(&plan, input_dir.as_deref())?),
            };
            println!("{}: {} ceremony {:?} is valid", ceremony.display(), plan.kind.name(), plan.id);
            for (k, v) in plan.summary() {
                println!("{k:<14} {v}");
            }
            println!("{:<14} {}", "Steps", plan.steps.len());
            match digest {
                Some(d) => {
                    println!("{:<14} {}", "Plan SHA-256", d.fingerprint().hex);
                    println!("{:<14} {}", "Plan read-back", d.fingerprint().read_back_grouped());
                    for input in d.inputs() {
                        print!("  {}", input.sha256sum_line());
                    }
                }
                None => println!(
                    "{:<14} covers {} from the input directory too: pass --input-dir DIR to show it",
                    "Plan SHA-256",
                    plan.input_dir_description()
                ),
            }
        }
        Command::Ceremony(CeremonyCommand::Print { ceremony, input_dir, format, output }) => {
            let plan = Plan::load(&ceremony)?;
            let digest = inputs::plan_digest(&plan, input_dir.as_deref())?;
            let format = match format {
                PrintFormat::Markdown => print::Format::Markdown,
                PrintFormat::Html => print::Format::Html,
            };
            let text = print::render(&plan, &digest, format);
            match output {
                Some(path) => files::write_new(&path, text.as_bytes(), Mode::Public)?,
                None => print!("{text}"),
            }
        }
        Command::Ceremony(CeremonyCommand::Run { ceremony, env, answers, allow_network, out }) => {
            // Everything is parsed and validated before a prompt is shown or a
            // token is touched.
            let plan = Plan::load(&ceremony)?;
            let mut env = Environment::load(&env)?;
            if let Some(out) = out {
                env.output_dir = out;
            }
            let mut operator: Box<dyn Operator> = match answers {
                Some(path) => {
                    let scripted = ScriptedOperator::new(Answers::load(&path)?, Box::new(std::io::stdout()));
                    Box::new(match &env.custodian_media {
                        Some(dir) => scripted.with_custodian_media(dir.clone()),
                        None => scripted,
                    })
                }
                None => {
                    if !std::io::stdin().is_terminal() {
                        bail!("no terminal to prompt on: run from a terminal, or pass --answers FILE for an unattended run");
                    }
                    Box::new(terminal::TerminalOperator::new())
                }
            };
            let done = engine::run(&plan, &env, operator.as_mut(), &RunOptions { allow_network })
                .with_context(|| format!("ceremony {:?} stopped", plan.id))?;
            println!("\nCeremony {:?} ({}) complete.", plan.id, plan.kind.name());
            if let Some(p) = &done.certificate_pem {
                println!("root certificate {}", p.display());
            }
            if let Some(p) = &done.backup_blob {
                println!("backup           {}", p.display());
            }
            for card in &done.share_cards {
                println!("share card       {}", card.display());
            }
            for card in &done.activation_cards {
                println!("activation card  {}", card.display());
            }
            if let Some(uri) = &done.key_uri {
                println!("key              {uri}");
            }
            println!("audit log        {}", done.audit_log.display());
        }
        Command::Audit(AuditCommand::Verify { log, pins, allow_open, require_real }) => {
            let report = audit::verify(&log, &pins.options(!allow_open)?)?;
            print_report(&log, &report);
            if report.rehearsal_grade.is_empty() {
                println!("grade        no rehearsal aids recorded");
            } else {
                println!("grade        REHEARSAL-GRADE: evidence of a rehearsal, not of a real ceremony, because:");
                for r in &report.rehearsal_grade {
                    let seqs = r.seqs.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
                    println!("  {}: {} (seq {seqs})", r.ceremony_id, r.reason);
                }
                if require_real {
                    eprintln!(
                        "keyrite: error: {}: the log is rehearsal-grade and --require-real was given",
                        log.display()
                    );
                    return Ok(ExitCode::FAILURE);
                }
            }
        }
        Command::Shares(SharesCommand::Verify { log, card, pins }) => {
            let options = pins.options(true)?;
            let words = match card {
                Some(path) => crate::shares::words_from_card(&crate::secret::Secret::new(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )),
                None => {
                    if !std::io::stdin().is_terminal() {
                        bail!("no terminal to type the share on: pass --card FILE");
                    }
                    terminal::TerminalOperator::new().take_card(
                        "shares-verify",
                        "the custodian",
                        1,
                        crate::ceremony::operator::CardKind::Backup,
                    )?
                }
            };
            let checked = crate::ceremony::custody::verify_share(&log, &words, &options)?;
            println!("{checked}");
        }
        Command::Intermediate(cmd) => run_intermediate(cmd)?,
        Command::Ca(CaCommand::Init { ca_dir, root }) => {
            let ca = crate::ceremony::ca::init_dir(&ca_dir, &root)?;
            println!("{}: CA directory created for root SHA-256 {}", ca.dir().display(), ca.state().root_sha256);
        }
        Command::AcmeServe(args) => acme::run_acme_serve(*args)?,
        Command::Acme(cmd) => return acme::run(cmd),
        Command::Ca(CaCommand::ExportIndex { ca_dir }) => print!("{}", crate::ca::export_index(&ca_dir)?),
        Command::Ca(CaCommand::Backup { ca_dir, out, identity }) => {
            let manifest = crate::ca::backup(&ca_dir, &out, &identity)?;
            println!("backup written to {} ({} files)", out.display(), manifest.files.len());
        }
        Command::Ca(CaCommand::Verify { ca_dir }) => {
            let r = crate::ca::CaDir::verify(&ca_dir)?;
            println!("{}: OK", ca_dir.display());
            println!("certificates     {} ({} revoked)", r.certificates, r.revoked);
            println!("reserved serials {}", r.reserved_serials);
            match r.last_crl_number {
                Some(n) => println!("last CRL number  {n}"),
                None => println!("last CRL number  none"),
            }
            println!("next CRL number  {}", r.next_crl_number);
            for note in &r.notes {
                println!("note: {note}");
            }
        }
        Command::Hsm(HsmCommand::List { module }) => {
            let module = crate::hsm::pkcs11::Module::load(&module)?;
            for (slot, info) in module.tokens()? {
                println!(
                    "slot {slot}: label {:?} serial {:?} model {:?} manufacturer {:?} initialised {}",
                    info.label().trim(),
                    info.serial_number().trim(),
                    info.model().trim(),
                    info.manufacturer_id().trim(),
                    info.token_initialized()
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What `keyrite audit verify` established, and what it could not.
fn print_report(log: &std::path::Path, report: &audit::VerifyReport) {
    let trust = &report.trust;
    println!("{}: OK", log.display());
    println!("entries      {} ({} after the last checkpoint)", report.entries, report.uncovered_entries);
    println!("checkpoints  {}", report.checkpoints);
    println!("ceremonies   {}", report.ceremonies.join(", "));
    println!("ending       {}", report.ending.describe());
    let trusted = |fp: &str| if trust.trusted_keys.iter().any(|k| k == fp) { "trusted" } else { "NOT trusted" };
    for key in &report.audit_keys {
        println!(
            "audit key    {} SHA-256 {} (announced at seq {}; {})",
            key.name,
            key.fingerprint.hex,
            key.seq,
            trusted(&key.fingerprint.hex)
        );
    }
    for q in &report.quorum_keys {
        let state = if trust.quorum_keys.contains(&q.public_key_sha256) { "trusted" } else { "NOT trusted" };
        println!("quorum key   SHA-256 {} (custodians of ceremony {}; {state})", q.public_key_sha256, q.ceremony_id);
    }
    for (seq, key) in &trust.successions {
        println!("succession   seq {seq}: the custodians' quorum key names audit key SHA-256 {key}");
    }
    if let Some(cp) = &report.last_checkpoint {
        println!(
            "last checkpoint: {} entries, root {}\n  note SHA-256 {}\n  words {}",
            cp.size, cp.root_hex, cp.fingerprint.hex, cp.fingerprint.words
        );
    }
    if trust.pinned {
        for size in &trust.paper_matched {
            println!("the paper checkpoint matches the log's checkpoint over {size} entries");
        }
        println!(
            "pinned       entries 0..{} are covered by checkpoints of trusted audit keys or by the paper",
            trust.trusted_size
        );
    } else {
        println!(
            "NOT PINNED   --unpinned: only the file's own consistency was checked. Nothing ties it to the paper record, so a log rewritten and re-signed under a fresh key would pass too; give --audit-key-sha256 and --checkpoint from the paper log"
        );
    }
}

/// `keyrite intermediate ...`: opens the key store the environment names
/// (prompting only when its PIN source is "prompt") and calls the library.
/// Asks for a PIN on the terminal, hidden; without a terminal, says which
/// unattended sources exist instead of hanging.
pub(super) fn terminal_pin_prompt(
    question: &str,
) -> Result<crate::secret::Secret, crate::intermediate::IntermediateError> {
    use crate::intermediate::IntermediateError;
    if !std::io::stdin().is_terminal() {
        return Err(IntermediateError::Secret {
            what: question.to_string(),
            detail: "no terminal to prompt on: use { env = \"VAR\" } or { file = \"/path\" } in the environment file"
                .into(),
        });
    }
    dialoguer::Password::new()
        .with_prompt(question)
        .interact()
        .map(crate::secret::Secret::from_string)
        .map_err(|e| IntermediateError::Secret { what: question.to_string(), detail: e.to_string() })
}

fn run_intermediate(cmd: IntermediateCommand) -> Result<()> {
    use crate::intermediate;
    let mut prompt = terminal_pin_prompt;
    match cmd {
        IntermediateCommand::Request {
            env,
            out,
            label,
            algorithm,
            issuer_dir,
            subject_cn,
            subject_o,
            subject_ou,
            subject_c,
            requester,
        } => {
            let env = Environment::load(&env)?;
            let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_string());
            let hostname = hostname.filter(|h| !h.is_empty());
            let requester = match requester.or_else(|| hostname.clone()) {
                Some(r) => r,
                None => bail!("cannot tell who asks: pass --requester NAME"),
            };
            let opts = intermediate::RequestOptions {
                label,
                algorithm: crate::hsm::KeyAlgorithm::from_name(&algorithm)?,
                subject: crate::profile::DistinguishedName {
                    common_name: Some(subject_cn),
                    organization: subject_o,
                    organizational_unit: subject_ou,
                    country: subject_c,
                    ..Default::default()
                },
                requester,
                hostname,
            };
            let issuer_dir = issuer_dir.unwrap_or_else(|| env.output_dir.clone());
            let store = intermediate::open_key_store(&env, &mut prompt)?;
            let done =
                intermediate::request(&store, &opts, &out, &issuer_dir).context("intermediate request failed")?;
            println!("request bundle   {}", done.bundle_dir.display());
            println!("request record   {}", done.record_path.display());
            println!("key              {}", done.key_uri);
            print!("\n{}", intermediate::requester_sheet(&opts, &done));
            // Not on the requester's sheet: the audit key stays with the host.
            println!("audit key        {}", done.audit_key_uri);
            println!("audit key SHA-256 {}", done.audit_spki_sha256.hex);
            println!("Keep the audit key's SHA-256 on the host's paper record: auditors pin it to check acme-serve's issuance log.");
        }
        IntermediateCommand::Install { response, env, root_sha256, out, key_label } => {
            let env = Environment::load(&env)?;
            let store = intermediate::open_key_store(&env, &mut prompt)?;
            let done = intermediate::install(&response, &store, &root_sha256, &out, key_label.as_deref())
                .context("intermediate install refused")?;
            let c = &done.checked;
            println!("issuer configuration {}", done.issuer_toml.display());
            println!("intermediate     {}", c.intermediate.subject);
            println!("  valid          {} to {}", c.intermediate.not_before, c.intermediate.not_after);
            println!("  SHA-256        {}", c.intermediate.fingerprint.hex);
            println!("root             {}", c.root.subject);
            println!("  SHA-256        {}", c.root.fingerprint.hex);
            println!("  words          {}", c.root.fingerprint.words);
            println!("key              {}", c.key_uri);
        }
        IntermediateCommand::Check { issuer, env, at } => {
            let now = match at {
                Some(t) => time::OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339)
                    .with_context(|| format!("--at {t:?}: not an RFC 3339 time such as 2030-01-01T00:00:00Z"))?,
                None => time::OffsetDateTime::now_utc(),
            };
            let config = intermediate::IssuerConfig::load(&issuer)?;
            let env = Environment::load(&env)?;
            let store = intermediate::open_key_store(&env, &mut prompt)?;
            let c = intermediate::check_issuer(&config, &store, now)
                .with_context(|| format!("{}: issuer refused", issuer.display()))?;
            println!("{}: OK at {now}", issuer.display());
            println!("intermediate     {} (valid to {})", c.intermediate.subject, c.intermediate.not_after);
            println!("root             {} SHA-256 {}", c.root.subject, c.root.fingerprint.hex);
            println!("key              {}", c.key_uri);
        }
    }
    Ok(())
}
