//! `patchops plan`: what merging a branch would change. Both revisions go through the
//! same reconcile core against the current catalog and compliance, and the outcomes are
//! compared per deployment: updates added and removed, machines that newly receive each
//! update (with how many of them require it), deadlines against maintenance windows, and
//! warnings. The command (`cmd/plan.rs`) exits 0 for no change, 2 for a change, 1 for an
//! error, so CI can gate on it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::process::ExitCode;

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::compliance::{Client, ClientCompliance, ComplianceState, Fleet, classify, client_unknown_reason};
use crate::desired::DesiredState;
use crate::reconcile::targeting::member;
use crate::reconcile::{Inputs, Outcome, Prepared, PreparedDeployment, Previous, previous_from, reconcile, windows};
use crate::resources::ClientSettingsSpec;
use crate::{Error, Result};

/// What merging head into base changes.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub base_revision: String,
    pub head_revision: String,
    pub catalog_version: u64,
    pub clients: u64,
    pub now: Timestamp,
    /// Deployments that are added, removed or changed (unchanged ones are left out).
    pub deployments: Vec<DeploymentPlan>,
    /// How many deployments merging leaves as they are.
    pub unchanged_deployments: u64,
    /// Other resources added, removed or changed.
    pub resources: Vec<ResourceChange>,
    /// Warnings about the plan as a whole (e.g. no catalog in the store).
    pub warnings: Vec<String>,
    /// CompliancePolicy violations the head brings that the base does not have.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<crate::governance::policy::Violation>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Change {
    Added,
    Removed,
    Changed,
}

