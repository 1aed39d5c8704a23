//! What every reconcile shares: the API client, the caches of all kinds in the watched
//! namespace, the store pipeline, the event recorder, metrics, per-object backoff and
//! the triggers that re-queue other objects whose status a reconcile changed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc::UnboundedSender;
use jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::Store as Cache;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Error;
use crate::catalog::sync::Syncer;
use crate::desired::{DesiredState, Problem};
use crate::metrics::{Metrics, SiteFacts};
use crate::pipeline::Reconciler;
use crate::resources::*;
use crate::store::{ReconcileRecord, Store};

/// The field manager of every status the controller applies.
pub const FIELD_MANAGER: &str = "patchops-controller";

/// A kind the controller keeps in a cache.
pub trait Cached:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
    + Clone
    + Debug
    + DeserializeOwned
    + Serialize
    + Send
    + Sync
    + 'static
{
}
impl<K> Cached for K where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static
{
}

/// The caches of every kind, filled by the reflectors (or by tests).
#[derive(Clone)]
pub struct Caches {
    pub catalogs: Cache<UpdateCatalog>,
    pub collections: Cache<Collection>,
    pub client_settings: Cache<ClientSettings>,
    pub update_lists: Cache<UpdateList>,
    pub templates: Cache<DeploymentTemplate>,
    pub deployments: Cache<UpdateDeployment>,
    pub packages: Cache<DeploymentPackage>,
    pub rules: Cache<DeploymentRule>,
    pub waivers: Cache<Waiver>,
    pub compliance_policies: Cache<CompliancePolicy>,
    pub notification_providers: Cache<NotificationProvider>,
    pub alerts: Cache<Alert>,
}

fn values<K: Cached>(cache: &Cache<K>) -> Vec<serde_json::Value> {
    cache.state().iter().map(|o| serde_json::to_value(o.as_ref()).expect("resources serialize")).collect()
}

impl Caches {
    /// Every object as JSON (apiVersion, kind, metadata, spec, status).
    pub fn objects(&self) -> Vec<serde_json::Value> {
        let mut all = values(&self.catalogs);
        all.extend(values(&self.collections));
        all.extend(values(&self.client_settings));
        all.extend(values(&self.update_lists));
        all.extend(values(&self.templates));
        all.extend(values(&self.deployments));
        all.extend(values(&self.packages));
        all.extend(values(&self.rules));
        all.extend(values(&self.waivers));
        all.extend(values(&self.compliance_policies));
        all.extend(values(&self.notification_providers));
        all.extend(values(&self.alerts));
        all
    }

    /// Wait until every reflector has listed once, so a reconcile never mistakes a
    /// kind not yet listed for a missing object.
    pub async fn wait_ready(&self) {
        let _ = futures::join!(
            self.catalogs.wait_until_ready(),
            self.collections.wait_until_ready(),
            self.client_settings.wait_until_ready(),
            self.update_lists.wait_until_ready(),
            self.templates.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.packages.wait_until_ready(),
            self.rules.wait_until_ready(),
            self.waivers.wait_until_ready(),
            self.compliance_policies.wait_until_ready(),
            self.notification_providers.wait_until_ready(),
            self.alerts.wait_until_ready(),
        );
    }
}

/// One object's identity: (kind, name).
pub type Key = (String, String);

/// The desired state of the namespace, and the problems of the objects left out.
pub struct Desired {
    pub state: DesiredState,
    pub problems: BTreeMap<Key, Vec<Problem>>,
    /// Every object (deleted ones included) as JSON, by key.
    pub objects: HashMap<Key, serde_json::Value>,
}

/// The store side of a reconcile: catalog sync, then the shared reconcile-and-save.
/// Synchronous (the store clients are); it runs on a blocking thread.
pub struct Pipeline {
    pub store: Box<dyn Store>,
    syncer: Syncer,
    written: Reconciler,
}

/// What one pipeline run produced.
pub struct Applied {
    pub record: ReconcileRecord,
    pub events: Vec<crate::reconcile::Event>,
    pub valid_until: Option<Timestamp>,
    /// A new catalog version was saved.
    pub catalog_changed: bool,
    /// The site's clients and catalog, for the metrics.
    pub site: SiteFacts,
}

impl Applied {
    pub fn status_of(&self, kind: &str, name: &str) -> Option<&serde_json::Value> {
        self.record.statuses.iter().find(|s| s.kind == kind && s.name == name).map(|s| &s.status)
    }
}

impl Pipeline {
    pub fn new(store: Box<dyn Store>, cache_dir: &std::path::Path) -> Self {
        Pipeline { store, syncer: Syncer::new(cache_dir), written: Reconciler::default() }
    }

    /// Catalog sources are due by their sync interval; `path` sources need a
    /// repository and fail their UpdateCatalog with that message.
    pub fn run(&mut self, desired: &DesiredState, now: Timestamp) -> crate::Result<Applied> {
        let synced = self.syncer.sync(self.store.as_mut(), desired, None, now, false)?;
        let (record, outcome) =
            self.written.reconcile_and_save(self.store.as_mut(), desired, &synced.catalog, &synced.statuses, now)?;
        Ok(Applied {
            record,
            events: outcome.events,
            valid_until: outcome.valid_until,
            catalog_changed: synced.changed,
            site: self.written.site.clone(),
        })
    }
}

/// Per kind, a channel that re-queues an object by name.
pub type Triggers = HashMap<&'static str, UnboundedSender<String>>;

pub struct Context {
    pub client: Client,
    pub namespace: String,
    pub caches: Caches,
    pub pipeline: Arc<Mutex<Pipeline>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub triggers: Triggers,
    /// Consecutive failures per object, for its backoff.
    pub failures: Mutex<HashMap<Key, u32>>,
}

impl Context {
    pub fn new(client: Client, namespace: &str, caches: Caches, pipeline: Pipeline, triggers: Triggers) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: std::env::var("POD_NAME").ok() };
        Context {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            namespace: namespace.to_string(),
            caches,
            pipeline: Arc::new(Mutex::new(pipeline)),
            metrics: Arc::new(Metrics::default()),
            triggers,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Share one registry between the sites of a multi-namespace controller.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The namespace's desired state from the caches. Objects being deleted are left
    /// out: their finalizer's cleanup is a reconcile without them.
    pub fn desired(&self) -> Desired {
        let all = self.caches.objects();
        let key = |o: &serde_json::Value| -> Key {
            let s = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (s("/kind"), s("/metadata/name"))
        };
        let live: Vec<serde_json::Value> =
            all.iter().filter(|o| o.pointer("/metadata/deletionTimestamp").is_none()).cloned().collect();
        let (state, problems) = DesiredState::from_objects(&format!("kubernetes/{}", self.namespace), &live);
        Desired { state, problems, objects: all.into_iter().map(|o| (key(&o), o)).collect() }
    }

    /// Run the store pipeline on a blocking thread.
    pub async fn apply(&self, desired: DesiredState) -> Result<Applied, Error> {
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            p.run(&desired, Timestamp::now())
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Core)
        .inspect(|applied| {
            self.metrics.record(&self.namespace, &applied.record);
            self.metrics.site(&self.namespace, &applied.site);
        })
    }

    /// Re-queue an object of another kind.
    pub fn trigger(&self, kind: &str, name: &str) {
        if let Some(tx) = self.triggers.get(kind) {
            let _ = tx.unbounded_send(name.to_string());
        }
    }
}
