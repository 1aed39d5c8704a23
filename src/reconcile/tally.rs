//! The tally: each client adds its reported states once to counters laid out per
//! deployment and target slot (NotRequired is derived later by subtraction). A client's
//! contribution can be removed again, which is what makes single-client updates cheap.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;

use super::Inputs;
use super::prepare::{Prepared, PreparedDeployment};
use super::targeting::{Membership, member};
use crate::catalog::Catalog;
use crate::compliance::{Client, ClientCompliance, client_unknown_reason};
use crate::desired::DesiredState;
use crate::governance::waivers::Waivers;
use crate::resources::{ClientSettingsSpec, StateCounts};

pub(super) const ABSENT: u32 = u32::MAX;

/// Machine-level counters for one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Machines {
    pub targeted: i64,
    pub compliant: i64,
    pub required: i64,
    pub unknown: i64,
    pub failed: i64,
    pub pending_reboot: i64,
    /// Every Required deployed update is waived: out of the compliance denominator.
    pub waived: i64,
}

impl Machines {
    pub fn add(&mut self, o: &Machines) {
        self.waived += o.waived;
        self.targeted += o.targeted;
        self.compliant += o.compliant;
        self.required += o.required;
        self.unknown += o.unknown;
        self.failed += o.failed;
        self.pending_reboot += o.pending_reboot;
    }

    fn times(&self, sign: i64) -> Machines {
        Machines {
            targeted: self.targeted * sign,
            compliant: self.compliant * sign,
            required: self.required * sign,
            unknown: self.unknown * sign,
            failed: self.failed * sign,
            pending_reboot: self.pending_reboot * sign,
            waived: self.waived * sign,
        }
    }
}

/// Counters a client contributes to; summed over clients (and subtracted for updates).
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct Acc {
    /// Fleet-wide, per catalog index: [required, installed].
    pub fleet_upd: Vec<[i64; 2]>,
    /// Fleet-wide clients with a usable scan, by the catalog version they scanned.
    pub fleet_valid_by_version: BTreeMap<u64, i64>,
    pub fleet_clients: i64,
    /// Per bucket: a bucket is (deployment, first slot whose collection holds the client).
    pub bucket_machines: Vec<Machines>,
    /// Per bucket: usable-scan clients by scanned catalog version.
    pub bucket_valid_by_version: Vec<BTreeMap<u64, i64>>,
    /// Per (bucket, deployed update): [required, installed].
    pub bucket_upd: Vec<[i64; 2]>,
    /// Per (deployment, slot): [members, compliant members].
    pub slot_counts: Vec<[i64; 2]>,
    /// Per collection: members.
    pub collection_members: Vec<i64>,
    /// Per (bucket, collection with maintenance windows): targeted members. A client
    /// receives the windows of every collection it is in, so these decide a
    /// deployment's next window.
    pub bucket_window_members: Vec<i64>,
    /// Earliest moment a usable scan expires (TTL).
    pub min_expiry: Option<Timestamp>,
    /// Per bucket: Required (machine, deployed update) pairs a waiver keeps out.
    pub bucket_waived_pairs: Vec<i64>,
    /// Per waiver in force: [machines targeted, Required pairs covered].
    pub waiver_counts: Vec<[i64; 2]>,
    /// Working space for one client's contribution (not a count; never merged).
    scratch: Targets,
}

/// The deployments targeting the client being counted, and what its states say in each.
#[derive(Default)]
struct Targets {
    /// Per deployment: where the client's (bucket, update) counters start; read only for
    /// the deployments in `list` (and so in `in_group`).
    upd_base: Vec<usize>,
    /// The targeting deployments, with the first slot whose collection holds the client.
    list: Vec<(usize, usize)>,
    /// Per deployment: what the client's deployed states add up to.
    found: Vec<Found>,
    /// Per update group (`Layout::group_of`): its deployments that target the client.
    in_group: Vec<Vec<u32>>,
    /// The targeting deployments (as in `list`) by membership row: clients in the same
    /// collections are targeted alike, so the deployments are scanned once per row.
    by_row: HashMap<Vec<u64>, Vec<(usize, usize)>>,
}

/// Distinct membership rows remembered per worker before the memo starts over.
const ROWS_REMEMBERED: usize = 4096;

