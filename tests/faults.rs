//! The fault suite: the real `patchops` binary against what a flaky network, a crash or
//! an attacker does, all on loopback and bounded in time. kill -9 during ingestion on
//! both stores (nothing acknowledged is lost, nothing is applied twice), half-open and
//! slow connections, a trickled body, descriptor exhaustion, decompression bombs, and the
//! agent against a scripted server answering garbage.

mod common;
use common::{at, update};

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use patchops::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use patchops::compliance::{Enforcement, ScanResult};
use patchops::store::Store;
use serde_json::{Value, json};

const SECRET: &str = "let-me-in";
const BIN: &str = env!("CARGO_BIN_EXE_patchops");

/// A free port on loopback (bound, read, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `patchops serve` in a child process, its stderr collected in a file.
struct Serve {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Serve {
    fn start(dir: &Path, store: &str, extra: &[&str]) -> Self {
        Self::start_with(dir, store, extra, None)
    }

    fn start_with(dir: &Path, store: &str, extra: &[&str], nofile: Option<&str>) -> Self {
        let port = free_port();
        let log = dir.join(format!("serve-{port}.log"));
        let mut command = match nofile {
            Some(limit) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={limit}")).arg("--").arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = command
            .args(["serve", "--store", store, "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("PATCHOPS_ENROLL_SECRET", SECRET)
            .env("PATCHOPS_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let serve = Serve { child, base: format!("http://127.0.0.1:{port}"), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http().get(format!("{}/healthz", serve.base)).call().is_err() {
            assert!(Instant::now() < deadline, "the server did not start: {}", serve.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
        serve
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(20)))
        .build()
        .into()
}

fn register(base: &str, name: &str) -> String {
    let body = json!({"name": name, "enrollSecret": SECRET}).to_string();
    let mut r = http().post(format!("{base}/v1/register")).send(body).unwrap();
    assert_eq!(r.status(), 201);
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Batch `sequence` of a client: a scan at a time that names the sequence, so the stored
/// scan time tells which batch was applied last.
fn batch(client: &str, sequence: u64) -> StateBatch {
    let time = at("2026-11-24T00:00:00Z").checked_add(jiff::SignedDuration::from_secs(sequence as i64)).unwrap();
    StateBatch {
        client: client.into(),
        sequence,
        messages: vec![StateMessage::ScanCompleted {
            time,
            catalog_version: 1,
            agent_version: None,
            updates: vec![UpdateReport {
                id: if sequence.is_multiple_of(2) { "KB1-a" } else { "KB2-a" }.into(),
                result: ScanResult::Missing,
                enforcement: Enforcement::None,
            }],
        }],
    }
}

/// Post a batch; Some(outcome) when the server acknowledged it.
fn post(base: &str, token: &str, b: &StateBatch) -> Option<String> {
    let response = http()
        .post(format!("{base}/v1/states"))
        .header("Authorization", format!("Bearer {token}"))
        .send(serde_json::to_string(b).unwrap());
    let mut r = response.ok()?;
    if r.status() != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&r.body_mut().read_to_string().ok()?).ok()?;
    v["outcome"].as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------------------
// kill -9 during ingestion.

/// Four clients post batches as fast as they can while the server is killed with
/// SIGKILL three times and restarted. Afterwards every client's stored scan is the one of
/// its newest acknowledged batch or a later one, and every acknowledged batch sent again
/// is a duplicate: nothing acknowledged was lost, nothing is applied twice.
fn kill_9_during_ingestion(store: &str, dir: &Path) {
    let clients = ["web-01", "web-02", "db-01", "db-02"];
    let mut server = Serve::start(dir, store, &[]);
    let tokens: Vec<String> = clients.iter().map(|c| register(&server.base, c)).collect();
    let mut acked: Vec<u64> = vec![0; clients.len()];
    let mut next: Vec<u64> = vec![1; clients.len()];
    for round in 0..3 {
        let base = server.base.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..clients.len())
            .map(|i| {
                let (base, token, client, stop) = (base.clone(), tokens[i].clone(), clients[i], stop.clone());
                let (mut seq, mut last_acked) = (next[i], acked[i]);
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        match post(&base, &token, &batch(client, seq)) {
                            Some(_) => {
                                last_acked = seq;
                                seq += 1;
                            }
                            // Not acknowledged: the agent keeps the batch and resends it.
                            None => std::thread::sleep(Duration::from_millis(20)),
                        }
                    }
                    (seq, last_acked)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 150 * round));
        server.kill9();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for (i, w) in workers.into_iter().enumerate() {
            let (seq, last) = w.join().unwrap();
            next[i] = seq;
            acked[i] = last;
        }
        server = Serve::start(dir, store, &[]);
    }
    assert!(acked.iter().all(|a| *a > 0), "every client got batches through: {acked:?}");
    // Every batch ever acknowledged, sent again, is a duplicate.
    for (i, client) in clients.iter().enumerate() {
        for seq in [1, acked[i] / 2, acked[i]] {
            let outcome = post(&server.base, &tokens[i], &batch(client, seq.max(1)));
            assert_eq!(outcome.as_deref(), Some("duplicate"), "{client} batch {seq}");
        }
    }
    drop(server);
    let s = patchops::store::open(store).unwrap();
    let fleet = s.load_fleet().unwrap();
    for (i, client) in clients.iter().enumerate() {
        let c = &fleet.clients[fleet.index_of(client).unwrap()];
        let scanned = c.compliance.last_scan.as_ref().expect("a scan is stored").time;
        let newest_acked = batch(client, acked[i]);
        let StateMessage::ScanCompleted { time, .. } = &newest_acked.messages[0] else { unreachable!() };
        assert!(scanned >= *time, "{client}: the newest acknowledged batch ({}) is stored", acked[i]);
        // The stored scan belongs to a batch that was sent (acknowledged or in flight).
        let applied = (scanned.as_second() - at("2026-11-24T00:00:00Z").as_second()) as u64;
        assert!(applied <= next[i], "{client}: scan of batch {applied}, only {} were sent", next[i]);
    }
}

fn seed_catalog(store: &mut dyn Store) {
    store.save_catalog(&[update("KB1-a"), update("KB2-a")], at("2026-11-01T00:00:00Z")).unwrap();
}

#[test]
fn kill_9_during_ingestion_on_sqlite_loses_no_acknowledged_batch_and_applies_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    seed_catalog(patchops::store::open(&store).unwrap().as_mut());
    kill_9_during_ingestion(&store, dir.path());
}

#[test]
fn kill_9_during_ingestion_on_postgres_loses_no_acknowledged_batch_and_applies_none_twice() {
    let url = std::env::var("PATCHOPS_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string());
    let schema = format!("patchops_fault_{:016x}", fastrand::u64(..));
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).expect("PostgreSQL on 127.0.0.1:5432");
    admin.batch_execute(&format!("CREATE SCHEMA \"{schema}\"")).unwrap();
    let store = format!("{url}?options=-csearch_path%3D{schema}");
    let dir = tempfile::tempdir().unwrap();
    seed_catalog(patchops::store::open(&store).unwrap().as_mut());
    kill_9_during_ingestion(&store, dir.path());
    admin.batch_execute(&format!("DROP SCHEMA \"{schema}\" CASCADE")).unwrap();
}

// ---------------------------------------------------------------------------------------
// Slow and half-open connections, descriptor exhaustion.

/// Whether the server closed the connection within `within` (a read returns EOF or an
/// error other than a timeout).
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    stream.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let mut buf = [0u8; 1024];
    while Instant::now() < deadline {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// Item 6: 500 half-open connections used to stay open indefinitely. Connections that
/// send nothing, or only part of their headers, now are closed after the header timeout,
/// while a real client is answered.
#[test]
fn half_open_connections_and_trickled_headers_are_closed_by_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    let server = Serve::start(dir.path(), &store, &["--header-timeout", "1"]);
    let addr = format!("127.0.0.1:{}", server.port());
    let mut silent: Vec<TcpStream> = (0..100).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let mut partial: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        })
        .collect();
    // One that trickles a header byte every 200 ms: never finishes within the timeout.
    let mut trickle = TcpStream::connect(&addr).unwrap();
    let started = Instant::now();
    let mut cut = false;
    for b in b"GET /healthz HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if trickle.write_all(&[*b]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(4) {
            break;
        }
    }
    assert!(cut || closed_within(&mut trickle, Duration::from_secs(2)), "the trickling connection is cut");
    assert!(started.elapsed() < Duration::from_secs(5));
    // A real client is answered meanwhile.
    assert_eq!(http().get(format!("{}/healthz", server.base)).call().unwrap().status(), 200);
    for s in silent.iter_mut().chain(partial.iter_mut()) {
        assert!(closed_within(s, Duration::from_secs(3)), "a half-open connection stays open");
    }
}

