//! Agents against a real management point on loopback, with the standalone reconciler on
//! a real git repository and SQLite store, all on a virtual clock the test controls:
//! seed step 2 (policy, randomised scans, state messages) and step 4 (download, windows,
//! deadlines, restarts, re-scan), faults (server down, wrong content) and the 200-agent
//! run with a server restart.

mod common;
use common::at;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jiff::{SignedDuration, Timestamp};
use patchops::agent::installers::simulated::Simulated;
use patchops::agent::machine::{FactsDocument, FactsMachine};
use patchops::agent::schedule::Trigger;
use patchops::agent::{Agent, AgentOptions, Download};
use patchops::compliance::Enforcement;
use patchops::content::ContentLibrary;
use patchops::git::GitSource;
use patchops::pipeline::Pipeline;
use patchops::server::BackgroundServer;
use patchops::store::{ReconcileRecord, Store};
use serde_json::Value;

const SECRET: &str = "enroll-me";

/// Deterministic content of `size` bytes for a file name.
fn content(name: &str, size: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(name.bytes().fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64)));
    (0..size).map(|_| rng.u8(..)).collect()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// A catalog entry for a Windows Server 2022 update with one content file.
fn catalog_entry(kb: &str, released: &str, reboot: bool, size: usize) -> String {
    let name = format!("windows10.0-{}-x64.msu", kb.to_lowercase());
    let bytes = content(&name, size);
    format!(
        r#"  - id: {kb}-srv
    kb: {kb}
    title: {kb} Cumulative Update for Windows Server 2022
    classification: Security Updates
    severity: Critical
    products: [Windows Server 2022]
    released: {released}
    rebootRequired: {reboot}
    maxRunTime: 30m
    applicability:
      isInstallable: {{fact: {{name: os, equals: Windows Server 2022}}}}
      isInstalled: {{installed: {kb}}}
    files:
      - name: {name}
        url: https://download.example.invalid/{name}
        sha256: {sha}
        size: {size}
"#,
        sha = sha256_hex(&bytes)
    )
}

fn catalog(entries: &[String]) -> String {
    format!("format: patchops.dev/native-catalog/v1\nupdates:\n{}", entries.concat())
}

const CATALOG_RESOURCE: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateCatalog
metadata: {name: main}
spec:
  source: {path: catalog/updates.yaml}
"#;

/// The catalog and the servers collection, no deployment.
const BASE: &str = concat!(
    "apiVersion: patchops.dev/v1alpha1\nkind: UpdateCatalog\nmetadata: {name: main}\n",
    "spec:\n  source: {path: catalog/updates.yaml}\n---\n",
    "apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {name: servers}\n",
    "spec:\n  selector: {matchFacts: {role: server}}\n"
);

/// A mandatory deployment of the updates released from 2026-11-01 to the servers.
fn deployment(extra_spec: &str) -> String {
    format!(
        r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {{name: nov}}
spec:
  criteria: {{releasedAfter: 2026-11-01}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {{name: nov-servers}}
spec:
  updateList: nov
  collection: servers
  startTime: 2026-11-16T00:00:00Z
{extra_spec}"#
    )
}

/// A daily window 02:00–04:00 UTC on the servers collection.
const SERVERS_WITH_WINDOW: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
  maintenanceWindows:
    - {name: nightly, start: "02:00", duration: 2h, timeZone: UTC, recurrence: Daily}
"#;

struct World {
    dir: tempfile::TempDir,
    repo: git2::Repository,
    store: String,
    runner: Pipeline,
    server: Option<BackgroundServer>,
    addr: std::net::SocketAddr,
    library: ContentLibrary,
}

impl World {
    /// A repository with `resources.yaml` and the catalog, a store, the server, and the
    /// content of every catalog file in the library.
    fn new(resources: &str, catalog_yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = git2::Repository::init(dir.path().join("repo")).unwrap();
        let store = dir.path().join("patchops.db").to_string_lossy().to_string();
        let library = ContentLibrary::open(&dir.path().join("content")).unwrap();
        let source = GitSource {
            repo: dir.path().join("repo").to_string_lossy().to_string(),
            revision: None,
            path: None,
            cache_dir: dir.path().join("git-cache"),
        };
        let runner = Pipeline::new(source, patchops::store::open(&store).unwrap(), None);
        let mut world = World { dir, repo, store, runner, server: None, addr: "127.0.0.1:0".parse().unwrap(), library };
        world.commit(resources, catalog_yaml);
        world.start_server();
        world
    }

    fn commit(&mut self, resources: &str, catalog_yaml: &str) {
        // Every file the catalog names goes into the library (update preparation).
        for line in catalog_yaml.lines() {
            if let Some(name) = line.trim().strip_prefix("- name: ") {
                let size: usize = catalog_yaml
                    .split(&format!("name: {name}"))
                    .nth(1)
                    .and_then(|rest| rest.lines().find_map(|l| l.trim().strip_prefix("size: ")))
                    .unwrap()
                    .parse()
                    .unwrap();
                self.library.add_bytes(&content(name, size), Path::new(name)).unwrap();
            }
        }
        let root = self.repo.workdir().unwrap().to_path_buf();
        std::fs::create_dir_all(root.join("catalog")).unwrap();
        std::fs::write(root.join("resources.yaml"), resources).unwrap();
        if !catalog_yaml.is_empty() {
            std::fs::write(root.join("catalog/updates.yaml"), catalog_yaml).unwrap();
        }
        let mut index = self.repo.index().unwrap();
        index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = git2::Signature::now("Admin", "admin@example.org").unwrap();
        let parent = self.repo.head().ok().and_then(|h| h.peel_to_commit().ok());
        let parents: Vec<&git2::Commit> = parent.iter().collect();
        self.repo.commit(Some("HEAD"), &sig, &sig, "change", &tree, &parents).unwrap();
    }

    fn start_server(&mut self) {
        let server =
            BackgroundServer::start(self.addr, &self.store, SECRET, Some(self.library.dir().to_path_buf())).unwrap();
        self.addr = server.addr;
        self.server = Some(server);
    }

    fn stop_server(&mut self) {
        self.server.take().unwrap().stop().unwrap();
    }

    fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn reconcile(&mut self, now: Timestamp) -> ReconcileRecord {
        self.runner.reconcile_once(now).unwrap().0
    }

    fn agent(&self, name: &str, facts: &[(&str, &str)], installed: &[&str]) -> Agent<FactsMachine> {
        self.agent_with(name, facts, installed, 0.0)
    }

    fn agent_with(
        &self,
        name: &str,
        facts: &[(&str, &str)],
        installed: &[&str],
        failure_rate: f64,
    ) -> Agent<FactsMachine> {
        let doc = FactsDocument {
            facts: facts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            installed: installed.iter().map(|s| s.to_string()).collect(),
            packages: BTreeMap::new(),
        };
        let seed = name.bytes().map(u64::from).sum::<u64>();
        let machine = FactsMachine::new(doc, Simulated::new(seed, SignedDuration::from_mins(10), failure_rate, 0.0));
        let options = AgentOptions {
            name: name.into(),
            server: self.base(),
            enroll_secret: SECRET.into(),
            state_dir: Some(self.agent_dir(name)),
            download: Download::Http,
            agent_version: "2.1.0".into(),
            catalogs: None,
            seed,
        };
        Agent::new(options, machine).unwrap()
    }

    fn agent_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join("agents").join(name)
    }

    /// The store as a reconcile would read it.
    fn open_store(&self) -> Box<dyn Store> {
        patchops::store::open(&self.store).unwrap()
    }

    fn metrics(&self) -> String {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        agent.get(format!("{}/metrics", self.base())).call().unwrap().body_mut().read_to_string().unwrap()
    }
}

