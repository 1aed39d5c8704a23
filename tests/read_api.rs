//! The read API end to end: the example site reconciled into a real SQLite store file,
//! its site state served by a real management point on loopback, read over HTTP and
//! through the built `patchops get` / `describe` binary.

mod common;
use common::{at, example_site};

use std::process::Command;
use std::sync::OnceLock;

use patchops::server::{BackgroundServer, ServerConfig};
use patchops::site::SiteHandle;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const READ_TOKEN: &str = "read-token-for-tests-0123456789";
const SECRET: &str = "read-api-enroll-secret";
const NOW: &str = "2026-11-25T12:00:00Z";

struct Site {
    _dir: tempfile::TempDir,
    store: String,
    server: BackgroundServer,
    http: ureq::Agent,
}

/// One site for every test of this file (the example fleet takes a while to reconcile).
fn site() -> &'static Site {
    static SITE: OnceLock<Site> = OnceLock::new();
    SITE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let (store, state) = example_site(dir.path(), at(NOW));
        let mut config = ServerConfig::new(SECRET);
        config.site = Some(SiteHandle::with_state(state));
        config.read_token_hashes = vec![hex::encode(Sha256::digest(READ_TOKEN.as_bytes()))];
        let server = BackgroundServer::start_with("127.0.0.1:0".parse().unwrap(), &store, config).unwrap();
        let http: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        Site { _dir: dir, store, server, http }
    })
}

