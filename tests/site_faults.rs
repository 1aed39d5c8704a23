//! The live site engine under faults, on loopback and bounded in time: a `patchops run`
//! killed with SIGKILL while state batches stream in (nothing acknowledged is lost and the
//! restarted engine agrees with the store), a PostgreSQL connection of the engine dropped
//! under it (it resumes the change feed where it was), and two stateless management points
//! feeding one engine through one PostgreSQL schema (every client's states arrive whole).
//!
//! PostgreSQL as in `tests/store.rs`: `PATCHOPS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), a fresh schema per test; when it is not
//! reachable the PostgreSQL tests fail and say how to start it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::{SignedDuration, Timestamp};
use patchops::catalog::Catalog;
use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Client, Enforcement, Fleet, PackedState, ScanResult};
use patchops::desired::DesiredState;
use patchops::git::GitSource;
use patchops::reconcile::{Inputs, previous_from, reconcile};
use patchops::resources::UpdateCatalogStatus;
use patchops::server::{BackgroundServer, ServerConfig};
use patchops::site::view::DeploymentSummary;
use patchops::site::{Site, SiteHandle, SiteOptions, SiteState};
use patchops::store::{BatchOutcome, ClientInfo, Enrollment, Store};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_patchops");
const SECRET: &str = "site-faults-enroll-secret";
const READ_TOKEN: &str = "site-faults-read-token-0123456789abcdef";
const SITES: [&str; 3] = ["BER", "NYC", "TYO"];
/// How often the engine reads the feed when nothing woke it (as `patchops run` does).
const FEED_POLL: Duration = Duration::from_millis(250);

// ---------------------------------------------------------------------------------------
// What clients send: scans of the Windows Server 2022 updates of the example catalog.

/// The example site's desired state (`examples/repo` at this repository's HEAD).
fn example_source(cache: &Path) -> GitSource {
    GitSource {
        repo: env!("CARGO_MANIFEST_DIR").into(),
        revision: None,
        path: Some("examples/repo".into()),
        cache_dir: cache.to_path_buf(),
    }
}

/// Ids of the catalog's updates for Windows Server 2022 (what the test servers report).
fn windows_server_updates(catalog: &Catalog) -> Vec<String> {
    let ids: Vec<String> = catalog
        .updates
        .iter()
        .filter(|u| u.products.iter().any(|p| p == "Windows Server 2022"))
        .map(|u| u.id.clone())
        .collect();
    assert!(!ids.is_empty(), "the example catalog has Windows Server 2022 updates");
    ids
}

