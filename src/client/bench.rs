//! The load generator (`keyrite acme bench`): C concurrent clients, each
//! running complete flows (account, order for a fresh name, http-01,
//! finalize, download) through [`super::issue_one`] against any RFC 8555
//! directory, until N flows have been started or T seconds have passed.
//!
//! One shared http-01 responder serves every client's tokens: the server
//! under test is pointed at a single port (Pebble's `-httpPort`, our
//! `--http01-port`), and tokens are unique, so one map is enough.
//!
//! Flows run as tokio tasks gated by a semaphore of C permits; the driving
//! loop records each outcome itself, so no lock sits on the hot path and
//! the progress callback runs on the caller's task (it may print freely).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{ClientError, Http01Responder, Timings};

/// When to stop starting new flows.
#[derive(Debug, Clone, Copy)]
pub enum StopAfter {
    /// After this many flows have been started (each ends issued or failed).
    Orders(u64),
    /// After this long; flows in flight then still finish and count.
    Duration(Duration),
}

/// What `keyrite acme bench` was asked to do.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub directory: String,
    /// PEM trust anchors for the server's HTTPS.
    pub ca_bundle: PathBuf,
    pub concurrency: usize,
    pub stop: StopAfter,
    /// Each flow orders `<random>.<domain_suffix>`.
    pub domain_suffix: String,
    /// Where the shared http-01 responder listens (127.0.0.1:PORT).
    pub http01_bind: SocketAddr,
    /// How often the progress callback is called.
    pub progress_every: Duration,
}

/// A snapshot for the progress display.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub started: u64,
    pub issued: u64,
    pub failed: u64,
    pub in_flight: u64,
    pub elapsed: Duration,
    /// `Some(n)` in `--orders` mode, for a bar with an end.
    pub target_orders: Option<u64>,
    /// `Some(t)` in `--seconds` mode.
    pub target_duration: Option<Duration>,
}

/// Nearest-rank percentiles of one step (or of whole flows), milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Per-step percentiles, over successful flows only (a failed flow has no
/// complete set of steps to compare).
#[derive(Debug, Clone, Serialize)]
pub struct StepPercentiles {
    pub account: Option<Percentiles>,
    pub order: Option<Percentiles>,
    pub challenges: Option<Percentiles>,
    pub finalize: Option<Percentiles>,
    pub download: Option<Percentiles>,
}

/// The result; its `Serialize` form is the `--json` object.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub issued: u64,
    /// Failed flows, all kinds together.
    pub errors: u64,
    /// Failed flows by ACME problem type (`badNonce`, `rateLimited`, …),
    /// or `connection`, `timeout`, `other`.
    pub errors_by_type: BTreeMap<String, u64>,
    /// One message per error type, the first seen, so an operator has
    /// something to go on without a log.
    pub error_examples: BTreeMap<String, String>,
    pub concurrency: usize,
    pub elapsed_s: f64,
    /// Issued certificates per wall-clock second (failures excluded).
    pub per_second: f64,
    /// Whole-flow latency of successful flows; `null` when none succeeded.
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub steps: StepPercentiles,
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An argument cannot work (no concurrency, an unreadable trust bundle).
    #[error("bench: {0}")]
    Config(String),
    /// The client could not be set up (its message is this error's).
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Runs the benchmark; `on_progress` is called every
/// [`BenchConfig::progress_every`] and once at the end.
pub async fn run(config: &BenchConfig, mut on_progress: impl FnMut(&Progress)) -> Result<BenchReport, BenchError> {
    check(config)?;
    let responder = Arc::new(Http01Responder::start(config.http01_bind).await?);
    let semaphore = Arc::new(Semaphore::new(config.concurrency));
    let directory: Arc<str> = Arc::from(config.directory.as_str());
    // One pool of kept-alive connections for all flows: a bench of many
    // short flows would otherwise measure TLS handshakes on both sides.
    let http = super::HttpsPool::new(&config.ca_bundle)?;
    let suffix: Arc<str> = Arc::from(config.domain_suffix.trim_matches('.'));

    let mut rec = Recorder::default();
    let mut tasks: JoinSet<Result<Timings, ClientError>> = JoinSet::new();
    let mut tick = tokio::time::interval(config.progress_every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let started = Instant::now();
    // In --orders mode the deadline never fires; a far-off instant keeps
    // one select! shape for both modes.
    let deadline = match config.stop {
        StopAfter::Duration(d) => tokio::time::Instant::now() + d,
        StopAfter::Orders(_) => tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600),
    };
    let deadline = tokio::time::sleep_until(deadline);
    tokio::pin!(deadline);
    let progress = |rec: &Recorder, in_flight: usize| Progress {
        started: rec.started,
        issued: rec.issued(),
        failed: rec.failed(),
        in_flight: in_flight as u64,
        elapsed: started.elapsed(),
        target_orders: match config.stop {
            StopAfter::Orders(n) => Some(n),
            StopAfter::Duration(_) => None,
        },
        target_duration: match config.stop {
            StopAfter::Duration(d) => Some(d),
            StopAfter::Orders(_) => None,
        },
    };

    // Start flows while the stop condition allows, recording outcomes as
    // they arrive so the progress line is live.
    loop {
        if let StopAfter::Orders(n) = config.stop {
            if rec.started >= n {
                break;
            }
        }
        tokio::select! {
            // Biased: record finished flows first, then honour the deadline,
            // and only then start another flow, so none starts late.
            biased;
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => rec.record(joined),
            () = &mut deadline => break,
            permit = semaphore.clone().acquire_owned() => {
                // The semaphore is never closed, so this only fails if it
                // were; stop starting rather than panic.
                let Ok(permit) = permit else { break };
                rec.started += 1;
                let (d, h, s, r) = (directory.clone(), http.clone(), suffix.clone(), responder.clone());
                tasks.spawn(async move {
                    let _permit = permit;
                    let name = format!("{}.{s}", random_label()?);
                    match tokio::time::timeout(FLOW_TIMEOUT, super::issue_with(&h, &d, &[name], &r)).await {
                        Ok(flow) => flow.map(|issued| issued.timings),
                        Err(_) => Err(ClientError::Protocol(format!(
                            "the flow timed out after {} s (is the server stuck?)",
                            FLOW_TIMEOUT.as_secs()
                        ))),
                    }
                });
            }
            _ = tick.tick() => on_progress(&progress(&rec, tasks.len())),
        }
    }
    // Let the flows in flight finish: they were started inside the window,
    // and cutting them off would bias the latencies toward fast flows.
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(joined) => rec.record(joined),
                None => break,
            },
            _ = tick.tick() => on_progress(&progress(&rec, tasks.len())),
        }
    }
    let elapsed = started.elapsed();
    on_progress(&progress(&rec, 0));
    // Every task holding a clone has been joined, so this is the last one.
    if let Ok(responder) = Arc::try_unwrap(responder) {
        responder.stop();
    }
    Ok(rec.report(config.concurrency, elapsed))
}

