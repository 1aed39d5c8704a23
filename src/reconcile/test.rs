//! Table-driven and property tests of the core. The oracle is Table 1 applied pair by
//! pair (`classify` / `client_unknown_reason`); the core's counters must agree with it.

use std::collections::{BTreeMap, HashMap};

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::catalog::test_support::update;
use crate::compliance::{
    ClientCompliance, ComplianceState, Enforcement, PackedState, ScanRecord, ScanResult, classify,
    client_unknown_reason,
};
use crate::time::Duration;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}
const NOW: &str = "2026-12-10T12:00:00Z";

fn products() -> [&'static str; 3] {
    ["Windows 11", "Windows Server 2022", "Ubuntu 24.04"]
}

/// 30 updates over three products; the last five arrive in catalog version 2.
fn catalog() -> Catalog {
    let mut updates = Vec::new();
    let mut since = HashMap::new();
    for i in 0..30 {
        let p = products()[i % 3];
        let mut u = update(&format!("KB{:03}-{}", i, i % 3), p, &format!("2026-{:02}-10", 1 + i % 11));
        u.max_run_time = Duration::from_mins(if i % 7 == 0 { 90 } else { 10 });
        since.insert(u.id.clone(), if i >= 25 { 2 } else { 1 });
        updates.push(u);
    }
    Catalog::new(2, updates, &since)
}

fn doc<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap()
}

/// Collections by role, a pilot of named machines, deployments: one plain, one phased,
/// one optional, one not yet available.
fn desired() -> DesiredState {
    let mut d = DesiredState { revision: "main@sha1:abc".into(), ..Default::default() };
    let coll = |name: &str, yaml: &str| (name.to_string(), Collection::new(name, doc(yaml)));
    d.collections.extend([
        coll("servers", "selector: {matchFacts: {role: server}}\nmaintenanceWindows:\n- {name: nightly, start: '02:00', duration: 2h, timeZone: Europe/Berlin, recurrence: Daily}\n"),
        coll("workstations", "selector: {matchFacts: {role: workstation}}\n"),
        coll("pilot", "names: [c001, c002, c003, c004, c005, c006, c007, c008, c009, c010]\n"),
        coll("all", "includeCollections: [servers, workstations]\n"),
    ]);
    d.update_lists.insert(
        "all-security".into(),
        UpdateList::new("all-security", doc("criteria: {classifications: [Security Updates]}\n")),
    );
    d.update_lists.insert("w11".into(), UpdateList::new("w11", doc("criteria: {products: [Windows 11]}\n")));
    d.templates.insert("std".into(), DeploymentTemplate::new("std", doc("deadlineAfter: 7d\nmandatory: true\n")));
    let dep = |name: &str, yaml: &str| (name.to_string(), UpdateDeployment::new(name, doc(yaml)));
    d.deployments.extend([
        dep("servers-dec", "updateList: all-security\ntemplate: std\ncollection: servers\nstartTime: 2026-12-08T00:00:00Z\n"),
        dep("phased-w11", "updateList: w11\ntemplate: std\nstartTime: 2026-12-01T00:00:00Z\nphases:\n- {name: pilot, collection: pilot, successCriteria: {compliantPercent: 50}}\n- {name: broad, collection: all, delay: 1d}\nfailureBudget: {maxFailedPercent: 90}\n"),
        dep("optional-ws", "updateList: w11\ncollection: workstations\nmandatory: false\nstartTime: 2026-12-01T00:00:00Z\n"),
        dep("future", "updateList: all-security\ntemplate: std\ncollection: all\nstartTime: 2027-01-01T00:00:00Z\n"),
    ]);
    d
}

