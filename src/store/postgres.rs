//! The PostgreSQL store, selected by a `postgres://` URL: same schema (see
//! `schema_postgres.sql`) and behaviour as [`super::sqlite::SqliteStore`].
//!
//! It uses the synchronous `postgres` client on one connection. That client runs its
//! own runtime: call the store from plain threads (or `spawn_blocking`), not from inside
//! an async task. Many-row writes send arrays (`unnest`) rather than a statement per
//! row, and [`Store::load_fleet`] streams the compliance table with a binary `COPY`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::Timestamp;
use postgres::config::Host;
use postgres::{Client as PgClient, IsolationLevel, NoTls, SimpleQueryMessage};

use super::batch::{self, BatchClient, BatchWriter, ScanRecorded, ScanStates};
use super::catalog::{
    self, CatalogRow, CatalogWriter, CurrentRow, LoadedCatalog, NewVersion, check_delta, check_version, parse_update,
};
use super::reconcile::{self, ReconcileWrite, ReconcileWriter, StoredStatuses, build_record};
use super::rows::*;
use super::{
    BatchOutcome, CatalogSaved, CatalogVersionInfo, ClientInfo, Enrollment, FeedEntry, PolicyAssignment,
    REJECTED_PER_CLIENT, REJECTED_TOTAL, ReconcileRecord, ResourceStatus, Store, StoreError, TokenOwner,
    rejected_prefix,
};
use crate::catalog::delta::CatalogDelta;
use crate::catalog::{Catalog, Update};
use crate::compliance::messages::StateBatch;
use crate::compliance::{Client, Fleet, PackedState};
use crate::{Error, Result};

/// Schema migrations, applied in order; each runs once, in its own transaction, and is
/// recorded in `schema_version`. Version 1 is the whole schema file.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("schema_postgres.sql")),
    (2, include_str!("schema_postgres_2.sql")),
    (3, include_str!("schema_postgres_3.sql")),
    (4, include_str!("schema_postgres_4.sql")),
];

/// The channel a committed change-feed row is announced on (`LISTEN patchops_feed`).
pub const FEED_CHANNEL: &str = "patchops_feed";

/// One change-feed row, announced to the followers when the transaction commits.
const FEED_INSERT: &str = "WITH row AS (INSERT INTO feed (client, at) VALUES ($1, $2) RETURNING seq) \
     SELECT pg_notify('patchops_feed', seq::text) FROM row";

/// The clients table's columns [`client_row`] reads, followed by a filter and an order.
const CLIENT_ROWS: &str = "SELECT key, name, facts::text, agent_version, scan_time, scan_catalog_version, \
     failure_time, failure_catalog_version, failure_error, pending_messages, rejected_at FROM clients";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in a PostgreSQL database (optionally in one schema of it).
pub struct PostgresStore {
    client: Mutex<PgClient>,
    location: String,
    /// How to connect again after the server closed the connection (a restart, a
    /// failover, an administrator's `pg_terminate_backend`).
    config: postgres::Config,
    /// The same, for the async client a cold start streams the compliance table with.
    stream_config: tokio_postgres::Config,
    schema: Option<String>,
}

impl PostgresStore {
    /// Connect (`postgres://user[:password]@host[:port]/database`, or a key=value
    /// connection string) and create or migrate the schema in the default `search_path`.
    pub fn open(url: &str) -> Result<Self> {
        Self::connect(url, None)
    }

    /// Like [`Self::open`], in the given schema: created when missing and set as the
    /// connection's `search_path`. Tests use a fresh schema each for isolation.
    pub fn open_in_schema(url: &str, schema: &str) -> Result<Self> {
        Self::connect(url, Some(schema))
    }

