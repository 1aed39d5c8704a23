//! Security governance end to end: `patchops cve` on the real MSRC and DSA data (the CVE →
//! update mapping against an independent reading of the files) and on a fleet that
//! reported through a SQLite store, with a real git repository and the standalone
//! reconciler.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use jiff::Timestamp;
use patchops::catalog::{debian, msrc_cvrf};
use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, ScanResult};
use patchops::git::GitSource;
use patchops::governance::exposure::cve_index;
use patchops::pipeline::Pipeline;
use patchops::store::ClientInfo;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)
}

fn gunzip(path: &Path) -> String {
    let mut text = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap()).read_to_string(&mut text).unwrap();
    text.trim_start_matches('\u{feff}').to_string()
}

fn patchops(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops")).args(args).env("PATCHOPS_LOG", "error").output().unwrap()
}

/// A repository whose `desired/` folder holds these files, committed on `main`.
fn repo(dir: &Path, files: &[(&str, &str)]) -> PathBuf {
    let root = dir.join("repo");
    let repo = git2::Repository::init(&root).unwrap();
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
    repo.commit(Some("HEAD"), &sig, &sig, "desired state", &tree, &[]).unwrap();
    root
}

/// MSRC, read independently of the importer: for each Vulnerability, the KB numbers of
/// its `Vendor Fix` remediations — the description when it is a number, else a `KB`
/// number in the description, else one in the URL (fixes with none are not updates).
fn msrc_reading(xml: &str) -> BTreeMap<String, BTreeSet<String>> {
    fn kb_in(text: &str) -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while let Some(i) = rest.find("kb") {
            let before = lower.len() - rest.len() + i;
            let prev_ok = before == 0 || !lower.as_bytes()[before - 1].is_ascii_alphanumeric();
            let after = &rest[i + 2..];
            let after = after.strip_prefix(['/', ' ', '=', '-']).unwrap_or(after);
            let digits: String = after.chars().take_while(|c| c.is_ascii_digit()).collect();
            let next = after[digits.len()..].chars().next();
            if prev_ok && digits.len() >= 4 && !next.is_some_and(|c| c.is_ascii_alphanumeric()) {
                return Some(digits);
            }
            rest = &rest[i + 2..];
        }
        None
    }
    let doc = roxmltree::Document::parse(xml).unwrap();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for v in doc.descendants().filter(|n| n.tag_name().name() == "Vulnerability") {
        let child = |n: roxmltree::Node, name: &str| {
            n.children().find(|c| c.tag_name().name() == name).and_then(|c| c.text()).unwrap_or("").trim().to_string()
        };
        let cve = child(v, "CVE");
        for r in v.descendants().filter(|n| n.tag_name().name() == "Remediation") {
            if r.attribute("Type") != Some("Vendor Fix") {
                continue;
            }
            let description = child(r, "Description");
            let numeric = description.trim_start_matches(['K', 'B', 'k', 'b']).trim();
            let kb = if numeric.len() >= 4 && numeric.bytes().all(|b| b.is_ascii_digit()) {
                Some(numeric.to_string())
            } else {
                kb_in(&description).or_else(|| kb_in(&child(r, "URL")))
            };
            if let Some(kb) = kb {
                out.entry(cve.to_ascii_uppercase()).or_default().insert(format!("KB{kb}"));
            }
        }
    }
    out
}

