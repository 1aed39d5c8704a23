//! The read API's answers: pure functions over a [`SiteState`] that turn the engine's
//! preparation, membership and outcome into the documents people and tools read
//! (deployments and their machines, collections, update lists, the Update Repository,
//! clients with their per-update states). Nothing here decides compliance: per-update
//! states come from [`crate::compliance::classify`], and a machine's state in a
//! deployment is read the way the deployment status counts it, so a listing of a
//! deployment's Required machines has exactly as many rows as its status says.

use std::collections::{BTreeMap, HashMap, HashSet};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::SiteState;
use crate::catalog::Severity;
use crate::compliance::{Client, ComplianceState, PackedState, Reason, ScanRecord, classify, client_unknown_reason};
use crate::governance::waivers::Waivers;
use crate::reconcile::PreparedDeployment;
use crate::reconcile::policy::{ClientPolicy, DeploymentAssignment};
use crate::reconcile::targeting::member;
use crate::resources::{
    CollectionStatus, MaintenanceWindow, UpdateCatalogStatus, UpdateDeploymentStatus, UpdateListStatus,
};

/// Most rows one page may hold.
pub const MAX_LIMIT: usize = 1000;
/// Rows of a page when the caller names no limit.
pub const DEFAULT_LIMIT: usize = 100;

/// Which rows of a listing: `offset` rows skipped, at most `limit` (≤ [`MAX_LIMIT`]) kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Page {
    pub offset: usize,
    pub limit: usize,
}

impl Default for Page {
    fn default() -> Self {
        Page { offset: 0, limit: DEFAULT_LIMIT }
    }
}

impl Page {
    /// A page; a limit above [`MAX_LIMIT`] is a usage error naming the maximum.
    pub fn new(offset: usize, limit: usize) -> Result<Page, String> {
        if limit == 0 || limit > MAX_LIMIT {
            return Err(format!("limit={limit} is out of range; ask for 1 to {MAX_LIMIT} rows and page with offset"));
        }
        Ok(Page { offset, limit })
    }

    fn cut<T>(self, rows: Vec<T>) -> Paged<T> {
        let total = rows.len();
        let items = rows.into_iter().skip(self.offset).take(self.limit).collect();
        Paged { total, offset: self.offset, limit: self.limit, items }
    }
}

/// One page of a listing, with the size of the whole listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Paged<T> {
    /// Rows matching the query, over every page.
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    pub items: Vec<T>,
}

/// Order of a machine or client listing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Sort {
    #[default]
    Name,
    /// Oldest last scan first (never scanned before any scan): who is falling behind.
    LastScan,
    /// Newest last scan first.
    LastScanDescending,
}

impl std::str::FromStr for Sort {
    type Err = String;
    fn from_str(s: &str) -> Result<Sort, String> {
        match s {
            "name" => Ok(Sort::Name),
            "lastScan" => Ok(Sort::LastScan),
            "-lastScan" => Ok(Sort::LastScanDescending),
            other => Err(format!("sort={other:?} is not known; sort by name, lastScan or -lastScan")),
        }
    }
}

fn namespace(meta: &Option<String>) -> String {
    meta.clone().unwrap_or_else(|| "default".into())
}

fn contains_ci(haystack: &str, needle_lower: &str) -> bool {
    haystack.to_lowercase().contains(needle_lower)
}

// ---------------------------------------------------------------------------------------
// Site.

/// The site at a glance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SiteSummary {
    pub revision: String,
    pub catalog_version: u64,
    pub derived_at: Timestamp,
    pub clients: usize,
    pub deployments: usize,
    pub collections: usize,
    pub update_lists: usize,
    pub updates: usize,
    /// Clients by the state of their last scan: `Scanned` (usable), or the Table 1 reason
    /// every update of theirs is Unknown (`NoStateReceived`, `ScanFailed`, `StateExpired`…).
    pub states: BTreeMap<String, u64>,
    pub catalogs: BTreeMap<String, UpdateCatalogStatus>,
}

pub fn site(s: &SiteState) -> SiteSummary {
    let mut states: BTreeMap<String, u64> = BTreeMap::new();
    for (i, c) in s.fleet.clients.iter().enumerate() {
        let key = match unknown_reason(s, i, c) {
            Some(r) => format!("{r:?}"),
            None => "Scanned".into(),
        };
        *states.entry(key).or_default() += 1;
    }
    let outcome = s.engine.outcome();
    SiteSummary {
        revision: outcome.revision.clone(),
        catalog_version: outcome.catalog_version,
        derived_at: s.derived_at,
        clients: s.fleet.clients.len(),
        deployments: outcome.deployments.len(),
        collections: outcome.collections.len(),
        update_lists: outcome.update_lists.len(),
        updates: s.catalog.len(),
        states,
        catalogs: s.catalog_status.clone(),
    }
}

/// The client's policy (settings, windows, assignments), as the engine assigned it.
fn policy(s: &SiteState, client: usize) -> &ClientPolicy {
    s.engine.outcome().policy_of(client)
}

/// Why every update of a client is Unknown (with the settings its policy carries), if so.
fn unknown_reason(s: &SiteState, i: usize, c: &Client) -> Option<Reason> {
    let settings = &policy(s, i).settings;
    client_unknown_reason(
        &c.compliance,
        settings.scan_ttl.signed(),
        settings.minimum_agent_version.as_deref(),
        s.derived_at,
    )
}