/// A random fleet touching every Table 1 case.
fn fleet(seed: u64, n: usize, catalog: &Catalog) -> Fleet {
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = at(NOW);
    let mut clients = Vec::new();
    for i in 0..n {
        let product = products()[rng.usize(0..3)];
        let role = if product.contains("Server") { "server" } else { "workstation" };
        let mut c = ClientCompliance { agent_version: Some("1.0.0".into()), ..Default::default() };
        match rng.u8(0..10) {
            0 => {}                      // never scanned (U3)
            1 => c.pending_messages = 1, // U2
            2 => c.last_failure = Some(ScanRecord { time: now, catalog_version: 2, error: Some("0x8024402c".into()) }),
            _ => {
                let age = if rng.u8(0..10) == 0 { 30 } else { rng.i64(0..20) };
                let version = if rng.bool() { 2 } else { 1 };
                c.last_scan = Some(ScanRecord {
                    time: now - SignedDuration::from_hours(age),
                    catalog_version: version,
                    error: None,
                });
                if rng.u8(0..20) == 0 {
                    c.rejected_at = Some(now);
                }
                for (idx, u) in catalog.updates.iter().enumerate() {
                    if u.products[0] != product || rng.u8(0..3) == 0 {
                        continue;
                    }
                    let scan = if rng.bool() { ScanResult::Installed } else { ScanResult::Missing };
                    let e = Enforcement::ALL[rng.usize(0..Enforcement::ALL.len())];
                    c.states.push(PackedState::new(catalog.keys[idx], scan, e));
                }
                c.states.sort();
            }
        }
        clients.push(Client {
            name: format!("c{:03}", i + 1),
            facts: [("role".to_string(), role.to_string()), ("os".to_string(), product.to_string())].into(),
            compliance: c,
        });
    }
    Fleet::new(clients)
}

fn run(desired: &DesiredState, catalog: &Catalog, fleet: &Fleet, previous: &Previous, now: &str) -> Outcome {
    reconcile(&Inputs { desired, catalog, fleet, previous, now: at(now) })
}

/// Table 1, pair by pair: the state of (client, update) at `now`.
fn oracle_state(c: &Client, catalog: &Catalog, idx: usize, now: Timestamp) -> ComplianceState {
    let ttl = SignedDuration::from_hours(24);
    if let Some(r) = client_unknown_reason(&c.compliance, ttl, None, now) {
        return r.state();
    }
    let key = catalog.keys[idx];
    let reported = c.compliance.states.iter().find(|s| s.key() == key).copied();
    let scan = c.compliance.last_scan.as_ref().unwrap().catalog_version;
    classify(reported, true, catalog.since_version[idx], scan).state()
}

fn oracle_counts(
    clients: &[&Client],
    catalog: &Catalog,
    updates: &[u32],
    now: Timestamp,
) -> (StateCounts, MachineCounts) {
    let mut s = StateCounts::default();
    let mut m = MachineCounts::default();
    for c in clients {
        let states: Vec<ComplianceState> = updates.iter().map(|&i| oracle_state(c, catalog, i as usize, now)).collect();
        for st in &states {
            match st {
                ComplianceState::Required => s.required += 1,
                ComplianceState::Installed => s.installed += 1,
                ComplianceState::NotRequired => s.not_required += 1,
                ComplianceState::Unknown => s.unknown += 1,
            }
        }
        if states.contains(&ComplianceState::Required) {
            m.required += 1;
        } else if states.contains(&ComplianceState::Unknown) {
            m.unknown += 1;
        } else {
            m.compliant += 1;
        }
    }
    (s, m)
}

#[test]
fn t1_deployment_counts_equal_table_1_applied_to_every_machine_and_update() {
    let catalog = catalog();
    let desired = desired();
    for seed in 0..20 {
        let fleet = fleet(seed, 120, &catalog);
        let out = run(&desired, &catalog, &fleet, &Previous::default(), NOW);
        let status = &out.deployments["servers-dec"];
        let servers: Vec<&Client> = fleet.clients.iter().filter(|c| c.facts["role"] == "server").collect();
        let list = resolve::resolve(&desired.update_lists["all-security"].spec, &catalog).updates;
        let (states, machines) = oracle_counts(&servers, &catalog, &list, at(NOW));
        assert_eq!(status.updates, states, "seed {seed}");
        assert_eq!(
            (status.machines.compliant, status.machines.required, status.machines.unknown),
            (machines.compliant, machines.required, machines.unknown),
            "seed {seed}"
        );
        assert_eq!(status.targeted as usize, servers.len());
    }
}