/// A counter's value from the Prometheus text, 0 when absent.
fn counter(metrics: &str, prefix: &str) -> u64 {
    metrics.lines().filter(|l| l.starts_with(prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok()).sum()
}

fn status<'a>(record: &'a ReconcileRecord, kind: &str, name: &str) -> &'a Value {
    &record.statuses.iter().find(|s| s.kind == kind && s.name == name).unwrap().status
}

const SERVER: &[(&str, &str)] = &[("os", "Windows Server 2022"), ("role", "server")];

/// Tick every agent at each minute from `from` to `to`.
fn run_minutes(agents: &mut [Agent<FactsMachine>], from: Timestamp, to: Timestamp) {
    let mut t = from;
    while t <= to {
        for a in agents.iter_mut() {
            a.tick(t).unwrap();
        }
        t += SignedDuration::from_mins(1);
    }
}

/// New agents register at `t0`, the reconciler assigns their policies, and they fetch
/// them at `t0 + 5 min` (a client without a policy asks again after the batch interval).
fn enroll(w: &mut World, agents: &mut [Agent<FactsMachine>], t0: Timestamp) -> Timestamp {
    for a in agents.iter_mut() {
        a.tick(t0).unwrap();
    }
    w.reconcile(t0);
    let t = t0 + SignedDuration::from_mins(5);
    for a in agents.iter_mut() {
        a.tick(t).unwrap();
        assert!(a.state.policy.is_some(), "{} has its policy", a.options.name);
    }
    t
}

/// Last scan time the store holds per client.
fn last_scans(world: &World) -> BTreeMap<String, Timestamp> {
    let fleet = world.open_store().load_fleet().unwrap();
    fleet.clients.iter().filter_map(|c| Some((c.name.clone(), c.compliance.last_scan.as_ref()?.time))).collect()
}

// ---------------------------------------------------------------------------------------
// Step 2: policy, scans, state messages.

#[test]
fn s1_the_policy_is_polled_every_60_minutes_and_an_unchanged_policy_costs_a_304() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let mut a = vec![w.agent("srv-1", SERVER, &[])];
    let t1 = enroll(&mut w, &mut a, t0);
    assert_eq!(a[0].state.policy.as_ref().unwrap().catalog_version, 1);
    assert_eq!(a[0].state.last_poll, Some(t1));
    let misses = counter(&w.metrics(), "patchops_policy_fetches_total{result=\"miss\"}");
    assert_eq!(misses, 1);
    a[0].tick(t1 + SignedDuration::from_mins(59)).unwrap();
    assert_eq!(a[0].state.last_poll, Some(t1), "no poll before the 60 minutes are up");
    a[0].tick(t1 + SignedDuration::from_mins(60)).unwrap();
    assert_eq!(a[0].state.last_poll, Some(t1 + SignedDuration::from_mins(60)));
    let m = w.metrics();
    assert_eq!(counter(&m, "patchops_policy_fetches_total{result=\"miss\"}"), 1);
    assert_eq!(counter(&m, "patchops_policy_fetches_total{result=\"hit\"}"), 1);
}

#[test]
fn s2_s3_s4_s5_a_new_catalog_is_scanned_at_a_random_time_within_two_hours_against_the_server() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let mut agents: Vec<_> = (0..12).map(|i| w.agent(&format!("srv-{i}"), SERVER, &[])).collect();
    let t1 = enroll(&mut w, &mut agents, t0);
    assert!(agents.iter().all(|a| a.state.history.last_scan.is_none()), "no scan at once");
    run_minutes(&mut agents, t1, t1 + SignedDuration::from_mins(130));
    let scans: Vec<Timestamp> = agents.iter().map(|a| a.state.history.last_scan.unwrap()).collect();
    // Each scheduled scan lies within the 2 h randomisation window after the policy, and
    // they are spread, not all at once.
    for (a, t) in agents.iter().zip(&scans) {
        assert!(*t > t1 && *t <= t1 + SignedDuration::from_hours(2), "{}: {t}", a.options.name);
        assert_eq!(a.state.watch.scan_server.as_deref(), Some(w.base().as_str()));
        assert_eq!(a.state.history.last_scan_version, Some(1));
    }
    let distinct: std::collections::BTreeSet<_> = scans.iter().collect();
    assert!(distinct.len() >= 8, "scan times should be spread: {scans:?}");
    // S6: the scans reached the server.
    assert_eq!(last_scans(&w).len(), 12);
}