// ---------------------------------------------------------------------------------------
// Deployments.

/// A deployment with its status as derived now.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSummary {
    pub name: String,
    pub namespace: String,
    pub status: UpdateDeploymentStatus,
}

/// One deployment in full: what it deploys, to whom, and its status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentDetail {
    pub name: String,
    pub namespace: String,
    pub update_list: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The target collection of each slot: one per rollout phase, or the single target.
    pub collections: Vec<String>,
    /// Catalog ids of the deployed updates.
    pub updates: Vec<String>,
    pub mandatory: bool,
    pub status: UpdateDeploymentStatus,
}

pub fn deployments(s: &SiteState) -> Vec<DeploymentSummary> {
    let outcome = s.engine.outcome();
    s.desired
        .deployments
        .iter()
        .filter_map(|(name, d)| {
            outcome.deployments.get(name).map(|st| DeploymentSummary {
                name: name.clone(),
                namespace: namespace(&d.metadata.namespace),
                status: st.clone(),
            })
        })
        .collect()
}

pub fn deployment(s: &SiteState, name: &str) -> Option<DeploymentDetail> {
    let d = s.desired.deployments.get(name)?;
    let status = s.engine.outcome().deployments.get(name)?.clone();
    let prepared = s.engine.prepared();
    let p = &prepared.deployments[prepared.index(name)?];
    let collections = if d.spec.phases.is_empty() {
        p.settings.collection.iter().cloned().collect()
    } else {
        d.spec.phases.iter().map(|ph| ph.collection.clone()).collect()
    };
    Some(DeploymentDetail {
        name: name.into(),
        namespace: namespace(&d.metadata.namespace),
        update_list: d.spec.update_list.clone(),
        template: d.spec.template.clone(),
        collections,
        updates: p.updates.iter().map(|&i| s.catalog.updates[i as usize].id.clone()).collect(),
        mandatory: p.settings.mandatory.unwrap_or(true),
        status,
    })
}

/// A machine's state in a deployment, as the deployment status counts it. `Compliant`,
/// `Required`, `Unknown` and `Waived` exclude each other; `Failed` and `PendingReboot`
/// are flags a machine has besides one of those.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MachineState {
    Compliant,
    Required,
    Unknown,
    Waived,
    Failed,
    PendingReboot,
}

impl std::str::FromStr for MachineState {
    type Err = String;
    fn from_str(s: &str) -> Result<MachineState, String> {
        use MachineState::*;
        [Compliant, Required, Unknown, Waived, Failed, PendingReboot]
            .into_iter()
            .find(|m| format!("{m:?}").eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!(
                    "state={s:?} is not known; ask for Compliant, Required, Unknown, Waived, Failed or PendingReboot"
                )
            })
    }
}

/// One machine targeted by a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub name: String,
    /// Compliant, Required, Unknown or Waived.
    pub state: MachineState,
    /// A deployed update failed to download or install.
    pub failed: bool,
    /// A deployed update is installed and waits for a restart.
    pub pending_reboot: bool,
    /// The Table 1 sub-reason behind the state (the weightiest among the deployed
    /// updates); none for a compliant machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What failed or what is missing, for a person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<Timestamp>,
    /// The rollout phase that targets it, when phased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

impl Machine {
    /// Whether the machine is listed under `state` (a flag or its state).
    pub fn is(&self, state: MachineState) -> bool {
        match state {
            MachineState::Failed => self.failed,
            MachineState::PendingReboot => self.pending_reboot,
            other => self.state == other,
        }
    }
}

/// A machine listing's filter and order.
#[derive(Clone, Debug, Default)]
pub struct MachineQuery {
    pub state: Option<MachineState>,
    /// Case-insensitive text in the machine name, reason or message.
    pub q: Option<String>,
    pub sort: Sort,
    pub page: Page,
}

/// Slots of a deployment that reach machines now: none before its available time, the
/// started phases of a phased rollout, else its one target.
fn active_slots(status: &UpdateDeploymentStatus) -> usize {
    if status.phase == "Pending" {
        0
    } else if status.phases.is_empty() {
        1
    } else {
        status.phases.iter().take_while(|p| p.started_time.is_some()).count()
    }
}

/// What classifying machines for one deployment needs once, not per machine.
struct DeploymentLens<'a> {
    s: &'a SiteState,
    d: &'a PreparedDeployment,
    active: usize,
    /// (catalog key, catalog index) of the deployed updates, sorted by key.
    deployed: Vec<(u32, u32)>,
    waivers: Waivers,
    phases: Vec<String>,
}

/// A machine as a deployment counts it, before its message is written: classifying
/// 10,000 machines must not format 10,000 sentences for a page of 100.
struct Counted {
    client: usize,
    state: MachineState,
    failed: bool,
    pending_reboot: bool,
    reason: Option<Reason>,
    slot: usize,
}

impl Counted {
    fn is(&self, state: MachineState) -> bool {
        match state {
            MachineState::Failed => self.failed,
            MachineState::PendingReboot => self.pending_reboot,
            other => self.state == other,
        }
    }
}

