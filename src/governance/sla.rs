//! `patchops sla`: how long patching took, from the repository and the store alone. For
//! each update a deployment carried: the vendor's release (catalog) → the first approval
//! (the merge that put it in the deployment, as `audit` reads it from history) → the
//! moments 90 % and 100 % of the targeted machines were compliant (the deployment's status
//! history, only while the revision the status was computed from carried the update).
//! Percentiles per severity and collection, and the breaches of the CompliancePolicy
//! deadline targets (an update compliant on a collection later than release + `within`,
//! or not yet and overdue); pairs a Waiver in force at the due moment kept apart.
//!
//! The decisions ([`milestones`], [`percentile`], [`breach`], [`report`]) are pure: the
//! approvals, the status samples and `now` are passed.

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;

use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};

use super::ReportFormat;
use super::exposure::{cve_index, date_text};
use super::waivers::Waivers;
use crate::catalog::{Catalog, Severity};
use crate::desired::DesiredState;
use crate::git::RepoArgs;
use crate::git::audit::{Action, AuditQuery, AuditReport};
use crate::reconcile::resolve::{matches, resolve};
use crate::reconcile::targeting::Collections;
use crate::{Error, Result};

#[derive(clap::Args, Debug, Clone)]
pub struct SlaArgs {
    /// Only updates released on or after this date (2026-01-01) or date-time.
    #[arg(long, value_name = "DATE")]
    pub since: Option<String>,
    /// Only updates rated this severity or higher (Low, Moderate, Important, Critical).
    #[arg(long, value_parser = super::cve::parse_severity)]
    pub severity: Option<Severity>,
    /// Only deployments to this collection (as their collection or one of their phases').
    #[arg(long)]
    pub collection: Option<String>,
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Store: a SQLite file path or a postgres:// URL.
    #[arg(long, env = "PATCHOPS_STORE", default_value = crate::process::DEFAULT_STORE)]
    pub store: String,
    #[arg(long, short, value_enum, default_value_t = ReportFormat::Table)]
    pub output: ReportFormat,
}

// ---------------------------------------------------------------------------------------
// The pure core.

/// An approval or withdrawal of one update (catalog index) into one deployment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approval {
    pub deployment: String,
    pub update: u32,
    pub action: Action,
    /// When it landed on the branch (the committer's clock of the merge or commit).
    pub time: Timestamp,
    pub commit: String,
    pub pull_request: Option<String>,
}

/// A deployment's (or one rollout phase's) compliance as one recorded status said it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    /// When the reconcile recorded it.
    pub time: Timestamp,
    /// When the revision it was computed from was committed (None: unknown, `time` is used).
    pub revision_time: Option<Timestamp>,
    /// Compliant machines as a percentage of targeted machines (waived machines left out);
    /// None when no machine was targeted.
    pub percent: Option<f64>,
}

/// When one update reached its milestones in one deployment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Milestones {
    /// Index (into the approvals passed) of the first approval.
    pub approval: Option<usize>,
    pub reached90: Option<Timestamp>,
    pub reached100: Option<Timestamp>,
}

/// The milestones of one (deployment, update): `events` are its approvals and withdrawals
/// oldest first, `samples` the deployment's statuses oldest first. A status counts only
/// when recorded after the first approval from a revision that carried the update (the
/// last approval or withdrawal committed before that revision is an approval), so a
/// status from before a merge, or between a revert and a re-approval, counts for nothing.
pub fn milestones(events: &[Approval], samples: &[Sample]) -> Milestones {
    let Some(first) = events.iter().position(|e| e.action == Action::Approved) else {
        return Milestones::default();
    };
    let carried =
        |at: Timestamp| events.iter().take_while(|e| e.time <= at).last().is_some_and(|e| e.action == Action::Approved);
    let mut out = Milestones { approval: Some(first), ..Default::default() };
    for s in samples {
        if s.time < events[first].time || !carried(s.revision_time.unwrap_or(s.time)) {
            continue;
        }
        let Some(p) = s.percent else { continue };
        if p >= 90.0 && out.reached90.is_none() {
            out.reached90 = Some(s.time);
        }
        if p >= 100.0 {
            out.reached90.get_or_insert(s.time);
            out.reached100 = Some(s.time);
            break;
        }
    }
    out
}