#[test]
fn s6_scan_results_wait_for_the_five_minute_batch() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    enroll(&mut w, &mut agents, t0);
    let a = &mut agents[0];
    a.user_trigger(Trigger::UserReevaluation); // T2.5: forced, online
    let t1 = t0 + SignedDuration::from_mins(10);
    a.tick(t1).unwrap();
    assert_eq!(a.state.history.last_scan, Some(t1));
    assert!(last_scans(&w).is_empty(), "the scan is cached, not sent at once");
    a.tick(t1 + SignedDuration::from_mins(4)).unwrap();
    assert!(last_scans(&w).is_empty());
    a.tick(t1 + SignedDuration::from_mins(5)).unwrap();
    assert_eq!(last_scans(&w).get("srv-1"), Some(&t1));
}

#[test]
fn o1_o2_an_online_scan_fetches_a_delta_and_without_the_server_scans_offline_or_fails() {
    let t0 = at("2026-11-16T08:00:00Z");
    let v1 = catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]);
    let mut w = World::new(BASE, &v1);
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    enroll(&mut w, &mut agents, t0);
    let mut a = agents.pop().unwrap();
    a.user_trigger(Trigger::UserReevaluation);
    a.tick(t0 + SignedDuration::from_mins(6)).unwrap();
    assert_eq!(a.catalog().unwrap().len(), 1);
    // Catalog version 2 adds an update: the next online scan fetches only the delta.
    w.commit(
        BASE,
        &catalog(&[
            catalog_entry("KB200", "2026-11-11", false, 1000),
            catalog_entry("KB300", "2026-11-12", false, 1000),
        ]),
    );
    w.reconcile(t0 + SignedDuration::from_mins(7));
    a.tick(t0 + SignedDuration::from_mins(65)).unwrap(); // policy poll: version 2 announced
    a.user_trigger(Trigger::UserReevaluation);
    a.tick(t0 + SignedDuration::from_mins(66)).unwrap();
    assert_eq!(a.catalog().unwrap().version, 2);
    assert_eq!(a.catalog().unwrap().len(), 2);
    let m = w.metrics();
    assert_eq!(counter(&m, "patchops_http_requests_total{route=\"/v1/catalog\",status=\"200\"}"), 2);

    // Server down. A re-evaluation (by catalog version) scans offline with the cache; a
    // forced online scan cannot run and reports a failed scan.
    w.stop_server();
    let t = t0 + SignedDuration::from_hours(48);
    a.user_trigger(Trigger::UserDeploymentEvaluation);
    a.tick(t).unwrap();
    assert_eq!(a.state.history.last_scan, Some(t), "offline scan with the cached catalog");
    a.user_trigger(Trigger::UserReevaluation);
    a.tick(t + SignedDuration::from_mins(1)).unwrap();
    assert_eq!(a.state.history.last_scan, Some(t), "the online scan did not run");
    let pending = a.state.in_flight.iter().flat_map(|b| &b.messages).chain(&a.state.spool.pending);
    assert!(
        pending.clone().any(|m| matches!(m, patchops::compliance::messages::StateMessage::ScanFailed { .. })),
        "a failed scan is reported: {:?}",
        pending.collect::<Vec<_>>()
    );
}

#[test]
fn f1_f2_an_unforced_scan_inside_the_ttl_is_skipped_and_a_forced_one_runs() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    enroll(&mut w, &mut agents, t0);
    let a = &mut agents[0];
    // The new catalog's randomised scan (S2) happens within 2 hours.
    a.tick(t0 + SignedDuration::from_mins(130)).unwrap();
    let first = a.state.history.last_scan;
    assert!(first.is_some());
    a.user_trigger(Trigger::ReevaluationSchedule); // T2.2: unforced
    a.tick(t0 + SignedDuration::from_hours(3)).unwrap();
    assert_eq!(a.state.history.last_scan, first);
    assert_eq!(a.stats.scans_skipped, 1);
    a.user_trigger(Trigger::UserReevaluation); // T2.5: forced
    a.tick(t0 + SignedDuration::from_hours(4)).unwrap();
    assert_eq!(a.state.history.last_scan, Some(t0 + SignedDuration::from_hours(4)));
}

// ---------------------------------------------------------------------------------------
// Step 4: distribution.

/// Two November updates (KB200 needs a restart), one October one.
fn three_updates() -> String {
    catalog(&[
        catalog_entry("KB100", "2026-10-14", false, 2000),
        catalog_entry("KB200", "2026-11-11", true, 300_000),
        catalog_entry("KB300", "2026-11-12", false, 4000),
    ])
}

/// Reconcile, let the agent poll and act, for `minutes` after `from`; every 15 minutes a reconcile.
fn live(w: &mut World, agents: &mut [Agent<FactsMachine>], from: Timestamp, minutes: i64) -> ReconcileRecord {
    let mut last = w.reconcile(from);
    for m in 0..=minutes {
        let t = from + SignedDuration::from_mins(m);
        for a in agents.iter_mut() {
            a.tick(t).unwrap();
        }
        if m % 15 == 14 {
            last = w.reconcile(t);
        }
    }
    last
}