/// The DSA list, read independently of the importer: per advisory header, the CVEs in
/// braces and the releases with a fixed version (`[release] - package version`, not a
/// `<marker>`), as `<DSA id>-<release>` update ids.
fn dsa_reading(text: &str, releases: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut advisory: Option<(String, Vec<String>, BTreeSet<String>)> = None;
    let mut flush = |a: Option<(String, Vec<String>, BTreeSet<String>)>| {
        if let Some((id, cves, fixed)) = a {
            for cve in &cves {
                for release in &fixed {
                    out.entry(cve.clone()).or_default().insert(format!("{id}-{release}"));
                }
            }
        }
    };
    for line in text.lines() {
        if line.starts_with('[') {
            flush(advisory.take());
            let id = line.split(']').nth(1).unwrap().split_whitespace().next().unwrap().to_string();
            advisory = Some((id, Vec::new(), BTreeSet::new()));
            continue;
        }
        let Some((_, cves, fixed)) = advisory.as_mut() else { continue };
        let t = line.trim();
        if let Some(inner) = t.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            cves.extend(inner.split_whitespace().filter(|c| c.starts_with("CVE-")).map(str::to_string));
        } else if let Some(rest) = t.strip_prefix('[') {
            let (release, rest) = rest.split_once(']').unwrap();
            let words: Vec<&str> = rest.split_whitespace().collect();
            if words.len() >= 3 && words[0] == "-" && !words[2].starts_with('<') && releases.contains(&release) {
                fixed.insert(release.to_string());
            }
        }
    }
    flush(advisory);
    out
}

const RELEASES: [&str; 2] = ["bullseye", "buster"];

fn real_catalog_store(dir: &Path) -> String {
    let store_path = dir.join("real.db").display().to_string();
    let mut store = patchops::store::open(&store_path).unwrap();
    let read = |f: &str| debian::decompress(f, &std::fs::read(data(f)).unwrap()).unwrap();
    let (apr, jan) = (read("msrc-cvrf/cvrfDocument-2016-Apr.xml.gz"), read("msrc-cvrf/cvrfDocument-2023-Jan.xml.gz"));
    let mut updates = msrc_cvrf::parse_many(&[("2016-Apr", &apr), ("2023-Jan", &jan)]).unwrap();
    let releases = RELEASES.iter().map(|r| r.to_string()).collect();
    updates.extend(debian::parse_dsa("DSA", &read("debian/DSA-list.gz"), &debian::DsaOptions { releases }).unwrap());
    store.save_catalog(&updates, "2026-11-24T12:00:00Z".parse().unwrap()).unwrap();
    store_path
}

#[test]
fn cve_maps_each_cve_to_the_updates_the_msrc_and_dsa_files_name_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = real_catalog_store(dir.path());
    let catalog = patchops::store::open(&store_path).unwrap().load_catalog().unwrap();
    let index = cve_index(&catalog);

    let mut msrc = msrc_reading(&gunzip(&data("msrc-cvrf/cvrfDocument-2016-Apr.xml.gz")));
    for (cve, kbs) in msrc_reading(&gunzip(&data("msrc-cvrf/cvrfDocument-2023-Jan.xml.gz"))) {
        msrc.entry(cve).or_default().extend(kbs);
    }
    let dsa = dsa_reading(&gunzip(&data("debian/DSA-list.gz")), &RELEASES);
    assert!(msrc.len() > 100 && dsa.len() > 3000, "both files name many CVEs: {} {}", msrc.len(), dsa.len());

    // MSRC updates are one per KB and product family: compare by KB.
    let is_dsa = |i: &u32| catalog.updates[*i as usize].id.starts_with("DSA-");
    let by_kb: BTreeMap<String, BTreeSet<String>> = index
        .iter()
        .map(|(cve, u)| {
            (
                cve.clone(),
                u.iter().filter(|i| !is_dsa(i)).map(|&i| catalog.updates[i as usize].kb.clone().unwrap()).collect(),
            )
        })
        .filter(|(_, kbs): &(String, BTreeSet<String>)| !kbs.is_empty())
        .collect();
    assert_eq!(by_kb, msrc);
    let by_id: BTreeMap<String, BTreeSet<String>> = index
        .iter()
        .map(|(cve, u)| {
            (cve.clone(), u.iter().filter(|i| is_dsa(i)).map(|&i| catalog.updates[i as usize].id.clone()).collect())
        })
        .filter(|(_, ids): &(String, BTreeSet<String>)| !ids.is_empty())
        .collect();
    assert_eq!(by_id, dsa);

    // The command prints the same mapping, for a CVE of each vendor.
    let repo = repo(dir.path(), &[("desired/collections.yaml", SERVERS_ONLY)]);
    for (cve, expected) in [("CVE-2023-21549", &msrc), ("cve-2023-1393", &dsa)] {
        let out = patchops(&[
            "cve",
            cve,
            "--repo",
            repo.to_str().unwrap(),
            "--path",
            "desired",
            "--store",
            &store_path,
            "-o",
            "json",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let key = if cve.starts_with("CVE-2023-2") { "kb" } else { "id" };
        let printed: BTreeSet<String> =
            report["updates"].as_array().unwrap().iter().map(|u| u[key].as_str().unwrap().to_string()).collect();
        assert_eq!(&printed, &expected[&cve.to_ascii_uppercase()], "{cve}");
        assert_eq!(report["cve"], cve.to_ascii_uppercase());
    }
}

const SERVERS_ONLY: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
"#;

/// KB100 (October) fixes CVE-2026-1000; KB200 (November, superseding it) fixes it again
/// and CVE-2026-2000; KB300 (Windows 11, Important) fixes CVE-2026-3000.
const CATALOG: &str = r#"format: patchops.dev/native-catalog/v1
updates:
  - id: KB100-srv
    kb: KB100
    title: 2026-10 Cumulative Update for Windows Server 2022
    classification: Security Updates
    severity: Critical
    products: [Windows Server 2022]
    released: 2026-10-14
    cves: [CVE-2026-1000]
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
    cves: [CVE-2026-1000, CVE-2026-2000]
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
    cves: [CVE-2026-3000]
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
kind: ClientSettings
metadata: {name: defaults}
spec:
  scanTtl: 36500d
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: workstations}
spec:
  selector: {matchFacts: {role: workstation}}
