//! Status back to git: after a reconcile, a compliance snapshot is committed to a status
//! branch of the desired-state repository (never touching a work tree), only when it
//! changed, and pushed when a remote is configured. The branch's history then answers
//! "how compliant were we on date X" with plain git, or with `patchops status --at`.
//!
//! The snapshot is one YAML file per deployment (`deployments/<name>.yaml`) and per
//! collection (`collections/<name>.yaml`) plus `summary.yaml`: `git log -p --
//! deployments/pilot.yaml` is then the compliance history of one deployment, and a status
//! commit's diff shows exactly which deployments moved. Reconcile times and conditions are
//! left out of the files (they change every time); the commit time is the reconcile time.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{FileMode, Oid, Repository, Signature, Time};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use tracing::{error, info};

use super::{GitSource, Kind, REMOTE};
use crate::output::OutputFormat;
use crate::resources::{CollectionStatus, MachineCounts, PhaseStatus, StateCounts, UpdateDeploymentStatus};
use crate::store::ReconcileRecord;
use crate::{Error, Result};

/// The status branch `patchops run --status-branch` writes by default.
pub const DEFAULT_BRANCH: &str = "patchops/status";

/// Totals over every deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// The desired-state revision reconciled (`main@sha1:<hex>`).
    pub revision: String,
    pub catalog_version: u64,
    pub deployments: u64,
    /// Machines targeted, summed over deployments (a machine counts once per deployment).
    pub targeted: u64,
    /// Machines compliant, summed over deployments.
    pub compliant: u64,
    /// compliant / targeted (100 when nothing is targeted).
    pub compliance_percent: f64,
}

/// One deployment's compliance.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSnapshot {
    pub namespace: String,
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_phase: Option<String>,
    pub compliance_percent: f64,
    pub targeted: u64,
    pub machines: MachineCounts,
    /// (machine, update) pairs per compliance state.
    pub updates: StateCounts,
    pub update_count: u64,
    /// Per rollout phase (its collection): targeted and compliant machines.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseSnapshot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhaseSnapshot {
    pub name: String,
    pub state: String,
    pub targeted: u64,
    pub compliant: u64,
}

/// One collection.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSnapshot {
    pub namespace: String,
    pub member_count: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_window: Option<Timestamp>,
}

/// What the status branch holds after one reconcile.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    pub summary: Summary,
    pub deployments: BTreeMap<String, DeploymentSnapshot>,
    pub collections: BTreeMap<String, CollectionSnapshot>,
}

impl Snapshot {
    /// The snapshot of a reconcile record.
    pub fn of(record: &ReconcileRecord) -> Result<Self> {
        let mut snapshot = Snapshot::default();
        let bad = |kind: &str, name: &str, e: serde_json::Error| {
            Error::Usage(format!("the stored status of {kind} {name:?} cannot be read ({e}); reconcile again"))
        };
        for s in &record.statuses {
            match s.kind.as_str() {
                "UpdateDeployment" => {
                    let d: UpdateDeploymentStatus =
                        serde_json::from_value(s.status.clone()).map_err(|e| bad(&s.kind, &s.name, e))?;
                    let phases = d.phases.iter().map(PhaseSnapshot::of).collect();
                    snapshot.deployments.insert(
                        s.name.clone(),
                        DeploymentSnapshot {
                            namespace: s.namespace.clone(),
                            phase: d.phase,
                            rollout_phase: d.rollout_phase,
                            compliance_percent: d.compliance_percent,
                            targeted: d.targeted,
                            machines: d.machines,
                            updates: d.updates,
                            update_count: d.update_count,
                            phases,
                            deadline: d.deadline,
                        },
                    );
                }
                "Collection" => {
                    let c: CollectionStatus =
                        serde_json::from_value(s.status.clone()).map_err(|e| bad(&s.kind, &s.name, e))?;
                    snapshot.collections.insert(
                        s.name.clone(),
                        CollectionSnapshot {
                            namespace: s.namespace.clone(),
                            member_count: c.member_count,
                            next_window: c.next_window,
                        },
                    );
                }
                _ => {}
            }
        }
        let targeted: u64 = snapshot.deployments.values().map(|d| d.targeted).sum();
        let compliant: u64 = snapshot.deployments.values().map(|d| d.machines.compliant).sum();
        snapshot.summary = Summary {
            revision: record.revision.clone(),
            catalog_version: record.catalog_version,
            deployments: snapshot.deployments.len() as u64,
            targeted,
            compliant,
            compliance_percent: if targeted == 0 { 100.0 } else { compliant as f64 * 100.0 / targeted as f64 },
        };
        Ok(snapshot)
    }