impl<'a> DeploymentLens<'a> {
    fn new(s: &'a SiteState, name: &str) -> Option<DeploymentLens<'a>> {
        let prepared = s.engine.prepared();
        let d = &prepared.deployments[prepared.index(name)?];
        let status = s.engine.outcome().deployments.get(name)?;
        let mut deployed: Vec<(u32, u32)> = d.updates.iter().map(|&i| (s.catalog.keys[i as usize], i)).collect();
        deployed.sort_unstable();
        let phases = s.desired.deployments.get(name).map(|x| x.spec.phases.iter().map(|p| p.name.clone()).collect());
        Some(DeploymentLens {
            s,
            d,
            active: active_slots(status),
            deployed,
            waivers: waivers_now(s),
            phases: phases.unwrap_or_default(),
        })
    }

    /// The catalog index of a deployed update, by its key.
    fn deployed(&self, key: u32) -> Option<u32> {
        self.deployed.binary_search_by_key(&key, |&(k, _)| k).ok().map(|at| self.deployed[at].1)
    }

    /// The deployed updates a client's last scan was against, with their states.
    fn scanned<'c>(&'c self, c: &'c Client) -> impl Iterator<Item = (PackedState, u32, u64)> + 'c {
        let v = c.compliance.last_scan.as_ref().map_or(0, |r| r.catalog_version);
        c.compliance.states.iter().filter_map(move |st| {
            let idx = self.deployed(st.key())?;
            let since = self.s.catalog.since_version[idx as usize];
            (since <= v).then_some((*st, idx, v))
        })
    }

    /// The machine, when the deployment counts it now (its first matching slot is active).
    fn count(&self, i: usize) -> Option<Counted> {
        let s = self.s;
        let row = s.engine.membership().row(i);
        let slot = self.d.slots.iter().position(|&col| member(row, col))?;
        if slot >= self.active {
            return None;
        }
        let c = &s.fleet.clients[i];
        let mut m = Counted {
            client: i,
            state: MachineState::Compliant,
            failed: false,
            pending_reboot: false,
            reason: None,
            slot,
        };
        if let Some(reason) = unknown_reason(s, i, c) {
            if !self.d.updates.is_empty() {
                m.state = MachineState::Unknown;
                m.reason = Some(reason);
            }
            return Some(m);
        }
        let waived = self.waived(i, c);
        let (mut required, mut waived_required) = (false, false);
        for (st, idx, v) in self.scanned(c) {
            let reason = classify(Some(st), true, self.s.catalog.since_version[idx as usize], v);
            if reason.state() == ComplianceState::Required {
                if waived.binary_search(&idx).is_ok() {
                    waived_required = true;
                    continue;
                }
                required = true;
                m.reason = Some(weightier(m.reason, reason));
            }
            m.failed |= st.enforcement().failed();
            m.pending_reboot |= st.enforcement() == crate::compliance::Enforcement::PendingReboot;
        }
        let v = c.compliance.last_scan.as_ref().map_or(0, |r| r.catalog_version);
        if required {
            m.state = MachineState::Required;
        } else if v < self.d.max_since {
            m.state = MachineState::Unknown;
            m.reason = Some(Reason::NotScannedAgainstUpdate);
        } else if waived_required {
            m.state = MachineState::Waived;
        }
        Some(m)
    }

    fn waived(&self, i: usize, c: &Client) -> Vec<u32> {
        if self.waivers.is_empty() {
            return Vec::new();
        }
        self.waivers.updates_for(i, &c.name, self.s.engine.membership())
    }

    /// The counted machine with its message for a person.
    fn machine(&self, m: &Counted) -> Machine {
        let s = self.s;
        let c = &s.fleet.clients[m.client];
        let message = match m.state {
            MachineState::Compliant => None,
            MachineState::Unknown if m.reason == Some(Reason::NotScannedAgainstUpdate) => {
                let v = c.compliance.last_scan.as_ref().map_or(0, |r| r.catalog_version);
                Some(format!(
                    "scanned catalog version {v}; a deployed update is from version {}: waiting for its next scan",
                    self.d.max_since
                ))
            }
            MachineState::Unknown => m.reason.map(|r| unknown_message(r, c)),
            MachineState::Required | MachineState::Waived | MachineState::Failed | MachineState::PendingReboot => {
                let waived = self.waived(m.client, c);
                let (mut required, mut failed, mut waived_required) = (Vec::new(), Vec::new(), Vec::new());
                for (st, idx, v) in self.scanned(c) {
                    let id = s.catalog.updates[idx as usize].id.as_str();
                    let reason = classify(Some(st), true, s.catalog.since_version[idx as usize], v);
                    if reason.state() == ComplianceState::Required {
                        if waived.binary_search(&idx).is_ok() {
                            waived_required.push(id);
                            continue;
                        }
                        required.push(id);
                    }
                    if st.enforcement().failed() {
                        failed.push(id);
                    }
                }
                if m.state == MachineState::Required {
                    Some(required_message(&required, &failed))
                } else {
                    Some(format!("required but waived: {}", list(&waived_required)))
                }
            }
        };
        Machine {
            name: c.name.clone(),
            state: m.state,
            failed: m.failed,
            pending_reboot: m.pending_reboot,
            reason: m.reason,
            message,
            last_scan: c.compliance.last_scan.as_ref().map(|r| r.time),
            phase: self.phases.get(m.slot).cloned(),
        }
    }
}

/// The waivers in force at the derivation's moment (as the engine counted them).
fn waivers_now(s: &SiteState) -> Waivers {
    if s.desired.waivers.is_empty() {
        return Waivers::default();
    }
    let cves = crate::governance::exposure::cve_index(&s.catalog);
    Waivers::at(&s.desired, &s.catalog, &cves, &s.engine.prepared().collections, s.derived_at)
}

/// Of two Required sub-reasons, the one a person should act on first.
fn weightier(a: Option<Reason>, b: Reason) -> Reason {
    let rank = |r: Reason| match r {
        Reason::InstallFailed => 0,
        Reason::PendingReboot => 1,
        Reason::InstalledStatePending => 3,
        Reason::DeployedNotInstalled => 2,
        _ => 4,
    };
    match a {
        Some(a) if rank(a) <= rank(b) => a,
        _ => b,
    }
}

/// Up to five ids, then how many more.
fn list(ids: &[&str]) -> String {
    let mut text = ids.iter().take(5).copied().collect::<Vec<_>>().join(", ");
    if ids.len() > 5 {
        text.push_str(&format!(" and {} more", ids.len() - 5));
    }
    text
}

fn required_message(required: &[&str], failed: &[&str]) -> String {
    let mut text = format!("{} deployed update(s) required: {}", required.len(), list(required));
    if !failed.is_empty() {
        text.push_str(&format!("; failed to install: {}", list(failed)));
    }
    text
}

/// A client-wide Unknown reason in words, with what to do.
fn unknown_message(reason: Reason, c: &Client) -> String {
    let cc = &c.compliance;
    match reason {
        Reason::AgentVersionUnsupported => format!(
            "agent version {} is below the minimum the client settings require; upgrade the agent",
            cc.agent_version.as_deref().unwrap_or("(none reported)")
        ),
        Reason::StateMessageCorrupt => "its last state message could not be processed and was rejected; \
                                        the next scan sends a new one"
            .into(),
        Reason::ScanFailed => match &cc.last_failure {
            Some(f) => format!(
                "the scan at {} failed: {}; fix the client's update source and scan again",
                f.time,
                f.error.as_deref().unwrap_or("no error reported")
            ),
            None => "its last scan failed; scan again".into(),
        },
        Reason::StateNotProcessed => {
            format!("{} state message(s) received, not processed yet", cc.pending_messages)
        }
        Reason::NoStateReceived => "no state message received yet; check that the agent runs and reaches the \
                                    management point"
            .into(),
        Reason::StateExpired => match &cc.last_scan {
            Some(s) => format!("its last scan ({}) is older than the scan TTL and no newer scan came", s.time),
            None => "its last scan is older than the scan TTL".into(),
        },
        other => format!("{other:?}"),
    }
}

/// The machines a deployment counts now, filtered, ordered and paged; None for an
/// unknown deployment. Only the page's rows get their message written (and, for a text
/// search, the rows whose name or reason do not already match).
pub fn machines(s: &SiteState, name: &str, query: &MachineQuery) -> Option<Paged<Machine>> {
    let lens = DeploymentLens::new(s, name)?;
    let q = query.q.as_deref().map(str::to_lowercase);
    let mut rows: Vec<Counted> = (0..s.fleet.clients.len())
        .filter_map(|i| lens.count(i))
        .filter(|m| query.state.is_none_or(|st| m.is(st)))
        .collect();
    if let Some(q) = q.as_deref() {
        rows.retain(|m| {
            contains_ci(&s.fleet.clients[m.client].name, q)
                || m.reason.is_some_and(|r| contains_ci(&format!("{r:?}"), q))
                || lens.machine(m).message.as_deref().is_some_and(|t| contains_ci(t, q))
        });
    }
    let clients = &s.fleet.clients;
    let scanned = |m: &Counted| clients[m.client].compliance.last_scan.as_ref().map(|r| r.time);
    let name = |m: &Counted| clients[m.client].name.as_str();
    match query.sort {
        Sort::Name => rows.sort_unstable_by(|a, b| name(a).cmp(name(b))),
        Sort::LastScan => rows.sort_unstable_by(|a, b| (scanned(a), name(a)).cmp(&(scanned(b), name(b)))),
        Sort::LastScanDescending => rows.sort_unstable_by(|a, b| (scanned(b), name(a)).cmp(&(scanned(a), name(b)))),
    }
    let page = query.page.cut(rows);
    Some(Paged {
        total: page.total,
        offset: page.offset,
        limit: page.limit,
        items: page.items.iter().map(|m| lens.machine(m)).collect(),
    })
}

// ---------------------------------------------------------------------------------------
// Collections and update lists.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSummary {
    pub name: String,
    pub namespace: String,
    pub status: CollectionStatus,
}

