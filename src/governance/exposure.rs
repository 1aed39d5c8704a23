//! CVE exposure (`patchops cve`): which updates fix a CVE, and per machine whether it is
//! exposed (a fixing update applies and is not installed), patched, not concerned, or
//! unknown — counted per collection, with the deployments that carry the fix. Pure: the
//! caller passes the catalog, the fleet, the desired state and `now`.

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use rayon::prelude::*;
use serde::Serialize;

use super::waivers::Waivers;
use crate::catalog::{Catalog, Severity};
use crate::compliance::{ComplianceState, Fleet, PackedState, classify, client_unknown_reason};
use crate::desired::DesiredState;
use crate::reconcile::targeting::{Collections, Membership};
use crate::resources::ClientSettingsSpec;

/// Where one machine stands against one CVE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum MachineExposure {
    /// A fixing update applies and is not installed (or waits for a restart).
    Exposed,
    /// No usable state: the client's scan failed, expired or never came, or it did not
    /// scan against a catalog holding the fix yet.
    Unknown,
    /// Every fixing update that applies and is missing is waived by a Waiver in force.
    Waived,
    /// Every fixing update that applies is installed.
    Installed,
    /// No fixing update applies.
    NotApplicable,
}

/// One update fixing a CVE: its stable key and the catalog version that introduced it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fix {
    pub key: u32,
    pub since: u64,
}

/// One machine against the updates fixing a CVE. `states`: its reported states sorted by
/// key; `scanned`: the catalog version of its usable scan (None: the client as a whole has
/// no usable state); `waived`: the keys of the fixes a waiver in force covers for it,
/// sorted. Exposed wins over Unknown (one missing fix is enough), Unknown over Waived and
/// Installed (a fix it was not scanned for may be missing), Waived over Installed.
pub fn machine_exposure(
    states: &[PackedState],
    scanned: Option<u64>,
    fixes: &[Fix],
    waived: &[u32],
) -> MachineExposure {
    let Some(scanned) = scanned else { return MachineExposure::Unknown };
    let (mut unknown, mut installed, mut waived_missing) = (false, false, false);
    for f in fixes {
        let reported = states.binary_search_by_key(&f.key, |s| s.key()).ok().map(|i| states[i]);
        match classify(reported, false, f.since, scanned).state() {
            ComplianceState::Required if waived.binary_search(&f.key).is_ok() => waived_missing = true,
            ComplianceState::Required => return MachineExposure::Exposed,
            ComplianceState::Unknown => unknown = true,
            ComplianceState::Installed => installed = true,
            ComplianceState::NotRequired => {}
        }
    }
    if unknown {
        MachineExposure::Unknown
    } else if waived_missing {
        MachineExposure::Waived
    } else if installed {
        MachineExposure::Installed
    } else {
        MachineExposure::NotApplicable
    }
}

/// Machines per exposure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counts {
    pub machines: u64,
    pub exposed: u64,
    pub installed: u64,
    pub not_applicable: u64,
    pub unknown: u64,
    /// Exposed but for a waiver in force: out of the exposure and compliance counts.
    pub waived: u64,
}

impl Counts {
    fn add(&mut self, e: MachineExposure) {
        self.machines += 1;
        match e {
            MachineExposure::Exposed => self.exposed += 1,
            MachineExposure::Installed => self.installed += 1,
            MachineExposure::NotApplicable => self.not_applicable += 1,
            MachineExposure::Unknown => self.unknown += 1,
            MachineExposure::Waived => self.waived += 1,
        }
    }
}

/// CVE id → catalog indices of the updates naming it (ids upper-cased, indices sorted).
pub fn cve_index(catalog: &Catalog) -> BTreeMap<String, Vec<u32>> {
    let mut index: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (i, u) in catalog.updates.iter().enumerate() {
        for cve in &u.cves {
            let list = index.entry(cve.trim().to_ascii_uppercase()).or_default();
            if list.last() != Some(&(i as u32)) {
                list.push(i as u32);
            }
        }
    }
    index
}

