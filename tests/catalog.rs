//! Catalog synchronization end to end: real vendor data (tests/data, copied from ../shared/data), an HTTP
//! source on loopback, a SQLite store file. A failing source never changes the current
//! catalog version.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use patchops::catalog::source::Fetcher;
use patchops::catalog::sync::Syncer;
use patchops::catalog::{debian, msrc_cvrf};
use patchops::desired::DesiredState;
use patchops::resources::{CatalogFormat, CatalogSource, UpdateCatalog, UpdateCatalogSpec};
use patchops::store::Store;

fn data(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(path)
}

fn now() -> Timestamp {
    "2026-11-24T12:00:00Z".parse().unwrap()
}

fn spec(format: CatalogFormat, source: CatalogSource) -> UpdateCatalogSpec {
    UpdateCatalogSpec {
        source,
        format,
        sync_interval: patchops::time::Duration::from_hours(1),
        product: None,
        products: vec![],
        classifications: vec![],
        max_shrink_percent: None,
        allow_shrink: false,
    }
}

fn desired(catalogs: &[(&str, UpdateCatalogSpec)]) -> DesiredState {
    let mut d = DesiredState::default();
    for (name, s) in catalogs {
        d.catalogs.insert(name.to_string(), UpdateCatalog::new(name, s.clone()));
    }
    d
}

fn file(path: &Path) -> CatalogSource {
    CatalogSource { file: Some(path.display().to_string()), ..Default::default() }
}

fn url(u: &str) -> CatalogSource {
    CatalogSource { url: Some(u.to_string()), ..Default::default() }
}

/// What the server answers: status, body, ETag.
type Answer = Arc<Mutex<(u16, Vec<u8>, Option<String>)>>;

/// A loopback HTTP server whose answers the test scripts.
struct Server {
    url: String,
    answer: Answer,
    requests: Arc<Mutex<usize>>,
}

fn server() -> Server {
    let http = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}/catalog", http.server_addr().to_ip().unwrap());
    let answer: Answer = Arc::new(Mutex::new((200, Vec::new(), None)));
    let requests = Arc::new(Mutex::new(0));
    let (a, r) = (answer.clone(), requests.clone());
    std::thread::spawn(move || {
        for request in http.incoming_requests() {
            *r.lock().unwrap() += 1;
            let (status, body, etag) = a.lock().unwrap().clone();
            let if_none_match =
                request.headers().iter().find(|h| h.field.equiv("If-None-Match")).map(|h| h.value.to_string());
            let mut response = if etag.is_some() && if_none_match == etag {
                tiny_http::Response::from_data(Vec::new()).with_status_code(304)
            } else {
                tiny_http::Response::from_data(body).with_status_code(status)
            };
            if let Some(e) = &etag {
                response.add_header(tiny_http::Header::from_bytes("ETag", e.as_bytes()).unwrap());
            }
            let _ = request.respond(response);
        }
    });
    Server { url, answer, requests }
}

fn syncer(dir: &Path) -> Syncer {
    let mut fetcher = Fetcher::new(&dir.join("cache"), Duration::from_millis(700));
    fetcher.attempts = 2;
    fetcher.backoff = Duration::from_millis(20);
    Syncer::with_fetcher(fetcher)
}

fn store(dir: &Path) -> Box<dyn Store> {
    patchops::store::open(&dir.join("p.db").display().to_string()).unwrap()
}

const NATIVE: &str = r#"format: patchops.dev/native-catalog/v1
updates:
  - id: KB1-a
    kb: KB1
    title: One
    classification: Security Updates
    products: [P]
    released: 2026-11-11
    applicability: {isInstallable: {fact: {name: os, equals: P}}, isInstalled: {installed: KB1}}
"#;