#[test]
fn d1_d2_d5_a_new_mandatory_deployment_scans_at_once_and_downloads_only_the_required_files() {
    let t0 = at("2026-11-16T08:00:00Z");
    let resources = format!("{BASE}---\n{}", deployment("  deadline: 2026-11-30T00:00:00Z\n"));
    let mut w = World::new(BASE, &three_updates());
    // KB300 is installed already; KB100 is not deployed.
    let mut agents = vec![w.agent("srv-1", SERVER, &["KB300"])];
    live(&mut w, &mut agents, t0, 5);
    assert_eq!(agents[0].stats.downloads, 0, "nothing is downloaded without a deployment");
    w.commit(&resources, &three_updates());
    let t1 = t0 + SignedDuration::from_mins(10);
    w.reconcile(t1);
    // The next policy poll brings the deployment; the agent scans at once (D1).
    let poll = agents[0].state.last_poll.unwrap() + SignedDuration::from_mins(60);
    agents[0].tick(poll).unwrap();
    assert_eq!(agents[0].state.history.last_scan, Some(poll), "D1: scanned on the new deployment policy");
    // D2/D5: only KB200 (Required) was downloaded — not KB100 (not deployed), not KB300
    // (installed) — and it was checked and installed (no window).
    let files: Vec<String> = std::fs::read_dir(w.agent_dir("srv-1").join("content"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let kb200 = three_updates().split("KB200-srv").nth(1).unwrap().split("sha256: ").nth(1).unwrap()[..64].to_string();
    assert_eq!(files, vec![kb200]);
    assert_eq!(agents[0].stats.downloads, 1);
    assert_eq!(agents[0].stats.bytes_downloaded, 300_000);
    assert_eq!(agents[0].stats.installs, 1);
}

#[test]
fn d3_d6_d7_installation_waits_for_the_maintenance_window_and_the_new_state_is_sent_within_two_minutes() {
    let t0 = at("2026-11-16T08:00:00Z");
    let resources = format!(
        "{CATALOG_RESOURCE}---\n{SERVERS_WITH_WINDOW}---\n{}",
        deployment("  deadline: 2026-11-30T00:00:00Z\n")
    );
    let mut w = World::new(&resources, &three_updates());
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    live(&mut w, &mut agents, t0, 60);
    let a = &agents[0];
    assert_eq!(a.stats.downloads, 2, "downloaded at once (D2)");
    assert_eq!(a.stats.installs, 0, "no install outside the window");
    assert_eq!(a.state.enforcement.get("KB200-srv"), Some(&Enforcement::WaitingForWindow));
    // The next window opens at 02:00 UTC; the agent wakes for it and installs inside it.
    let window = at("2026-11-17T02:00:00Z");
    assert!(agents[0].next_wake(t0 + SignedDuration::from_hours(17)) <= window);
    agents[0].tick(window).unwrap();
    assert_eq!(agents[0].stats.installs, 2);
    // D6: re-scanned after the install; D7: sent within 2 minutes, not at the 5-minute batch.
    assert_eq!(agents[0].state.history.last_scan, Some(window));
    agents[0].tick(window + SignedDuration::from_mins(2)).unwrap();
    assert_eq!(last_scans(&w).get("srv-1"), Some(&window));
    let record = w.reconcile(window + SignedDuration::from_mins(3));
    let d = status(&record, "UpdateDeployment", "nov-servers");
    assert_eq!(d["machines"]["compliant"], 1, "{d}");
}

#[test]
fn d3_at_the_deadline_updates_install_outside_the_window_unless_the_deployment_honours_windows() {
    let t0 = at("2026-11-16T08:00:00Z");
    let window_base = format!("{CATALOG_RESOURCE}---\n{SERVERS_WITH_WINDOW}");
    for (honor, installs) in [(false, 2), (true, 0)] {
        let extra = format!("  deadline: 2026-11-16T09:00:00Z\n  honorMaintenanceWindowsAtDeadline: {honor}\n");
        let resources = format!("{window_base}---\n{}", deployment(&extra));
        let mut w = World::new(&resources, &three_updates());
        let mut agents = vec![w.agent("srv-1", SERVER, &[])];
        live(&mut w, &mut agents, t0, 58);
        assert_eq!(agents[0].stats.installs, 0, "before the deadline, outside the window");
        agents[0].tick(at("2026-11-16T09:00:00Z")).unwrap();
        assert_eq!(agents[0].stats.installs, installs, "honor windows at deadline: {honor}");
    }
}

#[test]
fn d4_an_optional_deployment_downloads_nothing() {
    let t0 = at("2026-11-16T08:00:00Z");
    let resources = format!("{BASE}---\n{}", deployment("  mandatory: false\n"));
    let mut w = World::new(&resources, &three_updates());
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    live(&mut w, &mut agents, t0, 30);
    assert!(agents[0].state.policy.as_ref().unwrap().deployments.iter().all(|d| !d.mandatory));
    assert_eq!(agents[0].stats.downloads, 0);
    assert_eq!(agents[0].stats.installs, 0);
}

#[test]
fn t1_r3_a_suppressed_restart_keeps_the_update_required_with_its_reason() {
    let t0 = at("2026-11-16T08:00:00Z");
    let extra = "  deadline: 2026-11-30T00:00:00Z\n  suppressRestart: {servers: true}\n";
    let resources = format!("{BASE}---\n{}", deployment(extra));
    let mut w = World::new(&resources, &three_updates());
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    let record = live(&mut w, &mut agents, t0, 30);
    assert_eq!(agents[0].state.enforcement.get("KB200-srv"), Some(&Enforcement::PendingReboot));
    let d = status(&record, "UpdateDeployment", "nov-servers");
    assert_eq!(d["machines"]["pendingReboot"], 1, "{d}");
    assert_eq!(d["machines"]["compliant"], 0, "{d}");
}

// ---------------------------------------------------------------------------------------
// Faults.

#[test]
fn s6_the_spool_survives_a_server_outage_and_an_agent_restart_and_is_applied_once() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    enroll(&mut w, &mut agents, t0);
    let mut a = agents.pop().unwrap();
    w.stop_server();
    a.user_trigger(Trigger::UserReevaluation);
    let t1 = t0 + SignedDuration::from_mins(6);
    // No catalog cached yet and no server: the scan fails; that message is spooled too.
    a.tick(t1).unwrap();
    a.tick(t1 + SignedDuration::from_mins(5)).unwrap();
    assert!(a.state.in_flight.is_some(), "the batch waits for the server");
    drop(a);
    // The agent restarts from its state dir; the server comes back on the same address.
    w.start_server();
    let mut a = w.agent("srv-1", SERVER, &[]);
    assert!(a.state.in_flight.is_some(), "the unacknowledged batch was on disk");
    let sequence = a.state.in_flight.as_ref().unwrap().sequence;
    a.tick(t1 + SignedDuration::from_mins(11)).unwrap();
    assert!(a.state.in_flight.is_none());
    let m = w.metrics();
    assert_eq!(counter(&m, "patchops_state_batches_total{outcome=\"applied\"}"), 1);
    // Sending the same batch again (a lost acknowledgement) is not applied twice.
    let client = patchops::agent::client::ManagementPoint::new(&w.base());
    let batch = patchops::compliance::messages::StateBatch { client: "srv-1".into(), sequence, messages: vec![] };
    client.post_states(a.state.token.as_deref().unwrap(), &batch).unwrap();
    assert_eq!(counter(&w.metrics(), "patchops_state_batches_total{outcome=\"duplicate\"}"), 1);
}

#[test]
fn d5_content_with_a_wrong_hash_is_discarded_and_reported_as_a_failed_download() {
    let t0 = at("2026-11-16T08:00:00Z");
    let resources = format!("{BASE}---\n{}", deployment("  deadline: 2026-11-30T00:00:00Z\n"));
    let mut w = World::new(&resources, &three_updates());
    // The library's copy of KB300's file is damaged.
    let sha = three_updates().split("KB300-srv").nth(1).unwrap().split("sha256: ").nth(1).unwrap()[..64].to_string();
    std::fs::write(w.library.path(&sha), b"not the update").unwrap();
    let mut agents = vec![w.agent("srv-1", SERVER, &[])];
    let record = live(&mut w, &mut agents, t0, 30);
    assert_eq!(agents[0].state.enforcement.get("KB300-srv"), Some(&Enforcement::DownloadFailed));
    assert!(!w.agent_dir("srv-1").join("content").join(&sha).exists());
    assert!(!w.agent_dir("srv-1").join("content").join(format!("{sha}.part")).exists());
    assert_eq!(agents[0].stats.installs, 1, "KB200 is unaffected");
    let d = status(&record, "UpdateDeployment", "nov-servers");
    assert_eq!(d["machines"]["failed"], 1, "{d}");
}

#[test]
fn d5_an_interrupted_download_resumes_with_a_range_request() {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &three_updates());
    w.reconcile(t0);
    let mut a = w.agent("srv-1", SERVER, &[]);
    a.tick(t0).unwrap();
    let text = three_updates();
    let sha = text.split("KB200-srv").nth(1).unwrap().split("sha256: ").nth(1).unwrap()[..64].to_string();
    let whole = std::fs::read(w.library.path(&sha)).unwrap();
    let dest = w.agent_dir("srv-1").join("content").join(&sha);
    std::fs::write(dest.with_extension("part"), &whole[..100_000]).unwrap();
    let client = patchops::agent::client::ManagementPoint::new(&w.base());
    let size = client.download(a.state.token.as_deref().unwrap(), &sha, &dest).unwrap();
    assert_eq!(size, 300_000);
    assert_eq!(std::fs::read(&dest).unwrap(), whole);
    let m = w.metrics();
    assert_eq!(counter(&m, "patchops_http_requests_total{route=\"/v1/content/{sha256}\",status=\"206\"}"), 1, "{m}");
    // Another client's token is needed: without one, 401.
    let anonymous = patchops::agent::client::ManagementPoint::new(&w.base());
    assert!(matches!(
        anonymous.download("not-a-token", &sha, &w.dir.path().join("x")),
        Err(patchops::agent::client::CallError::Unauthorized(_))
    ));
}