/// Item 6: a body sent at 1 byte/s used to be waited for forever; now it is cut off with
/// 408 after the body timeout and nothing is applied.
#[test]
fn a_body_trickled_byte_by_byte_is_cut_off_with_408() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    seed_catalog(patchops::store::open(&store).unwrap().as_mut());
    let server = Serve::start(dir.path(), &store, &["--body-timeout", "1"]);
    let token = register(&server.base, "web-01");
    let body = serde_json::to_string(&batch("web-01", 1)).unwrap();
    let mut s = TcpStream::connect(format!("127.0.0.1:{}", server.port())).unwrap();
    write!(
        s,
        "POST /v1/states HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let started = Instant::now();
    s.set_read_timeout(Some(Duration::from_millis(150))).unwrap();
    let mut answer = Vec::new();
    for b in body.as_bytes() {
        if s.write_all(&[*b]).is_err() || started.elapsed() > Duration::from_secs(5) {
            break;
        }
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            _ => {}
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within 1 seconds"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3), "cut off after about the body timeout");
    let fleet = patchops::store::open(&store).unwrap().load_fleet().unwrap();
    assert!(fleet.clients[0].compliance.last_scan.is_none(), "nothing applied");
}

/// Item 6: more connections than the limit wait in the listen queue (and the log says
/// so) instead of taking file descriptors; idle ones are closed, and a real client gets
/// its answer.
#[test]
fn past_the_connection_limit_the_log_says_so_and_a_real_client_is_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    let server = Serve::start(dir.path(), &store, &["--max-connections", "20", "--header-timeout", "1"]);
    let addr = format!("127.0.0.1:{}", server.port());
    let idle: Vec<TcpStream> = (0..50).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let started = Instant::now();
    let reply = http().get(format!("{}/healthz", server.base)).call().unwrap();
    assert_eq!(reply.status(), 200);
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    assert!(server.log_text().contains("connection limit reached"), "{}", server.log_text());
    drop(idle);
}

