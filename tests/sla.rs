//! `patchops sla` on a real git history built here — a merged pull request, a squash
//! merge, a revert and a re-approval — and a status history written to a real SQLite
//! store through its API: the exact durations from release to approval, to 90 % and to
//! 100 % compliant, and the breaches of a deadline target with a waived pair kept apart.

use std::process::Command;

use git2::{Oid, Repository, Signature, Time};
use jiff::Timestamp;
use patchops::store::{ReconcileRecord, ResourceStatus};

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const BASE: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov
  collection: servers
  startTime: 2026-11-09T00:00:00Z
  deadline: 2026-11-14T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: CompliancePolicy
metadata: {name: baseline}
spec:
  deadlines:
    - {collection: servers, criteria: {severities: [Critical]}, within: 5d}
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: kb3-servers}
spec:
  updates: [KB3-srv]
  collection: servers
  reason: the application vendor certifies KB3 in December
  expires: 2027-06-01T00:00:00Z
"#;

fn list(updates: &[&str]) -> String {
    format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: nov}}\nspec:\n  updates: [{}]\n",
        updates.join(", ")
    )
}

/// Commit `desired/all.yaml` + `desired/list.yaml` with these parents at `time`, moving
/// `branch` to it.
fn commit(repo: &Repository, branch: &str, time: &str, message: &str, updates: &[&str], parents: &[Oid]) -> Oid {
    let mut tree = repo.treebuilder(None).unwrap();
    let mut desired = repo.treebuilder(None).unwrap();
    desired.insert("all.yaml", repo.blob(BASE.as_bytes()).unwrap(), 0o100644).unwrap();
    desired.insert("list.yaml", repo.blob(list(updates).as_bytes()).unwrap(), 0o100644).unwrap();
    tree.insert("desired", desired.write().unwrap(), 0o040000).unwrap();
    let tree = repo.find_tree(tree.write().unwrap()).unwrap();
    let sig = Signature::new("Admin", "admin@example.com", &Time::new(at(time).as_second(), 0)).unwrap();
    let parents: Vec<git2::Commit> = parents.iter().map(|p| repo.find_commit(*p).unwrap()).collect();
    let parents: Vec<&git2::Commit> = parents.iter().collect();
    repo.commit(Some(&format!("refs/heads/{branch}")), &sig, &sig, message, &tree, &parents).unwrap()
}

fn update(id: &str, severity: &str) -> patchops::catalog::Update {
    serde_json::from_value(serde_json::json!({
        "id": id, "kb": id.split('-').next().unwrap(), "title": format!("{id} cumulative update"),
        "classification": "Security Updates", "severity": severity, "products": ["Windows Server 2022"],
        "released": "2026-11-10",
        "applicability": {"isInstallable": {"fact": {"name": "os", "equals": "Windows Server 2022"}}, "isInstalled": {"installed": id.split('-').next().unwrap()}}
    }))
    .unwrap()
}

fn status(percent: f64) -> serde_json::Value {
    let compliant = (percent / 10.0) as u64;
    serde_json::json!({
        "phase": "Available", "targeted": 10, "compliancePercent": percent,
        "machines": {"compliant": compliant, "required": 10 - compliant, "unknown": 0, "failed": 0, "pendingReboot": 0},
        "updates": {"required": 0, "installed": 0, "notRequired": 0, "unknown": 0},
    })
}