// Working space carries no count: every two are equal, and a clone starts empty.
impl PartialEq for Targets {
    fn eq(&self, _: &Targets) -> bool {
        true
    }
}

impl Clone for Targets {
    fn clone(&self) -> Targets {
        Targets::default()
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Targets")
    }
}

/// One client's deployed states in one deployment.
#[derive(Clone, Copy, Default)]
struct Found {
    required: bool,
    failed: bool,
    reboot: bool,
    /// Required (machine, update) pairs a waiver keeps out.
    waived_pairs: i64,
}

impl Targets {
    /// Forget the previous client.
    fn clear(&mut self, layout: &Layout) {
        if self.upd_base.len() != layout.group_of.len() {
            self.upd_base = vec![0; layout.group_of.len()];
            self.found = vec![Found::default(); layout.group_of.len()];
            self.in_group = vec![Vec::new(); layout.groups];
        }
        for &(di, _) in &self.list {
            self.in_group[layout.group_of[di] as usize].clear();
        }
        self.list.clear();
    }

    fn add(&mut self, layout: &Layout, di: usize, first: usize, upd_base: usize) {
        self.upd_base[di] = upd_base;
        self.found[di] = Found::default();
        self.in_group[layout.group_of[di] as usize].push(di as u32);
        self.list.push((di, first));
    }
}

impl Acc {
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
        // `scratch` is working space: nothing to add.
        self.min_expiry = match (self.min_expiry, o.min_expiry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self
    }
}

/// Where one deployment's counters start.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bases {
    /// Its first bucket (one per slot).
    pub bucket: usize,
    /// Its first (bucket, deployed update) pair.
    pub upd: usize,
    /// Its first (deployment, slot) count.
    pub slot: usize,
}

/// Where each client's contribution is counted, plus what decides how a client counts:
/// its client settings (by priority) and the waivers in force.
pub(super) struct Layout {
    /// Client settings by descending priority, with their collection index.
    pub settings: Vec<(Option<usize>, ClientSettingsSpec)>,
    /// Deployments whose `updates` are the same (one list, deployed to several
    /// collections) form an update group; per deployment, its group.
    group_of: Vec<u32>,
    groups: usize,
    /// The update groups carrying each update, by stable key:
    /// `carriers[carried[key]..carried[key + 1]]` are its (group, position in the group's
    /// `updates`). A client's states are read once, and each visits only the deployments
    /// that both carry it and target the client.
    carried: Vec<u32>,
    carriers: Vec<(u32, u32)>,
    /// Catalog index by stable key.
    idx_by_key: Vec<u32>,
    /// Highest `since_version` in the catalog: a scan at least this new has seen every update.
    max_since: u64,
    /// Collections that have maintenance windows.
    pub windowed: Vec<usize>,
    /// Per deployment.
    pub bases: Vec<Bases>,
    buckets: usize,
    upd_slots: usize,
    slots_total: usize,
    collections: usize,
    /// Waivers in force at the reconcile's `now` (the outcome is valid until the next expiry).
    pub waivers: Waivers,
}

/// One client's contribution being counted.
struct Contribution<'a> {
    compliance: &'a ClientCompliance,
    row: &'a [u64],
    /// The catalog version of a usable scan; None when the client is Unknown.
    scanned: Option<u64>,
    /// Catalog indices (sorted) of the updates a waiver covers for this client.
    waived: Vec<u32>,
    /// 1 to add, -1 to remove.
    sign: i64,
}

/// A deployment and the bucket a client falls in.
struct Target<'a> {
    di: usize,
    d: &'a PreparedDeployment,
    bucket: usize,
}

impl Layout {
    pub fn new(prepared: &Prepared, inputs: &Inputs<'_>) -> Self {
        let (desired, catalog) = (inputs.desired, inputs.catalog);
        let max_key = catalog.keys.iter().copied().max().map_or(0, |k| k as usize + 1);
        let mut idx_by_key = vec![ABSENT; max_key];
        for (i, k) in catalog.keys.iter().enumerate() {
            idx_by_key[*k as usize] = i as u32;
        }
        let UpdateIndex { group_of, groups, carried, carriers } = carriers(prepared, catalog, max_key);
        let (mut bases, mut buckets, mut upd_slots, mut slots_total) = (Vec::new(), 0, 0, 0);
        for d in &prepared.deployments {
            bases.push(Bases { bucket: buckets, upd: upd_slots, slot: slots_total });
            buckets += d.slots.len();
            upd_slots += d.slots.len() * d.updates.len();
            slots_total += d.slots.len();
        }
        let collections = &prepared.collections;
        let waivers = if desired.waivers.is_empty() {
            Waivers::default()
        } else {
            let cves = crate::governance::exposure::cve_index(catalog);
            Waivers::at(desired, catalog, &cves, collections, inputs.now)
        };
        Layout {
            settings: client_settings(desired, prepared),
            group_of,
            groups,
            carried,
            carriers,
            idx_by_key,
            max_since: catalog.since_version.iter().copied().max().unwrap_or(0),
            windowed: collections.windowed(),
            bases,
            buckets,
            upd_slots,
            slots_total,
            collections: collections.len(),
            waivers,
        }
    }

