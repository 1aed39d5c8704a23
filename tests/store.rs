//! The store suite: every case runs against both backends (`sqlite_<case>` on a temp
//! file, `postgres_<case>` in a fresh schema of the test database).
//!
//! PostgreSQL: `PATCHOPS_TEST_POSTGRES_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is not reachable the postgres
//! tests fail and say how to start it.
//!
//! Benchmarks (ignored): `cargo test --release --test store -- --ignored --nocapture bench`
//! with `PATCHOPS_BENCH_CLIENTS` (default 100000 for SQLite, 10000 for PostgreSQL) and
//! `PATCHOPS_BENCH_STATES` (per client, default 200); `PATCHOPS_BENCH_FILE` keeps the
//! SQLite file and, when it exists, only loads it.

mod common;
use common::{at, update};

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use patchops::Error;
use patchops::catalog::Update;
use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{
    ComplianceState, Enforcement, Fleet, PackedState, Reason, ScanRecord, ScanResult, classify, client_unknown_reason,
};
use patchops::store::postgres::PostgresStore;
use patchops::store::sqlite::SqliteStore;
use patchops::store::{
    BatchOutcome, CatalogSaved, ClientInfo, Enrollment, PolicyAssignment, REJECTED_PER_CLIENT, REJECTED_PREFIX_BYTES,
    REJECTED_TOTAL, ReconcileRecord, ResourceStatus, Store, StoreError,
};
use serde_json::json;

// ---------------------------------------------------------------------------------------
// Harness: one backend per test, a store opened (and reopened) from it.

/// What the cases need beyond the trait: plain SQL and settings.
trait TestStore: Store {
    fn rows(&self, sql: &str) -> Vec<Vec<String>>;
    fn put_setting(&mut self, key: &str, value: &str);
}

impl TestStore for SqliteStore {
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.query_rows(sql).unwrap_or_else(|e| panic!("{e}"))
    }
    fn put_setting(&mut self, key: &str, value: &str) {
        self.set_setting(key, value).unwrap();
    }
}

impl TestStore for PostgresStore {
    fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        self.query_rows(sql).unwrap_or_else(|e| panic!("{e}"))
    }
    fn put_setting(&mut self, key: &str, value: &str) {
        self.set_setting(key, value).unwrap();
    }
}

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

fn pg_url() -> String {
    std::env::var("PATCHOPS_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_string())
}

enum Backend {
    Sqlite { _dir: tempfile::TempDir, path: PathBuf },
    Postgres { url: String, schema: String },
}

impl Backend {
    fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store").join("patchops.db");
        Backend::Sqlite { _dir: dir, path }
    }

    fn postgres() -> Self {
        let url = pg_url();
        if let Err(e) = postgres::Client::connect(&url, postgres::NoTls) {
            panic!(
                "PostgreSQL is not reachable at {url}: {e} ({:?}).\n\
                 Start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 (and create the database: createdb -h 127.0.0.1 -U postgres test), or point \
                 PATCHOPS_TEST_POSTGRES_URL at another server.",
                std::error::Error::source(&e).map(|s| s.to_string())
            );
        }
        let schema = format!("patchops_test_{:016x}", fastrand::u64(..));
        Backend::Postgres { url, schema }
    }

    fn open(&self) -> Box<dyn TestStore> {
        match self {
            Backend::Sqlite { path, .. } => Box::new(SqliteStore::open(path).unwrap()),
            Backend::Postgres { url, schema } => Box::new(PostgresStore::open_in_schema(url, schema).unwrap()),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Backend::Postgres { url, schema } = self
            && let Ok(mut c) = postgres::Client::connect(url, postgres::NoTls)
        {
            let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
        }
    }
}

/// Two tests per case: `$sqlite` and `$postgres`.
macro_rules! both {
    ($($case:ident: $sqlite:ident, $postgres:ident;)*) => {$(
        #[test]
        fn $sqlite() {
            $case(&Backend::sqlite());
        }
        #[test]
        fn $postgres() {
            $case(&Backend::postgres());
        }
    )*};
}

both! {
    a_first_batch_numbered_0_is_applied_and_only_its_replay_is_a_duplicate:
        sqlite_a_first_batch_numbered_0_is_applied_and_only_its_replay_is_a_duplicate,
        postgres_a_first_batch_numbered_0_is_applied_and_only_its_replay_is_a_duplicate;
    a_taken_name_is_registered_again_only_with_its_token_and_revoke_release_control_it:
        sqlite_a_taken_name_is_registered_again_only_with_its_token_and_revoke_release_control_it,
        postgres_a_taken_name_is_registered_again_only_with_its_token_and_revoke_release_control_it;
    a_batch_sent_with_a_replaced_token_generation_is_not_applied:
        sqlite_a_batch_sent_with_a_replaced_token_generation_is_not_applied,
        postgres_a_batch_sent_with_a_replaced_token_generation_is_not_applied;
    rejected_batches_keep_size_and_a_bounded_prefix_and_are_capped_per_client:
        sqlite_rejected_batches_keep_size_and_a_bounded_prefix_and_are_capped_per_client,
        postgres_rejected_batches_keep_size_and_a_bounded_prefix_and_are_capped_per_client;
    a_fleet_loaded_for_some_updates_has_every_client_and_only_their_states:
        sqlite_a_fleet_loaded_for_some_updates_has_every_client_and_only_their_states,
        postgres_a_fleet_loaded_for_some_updates_has_every_client_and_only_their_states;
    catalog_versions_only_when_content_changes:
        sqlite_catalog_versions_only_when_content_changes,
        postgres_catalog_versions_only_when_content_changes;
    s6_batch_states_are_stored_and_loaded:
        sqlite_s6_batch_states_are_stored_and_loaded,
        postgres_s6_batch_states_are_stored_and_loaded;
    scan_replaces_previous_states:
        sqlite_scan_replaces_previous_states,
        postgres_scan_replaces_previous_states;
    s6_replayed_batch_is_a_duplicate:
        sqlite_s6_replayed_batch_is_a_duplicate,
        postgres_s6_replayed_batch_is_a_duplicate;
    s6_a_group_of_batches_commits_together_and_a_bad_batch_is_rolled_back_alone:
        sqlite_s6_a_group_of_batches_commits_together_and_a_bad_batch_is_rolled_back_alone,
        postgres_s6_a_group_of_batches_commits_together_and_a_bad_batch_is_rolled_back_alone;
    unknown_update_fails_the_whole_batch:
        sqlite_unknown_update_fails_the_whole_batch,
        postgres_unknown_update_fails_the_whole_batch;
    unregistered_client_is_refused:
        sqlite_unregistered_client_is_refused,
        postgres_unregistered_client_is_refused;
    t1_u4_rejected_message_is_kept:
        sqlite_t1_u4_rejected_message_is_kept,
        postgres_t1_u4_rejected_message_is_kept;
    t1_u1_scan_failure_sets_last_failure:
        sqlite_t1_u1_scan_failure_sets_last_failure,
        postgres_t1_u1_scan_failure_sets_last_failure;
    reconcile_round_trip_and_history:
        sqlite_reconcile_round_trip_and_history,
        postgres_reconcile_round_trip_and_history;
    s8_s7_last_scan_and_agent_version_views:
        sqlite_s8_s7_last_scan_and_agent_version_views,
        postgres_s8_s7_last_scan_and_agent_version_views;
    update_compliance_view_counts:
        sqlite_update_compliance_view_counts,
        postgres_update_compliance_view_counts;
    reopened_store_has_the_same_data:
        sqlite_reopened_store_has_the_same_data,
        postgres_reopened_store_has_the_same_data;
    bulk_load_states_round_trips:
        sqlite_bulk_load_states_round_trips,
        postgres_bulk_load_states_round_trips;
    clients_enroll_with_a_token_and_read_their_own_policy:
        sqlite_clients_enroll_with_a_token_and_read_their_own_policy,
        postgres_clients_enroll_with_a_token_and_read_their_own_policy;
    o2_catalog_deltas_turn_any_version_into_any_later_one:
        sqlite_o2_catalog_deltas_turn_any_version_into_any_later_one,
        postgres_o2_catalog_deltas_turn_any_version_into_any_later_one;
}

// ---------------------------------------------------------------------------------------
// Builders.

fn client(name: &str, site: &str, role: &str, agent: Option<&str>) -> ClientInfo {
    ClientInfo {
        name: name.into(),
        facts: BTreeMap::from([
            ("site".to_string(), site.to_string()),
            ("role".to_string(), role.to_string()),
            ("os".to_string(), "Windows Server 2022".to_string()),
        ]),
        agent_version: agent.map(str::to_string),
    }
}

fn scan(time: Timestamp, version: u64, updates: &[(&str, ScanResult, Enforcement)]) -> StateMessage {
    StateMessage::ScanCompleted {
        time,
        catalog_version: version,
        agent_version: None,
        updates: updates
            .iter()
            .map(|(id, result, enforcement)| UpdateReport {
                id: id.to_string(),
                result: *result,
                enforcement: *enforcement,
            })
            .collect(),
    }
}

fn enforce(time: Timestamp, id: &str, state: Enforcement) -> StateMessage {
    StateMessage::Enforcement { time, update: id.into(), state }
}

fn batch(client: &str, sequence: u64, messages: Vec<StateMessage>) -> StateBatch {
    StateBatch { client: client.into(), sequence, messages }
}

/// A client's states as (update id, scan, enforcement), in key order.
fn states(store: &dyn TestStore, name: &str) -> Vec<(String, ScanResult, Enforcement)> {
    let catalog = store.load_catalog().unwrap();
    let id_of: HashMap<u32, String> =
        catalog.keys.iter().zip(&catalog.updates).map(|(k, u)| (*k, u.id.clone())).collect();
    let fleet = store.load_fleet().unwrap();
    let c = &fleet.clients[fleet.index_of(name).expect("client in the fleet")];
    let keys: Vec<u32> = c.compliance.states.iter().map(|s| s.key()).collect();
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "states sorted by key: {keys:?}");
    c.compliance.states.iter().map(|s| (id_of[&s.key()].clone(), s.scan(), s.enforcement())).collect()
}