#[test]
fn sla_measures_release_to_approval_to_compliance_across_merges_squashes_and_reverts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = Repository::init(&root).unwrap();
    let c0 = commit(&repo, "main", "2026-11-09T12:00:00Z", "November deployment, empty list", &[], &[]);
    // A pull request merged with a merge commit: the merge is the approval.
    let f1 = commit(&repo, "kb1", "2026-11-10T09:00:00Z", "Add KB1", &["KB1-srv"], &[c0]);
    let m1 = commit(
        &repo,
        "main",
        "2026-11-11T06:00:00Z",
        "Merge pull request #12 from acme/kb1\n\nKB1 for servers",
        &["KB1-srv"],
        &[c0, f1],
    );
    // A squash merge, reverted, then approved again.
    let s2 =
        commit(&repo, "main", "2026-11-12T00:00:00Z", "Approve KB2 for servers (#13)", &["KB1-srv", "KB2-srv"], &[m1]);
    let r3 =
        commit(&repo, "main", "2026-11-13T00:00:00Z", "Revert \"Approve KB2 for servers (#13)\"", &["KB1-srv"], &[s2]);
    let s4 = commit(&repo, "main", "2026-11-15T00:00:00Z", "Approve KB2 again (#14)", &["KB1-srv", "KB2-srv"], &[r3]);
    repo.set_head("refs/heads/main").unwrap();

    let db = dir.path().join("sla.db");
    let mut store = patchops::store::open(db.to_str().unwrap()).unwrap();
    let updates = [update("KB1-srv", "Critical"), update("KB2-srv", "Critical"), update("KB3-srv", "Critical")];
    store.save_catalog(&updates, at("2026-11-10T01:00:00Z")).unwrap();
    // (recorded at, revision applied, compliance %)
    let history = [
        ("2026-11-11T00:00:00Z", c0, 100.0), // before any approval: counts for nothing
        ("2026-11-11T12:00:00Z", m1, 50.0),
        ("2026-11-12T06:00:00Z", s2, 90.0),  // KB1 and KB2 at 90 %
        ("2026-11-13T12:00:00Z", r3, 100.0), // KB1 at 100 %; KB2 reverted: not KB2's
        ("2026-11-15T12:00:00Z", s4, 80.0),
        ("2026-11-17T00:00:00Z", s4, 100.0), // KB2 at 100 %
    ];
    for (time, revision, percent) in history {
        let record = ReconcileRecord {
            time: at(time),
            revision: format!("main@sha1:{revision}"),
            catalog_version: 1,
            statuses: vec![ResourceStatus {
                kind: "UpdateDeployment".into(),
                namespace: "default".into(),
                name: "nov-servers".into(),
                status: status(percent),
            }],
        };
        store.save_reconcile(&record, &Default::default(), &[]).unwrap();
    }
    drop(store);

    let run = |extra: &[&str]| -> serde_json::Value {
        let mut args =
            vec!["sla", "--repo", root.to_str().unwrap(), "--path", "desired", "--store", db.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out =
            Command::new(env!("CARGO_BIN_EXE_patchops")).args(&args).env("PATCHOPS_LOG", "error").output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let report = run(&["-o", "json"]);
    let hours = |h: i64| serde_json::json!(h * 3600);
    let rows: Vec<(String, serde_json::Value, serde_json::Value, serde_json::Value, serde_json::Value)> =
        report["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["update"].as_str().unwrap().to_string(),
                    r["pullRequest"].clone(),
                    r["releaseToApprovalSecs"].clone(),
                    r["releaseTo90Secs"].clone(),
                    r["releaseTo100Secs"].clone(),
                )
            })
            .collect();
    assert_eq!(
        rows,
        [
            // Released 2026-11-10 (midnight UTC); merged 11-11 06:00; 90 % 11-12 06:00; 100 % 11-13 12:00.
            ("KB1-srv".to_string(), serde_json::json!("#12"), hours(30), hours(54), hours(84)),
            // First approved by the squash merge 11-12 00:00; the 100 % under the revert does
            // not count; 100 % again 11-17 00:00.
            ("KB2-srv".to_string(), serde_json::json!("#13"), hours(48), hours(54), hours(168)),
        ]
    );
    assert_eq!(report["rows"][0]["commit"], m1.to_string());
    assert_eq!(report["rows"][1]["commit"], s2.to_string());
    let group = &report["groups"][0];
    assert_eq!(
        (group["severity"].as_str(), group["collection"].as_str(), group["updates"].as_u64()),
        (Some("Critical"), Some("servers"), Some(2))
    );
    assert_eq!(group["to100"], serde_json::json!({"p50": 84 * 3600, "p90": 168 * 3600, "max": 168 * 3600}));
    assert_eq!(group["toApproval"]["p50"], hours(30));
    // Due 5 days after release (11-15 00:00): KB2 reached 100 % two days late; KB3 has
    // no deployment but a waiver in force covers it on servers.
    let breaches = report["breaches"].as_array().unwrap();
    assert_eq!(breaches.len(), 1, "{breaches:?}");
    assert_eq!(breaches[0]["update"], "KB2-srv");
    assert_eq!(breaches[0]["lateSecs"], hours(48));
    assert_eq!(breaches[0]["deployments"], serde_json::json!(["nov-servers"]));
    let waived = report["waived"].as_array().unwrap();
    assert_eq!((waived.len(), waived[0]["update"].as_str()), (1, Some("KB3-srv")));
    assert_eq!(waived[0]["waivers"], serde_json::json!(["kb3-servers"]));

    // Filters, and the CSV auditors load.
    assert_eq!(run(&["-o", "json", "--since", "2026-11-11"])["rows"], serde_json::json!([]));
    let err = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args([
            "sla",
            "--repo",
            root.to_str().unwrap(),
            "--path",
            "desired",
            "--store",
            db.to_str().unwrap(),
            "--collection",
            "nope",
        ])
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("known collections: servers"));
    let csv = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args([
            "sla",
            "--repo",
            root.to_str().unwrap(),
            "--path",
            "desired",
            "--store",
            db.to_str().unwrap(),
            "-o",
            "csv",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with("update,kb,severity,released,deployment,collection,approved,"), "{csv}");
    assert_eq!(csv.lines().count(), 3);
}
