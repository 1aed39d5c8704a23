//! End to end on the embedded default: a real git repository made here, a SQLite store
//! file, simulated clients reporting through the store, the standalone reconciler.

use std::path::Path;

use jiff::Timestamp;
use patchops::git::GitSource;
use patchops::pipeline::Pipeline;
use patchops::sim::{FleetSpec, SimFleet};

const CATALOG: &str = r#"format: patchops.dev/native-catalog/v1
updates:
  - id: KB100-srv
    kb: KB100
    title: 2026-10 Cumulative Update for Windows Server 2022
    classification: Security Updates
    severity: Critical
    products: [Windows Server 2022]
    released: 2026-10-14
    applicability:
      isInstallable: {fact: {name: os, equals: Windows Server 2022}}
      isInstalled: {installed: KB100}
  - id: KB200-srv
    kb: KB200
    title: 2026-11 Cumulative Update for Windows Server 2022
    classification: Security Updates
    severity: Critical
    products: [Windows Server 2022]
    released: 2026-11-11
    supersedes: [KB100]
    applicability:
      isInstallable: {fact: {name: os, equals: Windows Server 2022}}
      isInstalled: {installed: KB200}
  - id: KB300-w11
    kb: KB300
    title: 2026-11 Cumulative Update for Windows 11
    classification: Security Updates
    severity: Important
    products: [Windows 11]
    released: 2026-11-11
    applicability:
      isInstallable: {fact: {name: os, equals: Windows 11}}
      isInstalled: {installed: KB300}
"#;

const RESOURCES: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateCatalog
metadata: {name: main}
spec:
  source: {path: catalog/updates.yaml}
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov}
spec:
  criteria: {releasedAfter: 2026-11-01}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov
  collection: servers
  startTime: 2026-11-12T00:00:00Z
  deadline: 2026-11-30T00:00:00Z
"#;

const FLEET: &str = r#"seed: 7
agentVersion: "2.1.0"
groups:
  - count: 30
    namePrefix: srv
    facts: {role: server}
    os: {"Windows Server 2022": 1}
    patchedThrough: {"2026-11-30": 2, "2026-10-31": 1}
  - count: 20
    namePrefix: ws
    facts: {role: workstation}
    os: {"Windows 11": 1}
    patchedThrough: {"2026-10-31": 1}
"#;

fn commit(repo: &git2::Repository, files: &[(&str, &str)], message: &str) -> git2::Oid {
    let root = repo.workdir().unwrap().to_path_buf();
    let mut index = repo.index().unwrap();
    for (path, text) in files {
        let full = root.join(path);
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(&full, text).unwrap();
        index.add_path(Path::new(path)).unwrap();
    }
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Admin", "admin@example.com").unwrap();
    let parent = repo.head().ok().and_then(|h| h.peel_to_commit().ok());
    let parents: Vec<&git2::Commit> = parent.iter().collect();
    repo.commit(Some("HEAD"), &sig, &sig, message, &tree, &parents).unwrap()
}

struct Setup {
    dir: tempfile::TempDir,
    repo: git2::Repository,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let repo = git2::Repository::init(dir.path().join("repo")).unwrap();
    commit(&repo, &[("desired/catalog/updates.yaml", CATALOG), ("desired/all.yaml", RESOURCES)], "initial");
    Setup { dir, repo }
}

fn runner(s: &Setup) -> Pipeline {
    let source = GitSource {
        repo: s.repo.workdir().unwrap().display().to_string(),
        revision: None,
        path: Some("desired".into()),
        cache_dir: s.dir.path().join("cache"),
    };
    let store = patchops::store::open(&s.dir.path().join("p.db").display().to_string()).unwrap();
    let spec: FleetSpec = serde_saphyr::from_str(FLEET).unwrap();
    Pipeline::new(source, store, Some(SimFleet::generate(&spec)))
}

fn now() -> Timestamp {
    "2026-11-20T12:00:00Z".parse().unwrap()
}

