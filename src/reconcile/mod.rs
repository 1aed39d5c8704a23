//! The pure reconcile core: (desired state at revision R, catalog version V, compliance
//! snapshot, previous status, now) → (client policies, status of every resource, events).
//! No I/O and no clock: the same inputs give the same outputs, which is what makes
//! `plan` trustworthy and every rule testable with a fixed `now`.
//!
//! Design for scale: compliance is counted, not materialised. Each client contributes
//! its reported states once to per-deployment counters (NotRequired is derived by
//! subtraction), so a full reconcile touches each stored state once per deployment
//! targeting its client, and a new report from one client is applied by subtracting
//! its old contribution and adding its new one ([`Engine::update_client`]).
//!
//! The steps, one module each: [`prepare`] (desired state against the catalog), `tally`
//! (each client counted once), `status` (statuses kind by kind, events) and `assign`
//! (client policies, shared by signature). [`Engine::new`] reads as that pipeline.

mod assign;
pub mod phases;
pub mod policy;
pub mod prepare;
pub mod resolve;
mod status;
mod tally;
pub mod targeting;
pub mod timing;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::compliance::{Client, Fleet};
use crate::desired::DesiredState;
use crate::resources::*;
use policy::ClientPolicy;
pub use prepare::{Prepared, PreparedDeployment};
use status::Statuses;
use tally::{Acc, Layout};
use targeting::Membership;

/// Something the reconcile did that a user should see (Kubernetes Events, logs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub kind: String,
    pub name: String,
    /// CamelCase reason, e.g. `DeploymentActivated`, `PhaseAdvanced`, `RolloutHalted`.
    pub reason: String,
    pub message: String,
    pub time: Timestamp,
    /// Whether it asks for attention (Kubernetes event type `Warning`) or informs (`Normal`).
    #[serde(default)]
    pub severity: Severity,
}

/// How much an [`Event`] asks of its reader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Severity {
    /// Something happened as planned (a deployment became available, a phase advanced).
    #[default]
    Normal,
    /// Something needs a person (a rollout halted, a deployed update was superseded).
    Warning,
}

/// Everything the core produces.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outcome {
    pub revision: String,
    pub catalog_version: u64,
    pub deployments: BTreeMap<String, UpdateDeploymentStatus>,
    pub update_lists: BTreeMap<String, UpdateListStatus>,
    pub collections: BTreeMap<String, CollectionStatus>,
    pub packages: BTreeMap<String, DeploymentPackageStatus>,
    pub waivers: BTreeMap<String, WaiverStatus>,
    /// Policy documents in use, by ETag.
    pub policies: BTreeMap<String, Arc<ClientPolicy>>,
    /// ETags by slot; `assignments` points into it (a slot may fall out of use after
    /// incremental updates; its policy is then gone from `policies`).
    pub policy_etags: Vec<String>,
    /// For each client of the fleet (same order), the slot of its policy's ETag.
    pub assignments: Vec<u32>,
    pub events: Vec<Event>,
    /// The outcome stays exact until this moment without new inputs (a scan expires, a
    /// deployment becomes available or due, a phase may start, a window passes).
    pub valid_until: Option<Timestamp>,
}

impl Outcome {
    /// The ETag of a client's policy (by fleet index).
    pub fn etag_of(&self, client: usize) -> &str {
        &self.policy_etags[self.assignments[client] as usize]
    }

    /// A client's policy (by fleet index).
    pub fn policy_of(&self, client: usize) -> &ClientPolicy {
        &self.policies[self.etag_of(client)]
    }
}

/// Statuses from the previous reconcile, by resource name: phase start/success times
/// and condition transition times carry over from them.
#[derive(Clone, Debug, Default)]
pub struct Previous {
    pub deployments: HashMap<String, UpdateDeploymentStatus>,
    /// Waiver statuses: a waiver Active then and expired now gives a WaiverExpired event.
    pub waivers: HashMap<String, WaiverStatus>,
}

/// Inputs of one reconcile.
pub struct Inputs<'a> {
    pub desired: &'a DesiredState,
    pub catalog: &'a Catalog,
    pub fleet: &'a Fleet,
    pub previous: &'a Previous,
    pub now: Timestamp,
}

/// Full reconcile.
pub fn reconcile(inputs: &Inputs<'_>) -> Outcome {
    Engine::new(inputs).1
}

/// One client's change, applied by [`Engine::update_clients`].
#[derive(Clone, Copy, Debug)]
pub enum ClientChange<'a> {
    /// Client `index` of the fleet changed (states, facts); `before` is how it was.
    Changed { index: usize, before: &'a Client },
    /// Client `index` joined: the fleet grew by it, after every client the engine knows.
    Joined { index: usize },
}

/// A reconcile that can be advanced one client at a time.
pub struct Engine {
    prepared: Prepared,
    layout: Layout,
    membership: Membership,
    acc: Acc,
    /// Policy slot by signature; per slot, its signature and how many clients use it.
    slot_of: HashMap<Vec<(u32, u32)>, u32>,
    slot_sigs: Vec<Vec<(u32, u32)>>,
    slot_users: Vec<u32>,
    /// Clients per policy document: two slots may produce the same document (same ETag),
    /// so a document goes only when its last client does.
    etag_users: HashMap<String, u32>,
    halted: Vec<bool>,
    outcome: Outcome,
}