/// `CVE-YYYY-NNNN…` (upper-cased), or an error saying what a CVE id looks like.
pub fn parse_cve(text: &str) -> Result<String, String> {
    let id = text.trim().to_ascii_uppercase();
    let parts: Vec<&str> = id.split('-').collect();
    let digits = |s: &str, min: usize| s.len() >= min && s.bytes().all(|b| b.is_ascii_digit());
    if parts.len() == 3 && parts[0] == "CVE" && parts[1].len() == 4 && digits(parts[1], 4) && digits(parts[2], 4) {
        Ok(id)
    } else {
        Err(format!("{text:?} is not a CVE id: expected CVE-YYYY-NNNN (e.g. CVE-2023-21549)"))
    }
}

/// The fleet against a desired state at `now`: collection membership, and for each client
/// the catalog version of its usable scan (the scan TTL and minimum agent version of the
/// client settings that apply to it, as the reconcile decides them).
pub struct Scope<'a> {
    pub catalog: &'a Catalog,
    pub fleet: &'a Fleet,
    pub collections: Collections,
    pub membership: Membership,
    /// Per client (fleet order): the catalog version of its usable scan.
    pub scanned: Vec<Option<u64>>,
    /// The waivers in force at `now`.
    pub waivers: Waivers,
}

impl<'a> Scope<'a> {
    pub fn new(
        desired: &DesiredState,
        catalog: &'a Catalog,
        fleet: &'a Fleet,
        index: &BTreeMap<String, Vec<u32>>,
        now: Timestamp,
    ) -> Self {
        let collections = Collections::new(&desired.collections);
        let waivers = Waivers::at(desired, catalog, index, &collections, now);
        let membership = collections.membership(&fleet.clients);
        let mut settings: Vec<(Option<usize>, &ClientSettingsSpec)> = desired
            .client_settings
            .values()
            .map(|s| (s.spec.collection.as_deref().and_then(|c| collections.index_of(c)), &s.spec))
            .collect();
        // As the reconcile: highest priority first, a collection-specific setting first at a tie.
        settings.sort_by_key(|(c, s)| (std::cmp::Reverse(s.priority), c.is_none()));
        let defaults = ClientSettingsSpec::default();
        let scanned = fleet
            .clients
            .par_iter()
            .enumerate()
            .map(|(ci, client)| {
                let s = settings
                    .iter()
                    .find(|(c, _)| c.is_none_or(|c| membership.contains(ci, c)))
                    .map_or(&defaults, |(_, s)| *s);
                let c = &client.compliance;
                match client_unknown_reason(c, s.scan_ttl.signed(), s.minimum_agent_version.as_deref(), now) {
                    Some(_) => None,
                    None => c.last_scan.as_ref().map(|scan| scan.catalog_version),
                }
            })
            .collect();
        Scope { catalog, fleet, collections, membership, scanned, waivers }
    }

    fn fixes(&self, updates: &[u32]) -> Vec<Fix> {
        updates
            .iter()
            .map(|&i| Fix { key: self.catalog.keys[i as usize], since: self.catalog.since_version[i as usize] })
            .collect()
    }

    /// Stable keys of the updates waived for a client, sorted.
    fn waived_keys(&self, client: usize) -> Vec<u32> {
        let name = &self.fleet.clients[client].name;
        let mut keys: Vec<u32> = self
            .waivers
            .updates_for(client, name, &self.membership)
            .into_iter()
            .map(|i| self.catalog.keys[i as usize])
            .collect();
        keys.sort_unstable();
        keys
    }

    fn collection(&self, name: &str) -> Result<usize, String> {
        self.collections.index_of(name).ok_or_else(|| {
            format!("collection {name:?} is not in the desired state; known collections: {}", self.known())
        })
    }

    fn known(&self) -> String {
        if self.collections.is_empty() { "none declared".into() } else { self.collections.names.join(", ") }
    }
}

/// One update fixing the CVE, as the report lists it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FixingUpdate {
    pub id: String,
    pub kb: Option<String>,
    pub title: String,
    pub severity: Severity,
    pub products: Vec<String>,
    #[serde(serialize_with = "crate::governance::exposure::date_text")]
    pub released: jiff::civil::Date,
    pub superseded: bool,
    pub expired: bool,
}

