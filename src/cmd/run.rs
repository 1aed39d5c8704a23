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
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
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