/// The nearest-rank `q` quantile (0 < q ≤ 1) of durations where None means "not reached
/// yet" (longer than any reached one). None when the rank falls on one not reached yet,
/// or there is nothing to rank.
pub fn percentile(values: &[Option<SignedDuration>], q: f64) -> Option<SignedDuration> {
    if values.is_empty() {
        return None;
    }
    let mut sorted: Vec<Option<SignedDuration>> = values.to_vec();
    // Reached ones first, shortest first; the ones not reached yet last.
    sorted.sort_by_key(|v| (v.is_none(), *v));
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    sorted[rank - 1]
}

/// How late compliance came against `due`: reached after it (by how much), or not reached
/// and `now` is past it (by how much so far). None: on time, or not due yet.
pub fn breach(due: Timestamp, reached100: Option<Timestamp>, now: Timestamp) -> Option<SignedDuration> {
    match reached100 {
        Some(t) if t > due => Some(t.duration_since(due)),
        Some(_) => None,
        None if now > due => Some(now.duration_since(due)),
        None => None,
    }
}

// Every SLA clock starts at the midnight (UTC) starting the release date, as a deadline
// target's.
pub(crate) use super::policy::released_at;

/// Which rows the report keeps.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub since: Option<Timestamp>,
    pub severity: Severity,
    pub collection: Option<String>,
}

/// One update in one deployment to one collection.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaRow {
    pub update: String,
    pub kb: Option<String>,
    pub severity: Severity,
    #[serde(serialize_with = "date_text")]
    pub released: jiff::civil::Date,
    pub deployment: String,
    /// The deployment's collection, or the rollout phase's ("-" for a deployment no longer
    /// declared).
    pub collection: String,
    pub approved: Timestamp,
    pub commit: String,
    pub pull_request: Option<String>,
    pub reached90: Option<Timestamp>,
    pub reached100: Option<Timestamp>,
    /// Seconds from the release (midnight UTC) to the approval.
    pub release_to_approval_secs: i64,
    pub release_to90_secs: Option<i64>,
    pub release_to100_secs: Option<i64>,
}

/// Nearest-rank percentiles of one duration (seconds); None: not reached yet by that share.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: Option<i64>,
    pub p90: Option<i64>,
    pub max: Option<i64>,
}

impl Percentiles {
    fn of(values: &[Option<SignedDuration>]) -> Self {
        let p = |q| percentile(values, q).map(|d| d.as_secs());
        Percentiles { p50: p(0.5), p90: p(0.9), max: p(1.0) }
    }
}

/// Percentiles of the rows of one severity on one collection, from the release.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaGroup {
    pub severity: Severity,
    pub collection: String,
    pub updates: u64,
    pub to_approval: Percentiles,
    pub to90: Percentiles,
    pub to100: Percentiles,
    /// Rows not 100 % compliant yet.
    pub open: u64,
}

/// An update compliant on a collection later than a deadline target allows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaBreach {
    pub policy: String,
    pub update: String,
    pub collection: String,
    /// Release + the target's `within`.
    pub due: Timestamp,
    /// When it was 100 % compliant; None: not yet.
    pub reached100: Option<Timestamp>,
    /// Seconds late (so far, when not reached).
    pub late_secs: i64,
    /// The deployments carrying it to the collection (none: never approved there).
    pub deployments: Vec<String>,
    /// The waivers in force at the due moment covering it on the collection: a waived
    /// pair is listed apart and is no breach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub waivers: Vec<String>,
}

/// Everything `patchops sla` reports.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SlaReport {
    pub now: Timestamp,
    pub rows: Vec<SlaRow>,
    pub groups: Vec<SlaGroup>,
    pub breaches: Vec<SlaBreach>,
    /// Overdue pairs a Waiver in force at the due moment covers.
    pub waived: Vec<SlaBreach>,
}

/// A deployment's compliance series: (deployment, rollout phase or None for the whole).
pub type SeriesKey = (String, Option<String>);

