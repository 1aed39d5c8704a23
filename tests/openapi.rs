//! openapi/patchops-v1.yaml against the real management point: the routes the router
//! declares are exactly the documented ones, and every documented answer is produced by
//! a real request on loopback, with its body valid against the documented schema.

mod common;
use common::{at, update};

use std::collections::BTreeSet;

use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, ScanResult};
use patchops::content::ContentLibrary;
use patchops::reconcile::policy::ClientPolicy;
use patchops::server::BackgroundServer;
use patchops::store::{PolicyAssignment, ReconcileRecord};
use serde_json::{Value, json};

const SECRET: &str = "openapi-secret";

fn document() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/patchops-v1.yaml")).unwrap();
    serde_saphyr::from_str(&text).unwrap()
}

/// (path, method) pairs the router declares, read from its sources (the agents' API in
/// src/server/mod.rs, the read API it merges in from src/server/read.rs).
fn declared_routes() -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for file in ["/src/server/mod.rs", "/src/server/read.rs"] {
        let src = std::fs::read_to_string(format!("{}{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
        for part in src.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let method = rest.trim_start_matches(", ").split('(').next().unwrap().trim().to_string();
            out.insert((path.to_string(), method));
        }
    }
    out
}

#[test]
fn every_route_the_router_declares_is_documented_and_nothing_else_is() {
    let doc = document();
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (path.clone(), m.clone())))
        .collect();
    let declared = declared_routes();
    assert!(declared.len() >= 8, "the router's routes were found: {declared:?}");
    assert!(declared.contains(&("/v1/read/clients/{name}".to_string(), "get".to_string())), "{declared:?}");
    assert_eq!(documented, declared);
}

struct Call {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

struct Checker {
    doc: Value,
    http: ureq::Agent,
    base: String,
    seen: BTreeSet<(String, String, String)>,
}

impl Checker {
    fn call(
        &mut self,
        method: &str,
        template: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Option<String>,
    ) -> Call {
        let url = format!("{}{path}", self.base);
        let mut request = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            request = request.header(*k, v);
        }
        let mut response = match body {
            Some(b) => self.http.run(request.header("Content-Type", "application/json").body(b).unwrap()),
            None => self.http.run(request.body(()).unwrap()),
        }
        .unwrap();
        let status = response.status().as_u16();
        let content_type = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap()
            .to_string();
        let body = response.body_mut().with_config().limit(1 << 30).read_to_vec().unwrap();
        let call = Call { status, content_type, body };
        self.check(method, template, &call);
        call
    }

    /// The answer is documented for this operation, and a JSON body matches its schema.
    fn check(&mut self, method: &str, template: &str, call: &Call) {
        let op = &self.doc["paths"][template][method.to_lowercase()];
        assert!(op.is_object(), "{method} {template} is not documented");
        let status = call.status.to_string();
        let mut answer = &op["responses"][&status];
        assert!(
            answer.is_object(),
            "{method} {template} answered {status}, which is not documented: {}",
            String::from_utf8_lossy(&call.body)
        );
        if let Some(r) = answer["$ref"].as_str() {
            answer = &self.doc["components"]["responses"][r.rsplit('/').next().unwrap()];
        }
        if let Some(content) = answer["content"].as_object() {
            assert!(
                content.contains_key(&call.content_type),
                "{method} {template} {status}: content type {:?} is not documented ({:?})",
                call.content_type,
                content.keys().collect::<Vec<_>>()
            );
            if call.content_type == "application/json" {
                let schema = &content["application/json"]["schema"];
                let mut root = json!({ "components": self.doc["components"].clone() });
                for (k, v) in schema.as_object().unwrap() {
                    root[k] = v.clone();
                }
                let validator = jsonschema::validator_for(&root).unwrap();
                let instance: Value = serde_json::from_slice(&call.body).unwrap();
                let errors: Vec<String> = validator.iter_errors(&instance).map(|e| e.to_string()).collect();
                assert!(errors.is_empty(), "{method} {template} {status}: {errors:?}\n{instance}");
            }
        }
        self.seen.insert((template.to_string(), method.to_lowercase(), status));
    }
}

fn policy_document() -> Value {
    let policy = ClientPolicy {
        catalog_version: 2,
        revision: "main@sha1:0123456789abcdef0123456789abcdef01234567".into(),
        settings: Default::default(),
        maintenance_windows: vec![],
        deployments: vec![patchops::reconcile::policy::DeploymentAssignment {
            name: "nov".into(),
            phase: None,
            updates: vec!["KB200-srv".into()],
            available_time: at("2026-11-12T00:00:00Z"),
            deadline: Some(at("2026-11-30T00:00:00Z")),
            mandatory: true,
            suppress_restart: Default::default(),
            honor_maintenance_windows_at_deadline: false,
            state_message_detail: Default::default(),
            halted: false,
        }],
    };
    serde_json::to_value(&policy).unwrap()
}

