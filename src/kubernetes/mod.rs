//! The Kubernetes driver (`patchops controller`): the same resources as custom
//! resources, a kube-runtime Controller per kind with a status, status by server-side
//! apply, Events, one active replica through a Lease. It carries data; the decisions are
//! the reconcile core's, and the store writes are the standalone driver's.
//!
//! One controller manages one namespace: the store holds one fleet and one set of client
//! policies, so a namespace is one site.

pub mod context;
pub mod metrics;
pub mod rbac;
pub mod reconciler;

use std::collections::HashMap;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client};
use tracing::{info, warn};

use crate::resources::*;
use context::{Caches, Context, Pipeline, Triggers};
use reconciler::Managed;

/// What went wrong talking to the cluster or the store. Every error here is retried
/// with a per-object backoff; a wrong spec is not an error but a Stalled status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Core(crate::Error),

    #[error(
        "forbidden: the controller's ServiceAccount may not {verb} {resource} (API group {group}) in namespace \
         {namespace}; grant that verb in its Role (charts/patchops/templates/rbac.yaml, or `patchops controller \
         --print-rbac`). The API server said: {message}"
    )]
    Forbidden { verb: &'static str, resource: &'static str, group: &'static str, namespace: String, message: String },

    #[error("conflict writing {resource}: {message}; retrying with the current object")]
    Conflict { resource: &'static str, message: String },

    #[error("Kubernetes API, {verb} {resource}: {source}")]
    Api {
        verb: &'static str,
        resource: &'static str,
        #[source]
        source: kube::Error,
    },

    #[error("object has no name or an invalid finalizer")]
    Finalizer,

    #[error("reconcile task failed: {0}")]
    Task(String),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Core(e) => e.metric_label(),
            Error::Forbidden { .. } => "forbidden",
            Error::Conflict { .. } => "conflict",
            Error::Api { .. } => "api",
            Error::Finalizer => "finalizer",
            Error::Task(_) => "task",
        }
    }

    fn from_finalizer(e: kube::runtime::finalizer::Error<Error>, namespace: &str) -> Self {
        use kube::runtime::finalizer::Error as F;
        let api = |source: kube::Error| match &source {
            kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
                verb: rbac::PATCH_FINALIZER.verb,
                resource: rbac::PATCH_FINALIZER.resource,
                group: rbac::PATCH_FINALIZER.group,
                namespace: namespace.to_string(),
                message: s.message.clone(),
            },
            kube::Error::Api(s) if s.code == 409 || s.code == 422 => {
                Error::Conflict { resource: rbac::PATCH_FINALIZER.resource, message: s.message.clone() }
            }
            _ => Error::Api { verb: "patch", resource: rbac::PATCH_FINALIZER.resource, source },
        };
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => api(e),
            _ => Error::Finalizer,
        }
    }
}

#[derive(clap::Args, Debug, Clone)]
pub struct ControllerArgs {
    /// Store holding the catalog, compliance and policies (the management point's): a
    /// postgres:// URL (or a SQLite path for a single pod).
    #[arg(long, env = "PATCHOPS_STORE", required_unless_present = "print_rbac")]
    pub store: Option<String>,
    /// Namespace whose resources this controller manages.
    #[arg(long, env = "PATCHOPS_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Address of `/metrics` and `/healthz`.
    #[arg(long, env = "PATCHOPS_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    pub metrics_listen: std::net::SocketAddr,
    /// Lease that keeps one replica active.
    #[arg(long, default_value = "patchops-controller")]
    pub lease_name: String,
    /// How often new compliance and catalog versions in the store are looked for.
    #[arg(long, default_value = "30s")]
    pub resync: crate::time::Duration,
    /// Print the Role rules the controller needs (every API call it makes) and exit.
    #[arg(long)]
    pub print_rbac: bool,
}

/// `patchops controller`.
pub fn run(args: ControllerArgs) -> crate::Result<std::process::ExitCode> {
    if args.print_rbac {
        print!("{}", rbac::role_rules_yaml());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Usage(format!("cannot start the runtime: {e}")))?;
    // The pipeline comes back out so the store is dropped outside the runtime: the
    // PostgreSQL client closes its connection synchronously.
    let (result, pipeline) = rt.block_on(run_async(args));
    drop(rt);
    drop(pipeline);
    result.map_err(|e| crate::Error::Usage(e.to_string()))?;
    Ok(std::process::ExitCode::SUCCESS)
}

type Pipe = Option<Arc<std::sync::Mutex<Pipeline>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn run_async(args: ControllerArgs) -> (Result<(), BoxError>, Pipe) {
    let mut pipeline = None;
    let result = run_until_stopped(args, &mut pipeline).await;
    (result, pipeline)
}