/// The report from the desired state at the tip, the catalog, every approval and
/// withdrawal (in history order) and the recorded compliance series.
pub fn report(
    desired: &DesiredState,
    catalog: &Catalog,
    approvals: &[Approval],
    series: &HashMap<SeriesKey, Vec<Sample>>,
    filter: &Filter,
    now: Timestamp,
) -> SlaReport {
    let wanted = |i: u32| {
        let u = &catalog.updates[i as usize];
        u.severity >= filter.severity && filter.since.is_none_or(|s| released_at(u.released) >= s)
    };
    let mut by_pair: BTreeMap<(&str, u32), Vec<Approval>> = BTreeMap::new();
    for a in approvals.iter().filter(|a| wanted(a.update)) {
        by_pair.entry((a.deployment.as_str(), a.update)).or_default().push(a.clone());
    }
    let empty = Vec::new();
    let mut rows = Vec::new();
    for ((deployment, update), events) in &by_pair {
        let u = &catalog.updates[*update as usize];
        let released = released_at(u.released);
        for (collection, phase) in targets(desired, deployment) {
            if filter.collection.as_ref().is_some_and(|c| *c != collection) {
                continue;
            }
            let samples = series.get(&(deployment.to_string(), phase)).unwrap_or(&empty);
            let m = milestones(events, samples);
            let Some(first) = m.approval.map(|i| &events[i]) else { continue };
            // An update released after a list's criteria took it in was approved at its release.
            let approved = first.time.max(released);
            let since = |t: Option<Timestamp>| t.map(|t| t.duration_since(released).as_secs());
            rows.push(SlaRow {
                update: u.id.clone(),
                kb: u.kb.clone(),
                severity: u.severity,
                released: u.released,
                deployment: deployment.to_string(),
                collection,
                approved,
                commit: first.commit.clone(),
                pull_request: first.pull_request.clone(),
                reached90: m.reached90,
                reached100: m.reached100,
                release_to_approval_secs: approved.duration_since(released).as_secs(),
                release_to90_secs: since(m.reached90),
                release_to100_secs: since(m.reached100),
            });
        }
    }
    rows.sort_by(|a, b| {
        (a.released, &a.update, &a.deployment, &a.collection).cmp(&(
            b.released,
            &b.update,
            &b.deployment,
            &b.collection,
        ))
    });
    let (breaches, waived) = breaches(desired, catalog, &rows, filter, now);
    SlaReport { now, groups: groups(&rows), rows, breaches, waived }
}

/// The (collection, rollout phase) pairs a deployment targets: its collection (or its
/// template's), or each phase's; "-" for a deployment the tip no longer declares.
pub(crate) fn targets(desired: &DesiredState, deployment: &str) -> Vec<(String, Option<String>)> {
    let Some(d) = desired.deployments.get(deployment) else { return vec![("-".into(), None)] };
    if !d.spec.phases.is_empty() {
        return d.spec.phases.iter().map(|p| (p.collection.clone(), Some(p.name.clone()))).collect();
    }
    let template = d.spec.template.as_ref().and_then(|t| desired.templates.get(t));
    let collection = d.spec.collection.clone().or_else(|| template.and_then(|t| t.spec.collection.clone()));
    vec![(collection.unwrap_or_else(|| "-".into()), None)]
}

fn groups(rows: &[SlaRow]) -> Vec<SlaGroup> {
    let mut by: BTreeMap<(std::cmp::Reverse<Severity>, &str), Vec<&SlaRow>> = BTreeMap::new();
    for r in rows {
        by.entry((std::cmp::Reverse(r.severity), r.collection.as_str())).or_default().push(r);
    }
    by.into_iter()
        .map(|((severity, collection), rows)| {
            let secs = |f: fn(&SlaRow) -> Option<i64>| -> Vec<Option<SignedDuration>> {
                rows.iter().map(|r| f(r).map(SignedDuration::from_secs)).collect()
            };
            SlaGroup {
                severity: severity.0,
                collection: collection.to_string(),
                updates: rows.len() as u64,
                to_approval: Percentiles::of(&secs(|r| Some(r.release_to_approval_secs))),
                to90: Percentiles::of(&secs(|r| r.release_to90_secs)),
                to100: Percentiles::of(&secs(|r| r.release_to100_secs)),
                open: rows.iter().filter(|r| r.reached100.is_none()).count() as u64,
            }
        })
        .collect()
}