    /// A connection listening on the change-feed channel ([`FEED_CHANNEL`]): its
    /// notifications say a feed row committed (the row itself is read from the table).
    pub fn listen(url: &str) -> Result<PgClient> {
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            Error::store(redact(url), format!("invalid PostgreSQL URL: {}", pg_message(&e)), e)
        })?;
        let location = describe(&config, None);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let fail = |e: postgres::Error| {
            let message = format!("cannot listen for the change feed: {}", pg_message(&e));
            Error::store(location.clone(), message, e)
        };
        let mut client = config.connect(NoTls).map_err(fail)?;
        client.batch_execute(&format!("LISTEN {FEED_CHANNEL}")).map_err(fail)?;
        Ok(client)
    }

    fn connect(url: &str, schema: Option<&str>) -> Result<Self> {
        let mut config: postgres::Config = url.parse().map_err(|e: postgres::Error| {
            let message =
                format!("invalid PostgreSQL URL: {}; write postgres://user@host:port/database", pg_message(&e));
            Error::store(redact(url), message, e)
        })?;
        let location = describe(&config, schema);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let mut stream_config: tokio_postgres::Config =
            url.parse().map_err(|e| Error::store(location.clone(), format!("invalid PostgreSQL URL: {e}"), e))?;
        if stream_config.get_connect_timeout().is_none() {
            stream_config.connect_timeout(CONNECT_TIMEOUT);
        }
        let client = Self::dial(&config, schema, &location)?;
        let schema = schema.map(str::to_string);
        let store = PostgresStore { client: Mutex::new(client), location, config, stream_config, schema };
        store.migrate()?;
        Ok(store)
    }

    /// A new connection, in the schema when one is named.
    fn dial(config: &postgres::Config, schema: Option<&str>, location: &str) -> Result<PgClient> {
        let mut client = config.connect(NoTls).map_err(|e| {
            let message = format!(
                "cannot connect to PostgreSQL: {}; check the URL, the credentials and that the server is running",
                pg_message(&e)
            );
            Error::store(location.to_string(), message, e)
        })?;
        if let Some(schema) = schema {
            let q = quote_ident(schema);
            client
                .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {q}; SET search_path TO {q}"))
                .map_err(pg(location, &format!("cannot use schema {schema:?}")))?;
        }
        Ok(client)
    }

    fn migrate(&self) -> Result<()> {
        let location = self.location.clone();
        let fail = pg(&location, "cannot create or migrate the schema");
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        let mut client = self.conn();
        for &(version, sql) in MIGRATIONS {
            let mut tx = client.transaction().map_err(&fail)?;
            // One migrator at a time per schema.
            tx.batch_execute(
                "SELECT pg_advisory_xact_lock(hashtext(current_schema())); \
                 CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at BIGINT NOT NULL)",
            )
            .map_err(&fail)?;
            let current: i32 =
                tx.query_one("SELECT COALESCE(MAX(version), 0) FROM schema_version", &[]).map_err(&fail)?.get(0);
            if current > newest {
                return Err(StoreError::SchemaTooNew { current: current as i64, newest: newest as i64 }.at(&location));
            }
            if current >= version {
                continue;
            }
            tx.batch_execute(sql).map_err(&fail)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES ($1, $2)",
                &[&version, &secs(Timestamp::now())],
            )
            .map_err(&fail)?;
            tx.commit().map_err(&fail)?;
        }
        Ok(())
    }

    /// The connection; one the server closed is replaced by a new one first (when that
    /// fails, the closed one is handed out and the call fails saying so: the caller's
    /// retry connects again).
    fn conn(&self) -> MutexGuard<'_, PgClient> {
        let mut client = self.client.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if client.is_closed() {
            match Self::dial(&self.config, self.schema.as_deref(), &self.location) {
                Ok(fresh) => {
                    tracing::warn!(store = %self.location, "the PostgreSQL connection was closed; connected again");
                    *client = fresh;
                }
                Err(e) => {
                    tracing::error!(error = %e, "the PostgreSQL connection was closed and cannot be opened again; retrying at the next call")
                }
            }
        }
        client
    }

    /// [`Store::load_fleet`] with the compliance table read in `parts` parts side by side
    /// (None: one per 128 MiB of it, at most one per core and [`PARTS_MAX`]).
    pub fn load_fleet_in_parts(&self, parts: Option<usize>) -> Result<Fleet> {
        let fail = pg(&self.location, "cannot load the fleet");
        let mut conn = self.conn();
        let mut tx = snapshot(&mut conn).map_err(&fail)?;
        let rows = tx.query(&format!("{CLIENT_ROWS} ORDER BY key"), &[]).map_err(&fail)?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut clients = Vec::with_capacity(rows.len());
        for r in rows {
            keys.push(r.get::<_, i32>(0) as i64);
            clients.push(client_row(&r).into_client().map_err(|m| self.corrupt(m))?);
        }
        // The compliance table in parts read side by side, each on a connection of its own in
        // this transaction's snapshot: rows come in heap order, not sorted, which the
        // server sends fastest; `StateRuns` puts them back together per client.
        let blocks: i64 = tx
            .query_one("SELECT pg_relation_size('compliance') / current_setting('block_size')::int8", &[])
            .map_err(&fail)?
            .get(0);
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(PARTS_MAX);
        let parts = parts.unwrap_or((blocks / BLOCKS_PER_PART).clamp(1, threads as i64) as usize).max(1);
        let exported: String = tx.query_one("SELECT pg_export_snapshot()", &[]).map_err(&fail)?.get(0);
        let read = std::thread::scope(|scope| -> Result<Vec<StateRuns<'_>>> {
            let readers: Vec<_> = (0..parts)
                .map(|part| {
                    let sql = format!("{STATES_COPY}{}) TO STDOUT (FORMAT binary)", part_filter(part, parts, blocks));
                    let (exported, keys) = (exported.as_str(), keys.as_slice());
                    scope.spawn(move || self.stream_states(exported, &sql, keys))
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().map_err(|_| Error::Runtime("a fleet read thread panicked".into()))?)
                .collect()
        })?;
        StateRuns::finish(read, &mut clients);
        tx.commit().map_err(&fail)?;
        Ok(Fleet::new(clients))
    }

    /// One part of the compliance table (`sql`, a [`STATES_COPY`]) on a connection of its
    /// own, in the exported snapshot `snapshot`: the async client, driven on this thread,
    /// streams the rows without entering a runtime per row.
    fn stream_states<'k>(&self, snapshot: &str, sql: &str, keys: &'k [i64]) -> Result<StateRuns<'k>> {
        use futures::TryStreamExt;
        let fail =
            |e: tokio_postgres::Error| Error::store(self.location.clone(), format!("cannot load the fleet: {e}"), e);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Runtime(format!("cannot start a runtime to read the fleet: {e}")))?;
        rt.block_on(async {
            let (client, connection) = self.stream_config.connect(NoTls).await.map_err(fail)?;
            let connection = tokio::spawn(connection);
            let search_path = self.schema.as_deref().map(|s| format!("SET search_path TO {}; ", quote_ident(s)));
            client
                .batch_execute(&format!(
                    "{}BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'",
                    search_path.unwrap_or_default()
                ))
                .await
                .map_err(fail)?;
            let mut runs = StateRuns::new(keys);
            let mut decoder = CopyDecoder::default();
            let stream = client.copy_out(sql).await.map_err(fail)?;
            futures::pin_mut!(stream);
            while let Some(data) = stream.try_next().await.map_err(fail)? {
                decoder.feed(&data, &mut runs).map_err(|m| self.corrupt(m))?;
            }
            decoder.finish().map_err(|m| self.corrupt(m))?;
            client.batch_execute("COMMIT").await.map_err(fail)?;
            drop(client);
            let _ = connection.await;
            Ok(runs)
        })
    }

    /// Stored data that cannot be read back.
    fn corrupt(&self, message: String) -> Error {
        StoreError::Corrupt(message).at(&self.location)
    }

    /// Run SQL (typically `SELECT … FROM v_…`) with the simple query protocol and return
    /// every row as text (PostgreSQL's text output; NULL as the empty string). For
    /// reports and tests.
    pub fn query_rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let messages = self
            .conn()
            .simple_query(sql)
            .map_err(pg(&self.location, &format!("query failed; the query was: {sql}")))?;
        let mut out = Vec::new();
        for m in messages {
            if let SimpleQueryMessage::Row(row) = m {
                out.push((0..row.len()).map(|i| row.get(i).unwrap_or("").to_string()).collect());
            }
        }
        Ok(out)
    }

    /// Write a setting the views read (e.g. `scan_ttl_seconds`).
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn()
            .execute(
                "INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&key, &value],
            )
            .map_err(pg(&self.location, &format!("cannot save setting {key:?}")))?;
        Ok(())
    }

    /// A setting's value, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        let row = self
            .conn()
            .query_opt("SELECT value FROM settings WHERE key = $1", &[&key])
            .map_err(pg(&self.location, &format!("cannot read setting {key:?}")))?;
        Ok(row.map(|r| r.get(0)))
    }

    /// Register or refresh many clients in one transaction (what
    /// [`Store::upsert_client`] does for one; a name given twice: the last wins).
    pub fn upsert_clients(&mut self, clients: &[ClientInfo], now: Timestamp) -> Result<()> {
        let fail = pg(&self.location, "cannot save the clients");
        let mut last: BTreeMap<&str, &ClientInfo> = BTreeMap::new();
        for c in clients {
            last.insert(&c.name, c);
        }
        let names: Vec<&str> = last.keys().copied().collect();
        let facts: Vec<String> = last.values().map(|c| facts_json(&c.facts)).collect();
        let agents: Vec<Option<&str>> = last.values().map(|c| c.agent_version.as_deref()).collect();
        let mut client = self.conn();
        let mut tx = client.transaction().map_err(&fail)?;
        tx.execute(
            "INSERT INTO clients (name, facts, agent_version, registered_at, last_seen) \
             SELECT n, f::jsonb, a, $4::bigint, $4::bigint FROM unnest($1::text[], $2::text[], $3::text[]) AS t (n, f, a) \
             ON CONFLICT (name) DO UPDATE SET facts = EXCLUDED.facts, \
             agent_version = COALESCE(EXCLUDED.agent_version, clients.agent_version), last_seen = EXCLUDED.last_seen",
            &[&names, &facts, &agents, &secs(now)],
        )
        .map_err(&fail)?;
        tx.commit().map_err(&fail)
    }

    /// Every registered client's store key, by name (the keys [`Self::bulk_load_states`]
    /// takes).
    pub fn client_keys(&self) -> Result<HashMap<String, u32>> {
        let rows = self
            .conn()
            .query("SELECT name, key FROM clients", &[])
            .map_err(pg(&self.location, "cannot read the clients"))?;
        Ok(rows.iter().map(|r| (r.get::<_, String>(0), r.get::<_, i32>(1) as u32)).collect())
    }

    /// Bulk path, as `SqliteStore::mark_scanned`: every client scanned at `time` against
    /// `catalog_version`.
    pub fn mark_scanned(&mut self, time: Timestamp, catalog_version: u64) -> Result<()> {
        self.conn()
            .execute(
                "UPDATE clients SET scan_time = $1, scan_catalog_version = $2",
                &[&secs(time), &(catalog_version as i64)],
            )
            .map(|_| ())
            .map_err(pg(&self.location, "cannot mark the clients scanned"))
    }

    /// Bulk path for imports and benchmarks, as `SqliteStore::bulk_load_states`, in one
    /// transaction; returns the number of rows. Into an empty `compliance` table the rows
    /// are streamed with a binary `COPY` straight into it, with its primary and foreign
    /// keys dropped for the load and added back after (an index built once and each key
    /// checked in one pass, as PostgreSQL's manual advises for populating a database);
    /// otherwise through a temporary table, upserted (existing (client, update) rows are
    /// replaced). The table is analyzed afterwards. A row given twice, or naming an unknown
    /// client or update, fails the load.
    pub fn bulk_load_states<I>(&mut self, rows: I) -> Result<u64>
    where
        I: IntoIterator<Item = (u32, PackedState, Timestamp)>,
    {
        let location = self.location.clone();
        let fail = pg(&location, "bulk load of compliance states failed");
        let io_fail = |e: std::io::Error| {
            Error::store(location.clone(), format!("bulk load of compliance states failed: {e}"), e)
        };
        let mut client = self.conn();
        let mut tx = client.transaction().map_err(&fail)?;
        tx.batch_execute("LOCK TABLE compliance IN SHARE ROW EXCLUSIVE MODE").map_err(&fail)?;
        let empty: bool = tx.query_one("SELECT NOT EXISTS (SELECT 1 FROM compliance)", &[]).map_err(&fail)?.get(0);
        let keys = if empty {
            tx.query(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = 'compliance'::regclass AND contype IN ('p', 'f') ORDER BY contype DESC, conname",
                &[],
            )
            .map_err(&fail)?
            .iter()
            .map(|r| (quote_ident(r.get::<_, &str>(0)), r.get::<_, String>(1)))
            .collect()
        } else {
            Vec::new()
        };
        for (name, _) in &keys {
            tx.batch_execute(&format!("ALTER TABLE compliance DROP CONSTRAINT {name}")).map_err(&fail)?;
        }
        let into = if empty {
            "compliance (client_key, update_key, scan_result, enforcement, time)"
        } else {
            tx.batch_execute(
                "CREATE TEMPORARY TABLE bulk_states (client_key INTEGER, update_key INTEGER, scan_result SMALLINT, \
                 enforcement SMALLINT, time BIGINT) ON COMMIT DROP",
            )
            .map_err(&fail)?;
            "bulk_states"
        };
        let mut n = 0u64;
        {
            let writer = tx.copy_in(&format!("COPY {into} FROM STDIN (FORMAT binary)")).map_err(&fail)?;
            let mut w = std::io::BufWriter::with_capacity(1 << 20, writer);
            w.write_all(b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0").map_err(io_fail)?;
            let mut tuple = [0u8; 42];
            // Per tuple: 5 fields as (length, value): int4, int4, int2, int2, int8.
            tuple[..2].copy_from_slice(&5i16.to_be_bytes());
            for (at, len) in [(2, 4i32), (10, 4), (18, 2), (24, 2), (30, 8)] {
                tuple[at..at + 4].copy_from_slice(&len.to_be_bytes());
            }
            for (client_key, state, time) in rows {
                tuple[6..10].copy_from_slice(&(client_key as i32).to_be_bytes());
                tuple[14..18].copy_from_slice(&(state.key() as i32).to_be_bytes());
                tuple[22..24].copy_from_slice(&(state.scan() as i16).to_be_bytes());
                tuple[28..30].copy_from_slice(&(state.enforcement() as i16).to_be_bytes());
                tuple[34..42].copy_from_slice(&secs(time).to_be_bytes());
                w.write_all(&tuple).map_err(io_fail)?;
                n += 1;
            }
            w.write_all(&(-1i16).to_be_bytes()).map_err(io_fail)?;
            let writer = w.into_inner().map_err(|e| io_fail(e.into_error()))?;
            writer.finish().map_err(&fail)?;
        }
        if empty {
            tx.batch_execute("SET LOCAL maintenance_work_mem = '512MB'").map_err(&fail)?;
            for (name, definition) in &keys {
                tx.batch_execute(&format!("ALTER TABLE compliance ADD CONSTRAINT {name} {definition}"))
                    .map_err(&fail)?;
            }
        } else {
            tx.execute(
                "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
                 SELECT client_key, update_key, scan_result, enforcement, time FROM bulk_states \
                 ORDER BY client_key, update_key \
                 ON CONFLICT (client_key, update_key) DO UPDATE SET scan_result = EXCLUDED.scan_result, \
                 enforcement = EXCLUDED.enforcement, time = EXCLUDED.time",
                &[],
            )
            .map_err(&fail)?;
        }
        // Fresh statistics, as the manual advises after a bulk load: without them the
        // planner takes one client's rows for a large share of the table and reads them
        // with parallel workers (tens of milliseconds for each client a follower reloads).
        tx.batch_execute("ANALYZE compliance").map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(n)
    }
}