/// A member of a collection.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<Timestamp>,
}

pub fn collections(s: &SiteState) -> Vec<CollectionSummary> {
    let outcome = s.engine.outcome();
    s.desired
        .collections
        .iter()
        .filter_map(|(name, c)| {
            outcome.collections.get(name).map(|st| CollectionSummary {
                name: name.clone(),
                namespace: namespace(&c.metadata.namespace),
                status: st.clone(),
            })
        })
        .collect()
}

/// A collection's members (by name), filtered by text and paged; None for an unknown one.
pub fn members(s: &SiteState, name: &str, q: Option<&str>, page: Page) -> Option<Paged<Member>> {
    let ci = s.engine.prepared().collections.index_of(name)?;
    let q = q.map(str::to_lowercase);
    let membership = s.engine.membership();
    let mut rows: Vec<Member> = s
        .fleet
        .clients
        .iter()
        .enumerate()
        .filter(|(i, c)| membership.contains(*i, ci) && q.as_deref().is_none_or(|q| contains_ci(&c.name, q)))
        .map(|(_, c)| Member {
            name: c.name.clone(),
            os: c.facts.get("os").cloned(),
            agent_version: c.compliance.agent_version.clone(),
            last_scan: c.compliance.last_scan.as_ref().map(|r| r.time),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    Some(page.cut(rows))
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateListSummary {
    pub name: String,
    pub namespace: String,
    /// Resolved updates with how many systems require, have installed, do not need or
    /// have no state for each.
    pub status: UpdateListStatus,
}

pub fn update_lists(s: &SiteState) -> Vec<UpdateListSummary> {
    let outcome = s.engine.outcome();
    s.desired
        .update_lists
        .iter()
        .filter_map(|(name, l)| {
            outcome.update_lists.get(name).map(|st| UpdateListSummary {
                name: name.clone(),
                namespace: namespace(&l.metadata.namespace),
                status: st.clone(),
            })
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Updates (the Update Repository).

/// A search of the catalog; every field given must match.
#[derive(Clone, Debug, Default)]
pub struct UpdateQuery {
    /// Case-insensitive text in the id, title or KB.
    pub q: Option<String>,
    /// A CVE id the update fixes (exact, case-insensitive).
    pub cve: Option<String>,
    /// The KB (or package-version) number, exact, case-insensitive.
    pub kb: Option<String>,
    /// A vendor advisory id (DSA-…, ALSA-…, RHSA-…): the update's KB, or its id up to
    /// the release suffix.
    pub advisory: Option<String>,
    pub product: Option<String>,
    pub classification: Option<String>,
    pub severity: Option<Severity>,
    pub superseded: Option<bool>,
    pub expired: Option<bool>,
    pub sort: UpdateSortBy,
    pub page: Page,
}

/// Order of an update listing (`sort=`; a leading `-` reverses it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UpdateSort {
    /// The catalog's order.
    #[default]
    Catalog,
    Id,
    Released,
    Severity,
    /// Systems requiring it: `-required` lists the most needed first.
    Required,
}

/// A sort and whether it is reversed.
impl std::str::FromStr for UpdateSortBy {
    type Err = String;
    fn from_str(s: &str) -> Result<UpdateSortBy, String> {
        let (descending, key) = s.strip_prefix('-').map_or((false, s), |k| (true, k));
        let by = match key {
            "id" => UpdateSort::Id,
            "released" => UpdateSort::Released,
            "severity" => UpdateSort::Severity,
            "required" => UpdateSort::Required,
            _ => {
                return Err(format!(
                    "sort={s:?} is not known; sort by id, released, severity or required (a leading - reverses)"
                ));
            }
        };
        Ok(UpdateSortBy { by, descending })
    }
}

/// [`UpdateSort`] with its direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateSortBy {
    pub by: UpdateSort,
    pub descending: bool,
}

/// Whether an update answers to an advisory id: its KB, its id, or its id followed by
/// a release or ecosystem suffix (`DSA-5380-1` finds `DSA-5380-1-bookworm`).
pub fn is_advisory(u: &crate::catalog::Update, advisory: &str) -> bool {
    let a = advisory.trim();
    u.kb.as_deref().is_some_and(|kb| kb.eq_ignore_ascii_case(a))
        || u.id.eq_ignore_ascii_case(a)
        || (u.id.len() > a.len()
            && u.id.is_char_boundary(a.len())
            && u.id[..a.len()].eq_ignore_ascii_case(a)
            && u.id[a.len()..].starts_with('-'))
}

impl UpdateQuery {
    fn matches(&self, s: &SiteState, i: usize) -> bool {
        let u = &s.catalog.updates[i];
        let eq = |a: &Option<String>, b: &str| a.as_deref().is_none_or(|a| a.trim().eq_ignore_ascii_case(b));
        let q = self.q.as_deref().map(str::to_lowercase);
        q.as_deref().is_none_or(|q| {
            contains_ci(&u.id, q) || contains_ci(&u.title, q) || u.kb.as_deref().is_some_and(|k| contains_ci(k, q))
        }) && self.cve.as_deref().is_none_or(|c| u.cves.iter().any(|x| x.eq_ignore_ascii_case(c.trim())))
            && self.kb.as_deref().is_none_or(|k| u.kb.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(k.trim())))
            && self.advisory.as_deref().is_none_or(|a| is_advisory(u, a))
            && self.product.as_deref().is_none_or(|p| u.products.iter().any(|x| x.eq_ignore_ascii_case(p.trim())))
            && eq(&self.classification, &u.classification)
            && self.severity.is_none_or(|sev| sev == u.severity)
            && self.superseded.is_none_or(|want| want == s.catalog.is_superseded(i as u32))
            && self.expired.is_none_or(|want| want == u.expired)
    }
}

/// One update of the catalog, with what the fleet and the deployments make of it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSummary {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    pub title: String,
    pub classification: String,
    pub severity: Severity,
    pub products: Vec<String>,
    pub released: jiff::civil::Date,
    pub cves: Vec<String>,
    pub superseded: bool,
    pub superseded_by: Vec<String>,
    pub expired: bool,
    /// Catalog version the update first appeared in.
    pub since_version: u64,
    /// Systems with a usable scan that require it (the seed's "how many systems are
    /// requesting each patch").
    pub required: u64,
    /// Systems with a usable scan that have it installed.
    pub installed: u64,
    /// Deployments that deploy it.
    pub deployments: Vec<String>,
}

/// An update in full: the summary and the catalog entry (applicability, files).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDetail {
    #[serde(flatten)]
    pub summary: UpdateSummary,
    pub update: crate::catalog::Update,
}

/// [required, installed] per catalog index in `wanted`, over clients with a usable scan
/// of a catalog that contained the update (as the update lists count it).
fn fleet_counts(s: &SiteState, wanted: &[usize]) -> HashMap<u32, [u64; 2]> {
    let by_key: HashMap<u32, usize> = wanted.iter().map(|&i| (s.catalog.keys[i], i)).collect();
    let mut out: HashMap<u32, [u64; 2]> = wanted.iter().map(|&i| (i as u32, [0, 0])).collect();
    for (ci, c) in s.fleet.clients.iter().enumerate() {
        if unknown_reason(s, ci, c).is_some() {
            continue;
        }
        let v = c.compliance.last_scan.as_ref().map_or(0, |r| r.catalog_version);
        for st in &c.compliance.states {
            let Some(&i) = by_key.get(&st.key()) else { continue };
            let reason = classify(Some(*st), true, s.catalog.since_version[i], v);
            let slot = match reason.state() {
                ComplianceState::Required => 0,
                ComplianceState::Installed => 1,
                _ => continue,
            };
            out.entry(i as u32).or_default()[slot] += 1;
        }
    }
    out
}

fn update_summary(s: &SiteState, i: usize, counts: &HashMap<u32, [u64; 2]>) -> UpdateSummary {
    let u = &s.catalog.updates[i];
    let [required, installed] = counts.get(&(i as u32)).copied().unwrap_or_default();
    UpdateSummary {
        id: u.id.clone(),
        kb: u.kb.clone(),
        title: u.title.clone(),
        classification: u.classification.clone(),
        severity: u.severity,
        products: u.products.clone(),
        released: u.released,
        cves: u.cves.clone(),
        superseded: s.catalog.is_superseded(i as u32),
        superseded_by: s.catalog.superseded_by[i].iter().map(|&j| s.catalog.updates[j as usize].id.clone()).collect(),
        expired: u.expired,
        since_version: s.catalog.since_version[i],
        required,
        installed,
        deployments: s
            .engine
            .prepared()
            .deployments
            .iter()
            .filter(|d| d.updates.contains(&(i as u32)))
            .map(|d| d.name.clone())
            .collect(),
    }
}

/// The updates matching a search, in catalog order, paged (fleet counts for the page only).
pub fn updates(s: &SiteState, query: &UpdateQuery) -> Paged<UpdateSummary> {
    let mut matching: Vec<usize> = (0..s.catalog.len()).filter(|&i| query.matches(s, i)).collect();
    let u = |i: usize| &s.catalog.updates[i];
    // Counting every matching update (one pass over the fleet's states) only to sort by it.
    let counted = (query.sort.by == UpdateSort::Required).then(|| fleet_counts(s, &matching));
    let required = |i: usize| counted.as_ref().and_then(|c| c.get(&(i as u32))).map_or(0, |c| c[0]);
    let order = |a: usize, b: usize| match query.sort.by {
        UpdateSort::Catalog => std::cmp::Ordering::Equal,
        UpdateSort::Id => u(a).id.cmp(&u(b).id),
        UpdateSort::Released => u(a).released.cmp(&u(b).released),
        UpdateSort::Severity => u(a).severity.cmp(&u(b).severity),
        UpdateSort::Required => required(a).cmp(&required(b)),
    };
    // Ties keep the catalog's order either way, so pages do not shuffle between requests.
    matching.sort_by(|&a, &b| {
        let o = order(a, b);
        if query.sort.descending { o.reverse() } else { o }.then(a.cmp(&b))
    });
    let page = query.page.cut(matching);
    let counts = match counted {
        Some(c) => c,
        None => fleet_counts(s, &page.items),
    };
    Paged {
        total: page.total,
        offset: page.offset,
        limit: page.limit,
        items: page.items.iter().map(|&i| update_summary(s, i, &counts)).collect(),
    }
}

/// One update by id (or, when no id matches, the only update with that KB).
pub fn update(s: &SiteState, id: &str) -> Option<UpdateDetail> {
    let i = match s.catalog.index_of(id) {
        Some(i) => i as usize,
        None => match s.catalog.find(id).as_slice() {
            [one] => *one as usize,
            _ => return None,
        },
    };
    let counts = fleet_counts(s, &[i]);
    Some(UpdateDetail { summary: update_summary(s, i, &counts), update: s.catalog.updates[i].clone() })
}

// ---------------------------------------------------------------------------------------
// Clients.

/// A client listing's filter.
#[derive(Clone, Debug, Default)]
pub struct ClientQuery {
    /// Case-insensitive text in the client name.
    pub q: Option<String>,
    /// Facts the client must have, `key=value` each.
    pub selector: Vec<(String, String)>,
    pub sort: Sort,
    pub page: Page,
}

/// Parse `k=v[,k=v…]` as a fact selector.
pub fn parse_selector(text: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
            _ => Err(format!("selector {p:?} is not key=value; write e.g. selector=role=server,site=BER")),
        })
        .collect()
}

