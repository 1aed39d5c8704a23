//! The read views over a generated site: machine listings agree with the deployment
//! status counts, per-update states come from Table 1, searches find by CVE, KB and
//! advisory, pages cut where they say.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};

use super::*;
use crate::catalog::Catalog;
use crate::catalog::test_support::update;
use crate::compliance::{ClientCompliance, Enforcement, Fleet, PackedState, ScanRecord, ScanResult};
use crate::desired::DesiredState;
use crate::resources::*;

const NOW: &str = "2026-12-10T12:00:00Z";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn doc<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_saphyr::from_str(yaml).unwrap()
}

const PRODUCTS: [&str; 2] = ["Windows 11", "Windows Server 2022"];

/// 20 updates over two products; the last four arrive in catalog version 2; two carry CVEs.
fn catalog() -> Catalog {
    let mut updates = Vec::new();
    let mut since = HashMap::new();
    for i in 0..20 {
        let mut u = update(&format!("KB{:03}-{}", i, i % 2), PRODUCTS[i % 2], &format!("2026-{:02}-10", 1 + i % 11));
        if i == 3 {
            u.cves = vec!["CVE-2026-1111".into()];
        }
        if i == 4 {
            u.id = "DSA-5380-1-bookworm".into();
            u.kb = Some("DSA-5380-1".into());
            u.cves = vec!["CVE-2026-2222".into(), "CVE-2026-1111".into()];
        }
        since.insert(u.id.clone(), if i >= 16 { 2 } else { 1 });
        updates.push(u);
    }
    Catalog::new(2, updates, &since)
}

/// Collections by role, a named pilot, a plain, a phased and a future deployment, a
/// waiver on the pilot's servers, and a minimum agent version for workstations.
fn desired() -> DesiredState {
    let mut d = DesiredState { revision: "main@sha1:abc".into(), ..Default::default() };
    let coll = |name: &str, yaml: &str| (name.to_string(), Collection::new(name, doc(yaml)));
    d.collections.extend([
        coll("servers", "selector: {matchFacts: {role: server}}\n"),
        coll("workstations", "selector: {matchFacts: {role: workstation}}\n"),
        coll("pilot", "names: [c001, c002, c003, c004, c005, c006, c007, c008]\n"),
        coll("all", "includeCollections: [servers, workstations]\n"),
    ]);
    d.update_lists.insert(
        "security".into(),
        UpdateList::new("security", doc("criteria: {classifications: [Security Updates]}\n")),
    );
    d.update_lists.insert("w11".into(), UpdateList::new("w11", doc("criteria: {products: [Windows 11]}\n")));
    let dep = |name: &str, yaml: &str| (name.to_string(), UpdateDeployment::new(name, doc(yaml)));
    d.deployments.extend([
        dep("servers-dec", "updateList: security\ncollection: servers\nstartTime: 2026-12-08T00:00:00Z\n"),
        dep(
            "phased-w11",
            "updateList: w11\nstartTime: 2026-12-01T00:00:00Z\nphases:\n- {name: pilot, collection: pilot, successCriteria: {compliantPercent: 10}}\n- {name: broad, collection: all}\n",
        ),
        dep("future", "updateList: security\ncollection: all\nstartTime: 2027-01-01T00:00:00Z\n"),
    ]);
    let waiver: WaiverSpec = serde_json::from_value(serde_json::json!({
        "updates": ["KB001", "KB003", "KB005", "KB007", "KB009", "KB011", "KB013", "KB015", "KB017", "KB019"],
        "collection": "pilot", "reason": "vendor certification",
        "expires": "2027-01-31T00:00:00Z"
    }))
    .unwrap();
    d.waivers.insert("cert".into(), Waiver::new("cert", waiver));
    let settings: ClientSettingsSpec = doc("collection: workstations\npriority: 10\nminimumAgentVersion: \"1.0.0\"\n");
    d.client_settings.insert("ws".into(), ClientSettings::new("ws", settings));
    d
}

