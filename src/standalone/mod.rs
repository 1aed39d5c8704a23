//! The standalone driver (`patchops run`): read desired state from git, sync the
//! catalogs, take the compliance clients reported, call the reconcile core, persist the
//! status and policies, and repeat on an interval. It carries data; it never decides.

pub mod bench;
pub mod bench_audit;
pub mod bench_catalog;
pub mod bench_plan;
pub mod bench_rpm;
pub mod bench_server;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::catalog::Catalog;
use crate::catalog::sync::Syncer;
use crate::desired::DesiredState;
use crate::git::RepoArgs;
use crate::git::{GitSource, SourceTree};
use crate::output::OutputFormat;
use crate::reconcile::{Inputs, Outcome, previous_from, reconcile};
use crate::resources::UpdateCatalogStatus;
use crate::sim::SimFleet;
use crate::store::{ReconcileRecord, ResourceStatus, Store};
use crate::time::Duration;
use crate::{Error, Result};

pub const DEFAULT_STORE: &str = ".patchops/patchops.db";

/// Where clones and the default store live: `$PATCHOPS_STATE_DIR` or `.patchops`.
pub fn state_dir() -> PathBuf {
    std::env::var_os("PATCHOPS_STATE_DIR").map(PathBuf::from).unwrap_or_else(|| PathBuf::from(".patchops"))
}

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = DEFAULT_STORE)]
    pub store: String,
    /// Time between reconciles.
    #[arg(long, default_value = "60s")]
    pub interval: Duration,
    /// Reconcile once and exit (exit 1 if it failed).
    #[arg(long)]
    pub once: bool,
    /// Simulate the clients described in this fleet file (e.g. examples/fleet.yaml).
    #[arg(long)]
    pub simulate_fleet: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,
    /// After each reconcile, commit a compliance snapshot to this branch of the desired-state
    /// repository (e.g. patchops/status), only when it changed. A failing status commit is
    /// logged and does not fail the reconcile.
    #[arg(long, value_name = "BRANCH")]
    pub status_branch: Option<String>,
    /// Push the status branch to this remote (a remote name of the repository or a URL).
    /// A URL repository pushes to its own URL without this flag.
    #[arg(long, value_name = "REMOTE", requires = "status_branch")]
    pub status_push: Option<String>,
    /// Run DeploymentRules after each new catalog version: proposals go on branches of
    /// the (local) repository, never deployed until merged.
    #[arg(long)]
    pub propose_rules: bool,
    #[command(flatten)]
    pub rules: crate::git::rules::RuleArgs,
    /// The embedded management point agents talk to (not with --once).
    #[command(flatten)]
    pub server: crate::server::ServeArgs,
    /// Do not embed the management point (another `patchops serve` shares the store).
    #[arg(long)]
    pub no_serve: bool,
    /// Serve Prometheus `/metrics` (the controller's per-deployment and site gauges) and
    /// `/healthz` on this address, e.g. 0.0.0.0:9090 (not with --once).
    #[arg(long, env = "PATCHOPS_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// The `namespace` label of the site gauges of `patchops run` (one site; resources
/// without a namespace are in `default`).
pub const RUN_SITE: &str = "default";

/// Read and check the desired state at the source's revision.
pub fn load_desired(source: &GitSource) -> Result<(SourceTree, DesiredState)> {
    let tree = source.load()?;
    let desired = DesiredState::load_in(&tree.revision, source.path.as_deref(), &tree.files)
        .map_err(Error::InvalidDesiredState)?;
    Ok((tree, desired))
}

/// The client settings that apply to clients no collection-specific setting covers.
pub fn default_settings(desired: &DesiredState) -> crate::resources::ClientSettingsSpec {
    desired
        .client_settings
        .values()
        .filter(|s| s.spec.collection.is_none())
        .max_by_key(|s| s.spec.priority)
        .map(|s| s.spec.clone())
        .unwrap_or_default()
}

/// State kept between iterations of the loop.
pub struct Runner {
    pub source: GitSource,
    pub store: Box<dyn Store>,
    pub fleet_sim: Option<SimFleet>,
    syncer: Syncer,
    written: Written,
}

impl Runner {
    pub fn new(source: GitSource, store: Box<dyn Store>, fleet_sim: Option<SimFleet>) -> Self {
        let syncer = Syncer::new(&source.cache_dir.with_file_name("catalog-cache"));
        Runner { source, store, fleet_sim, syncer, written: Written::default() }
    }

    /// The site's clients and catalog as of the last reconcile.
    pub fn site(&self) -> &crate::metrics::SiteFacts {
        &self.written.site
    }

    /// Run the DeploymentRules after catalog syncs (`--propose-rules`).
    pub fn propose_rules(&mut self, proposer: crate::git::rules::Proposer) {
        self.written.rules = Some(crate::git::rules::AfterSync::new(proposer));
    }