/// Breaches of every deadline target, and the overdue pairs a waiver covers.
fn breaches(
    desired: &DesiredState,
    catalog: &Catalog,
    rows: &[SlaRow],
    filter: &Filter,
    now: Timestamp,
) -> (Vec<SlaBreach>, Vec<SlaBreach>) {
    let (mut out, mut waived) = (Vec::new(), Vec::new());
    if desired.compliance_policies.values().all(|p| p.spec.deadlines.is_empty()) {
        return (out, waived);
    }
    let index = cve_index(catalog);
    let collections = Collections::new(&desired.collections);
    let mut by_pair: HashMap<(&str, &str), Vec<&SlaRow>> = HashMap::new();
    for r in rows {
        by_pair.entry((r.update.as_str(), r.collection.as_str())).or_default().push(r);
    }
    for (policy, p) in &desired.compliance_policies {
        for t in &p.spec.deadlines {
            if filter.collection.as_ref().is_some_and(|c| *c != t.collection) {
                continue;
            }
            for (i, u) in catalog.updates.iter().enumerate() {
                if u.expired
                    || catalog.is_superseded(i as u32)
                    || !matches(&t.criteria, u)
                    || u.severity < filter.severity
                    || filter.since.is_some_and(|s| released_at(u.released) < s)
                {
                    continue;
                }
                let due = crate::time::add(released_at(u.released), t.within.signed());
                let carrying = by_pair.get(&(u.id.as_str(), t.collection.as_str())).map_or(&[][..], |v| v.as_slice());
                // The collection is compliant when the first of its deployments is.
                let reached100 = carrying.iter().filter_map(|r| r.reached100).min();
                let Some(late) = breach(due, reached100, now) else { continue };
                let mut deployments: Vec<String> = carrying.iter().map(|r| r.deployment.clone()).collect();
                deployments.sort();
                deployments.dedup();
                let mut b = SlaBreach {
                    policy: policy.clone(),
                    update: u.id.clone(),
                    collection: t.collection.clone(),
                    due,
                    reached100,
                    late_secs: late.as_secs(),
                    deployments,
                    waivers: Vec::new(),
                };
                b.waivers = waivers_covering(desired, catalog, &index, &collections, &t.collection, i as u32, due);
                if b.waivers.is_empty() { out.push(b) } else { waived.push(b) }
            }
        }
    }
    let order =
        |a: &SlaBreach, b: &SlaBreach| (a.due, &a.update, &a.collection).cmp(&(b.due, &b.update, &b.collection));
    out.sort_by(order);
    waived.sort_by(order);
    (out, waived)
}

/// The waivers in force at `at` that cover `update` on the whole of `collection`.
fn waivers_covering(
    desired: &DesiredState,
    catalog: &Catalog,
    index: &BTreeMap<String, Vec<u32>>,
    collections: &Collections,
    collection: &str,
    update: u32,
    at: Timestamp,
) -> Vec<String> {
    let Some(c) = collections.index_of(collection) else { return Vec::new() };
    if desired.waivers.is_empty() {
        return Vec::new();
    }
    let w = Waivers::at(desired, catalog, index, collections, at);
    // A membership row holding only this collection: the waivers targeting it.
    let mut row = vec![0u64; c / 64 + 1];
    row[c / 64] |= 1 << (c % 64);
    let names: Vec<&str> = w.names().collect();
    w.targeting(&row, "")
        .filter(|(_, ups)| ups.binary_search(&update).is_ok())
        .map(|(i, _)| names[i].to_string())
        .collect()
}

// ---------------------------------------------------------------------------------------
// Loading: approvals from the audit of history, samples from the store's status history.

/// The approvals and withdrawals of catalog updates an audit found, oldest first. An
/// entry naming an id or KB approves the catalog updates it names; a list's criteria entry
/// approves the updates the criteria take in at the tip.
pub fn approvals(report: &AuditReport, desired: &DesiredState, catalog: &Catalog) -> Vec<Approval> {
    // Per deployment: the catalog updates its list takes in by criteria at the tip.
    let by_criteria = |deployment: &str| -> Vec<u32> {
        let Some(d) = desired.deployments.get(deployment) else { return Vec::new() };
        let Some(list) = desired.update_lists.get(&d.spec.update_list) else { return Vec::new() };
        let Some(criteria) = &list.spec.criteria else { return Vec::new() };
        resolve(&list.spec, catalog)
            .deployed(catalog)
            .into_iter()
            .filter(|&i| matches(criteria, &catalog.updates[i as usize]))
            .collect()
    };
    let mut criteria_cache: HashMap<&str, Vec<u32>> = HashMap::new();
    let mut out = Vec::new();
    for e in report.events.iter().filter(|e| !e.deployment.starts_with("waiver/")) {
        let updates = if e.update.starts_with("criteria: ") {
            criteria_cache.entry(e.deployment.as_str()).or_insert_with(|| by_criteria(&e.deployment)).clone()
        } else {
            catalog.find(&e.update)
        };
        for update in updates {
            out.push(Approval {
                deployment: e.deployment.clone(),
                update,
                action: e.action,
                time: e.committer.time,
                commit: e.commit.clone(),
                pull_request: e.pull_request.clone(),
            });
        }
    }
    out.sort_by_key(|a| a.time);
    out
}

/// The part of an UpdateDeployment status the SLA reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordedStatus {
    #[serde(default)]
    targeted: u64,
    #[serde(default)]
    compliance_percent: f64,
    #[serde(default)]
    phases: Vec<RecordedPhase>,
}