    fn zeros(&self, catalog: usize) -> Acc {
        Acc {
            fleet_upd: vec![[0; 2]; catalog],
            fleet_valid_by_version: BTreeMap::new(),
            fleet_clients: 0,
            bucket_machines: vec![Machines::default(); self.buckets],
            bucket_valid_by_version: vec![BTreeMap::new(); self.buckets],
            bucket_upd: vec![[0; 2]; self.upd_slots],
            slot_counts: vec![[0; 2]; self.slots_total],
            collection_members: vec![0; self.collections],
            bucket_window_members: vec![0; self.buckets * self.collections],
            min_expiry: None,
            bucket_waived_pairs: vec![0; self.buckets],
            waiver_counts: vec![[0; 2]; self.waivers.len()],
            scratch: Targets::default(),
        }
    }

    /// Every client of the fleet counted once, in parallel.
    pub fn tally(&self, prepared: &Prepared, inputs: &Inputs<'_>, membership: &Membership) -> Acc {
        let n = inputs.catalog.len();
        inputs
            .fleet
            .clients
            .par_iter()
            .enumerate()
            .fold(
                || self.zeros(n),
                |mut acc, (i, c)| {
                    self.contribute(prepared, inputs, c, membership.row(i), 1, &mut acc);
                    acc
                },
            )
            .reduce(|| self.zeros(n), Acc::merge)
    }

    /// The settings that apply to a client with this membership row (defaults if none).
    pub fn settings_for(&self, row: &[u64]) -> Option<usize> {
        self.settings.iter().position(|(c, _)| c.is_none() || member(row, *c))
    }

    /// Add (`sign` = 1) or remove (`sign` = -1) one client's contribution.
    pub fn contribute(
        &self,
        prepared: &Prepared,
        inputs: &Inputs<'_>,
        client: &Client,
        row: &[u64],
        sign: i64,
        acc: &mut Acc,
    ) {
        let (catalog, now) = (inputs.catalog, inputs.now);
        let default_settings = ClientSettingsSpec::default();
        let settings = self.settings_for(row).map_or(&default_settings, |i| &self.settings[i].1);
        let c = &client.compliance;
        let ttl = settings.scan_ttl.signed();
        let unknown = client_unknown_reason(c, ttl, settings.minimum_agent_version.as_deref(), now);
        let scanned = if unknown.is_none() { c.last_scan.as_ref().map(|s| s.catalog_version) } else { None };
        if sign > 0
            && let (None, Some(scan)) = (unknown, &c.last_scan)
        {
            // The first instant the scan counts as expired (it is valid up to and at time + TTL).
            let expiry = crate::time::add(scan.time, ttl + SignedDuration::from_nanos(1));
            acc.min_expiry = Some(acc.min_expiry.map_or(expiry, |m| m.min(expiry)));
        }
        for (ci, members) in acc.collection_members.iter_mut().enumerate() {
            if member(row, Some(ci)) {
                *members += sign;
            }
        }
        acc.fleet_clients += sign;
        let mut who = Contribution { compliance: c, row, scanned, waived: Vec::new(), sign };
        who.waived = self.count_waivers(catalog, &client.name, &who, acc);
        let mut targets = std::mem::take(&mut acc.scratch);
        targets.clear(self);
        let mut by_row = std::mem::take(&mut targets.by_row);
        if !by_row.contains_key(row) {
            if by_row.len() >= ROWS_REMEMBERED {
                by_row.clear();
            }
            let list = prepared
                .deployments
                .iter()
                .enumerate()
                .filter_map(|(di, d)| Some((di, d.slots.iter().position(|&col| member(row, col))?)))
                .collect();
            by_row.insert(row.to_vec(), list);
        }
        for &(di, first) in &by_row[row] {
            targets.add(self, di, first, self.bases[di].upd + first * prepared.deployments[di].updates.len());
        }
        targets.by_row = by_row;
        if let Some(v) = scanned {
            self.count_states(catalog, v, &who, &mut targets, acc);
        }
        for &(di, first) in &targets.list {
            let d = &prepared.deployments[di];
            let target = Target { di, d, bucket: self.bases[di].bucket + first };
            self.count_deployment(&target, &who, &targets.found[di], acc);
        }
        acc.scratch = targets;
    }

