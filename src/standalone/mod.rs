//! The standalone driver (`patchops run`): read desired state from git, sync the
//! catalogs, take the compliance clients reported, call the reconcile core, persist the
//! status and policies, and repeat on an interval. It carries data; it never decides.

pub mod bench;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::catalog::{Catalog, Update, native};
use crate::cli::RepoArgs;
use crate::desired::DesiredState;
use crate::git::{GitSource, SourceTree};
use crate::output::OutputFormat;
use crate::reconcile::{Inputs, Outcome, previous_from, reconcile};
use crate::resources::{CatalogFormat, Condition, UpdateCatalog, UpdateCatalogStatus};
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
}

/// Read and check the desired state at the source's revision.
pub fn load_desired(source: &GitSource) -> Result<(SourceTree, DesiredState)> {
    let tree = source.load()?;
    let desired = DesiredState::load(&tree.revision, &tree.files).map_err(Error::InvalidDesiredState)?;
    Ok((tree, desired))
}

/// Read every UpdateCatalog's source: its updates, after its product and classification filters.
pub fn read_catalogs(
    source: &GitSource,
    tree: &SourceTree,
    desired: &DesiredState,
) -> Vec<(String, Result<Vec<Update>>)> {
    desired.catalogs.iter().map(|(name, c)| (name.clone(), read_catalog(source, tree, c))).collect()
}

fn read_catalog(source: &GitSource, tree: &SourceTree, c: &UpdateCatalog) -> Result<Vec<Update>> {
    let name = c.metadata.name.clone().unwrap_or_default();
    let fail = |message: String| Error::Catalog { source_name: name.clone(), message };
    if c.spec.format != CatalogFormat::Native {
        return Err(fail(format!(
            "format {:?} cannot be synchronized by this version; convert it to the native format",
            c.spec.format
        )));
    }
    let (file, bytes) = if let Some(p) = &c.spec.source.path {
        let full = match source.path.as_deref().filter(|s| !s.is_empty()) {
            Some(base) => format!("{}/{p}", base.trim_end_matches('/')),
            None => p.clone(),
        };
        let bytes = source
            .read_file(&tree.commit, &full)?
            .ok_or_else(|| fail(format!("source path {full:?} not found at {}", tree.revision)))?;
        (full, bytes)
    } else if let Some(f) = &c.spec.source.file {
        let bytes = std::fs::read(f).map_err(|e| fail(format!("cannot read {f}: {e}")))?;
        (f.clone(), bytes)
    } else {
        return Err(fail("url and git sources cannot be synchronized by this version; use path or file".into()));
    };
    let text = String::from_utf8(bytes).map_err(|_| fail(format!("{file}: not UTF-8 text")))?;
    let updates =
        native::parse(&file, &text).map_err(|p| fail(format!("\n{}", crate::desired::render_problems(&p))))?;
    let keep = |u: &Update| {
        (c.spec.products.is_empty()
            || u.products.iter().any(|p| c.spec.products.iter().any(|q| q.eq_ignore_ascii_case(p))))
            && (c.spec.classifications.is_empty()
                || c.spec.classifications.iter().any(|q| q.eq_ignore_ascii_case(&u.classification)))
    };
    Ok(updates.into_iter().filter(keep).collect())
}

/// The client settings that apply to clients no collection-specific setting covers.
fn default_settings(desired: &DesiredState) -> crate::resources::ClientSettingsSpec {
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
    saved_etags: HashSet<String>,
    saved_assignments: HashMap<String, String>,
}

impl Runner {
    pub fn new(source: GitSource, store: Box<dyn Store>, fleet_sim: Option<SimFleet>) -> Self {
        Runner { source, store, fleet_sim, saved_etags: HashSet::new(), saved_assignments: HashMap::new() }
    }