#[test]
fn c2_an_http_source_makes_a_version_only_when_its_content_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut syncer, http) = (store(dir.path()), syncer(dir.path()), server());
    *http.answer.lock().unwrap() = (200, NATIVE.as_bytes().to_vec(), Some("\"a\"".into()));
    let d = desired(&[("vendor", spec(CatalogFormat::Native, url(&http.url)))]);
    let first = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
    assert_eq!((first.catalog.version, first.changed, first.catalog.len()), (1, true, 1));
    // Same ETag: a 304, no download, no new version.
    let second = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
    assert_eq!((second.catalog.version, second.changed), (1, false));
    assert_eq!(*http.requests.lock().unwrap(), 2);
    // Within the sync interval nothing is fetched at all.
    syncer.sync(store.as_mut(), &d, None, now(), false).unwrap();
    assert_eq!(*http.requests.lock().unwrap(), 2);
    // New content: version 2.
    let changed = NATIVE.replace("title: One", "title: One (re-released)");
    *http.answer.lock().unwrap() = (200, changed.into_bytes(), Some("\"b\"".into()));
    let third = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
    assert_eq!((third.catalog.version, third.changed), (2, true));
    assert_eq!(third.statuses["vendor"].catalog_version, Some(2));
}

#[test]
fn a_server_error_or_a_hang_keeps_the_current_version_and_names_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut syncer, http) = (store(dir.path()), syncer(dir.path()), server());
    let local = dir.path().join("local.yaml");
    std::fs::write(&local, NATIVE).unwrap();
    *http.answer.lock().unwrap() = (200, NATIVE.replace("KB1", "KB2").into_bytes(), None);
    let d = desired(&[
        ("local", spec(CatalogFormat::Native, file(&local))),
        ("vendor", spec(CatalogFormat::Native, url(&http.url))),
    ]);
    assert_eq!(syncer.sync(store.as_mut(), &d, None, now(), true).unwrap().catalog.len(), 2);

    *http.answer.lock().unwrap() = (500, b"boom".to_vec(), None);
    std::fs::write(&local, NATIVE.replace("title: One", "title: Changed")).unwrap();
    let out = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
    assert_eq!(out.catalog.version, 1, "nothing saved: the local change waits for the vendor source");
    assert_eq!(out.failed, vec!["vendor".to_string()]);
    let vendor = &out.statuses["vendor"].conditions[0];
    assert_eq!((vendor.status.as_str(), vendor.reason.as_str()), ("False", "SyncFailed"));
    assert!(vendor.message.contains(&http.url) && vendor.message.contains("500"), "{}", vendor.message);
    assert_eq!(out.statuses["local"].conditions[0].reason, "WaitingForOtherSources");
    assert_eq!(store.load_catalog().unwrap().version, 1);

    // A server that never answers: the timeout ends it, same outcome.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_url = format!("http://{}/x", hang.local_addr().unwrap());
    let d = desired(&[("vendor", spec(CatalogFormat::Native, url(&hang_url)))]);
    let started = std::time::Instant::now();
    let out = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!((out.catalog.version, out.failed.len()), (1, 1));
    drop(hang);
}

#[test]
fn truncated_or_malformed_documents_fail_with_their_position_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut syncer) = (store(dir.path()), syncer(dir.path()));
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, NATIVE).unwrap();
    let d = desired(&[("good", spec(CatalogFormat::Native, file(&good)))]);
    syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();

    let cvrf = std::fs::read(data("msrc-cvrf/cvrfDocument-2023-Jan.xml.gz")).unwrap();
    let cases: Vec<(&str, CatalogFormat, Vec<u8>, &str)> = vec![
        ("cut.xml.gz", CatalogFormat::MsrcCvrf, cvrf[..cvrf.len() / 2].to_vec(), "byte offset"),
        ("cut.xml", CatalogFormat::MsrcCvrf, debian::decompress("x", &cvrf).unwrap()[..200_000].to_vec(), "line"),
        (
            "bad.yaml",
            CatalogFormat::Native,
            NATIVE.replace("released: 2026-11-11", "released: 11/11/2026").into_bytes(),
            "updates[0].released",
        ),
        ("latin1.yaml", CatalogFormat::Native, b"format: x\ntitle: caf\xe9\n".to_vec(), "UTF-8"),
        (
            "dsa",
            CatalogFormat::DebianDsa,
            b"[29 Mar 2023] DSA-5380-1 xorg-server - security update\n\t[bullseye] xorg-server\n".to_vec(),
            "line 2",
        ),
    ];
    for (name, format, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let d = desired(&[("good", spec(CatalogFormat::Native, file(&good))), ("bad", spec(format, file(&path)))]);
        let out = syncer.sync(store.as_mut(), &d, None, now(), true).unwrap();
        let message = &out.statuses["bad"].conditions[0].message;
        assert!(message.contains(name) && message.contains(expected), "{name}: {message}");
        assert_eq!(store.load_catalog().unwrap().version, 1, "{name}: the previous version stays current");
    }
}