    /// The commit message: "status: 3 deployments, 87.5 % compliant at main@sha1:… (catalog v12)".
    pub fn message(&self) -> String {
        let s = &self.summary;
        format!(
            "status: {} deployment{}, {:.1} % compliant at {} (catalog v{})\n\n{} of {} targeted machines compliant.\n",
            s.deployments,
            if s.deployments == 1 { "" } else { "s" },
            s.compliance_percent,
            s.revision,
            s.catalog_version,
            s.compliant,
            s.targeted
        )
    }

    /// File path → YAML text.
    fn files(&self) -> BTreeMap<String, String> {
        let mut files = BTreeMap::from([("summary.yaml".to_string(), yaml(&self.summary))]);
        for (name, d) in &self.deployments {
            files.insert(format!("deployments/{name}.yaml"), yaml(d));
        }
        for (name, c) in &self.collections {
            files.insert(format!("collections/{name}.yaml"), yaml(c));
        }
        files
    }

    fn from_tree(repo: &Repository, tree: &git2::Tree) -> Result<Self, String> {
        let read = |path: &str| -> Result<String, String> {
            let entry = tree.get_path(Path::new(path)).map_err(|_| format!("{path} is missing"))?;
            let blob = repo.find_blob(entry.id()).map_err(|e| format!("{path}: {}", e.message()))?;
            String::from_utf8(blob.content().to_vec()).map_err(|_| format!("{path} is not UTF-8"))
        };
        let parse = |path: &str, text: &str| format!("{path}: {text}");
        let summary = read("summary.yaml")?;
        let mut snapshot = Snapshot {
            summary: crate::yaml::from_str(&summary).map_err(|e| parse("summary.yaml", &e.to_string()))?,
            ..Default::default()
        };
        for (folder, is_deployment) in [("deployments", true), ("collections", false)] {
            let Ok(entry) = tree.get_path(Path::new(folder)) else { continue };
            let Ok(sub) = repo.find_tree(entry.id()) else { continue };
            for file in sub.iter() {
                let Some(name) = file.name().ok().and_then(|n| n.strip_suffix(".yaml")) else { continue };
                let path = format!("{folder}/{name}.yaml");
                let text = read(&path)?;
                if is_deployment {
                    let d = crate::yaml::from_str(&text).map_err(|e| parse(&path, &e.to_string()))?;
                    snapshot.deployments.insert(name.to_string(), d);
                } else {
                    let c = crate::yaml::from_str(&text).map_err(|e| parse(&path, &e.to_string()))?;
                    snapshot.collections.insert(name.to_string(), c);
                }
            }
        }
        Ok(snapshot)
    }
}

impl PhaseSnapshot {
    fn of(p: &PhaseStatus) -> Self {
        PhaseSnapshot { name: p.name.clone(), state: p.state.clone(), targeted: p.targeted, compliant: p.compliant }
    }
}

fn yaml<T: Serialize>(value: &T) -> String {
    serde_saphyr::to_string(value).expect("snapshots serialize")
}

/// What publishing a snapshot did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Published {
    /// The snapshot equalled the branch's last one: no commit.
    Unchanged { commit: Oid },
    /// A new status commit.
    Committed { commit: Oid, message: String },
}

impl Published {
    pub fn commit(&self) -> Oid {
        match self {
            Published::Unchanged { commit } | Published::Committed { commit, .. } => *commit,
        }
    }
}

/// Commit the snapshot of `record` to `branch` of the source's repository (for a URL
/// repository: of its cache clone) and push it to `push` (a remote name or URL; for a URL
/// repository `origin`, its URL, when none is given).
pub fn publish(source: &GitSource, record: &ReconcileRecord, branch: &str, push: Option<&str>) -> Result<Published> {
    let (repo, kind) = source.open(false)?;
    let fail = |what: &str, e: git2::Error| {
        Error::git(source.shown_repo(), format!("status branch {branch:?}: {what}: {}", e.message()), e)
    };
    let snapshot = Snapshot::of(record)?;
    let published = commit_snapshot(&repo, branch, &snapshot, record.time).map_err(|e| fail("cannot commit", e))?;
    let remote = match (push, kind) {
        (Some(remote), _) => Some(remote),
        (None, Kind::Url) => Some(REMOTE),
        (None, Kind::Local) => None,
    };
    if let Some(remote) = remote {
        let tracking = repo.refname_to_id(&format!("refs/remotes/{remote}/{branch}")).ok();
        if matches!(published, Published::Committed { .. }) || tracking != Some(published.commit()) {
            super::push_branch(&repo, remote, branch, "--status-push").map_err(|message| Error::Git {
                repo: source.shown_repo(),
                message: format!("status branch {branch:?}: {message}"),
                source: None,
            })?;
        }
    }
    Ok(published)
}