/// GET a path with these headers: (status, JSON body).
fn get(path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let s = site();
    let mut request = s.http.get(format!("{}{path}", s.server.base));
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let mut response = request.call().unwrap();
    let status = response.status().as_u16();
    let body = response.body_mut().with_config().limit(1 << 28).read_to_string().unwrap();
    (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
}

fn read(path: &str) -> Value {
    let auth = format!("Bearer {READ_TOKEN}");
    let (status, body) = get(path, &[("Authorization", &auth)]);
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

fn patchops(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(args)
        .env("PATCHOPS_SERVER", &site().server.base)
        .env("PATCHOPS_TOKEN", READ_TOKEN)
        .env("HOME", "/nonexistent")
        .env_remove("PATCHOPS_LOG")
        .env_remove("PATCHOPS_CONFIG")
        .output()
        .unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    assert!(out.status.success(), "exit {:?}: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn no_token_is_401_a_client_token_403_and_a_read_token_200_by_header_or_cookie() {
    let s = site();
    let (status, body) = get("/v1/read/deployments", &[]);
    assert_eq!(status, 401, "{body}");
    assert!(body["error"].as_str().unwrap().contains("read token"), "{body}");
    let (status, _) = get("/v1/read/deployments", &[("Authorization", "Bearer not-a-token")]);
    assert_eq!(status, 401);
    // A client registers and presents its own token: it is known, but it is not a read token.
    let mut answer = s
        .http
        .post(format!("{}/v1/register", s.server.base))
        .header("Content-Type", "application/json")
        .send(json!({"name": "reader-probe", "facts": {}, "enrollSecret": SECRET}).to_string())
        .unwrap();
    assert_eq!(answer.status().as_u16(), 201);
    let token: Value = serde_json::from_str(&answer.body_mut().read_to_string().unwrap()).unwrap();
    let client_auth = format!("Bearer {}", token["token"].as_str().unwrap());
    let (status, body) = get("/v1/read/deployments", &[("Authorization", &client_auth)]);
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("needs a read token"), "{body}");
    assert!(read("/v1/read/deployments").as_array().unwrap().len() >= 5);
    let cookie = format!("lang=en; patchops_read={READ_TOKEN}");
    let (status, _) = get("/v1/read/site", &[("Cookie", &cookie)]);
    assert_eq!(status, 200);
}

#[test]
fn a_management_point_without_a_site_engine_answers_503_saying_so() {
    let s = site();
    let mut config = ServerConfig::new(SECRET);
    config.read_token_hashes = vec![hex::encode(Sha256::digest(READ_TOKEN.as_bytes()))];
    let bare = BackgroundServer::start_with("127.0.0.1:0".parse().unwrap(), &s.store, config).unwrap();
    let mut answer = s
        .http
        .get(format!("{}/v1/read/deployments", bare.base))
        .header("Authorization", format!("Bearer {READ_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(answer.status().as_u16(), 503);
    let body = answer.body_mut().read_to_string().unwrap();
    assert!(body.contains("runs no site engine"), "{body}");
    // The store-backed reads still answer.
    let versions = s
        .http
        .get(format!("{}/v1/read/catalog/versions", bare.base))
        .header("Authorization", format!("Bearer {READ_TOKEN}"))
        .call()
        .unwrap();
    assert_eq!(versions.status().as_u16(), 200);
    bare.stop().unwrap();
}

#[test]
fn paging_through_clients_returns_every_client_once_in_name_order() {
    let summary = read("/v1/read/site");
    let total = summary["clients"].as_u64().unwrap() as usize;
    assert!(total >= 1000, "{summary}");
    let mut names: Vec<String> = Vec::new();
    loop {
        let page = read(&format!("/v1/read/clients?offset={}&limit=250", names.len()));
        assert_eq!(page["total"].as_u64().unwrap() as usize, total);
        let items = page["items"].as_array().unwrap();
        if items.is_empty() {
            break;
        }
        names.extend(items.iter().map(|c| c["name"].as_str().unwrap().to_string()));
    }
    assert_eq!(names.len(), total);
    assert!(names.windows(2).all(|w| w[0] < w[1]), "sorted by name, no repeats");
    let auth = format!("Bearer {READ_TOKEN}");
    let (status, body) = get("/v1/read/clients?limit=5000", &[("Authorization", &auth)]);
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("1 to 1000"), "{body}");
    let (status, body) = get("/v1/read/clients?limt=5", &[("Authorization", &auth)]);
    assert_eq!(status, 400, "a misspelt parameter is not ignored: {body}");
    let servers = read("/v1/read/clients?selector=role%3Dserver&limit=1");
    assert!(servers["total"].as_u64().unwrap() > 0 && (servers["total"].as_u64().unwrap() as usize) < total);
}

#[test]
fn machines_per_state_add_up_to_the_deployment_status_counts() {
    let deployments = read("/v1/read/deployments");
    let mut checked = 0;
    for d in deployments.as_array().unwrap() {
        let name = d["name"].as_str().unwrap();
        let m = &d["status"]["machines"];
        for (state, key) in [
            ("Compliant", "compliant"),
            ("Required", "required"),
            ("Unknown", "unknown"),
            ("Failed", "failed"),
            ("PendingReboot", "pendingReboot"),
            ("Waived", "waived"),
        ] {
            let page = read(&format!("/v1/read/deployments/{name}/machines?state={state}&limit=3"));
            assert_eq!(page["total"], m[key], "{name} {state}");
            for row in page["items"].as_array().unwrap() {
                if state == "Required" || state == "Unknown" {
                    assert!(row["reason"].is_string() && row["message"].is_string(), "{row}");
                }
            }
        }
        let all = read(&format!("/v1/read/deployments/{name}/machines?limit=1"));
        assert_eq!(all["total"], d["status"]["targeted"], "{name}");
        checked += m["required"].as_u64().unwrap();
    }
    assert!(checked > 0, "the example site has required machines");
    let auth = format!("Bearer {READ_TOKEN}");
    let (status, body) = get("/v1/read/deployments/nope/machines", &[("Authorization", &auth)]);
    assert_eq!(status, 404);
    assert!(body["error"].as_str().unwrap().contains("/v1/read/deployments"), "{body}");
}

#[test]
fn a_client_names_every_update_with_its_reason_and_why_it_is_not_compliant() {
    let required = read("/v1/read/deployments/2026-11-servers/machines?state=Required&limit=1");
    let name = required["items"][0]["name"].as_str().unwrap().to_string();
    let client = read(&format!("/v1/read/clients/{name}"));
    assert!(client["whyNotCompliant"].as_str().unwrap().starts_with("Required:"), "{client}");
    assert!(client["deployments"].as_array().unwrap().iter().any(|d| d["name"] == "2026-11-servers"));
    assert!(client["updates"].as_array().unwrap().iter().any(|u| u["state"] == "Required" && u["reason"].is_string()));
    assert!(client["lastScan"]["catalogVersion"].as_u64().unwrap() >= 1);
    assert!(!client["collections"].as_array().unwrap().is_empty());
}

#[test]
fn history_and_catalog_versions_come_from_the_store() {
    let history = read("/v1/read/deployments/2026-11-servers/history");
    let entries = history["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "{history}");
    assert!(entries[0]["status"]["targeted"].as_u64().is_some());
    let versions = read("/v1/read/catalog/versions");
    assert!(versions.as_array().unwrap()[0]["version"].as_u64().unwrap() >= 1);
}

#[test]
fn get_deployments_prints_the_status_table_json_and_csv() {
    let table = stdout(&patchops(&["get", "deployments"]));
    assert!(table.starts_with("DEPLOYMENT"), "{table}");
    assert!(table.contains("2026-11-servers") && !table.contains("DEADLINE"), "{table}");
    assert!(table.lines().all(|l| l.chars().count() <= 120), "{table}");
    let wide = stdout(&patchops(&["get", "deployments", "-o", "wide"]));
    assert!(wide.contains("DEADLINE") && wide.contains("WAIVED"), "{wide}");
    let json: Value = serde_json::from_str(&stdout(&patchops(&["get", "deployments", "-o", "json"]))).unwrap();
    assert!(json.as_array().unwrap().iter().any(|d| d["status"]["machines"]["required"].is_u64()));
    let bare = stdout(&patchops(&["--no-headers", "get", "collections"]));
    assert!(!bare.contains("COLLECTION") && bare.contains("servers"), "{bare}");
    let csv = stdout(&patchops(&["get", "clients", "--selector", "role=server", "-o", "csv"]));
    let servers = read("/v1/read/clients?selector=role%3Dserver&limit=1")["total"].as_u64().unwrap() as usize;
    assert_eq!(csv.lines().count(), servers + 1, "a header and one line per server");
    assert!(csv.starts_with("client,os,agent,last_scan,scan_state,required,deployments"), "{csv}");
}

#[test]
fn get_updates_by_cve_lists_exactly_the_updates_fixing_it() {
    let cve = "CVE-2025-60979";
    let expected: Vec<String> = read(&format!("/v1/read/updates?cve={cve}"))["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["id"].as_str().unwrap().to_string())
        .collect();
    assert!(!expected.is_empty());
    let out = stdout(&patchops(&["get", "updates", "--cve", cve, "--no-headers"]));
    let ids: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    assert_eq!(ids, expected);
    let none = patchops(&["get", "updates", "--cve", "CVE-1999-0001"]);
    assert!(String::from_utf8_lossy(&none.stderr).contains("No resources found"));
    let misuse = patchops(&["get", "clients", "--cve", cve]);
    assert_eq!(misuse.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&misuse.stderr).contains("--cve filters updates"));
}

#[test]
fn describe_shows_a_deployment_a_client_and_an_update() {
    let d = stdout(&patchops(&["describe", "deployment", "2026-11-servers"]));
    for part in ["Name:               2026-11-servers", "Machines:", "Conditions:", "Required machines ("] {
        assert!(d.contains(part), "lacks {part:?}:\n{d}");
    }
    let name = read("/v1/read/clients?limit=1")["items"][0]["name"].as_str().unwrap().to_string();
    let c = stdout(&patchops(&["describe", "client", &name]));
    assert!(c.contains("Why not compliant:") && c.contains("Updates:"), "{c}");
    let id = read("/v1/read/updates?cve=CVE-2025-60979")["items"][0]["id"].as_str().unwrap().to_string();
    let u = stdout(&patchops(&["describe", "update", &id]));
    assert!(u.contains("CVE-2025-60979") && u.contains("Required by:"), "{u}");
    let missing = patchops(&["describe", "client", "no-such-host"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"), "{}", String::from_utf8_lossy(&missing.stderr));
}

#[test]
fn the_cli_reads_server_and_token_from_a_config_file_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, format!("server: {}\ntoken: {READ_TOKEN}\n", site().server.base)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["get", "deployments", "--config"])
        .arg(&config)
        .env_remove("PATCHOPS_SERVER")
        .env_remove("PATCHOPS_TOKEN")
        .output()
        .unwrap();
    assert!(stdout(&out).contains("2026-11-servers"));
    // The default place, under HOME.
    std::fs::create_dir_all(dir.path().join(".config/patchops")).unwrap();
    std::fs::copy(&config, dir.path().join(".config/patchops/config.yaml")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["get", "collections"])
        .env("HOME", dir.path())
        .env_remove("XDG_CONFIG_HOME")
        .env_remove("PATCHOPS_SERVER")
        .env_remove("PATCHOPS_TOKEN")
        .output()
        .unwrap();
    assert!(stdout(&out).contains("servers"));
    let out = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["get", "deployments", "--server", &site().server.base])
        .env("HOME", "/nonexistent")
        .env_remove("PATCHOPS_TOKEN")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("PATCHOPS_TOKEN"));
    let wrong = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["get", "deployments", "--server", &site().server.base])
        .env("PATCHOPS_TOKEN", "wrong")
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("401"));
}