fn server_facts(i: usize) -> BTreeMap<String, String> {
    [("role", "server"), ("os", "Windows Server 2022"), ("site", SITES[i % SITES.len()]), ("ring", "broad")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether `client` reports update `i` missing in its batch `sequence`: a fixed function,
/// so each batch carries its own states and the stored ones tell which batch they are.
fn missing(client: &str, sequence: u64, i: usize) -> bool {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in client.bytes().chain(sequence.to_le_bytes()).chain((i as u64).to_le_bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    h.is_multiple_of(3)
}

/// Batch `sequence` of `client`: one scan, at `base` plus `sequence` seconds, so the
/// stored scan time names the batch that was applied last.
fn scan(client: &str, sequence: u64, base: Timestamp, catalog_version: u64, ids: &[String]) -> StateBatch {
    StateBatch {
        client: client.into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time: base + SignedDuration::from_secs(sequence as i64),
            catalog_version,
            agent_version: Some("2.1.0".into()),
            updates: ids
                .iter()
                .enumerate()
                .map(|(i, id)| UpdateReport {
                    id: id.clone(),
                    result: if missing(client, sequence, i) { ScanResult::Missing } else { ScanResult::Installed },
                    enforcement: Enforcement::None,
                })
                .collect(),
        }],
    }
}

/// The states a store holds after `batch` (its scan replaces the client's states).
fn expected_states(batch: &StateBatch, catalog: &Catalog) -> Vec<PackedState> {
    let StateMessage::ScanCompleted { updates, .. } = &batch.messages[0] else { unreachable!("scans only") };
    let mut states: Vec<PackedState> = updates
        .iter()
        .map(|u| {
            let i = catalog.index_of(&u.id).unwrap_or_else(|| panic!("{} is in the catalog", u.id));
            PackedState::new(catalog.keys[i as usize], u.result, u.enforcement)
        })
        .collect();
    states.sort_by_key(|s| s.key());
    states
}

/// The batch whose scan a client's stored state is (from the scan time).
fn applied_sequence(client: &Client, base: Timestamp) -> u64 {
    let scanned = client.compliance.last_scan.as_ref().unwrap_or_else(|| panic!("{}: no scan stored", client.name));
    (scanned.time.as_second() - base.as_second()) as u64
}

/// A base for scan times, two hours ago, in whole seconds (the store keeps seconds).
fn scan_base(now: Timestamp) -> Timestamp {
    Timestamp::from_second(now.as_second() - 2 * 3600).unwrap()
}

fn by_name(fleet: &Fleet) -> BTreeMap<String, Client> {
    fleet.clients.iter().map(|c| (c.name.clone(), c.clone())).collect()
}

// ---------------------------------------------------------------------------------------
// HTTP, as an agent speaks it.

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

/// Register a server; its client token.
fn register(base: &str, name: &str, i: usize) -> String {
    let body = json!({"name": name, "facts": server_facts(i), "agentVersion": "2.1.0", "enrollSecret": SECRET});
    let mut r = http().post(format!("{base}/v1/register")).send(body.to_string()).unwrap();
    let text = r.body_mut().read_to_string().unwrap();
    assert_eq!(r.status(), 201, "registering {name}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Post a batch; Some(outcome) when the management point acknowledged it (HTTP 200).
fn post(base: &str, token: &str, batch: &StateBatch) -> Option<String> {
    let response = http()
        .post(format!("{base}/v1/states"))
        .header("Authorization", format!("Bearer {token}"))
        .header("Content-Type", "application/json")
        .send(serde_json::to_string(batch).unwrap());
    let mut r = response.ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    v["outcome"].as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// `patchops run` in a child process.

/// A free port on loopback (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `patchops run` on the example site with its embedded management point and read API;
/// killed when dropped, so a failing test leaves no process behind.
struct Run {
    child: Child,
    base: String,
    log: PathBuf,
}

impl Run {
    /// Start and wait until the read API answers from the engine's first derivation.
    fn start(dir: &Path, store: &str, label: &str) -> Run {
        let port = free_port();
        let tokens = dir.join("read-tokens");
        std::fs::write(&tokens, format!("{READ_TOKEN}\n")).unwrap();
        let log = dir.join(format!("run-{label}.log"));
        let child = Command::new(BIN)
            .args(["run", "--repo", env!("CARGO_MANIFEST_DIR"), "--path", "examples/repo", "--store", store])
            .args(["--interval", "1h", "--listen", &format!("127.0.0.1:{port}"), "--enroll-secret", SECRET])
            .arg("--read-token-file")
            .arg(&tokens)
            .env("PATCHOPS_STATE_DIR", dir.join("state"))
            .env("PATCHOPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut run = Run { child, base: format!("http://127.0.0.1:{port}"), log };
        // Cloning the repository and syncing the example catalogs comes first.
        let deadline = Instant::now() + Duration::from_secs(90);
        while run.deployments().is_none() {
            if let Ok(Some(status)) = run.child.try_wait() {
                panic!("patchops run exited ({status}): {}", run.log_text());
            }
            assert!(Instant::now() < deadline, "patchops run did not answer the read API in 90 s: {}", run.log_text());
            std::thread::sleep(Duration::from_millis(100));
        }
        run
    }

    /// `GET /v1/read/deployments`; None until the engine derived the site.
    fn deployments(&self) -> Option<Vec<DeploymentSummary>> {
        let mut r = http()
            .get(format!("{}/v1/read/deployments", self.base))
            .header("Authorization", format!("Bearer {READ_TOKEN}"))
            .call()
            .ok()?;
        if r.status() != 200 {
            return None;
        }
        serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL on unix
        self.child.wait().unwrap();
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one client sent before the kill.
struct Sent {
    client: String,
    token: String,
    /// Sequence numbers answered with HTTP 200.
    acked: Vec<u64>,
    /// The highest sequence number posted (acknowledged or not).
    posted: u64,
}

#[test]
fn the_engine_never_diverges_from_the_store_after_a_sigkill_mid_ingestion() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").display().to_string();
    let mut run = Run::start(dir.path(), &store, "first");
    let catalog = patchops::store::open(&store).unwrap().load_catalog().unwrap();
    let ids = Arc::new(windows_server_updates(&catalog));
    let base = scan_base(Timestamp::now());
    let clients: Vec<(String, String)> = (0..20)
        .map(|i| {
            let name = format!("srv-{i:02}");
            let token = register(&run.base, &name, i);
            (name, token)
        })
        .collect();

    // Four senders of five clients each post as fast as they are answered; a batch not
    // acknowledged is sent again (as the agent's spool does) until the process is gone.
    let stop = Arc::new(AtomicBool::new(false));
    let acked_total = Arc::new(AtomicU64::new(0));
    let in_flight = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = clients
        .chunks(5)
        .map(|group| {
            let group = group.to_vec();
            let (url, stop, ids) = (run.base.clone(), stop.clone(), ids.clone());
            let (acked_total, in_flight) = (acked_total.clone(), in_flight.clone());
            let version = catalog.version;
            std::thread::spawn(move || {
                let mut sent: Vec<Sent> =
                    group.into_iter().map(|(client, token)| Sent { client, token, acked: vec![], posted: 0 }).collect();
                let mut next = vec![1u64; sent.len()];
                let mut turn = 0;
                while !stop.load(Ordering::Relaxed) {
                    let (s, seq) = (&mut sent[turn], next[turn]);
                    s.posted = s.posted.max(seq);
                    let batch = scan(&s.client, seq, base, version, &ids);
                    in_flight.fetch_add(1, Ordering::SeqCst);
                    let answer = post(&url, &s.token, &batch);
                    in_flight.fetch_sub(1, Ordering::SeqCst);
                    match answer {
                        Some(_) => {
                            s.acked.push(seq);
                            next[turn] += 1;
                            acked_total.fetch_add(1, Ordering::Relaxed);
                        }
                        None => std::thread::sleep(Duration::from_millis(20)),
                    }
                    turn = (turn + 1) % sent.len();
                }
                sent
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_total.load(Ordering::Relaxed) < 120 {
        assert!(Instant::now() < deadline, "120 batches acknowledged within 30 s: {}", run.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    // SIGKILL while requests are in flight (a batch may be committed and not answered).
    let armed = Instant::now() + Duration::from_secs(5);
    while in_flight.load(Ordering::SeqCst) < 2 {
        assert!(Instant::now() < armed, "two batches in flight at once within 5 s");
        std::hint::spin_loop();
    }
    run.kill9();
    stop.store(true, Ordering::Relaxed);
    let sent: Vec<Sent> = senders.into_iter().flat_map(|s| s.join().unwrap()).collect();

    // Nothing acknowledged is lost: each client's stored scan is its newest acknowledged
    // batch or the one in flight after it, with exactly the states that batch reported.
    let fleet = by_name(&patchops::store::open(&store).unwrap().load_fleet().unwrap());
    for s in &sent {
        let newest = *s.acked.last().unwrap_or_else(|| panic!("{}: no batch acknowledged", s.client));
        let stored = &fleet[&s.client];
        let applied = applied_sequence(stored, base);
        assert!(applied >= newest, "{}: batch {newest} was acknowledged, the store holds {applied}", s.client);
        assert!(applied <= s.posted, "{}: the store holds batch {applied}, only {} were posted", s.client, s.posted);
        let batch = scan(&s.client, applied, base, catalog.version, &ids);
        assert_eq!(stored.compliance.states, expected_states(&batch, &catalog), "{}: batch {applied}", s.client);
    }

    // Restarted on the same store, the engine starts from it: every acknowledged batch is
    // known there (a duplicate), and its deployment counts are a full reconcile's.
    drop(run);
    let run = Run::start(dir.path(), &store, "restarted");
    for s in &sent {
        for &seq in &s.acked {
            let outcome = post(&run.base, &s.token, &scan(&s.client, seq, base, catalog.version, &ids));
            assert_eq!(outcome.as_deref(), Some("duplicate"), "{} batch {seq} sent again", s.client);
        }
    }
    let live = run.deployments().expect("the restarted engine answers the read API");
    let now = Timestamp::now();
    drop(run);
    let store = patchops::store::open(&store).unwrap();
    let (_, desired) = patchops::pipeline::load_desired(&example_source(&dir.path().join("check-cache"))).unwrap();
    let (fleet, catalog) = (store.load_fleet().unwrap(), store.load_catalog().unwrap());
    let previous = previous_from(&store.last_reconcile().unwrap().map(|r| r.statuses).unwrap_or_default());
    let full = reconcile(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now });
    assert_eq!(live.len(), full.deployments.len(), "every deployment is answered");
    for d in &live {
        let f = &full.deployments[&d.name];
        assert_eq!(
            (d.status.targeted, &d.status.machines, &d.status.updates),
            (f.targeted, &f.machines, &f.updates),
            "{}: the engine's counts are a full reconcile's",
            d.name
        );
    }
    let servers = live.iter().find(|d| d.name == "2026-11-servers").expect("the servers deployment");
    assert_eq!(servers.status.targeted, 20, "the comparison covers the test's servers");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL: a fresh schema, a seeded example site, and the engine on a thread.

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema of the test database, dropped at the end.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn fresh() -> Schema {
        let url = std::env::var("PATCHOPS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string());
        let name = format!("patchops_test_{:016x}", fastrand::u64(..));
        let schema = Schema { url, name };
        schema.admin().batch_execute(&format!("CREATE SCHEMA \"{}\"", schema.name)).unwrap();
        schema
    }

    /// A plain connection to the test database (outside the store).
    fn admin(&self) -> postgres::Client {
        postgres::Client::connect(&self.url, postgres::NoTls).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is not reachable at {}: {e} ({:?}).\n\
                 Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 (and create the database: createdb -h 127.0.0.1 -U postgres test), or point \
                 PATCHOPS_TEST_POSTGRES_URL at another server.",
                self.url,
                std::error::Error::source(&e).map(|s| s.to_string())
            )
        })
    }

    /// The store URL in this schema, its connections named `application` (so the test
    /// can tell the engine's connections from the others').
    fn store_url(&self, application: &str) -> String {
        let join = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{join}application_name={application}&options=-csearch_path%3D{}", self.url, self.name)
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ =
                c.batch_execute(&format!("SET lock_timeout = '10s'; DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name));
        }
    }
}

/// The example site reconciled once into the store, without clients: what the engine
/// starts from.
struct Seeded {
    desired: DesiredState,
    catalog: Catalog,
    catalog_status: BTreeMap<String, UpdateCatalogStatus>,
}

fn seed(store: &str, dir: &Path, now: Timestamp) -> Seeded {
    let source = example_source(&dir.join("state").join("git-cache"));
    let mut pipeline = patchops::pipeline::Pipeline::new(source.clone(), patchops::store::open(store).unwrap(), None);
    let (record, _) = pipeline.reconcile_once(now).unwrap();
    let (_, desired) = patchops::pipeline::load_desired(&source).unwrap();
    let catalog_status = record
        .statuses
        .iter()
        .filter(|s| s.kind == "UpdateCatalog")
        .map(|s| (s.name.clone(), serde_json::from_value(s.status.clone()).unwrap()))
        .collect();
    Seeded { desired, catalog: pipeline.store.load_catalog().unwrap(), catalog_status }
}

/// What the engine's thread reports.
#[derive(Clone, Debug, Default)]
struct Progress {
    /// Clients the engine applied from the feed, over all its waves (`Site::stats`).
    clients_applied: u64,
    waves: u64,
    publishes: u64,
    /// Rounds of the engine's loop done (follow, publish, wait).
    rounds: u64,
    follow_failures: u64,
    publish_failures: u64,
    last_error: Option<String>,
}

/// The site engine driven as `patchops run` drives it — follow the feed when a
/// PostgreSQL notification wakes it or every [`FEED_POLL`], publish when due — on a
/// thread of its own, at a fixed `now` (so a full reconcile at that `now` is comparable).
struct LiveSite {
    handle: SiteHandle,
    progress: Arc<Mutex<Progress>>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl LiveSite {
    fn start(store: &str, seeded: &Seeded, now: Timestamp) -> LiveSite {
        let handle = SiteHandle::default();
        let progress = Arc::new(Mutex::new(Progress::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (started_tx, started) = std::sync::mpsc::channel::<Result<(), String>>();
        let driver = {
            let (handle, progress, stop, url) = (handle.clone(), progress.clone(), stop.clone(), store.to_string());
            let (desired, catalog, status) =
                (seeded.desired.clone(), seeded.catalog.clone(), seeded.catalog_status.clone());
            std::thread::spawn(move || {
                let options = SiteOptions { publish_every: Duration::from_millis(200) };
                let opened = patchops::store::open(&url)
                    .and_then(|store| Site::start(handle.clone(), store, desired, catalog, status, now, options));
                let mut site = match opened {
                    Ok(site) => {
                        let _ = started_tx.send(Ok(()));
                        site
                    }
                    Err(e) => {
                        let _ = started_tx.send(Err(e.to_string()));
                        return;
                    }
                };
                let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let followed = site.follow(now);
                    let published = site.publish_if_due(now);
                    {
                        let mut p = progress.lock().unwrap();
                        p.rounds += 1;
                        (p.clients_applied, p.waves, p.publishes) =
                            (site.stats.clients_applied, site.stats.waves, site.stats.publishes);
                        if let Err(e) = &followed {
                            p.follow_failures += 1;
                            p.last_error = Some(e.to_string());
                        }
                        if let Err(e) = &published {
                            p.publish_failures += 1;
                            p.last_error = Some(e.to_string());
                        }
                    }
                    // A failed publish stays due at once; this waits a poll before trying
                    // again rather than spinning while the store is unreachable.
                    let failed = followed.is_err() || published.is_err();
                    let until = match site.publish_due() {
                        _ if failed => FEED_POLL,
                        Some(t) => t.saturating_duration_since(Instant::now()).min(FEED_POLL),
                        None => FEED_POLL,
                    };
                    rt.block_on(handle.woken(until));
                }
            })
        };
        let outcome = started.recv_timeout(Duration::from_secs(30));
        let listener = patchops::site::feed::listen_postgres(store.to_string(), handle.clone(), stop.clone());
        let site = LiveSite { handle, progress, stop, threads: vec![driver, listener] };
        match outcome {
            Ok(Ok(())) => site,
            Ok(Err(e)) => panic!("the site engine did not start: {e}"),
            Err(_) => panic!("the site engine did not start within 30 s"),
        }
    }

    fn progress(&self) -> Progress {
        self.progress.lock().unwrap().clone()
    }

    /// Wait (at most `within`) until the engine's fleet equals the store's, client by
    /// client; panics saying how they differ and what the engine's thread reported.
    fn wait_for_the_store(&self, store: &dyn Store, within: Duration, when: &str) {
        let deadline = Instant::now() + within;
        loop {
            let stored = by_name(&store.load_fleet().unwrap());
            let live = self.handle.read(|s| by_name(&s.fleet)).unwrap_or_default();
            if live == stored {
                // The engine's counters lag its state by the rest of a round: wait for the
                // next whole one, so they count every wave seen here.
                let round = self.progress().rounds;
                while self.progress().rounds < round + 2 {
                    assert!(Instant::now() < deadline + FEED_POLL * 8, "{when}: the engine's loop stalled");
                    self.handle.wake();
                    std::thread::sleep(Duration::from_millis(5));
                }
                return;
            }
            if Instant::now() >= deadline {
                let missing: Vec<&String> = stored.keys().filter(|n| !live.contains_key(*n)).collect();
                let stale: Vec<&String> =
                    stored.iter().filter(|(n, c)| live.get(*n).is_some_and(|l| l != *c)).map(|(n, _)| n).collect();
                panic!(
                    "{when}: the engine's fleet still differs from the store's after {within:?}: {} clients missing \
                     {missing:?}, {} stale {stale:?}; the engine's thread reports {:?}",
                    missing.len(),
                    stale.len(),
                    self.progress()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The engine's statuses equal a full reconcile of the store at the same `now`.
    fn assert_equals_a_full_reconcile(&self, store: &dyn Store, now: Timestamp) {
        let fleet = store.load_fleet().unwrap();
        let catalog = store.load_catalog().unwrap();
        let previous = previous_from(&store.last_reconcile().unwrap().map(|r| r.statuses).unwrap_or_default());
        self.handle
            .read(|s: &SiteState| {
                let inputs = Inputs { desired: &s.desired, catalog: &catalog, fleet: &fleet, previous: &previous, now };
                let full = reconcile(&inputs);
                let live = s.engine.outcome();
                assert_eq!(live.deployments, full.deployments, "deployments");
                assert_eq!(live.collections, full.collections, "collections");
                assert_eq!(live.update_lists, full.update_lists, "update lists");
            })
            .expect("the engine is started");
    }
}

impl Drop for LiveSite {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.wake();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn enroll(store: &mut dyn Store, name: &str, i: usize, now: Timestamp) {
    let info = ClientInfo { name: name.into(), facts: server_facts(i), agent_version: Some("2.1.0".into()) };
    let token = format!("{:064x}", i as u128 + 1);
    assert_eq!(store.enroll_client(&info, &token, None, now).unwrap(), Enrollment::Enrolled, "{name}");
}

#[test]
fn a_dropped_postgresql_connection_resumes_the_feed_at_the_last_sequence() {
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let base = scan_base(now);
    let seeded = seed(&schema.store_url("site_faults_seed"), dir.path(), now);
    let ids = windows_server_updates(&seeded.catalog);
    let version = seeded.catalog.version;
    let engine_name = format!("site_faults_engine_{:08x}", fastrand::u32(..));
    let mut writer = patchops::store::open(&schema.store_url("site_faults_writer")).unwrap();
    let site = LiveSite::start(&schema.store_url(&engine_name), &seeded, now);

    let names: Vec<String> = (0..10).map(|i| format!("pg-srv-{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        enroll(writer.as_mut(), name, i, now);
        let applied = writer.apply_batch(&scan(name, 1, base, version, &ids), now).unwrap();
        assert_eq!(applied, BatchOutcome::Applied);
    }
    site.wait_for_the_store(writer.as_ref(), Duration::from_secs(15), "before the connections dropped");
    let before = site.progress();

    // The database ends the engine's sessions (a failover, an idle-session killer, a
    // restarted pgbouncer): its store connection and its LISTEN connection.
    let mut admin = schema.admin();
    let connected = Instant::now() + Duration::from_secs(5);
    let count = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1";
    while admin.query_one(count, &[&engine_name]).unwrap().get::<_, i64>(0) < 2 {
        assert!(Instant::now() < connected, "the engine's store and LISTEN connections within 5 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let ended = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = $1 AND pid <> pg_backend_pid()",
            &[&engine_name],
        )
        .unwrap();
    assert_eq!(ended.len(), 2, "the engine's store connection and its listener were connected");
    assert!(ended.iter().all(|r| r.get::<_, bool>(0)), "both were terminated");

    // Meanwhile: a second scan of every client and two registrations, one feed row each.
    let head = writer.feed_head().unwrap();
    for name in &names {
        let applied = writer.apply_batch(&scan(name, 2, base, version, &ids), now).unwrap();
        assert_eq!(applied, BatchOutcome::Applied);
    }
    for i in 10..12 {
        enroll(writer.as_mut(), &format!("pg-srv-{i:02}"), i, now);
    }
    let written = writer.feed_since(head, 1000).unwrap().len() as u64;
    assert_eq!(written, 12);

    site.wait_for_the_store(writer.as_ref(), Duration::from_secs(10), "after the connections dropped");
    let after = site.progress();
    assert_eq!(
        after.clients_applied - before.clients_applied,
        written,
        "each feed row written after the drop was applied once, none before it again: {after:?}"
    );
    site.assert_equals_a_full_reconcile(writer.as_ref(), now);
}

#[test]
fn two_management_points_and_one_engine_on_postgresql_lose_no_state_of_100_clients() {
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let base = scan_base(now);
    let seeded = seed(&schema.store_url("site_faults_seed"), dir.path(), now);
    let ids = Arc::new(windows_server_updates(&seeded.catalog));
    let version = seeded.catalog.version;
    let site = LiveSite::start(&schema.store_url("site_faults_engine"), &seeded, now);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let points: Vec<BackgroundServer> = ["a", "b"]
        .iter()
        .map(|p| {
            BackgroundServer::start_with(
                any,
                &schema.store_url(&format!("site_faults_mp_{p}")),
                ServerConfig::new(SECRET),
            )
            .unwrap()
        })
        .collect();

    // Through each management point, ten agents' threads of five clients: register, then
    // three scans each, every one acknowledged as applied.
    const BATCHES: u64 = 3;
    let senders: Vec<_> = points
        .iter()
        .enumerate()
        .flat_map(|(p, point)| (0..10).map(move |t| (p, t, point.base.clone())))
        .map(|(p, t, url)| {
            let ids = ids.clone();
            std::thread::spawn(move || {
                let clients: Vec<(String, String)> = (0..5)
                    .map(|c| {
                        let name = format!("mp{p}-srv-{t}{c}");
                        let token = register(&url, &name, t * 5 + c);
                        (name, token)
                    })
                    .collect();
                for seq in 1..=BATCHES {
                    for (name, token) in &clients {
                        let outcome = post(&url, token, &scan(name, seq, base, version, &ids));
                        assert_eq!(outcome.as_deref(), Some("applied"), "{name} batch {seq} through {url}");
                    }
                }
                clients.into_iter().map(|(name, _)| name).collect::<Vec<_>>()
            })
        })
        .collect();
    let sent: Vec<String> = senders.into_iter().flat_map(|s| s.join().expect("a sender failed")).collect();
    assert_eq!(sent.len(), 100);

    let store = patchops::store::open(&schema.store_url("site_faults_check")).unwrap();
    site.wait_for_the_store(store.as_ref(), Duration::from_secs(20), "after 100 clients sent their scans");
    let live = site.handle.read(|s| by_name(&s.fleet)).unwrap();
    assert_eq!(live.len(), 100, "the engine holds every client");
    for name in &sent {
        let batch = scan(name, BATCHES, base, version, &ids);
        let client = &live[name];
        assert_eq!(applied_sequence(client, base), BATCHES, "{name}: its last scan");
        assert_eq!(client.compliance.states, expected_states(&batch, &seeded.catalog), "{name}: its states");
    }
    site.assert_equals_a_full_reconcile(store.as_ref(), now);
    for point in points {
        point.stop().unwrap();
    }
}

#[test]
fn a_publish_the_store_refuses_is_retried_with_a_growing_backoff_not_in_a_tight_loop() {
    let schema = Schema::fresh();
    let dir = tempfile::tempdir().unwrap();
    let now = Timestamp::now();
    let seeded = seed(&schema.store_url("site_faults_seed"), dir.path(), now);
    let mut writer = patchops::store::open(&schema.store_url("site_faults_writer")).unwrap();
    let store = patchops::store::open(&schema.store_url("site_faults_backoff")).unwrap();
    let mut site = Site::start(
        SiteHandle::default(),
        store,
        seeded.desired.clone(),
        seeded.catalog.clone(),
        seeded.catalog_status.clone(),
        now,
        SiteOptions::default(),
    )
    .unwrap();
    site.publish(now).unwrap();
    assert!(site.publish_due().is_none(), "published: nothing due");
    enroll(writer.as_mut(), "backoff-srv", 0, now);
    assert_eq!(site.follow(now).unwrap(), 1);
    assert!(site.publish_due().unwrap() <= Instant::now() + Duration::from_secs(1));
    // The store goes away under the engine (its tables with it).
    schema.admin().batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", schema.name)).unwrap();
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let due = site.publish_due().expect("the change is still to publish");
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let tried = Instant::now();
        assert!(site.publish_if_due(now).is_err(), "the store has no tables: the publish fails");
        gaps.push(site.publish_due().expect("still to publish").saturating_duration_since(tried));
    }
    assert!(gaps[0] >= Duration::from_millis(200), "the first retry waits ~250 ms: {gaps:?}");
    assert!(gaps[1] >= gaps[0] + Duration::from_millis(150), "and the wait grows: {gaps:?}");
    assert!(gaps[2] >= gaps[1] + Duration::from_millis(300), "and grows again: {gaps:?}");
    assert!(site.publish_if_due(now).unwrap().is_none(), "not due yet: no attempt, no error");
}
