//! The Kubernetes driver (`patchops controller`): the same resources as custom
//! resources, a kube-runtime Controller per kind with a status, status by server-side
//! apply, Events, one active replica through a Lease. It carries data; the decisions are
//! the reconcile core's, and the store writes are the standalone driver's.
//!
//! A namespace is one site: the store holds one fleet and one set of client policies. One
//! controller may manage several namespaces (`--namespace` repeated), each with its own
//! store (`{namespace}` in the store URL) and Role; one Lease keeps one replica active.

pub mod context;

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
pub use reconciler::FINALIZER;
use reconciler::Managed;

/// How often each site follows the change feed: a state batch a management point
/// committed reaches the objects' status within about this much.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

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

/// What `patchops controller` runs with (its command-line options, parsed).
#[derive(Debug, Clone)]
pub struct ControllerOptions {
    /// Store holding the catalog, compliance and policies (the management point's): a
    /// postgres:// URL (or a SQLite path for a single pod). With several namespaces each
    /// is a site with its own store: write `{namespace}` where the namespace goes, e.g.
    /// postgres://patchops@db/patchops_{namespace}.
    pub store: Option<String>,
    /// Namespace whose resources this controller manages, each a site. Repeat the flag
    /// (or separate by commas in PATCHOPS_NAMESPACE) to manage several.
    pub namespaces: Vec<String>,
    /// Namespace of the Lease that keeps one replica active. Default: the first
    /// --namespace (the chart sets the release namespace).
    pub lease_namespace: Option<String>,
    /// Address of `/metrics` and `/healthz`.
    pub metrics_listen: std::net::SocketAddr,
    /// Lease that keeps one replica active.
    pub lease_name: String,
    /// How often new compliance and catalog versions in the store are looked for.
    pub resync: crate::time::Duration,
    /// Print the Roles the controller needs in each namespace (every API call it makes)
    /// and exit; with --remove-finalizers, the Roles that needs.
    pub print_rbac: bool,
    /// Remove the patchops finalizer from every UpdateDeployment in the namespaces and
    /// exit: the way out once the controller is gone for good, so namespace deletion is
    /// not blocked. Their client policies are not withdrawn (the store keeps them).
    pub remove_finalizers: bool,
}

impl ControllerOptions {
    fn lease_namespace(&self) -> &str {
        self.lease_namespace.as_deref().unwrap_or(&self.namespaces[0])
    }

    /// The namespaces, once each, checked as Kubernetes names.
    fn namespaces(&self) -> crate::Result<Vec<String>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for ns in &self.namespaces {
            let valid = !ns.is_empty()
                && ns.len() <= 63
                && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !ns.starts_with('-')
                && !ns.ends_with('-');
            if !valid {
                return Err(crate::Error::Usage(format!(
                    "--namespace {ns:?} is not a namespace name (lowercase letters, digits and '-', at most 63)"
                )));
            }
            if seen.insert(ns.clone()) {
                out.push(ns.clone());
            }
        }
        Ok(out)
    }
}

/// The store of one namespace: `{namespace}` in the URL replaced. Several namespaces
/// need it, so that no two sites share a fleet.
pub fn store_url(template: &str, namespace: &str, several: bool) -> crate::Result<String> {
    if template.contains("{namespace}") {
        Ok(template.replace("{namespace}", namespace))
    } else if several {
        Err(crate::Error::Usage(
            "several --namespace values need a store each: write {namespace} in --store / PATCHOPS_STORE, e.g. \
             postgres://patchops@db/patchops_{namespace} (a database per namespace) or /var/lib/patchops/{namespace}.db"
                .into(),
        ))
    } else {
        Ok(template.to_string())
    }
}