pub(crate) fn date_text<S: serde::Serializer>(d: &jiff::civil::Date, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(d)
}

/// Machines of one collection against the CVE.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionExposure {
    pub collection: String,
    #[serde(flatten)]
    pub counts: Counts,
}

/// A deployment whose update list deploys a fix.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CarryingDeployment {
    pub deployment: String,
    /// The fixing updates it deploys.
    pub updates: Vec<String>,
    /// Its target collection, or its phases' collections in order.
    pub collections: Vec<String>,
    /// Its phase as the last reconcile recorded it (Pending, Available, PastDeadline,
    /// Halted…); none before the first reconcile.
    pub phase: Option<String>,
    pub deadline: Option<Timestamp>,
}

/// What the last reconcile recorded of a deployment: its phase and deadline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RecordedDeployment {
    pub phase: Option<String>,
    pub deadline: Option<Timestamp>,
}

/// Everything `patchops cve CVE-…` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CveReport {
    pub cve: String,
    /// The highest severity among the fixing updates.
    pub severity: Severity,
    pub catalog_version: u64,
    pub updates: Vec<FixingUpdate>,
    /// Every machine of the fleet.
    pub fleet: Counts,
    pub collections: Vec<CollectionExposure>,
    pub deployments: Vec<CarryingDeployment>,
    /// Machines that would be exposed but for a waiver, listed apart.
    pub waived: Vec<WaivedMachine>,
}

/// A machine exposed but for a waiver in force.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WaivedMachine {
    pub machine: String,
    /// The waivers covering its missing fixes.
    pub waivers: Vec<String>,
}

/// The report for one CVE; an error (text) when no update in the catalog names it.
pub fn cve_report(
    scope: &Scope<'_>,
    desired: &DesiredState,
    index: &BTreeMap<String, Vec<u32>>,
    cve: &str,
    recorded: &HashMap<String, RecordedDeployment>,
) -> Result<CveReport, String> {
    let catalog = scope.catalog;
    let updates = index.get(cve).ok_or_else(|| {
        format!(
            "no update in catalog version {} fixes {cve}; check the id, or sync the catalogs \
             (`patchops catalog sync`) if the vendor published it since",
            catalog.version
        )
    })?;
    let fixes = scope.fixes(updates);
    let per_machine: Vec<MachineExposure> = scope
        .fleet
        .clients
        .par_iter()
        .zip(&scope.scanned)
        .enumerate()
        .map(|(ci, (c, scanned))| {
            let waived = if scope.waivers.is_empty() { Vec::new() } else { scope.waived_keys(ci) };
            machine_exposure(&c.compliance.states, *scanned, &fixes, &waived)
        })
        .collect();
    let waived = per_machine
        .iter()
        .enumerate()
        .filter(|(_, e)| **e == MachineExposure::Waived)
        .map(|(ci, _)| {
            let name = &scope.fleet.clients[ci].name;
            let mut waivers: Vec<String> = updates
                .iter()
                .flat_map(|&u| scope.waivers.covering(ci, name, &scope.membership, u))
                .map(str::to_string)
                .collect();
            waivers.sort();
            waivers.dedup();
            WaivedMachine { machine: name.clone(), waivers }
        })
        .collect();
    let mut fleet = Counts::default();
    let mut per_collection = vec![Counts::default(); scope.collections.len()];
    for (ci, e) in per_machine.iter().enumerate() {
        fleet.add(*e);
        for (k, counts) in per_collection.iter_mut().enumerate() {
            if scope.membership.contains(ci, k) {
                counts.add(*e);
            }
        }
    }
    let collections = scope
        .collections
        .names
        .iter()
        .zip(per_collection)
        .map(|(name, counts)| CollectionExposure { collection: name.clone(), counts })
        .collect();
    Ok(CveReport {
        cve: cve.to_string(),
        severity: updates.iter().map(|&i| catalog.updates[i as usize].severity).max().unwrap_or_default(),
        catalog_version: catalog.version,
        updates: updates
            .iter()
            .map(|&i| {
                let u = &catalog.updates[i as usize];
                FixingUpdate {
                    id: u.id.clone(),
                    kb: u.kb.clone(),
                    title: u.title.clone(),
                    severity: u.severity,
                    products: u.products.clone(),
                    released: u.released,
                    superseded: catalog.is_superseded(i),
                    expired: u.expired,
                }
            })
            .collect(),
        fleet,
        collections,
        deployments: carrying_deployments(desired, catalog, updates, recorded),
        waived,
    })
}

