//! The management point over real HTTP: a server on 127.0.0.1 (ephemeral port) in a
//! background thread with its own tokio runtime, a SQLite store in a temp dir, ureq as
//! the client.

mod common;
use common::{at, update};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use patchops::Error;
use patchops::catalog::delta::CatalogDelta;
use patchops::catalog::{Catalog, Update};
use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, Fleet, ScanResult};
use patchops::server::{ServerConfig, SharedStore, serve_listener};
use patchops::store::sqlite::SqliteStore;
use patchops::store::{
    BatchOutcome, CatalogSaved, CatalogVersionInfo, ClientInfo, Enrollment, PolicyAssignment, ReconcileRecord, Store,
    TokenOwner,
};
use serde_json::{Value, json};

const SECRET: &str = "let-me-in";

// ---------------------------------------------------------------------------------------
// Harness.

struct Server {
    base: String,
    store: SharedStore,
    path: Option<PathBuf>,
    agent: ureq::Agent,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<patchops::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

struct Reply {
    status: u16,
    etag: Option<String>,
    retry_after: Option<String>,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_else(|| panic!("no error message: {}", self.body)).to_string()
    }
}

fn config() -> ServerConfig {
    ServerConfig { max_batch_bytes: 64 * 1024, max_batch_messages: 50, ..ServerConfig::new(SECRET) }
}

impl Server {
    /// A server on a fresh SQLite store holding two catalog versions (see `catalog_v1`/`v2`).
    fn start() -> Self {
        Server::start_with(config())
    }

    /// [`Server::start`] with other settings.
    fn start_with(config: ServerConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("patchops.db");
        let mut store = SqliteStore::open(&path).unwrap();
        store.save_catalog(&catalog_v1(), at("2026-11-01T00:00:00Z")).unwrap();
        store.save_catalog(&catalog_v2(), at("2026-11-02T00:00:00Z")).unwrap();
        let mut server = Server::on(Box::new(store), config);
        server.path = Some(path);
        server._dir = Some(dir);
        server
    }

    fn on(store: Box<dyn Store>, config: ServerConfig) -> Self {
        let store: SharedStore = Arc::new(Mutex::new(store));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let shared = store.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                serve_listener(listener, shared, config, async move {
                    let _ = rx.await;
                })
                .await
            })
        });
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Server { base, store, path: None, agent, shutdown: Some(tx), thread: Some(thread), _dir: None }
    }

    fn reply(response: Result<ureq::http::Response<ureq::Body>, ureq::Error>) -> Reply {
        let mut response = response.unwrap();
        let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_string());
        let (etag, retry_after) = (header("etag"), header("retry-after"));
        let body = response.body_mut().read_to_string().unwrap();
        Reply { status: response.status().as_u16(), etag, retry_after, body }
    }

    fn get(&self, path: &str, token: Option<&str>, headers: &[(&str, &str)]) -> Reply {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        Self::reply(request.call())
    }

    fn post(&self, path: &str, token: Option<&str>, body: &str) -> Reply {
        let mut request = self.agent.post(format!("{}{path}", self.base)).header("Content-Type", "application/json");
        if let Some(t) = token {
            request = request.header("Authorization", format!("Bearer {t}"));
        }
        Self::reply(request.send(body))
    }

    fn register(&self, name: &str) -> String {
        let body = json!({"name": name, "facts": {"os": "Windows Server 2022", "role": "web"},
                          "agentVersion": "1.2.0", "enrollSecret": SECRET});
        let reply = self.post("/v1/register", None, &body.to_string());
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["token"].as_str().unwrap().to_string()
    }

    fn register_with(&self, token: &str, name: &str) -> String {
        let body = json!({"name": name, "facts": {"os": "Windows Server 2022", "role": "web"},
                          "agentVersion": "1.2.0", "enrollSecret": SECRET});
        let reply = self.post("/v1/register", Some(token), &body.to_string());
        assert_eq!(reply.status, 201, "{}", reply.body);
        reply.json()["token"].as_str().unwrap().to_string()
    }

    fn post_batch(&self, token: &str, batch: &StateBatch) -> Reply {
        self.post("/v1/states", Some(token), &serde_json::to_string(batch).unwrap())
    }

    fn fleet(&self) -> Fleet {
        self.store.lock().unwrap().load_fleet().unwrap()
    }

    fn stop(mut self) -> patchops::Result<()> {
        self.shutdown.take().unwrap().send(()).unwrap();
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn catalog_v1() -> Vec<Update> {
    vec![update("KB1-a"), update("KB2-a")]
}

/// Version 2: KB1-a retitled, KB2-a removed, KB3-a added.
fn catalog_v2() -> Vec<Update> {
    let mut retitled = update("KB1-a");
    retitled.title = "re-released".into();
    vec![retitled, update("KB3-a")]
}

fn scan_batch(client: &str, sequence: u64, updates: &[(&str, ScanResult)]) -> StateBatch {
    StateBatch {
        client: client.into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time: at("2026-11-03T10:00:00Z"),
            catalog_version: 2,
            agent_version: None,
            updates: updates
                .iter()
                .map(|(id, result)| UpdateReport {
                    id: id.to_string(),
                    result: *result,
                    enforcement: Enforcement::None,
                })
                .collect(),
        }],
    }
}

