//! A desired-state repository with history (branches, a merge, a renamed file, several
//! authors, fixed commit times so commit ids are the same on every run) and a SQLite
//! store with a catalog and reporting clients, for the plan and rule tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Oid, Repository, Signature, Time};
use jiff::Timestamp;
use patchops::catalog::Update;
use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, ScanResult};
use patchops::store::{ClientInfo, Store};

#[path = "../common/mod.rs"]
mod common;
pub use common::at;

pub const COLLECTIONS: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
  maintenanceWindows:
    - {name: saturday, start: "02:00", duration: 4h, timeZone: UTC, recurrence: Weekly, daysOfWeek: [Saturday]}
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: workstations}
spec:
  selector: {matchFacts: {role: workstation}}
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: lab}
spec:
  names: [lab-bench-01]
"#;

pub const NOV_SERVERS: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov-srv}
spec:
  updates: [KB200-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov-srv
  collection: servers
  startTime: 2026-11-12T00:00:00Z
  deadline: 2026-11-30T00:00:00Z
"#;

pub const NOV_WORKSTATIONS: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov-w11}
spec:
  updates: [KB300-w11]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-workstations}
spec:
  updateList: nov-w11
  collection: workstations
  startTime: 2026-11-12T00:00:00Z
  deadline: 2026-11-30T00:00:00Z
"#;

pub const TEMPLATE: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: DeploymentTemplate
metadata: {name: servers-standard}
spec:
  deadlineAfter: 14d
"#;

/// December: KB400 (3h run time) for the servers, with the superseded KB100 named too.
pub const DEC_SERVERS: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: dec-srv}
spec:
  updates: [KB400-srv, KB100-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: dec-servers}
spec:
  updateList: dec-srv
  collection: servers
  startTime: 2026-12-09T00:00:00Z
  deadline: 2026-12-14T00:00:00Z
"#;

/// A hotfix for the lab: nobody is in it, and its deadline has passed.
pub const LAB_HOTFIX: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: lab-hotfix}
spec:
  updates: [KB200-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: lab-hotfix}
spec:
  updateList: lab-hotfix
  collection: lab
  startTime: 2026-11-10T00:00:00Z
  deadline: 2026-11-15T00:00:00Z
"#;

pub const SETTINGS: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: ClientSettings
metadata: {name: defaults}
spec:
  scanTtl: 30d
"#;

pub const RULE: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: DeploymentRule
metadata: {name: server-security}
spec:
  criteria: {classifications: [Security Updates], products: [Windows Server 2022]}
  template: servers-standard
  collection: servers
"#;

pub fn signature(name: &str, time: i64) -> Signature<'static> {
    Signature::new(name, &format!("{}@example.com", name.to_lowercase()), &Time::new(time, 0)).unwrap()
}

/// Commit on `branch` on top of `parents` (the first one's tree), writing (Some) or
/// deleting (None) files; the branch is moved to the new commit.
pub fn commit(
    repo: &Repository,
    branch: &str,
    parents: &[Oid],
    changes: &[(&str, Option<&str>)],
    author: &str,
    time: i64,
    message: &str,
) -> Oid {
    let mut index = git2::Index::new().unwrap();
    let parents: Vec<git2::Commit> = parents.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
    if let Some(first) = parents.first() {
        index.read_tree(&first.tree().unwrap()).unwrap();
    }
    for (path, content) in changes {
        match content {
            Some(text) => {
                let mut entry = index_entry(path);
                entry.file_size = text.len() as u32;
                entry.id = repo.blob(text.as_bytes()).unwrap();
                index.add(&entry).unwrap();
            }
            None => index.remove_path(Path::new(path)).unwrap(),
        }
    }
    let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
    let sig = signature(author, time);
    let refs: Vec<&git2::Commit> = parents.iter().collect();
    let id = repo.commit(None, &sig, &sig, message, &tree, &refs).unwrap();
    repo.reference(&format!("refs/heads/{branch}"), id, true, message).unwrap();
    id
}

/// Merge `theirs` into `ours` on `branch` (no conflicts expected).
pub fn merge(repo: &Repository, branch: &str, ours: Oid, theirs: Oid, author: &str, time: i64, message: &str) -> Oid {
    let (a, b) = (repo.find_commit(ours).unwrap(), repo.find_commit(theirs).unwrap());
    let mut index = repo.merge_commits(&a, &b, None).unwrap();
    assert!(!index.has_conflicts());
    let tree = repo.find_tree(index.write_tree_to(repo).unwrap()).unwrap();
    let sig = signature(author, time);
    let id = repo.commit(None, &sig, &sig, message, &tree, &[&a, &b]).unwrap();
    repo.reference(&format!("refs/heads/{branch}"), id, true, message).unwrap();
    id
}

fn index_entry(path: &str) -> git2::IndexEntry {
    git2::IndexEntry {
        ctime: git2::IndexTime::new(0, 0),
        mtime: git2::IndexTime::new(0, 0),
        dev: 0,
        ino: 0,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        file_size: 0,
        id: Oid::ZERO_SHA1,
        flags: 0,
        flags_extended: 0,
        path: path.as_bytes().to_vec(),
    }
}