/// A random fleet touching every Table 1 case, `n` clients.
fn fleet(seed: u64, n: usize, catalog: &Catalog) -> Fleet {
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = at(NOW);
    let mut clients = Vec::new();
    for i in 0..n {
        let p = rng.usize(0..2);
        let role = if p == 1 { "server" } else { "workstation" };
        let agent = if rng.u8(0..15) == 0 { "0.9.0" } else { "1.2.0" };
        let mut c = ClientCompliance { agent_version: Some(agent.into()), ..Default::default() };
        match rng.u8(0..12) {
            0 => {}
            1 => c.pending_messages = 1,
            2 => c.last_failure = Some(ScanRecord { time: now, catalog_version: 2, error: Some("0x8024402c".into()) }),
            _ => {
                let age = if rng.u8(0..10) == 0 { 30 } else { rng.i64(0..20) };
                c.last_scan = Some(ScanRecord {
                    time: now - SignedDuration::from_hours(age),
                    catalog_version: if rng.bool() { 2 } else { 1 },
                    error: None,
                });
                for (idx, u) in catalog.updates.iter().enumerate() {
                    if u.products[0] != PRODUCTS[p] || rng.u8(0..3) == 0 {
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
            facts: [("role".to_string(), role.to_string()), ("os".to_string(), PRODUCTS[p].to_string())].into(),
            compliance: c,
        });
    }
    Fleet::new(clients)
}

fn site(seed: u64, n: usize) -> SiteState {
    let catalog = catalog();
    let fleet = fleet(seed, n, &catalog);
    SiteState::derive(
        Arc::new(desired()),
        Arc::new(catalog),
        BTreeMap::new(),
        fleet,
        &crate::reconcile::Previous::default(),
        at(NOW),
    )
}

fn all(state: Option<MachineState>) -> MachineQuery {
    MachineQuery { state, page: Page { offset: 0, limit: MAX_LIMIT }, ..Default::default() }
}

#[test]
fn machines_per_state_equal_the_deployment_status_counts() {
    for seed in [1, 2, 3, 4, 5] {
        let s = site(seed, 400);
        for (name, status) in &s.engine.outcome().deployments {
            let count = |st| machines(&s, name, &all(Some(st))).unwrap().total as u64;
            let m = &status.machines;
            let got = [
                count(MachineState::Compliant),
                count(MachineState::Required),
                count(MachineState::Unknown),
                count(MachineState::Waived),
                count(MachineState::Failed),
                count(MachineState::PendingReboot),
            ];
            assert_eq!(
                got,
                [m.compliant, m.required, m.unknown, m.waived, m.failed, m.pending_reboot],
                "seed {seed}, deployment {name}"
            );
            assert_eq!(machines(&s, name, &all(None)).unwrap().total as u64, status.targeted, "{name}");
        }
    }
}

#[test]
fn the_generated_site_exercises_every_machine_state() {
    let s = site(1, 400);
    let status = &s.engine.outcome().deployments["servers-dec"];
    let m = &status.machines;
    assert!(m.compliant > 0 && m.required > 0 && m.unknown > 0 && m.failed > 0 && m.pending_reboot > 0, "{m:?}");
    assert!(m.waived > 0 || status.waived_pairs > 0, "the waiver covers something: {status:?}");
}

#[test]
fn a_deployment_not_yet_available_lists_no_machines_and_phases_list_only_started_slots() {
    let s = site(2, 200);
    assert_eq!(machines(&s, "future", &all(None)).unwrap().total, 0);
    let phased = &s.engine.outcome().deployments["phased-w11"];
    let listed = machines(&s, "phased-w11", &all(None)).unwrap();
    assert_eq!(listed.total as u64, phased.targeted);
    assert!(listed.items.iter().all(|m| m.phase.is_some()));
    assert!(machines(&s, "nope", &all(None)).is_none());
}

#[test]
fn machine_rows_carry_the_table_1_sub_reason_and_a_message() {
    let s = site(3, 400);
    let required = machines(&s, "servers-dec", &all(Some(MachineState::Required))).unwrap();
    for m in &required.items {
        let r = m.reason.expect("a required machine has a reason");
        assert_eq!(r.state(), ComplianceState::Required, "{m:?}");
        assert!(m.message.as_deref().unwrap().contains("required"), "{m:?}");
    }
    let unknown = machines(&s, "servers-dec", &all(Some(MachineState::Unknown))).unwrap();
    assert!(unknown.items.iter().all(|m| m.reason.is_some_and(|r| r.state() == ComplianceState::Unknown)));
    let failed = machines(&s, "servers-dec", &all(Some(MachineState::Failed))).unwrap();
    assert!(failed.items.iter().any(|m| m.message.as_deref().is_some_and(|t| t.contains("failed"))));
}

#[test]
fn pages_sort_and_text_filter_cut_where_they_say() {
    let s = site(4, 300);
    let full = machines(&s, "servers-dec", &all(None)).unwrap();
    let names: Vec<&str> = full.items.iter().map(|m| m.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let q = MachineQuery { page: Page::new(5, 10).unwrap(), ..Default::default() };
    let page = machines(&s, "servers-dec", &q).unwrap();
    assert_eq!((page.total, page.offset, page.items.len()), (full.total, 5, 10));
    assert_eq!(page.items[0].name, full.items[5].name);
    let by_scan = MachineQuery { sort: Sort::LastScan, page: Page::new(0, MAX_LIMIT).unwrap(), ..Default::default() };
    let scans: Vec<Option<Timestamp>> =
        machines(&s, "servers-dec", &by_scan).unwrap().items.iter().map(|m| m.last_scan).collect();
    assert!(scans.windows(2).all(|w| w[0] <= w[1]));
    let one = MachineQuery { q: Some(full.items[0].name.to_uppercase()), ..Default::default() };
    assert_eq!(machines(&s, "servers-dec", &one).unwrap().items[0].name, full.items[0].name);
    assert!(Page::new(0, 1001).is_err() && Page::new(0, 0).is_err());
    assert!("bogus".parse::<Sort>().is_err() && "-lastScan".parse::<Sort>().is_ok());
}

#[test]
fn listing_10000_machines_of_a_deployment_stays_fast() {
    let s = site(5, 20_000);
    let started = std::time::Instant::now();
    let q = MachineQuery { state: Some(MachineState::Required), ..Default::default() };
    let page = machines(&s, "servers-dec", &q).unwrap();
    let took = started.elapsed();
    assert!(page.total > 1000, "{}", page.total);
    // Debug build, shared 2-core machine: generous, and still far from a timeout.
    assert!(took < std::time::Duration::from_secs(2), "took {took:?}");
}

#[test]
fn updates_are_found_by_cve_kb_advisory_and_text_with_fleet_counts_and_deployments() {
    let s = site(1, 300);
    let q = |f: fn(&mut UpdateQuery)| {
        let mut query = UpdateQuery::default();
        f(&mut query);
        updates(&s, &query).items.into_iter().map(|u| u.id).collect::<Vec<_>>()
    };
    assert_eq!(q(|x| x.cve = Some("cve-2026-1111".into())), ["DSA-5380-1-bookworm", "KB003-1"], "catalog order");
    assert_eq!(q(|x| x.cve = Some("CVE-2026-2222".into())), ["DSA-5380-1-bookworm"]);
    assert_eq!(q(|x| x.advisory = Some("DSA-5380-1".into())), ["DSA-5380-1-bookworm"]);
    assert!(q(|x| x.advisory = Some("DSA-538".into())).is_empty(), "an advisory is a whole id, not a prefix");
    assert_eq!(q(|x| x.kb = Some("kb007".into())), ["KB007-1"]);
    assert_eq!(q(|x| x.q = Some("kb01".into())).len(), 10);
    assert_eq!(q(|x| x.product = Some("windows 11".into())).len(), 10);
    assert_eq!(q(|x| x.superseded = Some(true)).len(), 0);
    let one = super::update(&s, "KB003-1").unwrap();
    assert_eq!(one.summary.deployments, ["future", "servers-dec"]);
    // The counts agree with the update list's (the same Table 1 counting).
    let list = &s.engine.outcome().update_lists["security"];
    let counted = list.updates.iter().find(|u| u.id == "KB003-1").unwrap();
    assert_eq!((one.summary.required, one.summary.installed), (counted.counts.required, counted.counts.installed));
    assert!(super::update(&s, "KB999").is_none());
    assert_eq!(super::update(&s, "KB003").unwrap().summary.id, "KB003-1", "a unique KB finds its update");
}

#[test]
fn clients_page_by_selector_and_text() {
    let s = site(2, 250);
    let servers = clients(&s, &ClientQuery { selector: parse_selector("role=server").unwrap(), ..Default::default() });
    assert_eq!(servers.total, s.fleet.clients.iter().filter(|c| c.facts["role"] == "server").count());
    let mut seen = Vec::new();
    let mut offset = 0;
    loop {
        let page = clients(&s, &ClientQuery { page: Page::new(offset, 60).unwrap(), ..Default::default() });
        if page.items.is_empty() {
            break;
        }
        offset += page.items.len();
        seen.extend(page.items.into_iter().map(|c| c.name));
    }
    assert_eq!(seen.len(), 250);
    assert!(parse_selector("role").is_err());
}

#[test]
fn a_client_shows_every_update_with_its_table_1_reason_and_one_sentence_on_compliance() {
    let s = site(3, 300);
    let mut sentences = std::collections::BTreeSet::new();
    for c in &s.fleet.clients {
        let d = client(&s, &c.name).unwrap();
        assert!(d.why_not_compliant.ends_with('.'), "{}", d.why_not_compliant);
        sentences.insert(d.why_not_compliant.split(' ').next().unwrap().to_string());
        for u in &d.updates {
            assert_eq!(u.reason.state(), u.state, "{u:?}");
        }
        if let Some(r) = d.unknown_reason {
            assert!(d.updates.iter().all(|u| u.reason == r));
        }
        assert_eq!(
            d.deployments.len() as u64,
            clients(&s, &ClientQuery { q: Some(c.name.clone()), ..Default::default() })
                .items
                .iter()
                .find(|x| x.name == c.name)
                .unwrap()
                .deployments
        );
    }
    for word in ["Required:", "Compliant:", "Its"] {
        assert!(sentences.contains(word), "{sentences:?}");
    }
    assert!(client(&s, "nobody").is_none());
}

#[test]
fn the_site_summary_counts_every_client_once() {
    let s = site(4, 200);
    let summary = super::site(&s);
    assert_eq!(summary.states.values().sum::<u64>(), 200);
    assert!(summary.states.contains_key("Scanned") && summary.states.contains_key("NoStateReceived"));
    assert_eq!((summary.deployments, summary.catalog_version), (3, 2));
    assert_eq!(deployments(&s).len(), 3);
    assert_eq!(collections(&s).len(), 4);
    assert_eq!(update_lists(&s).len(), 2);
    let pilot = members(&s, "pilot", None, Page::default()).unwrap();
    assert_eq!(pilot.total, 8);
    assert_eq!(deployment(&s, "phased-w11").unwrap().collections, ["pilot", "all"]);
}