/// One client in a listing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientSummary {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<Timestamp>,
    /// `Scanned`, or the reason every update of the client is Unknown.
    pub scan_state: String,
    /// Updates Required on it (deployed or not).
    pub required: u64,
    /// Deployments assigned to it now.
    pub deployments: u64,
}

pub fn clients(s: &SiteState, query: &ClientQuery) -> Paged<ClientSummary> {
    let q = query.q.as_deref().map(str::to_lowercase);
    let mut rows: Vec<usize> = (0..s.fleet.clients.len())
        .filter(|&i| {
            let c = &s.fleet.clients[i];
            q.as_deref().is_none_or(|q| contains_ci(&c.name, q))
                && query.selector.iter().all(|(k, v)| fact(c, k) == Some(v.as_str()))
        })
        .collect();
    let scan = |i: usize| s.fleet.clients[i].compliance.last_scan.as_ref().map(|r| r.time);
    let name = |i: usize| s.fleet.clients[i].name.as_str();
    match query.sort {
        Sort::Name => rows.sort_by(|&a, &b| name(a).cmp(name(b))),
        Sort::LastScan => rows.sort_by(|&a, &b| (scan(a), name(a)).cmp(&(scan(b), name(b)))),
        Sort::LastScanDescending => rows.sort_by(|&a, &b| (scan(b), name(a)).cmp(&(scan(a), name(b)))),
    }
    let page = query.page.cut(rows);
    Paged {
        total: page.total,
        offset: page.offset,
        limit: page.limit,
        items: {
            let lookup = Lookup::new(s);
            page.items.iter().map(|&i| client_summary(s, i, &lookup)).collect()
        },
    }
}