/// The deployments whose list deploys one of `updates`, with the recorded phase and the
/// deadline (recorded, else from the spec and its template).
pub fn carrying_deployments(
    desired: &DesiredState,
    catalog: &Catalog,
    updates: &[u32],
    recorded: &HashMap<String, RecordedDeployment>,
) -> Vec<CarryingDeployment> {
    let mut out = Vec::new();
    for (name, d) in &desired.deployments {
        let Some(list) = desired.update_lists.get(&d.spec.update_list) else { continue };
        let deployed = crate::reconcile::resolve::resolve(&list.spec, catalog).deployed(catalog);
        let carried: Vec<String> = deployed
            .iter()
            .filter(|i| updates.binary_search(i).is_ok())
            .map(|&i| catalog.updates[i as usize].id.clone())
            .collect();
        if carried.is_empty() {
            continue;
        }
        let template = d.spec.template.as_ref().and_then(|t| desired.templates.get(t)).map(|t| t.spec.settings());
        let settings = crate::reconcile::timing::effective_settings(&d.spec, template);
        let collections = if d.spec.phases.is_empty() {
            settings.collection.iter().cloned().collect()
        } else {
            d.spec.phases.iter().map(|p| p.collection.clone()).collect()
        };
        let rec = recorded.get(name).cloned().unwrap_or_default();
        let deadline = rec.deadline.or(crate::reconcile::timing::Timing::of(&d.spec, &settings).deadline);
        out.push(CarryingDeployment {
            deployment: name.clone(),
            updates: carried,
            collections,
            phase: rec.phase,
            deadline,
        });
    }
    out
}

/// One open CVE in `cve --list`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CveListRow {
    pub cve: String,
    pub severity: Severity,
    /// How many updates fix it.
    pub updates: u64,
    /// The earliest release of a fix.
    #[serde(serialize_with = "crate::governance::exposure::date_text")]
    pub released: jiff::civil::Date,
    #[serde(flatten)]
    pub counts: Counts,
}

