//! What every reconcile shares: the API client, the caches of all kinds in the watched
//! namespace, the store pipeline, the event recorder, metrics, per-object backoff and
//! the triggers that re-queue other objects whose status a reconcile changed.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::hash::{DefaultHasher, Hash, Hasher};
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
use crate::resources::*;
use crate::site::{Loaded, Site, SiteHandle, SiteOptions};
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

/// What a fingerprint of the caches covers.
#[derive(Clone, Copy)]
pub enum Fingerprint {
    /// Every object's resource version: any change, a status patch too.
    Any,
    /// What the desired state is made of: the spec's generation (the spec itself where
    /// the API server set none), labels, annotations, deletion; a status patch is not
    /// taken for a new desired state.
    Spec,
}

/// Hash what the caches hold of one kind. Each object is hashed alone and the hashes
/// are summed, so the caches' order does not matter and nothing is sorted: a reconcile
/// asks this of every object, and a resync wave reconciles every object.
fn fingerprint<K: Cached>(cache: &Cache<K>, what: Fingerprint) -> u64 {
    let kind = K::kind(&());
    cache.state().iter().fold(0u64, |sum, o| {
        let (m, mut h) = (o.meta(), DefaultHasher::new());
        match what {
            Fingerprint::Any => {
                (kind.as_ref(), &m.name, &m.resource_version).hash(&mut h);
                if m.resource_version.is_none() {
                    // Objects made without an API server (tests): their content is their version.
                    serde_json::to_string(o.as_ref()).ok().hash(&mut h);
                }
            }
            Fingerprint::Spec => {
                (kind.as_ref(), &m.name, &m.uid, &m.labels, &m.annotations, m.deletion_timestamp.is_some())
                    .hash(&mut h);
                match m.generation {
                    Some(g) => g.hash(&mut h),
                    None => serde_json::to_value(o.as_ref())
                        .ok()
                        .and_then(|v| v.get("spec").map(|s| s.to_string()))
                        .hash(&mut h),
                }
            }
        }
        sum.wrapping_add(h.finish())
    })
}

impl Caches {
    /// One hash of every kind's objects (see [`Fingerprint`]).
    pub fn fingerprint(&self, what: Fingerprint) -> u64 {
        [
            fingerprint(&self.catalogs, what),
            fingerprint(&self.collections, what),
            fingerprint(&self.client_settings, what),
            fingerprint(&self.update_lists, what),
            fingerprint(&self.templates, what),
            fingerprint(&self.deployments, what),
            fingerprint(&self.packages, what),
            fingerprint(&self.rules, what),
            fingerprint(&self.waivers, what),
            fingerprint(&self.compliance_policies, what),
            fingerprint(&self.notification_providers, what),
            fingerprint(&self.alerts, what),
        ]
        .into_iter()
        .fold(0, u64::wrapping_add)
    }

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
    /// Built after every `Desired` with a lower number: the pipeline never goes back to
    /// an older one.
    pub seq: u64,
}

/// The store side of a reconcile: catalog sync, then the site engine — started from the
/// store once (the one fleet load), then kept current from the change feed, re-deriving
/// in memory when the desired state or the catalog changed. A run that finds nothing
/// new answers what the last one published: a resync wave over 1,000 objects is one
/// engine pass. Synchronous (the store clients are); it runs on a blocking thread.
pub struct Pipeline {
    engine: Engine,
    syncer: Syncer,
    /// What the last publish produced (without its events, which were published then).
    last: Option<Arc<Applied>>,
    /// Loads of the whole fleet from the store: the cold start, and nothing else.
    pub fleet_loads: u64,
    /// The newest desired state applied ([`Desired::seq`]).
    seq: u64,
    /// The engine's derivations as of the last publish (newer ones bring events).
    published_derivations: u64,
    /// A catalog version was saved and no answer has said so yet.
    catalog_pending: bool,
}

enum Engine {
    /// Not started: the store the engine will own.
    Cold(Box<dyn Store>),
    Live(Box<Site>),
    /// Only inside [`Pipeline::run`], while the store moves into the engine.
    Starting,
}

/// What one pipeline run produced.
#[derive(Clone)]
pub struct Applied {
    pub record: ReconcileRecord,
    /// New since the last run (a whole derivation's events; none from a quiet run).
    pub events: Vec<crate::reconcile::Event>,
    pub valid_until: Option<Timestamp>,
    /// A new catalog version was saved.
    pub catalog_changed: bool,
    /// The site's clients and catalog, for the metrics.
    pub site: SiteFacts,
    /// Published by this run; false: the last publish answered again (nothing changed).
    pub fresh: bool,
}

