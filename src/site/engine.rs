//! The site engine's driver: cold start from the store, waves of client changes from the
//! change feed, whole re-derivations when the desired state, the catalog or the clock
//! moved past what the last derivation covers, and status published on change (at most
//! once per `publish_every`, at once after a quiet spell).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{debug, info, warn};

use super::feed::Cursor;
use super::{SiteHandle, SiteState};
use crate::Result;
use crate::catalog::Catalog;
use crate::compliance::{Client, Fleet};
use crate::desired::DesiredState;
use crate::pipeline::{Published, Reconciler};
use crate::reconcile::{ClientChange, Inputs, Previous, previous_from};
use crate::resources::UpdateCatalogStatus;
use crate::store::{ReconcileRecord, Store};

/// How the engine publishes.
#[derive(Clone, Debug)]
pub struct SiteOptions {
    /// Longest time between a change and its status in the store (debounce).
    pub publish_every: Duration,
}

impl Default for SiteOptions {
    fn default() -> Self {
        SiteOptions { publish_every: Duration::from_secs(1) }
    }
}

/// The running engine of one site. Owns its own store connection; the state it derives
/// is read through its [`SiteHandle`].
pub struct Site {
    handle: SiteHandle,
    store: Box<dyn Store>,
    options: SiteOptions,
    reconciler: Reconciler,
    previous: Previous,
    cursor: Cursor,
    /// Fleet positions changed since the last publish; None: everything changed.
    changed: Option<BTreeSet<usize>>,
    /// When the first unpublished change happened.
    dirty_since: Option<Instant>,
    last_publish: Option<Instant>,
    /// After a failed publish: its retry is not due before this (backing off).
    retry_at: Option<Instant>,
    failed_publishes: u32,
    last_record: Option<ReconcileRecord>,
    /// Whole derivations and waves applied, for logs and benchmarks.
    pub stats: SiteStats,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SiteStats {
    pub derivations: u64,
    pub waves: u64,
    pub clients_applied: u64,
    pub publishes: u64,
}

/// What a cold start reads from the store, before the engine owns its connection.
pub struct Loaded {
    through: u64,
    fleet: Fleet,
    last_record: Option<ReconcileRecord>,
    took: Duration,
}

impl Loaded {
    /// The feed position first, then the fleet and the last saved status, so a change
    /// committed meanwhile is applied again rather than missed.
    pub fn read(store: &dyn Store) -> Result<Loaded> {
        let started = Instant::now();
        let through = store.feed_head()?;
        let fleet = store.load_fleet()?;
        let last_record = store.last_reconcile()?;
        Ok(Loaded { through, fleet, last_record, took: started.elapsed() })
    }
}

impl Site {
    /// Cold start: [`Loaded::read`] the store, then [`Site::from_loaded`].
    pub fn start(
        handle: SiteHandle,
        store: Box<dyn Store>,
        desired: DesiredState,
        catalog: Catalog,
        catalog_status: BTreeMap<String, UpdateCatalogStatus>,
        now: Timestamp,
        options: SiteOptions,
    ) -> Result<Site> {
        let loaded = Loaded::read(store.as_ref())?;
        Ok(Site::from_loaded(handle, store, loaded, desired, catalog, catalog_status, now, options))
    }

