//! `patchops plan` on a real repository with history (branches, a merge, a renamed file,
//! several authors) against a SQLite store with a catalog and reporting clients.

mod gitfix;

use std::process::Command;

use gitfix::*;
use patchops::git::plan::{Change, Plan, World, compute, markdown};
use patchops::pipeline::load_desired;
use patchops::reconcile::Previous;

fn plan_of(h: &History, base: &str, head: &str, store: &dyn patchops::store::Store) -> Plan {
    let (_, b) = load_desired(&source(h, base)).unwrap();
    let (_, d) = load_desired(&source(h, head)).unwrap();
    let (catalog, fleet) = (store.load_catalog().unwrap(), store.load_fleet().unwrap());
    compute(&b, &d, &World { catalog: &catalog, fleet: &fleet, previous: &Previous::default(), now: now() })
}

fn setup() -> (History, Box<dyn patchops::store::Store>) {
    let h = history();
    let store = seed_store(&h.dir.path().join("p.db"));
    (h, store)
}

/// Compare with a golden file; `PATCHOPS_UPDATE_GOLDEN=1` rewrites it.
fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/plan").join(name);
    if std::env::var_os("PATCHOPS_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|_| panic!("{} missing; run with PATCHOPS_UPDATE_GOLDEN=1", path.display()));
    assert_eq!(actual, expected, "plan markdown differs from {}", path.display());
}

#[test]
fn p2_the_markdown_plan_of_a_pull_request_matches_the_golden_file() {
    let (h, store) = setup();
    golden("dec-patches.md", &markdown(&plan_of(&h, "main", "dec-patches", store.as_ref())));
}

#[test]
fn p2_a_new_deployment_lists_its_updates_and_the_machines_that_newly_receive_them() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", "dec-patches", store.as_ref());
    let dec = plan.deployments.iter().find(|d| d.name == "dec-servers").unwrap();
    assert_eq!(dec.change, Change::Added);
    assert_eq!(dec.updates_added, vec!["KB400-srv"], "KB100 is superseded and left out");
    assert_eq!(dec.targeted_after, 6);
    let r = &dec.new_receipts;
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].update.as_str(), r[0].collection.as_str()), ("KB400-srv", "servers"));
    assert_eq!((r[0].machines, r[0].required), (6, 5), "srv-5 never scanned: it receives KB400 but is Unknown");
    assert!(dec.warnings.iter().any(|w| w.contains("KB100-srv is superseded by KB200-srv")), "{:?}", dec.warnings);
}

#[test]
fn p2_a_renamed_file_with_the_same_resources_is_no_change() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", "dec-patches", store.as_ref());
    assert!(plan.deployments.iter().all(|d| d.name != "nov-servers"), "renaming the file changes nothing");
    assert_eq!(plan.unchanged_deployments, 1);
    // The merge brought main's ClientSettings into the branch: not a change either.
    assert!(plan.resources.iter().all(|r| r.kind != "ClientSettings"), "{:?}", plan.resources);
}

#[test]
fn p2_a_withdrawn_deployment_lists_the_updates_no_longer_deployed() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", "dec-patches", store.as_ref());
    let ws = plan.deployments.iter().find(|d| d.name == "nov-workstations").unwrap();
    assert_eq!(ws.change, Change::Removed);
    assert_eq!((ws.updates_removed.clone(), ws.targeted_before), (vec!["KB300-w11".to_string()], 4));
    assert!(plan.resources.iter().any(|r| r.name == "nov-w11" && r.change == Change::Removed));
}

#[test]
fn d3_a_window_that_fits_before_the_deadline_is_named_and_one_that_does_not_is_a_warning() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", "dec-patches", store.as_ref());
    let dec = plan.deployments.iter().find(|d| d.name == "dec-servers").unwrap();
    let servers = &dec.collections[0];
    assert_eq!(servers.next_window, Some(at("2026-12-12T02:00:00Z")), "the first Saturday after the start");
    assert!(servers.fits_before_deadline);
    // Move the deadline before that Saturday: no window before it fits the 3h install.
    let early = DEC_SERVERS.replace("deadline: 2026-12-14T00:00:00Z", "deadline: 2026-12-11T00:00:00Z");
    commit(
        &h.repo,
        "early",
        &[h.head],
        &[("desired/deployments/dec-servers.yaml", Some(&early))],
        "Bob",
        T0 + 300,
        "x",
    );
    let plan = plan_of(&h, "main", "early", store.as_ref());
    let dec = plan.deployments.iter().find(|d| d.name == "dec-servers").unwrap();
    assert!(!dec.collections[0].fits_before_deadline);
    assert!(dec.warnings.iter().any(|w| {
        w.contains("6 machine(s) of servers get the windows of servers, and none before the deadline fits 3h")
    }));
}