fn st(id: &str, scan: ScanResult, e: Enforcement) -> (String, ScanResult, Enforcement) {
    (id.to_string(), scan, e)
}

fn one(store: &dyn TestStore, sql: &str) -> String {
    let rows = store.rows(sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:?}");
    rows[0][0].clone()
}

use Enforcement as E;
use ScanResult::{Installed, Missing};

const T0: &str = "2026-11-24T06:00:00Z";
const T1: &str = "2026-11-24T07:00:00Z";
const T2: &str = "2026-11-24T08:00:00Z";

/// A store with catalog version 1 (KB1-a, KB2-a, KB3-a) and client web-01.
fn seeded(b: &Backend) -> Box<dyn TestStore> {
    let mut s = b.open();
    s.save_catalog(&[update("KB1-a"), update("KB2-a"), update("KB3-a")], at(T0)).unwrap();
    s.upsert_client(&client("web-01", "paris", "web", Some("10.0.1")), at(T0)).unwrap();
    s
}

// ---------------------------------------------------------------------------------------
// Cases.

/// Item 1 of the hardening issue: "never seen" is not sequence 0, so a new client's batch 0
/// is stored (it used to be acknowledged as a duplicate and dropped).
fn a_first_batch_numbered_0_is_applied_and_only_its_replay_is_a_duplicate(b: &Backend) {
    let mut s = seeded(b);
    let first = batch("web-01", 0, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]);
    assert_eq!(s.apply_batch(&first, at(T1)).unwrap(), BatchOutcome::Applied);
    assert_eq!(states(&*s, "web-01"), vec![("KB1-a".to_string(), Missing, E::None)]);
    assert_eq!(s.apply_batch(&first, at(T2)).unwrap(), BatchOutcome::Duplicate, "a replay of 0 is a duplicate");
    let next = batch("web-01", 1, vec![scan(at(T2), 1, &[("KB1-a", Installed, E::None)])]);
    assert_eq!(s.apply_batch(&next, at(T2)).unwrap(), BatchOutcome::Applied);
    assert_eq!(s.rows("SELECT last_sequence FROM clients WHERE name = 'web-01'"), [vec!["1".to_string()]]);
}

/// Item 2: holding the enrollment secret is not enough to take over a registered name.
fn a_taken_name_is_registered_again_only_with_its_token_and_revoke_release_control_it(b: &Backend) {
    let mut s = seeded(b);
    let web02 = client("web-02", "paris", "web", None);
    let owner = |s: &dyn TestStore, hash: &str| s.client_for_token(hash).unwrap().map(|o| o.client);
    assert_eq!(s.enroll_client(&web02, "hash-a", None, at(T0)).unwrap(), Enrollment::Enrolled);
    assert_eq!(s.enroll_client(&web02, "hash-evil", None, at(T1)).unwrap(), Enrollment::NameTaken);
    assert_eq!(s.enroll_client(&web02, "hash-evil", Some("hash-guess"), at(T1)).unwrap(), Enrollment::NameTaken);
    assert_eq!(owner(&*s, "hash-a").as_deref(), Some("web-02"), "the holder keeps its token");
    assert_eq!(owner(&*s, "hash-evil"), None);
    // A client known from facts only (no token yet) registers freely.
    assert_eq!(
        s.enroll_client(&client("web-01", "paris", "web", None), "hash-w1", None, at(T1)).unwrap(),
        Enrollment::Enrolled
    );

    assert!(s.rotate_token("web-02", "hash-a", "hash-b").unwrap());
    assert!(!s.rotate_token("web-02", "hash-a", "hash-c").unwrap(), "a rotated token cannot rotate again");
    assert_eq!((owner(&*s, "hash-a"), owner(&*s, "hash-b").as_deref()), (None, Some("web-02")));

    assert!(s.revoke_client("web-02", at(T1)).unwrap());
    assert_eq!(owner(&*s, "hash-b"), None, "a revoked token no longer works");
    assert_eq!(
        s.enroll_client(&web02, "hash-d", None, at(T2)).unwrap(),
        Enrollment::Revoked { at: at(T1) },
        "a revoked name stays refused"
    );
    assert!(s.release_client("web-02").unwrap());
    assert_eq!(s.enroll_client(&web02, "hash-d", None, at(T2)).unwrap(), Enrollment::Enrolled);
    assert_eq!(owner(&*s, "hash-d").as_deref(), Some("web-02"));
    assert!(!s.revoke_client("nobody", at(T2)).unwrap());
    assert!(!s.release_client("nobody").unwrap());
}

/// Item 3: a management point that checked a token before it was replaced elsewhere
/// cannot apply a batch with it: the generation is confirmed in the batch's transaction.
fn a_batch_sent_with_a_replaced_token_generation_is_not_applied(b: &Backend) {
    let mut s = seeded(b);
    let web02 = client("web-02", "paris", "web", None);
    s.enroll_client(&web02, "hash-a", None, at(T0)).unwrap();
    let checked = s.client_for_token("hash-a").unwrap().unwrap().generation;
    s.rotate_token("web-02", "hash-a", "hash-b").unwrap();
    let now = s.client_for_token("hash-b").unwrap().unwrap().generation;
    assert!(now > checked, "rotation bumps the generation");
    let one = batch("web-02", 1, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]);
    assert_eq!(s.apply_batch_checked(&one, Some(checked), at(T1)).unwrap(), BatchOutcome::TokenReplaced);
    assert!(states(&*s, "web-02").is_empty(), "nothing applied");
    assert_eq!(s.apply_batch_checked(&one, Some(now), at(T1)).unwrap(), BatchOutcome::Applied);
    s.revoke_client("web-02", at(T2)).unwrap();
    let two = batch("web-02", 2, vec![]);
    assert_eq!(s.apply_batch_checked(&two, Some(now), at(T2)).unwrap(), BatchOutcome::TokenReplaced);
}

/// Item 4: ten malformed 8 MB batches used to grow the store by 177 MiB. Now each keeps
/// its size, the error and a 4 KiB prefix, and only the newest are kept per client.
fn rejected_batches_keep_size_and_a_bounded_prefix_and_are_capped_per_client(b: &Backend) {
    let mut s = seeded(b);
    let big = format!("{{\"client\":\"web-01\",\"junk\":\"{}é", "x".repeat(8 << 20));
    for i in 0..(REJECTED_PER_CLIENT + 5) {
        s.record_rejected("web-01", &big, &format!("error {i}"), at(T1)).unwrap();
    }
    s.record_rejected("db-01", "{", "EOF", at(T2)).unwrap();
    let rows = s.rows("SELECT client, length(raw), size, error FROM rejected_messages ORDER BY id");
    assert_eq!(rows.len() as i64, REJECTED_PER_CLIENT + 1, "{:?}", &rows[..2]);
    let web01: Vec<&Vec<String>> = rows.iter().filter(|r| r[0] == "web-01").collect();
    assert_eq!(web01.len() as i64, REJECTED_PER_CLIENT);
    assert_eq!(web01[0][3], "error 5", "the oldest are dropped");
    assert!(web01.iter().all(|r| r[1].parse::<usize>().unwrap() <= REJECTED_PREFIX_BYTES), "{:?}", web01[0]);
    assert!(web01.iter().all(|r| r[2] == big.len().to_string()), "the size received is kept");
    assert_eq!(rows.last().unwrap(), &["db-01", "1", "1", "EOF"].map(String::from).to_vec());
}

/// A token identifies one client; enrolling again replaces it. A client's policy is the
/// document its assignment names.
fn clients_enroll_with_a_token_and_read_their_own_policy(b: &Backend) {
    let mut s = seeded(b);
    let owner = |s: &dyn TestStore, hash: &str| s.client_for_token(hash).unwrap().map(|o| o.client);
    let enrolled = s.enroll_client(&client("web-02", "paris", "web", Some("10.0.1")), "hash-a", None, at(T0));
    assert_eq!(enrolled.unwrap(), Enrollment::Enrolled);
    assert_eq!(owner(&*s, "hash-a").as_deref(), Some("web-02"));
    assert_eq!(owner(&*s, "hash-x"), None);
    s.enroll_client(&client("web-02", "paris", "web", None), "hash-b", Some("hash-a"), at(T1)).unwrap();
    assert_eq!(owner(&*s, "hash-a"), None, "the old token no longer works");
    assert_eq!(owner(&*s, "hash-b").as_deref(), Some("web-02"));
    assert_eq!(s.client_policy("web-02").unwrap(), None);
    let record = ReconcileRecord { time: at(T1), revision: "main@sha1:a".into(), catalog_version: 1, statuses: vec![] };
    let policies = HashMap::from([("e1".to_string(), json!({"catalogVersion": 1}))]);
    let assign = vec![PolicyAssignment { client: "web-02".into(), etag: "e1".into() }];
    s.save_reconcile(&record, &policies, &assign).unwrap();
    assert_eq!(s.client_policy("web-02").unwrap(), Some(("e1".to_string(), json!({"catalogVersion": 1}))));
    assert_eq!(s.client_policy("web-01").unwrap(), None, "each client reads only its own assignment");
}