/// A flow still unfinished after this counts as a `timeout` error, so a
/// server that stops answering (Pebble 2.4 can deadlock under load) ends
/// the run instead of hanging it.
const FLOW_TIMEOUT: Duration = Duration::from_secs(120);

fn check(config: &BenchConfig) -> Result<(), BenchError> {
    if config.concurrency == 0 {
        return Err(BenchError::Config("--concurrency must be at least 1".into()));
    }
    match config.stop {
        StopAfter::Orders(0) => return Err(BenchError::Config("--orders must be at least 1".into())),
        StopAfter::Duration(d) if d.is_zero() => {
            return Err(BenchError::Config("--seconds must be more than 0".into()))
        }
        _ => {}
    }
    let suffix = config.domain_suffix.trim_matches('.');
    if suffix.is_empty() || suffix.contains(['/', ':', ' ', '*']) {
        return Err(BenchError::Config(format!("--domain-suffix {:?} is not a DNS zone", config.domain_suffix)));
    }
    Ok(())
}

/// 64 random bits as 16 hex digits: a name no earlier run (or other client)
/// has ordered, so every flow really validates instead of reusing an
/// authorization.
fn random_label() -> Result<String, ClientError> {
    use aws_lc_rs::rand::{SecureRandom, SystemRandom};
    let mut bytes = [0u8; 8];
    SystemRandom::new().fill(&mut bytes).map_err(|_| ClientError::Protocol("no randomness for a name".into()))?;
    Ok(hex::encode(bytes))
}

const PROBLEM_PREFIX: &str = "urn:ietf:params:acme:error:";

/// Groups a failure: the ACME problem type if the server sent one (the
/// client's message carries it as `(urn:ietf:params:acme:error:TYPE)`),
/// else whether the transport failed, else "other".
pub fn classify(message: &str) -> String {
    if let Some(at) = message.find(PROBLEM_PREFIX) {
        let rest = &message[at + PROBLEM_PREFIX.len()..];
        let kind: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
        if !kind.is_empty() {
            return kind;
        }
    }
    let lower = message.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") {
        return "timeout".into();
    }
    const TRANSPORT: [&str; 7] =
        ["http request failure", "connection", "connect", "hyper", "tls", "certificate verify", "broken pipe"];
    if TRANSPORT.iter().any(|t| lower.contains(t)) {
        return "connection".into();
    }
    "other".into()
}

