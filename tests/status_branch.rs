//! Status back to git: compliance snapshots committed to a status branch of a real
//! repository (work tree untouched, no commit when nothing changed), pushed to a bare
//! repository over a file path or URL, and read back as of a date.

use std::path::Path;
use std::process::Command;

use git2::{Oid, Repository, Signature};
use jiff::Timestamp;
use patchops::git::GitSource;
use patchops::git::status::{Published, Snapshot, publish, snapshot_at};
use patchops::resources::{CollectionStatus, MachineCounts, UpdateDeploymentStatus};
use patchops::store::{ReconcileRecord, ResourceStatus};

const BRANCH: &str = "patchops/status";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A work-tree repository on `main` with one committed file.
fn repo(dir: &Path) -> Repository {
    let repo = Repository::init(dir).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    std::fs::write(dir.join("pilot.yaml"), "committed\n").unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("pilot.yaml")).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Admin", "admin@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "initial", &tree, &[]).unwrap();
    drop(tree);
    repo
}

fn deployment(name: &str, targeted: u64, compliant: u64) -> ResourceStatus {
    let status = UpdateDeploymentStatus {
        phase: "Available".into(),
        targeted,
        machines: MachineCounts { compliant, required: targeted - compliant, ..Default::default() },
        compliance_percent: if targeted == 0 { 100.0 } else { compliant as f64 * 100.0 / targeted as f64 },
        update_count: 3,
        ..Default::default()
    };
    ResourceStatus {
        kind: "UpdateDeployment".into(),
        namespace: "default".into(),
        name: name.into(),
        status: serde_json::to_value(status).unwrap(),
    }
}

fn record(time: &str, pilot_compliant: u64) -> ReconcileRecord {
    let collection = CollectionStatus { member_count: 16, ..Default::default() };
    ReconcileRecord {
        time: at(time),
        revision: format!("main@sha1:{}", "a".repeat(40)),
        catalog_version: 12,
        statuses: vec![
            ResourceStatus {
                kind: "Collection".into(),
                namespace: "default".into(),
                name: "servers".into(),
                status: serde_json::to_value(collection).unwrap(),
            },
            deployment("broad", 6, 6),
            deployment("pilot", 10, pilot_compliant),
            ResourceStatus {
                kind: "UpdateList".into(),
                namespace: "default".into(),
                name: "dec".into(),
                status: serde_json::json!({"updateCount": 3}),
            },
        ],
    }
}

fn local(dir: &Path) -> GitSource {
    GitSource { repo: dir.display().to_string(), revision: None, path: None, cache_dir: dir.join(".cache") }
}

fn files_of(repo: &Repository, commit: Oid) -> Vec<String> {
    let mut out = Vec::new();
    repo.find_commit(commit)
        .unwrap()
        .tree()
        .unwrap()
        .walk(git2::TreeWalkMode::PreOrder, |dir, e| {
            if e.kind() == Some(git2::ObjectType::Blob) {
                out.push(format!("{dir}{}", e.name().unwrap()));
            }
            git2::TreeWalkResult::Ok
        })
        .unwrap();
    out
}

#[test]
fn a_snapshot_is_one_file_per_deployment_and_collection_committed_with_a_clear_message_and_the_work_tree_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    std::fs::write(dir.path().join("pilot.yaml"), "edited, not committed\n").unwrap();
    let head_before = repo.head().unwrap().target().unwrap();

    let published = publish(&local(dir.path()), &record("2025-12-01T08:00:00Z", 8), BRANCH, None).unwrap();
    let Published::Committed { commit, message } = published else { panic!("{published:?}") };
    assert_eq!(
        message.lines().next().unwrap(),
        format!("status: 2 deployments, 87.5 % compliant at main@sha1:{} (catalog v12)", "a".repeat(40))
    );
    assert_eq!(repo.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), commit);
    assert_eq!(
        files_of(&repo, commit),
        ["collections/servers.yaml", "deployments/broad.yaml", "deployments/pilot.yaml", "summary.yaml"]
    );
    let c = repo.find_commit(commit).unwrap();
    assert_eq!(c.time().seconds(), at("2025-12-01T08:00:00Z").as_second(), "commit time = reconcile time");
    assert_eq!(c.parent_count(), 0);
    let pilot = c.tree().unwrap().get_path(Path::new("deployments/pilot.yaml")).unwrap();
    let text = String::from_utf8(repo.find_blob(pilot.id()).unwrap().content().to_vec()).unwrap();
    assert!(text.contains("compliancePercent: 80"), "{text}");
    assert!(text.contains("required: 2"), "{text}");

    // HEAD, the index and the edited file are as they were.
    assert_eq!(repo.head().unwrap().shorthand().unwrap(), "main");
    assert_eq!(repo.head().unwrap().target().unwrap(), head_before);
    assert_eq!(std::fs::read_to_string(dir.path().join("pilot.yaml")).unwrap(), "edited, not committed\n");
    let statuses = repo.statuses(None).unwrap();
    let changed: Vec<_> = statuses.iter().map(|s| (s.path().unwrap().to_string(), s.status())).collect();
    assert_eq!(changed, [("pilot.yaml".to_string(), git2::Status::WT_MODIFIED)]);
}

