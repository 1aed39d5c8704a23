//! The web console end to end: a real management point on loopback carrying a site
//! derived from the example repository and its simulated fleet (four reconciles a day
//! apart, so there is history), driven by headless Chromium through playwright-core
//! (tests/browser/console.mjs). The sign-in rules are also checked on the router itself.
//!
//! The browser test is skipped, saying so, only when node is not installed; with node,
//! a missing Chromium or playwright-core fails it (run scripts/ensure-browser).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use http::{Request, StatusCode, header};
use jiff::{SignedDuration, Timestamp};
use patchops::git::GitSource;
use patchops::pipeline::{Pipeline, load_desired};
use patchops::reconcile::previous_from;
use patchops::resources::UpdateCatalogStatus;
use patchops::server::{BackgroundServer, ServerConfig, SharedStore, router};
use patchops::sim::SimFleet;
use patchops::site::{SiteHandle, SiteState};
use sha2::{Digest, Sha256};
use tower::ServiceExt;

const READ_TOKEN: &str = "console-test-read-token-0123456789abcdef";
const ENROLL: &str = "console-test-enroll";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The example repository reconciled four times, a day apart, with the example fleet
/// scanning into `store`; the site derived from what the store then holds.
fn example_site(dir: &Path, store: &str) -> SiteState {
    let source = GitSource {
        repo: root().display().to_string(),
        revision: None,
        path: Some("examples/repo".into()),
        cache_dir: dir.join("git-cache"),
    };
    let fleet = SimFleet::load(&root().join("examples/fleet.yaml")).expect("examples/fleet.yaml loads");
    let mut pipeline = Pipeline::new(source.clone(), patchops::store::open(store).unwrap(), Some(fleet));
    let now = Timestamp::now();
    for days in (0..4).rev() {
        pipeline.reconcile_once(now - SignedDuration::from_hours(24 * days)).expect("the examples reconcile");
    }
    let (_, desired) = load_desired(&source).unwrap();
    let store = &pipeline.store;
    let catalog = store.load_catalog().unwrap();
    let record = store.last_reconcile().unwrap().expect("a reconcile was saved");
    let catalog_status: BTreeMap<String, UpdateCatalogStatus> = record
        .statuses
        .iter()
        .filter(|s| s.kind == "UpdateCatalog")
        .map(|s| (s.name.clone(), serde_json::from_value(s.status.clone()).unwrap()))
        .collect();
    let previous = previous_from(&record.statuses);
    SiteState::derive(
        Arc::new(desired),
        Arc::new(catalog),
        catalog_status,
        store.load_fleet().unwrap(),
        &previous,
        Timestamp::now(),
    )
}

fn config_with(site: Option<SiteState>) -> ServerConfig {
    let mut config = ServerConfig::new(ENROLL);
    config.read_token_hashes = vec![sha256_hex(READ_TOKEN)];
    config.site = site.map(SiteHandle::with_state);
    config
}

/// A registered client's token (it must not open the console).
fn client_token(base: &str) -> String {
    let body = serde_json::json!({"name": "console-probe", "facts": {"os": "Windows 11 24H2"}, "enrollSecret": ENROLL});
    let mut response = ureq::post(&format!("{base}/v1/register"))
        .header("content-type", "application/json")
        .send(body.to_string())
        .expect("the probe registers");
    let answer: serde_json::Value = serde_json::from_slice(&response.body_mut().read_to_vec().unwrap()).unwrap();
    answer["token"].as_str().unwrap().to_string()
}