    /// The engine over what a cold start read: one whole derivation, then it owns `store`.
    #[allow(clippy::too_many_arguments)]
    pub fn from_loaded(
        handle: SiteHandle,
        store: Box<dyn Store>,
        loaded: Loaded,
        desired: DesiredState,
        catalog: Catalog,
        catalog_status: BTreeMap<String, UpdateCatalogStatus>,
        now: Timestamp,
        options: SiteOptions,
    ) -> Site {
        let started = Instant::now();
        let Loaded { through, fleet, last_record, took } = loaded;
        let previous = previous_from(last_record.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
        let state = SiteState::derive(Arc::new(desired), Arc::new(catalog), catalog_status, fleet, &previous, now);
        info!(
            clients = state.fleet.clients.len(),
            states = state.fleet.state_count(),
            feed = through,
            load_ms = took.as_millis() as u64,
            derive_ms = started.elapsed().as_millis() as u64,
            "site engine started from the store"
        );
        handle.write(|s| *s = Some(state));
        handle.bump_applied();
        let site = Site {
            handle,
            store,
            options,
            reconciler: Reconciler::default(),
            previous,
            cursor: Cursor::at(through),
            changed: None,
            dirty_since: Some(Instant::now()),
            last_publish: None,
            retry_at: None,
            failed_publishes: 0,
            last_record,
            stats: SiteStats { derivations: 1, ..Default::default() },
        };
        site.events(now);
        site
    }

    /// The engine's store connection (catalog syncs and reads share it).
    pub fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    pub fn store_mut(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    /// Whether the site derived from this revision, catalog version and catalog status.
    pub fn covers(
        &self,
        revision: &str,
        catalog: &Catalog,
        catalog_status: &BTreeMap<String, UpdateCatalogStatus>,
    ) -> bool {
        self.handle
            .read(|s| {
                s.desired.revision == revision
                    && s.catalog.version == catalog.version
                    && &s.catalog_status == catalog_status
            })
            .unwrap_or(false)
    }

    /// Whether the site derived from this desired-state revision.
    pub fn covers_revision(&self, revision: &str) -> bool {
        self.handle.read(|s| s.desired.revision == revision).unwrap_or(false)
    }

    /// How long a failed publish still backs off (None: a publish may be tried now).
    pub fn backing_off(&self) -> Option<Duration> {
        self.retry_at.and_then(|t| t.checked_duration_since(Instant::now())).filter(|d| !d.is_zero())
    }

    /// Something changed since the last publish.
    pub fn dirty(&self) -> bool {
        self.dirty_since.is_some()
    }

    pub fn handle(&self) -> &SiteHandle {
        &self.handle
    }

    /// Run the DeploymentRules after catalog syncs (`run --propose-rules`).
    pub fn propose_rules(&mut self, proposer: crate::git::rules::Proposer) {
        self.reconciler.rules = Some(crate::git::rules::AfterSync::new(proposer));
    }

    /// The site's clients and catalog as of the last publish, for the metrics.
    pub fn facts(&self) -> &crate::metrics::SiteFacts {
        &self.reconciler.site
    }

    /// A desired state and catalog read now: re-derived in memory when the revision, the
    /// catalog version or a catalog's sync status changed (the fleet is not reloaded).
    pub fn set_desired(
        &mut self,
        desired: DesiredState,
        catalog: Catalog,
        catalog_status: BTreeMap<String, UpdateCatalogStatus>,
        now: Timestamp,
    ) -> bool {
        if self.covers(&desired.revision, &catalog, &catalog_status) {
            return false;
        }
        if self.covers_revision(&desired.revision)
            && self.handle.read(|s| s.catalog.version == catalog.version).unwrap_or(false)
        {
            // Only a catalog's sync status moved: nothing to derive, only to publish.
            self.handle.write(|slot| slot.as_mut().expect("the site is started").catalog_status = catalog_status);
            self.dirty_since.get_or_insert_with(Instant::now);
            self.handle.bump_applied();
            return true;
        }
        let (desired, catalog) = (Arc::new(desired), Arc::new(catalog));
        self.handle.write(|slot| {
            let state = slot.as_mut().expect("the site is started");
            state.desired = desired;
            state.catalog = catalog;
            state.catalog_status = catalog_status;
        });
        self.rederive(now);
        true
    }

    /// Whole derivation over the fleet in memory (a new revision or catalog, or the clock
    /// passed the last outcome's validity).
    fn rederive(&mut self, now: Timestamp) {
        let started = Instant::now();
        let previous = &self.previous;
        self.handle.write(|slot| {
            let s = slot.as_mut().expect("the site is started");
            let inputs = Inputs { desired: &s.desired, catalog: &s.catalog, fleet: &s.fleet, previous, now };
            s.engine = crate::reconcile::Engine::new(&inputs).0;
            s.derived_at = now;
        });
        self.stats.derivations += 1;
        self.changed = None;
        self.dirty_since.get_or_insert_with(Instant::now);
        self.handle.bump_applied();
        debug!(elapsed_ms = started.elapsed().as_millis() as u64, "site re-derived");
        self.events(now);
    }

    /// Log the events of the current outcome (a whole derivation's).
    fn events(&self, _now: Timestamp) {
        self.handle.read(|s| {
            for e in &s.engine.outcome().events {
                info!(kind = %e.kind, name = %e.name, reason = %e.reason, "{}", e.message);
            }
        });
    }

    /// Apply what the change feed holds past the cursor: reload the clients it names and
    /// apply them as one wave. Returns how many clients changed.
    pub fn follow(&mut self, now: Timestamp) -> Result<usize> {
        let names = self.cursor.next(self.store.as_ref(), Instant::now())?;
        let expired = self.handle.read(|s| s.engine.outcome().valid_until.is_some_and(|t| now >= t)).unwrap_or(false);
        if names.is_empty() {
            if expired {
                self.rederive(now);
            }
            return Ok(0);
        }
        let clients = self.store.load_clients(&names)?;
        let n = clients.len();
        self.apply(clients, now);
        Ok(n)
    }

    /// Apply clients as the store now holds them: a wave when the engine can take it
    /// incrementally, a whole derivation otherwise.
    fn apply(&mut self, clients: Vec<Client>, now: Timestamp) {
        let previous = &self.previous;
        let mut positions = Vec::with_capacity(clients.len());
        let applied = self.handle.write(|slot| {
            let s = slot.as_mut().expect("the site is started");
            let mut befores: Vec<(usize, Client)> = Vec::new();
            let known = s.fleet.clients.len();
            for client in clients {
                match s.index.get(&client.name) {
                    Some(&i) => {
                        let before = std::mem::replace(&mut s.fleet.clients[i], client);
                        befores.push((i, before));
                        positions.push(i);
                    }
                    None => {
                        let i = s.fleet.clients.len();
                        s.index.insert(client.name.clone(), i);
                        s.fleet.clients.push(client);
                        positions.push(i);
                    }
                }
            }
            let mut changes: Vec<ClientChange<'_>> =
                befores.iter().map(|(index, before)| ClientChange::Changed { index: *index, before }).collect();
            changes.extend((known..s.fleet.clients.len()).map(|index| ClientChange::Joined { index }));
            let inputs = Inputs { desired: &s.desired, catalog: &s.catalog, fleet: &s.fleet, previous, now };
            let incremental = s.engine.update_clients(&inputs, &changes).is_some();
            if !incremental {
                s.engine = crate::reconcile::Engine::new(&inputs).0;
            }
            s.derived_at = now;
            incremental
        });
        self.stats.waves += 1;
        self.stats.clients_applied += positions.len() as u64;
        if applied {
            if let Some(changed) = self.changed.as_mut() {
                changed.extend(positions);
            }
        } else {
            self.stats.derivations += 1;
            self.changed = None;
            self.events(now);
        }
        self.dirty_since.get_or_insert_with(Instant::now);
        self.handle.bump_applied();
    }

    /// When the next publish is due (None: nothing to publish).
    pub fn publish_due(&self) -> Option<Instant> {
        let dirty = self.dirty_since?;
        let due = match self.last_publish {
            Some(last) => (last + self.options.publish_every).max(dirty),
            None => dirty,
        };
        Some(self.retry_at.map_or(due, |retry| retry.max(due)))
    }

    /// Save the status and the changed policy assignments when due; returns the record
    /// saved. Leading edge: a change after a quiet spell is published at once; under a
    /// stream of changes, once per `publish_every`.
    pub fn publish_if_due(&mut self, now: Timestamp) -> Result<Option<ReconcileRecord>> {
        match self.publish_due() {
            Some(due) if Instant::now() >= due => self.publish(now).map(Some),
            _ => Ok(None),
        }
    }

    /// Save the status and the changed policy assignments now.
    pub fn publish(&mut self, now: Timestamp) -> Result<ReconcileRecord> {
        let changed: Option<Vec<usize>> = self.changed.as_ref().map(|c| c.iter().copied().collect());
        let (reconciler, store, previous, last) =
            (&mut self.reconciler, self.store.as_mut(), &self.previous, self.last_record.as_ref());
        let saved = self
            .handle
            .read(|s| {
                crate::pipeline::save_publish_settings(store, &s.desired, now)?;
                let inputs = Published {
                    desired: &s.desired,
                    catalog: &s.catalog,
                    catalog_status: &s.catalog_status,
                    fleet: &s.fleet,
                    previous,
                    now,
                };
                reconciler.save_outcome(store, &inputs, s.engine.outcome(), last, changed.as_deref())
            })
            .expect("the site is started");
        let record = match saved {
            Ok(r) => r,
            Err(e) => {
                self.failed_publishes += 1;
                let backoff = PUBLISH_RETRY_FIRST
                    .saturating_mul(1 << self.failed_publishes.saturating_sub(1).min(16))
                    .min(PUBLISH_RETRY_MAX);
                self.retry_at = Some(Instant::now() + backoff);
                warn!(
                    error = %e,
                    failures = self.failed_publishes,
                    retry_in_ms = backoff.as_millis() as u64,
                    "cannot publish the site's status; check the store, the publish is retried"
                );
                return Err(e);
            }
        };
        self.failed_publishes = 0;
        self.retry_at = None;
        self.previous = previous_from(&record.statuses);
        self.last_record = Some(record.clone());
        self.changed = Some(BTreeSet::new());
        self.dirty_since = None;
        self.last_publish = Some(Instant::now());
        self.stats.publishes += 1;
        // Rows this engine is well past; a management point following the site from
        // further behind reloads its fleet (`site.feed.pruned`).
        if self.cursor.through > FEED_KEEP {
            let through = self.cursor.through - FEED_KEEP;
            let pruned = self
                .store
                .prune_feed(through)
                .and_then(|_| self.store.set_setting(PRUNED_SETTING, &through.to_string()));
            if let Err(e) = pruned {
                warn!(error = %e, "cannot prune the change feed; it is retried at the next publish");
            }
        }
        Ok(record)
    }

    /// A following management point's stand-in for a publish: nothing is saved (the
    /// engine that owns the site saves), but the next derivation starts from this one's
    /// statuses, as the owner's starts from the record it saved.
    pub fn settle(&mut self) {
        if self.dirty_since.take().is_none() {
            return;
        }
        self.previous = self
            .handle
            .read(|s| {
                let o = s.engine.outcome();
                Previous {
                    deployments: o.deployments.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    waivers: o.waivers.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                }
            })
            .expect("the site is started");
        self.changed = Some(BTreeSet::new());
    }

    /// Derive from now on from the statuses of `record` (the owner's last publish).
    pub fn set_previous(&mut self, record: Option<&ReconcileRecord>) {
        self.previous = previous_from(record.map(|r| r.statuses.as_slice()).unwrap_or(&[]));
    }

    /// Whether the owner pruned change-feed rows this engine has not read: it must then
    /// [`Site::reload`] its fleet.
    pub fn fell_behind(&self) -> Result<bool> {
        let pruned = self.store.setting(PRUNED_SETTING)?.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        Ok(self.cursor.through < pruned)
    }

    /// A cold start again, keeping the desired state and catalog: the whole fleet read
    /// from the store and derived.
    pub fn reload(&mut self, now: Timestamp) -> Result<()> {
        let Loaded { through, fleet, took, .. } = Loaded::read(self.store.as_ref())?;
        let (desired, catalog, catalog_status) = self
            .handle
            .read(|s| (s.desired.clone(), s.catalog.clone(), s.catalog_status.clone()))
            .expect("the site is started");
        let state = SiteState::derive(desired, catalog, catalog_status, fleet, &self.previous, now);
        info!(
            clients = state.fleet.clients.len(),
            feed = through,
            load_ms = took.as_millis() as u64,
            "site reloaded from the store"
        );
        self.handle.write(|s| *s = Some(state));
        self.cursor = Cursor::at(through);
        self.stats.derivations += 1;
        self.changed = None;
        self.dirty_since.get_or_insert_with(Instant::now);
        self.handle.bump_applied();
        Ok(())
    }

    /// The fleet as the engine holds it, for checks (a copy).
    pub fn fleet(&self) -> Fleet {
        self.handle.read(|s| s.fleet.clone()).unwrap_or_default()
    }
}

/// The first retry of a failed publish, doubling up to [`PUBLISH_RETRY_MAX`].
const PUBLISH_RETRY_FIRST: Duration = Duration::from_millis(250);
const PUBLISH_RETRY_MAX: Duration = Duration::from_secs(30);

/// Feed rows kept behind the cursor (a margin for looking back after a restart, and for
/// management points following the site a little behind).
const FEED_KEEP: u64 = 100_000;
/// The setting naming the last feed row pruned.
pub(super) const PRUNED_SETTING: &str = "site.feed.pruned";