/// A fact as collections select on it (`hostname` defaults to the name).
fn fact<'c>(c: &'c Client, key: &str) -> Option<&'c str> {
    match c.facts.get(key) {
        Some(v) => Some(v.as_str()),
        None if key == "hostname" => Some(c.name.as_str()),
        None => None,
    }
}

fn client_summary(s: &SiteState, i: usize, lookup: &Lookup) -> ClientSummary {
    let c = &s.fleet.clients[i];
    let unknown = unknown_reason(s, i, c);
    let required = match unknown {
        Some(_) => 0,
        None => client_updates(s, i, lookup).iter().filter(|u| u.state == ComplianceState::Required).count() as u64,
    };
    ClientSummary {
        name: c.name.clone(),
        os: c.facts.get("os").cloned(),
        agent_version: c.compliance.agent_version.clone(),
        last_scan: c.compliance.last_scan.as_ref().map(|r| r.time),
        scan_state: unknown.map_or_else(|| "Scanned".to_string(), |r| format!("{r:?}")),
        required,
        deployments: policy(s, i).deployments.len() as u64,
    }
}

/// One update on one client.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientUpdate {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    pub title: String,
    pub state: ComplianceState,
    /// The Table 1 sub-reason.
    pub reason: Reason,
    /// The failure, when the last download or install failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Deployments assigned to the client that deploy it.
    pub deployments: Vec<String>,
    /// Waivers in force that cover it on this client.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waived_by: Vec<String>,
}