/// `patchops controller`.
pub fn run(mut args: ControllerOptions) -> crate::Result<std::process::ExitCode> {
    args.namespaces = args.namespaces()?;
    if args.print_rbac {
        let roles = if args.remove_finalizers {
            rbac::remove_finalizer_roles(&args.namespaces)
        } else {
            rbac::controller_roles(&args.namespaces, args.lease_namespace())
        };
        print!("{}", rbac::roles_yaml(&roles));
        return Ok(std::process::ExitCode::SUCCESS);
    }
    if let Some(template) = &args.store {
        for ns in &args.namespaces {
            store_url(template, ns, args.namespaces.len() > 1)?;
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| crate::Error::Runtime(format!("cannot start the runtime: {e}")))?;
    if args.remove_finalizers {
        let removed = rt.block_on(async {
            let client = connect().await?;
            remove_finalizers(client, &args.namespaces).await.map_err(|e| e.to_string())
        });
        let removed = removed.map_err(crate::Error::Runtime)?;
        info!(removed = removed.len(), namespaces = ?args.namespaces, "finalizers removed");
        return Ok(std::process::ExitCode::SUCCESS);
    }
    // The pipelines come back out so the stores are dropped outside the runtime: the
    // PostgreSQL client closes its connection synchronously.
    let (result, pipelines) = rt.block_on(run_async(args));
    drop(rt);
    drop(pipelines);
    result.map_err(|e| crate::Error::Runtime(e.to_string()))?;
    Ok(std::process::ExitCode::SUCCESS)
}

type Pipes = Vec<Arc<std::sync::Mutex<Pipeline>>>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn connect() -> Result<Client, String> {
    Client::try_default().await.map_err(|e| {
        format!(
            "cannot reach the Kubernetes API ({e}); run in a cluster (the chart's ServiceAccount) or set KUBECONFIG"
        )
    })
}

async fn run_async(args: ControllerOptions) -> (Result<(), BoxError>, Pipes) {
    let mut pipelines = Vec::new();
    let result = run_until_stopped(args, &mut pipelines).await;
    (result, pipelines)
}

/// Take the patchops finalizer off every UpdateDeployment of the namespaces (a merge
/// patch carrying the resourceVersion, so a concurrent change fails rather than being
/// overwritten). Returns the (namespace, name) of each object changed.
pub async fn remove_finalizers(client: Client, namespaces: &[String]) -> Result<Vec<(String, String)>, Error> {
    let mut removed = Vec::new();
    for ns in namespaces {
        let api: Api<UpdateDeployment> = Api::namespaced(client.clone(), ns);
        let list = rbac::list("updatedeployments");
        let deployments = reconciler::call(list, ns, api.list(&kube::api::ListParams::default())).await?;
        for d in deployments {
            let finalizers = d.metadata.finalizers.clone().unwrap_or_default();
            if !finalizers.iter().any(|f| f == reconciler::FINALIZER) {
                continue;
            }
            let name = d.metadata.name.clone().unwrap_or_default();
            let kept: Vec<&String> = finalizers.iter().filter(|f| *f != reconciler::FINALIZER).collect();
            let patch = serde_json::json!({
                "metadata": {"finalizers": kept, "resourceVersion": d.metadata.resource_version}
            });
            let params = kube::api::PatchParams::default();
            let patch = kube::api::Patch::Merge(&patch);
            reconciler::call(rbac::PATCH_FINALIZER, ns, api.patch(&name, &params, &patch)).await?;
            warn!(namespace = %ns, %name, "finalizer removed; the deployment's client policies stay in the store");
            removed.push((ns.clone(), name));
        }
    }
    Ok(removed)
}

async fn run_until_stopped(args: ControllerOptions, keep: &mut Pipes) -> Result<(), BoxError> {
    let client = connect().await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        crate::process::shutdown_signal().await;
        let _ = stop_tx.send(true);
    });

    // A store per namespace (one site each), opened before leading so a bad URL fails
    // at once.
    let several = args.namespaces.len() > 1;
    let template = args.store.clone().unwrap_or_default();
    let state = crate::process::state_dir();
    let mut pipelines = Vec::new();
    for ns in &args.namespaces {
        let url = store_url(&template, ns, several)?;
        let store = tokio::task::spawn_blocking(move || crate::store::open(&url)).await??;
        pipelines.push((ns.clone(), Pipeline::new(store, &state.join("catalog-cache").join(ns))));
    }

    let metrics = Arc::new(crate::metrics::Metrics::default());
    let listener = crate::metrics::bind(args.metrics_listen).await?;
    let metrics_task = tokio::spawn(crate::metrics::serve(listener, metrics.clone(), stopped()));

    // One active replica: wait for the Lease; losing it stops this one (the pod restarts
    // and waits as a standby).
    let identity = std::env::var("POD_NAME").unwrap_or_else(|_| format!("patchops-{}", std::process::id()));
    let lease = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), &args.lease_name)
        .with_namespace(args.lease_namespace())
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
    info!(namespaces = ?args.namespaces, "leading: controllers start");
    let lost = {
        let mut leader = leader.clone();
        async move {
            let _ = leader.wait_for(|l| !*l).await;
            warn!("lost the lease: stopping");
        }
    };
    let shutdown = futures::future::select(Box::pin(stopped()), Box::pin(lost)).map(|_| ()).boxed().shared();

    let every = std::time::Duration::from_secs(args.resync.as_secs().max(1) as u64);
    let mut sites = Vec::new();
    for (ns, pipeline) in pipelines {
        let (ctx, site) = run_site(client.clone(), &ns, pipeline, metrics.clone(), every, shutdown.clone());
        keep.push(ctx.pipeline.clone());
        sites.push(site);
    }
    futures::future::join_all(sites).await;
    lease_task.abort();
    let _ = metrics_task.await;
    info!("controller stopped");
    Ok(())
}