async fn run_until_stopped(args: ControllerArgs, keep: &mut Pipe) -> Result<(), BoxError> {
    let client = Client::try_default().await.map_err(|e| {
        format!(
            "cannot reach the Kubernetes API ({e}); run in a cluster (the chart's ServiceAccount) or set KUBECONFIG"
        )
    })?;
    let ns = args.namespace.clone();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        crate::standalone::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // The controllers' own caches for the kinds with a status; reflectors for the rest.
    let wc = watcher::Config::default();
    let catalogs_c = Controller::new(Api::<UpdateCatalog>::namespaced(client.clone(), &ns), wc.clone());
    let collections_c = Controller::new(Api::<Collection>::namespaced(client.clone(), &ns), wc.clone());
    let lists_c = Controller::new(Api::<UpdateList>::namespaced(client.clone(), &ns), wc.clone());
    let deployments_c = Controller::new(Api::<UpdateDeployment>::namespaced(client.clone(), &ns), wc.clone());
    let packages_c = Controller::new(Api::<DeploymentPackage>::namespaced(client.clone(), &ns), wc.clone());
    macro_rules! cache {
        ($k:ty) => {{
            let (reader, writer) = reflector::store::<$k>();
            let api: Api<$k> = Api::namespaced(client.clone(), &ns);
            let stream = reflector::reflector(writer, watcher(api, wc.clone())).default_backoff();
            (reader, stream)
        }};
    }
    let (client_settings, settings_s) = cache!(ClientSettings);
    let (templates, templates_s) = cache!(DeploymentTemplate);
    let (rules, rules_s) = cache!(DeploymentRule);
    let caches = Caches {
        catalogs: catalogs_c.store(),
        collections: collections_c.store(),
        client_settings,
        update_lists: lists_c.store(),
        templates,
        deployments: deployments_c.store(),
        packages: packages_c.store(),
        rules,
    };

    let mut triggers: Triggers = HashMap::new();
    let mut receivers = HashMap::new();
    for kind in ["UpdateCatalog", "Collection", "UpdateList", "UpdateDeployment", "DeploymentPackage"] {
        let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
        triggers.insert(kind, tx);
        receivers.insert(kind, rx);
    }
    let store_url = args.store.clone().unwrap_or_default();
    let store = tokio::task::spawn_blocking(move || crate::store::open(&store_url)).await??;
    let state = crate::standalone::state_dir();
    let pipeline = Pipeline::new(store, &state.join("catalog-cache"));
    let ctx = Arc::new(Context::new(client.clone(), &ns, caches.clone(), pipeline, triggers));
    *keep = Some(ctx.pipeline.clone());

    let metrics = tokio::spawn(metrics::serve(args.metrics_listen, ctx.metrics.clone(), stopped()));

    // One active replica: wait for the Lease; losing it stops this one (the pod restarts
    // and waits as a standby).
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("patchops-{}", std::process::id()));
    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(&ns)
        .with_identity(&identity)
        .with_duration(15)
        .with_grace(5)
        .build()
        .await?;
    let (mut leader, lease_task) = lease.watch().await;
    info!(%identity, lease = %args.lease_name, "waiting to lead");
    tokio::select! {
        _ = leader.wait_for(|l| *l) => {}
        _ = stopped() => { return Ok(()); }
    }
    info!(namespace = %ns, "leading: controllers start");
    let lost = {
        let mut leader = leader.clone();
        async move {
            let _ = leader.wait_for(|l| !*l).await;
            warn!("lost the lease: stopping");
        }
    };
    let shutdown = futures::future::select(Box::pin(stopped()), Box::pin(lost)).map(|_| ()).shared();

    // Status-less kinds: a change re-runs the pipeline through the resync task.
    let (changed_tx, mut changed_rx) = tokio::sync::mpsc::channel::<()>(1);
    macro_rules! drain {
        ($s:expr) => {{
            let tx = changed_tx.clone();
            tokio::spawn($s.applied_objects().for_each(move |_| {
                let _ = tx.try_send(());
                futures::future::ready(())
            }))
        }};
    }
    drain!(settings_s);
    drain!(templates_s);
    drain!(rules_s);
    let resync_ctx = ctx.clone();
    let every = std::time::Duration::from_secs(args.resync.as_secs().max(1) as u64);
    let resync_stop = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        let stop = resync_stop;
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = changed_rx.recv() => {}
                _ = &mut stop => return,
            }
            resync_ctx.caches.wait_ready().await;
            let desired = resync_ctx.desired();
            match resync_ctx.apply(desired.state).await {
                Ok(applied) => reconciler::fan_out(&resync_ctx, &applied, &desired.problems, &desired.objects, None),
                Err(e) => warn!("resync failed: {e}"),
            }
        }
    });

    fn run_one<K: Managed>(
        c: Controller<K>,
        triggers: futures::channel::mpsc::UnboundedReceiver<String>,
        ns: String,
        shutdown: impl Future<Output = ()> + Send + Sync + 'static,
        ctx: Arc<Context>,
    ) -> futures::future::BoxFuture<'static, ()> {
        c.reconcile_on(triggers.map(move |name| ObjectRef::new(&name).within(&ns)))
            .graceful_shutdown_on(shutdown)
            .run(reconciler::reconcile::<K>, reconciler::error_policy::<K>, ctx)
            .for_each(|_| futures::future::ready(()))
            .boxed()
    }
    let mut rx = |k: &str| receivers.remove(k).expect("a trigger per managed kind");
    futures::future::join_all([
        run_one(catalogs_c, rx("UpdateCatalog"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(collections_c, rx("Collection"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(lists_c, rx("UpdateList"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(deployments_c, rx("UpdateDeployment"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(packages_c, rx("DeploymentPackage"), ns.clone(), shutdown.clone(), ctx.clone()),
    ])
    .await;
    lease_task.abort();
    let _ = metrics.await;
    info!("controller stopped");
    Ok(())
}

#[cfg(test)]
mod test;
