//! `patchops bench`: figures for the reconcile core and the store on a synthetic fleet
//! (100,000 clients × 2,000 updates × 50 deployments ≈ 20 million states by default).
//! Prints timings and peak memory; asserts nothing — targets are read off the output.
//! Each suite (`--suite catalog|server|audit|plan|rpm|cve`) lives in its own file and
//! measures against a reference taken in the same run.

pub mod audit;
pub mod catalog;
pub mod console;
pub mod cve;
pub mod operator;
pub mod plan;
pub mod rpm;
pub mod server;
pub mod site;
pub mod sla;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};

use crate::catalog::{Applicability, Catalog, Severity, Update};
use crate::compliance::{Client, ClientCompliance, Enforcement, Fleet, PackedState, ScanRecord, ScanResult};
use crate::desired::DesiredState;
use crate::reconcile::{Engine, Inputs, Previous};
use crate::resources::*;
use crate::{Error, Result};

/// Which benchmarks to run (each in its own process keeps peak-memory figures apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Suite {
    /// The reconcile core (and, with --sqlite, a cold start from the store).
    Reconcile,
    /// Catalog imports of the real vendor data, a 100,000-update native catalog, deltas.
    Catalog,
    /// The management point over loopback HTTP: policy fetches, state ingestion.
    Server,
    /// `audit` of one update over a generated repository of 10,000 commits.
    Audit,
    /// `patchops plan` on 1,000 resource files and the bench fleet in SQLite.
    Plan,
    /// The RPM importers on the real data; an rpm scan of 2,000 packages against 5,000
    /// advisories next to plain `rpm -qa` of the same root.
    Rpm,
    /// `patchops cve --list` and `cve CVE-…` over the bench fleet.
    Cve,
    /// `patchops sla` over a year of daily status history of the bench deployments.
    Sla,
    /// The live site engine: whole derivation, waves, memory, cold start, freshness of
    /// the read API and the store, policy ETag hits next to a bare handler.
    Site,
    /// One resync wave of the controller over 1,000 custom resources and the bench fleet,
    /// behind a mock API server on loopback.
    Operator,
    /// The console's deployment page for 10,000 machines: `/ui/` and the read API's
    /// answers it loads, next to a bare handler.
    Console,
}

#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Which benchmarks to run.
    #[arg(value_enum, default_value = "reconcile")]
    pub suite: Suite,
    #[arg(long, default_value_t = 100_000)]
    pub clients: usize,
    #[arg(long, default_value_t = 2_000)]
    pub updates: usize,
    #[arg(long, default_value_t = 50)]
    pub deployments: usize,
    /// Products; each client reports every update of its product, so states per client
    /// = updates / products.
    #[arg(long, default_value_t = 10)]
    pub products: usize,
    /// Also measure a cold start from a SQLite store written to this file (it is created
    /// once and reused; delete it to rebuild).
    #[arg(long)]
    pub sqlite: Option<std::path::PathBuf>,
    /// `site`: also measure a cold start from this PostgreSQL database (a scratch schema
    /// is written and dropped), e.g. postgres://postgres@127.0.0.1:5432/test.
    #[arg(long)]
    pub postgres: Option<String>,
    /// `site`: state batches whose freshness is measured.
    #[arg(long, default_value_t = 1000)]
    pub batches: usize,
}

/// Peak resident memory of this process, from /proc (bytes).
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kb| kb * 1024)
}

/// A bench desired state with `sites` collections `site-N`, each selecting the machines
/// whose `site` fact is its name.
pub fn site_collections(sites: usize) -> DesiredState {
    let mut desired = DesiredState { revision: "bench@sha1:0".into(), ..Default::default() };
    for s in 0..sites {
        let name = format!("site-{s}");
        let spec = CollectionSpec {
            selector: Some(FactSelector {
                match_facts: BTreeMap::from([("site".to_string(), name.clone())]),
                match_expressions: vec![],
            }),
            ..Default::default()
        };
        desired.collections.insert(name.clone(), Collection::new(&name, spec));
    }
    desired
}