/// Every CVE the catalog names with at least `min_severity`, counted over the machines of
/// `collection` (every machine when None), most exposed first. With `open_only`, only CVEs
/// some machine is exposed to.
///
/// One pass over each client's reported states (not one per CVE): a CVE no reported state
/// touches is NotApplicable for the client, or Unknown when a fix is newer than its scan.
pub fn cve_list(
    scope: &Scope<'_>,
    index: &BTreeMap<String, Vec<u32>>,
    min_severity: Severity,
    collection: Option<&str>,
    open_only: bool,
) -> Result<Vec<CveListRow>, String> {
    let catalog = scope.catalog;
    let collection = collection.map(|c| scope.collection(c)).transpose()?;
    let cves: Vec<(&String, &Vec<u32>)> = index
        .iter()
        .filter(|(_, u)| {
            u.iter().map(|&i| catalog.updates[i as usize].severity).max().unwrap_or_default() >= min_severity
        })
        .collect();
    // Per update (catalog index): the CVEs (positions in `cves`) it fixes.
    let mut cves_of: Vec<Vec<u32>> = vec![Vec::new(); catalog.len()];
    for (c, (_, updates)) in cves.iter().enumerate() {
        for &u in updates.iter() {
            cves_of[u as usize].push(c as u32);
        }
    }
    let max_since: Vec<u64> =
        cves.iter().map(|(_, u)| u.iter().map(|&i| catalog.since_version[i as usize]).max().unwrap_or(0)).collect();
    let idx_by_key: HashMap<u32, u32> = catalog.keys.iter().enumerate().map(|(i, &k)| (k, i as u32)).collect();

    #[derive(Default)]
    struct Acc {
        /// Per CVE: exposed, unknown, waived, installed among clients whose states touch it.
        touched: Vec<[u64; 4]>,
        /// Per CVE: touched clients that scanned before its newest fix (counted by `older`).
        touched_old: Vec<u64>,
        /// Clients with a usable scan, by scanned catalog version.
        by_version: BTreeMap<u64, u64>,
        unusable: u64,
        machines: u64,
    }
    let n = cves.len();
    let acc = (0..scope.fleet.clients.len())
        .into_par_iter()
        .filter(|&ci| collection.is_none_or(|k| scope.membership.contains(ci, k)))
        .fold(
            || Acc { touched: vec![[0; 4]; n], touched_old: vec![0; n], ..Default::default() },
            |mut acc, ci| {
                acc.machines += 1;
                let Some(scanned) = scope.scanned[ci] else {
                    acc.unusable += 1;
                    return acc;
                };
                *acc.by_version.entry(scanned).or_default() += 1;
                // (cve, state of the fix): 0 exposed, 1 unknown, 2 waived, 3 installed.
                let mut seen: Vec<(u32, u8)> = Vec::new();
                let waived = if scope.waivers.is_empty() { Vec::new() } else { scope.waived_keys(ci) };
                for s in &scope.fleet.clients[ci].compliance.states {
                    let Some(&u) = idx_by_key.get(&s.key()) else { continue };
                    if cves_of[u as usize].is_empty() {
                        continue;
                    }
                    let state = match classify(Some(*s), false, catalog.since_version[u as usize], scanned).state() {
                        ComplianceState::Required if waived.binary_search(&s.key()).is_ok() => 2,
                        ComplianceState::Required => 0,
                        ComplianceState::Unknown => 1,
                        ComplianceState::Installed => 3,
                        ComplianceState::NotRequired => continue,
                    };
                    seen.extend(cves_of[u as usize].iter().map(|&c| (c, state)));
                }
                seen.sort_unstable();
                seen.dedup_by_key(|(c, _)| *c); // keeps the most severe state of each CVE
                for (c, state) in seen {
                    let old = scanned < max_since[c as usize];
                    let state = if state >= 2 && old { 1 } else { state };
                    acc.touched[c as usize][state as usize] += 1;
                    acc.touched_old[c as usize] += old as u64;
                }
                acc
            },
        )
        .reduce(
            || Acc { touched: vec![[0; 4]; n], touched_old: vec![0; n], ..Default::default() },
            |mut a, b| {
                a.touched.iter_mut().zip(&b.touched).for_each(|(x, y)| (0..4).for_each(|i| x[i] += y[i]));
                a.touched_old.iter_mut().zip(&b.touched_old).for_each(|(x, y)| *x += y);
                for (v, k) in b.by_version {
                    *a.by_version.entry(v).or_default() += k;
                }
                a.unusable += b.unusable;
                a.machines += b.machines;
                a
            },
        );
    let mut rows = Vec::new();
    for (c, (cve, updates)) in cves.iter().enumerate() {
        let [exposed, unknown_touched, waived, installed] = acc.touched[c];
        // Untouched clients that scanned before the newest fix cannot speak for it.
        let older: u64 = acc.by_version.range(..max_since[c]).map(|(_, k)| k).sum();
        let unknown = acc.unusable + unknown_touched + (older - acc.touched_old[c]);
        let counts = Counts {
            machines: acc.machines,
            exposed,
            installed,
            unknown,
            waived,
            not_applicable: acc.machines - exposed - installed - unknown - waived,
        };
        if open_only && exposed == 0 {
            continue;
        }
        rows.push(CveListRow {
            cve: (*cve).clone(),
            severity: updates.iter().map(|&i| catalog.updates[i as usize].severity).max().unwrap_or_default(),
            updates: updates.len() as u64,
            released: updates.iter().map(|&i| catalog.updates[i as usize].released).min().expect("a CVE has a fix"),
            counts,
        });
    }
    rows.sort_by(|a, b| {
        b.counts.exposed.cmp(&a.counts.exposed).then(b.severity.cmp(&a.severity)).then_with(|| a.cve.cmp(&b.cve))
    });
    Ok(rows)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;
    use crate::compliance::{Client, ClientCompliance, Enforcement, ScanRecord, ScanResult};
    use MachineExposure::*;

    fn state(key: u32, scan: ScanResult, e: Enforcement) -> PackedState {
        PackedState::new(key, scan, e)
    }

    #[test]
    fn a_machine_is_exposed_when_any_fix_is_missing_and_unknown_before_installed() {
        use Enforcement as E;
        use ScanResult::{Installed as I, Missing as M};
        let fixes = [Fix { key: 1, since: 1 }, Fix { key: 2, since: 3 }];
        // (case, states, scanned version, without waivers, with key 1 waived)
        type Case = (&'static str, Vec<PackedState>, Option<u64>, MachineExposure, MachineExposure);
        let cases: Vec<Case> = vec![
            ("no usable scan", vec![state(1, M, E::None)], None, Unknown, Unknown),
            ("nothing reported", vec![], Some(3), NotApplicable, NotApplicable),
            ("one fix missing", vec![state(1, M, E::None)], Some(3), Exposed, Waived),
            ("one missing, one installed", vec![state(1, I, E::None), state(2, M, E::None)], Some(3), Exposed, Exposed),
            ("missing and installed", vec![state(1, M, E::None), state(2, I, E::None)], Some(3), Exposed, Waived),
            ("both missing", vec![state(1, M, E::None), state(2, M, E::None)], Some(3), Exposed, Exposed),
            ("installed", vec![state(2, I, E::None)], Some(3), Installed, Installed),
            ("installed, restart pending", vec![state(2, I, E::PendingReboot)], Some(3), Exposed, Exposed),
            ("install failed", vec![state(1, M, E::InstallFailed)], Some(3), Exposed, Waived),
            ("scanned before the newer fix", vec![state(1, I, E::None)], Some(2), Unknown, Unknown),
            ("scanned before, older fix missing", vec![state(1, M, E::None)], Some(2), Exposed, Unknown),
            ("other updates only", vec![state(7, M, E::None)], Some(3), NotApplicable, NotApplicable),
        ];
        for (name, states, scanned, plain, waived) in cases {
            assert_eq!(machine_exposure(&states, scanned, &fixes, &[]), plain, "{name}");
            assert_eq!(machine_exposure(&states, scanned, &fixes, &[1]), waived, "{name}, waived");
        }
    }

    #[test]
    fn cve_ids_are_checked_and_upper_cased() {
        assert_eq!(parse_cve(" cve-2023-21549").unwrap(), "CVE-2023-21549");
        for bad in ["KB5022282", "CVE-23-1234", "CVE-2023-12", "CVE-2023-12a4", "DSA-5380-1"] {
            assert!(parse_cve(bad).unwrap_err().contains("CVE-YYYY-NNNN"), "{bad}");
        }
    }

    /// A catalog of three updates over two versions and every combination of states.
    fn scene() -> (DesiredState, Catalog, Fleet) {
        let mut a = update("KB1-srv", "P", "2026-10-01");
        a.cves = vec!["CVE-2026-0001".into(), "cve-2026-0002".into()];
        a.severity = Severity::Important;
        let mut b = update("KB2-srv", "P", "2026-11-01");
        b.cves = vec!["CVE-2026-0002".into(), "CVE-2026-0003".into()];
        let mut c = update("KB3-srv", "P", "2026-11-02");
        c.cves = vec!["CVE-2026-0003".into()];
        c.severity = Severity::Low;
        let since = HashMap::from([("KB1-srv".to_string(), 1), ("KB2-srv".to_string(), 2), ("KB3-srv".to_string(), 1)]);
        let catalog = Catalog::new(2, vec![a, b, c], &since);
        let desired: DesiredState = DesiredState::load(
            "main@sha1:0",
            &[(
                "c.yaml".into(),
                "apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {name: odd}\nspec:\n  selector: {matchFacts: {odd: \"yes\"}}\n\
                 ---\napiVersion: patchops.dev/v1alpha1\nkind: Waiver\nmetadata: {name: w}\nspec:\n  updates: [KB1-srv]\n  \
                 collection: odd\n  reason: test\n  expires: 2026-12-01T00:00:00Z\n"
                    .into(),
            )],
        )
        .unwrap();
        let now: Timestamp = "2026-11-20T00:00:00Z".parse().unwrap();
        let scan = |v: u64| Some(ScanRecord { time: now, catalog_version: v, error: None });
        let results = [None, Some(ScanResult::Missing), Some(ScanResult::Installed)];
        let mut combos = Vec::new();
        for version in [0u64, 1, 2] {
            for s0 in results {
                for s1 in results {
                    for s2 in results {
                        combos.push((version, [s0, s1, s2]));
                    }
                }
            }
        }
        let mut clients = Vec::new();
        for (n, (version, reported)) in combos.into_iter().enumerate() {
            let states: Vec<PackedState> = reported
                .iter()
                .enumerate()
                .filter_map(|(k, s)| s.map(|s| state(k as u32, s, Enforcement::None)))
                .collect();
            clients.push(Client {
                name: format!("c{n:03}"),
                facts: [("odd".to_string(), if n % 2 == 1 { "yes" } else { "no" }.to_string())].into(),
                compliance: ClientCompliance {
                    agent_version: Some("1".into()),
                    last_scan: if version == 0 { None } else { scan(version) },
                    states: if version == 0 { vec![] } else { states },
                    ..Default::default()
                },
            });
        }
        (desired, catalog, Fleet::new(clients))
    }

    #[test]
    fn the_list_counts_each_cve_as_the_single_report_does() {
        let (desired, catalog, fleet) = scene();
        let now = "2026-11-20T00:00:00Z".parse().unwrap();
        let index = cve_index(&catalog);
        let scope = Scope::new(&desired, &catalog, &fleet, &index, now);
        assert_eq!(index.keys().collect::<Vec<_>>(), ["CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0003"]);
        for collection in [None, Some("odd")] {
            let rows = cve_list(&scope, &index, Severity::Unspecified, collection, false).unwrap();
            assert_eq!(rows.len(), 3);
            for row in rows {
                let single = cve_report(&scope, &desired, &index, &row.cve, &HashMap::new()).unwrap();
                let expected = match collection {
                    None => single.fleet,
                    Some(_) => single.collections[0].counts,
                };
                assert_eq!(row.counts, expected, "{} in {collection:?}", row.cve);
                assert!(row.counts.unknown > 0 && row.counts.installed > 0);
                assert!(row.counts.exposed > 0 || (collection.is_some() && row.cve == "CVE-2026-0001"));
                assert_eq!(row.counts.waived > 0, row.cve != "CVE-2026-0003", "KB1 is waived on odd clients");
                assert_eq!(single.waived.len() as u64, single.fleet.waived);
            }
        }
        let rows = cve_list(&scope, &index, Severity::Important, None, true).unwrap();
        let names: Vec<&str> = rows.iter().map(|r| r.cve.as_str()).collect();
        assert_eq!(names.len(), 3, "CVE-2026-0003 has a Critical fix (KB2) besides the Low one");
        assert!(rows.windows(2).all(|w| w[0].counts.exposed >= w[1].counts.exposed));
        let rows = cve_list(&scope, &index, Severity::Critical, None, true).unwrap();
        let mut names: Vec<&str> = rows.iter().map(|r| r.cve.as_str()).collect();
        names.sort();
        assert_eq!(names, ["CVE-2026-0002", "CVE-2026-0003"]);
        assert!(
            cve_list(&scope, &index, Severity::Low, Some("nope"), true).unwrap_err().contains("known collections: odd")
        );
    }
}
