//! `patchops bench server`: the management point over real HTTP on loopback with a
//! SQLite store — policy fetches with ETag hits (rate and latency) and state-message
//! ingestion in batches of 500 from 1,000 clients (rescans of the same updates, then a
//! different set each scan), each next to the same rows bulk-inserted straight into a
//! store, and to the naive way the seed's database works (one INSERT per state message,
//! summarised by a GROUP BY).

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use sha2::{Digest, Sha256};

use crate::compliance::messages::{StateBatch, StateMessage, UpdateReport};
use crate::compliance::{Enforcement, ScanResult};
use crate::store::{ClientInfo, PolicyAssignment, ReconcileRecord, Store};
use crate::{Error, Result};

const CLIENTS: usize = 1_000;
const BATCH: usize = 500;
/// Rounds of each ingestion workload, each next to its reference.
const ROUNDS: usize = 3;

pub fn run() -> Result<ExitCode> {
    println!(
        "patchops bench server ({} cores; loopback HTTP, SQLite store)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let dir = std::env::temp_dir().join(format!("patchops-bench-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io { path: dir.clone(), source })?;
    let db = dir.join("store.db");
    let now = Timestamp::now();

    // A catalog of 2,000 updates, 1,000 enrolled clients, one shared policy.
    let mut store = crate::store::sqlite::SqliteStore::open(&db)?;
    let updates = super::catalog::synthetic_updates(2_000, 0);
    store.save_catalog(&updates, now)?;
    // Clients 0..CLIENTS rescan the same updates; the next CLIENTS a different set each time.
    let mut tokens = Vec::new();
    for c in 0..2 * CLIENTS {
        let token = format!("token-{c:05}");
        let info =
            ClientInfo { name: format!("host-{c:05}"), facts: BTreeMap::new(), agent_version: Some("2.1.0".into()) };
        store.enroll_client(&info, &hex::encode(Sha256::digest(token.as_bytes())), None, now)?;
        tokens.push(token);
    }
    let policy = serde_json::json!({"catalogVersion": 1, "deployments": []});
    let assignments: Vec<PolicyAssignment> =
        (0..CLIENTS).map(|c| PolicyAssignment { client: format!("host-{c:05}"), etag: "p1".into() }).collect();
    let record = ReconcileRecord { time: now, revision: "bench".into(), catalog_version: 1, statuses: vec![] };
    store.save_reconcile(&record, &HashMap::from([("p1".to_string(), policy)]), &assignments)?;
    let store: crate::server::SharedStore = Arc::new(Mutex::new(Box::new(store)));

    // The server on an ephemeral loopback port.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
    let listener = rt
        .block_on(crate::server::bind(([127, 0, 0, 1], 0).into()))
        .map_err(|e| Error::Usage(format!("cannot bind 127.0.0.1: {e}")))?;
    let addr = listener.local_addr().map_err(|e| Error::Runtime(format!("the listener has no address: {e}")))?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(crate::server::serve_listener(
        listener,
        store.clone(),
        crate::server::ServerConfig::new("bench"),
        async move {
            let _ = stop_rx.await;
        },
    ));
    let base = format!("http://{addr}");

    // Policy fetches with ETag hits: 16 client threads for 5 seconds.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let deadline = Instant::now() + Duration::from_secs(5);
    let latencies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..16 {
            let (agent, base, tokens, latencies) = (agent.clone(), &base, &tokens, &latencies);
            s.spawn(move || {
                let mut mine = Vec::new();
                let mut i = t;
                while Instant::now() < deadline {
                    let started = Instant::now();
                    let r = agent
                        .get(format!("{base}/v1/policy"))
                        .header("Authorization", format!("Bearer {}", tokens[i % CLIENTS]))
                        .header("If-None-Match", "\"p1\"")
                        .call();
                    if matches!(&r, Ok(resp) if resp.status().as_u16() == 304) {
                        mine.push(started.elapsed().as_secs_f64() * 1000.0);
                    }
                    i += 16;
                }
                latencies.lock().expect("not poisoned").extend(mine);
            });
        }
    });
    let mut lat = latencies.into_inner().expect("not poisoned");
    lat.sort_by(|a, b| a.total_cmp(b));
    if lat.is_empty() {
        return Err(Error::Usage("no policy fetch answered 304".into()));
    }
    println!(
        "  policy fetch (ETag hit → 304): {:.0} requests/s, p50 {:.2} ms, p99 {:.2} ms ({} requests, 16 connections)",
        lat.len() as f64 / 5.0,
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        lat.len()
    );

    // Ingestion: 1,000 clients at once, each on its own connection (its own thread),
    // each sending 4 batches of 500 state messages, one after the other, as an agent does:
    // first rescans of the same updates (results changing), then every scan a different
    // set of updates (each batch replaces all the client's rows). Each round is followed by
    // its reference, the same rows bulk-inserted straight into a store of their own, so
    // both see the machine as it is then; the ratio is the median of the rounds.
    let mut rescans = Vec::new();
    for (label, same) in [("rescans of the same updates", true), ("a different set of updates each scan", false)] {
        let first = if same { 0 } else { CLIENTS };
        let mut reference = RawReference::open(&dir.join(format!("raw-{first}.db")), &updates, now)?;
        let mut ratios = Vec::new();
        println!(
            "  state ingestion through HTTP into SQLite, {label} ({CLIENTS} concurrent clients, one connection each, batches of {BATCH}), each round next to the same rows bulk-inserted into SQLite, one transaction per {BATCH}:"
        );
        for round in 0..ROUNDS {
            let batches = workload(&updates, first, same, round, now);
            let messages: usize = batches.iter().map(Vec::len).sum::<usize>() * BATCH;
            let (secs, failed, resent) = ingest(std::slice::from_ref(&base), &tokens[first..], &batches);
            let rate = messages as f64 / secs;
            let raw = reference.rate(&batches)?;
            println!(
                "    round {}: {messages} messages in {secs:.2} s = {rate:.0} messages/s ({failed} failed, {resent} resent after a connection reset); reference {raw:.0} rows/s; {:.2}×",
                round + 1,
                rate / raw
            );
            ratios.push(rate / raw);
            if same {
                rescans.push(rate);
            }
        }
        ratios.sort_by(f64::total_cmp);
        println!("    HTTP ingestion is {:.2}× the raw insert (median of {ROUNDS} rounds)", ratios[ROUNDS / 2]);
    }
    rescans.sort_by(f64::total_cmp);
    let _ = stop_tx.send(());
    let _ = rt.block_on(server);
    drop(rt);
    drop(store);

    // The naive way: one INSERT per state message, then a GROUP BY summary.
    let conn = rusqlite::Connection::open(dir.join("naive.db")).map_err(|e| Error::store("naive.db", "open", e))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; \
         CREATE TABLE state_messages (client TEXT, update_id TEXT, state INTEGER, time INTEGER);",
    )
    .map_err(|e| Error::store("naive.db", "schema", e))?;
    let sample = 20_000;
    let started = Instant::now();
    for i in 0..sample {
        conn.execute(
            "INSERT INTO state_messages (client, update_id, state, time) VALUES (?1, ?2, ?3, ?4)",
            rusqlite::params![
                format!("host-{:05}", i % CLIENTS),
                updates[i % updates.len()].id,
                (i % 5 == 0) as i64,
                now.as_second()
            ],
        )
        .map_err(|e| Error::store("naive.db", "insert", e))?;
    }
    let naive_insert = sample as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let groups: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM (SELECT update_id, state, COUNT(*) FROM state_messages GROUP BY update_id, state)",
            [],
            |r| r.get(0),
        )
        .map_err(|e| Error::store("naive.db", "group by", e))?;
    let group_ms = started.elapsed().as_secs_f64() * 1000.0;
    println!(
        "  naive (one INSERT per state message, autocommit): {naive_insert:.0} messages/s over {sample}; GROUP BY summary of them: {group_ms:.1} ms ({groups} groups)"
    );
    println!("  batched ingestion is {:.0}× the naive rate", rescans[ROUNDS / 2] / naive_insert);
    postgres_two_points(&updates, &tokens[..CLIENTS], &workload(&updates, 0, true, 0, now), now)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(ExitCode::SUCCESS)
}

