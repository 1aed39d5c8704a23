//! `patchops run --metrics-listen` exports the per-deployment and site gauges the
//! controller exports, so the dashboard and alerts work outside Kubernetes. Read from
//! the live endpoint with a Prometheus text-format parser. (The controller's endpoint is
//! checked the same way in src/kubernetes/test.rs.)

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use prometheus_parse::{Sample, Scrape, Value};

const FLEET: &str = r#"
seed: 7
agentVersion: "2.1.0"
groups:
  - count: 12
    namePrefix: ber-ws
    facts: {role: "workstation", site: "BER", ring: "pilot", office: "LTSC 2021"}
    os: {"Windows 11 24H2": 100}
    patchedThrough: {"2026-10-31": 100}
    neverScannedRate: 0.0
    scanFailureRate: 0.0
    oldAgentRate: 0.0
    pendingRebootRate: 0.0
    installFailureRate: 0.0
"#;

fn gauge(s: &Sample) -> f64 {
    match s.value {
        Value::Gauge(v) | Value::Untyped(v) => v,
        _ => panic!("{} is not a gauge: {:?}", s.metric, s.value),
    }
}

fn scrape(port: u16) -> Option<String> {
    let mut response = ureq::get(format!("http://127.0.0.1:{port}/metrics")).call().ok()?;
    response.body_mut().read_to_string().ok()
}

#[test]
fn run_serves_the_per_deployment_and_site_gauges_of_the_controller_on_metrics_listen() {
    let dir = tempfile::tempdir().unwrap();
    let fleet = dir.path().join("fleet.yaml");
    std::fs::write(&fleet, FLEET).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATCHOPS_STATE_DIR", dir.path().join("state"))
        .env("PATCHOPS_LOG", "warn")
        .args(["run", "--path", "examples/repo", "--no-serve", "--interval", "1h", "--output", "json"])
        .arg("--simulate-fleet")
        .arg(&fleet)
        .arg("--store")
        .arg(dir.path().join("run.db"))
        .args(["--metrics-listen", &format!("127.0.0.1:{port}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();

    // The gauges appear once the first reconcile finished.
    let started = Instant::now();
    let text = loop {
        if let Some(text) = scrape(port).filter(|t| t.contains("patchops_deployment_compliance_ratio{")) {
            break text;
        }
        if started.elapsed() > Duration::from_secs(120) || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            let out = run.wait_with_output().unwrap();
            panic!("no deployment gauges on /metrics: {}", String::from_utf8_lossy(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    std::process::Command::new("kill").arg("-TERM").arg(run.id().to_string()).status().unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    fn samples<'a>(scrape: &'a Scrape, metric: &'a str) -> impl Iterator<Item = &'a Sample> {
        scrape.samples.iter().filter(move |s| s.metric == metric)
    }
    let of = |metric: &'static str| samples(&scrape, metric);
    // One ratio series per UpdateDeployment of the examples (one file each).
    let expected: BTreeSet<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/repo/deployments"))
            .unwrap()
            .map(|e| e.unwrap().path().file_stem().unwrap().to_string_lossy().into_owned())
            .collect();
    let ratios: BTreeSet<String> =
        of("patchops_deployment_compliance_ratio").map(|s| s.labels.get("deployment").unwrap().to_string()).collect();
    assert_eq!(ratios, expected, "{text}");
    for s in of("patchops_deployment_compliance_ratio") {
        assert!((0.0..=1.0).contains(&gauge(s)), "a ratio, not a percentage: {s:?}");
    }
    for d in &expected {
        let phases: Vec<f64> =
            of("patchops_deployment_phase").filter(|s| s.labels.get("deployment") == Some(d)).map(gauge).collect();
        assert_eq!((phases.len(), phases.iter().sum::<f64>()), (5, 1.0), "one current phase of five for {d}");
        let targeted = of("patchops_deployment_machines_targeted").find(|s| s.labels.get("deployment") == Some(d));
        assert!(gauge(targeted.expect("targeted")) <= 12.0);
    }
    let site = |metric: &'static str| gauge(of(metric).find(|s| s.labels.get("namespace") == Some("default")).unwrap());
    assert_eq!(site("patchops_clients"), 12.0);
    assert_eq!(site("patchops_clients_stale"), 0.0, "every simulated client scanned just now");
    assert!(site("patchops_catalog_age_seconds") >= 0.0);
    assert!(site("patchops_client_last_scan_age_seconds") >= 0.0);
    assert!(of("patchops_catalog_ready").count() > 0, "{text}");
    assert_eq!(of("patchops_build_info").map(gauge).collect::<Vec<_>>(), [1.0]);
}