---
apiVersion: patchops.dev/v1alpha1
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
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: srv-1-app}
spec:
  updates: [KB200]
  machines: [srv-1]
  reason: line-of-business application certification
  expires: 2099-01-01T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: srv-0-ended}
spec:
  cves: [CVE-2026-2000]
  machines: [srv-0]
  reason: expired long ago
  expires: 2020-01-01T00:00:00Z
"#;

/// A fleet that reported through the store, reconciled once: the repository and store paths.
fn fleet(dir: &Path) -> (PathBuf, String) {
    let root = repo(dir, &[("desired/catalog/updates.yaml", CATALOG), ("desired/all.yaml", RESOURCES)]);
    let store_path = dir.join("fleet.db").display().to_string();
    let source = GitSource {
        repo: root.display().to_string(),
        revision: None,
        path: Some("desired".into()),
        cache_dir: dir.join("cache"),
    };
    let mut runner = Pipeline::new(source, patchops::store::open(&store_path).unwrap(), None);
    let t: Timestamp = "2026-11-20T08:00:00Z".parse().unwrap();
    runner.reconcile_once(t).unwrap(); // syncs the catalog the scans refer to
    let report = |id: &str, result| UpdateReport { id: id.into(), result, enforcement: Enforcement::None };
    use ScanResult::{Installed, Missing};
    let clients: Vec<(&str, &str, Option<Vec<UpdateReport>>)> = vec![
        ("srv-0", "server", Some(vec![report("KB100-srv", Missing), report("KB200-srv", Missing)])),
        ("srv-1", "server", Some(vec![report("KB200-srv", Missing)])),
        ("srv-2", "server", Some(vec![report("KB200-srv", Installed)])),
        ("srv-3", "server", Some(vec![])),
        ("srv-4", "server", None), // registered, never scanned
        ("ws-0", "workstation", Some(vec![report("KB300-w11", Missing)])),
        ("ws-1", "workstation", Some(vec![])),
    ];
    for (name, role, updates) in clients {
        let facts = BTreeMap::from([("role".to_string(), role.to_string())]);
        let info = ClientInfo { name: name.into(), facts, agent_version: Some("2.1.0".into()) };
        runner.store.upsert_client(&info, t).unwrap();
        if let Some(updates) = updates {
            let scan = StateMessage::ScanCompleted { time: t, catalog_version: 1, agent_version: None, updates };
            runner
                .store
                .apply_batch(&StateBatch { client: name.into(), sequence: 1, messages: vec![scan] }, t)
                .unwrap();
        }
    }
    runner.reconcile_once("2026-11-20T12:00:00Z".parse().unwrap()).unwrap();
    (root, store_path)
}