/// Maps a postgres error to a store error saying what failed and why.
fn pg<'a>(location: &'a str, what: &'a str) -> impl Fn(postgres::Error) -> Error + 'a {
    move |e| {
        let message = format!("{what}: {}", pg_message(&e));
        Error::store(location, message, e)
    }
}

/// The server's message (with detail) for database errors, the error chain otherwise.
fn pg_message(e: &postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = db.message().to_string();
        if let Some(detail) = db.detail() {
            s.push_str(&format!(" ({detail})"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// The connection as a URL without the password.
fn describe(config: &postgres::Config, schema: Option<&str>) -> String {
    let user = config.get_user().unwrap_or("");
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    let mut s = format!("postgres://{user}@{host}:{port}/{db}");
    if let Some(schema) = schema {
        s.push_str(&format!(" (schema {schema})"));
    }
    s
}

/// A URL that did not parse, with anything that may be a password removed.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{}{}", &url[..scheme_end + 3], user, &url[at..])
        }
        _ if url.contains("password") => "(PostgreSQL connection string)".to_string(),
        _ => url.to_string(),
    }
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The compliance rows as `COPY` reads them at a cold start: the client key, and the
/// update key, scan result and enforcement in one int8 (32, 16 and 16 bits; lossless,
/// so a stored value out of range is still refused by [`pack`]). Two fields instead of
/// four is a third less for the server to send; followed by a block range, or nothing.
const STATES_COPY: &str = "COPY (SELECT client_key, (update_key::int8 << 32) | ((scan_result::int8 & 65535) << 16) \
     | (enforcement::int8 & 65535) FROM compliance";

/// Heap blocks (8 KiB, about 150,000 rows) per part of a cold start's read of the
/// compliance table, below which it is read in one part.
const BLOCKS_PER_PART: i64 = 16_384;
/// The most parts (connections, each one server process) a cold start reads in.
const PARTS_MAX: usize = 4;

/// Block range `part` of `parts` of a heap of `blocks` blocks, as a `WHERE` on `ctid`
/// (PostgreSQL 14 and later scan only those blocks); the last part is open-ended, so rows
/// in blocks added since the size was read are not missed.
fn part_filter(part: usize, parts: usize, blocks: i64) -> String {
    let bound = |p: usize| blocks * p as i64 / parts as i64;
    match (part, parts) {
        (_, 1) => String::new(),
        (0, _) => format!(" WHERE ctid < '({},0)'::tid", bound(1)),
        (p, n) if p + 1 == n => format!(" WHERE ctid >= '({},0)'::tid", bound(p)),
        (p, _) => format!(" WHERE ctid >= '({},0)'::tid AND ctid < '({},0)'::tid", bound(p), bound(p + 1)),
    }
}

/// Decodes `COPY (client_key int4, packed int8) TO STDOUT (FORMAT binary)`
/// ([`STATES_COPY`]) into runs, from the data messages as they come (a tuple may span
/// two of them).
#[derive(Default)]
struct CopyDecoder {
    header_read: bool,
    ended: bool,
    carry: Vec<u8>,
}

impl CopyDecoder {
    fn feed(&mut self, data: &[u8], runs: &mut StateRuns<'_>) -> std::result::Result<(), String> {
        if self.carry.is_empty() {
            let used = self.decode(data, runs)?;
            self.carry.extend_from_slice(&data[used..]);
        } else {
            let mut carry = std::mem::take(&mut self.carry);
            carry.extend_from_slice(data);
            let used = self.decode(&carry, runs)?;
            carry.drain(..used);
            self.carry = carry;
        }
        Ok(())
    }

    /// Decodes the whole tuples at the start of `buf`; the bytes used.
    fn decode(&mut self, buf: &[u8], runs: &mut StateRuns<'_>) -> std::result::Result<usize, String> {
        let bad = |what: &str| format!("unexpected COPY data from the server: {what}");
        let be32 = |b: &[u8]| i32::from_be_bytes(b[..4].try_into().expect("4 bytes"));
        let mut at = 0;
        if !self.header_read {
            if buf.len() < 19 {
                return Ok(0);
            }
            if &buf[..11] != b"PGCOPY\n\xff\r\n\0" {
                return Err(bad("no binary COPY signature"));
            }
            let ext = be32(&buf[15..]) as usize;
            if buf.len() < 19 + ext {
                return Ok(0);
            }
            self.header_read = true;
            at = 19 + ext;
        }
        // Per tuple: field count (2), then 2 fields as (length 4, value): 4+4, 4+8.
        while !self.ended && buf.len() >= at + 2 {
            match i16::from_be_bytes([buf[at], buf[at + 1]]) {
                -1 => {
                    self.ended = true;
                    return Ok(buf.len());
                }
                2 => {}
                n => return Err(bad(&format!("{n} fields in a row"))),
            }
            let Some(tuple) = buf.get(at + 2..at + 22) else { break };
            if be32(tuple) != 4 || be32(&tuple[8..]) != 8 {
                return Err(bad("field lengths"));
            }
            let client_key = be32(&tuple[4..]);
            let packed = i64::from_be_bytes(tuple[12..20].try_into().expect("8 bytes"));
            let (update_key, scan, enforcement) =
                ((packed >> 32) as i32, (packed >> 16) as u16 as i16, packed as u16 as i16);
            runs.push(client_key as i64, pack(update_key as i64, scan as i64, enforcement as i64)?);
            at += 22;
        }
        Ok(at)
    }

    fn finish(&self) -> std::result::Result<(), String> {
        if self.ended { Ok(()) } else { Err("the compliance table's COPY ended before its last row".into()) }
    }
}

impl Store for PostgresStore {
    fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        PostgresStore::set_setting(self, key, value)
    }

    fn enroll_client(
        &mut self,
        client: &ClientInfo,
        token_sha256: &str,
        presented_sha256: Option<&str>,
        now: Timestamp,
    ) -> Result<Enrollment> {
        let what = format!("cannot enroll client {:?}", client.name);
        let fail = pg(&self.location, &what);
        let mut conn = self.conn();
        let mut tx = conn.transaction().map_err(&fail)?;
        // Concurrent registrations of one name wait for each other here.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&client.name]).map_err(&fail)?;
        let held = tx
            .query_opt("SELECT token_sha256, revoked_at FROM clients WHERE name = $1 FOR UPDATE", &[&client.name])
            .map_err(&fail)?
            .map(|r| (r.get::<_, Option<String>>(0), r.get::<_, Option<i64>>(1)));
        if let Some(refused) = enrollment_refused(held, presented_sha256).map_err(|e| e.at(&self.location))? {
            return Ok(refused);
        }
        tx.execute(
            "INSERT INTO clients (name, facts, agent_version, registered_at, last_seen, token_sha256, token_generation) \
             VALUES ($1, $2::text::jsonb, $3, $4, $4, $5, 1) \
             ON CONFLICT (name) DO UPDATE SET facts = EXCLUDED.facts, \
             agent_version = COALESCE(EXCLUDED.agent_version, clients.agent_version), \
             last_seen = EXCLUDED.last_seen, token_sha256 = EXCLUDED.token_sha256, \
             token_generation = clients.token_generation + 1",
            &[&client.name, &facts_json(&client.facts), &client.agent_version, &secs(now), &token_sha256],
        )
        .map_err(&fail)?;
        tx.execute(FEED_INSERT, &[&client.name, &secs(now)]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        Ok(Enrollment::Enrolled)
    }

    fn client_for_token(&self, token_sha256: &str) -> Result<Option<TokenOwner>> {
        let row = self
            .conn()
            .query_opt("SELECT name, token_generation FROM clients WHERE token_sha256 = $1", &[&token_sha256])
            .map_err(pg(&self.location, "cannot look up the token"))?;
        Ok(row.map(|r| TokenOwner { client: r.get(0), generation: r.get::<_, i64>(1) as u64 }))
    }

    fn rotate_token(&mut self, client: &str, old_sha256: &str, new_sha256: &str) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "UPDATE clients SET token_sha256 = $3, token_generation = token_generation + 1 \
                 WHERE name = $1 AND token_sha256 = $2",
                &[&client, &old_sha256, &new_sha256],
            )
            .map_err(pg(&self.location, &format!("cannot rotate the token of {client:?}")))?;
        Ok(changed == 1)
    }

    fn revoke_client(&mut self, client: &str, now: Timestamp) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "UPDATE clients SET token_sha256 = NULL, revoked_at = $2, token_generation = token_generation + 1 \
                 WHERE name = $1",
                &[&client, &secs(now)],
            )
            .map_err(pg(&self.location, &format!("cannot revoke client {client:?}")))?;
        Ok(changed == 1)
    }

    fn release_client(&mut self, client: &str) -> Result<bool> {
        let changed = self
            .conn()
            .execute(
                "UPDATE clients SET token_sha256 = NULL, revoked_at = NULL, token_generation = token_generation + 1 \
                 WHERE name = $1",
                &[&client],
            )
            .map_err(pg(&self.location, &format!("cannot release client {client:?}")))?;
        Ok(changed == 1)
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        PostgresStore::setting(self, key)
    }

    fn client_policy(&self, client: &str) -> Result<Option<(String, serde_json::Value)>> {
        let row = self
            .conn()
            .query_opt(
                "SELECT d.etag, d.body::text FROM client_policies c JOIN policy_docs d ON d.etag = c.etag WHERE c.client = $1",
                &[&client],
            )
            .map_err(pg(&self.location, "cannot read the client policy"))?;
        row.map(|r| {
            let body: String = r.get(1);
            let doc = parse_json(&body, "policy").map_err(|m| self.corrupt(m))?;
            Ok((r.get(0), doc))
        })
        .transpose()
    }

    fn location(&self) -> String {
        self.location.clone()
    }

    fn save_catalog(&mut self, updates: &[Update], now: Timestamp) -> Result<CatalogSaved> {
        let (location, what) = (self.location.as_str(), "cannot save the catalog");
        let fail = pg(location, what);
        let mut client = self.conn();
        let mut tx = client.transaction().map_err(&fail)?;
        // One catalog writer at a time; readers are not blocked.
        tx.batch_execute("LOCK TABLE catalog_versions IN EXCLUSIVE MODE").map_err(&fail)?;
        let saved = catalog::save(&mut Tx { tx: &mut tx, location, what }, updates, now)?;
        if saved.changed {
            tx.commit().map_err(&fail)?;
        }
        Ok(saved)
    }

    fn load_catalog(&self) -> Result<Catalog> {
        let current: i64 = self
            .conn()
            .query_one("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", &[])
            .map_err(pg(&self.location, "cannot load the catalog"))?
            .get(0);
        self.load_catalog_version(current as u64)
    }

    fn load_catalog_version(&self, version: u64) -> Result<Catalog> {
        let fail = pg(&self.location, "cannot load the catalog");
        let mut client = self.conn();
        let mut tx = snapshot(&mut client).map_err(&fail)?;
        let newest: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", &[]).map_err(&fail)?.get(0);
        check_version(version, newest).map_err(|e| e.at(&self.location))?;
        let rows = tx
            .query(
                "SELECT u.id, u.key, u.first_version, cu.body FROM catalog_updates cu \
                 JOIN updates u ON u.key = cu.key \
                 WHERE cu.valid_from <= $1 AND (cu.valid_to IS NULL OR cu.valid_to > $1)",
                &[&(version as i64)],
            )
            .map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        let mut loaded = LoadedCatalog::default();
        for r in rows {
            loaded.add(r.get(0), r.get::<_, i32>(1) as i64, r.get(2), r.get(3)).map_err(|e| e.at(&self.location))?;
        }
        Ok(loaded.into_catalog(version as i64))
    }

    fn catalog_delta(&self, from: u64, to: u64) -> Result<CatalogDelta> {
        let fail = pg(&self.location, "cannot compute the catalog delta");
        let mut client = self.conn();
        let mut tx = snapshot(&mut client).map_err(&fail)?;
        let newest: i64 =
            tx.query_one("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", &[]).map_err(&fail)?.get(0);
        check_delta(from, to, newest).map_err(|e| e.at(&self.location))?;
        let (a, b) = (from as i64, to as i64);
        let upserts = tx
            .query(
                "SELECT cu.body FROM catalog_updates cu \
                 WHERE cu.valid_from > $1 AND cu.valid_from <= $2 AND (cu.valid_to IS NULL OR cu.valid_to > $2)",
                &[&a, &b],
            )
            .map_err(&fail)?;
        let removed = tx
            .query(
                "SELECT u.id FROM catalog_updates cu JOIN updates u ON u.key = cu.key \
                 WHERE cu.valid_from <= $1 AND cu.valid_to IS NOT NULL AND cu.valid_to > $1 AND cu.valid_to <= $2 \
                 AND NOT EXISTS (SELECT 1 FROM catalog_updates c2 WHERE c2.key = cu.key AND c2.valid_from <= $2 \
                 AND (c2.valid_to IS NULL OR c2.valid_to > $2))",
                &[&a, &b],
            )
            .map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        let mut delta = CatalogDelta { from, to, ..Default::default() };
        for r in upserts {
            let body: String = r.get(0);
            delta.upserts.push(parse_update(&body).map_err(|e| e.at(&self.location))?);
        }
        delta.removed = removed.iter().map(|r| r.get(0)).collect();
        delta.upserts.sort_by(|a, b| a.id.cmp(&b.id));
        delta.removed.sort();
        Ok(delta)
    }

    fn catalog_versions(&self) -> Result<Vec<CatalogVersionInfo>> {
        let rows = self
            .conn()
            .query("SELECT version, digest, created_at, update_count FROM catalog_versions ORDER BY version", &[])
            .map_err(pg(&self.location, "cannot list catalog versions"))?;
        rows.iter()
            .map(|r| {
                Ok(CatalogVersionInfo {
                    version: r.get::<_, i64>(0) as u64,
                    digest: r.get(1),
                    created_at: from_secs(r.get(2)).map_err(|m| self.corrupt(m))?,
                    update_count: r.get::<_, i64>(3) as u64,
                })
            })
            .collect()
    }

    fn upsert_client(&mut self, client: &ClientInfo, now: Timestamp) -> Result<()> {
        let what = format!("cannot save client {:?}", client.name);
        let fail = pg(&self.location, &what);
        let mut conn = self.conn();
        let mut tx = conn.transaction().map_err(&fail)?;
        tx.execute(
            "INSERT INTO clients (name, facts, agent_version, registered_at, last_seen) \
             VALUES ($1, $2::text::jsonb, $3, $4, $4) \
             ON CONFLICT (name) DO UPDATE SET facts = EXCLUDED.facts, \
             agent_version = COALESCE(EXCLUDED.agent_version, clients.agent_version), last_seen = EXCLUDED.last_seen",
            &[&client.name, &facts_json(&client.facts), &client.agent_version, &secs(now)],
        )
        .map_err(&fail)?;
        tx.execute(FEED_INSERT, &[&client.name, &secs(now)]).map_err(&fail)?;
        tx.commit().map_err(&fail)
    }

    fn feed_head(&self) -> Result<u64> {
        let row = self
            .conn()
            .query_one("SELECT COALESCE(MAX(seq), 0) FROM feed", &[])
            .map_err(pg(&self.location, "cannot read the change feed"))?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    fn feed_since(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let rows = self
            .conn()
            .query(
                "SELECT seq, client FROM feed WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&(after as i64), &(limit as i64)],
            )
            .map_err(pg(&self.location, &format!("cannot read the change feed after {after}")))?;
        Ok(rows.iter().map(|r| FeedEntry { seq: r.get::<_, i64>(0) as u64, client: r.get(1) }).collect())
    }

    fn prune_feed(&mut self, through: u64) -> Result<u64> {
        self.conn()
            .execute("DELETE FROM feed WHERE seq <= $1", &[&(through as i64)])
            .map_err(pg(&self.location, "cannot prune the change feed"))
    }

    fn load_clients(&self, names: &[String]) -> Result<Vec<Client>> {
        let fail = pg(&self.location, "cannot load clients");
        let mut conn = self.conn();
        let mut tx = snapshot(&mut conn).map_err(&fail)?;
        let rows = tx.query(&format!("{CLIENT_ROWS} WHERE name = ANY($1) ORDER BY key"), &[&names]).map_err(&fail)?;
        let mut keys = Vec::with_capacity(rows.len());
        let mut clients = Vec::with_capacity(rows.len());
        for r in &rows {
            keys.push(r.get::<_, i32>(0));
            clients.push(client_row(r).into_client().map_err(|m| self.corrupt(m))?);
        }
        let states = tx
            .query(
                "SELECT client_key, update_key, scan_result, enforcement FROM compliance \
                 WHERE client_key = ANY($1) ORDER BY client_key, update_key",
                &[&keys],
            )
            .map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        let keys: Vec<i64> = keys.iter().map(|&k| k as i64).collect();
        let mut runs = StateRuns::new(&keys);
        for r in states {
            let (update, scan, enforcement): (i32, i16, i16) = (r.get(1), r.get(2), r.get(3));
            let state = pack(update as i64, scan as i64, enforcement as i64).map_err(|m| self.corrupt(m))?;
            runs.push(r.get::<_, i32>(0) as i64, state);
        }
        runs.into_clients(&mut clients);
        Ok(clients)
    }

    fn apply_batches_checked(
        &mut self,
        batches: &[(&StateBatch, Option<u64>)],
        now: Timestamp,
    ) -> Result<Vec<Result<BatchOutcome>>> {
        let location = self.location.as_str();
        let what = format!("cannot apply {} state batches", batches.len());
        let fail = pg(location, &what);
        // Each batch locks its client's row: taken in name order, two management points
        // applying groups of the same clients wait for each other instead of deadlocking.
        // The sort is stable, so one client's batches keep their order.
        let mut order: Vec<usize> = (0..batches.len()).collect();
        order.sort_by(|&a, &b| batches[a].0.client.cmp(&batches[b].0.client));
        let mut client = self.conn();
        let mut tx = client.transaction().map_err(&fail)?;
        let mut answers: Vec<Option<Result<BatchOutcome>>> = (0..batches.len()).map(|_| None).collect();
        for i in order {
            let (batch, token_generation) = batches[i];
            let what = format!("cannot apply batch {} of client {:?}", batch.sequence, batch.client);
            let fail = pg(location, &what);
            // Dropped without `commit`, a savepoint rolls back only this batch.
            let mut savepoint = tx.transaction().map_err(&fail)?;
            let outcome = batch::apply(
                &mut Tx { tx: &mut savepoint, location, what: &what },
                location,
                batch,
                token_generation,
                now,
            );
            if matches!(outcome, Ok(BatchOutcome::Applied)) {
                savepoint.commit().map_err(&fail)?;
            }
            answers[i] = Some(outcome);
        }
        tx.commit().map_err(&fail)?;
        Ok(answers.into_iter().map(|a| a.expect("every batch answered")).collect())
    }

    fn record_rejected(&mut self, client: &str, raw: &str, error: &str, now: Timestamp) -> Result<()> {
        let fail = pg(&self.location, "cannot keep the rejected message");
        let mut conn = self.conn();
        let mut tx = conn.transaction().map_err(&fail)?;
        tx.execute(
            "INSERT INTO rejected_messages (client, received_at, raw, error, size) VALUES ($1, $2, $3, $4, $5)",
            &[
                &client,
                &secs(now),
                &without_nul(rejected_prefix(raw)).as_ref(),
                &without_nul(error).as_ref(),
                &(raw.len() as i64),
            ],
        )
        .map_err(&fail)?;
        tx.execute("UPDATE clients SET rejected_at = $2 WHERE name = $1", &[&client, &secs(now)]).map_err(&fail)?;
        tx.execute(PRUNE_REJECTED_OF_CLIENT, &[&client, &REJECTED_PER_CLIENT]).map_err(&fail)?;
        tx.execute(PRUNE_REJECTED, &[&REJECTED_TOTAL]).map_err(&fail)?;
        tx.commit().map_err(&fail)
    }

    fn load_fleet(&self) -> Result<Fleet> {
        self.load_fleet_in_parts(None)
    }

    fn save_reconcile(
        &mut self,
        record: &ReconcileRecord,
        policies: &HashMap<String, serde_json::Value>,
        assignments: &[PolicyAssignment],
    ) -> Result<()> {
        let (location, what) = (self.location.as_str(), "cannot save the reconcile");
        let fail = pg(location, what);
        let mut conn = self.conn();
        let mut tx = conn.transaction().map_err(&fail)?;
        reconcile::save(&mut Tx { tx: &mut tx, location, what }, record, policies, assignments)?;
        tx.commit().map_err(&fail)
    }

    fn last_reconcile(&self) -> Result<Option<ReconcileRecord>> {
        let fail = pg(&self.location, "cannot load the last reconcile");
        let mut conn = self.conn();
        let mut tx = snapshot(&mut conn).map_err(&fail)?;
        let Some(last) = tx
            .query_opt("SELECT time, revision, catalog_version FROM reconciles ORDER BY id DESC LIMIT 1", &[])
            .map_err(&fail)?
        else {
            return Ok(None);
        };
        let rows = tx.query("SELECT kind, namespace, name, status::text FROM resource_status", &[]).map_err(&fail)?;
        tx.commit().map_err(&fail)?;
        let mut statuses = Vec::with_capacity(rows.len());
        for r in rows {
            statuses.push(ResourceStatus {
                kind: r.get(0),
                namespace: r.get(1),
                name: r.get(2),
                status: parse_json(r.get(3), "resource status").map_err(|m| self.corrupt(m))?,
            });
        }
        Ok(Some(build_record(last.get(0), last.get(1), last.get(2), statuses).map_err(|e| e.at(&self.location))?))
    }

    fn status_history(&self, kind: &str, name: &str, limit: usize) -> Result<Vec<ReconcileRecord>> {
        let fail = pg(&self.location, "cannot read the status history");
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .conn()
            .query(
                "SELECT time, revision, catalog_version, namespace, status::text FROM status_history \
                 WHERE kind = $1 AND name = $2 ORDER BY time DESC, id DESC LIMIT $3",
                &[&kind, &name, &limit],
            )
            .map_err(&fail)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows.iter().rev() {
            let status = ResourceStatus {
                kind: kind.into(),
                namespace: r.get(3),
                name: name.into(),
                status: parse_json(r.get(4), "status history").map_err(|m| self.corrupt(m))?,
            };
            out.push(build_record(r.get(0), r.get(1), r.get(2), vec![status]).map_err(|e| e.at(&self.location))?);
        }
        Ok(out)
    }
}

