//! `patchops bench site`: the live site engine on the bench fleet (`--clients` × 200
//! states): a whole derivation next to a plain counting pass over the same packed
//! states, the engine's CPU per wave of 500 states, memory per state, then a real SQLite
//! store — cold start, and freshness (a state batch acknowledged over HTTP → the
//! deployment's status in the read API and in the store), policy fetches with ETag hits
//! next to a bare axum handler answering 304 in the same run. With `--postgres URL`, the
//! cold start from PostgreSQL too, and freshness across two management points sharing
//! it: the engine's, and one following the site as `serve` does.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use super::{BenchArgs, peak_rss, synthetic, write_store};
use crate::catalog::Catalog;
use crate::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use crate::compliance::{Client, Enforcement, Fleet, PackedState, ScanResult};
use crate::desired::DesiredState;
use crate::reconcile::{ClientChange, Engine, Inputs, Previous};
use crate::site::{Loaded, Site, SiteHandle, SiteOptions};
use crate::store::{ClientInfo, Store};
use crate::{Error, Result};

/// Clients the benchmark enrolls to send batches and fetch policies (site-0, product 0).
const PROBES: usize = 100;
/// The deployment the probes are counted in (product 0 to site-0).
const WATCHED: &str = "deploy-00";
const READ_TOKEN: &str = "bench-site-read-token";

