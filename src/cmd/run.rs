//! `patchops run`: the standalone reconciler. Reconciles the desired state into the store
//! on an interval (or once), serving the management point and the metrics beside it, and
//! prints the status of every deployment after each reconcile.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use jiff::Timestamp;
use tracing::{error, info, warn};

use crate::git::RepoArgs;
use crate::output::OutputFormat;
use crate::pipeline::Pipeline;
use crate::sim::SimFleet;
use crate::time::Duration;
use crate::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
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
    pub rules: super::rules::RuleArgs,
    /// The embedded management point agents talk to (not with --once).
    #[command(flatten)]
    pub server: super::serve::ServeArgs,
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

pub fn run(args: RunArgs) -> Result<ExitCode> {
    let source = crate::git::git_source(&args.repo, &crate::process::state_dir());
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
    let mut runner = Pipeline::new(source, store, sim);
    if args.propose_rules && args.once {
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
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    let mut keep_store = None;
    let site = crate::site::SiteHandle::default();
    let (stop_server, server) = if args.once || args.no_serve {
        (None, None)
    } else {
        // The management point has its own store connection: SQLite in WAL mode (or
        // PostgreSQL) lets it take state messages while a reconcile reads.
        let shared: crate::server::SharedStore =
            std::sync::Arc::new(std::sync::Mutex::new(crate::store::open(&args.store)?));
        let mut config = args.server.config()?;
        config.site = Some(site.clone());
        let listener = rt.block_on(crate::server::bind(args.server.listen)).map_err(|e| {
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
    let result = if args.once {
        reconcile_loop(&mut runner, &args, &rt, &metrics)
    } else {
        live_loop(&mut runner, &args, &rt, &metrics, site)
    };
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

/// The live site: the engine starts from the store and follows its change feed (woken by
/// the embedded management point, by PostgreSQL notifications, or by a short poll for
/// other writers of a SQLite file); the desired state and catalogs are re-read every
/// interval; status is published on change, debounced. The table is printed per interval.
fn live_loop(
    runner: &mut Pipeline,
    args: &RunArgs,
    rt: &tokio::runtime::Runtime,
    metrics: &crate::metrics::Metrics,
    handle: crate::site::SiteHandle,
) -> Result<ExitCode> {
    let interval = std::time::Duration::from_secs(args.interval.as_secs().max(1) as u64);
    let stopping = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let (stopping, handle) = (stopping.clone(), handle.clone());
        rt.spawn(async move {
            crate::process::shutdown_signal().await;
            stopping.store(true, std::sync::atomic::Ordering::Relaxed);
            handle.wake();
        });
    }
    let wait = |timeout: std::time::Duration| {
        rt.block_on(handle.woken(timeout));
        stopping.load(std::sync::atomic::Ordering::Relaxed)
    };
    // The first read of the desired state must succeed (retried each interval).
    let (desired, catalog, status) = loop {
        match runner.refresh(Timestamp::now()) {
            Ok(inputs) => break inputs,
            Err(e) => {
                metrics.error("Run", e.metric_label());
                error!(error = %e, "cannot read the desired state and catalogs; retrying in one interval");
                if wait(interval) {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    };
    let started = std::time::Instant::now();
    let mut site = crate::site::Site::start(
        handle.clone(),
        crate::store::open(&args.store)?,
        desired,
        catalog,
        status,
        Timestamp::now(),
        crate::site::SiteOptions::default(),
    )?;
    if args.propose_rules {
        site.propose_rules(crate::git::rules::Proposer {
            repo: args.repo.repo.clone(),
            base: args.repo.rev.clone(),
            path: args.repo.path.clone(),
            push: args.rules.push.clone(),
            forge: args.rules.forge()?,
        });
    }
    let stop_listener = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let listener = (args.store.starts_with("postgres://") || args.store.starts_with("postgresql://"))
        .then(|| crate::site::feed::listen_postgres(args.store.clone(), handle.clone(), stop_listener.clone()));
    let mut next_refresh = std::time::Instant::now() + interval;
    let mut print_next = true;
    let mut branch_statuses: Option<Vec<crate::store::ResourceStatus>> = None;
    let result = loop {
        let now = Timestamp::now();
        if std::time::Instant::now() >= next_refresh {
            next_refresh = std::time::Instant::now() + interval;
            print_next = true;
            match runner.refresh(now) {
                Ok((desired, catalog, status)) => {
                    if site.set_desired(desired, catalog, status, now) {
                        info!("desired state or catalog changed; site re-derived");
                    }
                }
                Err(e) => {
                    metrics.error("Run", e.metric_label());
                    error!(error = %e, "cannot read the desired state or sync the catalogs; the site keeps the last good ones");
                }
            }
        }
        if let Err(e) = site.follow(now) {
            metrics.error("Run", e.metric_label());
            error!(error = %e, "cannot follow the store's change feed; retrying");
        }
        let published = std::time::Instant::now();
        match site.publish_if_due(now) {
            Ok(Some(record)) => {
                metrics.observe("Run", published.elapsed().as_secs_f64());
                metrics.record(RUN_SITE, &record);
                metrics.site(RUN_SITE, site.facts());
                if print_next {
                    print_next = false;
                    info!(revision = %record.revision, catalog_version = record.catalog_version, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
                    crate::output::print_record(&record, args.output);
                }
                // The status branch follows every publish whose statuses moved (a commit
                // only when the snapshot differs; publishes are at most one a second).
                if let Some(branch) = &args.status_branch
                    && branch_statuses.as_ref() != Some(&record.statuses)
                {
                    crate::git::status::publish_logged(&runner.source, &record, branch, args.status_push.as_deref());
                    branch_statuses = Some(record.statuses.clone());
                }
            }
            Ok(None) => {}
            Err(e) => metrics.error("Run", e.metric_label()),
        }
        // Sleep until woken, the next publish, the next interval, or a short poll.
        let until = [site.publish_due(), Some(next_refresh)]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.saturating_duration_since(std::time::Instant::now()))
            .unwrap_or(interval)
            .min(FEED_POLL);
        if wait(until) {
            warn!("shutting down");
            break Ok(ExitCode::SUCCESS);
        }
    };
    stop_listener.store(true, std::sync::atomic::Ordering::Relaxed);
    if let Some(l) = listener {
        let _ = l.join();
    }
    result
}

/// How often the engine reads the change feed when nothing woke it (other processes
/// writing the same SQLite file; a PostgreSQL notification lost with its connection).
const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(250);

fn reconcile_loop(
    runner: &mut Pipeline,
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
                _ = crate::process::shutdown_signal() => true,
            }
        });
        if stop {
            warn!("shutting down");
            return Ok(ExitCode::SUCCESS);
        }
    }
}