fn client_of<'a>(fleet: &'a Fleet, name: &str) -> &'a patchops::compliance::Client {
    &fleet.clients[fleet.index_of(name).unwrap_or_else(|| panic!("{name} is not in the fleet"))]
}

fn assign_policy(server: &Server, client: &str, etag: &str, document: Value) {
    let record = ReconcileRecord {
        time: at("2026-11-03T00:00:00Z"),
        revision: "main@sha1:abc".into(),
        catalog_version: 2,
        statuses: vec![],
    };
    let policies = HashMap::from([(etag.to_string(), document)]);
    let assignments = vec![PolicyAssignment { client: client.into(), etag: etag.into() }];
    server.store.lock().unwrap().save_reconcile(&record, &policies, &assignments).unwrap();
}

// ---------------------------------------------------------------------------------------
// Registration and authentication.

/// The store's schema has a default scan TTL: that is not the mark of an engine, so a
/// registration where nobody assigns policies answers at once (it used to wait 3 s for
/// a policy that could not come), and waits only once an engine has published.
#[test]
fn a_registration_waits_for_a_policy_only_where_an_engine_publishes() {
    let server = Server::start();
    let started = Instant::now();
    server.register("web-01");
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?} with no engine", started.elapsed());

    server.store.lock().unwrap().set_setting(patchops::pipeline::PUBLISHED_SETTING, "2026-11-03T00:00:00Z").unwrap();
    let started = Instant::now();
    server.register("web-02");
    assert!(started.elapsed() >= Duration::from_secs(2), "an engine publishes here: the policy is waited for");
}

#[test]
fn register_with_a_wrong_secret_is_refused_and_with_the_right_one_returns_a_token() {
    let server = Server::start();
    let wrong = json!({"name": "web-01", "facts": {}, "agentVersion": "1.2.0", "enrollSecret": "guess"});
    let reply = server.post("/v1/register", None, &wrong.to_string());
    assert_eq!(reply.status, 401);
    assert!(reply.error().contains("wrong enrollment secret"), "{}", reply.body);
    assert!(server.fleet().index_of("web-01").is_none(), "a refused client is not registered");

    let token = server.register("web-01");
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
    let fleet = server.fleet();
    let client = client_of(&fleet, "web-01");
    assert_eq!(client.facts.get("role").map(String::as_str), Some("web"));

    // Registering again with the current token replaces it: the old one stops working.
    let again = server.register_with(&token, "web-01");
    assert_ne!(again, token);
    assert_eq!(server.get("/v1/catalog", Some(&token), &[]).status, 401);
    assert_eq!(server.get("/v1/catalog", Some(&again), &[]).status, 200);
}

/// Hardening item 2: a second host with the same name (or anyone holding only the
/// enrollment secret) used to get a new token and evict the holder; now it gets 409.
#[test]
fn registering_a_taken_name_without_its_token_is_refused_and_the_holder_keeps_working() {
    let server = Server::start();
    let token = server.register("web-01");
    let body = json!({"name": "web-01", "facts": {"role": "attacker"}, "enrollSecret": SECRET}).to_string();
    let reply = server.post("/v1/register", None, &body);
    assert_eq!(reply.status, 409, "{}", reply.body);
    assert!(reply.error().contains("already registered") && reply.error().contains("patchops client release web-01"));
    let reply = server.post("/v1/register", Some("a-guessed-token"), &body);
    assert_eq!(reply.status, 409, "a wrong token does not help: {}", reply.body);
    assert_eq!(server.get("/v1/catalog", Some(&token), &[]).status, 200, "the holder is not evicted");
    assert_eq!(client_of(&server.fleet(), "web-01").facts["role"], "web", "its facts are not overwritten");

    // The operator revokes it: the token stops at once for writes (reads within the
    // token cache time) and the name stays refused…
    server.store.lock().unwrap().revoke_client("web-01", at("2026-11-24T00:00:00Z")).unwrap();
    assert_eq!(server.post_batch(&token, &scan_batch("web-01", 1, &[])).status, 401);
    let reply = server.post("/v1/register", None, &body);
    assert_eq!(reply.status, 403, "{}", reply.body);
    assert!(reply.error().contains("revoked"), "{}", reply.body);
    // …until released: then the next host registering gets the name.
    server.store.lock().unwrap().release_client("web-01").unwrap();
    let fresh = server.register("web-01");
    assert_eq!(server.get("/v1/catalog", Some(&fresh), &[]).status, 200);
}

