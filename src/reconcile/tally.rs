//! The tally: each client adds its reported states once to counters laid out per
//! deployment and target slot (NotRequired is derived later by subtraction). A client's
//! contribution can be removed again, which is what makes single-client updates cheap.

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use rayon::prelude::*;

use super::Inputs;
use super::prepare::{Prepared, PreparedDeployment};
use super::targeting::{Membership, member};
use crate::catalog::Catalog;
use crate::compliance::{Client, ClientCompliance, Enforcement, ScanResult, client_unknown_reason};
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
    /// Per deployment: position of each catalog key in its `updates` (ABSENT: not deployed).
    pos_by_key: Vec<Vec<u32>>,
    /// Catalog index by stable key.
    idx_by_key: Vec<u32>,
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
    first: usize,
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
        let pos_by_key = prepared.deployments.iter().map(|d| positions(d, catalog, max_key)).collect();
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
            pos_by_key,
            idx_by_key,
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
        self.count_fleet_states(catalog, &who, acc);
        for (di, d) in prepared.deployments.iter().enumerate() {
            let Some(first) = d.slots.iter().position(|&col| member(row, col)) else { continue };
            let target = Target { di, d, first, bucket: self.bases[di].bucket + first };
            self.count_deployment(catalog, &target, &who, acc);
        }
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
                    && state_slot(s.scan(), s.enforcement()) == 0
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

    /// Fleet-wide per-update counts (update lists' statuses).
    fn count_fleet_states(&self, catalog: &Catalog, who: &Contribution<'_>, acc: &mut Acc) {
        let Some(v) = who.scanned else { return };
        *acc.fleet_valid_by_version.entry(v).or_default() += who.sign;
        for s in &who.compliance.states {
            let idx = self.idx_by_key.get(s.key() as usize).copied().unwrap_or(ABSENT);
            if idx == ABSENT || catalog.since_version[idx as usize] > v {
                continue; // not in this catalog, or newer than the scan: counted as unknown
            }
            let slot = state_slot(s.scan(), s.enforcement());
            acc.fleet_upd[idx as usize][slot] += who.sign;
        }
    }

    /// One targeted client in one deployment: its machine state, windows and slots.
    fn count_deployment(&self, catalog: &Catalog, t: &Target<'_>, who: &Contribution<'_>, acc: &mut Acc) {
        let sign = who.sign;
        let m = match who.scanned {
            None if !t.d.updates.is_empty() => Machines { targeted: 1, unknown: 1, ..Default::default() },
            None => Machines { targeted: 1, compliant: 1, ..Default::default() },
            Some(v) => {
                *acc.bucket_valid_by_version[t.bucket].entry(v).or_default() += sign;
                self.count_deployed_states(catalog, t, v, who, acc)
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

    /// The deployed updates' states of a client with a usable scan of version `v`.
    fn count_deployed_states(
        &self,
        catalog: &Catalog,
        t: &Target<'_>,
        v: u64,
        who: &Contribution<'_>,
        acc: &mut Acc,
    ) -> Machines {
        let d = t.d;
        let pos = &self.pos_by_key[t.di];
        let base = self.bases[t.di].upd + t.first * d.updates.len();
        let (mut required, mut failed, mut reboot, mut waived_required) = (false, false, false, false);
        for s in &who.compliance.states {
            let p = pos.get(s.key() as usize).copied().unwrap_or(ABSENT);
            if p == ABSENT || catalog.since_version[d.updates[p as usize] as usize] > v {
                continue;
            }
            let slot = state_slot(s.scan(), s.enforcement());
            if slot == 0 && who.waived.binary_search(&d.updates[p as usize]).is_ok() {
                // Waived: neither Required nor counted; listed as waived.
                acc.bucket_waived_pairs[t.bucket] += who.sign;
                waived_required = true;
                continue;
            }
            acc.bucket_upd[base + p as usize][slot] += who.sign;
            required |= slot == 0;
            failed |= s.enforcement().failed();
            reboot |= s.enforcement() == Enforcement::PendingReboot;
        }
        let mut m =
            Machines { targeted: 1, failed: failed as i64, pending_reboot: reboot as i64, ..Default::default() };
        if required {
            m.required = 1;
        } else if v < d.max_since {
            m.unknown = 1;
        } else if waived_required {
            m.waived = 1;
        } else {
            m.compliant = 1;
        }
        m
    }
}

/// Position of each catalog key in a deployment's updates (ABSENT: not deployed).
fn positions(d: &PreparedDeployment, catalog: &Catalog, max_key: usize) -> Vec<u32> {
    let mut pos = vec![ABSENT; max_key];
    for (p, &i) in d.updates.iter().enumerate() {
        pos[catalog.keys[i as usize] as usize] = p as u32;
    }
    pos
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
