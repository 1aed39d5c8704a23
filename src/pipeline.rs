//! The pipeline every driver runs: load the desired state at a revision, sync the
//! catalogs, read the fleet from the store, call the reconcile core, and save status and
//! the client policies that changed. It carries data between the parts; it never decides.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use tracing::{info, warn};

use crate::catalog::Catalog;
use crate::catalog::sync::Syncer;
use crate::desired::DesiredState;
use crate::git::{GitSource, SourceTree};
use crate::reconcile::{Inputs, Outcome, previous_from, reconcile};
use crate::resources::UpdateCatalogStatus;
use crate::sim::SimFleet;
use crate::store::{ReconcileRecord, ResourceStatus, Store};
use crate::{Error, Result};

/// Read and check the desired state at the source's revision.
pub fn load_desired(source: &GitSource) -> Result<(SourceTree, DesiredState)> {
    let tree = source.load()?;
    let desired = DesiredState::load_in(&tree.revision, source.path.as_deref(), &tree.files)
        .map_err(Error::InvalidDesiredState)?;
    Ok((tree, desired))
}

/// The setting every publish of an engine writes: a management point whose store has it
/// knows that somebody assigns policies, and lets a registration wait for one.
pub const PUBLISHED_SETTING: &str = "engine_published_at";

/// Before a publish: the settings the store's views read (the scan TTL of the default
/// client settings), and the mark that an engine publishes to this store.
pub fn save_publish_settings(store: &mut dyn Store, desired: &DesiredState, now: Timestamp) -> Result<()> {
    let defaults = default_settings(desired);
    store.set_setting("scan_ttl_seconds", &defaults.scan_ttl.as_secs().to_string())?;
    store.set_setting(PUBLISHED_SETTING, &now.to_string())
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

/// One site's pipeline, kept between iterations of a driver's loop.
pub struct Pipeline {
    pub source: GitSource,
    pub store: Box<dyn Store>,
    pub fleet_sim: Option<SimFleet>,
    syncer: Syncer,
    reconciler: Reconciler,
}

impl Pipeline {
    pub fn new(source: GitSource, store: Box<dyn Store>, fleet_sim: Option<SimFleet>) -> Self {
        let syncer = Syncer::new(&source.cache_dir.with_file_name("catalog-cache"));
        Pipeline { source, store, fleet_sim, syncer, reconciler: Reconciler::default() }
    }

    /// The site's clients and catalog as of the last reconcile.
    pub fn site(&self) -> &crate::metrics::SiteFacts {
        &self.reconciler.site
    }

    /// Run the DeploymentRules after catalog syncs (`--propose-rules`).
    pub fn propose_rules(&mut self, proposer: crate::git::rules::Proposer) {
        self.reconciler.rules = Some(crate::git::rules::AfterSync::new(proposer));
    }

    /// What the site engine re-reads on every interval: the desired state at the
    /// source's revision and the synced catalogs (simulated clients report their due
    /// scans through the store, as agents do). A failing catalog source keeps the
    /// current catalog version.
    pub fn refresh(
        &mut self,
        now: Timestamp,
    ) -> Result<(DesiredState, Catalog, BTreeMap<String, UpdateCatalogStatus>)> {
        let (tree, desired) = load_desired(&self.source)?;
        let synced =
            self.syncer.sync(self.store.as_mut(), &desired, Some((&self.source, tree.commit.as_str())), now, false)?;
        if let Some(sim) = self.fleet_sim.as_mut() {
            let schedule = default_settings(&desired).scan_schedule;
            let scans = sim.scan_due(self.store.as_mut(), &synced.catalog, schedule.signed(), now)?;
            if scans > 0 {
                info!(scans, "simulated clients reported scans");
            }
        }
        Ok((desired, synced.catalog, synced.statuses))
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
        self.reconciler.reconcile_and_save(self.store.as_mut(), &desired, &catalog, &catalog_status, now)
    }
}

/// The policies and assignments already in the store, so each reconcile writes only
/// what changed. Shared by every driver that reconciles into a store.
#[derive(Default)]
pub struct Reconciler {
    saved_etags: HashSet<String>,
    saved_assignments: HashMap<String, String>,
    /// Deployment rules run after catalog syncs, with their last status.
    pub rules: Option<crate::git::rules::AfterSync>,
    /// The site's clients and catalog as of the last reconcile, for the metrics.
    pub site: crate::metrics::SiteFacts,
    /// What the last desired-state snapshot saved was made of (revision, catalog version,
    /// catalog status), so a publish saves one only when it changed.
    snapshot_of: Option<(String, u64, BTreeMap<String, UpdateCatalogStatus>)>,
}

impl Reconciler {
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
        save_publish_settings(store, desired, now)?;
        let fleet = store.load_fleet()?;
        let last = store.last_reconcile()?;
        let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
        let outcome = reconcile(&Inputs { desired, catalog, fleet: &fleet, previous: &previous, now });
        for e in &outcome.events {
            info!(kind = %e.kind, name = %e.name, reason = %e.reason, "{}", e.message);
        }
        let inputs = Published { desired, catalog, catalog_status, fleet: &fleet, previous: &previous, now };
        let record = self.save_outcome(store, &inputs, &outcome, last.as_ref(), None)?;
        Ok((record, outcome))
    }

    /// Save an outcome already derived (the site engine's): the status of every resource,
    /// the policy documents not saved yet, and the assignments that changed — of the
    /// clients `changed` (fleet positions) only, or of every client when None. Then the
    /// notifications the change brings. `last` is the record saved before.
    pub fn save_outcome(
        &mut self,
        store: &mut dyn Store,
        inputs: &Published<'_>,
        outcome: &Outcome,
        last: Option<&ReconcileRecord>,
        changed: Option<&[usize]>,
    ) -> Result<ReconcileRecord> {
        let Published { desired, catalog, fleet, now, .. } = *inputs;
        let defaults = default_settings(desired);
        let catalog_saved = store.catalog_versions()?.last().map(|v| v.created_at);
        self.site = crate::metrics::SiteFacts::of(fleet, defaults.scan_ttl.signed(), catalog_saved, now);
        let record = self.record(inputs, outcome, changed.is_none());
        let policies: HashMap<String, serde_json::Value> = outcome
            .policies
            .iter()
            .filter(|(etag, _)| !self.saved_etags.contains(*etag))
            .map(|(etag, p)| (etag.clone(), serde_json::to_value(p.as_ref()).expect("policies serialize")))
            .collect();
        let all: Vec<usize>;
        let positions = match changed {
            Some(c) => c,
            None => {
                all = (0..fleet.clients.len()).collect();
                &all
            }
        };
        let assignments: Vec<crate::store::PolicyAssignment> = positions
            .iter()
            .map(|&i| (&fleet.clients[i], outcome.etag_of(i)))
            .filter(|(c, etag)| self.saved_assignments.get(&c.name).map(String::as_str) != Some(*etag))
            .map(|(c, etag)| crate::store::PolicyAssignment { client: c.name.clone(), etag: etag.to_string() })
            .collect();
        store.save_reconcile(&record, &policies, &assignments)?;
        crate::notify::after_reconcile(desired, catalog, last, &record, &outcome.events);
        self.saved_etags.extend(policies.into_keys());
        for a in assignments {
            self.saved_assignments.insert(a.client, a.etag);
        }
        self.save_snapshot(store, inputs);
        Ok(record)
    }

    /// Save the desired state the outcome was derived from, when it changed since the
    /// last one saved, for the management points that follow the site (`serve`).
    fn save_snapshot(&mut self, store: &mut dyn Store, inputs: &Published<'_>) {
        let current = (inputs.desired.revision.clone(), inputs.catalog.version, inputs.catalog_status.clone());
        if self.snapshot_of.as_ref() == Some(&current) {
            return;
        }
        let snapshot =
            crate::site::snapshot::Snapshot::of(inputs.desired, inputs.catalog.version, inputs.catalog_status);
        match snapshot.save(store) {
            Ok(stamp) => {
                tracing::debug!(%stamp, "site desired state saved for the management points");
                self.snapshot_of = Some(current);
            }
            Err(e) => warn!(
                error = %e,
                "cannot save the site's desired state for the management points; they keep the last one until the \
                 next publish saves it"
            ),
        }
    }

    /// The status of every resource as the store keeps it. `full`: a whole derivation
    /// (policy breaches are logged then, not after every wave of client changes).
    fn record(&mut self, inputs: &Published<'_>, outcome: &Outcome, full: bool) -> ReconcileRecord {
        let Published { desired, catalog, catalog_status, fleet, previous, now } = *inputs;
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
            if s.breach_count > 0 && full {
                warn!(policy = %name, breaches = s.breach_count, "{}", s.conditions[0].message);
            }
            push("CompliancePolicy", ns(&desired.compliance_policies[&name].metadata.namespace), &name, json(&s));
        }
        for (name, s) in &outcome.waivers {
            push("Waiver", ns(&desired.waivers[name].metadata.namespace), name, json(s));
        }
        for (name, s) in crate::notify::provider_statuses(desired, now) {
            push(
                "NotificationProvider",
                ns(&desired.notification_providers[&name].metadata.namespace),
                &name,
                json(&s),
            );
        }
        for (name, s) in &outcome.packages {
            push("DeploymentPackage", ns(&desired.packages[name].metadata.namespace), name, json(s));
        }
        // The rules run once per catalog version and revision; otherwise their last status.
        if let Some(rules) = self.rules.as_mut() {
            for (name, s) in rules.run(desired, catalog, fleet, previous, now) {
                push("DeploymentRule", ns(&desired.rules[&name].metadata.namespace), &name, json(&s));
            }
        }
        statuses.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        ReconcileRecord { time: now, revision: desired.revision.clone(), catalog_version: catalog.version, statuses }
    }
}

/// What a saved outcome was derived from.
#[derive(Clone, Copy)]
pub struct Published<'a> {
    pub desired: &'a DesiredState,
    pub catalog: &'a Catalog,
    pub catalog_status: &'a BTreeMap<String, UpdateCatalogStatus>,
    pub fleet: &'a crate::compliance::Fleet,
    pub previous: &'a crate::reconcile::Previous,
    pub now: Timestamp,
}

/// A status as the JSON the store keeps.
fn json<T: serde::Serialize>(status: &T) -> serde_json::Value {
    serde_json::to_value(status).expect("statuses serialize")
}