#[test]
fn every_documented_answer_comes_from_a_real_request_and_matches_its_schema() {
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("patchops.db").to_string_lossy().to_string();
    let library = ContentLibrary::open(&dir.path().join("content")).unwrap();
    let file = library.add_bytes(&vec![7u8; 10_000], std::path::Path::new("kb200.msu")).unwrap();
    {
        let mut store = patchops::store::open(&store_path).unwrap();
        let mut kb200 = update("KB200-srv");
        kb200.files = vec![patchops::catalog::UpdateFile {
            name: "kb200.msu".into(),
            url: "https://download.example.invalid/kb200.msu".into(),
            sha256: file.sha256.clone(),
            size: file.size,
        }];
        store.save_catalog(&[update("KB100-srv")], at("2026-11-01T00:00:00Z")).unwrap();
        store.save_catalog(&[update("KB100-srv"), kb200], at("2026-11-02T00:00:00Z")).unwrap();
    }
    let server =
        BackgroundServer::start("127.0.0.1:0".parse().unwrap(), &store_path, SECRET, Some(library.dir().into()))
            .unwrap();
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut c = Checker { doc: document(), http, base: server.base.clone(), seen: BTreeSet::new() };
    let reg = |name: &str, secret: &str| {
        json!({"name": name, "facts": {"role": "server"}, "enrollSecret": secret}).to_string()
    };

    // Register.
    let ok = c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-1", SECRET)));
    let token: String = serde_json::from_slice::<Value>(&ok.body).unwrap()["token"].as_str().unwrap().into();
    c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-2", SECRET)));
    c.call("POST", "/v1/register", "/v1/register", &[], Some("{".into()));
    c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-1", "wrong")));
    c.call("POST", "/v1/register", "/v1/register", &[], Some("x".repeat(100_000)));
    let auth = vec![("Authorization", format!("Bearer {token}"))];

    // Policy: 404 before the reconciler assigned one, then 200 and 304.
    c.call("GET", "/v1/policy", "/v1/policy", &auth, None);
    c.call("GET", "/v1/policy", "/v1/policy", &[], None);
    {
        let mut store = patchops::store::open(&store_path).unwrap();
        let record = ReconcileRecord {
            time: at("2026-11-16T00:00:00Z"),
            revision: "main@sha1:0123456789abcdef0123456789abcdef01234567".into(),
            catalog_version: 2,
            statuses: vec![],
        };
        let policies: std::collections::HashMap<String, Value> =
            [("etag-1".to_string(), policy_document())].into_iter().collect();
        let assignments = vec![PolicyAssignment { client: "srv-1".into(), etag: "etag-1".into() }];
        store.save_reconcile(&record, &policies, &assignments).unwrap();
    }
    let first = c.call("GET", "/v1/policy", "/v1/policy", &auth, None);
    assert_eq!(first.status, 200);
    let mut etagged = auth.clone();
    etagged.push(("If-None-Match", "\"etag-1\"".into()));
    assert_eq!(c.call("GET", "/v1/policy", "/v1/policy", &etagged, None).status, 304);

    // Catalog: full, delta, a version from the future, a version that is not a number.
    c.call("GET", "/v1/catalog", "/v1/catalog", &auth, None);
    c.call("GET", "/v1/catalog", "/v1/catalog?since=1", &auth, None);
    c.call("GET", "/v1/catalog", "/v1/catalog?since=99", &auth, None);
    c.call("GET", "/v1/catalog", "/v1/catalog", &[], None);

    // States.
    let scan = |sequence: u64, id: &str| {
        serde_json::to_string(&StateBatch {
            client: "srv-1".into(),
            sequence,
            messages: vec![
                StateMessage::ScanCompleted {
                    time: at("2026-11-16T01:00:00Z"),
                    catalog_version: 2,
                    agent_version: Some("2.1.0".into()),
                    updates: vec![UpdateReport {
                        id: id.into(),
                        result: ScanResult::Missing,
                        enforcement: Enforcement::None,
                    }],
                },
                StateMessage::Enforcement {
                    time: at("2026-11-16T01:01:00Z"),
                    update: id.into(),
                    state: Enforcement::Downloaded,
                },
            ],
        })
        .unwrap()
    };
    c.call("POST", "/v1/states", "/v1/states", &auth, Some(scan(1, "KB200-srv")));
    c.call("POST", "/v1/states", "/v1/states", &auth, Some(scan(1, "KB200-srv")));
    c.call("POST", "/v1/states", "/v1/states", &auth, Some("{\"client\": \"srv-1\"".into()));
    c.call("POST", "/v1/states", "/v1/states", &auth, Some(scan(2, "KB999-nope")));
    c.call("POST", "/v1/states", "/v1/states", &auth, Some(scan(3, "KB200-srv").replace("\"srv-1\"", "\"srv-2\"")));
    c.call("POST", "/v1/states", "/v1/states", &[], Some(scan(4, "KB200-srv")));
    let many = StateBatch {
        client: "srv-1".into(),
        sequence: 5,
        messages: (0..10_001)
            .map(|_| StateMessage::ScanFailed {
                time: at("2026-11-16T01:00:00Z"),
                catalog_version: 2,
                error: "x".into(),
            })
            .collect(),
    };
    c.call("POST", "/v1/states", "/v1/states", &auth, Some(serde_json::to_string(&many).unwrap()));

    // Content.
    let t = "/v1/content/{sha256}";
    let path = format!("/v1/content/{}", file.sha256);
    assert_eq!(c.call("GET", t, &path, &auth, None).body.len(), 10_000);
    let mut ranged = auth.clone();
    ranged.push(("Range", "bytes=9000-".into()));
    assert_eq!(c.call("GET", t, &path, &ranged, None).body.len(), 1_000);
    let mut beyond = auth.clone();
    beyond.push(("Range", "bytes=20000-".into()));
    c.call("GET", t, &path, &beyond, None);
    c.call("GET", t, "/v1/content/NOT-A-HASH", &auth, None);
    c.call("GET", t, &format!("/v1/content/{}", "0".repeat(64)), &auth, None);
    c.call("GET", t, &path, &[], None);

    // Identity: the name is taken without its token, re-registered with it, rotated,
    // revoked; an address that keeps failing is slowed down.
    assert_eq!(c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-1", SECRET))).status, 409);
    let again = c.call("POST", "/v1/register", "/v1/register", &auth, Some(reg("srv-1", SECRET)));
    let token: String = serde_json::from_slice::<Value>(&again.body).unwrap()["token"].as_str().unwrap().into();
    let auth = vec![("Authorization", format!("Bearer {token}"))];
    assert_eq!(c.call("POST", "/v1/rotate", "/v1/rotate", &auth, None).status, 200);
    assert_eq!(c.call("POST", "/v1/rotate", "/v1/rotate", &auth, None).status, 401, "the old token is gone");
    patchops::store::open(&store_path).unwrap().revoke_client("srv-2", at("2026-11-16T02:00:00Z")).unwrap();
    assert_eq!(c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-2", SECRET))).status, 403);
    for _ in 0..5 {
        c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-3", "wrong")));
    }
    assert_eq!(c.call("POST", "/v1/register", "/v1/register", &[], Some(reg("srv-3", SECRET))).status, 429);

    // Operations.
    c.call("GET", "/healthz", "/healthz", &[], None);
    c.call("GET", "/readyz", "/readyz", &[], None);
    c.call("GET", "/metrics", "/metrics", &[], None);
    server.stop().unwrap();

    // Every documented answer was produced, except the store outage (503) and the body
    // timeout (408), which the server test suite provokes (a failing store, a slow body).
    let documented: BTreeSet<(String, String, String)> = c.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object().unwrap().iter().flat_map(move |(m, op)| {
                op["responses"].as_object().unwrap().keys().map(move |s| (path.clone(), m.clone(), s.clone()))
            })
        })
        .filter(|(path, _, s)| s != "503" && s != "408" && !path.starts_with("/v1/read/"))
        .collect();
    let missing: Vec<_> = documented.difference(&c.seen).collect();
    assert!(missing.is_empty(), "documented but never produced: {missing:?}");
}

