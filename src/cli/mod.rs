//! The `cli` room: parse arguments, pick an operator (terminal or answers
//! file), call into the library, print, and turn errors into exit codes.
//! `anyhow` lives here and nowhere else.

mod terminal;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};

use crate::audit::{self, VerifyOptions};
use crate::ceremony::{engine, print, rehearse, Operator, RunOptions, ScriptedOperator};
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
        /// Directory for the rehearsal (must be new or empty)
        #[arg(long)]
        dir: PathBuf,
        /// Which key store to rehearse on
        #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
        backend: BackendArg,
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
    },
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
    Check { ceremony: PathBuf },
    /// Render the script as a printable document with initials boxes and signature lines
    Print {
        ceremony: PathBuf,
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
    /// Verify a log offline: hash chain, Merkle tree, checkpoint signatures
    Verify {
        log: PathBuf,
        /// SHA-256 (hex) of an audit public key from the paper log; repeat for several
        #[arg(long = "audit-key-sha256")]
        audit_keys: Vec<String>,
        /// A file holding the final checkpoint (note text) or its tree root (hex) as copied on paper
        #[arg(long)]
        checkpoint: Option<PathBuf>,
        /// Accept a log whose ceremony is still open (no closing checkpoint)
        #[arg(long)]
        allow_open: bool,
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
        Command::Rehearse { dir, backend } => {
            let choice = match backend {
                BackendArg::Auto => rehearse::BackendChoice::Auto,
                BackendArg::Softhsm => rehearse::BackendChoice::SoftHsm,
                BackendArg::Soft => rehearse::BackendChoice::Soft,
            };
            let r = rehearse::run(&dir, choice, Box::new(std::io::stdout())).context("rehearsal failed")?;
            println!("Rehearsal complete on {}: root certificate {}", r.backend, r.root_cert);
        }
        Command::Ceremony(CeremonyCommand::Check { ceremony }) => {
            let plan = Plan::load(&ceremony)?;
            println!("{}: {} ceremony {:?} is valid", ceremony.display(), plan.kind.name(), plan.id);
            for (k, v) in plan.summary() {
                println!("{k:<13} {v}");
            }
            println!("{:<13} {}", "Steps", plan.steps.len());
        }
        Command::Ceremony(CeremonyCommand::Print { ceremony, format, output }) => {
            let plan = Plan::load(&ceremony)?;
            let format = match format {
                PrintFormat::Markdown => print::Format::Markdown,
                PrintFormat::Html => print::Format::Html,
            };
            let text = print::render(&plan, format);
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
            if let Some(uri) = &done.key_uri {
                println!("key              {uri}");
            }
            println!("audit log        {}", done.audit_log.display());
        }
        Command::Audit(AuditCommand::Verify { log, audit_keys, checkpoint, allow_open }) => {
            let expected_checkpoint = match checkpoint {
                Some(path) => {
                    Some(std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?)
                }
                None => None,
            };
            let report = audit::verify(
                &log,
                &VerifyOptions { pinned_audit_keys: audit_keys, expect_closed: !allow_open, expected_checkpoint },
            )?;
            println!("{}: OK", log.display());
            println!("entries      {} ({} after the last checkpoint)", report.entries, report.uncovered_entries);
            println!("checkpoints  {}", report.checkpoints);
            println!("ceremonies   {}", report.ceremonies.join(", "));
            println!("closed       {}", if report.closed { "yes" } else { "no (still open)" });
            for key in &report.audit_keys {
                println!("audit key    {} SHA-256 {}", key.name, key.fingerprint.hex);
            }
            if let Some(cp) = &report.last_checkpoint {
                println!(
                    "last checkpoint: {} entries, root {}\n  note SHA-256 {}\n  words {}",
                    cp.size, cp.root_hex, cp.fingerprint.hex, cp.fingerprint.words
                );
            }
            if let Some(size) = report.matched_expected_checkpoint {
                println!("the paper checkpoint matches the log's checkpoint over {size} entries");
            }
        }
        Command::Shares(SharesCommand::Verify { log, card }) => {
            let words = match card {
                Some(path) => crate::shares::words_from_card(&crate::secret::Secret::new(
                    std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                )),
                None => {
                    if !std::io::stdin().is_terminal() {
                        bail!("no terminal to type the share on: pass --card FILE");
                    }
                    terminal::TerminalOperator::new().take_share("shares-verify", "the custodian", 1)?
                }
            };
            let checked = crate::ceremony::custody::verify_share(&log, &words)?;
            println!("{checked}");
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