// ---------------------------------------------------------------------------------------
// End to end.

#[test]
fn two_hundred_agents_scan_a_new_catalog_install_a_merged_deployment_in_windows_and_reach_100_percent_across_a_server_restart()
 {
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(BASE, &three_updates());
    let mut agents: Vec<Agent<FactsMachine>> =
        (0..200).map(|i| w.agent(&format!("srv-{i:03}"), SERVER, if i % 4 == 0 { &["KB300"] } else { &[] })).collect();
    let tick_all = |agents: &mut Vec<Agent<FactsMachine>>, t: Timestamp| {
        std::thread::scope(|s| {
            for chunk in agents.chunks_mut(25) {
                s.spawn(move || {
                    for a in chunk.iter_mut() {
                        a.tick(t).unwrap();
                    }
                });
            }
        });
    };
    // 1. The catalog is published; every agent registers, gets the policy and scans
    //    within the 2 h randomisation window; the scans arrive in 5-minute batches.
    w.reconcile(t0);
    let mut t = t0;
    while t <= t0 + SignedDuration::from_mins(150) {
        tick_all(&mut agents, t);
        if t.duration_since(t0).as_mins() % 15 == 0 {
            w.reconcile(t);
        }
        t += SignedDuration::from_mins(5);
    }
    assert_eq!(last_scans(&w).len(), 200, "every agent scanned and reported");

    // 2. A deployment with a nightly window is merged in git.
    let resources = format!(
        "{CATALOG_RESOURCE}---\n{SERVERS_WITH_WINDOW}---\n{}",
        deployment("  deadline: 2026-11-30T00:00:00Z\n")
    );
    w.commit(&resources, &three_updates());
    let record = w.reconcile(t);
    assert_eq!(status(&record, "UpdateDeployment", "nov-servers")["targeted"], 200);

    // 3. Agents poll, re-scan, download; installs wait for the 02:00 window. The server
    //    is restarted while agents report.
    let window = at("2026-11-17T02:00:00Z");
    // The re-scans after the installs are due at window + 2 min: the server is down then.
    let restart_at = window + SignedDuration::from_mins(2);
    while t <= window + SignedDuration::from_hours(1) {
        if t == restart_at {
            w.stop_server();
            tick_all(&mut agents, t); // every batch fails and stays in flight, on disk
            w.start_server();
        } else {
            tick_all(&mut agents, t);
        }
        if t.duration_since(t0).as_mins() % 15 == 0 {
            w.reconcile(t);
        }
        // Minute steps around the window, 5-minute steps elsewhere.
        let near = t >= window - SignedDuration::from_mins(10);
        t += SignedDuration::from_mins(if near { 1 } else { 5 });
    }
    let installs: u64 = agents.iter().map(|a| a.stats.installs).sum();
    let downloads: u64 = agents.iter().map(|a| a.stats.downloads).sum();
    // 150 agents need KB200 and KB300, 50 only KB200 (D5: nothing else is fetched).
    assert_eq!(downloads, 150 * 2 + 50);
    assert_eq!(installs, 150 * 2 + 50);
    assert!(agents.iter().all(|a| a.state.in_flight.is_none() && a.state.spool.pending.is_empty()));
    let failed_sends: u64 = agents.iter().map(|a| a.stats.send_failures).sum();
    assert!(failed_sends >= 200, "the outage was real: {failed_sends} sends failed");
    let record = w.reconcile(t);
    let d = status(&record, "UpdateDeployment", "nov-servers");
    assert_eq!(d["machines"]["compliant"], 200, "{d}");
    assert_eq!(d["compliancePercent"], 100.0, "{d}");
    // Nothing was applied twice and nothing acknowledged was lost: every agent's last
    // scan (the one after its install) is what the store holds.
    let scans = last_scans(&w);
    for a in &agents {
        assert_eq!(scans.get(&a.options.name), a.state.history.last_scan.as_ref(), "{}", a.options.name);
    }
}