/// Item 6: the open-file limit is raised to the hard limit at start (here from 64 to
/// 4096), and when descriptors do run out (a hard limit of 64), accepting fails with a
/// clear log line, the server keeps running, and answers again once clients leave.
#[test]
fn the_open_file_limit_is_raised_and_running_out_of_descriptors_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    let raised = Serve::start_with(dir.path(), &store, &[], Some("64:4096"));
    let pid = raised.child.id();
    // prlimit execs patchops in the same process.
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    assert_eq!(line.split_whitespace().filter(|w| *w == "4096").count(), 2, "soft = hard: {line}");
    drop(raised);

    let server = Serve::start_with(dir.path(), &store, &["--header-timeout", "2"], Some("64:64"));
    let addr = format!("127.0.0.1:{}", server.port());
    let hogs: Vec<TcpStream> = (0..120).filter_map(|_| TcpStream::connect(&addr).ok()).collect();
    std::thread::sleep(Duration::from_millis(500));
    assert!(server.log_text().contains("cannot accept a connection"), "{}", server.log_text());
    drop(hogs);
    let started = Instant::now();
    loop {
        if let Ok(r) = http().get(format!("{}/healthz", server.base)).call() {
            assert_eq!(r.status(), 200);
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the server does not recover");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------------------
// Decompression bombs.

fn import(dir: &Path, format: &str, file: &Path, limit_mib: &str) -> std::process::Output {
    Command::new(BIN)
        .args(["catalog", "import", "--format", format])
        .arg(file)
        .env("PATCHOPS_MAX_DECOMPRESSED_MIB", limit_mib)
        .env("PATCHOPS_STATE_DIR", dir)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Item 7: an 8 MB → 8 GiB gzip bomb took 2.1 GB of memory and failed as "truncated or
/// corrupt (out of memory)". Decompression now stops at the cap and says so.
#[test]
fn a_gzip_bomb_is_refused_at_the_decompression_limit_with_the_limit_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Packages.gz");
    // 256 gzip members of 1 MiB of zeros each (gzip allows concatenated members): 256 MiB
    // in about 256 KiB, made without compressing 256 MiB.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = gz.finish().unwrap();
    std::fs::write(&path, member.repeat(256)).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 1 << 20, "256 MiB in under 1 MiB");
    let out = import(dir.path(), "debian-packages", &path, "16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("larger than the 16 MiB limit"), "{stderr}");
    assert!(stderr.contains("Packages.gz"), "names the file: {stderr}");
    assert!(!stderr.contains("out of memory"), "{stderr}");
}

/// Item 7: a zip of OSV advisories whose members inflate past the cap is refused too.
#[test]
fn a_zip_bomb_of_osv_advisories_is_refused_at_the_decompression_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("Debian.zip");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    let options = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    let spaces = vec![b' '; 1 << 20];
    for member in ["DSA-1.json", "DSA-2.json"] {
        // An empty array padded with 12 MiB of white space: valid JSON, tiny compressed.
        zip.start_file(member, options).unwrap();
        zip.write_all(b"[]").unwrap();
        for _ in 0..12 {
            zip.write_all(&spaces).unwrap();
        }
    }
    zip.finish().unwrap();
    let out = import(dir.path(), "osv", &path, "zip=16");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Debian.zip!/DSA-2.json") && stderr.contains("larger than the 16 MiB limit"), "{stderr}");
}

// ---------------------------------------------------------------------------------------
// The agent against a scripted garbage server.

/// A server answering `register` with a token and every other path with `answer(path)`.
fn garbage_server(answer: fn(&str) -> (u16, &'static str, Vec<u8>)) -> (String, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let Ok(Some(request)) = server.recv_timeout(Duration::from_millis(200)) else { continue };
            let path = request.url().split('?').next().unwrap().to_string();
            let (status, kind, body) = if path == "/v1/register" {
                (201, "application/json", br#"{"token": "t0k3n"}"#.to_vec())
            } else if path == "/stop" {
                let _ = request.respond(tiny_http::Response::empty(200));
                return;
            } else {
                answer(&path)
            };
            let header = tiny_http::Header::from_bytes("Content-Type", kind).unwrap();
            let _ = request.respond(tiny_http::Response::from_data(body).with_status_code(status).with_header(header));
        }
    });
    (base, handle)
}