#[test]
fn p2_a_deadline_in_the_past_and_a_collection_without_members_are_warnings() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", "dec-patches", store.as_ref());
    let lab = plan.deployments.iter().find(|d| d.name == "lab-hotfix").unwrap();
    assert!(
        lab.warnings.iter().any(|w| w.contains("deadline 2026-11-15T00:00:00Z is in the past")),
        "{:?}",
        lab.warnings
    );
    assert!(lab.warnings.iter().any(|w| w.contains("collection lab has no members")), "{:?}", lab.warnings);
    assert!(lab.new_receipts.is_empty());
}

#[test]
fn p2_machines_that_already_receive_an_update_from_another_deployment_are_not_counted_as_new() {
    let (h, store) = setup();
    // Add KB400 to the November servers list: the servers had KB200 from it already, so
    // only KB400 is new to them.
    let more = NOV_SERVERS.replace("updates: [KB200-srv]", "updates: [KB200-srv, KB400-srv]");
    commit(&h.repo, "more", &[h.main], &[("desired/deployments/nov-servers.yaml", Some(&more))], "Eve", T0 + 400, "x");
    let plan = plan_of(&h, "main", "more", store.as_ref());
    assert_eq!(plan.deployments.len(), 1);
    let nov = &plan.deployments[0];
    assert_eq!((nov.change, nov.updates_added.clone()), (Change::Changed, vec!["KB400-srv".to_string()]));
    let receipts: Vec<(&str, u64)> = nov.new_receipts.iter().map(|r| (r.update.as_str(), r.machines)).collect();
    assert_eq!(receipts, vec![("KB400-srv", 6)], "KB200 reached these servers before the change");
}

#[test]
fn the_same_revision_on_both_sides_plans_no_change() {
    let (h, store) = setup();
    let plan = plan_of(&h, "main", &h.main.to_string(), store.as_ref());
    assert!(!plan.changes(), "{plan:#?}");
    assert!(markdown(&plan).contains("**No change.** 2 deployments stay as they are."));
}

fn patchops(h: &History, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["plan", "--repo", h.repo.path().parent().unwrap().to_str().unwrap(), "--path", "desired"])
        .args(["--store", h.dir.path().join("p.db").to_str().unwrap(), "--now", "2026-11-20T12:00:00Z"])
        .args(args)
        .env("PATCHOPS_STATE_DIR", h.dir.path().join("state"))
        .output()
        .unwrap()
}

#[test]
fn plan_exits_0_without_change_2_with_change_and_1_for_an_invalid_head() {
    let (h, store) = setup();
    drop(store);
    let same = patchops(&h, &["--base", "main", "--head", "main"]);
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stderr));
    let changed = patchops(&h, &["--base", "main", "--head", "dec-patches", "--output", "json"]);
    assert_eq!(changed.status.code(), Some(2), "{}", String::from_utf8_lossy(&changed.stderr));
    let json: serde_json::Value = serde_json::from_slice(&changed.stdout).unwrap();
    assert_eq!(json["deployments"][0]["name"], "dec-servers");
    assert_eq!(json["deployments"][0]["newReceipts"][0]["required"], 5);

    let broken = DEC_SERVERS.replace("updateList: dec-srv", "updateList: dec-server");
    commit(
        &h.repo,
        "broken",
        &[h.head],
        &[("desired/deployments/dec-servers.yaml", Some(&broken))],
        "Bob",
        T0 + 500,
        "typo",
    );
    let invalid = patchops(&h, &["--base", "main", "--head", "broken"]);
    assert_eq!(invalid.status.code(), Some(1));
    let err = String::from_utf8_lossy(&invalid.stderr);
    assert!(err.contains("head revision \"broken\" is invalid"), "{err}");
    assert!(
        err.contains("desired/deployments/dec-servers.yaml:") && err.contains("updateList \"dec-server\" not found"),
        "{err}"
    );
}

