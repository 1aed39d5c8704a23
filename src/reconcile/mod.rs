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

pub mod phases;
pub mod policy;
pub mod resolve;
pub mod targeting;
pub mod timing;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::compliance::{Client, Enforcement, Fleet, ScanResult, client_unknown_reason};
use crate::desired::DesiredState;
use crate::resources::*;
use policy::{ClientPolicy, DeploymentAssignment};
use resolve::ResolvedList;
use targeting::{Collections, Membership};
use timing::{Stage, Timing};

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

/// One deployment, prepared against the catalog.
struct Prepared {
    name: String,
    list: Option<usize>,
    settings: DeploymentSettings,
    timing: Timing,
    /// Catalog indices of the deployed updates.
    updates: Vec<u32>,
    /// Collection index per slot: one slot per phase, or one for the single target.
    slots: Vec<Option<usize>>,
    /// Highest `since_version` among the updates: clients scanned before it have unknowns.
    max_since: u64,
    /// Longest max run time of the updates, for maintenance-window fit.
    max_run_time: SignedDuration,
    /// Updates the deployment names but will not deploy as written (superseded or
    /// expired), as (reason, message).
    warnings: Vec<(&'static str, String)>,
    bucket_base: usize,
    upd_base: usize,
}

/// Machine-level counters for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Machines {
    targeted: i64,
    compliant: i64,
    required: i64,
    unknown: i64,
    failed: i64,
    pending_reboot: i64,
    /// Every Required deployed update is waived: out of the compliance denominator.
    waived: i64,
}

impl Machines {
    fn add(&mut self, o: &Machines) {
        self.waived += o.waived;
        self.targeted += o.targeted;
        self.compliant += o.compliant;
        self.required += o.required;
        self.unknown += o.unknown;
        self.failed += o.failed;
        self.pending_reboot += o.pending_reboot;
    }
}

/// Counters a client contributes to; summed over clients (and subtracted for updates).
#[derive(Clone, Debug, Default, PartialEq)]
struct Acc {
    /// Fleet-wide, per catalog index: [required, installed].
    fleet_upd: Vec<[i64; 2]>,
    /// Fleet-wide clients with a usable scan, by the catalog version they scanned.
    fleet_valid_by_version: BTreeMap<u64, i64>,
    fleet_clients: i64,
    /// Per bucket: a bucket is (deployment, first slot whose collection holds the client).
    bucket_machines: Vec<Machines>,
    /// Per bucket: usable-scan clients by scanned catalog version.
    bucket_valid_by_version: Vec<BTreeMap<u64, i64>>,
    /// Per (bucket, deployed update): [required, installed].
    bucket_upd: Vec<[i64; 2]>,
    /// Per (deployment, slot): [members, compliant members].
    slot_counts: Vec<[i64; 2]>,
    /// Per collection: members.
    collection_members: Vec<i64>,
    /// Per (bucket, collection with maintenance windows): targeted members. A client
    /// receives the windows of every collection it is in, so these decide a
    /// deployment's next window.
    bucket_window_members: Vec<i64>,
    /// Earliest moment a usable scan expires (TTL).
    min_expiry: Option<Timestamp>,
    /// Per bucket: Required (machine, deployed update) pairs a waiver keeps out.
    bucket_waived_pairs: Vec<i64>,
    /// Per waiver in force: [machines targeted, Required pairs covered].
    waiver_counts: Vec<[i64; 2]>,
}

impl Acc {
    fn zeros(catalog: usize, buckets: usize, upd: usize, slots: usize, collections: usize, waivers: usize) -> Self {
        Acc {
            fleet_upd: vec![[0; 2]; catalog],
            fleet_valid_by_version: BTreeMap::new(),
            fleet_clients: 0,
            bucket_machines: vec![Machines::default(); buckets],
            bucket_valid_by_version: vec![BTreeMap::new(); buckets],
            bucket_upd: vec![[0; 2]; upd],
            slot_counts: vec![[0; 2]; slots],
            collection_members: vec![0; collections],
            bucket_window_members: vec![0; buckets * collections],
            min_expiry: None,
            bucket_waived_pairs: vec![0; buckets],
            waiver_counts: vec![[0; 2]; waivers],
        }
    }