    /// One reconcile. Each step is its own transaction: an invalid revision writes
    /// nothing; a failed catalog sync keeps the current catalog version; a failure after
    /// the sync (reading the fleet, saving status) keeps the last good status, while a
    /// catalog version the sync saved stays (it is consistent on its own).
    pub fn reconcile_once(&mut self, now: Timestamp) -> Result<(ReconcileRecord, Outcome)> {
        let (tree, desired) = load_desired(&self.source)?;
        // Catalogs: all sources or none, so a failing source never drops its updates.
        let synced =
            self.syncer.sync(self.store.as_mut(), &desired, Some((&self.source, tree.commit.as_str())), now, false)?;
        let catalog: Catalog = synced.catalog;
        let catalog_status = synced.statuses;
        if let Some(sim) = self.fleet_sim.as_mut() {
            // Simulated clients follow the general scan schedule of the default settings.
            let schedule = default_settings(&desired).scan_schedule;
            let scans = sim.scan_due(self.store.as_mut(), &catalog, schedule.signed(), now)?;
            if scans > 0 {
                info!(scans, "simulated clients reported scans");
            }
        }
        self.written.reconcile_and_save(self.store.as_mut(), &desired, &catalog, &catalog_status, now)
    }
}

/// The policies and assignments already in the store, so each reconcile writes only
/// what changed. Shared by every driver that reconciles into a store.
#[derive(Default)]
pub struct Written {
    saved_etags: HashSet<String>,
    saved_assignments: HashMap<String, String>,
    /// Deployment rules run after catalog syncs, with their last status.
    pub rules: Option<crate::git::rules::AfterSync>,
    /// The site's clients and catalog as of the last reconcile, for the metrics.
    pub site: crate::metrics::SiteFacts,
}

impl Written {
    /// Read the fleet and the previous status from the store, call the reconcile core,
    /// and save the status of every resource and the client policies that changed.
    pub fn reconcile_and_save(
        &mut self,
        store: &mut dyn Store,
        desired: &DesiredState,
        catalog: &Catalog,
        catalog_status: &BTreeMap<String, UpdateCatalogStatus>,
        now: Timestamp,
    ) -> Result<(ReconcileRecord, Outcome)> {
        let defaults = default_settings(desired);
        store.set_setting("scan_ttl_seconds", &defaults.scan_ttl.as_secs().to_string())?;
        let fleet = store.load_fleet()?;
        let last = store.last_reconcile()?;
        let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
        let outcome = reconcile(&Inputs { desired, catalog, fleet: &fleet, previous: &previous, now });
        let catalog_saved = store.catalog_versions()?.last().map(|v| v.created_at);
        self.site = crate::metrics::SiteFacts::of(&fleet, defaults.scan_ttl.signed(), catalog_saved, now);
        for e in &outcome.events {
            info!(kind = %e.kind, name = %e.name, reason = %e.reason, "{}", e.message);
        }

        let ns = |meta: &Option<String>| meta.clone().unwrap_or_else(|| "default".into());
        let mut statuses = Vec::new();
        let mut push = |kind: &str, namespace: String, name: &str, v: serde_json::Value| {
            statuses.push(ResourceStatus { kind: kind.into(), namespace, name: name.into(), status: v });
        };
        for (name, s) in catalog_status {
            push("UpdateCatalog", ns(&desired.catalogs[name].metadata.namespace), name, json(s));
        }
        for (name, s) in &outcome.collections {
            push("Collection", ns(&desired.collections[name].metadata.namespace), name, json(s));
        }
        for (name, s) in &outcome.update_lists {
            push("UpdateList", ns(&desired.update_lists[name].metadata.namespace), name, json(s));
        }
        for (name, s) in &outcome.deployments {
            push("UpdateDeployment", ns(&desired.deployments[name].metadata.namespace), name, json(s));
        }
        for (name, s) in crate::governance::policy::statuses(desired, catalog, now) {
            if s.breach_count > 0 {
                warn!(policy = %name, breaches = s.breach_count, "{}", s.conditions[0].message);
            }
            push("CompliancePolicy", ns(&desired.compliance_policies[&name].metadata.namespace), &name, json(&s));
        }
        for (name, s) in &outcome.waivers {
            push("Waiver", ns(&desired.waivers[name].metadata.namespace), name, json(s));
        }
        for (name, s) in &outcome.packages {
            push("DeploymentPackage", ns(&desired.packages[name].metadata.namespace), name, json(s));
        }
        if let Some(rules) = self.rules.as_mut() {
            for (name, s) in rules.run(desired, catalog, &fleet, &previous, now) {
                push("DeploymentRule", ns(&desired.rules[&name].metadata.namespace), &name, json(&s));
            }
        }
        statuses.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        let record = ReconcileRecord {
            time: now,
            revision: desired.revision.clone(),
            catalog_version: catalog.version,
            statuses,
        };

        let policies: HashMap<String, serde_json::Value> = outcome
            .policies
            .iter()
            .filter(|(etag, _)| !self.saved_etags.contains(*etag))
            .map(|(etag, p)| (etag.clone(), serde_json::to_value(p.as_ref()).expect("policies serialize")))
            .collect();
        let assignments: Vec<crate::store::PolicyAssignment> = fleet
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| (c, outcome.etag_of(i)))
            .filter(|(c, etag)| self.saved_assignments.get(&c.name).map(String::as_str) != Some(*etag))
            .map(|(c, etag)| crate::store::PolicyAssignment { client: c.name.clone(), etag: etag.to_string() })
            .collect();
        store.save_reconcile(&record, &policies, &assignments)?;
        crate::notify::after_reconcile(desired, catalog, last.as_ref(), &record, &outcome.events);
        self.saved_etags.extend(policies.into_keys());
        for a in assignments {
            self.saved_assignments.insert(a.client, a.etag);
        }
        Ok((record, outcome))
    }
}