/// [`publish`] for the reconcile loop: a failure is logged and never fails the reconcile.
pub fn publish_logged(source: &GitSource, record: &ReconcileRecord, branch: &str, push: Option<&str>) {
    match publish(source, record, branch, push) {
        Ok(Published::Committed { commit, message }) => {
            info!(branch, %commit, "{}", message.lines().next().unwrap_or_default())
        }
        Ok(Published::Unchanged { commit }) => info!(branch, %commit, "status unchanged; no status commit"),
        Err(e) => error!(branch, error = %e, "status commit failed; the reconcile itself succeeded"),
    }
}

/// Commit `snapshot` to `refs/heads/<branch>` when it differs from the branch's tree.
/// The parent is the local branch, or the fetched `refs/remotes/origin/<branch>` when the
/// local one is missing or behind it (another reconciler pushed a newer status).
pub fn commit_snapshot(
    repo: &Repository,
    branch: &str,
    snapshot: &Snapshot,
    time: Timestamp,
) -> Result<Published, git2::Error> {
    let refname = format!("refs/heads/{branch}");
    let local = repo.find_reference(&refname).ok().map(|r| r.peel_to_commit()).transpose()?;
    let fetched =
        repo.find_reference(&format!("refs/remotes/{REMOTE}/{branch}")).ok().and_then(|r| r.peel_to_commit().ok());
    let local_id = local.as_ref().map(|c| c.id());
    let parent = match (local, fetched) {
        (Some(l), Some(f)) if l.id() != f.id() && repo.graph_descendant_of(f.id(), l.id())? => Some(f),
        (Some(l), _) => Some(l),
        (None, f) => f,
    };
    let tree = write_tree(repo, &snapshot.files())?;
    if let Some(parent) = &parent
        && parent.tree_id() == tree
    {
        if local_id != Some(parent.id()) {
            repo.reference(&refname, parent.id(), true, "patchops status: fast-forward to the remote")?;
        }
        return Ok(Published::Unchanged { commit: parent.id() });
    }
    let signature = Signature::new("patchops", "patchops@localhost", &Time::new(time.as_second(), 0))?;
    let message = snapshot.message();
    let tree = repo.find_tree(tree)?;
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    let commit = repo.commit(None, &signature, &signature, &message, &tree, &parents)?;
    // Moves the branch only if nobody else moved it meanwhile.
    match local_id {
        Some(current) => repo.reference_matching(&refname, commit, true, current, "patchops status")?,
        None => repo.reference(&refname, commit, false, "patchops status")?,
    };
    Ok(Published::Committed { commit, message })
}

/// Nested trees of `files` (path → text), written straight to the object database.
fn write_tree(repo: &Repository, files: &BTreeMap<String, String>) -> Result<Oid, git2::Error> {
    let mut folders: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    let mut builder = repo.treebuilder(None)?;
    for (path, text) in files {
        match path.split_once('/') {
            Some((folder, rest)) => {
                folders.entry(folder).or_default().insert(rest.to_string(), text.clone());
            }
            None => {
                builder.insert(path, repo.blob(text.as_bytes())?, FileMode::Blob.into())?;
            }
        }
    }
    for (folder, inner) in folders {
        builder.insert(folder, write_tree(repo, &inner)?, FileMode::Tree.into())?;
    }
    builder.write()
}

/// A snapshot read back from the status branch.
#[derive(Clone, Debug, Serialize)]
pub struct StatusAt {
    pub commit: String,
    /// The reconcile time (the commit time).
    pub time: Timestamp,
    pub snapshot: Snapshot,
}