/// Five versions with additions, changes, removals and a re-added id: every stored
/// version loads as saved, and for every pair the delta applied to the older gives the
/// newer (the delta is read from the versioned rows, not by comparing whole catalogs).
fn o2_catalog_deltas_turn_any_version_into_any_later_one(b: &Backend) {
    let mut s = b.open();
    let mut retitled = update("KB2-a");
    retitled.title = "re-released".into();
    let mut expired = update("KB1-a");
    expired.expired = true;
    let versions: Vec<Vec<Update>> = vec![
        vec![update("KB1-a"), update("KB2-a")],
        vec![update("KB1-a"), retitled.clone(), update("KB3-a")],
        vec![expired.clone(), retitled.clone()],
        vec![expired.clone(), retitled, update("KB3-a"), update("KB4-a")],
        vec![update("KB4-a")],
    ];
    for (i, v) in versions.iter().enumerate() {
        let saved = s.save_catalog(v, at(T0) + SignedDuration::from_hours(i as i64)).unwrap();
        assert_eq!(saved.version, i as u64 + 1);
    }
    let sorted = |v: &[Update]| {
        let mut v = v.to_vec();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    for (i, v) in versions.iter().enumerate() {
        assert_eq!(s.load_catalog_version(i as u64 + 1).unwrap().updates, sorted(v), "version {}", i + 1);
    }
    assert!(s.load_catalog_version(0).unwrap().updates.is_empty());
    for from in 0..=5u64 {
        for to in from..=5u64 {
            let delta = s.catalog_delta(from, to).unwrap();
            let base = s.load_catalog_version(from).unwrap().updates;
            assert_eq!(delta.apply(&base), s.load_catalog_version(to).unwrap().updates, "{from} -> {to}");
        }
    }
    let d = s.catalog_delta(1, 2).unwrap();
    assert_eq!(d.upserts.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), vec!["KB2-a", "KB3-a"]);
    assert!(d.removed.is_empty());
    assert_eq!(s.catalog_delta(3, 5).unwrap().removed, vec!["KB1-a".to_string(), "KB2-a".to_string()]);
    let err = s.catalog_delta(1, 9).unwrap_err().to_string();
    assert!(err.contains("catalog version 9 does not exist; the newest is 5"), "{err}");
    assert!(s.catalog_delta(4, 2).is_err());
    let listed: Vec<(u64, u64)> = s.catalog_versions().unwrap().iter().map(|v| (v.version, v.update_count)).collect();
    assert_eq!(listed, vec![(1, 2), (2, 3), (3, 2), (4, 4), (5, 1)]);
}

fn catalog_versions_only_when_content_changes(b: &Backend) {
    let mut s = b.open();
    let empty = s.load_catalog().unwrap();
    assert_eq!((empty.version, empty.len()), (0, 0));

    let (u1, u2, mut u3) = (update("KB1-a"), update("KB2-a"), update("KB3-a"));
    let saved = s.save_catalog(&[u1.clone(), u2.clone()], at(T0)).unwrap();
    assert_eq!(saved, CatalogSaved { version: 1, changed: true });
    // Same content, other order: no new version.
    let saved = s.save_catalog(&[u2.clone(), u1.clone()], at(T1)).unwrap();
    assert_eq!(saved, CatalogSaved { version: 1, changed: false });
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM catalog_versions"), "1");

    let c1 = s.load_catalog().unwrap();
    assert_eq!(c1.version, 1);
    assert_eq!(c1.updates, vec![u1.clone(), u2.clone()]);
    assert_eq!(c1.since_version, vec![1, 1]);
    let key1 = |c: &patchops::catalog::Catalog, id: &str| c.keys[c.index_of(id).unwrap() as usize];
    let (k1, k2) = (key1(&c1, "KB1-a"), key1(&c1, "KB2-a"));
    assert_ne!(k1, k2);

    // KB2-a changes, KB3-a is new and supersedes KB1 (by KB, any case).
    let mut u2b = u2.clone();
    u2b.title.push_str(" (re-released)");
    u3.supersedes = vec!["kb1".into()];
    let saved = s.save_catalog(&[u1.clone(), u2b.clone(), u3.clone()], at(T1)).unwrap();
    assert_eq!(saved, CatalogSaved { version: 2, changed: true });
    let c2 = s.load_catalog().unwrap();
    assert_eq!(c2.version, 2);
    assert_eq!(c2.updates, vec![u1.clone(), u2b.clone(), u3.clone()]);
    assert_eq!(c2.since_version, vec![1, 1, 2], "since = first version of each id");
    assert_eq!((key1(&c2, "KB1-a"), key1(&c2, "KB2-a")), (k1, k2), "keys stable");
    let k3 = key1(&c2, "KB3-a");
    assert!(k3 != k1 && k3 != k2);
    assert!(c2.is_superseded(c2.index_of("KB1-a").unwrap()));
    // Row versions: KB1-a (superseded now) and KB2-a (body) closed and re-inserted.
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM catalog_updates"), "5");
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM catalog_updates WHERE valid_to IS NULL"), "3");
    assert_eq!(
        s.rows(
            "SELECT u.id, cu.valid_from, cu.valid_to, CASE WHEN cu.superseded THEN 1 ELSE 0 END \
             FROM catalog_updates cu JOIN updates u ON u.key = cu.key ORDER BY u.id, cu.valid_from"
        ),
        [
            ["KB1-a", "1", "2", "0"],
            ["KB1-a", "2", "", "1"],
            ["KB2-a", "1", "2", "0"],
            ["KB2-a", "2", "", "0"],
            ["KB3-a", "2", "", "0"],
        ]
    );

    // KB1-a removed: gone from the current catalog, KB1-a no longer superseded by anyone.
    let saved = s.save_catalog(&[u2b.clone(), u3.clone()], at(T2)).unwrap();
    assert_eq!(saved, CatalogSaved { version: 3, changed: true });
    let c3 = s.load_catalog().unwrap();
    assert_eq!(c3.updates, vec![u2b.clone(), u3.clone()]);
    assert_eq!(c3.index_of("KB1-a"), None);
    assert_eq!((key1(&c3, "KB2-a"), key1(&c3, "KB3-a")), (k2, k3));

    // Back again: same key, first version still 1.
    let saved = s.save_catalog(&[u1.clone(), u2b, u3], at(T2)).unwrap();
    assert_eq!(saved.version, 4);
    let c4 = s.load_catalog().unwrap();
    assert_eq!(key1(&c4, "KB1-a"), k1);
    assert_eq!(c4.since_version[c4.index_of("KB1-a").unwrap() as usize], 1);
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM updates"), "3", "keys are never reused");
}

fn a_fleet_loaded_for_some_updates_has_every_client_and_only_their_states(b: &Backend) {
    let mut s = seeded(b);
    s.upsert_client(&client("db-01", "lyon", "db", None), at(T0)).unwrap();
    let states = [("KB1-a", Missing, E::None), ("KB2-a", Installed, E::None), ("KB3-a", Missing, E::Downloaded)];
    s.apply_batch(&batch("web-01", 1, vec![scan(at(T1), 1, &states)]), at(T1)).unwrap();
    let whole = s.load_fleet().unwrap();
    let web = whole.clients.iter().find(|c| c.name == "web-01").unwrap();
    let keys: Vec<u32> = web.compliance.states.iter().map(|st| st.key()).collect();
    assert_eq!(keys.len(), 3);
    let some = s.load_fleet_for(&[keys[0], keys[2]]).unwrap();
    assert_eq!(some.clients.len(), whole.clients.len());
    let web_some = some.clients.iter().find(|c| c.name == "web-01").unwrap();
    assert_eq!(web_some.compliance.states, vec![web.compliance.states[0], web.compliance.states[2]]);
    assert_eq!(web_some.compliance.last_scan, web.compliance.last_scan);
    assert!(s.load_fleet_for(&[]).unwrap().clients.iter().all(|c| c.compliance.states.is_empty()));
}

fn s6_batch_states_are_stored_and_loaded(b: &Backend) {
    let mut s = seeded(b);
    s.upsert_client(&client("db-01", "lyon", "db", None), at(T0)).unwrap();
    let mut first = scan(at(T1), 1, &[("KB1-a", Missing, E::None), ("KB2-a", Installed, E::None)]);
    if let StateMessage::ScanCompleted { agent_version, .. } = &mut first {
        *agent_version = Some("10.0.2".into());
    }
    let out = s
        .apply_batch(
            &batch(
                "web-01",
                1,
                vec![
                    first,
                    enforce(at("2026-11-24T07:05:00Z"), "KB1-a", E::Downloading),
                    // No scan row yet: inserted as Missing.
                    enforce(at("2026-11-24T07:06:00Z"), "KB3-a", E::WaitingForWindow),
                ],
            ),
            at(T1),
        )
        .unwrap();
    assert_eq!(out, BatchOutcome::Applied);
    assert_eq!(
        states(&*s, "web-01"),
        [
            st("KB1-a", Missing, E::Downloading),
            st("KB2-a", Installed, E::None),
            st("KB3-a", Missing, E::WaitingForWindow),
        ]
    );
    let fleet = s.load_fleet().unwrap();
    assert_eq!(fleet.clients.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(), ["db-01", "web-01"]);
    let web = &fleet.clients[1];
    assert_eq!(web.facts, client("web-01", "paris", "web", None).facts);
    assert_eq!(web.compliance.agent_version.as_deref(), Some("10.0.2"));
    assert_eq!(web.compliance.last_scan, Some(ScanRecord { time: at(T1), catalog_version: 1, error: None }));
    assert_eq!(web.compliance.last_failure, None);
    let db = &fleet.clients[0];
    assert!(db.compliance.states.is_empty());
    assert_eq!(db.compliance.last_scan, None);
    assert_eq!(db.compliance.agent_version, None);
    assert_eq!(fleet.state_count(), 3);

    // An enforcement message older than the stored state does not roll it back.
    s.apply_batch(&batch("web-01", 2, vec![enforce(at("2026-11-24T07:01:00Z"), "KB1-a", E::InstallFailed)]), at(T1))
        .unwrap();
    assert_eq!(states(&*s, "web-01")[0], st("KB1-a", Missing, E::Downloading));
    // A newer one does.
    s.apply_batch(&batch("web-01", 3, vec![enforce(at(T2), "KB1-a", E::PendingReboot)]), at(T2)).unwrap();
    assert_eq!(states(&*s, "web-01")[0], st("KB1-a", Missing, E::PendingReboot));
}