#[test]
fn o2_a_delta_between_real_catalog_versions_rebuilds_the_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = store(dir.path());
    let read = |f: &str| debian::decompress(f, &std::fs::read(data(f)).unwrap()).unwrap();
    let (apr, jan) = (read("msrc-cvrf/cvrfDocument-2016-Apr.xml.gz"), read("msrc-cvrf/cvrfDocument-2023-Jan.xml.gz"));
    let dsa = read("debian/DSA-list.gz");
    let v1 = msrc_cvrf::parse("2016-Apr", &apr).unwrap();
    store.save_catalog(&v1, now()).unwrap();
    let mut v2 = msrc_cvrf::parse_many(&[("2016-Apr", &apr), ("2023-Jan", &jan)]).unwrap();
    v2.extend(debian::parse_dsa("DSA", &dsa, &debian::DsaOptions { releases: vec!["bullseye".into()] }).unwrap());
    v2.retain(|u| u.id != v1[0].id); // one update withdrawn
    store.save_catalog(&v2, now()).unwrap();
    let delta = store.catalog_delta(1, 2).unwrap();
    assert_eq!(delta.removed, vec![v1[0].id.clone()]);
    let rebuilt = delta.apply(&store.load_catalog_version(1).unwrap().updates);
    assert_eq!(rebuilt, store.load_catalog_version(2).unwrap().updates);
    assert_eq!(rebuilt.len(), v2.len());
}

#[test]
fn sup_filters_keep_only_the_products_and_classifications_asked_for() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut syncer) = (store(dir.path()), syncer(dir.path()));
    let mut s = spec(CatalogFormat::DebianDsa, file(&data("debian/DSA-list.gz")));
    s.products = vec!["Debian (bullseye)".into()]; // the list ends in 2023-03, before bookworm
    let out = syncer.sync(store.as_mut(), &desired(&[("dsa", s)]), None, now(), true).unwrap();
    assert!(!out.catalog.is_empty());
    assert!(out.catalog.updates.iter().all(|u| u.products == vec!["Debian (bullseye)".to_string()]));
    let mut s = spec(CatalogFormat::MsrcCvrf, file(&data("msrc-cvrf/cvrfDocument-2023-Jan.xml.gz")));
    s.classifications = vec!["Monthly Rollup".into()];
    let out = syncer.sync(store.as_mut(), &desired(&[("msrc", s)]), None, now(), true).unwrap();
    assert!(!out.catalog.is_empty());
    assert!(out.catalog.updates.iter().all(|u| u.classification == "Monthly Rollup"));
}

/// A native catalog of `n` updates.
fn native(n: usize) -> Vec<u8> {
    let mut text = "format: patchops.dev/native-catalog/v1\nupdates:\n".to_string();
    if n == 0 {
        text.push_str("  []\n");
    }
    for i in 1..=n {
        text.push_str(&format!(
            "  - id: KB{i}-a\n    kb: KB{i}\n    title: Update {i}\n    classification: Security Updates\n    \
             products: [P]\n    released: 2026-11-11\n    \
             applicability: {{isInstallable: {{fact: {{name: os, equals: P}}}}, isInstalled: {{installed: KB{i}}}}}\n"
        ));
    }
    text.into_bytes()
}