/// The snapshot of the last status commit at or before `at` on `branch` (local, or fetched
/// from the URL's remote).
pub fn snapshot_at(source: &GitSource, branch: &str, at: Timestamp) -> Result<StatusAt> {
    let (repo, _) = source.open(true)?;
    let refs = [format!("refs/heads/{branch}"), format!("refs/remotes/{REMOTE}/{branch}")];
    let Some(tip) = refs.iter().find_map(|r| repo.find_reference(r).ok().and_then(|r| r.peel_to_commit().ok())) else {
        return Err(source.error(format!(
            "no status branch {branch:?}; run `patchops run --status-branch {branch}` first, or pass --status-branch"
        )));
    };
    let mut oldest = None;
    let mut next = Some(tip);
    while let Some(commit) = next {
        let time = Timestamp::from_second(commit.time().seconds()).unwrap_or(Timestamp::UNIX_EPOCH);
        if time <= at {
            let tree = commit.tree().map_err(|e| Error::git(source.shown_repo(), "cannot read a status commit", e))?;
            let snapshot = Snapshot::from_tree(&repo, &tree).map_err(|m| {
                source.error(format!("status commit {} on {branch:?} cannot be read: {m}", commit.id()))
            })?;
            return Ok(StatusAt { commit: commit.id().to_string(), time, snapshot });
        }
        oldest = Some(time);
        next = commit.parents().next();
    }
    Err(source.error(format!(
        "no status commit on {branch:?} at or before {at}; the first is from {}",
        oldest.map_or_else(|| "-".into(), |t| t.to_string())
    )))
}

pub fn print(status: &StatusAt, format: OutputFormat) {
    match format {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(status).expect("snapshots serialize")),
        OutputFormat::Yaml => print!("{}", serde_saphyr::to_string(status).expect("snapshots serialize")),
        OutputFormat::Table | OutputFormat::Wide => {
            let s = &status.snapshot.summary;
            println!(
                "status at {} (commit {}): revision {}  catalog version {}  {:.1} % compliant ({} of {})",
                status.time,
                &status.commit[..12],
                s.revision,
                s.catalog_version,
                s.compliance_percent,
                s.compliant,
                s.targeted
            );
            use crate::output::Shown::{Always, Wide};
            let mut t = crate::output::Columns::new(
                &[
                    ("DEPLOYMENT", Always),
                    ("PHASE", Always),
                    ("COMPLIANT %", Always),
                    ("TARGETED", Always),
                    ("COMPLIANT", Wide),
                    ("REQUIRED", Always),
                    ("UNKNOWN", Always),
                    ("FAILED", Always),
                ],
                format,
            );
            for (name, d) in &status.snapshot.deployments {
                let phase = match &d.rollout_phase {
                    Some(p) => format!("{} ({p})", d.phase),
                    None => d.phase.clone(),
                };
                t.row([
                    name.clone(),
                    phase,
                    format!("{:.1}", d.compliance_percent),
                    d.targeted.to_string(),
                    d.machines.compliant.to_string(),
                    d.machines.required.to_string(),
                    d.machines.unknown.to_string(),
                    d.machines.failed.to_string(),
                ]);
            }
            println!("{t}");
        }
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::store::ResourceStatus;

    fn deployment(name: &str, targeted: u64, compliant: u64) -> ResourceStatus {
        let status = UpdateDeploymentStatus {
            targeted,
            machines: MachineCounts { compliant, ..Default::default() },
            ..Default::default()
        };
        ResourceStatus {
            kind: "UpdateDeployment".into(),
            namespace: "default".into(),
            name: name.into(),
            status: serde_json::to_value(status).unwrap(),
        }
    }

    fn record(statuses: Vec<ResourceStatus>) -> ReconcileRecord {
        ReconcileRecord { time: Timestamp::UNIX_EPOCH, revision: "main@sha1:ab".into(), catalog_version: 7, statuses }
    }

    #[test]
    fn the_message_sums_machines_over_deployments_and_nothing_targeted_counts_as_compliant() {
        let s = Snapshot::of(&record(vec![deployment("a", 3, 1), deployment("b", 5, 5)])).unwrap();
        assert_eq!(
            s.message().lines().next().unwrap(),
            "status: 2 deployments, 75.0 % compliant at main@sha1:ab (catalog v7)"
        );
        let one = Snapshot::of(&record(vec![deployment("a", 0, 0)])).unwrap();
        assert_eq!(
            one.message().lines().next().unwrap(),
            "status: 1 deployment, 100.0 % compliant at main@sha1:ab (catalog v7)"
        );
    }

    #[test]
    fn a_stored_status_that_cannot_be_read_names_the_resource() {
        let mut bad = deployment("pilot", 1, 1);
        bad.status = serde_json::json!({"targeted": "many"});
        let e = Snapshot::of(&record(vec![bad])).unwrap_err().to_string();
        assert!(e.contains("UpdateDeployment \"pilot\"") && e.contains("reconcile again"), "{e}");
    }
}