    /// One reconcile. On any error nothing is written and the last good status stays.
    pub fn reconcile_once(&mut self, now: Timestamp) -> Result<(ReconcileRecord, Outcome)> {
        let (tree, desired) = load_desired(&self.source)?;
        // Catalogs: all sources or none, so a failing source never drops its updates.
        let results = read_catalogs(&self.source, &tree, &desired);
        let mut catalog_status: Vec<(String, UpdateCatalogStatus)> = Vec::new();
        let all_ok = results.iter().all(|(_, r)| r.is_ok());
        let mut merged = Vec::new();
        for (name, r) in &results {
            match r {
                Ok(updates) => {
                    catalog_status.push((
                        name.clone(),
                        UpdateCatalogStatus {
                            digest: Some(crate::catalog::digest(updates)),
                            update_count: updates.len() as u64,
                            last_sync_time: Some(now),
                            ..Default::default()
                        },
                    ));
                    merged.extend(updates.iter().cloned());
                }
                Err(e) => {
                    error!(catalog = %name, error = %e, "catalog sync failed; keeping the current catalog version");
                    catalog_status.push((
                        name.clone(),
                        UpdateCatalogStatus {
                            conditions: vec![Condition::new("Ready", false, "SyncFailed", e.to_string(), now)],
                            ..Default::default()
                        },
                    ));
                }
            }
        }
        if all_ok && !desired.catalogs.is_empty() {
            let saved = self.store.save_catalog(&merged, now)?;
            if saved.changed {
                info!(version = saved.version, updates = merged.len(), "new catalog version");
            }
        }
        let catalog: Catalog = self.store.load_catalog()?;
        for (_, s) in catalog_status.iter_mut() {
            if s.conditions.is_empty() {
                s.catalog_version = Some(catalog.version);
                s.conditions = vec![Condition::new(
                    "Ready",
                    true,
                    "Synced",
                    format!("{} updates in catalog version {}", s.update_count, catalog.version),
                    now,
                )];
            }
        }
        if let Some(sim) = self.fleet_sim.as_mut() {
            // Simulated clients follow the general scan schedule of the default settings.
            let schedule = default_settings(&desired).scan_schedule;
            let scans = sim.scan_due(self.store.as_mut(), &catalog, schedule.signed(), now)?;
            if scans > 0 {
                info!(scans, "simulated clients reported scans");
            }
        }
        let defaults = default_settings(&desired);
        self.store.set_setting("scan_ttl_seconds", &defaults.scan_ttl.as_secs().to_string())?;
        let fleet = self.store.load_fleet()?;
        let last = self.store.last_reconcile()?;
        let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
        let outcome =
            reconcile(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now });
        for e in &outcome.events {
            info!(kind = %e.kind, name = %e.name, reason = %e.reason, "{}", e.message);
        }

        let ns = |meta: &Option<String>| meta.clone().unwrap_or_else(|| "default".into());
        let mut statuses = Vec::new();
        let mut push = |kind: &str, namespace: String, name: &str, v: serde_json::Value| {
            statuses.push(ResourceStatus { kind: kind.into(), namespace, name: name.into(), status: v });
        };
        let json = |v: &dyn erased::Json| v.to_json();
        for (name, s) in &catalog_status {
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
        for (name, s) in &outcome.packages {
            push("DeploymentPackage", ns(&desired.packages[name].metadata.namespace), name, json(s));
        }
        statuses.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        let record =
            ReconcileRecord { time: now, revision: tree.revision.clone(), catalog_version: catalog.version, statuses };

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
        self.store.save_reconcile(&record, &policies, &assignments)?;
        self.saved_etags.extend(policies.into_keys());
        for a in assignments {
            self.saved_assignments.insert(a.client, a.etag);
        }
        Ok((record, outcome))
    }
}

/// Serialize any status to JSON without naming its type at each call site.
mod erased {
    pub trait Json {
        fn to_json(&self) -> serde_json::Value;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> serde_json::Value {
            serde_json::to_value(self).expect("statuses serialize")
        }
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let source = crate::cli::git_source(&args.repo, &state_dir());
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
    // The store clients are synchronous: reconciles run on this thread, outside the
    // runtime, which only waits for the interval or a shutdown signal.
    let rt =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::Usage(e.to_string()))?;
    loop {
        let started = std::time::Instant::now();
        match runner.reconcile_once(Timestamp::now()) {
            Ok((record, _)) => {
                info!(revision = %record.revision, catalog_version = record.catalog_version, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
                crate::output::print_record(&record, args.output);
            }
            Err(e) if args.once => return Err(e),
            Err(e) => error!(error = %e, "reconcile failed; the last good status is kept"),
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

async fn shutdown_signal() {
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