/// Four batches of 500 state messages for each of `CLIENTS` clients from `first` on, the
/// `round`th four of the client's scans (sequences and times go on from the round before).
/// With `same`, every scan reports the same updates, a fifth of them Missing, which fifth
/// moving with each scan; otherwise each scan reports a different set.
fn workload(
    updates: &[crate::catalog::Update],
    first: usize,
    same: bool,
    round: usize,
    now: Timestamp,
) -> Vec<Vec<String>> {
    (first..first + CLIENTS)
        .map(|c| {
            (4 * round..4 * round + 4)
                .map(|scan| {
                    let reports = (0..BATCH)
                        .map(|u| UpdateReport {
                            // u * 3 < 2,000: distinct updates
                            id: updates[(c * 7 + u * 3 + if same { 0 } else { scan }) % updates.len()].id.clone(),
                            result: if (u + scan) % 5 == 0 { ScanResult::Missing } else { ScanResult::Installed },
                            enforcement: Enforcement::None,
                        })
                        .collect();
                    let batch = StateBatch {
                        client: format!("host-{c:05}"),
                        sequence: scan as u64 + 1,
                        messages: vec![StateMessage::ScanCompleted {
                            time: now + jiff::SignedDuration::from_secs(scan as i64),
                            catalog_version: 1,
                            agent_version: None,
                            updates: reports,
                        }],
                    };
                    serde_json::to_string(&batch).expect("batches serialize")
                })
                .collect()
        })
        .collect()
}

