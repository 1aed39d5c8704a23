//! `patchops bench console`: what the management point spends answering the console's
//! deployment page for a deployment of 10,000 machines — the page itself (`/ui/`), the
//! deployment's status, the first page of its Required machines and a 1,000-row export
//! chunk — over loopback HTTP, next to a bare handler (`/healthz`) timed in the same run.
//! The console renders in the browser, so these answers are the whole server-side cost.

use std::process::ExitCode;
use std::time::Instant;

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{BenchArgs, synthetic};
use crate::resources::{Collection, CollectionSpec, FactSelector};
use crate::server::{BackgroundServer, ServerConfig};
use crate::site::{SiteHandle, SiteState};
use crate::{Error, Result};

const MACHINES: usize = 10_000;
const TOKEN: &str = "bench-console-read-token";
const ROUNDS: usize = 200;
/// A slow answer is timed fewer times: at least `MIN_ROUNDS`, then until this much time went.
const BUDGET: std::time::Duration = std::time::Duration::from_secs(5);
const MIN_ROUNDS: usize = 5;

pub fn run() -> Result<ExitCode> {
    let now = Timestamp::now();
    let args = BenchArgs {
        suite: super::Suite::Console,
        clients: MACHINES,
        updates: 400,
        deployments: 1,
        products: 1,
        sqlite: None,
        postgres: None,
        batches: 0,
    };
    let (mut desired, catalog, fleet) = synthetic(&args, now);
    // One deployment over every machine (the synthetic ones target a site each).
    let everyone = CollectionSpec {
        selector: Some(FactSelector {
            match_facts: [("role".to_string(), "workstation".to_string())].into(),
            match_expressions: vec![],
        }),
        ..Default::default()
    };
    desired.collections.insert("everyone".into(), Collection::new("everyone", everyone));
    let name = desired.deployments.keys().next().cloned().ok_or_else(|| Error::Runtime("no deployment".into()))?;
    desired.deployments.get_mut(&name).expect("listed").spec.collection = Some("everyone".into());
    let t = Instant::now();
    let site = SiteState::derive(
        desired.into(),
        catalog.into(),
        Default::default(),
        fleet,
        &crate::reconcile::Previous::default(),
        now,
    );
    let derived = t.elapsed().as_secs_f64();

    let dir = std::env::temp_dir().join(format!("patchops-bench-console-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let mut config = ServerConfig::new("bench");
    config.read_token_hashes = vec![hex::encode(Sha256::digest(TOKEN.as_bytes()))];
    config.site = Some(SiteHandle::with_state(site));
    let store = dir.join("store.db").display().to_string();
    let server = BackgroundServer::start_with("127.0.0.1:0".parse().expect("address"), &store, config)?;
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let cookie = format!("patchops_read={TOKEN}");
    let base = server.base.clone();
    let enc = urlencoded(&name);
    let detail = agent
        .get(&format!("{base}/v1/read/deployments/{enc}"))
        .header("cookie", &cookie)
        .call()
        .and_then(|mut r| r.body_mut().read_to_vec())
        .map_err(|e| Error::Runtime(format!("cannot read the deployment: {e}")))?;
    let detail: serde_json::Value =
        serde_json::from_slice(&detail).map_err(|e| Error::Runtime(format!("the deployment is not JSON: {e}")))?;
    println!(
        "patchops bench console: deployment {name} targets {} machines ({} Required), site derived in {derived:.2} s",
        detail["status"]["targeted"], detail["status"]["machines"]["required"]
    );
    let time = |path: &str| -> Result<(f64, f64, usize)> {
        let url = format!("{base}{path}");
        let mut times = Vec::with_capacity(ROUNDS);
        let mut bytes = 0;
        let started = Instant::now();
        for round in 0..ROUNDS + 10 {
            if times.len() >= MIN_ROUNDS && started.elapsed() > BUDGET {
                break;
            }
            let t = Instant::now();
            let mut response = agent
                .get(&url)
                .header("cookie", &cookie)
                .call()
                .map_err(|e| Error::Runtime(format!("GET {url}: {e}")))?;
            let body = response
                .body_mut()
                .with_config()
                .limit(64 * 1024 * 1024)
                .read_to_vec()
                .map_err(|e| Error::Runtime(format!("GET {url}: {e}")))?;
            if response.status() != 200 {
                return Err(Error::Runtime(format!("GET {url} answered {}", response.status())));
            }
            // The first rounds warm the connection and caches.
            if round >= 10.min(MIN_ROUNDS) {
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            bytes = body.len();
        }
        times.sort_by(|a, b| a.total_cmp(b));
        Ok((times[times.len() / 2], times[times.len() * 99 / 100], bytes))
    };
    let bare = time("/healthz")?;
    println!("  {:<58} median {:>7.3} ms  p99 {:>7.3} ms", "bare handler GET /healthz", bare.0, bare.1);
    let page = [
        ("the console page GET /ui/", "/ui/".to_string()),
        ("the deployment GET /v1/read/deployments/{name}", format!("/v1/read/deployments/{enc}")),
        (
            "first page of Required machines (limit=50)",
            format!("/v1/read/deployments/{enc}/machines?state=Required&limit=50"),
        ),
        ("all machines, first page (limit=100)", format!("/v1/read/deployments/{enc}/machines?limit=100")),
        ("a CSV export chunk (limit=1000)", format!("/v1/read/deployments/{enc}/machines?limit=1000")),
        (
            "last page, sorted by last scan",
            format!("/v1/read/deployments/{enc}/machines?sort=-lastScan&offset=9950&limit=50"),
        ),
    ];
    let mut page_total = 0.0;
    for (i, (what, path)) in page.iter().enumerate() {
        let (median, p99, bytes) = time(path)?;
        if i < 3 {
            page_total += median;
        }
        println!(
            "  {:<58} median {:>7.3} ms  p99 {:>7.3} ms  {:>5.1}× bare  {:>8} bytes",
            what,
            median,
            p99,
            median / bare.0,
            bytes
        );
    }
    println!(
        "  the deployment page (page + status + first Required page): {page_total:.3} ms = {:.1}× three bare requests",
        page_total / (3.0 * bare.0)
    );
    server.stop()?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

fn urlencoded(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