/// Hardening item 2: `/v1/rotate` gives a new token and the old one stops working.
#[test]
fn a_rotated_token_replaces_the_old_one() {
    let server = Server::start();
    let token = server.register("web-01");
    let reply = server.post("/v1/rotate", Some(&token), "");
    assert_eq!(reply.status, 200, "{}", reply.body);
    let new = reply.json()["token"].as_str().unwrap().to_string();
    assert_ne!(new, token);
    assert_eq!(server.get("/v1/catalog", Some(&token), &[]).status, 401);
    assert_eq!(server.get("/v1/catalog", Some(&new), &[]).status, 200);
    assert_eq!(server.post("/v1/rotate", None, "").status, 401);
}

/// Hardening item 3: management points sharing a store cached a token for 60 s, so a
/// token rotated on one kept working on the other. Writes now confirm the token's
/// generation in their transaction (refused at once); reads within the short cache time.
#[test]
fn a_token_rotated_on_one_management_point_stops_working_on_another_sharing_the_store() {
    let a = Server::start();
    let path = a.path.clone().unwrap();
    let b = Server::on(
        Box::new(SqliteStore::open(&path).unwrap()),
        ServerConfig { token_cache_ttl: std::time::Duration::from_millis(500), ..config() },
    );
    let token = a.register("web-01");
    assert_eq!(b.get("/v1/catalog", Some(&token), &[]).status, 200, "b checks the token and caches it");
    let rotated = a.post("/v1/rotate", Some(&token), "");
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let reply = b.post_batch(&token, &scan_batch("web-01", 1, &[("KB1-a", ScanResult::Missing)]));
    assert_eq!(reply.status, 401, "a write with the old token is refused at once: {}", reply.body);
    assert!(client_of(&a.fleet(), "web-01").compliance.states.is_empty(), "nothing applied");
    std::thread::sleep(std::time::Duration::from_millis(600));
    assert_eq!(b.get("/v1/catalog", Some(&token), &[]).status, 401, "reads stop after the cache time");
    let new = rotated.json()["token"].as_str().unwrap().to_string();
    assert_eq!(b.get("/v1/catalog", Some(&new), &[]).status, 200);
}

/// Hardening item 9: wrong enrollment secrets are counted, and an address that keeps
/// failing is answered 429 with Retry-After instead of being heard.
#[test]
fn an_address_that_keeps_presenting_a_wrong_secret_is_slowed_down_and_counted() {
    let server = Server::start();
    let wrong = json!({"name": "web-01", "enrollSecret": "guess"}).to_string();
    for attempt in 1..=5 {
        assert_eq!(server.post("/v1/register", None, &wrong).status, 401, "attempt {attempt}");
    }
    let reply = server.post("/v1/register", None, &json!({"name": "web-01", "enrollSecret": SECRET}).to_string());
    assert_eq!(reply.status, 429, "{}", reply.body);
    assert!(reply.retry_after.as_deref().is_some_and(|s| s.parse::<u32>().unwrap() >= 1), "{:?}", reply.retry_after);
    assert!(reply.error().contains("too many failed enrollments"), "{}", reply.body);
    let metrics = server.get("/metrics", None, &[]).body;
    assert!(metrics.contains("patchops_enrollment_failures_total{reason=\"wrong_secret\"} 5"), "{metrics}");
    assert!(metrics.contains("patchops_enrollment_failures_total{reason=\"throttled\"} 1"), "{metrics}");
    // After the wait the address is heard again.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    server.register("web-01");
}

#[test]
fn a_registration_that_is_not_valid_json_is_refused_with_400() {
    let server = Server::start();
    let reply = server.post("/v1/register", None, r#"{"name": "web-01""#);
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("enrollSecret"), "the error shows the expected shape: {}", reply.body);
    let reply = server.post("/v1/register", None, &json!({"name": " ", "enrollSecret": SECRET}).to_string());
    assert_eq!(reply.status, 400, "{}", reply.body);
}

