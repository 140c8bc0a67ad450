//! The load generator against a real acme-serve in this process: the
//! library driver at concurrency 4 for 12 orders, then the CLI
//! (`keyrite acme bench --json`) as a child against the same server. Fresh
//! random names under `bench.acme.test` resolve through a loopback DNS
//! server (the static host map matches whole names only); everything stays
//! on 127.0.0.1.

mod acme_support;

use std::net::SocketAddr;
use std::time::Duration;

use acme_support::*;
use keyrite::client::bench::{self, BenchConfig, Percentiles, StopAfter};

const ZONE: &str = "bench.acme.test";

fn sane(p: Option<Percentiles>, what: &str) -> Percentiles {
    let p = p.unwrap_or_else(|| panic!("{what}: percentiles present"));
    assert!(p.p50_ms > 0.0, "{what}: {p:?}");
    assert!(p.p50_ms <= p.p90_ms && p.p90_ms <= p.p99_ms && p.p99_ms <= p.max_ms, "{what}: {p:?}");
    p
}

/// Waits until nothing listens on `port` any more (the library run's
/// responder is aborted, and the socket closes a moment later).
async fn wait_port_free(port: u16) {
    for _ in 0..50 {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("port {port} stayed busy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_library_and_cli_issue_everything() {
    let dns = LoopbackDns::start(ZONE);
    let http01_port = free_port();
    let mut pki = Pki::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let server = start_configured(&mut pki, dir.path(), http01_port, 1, |c| {
        c.validation.resolver = Some(dns.addr);
    })
    .await
    .expect("server starts");
    let ca_bundle = dir.path().join("root.pem");
    std::fs::write(&ca_bundle, &pki.root.pem).expect("write root");

    // The library.
    let config = BenchConfig {
        directory: server.directory_url(),
        ca_bundle: ca_bundle.clone(),
        concurrency: 4,
        stop: StopAfter::Orders(12),
        domain_suffix: ZONE.into(),
        http01_bind: SocketAddr::from(([127, 0, 0, 1], http01_port)),
        progress_every: Duration::from_millis(50),
    };
    let mut max_in_flight = 0;
    let mut last = None;
    let report = bench::run(&config, |p| {
        max_in_flight = max_in_flight.max(p.in_flight);
        last = Some(*p);
    })
    .await
    .expect("bench runs");
    assert_eq!((report.issued, report.errors), (12, 0), "{report:#?}");
    assert!(report.errors_by_type.is_empty(), "{report:#?}");
    assert!(max_in_flight <= 4, "the semaphore bounds concurrency: {max_in_flight}");
    let last = last.expect("progress reported");
    assert_eq!((last.started, last.issued, last.in_flight), (12, 12, 0));
    assert!(report.per_second > 0.0, "{report:#?}");
    let total = Percentiles {
        p50_ms: report.p50_ms.expect("p50"),
        p90_ms: report.p90_ms.expect("p90"),
        p99_ms: report.p99_ms.expect("p99"),
        max_ms: report.max_ms.expect("max"),
    };
    let total = sane(Some(total), "flow");
    let steps = [
        sane(report.steps.account, "account"),
        sane(report.steps.order, "order"),
        sane(report.steps.challenges, "challenges"),
        sane(report.steps.finalize, "finalize"),
        sane(report.steps.download, "download"),
    ];
    // A step of a flow never takes longer than the slowest whole flow.
    for s in steps {
        assert!(s.max_ms <= total.max_ms + 0.001, "{s:?} vs {total:?}");
    }
    // No flow outlasts the run that contains it.
    assert!(total.max_ms <= report.elapsed_s * 1000.0 + 1.0, "{report:#?}");
    eprintln!(
        "library bench (debug build): {} issued in {:.2} s = {:.2}/s, p50 {:.1} ms p90 {:.1} ms p99 {:.1} ms",
        report.issued, report.elapsed_s, report.per_second, total.p50_ms, total.p90_ms, total.p99_ms
    );

    // The CLI, as a child, on the same port once the first responder is gone.
    wait_port_free(http01_port).await;
    let args: Vec<String> = vec![
        "acme".into(),
        "bench".into(),
        "--directory".into(),
        server.directory_url(),
        "--ca-bundle".into(),
        ca_bundle.to_str().expect("utf-8").into(),
        "--concurrency".into(),
        "4".into(),
        "--orders".into(),
        "8".into(),
        "--domain-suffix".into(),
        ZONE.into(),
        "--http01-port".into(),
        http01_port.to_string(),
        "--json".into(),
    ];
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyrite")).args(&args).output().expect("keyrite runs")
    })
    .await
    .expect("joined");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    // Exactly one JSON object, nothing else, on stdout.
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).expect("one JSON object");
    assert_eq!(v["issued"], 8, "{v}");
    assert_eq!(v["errors"], 0, "{v}");
    for k in ["per_second", "p50_ms", "p90_ms", "p99_ms"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {v}");
    }
    assert!(v["p50_ms"].as_f64() <= v["p90_ms"].as_f64() && v["p90_ms"].as_f64() <= v["p99_ms"].as_f64(), "{v}");
    for step in ["account", "order", "challenges", "finalize", "download"] {
        assert!(v["steps"][step]["p99_ms"].as_f64().is_some_and(|x| x > 0.0), "{step}: {v}");
    }
    eprintln!("CLI bench --json (debug build): {stdout}");

    // --seconds and the human table.
    wait_port_free(http01_port).await;
    let args: Vec<String> = [
        "acme",
        "bench",
        "--directory",
        &server.directory_url(),
        "--ca-bundle",
        ca_bundle.to_str().expect("utf-8"),
        "--concurrency",
        "2",
        "--seconds",
        "0.5",
        "--domain-suffix",
        ZONE,
        "--http01-port",
        &http01_port.to_string(),
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_keyrite")).args(&args).output().expect("keyrite runs")
    })
    .await
    .expect("joined");
    let table = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{table}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("issuances/s") && table.contains("challenges"), "{table}");
    assert!(table.lines().any(|l| l.split_whitespace().eq(["errors", "0"])), "{table}");
    eprintln!("CLI bench table (debug build):\n{table}");

    // Failures are counted and grouped by the server's problem type: the
    // policy allows acme.test only.
    wait_port_free(http01_port).await;
    let refused = BenchConfig { domain_suffix: "bench.example.org".into(), stop: StopAfter::Orders(3), ..config };
    let report = bench::run(&refused, |_| {}).await.expect("bench runs");
    assert_eq!((report.issued, report.errors), (0, 3), "{report:#?}");
    assert_eq!(report.errors_by_type.get("rejectedIdentifier"), Some(&3), "{report:#?}");
    assert!(report.p50_ms.is_none() && report.per_second == 0.0, "{report:#?}");

    server.shutdown().await;
    drop(dns);
}