/// A `clients` row read by `SELECT key, name, facts::text, agent_version, …, rejected_at`.
fn client_row(r: &postgres::Row) -> ClientRow {
    ClientRow {
        name: r.get(1),
        facts: r.get(2),
        agent_version: r.get(3),
        scan_time: r.get(4),
        scan_catalog_version: r.get(5),
        failure_time: r.get(6),
        failure_catalog_version: r.get(7),
        failure_error: r.get(8),
        pending_messages: r.get::<_, i32>(9) as i64,
        rejected_at: r.get(10),
    }
}

/// A read-only transaction seeing one consistent snapshot, for multi-query reads.
fn snapshot(client: &mut postgres::Client) -> Result<postgres::Transaction<'_>, postgres::Error> {
    client.build_transaction().isolation_level(IsolationLevel::RepeatableRead).read_only(true).start()
}
/// catalog_updates rows as column arrays for one `unnest` insert.
#[derive(Default)]
struct InsertColumns<'a> {
    keys: Vec<i32>,
    kb: Vec<Option<&'a str>>,
    title: Vec<&'a str>,
    classification: Vec<&'a str>,
    severity: Vec<&'a str>,
    released: Vec<&'a str>,
    superseded: Vec<bool>,
    expired: Vec<bool>,
    body: Vec<&'a str>,
}