#[test]
fn an_unchanged_snapshot_makes_no_commit_and_a_changed_one_commits_on_top() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo(dir.path());
    let source = local(dir.path());
    let first = publish(&source, &record("2025-12-01T08:00:00Z", 8), BRANCH, None).unwrap();
    let again = publish(&source, &record("2025-12-01T09:00:00Z", 8), BRANCH, None).unwrap();
    assert_eq!(again, Published::Unchanged { commit: first.commit() });
    assert_eq!(repo.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), first.commit());

    let changed = publish(&source, &record("2025-12-01T10:00:00Z", 10), BRANCH, None).unwrap();
    let Published::Committed { commit, message } = &changed else { panic!("{changed:?}") };
    assert!(message.starts_with("status: 2 deployments, 100.0 % compliant"), "{message}");
    assert_eq!(repo.find_commit(*commit).unwrap().parent_id(0).unwrap(), first.commit());
    assert_eq!(files_of(&repo, *commit).len(), 4);
}

#[test]
fn the_status_branch_is_pushed_to_a_remote_by_name_or_path_and_a_missing_remote_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    let repo = repo(&work);
    let bare_dir = dir.path().join("remote.git");
    let bare = Repository::init_bare(&bare_dir).unwrap();
    repo.remote("origin", bare_dir.to_str().unwrap()).unwrap();
    let source = local(&work);

    let first = publish(&source, &record("2025-12-01T08:00:00Z", 8), BRANCH, Some("origin")).unwrap();
    assert_eq!(bare.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), first.commit());

    let second = publish(&source, &record("2025-12-02T08:00:00Z", 9), BRANCH, Some("origin")).unwrap();
    assert_ne!(second.commit(), first.commit());
    assert_eq!(bare.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), second.commit());

    let other_dir = dir.path().join("other.git");
    let other = Repository::init_bare(&other_dir).unwrap();
    let unchanged = publish(&source, &record("2025-12-03T08:00:00Z", 9), BRANCH, Some(other_dir.to_str().unwrap()));
    assert_eq!(unchanged.unwrap(), Published::Unchanged { commit: second.commit() });
    assert_eq!(
        other.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(),
        second.commit(),
        "an unchanged snapshot is still pushed where the branch is missing"
    );

    let error = publish(&source, &record("2025-12-04T08:00:00Z", 10), BRANCH, Some("upstream")).unwrap_err();
    let error = error.to_string();
    assert!(error.contains("remote \"upstream\" not found") && error.contains("(origin)"), "{error}");
}

#[test]
fn a_url_repository_keeps_the_status_branch_in_its_cache_clone_and_pushes_it_to_the_url() {
    let dir = tempfile::tempdir().unwrap();
    // A bare copy of a work repository, as a git server holds it.
    let work = dir.path().join("work");
    repo(&work);
    let origin_dir = dir.path().join("origin.git");
    let origin =
        git2::build::RepoBuilder::new().bare(true).clone(&format!("file://{}", work.display()), &origin_dir).unwrap();
    let cache = dir.path().join("cache");
    let source = |cache: &Path| GitSource {
        repo: format!("file://{}", origin_dir.display()),
        revision: None,
        path: None,
        cache_dir: cache.to_path_buf(),
    };
    let first = publish(&source(&cache), &record("2025-12-01T08:00:00Z", 8), BRANCH, None).unwrap();
    assert!(matches!(first, Published::Committed { .. }));
    assert_eq!(origin.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), first.commit());

    // A fresh cache (another machine) continues the branch from the remote instead of
    // starting a new history.
    let fresh = dir.path().join("fresh-cache");
    let same = publish(&source(&fresh), &record("2025-12-02T08:00:00Z", 8), BRANCH, None).unwrap();
    assert_eq!(same, Published::Unchanged { commit: first.commit() });
    let next = publish(&source(&fresh), &record("2025-12-03T08:00:00Z", 9), BRANCH, None).unwrap();
    assert_eq!(origin.find_commit(next.commit()).unwrap().parent_id(0).unwrap(), first.commit());
    assert_eq!(origin.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), next.commit());

    // The first reconciler fetches (as every reconcile does) and builds on the newer
    // remote status instead of having its push rejected.
    source(&cache).resolve_revision().unwrap();
    let later = publish(&source(&cache), &record("2025-12-04T08:00:00Z", 10), BRANCH, None).unwrap();
    assert_eq!(origin.find_commit(later.commit()).unwrap().parent_id(0).unwrap(), next.commit());
    assert_eq!(origin.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap(), later.commit());
}

