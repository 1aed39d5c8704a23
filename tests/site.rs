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
    scan_at(client, sequence, catalog, result, at(NOW))
}

/// [`scan`] at `time`.
fn scan_at(
    client: &str,
    sequence: u64,
    catalog: &patchops::catalog::Catalog,
    result: ScanResult,
    time: jiff::Timestamp,
) -> StateBatch {
    StateBatch {
        client: client.into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time,
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

/// A site engine over the store at `path` (a cold start), from `desired` and `catalog`.
fn start(
    handle: &SiteHandle,
    path: &str,
    desired: patchops::desired::DesiredState,
    catalog: patchops::catalog::Catalog,
    state: &patchops::site::SiteState,
    now: jiff::Timestamp,
) -> Site {
    let store = patchops::store::open(path).unwrap();
    Site::start(handle.clone(), store, desired, catalog, state.catalog_status.clone(), now, SiteOptions::default())
        .unwrap()
}

#[test]
fn s6_the_site_engine_follows_batches_and_registrations_and_equals_a_full_reconcile_of_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let now = at(NOW);
    let (store_path, state) = common::example_site(dir.path(), now);
    let (desired, catalog) = ((*state.desired).clone(), (*state.catalog).clone());
    let handle = SiteHandle::default();
    let mut site = start(&handle, &store_path, desired.clone(), catalog.clone(), &state, now);
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
    let _site = start(&restarted, &store_path, desired, catalog, &state, now);
    assert_eq!(restarted.read(|s| s.engine.outcome().deployments.clone()).unwrap(), full.deployments);
}

/// Waits (at most 20 s) until `ready` holds.
fn eventually(what: &str, ready: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !ready() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Every client's policy ETag and every deployment's machine counts: what a following
/// management point must agree on with the site's owner.
type Picture = (Vec<(String, String)>, Vec<(String, serde_json::Value)>);

fn picture(handle: &SiteHandle) -> Picture {
    handle
        .read(|s| {
            let o = s.engine.outcome();
            let mut etags: Vec<(String, String)> =
                s.fleet.clients.iter().enumerate().map(|(i, c)| (c.name.clone(), o.etag_of(i).to_string())).collect();
            etags.sort();
            let counts = o
                .deployments
                .iter()
                .map(|(n, d)| (n.clone(), serde_json::json!([d.machines, d.compliance_percent, d.targeted])))
                .collect();
            (etags, counts)
        })
        .unwrap_or_default()
}

#[test]
fn s6_a_management_point_follows_the_site_its_owner_publishes_with_the_same_policies_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let now = jiff::Timestamp::now();
    let (store_path, state) = common::example_site(dir.path(), now);
    let (desired, catalog) = ((*state.desired).clone(), (*state.catalog).clone());
    let owner = SiteHandle::default();
    let mut site = start(&owner, &store_path, desired.clone(), catalog.clone(), &state, now);
    site.publish(now).unwrap();

    let follower = SiteHandle::default();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let thread = patchops::site::follower::spawn(store_path.clone(), follower.clone(), stop.clone());
    eventually("the follower starts from what the owner published", || follower.started());
    assert_eq!(picture(&follower), picture(&owner));
    assert!(!picture(&owner).0.is_empty());

    // A management point takes scans: the follower has them without the owner's help.
    let mut writer = patchops::store::open(&store_path).unwrap();
    let names: Vec<String> = state.fleet.clients.iter().take(5).map(|c| c.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        writer.apply_batch(&scan_at(name, SEQ + i as u64, &catalog, ScanResult::Installed, now), now).unwrap();
    }
    let before = picture(&owner);
    let stored = writer.load_clients(&names).unwrap();
    let held = |h: &SiteHandle| {
        h.read(|s| names.iter().map(|n| s.client(n).unwrap().1.compliance.clone()).collect::<Vec<_>>()).unwrap()
    };
    let wanted: Vec<_> =
        names.iter().map(|n| stored.iter().find(|c| &c.name == n).unwrap().compliance.clone()).collect();
    assert_ne!(held(&owner), wanted, "the scans changed what the store holds");
    eventually("the follower applies the feed", || held(&follower) == wanted);
    site.follow(jiff::Timestamp::now()).unwrap();
    assert_ne!(picture(&owner).1, before.1, "the scans moved a deployment's counts");
    assert_eq!(picture(&follower), picture(&owner));

    // The owner derives from a new revision without one deployment: the follower follows it.
    let mut next = desired.clone();
    next.revision = "main@sha1:0000000000000000000000000000000000000002".into();
    let dropped = next.deployments.keys().next().cloned().unwrap();
    next.deployments.remove(&dropped);
    site.set_desired(next.clone(), catalog.clone(), state.catalog_status.clone(), jiff::Timestamp::now());
    site.publish(jiff::Timestamp::now()).unwrap();
    eventually("the follower takes the new desired state", || {
        follower.read(|s| s.desired.revision == next.revision).unwrap_or(false)
    });
    assert!(follower.read(|s| !s.engine.outcome().deployments.contains_key(&dropped)).unwrap());
    assert_eq!(picture(&follower), picture(&owner));

    // Feed rows pruned before the follower read them: it reloads the fleet from the store.
    writer.apply_batch(&scan_at(&names[0], SEQ + 100, &catalog, ScanResult::Missing, now), now).unwrap();
    let head = writer.feed_head().unwrap();
    writer.prune_feed(head).unwrap();
    writer.set_setting("site.feed.pruned", &head.to_string()).unwrap();
    let stored = writer.load_clients(std::slice::from_ref(&names[0])).unwrap().remove(0).compliance;
    eventually("the follower has the scan whose feed row was pruned", || {
        follower.read(|s| s.client(&names[0]).unwrap().1.compliance == stored).unwrap()
    });
    // And it derives what the owner derives from a cold start of the same store.
    let restarted = SiteHandle::default();
    let _owner = start(&restarted, &store_path, next.clone(), catalog.clone(), &state, jiff::Timestamp::now());
    eventually("the follower equals a cold start", || picture(&follower) == picture(&restarted));

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    follower.wake();
    thread.join().unwrap();
}
