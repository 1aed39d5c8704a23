//! The live site engine against a real SQLite store: after a cold start it follows the
//! change feed — state batches, a registration — and its statuses, policies and what it
//! publishes equal a full reconcile of the store at the same moment.

mod common;
use common::at;

use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, ScanResult};
use patchops::reconcile::{Inputs, previous_from, reconcile};
use patchops::site::{Site, SiteHandle, SiteOptions};
use patchops::store::ClientInfo;

const NOW: &str = "2026-12-02T10:00:00Z";
/// Above any sequence number the simulated clients used.
const SEQ: u64 = i64::MAX as u64 - 100;

/// A scan of `client` reporting every update of the catalog with `result`.
fn scan(client: &str, sequence: u64, catalog: &patchops::catalog::Catalog, result: ScanResult) -> StateBatch {
    StateBatch {
        client: client.into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time: at(NOW),
            catalog_version: catalog.version,
            agent_version: Some("1.0.0".into()),
            updates: catalog
                .updates
                .iter()
                .take(40)
                .map(|u| UpdateReport { id: u.id.clone(), result, enforcement: Enforcement::None })
                .collect(),
        }],
    }
}

#[test]
fn s6_the_site_engine_follows_batches_and_registrations_and_equals_a_full_reconcile_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let now = at(NOW);
    let (store_path, state) = common::example_site(dir.path(), now);
    let (desired, catalog) = ((*state.desired).clone(), (*state.catalog).clone());
    let handle = SiteHandle::default();
    let mut site = Site::start(
        handle.clone(),
        patchops::store::open(&store_path).unwrap(),
        desired.clone(),
        catalog.clone(),
        state.catalog_status.clone(),
        now,
        SiteOptions::default(),
    )
    .unwrap();
    let first = site.publish(now).unwrap();
    assert_eq!(site.follow(now).unwrap(), 0, "nothing changed since the cold start");

    // Another connection writes, as a management point does: three scans and a new client.
    let mut writer = patchops::store::open(&store_path).unwrap();
    let names: Vec<String> = state.fleet.clients.iter().take(3).map(|c| c.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let result = if i % 2 == 0 { ScanResult::Missing } else { ScanResult::Installed };
        let outcome = writer.apply_batch(&scan(name, SEQ + i as u64, &catalog, result), now).unwrap();
        assert_eq!(outcome, patchops::store::BatchOutcome::Applied);
    }
    let newcomer = ClientInfo {
        name: "zz-new-server".into(),
        facts: state.fleet.clients[0].facts.clone(),
        agent_version: Some("1.0.0".into()),
    };
    writer.enroll_client(&newcomer, &"ab".repeat(32), None, now).unwrap();
    writer.apply_batch(&scan("zz-new-server", 1, &catalog, ScanResult::Missing), now).unwrap();
    // A replayed batch is no change.
    writer.apply_batch(&scan(&names[0], SEQ, &catalog, ScanResult::Installed), now).unwrap();

    assert_eq!(site.follow(now).unwrap(), 4, "the three scanned clients and the newcomer, once each");
    let fleet = writer.load_fleet().unwrap();
    let previous = previous_from(&first.statuses);
    let full = reconcile(&Inputs { desired: &desired, catalog: &catalog, fleet: &fleet, previous: &previous, now });
    let live = handle.read(|s| s.engine.outcome().clone()).unwrap();
    assert_eq!(live.deployments, full.deployments);
    assert_eq!(live.collections, full.collections);
    assert_eq!(live.update_lists, full.update_lists);
    let (etag, policy) = handle.policy("zz-new-server").unwrap().expect("the newcomer has a policy");
    let i = fleet.index_of("zz-new-server").unwrap();
    assert_eq!(etag, full.etag_of(i));
    assert_eq!(policy.as_ref(), full.policy_of(i));
    assert_ne!(first.statuses, site.publish(now).unwrap().statuses, "the scans moved a status");

    // What was published is what a full reconcile gives, and the newcomer's policy is in the store.
    let saved = writer.last_reconcile().unwrap().unwrap();
    for s in saved.statuses.iter().filter(|s| s.kind == "UpdateDeployment") {
        assert_eq!(s.status, serde_json::to_value(&full.deployments[&s.name]).unwrap(), "{}", s.name);
    }
    let (stored_etag, _) = writer.client_policy("zz-new-server").unwrap().unwrap();
    assert_eq!(stored_etag, etag);

    // A restart from the store gives the same picture.
    drop(site);
    let restarted = SiteHandle::default();
    let _site = Site::start(
        restarted.clone(),
        patchops::store::open(&store_path).unwrap(),
        desired,
        catalog,
        state.catalog_status.clone(),
        now,
        SiteOptions::default(),
    )
    .unwrap();
    assert_eq!(restarted.read(|s| s.engine.outcome().deployments.clone()).unwrap(), full.deployments);
}