impl Applied {
    pub fn status_of(&self, kind: &str, name: &str) -> Option<&serde_json::Value> {
        self.record.statuses.iter().find(|s| s.kind == kind && s.name == name).map(|s| &s.status)
    }
}

impl Pipeline {
    pub fn new(store: Box<dyn Store>, cache_dir: &std::path::Path) -> Self {
        Pipeline {
            engine: Engine::Cold(store),
            syncer: Syncer::new(cache_dir),
            last: None,
            fleet_loads: 0,
            seq: 0,
            published_derivations: 0,
            catalog_pending: false,
        }
    }

    /// The store (the engine's connection once it runs).
    pub fn store(&self) -> &dyn Store {
        match &self.engine {
            Engine::Cold(store) => store.as_ref(),
            Engine::Live(site) => site.store(),
            Engine::Starting => unreachable!("the engine starts within one call"),
        }
    }

    fn store_mut(engine: &mut Engine) -> &mut dyn Store {
        match engine {
            Engine::Cold(store) => store.as_mut(),
            Engine::Live(site) => site.store_mut(),
            Engine::Starting => unreachable!("the engine starts within one call"),
        }
    }

    /// The site engine's state (None before the first run).
    pub fn site(&self) -> Option<&Site> {
        match &self.engine {
            Engine::Live(site) => Some(site),
            Engine::Cold(_) | Engine::Starting => None,
        }
    }

    /// Catalog sources are due by their sync interval; `path` sources need a
    /// repository and fail their UpdateCatalog with that message. `seq` orders desired
    /// states (see [`Desired::seq`]): one older than the last applied is not applied again
    /// (a reconcile that waited for the lock while a newer one ran).
    pub fn run(&mut self, desired: &DesiredState, seq: u64, now: Timestamp) -> crate::Result<Arc<Applied>> {
        let current = seq >= self.seq;
        self.seq = self.seq.max(seq);
        let changed = match &mut self.engine {
            // Nothing to fetch: the site keeps its catalog (no store read per reconcile).
            Engine::Live(site) if !self.syncer.due(desired, now) => {
                if current && !site.covers_revision(&desired.revision) {
                    let (catalog, status) = site
                        .handle()
                        .read(|s| ((*s.catalog).clone(), s.catalog_status.clone()))
                        .expect("a live site is derived");
                    site.set_desired(desired.clone(), catalog, status, now);
                }
                false
            }
            _ => {
                let synced = self.syncer.sync(Self::store_mut(&mut self.engine), desired, None, now, false)?;
                if let Engine::Cold(store) = &self.engine {
                    let loaded = Loaded::read(store.as_ref())?;
                    self.fleet_loads += 1;
                    let Engine::Cold(store) = std::mem::replace(&mut self.engine, Engine::Starting) else {
                        unreachable!("matched Cold above")
                    };
                    let site = Site::from_loaded(
                        SiteHandle::default(),
                        store,
                        loaded,
                        desired.clone(),
                        synced.catalog,
                        synced.statuses,
                        now,
                        SiteOptions::default(),
                    );
                    self.engine = Engine::Live(Box::new(site));
                } else if let Engine::Live(site) = &mut self.engine {
                    let desired = if current {
                        desired.clone()
                    } else {
                        site.handle().read(|s| (*s.desired).clone()).expect("a live site is derived")
                    };
                    if !site.covers(&desired.revision, &synced.catalog, &synced.statuses) {
                        site.set_desired(desired, synced.catalog, synced.statuses, now);
                    }
                }
                synced.changed
            }
        };
        self.catalog_pending |= changed;
        let Engine::Live(site) = &mut self.engine else { unreachable!("the engine runs by now") };
        site.follow(now)?;
        match self.publish(now)? {
            Some(applied) => Ok(applied),
            None => Ok(self.last.clone().expect("a live site has published")),
        }
    }

    /// Apply what the change feed brought (state batches, registrations) and a catalog
    /// version another process saved, and publish it; None when nothing changed or the
    /// engine has not started.
    pub fn follow(&mut self, now: Timestamp) -> crate::Result<Option<Arc<Applied>>> {
        let Engine::Live(site) = &mut self.engine else { return Ok(None) };
        let newest = site.store().catalog_versions()?.last().map(|v| v.version);
        let held = site.handle().read(|s| s.catalog.version).unwrap_or(0);
        if newest.is_some_and(|v| v > held) {
            let catalog = site.store().load_catalog()?;
            let (desired, status) =
                site.handle().read(|s| ((*s.desired).clone(), s.catalog_status.clone())).expect("derived");
            site.set_desired(desired, catalog, status, now);
        }
        site.follow(now)?;
        self.publish(now)
    }