#[test]
fn t1_deployments_of_one_list_to_overlapping_collections_each_count_their_own_machines() {
    // optional-ws (workstations) and phased-w11 (pilot, then all) deploy the same list: a
    // workstation's states are read once and counted in both.
    let catalog = catalog();
    let desired = desired();
    let w11 = resolve::resolve(&desired.update_lists["w11"].spec, &catalog).updates;
    for seed in 0..10 {
        let fleet = fleet(seed, 120, &catalog);
        let out = run(&desired, &catalog, &fleet, &Previous::default(), NOW);
        let ws: Vec<&Client> = fleet.clients.iter().filter(|c| c.facts["role"] == "workstation").collect();
        let (states, machines) = oracle_counts(&ws, &catalog, &w11, at(NOW));
        let status = &out.deployments["optional-ws"];
        assert_eq!(status.updates, states, "seed {seed}");
        assert_eq!(
            (status.machines.compliant, status.machines.required, status.machines.unknown),
            (machines.compliant, machines.required, machines.unknown),
            "seed {seed}"
        );
        assert!(out.deployments["phased-w11"].targeted > 0, "seed {seed}: the phased deployment targets machines too");
    }
}

#[test]
fn p1_update_lists_count_how_many_systems_require_each_update() {
    let catalog = catalog();
    let desired = desired();
    let fleet = fleet(7, 200, &catalog);
    let out = run(&desired, &catalog, &fleet, &Previous::default(), NOW);
    let list = &out.update_lists["all-security"];
    assert_eq!(list.update_count, 30);
    let all: Vec<&Client> = fleet.clients.iter().collect();
    for row in &list.updates {
        let idx = catalog.index_of(&row.id).unwrap();
        let (expected, _) = oracle_counts(&all, &catalog, &[idx], at(NOW));
        assert_eq!(row.counts, expected, "{}", row.id);
        assert_eq!(row.counts.required + row.counts.installed + row.counts.not_required + row.counts.unknown, 200);
    }
}

#[test]
fn o_dep_phased_rollouts_target_only_active_phases_and_advance() {
    let catalog = catalog();
    let desired = desired();
    let mut fleet = fleet(3, 60, &catalog);
    // Make the pilot compliant: everything installed, freshly scanned.
    for c in fleet.clients.iter_mut().take(10) {
        c.compliance = ClientCompliance {
            agent_version: Some("1.0.0".into()),
            last_scan: Some(ScanRecord { time: at(NOW), catalog_version: 2, error: None }),
            ..Default::default()
        };
    }
    let first = run(&desired, &catalog, &fleet, &Previous::default(), NOW);
    let s = &first.deployments["phased-w11"];
    assert_eq!(s.rollout_phase.as_deref(), Some("pilot"));
    assert_eq!(s.targeted, 10, "only the pilot is targeted");
    assert_eq!(s.phases[0].state, "Succeeded");
    let pilot_policy = first.policy_of(0);
    assert!(pilot_policy.deployments.iter().any(|d| d.name == "phased-w11" && d.phase.as_deref() == Some("pilot")));
    let outsider = fleet.index_of("c050").unwrap();
    assert!(!first.policy_of(outsider).deployments.iter().any(|d| d.name == "phased-w11"));
    // A day later the broad phase starts and everyone in "all" is targeted.
    let previous = Previous { deployments: first.deployments.clone().into_iter().collect(), ..Default::default() };
    let next = run(&desired, &catalog, &fleet, &previous, "2026-12-11T12:00:00Z");
    let s = &next.deployments["phased-w11"];
    assert_eq!(s.rollout_phase.as_deref(), Some("broad"));
    assert_eq!(s.targeted, 60);
    assert!(next.events.iter().any(|e| e.reason == "PhaseAdvanced" && e.message.contains("broad")));
}