fn counts(v: &serde_json::Value) -> [u64; 5] {
    ["machines", "exposed", "installed", "notApplicable", "unknown"].map(|k| v[k].as_u64().unwrap())
}

#[test]
fn cve_counts_exposed_installed_not_applicable_and_unknown_machines_per_collection() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = fleet(dir.path());
    let args = |cve: &str, format: &str| {
        patchops(&["cve", cve, "--repo", root.to_str().unwrap(), "--path", "desired", "--store", &store, "-o", format])
    };
    let out = args("CVE-2026-2000", "json");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["updates"].as_array().unwrap().len(), 1);
    assert_eq!(r["severity"], "Critical");
    // srv-0 and srv-1 miss KB200 (srv-1 under a waiver in force, srv-0's waiver expired),
    // srv-2 has it, srv-3 does not need it, srv-4 never scanned.
    assert_eq!(counts(&r["fleet"]), [7, 1, 1, 3, 1]);
    assert_eq!(r["fleet"]["waived"], 1);
    assert_eq!(r["waived"], serde_json::json!([{"machine": "srv-1", "waivers": ["srv-1-app"]}]));
    let by_collection: BTreeMap<String, [u64; 5]> = r["collections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["collection"].as_str().unwrap().to_string(), counts(c)))
        .collect();
    assert_eq!(by_collection["servers"], [5, 1, 1, 1, 1]);
    assert_eq!(by_collection["workstations"], [2, 0, 0, 2, 0]);
    let d = &r["deployments"][0];
    assert_eq!((d["deployment"].as_str(), d["updates"][0].as_str()), (Some("nov-servers"), Some("KB200-srv")));
    assert_eq!(d["deadline"], "2026-11-30T00:00:00Z");
    assert_eq!(d["phase"], "Available", "as the last reconcile recorded it");
    // The status the reconcile saved leaves srv-1 out of the denominator and lists the waiver.
    let record = patchops::store::open(&store).unwrap().last_reconcile().unwrap().unwrap();
    let status = |kind: &str, name: &str| {
        record.statuses.iter().find(|s| s.kind == kind && s.name == name).unwrap().status.clone()
    };
    let dep = status("UpdateDeployment", "nov-servers");
    assert_eq!((dep["machines"]["waived"].as_u64(), dep["waivedPairs"].as_u64()), (Some(1), Some(1)));
    assert_eq!(dep["compliancePercent"], 50.0, "srv-2 and srv-3 of srv-0, srv-2, srv-3 and srv-4 (srv-1 waived)");
    assert_eq!(status("Waiver", "srv-1-app")["state"], "Active");
    assert_eq!(status("Waiver", "srv-0-ended")["state"], "Expired");
    let shown = String::from_utf8(patchops(&["status", "--store", &store, "-o", "wide"]).stdout).unwrap();
    assert!(shown.contains("WAIVED"), "{shown}");
    assert!(
        shown.contains("Waiver srv-1-app: in force until 2099-01-01T00:00:00Z: 1 required pair(s) waived"),
        "{shown}"
    );
    assert!(shown.contains("Waiver srv-0-ended: expired at 2020-01-01T00:00:00Z"), "{shown}");

    // Two fixes: a machine missing either is exposed; installing the newer one patches it.
    let r: serde_json::Value = serde_json::from_slice(&args("CVE-2026-1000", "json").stdout).unwrap();
    assert_eq!(counts(&r["fleet"]), [7, 1, 1, 3, 1]);
    assert_eq!(r["updates"][0]["superseded"], true);
    let table = String::from_utf8(args("CVE-2026-1000", "table").stdout).unwrap();
    assert!(table.contains("WAIVED MACHINE") && table.contains("srv-1-app"), "{table}");

    // CSV: one row per collection after the whole fleet.
    let out = args("CVE-2026-3000", "csv");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "cve,collection,machines,exposed,installed,not_applicable,unknown,waived");
    assert_eq!(
        &lines[1..],
        [
            "CVE-2026-3000,(all machines),7,1,0,5,1,0",
            "CVE-2026-3000,servers,5,0,0,4,1,0",
            "CVE-2026-3000,workstations,2,1,0,1,0,0"
        ]
    );
    assert!(String::from_utf8(args("CVE-2026-3000", "table").stdout).unwrap().contains("no deployment carries a fix"));

    // An id no update names, and text that is no CVE id, are errors saying what to do.
    let out = args("CVE-2026-9999", "json");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("no update in catalog version 1 fixes CVE-2026-9999"), "{err}");
    let out = args("KB200", "json");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("expected CVE-YYYY-NNNN"));
}