// ---------------------------------------------------------------------------------------
// The real scanner and the command line.

/// This machine's dpkg agent (apt in simulation) against a server whose catalog is the
/// machine's bookworm-security index, registered and scanned once at 2026-11-16T08:06Z;
/// None when the machine has no apt lists. Also the catalog resource, for later commits.
fn this_machine_scanned() -> Option<(World, String, Agent<patchops::agent::machine::DpkgMachine>)> {
    let Some(index) = std::fs::read_dir("/var/lib/apt/lists").ok().and_then(|d| {
        d.filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.to_string_lossy().contains("security") && p.to_string_lossy().contains("_Packages"))
    }) else {
        eprintln!("no bookworm-security index in /var/lib/apt/lists (scripts/test runs apt-get update)");
        return None;
    };
    let resources = format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateCatalog\nmetadata: {{name: security}}\nspec:\n  \
         source: {{file: {}}}\n  format: debian-packages\n---\n{}",
        index.display(),
        BASE.split("---\n").nth(1).unwrap()
    );
    let t0 = at("2026-11-16T08:00:00Z");
    let mut w = World::new(&resources, "");
    let machine = patchops::agent::machine::DpkgMachine::new(
        Path::new("/var/lib/dpkg/status"),
        true,
        [("role".to_string(), "server".to_string())].into_iter().collect(),
    );
    let options = AgentOptions {
        name: "this-machine".into(),
        server: w.base(),
        enroll_secret: SECRET.into(),
        state_dir: Some(w.agent_dir("this-machine")),
        download: Download::Http,
        agent_version: "2.1.0".into(),
        catalogs: None,
        seed: 1,
    };
    let mut a = Agent::new(options, machine).unwrap();
    a.tick(t0).unwrap();
    w.reconcile(t0);
    a.tick(t0 + SignedDuration::from_mins(5)).unwrap();
    a.user_trigger(Trigger::UserReevaluation);
    a.tick(t0 + SignedDuration::from_mins(6)).unwrap();
    Some((w, resources, a))
}

#[test]
fn s5_the_dpkg_agent_reports_this_machines_missing_security_updates_through_the_server() {
    let Some((w, _, mut a)) = this_machine_scanned() else { return };
    let t0 = at("2026-11-16T08:00:00Z");
    a.tick(t0 + SignedDuration::from_mins(11)).unwrap();
    // What the agent found is what dpkg says, and it reached the store intact.
    let catalog = a.catalog().unwrap();
    let facts = patchops::agent::scanners::dpkg::facts(
        &patchops::agent::scanners::dpkg::read_status(Path::new("/var/lib/dpkg/status")).unwrap(),
    );
    let expected: std::collections::BTreeSet<String> = patchops::agent::scanners::scan(catalog, &facts)
        .into_iter()
        .filter(|(_, v)| *v == patchops::catalog::ScanVerdict::Missing)
        .map(|(i, _)| catalog.updates[i as usize].id.clone())
        .collect();
    assert_eq!(a.state.missing, expected);
    let fleet = w.open_store().load_fleet().unwrap();
    let client = fleet.clients.iter().find(|c| c.name == "this-machine").unwrap();
    let stored_missing =
        client.compliance.states.iter().filter(|s| s.scan() == patchops::compliance::ScanResult::Missing).count();
    assert_eq!(stored_missing, expected.len());
    assert_eq!(client.facts.get("role").map(String::as_str), Some("server"));
    assert!(client.facts.contains_key("os"), "the os fact comes from /etc/os-release");
}

/// D5 with a package manager: apt fetches the .deb files from the machine's own mirrors,
/// so the agent never asks the management point for them (which holds none) and reports
/// what apt says. apt runs in simulation (`-s`), so nothing on this machine changes.
#[test]
fn d5_the_dpkg_agent_lets_apt_fetch_the_packages_instead_of_the_management_point() {
    let status = Path::new("/var/lib/dpkg/status");
    let before = patchops::agent::scanners::dpkg::read_status(status).unwrap();
    let Some((mut w, catalog_resource, mut a)) = this_machine_scanned() else { return };
    let t0 = at("2026-11-16T08:00:00Z");
    let missing: Vec<String> = a.state.missing.iter().take(2).cloned().collect();
    if missing.is_empty() {
        eprintln!("this machine has no pending security update to deploy; skipped");
        return;
    }
    // Deploy two of the updates this machine needs.
    let resources = format!(
        "{catalog_resource}---\napiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: needed}}\n\
         spec:\n  updates: [{}]\n---\napiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\n\
         metadata: {{name: needed-servers}}\nspec:\n  updateList: needed\n  collection: servers\n  \
         startTime: 2026-11-16T00:00:00Z\n  deadline: 2026-11-30T00:00:00Z\n",
        missing.join(", ")
    );
    w.commit(&resources, "");
    let t1 = t0 + SignedDuration::from_mins(10);
    w.reconcile(t1);
    let poll = a.state.last_poll.unwrap() + SignedDuration::from_mins(60);
    a.tick(poll).unwrap();

    for id in &missing {
        let state = a.state.enforcement.get(id).copied();
        assert_ne!(state, Some(patchops::compliance::Enforcement::DownloadFailed), "{id}");
        assert!(state.is_some(), "{id}: the deployment was enforced");
    }
    assert_eq!(a.stats.bytes_downloaded, 0, "nothing came from the management point");
    assert_eq!(a.stats.downloads, missing.len() as u64, "apt fetched each update's packages");
    assert_eq!(a.stats.installs, missing.len() as u64, "{:?}", a.state.enforcement);
    let content = w.agent_dir("this-machine").join("content");
    assert_eq!(std::fs::read_dir(&content).map(|d| d.count()).unwrap_or(0), 0, "no file in the agent's content folder");
    assert_eq!(patchops::agent::scanners::dpkg::read_status(status).unwrap(), before, "a simulation changes nothing");
}