    /// Publish when something changed (and no failed publish is still backing off). The
    /// events of every derivation since the last publish, and a catalog change, go with
    /// the first answer that carries them; later answers share the last publish.
    fn publish(&mut self, now: Timestamp) -> crate::Result<Option<Arc<Applied>>> {
        let Engine::Live(site) = &mut self.engine else { return Ok(None) };
        if self.last.is_some() && !site.dirty() && !self.catalog_pending {
            return Ok(None);
        }
        if let Some(wait) = site.backing_off() {
            return Err(crate::Error::Runtime(format!(
                "the site's last publish failed; the next try is in {} ms (see the warning before)",
                wait.as_millis()
            )));
        }
        let record = site.publish(now)?;
        let derived = site.stats.derivations > self.published_derivations;
        self.published_derivations = site.stats.derivations;
        let (events, valid_until) = site
            .handle()
            .read(|s| {
                (if derived { s.engine.outcome().events.clone() } else { Vec::new() }, s.engine.outcome().valid_until)
            })
            .unwrap_or_default();
        let applied = Arc::new(Applied {
            record,
            events,
            valid_until,
            catalog_changed: std::mem::take(&mut self.catalog_pending),
            site: site.facts().clone(),
            fresh: true,
        });
        self.last =
            Some(Arc::new(Applied { events: Vec::new(), catalog_changed: false, fresh: false, ..(*applied).clone() }));
        Ok(Some(applied))
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
    /// The desired state last built, by the caches' fingerprint: the objects of a resync
    /// wave share one.
    built: Mutex<Option<(u64, Arc<Desired>)>>,
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
            built: Mutex::new(None),
        }
    }

    /// Share one registry between the sites of a multi-namespace controller.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The namespace's desired state from the caches. Objects being deleted are left
    /// out: their finalizer's cleanup is a reconcile without them. Its revision is
    /// `kubernetes/<namespace>@<hash of what it is made of>`, so the engine re-derives when
    /// a spec, label or annotation changed and not when a status was patched.
    pub fn desired(&self) -> Arc<Desired> {
        let any = self.caches.fingerprint(Fingerprint::Any);
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, desired)) = built.as_ref()
            && *at == any
        {
            return desired.clone();
        }
        let all = self.caches.objects();
        let key = |o: &serde_json::Value| -> Key {
            let s = |p: &str| o.pointer(p).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (s("/kind"), s("/metadata/name"))
        };
        let live: Vec<serde_json::Value> =
            all.iter().filter(|o| o.pointer("/metadata/deletionTimestamp").is_none()).cloned().collect();
        let spec = self.caches.fingerprint(Fingerprint::Spec);
        let revision = format!("kubernetes/{}@{spec:016x}", self.namespace);
        let (state, problems) = DesiredState::from_objects(&revision, &live);
        let seq = built.as_ref().map_or(1, |(_, d)| d.seq + 1);
        let objects = all.into_iter().map(|o| (key(&o), o)).collect();
        let desired = Arc::new(Desired { state, problems, objects, seq });
        *built = Some((any, desired.clone()));
        desired
    }

    /// Run the store pipeline on a blocking thread.
    pub async fn apply(&self, desired: Arc<Desired>) -> Result<Arc<Applied>, Error> {
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            p.run(&desired.state, desired.seq, Timestamp::now())
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Core)
        .inspect(|applied| {
            if applied.fresh {
                self.metrics.record(&self.namespace, &applied.record);
                self.metrics.site(&self.namespace, &applied.site);
            }
        })
    }

    /// Follow the change feed on a blocking thread: what state batches and registrations
    /// changed, published (None when nothing did).
    pub async fn follow(&self) -> Result<Option<Arc<Applied>>, Error> {
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let mut p = pipeline.lock().unwrap_or_else(|e| e.into_inner());
            p.follow(Timestamp::now())
        })
        .await
        .map_err(|e| Error::Task(e.to_string()))?
        .map_err(Error::Core)
        .inspect(|applied| {
            if let Some(applied) = applied {
                self.metrics.record(&self.namespace, &applied.record);
                self.metrics.site(&self.namespace, &applied.site);
            }
        })
    }

    /// Re-queue an object of another kind.
    pub fn trigger(&self, kind: &str, name: &str) {
        if let Some(tx) = self.triggers.get(kind) {
            let _ = tx.unbounded_send(name.to_string());
        }
    }
}