/// The synthetic inputs: products with monthly updates, sites as collections,
/// deployments of one product's updates to one site.
pub fn synthetic(args: &BenchArgs, now: Timestamp) -> (DesiredState, Catalog, Fleet) {
    let product = |p: usize| format!("Product {p:02}");
    let updates: Vec<Update> = (0..args.updates)
        .map(|i| {
            let p = i % args.products;
            let kb = format!("KB{}", 5_000_000 + i);
            Update {
                id: format!("{kb}-p{p}"),
                kb: Some(kb.clone()),
                title: format!("Update {i} for {}", product(p)),
                classification: if i % 4 == 0 { "Critical Updates" } else { "Security Updates" }.into(),
                severity: Severity::Important,
                products: vec![product(p)],
                released: jiff::civil::date(2025, 1, 1)
                    .checked_add(jiff::Span::new().days((i / args.products) as i64 % 600))
                    .unwrap(),
                supersedes: vec![],
                expired: false,
                reboot_required: i % 3 == 0,
                max_run_time: crate::time::Duration::from_mins(10),
                cves: vec![],
                applicability: Applicability::for_product_kb(&product(p), &kb),
                files: vec![],
            }
        })
        .collect();
    let catalog = Catalog::new(1, updates, &HashMap::new());
    let sites = 10;
    let mut desired = site_collections(sites);
    for p in 0..args.products {
        let name = format!("product-{p}");
        let spec = UpdateListSpec {
            description: None,
            updates: vec![],
            criteria: Some(UpdateCriteria { products: vec![product(p)], ..Default::default() }),
            exclude_superseded: true,
            exclude_expired: true,
        };
        desired.update_lists.insert(name.clone(), UpdateList::new(&name, spec));
    }
    for d in 0..args.deployments {
        let name = format!("deploy-{d:02}");
        let spec = UpdateDeploymentSpec {
            deadline: Some(now + SignedDuration::from_hours(24 * 7)),
            collection: Some(format!("site-{}", (d / args.products) % sites)),
            ..UpdateDeploymentSpec::new(format!("product-{}", d % args.products), now - SignedDuration::from_hours(24))
        };
        desired.deployments.insert(name.clone(), UpdateDeployment::new(&name, spec));
    }
    let per_product: Vec<Vec<u32>> = (0..args.products)
        .map(|p| {
            catalog
                .updates
                .iter()
                .enumerate()
                .filter(|(_, u)| u.products[0] == product(p))
                .map(|(i, _)| catalog.keys[i])
                .collect()
        })
        .collect();
    let mut rng = fastrand::Rng::with_seed(42);
    let clients = (0..args.clients)
        .map(|c| {
            let p = c % args.products;
            let mut states: Vec<PackedState> = per_product[p]
                .iter()
                .map(|&k| {
                    let scan = if rng.u8(0..10) < 8 { ScanResult::Installed } else { ScanResult::Missing };
                    PackedState::new(
                        k,
                        scan,
                        if rng.u8(0..100) == 0 { Enforcement::InstallFailed } else { Enforcement::None },
                    )
                })
                .collect();
            states.sort_unstable();
            Client {
                name: format!("host-{c:06}"),
                facts: BTreeMap::from([
                    ("site".to_string(), format!("site-{}", c % sites)),
                    ("role".to_string(), "workstation".to_string()),
                ]),
                compliance: ClientCompliance {
                    agent_version: Some("1.0.0".into()),
                    last_scan: Some(ScanRecord {
                        time: now - SignedDuration::from_secs(rng.i64(0..20 * 3600)),
                        catalog_version: 1,
                        error: None,
                    }),
                    states,
                    ..Default::default()
                },
            }
        })
        .collect();
    (desired, catalog, Fleet::new(clients))
}