#[test]
fn the_agent_command_registers_once_and_a_wrong_enrollment_secret_is_a_clear_error() {
    let mut w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let facts = w.dir.path().join("facts.yaml");
    std::fs::write(&facts, "facts: {os: Windows Server 2022, role: server}\ninstalled: [KB100]\n").unwrap();
    let (base, agent_dir) = (w.base(), w.agent_dir("cli-1"));
    let run_with = |secret: &str, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
            .args(["agent", "--once", "--scanner", "rules", "--name", "cli-1"])
            .args(extra)
            .arg("--server")
            .arg(&base)
            .arg("--enroll-secret")
            .arg(secret)
            .arg("--facts")
            .arg(&facts)
            .arg("--state-dir")
            .arg(&agent_dir)
            .output()
            .unwrap()
    };
    let run = |secret: &str| run_with(secret, &[]);
    let out = run("wrong");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("wrong enrollment secret") && stderr.contains("--enroll-secret"), "{stderr}");
    // Registered, but no reconcile has assigned it a policy: --once cannot complete a
    // cycle and says what to run.
    let out = run(SECRET);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no policy for cli-1 yet") && stderr.contains("patchops run --once"), "{stderr}");
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(w.agent_dir("cli-1").join("state.json")).unwrap()).unwrap();
    assert!(state["token"].as_str().is_some_and(|t| t.len() >= 32));
    let fleet = w.open_store().load_fleet().unwrap();
    assert_eq!(fleet.clients.iter().find(|c| c.name == "cli-1").unwrap().facts["role"], "server");

    // After a reconcile, one `--once` run is a whole cycle: policy, scan, the state batch
    // delivered and acknowledged before it exits 0 (not at the next batch interval).
    w.reconcile(Timestamp::now());
    let out = run_with(SECRET, &["--scan-now"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("every state message acknowledged"));
    let fleet = w.open_store().load_fleet().unwrap();
    let client = fleet.clients.iter().find(|c| c.name == "cli-1").unwrap();
    assert!(client.compliance.last_scan.is_some(), "the scan reached the store");
}