fn scan_replaces_previous_states(b: &Backend) {
    let mut s = seeded(b);
    let first = scan(at(T1), 1, &[("KB1-a", Missing, E::None), ("KB2-a", Missing, E::None)]);
    s.apply_batch(&batch("web-01", 1, vec![first]), at(T1)).unwrap();
    assert_eq!(states(&*s, "web-01").len(), 2);

    let newer = scan(at(T2), 1, &[("KB3-a", Installed, E::None)]);
    s.apply_batch(&batch("web-01", 2, vec![newer]), at(T2)).unwrap();
    assert_eq!(states(&*s, "web-01"), [st("KB3-a", Installed, E::None)]);

    // A scan older than the stored one (delivered late) is ignored; the batch itself is
    // applied (its sequence is consumed).
    let late = scan(at(T0), 1, &[("KB1-a", Missing, E::None)]);
    assert_eq!(s.apply_batch(&batch("web-01", 3, vec![late]), at(T2)).unwrap(), BatchOutcome::Applied);
    assert_eq!(states(&*s, "web-01"), [st("KB3-a", Installed, E::None)]);
    let fleet = s.load_fleet().unwrap();
    assert_eq!(fleet.clients[0].compliance.last_scan.as_ref().unwrap().time, at(T2));
    assert_eq!(one(&*s, "SELECT last_sequence FROM clients WHERE name = 'web-01'"), "3");

    // A rescan keeping some updates (one changed), dropping one and adding others: the
    // client holds exactly what it reports, each with the new scan's time.
    let both = scan(at("2026-11-24T08:30:00Z"), 1, &[("KB1-a", Missing, E::None), ("KB3-a", Installed, E::None)]);
    s.apply_batch(&batch("web-01", 4, vec![both]), at(T2)).unwrap();
    let mixed = scan(at("2026-11-24T08:40:00Z"), 1, &[("KB2-a", Missing, E::None), ("KB3-a", Missing, E::None)]);
    s.apply_batch(&batch("web-01", 5, vec![mixed]), at(T2)).unwrap();
    assert_eq!(states(&*s, "web-01"), [st("KB2-a", Missing, E::None), st("KB3-a", Missing, E::None)]);
    let at_840 = at("2026-11-24T08:40:00Z").as_second().to_string();
    let rescanned = format!(
        "SELECT COUNT(*) FROM compliance co JOIN clients c ON c.key = co.client_key \
         WHERE c.name = 'web-01' AND co.time = {at_840}"
    );
    assert_eq!(one(&*s, &rescanned), "2", "both rows carry the rescan's time");

    // An update reported twice in one scan (a scanner listing it from two sources) is
    // stored once, as its last report says.
    let twice = scan(
        at("2026-11-24T08:50:00Z"),
        1,
        &[("KB3-a", Missing, E::None), ("KB1-a", Installed, E::None), ("KB3-a", Installed, E::PendingReboot)],
    );
    s.apply_batch(&batch("web-01", 6, vec![twice]), at(T2)).unwrap();
    assert_eq!(states(&*s, "web-01"), [st("KB1-a", Installed, E::None), st("KB3-a", Installed, E::PendingReboot)]);

    // An empty scan clears every state (nothing applicable).
    let empty = scan(at("2026-11-24T09:00:00Z"), 1, &[]);
    s.apply_batch(&batch("web-01", 7, vec![empty]), at(T2)).unwrap();
    assert!(states(&*s, "web-01").is_empty());
}

fn s6_replayed_batch_is_a_duplicate(b: &Backend) {
    let mut s = seeded(b);
    let b5 = batch("web-01", 5, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]);
    assert_eq!(s.apply_batch(&b5, at(T1)).unwrap(), BatchOutcome::Applied);
    let before = (states(&*s, "web-01"), s.rows("SELECT * FROM clients"));

    assert_eq!(s.apply_batch(&b5, at(T2)).unwrap(), BatchOutcome::Duplicate);
    let other = batch("web-01", 5, vec![enforce(at(T2), "KB1-a", E::Installing)]);
    assert_eq!(s.apply_batch(&other, at(T2)).unwrap(), BatchOutcome::Duplicate);
    let older = batch("web-01", 4, vec![scan(at(T2), 1, &[])]);
    assert_eq!(s.apply_batch(&older, at(T2)).unwrap(), BatchOutcome::Duplicate);

    let after = (states(&*s, "web-01"), s.rows("SELECT * FROM clients"));
    assert_eq!(before, after, "a duplicate changes nothing, not even last_seen");
}

/// Group commit (the management point applies concurrent batches in one transaction):
/// each batch gets the answer it would get alone, a failing one leaves no trace, and one
/// client's batches apply in the order given.
fn s6_a_group_of_batches_commits_together_and_a_bad_batch_is_rolled_back_alone(b: &Backend) {
    let mut s = seeded(b);
    s.upsert_client(&client("db-01", "paris", "db", None), at(T0)).unwrap();
    s.apply_batch(&batch("db-01", 1, vec![scan(at(T0), 1, &[("KB3-a", Missing, E::None)])]), at(T0)).unwrap();
    let db_before = s.rows("SELECT last_sequence, scan_time FROM clients WHERE name = 'db-01'");

    let web1 = batch("web-01", 1, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]);
    // Its first message would be written before the unknown update is found.
    let db_bad = batch(
        "db-01",
        2,
        vec![enforce(at(T1), "KB3-a", E::Installing), scan(at(T1), 1, &[("KB9-nope", Missing, E::None)])],
    );
    let web2 = batch("web-01", 2, vec![enforce(at(T2), "KB1-a", E::Installing)]);
    let ghost = batch("ghost", 1, vec![]);
    let answers = s
        .apply_batches_checked(&[(&web1, None), (&db_bad, None), (&web1, None), (&web2, None), (&ghost, None)], at(T2))
        .unwrap();
    assert_eq!(answers.len(), 5, "one answer per batch");
    assert_eq!(answers[0].as_ref().unwrap(), &BatchOutcome::Applied);
    match &answers[1] {
        Err(Error::Store { error: StoreError::UnknownUpdate { client, sequence: 2, id }, .. }) => {
            assert_eq!((client.as_str(), id.as_str()), ("db-01", "KB9-nope"))
        }
        other => panic!("expected the unknown update, got {other:?}"),
    }
    assert_eq!(answers[2].as_ref().unwrap(), &BatchOutcome::Duplicate, "the replay in the same group");
    assert_eq!(answers[3].as_ref().unwrap(), &BatchOutcome::Applied, "after batch 1 of the same client");
    assert!(
        matches!(&answers[4], Err(Error::Store { error: StoreError::NotRegistered { .. }, .. })),
        "{:?}",
        answers[4]
    );

    assert_eq!(states(&*s, "web-01"), [st("KB1-a", Missing, E::Installing)], "both web-01 batches, in order");
    assert_eq!(states(&*s, "db-01"), [st("KB3-a", Missing, E::None)], "nothing of the failed batch");
    assert_eq!(s.rows("SELECT last_sequence, scan_time FROM clients WHERE name = 'db-01'"), db_before);
    assert_eq!(one(&*s, "SELECT last_sequence FROM clients WHERE name = 'web-01'"), "2");
    // The failed batch's sequence is not consumed.
    let db2 = batch("db-01", 2, vec![scan(at(T2), 1, &[("KB2-a", Installed, E::None)])]);
    assert_eq!(s.apply_batch(&db2, at(T2)).unwrap(), BatchOutcome::Applied);
}