pub fn run(args: &BenchArgs) -> Result<ExitCode> {
    let now = Timestamp::now();
    println!(
        "patchops bench site: {} clients × {} states each, {} deployments, {} threads",
        args.clients,
        args.updates / args.products,
        args.deployments,
        rayon::current_num_threads()
    );
    let rss_before = current_rss();
    let (desired, catalog, fleet) = synthetic(args, now);
    let states = fleet.state_count();
    // Measured on the one copy of the fleet (its waves' changes are what the store gets).
    let fleet = in_memory(&desired, &catalog, fleet, now, rss_before, states);

    let dir = std::env::temp_dir().join(format!("patchops-bench-site-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let path = args.sqlite.clone().unwrap_or_else(|| dir.join("site.db"));
    if !path.exists() {
        let t = Instant::now();
        let n = write_store(&path, &catalog, &fleet, now)?;
        println!(
            "  setup: wrote the SQLite store {} ({n} states) in {:.1} s",
            path.display(),
            t.elapsed().as_secs_f64()
        );
    }
    drop(fleet);
    let result = live(&path, args, &desired, &catalog, now);
    if args.sqlite.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result?;
    if let Some(url) = &args.postgres {
        postgres_site(url, args, &desired, &catalog, now)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The derivation in memory: a whole one next to a counting pass, waves of 500 states,
/// memory per state.
fn in_memory(
    desired: &DesiredState,
    catalog: &Catalog,
    mut fleet: Fleet,
    now: Timestamp,
    rss0: u64,
    states: usize,
) -> Fleet {
    let previous = Previous::default();
    // The reference: one pass over every packed state, counting by scan result.
    let mut counting = f64::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        let mut counts = [0u64; 8];
        for c in &fleet.clients {
            for s in &c.compliance.states {
                counts[s.scan() as usize & 7] += 1;
            }
        }
        std::hint::black_box(counts);
        counting = counting.min(t.elapsed().as_secs_f64());
    }
    let mut whole = f64::MAX;
    let mut engine = None;
    for _ in 0..3 {
        drop(engine.take());
        let t = Instant::now();
        let inputs = Inputs { desired, catalog, fleet: &fleet, previous: &previous, now };
        engine = Some(Engine::new(&inputs).0);
        whole = whole.min(t.elapsed().as_secs_f64());
    }
    let mut engine = engine.expect("derived");
    println!(
        "  whole derivation in memory: {whole:.3} s; counting pass over the same {states} packed states: {counting:.3} s \
         (×{:.1}, best of 3)",
        whole / counting
    );
    let rss = current_rss();
    println!(
        "  memory with the engine running: {:.0} MiB over the process before the fleet = {:.1} bytes per compliance \
         state (peak {:.0} MiB)",
        rss.saturating_sub(rss0) as f64 / 1048576.0,
        rss.saturating_sub(rss0) as f64 / states as f64,
        peak_rss().unwrap_or(0) as f64 / 1048576.0
    );

    // Waves of 500 states: five clients with 100 states each changed.
    let mut times = Vec::with_capacity(1000);
    let n = fleet.clients.len();
    for w in 0..1000usize {
        let picked: Vec<usize> = (0..5).map(|k| (w * 7919 + k * 104_729) % n).collect();
        let befores: Vec<(usize, Client)> = picked.iter().map(|&i| (i, fleet.clients[i].clone())).collect();
        for &i in &picked {
            for s in fleet.clients[i].compliance.states.iter_mut().take(100) {
                let scan = if s.scan() == ScanResult::Installed { ScanResult::Missing } else { ScanResult::Installed };
                *s = PackedState::new(s.key(), scan, Enforcement::None);
            }
        }
        let changes: Vec<ClientChange<'_>> =
            befores.iter().map(|(index, before)| ClientChange::Changed { index: *index, before }).collect();
        let inputs = Inputs { desired, catalog, fleet: &fleet, previous: &previous, now };
        let t = Instant::now();
        let applied = engine.update_clients(&inputs, &changes);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        std::hint::black_box(&applied);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  engine CPU per wave of 500 states (5 clients × 100): p50 {:.3} ms, p99 {:.3} ms over 1000 waves",
        times[500], times[990]
    );
    fleet
}

/// The engine on the SQLite store behind a real management point on loopback.
fn live(
    path: &std::path::Path,
    args: &BenchArgs,
    desired: &DesiredState,
    catalog: &Catalog,
    now: Timestamp,
) -> Result<()> {
    let url = path.display().to_string();
    let mut store = crate::store::open(&url)?;
    let tokens = enroll_probes(store.as_mut(), now)?;
    // Cold start, the store's part (feed head, fleet, last status) and the derivation.
    let t = Instant::now();
    let loaded = Loaded::read(store.as_ref())?;
    let read = t.elapsed().as_secs_f64();
    let stored = store.load_catalog()?;
    let handle = SiteHandle::default();
    let mut site = Site::from_loaded(
        handle.clone(),
        store,
        loaded,
        desired.clone(),
        stored,
        BTreeMap::new(),
        now,
        SiteOptions::default(),
    );
    let total = t.elapsed().as_secs_f64();
    let clients = handle.read(|s| (s.fleet.clients.len(), s.fleet.state_count())).unwrap_or_default();
    println!(
        "  cold start from SQLite: {} clients, {} states read in {read:.2} s, derived at {total:.2} s",
        clients.0, clients.1
    );
    site.publish(Timestamp::now())?;
    let _ = catalog;

    // The management point with the engine, and the engine's own thread.
    let mut config = crate::server::ServerConfig::new("bench");
    config.site = Some(handle.clone());
    config.read_token_hashes = vec![hex::encode(Sha256::digest(READ_TOKEN.as_bytes()))];
    let server = crate::server::BackgroundServer::start_with("127.0.0.1:0".parse().expect("an address"), &url, config)?;
    let stop = Arc::new(AtomicBool::new(false));
    let engine = drive(site, stop.clone());
    let measured = freshness(&server.base, &url, &tokens, args.batches)
        .and_then(|_| etag(&server.base, &tokens))
        .and_then(|_| paging(&server.base, clients.0));
    stop.store(true, Ordering::Relaxed);
    handle.wake();
    let site = engine.join().map_err(|_| Error::Runtime("the engine thread panicked".into()))??;
    server.stop()?;
    measured?;
    println!(
        "  engine: {} whole derivations, {} waves ({} clients), {} publishes",
        site.stats.derivations, site.stats.waves, site.stats.clients_applied, site.stats.publishes
    );
    Ok(())
}

/// The engine's own thread, as `run` drives it: follow the change feed, publish when due,
/// sleep until woken (a batch through this process's management point, a feed
/// notification) or the next publish; the site back when `stop` is set.
fn drive(mut site: Site, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Result<Site>> {
    std::thread::spawn(move || -> Result<Site> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start the engine's runtime: {e}")))?;
        let handle = site.handle().clone();
        while !stop.load(Ordering::Relaxed) {
            let now = Timestamp::now();
            site.follow(now)?;
            site.publish_if_due(now)?;
            let until = site.publish_due().map_or(Duration::from_millis(250), |t| {
                t.saturating_duration_since(Instant::now()).min(Duration::from_millis(250))
            });
            rt.block_on(handle.woken(until));
        }
        Ok(site)
    })
}

/// Enroll the probe clients (site-0, reporting product 0's updates); their tokens.
fn enroll_probes(store: &mut dyn Store, now: Timestamp) -> Result<Vec<String>> {
    let mut tokens = Vec::with_capacity(PROBES);
    for p in 0..PROBES {
        let token = format!("bench-probe-token-{p:04}");
        let info = ClientInfo {
            name: format!("probe-{p:04}"),
            facts: BTreeMap::from([("site".into(), "site-0".into()), ("role".into(), "workstation".into())]),
            agent_version: Some("1.0.0".into()),
        };
        let hash = hex::encode(Sha256::digest(token.as_bytes()));
        store.enroll_client(&info, &hash, Some(&hash), now)?;
        tokens.push(token);
    }
    Ok(tokens)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder().http_status_as_error(false).build().into()
}

/// The watched deployment's compliant machines, as the read API says.
fn read_compliant(agent: &ureq::Agent, base: &str) -> Result<u64> {
    let mut r = agent
        .get(format!("{base}/v1/read/deployments/{WATCHED}"))
        .header("Authorization", format!("Bearer {READ_TOKEN}"))
        .call()
        .map_err(|e| Error::Runtime(format!("read API: {e}")))?;
    let text = r.body_mut().read_to_string().map_err(|e| Error::Runtime(format!("read API: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Runtime(format!("read API: {e}")))?;
    v.pointer("/status/machines/compliant")
        .and_then(|c| c.as_u64())
        .ok_or_else(|| Error::Runtime(format!("read API: no compliant count in {v}")))
}

/// The watched deployment's compliant machines in the store's last published status.
fn stored_compliant(store: &dyn Store) -> Result<u64> {
    let record = store.last_reconcile()?.ok_or_else(|| Error::Runtime("nothing published".into()))?;
    record
        .statuses
        .iter()
        .find(|s| s.kind == "UpdateDeployment" && s.name == WATCHED)
        .and_then(|s| s.status.pointer("/machines/compliant").and_then(|c| c.as_u64()))
        .ok_or_else(|| Error::Runtime(format!("no status of {WATCHED} in the store")))
}

/// Probe 0's batch `sequence`: every product-0 update installed, or every one missing.
fn probe_batch(sequence: u64, installed: bool) -> String {
    let updates = (0..2000)
        .step_by(10)
        .map(|i| UpdateReport {
            id: format!("KB{}-p0", 5_000_000 + i),
            result: if installed { ScanResult::Installed } else { ScanResult::Missing },
            enforcement: Enforcement::None,
        })
        .collect();
    let batch = StateBatch {
        client: "probe-0000".into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time: Timestamp::now(),
            catalog_version: 1,
            agent_version: None,
            updates,
        }],
    };
    serde_json::to_string(&batch).expect("batches serialize")
}

fn post_batch(agent: &ureq::Agent, base: &str, token: &str, body: &str) -> Result<()> {
    let r = agent
        .post(format!("{base}/v1/states"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| Error::Runtime(format!("posting a batch: {e}")))?;
    match r.status().as_u16() {
        200 => Ok(()),
        other => Err(Error::Runtime(format!("a batch was answered {other}"))),
    }
}

/// Wait (≤ 10 s) until `probe` says `want`; the time it took.
fn until(want: u64, mut probe: impl FnMut() -> Result<u64>) -> Result<Duration> {
    let t = Instant::now();
    loop {
        if probe()? == want {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(10) {
            return Err(Error::Runtime(format!("the status did not reach {want} within 10 s")));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn percentiles(mut ms: Vec<f64>) -> String {
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() as f64 * q) as usize).min(ms.len() - 1)];
    format!("p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {}", at(0.5), at(0.99), ms[ms.len() - 1], ms.len())
}

/// Probe 0 flipping between every product-0 update installed and every one missing: the
/// watched deployment's compliant machines follow, one up, one down.
struct Probe {
    agent: ureq::Agent,
    token: String,
    sequence: u64,
    installed: bool,
    compliant: u64,
}

impl Probe {
    /// Scan once (all missing) through `post`, so probe 0 is counted (Required), and read
    /// the count from `read` once the status settled.
    fn start(post: &str, read: &str, token: &str) -> Result<Probe> {
        let agent = agent();
        post_batch(&agent, post, token, &probe_batch(1, false))?;
        std::thread::sleep(Duration::from_millis(1500));
        let compliant = read_compliant(&agent, read)?;
        Ok(Probe { agent, token: token.to_string(), sequence: 1, installed: false, compliant })
    }

    /// The next batch, acknowledged by the management point at `post`.
    fn flip(&mut self, post: &str) -> Result<()> {
        self.sequence += 1;
        self.installed = !self.installed;
        post_batch(&self.agent, post, &self.token, &probe_batch(self.sequence, self.installed))?;
        self.compliant = if self.installed { self.compliant + 1 } else { self.compliant - 1 };
        Ok(())
    }

    /// Flip through `post`, then the milliseconds until the read API at `read` says so.
    fn flip_seen_at(&mut self, post: &str, read: &str) -> Result<f64> {
        self.flip(post)?;
        self.seen_at(read)
    }

    fn seen_at(&self, read: &str) -> Result<f64> {
        Ok(until(self.compliant, || read_compliant(&self.agent, read))?.as_secs_f64() * 1000.0)
    }
}

/// A batch acknowledged → the watched deployment's status, in the read API (every batch)
/// and in the store (back to back, and spaced past the publish debounce).
fn freshness(base: &str, url: &str, tokens: &[String], batches: usize) -> Result<()> {
    let store = crate::store::open(url)?;
    let mut probe = Probe::start(base, base, &tokens[0])?;
    let api = (0..batches).map(|_| probe.flip_seen_at(base, base)).collect::<Result<Vec<f64>>>()?;
    println!("  freshness, batch acknowledged → read API status: {}", percentiles(api));
    for (label, spaced) in [("back to back", false), ("spaced 1.2 s apart", true)] {
        let mut stored = Vec::new();
        until(probe.compliant, || stored_compliant(store.as_ref()))?;
        for _ in 0..30 {
            if spaced {
                std::thread::sleep(Duration::from_millis(1200));
            }
            probe.flip(base)?;
            stored.push(until(probe.compliant, || stored_compliant(store.as_ref()))?.as_secs_f64() * 1000.0);
        }
        println!("  freshness, batch acknowledged → store status ({label}): {}", percentiles(stored));
    }
    Ok(())
}

/// Pages of 1,000 clients through the read API: the first, the middle and the last.
fn paging(base: &str, clients: usize) -> Result<()> {
    let agent = agent();
    let mut parts = Vec::new();
    for (label, offset) in [("first", 0), ("middle", clients / 2), ("last", clients.saturating_sub(1000))] {
        let mut ms = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            let mut r = agent
                .get(format!("{base}/v1/read/clients?limit=1000&offset={offset}"))
                .header("Authorization", format!("Bearer {READ_TOKEN}"))
                .call()
                .map_err(|e| Error::Runtime(format!("read API: {e}")))?;
            let text = r
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_string()
                .map_err(|e| Error::Runtime(format!("read API: {e}")))?;
            ms.push(t.elapsed().as_secs_f64() * 1000.0);
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| Error::Runtime(format!("read API: {e}")))?;
            if v["items"].as_array().map_or(0, Vec::len) != 1000.min(clients - offset) {
                return Err(Error::Runtime(format!("the {label} page of clients is not full")));
            }
        }
        ms.sort_by(|a, b| a.total_cmp(b));
        parts.push(format!("{label} {:.0} ms", ms[2]));
    }
    println!("  read API, a page of 1,000 of the {clients} clients (median of 5): {}", parts.join(", "));
    Ok(())
}

/// Requests/s and latency of `GET url` with `headers`, from 16 threads for 5 s, counting
/// answers with `status`.
fn hammer(url: &str, headers: &[Vec<(String, String)>], status: u16) -> (f64, String) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let all = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..16 {
            let (all, agent) = (&all, agent());
            s.spawn(move || {
                let mut mine = Vec::new();
                let mut i = t;
                while Instant::now() < deadline {
                    let mut r = agent.get(url);
                    for (k, v) in &headers[i % headers.len()] {
                        r = r.header(k, v);
                    }
                    let started = Instant::now();
                    if matches!(r.call(), Ok(resp) if resp.status().as_u16() == status) {
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    i += 16;
                }
                all.lock().expect("not poisoned").extend(mine);
            });
        }
    });
    let lat = all.into_inner().expect("not poisoned");
    let rate = lat.len() as f64 / 5.0;
    if lat.is_empty() {
        return (0.0, "no answer".into());
    }
    (rate, percentiles(lat))
}

/// Policy fetches with ETag hits through the management point, next to a bare axum
/// handler answering 304 on the same machine in the same run.
fn etag(base: &str, tokens: &[String]) -> Result<()> {
    let agent = agent();
    let mut headers = Vec::new();
    for token in tokens {
        let r = agent
            .get(format!("{base}/v1/policy"))
            .header("Authorization", format!("Bearer {token}"))
            .call()
            .map_err(|e| Error::Runtime(format!("policy: {e}")))?;
        let etag = r
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| Error::Runtime(format!("no ETag on the policy (answered {})", r.status())))?
            .to_string();
        headers.push(vec![("Authorization".into(), format!("Bearer {token}")), ("If-None-Match".into(), etag)]);
    }
    let (served, served_lat) = hammer(&format!("{base}/v1/policy"), &headers, 304);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    let listener = rt
        .block_on(crate::server::bind(([127, 0, 0, 1], 0).into()))
        .map_err(|e| Error::Usage(format!("cannot bind 127.0.0.1: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::Runtime(format!("no address: {e}")))?;
    let bare =
        axum::Router::new().route("/v1/policy", axum::routing::get(|| async { axum::http::StatusCode::NOT_MODIFIED }));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = rt.spawn(async move {
        let _ = axum::serve(listener, bare)
            .with_graceful_shutdown(async move {
                let _ = rx.await;
            })
            .await;
    });
    let (reference, reference_lat) = hammer(&format!("http://{addr}/v1/policy"), &headers, 304);
    let _ = tx.send(());
    let _ = rt.block_on(task);
    println!(
        "  policy fetch, ETag hit → 304 (16 connections, 5 s each): management point {served:.0} requests/s ({served_lat}); \
         bare axum handler {reference:.0} requests/s ({reference_lat}); ratio {:.2}",
        served / reference.max(1.0)
    );
    Ok(())
}

/// The same fleet in PostgreSQL: the cold start of the engine from it, then two
/// management points sharing the database, the engine's and one following the site as
/// `serve` does; a batch acknowledged by one → the deployment's status in the other's
/// read API.
fn postgres_site(url: &str, args: &BenchArgs, desired: &DesiredState, catalog: &Catalog, now: Timestamp) -> Result<()> {
    let schema = format!("bench_site_{}", std::process::id());
    let (_, _, fleet) = synthetic(args, now);
    let t = Instant::now();
    let tokens = {
        let mut store = crate::store::postgres::PostgresStore::open_in_schema(url, &schema)?;
        super::load_bulk(&mut store, catalog, &fleet, now)?;
        enroll_probes(&mut store, now)?
    };
    drop(fleet);
    println!("  setup: wrote the PostgreSQL store (schema {schema}) in {:.1} s", t.elapsed().as_secs_f64());
    let join = if url.contains('?') { '&' } else { '?' };
    let store_url = format!("{url}{join}options=-csearch_path%3D{schema}");
    let measured = (|| -> Result<()> {
        let store = crate::store::postgres::PostgresStore::open_in_schema(url, &schema)?;
        let t = Instant::now();
        let loaded = Loaded::read(&store)?;
        let read = t.elapsed().as_secs_f64();
        let stored = store.load_catalog()?;
        let mut site = Site::from_loaded(
            SiteHandle::default(),
            Box::new(store),
            loaded,
            desired.clone(),
            stored,
            BTreeMap::new(),
            now,
            SiteOptions::default(),
        );
        let n = site.handle().read(|s| s.fleet.state_count()).unwrap_or(0);
        println!(
            "  cold start from PostgreSQL: {n} states read in {read:.2} s, derived at {:.2} s",
            t.elapsed().as_secs_f64()
        );
        // The first publish saves the desired state a following management point starts from.
        site.publish(Timestamp::now())?;
        two_points(&store_url, site, &tokens, args.batches / 2)
    })();
    let mut c = postgres::Client::connect(url, postgres::NoTls)
        .map_err(|e| Error::store(url.to_string(), "cannot connect to drop the bench schema", e))?;
    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    measured
}

/// The engine's management point and a following one (`serve`) on the PostgreSQL store at
/// `url`; freshness across them, `batches` each way.
fn two_points(url: &str, site: Site, tokens: &[String], batches: usize) -> Result<()> {
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().expect("an address");
    let config = |handle: &SiteHandle| {
        let mut config = crate::server::ServerConfig::new("bench");
        config.site = Some(handle.clone());
        config.read_token_hashes = vec![hex::encode(Sha256::digest(READ_TOKEN.as_bytes()))];
        config
    };
    let stop = Arc::new(AtomicBool::new(false));
    let owner = site.handle().clone();
    let owner_point = crate::server::BackgroundServer::start_with(any, url, config(&owner))?;
    let engine = drive(site, stop.clone());
    let listener = crate::site::feed::listen_postgres(url.to_string(), owner.clone(), stop.clone());
    let following = SiteHandle::default();
    let t = Instant::now();
    let follower = crate::site::follower::spawn(url.to_string(), following.clone(), stop.clone());
    let follower_point = crate::server::BackgroundServer::start_with(any, url, config(&following));
    let measured = follower_point.and_then(|follower_point| {
        let measured = (|| -> Result<()> {
            while !following.started() {
                if t.elapsed() > Duration::from_secs(300) {
                    return Err(Error::Runtime("the following management point did not start within 300 s".into()));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            println!(
                "  following management point (`serve`): cold start from PostgreSQL in {:.2} s",
                t.elapsed().as_secs_f64()
            );
            let (a, b) = (owner_point.base.as_str(), follower_point.base.as_str());
            let mut probe = Probe::start(a, a, &tokens[0])?;
            probe.seen_at(b)?;
            let to_follower = (0..batches).map(|_| probe.flip_seen_at(a, b)).collect::<Result<Vec<f64>>>()?;
            let to_owner = (0..batches).map(|_| probe.flip_seen_at(b, a)).collect::<Result<Vec<f64>>>()?;
            println!(
                "  freshness across two management points on PostgreSQL, batch acknowledged by the engine's → the \
                 following one's read API: {}",
                percentiles(to_follower)
            );
            println!(
                "  freshness across two management points on PostgreSQL, batch acknowledged by the following one → \
                 the engine's read API: {}",
                percentiles(to_owner)
            );
            Ok(())
        })();
        follower_point.stop().and(measured)
    });
    stop.store(true, Ordering::Relaxed);
    owner.wake();
    following.wake();
    let site = engine.join().map_err(|_| Error::Runtime("the engine thread panicked".into()));
    let _ = listener.join();
    let _ = follower.join();
    owner_point.stop()?;
    site??;
    measured
}

/// Resident memory of this process now, from /proc (bytes).
fn current_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kb| kb * 1024)
}