/// The history both tests read. `main`: the November deployments (Alice), then the
/// client settings (Dave). `dec-patches`: from the first main commit, Bob adds the
/// December servers deployment and the lab hotfix, Carol renames the November servers
/// file and withdraws the workstation deployment, then main is merged in.
pub struct History {
    pub dir: tempfile::TempDir,
    pub repo: Repository,
    pub main: Oid,
    pub head: Oid,
}

pub const T0: i64 = 1_795_000_000;

pub fn history() -> History {
    let dir = tempfile::tempdir().unwrap();
    let repo = Repository::init(dir.path().join("repo")).unwrap();
    let first = commit(
        &repo,
        "main",
        &[],
        &[
            ("desired/collections.yaml", Some(COLLECTIONS)),
            ("desired/deployments/nov-servers.yaml", Some(NOV_SERVERS)),
            ("desired/deployments/nov-workstations.yaml", Some(NOV_WORKSTATIONS)),
            ("desired/templates.yaml", Some(TEMPLATE)),
        ],
        "Alice",
        T0,
        "November deployments",
    );
    repo.set_head("refs/heads/main").unwrap();
    let main =
        commit(&repo, "main", &[first], &[("desired/settings.yaml", Some(SETTINGS))], "Dave", T0 + 60, "settings");
    let b1 = commit(
        &repo,
        "dec-patches",
        &[first],
        &[("desired/deployments/dec-servers.yaml", Some(DEC_SERVERS)), ("desired/lab.yaml", Some(LAB_HOTFIX))],
        "Bob",
        T0 + 120,
        "December for servers, lab hotfix",
    );
    let b2 = commit(
        &repo,
        "dec-patches",
        &[b1],
        &[
            ("desired/deployments/nov-servers.yaml", None),
            ("desired/deployments/2026-11/servers.yaml", Some(NOV_SERVERS)),
            ("desired/deployments/nov-workstations.yaml", None),
        ],
        "Carol",
        T0 + 180,
        "Rename the November servers file; withdraw the workstation deployment",
    );
    let head = merge(&repo, "dec-patches", b2, main, "Bob", T0 + 240, "Merge main into dec-patches");
    History { dir, repo, main, head }
}

pub fn source(h: &History, rev: &str) -> patchops::git::GitSource {
    patchops::git::GitSource {
        repo: h.repo.path().parent().unwrap().display().to_string(),
        revision: Some(rev.into()),
        path: Some("desired".into()),
        cache_dir: h.dir.path().join("cache"),
    }
}

pub fn now() -> Timestamp {
    at("2026-11-20T12:00:00Z")
}

/// The catalog: KB100 (October, superseded by KB200), KB200 (November), KB300 (Windows
/// 11), KB400 (December, a 3 h install), KB050 (expired).
pub fn catalog() -> Vec<Update> {
    let mut kb100 = common::update("KB100-srv");
    kb100.released = "2026-10-14".parse().unwrap();
    let mut kb200 = common::update("KB200-srv");
    kb200.supersedes = vec!["KB100".into()];
    let mut kb300 = common::update("KB300-w11");
    kb300.products = vec!["Windows 11".into()];
    kb300.title = "KB300-w11 for Windows 11".into();
    let mut kb400 = common::update("KB400-srv");
    kb400.released = "2026-12-08".parse().unwrap();
    kb400.max_run_time = patchops::time::Duration::from_mins(180);
    let mut kb050 = common::update("KB050-srv");
    kb050.expired = true;
    vec![kb100, kb200, kb300, kb400, kb050]
}

/// Six servers (KB200 missing on four, installed on two; KB400 missing on all; the
/// last one never scanned) and four workstations (KB300 missing on two).
pub fn seed_store(path: &Path) -> Box<dyn Store> {
    let mut store = patchops::store::open(&path.display().to_string()).unwrap();
    seed(store.as_mut());
    store
}

/// Fill an empty store of either backend.
pub fn seed(store: &mut dyn Store) {
    let t = at("2026-11-19T08:00:00Z");
    assert_eq!(store.save_catalog(&catalog(), t).unwrap().version, 1);
    let client = |name: &str, role: &str| ClientInfo {
        name: name.into(),
        facts: BTreeMap::from([("role".to_string(), role.to_string())]),
        agent_version: Some("2.1.0".into()),
    };
    let report = |id: &str, result: ScanResult| UpdateReport { id: id.into(), result, enforcement: Enforcement::None };
    for i in 0..6 {
        let name = format!("srv-{i}");
        store.upsert_client(&client(&name, "server"), t).unwrap();
        if i == 5 {
            continue;
        }
        let kb200 = if i < 4 { ScanResult::Missing } else { ScanResult::Installed };
        let updates = vec![report("KB200-srv", kb200), report("KB400-srv", ScanResult::Missing)];
        let scan = StateMessage::ScanCompleted { time: t, catalog_version: 1, agent_version: None, updates };
        store.apply_batch(&StateBatch { client: name, sequence: 1, messages: vec![scan] }, t).unwrap();
    }
    for i in 0..4 {
        let name = format!("ws-{i}");
        store.upsert_client(&client(&name, "workstation"), t).unwrap();
        let updates = if i < 2 { vec![report("KB300-w11", ScanResult::Missing)] } else { vec![] };
        let scan = StateMessage::ScanCompleted { time: t, catalog_version: 1, agent_version: None, updates };
        store.apply_batch(&StateBatch { client: name, sequence: 1, messages: vec![scan] }, t).unwrap();
    }
}