#[test]
fn the_console_in_a_browser_shows_what_the_read_api_says() {
    let Ok(node) = Command::new("node").arg("--version").output() else {
        eprintln!("SKIPPED: node is not installed; the console's browser test needs it (scripts/ensure-browser)");
        return;
    };
    assert!(node.status.success(), "node --version failed");
    let browser = root().join("tests/browser");
    assert!(
        Path::new("/usr/bin/chromium").exists() && browser.join("node_modules/playwright-core").exists(),
        "Chromium or playwright-core is missing: run scripts/ensure-browser first"
    );

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("site.db").display().to_string();
    let site = example_site(dir.path(), &store);
    let server = BackgroundServer::start_with("127.0.0.1:0".parse().unwrap(), &store, config_with(Some(site)))
        .expect("the management point starts");
    let client = client_token(&server.base);

    let screenshots = root().join("docs/screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let output = Command::new("node")
        .arg(browser.join("console.mjs"))
        .env("CONSOLE_BASE", &server.base)
        .env("CONSOLE_READ_TOKEN", READ_TOKEN)
        .env("CONSOLE_CLIENT_TOKEN", &client)
        .env("CONSOLE_SCREENSHOTS", &screenshots)
        .env("CONSOLE_DOWNLOADS", dir.path().join("downloads"))
        .output()
        .expect("node runs");
    server.stop().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    println!("{stdout}");
    assert!(output.status.success(), "the browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("console: all checks passed"), "the browser test did not finish:\n{stdout}\n{stderr}");
}

// ---------------------------------------------------------------------------------------
// The sign-in rules on the router, without a browser.

fn app(config: ServerConfig) -> axum::Router {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore =
        Arc::new(Mutex::new(patchops::store::open(&dir.path().join("s.db").display().to_string()).unwrap()));
    // The store file may go: these requests never read it.
    std::mem::forget(dir);
    router(store, config)
}

fn send(app: &axum::Router, request: Request<Body>) -> http::Response<Body> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(app.clone().oneshot(request)).unwrap()
}

fn login(token: &str, https: bool) -> Request<Body> {
    let mut r = Request::post("/ui/login").header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
    if https {
        r = r.header("x-forwarded-proto", "https");
    }
    let body: String = url_encode(token);
    r.body(Body::from(format!("token={body}"))).unwrap()
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b == b'-' { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

fn get(path: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut r = Request::get(path);
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    r.body(Body::empty()).unwrap()
}

#[test]
fn a_read_token_signs_in_with_an_httponly_strict_cookie_secure_behind_https() {
    let app = app(config_with(None));
    let plain = send(&app, login(READ_TOKEN, false));
    assert_eq!(plain.status(), StatusCode::SEE_OTHER);
    let cookie = plain.headers()[header::SET_COOKIE].to_str().unwrap().to_string();
    assert_eq!(cookie, format!("patchops_read={READ_TOKEN}; Path=/; HttpOnly; SameSite=Strict"));
    let https = send(&app, login(READ_TOKEN, true));
    assert!(https.headers()[header::SET_COOKIE].to_str().unwrap().ends_with("; Secure"));

    let session = format!("patchops_read={READ_TOKEN}");
    assert_eq!(send(&app, get("/ui/app.js", &[("cookie", &session)])).status(), StatusCode::OK);
    let out = send(&app, Request::post("/ui/logout").body(Body::empty()).unwrap());
    assert!(out.headers()[header::SET_COOKIE].to_str().unwrap().contains("Max-Age=0"));
}

#[test]
fn a_wrong_or_client_token_cannot_sign_in_and_nothing_behind_the_session_answers_without_one() {
    let app = app(config_with(None));
    for token in ["wrong", "", "a-client-token-from-register"] {
        let refused = send(&app, login(token, false));
        assert_eq!(refused.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(refused.headers().get(header::SET_COOKIE).is_none());
    }
    for path in ["/ui/app.js", "/ui/pages.js", "/ui/style.css", "/ui/vendor/uPlot.iife.min.js", "/ui/nothing"] {
        assert_eq!(send(&app, get(path, &[])).status(), StatusCode::UNAUTHORIZED, "{path}");
        let wrong = send(&app, get(path, &[("cookie", "patchops_read=wrong")]));
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    // Without a session /ui/ is the sign-in page, which holds no data.
    let page = send(&app, get("/ui/", &[]));
    assert_eq!(page.status(), StatusCode::OK);
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let body = rt.block_on(axum::body::to_bytes(page.into_body(), 1 << 20)).unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("action=\"/ui/login\"") && !body.contains("app.js"));
}

#[test]
fn behind_a_proxy_the_trusted_header_is_a_session_only_when_configured() {
    let headers = [("x-auth-request-user", "alice@example.org")];
    let without = app(config_with(None));
    assert_eq!(send(&without, get("/ui/app.js", &headers)).status(), StatusCode::UNAUTHORIZED);
    let mut config = config_with(None);
    config.ui_trusted_header = Some("X-Auth-Request-User".into());
    let with = app(config);
    assert_eq!(send(&with, get("/ui/app.js", &headers)).status(), StatusCode::OK);
    assert_eq!(send(&with, get("/ui/app.js", &[])).status(), StatusCode::UNAUTHORIZED);
}

#[test]
fn with_a_console_listener_only_it_trusts_the_proxy_header_for_pages_and_the_read_api() {
    let headers = [("x-auth-request-user", "alice@example.org")];
    let mut config = config_with(None);
    config.ui_trusted_header = Some("X-Auth-Request-User".into());
    config.ui_listen = Some("127.0.0.1:0".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore =
        Arc::new(Mutex::new(patchops::store::open(&dir.path().join("s.db").display().to_string()).unwrap()));
    let (main, console) = patchops::server::routers(store, config);
    let console = console.expect("a console router when ui_listen is set");
    assert_eq!(send(&console, get("/ui/app.js", &headers)).status(), StatusCode::OK);
    // Signed in, the read API answers (503: this test runs no site engine), not 401.
    assert_eq!(send(&console, get("/v1/read/site", &headers)).status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(send(&console, get("/v1/read/site", &[])).status(), StatusCode::UNAUTHORIZED);
    // The agents' listener drops the header: sending it there signs nobody in.
    assert_eq!(send(&main, get("/ui/app.js", &headers)).status(), StatusCode::UNAUTHORIZED);
    assert_eq!(send(&main, get("/v1/read/site", &headers)).status(), StatusCode::UNAUTHORIZED);
    // Agent routes are not on the console listener.
    assert_eq!(send(&console, get("/v1/policy", &[])).status(), StatusCode::NOT_FOUND);
    // A read token still works on both.
    let bearer = format!("Bearer {READ_TOKEN}");
    assert_eq!(send(&main, get("/ui/app.js", &[("authorization", &bearer)])).status(), StatusCode::OK);
}
