//! `keyrite acme bench`: arguments, the progress bar and the printed
//! report; the driver itself is `client::bench`.

use std::io::IsTerminal;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::client::bench::{self, BenchConfig, BenchReport, Percentiles, Progress, StopAfter};

#[derive(clap::Args)]
#[command(group = clap::ArgGroup::new("stop").required(true).args(["orders", "seconds"]))]
pub(super) struct AcmeBenchArgs {
    /// The ACME directory URL (keyrite acme-serve, Pebble, any RFC 8555 server)
    #[arg(long)]
    directory: String,
    /// PEM trust anchors for the server's HTTPS (Pebble: its minica root)
    #[arg(long)]
    ca_bundle: PathBuf,
    /// Flows in flight at once
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Stop after starting this many flows
    #[arg(long)]
    orders: Option<u64>,
    /// Stop starting flows after this many seconds (flows in flight finish)
    #[arg(long)]
    seconds: Option<f64>,
    /// Each flow orders a fresh `<random>.<ZONE>`; the server must resolve
    /// every name under it to this host
    #[arg(long, value_name = "ZONE")]
    domain_suffix: String,
    /// The port the server validates http-01 on; the bench answers on 127.0.0.1:PORT
    #[arg(long, value_name = "PORT")]
    http01_port: u16,
    /// Print one JSON object on stdout instead of the table (no progress bar)
    #[arg(long)]
    json: bool,
}

/// Runs the bench; exit status 1 when not a single certificate was issued,
/// so a script notices a broken set-up without parsing anything.
pub(super) fn run_bench(args: AcmeBenchArgs) -> Result<ExitCode> {
    let stop = match (args.orders, args.seconds) {
        (Some(n), _) => StopAfter::Orders(n),
        (None, Some(s)) => StopAfter::Duration(
            Duration::try_from_secs_f64(s).map_err(|_| anyhow::anyhow!("--seconds {s} is not a duration"))?,
        ),
        // clap's group makes one of them required.
        (None, None) => anyhow::bail!("give --orders N or --seconds T"),
    };
    let config = BenchConfig {
        directory: args.directory,
        ca_bundle: args.ca_bundle,
        concurrency: args.concurrency,
        stop,
        domain_suffix: args.domain_suffix,
        http01_bind: SocketAddr::from((Ipv4Addr::LOCALHOST, args.http01_port)),
        progress_every: Duration::from_millis(200),
    };
    // The bar goes to stderr, and only to a terminal, so `--json` output and
    // redirected logs stay clean.
    let bar = (!args.json && std::io::stderr().is_terminal()).then(|| new_bar(&config.stop));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("tokio runtime")?;
    let report = runtime.block_on(bench::run(&config, |p| {
        if let Some(bar) = &bar {
            update_bar(bar, p);
        }
    }))?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    Ok(if report.issued == 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

fn new_bar(stop: &StopAfter) -> indicatif::ProgressBar {
    let (len, template) = match stop {
        StopAfter::Orders(n) => (*n, "{elapsed_precise} [{bar:40}] {pos}/{len} {msg}"),
        // In --seconds mode the bar measures time, in tenths of a second.
        StopAfter::Duration(d) => {
            (u64::try_from(d.as_millis() / 100).unwrap_or(u64::MAX), "{elapsed_precise} [{bar:40}] {msg}")
        }
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(len), indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn update_bar(bar: &indicatif::ProgressBar, p: &Progress) {
    let done = p.issued + p.failed;
    match p.target_duration {
        Some(d) => bar.set_position(u64::try_from(p.elapsed.min(d).as_millis() / 100).unwrap_or(u64::MAX)),
        None => bar.set_position(done),
    }
    let rate = if p.elapsed.as_secs_f64() > 0.0 { p.issued as f64 / p.elapsed.as_secs_f64() } else { 0.0 };
    bar.set_message(format!("issued {}  failed {}  in flight {}  {rate:.1}/s", p.issued, p.failed, p.in_flight));
}

fn print_table(r: &BenchReport) {
    println!("issued       {}", r.issued);
    println!("errors       {}", r.errors);
    println!("elapsed      {:.2} s at concurrency {}", r.elapsed_s, r.concurrency);
    println!("issuances/s  {:.2}", r.per_second);
    println!();
    println!("{:<12} {:>10} {:>10} {:>10} {:>10}", "latency ms", "p50", "p90", "p99", "max");
    let row = |name: &str, p: Option<Percentiles>| match p {
        Some(p) => println!("{name:<12} {:>10.1} {:>10.1} {:>10.1} {:>10.1}", p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms),
        None => println!("{name:<12} {:>10} {:>10} {:>10} {:>10}", "-", "-", "-", "-"),
    };
    let total = match (r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms) {
        (Some(p50_ms), Some(p90_ms), Some(p99_ms), Some(max_ms)) => {
            Some(Percentiles { p50_ms, p90_ms, p99_ms, max_ms })
        }
        _ => None,
    };
    row("flow", total);
    row("  account", r.steps.account);
    row("  order", r.steps.order);
    row("  challenges", r.steps.challenges);
    row("  finalize", r.steps.finalize);
    row("  download", r.steps.download);
    if !r.errors_by_type.is_empty() {
        println!();
        println!("errors by type");
        for (kind, n) in &r.errors_by_type {
            let example = r.error_examples.get(kind).map(String::as_str).unwrap_or("");
            println!("  {kind:<22} {n:>6}  e.g. {example}");
        }
    }
}