#[test]
fn a_client_reading_without_a_token_or_with_an_unknown_one_is_refused_with_401() {
    let server = Server::start();
    for path in ["/v1/policy", "/v1/catalog", "/v1/catalog?since=1"] {
        let reply = server.get(path, None, &[]);
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        assert!(reply.error().contains("Authorization"), "{}", reply.body);
        let reply = server.get(path, Some("0123abcd"), &[]);
        assert_eq!(reply.status, 401, "{path}: {}", reply.body);
        assert!(reply.error().contains("register again"), "{}", reply.body);
    }
    let reply = server.get("/v1/policy", None, &[("Authorization", "Basic d2ViOnB3")]);
    assert_eq!(reply.status, 401);
    let batch = scan_batch("web-01", 1, &[]);
    assert_eq!(server.post_batch("not-a-token", &batch).status, 401);
}

// ---------------------------------------------------------------------------------------
// Policy.

#[test]
fn policy_is_404_before_a_reconcile_then_served_with_its_etag_and_304_on_repeat() {
    let server = Server::start();
    let token = server.register("web-01");
    let reply = server.get("/v1/policy", Some(&token), &[]);
    assert_eq!(reply.status, 404);
    assert!(reply.error().starts_with("no policy yet for client web-01; the site engine"), "{}", reply.body);

    let document = json!({"catalogVersion": 2, "deployments": [{"update": "KB3-a"}]});
    assign_policy(&server, "web-01", "etag-1", document.clone());
    let reply = server.get("/v1/policy", Some(&token), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.etag.as_deref(), Some("\"etag-1\""));
    assert_eq!(reply.json(), document);

    let reply = server.get("/v1/policy", Some(&token), &[("If-None-Match", "\"etag-1\"")]);
    assert_eq!(reply.status, 304);
    assert_eq!(reply.body, "");
    assert_eq!(reply.etag.as_deref(), Some("\"etag-1\""));

    // A new assignment: the old ETag no longer matches and the new document is sent.
    assign_policy(&server, "web-01", "etag-2", json!({"catalogVersion": 2, "deployments": []}));
    let reply = server.get("/v1/policy", Some(&token), &[("If-None-Match", "\"etag-1\"")]);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.etag.as_deref(), Some("\"etag-2\""));
}

#[test]
fn a_client_reads_only_its_own_policy() {
    let server = Server::start();
    let web = server.register("web-01");
    let db = server.register("db-01");
    assign_policy(&server, "web-01", "etag-web", json!({"for": "web"}));
    assert_eq!(server.get("/v1/policy", Some(&web), &[]).json(), json!({"for": "web"}));
    let reply = server.get("/v1/policy", Some(&db), &[]);
    assert_eq!(reply.status, 404, "db-01 has no policy of its own: {}", reply.body);
}

// ---------------------------------------------------------------------------------------
// State messages.

#[test]
fn s6_a_state_batch_is_applied_once_and_its_replay_is_a_duplicate() {
    let server = Server::start();
    let token = server.register("web-01");
    let batch = scan_batch("web-01", 1, &[("KB1-a", ScanResult::Missing)]);
    let reply = server.post_batch(&token, &batch);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"outcome": "applied"}));
    // Acknowledged means durable: the store has it when the answer arrives.
    let states = client_of(&server.fleet(), "web-01").compliance.states.clone();
    assert_eq!(states.len(), 1);
    assert_eq!(states[0].scan(), ScanResult::Missing);

    // The client did not get the answer and sends the batch again.
    let reply = server.post_batch(&token, &batch);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!({"outcome": "duplicate"}));
    // Same sequence, other content: still a replay, nothing changes.
    let changed = scan_batch("web-01", 1, &[("KB1-a", ScanResult::Installed), ("KB3-a", ScanResult::Missing)]);
    assert_eq!(server.post_batch(&token, &changed).json(), json!({"outcome": "duplicate"}));
    assert_eq!(client_of(&server.fleet(), "web-01").compliance.states, states, "applied once");

    // The next sequence is applied.
    assert_eq!(server.post_batch(&token, &scan_batch("web-01", 2, &[])).json(), json!({"outcome": "applied"}));
    assert!(client_of(&server.fleet(), "web-01").compliance.states.is_empty());
}

/// A batch refused before its body is read (an unknown token) closes its connection and
/// says so, so a client's next request does not go out on a connection being closed.
#[test]
fn a_batch_refused_before_its_body_is_read_does_not_break_the_clients_next_request() {
    let server = Server::start();
    let big = scan_batch("web-01", 1, &[("KB1-a", ScanResult::Missing)]);
    let body = serde_json::to_string(&big).unwrap() + &" ".repeat(30_000);
    for _ in 0..30 {
        let reply = server.post("/v1/states", Some("not-a-token"), &body);
        assert_eq!(reply.status, 401);
        assert_eq!(server.get("/healthz", None, &[]).status, 200);
    }
}