/// Hardening item 5: a URL answering an empty 200 after a good sync removed every update.
/// A sync that would empty a source, or drop more than half of it, is refused (the
/// catalog stays and the UpdateCatalog says why), also after a restart, unless confirmed.
#[test]
fn a_source_that_empties_or_halves_after_a_good_sync_is_refused_unless_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, mut syncer, http) = (store(dir.path()), syncer(dir.path()), server());
    let mut s = spec(CatalogFormat::Native, url(&http.url));
    *http.answer.lock().unwrap() = (200, native(4), None);
    let first = syncer.sync(store.as_mut(), &desired(&[("vendor", s.clone())]), None, now(), true).unwrap();
    assert_eq!((first.catalog.version, first.catalog.len()), (1, 4));

    for (body, what) in [(Vec::new(), "empty 200"), (native(0), "no updates"), (native(1), "lost 3 of 4")] {
        *http.answer.lock().unwrap() = (200, body, None);
        // A fresh syncer, as after a restart: the last count comes from the store.
        let mut restarted = self::syncer(dir.path());
        for syncer in [&mut syncer, &mut restarted] {
            let out = syncer.sync(store.as_mut(), &desired(&[("vendor", s.clone())]), None, now(), true).unwrap();
            assert_eq!(out.failed, vec!["vendor".to_string()], "{what}");
            assert_eq!((out.catalog.version, out.catalog.len()), (1, 4), "{what}: the catalog stays");
            let ready = &out.statuses["vendor"].conditions[0];
            assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ShrinkRefused"), "{what}");
            assert!(
                ready.message.contains("--allow-shrink") && ready.message.contains("allowShrink"),
                "{}",
                ready.message
            );
        }
    }
    assert_eq!(store.load_catalog().unwrap().len(), 4);

    // Losing a quarter is within the default 50 %.
    *http.answer.lock().unwrap() = (200, native(3), None);
    let out = syncer.sync(store.as_mut(), &desired(&[("vendor", s.clone())]), None, now(), true).unwrap();
    assert_eq!((out.catalog.version, out.catalog.len()), (2, 3));
    // Confirmed in the spec: the shrink to one is applied.
    *http.answer.lock().unwrap() = (200, native(1), None);
    s.allow_shrink = true;
    let out = syncer.sync(store.as_mut(), &desired(&[("vendor", s.clone())]), None, now(), true).unwrap();
    assert_eq!((out.catalog.version, out.catalog.len()), (3, 1));
    // A stricter share in the spec: losing 1 of 1… and from 1 to 0 stays refused by default.
    s.allow_shrink = false;
    *http.answer.lock().unwrap() = (200, native(0), None);
    let out = syncer.sync(store.as_mut(), &desired(&[("vendor", s.clone())]), None, now(), true).unwrap();
    assert_eq!(out.failed.len(), 1);
    // --allow-shrink on the syncer confirms it too.
    syncer.allow_shrink = true;
    let out = syncer.sync(store.as_mut(), &desired(&[("vendor", s)]), None, now(), true).unwrap();
    assert_eq!((out.catalog.version, out.catalog.len()), (4, 0));
}

/// Hardening item 5: `catalog import --store` of an empty Packages file saved a version
/// with no updates; it is refused unless --allow-shrink.
#[test]
fn importing_an_empty_source_into_a_store_with_a_catalog_is_refused_unless_confirmed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("p.db").display().to_string();
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, native(4)).unwrap();
    let empty = dir.path().join("Packages");
    std::fs::write(&empty, "").unwrap();
    let import = |format: &str, file: &Path, extra: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_patchops"))
            .args(["catalog", "import", "--format", format, "--store", &db])
            .args(extra)
            .arg(file)
            .env("PATCHOPS_STATE_DIR", dir.path())
            .output()
            .unwrap()
    };
    assert!(import("native", &good, &[]).status.success());
    let out = import("debian-packages", &empty, &["--product", "Debian 12"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("from 4 updates to none") && stderr.contains("--allow-shrink"), "{stderr}");
    assert_eq!(patchops::store::open(&db).unwrap().load_catalog().unwrap().len(), 4, "nothing saved");
    let out = import("debian-packages", &empty, &["--product", "Debian 12", "--allow-shrink"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(patchops::store::open(&db).unwrap().load_catalog().unwrap().len(), 0);
}