#[test]
fn d4_optional_deployments_reach_clients_without_a_deadline() {
    let catalog = catalog();
    let out = run(&desired(), &catalog, &fleet(1, 50, &catalog), &Previous::default(), NOW);
    let p = out.policies.values().flat_map(|p| &p.deployments).find(|d| d.name == "optional-ws").unwrap();
    assert!(!p.mandatory);
    assert_eq!(p.deadline, None);
    assert_eq!(out.deployments["optional-ws"].deadline, None);
}

#[test]
fn o_dep_deployments_before_their_available_time_reach_no_client() {
    let catalog = catalog();
    let out = run(&desired(), &catalog, &fleet(1, 50, &catalog), &Previous::default(), NOW);
    assert_eq!(out.deployments["future"].phase, "Pending");
    assert_eq!(out.deployments["future"].targeted, 0);
    assert!(out.policies.values().all(|p| p.deployments.iter().all(|d| d.name != "future")));
    assert!(out.valid_until.unwrap() <= at("2027-01-01T00:00:00Z"), "the core knows when to look again");
    let later = run(&desired(), &catalog, &fleet(1, 50, &catalog), &Previous::default(), "2027-01-02T00:00:00Z");
    assert_eq!(later.deployments["future"].phase, "Available");
    assert_eq!(later.deployments["future"].targeted, 50);
}

#[test]
fn c2_a_new_catalog_version_reaches_every_client_policy() {
    let catalog = catalog();
    let fleet = fleet(2, 40, &catalog);
    let before = run(&desired(), &catalog, &fleet, &Previous::default(), NOW);
    let mut newer = catalog.clone();
    newer.version = 3;
    let after = run(&desired(), &newer, &fleet, &Previous::default(), NOW);
    assert!(after.policies.values().all(|p| p.catalog_version == 3));
    for i in 0..fleet.clients.len() {
        assert_ne!(before.etag_of(i), after.etag_of(i), "every ETag changes, so every client fetches the new policy");
    }
}

#[test]
fn d3_deployment_status_shows_the_next_window_that_fits_the_longest_update() {
    let catalog = catalog();
    let out = run(&desired(), &catalog, &fleet(1, 30, &catalog), &Previous::default(), NOW);
    // Servers' window: 02:00–04:00 Berlin (01:00Z–03:00Z); the 90-minute update fits.
    assert_eq!(out.deployments["servers-dec"].next_maintenance_window, Some(at("2026-12-11T01:00:00Z")));
    assert_eq!(out.collections["servers"].next_window, Some(at("2026-12-11T01:00:00Z")));
    assert_eq!(out.deployments["optional-ws"].next_maintenance_window, None, "no window: install at once");
    // "all" has no window of its own, but its servers are in "servers", which has one.
    assert_eq!(out.deployments["future"].next_maintenance_window, Some(at("2026-12-11T01:00:00Z")));
    let policy = out.policies.values().find(|p| !p.maintenance_windows.is_empty()).unwrap();
    assert_eq!(policy.maintenance_windows[0].name, "nightly");
}

#[test]
fn the_same_inputs_give_the_same_outputs() {
    let catalog = catalog();
    let fleet = fleet(9, 150, &catalog);
    let a = run(&desired(), &catalog, &fleet, &Previous::default(), NOW);
    let b = run(&desired(), &catalog, &fleet, &Previous::default(), NOW);
    assert_eq!(a, b);
}