/// Hardening item 1: a new client's batch numbered 0 used to be answered "duplicate" and
/// dropped: acknowledged and lost.
#[test]
fn a_new_clients_batch_numbered_0_is_applied_not_acknowledged_and_dropped() {
    let server = Server::start();
    let token = server.register("web-01");
    let zero = scan_batch("web-01", 0, &[("KB1-a", ScanResult::Missing)]);
    assert_eq!(server.post_batch(&token, &zero).json(), json!({"outcome": "applied"}));
    assert_eq!(client_of(&server.fleet(), "web-01").compliance.states.len(), 1, "stored");
    assert_eq!(server.post_batch(&token, &zero).json(), json!({"outcome": "duplicate"}));
}

/// Hardening item 4: a malformed batch keeps its size, the error and a bounded prefix,
/// and is counted.
#[test]
fn a_malformed_batch_is_kept_as_a_bounded_prefix_and_counted() {
    let server = Server::start();
    let token = server.register("web-01");
    let raw = format!("{{\"client\": \"web-01\", \"junk\": \"{}", "x".repeat(60_000));
    for _ in 0..3 {
        assert_eq!(server.post("/v1/states", Some(&token), &raw).status, 400);
    }
    let reader = SqliteStore::open(server.path.as_ref().unwrap()).unwrap();
    let rows = reader.query_rows("SELECT length(raw), size FROM rejected_messages").unwrap();
    assert_eq!(rows.len(), 3);
    for row in rows {
        assert_eq!(row, vec![patchops::store::REJECTED_PREFIX_BYTES.to_string(), raw.len().to_string()]);
    }
    let metrics = server.get("/metrics", None, &[]).body;
    assert!(metrics.contains("patchops_rejected_batches_total 3"), "{metrics}");
    assert!(metrics.contains(&format!("patchops_rejected_batch_bytes_total {}", 3 * raw.len())), "{metrics}");
}

#[test]
fn a_client_writing_states_for_another_client_is_refused_with_403() {
    let server = Server::start();
    let web = server.register("web-01");
    server.register("db-01");
    let reply = server.post_batch(&web, &scan_batch("db-01", 1, &[("KB1-a", ScanResult::Missing)]));
    assert_eq!(reply.status, 403);
    assert_eq!(reply.error(), "client web-01 may not write states for client db-01; send only your own states");
    let fleet = server.fleet();
    assert!(client_of(&fleet, "db-01").compliance.states.is_empty(), "nothing applied");
    assert!(client_of(&fleet, "db-01").compliance.last_scan.is_none());
}

#[test]
fn t1_u4_a_malformed_batch_is_refused_with_400_and_kept_as_rejected() {
    let server = Server::start();
    let token = server.register("web-01");
    let raw = r#"{"client": "web-01", "sequence": 1, "messages": [{"type": "ScanCompleted", "tim"#;
    let reply = server.post("/v1/states", Some(&token), raw);
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.error().contains("kept as rejected"), "{}", reply.body);
    let fleet = server.fleet();
    assert!(client_of(&fleet, "web-01").compliance.rejected_at.is_some(), "the client shows the rejection");

    // A valid JSON document that is not a batch is malformed too.
    let reply = server.post("/v1/states", Some(&token), r#"{"client": "web-01", "sequence": 2, "extra": 1}"#);
    assert_eq!(reply.status, 400, "{}", reply.body);

    let reader = SqliteStore::open(server.path.as_ref().unwrap()).unwrap();
    let rows = reader.query_rows("SELECT client, raw, error FROM rejected_messages ORDER BY id").unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0][0], "web-01");
    assert_eq!(rows[0][1], raw, "the raw message is kept as received");
    assert!(rows[0][2].contains("not valid JSON"), "{rows:?}");
}