/// A client in full.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientDetail {
    pub name: String,
    pub facts: BTreeMap<String, String>,
    pub collections: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scan: Option<ScanRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<ScanRecord>,
    /// Why every update of the client is Unknown, if so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unknown_reason: Option<Reason>,
    /// Every update its scan found applicable (and every deployed update it has no
    /// usable state for), with state, sub-reason and error.
    pub updates: Vec<ClientUpdate>,
    pub pending_reboot: bool,
    /// The deployments assigned to it, as its policy carries them.
    pub deployments: Vec<DeploymentAssignment>,
    pub maintenance_windows: Vec<MaintenanceWindow>,
    /// The policy's ETag.
    pub policy_etag: String,
    /// One sentence: why the client is not compliant, or that it is.
    pub why_not_compliant: String,
}

/// What reading clients' updates needs once per request, not once per client.
struct Lookup {
    /// Catalog key → catalog index.
    idx_by_key: HashMap<u32, usize>,
    waivers: Waivers,
}

impl Lookup {
    fn new(s: &SiteState) -> Lookup {
        Lookup {
            idx_by_key: s.catalog.keys.iter().enumerate().map(|(i, &k)| (k, i)).collect(),
            waivers: waivers_now(s),
        }
    }
}

/// Every update of a client: what its scan reported, and each deployed update it has no
/// usable state for.
fn client_updates(s: &SiteState, i: usize, lookup: &Lookup) -> Vec<ClientUpdate> {
    let c = &s.fleet.clients[i];
    let pol = policy(s, i);
    let mut deployed_by: HashMap<&str, Vec<String>> = HashMap::new();
    for a in &pol.deployments {
        for u in &a.updates {
            deployed_by.entry(u.as_str()).or_default().push(a.name.clone());
        }
    }
    let unknown = unknown_reason(s, i, c);
    let v = c.compliance.last_scan.as_ref().map_or(0, |r| r.catalog_version);
    let (idx_by_key, waivers) = (&lookup.idx_by_key, &lookup.waivers);
    let mut seen: HashSet<usize> = HashSet::new();
    let mut out = Vec::new();
    let mut push = |idx: usize, reported: Option<PackedState>, seen: &mut HashSet<usize>| {
        let u = &s.catalog.updates[idx];
        let deployments = deployed_by.get(u.id.as_str()).cloned().unwrap_or_default();
        let reason = match unknown {
            Some(r) => r,
            None => classify(reported, !deployments.is_empty(), s.catalog.since_version[idx], v),
        };
        let error = reported.filter(|r| r.enforcement().failed()).map(|r| {
            format!("{:?}: the last attempt failed on the client; it retries at its next evaluation", r.enforcement())
        });
        let waived_by =
            waivers.covering(i, &c.name, s.engine.membership(), idx as u32).into_iter().map(String::from).collect();
        seen.insert(idx);
        out.push(ClientUpdate {
            id: u.id.clone(),
            kb: u.kb.clone(),
            title: u.title.clone(),
            state: reason.state(),
            reason,
            error,
            deployments,
            waived_by,
        });
    };
    for st in &c.compliance.states {
        if let Some(&idx) = idx_by_key.get(&st.key()) {
            push(idx, Some(*st), &mut seen);
        }
    }
    // Deployed updates the scan could not speak for (newer than it, or no usable scan).
    for a in &pol.deployments {
        for id in &a.updates {
            if let Some(idx) = s.catalog.index_of(id).map(|x| x as usize)
                && !seen.contains(&idx)
                && (unknown.is_some() || s.catalog.since_version[idx] > v)
            {
                push(idx, None, &mut seen);
            }
        }
    }
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

pub fn client(s: &SiteState, name: &str) -> Option<ClientDetail> {
    let (i, c) = s.client(name)?;
    let pol = policy(s, i);
    let prepared = s.engine.prepared();
    let collections = (0..prepared.collections.len())
        .filter(|&ci| s.engine.membership().contains(i, ci))
        .map(|ci| prepared.collections.names[ci].clone())
        .collect();
    let unknown = unknown_reason(s, i, c);
    let updates = client_updates(s, i, &Lookup::new(s));
    let pending_reboot =
        c.compliance.states.iter().any(|st| st.enforcement() == crate::compliance::Enforcement::PendingReboot);
    let why_not_compliant = why_not_compliant(c, unknown, &updates, &pol.deployments);
    Some(ClientDetail {
        name: c.name.clone(),
        facts: c.facts.clone(),
        collections,
        agent_version: c.compliance.agent_version.clone(),
        last_scan: c.compliance.last_scan.clone(),
        last_failure: c.compliance.last_failure.clone(),
        unknown_reason: unknown,
        updates,
        pending_reboot,
        deployments: pol.deployments.clone(),
        maintenance_windows: pol.maintenance_windows.clone(),
        policy_etag: s.engine.outcome().etag_of(i).to_string(),
        why_not_compliant,
    })
}

/// One sentence on the client's compliance with its deployments.
fn why_not_compliant(
    c: &Client,
    unknown: Option<Reason>,
    updates: &[ClientUpdate],
    deployments: &[DeploymentAssignment],
) -> String {
    if deployments.is_empty() {
        return "No deployment targets it now, so there is nothing it must install.".into();
    }
    if let Some(r) = unknown {
        return format!("Its compliance is Unknown ({r:?}): {}.", unknown_message(r, c));
    }
    let deployed: Vec<&ClientUpdate> = updates.iter().filter(|u| !u.deployments.is_empty()).collect();
    let open: Vec<&ClientUpdate> =
        deployed.iter().copied().filter(|u| u.state == ComplianceState::Required && u.waived_by.is_empty()).collect();
    if !open.is_empty() {
        let ids: Vec<&str> = open.iter().map(|u| u.id.as_str()).collect();
        let count = |r: Reason| open.iter().filter(|u| u.reason == r).count();
        let mut parts = Vec::new();
        for (r, what) in [
            (Reason::InstallFailed, "failed to install"),
            (Reason::PendingReboot, "wait for a restart"),
            (Reason::InstalledStatePending, "are installed but their new state has not arrived"),
            (Reason::DeployedNotInstalled, "are not installed yet"),
        ] {
            if count(r) > 0 {
                parts.push(format!("{} {what}", count(r)));
            }
        }
        return format!("Required: {} deployed update(s) ({}) — {}.", open.len(), list(&ids), parts.join(", "));
    }
    let unscanned: Vec<&str> =
        deployed.iter().filter(|u| u.state == ComplianceState::Unknown).map(|u| u.id.as_str()).collect();
    if !unscanned.is_empty() {
        return format!(
            "Unknown: its last scan predates {} deployed update(s) ({}); the next scan decides.",
            unscanned.len(),
            list(&unscanned)
        );
    }
    if deployed.iter().any(|u| !u.waived_by.is_empty() && u.state == ComplianceState::Required) {
        return "Waived: every deployed update it still requires is covered by a waiver in force.".into();
    }
    "Compliant: every deployed update is installed or not required.".into()
}

#[cfg(test)]
mod test;