/// Send every client's batches (client `c` to `bases[c % len]`, each on its own
/// connection and thread, all connected before the clock starts); (seconds, failed,
/// resent after a connection reset).
fn ingest(bases: &[String], tokens: &[String], batches: &[Vec<String>]) -> (f64, usize, usize) {
    let failures = AtomicUsize::new(0);
    let retries = AtomicUsize::new(0);
    let connected = std::sync::Barrier::new(batches.len() + 1);
    let mut started = Instant::now();
    std::thread::scope(|s| {
        for (c, client_batches) in batches.iter().enumerate() {
            let base = &bases[c % bases.len()];
            let (tokens, failures, retries, connected) = (tokens, &failures, &retries, &connected);
            std::thread::Builder::new()
                .stack_size(256 * 1024)
                .spawn_scoped(s, move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .max_idle_connections_per_host(1)
                        .build()
                        .into();
                    // Open the connection first, so all are connected when the clock starts.
                    for _ in 0..20 {
                        if agent.get(format!("{base}/healthz")).call().is_ok() {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    connected.wait();
                    for body in client_batches {
                        // As an agent does: a batch whose connection broke is sent again
                        // (same sequence, so it is applied once).
                        let mut attempts = 0;
                        loop {
                            attempts += 1;
                            let answer = agent
                                .post(format!("{base}/v1/states"))
                                .header("Authorization", format!("Bearer {}", tokens[c]))
                                .header("Content-Type", "application/json")
                                .send(body.as_str());
                            match answer {
                                Ok(r) if r.status().as_u16() == 200 => break,
                                Err(ureq::Error::Io(e)) if attempts < 5 => {
                                    if retries.fetch_add(1, Ordering::Relaxed) == 0 {
                                        eprintln!("  a batch is resent: {e} ({:?})", e.kind());
                                    }
                                    std::thread::sleep(Duration::from_millis(20));
                                }
                                other => {
                                    if failures.fetch_add(1, Ordering::Relaxed) < 3 {
                                        eprintln!("  a batch failed: {:?}", other.map(|r| r.status()));
                                    }
                                    break;
                                }
                            }
                        }
                    }
                })
                .expect("client thread");
        }
        connected.wait();
        started = Instant::now();
    });
    (started.elapsed().as_secs_f64(), failures.load(Ordering::Relaxed), retries.load(Ordering::Relaxed))
}

/// The reference for ingestion: the same rows written straight into a store's compliance
/// table, one transaction per batch of 500 (the store's own WAL and `synchronous`), no
/// HTTP, JSON or checks.
struct RawReference {
    store: crate::store::sqlite::SqliteStore,
    catalog: crate::catalog::Catalog,
    keys: HashMap<String, u32>,
}

impl RawReference {
    /// A store at `path` with the catalog and the bench's clients.
    fn open(path: &std::path::Path, updates: &[crate::catalog::Update], now: Timestamp) -> Result<RawReference> {
        let mut store = crate::store::sqlite::SqliteStore::open(path)?;
        store.save_catalog(updates, now)?;
        let infos: Vec<ClientInfo> = (0..2 * CLIENTS)
            .map(|c| ClientInfo { name: format!("host-{c:05}"), facts: BTreeMap::new(), agent_version: None })
            .collect();
        store.upsert_clients(&infos, now)?;
        let (catalog, keys) = (store.load_catalog()?, store.client_keys()?);
        Ok(RawReference { store, catalog, keys })
    }

    /// Rows per second writing the rows of `batches` (parsed and keyed before the clock).
    fn rate(&mut self, batches: &[Vec<String>]) -> Result<f64> {
        let parsed: Vec<Vec<(u32, crate::compliance::PackedState, Timestamp)>> = batches
            .iter()
            .flatten()
            .map(|body| {
                let batch: StateBatch = serde_json::from_str(body).expect("our own batches parse");
                let client = self.keys[&batch.client];
                let StateMessage::ScanCompleted { time, updates, .. } = &batch.messages[0] else {
                    unreachable!("scans only")
                };
                updates
                    .iter()
                    .map(|u| {
                        let index = self.catalog.index_of(&u.id).expect("a catalog update") as usize;
                        let state =
                            crate::compliance::PackedState::new(self.catalog.keys[index], u.result, u.enforcement);
                        (client, state, *time)
                    })
                    .collect()
            })
            .collect();
        let rows: usize = parsed.iter().map(Vec::len).sum();
        let started = Instant::now();
        for batch in parsed {
            self.store.bulk_load_states(batch)?;
        }
        Ok(rows as f64 / started.elapsed().as_secs_f64())
    }
}

/// Ingestion into one PostgreSQL schema through two management points sharing it (the
/// chart's stateless replicas), clients split between them. Skipped, saying so, when
/// PostgreSQL does not answer at `PATCHOPS_BENCH_PG` (default the local test database).
fn postgres_two_points(
    updates: &[crate::catalog::Update],
    tokens: &[String],
    batches: &[Vec<String>],
    now: Timestamp,
) -> Result<()> {
    let url = std::env::var("PATCHOPS_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("bench_server_{}", std::process::id());
    let open = || crate::store::postgres::PostgresStore::open_in_schema(&url, &schema);
    let mut store = match open() {
        Ok(s) => s,
        Err(e) => {
            println!("  PostgreSQL with two management points: skipped ({e})");
            return Ok(());
        }
    };
    let measured = (|| -> Result<(f64, usize, usize)> {
        store.save_catalog(updates, now)?;
        for (c, token) in tokens.iter().enumerate() {
            let info = ClientInfo { name: format!("host-{c:05}"), facts: BTreeMap::new(), agent_version: None };
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            store.enroll_client(&info, &hash, Some(&hash), now)?;
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start the runtime: {e}")))?;
        let mut bases = Vec::new();
        let mut stops = Vec::new();
        let mut servers = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..2 {
            let shared: crate::server::SharedStore = Arc::new(Mutex::new(Box::new(open()?)));
            keep.push(shared.clone());
            let listener = rt
                .block_on(crate::server::bind(([127, 0, 0, 1], 0).into()))
                .map_err(|e| Error::Usage(format!("cannot bind 127.0.0.1: {e}")))?;
            let addr = listener.local_addr().map_err(|e| Error::Runtime(format!("no address: {e}")))?;
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            servers.push(rt.spawn(crate::server::serve_listener(
                listener,
                shared,
                crate::server::ServerConfig::new("bench"),
                async move {
                    let _ = rx.await;
                },
            )));
            stops.push(tx);
            bases.push(format!("http://{addr}"));
        }
        let result = ingest(&bases, tokens, batches);
        for tx in stops {
            let _ = tx.send(());
        }
        for s in servers {
            let _ = rt.block_on(s);
        }
        drop(rt);
        drop(keep);
        Ok(result)
    })();
    let mut c = postgres::Client::connect(&url, postgres::NoTls)
        .map_err(|e| Error::store(url.clone(), "cannot connect to drop the bench schema", e))?;
    let _ = c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"));
    let (secs, failed, resent) = measured?;
    let messages: usize = batches.iter().map(Vec::len).sum::<usize>() * BATCH;
    println!(
        "  state ingestion through HTTP into PostgreSQL, two management points sharing it: {messages} messages in \
         {secs:.2} s = {:.0} messages/s ({failed} failed, {resent} resent)",
        messages as f64 / secs
    );
    Ok(())
}