#[test]
fn plan_without_a_store_says_how_to_make_one() {
    let h = history();
    let out = patchops(&h, &["--base", "main", "--head", "dec-patches"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run `patchops run --once` first"));
}

#[test]
fn d3_machines_get_the_windows_of_every_collection_they_are_in_and_each_is_checked_against_the_deadline() {
    let (h, store) = setup();
    let short_window = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: night-shift}
spec:
  names: [srv-0, srv-1]
  maintenanceWindows:
    - {name: nightly, start: "22:00", duration: 1h, timeZone: UTC, recurrence: Daily}
"#;
    commit(&h.repo, "night", &[h.head], &[("desired/night.yaml", Some(short_window))], "Frank", T0 + 800, "x");
    let plan = plan_of(&h, "main", "night", store.as_ref());
    let dec = plan.deployments.iter().find(|d| d.name == "dec-servers").unwrap();
    let rows: Vec<(Option<&str>, u64, bool)> =
        dec.collections.iter().map(|c| (c.windows_of.as_deref(), c.machines, c.fits_before_deadline)).collect();
    assert_eq!(rows, vec![(Some("night-shift"), 2, false), (Some("servers"), 6, true)], "a 1h window never fits 3h");
    assert!(dec.warnings.iter().any(|w| w.starts_with("2 machine(s) of servers get the windows of night-shift")));
}

#[test]
fn p2_a_changed_collection_shows_every_deployment_whose_machines_change() {
    let (h, store) = setup();
    // Only the collection changes: the workstation deployment now also reaches srv-0.
    let wider = COLLECTIONS.replace(
        "  selector: {matchFacts: {role: workstation}}\n",
        "  selector: {matchFacts: {role: workstation}}\n  names: [srv-0]\n",
    );
    commit(&h.repo, "wider", &[h.main], &[("desired/collections.yaml", Some(&wider))], "Grace", T0 + 900, "x");
    let plan = plan_of(&h, "main", "wider", store.as_ref());
    let names: Vec<&str> = plan.deployments.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, vec!["nov-workstations"], "the servers deployment reaches the same machines");
    let ws = &plan.deployments[0];
    assert_eq!((ws.change, ws.targeted_before, ws.targeted_after), (Change::Changed, 4, 5));
    let r = &ws.new_receipts[0];
    assert_eq!((r.update.as_str(), r.machines, r.required), ("KB300-w11", 1, 0), "KB300 does not apply to a server");
    assert_eq!(ws.phase.as_deref(), Some("Available"));
    assert_eq!(plan.resources.len(), 1, "{:?}", plan.resources);
}

#[test]
fn p2_the_plan_is_the_same_from_sqlite_and_from_postgresql() {
    let (h, sqlite) = setup();
    let url = std::env::var("PATCHOPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("patchops_plan_{:016x}", fastrand::u64(..));
    let mut pg = patchops::store::postgres::PostgresStore::open_in_schema(&url, &schema).unwrap_or_else(|e| {
        panic!("PostgreSQL is not reachable at {url}: {e}; start it or set PATCHOPS_TEST_POSTGRES_URL")
    });
    seed(&mut pg);
    let from_pg = plan_of(&h, "main", "dec-patches", &pg);
    drop(pg);
    if let Ok(mut c) = postgres::Client::connect(&url, postgres::NoTls) {
        let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    }
    assert_eq!(from_pg, plan_of(&h, "main", "dec-patches", sqlite.as_ref()));
}

#[test]
fn the_table_output_has_one_row_per_changed_deployment_and_lists_the_warnings() {
    let (h, store) = setup();
    let text = patchops::git::plan::table(&plan_of(&h, "main", "dec-patches", store.as_ref()));
    for name in ["dec-servers", "lab-hotfix", "nov-workstations"] {
        assert!(text.contains(name), "{text}");
    }
    assert!(!text.contains("nov-servers"), "{text}");
    assert!(text.contains("warning: collection lab has no members"), "{text}");
    assert!(text.contains("UpdateList dec-srv added"), "{text}");
}