#[test]
fn an_oversized_batch_is_refused_with_413() {
    let server = Server::start();
    let token = server.register("web-01");
    // Over the byte limit (64 KiB in these tests).
    let big = scan_batch("web-01", 1, &vec![("KB1-a", ScanResult::Missing); 2000]);
    let reply = server.post_batch(&token, &big);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("split it"), "{}", reply.body);
    // The same without a Content-Length (chunked): the limit holds while reading.
    let mut reader = std::io::Cursor::new(serde_json::to_vec(&big).unwrap());
    let reply = Server::reply(
        server
            .agent
            .post(format!("{}/v1/states", server.base))
            .header("Authorization", format!("Bearer {token}"))
            .send(ureq::SendBody::from_reader(&mut reader)),
    );
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("larger than the limit"), "{}", reply.body);
    // Over the message limit (50 in these tests), under the byte limit.
    let mut many = scan_batch("web-01", 1, &[]);
    many.messages = vec![many.messages[0].clone(); 51];
    let reply = server.post_batch(&token, &many);
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert!(reply.error().contains("51 messages"), "{}", reply.body);
    assert!(client_of(&server.fleet(), "web-01").compliance.last_scan.is_none(), "nothing applied");
    // At the limit it goes through.
    many.messages.truncate(50);
    assert_eq!(server.post_batch(&token, &many).status, 200);
}

#[test]
fn a_batch_naming_an_unknown_update_is_refused_with_422_and_nothing_is_applied() {
    let server = Server::start();
    let token = server.register("web-01");
    let mut batch = scan_batch("web-01", 1, &[("KB1-a", ScanResult::Missing)]);
    batch.messages.push(StateMessage::Enforcement {
        time: at("2026-11-03T11:00:00Z"),
        update: "KB999-nope".into(),
        state: Enforcement::Downloading,
    });
    let reply = server.post_batch(&token, &batch);
    assert_eq!(reply.status, 422, "{}", reply.body);
    let error = reply.error();
    assert!(error.contains("KB999-nope") && error.contains("web-01"), "{error}");
    let fleet = server.fleet();
    let client = client_of(&fleet, "web-01");
    assert!(client.compliance.states.is_empty() && client.compliance.last_scan.is_none(), "nothing applied");
    // The sequence was not consumed: the corrected batch with the same number applies.
    batch.messages.pop();
    assert_eq!(server.post_batch(&token, &batch).json(), json!({"outcome": "applied"}));
}

// ---------------------------------------------------------------------------------------
// Catalog.