#[test]
fn cve_list_orders_open_cves_by_exposure_and_filters_by_severity_and_collection() {
    let dir = tempfile::tempdir().unwrap();
    let (root, store) = fleet(dir.path());
    let list = |extra: &[&str]| -> Vec<(String, u64)> {
        let mut a = vec![
            "cve",
            "--list",
            "--repo",
            root.to_str().unwrap(),
            "--path",
            "desired",
            "--store",
            &store,
            "-o",
            "json",
        ];
        a.extend(extra);
        let out = patchops(&a);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["cve"].as_str().unwrap().into(), r["exposed"].as_u64().unwrap()))
            .collect()
    };
    let own = |v: &[(&str, u64)]| v.iter().map(|(c, n)| (c.to_string(), *n)).collect::<Vec<_>>();
    // srv-1's missing KB200 is waived: one exposed machine each.
    assert_eq!(list(&[]), own(&[("CVE-2026-1000", 1), ("CVE-2026-2000", 1), ("CVE-2026-3000", 1)]));
    assert_eq!(list(&["--severity", "critical"]), own(&[("CVE-2026-1000", 1), ("CVE-2026-2000", 1)]));
    assert_eq!(list(&["--collection", "workstations"]), own(&[("CVE-2026-3000", 1)]));
    let out = patchops(&[
        "cve",
        "--list",
        "--collection",
        "labs",
        "--repo",
        root.to_str().unwrap(),
        "--path",
        "desired",
        "--store",
        &store,
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("known collections: servers, workstations"));
}

const POLICY_RESOURCES: &str = r#"apiVersion: patchops.dev/v1alpha1
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
kind: Collection
metadata: {name: workstations}
spec:
  selector: {matchFacts: {role: workstation}}
---
apiVersion: patchops.dev/v1alpha1
kind: CompliancePolicy
metadata: {name: baseline}
spec:
  deadlines:
    - collection: servers
      criteria: {severities: [Critical], releasedAfter: 2026-11-01}
      within: 7d
    - collection: workstations
      criteria: {severities: [Important], releasedAfter: 2026-11-01}
      within: 7d
  requireFailureBudget: true
  maxWaiverDuration: 90d
---
apiVersion: patchops.dev/v1alpha1
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
  deadline: 2026-11-18T00:00:00Z
  failureBudget: {maxFailedPercent: 10}
"#;

const LATE_AND_LONG: &str = r#"apiVersion: patchops.dev/v1alpha1
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
  deadline: 2026-12-31T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: forever}
spec:
  updates: [KB200]
  collection: servers
  reason: nobody wants to reboot
  expires: 2099-01-01T00:00:00Z
"#;