/// One namespace as a site: a controller per kind with a status, reflectors for the
/// rest, and the resync task, all on the namespace's own store. Returns the site's
/// context and the future that runs it until `shutdown`.
pub fn run_site(
    client: Client,
    ns: &str,
    pipeline: Pipeline,
    metrics: Arc<crate::metrics::Metrics>,
    resync: std::time::Duration,
    shutdown: futures::future::Shared<futures::future::BoxFuture<'static, ()>>,
) -> (Arc<Context>, futures::future::BoxFuture<'static, ()>) {
    // The controllers' own caches for the kinds with a status; reflectors for the rest.
    let wc = watcher::Config::default();
    let catalogs_c = Controller::new(Api::<UpdateCatalog>::namespaced(client.clone(), ns), wc.clone());
    let collections_c = Controller::new(Api::<Collection>::namespaced(client.clone(), ns), wc.clone());
    let lists_c = Controller::new(Api::<UpdateList>::namespaced(client.clone(), ns), wc.clone());
    let deployments_c = Controller::new(Api::<UpdateDeployment>::namespaced(client.clone(), ns), wc.clone());
    let packages_c = Controller::new(Api::<DeploymentPackage>::namespaced(client.clone(), ns), wc.clone());
    let waivers_c = Controller::new(Api::<Waiver>::namespaced(client.clone(), ns), wc.clone());
    let policies_c = Controller::new(Api::<CompliancePolicy>::namespaced(client.clone(), ns), wc.clone());
    let providers_c = Controller::new(Api::<NotificationProvider>::namespaced(client.clone(), ns), wc.clone());
    macro_rules! cache {
        ($k:ty) => {{
            let (reader, writer) = reflector::store::<$k>();
            let api: Api<$k> = Api::namespaced(client.clone(), ns);
            let stream = reflector::reflector(writer, watcher(api, wc.clone())).default_backoff();
            (reader, stream)
        }};
    }
    let (client_settings, settings_s) = cache!(ClientSettings);
    let (templates, templates_s) = cache!(DeploymentTemplate);
    let (rules, rules_s) = cache!(DeploymentRule);
    let (alerts, alerts_s) = cache!(Alert);
    let caches = Caches {
        catalogs: catalogs_c.store(),
        collections: collections_c.store(),
        client_settings,
        update_lists: lists_c.store(),
        templates,
        deployments: deployments_c.store(),
        packages: packages_c.store(),
        rules,
        waivers: waivers_c.store(),
        compliance_policies: policies_c.store(),
        notification_providers: providers_c.store(),
        alerts,
    };

    let mut triggers: Triggers = HashMap::new();
    let mut receivers = HashMap::new();
    for kind in [
        "UpdateCatalog",
        "Collection",
        "UpdateList",
        "UpdateDeployment",
        "DeploymentPackage",
        "Waiver",
        "CompliancePolicy",
        "NotificationProvider",
    ] {
        let (tx, rx) = futures::channel::mpsc::unbounded::<String>();
        triggers.insert(kind, tx);
        receivers.insert(kind, rx);
    }
    let ctx = Arc::new(Context::new(client, ns, caches, pipeline, triggers).with_metrics(metrics));

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
    let ns = ns.to_string();
    let controllers = futures::future::join_all([
        run_one(catalogs_c, rx("UpdateCatalog"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(collections_c, rx("Collection"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(lists_c, rx("UpdateList"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(deployments_c, rx("UpdateDeployment"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(packages_c, rx("DeploymentPackage"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(waivers_c, rx("Waiver"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(policies_c, rx("CompliancePolicy"), ns.clone(), shutdown.clone(), ctx.clone()),
        run_one(providers_c, rx("NotificationProvider"), ns.clone(), shutdown.clone(), ctx.clone()),
    ]);

    let site_ctx = ctx.clone();
    let site = async move {
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
        let drains = [drain!(settings_s), drain!(templates_s), drain!(rules_s), drain!(alerts_s)];
        let resync_ctx = site_ctx.clone();
        let resync_stop = shutdown.clone();
        let resync_task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(resync);
            let mut follow = tokio::time::interval(FOLLOW_EVERY);
            follow.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let stop = resync_stop;
            tokio::pin!(stop);
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = changed_rx.recv() => {}
                    _ = follow.tick() => {
                        // State batches and registrations, as the management points
                        // committed them: re-queue only the objects whose status moved.
                        match resync_ctx.follow().await {
                            Ok(Some(applied)) => {
                                let desired = resync_ctx.desired();
                                reconciler::fan_out(&resync_ctx, &applied, &desired.problems, &desired.objects, None);
                                if let Err(e) = reconciler::publish_outcome(&resync_ctx, &applied, &desired.objects).await {
                                    warn!(namespace = %resync_ctx.namespace, "cannot publish the site's events: {e}");
                                }
                            }
                            Ok(None) => {}
                            Err(e) => warn!(namespace = %resync_ctx.namespace, "cannot follow the change feed: {e}; retrying"),
                        }
                        continue;
                    }
                    _ = &mut stop => return,
                }
                tokio::select! {
                    _ = resync_ctx.caches.wait_ready() => {}
                    _ = &mut stop => return,
                }
                let desired = resync_ctx.desired();
                match resync_ctx.apply(desired.clone()).await {
                    Ok(applied) => {
                        reconciler::fan_out(&resync_ctx, &applied, &desired.problems, &desired.objects, None);
                        if let Err(e) = reconciler::publish_outcome(&resync_ctx, &applied, &desired.objects).await {
                            warn!(namespace = %resync_ctx.namespace, "cannot publish the site's events: {e}");
                        }
                    }
                    Err(e) => warn!(namespace = %resync_ctx.namespace, "resync failed: {e}"),
                }
            }
        });
        controllers.await;
        let _ = resync_task.await;
        for d in drains {
            d.abort();
        }
    }
    .boxed();
    (ctx, site)
}

#[cfg(test)]
mod test;