impl<'a> InsertColumns<'a> {
    fn push(&mut self, key: i32, row: &'a CatalogRow) {
        self.keys.push(key);
        self.kb.push(row.kb.as_deref());
        self.title.push(&row.title);
        self.classification.push(&row.classification);
        self.severity.push(&row.severity);
        self.released.push(&row.released);
        self.superseded.push(row.superseded);
        self.expired.push(row.expired);
        self.body.push(&row.body);
    }
}

/// One write transaction, as the shared decisions ([`catalog::save`], [`batch::apply`],
/// [`reconcile::save`]) see it: only SQL here, many rows sent as arrays.
struct Tx<'t, 'c> {
    tx: &'t mut postgres::Transaction<'c>,
    location: &'t str,
    /// What the transaction does, for messages ("cannot save the catalog: …").
    what: &'t str,
}

impl Tx<'_, '_> {
    fn keys_of(&mut self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        let rows = self
            .tx
            .query("SELECT id, key FROM updates WHERE id = ANY($1)", &[&ids])
            .map_err(pg(self.location, self.what))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get::<_, i32>(1) as i64)).collect())
    }
}

impl CatalogWriter for Tx<'_, '_> {
    fn current_version(&mut self) -> Result<Option<(i64, String)>> {
        let row = self
            .tx
            .query_opt("SELECT version, digest FROM catalog_versions ORDER BY version DESC LIMIT 1", &[])
            .map_err(pg(self.location, self.what))?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    fn current_rows(&mut self) -> Result<HashMap<String, CurrentRow>> {
        let rows = self
            .tx
            .query(
                "SELECT u.id, cu.key, cu.superseded, cu.body FROM catalog_updates cu \
                 JOIN updates u ON u.key = cu.key WHERE cu.valid_to IS NULL",
                &[],
            )
            .map_err(pg(self.location, self.what))?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get(0), CurrentRow { key: r.get::<_, i32>(1) as i64, superseded: r.get(2), body: r.get(3) }))
            .collect())
    }

    fn known_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        self.keys_of(ids)
    }

    fn max_key(&mut self) -> Result<i64> {
        let row = self
            .tx
            .query_one("SELECT COALESCE(MAX(key), 0) FROM updates", &[])
            .map_err(pg(self.location, self.what))?;
        Ok(row.get::<_, i32>(0) as i64)
    }

    fn write_version(&mut self, v: &NewVersion<'_>) -> Result<()> {
        let fail = pg(self.location, self.what);
        let close: Vec<i32> = v.close.iter().map(|k| *k as i32).collect();
        self.tx
            .execute(
                "UPDATE catalog_updates SET valid_to = $2 WHERE key = ANY($1) AND valid_to IS NULL",
                &[&close, &v.version],
            )
            .map_err(&fail)?;
        let new_keys: Vec<i32> = v.new_keys.iter().map(|(k, _)| *k as i32).collect();
        let new_ids: Vec<&str> = v.new_keys.iter().map(|(_, id)| *id).collect();
        self.tx
            .execute(
                "INSERT INTO updates (key, id, first_version) \
                 SELECT k, i, $3::bigint FROM unnest($1::int[], $2::text[]) AS t (k, i)",
                &[&new_keys, &new_ids, &v.version],
            )
            .map_err(&fail)?;
        let mut ins = InsertColumns::default();
        for (key, row) in &v.rows {
            ins.push(*key as i32, row);
        }
        self.tx
            .execute(
                "INSERT INTO catalog_updates (key, valid_from, kb, title, classification, severity, released, \
                 superseded, expired, body) \
                 SELECT k, $1::bigint, kb, ti, cl, se, re, su, ex, bo FROM unnest($2::int[], $3::text[], \
                 $4::text[], $5::text[], $6::text[], $7::text[], $8::bool[], $9::bool[], $10::text[]) \
                 AS t (k, kb, ti, cl, se, re, su, ex, bo)",
                &[
                    &v.version,
                    &ins.keys,
                    &ins.kb,
                    &ins.title,
                    &ins.classification,
                    &ins.severity,
                    &ins.released,
                    &ins.superseded,
                    &ins.expired,
                    &ins.body,
                ],
            )
            .map_err(&fail)?;
        self.tx
            .execute(
                "INSERT INTO catalog_versions (version, digest, created_at, update_count) VALUES ($1, $2, $3, $4)",
                &[&v.version, &v.digest, &v.created_at, &v.update_count],
            )
            .map_err(&fail)?;
        Ok(())
    }
}