    /// What each waiver targeting the client covers; returns the waived catalog indices.
    fn count_waivers(&self, catalog: &Catalog, name: &str, who: &Contribution<'_>, acc: &mut Acc) -> Vec<u32> {
        let mut waived: Vec<u32> = Vec::new();
        for (wi, covered) in self.waivers.targeting(who.row, name) {
            acc.waiver_counts[wi][0] += who.sign;
            waived.extend_from_slice(covered);
            let Some(v) = who.scanned else { continue };
            for s in &who.compliance.states {
                let idx = self.idx_by_key.get(s.key() as usize).copied().unwrap_or(ABSENT);
                if idx != ABSENT
                    && catalog.since_version[idx as usize] <= v
                    && s.counter_slot() == 0
                    && covered.binary_search(&idx).is_ok()
                {
                    acc.waiver_counts[wi][1] += who.sign;
                }
            }
        }
        waived.sort_unstable();
        waived.dedup();
        waived
    }

    /// One pass over the states of a client with a usable scan of version `v`: the
    /// fleet-wide per-update counts (update lists' statuses), and per targeting deployment
    /// the (bucket, deployed update) counts and what they add up to.
    fn count_states(&self, catalog: &Catalog, v: u64, who: &Contribution<'_>, targets: &mut Targets, acc: &mut Acc) {
        let sign = who.sign;
        *acc.fleet_valid_by_version.entry(v).or_default() += sign;
        // The common case, a scan as new as the catalog, needs no per-update version check.
        let (seen_all, any_waived) = (v >= self.max_since, !who.waived.is_empty());
        for s in &who.compliance.states {
            let key = s.key() as usize;
            let idx = self.idx_by_key.get(key).copied().unwrap_or(ABSENT);
            if idx == ABSENT || (!seen_all && catalog.since_version[idx as usize] > v) {
                continue; // not in this catalog, or newer than the scan: counted as unknown
            }
            let slot = s.counter_slot();
            acc.fleet_upd[idx as usize][slot] += sign;
            // Waived: neither Required nor counted in a deployment; listed as waived.
            let waived = any_waived && slot == 0 && who.waived.binary_search(&idx).is_ok();
            for &(g, p) in &self.carriers[self.carried[key] as usize..self.carried[key + 1] as usize] {
                for &di in &targets.in_group[g as usize] {
                    let found = &mut targets.found[di as usize];
                    if waived {
                        found.waived_pairs += 1;
                        continue;
                    }
                    acc.bucket_upd[targets.upd_base[di as usize] + p as usize][slot] += sign;
                    found.required |= slot == 0;
                    found.failed |= s.failed();
                    found.reboot |= s.pending_reboot();
                }
            }
        }
    }

    /// One targeted client in one deployment: its machine state, windows and slots.
    fn count_deployment(&self, t: &Target<'_>, who: &Contribution<'_>, found: &Found, acc: &mut Acc) {
        let sign = who.sign;
        let m = match who.scanned {
            None if !t.d.updates.is_empty() => Machines { targeted: 1, unknown: 1, ..Default::default() },
            None => Machines { targeted: 1, compliant: 1, ..Default::default() },
            Some(v) => {
                *acc.bucket_valid_by_version[t.bucket].entry(v).or_default() += sign;
                acc.bucket_waived_pairs[t.bucket] += found.waived_pairs * sign;
                machine_state(t.d, v, found)
            }
        };
        acc.bucket_machines[t.bucket].add(&m.times(sign));
        for &ci in &self.windowed {
            if member(who.row, Some(ci)) {
                acc.bucket_window_members[t.bucket * self.collections + ci] += sign;
            }
        }
        for (si, col) in t.d.slots.iter().enumerate() {
            if member(who.row, *col) {
                let sc = &mut acc.slot_counts[self.bases[t.di].slot + si];
                sc[0] += sign;
                // A waived machine does not hold a phase back.
                sc[1] += (m.compliant + m.waived) * sign;
            }
        }
    }
}