#[derive(Deserialize)]
struct RecordedPhase {
    name: String,
    #[serde(default)]
    targeted: u64,
    #[serde(default)]
    compliant: u64,
}

/// One row of the status history of UpdateDeployments.
#[derive(Clone, Debug)]
pub struct HistoryRow {
    pub time: Timestamp,
    pub revision: String,
    pub name: String,
    pub status: String,
}

/// Every recorded UpdateDeployment status, oldest first, read through the store's query
/// interface (`status_history`, one row per change of a resource's status).
pub fn load_history(store: &str) -> Result<Vec<HistoryRow>> {
    const SQL: &str = "SELECT time, revision, name, status FROM status_history \
                       WHERE kind = 'UpdateDeployment' ORDER BY time, id";
    let rows = if store.starts_with("postgres://") || store.starts_with("postgresql://") {
        crate::store::postgres::PostgresStore::open(store)?.query_rows(SQL)?
    } else {
        crate::store::open_existing(store)?; // a missing file is a usage error
        let path = store.strip_prefix("sqlite://").unwrap_or(store);
        crate::store::sqlite::SqliteStore::open(std::path::Path::new(path))?.query_rows(SQL)?
    };
    rows.into_iter()
        .map(|r| {
            let [time, revision, name, status]: [String; 4] =
                r.try_into().map_err(|_| Error::Usage("status_history: expected 4 columns".into()))?;
            let secs: i64 = time.parse().map_err(|_| Error::Usage(format!("status_history: bad time {time:?}")))?;
            let time = Timestamp::from_second(secs)
                .map_err(|e| Error::Usage(format!("status_history: time {secs} out of range: {e}")))?;
            Ok(HistoryRow { time, revision, name, status })
        })
        .collect()
}

/// The compliance series of every deployment (and rollout phase) from history rows.
/// `revision_time`: when a revision (`branch@sha1:<hex>`) was committed, if known.
pub fn series(
    rows: &[HistoryRow],
    mut revision_time: impl FnMut(&str) -> Option<Timestamp>,
) -> HashMap<SeriesKey, Vec<Sample>> {
    let mut out: HashMap<SeriesKey, Vec<Sample>> = HashMap::new();
    let mut times: HashMap<&str, Option<Timestamp>> = HashMap::new();
    for r in rows {
        let Ok(status) = serde_json::from_str::<RecordedStatus>(&r.status) else {
            tracing::warn!(deployment = %r.name, time = %r.time, "a recorded status is not an UpdateDeployment status; skipped");
            continue;
        };
        let rev = *times.entry(r.revision.as_str()).or_insert_with(|| revision_time(&r.revision));
        let percent = (status.targeted > 0).then_some(status.compliance_percent);
        out.entry((r.name.clone(), None)).or_default().push(Sample { time: r.time, revision_time: rev, percent });
        for p in status.phases {
            let percent = (p.targeted > 0).then(|| p.compliant as f64 * 100.0 / p.targeted as f64);
            out.entry((r.name.clone(), Some(p.name))).or_default().push(Sample {
                time: r.time,
                revision_time: rev,
                percent,
            });
        }
    }
    out
}

pub fn run(args: &SlaArgs) -> Result<ExitCode> {
    let filter = Filter {
        since: args.since.as_deref().map(|s| crate::git::audit::parse_date("--since", s)).transpose()?,
        severity: args.severity.unwrap_or_default(),
        collection: args.collection.clone(),
    };
    let source = crate::git::git_source(&args.repo, &crate::process::state_dir());
    let (_, desired) = crate::pipeline::load_desired(&source)?;
    if let Some(c) = &filter.collection
        && !desired.collections.contains_key(c)
    {
        let known: Vec<&str> = desired.collections.keys().map(String::as_str).collect();
        return Err(Error::Usage(format!(
            "--collection {c:?} is not in the desired state; known collections: {}",
            if known.is_empty() { "none declared".into() } else { known.join(", ") }
        )));
    }
    let store = crate::store::open_existing(&args.store)?;
    let catalog = store.load_catalog()?;
    drop(store);
    let audit = crate::git::audit::audit(&source, &AuditQuery::default())?;
    let approvals = approvals(&audit, &desired, &catalog);
    let history = load_history(&args.store)?;
    let series = series(&history, |revision| {
        let commit = revision.rsplit_once("sha1:")?.1;
        source.commit_time(commit).ok()
    });
    let report = report(&desired, &catalog, &approvals, &series, &filter, Timestamp::now());
    print(&report, args.output);
    Ok(ExitCode::SUCCESS)
}