#[test]
fn simulate_runs_agents_against_the_embedded_server_and_ends_with_the_compliance_table() {
    let dir = tempfile::tempdir().unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .current_dir(root)
        .env("PATCHOPS_STATE_DIR", dir.path())
        .args(["simulate", "--clients", "25", "--duration", "1d", "--path", "examples/repo", "--output", "json"])
        .arg("--store")
        .arg(dir.path().join("simulate.db"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let record: Value = serde_json::from_slice(&out.stdout).unwrap();
    let deployments: Vec<&Value> =
        record["statuses"].as_array().unwrap().iter().filter(|s| s["kind"] == "UpdateDeployment").collect();
    assert!(!deployments.is_empty());
    let compliant: u64 = deployments.iter().map(|d| d["status"]["machines"]["compliant"].as_u64().unwrap()).sum();
    assert!(compliant > 0, "agents scanned, installed and reported: {deployments:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("installs"), "{stderr}");
}

#[test]
fn run_embeds_the_management_point_so_an_agent_gets_its_policy_from_the_reconciler() {
    let w = World::new(BASE, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .arg("run")
        .arg("--repo")
        .arg(w.repo.workdir().unwrap())
        .arg("--store")
        .arg(w.dir.path().join("run.db"))
        .args(["--interval", "1s", "--listen", &format!("127.0.0.1:{port}"), "--enroll-secret", SECRET])
        .env("PATCHOPS_STATE_DIR", w.dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let doc = FactsDocument {
        facts: SERVER.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    };
    let options = AgentOptions {
        name: "srv-run".into(),
        server: format!("http://127.0.0.1:{port}"),
        enroll_secret: SECRET.into(),
        state_dir: None,
        download: Download::Http,
        agent_version: "2.1.0".into(),
        catalogs: None,
        seed: 3,
    };
    let mut a = Agent::new(options, FactsMachine::new(doc, FactsMachine::default_installer(3))).unwrap();
    // Registered once the server listens; the policy arrives after the next reconcile
    // (a client without one asks again after the batch interval).
    let started = std::time::Instant::now();
    let mut t = Timestamp::now();
    while a.state.policy.is_none() && started.elapsed() < std::time::Duration::from_secs(60) {
        std::thread::sleep(std::time::Duration::from_millis(300));
        t += SignedDuration::from_mins(5);
        a.tick(t).unwrap();
    }
    let policy = a.state.policy.as_ref().expect("a policy from the embedded management point");
    assert_eq!(policy.catalog_version, 1);
    assert!(policy.revision.contains("@sha1:"), "{}", policy.revision);
    // SIGTERM stops the reconciler and the management point cleanly.
    std::process::Command::new("kill").arg("-TERM").arg(run.id().to_string()).status().unwrap();
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("management point stopped"));
}

/// Machines targeted by every deployment, as `patchops status -o json` shows them.
fn targeted_in_status(store: &std::path::Path) -> Option<u64> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["status", "--output", "json", "--store"])
        .arg(store)
        .output()
        .unwrap();
    let record: Value = serde_json::from_slice(&out.stdout).ok()?;
    let statuses = record["statuses"].as_array()?;
    Some(
        statuses
            .iter()
            .filter(|s| s["kind"] == "UpdateDeployment")
            .filter_map(|s| s["status"]["targeted"].as_u64())
            .sum(),
    )
}

#[test]
fn s6_a_new_machine_is_in_status_seconds_after_one_agent_once_against_run() {
    let resources = format!("{BASE}---\n{}", deployment("  deadline: 2026-11-30T00:00:00Z\n"));
    let w = World::new(&resources, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = w.dir.path().join("live.db");
    // A long interval: only the live site (not a periodic reconcile) can bring the machine in.
    let mut run = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .arg("run")
        .arg("--repo")
        .arg(w.repo.workdir().unwrap())
        .arg("--store")
        .arg(&store)
        .args(["--interval", "1h", "--listen", &format!("127.0.0.1:{port}"), "--enroll-secret", SECRET])
        .env("PATCHOPS_STATE_DIR", w.dir.path().join("state"))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(w.dir.path().join("run.log")).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(w.dir.path().join("run.log")).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let before = loop {
        if let Some(n) = targeted_in_status(&store) {
            break n;
        }
        assert!(std::time::Instant::now() < deadline, "run published no status: {}", log());
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let facts = w.dir.path().join("facts.yaml");
    std::fs::write(&facts, "facts: {os: Windows Server 2022, role: server}\ninstalled: [KB100]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["agent", "--once", "--scan-now", "--scanner", "rules", "--name", "live-1"])
        .arg("--server")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--enroll-secret", SECRET, "--facts"])
        .arg(&facts)
        .arg("--state-dir")
        .arg(w.agent_dir("live-1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "one whole cycle: {}", String::from_utf8_lossy(&out.stderr));
    let acknowledged = std::time::Instant::now();
    let mut after = before;
    while after == before && acknowledged.elapsed() < std::time::Duration::from_secs(10) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = targeted_in_status(&store).unwrap_or(before);
    }
    let _ = run.kill();
    let _ = run.wait();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["status", "--output", "json", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        after > before,
        "the new machine reached the deployment status within 10 s ({before} → {after}): {}\n{}",
        log(),
        String::from_utf8_lossy(&status.stdout)
    );
}

#[test]
fn s6_serve_follows_the_site_run_publishes_gives_a_policy_at_registration_and_reads_the_machine_from_memory() {
    let resources = format!("{BASE}---\n{}", deployment("  deadline: 2026-11-30T00:00:00Z\n"));
    let w = World::new(&resources, &catalog(&[catalog_entry("KB200", "2026-11-11", false, 1000)]));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let store = w.dir.path().join("shared.db");
    let tokens = w.dir.path().join("read-tokens");
    std::fs::write(&tokens, "read-token-1\n").unwrap();
    let spawn = |args: &[&std::ffi::OsStr], log: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
            .args(args)
            .env("PATCHOPS_STATE_DIR", w.dir.path().join("state"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(w.dir.path().join(log)).unwrap())
            .spawn()
            .unwrap()
    };
    let log = |name: &str| std::fs::read_to_string(w.dir.path().join(name)).unwrap_or_default();
    // The engine without a management point, and a management point alone on its store.
    let mut run = spawn(
        &[
            "run".as_ref(),
            "--repo".as_ref(),
            w.repo.workdir().unwrap().as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
        ]
        .into_iter()
        .chain(["--interval", "1h", "--no-serve"].map(std::ffi::OsStr::new))
        .collect::<Vec<_>>(),
        "run.log",
    );
    let mut serve = spawn(
        &["serve".as_ref(), "--store".as_ref(), store.as_os_str(), "--read-token-file".as_ref(), tokens.as_os_str()]
            .into_iter()
            .chain(["--listen", &format!("127.0.0.1:{port}"), "--enroll-secret", SECRET].map(std::ffi::OsStr::new))
            .collect::<Vec<_>>(),
        "serve.log",
    );
    let describe = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
            .args(["describe", "client", "live-2", "--output", "json", "--server", &format!("http://127.0.0.1:{port}")])
            .env("PATCHOPS_TOKEN", "read-token-1")
            .output()
            .unwrap()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    // The read API answers once serve follows the site run published (404: no such client yet).
    loop {
        let out = describe();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        if err.contains("404") || err.contains("no client") || err.contains("not found") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "serve never followed the site: {err}\n{}", log("serve.log"));
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let facts = w.dir.path().join("facts.yaml");
    std::fs::write(&facts, "facts: {os: Windows Server 2022, role: server}\ninstalled: [KB100]\n").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["agent", "--once", "--scan-now", "--scanner", "rules", "--name", "live-2"])
        .arg("--server")
        .arg(format!("http://127.0.0.1:{port}"))
        .args(["--enroll-secret", SECRET, "--facts"])
        .arg(&facts)
        .arg("--state-dir")
        .arg(w.agent_dir("live-2"))
        .output()
        .unwrap();
    let agent_log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "one whole cycle against serve: {agent_log}\n{}", log("serve.log"));
    // Serve's own engine has the scan: the machine requires KB200 in the deployment.
    let acknowledged = std::time::Instant::now();
    let client = loop {
        let out = describe();
        if out.status.success() {
            let v: Value = serde_json::from_slice(&out.stdout).unwrap();
            if v["lastScan"].is_object() || v["last_scan"].is_object() {
                break v;
            }
        }
        assert!(
            acknowledged.elapsed() < std::time::Duration::from_secs(10),
            "serve's read API never showed the scan: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            log("serve.log")
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let text = client.to_string();
    assert!(text.contains("KB200") && text.contains("nov-servers"), "{client:#}");
    // And run, the site's owner, published it to the store.
    let mut published = false;
    while !published && acknowledged.elapsed() < std::time::Duration::from_secs(10) {
        published = targeted_in_status(&store).is_some_and(|n| n >= 1);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    for child in [&mut run, &mut serve] {
        let _ = child.kill();
        let _ = child.wait();
    }
    assert!(published, "run published the new machine: {}", log("run.log"));
    assert!(!agent_log.contains("no policy"), "the policy came with the registration: {agent_log}");
}