impl BatchWriter for Tx<'_, '_> {
    fn client(&mut self, name: &str) -> Result<Option<BatchClient>> {
        let row = self
            .tx
            .query_opt(
                "SELECT key, last_sequence, scan_time, failure_time, token_generation FROM clients \
                 WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .map_err(pg(self.location, self.what))?;
        Ok(row.map(|r| BatchClient {
            key: r.get::<_, i32>(0) as i64,
            last_sequence: r.get(1),
            scan_time: r.get(2),
            failure_time: r.get(3),
            token_generation: r.get(4),
        }))
    }

    fn update_keys(&mut self, ids: &[&str]) -> Result<Vec<Option<i64>>> {
        let found = self.keys_of(ids)?;
        Ok(ids.iter().map(|id| found.get(*id).copied()).collect())
    }

    fn record_scan(&mut self, client: i64, states: &ScanStates, scan: &ScanRecorded<'_>) -> Result<()> {
        let fail = pg(self.location, self.what);
        let client = client as i32;
        let update_keys: Vec<i32> = states.iter().map(|&(k, _)| k as i32).collect();
        let results: Vec<i16> = states.iter().map(|&(_, v)| v.0 as i16).collect();
        let enforcements: Vec<i16> = states.iter().map(|&(_, v)| v.1 as i16).collect();
        // As on SQLite: rows of updates the scan no longer reports deleted, the others
        // rewritten in place (no indexed column changes, so PostgreSQL can keep the new
        // row version on its page without touching the primary key index).
        self.tx
            .execute(
                "DELETE FROM compliance WHERE client_key = $1 AND update_key <> ALL($2::int[])",
                &[&client, &update_keys],
            )
            .map_err(&fail)?;
        self.tx
            .execute(
                "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
                 SELECT $1::int, u, s, e, $5::bigint FROM unnest($2::int[], $3::smallint[], $4::smallint[]) AS t (u, s, e) \
                 ON CONFLICT (client_key, update_key) DO UPDATE SET scan_result = EXCLUDED.scan_result, \
                 enforcement = EXCLUDED.enforcement, time = EXCLUDED.time",
                &[&client, &update_keys, &results, &enforcements, &scan.time],
            )
            .map_err(&fail)?;
        self.tx
            .execute(
                "UPDATE clients SET scan_time = $2, scan_catalog_version = $3, \
                 agent_version = COALESCE($4, agent_version) WHERE key = $1",
                &[&client, &scan.time, &scan.catalog_version, &scan.agent_version],
            )
            .map_err(&fail)?;
        Ok(())
    }

    fn record_failure(&mut self, client: i64, time: i64, catalog_version: i64, error: &str) -> Result<()> {
        self.tx
            .execute(
                "UPDATE clients SET failure_time = $2, failure_catalog_version = $3, failure_error = $4 WHERE key = $1",
                &[&(client as i32), &time, &catalog_version, &error],
            )
            .map_err(pg(self.location, self.what))?;
        Ok(())
    }

    fn record_enforcement(&mut self, client: i64, update: i64, state: u8, time: i64) -> Result<()> {
        self.tx
            .execute(
                "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
                 VALUES ($1, $2, 0, $3, $4) \
                 ON CONFLICT (client_key, update_key) DO UPDATE SET enforcement = EXCLUDED.enforcement, \
                 time = EXCLUDED.time WHERE EXCLUDED.time >= compliance.time",
                &[&(client as i32), &(update as i32), &(state as i16), &time],
            )
            .map_err(pg(self.location, self.what))?;
        Ok(())
    }

    fn finish(&mut self, client: i64, sequence: i64, now: i64) -> Result<()> {
        let name: String = self
            .tx
            .query_one(
                "UPDATE clients SET last_sequence = $2, last_seen = $3 WHERE key = $1 RETURNING name",
                &[&(client as i32), &sequence, &now],
            )
            .map_err(pg(self.location, self.what))?
            .get(0);
        self.tx.execute(FEED_INSERT, &[&name, &now]).map_err(pg(self.location, self.what))?;
        Ok(())
    }
}

impl ReconcileWriter for Tx<'_, '_> {
    fn stored_statuses(&mut self) -> Result<StoredStatuses> {
        let rows = self
            .tx
            .query("SELECT kind, namespace, name, status::text FROM resource_status", &[])
            .map_err(pg(self.location, self.what))?;
        let mut stored = StoredStatuses::default();
        for r in rows {
            stored.add(r.get(0), r.get(1), r.get(2), r.get(3));
        }
        Ok(stored)
    }