/// Commit `files` on `branch` on top of HEAD's commit (the work tree is not touched).
fn commit_on(root: &Path, branch: &str, files: &[(&str, &str)]) {
    let repo = git2::Repository::open(root).unwrap();
    let parent = repo.head().unwrap().peel_to_commit().unwrap();
    let mut index = git2::Index::new().unwrap();
    index.read_tree(&parent.tree().unwrap()).unwrap();
    for (path, text) in files {
        let id = repo.blob(text.as_bytes()).unwrap();
        let mut entry = index.get_path(Path::new("desired/all.yaml"), 0).unwrap();
        entry.id = id;
        entry.file_size = text.len() as u32;
        entry.path = path.as_bytes().to_vec();
        index.add(&entry).unwrap();
    }
    let tree = repo.find_tree(index.write_tree_to(&repo).unwrap()).unwrap();
    let sig = git2::Signature::now("Bob", "bob@example.com").unwrap();
    repo.commit(Some(&format!("refs/heads/{branch}")), &sig, &sig, "late deadline, long waiver", &tree, &[&parent])
        .unwrap();
}

#[test]
fn compliance_policies_fail_plan_and_validate_on_violations_and_status_lists_breaches() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo(dir.path(), &[("desired/catalog/updates.yaml", CATALOG), ("desired/all.yaml", POLICY_RESOURCES)]);
    commit_on(&root, "late-and-long", &[("desired/late.yaml", LATE_AND_LONG)]);
    let store = dir.path().join("p.db").display().to_string();
    let source = GitSource {
        repo: root.display().to_string(),
        revision: None,
        path: Some("desired".into()),
        cache_dir: dir.path().join("cache"),
    };
    let mut runner = Pipeline::new(source, patchops::store::open(&store).unwrap(), None);
    // Nine days after KB300's release, with no deployment to the workstations: a breach.
    let (record, _) = runner.reconcile_once("2026-11-20T12:00:00Z".parse().unwrap()).unwrap();
    let status = &record.statuses.iter().find(|s| s.kind == "CompliancePolicy").unwrap().status;
    assert_eq!(status["breachCount"], 1, "{status}");
    assert_eq!(status["breaches"][0]["update"], "KB300-w11");
    assert_eq!(status["breaches"][0]["due"], "2026-11-18T00:00:00Z");
    drop(runner);

    let r = root.to_str().unwrap();
    let out = patchops(&["validate", "--repo", r, "--path", "desired", "--store", &store]);
    assert!(out.status.success(), "main meets the policy: {}", String::from_utf8_lossy(&out.stderr));

    let out = patchops(&["validate", "--repo", r, "--rev", "late-and-long", "--path", "desired", "--store", &store]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    for expected in [
        "desired/late.yaml:16: Waiver forever: spec.expires: expires 2099-01-01T00:00:00Z, more than 90d after the commit",
        "desired/late.yaml:7: UpdateDeployment nov-workstations: spec.failureBudget",
        "desired/late.yaml:7: UpdateDeployment nov-workstations: spec.deadline: deploys KB300-w11 to workstations with deadline 2026-12-31T00:00:00Z",
    ] {
        assert!(err.contains(expected), "{expected}\n{err}");
    }

    let out = patchops(&[
        "plan",
        "--repo",
        r,
        "--base",
        "HEAD",
        "--head",
        "late-and-long",
        "--path",
        "desired",
        "--store",
        &store,
        "-o",
        "json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let found: BTreeSet<String> = plan["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| format!("{} {}", v["resource"].as_str().unwrap(), v["field"].as_str().unwrap()))
        .collect();
    let expected = [
        "UpdateDeployment nov-workstations spec.deadline",
        "UpdateDeployment nov-workstations spec.failureBudget",
        "Waiver forever spec.expires",
    ];
    assert_eq!(found, expected.iter().map(|s| s.to_string()).collect());
    // A branch that breaks nothing new plans as a change (2) or no change (0), as before.
    let out =
        patchops(&["plan", "--repo", r, "--base", "HEAD", "--head", "HEAD", "--path", "desired", "--store", &store]);
    assert_eq!(out.status.code(), Some(0));
}