fn unknown_update_fails_the_whole_batch(b: &Backend) {
    let mut s = seeded(b);
    s.apply_batch(&batch("web-01", 1, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]), at(T1)).unwrap();
    let clients_before = s.rows("SELECT * FROM clients");

    let bad = batch(
        "web-01",
        2,
        vec![
            enforce(at(T2), "KB1-a", E::Installing),
            scan(at(T2), 1, &[("KB2-a", Installed, E::None), ("KB9-nope", Missing, E::None)]),
        ],
    );
    match s.apply_batch(&bad, at(T2)) {
        Err(Error::Store { location, error: error @ StoreError::UnknownUpdate { .. } }) => {
            assert_eq!(error.to_string(), r#"client "web-01" batch 2: update "KB9-nope" is not in the catalog"#);
            assert_eq!(location, s.location());
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    assert_eq!(states(&*s, "web-01"), [st("KB1-a", Missing, E::None)], "nothing half-applied");
    assert_eq!(s.rows("SELECT * FROM clients"), clients_before, "last_sequence and scan unchanged");

    // An unknown update in an enforcement message fails too.
    let bad = batch("web-01", 2, vec![enforce(at(T2), "KB8-nope", E::Installing)]);
    let err = s.apply_batch(&bad, at(T2)).unwrap_err().to_string();
    assert!(err.contains(r#"update "KB8-nope" is not in the catalog"#), "{err}");

    // The sequence was not consumed: a good batch 2 applies.
    let good = batch("web-01", 2, vec![scan(at(T2), 1, &[("KB2-a", Installed, E::None)])]);
    assert_eq!(s.apply_batch(&good, at(T2)).unwrap(), BatchOutcome::Applied);
    assert_eq!(states(&*s, "web-01"), [st("KB2-a", Installed, E::None)]);
}

fn unregistered_client_is_refused(b: &Backend) {
    let mut s = seeded(b);
    match s.apply_batch(&batch("ghost", 1, vec![]), at(T1)) {
        Err(Error::Store { error: error @ StoreError::NotRegistered { .. }, .. }) => {
            assert_eq!(error.to_string(), r#"client "ghost" is not registered; register it first"#)
        }
        other => panic!("expected a store error, got {other:?}"),
    }
    // Registering refreshes facts and keeps a known agent version when none is given.
    let mut again = client("web-01", "lyon", "web", None);
    again.facts.insert("hostname".into(), "web-01.example".into());
    s.upsert_client(&again, at(T1)).unwrap();
    let fleet = s.load_fleet().unwrap();
    assert_eq!(fleet.clients.len(), 1);
    assert_eq!(fleet.clients[0].facts, again.facts);
    assert_eq!(fleet.clients[0].compliance.agent_version.as_deref(), Some("10.0.1"));
}

fn t1_u4_rejected_message_is_kept(b: &Backend) {
    let mut s = seeded(b);
    let raw = r#"{"client":"web-01","sequence":7,"messages":[{"type":"ScanComp"#;
    s.record_rejected("web-01", raw, "EOF while parsing a string at line 1 column 60", at(T1)).unwrap();
    s.record_rejected("ghost", "\u{1}garbage\0", "not JSON", at(T2)).unwrap();
    assert_eq!(
        s.rows("SELECT client, received_at, raw, error FROM rejected_messages ORDER BY id"),
        [
            vec![
                "web-01".to_string(),
                at(T1).as_second().to_string(),
                raw.to_string(),
                "EOF while parsing a string at line 1 column 60".to_string()
            ],
            vec![
                "ghost".to_string(),
                at(T2).as_second().to_string(),
                "\u{1}garbage\u{FFFD}".to_string(),
                "not JSON".to_string()
            ],
        ]
    );
    let fleet = s.load_fleet().unwrap();
    assert_eq!(fleet.clients.len(), 1, "a rejected message does not register a client");
    let c = &fleet.clients[0].compliance;
    assert_eq!(c.rejected_at, Some(at(T1)));
    assert_eq!(
        client_unknown_reason(c, SignedDuration::from_hours(24), None, at(T2)),
        Some(Reason::StateMessageCorrupt)
    );
}

fn t1_u1_scan_failure_sets_last_failure(b: &Backend) {
    let mut s = seeded(b);
    s.apply_batch(&batch("web-01", 1, vec![scan(at(T0), 1, &[("KB1-a", Missing, E::None)])]), at(T0)).unwrap();
    let failed = StateMessage::ScanFailed { time: at(T2), catalog_version: 1, error: "0x80244022".into() };
    s.apply_batch(&batch("web-01", 2, vec![failed]), at(T2)).unwrap();
    // An older failure arriving late does not replace it.
    let older = StateMessage::ScanFailed { time: at(T1), catalog_version: 1, error: "0x8024402C".into() };
    s.apply_batch(&batch("web-01", 3, vec![older]), at(T2)).unwrap();

    let fleet = s.load_fleet().unwrap();
    let c = &fleet.clients[0].compliance;
    assert_eq!(c.last_failure, Some(ScanRecord { time: at(T2), catalog_version: 1, error: Some("0x80244022".into()) }));
    assert_eq!(c.last_scan, Some(ScanRecord { time: at(T0), catalog_version: 1, error: None }));
    assert_eq!(c.states.len(), 1, "a failed scan keeps the previous states");
    assert_eq!(client_unknown_reason(c, SignedDuration::from_hours(24), None, at(T2)), Some(Reason::ScanFailed));
}

fn deployment_status(phase: &str, percent: f64, compliant: u64) -> serde_json::Value {
    json!({
        "phase": phase,
        "deadline": "2026-12-01T00:00:00Z",
        "targeted": 8,
        "machines": {"compliant": compliant, "required": 8 - compliant, "unknown": 0, "failed": 0, "pendingReboot": 0},
        "compliancePercent": percent,
        "conditions": [{"type": "Ready", "status": "True"}],
    })
}

fn rs(kind: &str, name: &str, status: serde_json::Value) -> ResourceStatus {
    ResourceStatus { kind: kind.into(), namespace: "default".into(), name: name.into(), status }
}

fn reconcile_round_trip_and_history(b: &Backend) {
    let mut s = seeded(b);
    assert_eq!(s.last_reconcile().unwrap(), None);
    let history = |s: &dyn TestStore| one(s, "SELECT COUNT(*) FROM status_history");

    let first = ReconcileRecord {
        time: at(T1),
        revision: "main@sha1:aaaa".into(),
        catalog_version: 1,
        statuses: vec![
            rs("UpdateDeployment", "patch-tuesday", deployment_status("Available", 87.5, 7)),
            rs("Collection", "all-servers", json!({"members": 8})),
        ],
    };
    let policies = HashMap::from([("etag-1".to_string(), json!({"deployments": ["patch-tuesday"]}))]);
    let assign = |etag: &str| vec![PolicyAssignment { client: "web-01".into(), etag: etag.into() }];
    s.save_reconcile(&first, &policies, &assign("etag-1")).unwrap();
    let mut expected = first.clone();
    expected.statuses.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(s.last_reconcile().unwrap(), Some(expected.clone()));
    assert_eq!(history(&*s), "2");

    // The same statuses again: no history; one changed: one row.
    let mut second = first.clone();
    second.time = at(T2);
    second.revision = "main@sha1:bbbb".into();
    s.save_reconcile(&second, &HashMap::new(), &[]).unwrap();
    assert_eq!(history(&*s), "2");
    second.statuses[0].status = deployment_status("Available", 100.0, 8);
    let policies2 = HashMap::from([("etag-2".to_string(), json!({"deployments": []}))]);
    s.save_reconcile(&second, &policies2, &assign("etag-2")).unwrap();
    assert_eq!(history(&*s), "3");
    let mut expected = second.clone();
    expected.statuses.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(s.last_reconcile().unwrap(), Some(expected));
    assert_eq!(
        s.rows("SELECT name, phase, compliance_percent, targeted, compliant, required, unknown, deadline FROM v_deployment_status"),
        [["patch-tuesday", "Available", "100", "8", "8", "0", "0", "2026-12-01T00:00:00Z"]]
    );

    // A resource gone from git: its status row goes, history records null.
    let mut third = second.clone();
    third.statuses.retain(|r| r.kind != "Collection");
    s.save_reconcile(&third, &HashMap::new(), &[]).unwrap();
    assert_eq!(history(&*s), "4");
    assert_eq!(s.rows("SELECT kind, name FROM status_history WHERE status = 'null'"), [["Collection", "all-servers"]]);
    assert_eq!(s.last_reconcile().unwrap(), Some(third));
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM reconciles"), "4");
    assert_eq!(s.rows("SELECT etag FROM policy_docs ORDER BY etag"), [["etag-1"], ["etag-2"]]);
    assert_eq!(s.rows("SELECT client, etag FROM client_policies"), [["web-01", "etag-2"]]);
}

fn s8_s7_last_scan_and_agent_version_views(b: &Backend) {
    let mut s = seeded(b);
    s.upsert_client(&client("db-01", "lyon", "db", Some("7.2.6001.788")), at(T0)).unwrap();
    s.upsert_client(&client("new-01", "paris", "web", None), at(T0)).unwrap();
    s.upsert_client(&client("app-01", "lyon", "app", Some("10.0.1")), at(T0)).unwrap();
    let mut web_scan = scan(at(T1), 1, &[("KB1-a", Missing, E::None)]);
    if let StateMessage::ScanCompleted { agent_version, .. } = &mut web_scan {
        *agent_version = Some("10.0.2".into());
    }
    s.apply_batch(&batch("web-01", 1, vec![web_scan]), at(T1)).unwrap();
    let db_fail = StateMessage::ScanFailed { time: at(T2), catalog_version: 1, error: "0x80244022".into() };
    s.apply_batch(&batch("db-01", 1, vec![scan(at(T0), 1, &[]), db_fail]), at(T2)).unwrap();
    // An older failure, then a successful scan: Succeeded.
    let app_fail = StateMessage::ScanFailed { time: at(T0), catalog_version: 1, error: "0x8024402C".into() };
    s.apply_batch(&batch("app-01", 1, vec![app_fail, scan(at(T1), 1, &[])]), at(T1)).unwrap();

    assert_eq!(
        s.rows("SELECT * FROM v_client_last_scan ORDER BY client"),
        [
            ["app-01", "lyon", "app", "10.0.1", "2026-11-24T07:00:00Z", "1", "Succeeded", ""],
            ["db-01", "lyon", "db", "7.2.6001.788", "2026-11-24T08:00:00Z", "1", "Failed", "0x80244022"],
            ["new-01", "paris", "web", "", "", "", "Never scanned", ""],
            ["web-01", "paris", "web", "10.0.2", "2026-11-24T07:00:00Z", "1", "Succeeded", ""],
        ]
    );
    // Scan 2: by site.
    assert_eq!(
        s.rows("SELECT site, scan_state, COUNT(*) FROM v_client_last_scan GROUP BY site, scan_state ORDER BY site, scan_state"),
        [
            ["lyon", "Failed", "1"],
            ["lyon", "Succeeded", "1"],
            ["paris", "Never scanned", "1"],
            ["paris", "Succeeded", "1"],
        ]
    );
    // S7: the seed's agent version query, ordered by version (text), unknown first.
    assert_eq!(
        s.rows("SELECT client, agent_version FROM v_agent_versions"),
        [["new-01", ""], ["app-01", "10.0.1"], ["web-01", "10.0.2"], ["db-01", "7.2.6001.788"]]
    );
}

fn update_compliance_view_counts(b: &Backend) {
    let mut s = b.open();
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let ago = |h: i64| now - SignedDuration::from_hours(h);
    s.save_catalog(&[update("KB1-a"), update("KB2-a")], ago(100)).unwrap();
    for n in 1..=8 {
        s.upsert_client(&client(&format!("c{n}"), "paris", "web", Some("10.0.1")), ago(100)).unwrap();
    }
    let failed = |h| StateMessage::ScanFailed { time: ago(h), catalog_version: 1, error: "0x80244022".into() };
    let batches = [
        batch("c1", 1, vec![scan(ago(1), 1, &[("KB1-a", Missing, E::None), ("KB2-a", Installed, E::None)])]),
        // Installed but waiting for a reboot: Required (T1.R3).
        batch("c2", 1, vec![scan(ago(1), 1, &[("KB1-a", Installed, E::PendingReboot), ("KB2-a", Installed, E::None)])]),
        batch("c3", 1, vec![scan(ago(1), 1, &[])]),
        // c4 never scans (T1.U3).
        batch("c5", 1, vec![scan(ago(2), 1, &[("KB1-a", Missing, E::None)]), failed(1)]),
        // Scanned 3 days ago: expired with the default 1 day TTL.
        batch("c6", 1, vec![scan(ago(72), 1, &[("KB2-a", Installed, E::None)])]),
        batch("c7", 1, vec![scan(ago(1), 1, &[("KB1-a", Missing, E::None)])]),
    ];
    for b in &batches {
        s.apply_batch(b, ago(1)).unwrap();
    }
    // Version 2 adds KB3-a; only c8 scanned against it.
    s.save_catalog(&[update("KB1-a"), update("KB2-a"), update("KB3-a")], ago(1)).unwrap();
    s.apply_batch(&batch("c8", 1, vec![scan(ago(1), 2, &[("KB3-a", Missing, E::None)])]), ago(1)).unwrap();

    let view = |s: &dyn TestStore| {
        s.rows(
            "SELECT id, kb, severity, required, installed, unknown, not_required FROM v_update_compliance ORDER BY id",
        )
    };
    // By hand:           required        installed   unknown                      not required
    // KB1-a             c1 c2 c7        -           c4 c5 c6                     c3 c8
    // KB2-a             -               c1 c2       c4 c5 c6                     c3 c7 c8
    // KB3-a (since v2)  c8              -           c4 c5 c6 + c1 c2 c3 c7 (v1)  -
    let by_hand = [
        ["KB1-a", "KB1", "Critical", "3", "0", "3", "2"],
        ["KB2-a", "KB2", "Critical", "0", "2", "3", "3"],
        ["KB3-a", "KB3", "Critical", "1", "0", "7", "0"],
    ];
    assert_eq!(view(&*s), by_hand);
    assert_eq!(view(&*s), core_counts(&*s, now, SignedDuration::from_hours(24)), "view agrees with the core");

    // A longer TTL makes c6's scan usable: KB2-a installed +1, KB1-a not required +1.
    s.put_setting("scan_ttl_seconds", &(4 * 86_400).to_string());
    assert_eq!(
        view(&*s),
        [
            ["KB1-a", "KB1", "Critical", "3", "0", "2", "3"],
            ["KB2-a", "KB2", "Critical", "0", "3", "2", "3"],
            ["KB3-a", "KB3", "Critical", "1", "0", "7", "0"],
        ]
    );
    assert_eq!(view(&*s), core_counts(&*s, now, SignedDuration::from_hours(96)));
}

/// The same counts from load_fleet + the core's classification (no deployments).
fn core_counts(s: &dyn TestStore, now: Timestamp, ttl: SignedDuration) -> Vec<[String; 7]> {
    let catalog = s.load_catalog().unwrap();
    let fleet: Fleet = s.load_fleet().unwrap();
    let mut out = Vec::new();
    for (i, u) in catalog.updates.iter().enumerate() {
        let mut counts: BTreeMap<ComplianceState, u32> = BTreeMap::new();
        for c in &fleet.clients {
            let state = match client_unknown_reason(&c.compliance, ttl, None, now) {
                Some(reason) => reason.state(),
                None => {
                    let reported = c.compliance.states.iter().copied().find(|p| p.key() == catalog.keys[i]);
                    let scanned = c.compliance.last_scan.as_ref().unwrap().catalog_version;
                    classify(reported, false, catalog.since_version[i], scanned).state()
                }
            };
            *counts.entry(state).or_default() += 1;
        }
        let n = |st| counts.get(&st).copied().unwrap_or(0).to_string();
        out.push([
            u.id.clone(),
            u.kb.clone().unwrap(),
            format!("{:?}", u.severity),
            n(ComplianceState::Required),
            n(ComplianceState::Installed),
            n(ComplianceState::Unknown),
            n(ComplianceState::NotRequired),
        ]);
    }
    out
}

fn reopened_store_has_the_same_data(b: &Backend) {
    let (catalog, fleet, reconcile) = {
        let mut s = seeded(b);
        s.upsert_client(&client("db-01", "lyon", "db", None), at(T0)).unwrap();
        let scan1 = scan(at(T1), 1, &[("KB1-a", Missing, E::Downloaded), ("KB3-a", Installed, E::None)]);
        s.apply_batch(&batch("web-01", 1, vec![scan1]), at(T1)).unwrap();
        s.record_rejected("db-01", "{", "EOF", at(T2)).unwrap();
        let record = ReconcileRecord {
            time: at(T2),
            revision: "main@sha1:cccc".into(),
            catalog_version: 1,
            statuses: vec![rs("UpdateDeployment", "d", deployment_status("Pending", 0.0, 0))],
        };
        s.save_reconcile(&record, &HashMap::new(), &[]).unwrap();
        (s.load_catalog().unwrap(), s.load_fleet().unwrap(), s.last_reconcile().unwrap())
    }; // dropped: closed
    let s = b.open();
    let again = s.load_catalog().unwrap();
    assert_eq!(
        (again.version, &again.updates, &again.keys, &again.since_version),
        (catalog.version, &catalog.updates, &catalog.keys, &catalog.since_version)
    );
    assert_eq!(s.load_fleet().unwrap().clients, fleet.clients);
    assert_eq!(s.last_reconcile().unwrap(), reconcile);
    assert_eq!(
        one(&*s, "SELECT COUNT(*) FROM schema_version"),
        one(&*s, "SELECT COUNT(DISTINCT version) FROM schema_version"),
        "each migration runs once"
    );
    assert_eq!(one(&*s, "SELECT MAX(version) FROM schema_version"), "4");
    assert_eq!(fleet.state_count(), 2);
}

fn bulk_load_states_round_trips(b: &Backend) {
    let mut s = seeded(b);
    match b {
        Backend::Sqlite { path, .. } => {
            drop(s);
            let mut store = SqliteStore::open(path).unwrap();
            bulk(
                &mut store,
                |st, c| st.upsert_clients(c, at(T0)),
                |st| st.client_keys(),
                |st, rows| st.bulk_load_states(rows),
            );
            s = Box::new(store);
        }
        Backend::Postgres { url, schema } => {
            drop(s);
            let mut store = PostgresStore::open_in_schema(url, schema).unwrap();
            bulk(
                &mut store,
                |st, c| st.upsert_clients(c, at(T0)),
                |st| st.client_keys(),
                |st, rows| st.bulk_load_states(rows),
            );
            s = Box::new(store);
        }
    }
    let catalog = s.load_catalog().unwrap();
    let fleet = s.load_fleet().unwrap();
    assert_eq!(fleet.clients.len(), 4);
    assert_eq!(fleet.state_count(), 3 * 3);
    let b2 = &fleet.clients[fleet.index_of("bulk-2").unwrap()];
    assert_eq!(
        b2.compliance.states,
        catalog.keys.iter().map(|k| PackedState::new(*k, Installed, E::None)).collect::<Vec<_>>()
    );
    assert!(fleet.clients[fleet.index_of("web-01").unwrap()].compliance.states.is_empty());
}

type Rows<'a> = Box<dyn Iterator<Item = (u32, PackedState, Timestamp)> + 'a>;

/// Three bulk clients with every update: first Missing, then replaced by Installed.
fn bulk<S: Store>(
    store: &mut S,
    upsert: impl Fn(&mut S, &[ClientInfo]) -> patchops::Result<()>,
    keys: impl Fn(&S) -> patchops::Result<HashMap<String, u32>>,
    load: impl Fn(&mut S, Rows<'_>) -> patchops::Result<u64>,
) {
    let infos: Vec<ClientInfo> = (1..=3).map(|i| client(&format!("bulk-{i}"), "paris", "web", None)).collect();
    upsert(store, &infos).unwrap();
    let ckeys = keys(store).unwrap();
    assert_eq!(ckeys.len(), 4);
    let ukeys = store.load_catalog().unwrap().keys;
    for scan in [Missing, Installed] {
        let rows: Vec<_> = (1..=3)
            .flat_map(|i| {
                let ck = ckeys[&format!("bulk-{i}")];
                ukeys.iter().map(move |k| (ck, PackedState::new(*k, scan, E::None), at(T1)))
            })
            .collect();
        assert_eq!(load(store, Box::new(rows.into_iter())).unwrap(), 9);
    }
    // An unknown update key fails the whole load.
    let bad: Vec<_> = vec![
        (ckeys["bulk-1"], PackedState::new(ukeys[0], Missing, E::None), at(T2)),
        (ckeys["bulk-1"], PackedState::new(999_999, Missing, E::None), at(T2)),
    ];
    assert!(load(store, Box::new(bad.into_iter())).is_err());
}

// ---------------------------------------------------------------------------------------
// Both at once.

/// The reporting views are written in two dialects (`schema_sqlite.sql` and
/// `schema_postgres.sql`): the same data in both stores gives the same rows, in the same
/// order where the view orders them, in every view either store has.
#[test]
fn every_reporting_view_answers_the_same_rows_on_sqlite_and_postgres() {
    let (sqlite, postgres) = (Backend::sqlite(), Backend::postgres());
    let now = Timestamp::from_second(Timestamp::now().as_second()).unwrap();
    let stores = [sqlite.open(), postgres.open()].map(|mut s| {
        fill_for_views(&mut *s, now);
        s
    });
    let [lite, pg] = &stores;
    let views = lite.rows("SELECT name, sql FROM sqlite_schema WHERE type = 'view' ORDER BY name");
    let names: Vec<&str> = views.iter().map(|v| v[0].as_str()).collect();
    assert_eq!(
        pg.rows(
            "SELECT table_name FROM information_schema.views WHERE table_schema = current_schema() \
             ORDER BY table_name COLLATE \"C\""
        )
        .concat(),
        names,
        "both stores have the same views"
    );
    assert!(names.len() >= 4, "{names:?}");
    for view in &views {
        let (name, definition) = (&view[0], &view[1]);
        let query = format!("SELECT * FROM {name}");
        let (mut a, mut b) = (lite.rows(&query), pg.rows(&query));
        assert!(a.len() >= 3, "{name} shows the data: {a:?}");
        if !definition.contains("ORDER BY") {
            a.sort();
            b.sort();
        }
        assert_eq!(a, b, "{name}: SQLite (left) and PostgreSQL (right) differ");
    }
}

/// Data that reaches every branch of the views: clients never scanned, scanned, failed,
/// rejected and expired; names and versions whose order depends on collation; an update
/// added after some scans; deployments in two namespaces with fractional percentages.
fn fill_for_views(s: &mut dyn TestStore, now: Timestamp) {
    let ago = |h: i64| now - SignedDuration::from_hours(h);
    s.save_catalog(&[update("KB1-a"), update("KB2-a")], ago(100)).unwrap();
    let clients = [
        ("web-01", "paris", "web", Some("10.0.1")),
        ("Web-02", "paris", "web", Some("10.0.1")),
        ("db-01", "lyon", "db", Some("7.2.6001.788")),
        ("new-01", "paris", "web", None),
        ("app-01", "lyon", "app", Some("10.0.10")),
        ("old-01", "berlin", "db", Some("10.0.2")),
        ("bad-01", "berlin", "web", Some("10.0.2")),
    ];
    for (name, site, role, agent) in clients {
        s.upsert_client(&client(name, site, role, agent), ago(100)).unwrap();
    }
    let failed = |h| StateMessage::ScanFailed { time: ago(h), catalog_version: 1, error: "0x80244022".into() };
    let batches = [
        batch("web-01", 1, vec![scan(ago(2), 1, &[("KB1-a", Missing, E::None), ("KB2-a", Installed, E::None)])]),
        batch("Web-02", 1, vec![scan(ago(2), 1, &[("KB1-a", Installed, E::PendingReboot)])]),
        batch("db-01", 1, vec![scan(ago(3), 1, &[("KB2-a", Missing, E::InstallFailed)]), failed(2)]),
        batch("app-01", 1, vec![failed(5), scan(ago(2), 1, &[])]),
        batch("old-01", 1, vec![scan(ago(72), 1, &[("KB1-a", Installed, E::None)])]),
        batch("bad-01", 1, vec![scan(ago(3), 1, &[("KB1-a", Missing, E::None)])]),
    ];
    for b in &batches {
        s.apply_batch(b, ago(2)).unwrap();
    }
    s.record_rejected("bad-01", "{", "EOF while parsing", ago(1)).unwrap();
    s.save_catalog(&[update("KB1-a"), update("KB2-a"), update("KB3-a")], ago(1)).unwrap();
    s.apply_batch(&batch("web-01", 2, vec![scan(ago(1), 2, &[("KB3-a", Missing, E::None)])]), ago(1)).unwrap();
    let status = |ns: &str, name: &str, phase: &str, percent: f64, compliant: u64| ResourceStatus {
        kind: "UpdateDeployment".into(),
        namespace: ns.into(),
        name: name.into(),
        status: deployment_status(phase, percent, compliant),
    };
    let record = ReconcileRecord {
        time: ago(1),
        revision: "main@sha1:dddd".into(),
        catalog_version: 2,
        statuses: vec![
            status("site", "pilot", "Available", 100.0 / 3.0, 2),
            status("default", "Patch-Tuesday", "Available", 87.5, 7),
            status("default", "patch-tuesday", "Pending", 0.0, 0),
            rs("Collection", "all-servers", json!({"members": 7})),
        ],
    };
    s.save_reconcile(&record, &HashMap::new(), &[]).unwrap();
}

// ---------------------------------------------------------------------------------------
// SQLite only.

#[test]
fn sqlite_unreadable_store_names_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let check = |path: &std::path::Path| match SqliteStore::open(path) {
        Err(Error::Store { location, error: error @ StoreError::Unavailable { .. } }) => {
            assert_eq!(location, path.display().to_string());
            let message = error.to_string();
            assert!(message.starts_with("cannot open the store: "), "{message}");
            assert!(message.ends_with("; check the path or remove the file to start fresh"), "{message}");
            let shown = error.at(location).to_string();
            assert!(shown.contains(&path.display().to_string()), "{shown}");
        }
        Err(other) => panic!("expected a store error, got {other}"),
        Ok(_) => panic!("{} opened", path.display()),
    };
    // A directory.
    check(dir.path());
    // A text file.
    let text = dir.path().join("notes.db");
    std::fs::write(&text, "these are not the pages you are looking for\n".repeat(200)).unwrap();
    check(&text);
    // Garbage bytes.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, (0..65536u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect::<Vec<_>>())
        .unwrap();
    check(&garbage);
}

#[test]
fn sqlite_store_is_in_wal_mode_with_the_settings_views_need() {
    let b = Backend::sqlite();
    let s = b.open();
    assert_eq!(one(&*s, "PRAGMA journal_mode"), "wal");
    assert_eq!(one(&*s, "PRAGMA foreign_keys"), "1");
    assert_eq!(one(&*s, "PRAGMA synchronous"), "1", "NORMAL");
    assert_eq!(one(&*s, "PRAGMA cache_size"), "-65536", "64 MiB of pages, not SQLite's 2 MiB");
    assert_eq!(one(&*s, "SELECT value FROM settings WHERE key = 'scan_ttl_seconds'"), "86400");
}

// ---------------------------------------------------------------------------------------
// PostgreSQL only.

#[test]
fn postgres_a_fleet_read_in_parts_side_by_side_equals_the_fleet_read_in_one() {
    let b = Backend::postgres();
    let Backend::Postgres { url, schema } = &b else { unreachable!() };
    let mut s = PostgresStore::open_in_schema(url, schema).unwrap();
    s.save_catalog(&[update("KB1-a"), update("KB2-a"), update("KB3-a")], at(T0)).unwrap();
    for (i, name) in ["web-01", "web-02", "db-01"].iter().enumerate() {
        s.upsert_client(&client(name, "lyon", "web", None), at(T0)).unwrap();
        let states = [("KB3-a", Missing, E::None), ("KB1-a", Installed, E::None), ("KB2-a", Missing, E::Downloaded)];
        s.apply_batch(&batch(name, 1, vec![scan(at(T1), 1, &states[..=i])]), at(T1)).unwrap();
    }
    // A rescan rewrites web-01's rows, so the heap no longer holds them in key order.
    let again = [("KB2-a", Installed, E::None), ("KB1-a", Missing, E::None)];
    s.apply_batch(&batch("web-01", 2, vec![scan(at(T2), 1, &again)]), at(T2)).unwrap();
    let one = s.load_fleet_in_parts(Some(1)).unwrap();
    for parts in [2, 3, 7] {
        let split = s.load_fleet_in_parts(Some(parts)).unwrap();
        assert_eq!(format!("{:?}", split.clients), format!("{:?}", one.clients), "{parts} parts");
    }
    let web = one.clients.iter().find(|c| c.name == "web-01").unwrap();
    let keys: Vec<u32> = web.compliance.states.iter().map(|st| st.key()).collect();
    assert!(keys.is_sorted() && keys.len() == 2, "{keys:?}");
}

#[test]
fn postgres_a_bulk_load_leaves_statistics_so_one_clients_rows_are_estimated_as_few() {
    // A following management point reloads the few clients each feed row names. Without
    // statistics the planner takes one client's rows for 0.5 % of the table and, at
    // millions of rows, reads them with parallel workers: tens of milliseconds a client.
    let b = Backend::postgres();
    let Backend::Postgres { url, schema } = &b else { unreachable!() };
    let mut s = PostgresStore::open_in_schema(url, schema).unwrap();
    let updates: Vec<Update> = (0..4).map(|u| update(&format!("KB{u}-a"))).collect();
    s.save_catalog(&updates, at(T0)).unwrap();
    let infos: Vec<ClientInfo> = (0..3000).map(|i| client(&format!("bulk-{i:04}"), "paris", "web", None)).collect();
    s.upsert_clients(&infos, at(T0)).unwrap();
    let keys = s.client_keys().unwrap();
    let catalog = s.load_catalog().unwrap();
    let rows: Vec<(u32, PackedState, Timestamp)> = keys
        .values()
        .flat_map(|&c| catalog.keys.iter().map(move |&k| (c, PackedState::new(k, Missing, E::None), at(T1))))
        .collect();
    assert_eq!(s.bulk_load_states(rows).unwrap(), 12_000);
    let mut admin = postgres::Client::connect(url, postgres::NoTls).unwrap();
    admin.batch_execute(&format!("SET search_path TO \"{schema}\"")).unwrap();
    // The simple protocol answers in text: the plan is JSON.
    let sql = format!(
        "EXPLAIN (FORMAT JSON) SELECT client_key, update_key FROM compliance WHERE client_key = ANY('{{{}}}')",
        keys["bulk-0042"]
    );
    let text = admin
        .simple_query(&sql)
        .unwrap()
        .into_iter()
        .find_map(|m| match m {
            postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap();
    let plan: serde_json::Value = serde_json::from_str(&text).unwrap();
    let estimated = plan[0]["Plan"]["Plan Rows"].as_f64().unwrap();
    assert!(estimated <= 12.0, "one client holds 4 rows; the planner estimates {estimated}: {plan}");
}

#[test]
fn postgres_location_hides_the_password() {
    let b = Backend::postgres();
    let Backend::Postgres { url, schema } = &b else { unreachable!() };
    // Trust authentication ignores the password, so the connection succeeds.
    let with_password = url.replacen("postgres://postgres@", "postgres://postgres:hunter2@", 1);
    let s = PostgresStore::open_in_schema(&with_password, schema).unwrap();
    assert!(!s.location().contains("hunter2"), "{}", s.location());
    assert!(s.location().starts_with("postgres://postgres@"), "{}", s.location());
    // And when the connection fails.
    let unreachable = "postgres://postgres:hunter2@127.0.0.1:1/test";
    let err = PostgresStore::open(unreachable).err().expect("port 1 refuses");
    let shown = err.to_string();
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("cannot connect to PostgreSQL"), "{shown}");
}

// ---------------------------------------------------------------------------------------
// Benchmarks.

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn proc_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Fills a store with N clients × M states through the bulk path, then times
/// load_fleet on a freshly opened store.
fn bench_load_fleet<S: Store>(
    name: &str,
    mut open: impl FnMut() -> S,
    upsert: impl Fn(&mut S, &[ClientInfo]) -> patchops::Result<()>,
    keys: impl Fn(&S) -> patchops::Result<HashMap<String, u32>>,
    load: impl Fn(&mut S, Rows<'_>) -> patchops::Result<u64>,
    default_clients: usize,
    fill: bool,
) {
    let clients = env_usize("PATCHOPS_BENCH_CLIENTS", default_clients);
    let per_client = env_usize("PATCHOPS_BENCH_STATES", 200);
    let catalog_size = per_client * 5;
    let now = Timestamp::now();
    if fill {
        let mut s = open();
        let updates: Vec<Update> = (0..catalog_size).map(|i| update(&format!("KB{:07}-x", i))).collect();
        s.save_catalog(&updates, now).unwrap();
        let ukeys = s.load_catalog().unwrap().keys;
        let mut ukeys_sorted = ukeys.clone();
        ukeys_sorted.sort();
        let t = Instant::now();
        let infos: Vec<ClientInfo> =
            (0..clients).map(|i| client(&format!("client-{i:06}"), "paris", "web", Some("10.0.1"))).collect();
        upsert(&mut s, &infos).unwrap();
        let ckeys = keys(&s).unwrap();
        let mut ckeys: Vec<u32> = ckeys.into_values().collect();
        ckeys.sort();
        println!("{name}: registered {clients} clients in {:.2} s", t.elapsed().as_secs_f64());
        let t = Instant::now();
        let ukeys = &ukeys_sorted;
        let rows = ckeys.into_iter().flat_map(move |ck| {
            (0..per_client).map(move |j| {
                let k = ukeys[j * 5 + (ck as usize % 5)];
                let scan = if (ck as usize + j).is_multiple_of(3) { Installed } else { Missing };
                (ck, PackedState::new(k, scan, E::ALL[j % 9]), now)
            })
        });
        let n = load(&mut s, Box::new(rows)).unwrap();
        let secs = t.elapsed().as_secs_f64();
        println!("{name}: inserted {n} states in {secs:.1} s = {:.0} rows/s", n as f64 / secs);
    }
    let rss_before = proc_status_kib("VmRSS:").unwrap_or(0);
    let hwm_before = proc_status_kib("VmHWM:").unwrap_or(0);
    let t = Instant::now();
    let s = open();
    let fleet = s.load_fleet().unwrap();
    let secs = t.elapsed().as_secs_f64();
    let states = fleet.state_count();
    let rss_after = proc_status_kib("VmRSS:").unwrap_or(0);
    let hwm = proc_status_kib("VmHWM:").unwrap_or(0);
    println!(
        "{name}: load_fleet {} clients, {states} states in {secs:.2} s ({:.1} M states/s)",
        fleet.clients.len(),
        states as f64 / secs / 1e6
    );
    println!(
        "{name}: RSS before load {} MiB, after {} MiB ({:.1} bytes/state held); VmHWM before load {} MiB, after {} MiB",
        rss_before / 1024,
        rss_after / 1024,
        (rss_after.saturating_sub(rss_before) * 1024) as f64 / states.max(1) as f64,
        hwm_before / 1024,
        hwm / 1024
    );
    assert_eq!(states, clients * per_client);
    assert!(fleet.clients.iter().all(|c| c.compliance.states.len() == per_client));
}

/// Item 4: the rejected batches of many clients together stay within the total cap,
/// the oldest dropped first.
#[test]
fn sqlite_rejected_batches_of_many_clients_stay_within_the_total_cap() {
    let b = Backend::sqlite();
    let mut s = b.open();
    let per_client = REJECTED_PER_CLIENT as usize;
    let clients = REJECTED_TOTAL as usize / per_client + 3;
    for c in 0..clients {
        for i in 0..per_client {
            s.record_rejected(&format!("client-{c:04}"), "{", &format!("error {i}"), at(T1)).unwrap();
        }
    }
    assert_eq!(one(&*s, "SELECT COUNT(*) FROM rejected_messages"), REJECTED_TOTAL.to_string());
    assert_eq!(one(&*s, "SELECT MIN(client) FROM rejected_messages"), "client-0003", "the oldest are dropped");
}

/// A store at schema version 2 (before "never seen" was told apart from sequence 0):
/// the migration keeps applied sequences and makes 0 "none yet", so the first batch 0
/// of a client that never delivered one is applied.
#[test]
fn postgres_migration_3_turns_sequence_0_into_never_seen_and_keeps_applied_sequences() {
    let b = Backend::postgres();
    let Backend::Postgres { url, schema } = &b else { unreachable!() };
    {
        let mut c = postgres::Client::connect(url, postgres::NoTls).unwrap();
        c.batch_execute(&format!("CREATE SCHEMA \"{schema}\"; SET search_path TO \"{schema}\";")).unwrap();
        c.batch_execute(include_str!("../src/store/schema_postgres.sql")).unwrap();
        c.batch_execute(include_str!("../src/store/schema_postgres_2.sql")).unwrap();
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL);
             INSERT INTO schema_version VALUES (1, 0), (2, 0);
             INSERT INTO clients (name, registered_at, last_seen, last_sequence, token_sha256)
               VALUES ('new-01', 0, 0, 0, 'hash-new'), ('old-01', 0, 0, 5, 'hash-old');
             INSERT INTO rejected_messages (client, received_at, raw, error)
               VALUES ('old-01', 0, repeat('x', 100000), 'not JSON');",
        )
        .unwrap();
    }
    let mut s = b.open();
    s.save_catalog(&[update("KB1-a")], at(T0)).unwrap();
    assert_eq!(
        s.rows("SELECT name, COALESCE(last_sequence::text, 'none') FROM clients ORDER BY name"),
        [vec!["new-01".to_string(), "none".to_string()], vec!["old-01".to_string(), "5".to_string()]]
    );
    assert_eq!(
        s.rows("SELECT length(raw), size FROM rejected_messages"),
        [vec!["4096".to_string(), "100000".to_string()]]
    );
    let zero = batch("new-01", 0, vec![scan(at(T1), 1, &[("KB1-a", Missing, E::None)])]);
    assert_eq!(s.apply_batch(&zero, at(T1)).unwrap(), BatchOutcome::Applied);
    assert_eq!(s.apply_batch(&batch("old-01", 5, vec![]), at(T1)).unwrap(), BatchOutcome::Duplicate);
    assert_eq!(s.client_for_token("hash-old").unwrap().map(|o| o.client).as_deref(), Some("old-01"));
}

#[test]
#[ignore = "benchmark: cargo test --release --test store -- --ignored --nocapture bench"]
fn bench_sqlite_load_fleet() {
    // PATCHOPS_BENCH_FILE: keep the store there; when it exists, only load it (a clean
    // peak-memory figure for a process that just loads).
    let dir = tempfile::tempdir().unwrap();
    let path = match std::env::var("PATCHOPS_BENCH_FILE") {
        Ok(f) => PathBuf::from(f),
        Err(_) => dir.path().join("bench.db"),
    };
    let fill = !path.exists();
    bench_load_fleet(
        "sqlite",
        || SqliteStore::open(&path).unwrap(),
        |s, c| s.upsert_clients(c, Timestamp::now()),
        |s| s.client_keys(),
        |s, rows| s.bulk_load_states(rows),
        100_000,
        fill,
    );
    let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!("sqlite: file {} MiB", size / 1048576);
}

#[test]
#[ignore = "benchmark: cargo test --release --test store -- --ignored --nocapture bench"]
fn bench_postgres_load_fleet() {
    let b = Backend::postgres();
    let Backend::Postgres { url, schema } = &b else { unreachable!() };
    bench_load_fleet(
        "postgres",
        || PostgresStore::open_in_schema(url, schema).unwrap(),
        |s, c| s.upsert_clients(c, Timestamp::now()),
        |s| s.client_keys(),
        |s, rows| s.bulk_load_states(rows),
        10_000,
        true,
    );
}