    fn write_reconcile(&mut self, w: &ReconcileWrite<'_>) -> Result<()> {
        let fail = pg(self.location, self.what);
        let etags: Vec<&str> = w.policies.iter().map(|p| p.0).collect();
        let bodies: Vec<&str> = w.policies.iter().map(|p| p.1.as_str()).collect();
        self.tx
            .execute(
                "INSERT INTO policy_docs (etag, body) SELECT e, b::jsonb FROM unnest($1::text[], $2::text[]) AS t (e, b) \
                 ON CONFLICT (etag) DO UPDATE SET body = EXCLUDED.body",
                &[&etags, &bodies],
            )
            .map_err(&fail)?;
        let clients: Vec<&str> = w.assignments.iter().map(|a| a.0).collect();
        let etags: Vec<&str> = w.assignments.iter().map(|a| a.1).collect();
        self.tx
            .execute(
                "INSERT INTO client_policies (client, etag) SELECT c, e FROM unnest($1::text[], $2::text[]) AS t (c, e) \
                 ON CONFLICT (client) DO UPDATE SET etag = EXCLUDED.etag",
                &[&clients, &etags],
            )
            .map_err(&fail)?;
        let status: [Vec<&str>; 4] = [
            w.statuses.iter().map(|s| s.0.0).collect(),
            w.statuses.iter().map(|s| s.0.1).collect(),
            w.statuses.iter().map(|s| s.0.2).collect(),
            w.statuses.iter().map(|s| s.1.as_str()).collect(),
        ];
        self.tx
            .execute(
                "INSERT INTO resource_status (kind, namespace, name, revision, catalog_version, status, updated_at) \
                 SELECT k, ns, n, $5::text, $6::bigint, s::jsonb, $7::bigint \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t (k, ns, n, s) \
                 ON CONFLICT (kind, namespace, name) DO UPDATE SET revision = EXCLUDED.revision, \
                 catalog_version = EXCLUDED.catalog_version, status = EXCLUDED.status, updated_at = EXCLUDED.updated_at",
                &[&status[0], &status[1], &status[2], &status[3], &w.revision, &w.catalog_version, &w.time],
            )
            .map_err(&fail)?;
        let removed: [Vec<&str>; 3] = [
            w.removed.iter().map(|r| r.0.as_str()).collect(),
            w.removed.iter().map(|r| r.1.as_str()).collect(),
            w.removed.iter().map(|r| r.2.as_str()).collect(),
        ];
        self.tx
            .execute(
                "DELETE FROM resource_status WHERE (kind, namespace, name) IN \
                 (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))",
                &[&removed[0], &removed[1], &removed[2]],
            )
            .map_err(&fail)?;
        let h = &w.history;
        let history: [Vec<&str>; 4] = [
            h.iter().map(|r| r.0.as_str()).collect(),
            h.iter().map(|r| r.1.as_str()).collect(),
            h.iter().map(|r| r.2.as_str()).collect(),
            h.iter().map(|r| r.3.as_str()).collect(),
        ];
        self.tx
            .execute(
                "INSERT INTO status_history (time, revision, catalog_version, kind, namespace, name, status) \
                 SELECT $5::bigint, $6::text, $7::bigint, k, ns, n, s::jsonb \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS t (k, ns, n, s, i) \
                 ORDER BY i",
                &[&history[0], &history[1], &history[2], &history[3], &w.time, &w.revision, &w.catalog_version],
            )
            .map_err(&fail)?;
        self.tx
            .execute(
                "INSERT INTO reconciles (time, revision, catalog_version) VALUES ($1, $2, $3)",
                &[&w.time, &w.revision, &w.catalog_version],
            )
            .map_err(&fail)?;
        Ok(())
    }
}