#[test]
fn a_watch_prints_the_table_once_and_then_only_changes() {
    let started = std::time::Instant::now();
    let out = stdout(&patchops(&["get", "deployments", "--watch", "--watch-count", "2"]));
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "it waited between fetches");
    assert_eq!(out.matches("DEPLOYMENT").count(), 1, "one header:\n{out}");
    assert_eq!(out.matches("2026-11-servers").count(), 1, "nothing changed, nothing printed again:\n{out}");
}

#[test]
fn get_flags_that_are_not_understood_are_usage_errors_exit_64() {
    let out = patchops(&["get", "everything"]);
    assert_eq!(out.status.code(), Some(64));
    let out = patchops(&["get", "clients", "--selector", "role"]);
    assert_eq!(out.status.code(), Some(64));
    let help = patchops(&["get", "--help"]);
    assert!(stdout(&help).contains("Examples:"));
}

#[test]
fn the_update_repository_sorts_on_the_server_most_required_first_and_newest_first() {
    let all = read("/v1/read/updates?limit=1000");
    let total = all["total"].as_u64().unwrap() as usize;
    assert!(total > 5, "the example catalog has updates");
    let column = |sort: &str, field: &str| -> Vec<Value> {
        let page = read(&format!("/v1/read/updates?limit=1000&sort={sort}"));
        assert_eq!(page["total"].as_u64().unwrap() as usize, total, "sorting keeps every update");
        page["items"].as_array().unwrap().iter().map(|u| u[field].clone()).collect()
    };
    let required: Vec<u64> = column("-required", "required").iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(required.windows(2).all(|w| w[0] >= w[1]), "most required first: {required:?}");
    assert!(required[0] > 0, "some update is required somewhere in the example fleet");
    let fewest: Vec<u64> = column("required", "required").iter().map(|v| v.as_u64().unwrap()).collect();
    assert!(fewest.windows(2).all(|w| w[0] <= w[1]), "{fewest:?}");
    let released: Vec<String> =
        column("-released", "released").iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(released.windows(2).all(|w| w[0] >= w[1]), "newest first: {released:?}");
    // A page of a sorted listing is the same slice of the whole sorted listing.
    let whole = column("-required", "id");
    let second = read("/v1/read/updates?limit=3&offset=3&sort=-required");
    let ids: Vec<Value> = second["items"].as_array().unwrap().iter().map(|u| u["id"].clone()).collect();
    assert_eq!(ids, whole[3..6.min(whole.len())].to_vec());
    let (status, body) = get("/v1/read/updates?sort=popularity", &[("authorization", &format!("Bearer {READ_TOKEN}"))]);
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("sort by id, released, severity or required"), "{body}");
}