/// A status as the JSON the store keeps.
fn json<T: serde::Serialize>(status: &T) -> serde_json::Value {
    serde_json::to_value(status).expect("statuses serialize")
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let source = crate::git::git_source(&args.repo, &state_dir());
    if !args.store.contains("://")
        && let Some(parent) = Path::new(&args.store).parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent).map_err(|source| Error::Io { path: parent.into(), source })?;
    }
    let store = crate::store::open(&args.store)?;
    let sim = args.simulate_fleet.as_deref().map(SimFleet::load).transpose()?;
    if let Some(s) = &sim {
        info!(clients = s.clients.len(), "simulating clients");
    }
    let mut runner = Runner::new(source, store, sim);
    if args.propose_rules {
        let proposer = crate::git::rules::Proposer {
            repo: args.repo.repo.clone(),
            base: args.repo.rev.clone(),
            path: args.repo.path.clone(),
            push: args.rules.push.clone(),
            forge: args.rules.forge()?,
        };
        runner.propose_rules(proposer);
    }
    // The store clients are synchronous: reconciles run on this thread, outside the
    // runtime, which serves the management point and waits for the interval or a signal.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::Usage(e.to_string()))?;
    let mut keep_store = None;
    let (stop_server, server) = if args.once || args.no_serve {
        (None, None)
    } else {
        // The management point has its own store connection: SQLite in WAL mode (or
        // PostgreSQL) lets it take state messages while a reconcile reads.
        let shared: crate::server::SharedStore =
            std::sync::Arc::new(std::sync::Mutex::new(crate::store::open(&args.store)?));
        let config = args.server.config()?;
        let listener = rt.block_on(tokio::net::TcpListener::bind(args.server.listen)).map_err(|e| {
            Error::Usage(format!(
                "cannot listen on {}: {e}; choose another --listen address or pass --no-serve",
                args.server.listen
            ))
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        // The last handle is dropped on this thread: the PostgreSQL client must not be
        // dropped on a runtime thread.
        keep_store = Some(shared.clone());
        let handle = rt.spawn(crate::server::serve_listener(listener, shared, config, async move {
            let _ = rx.await;
        }));
        (Some(tx), Some(handle))
    };
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let (stop_metrics, metrics_server) = match args.metrics_listen {
        Some(listen) if !args.once => {
            let listener = rt.block_on(crate::metrics::bind(listen)).map_err(Error::Usage)?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let handle = rt.spawn(crate::metrics::serve(listener, metrics.clone(), async move {
                let _ = rx.await;
            }));
            (Some(tx), Some(handle))
        }
        _ => (None, None),
    };
    let result = reconcile_loop(&mut runner, &args, &rt, &metrics);
    if let Some(tx) = stop_metrics {
        let _ = tx.send(());
    }
    if let Some(handle) = metrics_server
        && let Ok(Err(e)) = rt.block_on(handle)
    {
        error!(error = %e, "the metrics listener failed");
    }
    if let Some(tx) = stop_server {
        let _ = tx.send(());
    }
    if let Some(handle) = server
        && let Ok(Err(e)) = rt.block_on(handle)
    {
        error!(error = %e, "the management point failed");
    }
    drop(keep_store);
    result
}

fn reconcile_loop(
    runner: &mut Runner,
    args: &RunArgs,
    rt: &tokio::runtime::Runtime,
    metrics: &crate::metrics::Metrics,
) -> Result<ExitCode> {
    loop {
        let started = std::time::Instant::now();
        let result = runner.reconcile_once(Timestamp::now());
        metrics.observe("Run", started.elapsed().as_secs_f64());
        match result {
            Ok((record, _)) => {
                metrics.record(RUN_SITE, &record);
                metrics.site(RUN_SITE, runner.site());
                info!(revision = %record.revision, catalog_version = record.catalog_version, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
                crate::output::print_record(&record, args.output);
                if let Some(branch) = &args.status_branch {
                    crate::git::status::publish_logged(&runner.source, &record, branch, args.status_push.as_deref());
                }
            }
            Err(e) if args.once => return Err(e),
            Err(e) => {
                metrics.error("Run", e.metric_label());
                error!(error = %e, "reconcile failed; the last good status is kept")
            }
        }
        if args.once {
            return Ok(ExitCode::SUCCESS);
        }
        let stop = rt.block_on(async {
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(args.interval.as_secs().max(1) as u64)) => false,
                _ = shutdown_signal() => true,
            }
        });
        if stop {
            warn!("shutting down");
            return Ok(ExitCode::SUCCESS);
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