#[test]
fn s6_one_clients_new_states_update_the_status_like_a_full_reconcile() {
    let catalog = catalog();
    let desired = desired();
    let mut fleet = fleet(11, 150, &catalog);
    let previous = Previous::default();
    let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
    let (mut engine, _) = Engine::new(&inputs);
    let mut rng = fastrand::Rng::with_seed(5);
    let mut incremental_steps = 0;
    for step in 0..40 {
        let i = rng.usize(0..fleet.clients.len());
        let before = fleet.clients[i].clone();
        let c = &mut fleet.clients[i];
        c.compliance.last_scan = Some(ScanRecord { time: at(NOW), catalog_version: 2, error: None });
        c.compliance.last_failure = None;
        c.compliance.rejected_at = None;
        let mut states = Vec::new();
        for idx in 0..catalog.len() {
            if rng.bool() {
                let scan = if rng.bool() { ScanResult::Installed } else { ScanResult::Missing };
                states.push(PackedState::new(catalog.keys[idx], scan, Enforcement::None));
            }
        }
        c.compliance.states = states;
        if step % 5 == 0 {
            c.facts.insert("role".into(), "server".into()); // membership changes too
        }
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
        let incremental = engine.update_client(&inputs, i, &before);
        let full = reconcile(&inputs);
        if let Some(inc) = incremental {
            incremental_steps += 1;
            assert_eq!(inc.deployments, full.deployments, "step {step}");
            assert_eq!(inc.update_lists, full.update_lists, "step {step}");
            assert_eq!(inc.collections, full.collections, "step {step}");
            for c in 0..fleet.clients.len() {
                assert_eq!(inc.etag_of(c), full.etag_of(c), "step {step} client {c}");
            }
            assert_eq!(inc.policies, full.policies, "step {step}: the same documents are in use");
        } else {
            engine = Engine::new(&inputs).0;
        }
    }
    assert!(incremental_steps >= 30, "only {incremental_steps} of 40 changes were applied incrementally");
}

#[test]
fn t1_r3_a_pending_reboot_keeps_the_machine_required_and_counted() {
    let catalog = catalog();
    let desired = desired();
    let idx = catalog.index_of("KB001-1").unwrap(); // a Windows Server 2022 update
    let client = Client {
        name: "srv".into(),
        facts: BTreeMap::from([("role".to_string(), "server".to_string())]),
        compliance: ClientCompliance {
            agent_version: Some("1".into()),
            last_scan: Some(ScanRecord { time: at(NOW), catalog_version: 2, error: None }),
            states: vec![PackedState::new(
                catalog.keys[idx as usize],
                ScanResult::Installed,
                Enforcement::PendingReboot,
            )],
            ..Default::default()
        },
    };
    let out = run(&desired, &catalog, &Fleet::new(vec![client]), &Previous::default(), NOW);
    let s = &out.deployments["servers-dec"];
    assert_eq!((s.machines.required, s.machines.pending_reboot, s.updates.required), (1, 1, 1));
}

#[test]
fn o_pkg_packages_carry_the_content_files_of_their_updates() {
    let mut catalog_updates = catalog().updates;
    for (i, u) in catalog_updates.iter_mut().enumerate() {
        u.files = vec![crate::catalog::UpdateFile {
            name: format!("{}.msu", u.id),
            url: format!("https://dp.example.invalid/{}.msu", u.id),
            sha256: format!("{:064x}", i),
            size: 1000 + i as u64,
        }];
    }
    let catalog = Catalog::new(2, catalog_updates, &HashMap::new());
    let mut d = desired();
    d.packages.insert(
        "w11-content".into(),
        DeploymentPackage::new("w11-content", doc("updateLists: [w11]\nupdates: [KB001]\n")),
    );
    let out = run(&d, &catalog, &fleet(1, 10, &catalog), &Previous::default(), NOW);
    let p = &out.packages["w11-content"];
    let w11: Vec<usize> =
        catalog.updates.iter().enumerate().filter(|(_, u)| u.products[0] == "Windows 11").map(|(i, _)| i).collect();
    let kb001 = catalog.index_of("KB001-1").unwrap() as usize;
    assert_eq!(p.files as usize, w11.len() + 1, "every Windows 11 update plus KB001");
    let bytes: u64 = w11.iter().chain([&kb001]).map(|&i| catalog.updates[i].files[0].size).sum();
    assert_eq!(p.bytes, bytes);
}