// ---------------------------------------------------------------------------------------
// Printing.

fn span(secs: Option<i64>) -> String {
    match secs {
        Some(s) if s < 0 => format!("-{}", crate::time::Duration::from_secs(-s)),
        Some(s) => crate::time::Duration::from_secs(s).to_string(),
        None => "open".into(),
    }
}

fn when(t: Option<Timestamp>) -> String {
    t.map_or("-".into(), |t| t.strftime("%Y-%m-%d %H:%M").to_string())
}

pub fn print(r: &SlaReport, format: ReportFormat) {
    match format {
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(r).expect("reports serialize")),
        ReportFormat::Yaml => print!("{}", serde_saphyr::to_string(r).expect("reports serialize")),
        ReportFormat::Csv => print!("{}", super::to_csv(&r.rows)),
        ReportFormat::Table => {
            let mut t = super::cve::table(&[
                "UPDATE",
                "SEVERITY",
                "RELEASED",
                "DEPLOYMENT",
                "COLLECTION",
                "APPROVED",
                "PR",
                "TO APPROVAL",
                "TO 90%",
                "TO 100%",
            ]);
            for row in &r.rows {
                t.add_row([
                    row.update.clone(),
                    format!("{:?}", row.severity),
                    row.released.to_string(),
                    row.deployment.clone(),
                    row.collection.clone(),
                    when(Some(row.approved)),
                    row.pull_request.clone().unwrap_or_else(|| row.commit[..12.min(row.commit.len())].to_string()),
                    span(Some(row.release_to_approval_secs)),
                    span(row.release_to90_secs),
                    span(row.release_to100_secs),
                ]);
            }
            println!("{t}");
            let mut t = super::cve::table(&[
                "SEVERITY",
                "COLLECTION",
                "UPDATES",
                "APPROVAL p50/p90/max",
                "90% p50/p90/max",
                "100% p50/p90/max",
                "OPEN",
            ]);
            let p = |p: &Percentiles| format!("{} / {} / {}", span(p.p50), span(p.p90), span(p.max));
            for g in &r.groups {
                t.add_row([
                    format!("{:?}", g.severity),
                    g.collection.clone(),
                    g.updates.to_string(),
                    p(&g.to_approval),
                    p(&g.to90),
                    p(&g.to100),
                    g.open.to_string(),
                ]);
            }
            println!("{t}");
            for (title, list) in [("BREACH", &r.breaches), ("WAIVED", &r.waived)] {
                if list.is_empty() {
                    continue;
                }
                let mut t = super::cve::table(&[
                    title,
                    "POLICY",
                    "COLLECTION",
                    "DUE",
                    "100%",
                    "LATE",
                    "DEPLOYMENTS",
                    "WAIVERS",
                ]);
                for b in list {
                    t.add_row([
                        b.update.clone(),
                        b.policy.clone(),
                        b.collection.clone(),
                        when(Some(b.due)),
                        when(b.reached100),
                        span(Some(b.late_secs)) + if b.reached100.is_none() { " so far" } else { "" },
                        if b.deployments.is_empty() { "none".into() } else { b.deployments.join(", ") },
                        b.waivers.join(", "),
                    ]);
                }
                println!("{t}");
            }
            println!("{} row(s), {} breach(es), {} waived", r.rows.len(), r.breaches.len(), r.waived.len());
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn ev(action: Action, time: &str) -> Approval {
        Approval { deployment: "d".into(), update: 0, action, time: at(time), commit: time.into(), pull_request: None }
    }

    fn sample(time: &str, revision: Option<&str>, percent: Option<f64>) -> Sample {
        Sample { time: at(time), revision_time: revision.map(at), percent }
    }

    #[test]
    fn milestones_count_only_statuses_from_revisions_carrying_the_update() {
        use Action::{Approved as A, Withdrawn as W};
        let d1 = "2026-11-01T00:00:00Z";
        let d2 = "2026-11-02T00:00:00Z";
        let d3 = "2026-11-03T00:00:00Z";
        let d4 = "2026-11-04T00:00:00Z";
        let d5 = "2026-11-05T00:00:00Z";
        // (case, events, samples, expected (approval, 90 %, 100 %))
        type Case =
            (&'static str, Vec<Approval>, Vec<Sample>, (Option<usize>, Option<&'static str>, Option<&'static str>));
        let cases: Vec<Case> = vec![
            ("never approved", vec![], vec![sample(d2, None, Some(100.0))], (None, None, None)),
            ("only withdrawn", vec![ev(W, d1)], vec![sample(d2, None, Some(100.0))], (None, None, None)),
            (
                "90 then 100",
                vec![ev(A, d1)],
                vec![sample(d2, None, Some(50.0)), sample(d3, None, Some(90.0)), sample(d4, None, Some(100.0))],
                (Some(0), Some(d3), Some(d4)),
            ),
            ("straight to 100", vec![ev(A, d1)], vec![sample(d3, None, Some(100.0))], (Some(0), Some(d3), Some(d3))),
            (
                "a status before the approval does not count",
                vec![ev(A, d2)],
                vec![sample(d1, None, Some(100.0)), sample(d3, None, Some(95.0))],
                (Some(0), Some(d3), None),
            ),
            (
                "a status recorded after the merge from an older revision does not count",
                vec![ev(A, d2)],
                vec![sample(d3, Some(d1), Some(100.0)), sample(d4, Some(d2), Some(100.0))],
                (Some(0), Some(d4), Some(d4)),
            ),
            (
                "reverted, then approved again: the revert's statuses do not count",
                vec![ev(A, d1), ev(W, d2), ev(A, d4)],
                vec![sample(d3, None, Some(100.0)), sample(d5, None, Some(100.0))],
                (Some(0), Some(d5), Some(d5)),
            ),
            (
                "nothing targeted is not compliance",
                vec![ev(A, d1)],
                vec![sample(d2, None, None), sample(d3, None, Some(100.0))],
                (Some(0), Some(d3), Some(d3)),
            ),
            ("not there yet", vec![ev(A, d1)], vec![sample(d2, None, Some(89.9))], (Some(0), None, None)),
        ];
        for (name, events, samples, (approval, r90, r100)) in cases {
            let m = milestones(&events, &samples);
            assert_eq!(m, Milestones { approval, reached90: r90.map(at), reached100: r100.map(at) }, "{name}");
        }
    }

    #[test]
    fn percentiles_are_nearest_rank_and_open_when_the_rank_is_not_reached() {
        let h = |n: i64| Some(SignedDuration::from_hours(n));
        // (values, q, expected)
        let cases: Vec<(Vec<Option<SignedDuration>>, f64, Option<SignedDuration>)> = vec![
            (vec![], 0.5, None),
            (vec![h(5)], 0.5, h(5)),
            (vec![h(4), h(1), h(3), h(2)], 0.5, h(2)),
            (vec![h(4), h(1), h(3), h(2)], 0.9, h(4)),
            (vec![h(4), h(1), h(3), h(2)], 1.0, h(4)),
            ((1..=10).map(h).collect(), 0.9, h(9)),
            ((1..=10).map(h).collect(), 0.5, h(5)),
            (vec![h(1), None, h(2)], 0.5, h(2)),
            (vec![h(1), None, h(2)], 0.9, None),
            (vec![h(1), None, h(2)], 1.0, None),
        ];
        for (values, q, expected) in cases {
            assert_eq!(percentile(&values, q), expected, "{values:?} q={q}");
        }
    }

    #[test]
    fn a_breach_is_compliance_after_the_due_moment_or_none_yet_past_it() {
        let due = at("2026-11-17T00:00:00Z");
        let h = |n: i64| Some(SignedDuration::from_hours(n));
        // (reached 100 %, now, expected lateness)
        let cases = [
            (Some("2026-11-16T00:00:00Z"), "2026-12-01T00:00:00Z", None),
            (Some("2026-11-17T00:00:00Z"), "2026-12-01T00:00:00Z", None),
            (Some("2026-11-18T06:00:00Z"), "2026-12-01T00:00:00Z", h(30)),
            (None, "2026-11-16T00:00:00Z", None),
            (None, "2026-11-17T00:00:00Z", None),
            (None, "2026-11-19T00:00:00Z", h(48)),
        ];
        for (reached, now, expected) in cases {
            assert_eq!(breach(due, reached.map(at), at(now)), expected, "{reached:?} at {now}");
        }
    }

    const DESIRED: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: pilot}
spec:
  selector: {matchFacts: {ring: pilot}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov}
spec:
  updates: [KB1-srv, KB2-srv, KB3-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov
  startTime: 2026-11-11T00:00:00Z
  deadline: 2026-11-16T00:00:00Z
  phases:
    - {name: pilot, collection: pilot}
    - {name: broad, collection: servers}
---
apiVersion: patchops.dev/v1alpha1
kind: CompliancePolicy
metadata: {name: baseline}
spec:
  deadlines:
    - {collection: servers, criteria: {severities: [Critical]}, within: 7d}
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: kb3-servers}
spec:
  updates: [KB3-srv]
  collection: servers
  reason: vendor certification
  expires: 2026-12-01T00:00:00Z
"#;

    #[test]
    fn the_report_gives_rows_per_phase_collection_percentiles_and_breaches_with_waivers_apart() {
        let desired = DesiredState::load("main@sha1:0", &[("d.yaml".into(), DESIRED.into())]).unwrap();
        let mut low = update("KB4-srv", "P", "2026-11-10");
        low.severity = Severity::Low;
        let catalog = Catalog::new(
            1,
            vec![
                update("KB1-srv", "P", "2026-11-10"),
                update("KB2-srv", "P", "2026-11-10"),
                update("KB3-srv", "P", "2026-11-10"),
                low,
            ],
            &HashMap::new(),
        );
        let approve = |update: u32, time: &str| Approval {
            deployment: "nov-servers".into(),
            update,
            action: Action::Approved,
            time: at(time),
            commit: "c0ffee".into(),
            pull_request: Some("#7".into()),
        };
        let approvals = vec![
            approve(0, "2026-11-11T00:00:00Z"),
            approve(1, "2026-11-11T00:00:00Z"),
            approve(2, "2026-11-11T00:00:00Z"),
        ];
        let s = |t: &str, p: f64| sample(t, None, Some(p));
        let series: HashMap<SeriesKey, Vec<Sample>> = HashMap::from([
            (
                ("nov-servers".into(), Some("pilot".into())),
                vec![s("2026-11-12T00:00:00Z", 95.0), s("2026-11-13T00:00:00Z", 100.0)],
            ),
            (
                ("nov-servers".into(), Some("broad".into())),
                vec![s("2026-11-16T00:00:00Z", 92.0), s("2026-11-20T00:00:00Z", 100.0)],
            ),
        ]);
        let now = at("2026-11-25T00:00:00Z");
        let r = report(&desired, &catalog, &approvals, &series, &Filter::default(), now);
        type Shown<'a> = (&'a str, &'a str, i64, Option<i64>, Option<i64>);
        let shown: Vec<Shown> = r
            .rows
            .iter()
            .map(|r| {
                (
                    r.update.as_str(),
                    r.collection.as_str(),
                    r.release_to_approval_secs,
                    r.release_to90_secs,
                    r.release_to100_secs,
                )
            })
            .collect();
        let day = 86_400;
        let mut expected = Vec::new();
        for u in ["KB1-srv", "KB2-srv", "KB3-srv"] {
            expected.push((u, "pilot", day, Some(2 * day), Some(3 * day)));
            expected.push((u, "servers", day, Some(6 * day), Some(10 * day)));
        }
        assert_eq!(shown, expected);
        let g: Vec<(&str, Option<i64>, Option<i64>)> =
            r.groups.iter().map(|g| (g.collection.as_str(), g.to90.p50, g.to100.max)).collect();
        assert_eq!(g, [("pilot", Some(2 * day), Some(3 * day)), ("servers", Some(6 * day), Some(10 * day))]);
        // Critical on servers within 7 days: KB1 and KB2 breach by 3 days, KB3 is waived.
        let b: Vec<(&str, i64)> = r.breaches.iter().map(|b| (b.update.as_str(), b.late_secs)).collect();
        assert_eq!(b, [("KB1-srv", 3 * day), ("KB2-srv", 3 * day)]);
        assert_eq!(r.waived.len(), 1);
        assert_eq!(
            (r.waived[0].update.as_str(), r.waived[0].waivers.as_slice()),
            ("KB3-srv", &["kb3-servers".to_string()][..])
        );
        // Filters: the Low update was never approved; by collection; by release date.
        let only = |f: Filter| report(&desired, &catalog, &approvals, &series, &f, now);
        let pilot = only(Filter { collection: Some("pilot".into()), ..Default::default() });
        assert!(pilot.rows.iter().all(|r| r.collection == "pilot") && pilot.breaches.is_empty());
        assert_eq!(pilot.rows.len(), 3);
        let later = only(Filter { since: Some(at("2026-11-11T00:00:00Z")), ..Default::default() });
        assert!(later.rows.is_empty() && later.breaches.is_empty());
        let critical = only(Filter { severity: Severity::Critical, ..Default::default() });
        assert_eq!(critical.rows.len(), 6, "test_support updates are Critical");
    }
}
