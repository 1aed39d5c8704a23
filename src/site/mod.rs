//! The live site: one site's compliance picture kept in memory and current. It starts
//! from the store (cold start), then follows the store's change feed — each acknowledged
//! state batch, registration or fact change — and re-derives only the clients it names;
//! a new desired-state revision or catalog version re-derives everything it touches.
//! Every driver (`run`, `serve`, the operator) goes through it, and the management point
//! answers policies, tokens and the read API from it.

pub mod view;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use jiff::Timestamp;

use crate::catalog::Catalog;
use crate::compliance::Fleet;
use crate::desired::DesiredState;
use crate::reconcile::Engine;
use crate::resources::UpdateCatalogStatus;

mod engine;
pub mod feed;
pub mod follower;
pub mod snapshot;
pub use engine::{Loaded, Site, SiteOptions, SiteStats};

/// What the site engine holds: the inputs of the last derivation and its engine. The
/// fleet is in the engine's order (its index is `index`), not necessarily sorted by name.
pub struct SiteState {
    pub desired: Arc<DesiredState>,
    pub catalog: Arc<Catalog>,
    pub catalog_status: BTreeMap<String, UpdateCatalogStatus>,
    pub fleet: Fleet,
    pub engine: Engine,
    /// When the statuses were last derived (the `now` of the engine's outcome).
    pub derived_at: Timestamp,
    /// Client name → position in `fleet` (and in the engine).
    pub index: HashMap<String, usize>,
}

impl SiteState {
    /// A client by name.
    pub fn client(&self, name: &str) -> Option<(usize, &crate::compliance::Client)> {
        self.index.get(name).map(|&i| (i, &self.fleet.clients[i]))
    }
}

/// A handle on a running site engine, shared by the drivers and the management point.
#[derive(Clone, Default)]
pub struct SiteHandle {
    state: Arc<RwLock<Option<SiteState>>>,
    signals: Arc<Signals>,
}

#[derive(Default)]
struct Signals {
    /// Something was committed to the change feed here: follow it now.
    wake: tokio::sync::Notify,
    /// Waves applied so far (a watch, so a waiter sees every later wave).
    applied: std::sync::Mutex<Option<tokio::sync::watch::Sender<u64>>>,
    wakes: std::sync::atomic::AtomicU64,
    /// Why there is no site yet, when the engine knows (a follower waiting for the owner).
    waiting: std::sync::Mutex<Option<String>>,
}

impl SiteHandle {
    /// Read the site as it is now; None before the first derivation finished.
    pub fn read<R>(&self, f: impl FnOnce(&SiteState) -> R) -> Option<R> {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(f)
    }

    fn write<R>(&self, f: impl FnOnce(&mut Option<SiteState>) -> R) -> R {
        let mut guard = self.state.write().unwrap_or_else(|p| p.into_inner());
        f(&mut guard)
    }

    /// Whether the engine has derived the site (policies and the read API answer from it).
    pub fn started(&self) -> bool {
        self.read(|_| ()).is_some()
    }

    /// Why the site is not derived yet, when the engine said.
    pub fn waiting(&self) -> Option<String> {
        self.signals.waiting.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set_waiting(&self, why: Option<String>) {
        *self.signals.waiting.lock().unwrap_or_else(|p| p.into_inner()) = why;
    }

    /// A change was committed to the store by this process: the engine follows the feed
    /// now instead of at its next poll.
    pub fn wake(&self) {
        self.signals.wakes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.signals.wake.notify_one();
    }

    /// Wait (at most `timeout`) for a wake; true when woken.
    pub async fn woken(&self, timeout: std::time::Duration) -> bool {
        tokio::time::timeout(timeout, self.signals.wake.notified()).await.is_ok()
    }

    fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        let mut slot = self.signals.applied.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| tokio::sync::watch::channel(0).0).subscribe()
    }

    fn bump_applied(&self) {
        let mut slot = self.signals.applied.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert_with(|| tokio::sync::watch::channel(0).0).send_modify(|n| *n += 1);
    }

    /// Wake the engine and wait until `ready` holds of the site (or `timeout` passed);
    /// true when it holds. The management point waits so for a registered client's
    /// policy, so the agent gets it in its first poll.
    pub async fn wait_until(&self, timeout: std::time::Duration, ready: impl Fn(&SiteState) -> bool) -> bool {
        let mut applied = self.applied_watch();
        self.wake();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.read(&ready).unwrap_or(false) {
                return true;
            }
            if tokio::time::timeout_at(deadline, applied.changed()).await.is_err() {
                return self.read(&ready).unwrap_or(false);
            }
        }
    }

    /// A client's policy as the engine assigned it: its ETag and document.
    pub fn policy(&self, client: &str) -> Option<Option<(String, Arc<crate::reconcile::policy::ClientPolicy>)>> {
        self.read(|s| {
            let (i, _) = s.client(client)?;
            let outcome = s.engine.outcome();
            let etag = outcome.etag_of(i);
            Some((etag.to_string(), outcome.policies.get(etag)?.clone()))
        })
    }
}

impl SiteState {
    /// A full derivation over an in-memory fleet (sorted by name here).
    pub fn derive(
        desired: Arc<DesiredState>,
        catalog: Arc<Catalog>,
        catalog_status: BTreeMap<String, UpdateCatalogStatus>,
        fleet: Fleet,
        previous: &crate::reconcile::Previous,
        now: Timestamp,
    ) -> SiteState {
        let fleet = Fleet::new(fleet.clients);
        let inputs = crate::reconcile::Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous, now };
        let (engine, _) = Engine::new(&inputs);
        let index = fleet.clients.iter().enumerate().map(|(i, c)| (c.name.clone(), i)).collect();
        SiteState { desired, catalog, catalog_status, fleet, engine, derived_at: now, index }
    }
}

impl SiteHandle {
    /// A handle holding `state` (tests, and the engine once it derived the site).
    pub fn with_state(state: SiteState) -> SiteHandle {
        SiteHandle { state: Arc::new(RwLock::new(Some(state))), signals: Arc::default() }
    }
}