#[test]
fn o_dep_an_update_that_becomes_superseded_is_named_in_a_condition_and_an_event_once() {
    let mut d = desired();
    d.update_lists.insert("pinned".into(), UpdateList::new("pinned", doc("updates: [KB001, KB004]\n")));
    d.deployments.insert(
        "pinned-servers".into(),
        UpdateDeployment::new(
            "pinned-servers",
            doc("updateList: pinned\ntemplate: std\ncollection: servers\nstartTime: 2026-12-08T00:00:00Z\n"),
        ),
    );
    let catalog = catalog();
    let fleet = fleet(4, 20, &catalog);
    let first = run(&d, &catalog, &fleet, &Previous::default(), NOW);
    assert!(first.deployments["pinned-servers"].conditions.iter().all(|c| c.type_ != "Superseded"));
    assert_eq!(first.deployments["pinned-servers"].update_count, 2);

    // A catalog sync brings KB100, which supersedes KB001.
    let mut updates = catalog.updates.clone();
    let mut newer = update("KB100-1", "Windows Server 2022", "2026-12-09");
    newer.supersedes = vec!["KB001".into()];
    updates.push(newer);
    let synced = Catalog::new(3, updates, &HashMap::new());
    let previous = Previous { deployments: first.deployments.clone().into_iter().collect(), ..Default::default() };
    let second = run(&d, &synced, &fleet, &previous, NOW);
    let status = &second.deployments["pinned-servers"];
    let c = status.conditions.iter().find(|c| c.type_ == "Superseded").expect("a Superseded condition");
    assert_eq!(c.reason, "UpdateSuperseded");
    assert!(c.message.contains("KB001-1 is superseded by KB100-1"), "{}", c.message);
    assert_eq!(status.update_count, 1, "the superseded update is no longer deployed");
    let events: Vec<&Event> = second.events.iter().filter(|e| e.reason == "UpdateSuperseded").collect();
    assert_eq!(events.len(), 1);
    assert!(events[0].message.contains("KB100-1"));
    // The next reconcile keeps the condition but does not repeat the event.
    let previous = Previous { deployments: second.deployments.clone().into_iter().collect(), ..Default::default() };
    let third = run(&d, &synced, &fleet, &previous, NOW);
    assert!(third.events.iter().all(|e| e.reason != "UpdateSuperseded"));
    assert!(third.deployments["pinned-servers"].conditions.iter().any(|c| c.type_ == "Superseded"));
}

fn scanned_client(name: &str, role: &str, time: Timestamp) -> Client {
    Client {
        name: name.into(),
        facts: BTreeMap::from([("role".to_string(), role.to_string())]),
        compliance: ClientCompliance {
            agent_version: Some("1".into()),
            last_scan: Some(ScanRecord { time, catalog_version: 2, error: None }),
            ..Default::default()
        },
    }
}

#[test]
fn a_client_leaving_and_rejoining_its_policy_keeps_every_assigned_document_present() {
    let catalog = catalog();
    let desired = desired();
    let mut fleet = Fleet::new(vec![
        scanned_client("a", "printer", at(NOW)),
        scanned_client("b", "server", at(NOW)),
        scanned_client("c", "workstation", at(NOW)),
    ]);
    let previous = Previous::default();
    let (mut engine, _) =
        Engine::new(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) });
    for role in ["server", "printer", "workstation", "printer"] {
        let before = fleet.clients[0].clone();
        fleet.clients[0].facts.insert("role".into(), role.into());
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
        let inc = engine.update_client(&inputs, 0, &before).expect("applied incrementally");
        let full = reconcile(&inputs);
        for c in 0..3 {
            assert_eq!(inc.policy_of(c), full.policy_of(c), "{role}: client {c}");
        }
        assert_eq!(inc.policies, full.policies, "{role}");
    }
}