impl Engine {
    /// Run a full reconcile and keep what is needed to apply single-client changes:
    /// prepare the desired state, evaluate memberships, tally every client, finish.
    pub fn new(inputs: &Inputs<'_>) -> (Engine, Outcome) {
        let prepared = Prepared::new(inputs.desired, inputs.catalog);
        let layout = Layout::new(&prepared, inputs);
        let membership = prepared.collections.membership(&inputs.fleet.clients);
        let acc = layout.tally(&prepared, inputs, &membership);
        let mut engine = Engine {
            prepared,
            layout,
            membership,
            acc,
            slot_of: HashMap::new(),
            slot_sigs: Vec::new(),
            slot_users: Vec::new(),
            etag_users: HashMap::new(),
            halted: Vec::new(),
            outcome: Outcome::default(),
        };
        let outcome = engine.finish(inputs, None).expect("a full reconcile always finishes").clone();
        (engine, outcome)
    }

    /// Apply a change to one client (new states or facts) given the client as it was
    /// before. Returns None when the change cannot be applied incrementally (time passed
    /// a validity horizon, or a rollout phase changed): run a full reconcile then.
    ///
    /// The fleet must hold the same clients as when the engine was built (a client that
    /// joins or leaves needs a full reconcile); `None` when it visibly does not.
    pub fn update_client(&mut self, inputs: &Inputs<'_>, index: usize, before: &Client) -> Option<&Outcome> {
        self.update_clients(inputs, &[ClientChange::Changed { index, before }])
    }

    /// Apply the changes of several clients at once (each named once), then derive the
    /// statuses once: the cost of a wave is its clients' contributions plus one status
    /// pass, whatever the fleet's size. None when the changes cannot be applied
    /// incrementally (a validity horizon passed, a rollout phase moved, the fleet does
    /// not match): run a full reconcile then.
    pub fn update_clients(&mut self, inputs: &Inputs<'_>, changes: &[ClientChange<'_>]) -> Option<&Outcome> {
        let joined = changes.iter().filter(|c| matches!(c, ClientChange::Joined { .. })).count();
        let known = self.outcome.assignments.len();
        if self.outcome.valid_until.is_some_and(|t| inputs.now >= t) || inputs.fleet.clients.len() != known + joined {
            return None;
        }
        // Checked before anything is counted: a refused wave leaves the engine as it was.
        let mut next_joined = known;
        for change in changes {
            let fits = match *change {
                ClientChange::Changed { index, before } => {
                    index < known && inputs.fleet.clients[index].name == before.name
                }
                ClientChange::Joined { index } => {
                    next_joined += 1;
                    index == next_joined - 1
                }
            };
            if !fits {
                return None;
            }
        }
        let mut indices = Vec::with_capacity(changes.len());
        let mut row = vec![0u64; self.membership.words()];
        for change in changes {
            let index = match *change {
                ClientChange::Changed { index, before } => {
                    let old_row = self.membership.row(index).to_vec();
                    self.layout.contribute(&self.prepared, inputs, before, &old_row, -1, &mut self.acc);
                    self.prepared.collections.evaluate(&inputs.fleet.clients[index], &mut row);
                    self.membership.set_row(index, &row);
                    index
                }
                ClientChange::Joined { index } => {
                    self.prepared.collections.evaluate(&inputs.fleet.clients[index], &mut row);
                    self.membership.push_row(&row);
                    index
                }
            };
            self.layout.contribute(&self.prepared, inputs, &inputs.fleet.clients[index], &row, 1, &mut self.acc);
            indices.push(index);
        }
        self.finish(inputs, Some(&indices))
    }

    /// The desired state resolved against the catalog, as this engine counts it.
    pub fn prepared(&self) -> &Prepared {
        &self.prepared
    }

    /// Collection membership of every client (same order as the fleet).
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The outcome as of the last change applied.
    pub fn outcome(&self) -> &Outcome {
        &self.outcome
    }

    /// Turn counters into statuses, kind by kind, then into client policies. `only`: these
    /// clients changed (or joined); None when that moved a rollout (phase start or halt),
    /// which needs a full reconcile.
    fn finish(&mut self, inputs: &Inputs<'_>, only: Option<&[usize]>) -> Option<&Outcome> {
        let (desired, catalog) = (inputs.desired, inputs.catalog);
        let mut out =
            Outcome { revision: desired.revision.clone(), catalog_version: catalog.version, ..Default::default() };
        let mut horizon: Vec<Timestamp> = self.acc.min_expiry.into_iter().collect();
        let statuses = Statuses { prepared: &self.prepared, layout: &self.layout, acc: &self.acc, inputs };
        statuses.collections(&mut out, &mut horizon);
        statuses.update_lists(&mut out);
        let rollouts = statuses.deployments(&mut out, &mut horizon);
        statuses.waivers(&mut out, &mut horizon);
        statuses.packages(&mut out);
        match only {
            Some(changed) => self.reassign_policies(inputs, changed, &rollouts, &mut out)?,
            None => self.assign_policies(inputs, &rollouts, &mut out),
        }
        self.halted = rollouts.halted;
        out.valid_until = horizon.into_iter().filter(|t| *t > inputs.now).min();
        // Kept, not copied: a copy of a 500,000-client fleet's assignments per wave was
        // most of a wave's cost.
        self.outcome = out;
        Some(&self.outcome)
    }
}

/// The previous statuses as the core wants them, from stored status documents.
pub fn previous_from(statuses: &[crate::store::ResourceStatus]) -> Previous {
    let deployments = statuses
        .iter()
        .filter(|s| s.kind == "UpdateDeployment")
        .filter_map(|s| serde_json::from_value(s.status.clone()).ok().map(|st| (s.name.clone(), st)))
        .collect();
    let waivers = statuses
        .iter()
        .filter(|s| s.kind == "Waiver")
        .filter_map(|s| serde_json::from_value(s.status.clone()).ok().map(|st| (s.name.clone(), st)))
        .collect();
    Previous { deployments, waivers }
}

#[cfg(test)]
mod test;