#[test]
fn o2_the_catalog_is_served_in_full_and_as_a_delta_since_a_version() {
    let server = Server::start();
    let token = server.register("web-01");
    let reply = server.get("/v1/catalog", Some(&token), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let full = reply.json();
    assert_eq!(full["version"], 2);
    let updates: Vec<Update> = serde_json::from_value(full["updates"].clone()).unwrap();
    assert_eq!(updates, catalog_v2());

    let reply = server.get("/v1/catalog?since=1", Some(&token), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let delta: CatalogDelta = serde_json::from_str(&reply.body).unwrap();
    assert_eq!((delta.from, delta.to), (1, 2));
    assert_eq!(delta.removed, vec!["KB2-a".to_string()]);
    assert_eq!(delta.upserts, catalog_v2(), "KB1-a changed, KB3-a added");
    assert_eq!(delta.apply(&catalog_v1()), catalog_v2());

    let reply = server.get("/v1/catalog?since=0", Some(&token), &[]);
    let delta: CatalogDelta = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(delta.apply(&[]), catalog_v2(), "a delta from nothing is the whole catalog");
}

#[test]
fn o2_a_catalog_version_from_the_future_is_refused_and_the_current_one_gets_an_empty_delta() {
    let server = Server::start();
    let token = server.register("web-01");
    let reply = server.get("/v1/catalog?since=7", Some(&token), &[]);
    assert_eq!(reply.status, 400);
    assert!(reply.error().starts_with("catalog version 7 is from the future; the newest is 2"), "{}", reply.body);

    let reply = server.get("/v1/catalog?since=2", Some(&token), &[]);
    assert_eq!(reply.status, 200);
    let delta: CatalogDelta = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(delta, CatalogDelta { from: 2, to: 2, upserts: vec![], removed: vec![] });

    let reply = server.get("/v1/catalog?since=yesterday", Some(&token), &[]);
    assert_eq!(reply.status, 400);
    assert!(reply.error().contains("not a catalog version"), "{}", reply.body);
}

// ---------------------------------------------------------------------------------------
// Operations.

#[test]
fn healthz_readyz_and_metrics_report_the_server_and_its_counters() {
    let server = Server::start();
    let health = server.get("/healthz", None, &[]);
    assert_eq!((health.status, health.body.as_str()), (200, "ok"));
    assert_eq!(server.get("/readyz", None, &[]).status, 200);

    let token = server.register("web-01");
    assign_policy(&server, "web-01", "etag-1", json!({}));
    server.get("/v1/policy", Some(&token), &[]);
    server.get("/v1/policy", Some(&token), &[("If-None-Match", "\"etag-1\"")]);
    let batch = scan_batch("web-01", 1, &[("KB1-a", ScanResult::Missing)]);
    server.post_batch(&token, &batch);
    server.post_batch(&token, &batch);
    server.get("/no/such/thing", None, &[]);

    let metrics = server.get("/metrics", None, &[]);
    assert_eq!(metrics.status, 200);
    let text = metrics.body;
    for expected in [
        r#"patchops_http_requests_total{route="/v1/register",status="201"} 1"#,
        r#"patchops_http_requests_total{route="/v1/policy",status="200"} 1"#,
        r#"patchops_http_requests_total{route="/v1/policy",status="304"} 1"#,
        r#"patchops_http_requests_total{route="/v1/states",status="200"} 2"#,
        r#"patchops_http_requests_total{route="unmatched",status="404"} 1"#,
        "patchops_state_messages_total 1",
        r#"patchops_state_batches_total{outcome="applied"} 1"#,
        r#"patchops_state_batches_total{outcome="duplicate"} 1"#,
        r#"patchops_policy_fetches_total{result="hit"} 1"#,
        r#"patchops_policy_fetches_total{result="miss"} 1"#,
    ] {
        assert!(text.contains(expected), "missing {expected} in:\n{text}");
    }
}

#[test]
fn the_server_stops_gracefully_when_asked() {
    let server = Server::start();
    assert_eq!(server.get("/healthz", None, &[]).status, 200);
    let base = server.base.clone();
    server.stop().unwrap();
    assert!(ureq::get(format!("{base}/healthz")).call().is_err(), "nothing listens any more");
}

// ---------------------------------------------------------------------------------------
// A store that fails: the client is told to retry and keeps its spool.

/// Knows one token (for "web-01"); every other call fails like an unreachable database.
struct BrokenStore;

fn down<T>() -> patchops::Result<T> {
    let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
    Err(Error::store("postgres://db/patchops", "connection refused", refused))
}

impl Store for BrokenStore {
    fn location(&self) -> String {
        "postgres://db/patchops".into()
    }
    fn save_catalog(&mut self, _: &[Update], _: Timestamp) -> patchops::Result<CatalogSaved> {
        down()
    }
    fn load_catalog(&self) -> patchops::Result<Catalog> {
        down()
    }
    fn load_catalog_version(&self, _: u64) -> patchops::Result<Catalog> {
        down()
    }
    fn catalog_delta(&self, _: u64, _: u64) -> patchops::Result<CatalogDelta> {
        down()
    }
    fn catalog_versions(&self) -> patchops::Result<Vec<CatalogVersionInfo>> {
        down()
    }
    fn upsert_client(&mut self, _: &ClientInfo, _: Timestamp) -> patchops::Result<()> {
        down()
    }
    fn apply_batches_checked(
        &mut self,
        _: &[(&StateBatch, Option<u64>)],
        _: Timestamp,
    ) -> patchops::Result<Vec<patchops::Result<BatchOutcome>>> {
        down()
    }
    fn record_rejected(&mut self, _: &str, _: &str, _: &str, _: Timestamp) -> patchops::Result<()> {
        down()
    }
    fn load_fleet(&self) -> patchops::Result<Fleet> {
        down()
    }
    fn save_reconcile(
        &mut self,
        _: &ReconcileRecord,
        _: &HashMap<String, Value>,
        _: &[PolicyAssignment],
    ) -> patchops::Result<()> {
        down()
    }
    fn last_reconcile(&self) -> patchops::Result<Option<ReconcileRecord>> {
        down()
    }
    fn enroll_client(
        &mut self,
        _: &ClientInfo,
        _: &str,
        _: Option<&str>,
        _: Timestamp,
    ) -> patchops::Result<Enrollment> {
        down()
    }
    fn client_for_token(&self, token_sha256: &str) -> patchops::Result<Option<TokenOwner>> {
        use sha2::Digest;
        let known = hex::encode(sha2::Sha256::digest(b"web-01-token"));
        Ok((token_sha256 == known).then(|| TokenOwner { client: "web-01".to_string(), generation: 1 }))
    }
    fn rotate_token(&mut self, _: &str, _: &str, _: &str) -> patchops::Result<bool> {
        down()
    }
    fn revoke_client(&mut self, _: &str, _: Timestamp) -> patchops::Result<bool> {
        down()
    }
    fn release_client(&mut self, _: &str) -> patchops::Result<bool> {
        down()
    }
    fn setting(&self, _: &str) -> patchops::Result<Option<String>> {
        down()
    }
    fn client_policy(&self, _: &str) -> patchops::Result<Option<(String, Value)>> {
        down()
    }
    fn set_setting(&mut self, _: &str, _: &str) -> patchops::Result<()> {
        down()
    }
    fn status_history(&self, _: &str, _: &str, _: usize) -> patchops::Result<Vec<ReconcileRecord>> {
        down()
    }
    fn load_clients(&self, _: &[String]) -> patchops::Result<Vec<patchops::compliance::Client>> {
        down()
    }
    fn feed_head(&self) -> patchops::Result<u64> {
        down()
    }
    fn feed_since(&self, _: u64, _: usize) -> patchops::Result<Vec<patchops::store::FeedEntry>> {
        down()
    }
    fn prune_feed(&mut self, _: u64) -> patchops::Result<u64> {
        down()
    }
}

#[test]
fn a_store_error_answers_503_with_a_retry_hint_and_readyz_is_not_ready() {
    let server = Server::on(Box::new(BrokenStore), config());
    let reply = server.post_batch("web-01-token", &scan_batch("web-01", 1, &[]));
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(reply.error().contains("keep it spooled") && reply.error().contains("retry"), "{}", reply.body);
    assert!(!reply.error().contains("postgres://"), "the store's location is not told to clients: {}", reply.body);
    assert_eq!(reply.retry_after.as_deref(), Some("30"));
    assert_eq!(server.get("/v1/policy", Some("web-01-token"), &[]).status, 503);
    assert_eq!(server.get("/v1/catalog", Some("web-01-token"), &[]).status, 503);
    assert_eq!(server.get("/readyz", None, &[]).status, 503);
    assert_eq!(server.get("/healthz", None, &[]).status, 200, "alive, only not ready");
    let register = json!({"name": "web-02", "enrollSecret": SECRET}).to_string();
    assert_eq!(server.post("/v1/register", None, &register).status, 503);
}

/// Group commit: batches that arrive while the store is busy are applied together, each
/// answered as it would be alone (a bad one refused without touching the others), and
/// none before its transaction committed.
#[test]
fn s6_batches_arriving_while_the_store_is_busy_share_a_commit_and_each_gets_its_own_answer() {
    // Tokens checked once and then trusted from memory, so only the batches need the store.
    let server = Server::start_with(ServerConfig { token_cache_ttl: Duration::from_secs(300), ..config() });
    let clients: Vec<(String, String)> = (0..12)
        .map(|i| {
            let name = format!("ws-{i:02}");
            let token = server.register(&name);
            assert_eq!(server.get("/v1/policy", Some(&token), &[]).status, 404, "no policy yet");
            (token, name)
        })
        .collect();
    let busy = server.store.lock().unwrap();
    let answered = std::sync::atomic::AtomicUsize::new(0);
    let (arrived, early, replies) = std::thread::scope(|s| {
        let sent: Vec<_> = clients
            .iter()
            .enumerate()
            .map(|(i, (token, name))| {
                let (server, answered) = (&server, &answered);
                s.spawn(move || {
                    let id = if i == 5 { "KB999-nope" } else { "KB1-a" };
                    let reply = server.post_batch(token, &scan_batch(name, 1, &[(id, ScanResult::Missing)]));
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    reply
                })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(20);
        let arrived = loop {
            if server.get("/metrics", None, &[]).body.contains("patchops_state_batches_pending 12") {
                break true;
            }
            if Instant::now() > deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let early = answered.load(std::sync::atomic::Ordering::SeqCst);
        drop(busy);
        (arrived, early, sent.into_iter().map(|t| t.join().unwrap()).collect::<Vec<Reply>>())
    });
    assert!(arrived, "the 12 batches never were all pending together");
    assert_eq!(early, 0, "no batch is answered before its commit");
    for (i, reply) in replies.iter().enumerate() {
        if i == 5 {
            assert_eq!(reply.status, 422, "{}", reply.body);
            assert!(reply.error().contains("KB999-nope"), "{}", reply.body);
        } else {
            assert_eq!((reply.status, reply.json()), (200, json!({"outcome": "applied"})), "ws-{i:02}");
        }
    }
    let fleet = server.fleet();
    for (i, (_, name)) in clients.iter().enumerate() {
        assert_eq!(client_of(&fleet, name).compliance.states.len(), usize::from(i != 5), "{name}");
    }
    let metrics = server.get("/metrics", None, &[]).body;
    let commits: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("patchops_state_commits_total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no commit counter in:\n{metrics}"));
    assert!((1..=2).contains(&commits), "12 batches waiting for the store took {commits} commits");
    assert!(metrics.contains("patchops_state_batches_pending 0"), "{metrics}");
}