#[test]
fn f2_a_scan_expiring_exactly_now_is_seen_by_incremental_updates() {
    let catalog = catalog();
    let desired = desired();
    let now = at(NOW);
    let mut fleet = Fleet::new(vec![
        scanned_client("a", "server", now - SignedDuration::from_hours(24)),
        scanned_client("b", "server", now - SignedDuration::from_hours(1)),
    ]);
    let previous = Previous::default();
    let (mut engine, first) =
        Engine::new(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now });
    assert_eq!(first.deployments["servers-dec"].machines.unknown, 0, "exactly 24 h old: still valid");
    let before = fleet.clients[1].clone();
    fleet.clients[1].compliance.last_scan.as_mut().unwrap().time = now;
    let later = now + SignedDuration::from_mins(1);
    let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: later };
    let full = reconcile(&inputs);
    assert_eq!(full.deployments["servers-dec"].machines.unknown, 1);
    if let Some(inc) = engine.update_client(&inputs, 1, &before) {
        assert_eq!(inc.deployments, full.deployments);
    }
}

#[test]
fn a_changed_client_set_is_refused_by_the_incremental_path() {
    let catalog = catalog();
    let desired = desired();
    let previous = Previous::default();
    let mut fleet = Fleet::new(vec![scanned_client("a", "server", at(NOW))]);
    let (mut engine, _) =
        Engine::new(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) });
    let before = fleet.clients[0].clone();
    fleet = Fleet::new(vec![before.clone(), scanned_client("z", "server", at(NOW))]);
    let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
    assert!(engine.update_client(&inputs, 1, &before).is_none());
    assert!(engine.update_client(&inputs, 0, &before).is_none());
}

#[test]
fn clients_joining_and_changing_in_one_wave_give_what_a_full_reconcile_gives() {
    let catalog = catalog();
    let desired = desired();
    let previous = Previous::default();
    let mut fleet = Fleet::new(vec![scanned_client("a", "server", at(NOW)), scanned_client("b", "printer", at(NOW))]);
    let (mut engine, _) =
        Engine::new(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) });
    for wave in 0..4 {
        let before = fleet.clients[0].clone();
        fleet.clients[0].facts.insert("role".into(), if wave % 2 == 0 { "printer" } else { "server" }.into());
        // Joined clients go after the known ones, whatever their names.
        let known = fleet.clients.len();
        fleet.clients.push(scanned_client(&format!("new-{wave}-a"), "server", at(NOW)));
        fleet.clients.push(scanned_client(&format!("0-new-{wave}"), "printer", at(NOW)));
        let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
        let changes = [
            ClientChange::Joined { index: known },
            ClientChange::Changed { index: 0, before: &before },
            ClientChange::Joined { index: known + 1 },
        ];
        let inc = engine.update_clients(&inputs, &changes).expect("applied incrementally");
        let full = reconcile(&inputs);
        assert_eq!(inc.deployments, full.deployments, "wave {wave}");
        assert_eq!(inc.collections, full.collections, "wave {wave}");
        assert_eq!(inc.update_lists, full.update_lists, "wave {wave}");
        for c in 0..fleet.clients.len() {
            assert_eq!(inc.policy_of(c), full.policy_of(c), "wave {wave}: client {c}");
        }
        assert_eq!(inc.policies, full.policies, "wave {wave}: the same documents are in use");
    }
    // A join that skips a position is refused (the caller reconciles in full).
    fleet.clients.push(scanned_client("late", "server", at(NOW)));
    fleet.clients.push(scanned_client("later", "server", at(NOW)));
    let inputs = Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now: at(NOW) };
    let last = fleet.clients.len() - 1;
    assert!(engine.update_clients(&inputs, &[ClientChange::Joined { index: last }]).is_none());
}