fn run_agent(server: &str, dir: &Path) -> (Option<i32>, String) {
    std::fs::create_dir_all(dir).unwrap();
    let facts = dir.join("facts.yaml");
    std::fs::write(&facts, "facts: {os: Windows Server 2022}\ninstalled: []\n").unwrap();
    let secret = dir.join("secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let out = Command::new(BIN)
        .args(["agent", "--once", "--scan-now", "--scanner", "rules", "--name", "garbage-1", "--server", server])
        .arg("--enroll-secret-file")
        .arg(&secret)
        .arg("--facts")
        .arg(&facts)
        .arg("--state-dir")
        .arg(dir.join("agent"))
        .env("PATCHOPS_LOG", "info")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn stop(base: &str, handle: std::thread::JoinHandle<()>) {
    let _ = http().get(format!("{base}/stop")).call();
    handle.join().unwrap();
}

fn policy_json() -> Vec<u8> {
    let policy = patchops::reconcile::policy::ClientPolicy {
        catalog_version: 1,
        revision: "main@sha1:0".into(),
        settings: Default::default(),
        maintenance_windows: vec![],
        deployments: vec![],
    };
    serde_json::to_vec(&policy).unwrap()
}

/// Item 8: the agent logged these at debug level and `--once` exited 0 with "scans=0".
/// Each is now a warning naming the URL and the reason, and `--once` fails.
#[test]
fn the_agent_fails_loudly_when_the_server_is_unreachable_or_answers_garbage() {
    let dir = tempfile::tempdir().unwrap();
    // Unreachable: nothing listens on the port.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let (code, stderr) = run_agent(&closed, &dir.path().join("a"));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("WARN") && stderr.contains(&format!("{closed}/v1/register")), "{stderr}");

    // An HTML page where the policy should be.
    let (base, h) = garbage_server(|_| (200, "text/html", b"<html><body>Sign in to the Wi-Fi</body></html>".to_vec()));
    let (code, stderr) = run_agent(&base, &dir.path().join("b"));
    stop(&base, h);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{base}/v1/policy")) && stderr.contains("text/html, not JSON"), "{stderr}");
    assert!(stderr.contains("next attempt in 30 s"), "the backoff is visible: {stderr}");

    // JSON that is not a policy.
    let (base, h) = garbage_server(|_| (200, "application/json", br#"{"hello": "world"}"#.to_vec()));
    let (code, stderr) = run_agent(&base, &dir.path().join("c"));
    stop(&base, h);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("/v1/policy") && stderr.contains("not the JSON the API promises"), "{stderr}");

    // A 100 MB "policy".
    let (base, h) = garbage_server(|_| {
        let mut body = b"{\"catalogVersion\": 1, \"revision\": \"".to_vec();
        body.resize(100 << 20, b'a');
        (200, "application/json", body)
    });
    let (code, stderr) = run_agent(&base, &dir.path().join("d"));
    stop(&base, h);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{base}/v1/policy")), "{stderr}");

    // A good policy, then a catalog that is garbage: the scan cannot run.
    let (base, h) = garbage_server(|path| match path {
        "/v1/policy" => (200, "application/json", policy_json()),
        _ => (200, "application/json", br#"{"version": "one", "updates": 7}"#.to_vec()),
    });
    let (code, stderr) = run_agent(&base, &dir.path().join("e"));
    stop(&base, h);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{base}/v1/catalog")) && stderr.contains("cannot fetch the catalog"), "{stderr}");
}

/// Item 2: the agent used to re-register on 401, so two hosts with one name evicted each
/// other forever. A name held by another host now stops the agent with a clear error.
#[test]
fn an_agent_whose_name_is_held_by_another_host_stops_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    let server = Serve::start(dir.path(), &store, &[]);
    let holder = register(&server.base, "garbage-1");
    let (code, stderr) = run_agent(&server.base, dir.path());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("already registered by another host") && stderr.contains("--name"), "{stderr}");
    let r = http()
        .get(format!("{}/v1/catalog", server.base))
        .header("Authorization", format!("Bearer {holder}"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200, "the holder keeps its identity");
}

/// Item 9: the token file was created 0644 in a 0755 folder.
#[test]
fn the_agent_keeps_its_token_in_a_private_folder_and_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("patchops.db").to_string_lossy().to_string();
    let server = Serve::start(dir.path(), &store, &[]);
    let (code, stderr) = run_agent(&server.base, dir.path());
    // Registered (the token is kept); no reconcile has assigned a policy yet, so the one
    // cycle of --once cannot complete and says so.
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("no policy for garbage-1 yet"), "{stderr}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir.path().join("agent")), 0o700);
    assert_eq!(mode(&dir.path().join("agent/state.json")), 0o600);
    assert!(std::fs::read_to_string(dir.path().join("agent/state.json")).unwrap().contains("\"token\""));
    assert!(!stderr.contains("shows in `ps`"), "a secret file draws no warning: {stderr}");
}

/// Item 9: `--enroll-secret` and a password in a `postgres://` URL show in `ps`;
/// patchops warns and names the alternatives.
#[test]
fn a_secret_or_a_store_password_on_the_command_line_draws_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = Command::new(BIN)
        .args(["agent", "--once", "--scanner", "rules", "--server", &closed, "--enroll-secret", "s3cret"])
        .arg("--facts")
        .arg(dir.path().join("missing.yaml"))
        .arg("--state-dir")
        .arg(dir.path().join("agent"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--enroll-secret") && stderr.contains("shows in `ps`"), "{stderr}");
    assert!(stderr.contains("--enroll-secret-file"), "names the alternative: {stderr}");
    assert!(!stderr.contains("s3cret"), "the secret itself is not logged: {stderr}");

    let url = format!("postgres://patchops:hunter2@127.0.0.1:{}/patchops", free_port());
    let out = Command::new(BIN).args(["client", "release", "web-01", "--store", &url]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the store cannot be reached: {stderr}");
    assert!(stderr.contains("store URL with a password") && stderr.contains("PATCHOPS_STORE"), "{stderr}");
}