    fn merge(mut self, o: Acc) -> Acc {
        let add2 = |a: &mut [i64; 2], b: &[i64; 2]| {
            a[0] += b[0];
            a[1] += b[1];
        };
        self.fleet_upd.iter_mut().zip(&o.fleet_upd).for_each(|(a, b)| add2(a, b));
        for (v, n) in o.fleet_valid_by_version {
            *self.fleet_valid_by_version.entry(v).or_default() += n;
        }
        self.fleet_clients += o.fleet_clients;
        self.bucket_machines.iter_mut().zip(&o.bucket_machines).for_each(|(a, b)| a.add(b));
        for (a, b) in self.bucket_valid_by_version.iter_mut().zip(o.bucket_valid_by_version) {
            for (v, n) in b {
                *a.entry(v).or_default() += n;
            }
        }
        self.bucket_upd.iter_mut().zip(&o.bucket_upd).for_each(|(a, b)| add2(a, b));
        self.slot_counts.iter_mut().zip(&o.slot_counts).for_each(|(a, b)| add2(a, b));
        self.collection_members.iter_mut().zip(&o.collection_members).for_each(|(a, b)| *a += b);
        self.bucket_window_members.iter_mut().zip(&o.bucket_window_members).for_each(|(a, b)| *a += b);
        self.bucket_waived_pairs.iter_mut().zip(&o.bucket_waived_pairs).for_each(|(a, b)| *a += b);
        self.waiver_counts.iter_mut().zip(&o.waiver_counts).for_each(|(a, b)| add2(a, b));
        self.min_expiry = match (self.min_expiry, o.min_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// Desired state and catalog, prepared once per reconcile.
struct Plan {
    collections: Collections,
    lists: Vec<(String, ResolvedList)>,
    deployments: Vec<Prepared>,
    /// Client settings by descending priority, with their collection index.
    settings: Vec<(Option<usize>, ClientSettingsSpec)>,
    /// Per deployment: position of each catalog key in `updates` (u32::MAX: absent).
    pos_by_key: Vec<Vec<u32>>,
    /// Catalog index by stable key.
    idx_by_key: Vec<u32>,
    /// Collections that have maintenance windows.
    windowed: Vec<usize>,
    buckets: usize,
    upd_slots: usize,
    slot_base: Vec<usize>,
    slots_total: usize,
    /// Waivers in force at the reconcile's `now` (the outcome is valid until the next expiry).
    waivers: crate::governance::waivers::Waivers,
}

/// A reconcile that can be advanced one client at a time.
pub struct Engine {
    plan: Plan,
    membership: Membership,
    acc: Acc,
    /// Per client: the policy signature it was assigned.
    signatures: Vec<Vec<(u32, u32)>>,
    /// Policy slot by signature, and how many clients use each slot.
    slot_of: HashMap<Vec<(u32, u32)>, u32>,
    slot_users: Vec<u32>,
    /// Clients per policy document: two slots may produce the same document (same ETag),
    /// so a document goes only when its last client does.
    etag_users: HashMap<String, u32>,
    halted: Vec<bool>,
    outcome: Outcome,
}

const ABSENT: u32 = u32::MAX;

impl Plan {
    fn new(desired: &DesiredState, catalog: &Catalog) -> Self {
        let collections = Collections::new(&desired.collections);
        let lists: Vec<(String, ResolvedList)> =
            desired.update_lists.iter().map(|(n, l)| (n.clone(), resolve::resolve(&l.spec, catalog))).collect();
        let list_index: HashMap<&str, usize> = lists.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
        let max_key = catalog.keys.iter().copied().max().map_or(0, |k| k as usize + 1);
        let mut idx_by_key = vec![ABSENT; max_key];
        for (i, k) in catalog.keys.iter().enumerate() {
            idx_by_key[*k as usize] = i as u32;
        }
        let mut deployments = Vec::new();
        let mut pos_by_key = Vec::new();
        let (mut buckets, mut upd_slots, mut slot_base, mut slots_total) = (0, 0, Vec::new(), 0);
        for (name, d) in &desired.deployments {
            let template = d.spec.template.as_ref().and_then(|t| desired.templates.get(t)).map(|t| t.spec.settings());
            let settings = timing::effective_settings(&d.spec, template);
            let timing = Timing::of(&d.spec, &settings);
            let list = list_index.get(d.spec.update_list.as_str()).copied();
            let updates: Vec<u32> = list.map(|l| lists[l].1.deployed(catalog)).unwrap_or_default();
            let warnings = list.map(|l| supersedence_warnings(&lists[l].1, catalog)).unwrap_or_default();
            let slots: Vec<Option<usize>> = if d.spec.phases.is_empty() {
                vec![settings.collection.as_deref().and_then(|c| collections.index_of(c))]
            } else {
                d.spec.phases.iter().map(|p| collections.index_of(&p.collection)).collect()
            };
            let mut pos = vec![ABSENT; max_key];
            for (p, &i) in updates.iter().enumerate() {
                pos[catalog.keys[i as usize] as usize] = p as u32;
            }
            pos_by_key.push(pos);
            let max_since = updates.iter().map(|&i| catalog.since_version[i as usize]).max().unwrap_or(0);
            let max_run_time = updates
                .iter()
                .map(|&i| catalog.updates[i as usize].max_run_time.signed())
                .max()
                .unwrap_or(SignedDuration::ZERO);
            slot_base.push(slots_total);
            slots_total += slots.len();
            let prepared = Prepared {
                name: name.clone(),
                list,
                settings,
                timing,
                bucket_base: buckets,
                upd_base: upd_slots,
                max_since,
                max_run_time,
                warnings,
                updates,
                slots,
            };
            buckets += prepared.slots.len();
            upd_slots += prepared.slots.len() * prepared.updates.len();
            deployments.push(prepared);
        }
        let mut settings: Vec<(Option<usize>, ClientSettingsSpec)> = desired
            .client_settings
            .values()
            .map(|s| (s.spec.collection.as_deref().and_then(|c| collections.index_of(c)), s.spec.clone()))
            .collect();
        // Highest priority first; at equal priority a collection-specific setting wins.
        settings.sort_by_key(|(c, s)| (std::cmp::Reverse(s.priority), c.is_none()));
        let windowed =
            (0..collections.len()).filter(|&c| !collections.spec(c).maintenance_windows.is_empty()).collect();
        Plan {
            collections,
            lists,
            deployments,
            settings,
            pos_by_key,
            idx_by_key,
            windowed,
            buckets,
            upd_slots,
            slot_base,
            slots_total,
            waivers: Default::default(),
        }
    }

    fn zeros(&self, catalog: usize) -> Acc {
        Acc::zeros(catalog, self.buckets, self.upd_slots, self.slots_total, self.collections.len(), self.waivers.len())
    }

    fn member(row: &[u64], collection: Option<usize>) -> bool {
        collection.is_some_and(|i| row[i / 64] >> (i % 64) & 1 == 1)
    }

    /// The settings that apply to a client with this membership row (defaults if none).
    fn settings_for(&self, row: &[u64]) -> Option<usize> {
        self.settings.iter().position(|(c, _)| c.is_none() || Self::member(row, *c))
    }

    /// Add (`sign` = 1) or remove (`sign` = -1) one client's contribution.
    fn contribute(&self, catalog: &Catalog, client: &Client, row: &[u64], now: Timestamp, sign: i64, acc: &mut Acc) {
        let default_settings = ClientSettingsSpec::default();
        let settings = self.settings_for(row).map_or(&default_settings, |i| &self.settings[i].1);
        let c = &client.compliance;
        let unknown =
            client_unknown_reason(c, settings.scan_ttl.signed(), settings.minimum_agent_version.as_deref(), now);
        let scanned = if unknown.is_none() { c.last_scan.as_ref().map(|s| s.catalog_version) } else { None };
        if sign > 0
            && let (None, Some(scan)) = (unknown, &c.last_scan)
        {
            // The first instant the scan counts as expired (it is valid up to and at time + TTL).
            let expiry = crate::time::add(scan.time, settings.scan_ttl.signed() + SignedDuration::from_nanos(1));
            acc.min_expiry = Some(acc.min_expiry.map_or(expiry, |m| m.min(expiry)));
        }
        for (ci, members) in acc.collection_members.iter_mut().enumerate() {
            if Self::member(row, Some(ci)) {
                *members += sign;
            }
        }
        acc.fleet_clients += sign;
        // Waived updates for this client (catalog indices, sorted), and what each waiver covers.
        let mut waived: Vec<u32> = Vec::new();
        for (wi, covered) in self.waivers.targeting(row, &client.name) {
            acc.waiver_counts[wi][0] += sign;
            waived.extend_from_slice(covered);
            if let Some(v) = scanned {
                for s in &c.states {
                    let idx = self.idx_by_key.get(s.key() as usize).copied().unwrap_or(ABSENT);
                    if idx != ABSENT
                        && catalog.since_version[idx as usize] <= v
                        && state_slot(s.scan(), s.enforcement()) == 0
                        && covered.binary_search(&idx).is_ok()
                    {
                        acc.waiver_counts[wi][1] += sign;
                    }
                }
            }
        }
        waived.sort_unstable();
        waived.dedup();
        if let Some(v) = scanned {
            *acc.fleet_valid_by_version.entry(v).or_default() += sign;
            for s in &c.states {
                let idx = self.idx_by_key.get(s.key() as usize).copied().unwrap_or(ABSENT);
                if idx == ABSENT || catalog.since_version[idx as usize] > v {
                    continue; // not in this catalog, or newer than the scan: counted as unknown
                }
                let slot = state_slot(s.scan(), s.enforcement());
                acc.fleet_upd[idx as usize][slot] += sign;
            }
        }
        for (di, d) in self.deployments.iter().enumerate() {
            let Some(first) = d.slots.iter().position(|&col| Self::member(row, col)) else { continue };
            let bucket = d.bucket_base + first;
            let mut m = Machines { targeted: 1, ..Default::default() };
            match scanned {
                None if !d.updates.is_empty() => m.unknown = 1,
                None => m.compliant = 1,
                Some(v) => {
                    *acc.bucket_valid_by_version[bucket].entry(v).or_default() += sign;
                    let pos = &self.pos_by_key[di];
                    let base = d.upd_base + first * d.updates.len();
                    let (mut required, mut failed, mut reboot, mut waived_required) = (false, false, false, false);
                    for s in &c.states {
                        let p = pos.get(s.key() as usize).copied().unwrap_or(ABSENT);
                        if p == ABSENT || catalog.since_version[d.updates[p as usize] as usize] > v {
                            continue;
                        }
                        let slot = state_slot(s.scan(), s.enforcement());
                        if slot == 0 && waived.binary_search(&d.updates[p as usize]).is_ok() {
                            // Waived: neither Required nor counted; listed as waived.
                            acc.bucket_waived_pairs[bucket] += sign;
                            waived_required = true;
                            continue;
                        }
                        acc.bucket_upd[base + p as usize][slot] += sign;
                        required |= slot == 0;
                        failed |= s.enforcement().failed();
                        reboot |= s.enforcement() == Enforcement::PendingReboot;
                    }
                    if required {
                        m.required = 1;
                    } else if v < d.max_since {
                        m.unknown = 1;
                    } else if waived_required {
                        m.waived = 1;
                    } else {
                        m.compliant = 1;
                    }
                    m.failed = failed as i64;
                    m.pending_reboot = reboot as i64;
                }
            }
            let signed = Machines {
                targeted: m.targeted * sign,
                compliant: m.compliant * sign,
                required: m.required * sign,
                unknown: m.unknown * sign,
                failed: m.failed * sign,
                pending_reboot: m.pending_reboot * sign,
                waived: m.waived * sign,
            };
            acc.bucket_machines[bucket].add(&signed);
            let ncoll = self.collections.len();
            for &ci in &self.windowed {
                if Self::member(row, Some(ci)) {
                    acc.bucket_window_members[bucket * ncoll + ci] += sign;
                }
            }
            for (si, col) in d.slots.iter().enumerate() {
                if Self::member(row, *col) {
                    let sc = &mut acc.slot_counts[self.slot_base[di] + si];
                    sc[0] += sign;
                    // A waived machine does not hold a phase back.
                    sc[1] += (m.compliant + m.waived) * sign;
                }
            }
        }
    }
}

/// Counter slot of a reported state: 0 Required, 1 Installed (Table 1: a pending reboot
/// keeps the update Required).
fn state_slot(scan: ScanResult, e: Enforcement) -> usize {
    match (scan, e) {
        (ScanResult::Installed, Enforcement::PendingReboot) => 0,
        (ScanResult::Installed, _) => 1,
        (ScanResult::Missing, _) => 0,
    }
}

/// Clients with a usable scan older than `since` (they have not scanned the update).
fn scanned_before(valid_by_version: &BTreeMap<u64, i64>, since: u64) -> i64 {
    valid_by_version.range(..since).map(|(_, n)| n).sum()
}

fn counts(total: i64, unknown_clients: i64, valid: &BTreeMap<u64, i64>, since: u64, rq: [i64; 2]) -> StateCounts {
    let unknown = unknown_clients + scanned_before(valid, since);
    StateCounts {
        required: rq[0].max(0) as u64,
        installed: rq[1].max(0) as u64,
        not_required: (total - unknown - rq[0] - rq[1]).max(0) as u64,
        unknown: unknown.max(0) as u64,
    }
}

impl Engine {
    /// Run a full reconcile and keep what is needed to apply single-client changes.
    pub fn new(inputs: &Inputs<'_>) -> (Engine, Outcome) {
        let mut plan = Plan::new(inputs.desired, inputs.catalog);
        if !inputs.desired.waivers.is_empty() {
            let cves = crate::governance::exposure::cve_index(inputs.catalog);
            plan.waivers = crate::governance::waivers::Waivers::at(
                inputs.desired,
                inputs.catalog,
                &cves,
                &plan.collections,
                inputs.now,
            );
        }
        let clients = &inputs.fleet.clients;
        let words = plan.collections.len().div_ceil(64).max(1);
        let mut membership = Membership::new(clients.len(), plan.collections.len());
        let rows: Vec<Vec<u64>> = clients
            .par_iter()
            .map(|c| {
                let mut row = vec![0u64; words];
                plan.collections.evaluate(c, &mut row);
                row
            })
            .collect();
        for (i, r) in rows.iter().enumerate() {
            membership.set_row(i, r);
        }
        let n = inputs.catalog.len();
        let acc = clients
            .par_iter()
            .enumerate()
            .fold(
                || plan.zeros(n),
                |mut acc, (i, c)| {
                    plan.contribute(inputs.catalog, c, membership.row(i), inputs.now, 1, &mut acc);
                    acc
                },
            )
            .reduce(|| plan.zeros(n), Acc::merge);
        let mut engine = Engine {
            plan,
            membership,
            acc,
            signatures: Vec::new(),
            slot_of: HashMap::new(),
            slot_users: Vec::new(),
            etag_users: HashMap::new(),
            halted: Vec::new(),
            outcome: Outcome::default(),
        };
        let outcome = engine.finish(inputs, None).expect("a full reconcile always finishes");
        (engine, outcome)
    }

    /// Apply a change to one client (new states or facts) given the client as it was
    /// before. Returns None when the change cannot be applied incrementally (time passed
    /// a validity horizon, or a rollout phase changed): run a full reconcile then.
    ///
    /// The fleet must hold the same clients as when the engine was built (a client that
    /// joins or leaves needs a full reconcile); `None` when it visibly does not.
    pub fn update_client(&mut self, inputs: &Inputs<'_>, index: usize, before: &Client) -> Option<Outcome> {
        if self.outcome.valid_until.is_some_and(|t| inputs.now >= t)
            || inputs.fleet.clients.len() != self.signatures.len()
            || inputs.fleet.clients.get(index).is_none_or(|c| c.name != before.name)
        {
            return None;
        }
        let client = &inputs.fleet.clients[index];
        let old_row = self.membership.row(index).to_vec();
        self.plan.contribute(inputs.catalog, before, &old_row, inputs.now, -1, &mut self.acc);
        let mut row = vec![0u64; self.membership.words()];
        self.plan.collections.evaluate(client, &mut row);
        self.membership.set_row(index, &row);
        self.plan.contribute(inputs.catalog, client, &row, inputs.now, 1, &mut self.acc);
        self.finish(inputs, Some(index))
    }

    /// Turn counters into statuses and policies. `only`: one client changed; None when
    /// that change moved a rollout (phase start or halt), which needs a full reconcile.
    fn finish(&mut self, inputs: &Inputs<'_>, only: Option<usize>) -> Option<Outcome> {
        let (desired, catalog, now) = (inputs.desired, inputs.catalog, inputs.now);
        let plan = &self.plan;
        let acc = &self.acc;
        let mut out =
            Outcome { revision: desired.revision.clone(), catalog_version: catalog.version, ..Default::default() };
        let mut horizon: Vec<Timestamp> = acc.min_expiry.into_iter().collect();

        // Collections: members and next window.
        for (ci, name) in plan.collections.names.iter().enumerate() {
            let spec = plan.collections.spec(ci);
            let next = windows::next_window(&spec.maintenance_windows, now, SignedDuration::ZERO);
            if let Some(w) = next {
                horizon.push(if w.start > now { w.start } else { w.end });
            }
            let members = acc.collection_members[ci].max(0) as u64;
            out.collections.insert(
                name.clone(),
                CollectionStatus {
                    member_count: members,
                    next_window: next.map(|w| w.start),
                    next_window_end: next.map(|w| w.end),
                    conditions: vec![Condition::new("Ready", true, "Reconciled", format!("{members} members"), now)],
                },
            );
        }

        // Update lists: per-update fleet counts (P1).
        let fleet_unknown = acc.fleet_clients - acc.fleet_valid_by_version.values().sum::<i64>();
        for (name, resolved) in &plan.lists {
            let mut status = UpdateListStatus { catalog_version: catalog.version, ..Default::default() };
            for &i in &resolved.updates {
                let u = &catalog.updates[i as usize];
                let c = counts(
                    acc.fleet_clients,
                    fleet_unknown,
                    &acc.fleet_valid_by_version,
                    catalog.since_version[i as usize],
                    acc.fleet_upd[i as usize],
                );
                add_counts(&mut status.totals, &c);
                status.updates.push(UpdateCounts {
                    id: u.id.clone(),
                    kb: u.kb.clone(),
                    title: u.title.clone(),
                    counts: c,
                });
            }
            status.update_count = status.updates.len() as u64;
            status.excluded = resolved.excluded.clone();
            let msg = if resolved.excluded.is_empty() {
                format!("{} updates; {} required installations", status.update_count, status.totals.required)
            } else {
                format!(
                    "{} updates; {} left out: {}",
                    status.update_count,
                    resolved.excluded.len(),
                    resolved.excluded.iter().map(|e| e.message.as_str()).collect::<Vec<_>>().join("; ")
                )
            };
            status.conditions = vec![Condition::new("Ready", true, "Resolved", msg, now)];
            out.update_lists.insert(name.clone(), status);
        }

        // Deployments: phases, timing, counts.
        let mut active_slots: Vec<usize> = Vec::new();
        let mut halted_flags = Vec::new();
        for (di, d) in plan.deployments.iter().enumerate() {
            let spec = &desired.deployments[&d.name].spec;
            let prev = inputs.previous.deployments.get(&d.name);
            let slot_counts = &acc.slot_counts[plan.slot_base[di]..plan.slot_base[di] + d.slots.len()];
            let bucket_failed = |k: usize| -> (i64, i64) {
                let mut m = Machines::default();
                (0..k).for_each(|b| m.add(&acc.bucket_machines[d.bucket_base + b]));
                (m.failed, m.targeted)
            };
            let rollout = phases::advance(
                spec,
                &d.timing,
                prev.map(|p| p.phases.as_slice()).unwrap_or(&[]),
                slot_counts,
                &bucket_failed,
                now,
            );
            horizon.extend(rollout.next_change);
            horizon.extend(d.timing.next_change(now));
            let active = if d.timing.stage(now) == Stage::Pending { 0 } else { rollout.active };
            active_slots.push(active);
            halted_flags.push(rollout.halted);

            let mut m = Machines::default();
            let mut waived_pairs = 0i64;
            let mut updates = StateCounts::default();
            let mut per_update = vec![[0i64; 2]; d.updates.len()];
            let mut unknown_clients = 0;
            let mut valid = BTreeMap::new();
            for b in 0..active {
                let bucket = d.bucket_base + b;
                m.add(&acc.bucket_machines[bucket]);
                waived_pairs += acc.bucket_waived_pairs[bucket];
                let scanned: i64 = acc.bucket_valid_by_version[bucket].values().sum();
                unknown_clients += acc.bucket_machines[bucket].targeted - scanned;
                for (v, n) in &acc.bucket_valid_by_version[bucket] {
                    *valid.entry(*v).or_insert(0) += n;
                }
                for (p, pu) in per_update.iter_mut().enumerate() {
                    let c = acc.bucket_upd[d.upd_base + b * d.updates.len() + p];
                    pu[0] += c[0];
                    pu[1] += c[1];
                }
            }
            for (p, &i) in d.updates.iter().enumerate() {
                add_counts(
                    &mut updates,
                    &counts(m.targeted, unknown_clients, &valid, catalog.since_version[i as usize], per_update[p]),
                );
            }
            // A waived pair was counted NotRequired by subtraction; it is neither.
            updates.not_required = updates.not_required.saturating_sub(waived_pairs.max(0) as u64);
            let stage = d.timing.stage(now);
            let phase = if rollout.halted {
                "Halted"
            } else {
                match stage {
                    Stage::Pending => "Pending",
                    Stage::Available => "Available",
                    Stage::PastDeadline => "PastDeadline",
                }
            };
            // Windows of every collection a targeted machine is in (before availability:
            // of the machines the first phase will target).
            let ncoll = plan.collections.len();
            let target_windows: Vec<MaintenanceWindow> = plan
                .windowed
                .iter()
                .filter(|&&ci| {
                    (0..active.max(1)).any(|b| acc.bucket_window_members[(d.bucket_base + b) * ncoll + ci] > 0)
                })
                .flat_map(|&ci| plan.collections.spec(ci).maintenance_windows.iter().cloned())
                .collect();
            let next_window = windows::next_window(&target_windows, now, d.max_run_time).map(|w| w.start);
            // Waived machines are out of the denominator.
            let counted = m.targeted - m.waived;
            let pct = if counted > 0 { (m.compliant as f64 * 1000.0 / counted as f64).round() / 10.0 } else { 0.0 };
            let waived_text = if m.waived > 0 { format!(", {} waived", m.waived) } else { String::new() };
            let summary = format!(
                "{pct}% compliant ({}/{counted} machines), {} required, {} unknown, {} failed{waived_text}",
                m.compliant, m.required, m.unknown, m.failed
            );
            let mut conditions = if rollout.halted {
                vec![
                    Condition::new(
                        "Ready",
                        false,
                        "RolloutHalted",
                        format!(
                            "failure budget exceeded: {summary}; fix the failures, then raise the budget or remove failed machines from the target"
                        ),
                        now,
                    ),
                    Condition::new(
                        "Stalled",
                        true,
                        "RolloutHalted",
                        "failure budget exceeded; waiting for a change",
                        now,
                    ),
                ]
            } else if d.list.is_none() {
                vec![Condition::new(
                    "Ready",
                    false,
                    "UpdateListNotFound",
                    format!("updateList {:?} not found", spec.update_list),
                    now,
                )]
            } else {
                vec![Condition::new("Ready", true, "Reconciled", summary, now)]
            };
            if !d.warnings.is_empty() {
                let reason = if d.warnings.iter().any(|w| w.0 == "UpdateSuperseded") {
                    "UpdateSuperseded"
                } else {
                    "UpdateExpired"
                };
                let message = d.warnings.iter().map(|w| w.1.as_str()).collect::<Vec<_>>().join("; ");
                conditions.push(Condition::new("Superseded", true, reason, message, now));
            }
            if let Some(p) = prev {
                conditions = conditions.into_iter().map(|c| c.carry_transition(&p.conditions)).collect();
            }
            // An event for each warning the previous status did not carry.
            let before = prev
                .and_then(|p| p.conditions.iter().find(|c| c.type_ == "Superseded"))
                .map(|c| c.message.as_str())
                .unwrap_or("");
            for (reason, message) in &d.warnings {
                if !before.contains(message.as_str()) {
                    out.events.push(Event {
                        kind: "UpdateDeployment".into(),
                        name: d.name.clone(),
                        reason: reason.to_string(),
                        message: message.clone(),
                        time: now,
                    });
                }
            }
            let status = UpdateDeploymentStatus {
                phase: phase.to_string(),
                rollout_phase: (!spec.phases.is_empty() && active > 0).then(|| spec.phases[active - 1].name.clone()),
                phases: rollout.phases,
                available_time: Some(d.timing.available),
                deadline: d.timing.deadline,
                targeted: m.targeted.max(0) as u64,
                machines: MachineCounts {
                    compliant: m.compliant.max(0) as u64,
                    required: m.required.max(0) as u64,
                    unknown: m.unknown.max(0) as u64,
                    failed: m.failed.max(0) as u64,
                    pending_reboot: m.pending_reboot.max(0) as u64,
                    waived: m.waived.max(0) as u64,
                },
                waived_pairs: waived_pairs.max(0) as u64,
                updates,
                compliance_percent: pct,
                update_count: d.updates.len() as u64,
                next_maintenance_window: next_window,
                last_applied_revision: Some(desired.revision.clone()),
                conditions,
            };
            out.events.extend(events_for(&d.name, prev, &status, now));
            out.deployments.insert(d.name.clone(), status);
        }

        // Waivers: in force or expired, what they cover, an event when one ended.
        if let Some(t) = plan.waivers.next_expiry() {
            horizon.push(t);
        }
        let positions: HashMap<&str, usize> = plan.waivers.names().enumerate().map(|(i, n)| (n, i)).collect();
        for (name, w) in &desired.waivers {
            let status = match positions.get(name.as_str()) {
                Some(&i) => {
                    let [machines, pairs] = acc.waiver_counts[i];
                    WaiverStatus {
                        state: "Active".into(),
                        updates: plan.waivers.covered_ids(i, catalog),
                        machines: machines.max(0) as u64,
                        waived_pairs: pairs.max(0) as u64,
                        conditions: vec![Condition::new(
                            "Ready",
                            true,
                            "Active",
                            format!("in force until {}: {} required pair(s) waived", w.spec.expires, pairs.max(0)),
                            now,
                        )],
                    }
                }
                None => {
                    let was_active = inputs.previous.waivers.get(name).is_some_and(|p| p.state == "Active");
                    if was_active {
                        out.events.push(crate::governance::waivers::expired_event(name, &w.spec));
                    }
                    WaiverStatus {
                        state: "Expired".into(),
                        conditions: vec![Condition::new(
                            "Ready",
                            false,
                            "WaiverExpired",
                            format!("expired at {}; renew it in a pull request or install the updates", w.spec.expires),
                            now,
                        )],
                        ..Default::default()
                    }
                }
            };
            out.waivers.insert(name.clone(), status);
        }

        // Packages: content files of their updates.
        for (name, p) in &desired.packages {
            let mut idx: Vec<u32> = p.spec.updates.iter().flat_map(|u| catalog.find(u)).collect();
            for l in &p.spec.update_lists {
                if let Some((_, r)) = plan.lists.iter().find(|(n, _)| n == l) {
                    idx.extend(&r.updates);
                }
            }
            idx.sort_unstable();
            idx.dedup();
            let files: Vec<(u64, &str)> = idx
                .iter()
                .flat_map(|&i| catalog.updates[i as usize].files.iter().map(|f| (f.size, f.sha256.as_str())))
                .chain(p.spec.files.iter().map(|f| (f.size, f.sha256.as_str())))
                .collect();
            let bytes = files.iter().map(|f| f.0).sum();
            out.packages.insert(
                name.clone(),
                DeploymentPackageStatus {
                    files: files.len() as u64,
                    verified_files: 0,
                    bytes,
                    conditions: vec![Condition::new(
                        "Ready",
                        true,
                        "Resolved",
                        format!("{} files, {bytes} bytes for {} updates", files.len(), idx.len()),
                        now,
                    )],
                },
            );
        }

        // Policies: clients with the same assignments share one document.
        let clients = &inputs.fleet.clients;
        let signature = |i: usize| -> Vec<(u32, u32)> {
            let row = self.membership.row(i);
            let mut sig: Vec<(u32, u32)> = Vec::new();
            for (di, d) in plan.deployments.iter().enumerate() {
                if let Some(first) = d.slots.iter().position(|&c| Plan::member(row, c))
                    && first < active_slots[di]
                {
                    sig.push((di as u32, first as u32));
                }
            }
            sig.push((u32::MAX, plan.settings_for(row).map_or(u32::MAX, |s| s as u32)));
            for (ci, spec) in (0..plan.collections.len()).map(|ci| (ci, plan.collections.spec(ci))) {
                if !spec.maintenance_windows.is_empty() && Plan::member(row, Some(ci)) {
                    sig.push((u32::MAX - 1, ci as u32));
                }
            }
            sig
        };
        if let Some(i) = only {
            let moved =
                halted_flags != self.halted
                    || out.deployments.values().zip(self.outcome.deployments.values()).any(|(a, b)| {
                        a.phases.iter().map(|p| p.started_time).ne(b.phases.iter().map(|p| p.started_time))
                    });
            if moved || self.signatures.len() != clients.len() {
                return None;
            }
            // Only this client's policy can differ; every shared document is unchanged.
            out.policies = std::mem::take(&mut self.outcome.policies);
            out.policy_etags = std::mem::take(&mut self.outcome.policy_etags);
            out.assignments = std::mem::take(&mut self.outcome.assignments);
            let sig = signature(i);
            let old_slot = out.assignments[i];
            let slot = self.slot_for(&sig, desired, catalog, &mut out, &halted_flags);
            self.slot_users[old_slot as usize] -= 1;
            self.slot_users[slot as usize] += 1;
            let old_sig = std::mem::replace(&mut self.signatures[i], sig);
            if self.slot_users[old_slot as usize] == 0 && old_slot != slot {
                self.slot_of.remove(&old_sig);
            }
            let (old_etag, new_etag) = (&out.policy_etags[old_slot as usize], &out.policy_etags[slot as usize]);
            if old_etag != new_etag {
                *self.etag_users.entry(new_etag.clone()).or_default() += 1;
                let left = self.etag_users.get_mut(old_etag).expect("every assigned ETag is counted");
                *left -= 1;
                if *left == 0 {
                    self.etag_users.remove(old_etag);
                    out.policies.remove(old_etag);
                }
            }
            out.assignments[i] = slot;
        } else {
            let signatures: Vec<Vec<(u32, u32)>> = (0..clients.len()).into_par_iter().map(signature).collect();
            self.slot_of.clear();
            self.slot_users.clear();
            out.assignments = Vec::with_capacity(clients.len());
            for sig in &signatures {
                let slot = self.slot_for(sig, desired, catalog, &mut out, &halted_flags);
                self.slot_users[slot as usize] += 1;
                out.assignments.push(slot);
            }
            self.etag_users.clear();
            for &slot in &out.assignments {
                *self.etag_users.entry(out.policy_etags[slot as usize].clone()).or_default() += 1;
            }
            self.signatures = signatures;
        }
        self.halted = halted_flags;
        out.valid_until = horizon.into_iter().filter(|t| *t > now).min();
        self.outcome = out.clone();
        Some(out)
    }

    /// The policy slot for a signature, creating its document on first use.
    fn slot_for(
        &mut self,
        sig: &[(u32, u32)],
        desired: &DesiredState,
        catalog: &Catalog,
        out: &mut Outcome,
        halted: &[bool],
    ) -> u32 {
        if let Some(&slot) = self.slot_of.get(sig) {
            return slot;
        }
        let policy = self.policy_for(sig, desired, catalog, out, halted);
        let etag = policy.etag();
        out.policies.insert(etag.clone(), Arc::new(policy));
        out.policy_etags.push(etag);
        self.slot_users.push(0);
        let slot = (out.policy_etags.len() - 1) as u32;
        self.slot_of.insert(sig.to_vec(), slot);
        slot
    }

    fn policy_for(
        &self,
        sig: &[(u32, u32)],
        desired: &DesiredState,
        catalog: &Catalog,
        out: &Outcome,
        halted: &[bool],
    ) -> ClientPolicy {
        let plan = &self.plan;
        let mut policy = ClientPolicy {
            catalog_version: catalog.version,
            revision: desired.revision.clone(),
            settings: ClientSettingsSpec::default(),
            maintenance_windows: Vec::new(),
            deployments: Vec::new(),
        };
        for &(a, b) in sig {
            if a == u32::MAX {
                if b != u32::MAX {
                    policy.settings = plan.settings[b as usize].1.clone();
                }
            } else if a == u32::MAX - 1 {
                policy
                    .maintenance_windows
                    .extend(plan.collections.spec(b as usize).maintenance_windows.iter().cloned());
            } else {
                let d = &plan.deployments[a as usize];
                let spec = &desired.deployments[&d.name].spec;
                let status = &out.deployments[&d.name];
                let timing = match status.phases.get(b as usize).and_then(|p| p.started_time) {
                    Some(started) => d.timing.shifted_to(started),
                    None => d.timing,
                };
                policy.deployments.push(DeploymentAssignment {
                    name: d.name.clone(),
                    phase: spec.phases.get(b as usize).map(|p| p.name.clone()),
                    updates: d.updates.iter().map(|&i| catalog.updates[i as usize].id.clone()).collect(),
                    available_time: timing.available,
                    deadline: timing.deadline,
                    mandatory: d.settings.mandatory.unwrap_or(true),
                    suppress_restart: d.settings.suppress_restart.unwrap_or_default(),
                    honor_maintenance_windows_at_deadline: d
                        .settings
                        .honor_maintenance_windows_at_deadline
                        .unwrap_or(false),
                    state_message_detail: d.settings.state_message_detail.unwrap_or_default(),
                    halted: halted[a as usize],
                });
            }
        }
        policy
    }
}

/// What a list names that a deployment of it will not install as written: updates the
/// list left out as superseded or expired, superseded updates it keeps on purpose, and
/// expired updates (never deployed).
pub fn supersedence_warnings(list: &ResolvedList, catalog: &Catalog) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = list
        .excluded
        .iter()
        .filter_map(|e| match e.reason.as_str() {
            "Superseded" => Some(("UpdateSuperseded", e.message.clone())),
            "Expired" => Some(("UpdateExpired", e.message.clone())),
            _ => None,
        })
        .collect();
    for &i in &list.updates {
        let u = &catalog.updates[i as usize];
        if u.expired {
            out.push(("UpdateExpired", format!("{} is expired and is never deployed", u.id)));
        } else if catalog.is_superseded(i) {
            let by: Vec<&str> =
                catalog.superseded_by[i as usize].iter().map(|&j| catalog.updates[j as usize].id.as_str()).collect();
            out.push((
                "UpdateSuperseded",
                format!("{} is superseded by {} and deployed anyway (excludeSuperseded: false)", u.id, by.join(", ")),
            ));
        }
    }
    out
}

fn add_counts(total: &mut StateCounts, c: &StateCounts) {
    total.required += c.required;
    total.installed += c.installed;
    total.not_required += c.not_required;
    total.unknown += c.unknown;
}

fn events_for(
    name: &str,
    prev: Option<&UpdateDeploymentStatus>,
    now_status: &UpdateDeploymentStatus,
    now: Timestamp,
) -> Vec<Event> {
    let mut out = Vec::new();
    let ev = |reason: &str, message: String| Event {
        kind: "UpdateDeployment".into(),
        name: name.into(),
        reason: reason.into(),
        message,
        time: now,
    };
    let before = prev.map(|p| p.phase.as_str()).unwrap_or("");
    if before != now_status.phase {
        match now_status.phase.as_str() {
            "Available" => {
                out.push(ev("DeploymentActivated", format!("updates available to {} machines", now_status.targeted)))
            }
            "PastDeadline" => out.push(ev("DeadlinePassed", "deadline reached: mandatory updates install now".into())),
            "Halted" => out.push(ev(
                "RolloutHalted",
                format!("failure budget exceeded: {} machines failed", now_status.machines.failed),
            )),
            _ => {}
        }
    }
    for p in &now_status.phases {
        let was = prev.and_then(|s| s.phases.iter().find(|q| q.name == p.name)).map(|q| q.state.as_str());
        if p.state == "Active" && was != Some("Active") && was != Some("Succeeded") {
            out.push(ev("PhaseAdvanced", format!("phase {} started", p.name)));
        }
    }
    out
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