impl Change {
    fn word(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Changed => "changed",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceChange {
    pub kind: String,
    pub name: String,
    pub change: Change,
}

/// One deployment's change.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPlan {
    pub name: String,
    pub change: Change,
    /// Deployed update ids after the merge (empty when removed).
    pub updates: Vec<String>,
    pub updates_added: Vec<String>,
    pub updates_removed: Vec<String>,
    /// The deployment's phase as the reconcile core gives it (Pending, Available,
    /// PastDeadline, Halted) after and before the merge; None where it does not exist.
    pub phase: Option<String>,
    pub phase_before: Option<String>,
    /// Machines targeted (every phase) before and after the merge.
    pub targeted_before: u64,
    pub targeted_after: u64,
    pub available_time: Option<Timestamp>,
    pub deadline: Option<Timestamp>,
    pub deadline_before: Option<Timestamp>,
    /// Longest max run time of the deployed updates, what a window must leave free.
    pub max_run_time: String,
    /// Each target collection and its maintenance windows against the deadline.
    pub collections: Vec<CollectionFit>,
    /// Per update and target collection: machines that receive the update only after
    /// the merge, and how many of them require it now.
    pub new_receipts: Vec<Receipt>,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionFit {
    /// The target collection (the deployment's, or a phase's).
    pub name: String,
    pub members: u64,
    /// The collection whose maintenance windows these targeted machines get (a machine
    /// gets the windows of every collection it is in); None: machines in no collection
    /// with windows, which install as soon as the updates are available.
    pub windows_of: Option<String>,
    /// Targeted machines this row speaks for.
    pub machines: u64,
    /// First window at or after the available time that leaves the max run time free.
    pub next_window: Option<Timestamp>,
    /// That window starts early enough to finish before the deadline (true when there
    /// is no deadline).
    pub fits_before_deadline: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Receipt {
    pub update: String,
    pub collection: String,
    pub machines: u64,
    pub required: u64,
}

impl Plan {
    /// Whether merging changes anything.
    pub fn changes(&self) -> bool {
        !self.deployments.is_empty() || !self.resources.is_empty()
    }

    /// 1 when the head breaks a CompliancePolicy the base did not, else 2 for a change, 0 for none.
    pub fn exit_code(&self) -> ExitCode {
        if !self.violations.is_empty() {
            ExitCode::from(1)
        } else if self.changes() {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// Everything both sides are evaluated against.
pub struct World<'a> {
    pub catalog: &'a Catalog,
    pub fleet: &'a Fleet,
    pub previous: &'a Previous,
    pub now: Timestamp,
}

/// What `plan` reads: the repository and its two revisions, the store, the moment.
#[derive(Clone, Debug)]
pub struct PlanInputs {
    /// Local path or URL of the repository.
    pub repo: String,
    /// The revision merged into.
    pub base: String,
    /// The revision proposed.
    pub head: String,
    /// Folder inside the repository holding the resources.
    pub path: Option<String>,
    /// Store with the current catalog and compliance.
    pub store: String,
    /// Evaluate at this time instead of now.
    pub now: Option<Timestamp>,
}

/// Read both revisions and the store, and compute the plan.
pub fn make(args: &PlanInputs) -> Result<Plan> {
    let state = crate::process::state_dir();
    let source = |rev: &str| crate::git::GitSource {
        repo: args.repo.clone(),
        revision: Some(rev.to_string()),
        path: args.path.clone(),
        cache_dir: state.join("git-cache"),
    };
    let (base_tree, base) = crate::pipeline::load_desired(&source(&args.base)).inspect_err(|e| {
        if matches!(e, Error::InvalidDesiredState(_)) {
            eprintln!("error: the base revision {:?} is invalid; fix it first", args.base);
        }
    })?;
    let (head_tree, head) = crate::pipeline::load_desired(&source(&args.head)).inspect_err(|e| {
        if matches!(e, Error::InvalidDesiredState(_)) {
            eprintln!("error: the head revision {:?} is invalid; merging it would be rejected", args.head);
        }
    })?;
    let store = crate::store::open_existing(&args.store)?;
    let catalog = store.load_catalog()?;
    // Only the compliance of the updates the change touches is read.
    let fleet = store.load_fleet_for(&needed_update_keys(&base, &head, &catalog))?;
    let last = store.last_reconcile()?;
    let previous = previous_from(last.as_ref().map(|r| r.statuses.as_slice()).unwrap_or(&[]));
    let world =
        World { catalog: &catalog, fleet: &fleet, previous: &previous, now: args.now.unwrap_or_else(Timestamp::now) };
    let mut plan = compute(&base, &head, &world);
    // Only what the branch brings: a violation the base already has is not this change's.
    use crate::governance::policy::violations;
    let key = |v: &crate::governance::policy::Violation| (v.resource.clone(), v.field.clone(), v.policy.clone());
    let before: std::collections::HashSet<_> =
        violations(&base, &catalog, source(&args.base).commit_time(&base_tree.commit)?).iter().map(key).collect();
    plan.violations = violations(&head, &catalog, source(&args.head).commit_time(&head_tree.commit)?)
        .into_iter()
        .filter(|v| !before.contains(&key(v)))
        .collect();
    Ok(plan)
}

/// One side, prepared as the reconcile core prepares it, with the warnings a plan shows.
struct Side {
    prepared: Prepared,
    /// Per deployment: what its list names that it will not deploy as written.
    warnings: Vec<Vec<String>>,
}

impl Side {
    fn new(desired: &DesiredState, catalog: &Catalog) -> Self {
        let prepared = Prepared::new(desired, catalog);
        let warnings = prepared
            .deployments
            .iter()
            .map(|d| {
                let excluded = prepared.list_of(d).into_iter().flat_map(|r| &r.excluded);
                let not_in_catalog = excluded.filter(|e| e.reason == "NotInCatalog").map(|e| e.message.clone());
                d.warnings.iter().map(|(_, m)| m.clone()).chain(not_in_catalog).collect()
            })
            .collect();
        Side { prepared, warnings }
    }

    fn deployments(&self) -> &[PreparedDeployment] {
        &self.prepared.deployments
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.prepared.index(name)
    }

    /// The update ids deployment `di` deploys.
    fn ids(&self, di: usize, catalog: &Catalog) -> Vec<String> {
        self.deployments()[di].updates.iter().map(|&i| catalog.updates[i as usize].id.clone()).collect()
    }

    /// A client's membership row in this side's collections.
    fn row(&self, client: &Client) -> Vec<u64> {
        let mut row = vec![0u64; self.prepared.collections.len().div_ceil(64).max(1)];
        self.prepared.collections.evaluate(client, &mut row);
        row
    }
}

/// Per-client counters, summed over the fleet.
#[derive(Clone, Default)]
struct Tally {
    /// Per base deployment, per head deployment: machines targeted.
    targeted_base: Vec<u64>,
    targeted_head: Vec<u64>,
    /// (head deployment, update position, slot) → [machines, required].
    receipts: HashMap<(usize, usize, usize), [u64; 2]>,
    /// (changed head deployment, slot) → [machines, machines in a collection with windows].
    slot_machines: HashMap<(usize, usize), [u64; 2]>,
    /// (changed head deployment, slot, collection with windows) → machines.
    window_machines: HashMap<(usize, usize, usize), u64>,
}

impl Tally {
    fn merge(mut self, o: Tally) -> Tally {
        self.targeted_base.iter_mut().zip(&o.targeted_base).for_each(|(a, b)| *a += b);
        self.targeted_head.iter_mut().zip(&o.targeted_head).for_each(|(a, b)| *a += b);
        for (k, v) in o.receipts {
            let e = self.receipts.entry(k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
        for (k, v) in o.slot_machines {
            let e = self.slot_machines.entry(k).or_default();
            e[0] += v[0];
            e[1] += v[1];
        }
        for (k, v) in o.window_machines {
            *self.window_machines.entry(k).or_default() += v;
        }
        self
    }
}

/// Head deployments a merge may change: new ones and changed ones (`.0`), and, when any
/// collection changed, every one — its members may have (`.1`).
fn touched(
    base: &DesiredState,
    head: &DesiredState,
    b: &Side,
    h: &Side,
    catalog: &Catalog,
) -> (Vec<usize>, Vec<usize>) {
    let spec_json = |d: &DesiredState, name: &str| serde_json::to_value(&d.deployments[name].spec).ok();
    let collection_json = |d: &DesiredState| {
        d.collections.iter().map(|(n, c)| (n.clone(), serde_json::to_value(&c.spec).ok())).collect::<Vec<_>>()
    };
    let collections_changed = collection_json(base) != collection_json(head);
    let changed_spec: Vec<usize> = (0..h.deployments().len())
        .filter(|&hi| {
            let name = &h.deployments()[hi].name;
            match b.index(name) {
                None => true,
                Some(bi) => {
                    spec_json(base, name) != spec_json(head, name)
                        || b.deployments()[bi].settings != h.deployments()[hi].settings
                        || b.ids(bi, catalog) != h.ids(hi, catalog)
                }
            }
        })
        .collect();
    let changed_head = if collections_changed { (0..h.deployments().len()).collect() } else { changed_spec.clone() };
    (changed_spec, changed_head)
}

/// The stable keys of the updates whose compliance a plan reads: those of the head
/// deployments it may change and of the base deployments of the same names or removed.
pub fn needed_update_keys(base: &DesiredState, head: &DesiredState, catalog: &Catalog) -> Vec<u32> {
    let (b, h) = (Side::new(base, catalog), Side::new(head, catalog));
    let (_, changed_head) = touched(base, head, &b, &h, catalog);
    let names: HashSet<&str> = changed_head.iter().map(|&hi| h.deployments()[hi].name.as_str()).collect();
    let mut keys: Vec<u32> = changed_head
        .iter()
        .flat_map(|&hi| h.deployments()[hi].updates.iter())
        .chain(
            b.deployments()
                .iter()
                .filter(|d| names.contains(d.name.as_str()) || h.index(&d.name).is_none())
                .flat_map(|d| d.updates.iter()),
        )
        .map(|&i| catalog.keys[i as usize])
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Compare two desired states against the same catalog, fleet and time: prepare both
/// sides, find the deployments a merge may touch, count the fleet once for both sides,
/// reconcile the changed deployments on each side, and describe each change.
pub fn compute(base: &DesiredState, head: &DesiredState, world: &World<'_>) -> Plan {
    let catalog = world.catalog;
    let (b, h) = (Side::new(base, catalog), Side::new(head, catalog));
    let (changed_spec, changed_head) = touched(base, head, &b, &h, catalog);
    let tally = FleetCount::new(&b, &h, &changed_head, head, world).count();
    let changed = changed_deployments(&b, &h, &changed_spec, &tally);
    let (before, after) = reconcile_changed(base, head, &b, &h, &changed, world);
    let compared = Compared { b: &b, h: &h, world, tally, before, after };
    let mut deployments: Vec<DeploymentPlan> =
        (0..h.deployments().len()).filter(|&hi| changed[hi]).map(|hi| compared.changed_plan(hi)).collect();
    deployments.extend(
        (0..b.deployments().len())
            .filter(|&bi| h.index(&b.deployments()[bi].name).is_none())
            .map(|bi| compared.removed_plan(bi)),
    );
    deployments.sort_by(|a, b| a.name.cmp(&b.name));
    Plan {
        base_revision: base.revision.clone(),
        head_revision: head.revision.clone(),
        catalog_version: catalog.version,
        clients: world.fleet.clients.len() as u64,
        now: world.now,
        deployments,
        unchanged_deployments: changed.iter().filter(|c| !**c).count() as u64,
        resources: resource_changes(base, head),
        warnings: store_warnings(catalog),
        violations: Vec::new(),
    }
}

/// A client's scan as the plan judges it (with the settings that apply to every client).
struct Scan {
    usable: bool,
    version: u64,
}

/// Counts the fleet once for both sides: machines targeted per deployment, and for the
/// deployments a merge may change, who newly receives each update and which windows.
struct FleetCount<'a> {
    b: &'a Side,
    h: &'a Side,
    changed_head: &'a [usize],
    /// For each update a changed head deployment deploys: the base deployments that
    /// already deploy it (a machine they target receives it already).
    base_with: HashMap<u32, Vec<usize>>,
    defaults: ClientSettingsSpec,
    /// Head collections with maintenance windows.
    windowed: Vec<usize>,
    world: &'a World<'a>,
}

impl<'a> FleetCount<'a> {
    fn new(b: &'a Side, h: &'a Side, changed_head: &'a [usize], head: &DesiredState, world: &'a World<'a>) -> Self {
        let mut base_with: HashMap<u32, Vec<usize>> = HashMap::new();
        for &hi in changed_head {
            for &u in &h.deployments()[hi].updates {
                base_with.entry(u).or_insert_with(|| {
                    (0..b.deployments().len())
                        .filter(|&bi| b.deployments()[bi].updates.binary_search(&u).is_ok())
                        .collect()
                });
            }
        }
        let defaults = crate::pipeline::default_settings(head);
        FleetCount { b, h, changed_head, base_with, defaults, windowed: h.prepared.collections.windowed(), world }
    }

    fn count(&self) -> Tally {
        let empty = || Tally {
            targeted_base: vec![0; self.b.deployments().len()],
            targeted_head: vec![0; self.h.deployments().len()],
            ..Default::default()
        };
        self.world.fleet.clients.par_iter().fold(empty, |t, client| self.client(t, client)).reduce(empty, Tally::merge)
    }

    /// One client: which deployments target it on each side, and what it newly receives.
    fn client(&self, mut t: Tally, client: &Client) -> Tally {
        let (brow, hrow) = (self.b.row(client), self.h.row(client));
        let base_targets: Vec<bool> =
            self.b.deployments().iter().map(|d| d.slots.iter().any(|&c| member(&brow, c))).collect();
        for (i, &x) in base_targets.iter().enumerate() {
            t.targeted_base[i] += x as u64;
        }
        for (i, d) in self.h.deployments().iter().enumerate() {
            t.targeted_head[i] += d.slots.iter().any(|&c| member(&hrow, c)) as u64;
        }
        let c = &client.compliance;
        let (ttl, min_agent) = (self.defaults.scan_ttl.signed(), self.defaults.minimum_agent_version.as_deref());
        let scan = Scan {
            usable: client_unknown_reason(c, ttl, min_agent, self.world.now).is_none(),
            version: c.last_scan.as_ref().map_or(0, |s| s.catalog_version),
        };
        for &hi in self.changed_head {
            let Some(slot) = self.h.deployments()[hi].slots.iter().position(|&col| member(&hrow, col)) else {
                continue;
            };
            let mut any_window = false;
            for &ci in self.windowed.iter().filter(|&&ci| member(&hrow, Some(ci))) {
                *t.window_machines.entry((hi, slot, ci)).or_default() += 1;
                any_window = true;
            }
            let e = t.slot_machines.entry((hi, slot)).or_default();
            e[0] += 1;
            e[1] += any_window as u64;
            self.receipts(&mut t, (hi, slot), &base_targets, c, &scan);
        }
        t
    }

    /// The updates of head deployment `hi` the client receives through `slot` that no
    /// base deployment targeting it delivers already, and whether it requires each now.
    fn receipts(
        &self,
        t: &mut Tally,
        (hi, slot): (usize, usize),
        base_targets: &[bool],
        c: &ClientCompliance,
        scan: &Scan,
    ) {
        let catalog = self.world.catalog;
        for (p, u) in self.h.deployments()[hi].updates.iter().enumerate() {
            if self.base_with[u].iter().any(|&bi| base_targets[bi]) {
                continue;
            }
            let required = scan.usable && {
                let key = catalog.keys[*u as usize];
                let reported = c.states.binary_search_by_key(&key, |s| s.key()).ok().map(|i| c.states[i]);
                classify(reported, true, catalog.since_version[*u as usize], scan.version).state()
                    == ComplianceState::Required
            };
            let e = t.receipts.entry((hi, p, slot)).or_default();
            e[0] += 1;
            e[1] += required as u64;
        }
    }
}

/// Per head deployment: whether merging changes it (its spec or its updates, the
/// machines it targets, or machines newly receiving an update).
fn changed_deployments(b: &Side, h: &Side, changed_spec: &[usize], tally: &Tally) -> Vec<bool> {
    (0..h.deployments().len())
        .map(|hi| {
            changed_spec.contains(&hi)
                || b.index(&h.deployments()[hi].name).map_or(0, |bi| tally.targeted_base[bi]) != tally.targeted_head[hi]
                || tally.receipts.keys().any(|k| k.0 == hi)
        })
        .collect()
}

/// The core's outcome on each side for just the deployments merging changes or removes.
fn reconcile_changed(
    base: &DesiredState,
    head: &DesiredState,
    b: &Side,
    h: &Side,
    changed: &[bool],
    world: &World<'_>,
) -> (Outcome, Outcome) {
    let mut names: HashSet<&str> =
        h.deployments().iter().zip(changed).filter(|(_, c)| **c).map(|(d, _)| d.name.as_str()).collect();
    names.extend(b.deployments().iter().map(|d| d.name.as_str()).filter(|n| h.index(n).is_none()));
    let only = |d: &DesiredState| {
        let mut d = d.clone();
        d.deployments.retain(|n, _| names.contains(n.as_str()));
        d
    };
    let (only_base, only_head) = (only(base), only(head));
    let run = |desired: &DesiredState| {
        reconcile(&Inputs {
            desired,
            catalog: world.catalog,
            fleet: world.fleet,
            previous: world.previous,
            now: world.now,
        })
    };
    rayon::join(|| run(&only_base), || run(&only_head))
}

/// Both sides, counted and reconciled: what each deployment's change is.
struct Compared<'a> {
    b: &'a Side,
    h: &'a Side,
    world: &'a World<'a>,
    tally: Tally,
    /// The core's outcome before and after the merge (changed deployments only).
    before: Outcome,
    after: Outcome,
}

impl Compared<'_> {
    /// A head deployment merging adds or changes.
    fn changed_plan(&self, hi: usize) -> DeploymentPlan {
        let (catalog, d) = (self.world.catalog, &self.h.deployments()[hi]);
        let bi = self.b.index(&d.name);
        let before: Vec<String> = bi.map(|bi| self.b.ids(bi, catalog)).unwrap_or_default();
        let after = self.h.ids(hi, catalog);
        let mut warnings = self.h.warnings[hi].clone();
        if let Some(deadline) = d.timing.deadline
            && deadline < self.world.now
        {
            warnings.push(format!(
                "the deadline {deadline} is in the past: mandatory updates install at once on merge, outside maintenance windows"
            ));
        }
        DeploymentPlan {
            name: d.name.clone(),
            change: if bi.is_some() { Change::Changed } else { Change::Added },
            updates_added: after.iter().filter(|u| !before.contains(u)).cloned().collect(),
            updates_removed: before.iter().filter(|u| !after.contains(u)).cloned().collect(),
            new_receipts: self.receipts(hi, &after),
            updates: after,
            phase: self.after.deployments.get(&d.name).map(|s| s.phase.clone()),
            phase_before: self.before.deployments.get(&d.name).map(|s| s.phase.clone()),
            targeted_before: bi.map_or(0, |bi| self.tally.targeted_base[bi]),
            targeted_after: self.tally.targeted_head[hi],
            available_time: Some(d.timing.available),
            deadline: d.timing.deadline,
            deadline_before: bi.and_then(|bi| self.b.deployments()[bi].timing.deadline),
            max_run_time: human(d.max_run_time),
            collections: self.collection_fits(hi, &mut warnings),
            warnings,
        }
    }

    /// A base deployment the head no longer has.
    fn removed_plan(&self, bi: usize) -> DeploymentPlan {
        let d = &self.b.deployments()[bi];
        DeploymentPlan {
            name: d.name.clone(),
            change: Change::Removed,
            updates: vec![],
            updates_added: vec![],
            updates_removed: self.b.ids(bi, self.world.catalog),
            phase: None,
            phase_before: self.before.deployments.get(&d.name).map(|s| s.phase.clone()),
            targeted_before: self.tally.targeted_base[bi],
            targeted_after: 0,
            available_time: None,
            deadline: None,
            deadline_before: d.timing.deadline,
            max_run_time: human(SignedDuration::ZERO),
            collections: vec![],
            new_receipts: vec![],
            warnings: vec![],
        }
    }

    /// Each target collection of head deployment `hi`: per collection with windows its
    /// machines get, the next window that fits, and the machines with no window at all.
    fn collection_fits(&self, hi: usize, warnings: &mut Vec<String>) -> Vec<CollectionFit> {
        let (d, names) = (&self.h.deployments()[hi], &self.h.prepared.collections.names);
        let windowed = self.h.prepared.collections.windowed();
        let mut collections = Vec::new();
        let mut seen = HashSet::new();
        for (slot, &target) in d.slots.iter().enumerate() {
            let Some(ci) = target else { continue };
            if !seen.insert(ci) {
                continue;
            }
            let cname = names[ci].clone();
            let members = self.after.collections.get(&cname).map_or(0, |s| s.member_count);
            if members == 0 {
                warnings.push(format!("collection {cname} has no members: the deployment reaches no machine there"));
            }
            for &wi in &windowed {
                let Some(&n) = self.tally.window_machines.get(&(hi, slot, wi)) else { continue };
                collections.push(self.window_fit(d, &cname, members, wi, n, warnings));
            }
            let [machines, with_windows] = self.tally.slot_machines.get(&(hi, slot)).copied().unwrap_or_default();
            if machines == with_windows && machines > 0 {
                continue;
            }
            collections.push(CollectionFit {
                name: cname,
                members,
                windows_of: None,
                machines: machines - with_windows,
                next_window: None,
                fits_before_deadline: true,
            });
        }
        collections
    }

    /// The `n` machines of target collection `cname` that get the windows of collection
    /// `wi`: the next window that leaves the max run time free, and whether it comes
    /// before the deadline (a warning when not).
    fn window_fit(
        &self,
        d: &PreparedDeployment,
        cname: &str,
        members: u64,
        wi: usize,
        n: u64,
        warnings: &mut Vec<String>,
    ) -> CollectionFit {
        let collections = &self.h.prepared.collections;
        let (from, max_run) = (d.timing.available.max(self.world.now), d.max_run_time);
        let wname = collections.names[wi].clone();
        let next = windows::next_window(&collections.spec(wi).maintenance_windows, from, max_run);
        let fits = match (next, d.timing.deadline) {
            (_, None) => true,
            (Some(w), Some(deadline)) => crate::time::add(w.start.max(from), max_run) <= deadline,
            (None, Some(_)) => false,
        };
        if !fits {
            let honor = d.settings.honor_maintenance_windows_at_deadline.unwrap_or(false);
            warnings.push(format!(
                "{n} machine(s) of {cname} get the windows of {wname}, and none before the deadline fits {}: they install at the deadline{}",
                human(max_run),
                if honor { " only if a window opens (honorMaintenanceWindowsAtDeadline)" } else { ", outside any window" }
            ));
        }
        CollectionFit {
            name: cname.to_string(),
            members,
            windows_of: Some(wname),
            machines: n,
            next_window: next.map(|w| w.start),
            fits_before_deadline: fits,
        }
    }

    /// Machines newly receiving each update of head deployment `hi` (ids `after`), by
    /// update and target collection.
    fn receipts(&self, hi: usize, after: &[String]) -> Vec<Receipt> {
        let (slots, names) = (&self.h.deployments()[hi].slots, &self.h.prepared.collections.names);
        let mut receipts: Vec<((usize, usize), Receipt)> = self
            .tally
            .receipts
            .iter()
            .filter(|((d, _, _), _)| *d == hi)
            .map(|(&(_, p, slot), &[machines, required])| {
                let collection = slots[slot].map(|c| names[c].clone()).unwrap_or_default();
                ((p, slot), Receipt { update: after[p].clone(), collection, machines, required })
            })
            .collect();
        receipts.sort_by_key(|(k, _)| *k);
        receipts.into_iter().map(|(_, r)| r).collect()
    }
}

/// Warnings about the plan as a whole.
fn store_warnings(catalog: &Catalog) -> Vec<String> {
    let mut warnings = Vec::new();
    if catalog.version == 0 {
        warnings.push(
            "the store holds no catalog: no update resolves; run `patchops catalog sync` (or `patchops run`) first"
                .to_string(),
        );
    }
    warnings
}

/// Every resource but deployments, as (kind, name) → spec JSON.
fn specs(d: &DesiredState) -> BTreeMap<(&'static str, String), serde_json::Value> {
    fn add<T: Serialize>(
        out: &mut BTreeMap<(&'static str, String), serde_json::Value>,
        kind: &'static str,
        map: &BTreeMap<String, T>,
        spec: impl Fn(&T) -> serde_json::Value,
    ) {
        for (name, r) in map {
            out.insert((kind, name.clone()), spec(r));
        }
    }
    fn j<T: Serialize>(spec: &T) -> serde_json::Value {
        serde_json::to_value(spec).expect("specs serialize")
    }
    let mut out = BTreeMap::new();
    add(&mut out, "UpdateCatalog", &d.catalogs, |r| j(&r.spec));
    add(&mut out, "Collection", &d.collections, |r| j(&r.spec));
    add(&mut out, "ClientSettings", &d.client_settings, |r| j(&r.spec));
    add(&mut out, "UpdateList", &d.update_lists, |r| j(&r.spec));
    add(&mut out, "DeploymentTemplate", &d.templates, |r| j(&r.spec));
    add(&mut out, "DeploymentPackage", &d.packages, |r| j(&r.spec));
    add(&mut out, "DeploymentRule", &d.rules, |r| j(&r.spec));
    add(&mut out, "Waiver", &d.waivers, |r| j(&r.spec));
    add(&mut out, "CompliancePolicy", &d.compliance_policies, |r| j(&r.spec));
    out
}

fn resource_changes(base: &DesiredState, head: &DesiredState) -> Vec<ResourceChange> {
    let (b, h) = (specs(base), specs(head));
    let mut out = Vec::new();
    for (key, spec) in &h {
        let change = match b.get(key) {
            None => Change::Added,
            Some(old) if old != spec => Change::Changed,
            Some(_) => continue,
        };
        out.push(ResourceChange { kind: key.0.to_string(), name: key.1.clone(), change });
    }
    for key in b.keys().filter(|k| !h.contains_key(*k)) {
        out.push(ResourceChange { kind: key.0.to_string(), name: key.1.clone(), change: Change::Removed });
    }
    out.sort_by(|a, b| (&a.kind, &a.name).cmp(&(&b.kind, &b.name)));
    out
}

/// A duration as people write it: 1h30m, 45m, 0s.
fn human(d: SignedDuration) -> String {
    let secs = d.as_secs();
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        let _ = write!(out, "{h}h");
    }
    if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if s > 0 || out.is_empty() {
        let _ = write!(out, "{s}s");
    }
    out
}

fn short(revision: &str) -> String {
    match revision.split_once("sha1:") {
        Some((name, hex)) => format!("{name}sha1:{}", &hex[..hex.len().min(12)]),
        None => revision.to_string(),
    }
}

fn or_dash(t: Option<Timestamp>) -> String {
    t.map_or_else(|| "-".to_string(), |t| t.to_string())
}

/// Receipt rows shown per deployment in markdown (JSON has them all).
const MARKDOWN_RECEIPTS: usize = 50;

/// The plan as a pull-request comment.
pub fn markdown(plan: &Plan) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "## patchops plan\n");
    let _ = writeln!(
        s,
        "Merging `{}` into `{}`, against catalog version {} and {} clients, as of {}.\n",
        short(&plan.head_revision),
        short(&plan.base_revision),
        plan.catalog_version,
        plan.clients,
        plan.now
    );
    for w in &plan.warnings {
        let _ = writeln!(s, "> **Warning:** {w}\n");
    }
    if !plan.violations.is_empty() {
        let _ = writeln!(s, "### Compliance policy violations ({})\n", plan.violations.len());
        for v in &plan.violations {
            let _ = writeln!(
                s,
                "- `{}:{}` {} `{}`: {} (CompliancePolicy `{}`)",
                v.file, v.line, v.resource, v.field, v.message, v.policy
            );
        }
        let _ = writeln!(s);
    }
    if !plan.changes() {
        let _ = writeln!(s, "**No change.** {} deployments stay as they are.", plan.unchanged_deployments);
        return s;
    }
    let count = |c: Change| plan.deployments.iter().filter(|d| d.change == c).count();
    let _ = writeln!(
        s,
        "**{} deployment(s) change**: {} added, {} changed, {} removed; {} unchanged. {} other resource(s) change.\n",
        plan.deployments.len(),
        count(Change::Added),
        count(Change::Changed),
        count(Change::Removed),
        plan.unchanged_deployments,
        plan.resources.len()
    );
    for d in &plan.deployments {
        let _ = writeln!(s, "### UpdateDeployment `{}` ({})\n", d.name, d.change.word());
        if d.change == Change::Removed {
            let _ = writeln!(
                s,
                "- Withdrawn: {} update(s) no longer deployed to {} machine(s): {}\n",
                d.updates_removed.len(),
                d.targeted_before,
                codes(&d.updates_removed)
            );
            continue;
        }
        let _ = writeln!(
            s,
            "- Updates: {} deployed; added {}; removed {}",
            d.updates.len(),
            codes(&d.updates_added),
            codes(&d.updates_removed)
        );
        match d.change {
            Change::Changed => {
                let _ = writeln!(s, "- Machines targeted: {} (before: {})", d.targeted_after, d.targeted_before);
            }
            _ => {
                let _ = writeln!(s, "- Machines targeted: {}", d.targeted_after);
            }
        }
        let deadline = match (d.deadline, d.deadline_before) {
            (a, b) if d.change == Change::Changed && a != b => format!("{} (before: {})", or_dash(a), or_dash(b)),
            (a, _) => or_dash(a),
        };
        let _ = writeln!(s, "- Available: {}; deadline: {deadline}", or_dash(d.available_time));
        let phase = |p: &Option<String>| p.clone().unwrap_or_else(|| "-".into());
        let _ = match d.change {
            Change::Changed => writeln!(s, "- Phase: {} (before: {})", phase(&d.phase), phase(&d.phase_before)),
            _ => writeln!(s, "- Phase: {}", phase(&d.phase)),
        };
        let _ = writeln!(s, "- Longest max run time: {}\n", d.max_run_time);
        if !d.collections.is_empty() {
            let _ = writeln!(
                s,
                "| Target collection | Members | Windows of | Machines | Next window that fits | Before the deadline |"
            );
            let _ = writeln!(s, "|---|---:|---|---:|---|---|");
            for c in &d.collections {
                let (from, window, fits) = match &c.windows_of {
                    None => ("-", "none: installs when available".to_string(), "yes"),
                    Some(w) => {
                        (w.as_str(), or_dash(c.next_window), if c.fits_before_deadline { "yes" } else { "**no**" })
                    }
                };
                let _ = writeln!(s, "| {} | {} | {from} | {} | {window} | {fits} |", c.name, c.members, c.machines);
            }
            let _ = writeln!(s);
        }
        if d.new_receipts.is_empty() {
            let _ = writeln!(s, "No machine newly receives an update.\n");
        } else {
            let _ = writeln!(s, "Machines that newly receive each update (and how many of them require it now):\n");
            let _ = writeln!(s, "| Update | Collection | Machines | Required |");
            let _ = writeln!(s, "|---|---|---:|---:|");
            for r in d.new_receipts.iter().take(MARKDOWN_RECEIPTS) {
                let _ = writeln!(s, "| {} | {} | {} | {} |", r.update, r.collection, r.machines, r.required);
            }
            if d.new_receipts.len() > MARKDOWN_RECEIPTS {
                let _ = writeln!(
                    s,
                    "\n…and {} more rows (`--output json` lists them all).",
                    d.new_receipts.len() - MARKDOWN_RECEIPTS
                );
            }
            let _ = writeln!(s);
        }
        for w in &d.warnings {
            let _ = writeln!(s, "> **Warning:** {w}\n");
        }
    }
    if !plan.resources.is_empty() {
        let _ = writeln!(s, "### Other resources\n");
        let _ = writeln!(s, "| Kind | Name | Change |");
        let _ = writeln!(s, "|---|---|---|");
        for r in &plan.resources {
            let _ = writeln!(s, "| {} | {} | {} |", r.kind, r.name, r.change.word());
        }
    }
    s
}

fn codes(ids: &[String]) -> String {
    if ids.is_empty() {
        "none".to_string()
    } else {
        ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    }
}

/// The plan as a terminal table.
pub fn table(plan: &Plan) -> String {
    use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header([
        "DEPLOYMENT",
        "CHANGE",
        "UPDATES +",
        "UPDATES -",
        "TARGETED",
        "NEWLY RECEIVING",
        "REQUIRED",
        "DEADLINE",
        "WARNINGS",
    ]);
    for d in &plan.deployments {
        let machines: u64 = d.new_receipts.iter().map(|r| r.machines).sum();
        let required: u64 = d.new_receipts.iter().map(|r| r.required).sum();
        t.add_row([
            d.name.clone(),
            d.change.word().to_string(),
            d.updates_added.len().to_string(),
            d.updates_removed.len().to_string(),
            format!("{} → {}", d.targeted_before, d.targeted_after),
            machines.to_string(),
            required.to_string(),
            or_dash(d.deadline),
            d.warnings.len().to_string(),
        ]);
    }
    let mut s = format!("{} → {}\n{t}\n", short(&plan.base_revision), short(&plan.head_revision));
    for r in &plan.resources {
        let _ = writeln!(s, "{} {} {}", r.kind, r.name, r.change.word());
    }
    for w in plan.warnings.iter().chain(plan.deployments.iter().flat_map(|d| &d.warnings)) {
        let _ = writeln!(s, "warning: {w}");
    }
    for v in &plan.violations {
        let _ = writeln!(s, "violation: {v}");
    }
    s
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn run_times_are_written_as_people_write_them() {
        assert_eq!(human(SignedDuration::from_mins(90)), "1h30m");
        assert_eq!(human(SignedDuration::from_mins(45)), "45m");
        assert_eq!(human(SignedDuration::ZERO), "0s");
    }

    #[test]
    fn revisions_are_shortened_to_twelve_hex_digits() {
        assert_eq!(short("main@sha1:0123456789abcdef0123"), "main@sha1:0123456789ab");
        assert_eq!(short("v1.2"), "v1.2");
    }
}