/// Every read route, answered by a management point carrying the example site: without a
/// token, with a client's token, with a read token, with a bad query and an unknown name.
#[test]
fn every_documented_read_answer_comes_from_a_real_request_and_matches_its_schema() {
    use sha2::Digest;
    const READ: &str = "openapi-read-token-0123456789";
    let dir = tempfile::tempdir().unwrap();
    let (store_path, state) = common::example_site(dir.path(), at("2026-11-25T12:00:00Z"));
    let read_hashes = vec![hex::encode(sha2::Sha256::digest(READ.as_bytes()))];
    let mut config = patchops::server::ServerConfig::new(SECRET);
    config.site = Some(patchops::site::SiteHandle::with_state(state));
    config.read_token_hashes = read_hashes.clone();
    let server = BackgroundServer::start_with("127.0.0.1:0".parse().unwrap(), &store_path, config).unwrap();
    let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut c = Checker { doc: document(), http, base: server.base.clone(), seen: BTreeSet::new() };
    let registered = c.call(
        "POST",
        "/v1/register",
        "/v1/register",
        &[],
        Some(json!({"name": "openapi-client", "facts": {}, "enrollSecret": SECRET}).to_string()),
    );
    let client_token =
        serde_json::from_slice::<Value>(&registered.body).unwrap()["token"].as_str().unwrap().to_string();
    let client_auth = vec![("Authorization", format!("Bearer {client_token}"))];
    let read_auth = vec![("Authorization", format!("Bearer {READ}"))];

    // (template, a path answered 200, a query answered 400, a path answered 404)
    let mut cases: Vec<(&str, String, Option<&str>, Option<String>)> = vec![
        ("/v1/read/site", "/v1/read/site".into(), None, None),
        ("/v1/read/deployments", "/v1/read/deployments".into(), None, None),
        (
            "/v1/read/deployments/{name}",
            "/v1/read/deployments/2026-11-servers".into(),
            None,
            Some("/v1/read/deployments/nope".into()),
        ),
        (
            "/v1/read/deployments/{name}/machines",
            "/v1/read/deployments/2026-11-servers/machines?state=Required&limit=20".into(),
            Some("?state=Bogus"),
            Some("/v1/read/deployments/nope/machines".into()),
        ),
        (
            "/v1/read/deployments/{name}/history",
            "/v1/read/deployments/2026-11-servers/history?limit=5".into(),
            Some("?limit=0"),
            Some("/v1/read/deployments/nope/history".into()),
        ),
        ("/v1/read/collections", "/v1/read/collections".into(), None, None),
        (
            "/v1/read/collections/{name}/members",
            "/v1/read/collections/servers/members?limit=20".into(),
            Some("?limit=many"),
            Some("/v1/read/collections/nope/members".into()),
        ),
        ("/v1/read/update-lists", "/v1/read/update-lists".into(), None, None),
        ("/v1/read/updates", "/v1/read/updates?cve=CVE-2025-60979".into(), Some("?severity=Huge"), None),
        ("/v1/read/clients", "/v1/read/clients?limit=20&selector=role%3Dserver".into(), Some("?sort=size"), None),
        ("/v1/read/catalog/versions", "/v1/read/catalog/versions".into(), None, None),
    ];
    // Names taken from the listings.
    let updates = c.call("GET", "/v1/read/updates", "/v1/read/updates?limit=1", &read_auth, None);
    let id = serde_json::from_slice::<Value>(&updates.body).unwrap()["items"][0]["id"].as_str().unwrap().to_string();
    cases.push(("/v1/read/updates/{id}", format!("/v1/read/updates/{id}"), None, Some("/v1/read/updates/KB0".into())));
    let clients = c.call("GET", "/v1/read/clients", "/v1/read/clients?limit=1&q=srv", &read_auth, None);
    let name =
        serde_json::from_slice::<Value>(&clients.body).unwrap()["items"][0]["name"].as_str().unwrap().to_string();
    cases.push((
        "/v1/read/clients/{name}",
        format!("/v1/read/clients/{name}"),
        None,
        Some("/v1/read/clients/nobody".into()),
    ));

    for (template, ok, bad, missing) in &cases {
        assert_eq!(c.call("GET", template, ok, &[], None).status, 401, "{ok}");
        assert_eq!(c.call("GET", template, ok, &client_auth, None).status, 403, "{ok}");
        assert_eq!(c.call("GET", template, ok, &read_auth, None).status, 200, "{ok}");
        if let Some(query) = bad {
            let path = format!("{}{query}", ok.split('?').next().unwrap());
            assert_eq!(c.call("GET", template, &path, &read_auth, None).status, 400, "{path}");
        }
        if let Some(path) = missing {
            assert_eq!(c.call("GET", template, path, &read_auth, None).status, 404, "{path}");
        }
    }
    server.stop().unwrap();

    // Without a site engine: 503, as documented.
    let mut bare = patchops::server::ServerConfig::new(SECRET);
    bare.read_token_hashes = read_hashes;
    let server = BackgroundServer::start_with("127.0.0.1:0".parse().unwrap(), &store_path, bare).unwrap();
    c.base = server.base.clone();
    assert_eq!(c.call("GET", "/v1/read/site", "/v1/read/site", &read_auth, None).status, 503);
    server.stop().unwrap();

    let documented: BTreeSet<(String, String, String)> = c.doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/v1/read/"))
        .flat_map(|(path, ops)| {
            ops.as_object().unwrap().iter().flat_map(move |(m, op)| {
                op["responses"].as_object().unwrap().keys().map(move |s| (path.clone(), m.clone(), s.clone()))
            })
        })
        .filter(|(_, _, s)| s != "503")
        .collect();
    let missing: Vec<_> = documented.difference(&c.seen).collect();
    assert!(missing.is_empty(), "documented but never produced: {missing:?}");
}