/// Nearest-rank percentile (the smallest value with at least p% of the
/// values at or below it) of an ascending slice; `None` when empty.
pub fn nearest_rank(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    // ceil(p/100 · n) in integers, clamped to 1..=n.
    let rank = (usize::try_from(p).unwrap_or(100).saturating_mul(n)).div_ceil(100).clamp(1, n);
    sorted.get(rank - 1).copied()
}

fn ms(d: Duration) -> f64 {
    // Microsecond resolution is plenty and keeps the JSON short.
    d.as_micros() as f64 / 1000.0
}

fn percentiles(mut values: Vec<Duration>) -> Option<Percentiles> {
    values.sort_unstable();
    Some(Percentiles {
        p50_ms: ms(nearest_rank(&values, 50)?),
        p90_ms: ms(nearest_rank(&values, 90)?),
        p99_ms: ms(nearest_rank(&values, 99)?),
        max_ms: ms(*values.last()?),
    })
}

#[derive(Default)]
struct Recorder {
    started: u64,
    ok: Vec<Timings>,
    errors: BTreeMap<String, u64>,
    examples: BTreeMap<String, String>,
}

impl Recorder {
    fn issued(&self) -> u64 {
        self.ok.len() as u64
    }

    fn failed(&self) -> u64 {
        self.errors.values().sum()
    }

    fn record(&mut self, joined: Result<Result<Timings, ClientError>, tokio::task::JoinError>) {
        let message = match joined {
            Ok(Ok(t)) => {
                self.ok.push(t);
                return;
            }
            Ok(Err(e)) => e.to_string(),
            // A panicking flow is a bug in the client, not the server's
            // fault; count it so the totals still add up.
            Err(e) => format!("flow task failed: {e}"),
        };
        let kind = classify(&message);
        *self.errors.entry(kind.clone()).or_default() += 1;
        self.examples.entry(kind).or_insert(message);
    }

    fn report(self, concurrency: usize, elapsed: Duration) -> BenchReport {
        let step = |f: fn(&Timings) -> Duration| percentiles(self.ok.iter().map(f).collect());
        let total = step(|t| t.total);
        let secs = elapsed.as_secs_f64();
        BenchReport {
            issued: self.issued(),
            errors: self.failed(),
            concurrency,
            elapsed_s: (secs * 1000.0).round() / 1000.0,
            per_second: if secs > 0.0 { (self.issued() as f64 / secs * 1000.0).round() / 1000.0 } else { 0.0 },
            p50_ms: total.map(|p| p.p50_ms),
            p90_ms: total.map(|p| p.p90_ms),
            p99_ms: total.map(|p| p.p99_ms),
            max_ms: total.map(|p| p.max_ms),
            steps: StepPercentiles {
                account: step(|t| t.account),
                order: step(|t| t.order),
                challenges: step(|t| t.challenges),
                finalize: step(|t| t.finalize),
                download: step(|t| t.download),
            },
            errors_by_type: self.errors,
            error_examples: self.examples,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn nearest_rank_matches_the_textbook() {
        // The classic example: 15, 20, 35, 40, 50.
        let v = [d(15), d(20), d(35), d(40), d(50)];
        assert_eq!(nearest_rank(&v, 5), Some(d(15)));
        assert_eq!(nearest_rank(&v, 30), Some(d(20)));
        assert_eq!(nearest_rank(&v, 40), Some(d(20)));
        assert_eq!(nearest_rank(&v, 50), Some(d(35)));
        assert_eq!(nearest_rank(&v, 100), Some(d(50)));
        assert_eq!(nearest_rank(&v, 0), Some(d(15)));
        assert_eq!(nearest_rank(&[], 50), None);
        let hundred: Vec<Duration> = (1..=100).map(d).collect();
        assert_eq!(nearest_rank(&hundred, 99), Some(d(99)));
        assert_eq!(nearest_rank(&hundred, 90), Some(d(90)));
    }

    #[test]
    fn errors_group_by_problem_type() {
        let api = "ACME client: newOrder: API error: name not allowed (urn:ietf:params:acme:error:rejectedIdentifier)";
        assert_eq!(classify(api), "rejectedIdentifier");
        assert_eq!(classify("ACME client: newAccount: HTTP request failure: client error (Connect)"), "connection");
        assert_eq!(classify("ACME client: order: timed out waiting for an order update"), "timeout");
        assert_eq!(classify("ACME client: the order ended Invalid, not ready"), "other");
    }

    #[test]
    fn labels_are_fresh_dns_labels() {
        let (a, b) = (random_label().ok(), random_label().ok());
        assert_ne!(a, b);
        let a = a.unwrap_or_default();
        assert_eq!(a.len(), 16);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