#[test]
fn s5_s6_run_reconciles_git_catalog_and_reported_compliance_into_status() {
    let s = setup();
    let mut r = runner(&s);
    let (record, outcome) = r.reconcile_once(now()).unwrap();
    assert!(
        record.revision.starts_with("master@sha1:") || record.revision.starts_with("main@sha1:"),
        "{}",
        record.revision
    );
    assert_eq!(record.catalog_version, 1);
    let d = &outcome.deployments["nov-servers"];
    assert_eq!(d.targeted, 30);
    assert_eq!(d.update_count, 2, "KB200 and KB300 were released after 2026-11-01");
    // KB300 is for Windows 11: NotRequired on every server.
    assert_eq!(d.updates.not_required, 30);
    assert_eq!(d.updates.required + d.updates.installed, 30, "KB200 applies to every server");
    // Servers patched through November are compliant; those through October require KB200.
    assert_eq!(d.machines.compliant + d.machines.required, 30);
    assert!(d.machines.compliant > 0 && d.machines.required > 0, "{d:?}");
    // The stored status is what `patchops status` shows.
    let store = patchops::store::open(&s.dir.path().join("p.db").display().to_string()).unwrap();
    let last = store.last_reconcile().unwrap().unwrap();
    assert_eq!(last.revision, record.revision);
    let stored = last.statuses.iter().find(|x| x.kind == "UpdateDeployment" && x.name == "nov-servers").unwrap();
    assert_eq!(stored.status["machines"]["required"], d.machines.required);
    // P1: the list's per-update counts: KB300 is required by every workstation (patched through October).
    let list = &outcome.update_lists["nov"];
    let kb300 = list.updates.iter().find(|u| u.id == "KB300-w11").unwrap();
    assert_eq!((kb300.counts.required, kb300.counts.not_required), (20, 30));
}

#[test]
fn c2_an_unchanged_catalog_makes_no_new_version_and_a_changed_one_does() {
    let s = setup();
    let mut r = runner(&s);
    assert_eq!(r.reconcile_once(now()).unwrap().0.catalog_version, 1);
    assert_eq!(r.reconcile_once(now()).unwrap().0.catalog_version, 1);
    let changed = CATALOG
        .replace("2026-11 Cumulative Update for Windows 11", "2026-11 Cumulative Update for Windows 11 (re-released)");
    commit(&s.repo, &[("desired/catalog/updates.yaml", &changed)], "catalog");
    let (record, outcome) = r.reconcile_once(now()).unwrap();
    assert_eq!(record.catalog_version, 2);
    assert!(outcome.policies.values().all(|p| p.catalog_version == 2), "every client learns of the new catalog");
}

#[test]
fn a_broken_revision_keeps_the_last_good_status_and_writes_nothing() {
    let s = setup();
    let mut r = runner(&s);
    let (good, _) = r.reconcile_once(now()).unwrap();
    let broken = RESOURCES.replace("updateList: nov", "updateList: december");
    commit(&s.repo, &[("desired/all.yaml", &broken)], "typo");
    let err = r.reconcile_once(now() + jiff::SignedDuration::from_hours(1)).unwrap_err().to_string();
    assert!(err.contains("desired/all.yaml:"), "{err}");
    assert!(err.contains("updateList \"december\" not found; known lists: nov"), "{err}");
    let store = patchops::store::open(&s.dir.path().join("p.db").display().to_string()).unwrap();
    assert_eq!(store.last_reconcile().unwrap().unwrap(), good, "the last good status is kept");
}

#[test]
fn a_catalog_that_fails_to_parse_keeps_the_current_version() {
    let s = setup();
    let mut r = runner(&s);
    r.reconcile_once(now()).unwrap();
    let broken = CATALOG.replace("severity: Important", "severity: Importent");
    commit(&s.repo, &[("desired/catalog/updates.yaml", &broken)], "bad catalog");
    let (record, _) = r.reconcile_once(now()).unwrap();
    assert_eq!(record.catalog_version, 1);
    let status = record.statuses.iter().find(|x| x.kind == "UpdateCatalog").unwrap();
    let message = status.status["conditions"][0]["message"].as_str().unwrap();
    assert!(message.contains("desired/catalog/updates.yaml:") && message.contains("updates[2].severity"), "{message}");
    assert_eq!(status.status["conditions"][0]["status"], "False");
}

#[test]
fn a_missing_revision_or_repository_is_a_clear_error() {
    let s = setup();
    let mut source = GitSource {
        repo: s.repo.workdir().unwrap().display().to_string(),
        revision: Some("release-9".into()),
        path: Some("desired".into()),
        cache_dir: s.dir.path().join("cache"),
    };
    let err = patchops::pipeline::load_desired(&source).unwrap_err().to_string();
    assert!(err.contains("revision \"release-9\" not found"), "{err}");
    source.repo = s.dir.path().join("nowhere").display().to_string();
    source.revision = None;
    let err = patchops::pipeline::load_desired(&source).unwrap_err().to_string();
    assert!(err.contains("not a git repository"), "{err}");
}

#[test]
fn an_unreadable_store_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.db");
    std::fs::write(&path, "this is not a database, it is a shopping list\n".repeat(200)).unwrap();
    let err = patchops::store::open(&path.display().to_string()).err().expect("must fail").to_string();
    assert!(err.contains(&path.display().to_string()), "{err}");
}