/// The machine state of a client with a usable scan of version `v` in a deployment, from
/// what its deployed states added up to.
fn machine_state(d: &PreparedDeployment, v: u64, found: &Found) -> Machines {
    let mut m = Machines {
        targeted: 1,
        failed: found.failed as i64,
        pending_reboot: found.reboot as i64,
        ..Default::default()
    };
    if found.required {
        m.required = 1;
    } else if v < d.max_since {
        m.unknown = 1;
    } else if found.waived_pairs > 0 {
        m.waived = 1;
    } else {
        m.compliant = 1;
    }
    m
}

/// The update groups (`Layout::group_of`) and the update → groups index
/// (`Layout::carriers`), built like a CSR matrix: count per key, prefix sums, then fill.
fn carriers(prepared: &Prepared, catalog: &Catalog, max_key: usize) -> UpdateIndex {
    let mut group_by_updates: HashMap<&[u32], u32> = HashMap::new();
    let mut members: Vec<&[u32]> = Vec::new();
    let group_of = prepared
        .deployments
        .iter()
        .map(|d| {
            *group_by_updates.entry(&d.updates).or_insert_with(|| {
                members.push(&d.updates);
                members.len() as u32 - 1
            })
        })
        .collect();
    let mut carried = vec![0u32; max_key + 1];
    for updates in &members {
        for &i in *updates {
            carried[catalog.keys[i as usize] as usize + 1] += 1;
        }
    }
    for k in 1..carried.len() {
        carried[k] += carried[k - 1];
    }
    let mut next = carried.clone();
    let mut carriers = vec![(0, 0); carried[max_key] as usize];
    for (g, updates) in members.iter().enumerate() {
        for (p, &i) in updates.iter().enumerate() {
            let at = &mut next[catalog.keys[i as usize] as usize];
            carriers[*at as usize] = (g as u32, p as u32);
            *at += 1;
        }
    }
    UpdateIndex { group_of, groups: members.len(), carried, carriers }
}

/// The parts of `Layout` that `carriers` builds (documented there).
struct UpdateIndex {
    group_of: Vec<u32>,
    groups: usize,
    carried: Vec<u32>,
    carriers: Vec<(u32, u32)>,
}

/// Client settings by descending priority, with their collection index.
fn client_settings(desired: &DesiredState, prepared: &Prepared) -> Vec<(Option<usize>, ClientSettingsSpec)> {
    let mut settings: Vec<(Option<usize>, ClientSettingsSpec)> = desired
        .client_settings
        .values()
        .map(|s| (s.spec.collection.as_deref().and_then(|c| prepared.collections.index_of(c)), s.spec.clone()))
        .collect();
    // Highest priority first; at equal priority a collection-specific setting wins.
    settings.sort_by_key(|(c, s)| (std::cmp::Reverse(s.priority), c.is_none()));
    settings
}

/// Clients with a usable scan older than `since` (they have not scanned the update).
fn scanned_before(valid_by_version: &BTreeMap<u64, i64>, since: u64) -> i64 {
    valid_by_version.range(..since).map(|(_, n)| n).sum()
}

/// One update's counts over `total` machines: Required and Installed as counted,
/// Unknown for clients without a usable scan or scanned before the update existed,
/// NotRequired the rest.
pub(super) fn counts(
    total: i64,
    unknown_clients: i64,
    valid: &BTreeMap<u64, i64>,
    since: u64,
    rq: [i64; 2],
) -> StateCounts {
    let unknown = unknown_clients + scanned_before(valid, since);
    StateCounts {
        required: rq[0].max(0) as u64,
        installed: rq[1].max(0) as u64,
        not_required: (total - unknown - rq[0] - rq[1]).max(0) as u64,
        unknown: unknown.max(0) as u64,
    }
}

pub(super) fn add_counts(total: &mut StateCounts, c: &StateCounts) {
    total.required += c.required;
    total.installed += c.installed;
    total.not_required += c.not_required;
    total.unknown += c.unknown;
}
