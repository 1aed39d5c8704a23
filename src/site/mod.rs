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
}

impl SiteHandle {
    /// Read the site as it is now; None before the first derivation finished.
    pub fn read<R>(&self, f: impl FnOnce(&SiteState) -> R) -> Option<R> {
        let guard = self.state.read().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().map(f)
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
        SiteHandle { state: Arc::new(RwLock::new(Some(state))) }
    }
}