#[test]
fn status_at_a_date_reads_the_last_snapshot_at_or_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let _repo = repo(dir.path());
    let source = local(dir.path());
    publish(&source, &record("2025-12-01T08:00:00Z", 2), BRANCH, None).unwrap();
    let mid = publish(&source, &record("2025-12-02T08:00:00Z", 5), BRANCH, None).unwrap();
    publish(&source, &record("2025-12-03T08:00:00Z", 10), BRANCH, None).unwrap();

    let on_the_2nd = snapshot_at(&source, BRANCH, at("2025-12-02T23:59:59Z")).unwrap();
    assert_eq!(on_the_2nd.commit, mid.commit().to_string());
    assert_eq!(on_the_2nd.time, at("2025-12-02T08:00:00Z"));
    assert_eq!(on_the_2nd.snapshot.deployments["pilot"].machines.compliant, 5);
    assert_eq!(on_the_2nd.snapshot.collections["servers"].member_count, 16);
    assert_eq!(on_the_2nd.snapshot, Snapshot::of(&record("2025-12-02T08:00:00Z", 5)).unwrap(), "reads back whole");
    let s = &on_the_2nd.snapshot.summary;
    assert_eq!((s.targeted, s.compliant, s.catalog_version), (16, 11, 12));

    let exact = snapshot_at(&source, BRANCH, at("2025-12-03T08:00:00Z")).unwrap();
    assert_eq!(exact.snapshot.deployments["pilot"].machines.compliant, 10);

    let before = snapshot_at(&source, BRANCH, at("2025-11-30T00:00:00Z")).unwrap_err().to_string();
    assert!(before.contains("no status commit on \"patchops/status\" at or before 2025-11-30T00:00:00Z"), "{before}");
    assert!(before.contains("the first is from 2025-12-01T08:00:00Z"), "{before}");
    let missing = snapshot_at(&source, "nope", at("2025-12-03T00:00:00Z")).unwrap_err().to_string();
    assert!(missing.contains("no status branch \"nope\""), "{missing}");
}

fn patchops<S: AsRef<std::ffi::OsStr>>(args: &[S], cwd: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(args)
        .current_dir(cwd)
        .env("PATCHOPS_STATE_DIR", cwd.join(".patchops"))
        .env_remove("PATCHOPS_STORE")
        .output()
        .unwrap()
}

#[test]
fn the_status_command_answers_how_compliant_we_were_on_a_date() {
    let dir = tempfile::tempdir().unwrap();
    let _repo = repo(dir.path());
    let source = local(dir.path());
    publish(&source, &record("2025-12-01T08:00:00Z", 2), BRANCH, None).unwrap();
    publish(&source, &record("2025-12-03T08:00:00Z", 10), BRANCH, None).unwrap();
    let repo_arg = dir.path().display().to_string();

    let out = patchops(&["status", "--repo", &repo_arg, "--at", "2025-12-02", "--output", "json"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["time"], "2025-12-01T08:00:00Z");
    assert_eq!(json["snapshot"]["deployments"]["pilot"]["machines"]["compliant"], 2);
    assert_eq!(json["snapshot"]["summary"]["compliant"], 8);

    let table = patchops(&["status", "--repo", &repo_arg], dir.path());
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.contains("100.0 % compliant (16 of 16)"), "{text}");

    let early = patchops(&["status", "--repo", &repo_arg, "--at", "2025-01-01"], dir.path());
    assert_eq!(early.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&early.stderr).contains("the first is from 2025-12-01T08:00:00Z"));
}

const RESOURCES: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: UpdateCatalog
metadata: {name: main}
spec:
  source: {path: catalog.yaml}
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
  updates: [KB100]
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
"#;

#[test]
fn run_commits_status_after_a_successful_reconcile_and_a_failing_push_does_not_fail_it() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("repo");
    let repo = Repository::init(&work).unwrap();
    repo.set_head("refs/heads/main").unwrap();
    std::fs::create_dir_all(work.join("desired")).unwrap();
    std::fs::write(work.join("desired/all.yaml"), RESOURCES).unwrap();
    std::fs::write(work.join("desired/catalog.yaml"), CATALOG).unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = Signature::now("Admin", "admin@example.com").unwrap();
    let head = repo.commit(Some("HEAD"), &sig, &sig, "initial", &tree, &[]).unwrap();

    let store = dir.path().join("p.db").display().to_string();
    let repo_arg = work.display().to_string();
    let args = ["run", "--once", "--repo", &repo_arg, "--path", "desired", "--store", &store];
    let with = |extra: &[&'static str]| -> Vec<String> { args.iter().chain(extra).map(|a| a.to_string()).collect() };
    let out = patchops(&with(&["--status-branch", BRANCH, "--status-push", "nowhere"]), dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("status commit failed") && stderr.contains("remote \"nowhere\" not found"), "{stderr}");

    // The commit was made before the push failed; the snapshot names the applied revision.
    let status = snapshot_at(&local(&work), BRANCH, Timestamp::now()).unwrap();
    assert_eq!(status.snapshot.summary.revision, format!("main@sha1:{head}"));
    assert_eq!(status.snapshot.deployments["nov-servers"].update_count, 1);
    assert!(status.snapshot.collections.contains_key("servers"));

    let out = patchops(&with(&[]), dir.path());
    assert_eq!(out.status.code(), Some(0));
    let tip = repo.refname_to_id(&format!("refs/heads/{BRANCH}")).unwrap();
    assert_eq!(tip.to_string(), status.commit, "a run without --status-branch commits nothing");
}