pub fn run(args: BenchArgs) -> Result<ExitCode> {
    match args.suite {
        Suite::Catalog => return catalog::run(),
        Suite::Server => return server::run(),
        Suite::Audit => return audit::run(),
        Suite::Plan => return plan::run(&args),
        Suite::Rpm => return rpm::run(),
        Suite::Cve => return cve::run(&args),
        Suite::Sla => return sla::run(&args),
        Suite::Console => return console::run(),
        Suite::Site => return site::run(&args),
        Suite::Operator => return operator::run(&args),
        Suite::Reconcile => {}
    }
    let now = Timestamp::now();
    println!(
        "patchops bench: {} clients × {} updates × {} deployments, {} threads",
        args.clients,
        args.updates,
        args.deployments,
        rayon::current_num_threads()
    );
    let t = Instant::now();
    let (desired, catalog, mut fleet) = synthetic(&args, now);
    let states = fleet.state_count();
    println!("  synthetic snapshot: {states} compliance states, built in {:.2} s", t.elapsed().as_secs_f64());
    let previous = Previous::default();

    let mut full = Vec::new();
    let mut engine = None;
    for _ in 0..3 {
        let t = Instant::now();
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now };
        let (e, outcome) = Engine::new(&inputs);
        full.push(t.elapsed().as_secs_f64());
        std::hint::black_box(&outcome);
        engine = Some(e);
    }
    let mut engine = engine.expect("ran");
    full.sort_by(|a, b| a.total_cmp(b));
    println!("  full reconcile (in memory): best {:.3} s, median {:.3} s", full[0], full[1]);

    // One client's new scan, applied incrementally.
    let mut times = Vec::new();
    for i in 0..200 {
        let idx = (i * 7919) % fleet.clients.len();
        let before = fleet.clients[idx].clone();
        let c = &mut fleet.clients[idx];
        c.compliance.last_scan = Some(ScanRecord { time: now, catalog_version: 1, error: None });
        for s in c.compliance.states.iter_mut() {
            *s = PackedState::new(s.key(), ScanResult::Installed, Enforcement::None);
        }
        let t = Instant::now();
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now };
        let out = engine.update_client(&inputs, idx, &before);
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        if out.is_none() {
            return Err(Error::Usage("incremental reconcile fell back to a full one".into()));
        }
    }
    times.sort_by(|a, b| a.total_cmp(b));
    println!(
        "  re-reconcile after one client's new states: median {:.2} ms, p99 {:.2} ms",
        times[times.len() / 2],
        times[times.len() * 99 / 100]
    );
    if let Some(peak) = peak_rss() {
        println!(
            "  peak memory: {:.0} MiB = {:.1} bytes per compliance state",
            peak as f64 / 1048576.0,
            peak as f64 / states as f64
        );
    }
    if let Some(path) = &args.sqlite {
        cold_start(path, &args, &desired, &catalog, &fleet, now)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The bulk paths both stores have (imports and benchmarks).
pub(super) trait BulkStore: crate::store::Store {
    fn upsert_all(&mut self, clients: &[crate::store::ClientInfo], now: Timestamp) -> Result<()>;
    fn keys(&self) -> Result<HashMap<String, u32>>;
    fn load_states(&mut self, rows: &mut dyn Iterator<Item = (u32, PackedState, Timestamp)>) -> Result<u64>;
    fn mark_scanned(&mut self, time: Timestamp, catalog_version: u64) -> Result<()>;
}

macro_rules! bulk_store {
    ($t:ty) => {
        impl BulkStore for $t {
            fn upsert_all(&mut self, clients: &[crate::store::ClientInfo], now: Timestamp) -> Result<()> {
                self.upsert_clients(clients, now)
            }
            fn keys(&self) -> Result<HashMap<String, u32>> {
                self.client_keys()
            }
            fn load_states(&mut self, rows: &mut dyn Iterator<Item = (u32, PackedState, Timestamp)>) -> Result<u64> {
                self.bulk_load_states(rows)
            }
            fn mark_scanned(&mut self, time: Timestamp, catalog_version: u64) -> Result<()> {
                <$t>::mark_scanned(self, time, catalog_version)
            }
        }
    };
}
bulk_store!(crate::store::sqlite::SqliteStore);
bulk_store!(crate::store::postgres::PostgresStore);

/// The catalog and the fleet's states written to `store`, every client scanned against
/// version 1 an hour before `now` (the reconcile, plan and site benchmarks).
pub(super) fn load_bulk(store: &mut dyn BulkStore, catalog: &Catalog, fleet: &Fleet, now: Timestamp) -> Result<u64> {
    store.save_catalog(&catalog.updates, now)?;
    let stored = store.load_catalog()?;
    let infos: Vec<crate::store::ClientInfo> = fleet
        .clients
        .iter()
        .map(|c| crate::store::ClientInfo {
            name: c.name.clone(),
            facts: c.facts.clone(),
            agent_version: c.compliance.agent_version.clone(),
        })
        .collect();
    store.upsert_all(&infos, now)?;
    let keys = store.keys()?;
    let key_of: HashMap<u32, u32> = catalog
        .keys
        .iter()
        .enumerate()
        .map(|(i, k)| (*k, stored.keys[stored.index_of(&catalog.updates[i].id).expect("same ids") as usize]))
        .collect();
    let (key_of, keys) = (&key_of, &keys);
    let mut rows = fleet.clients.iter().flat_map(|c| {
        let ck = keys[&c.name];
        c.compliance
            .states
            .iter()
            .map(move |s| (ck, PackedState::new(key_of[&s.key()], s.scan(), s.enforcement()), now))
    });
    let n = store.load_states(&mut rows)?;
    store.mark_scanned(now - SignedDuration::from_hours(1), 1)?;
    Ok(n)
}

/// [`load_bulk`] into a new SQLite file.
pub(super) fn write_store(path: &std::path::Path, catalog: &Catalog, fleet: &Fleet, now: Timestamp) -> Result<u64> {
    let mut store = crate::store::sqlite::SqliteStore::open(path)?;
    load_bulk(&mut store, catalog, fleet, now)
}

fn cold_start(
    path: &std::path::Path,
    args: &BenchArgs,
    desired: &DesiredState,
    catalog: &Catalog,
    fleet: &Fleet,
    now: Timestamp,
) -> Result<()> {
    use crate::store::Store;
    let _ = args;
    if !path.exists() {
        let t = Instant::now();
        let n = write_store(path, catalog, fleet, now)?;
        println!("  wrote the SQLite store {} ({n} states) in {:.1} s", path.display(), t.elapsed().as_secs_f64());
    }
    let t = Instant::now();
    let store = crate::store::sqlite::SqliteStore::open(path)?;
    let catalog = store.load_catalog()?;
    let t_cat = t.elapsed().as_secs_f64();
    let fleet = store.load_fleet()?;
    let t_fleet = t.elapsed().as_secs_f64();
    let previous = Previous::default();
    let (_, outcome) = Engine::new(&Inputs { desired, catalog: &catalog, fleet: &fleet, previous: &previous, now });
    std::hint::black_box(outcome);
    println!(
        "  cold start from SQLite: catalog {:.2} s, fleet ({} states) {:.2} s, reconciled at {:.2} s",
        t_cat,
        fleet.state_count(),
        t_fleet,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
