//! The embedded store: one SQLite file (WAL mode), the default backend.
//!
//! Same schema and behaviour as [`super::postgres::PostgresStore`]; the schema and the
//! reporting views are in `schema_sqlite.sql`. Times are INTEGER unix seconds, so
//! timestamps read back are truncated to the second.
//!
//! Besides the [`Store`] trait, [`SqliteStore`] offers [`SqliteStore::query_rows`] (plain
//! SQL for reports and tests), settings, and a bulk path for large imports and
//! benchmarks: [`SqliteStore::upsert_clients`], [`SqliteStore::client_keys`] and
//! [`SqliteStore::bulk_load_states`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::batch::{self, BatchClient, BatchWriter, ScanRecorded, ScanStates};
use super::catalog::{
    self, CatalogWriter, CurrentRow, LoadedCatalog, NewVersion, check_delta, check_version, parse_update,
};
use super::reconcile::{self, ReconcileWrite, ReconcileWriter, StoredStatuses, build_record};
use super::rows::*;
use super::{
    BatchOutcome, CatalogSaved, CatalogVersionInfo, ClientInfo, Enrollment, FeedEntry, PolicyAssignment,
    REJECTED_PER_CLIENT, REJECTED_TOTAL, ReconcileRecord, ResourceStatus, Store, StoreError, TokenOwner,
    rejected_prefix,
};
use crate::catalog::Catalog;
use crate::catalog::Update;
use crate::catalog::delta::CatalogDelta;
use crate::compliance::messages::StateBatch;
use crate::compliance::{Client, Fleet, PackedState};
use crate::{Error, Result};

/// Schema migrations, applied in order; each runs once, in its own transaction, and is
/// recorded in `schema_version`. Version 1 is the whole schema file.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema_sqlite.sql")),
    (2, include_str!("schema_sqlite_2.sql")),
    (3, include_str!("schema_sqlite_3.sql")),
    (4, include_str!("schema_sqlite_4.sql")),
];

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Update id → stable key, as state batches looked them up. A key never changes and
    /// an `updates` row is never deleted, so a key once read stays true; an id not here
    /// is asked of the table (another process may have added it). Looked up for every
    /// report of every batch on the writer's thread, hence the fast hasher (only ids the
    /// catalog has are ever inserted).
    update_keys: UpdateKeys,
}

type UpdateKeys = HashMap<String, i64, foldhash::fast::RandomState>;

impl SqliteStore {
    /// Open (creating the file and its parent directory when missing) and create or
    /// migrate the schema. WAL journal, `synchronous=NORMAL`, foreign keys on, a 64 MiB
    /// page cache.
    pub fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let cannot_open = |reason: String| {
            StoreError::Unavailable {
                message: format!("cannot open the store: {reason}; check the path or remove the file to start fresh"),
                source: None,
            }
            .at(&location)
        };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
            && !parent.exists()
        {
            std::fs::create_dir_all(parent)
                .map_err(|e| cannot_open(format!("cannot create the directory {}: {e}", parent.display())))?;
        }
        if path.is_dir() {
            return Err(cannot_open("it is a directory, not a file".into()));
        }
        let conn = Connection::open(path).map_err(|e| cannot_open(e.to_string()))?;
        let configure = |conn: &Connection| -> rusqlite::Result<()> {
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // Reading the journal mode reads the file header: a file that is not a
            // database fails here.
            let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
            // A page cache of 64 MiB (SQLite's default is 2 MiB): with the default,
            // rewriting the stored rows of 1,000 clients, client after client, read each
            // batch's pages back from the file and ran at a third of the rate.
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536;")?;
            // Every statement of a state batch stays prepared (rusqlite's default keeps 16).
            conn.set_prepared_statement_cache_capacity(64);
            // `rarray(?)`: a scan's states written by one statement, not one per row.
            rusqlite::vtab::array::load_module(conn)?;
            conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        };
        configure(&conn).map_err(|e| cannot_open(e.to_string()))?;
        let mut store = SqliteStore { conn, path: path.to_path_buf(), update_keys: UpdateKeys::default() };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot create or migrate the schema", e);
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        for &(version, sql) in MIGRATIONS {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
            tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)")
                .map_err(fail)?;
            let current: i64 =
                tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0)).map_err(fail)?;
            if current > newest {
                return Err(StoreError::SchemaTooNew { current, newest }.at(&location));
            }
            if current >= version {
                continue;
            }
            tx.execute_batch(sql).map_err(fail)?;
            tx.execute(
                "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
                params![version, secs(Timestamp::now())],
            )
            .map_err(fail)?;
            tx.commit().map_err(fail)?;
        }
        Ok(())
    }

    /// The file this store is in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Run one SQL query (typically `SELECT … FROM v_…`) and return every row as text:
    /// integers and reals in their shortest decimal form, NULL as the empty string, blobs
    /// as hex. For reports and tests.
    pub fn query_rows(&self, sql: &str) -> Result<Vec<Vec<String>>> {
        let ctx = |e: rusqlite::Error| self.err(format!("query failed: {e}; the query was: {sql}"), e);
        let mut stmt = self.conn.prepare(sql).map_err(ctx)?;
        let n = stmt.column_count();
        let mut rows = stmt.query([]).map_err(ctx)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(ctx)? {
            let mut cells = Vec::with_capacity(n);
            for i in 0..n {
                cells.push(match row.get_ref(i).map_err(ctx)? {
                    ValueRef::Null => String::new(),
                    ValueRef::Integer(v) => v.to_string(),
                    ValueRef::Real(v) => v.to_string(),
                    ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
                    ValueRef::Blob(b) => hex::encode(b),
                });
            }
            out.push(cells);
        }
        Ok(out)
    }

    /// Write a setting the views read (e.g. `scan_ttl_seconds`).
    pub fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO settings (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(|e| self.err(format!("cannot save setting {key:?}: {e}"), e))?;
        Ok(())
    }

    /// A setting's value, if set.
    pub fn setting(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM settings WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(format!("cannot read setting {key:?}: {e}"), e))
    }

    /// Register or refresh many clients in one transaction (what
    /// [`Store::upsert_client`] does for one).
    pub fn upsert_clients(&mut self, clients: &[ClientInfo], now: Timestamp) -> Result<()> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot save the clients", e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        {
            let mut stmt = tx.prepare_cached(UPSERT_CLIENT).map_err(fail)?;
            for c in clients {
                stmt.execute(params![c.name, facts_json(&c.facts), c.agent_version, secs(now)]).map_err(fail)?;
            }
        }
        tx.commit().map_err(fail)
    }

    /// Every registered client's store key, by name (the keys [`Self::bulk_load_states`]
    /// takes).
    pub fn client_keys(&self) -> Result<HashMap<String, u32>> {
        let fail = |e: rusqlite::Error| sql_err(&self.location(), "cannot read the clients", e);
        let mut stmt = self.conn.prepare("SELECT name, key FROM clients").map_err(fail)?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u32))).map_err(fail)?;
        rows.collect::<rusqlite::Result<_>>().map_err(fail)
    }

    /// Bulk path for imports and benchmarks: write compliance rows
    /// `(client key, state, time)` in one transaction with one prepared statement,
    /// replacing existing rows for the same (client, update). Client keys come from
    /// [`Self::client_keys`]; the update key is `state.key()` and must be a key of the
    /// `updates` table (see `Catalog::keys` from [`Store::load_catalog`]). Rows sorted by
    /// (client key, update key) load fastest (they append to the primary key). It does
    /// not touch the clients' scan records or sequences: use
    /// [`Store::apply_batch`] for real state messages. Returns the number of rows
    /// written. All or nothing: a row naming an unknown client or update fails the whole
    /// load.
    pub fn bulk_load_states<I>(&mut self, rows: I) -> Result<u64>
    where
        I: IntoIterator<Item = (u32, PackedState, Timestamp)>,
    {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "bulk load of compliance states failed", e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        let mut n = 0u64;
        {
            let mut stmt = tx.prepare_cached(UPSERT_STATE).map_err(fail)?;
            for (client, state, time) in rows {
                stmt.execute(params![client, state.key(), state.scan() as u8, state.enforcement() as u8, secs(time)])
                    .map_err(fail)?;
                n += 1;
            }
        }
        tx.commit().map_err(fail)?;
        Ok(n)
    }

    /// Bulk path, with [`Self::bulk_load_states`]: record every client as scanned at `time`
    /// against `catalog_version` (no state message, no feed row).
    pub fn mark_scanned(&mut self, time: Timestamp, catalog_version: u64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE clients SET scan_time = ?1, scan_catalog_version = ?2",
                params![secs(time), catalog_version as i64],
            )
            .map(|_| ())
            .map_err(|e| self.err(format!("cannot mark the clients scanned: {e}"), e))
    }

    fn err(&self, message: String, e: rusqlite::Error) -> Error {
        Error::store(self.location(), message, e)
    }

    fn fleet(&self, only: Option<&[u32]>) -> Result<Fleet> {
        self.read_fleet(only)
            .map_err(|e| sql_err(&self.location(), "cannot load the fleet", e))?
            .map(Fleet::new)
            .map_err(|message| StoreError::Corrupt(message).at(self.location()))
    }

    /// The named clients (those that exist) with every state, from one snapshot.
    fn read_clients(&self, names: &[String]) -> rusqlite::Result<std::result::Result<Vec<Client>, String>> {
        let list = serde_json::to_string(names).expect("names serialize");
        self.read_grouped(
            &format!("{CLIENT_COLUMNS} WHERE name IN (SELECT value FROM json_each(?1)) ORDER BY key"),
            Some(list),
            |keys| {
                let key_list = serde_json::to_string(keys).expect("keys serialize");
                (
                    "SELECT client_key, update_key, scan_result, enforcement FROM compliance \
                 WHERE client_key IN (SELECT value FROM json_each(?1)) ORDER BY client_key, update_key"
                        .to_string(),
                    Some(key_list),
                )
            },
        )
    }

    /// Clients and their states; with `only`, just the states of those update keys.
    fn read_fleet(&self, only: Option<&[u32]>) -> rusqlite::Result<std::result::Result<Vec<Client>, String>> {
        // Every state in one scan of the primary key (no sort): rows arrive grouped by
        // client in key order, so a merge with the clients (also in key order) maps
        // them; each client's states are copied once into an exactly sized vector.
        // Keys are integers: inlined, they let SQLite test each row against an in-memory
        // set without returning the rows a plan does not need.
        let filter = only.map(|keys| {
            let list: Vec<String> = keys.iter().map(u32::to_string).collect();
            format!("WHERE update_key IN ({})", if list.is_empty() { "NULL".to_string() } else { list.join(",") })
        });
        let states = format!(
            "SELECT client_key, update_key, scan_result, enforcement FROM compliance {} ORDER BY client_key, update_key",
            filter.unwrap_or_default()
        );
        self.read_grouped(&format!("{CLIENT_COLUMNS} ORDER BY key"), None, |_| (states, None))
    }

    /// Clients read by `clients` (in key order, with `arg` as ?1 when given) and their
    /// states read by the statement `states` makes of their keys (in client-key order), in
    /// one read transaction: both from the same snapshot.
    fn read_grouped(
        &self,
        clients_sql: &str,
        arg: Option<String>,
        states: impl FnOnce(&[i64]) -> (String, Option<String>),
    ) -> rusqlite::Result<std::result::Result<Vec<Client>, String>> {
        let tx = self.conn.unchecked_transaction()?;
        let mut keys: Vec<i64> = Vec::new();
        let mut clients: Vec<Client> = Vec::new();
        {
            let mut stmt = tx.prepare_cached(clients_sql)?;
            let mut rows = match &arg {
                Some(a) => stmt.query([a])?,
                None => stmt.query([])?,
            };
            while let Some(r) = rows.next()? {
                match client_row(r)?.into_client() {
                    Ok(c) => clients.push(c),
                    Err(e) => return Ok(Err(e)),
                }
                keys.push(r.get(0)?);
            }
        }
        let (states_sql, arg) = states(&keys);
        let mut stmt = tx.prepare(&states_sql)?;
        let mut rows = match &arg {
            Some(a) => stmt.query([a])?,
            None => stmt.query([])?,
        };
        let mut runs = StateRuns::new(&keys);
        while let Some(r) = rows.next()? {
            let state = match pack(r.get(1)?, r.get(2)?, r.get(3)?) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            runs.push(r.get(0)?, state);
        }
        runs.into_clients(&mut clients);
        Ok(Ok(clients))
    }
}

/// The `clients` columns [`client_row`] reads.
const CLIENT_COLUMNS: &str = "SELECT key, name, facts, agent_version, scan_time, scan_catalog_version, failure_time, \
     failure_catalog_version, failure_error, pending_messages, rejected_at FROM clients";

const UPSERT_CLIENT: &str = "INSERT INTO clients (name, facts, agent_version, registered_at, last_seen) \
     VALUES (?1, ?2, ?3, ?4, ?4) \
     ON CONFLICT (name) DO UPDATE SET facts = excluded.facts, \
     agent_version = COALESCE(excluded.agent_version, clients.agent_version), last_seen = excluded.last_seen";

/// One change-feed row: the client named changed in this transaction.
const FEED_INSERT: &str = "INSERT INTO feed (client, at) VALUES (?1, ?2)";

/// Writes compliance rows from the rows `$source` gives as (client_key, update_key,
/// scan_result, enforcement, time), replacing the stored row of the same (client, update).
macro_rules! upsert_states {
    ($source:literal) => {
        concat!(
            "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) ",
            $source,
            " ON CONFLICT (client_key, update_key) DO UPDATE SET scan_result = excluded.scan_result, \
             enforcement = excluded.enforcement, time = excluded.time"
        )
    };
}

/// One row from its five parameters.
const UPSERT_STATE: &str = upsert_states!("VALUES (?1, ?2, ?3, ?4, ?5)");

/// One client's states at one time, each packed as update_key << 16 | scan_result << 8 |
/// enforcement in the `rarray` of ?2 (the `WHERE` keeps `ON CONFLICT` from reading as a join).
const UPSERT_PACKED_STATES: &str =
    upsert_states!("SELECT ?1, value >> 16, (value >> 8) & 255, value & 255, ?3 FROM rarray(?2) WHERE true");

/// A `clients` row read by `SELECT key, name, facts, agent_version, scan_time, …, rejected_at`.
fn client_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClientRow> {
    Ok(ClientRow {
        name: r.get(1)?,
        facts: r.get(2)?,
        agent_version: r.get(3)?,
        scan_time: r.get(4)?,
        scan_catalog_version: r.get(5)?,
        failure_time: r.get(6)?,
        failure_catalog_version: r.get(7)?,
        failure_error: r.get(8)?,
        pending_messages: r.get(9)?,
        rejected_at: r.get(10)?,
    })
}

fn sql_err(location: &str, what: &str, e: rusqlite::Error) -> Error {
    Error::store(location, format!("{what}: {e}"), e)
}

impl Store for SqliteStore {
    fn set_setting(&mut self, key: &str, value: &str) -> Result<()> {
        SqliteStore::set_setting(self, key, value)
    }

    fn enroll_client(
        &mut self,
        client: &ClientInfo,
        token_sha256: &str,
        presented_sha256: Option<&str>,
        now: Timestamp,
    ) -> Result<Enrollment> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, &format!("cannot enroll client {:?}", client.name), e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        let held: Option<(Option<String>, Option<i64>)> = tx
            .query_row("SELECT token_sha256, revoked_at FROM clients WHERE name = ?1", [&client.name], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(fail)?;
        if let Some(refused) = enrollment_refused(held, presented_sha256).map_err(|e| e.at(&location))? {
            return Ok(refused);
        }
        tx.execute(UPSERT_CLIENT, params![client.name, facts_json(&client.facts), client.agent_version, secs(now)])
            .map_err(fail)?;
        tx.execute(
            "UPDATE clients SET token_sha256 = ?2, token_generation = token_generation + 1 WHERE name = ?1",
            params![client.name, token_sha256],
        )
        .map_err(fail)?;
        tx.execute(FEED_INSERT, params![client.name, secs(now)]).map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(Enrollment::Enrolled)
    }

    fn client_for_token(&self, token_sha256: &str) -> Result<Option<TokenOwner>> {
        self.conn
            .query_row("SELECT name, token_generation FROM clients WHERE token_sha256 = ?1", [token_sha256], |r| {
                Ok(TokenOwner { client: r.get(0)?, generation: r.get::<_, i64>(1)? as u64 })
            })
            .optional()
            .map_err(|e| sql_err(&self.location(), "cannot look up the token", e))
    }

    fn rotate_token(&mut self, client: &str, old_sha256: &str, new_sha256: &str) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE clients SET token_sha256 = ?3, token_generation = token_generation + 1 \
                 WHERE name = ?1 AND token_sha256 = ?2",
                params![client, old_sha256, new_sha256],
            )
            .map_err(|e| sql_err(&self.location(), &format!("cannot rotate the token of {client:?}"), e))?;
        Ok(changed == 1)
    }

    fn revoke_client(&mut self, client: &str, now: Timestamp) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE clients SET token_sha256 = NULL, revoked_at = ?2, token_generation = token_generation + 1 \
                 WHERE name = ?1",
                params![client, secs(now)],
            )
            .map_err(|e| sql_err(&self.location(), &format!("cannot revoke client {client:?}"), e))?;
        Ok(changed == 1)
    }

    fn release_client(&mut self, client: &str) -> Result<bool> {
        let changed = self
            .conn
            .execute(
                "UPDATE clients SET token_sha256 = NULL, revoked_at = NULL, token_generation = token_generation + 1 \
                 WHERE name = ?1",
                [client],
            )
            .map_err(|e| sql_err(&self.location(), &format!("cannot release client {client:?}"), e))?;
        Ok(changed == 1)
    }

    fn setting(&self, key: &str) -> Result<Option<String>> {
        SqliteStore::setting(self, key)
    }

    fn client_policy(&self, client: &str) -> Result<Option<(String, serde_json::Value)>> {
        let location = self.location();
        let row: Option<(String, String)> = self
            .conn
            .query_row(
                "SELECT d.etag, d.body FROM client_policies c JOIN policy_docs d ON d.etag = c.etag WHERE c.client = ?1",
                [client],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| sql_err(&location, "cannot read the client policy", e))?;
        row.map(|(etag, body)| {
            let doc = parse_json(&body, "policy").map_err(|m| StoreError::Corrupt(m).at(&location))?;
            Ok((etag, doc))
        })
        .transpose()
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn save_catalog(&mut self, updates: &[Update], now: Timestamp) -> Result<CatalogSaved> {
        let location = self.location();
        let what = "cannot save the catalog";
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(&location, what, e))?;
        let saved = catalog::save(&mut Tx { conn: &tx, location: &location, what }, updates, now)?;
        if saved.changed {
            tx.commit().map_err(|e| sql_err(&location, what, e))?;
        }
        Ok(saved)
    }

    fn load_catalog(&self) -> Result<Catalog> {
        let current: i64 = self
            .conn
            .query_row("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", [], |r| r.get(0))
            .map_err(|e| sql_err(&self.location(), "cannot load the catalog", e))?;
        self.load_catalog_version(current as u64)
    }

    fn load_catalog_version(&self, version: u64) -> Result<Catalog> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot load the catalog", e);
        let tx = self.conn.unchecked_transaction().map_err(fail)?;
        let newest: i64 =
            tx.query_row("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", [], |r| r.get(0)).map_err(fail)?;
        check_version(version, newest).map_err(|e| e.at(&location))?;
        let mut loaded = LoadedCatalog::default();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT u.id, u.key, u.first_version, cu.body FROM catalog_updates cu \
                     JOIN updates u ON u.key = cu.key \
                     WHERE cu.valid_from <= ?1 AND (cu.valid_to IS NULL OR cu.valid_to > ?1)",
                )
                .map_err(fail)?;
            let mut rows = stmt.query([version as i64]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                let id: String = r.get(0).map_err(fail)?;
                let body: String = r.get(3).map_err(fail)?;
                loaded.add(id, r.get(1).map_err(fail)?, r.get(2).map_err(fail)?, &body).map_err(|e| e.at(&location))?;
            }
        }
        Ok(loaded.into_catalog(version as i64))
    }

    fn catalog_delta(&self, from: u64, to: u64) -> Result<CatalogDelta> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot compute the catalog delta", e);
        let tx = self.conn.unchecked_transaction().map_err(fail)?;
        let newest: i64 =
            tx.query_row("SELECT COALESCE(MAX(version), 0) FROM catalog_versions", [], |r| r.get(0)).map_err(fail)?;
        check_delta(from, to, newest).map_err(|e| e.at(&location))?;
        let mut delta = CatalogDelta { from, to, ..Default::default() };
        {
            let mut stmt = tx.prepare(DELTA_UPSERTS_SQLITE).map_err(fail)?;
            let mut rows = stmt.query([from as i64, to as i64]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                let body: String = r.get(0).map_err(fail)?;
                delta.upserts.push(parse_update(&body).map_err(|e| e.at(&location))?);
            }
            let mut stmt = tx.prepare(DELTA_REMOVED_SQLITE).map_err(fail)?;
            let mut rows = stmt.query([from as i64, to as i64]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                delta.removed.push(r.get(0).map_err(fail)?);
            }
        }
        delta.upserts.sort_by(|a, b| a.id.cmp(&b.id));
        delta.removed.sort();
        Ok(delta)
    }

    fn catalog_versions(&self) -> Result<Vec<CatalogVersionInfo>> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot list catalog versions", e);
        let mut stmt = self
            .conn
            .prepare("SELECT version, digest, created_at, update_count FROM catalog_versions ORDER BY version")
            .map_err(fail)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?, r.get::<_, i64>(3)?))
            })
            .map_err(fail)?;
        rows.map(|r| {
            let (version, digest, created, count) = r.map_err(fail)?;
            Ok(CatalogVersionInfo {
                version: version as u64,
                digest,
                created_at: from_secs(created).map_err(|m| StoreError::Corrupt(m).at(&location))?,
                update_count: count as u64,
            })
        })
        .collect()
    }

    fn upsert_client(&mut self, client: &ClientInfo, now: Timestamp) -> Result<()> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, &format!("cannot save client {:?}", client.name), e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        tx.prepare_cached(UPSERT_CLIENT)
            .and_then(|mut s| {
                s.execute(params![client.name, facts_json(&client.facts), client.agent_version, secs(now)])
            })
            .map_err(fail)?;
        tx.execute(FEED_INSERT, params![client.name, secs(now)]).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    fn feed_head(&self) -> Result<u64> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM feed", [], |r| r.get::<_, i64>(0))
            .map(|s| s as u64)
            .map_err(|e| self.err(format!("cannot read the change feed: {e}"), e))
    }

    fn feed_since(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>> {
        let read = || -> rusqlite::Result<Vec<FeedEntry>> {
            let mut stmt =
                self.conn.prepare_cached("SELECT seq, client FROM feed WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![after as i64, limit as i64], |r| {
                Ok(FeedEntry { seq: r.get::<_, i64>(0)? as u64, client: r.get(1)? })
            })?;
            rows.collect()
        };
        read().map_err(|e| self.err(format!("cannot read the change feed after {after}: {e}"), e))
    }

    fn prune_feed(&mut self, through: u64) -> Result<u64> {
        self.conn
            .execute("DELETE FROM feed WHERE seq <= ?1", [through as i64])
            .map(|n| n as u64)
            .map_err(|e| self.err(format!("cannot prune the change feed: {e}"), e))
    }

    fn load_clients(&self, names: &[String]) -> Result<Vec<Client>> {
        self.read_clients(names)
            .map_err(|e| sql_err(&self.location(), "cannot load clients", e))?
            .map_err(|message| StoreError::Corrupt(message).at(self.location()))
    }

    fn apply_batches_checked(
        &mut self,
        batches: &[(&StateBatch, Option<u64>)],
        now: Timestamp,
    ) -> Result<Vec<Result<BatchOutcome>>> {
        let location = self.location();
        let what = format!("cannot apply {} state batches", batches.len());
        let fail = |e: rusqlite::Error| sql_err(&location, &what, e);
        let mut tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        let mut answers = Vec::with_capacity(batches.len());
        for &(batch, token_generation) in batches {
            let what = format!("cannot apply batch {} of client {:?}", batch.sequence, batch.client);
            // Dropped without `commit`, a savepoint rolls back only this batch.
            let savepoint = tx.savepoint().map_err(fail)?;
            let mut writer =
                BatchTx { tx: Tx { conn: &savepoint, location: &location, what: &what }, known: &mut self.update_keys };
            let outcome = batch::apply(&mut writer, &location, batch, token_generation, now);
            if matches!(outcome, Ok(BatchOutcome::Applied)) {
                savepoint.commit().map_err(fail)?;
            }
            answers.push(outcome);
        }
        tx.commit().map_err(fail)?;
        Ok(answers)
    }

    fn record_rejected(&mut self, client: &str, raw: &str, error: &str, now: Timestamp) -> Result<()> {
        let location = self.location();
        let fail =
            |e: rusqlite::Error| sql_err(&location, &format!("cannot keep the rejected message of {client:?}"), e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        tx.execute(
            "INSERT INTO rejected_messages (client, received_at, raw, error, size) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![client, secs(now), without_nul(rejected_prefix(raw)), without_nul(error), raw.len() as i64],
        )
        .map_err(fail)?;
        tx.execute("UPDATE clients SET rejected_at = ?2 WHERE name = ?1", params![client, secs(now)]).map_err(fail)?;
        tx.execute(PRUNE_REJECTED_OF_CLIENT, params![client, REJECTED_PER_CLIENT]).map_err(fail)?;
        tx.execute(PRUNE_REJECTED, [REJECTED_TOTAL]).map_err(fail)?;
        tx.commit().map_err(fail)
    }

    fn load_fleet(&self) -> Result<Fleet> {
        self.fleet(None)
    }

    fn load_fleet_for(&self, update_keys: &[u32]) -> Result<Fleet> {
        self.fleet(Some(update_keys))
    }

    fn save_reconcile(
        &mut self,
        record: &ReconcileRecord,
        policies: &HashMap<String, serde_json::Value>,
        assignments: &[PolicyAssignment],
    ) -> Result<()> {
        let location = self.location();
        let what = "cannot save the reconcile";
        let fail = |e: rusqlite::Error| sql_err(&location, what, e);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        reconcile::save(&mut Tx { conn: &tx, location: &location, what }, record, policies, assignments)?;
        tx.commit().map_err(fail)
    }

    fn last_reconcile(&self) -> Result<Option<ReconcileRecord>> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot load the last reconcile", e);
        let tx = self.conn.unchecked_transaction().map_err(fail)?;
        let Some((time, revision, catalog_version)) = tx
            .query_row("SELECT time, revision, catalog_version FROM reconciles ORDER BY id DESC LIMIT 1", [], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })
            .optional()
            .map_err(fail)?
        else {
            return Ok(None);
        };
        let mut statuses = Vec::new();
        {
            let mut stmt = tx.prepare("SELECT kind, namespace, name, status FROM resource_status").map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                let text: String = r.get(3).map_err(fail)?;
                statuses.push(ResourceStatus {
                    kind: r.get(0).map_err(fail)?,
                    namespace: r.get(1).map_err(fail)?,
                    name: r.get(2).map_err(fail)?,
                    status: parse_json(&text, "resource status").map_err(|m| StoreError::Corrupt(m).at(&location))?,
                });
            }
        }
        Ok(Some(build_record(time, revision, catalog_version, statuses).map_err(|e| e.at(&location))?))
    }

    fn status_history(&self, kind: &str, name: &str, limit: usize) -> Result<Vec<ReconcileRecord>> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot read the status history", e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT time, revision, catalog_version, namespace, status FROM status_history \
                 WHERE kind = ?1 AND name = ?2 ORDER BY time DESC, id DESC LIMIT ?3",
            )
            .map_err(fail)?;
        let mut rows = stmt.query(params![kind, name, limit.min(i64::MAX as usize) as i64]).map_err(fail)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(fail)? {
            let text: String = r.get(4).map_err(fail)?;
            let status = ResourceStatus {
                kind: kind.into(),
                namespace: r.get(3).map_err(fail)?,
                name: name.into(),
                status: parse_json(&text, "status history").map_err(|m| StoreError::Corrupt(m).at(&location))?,
            };
            let (time, revision, version) = (r.get(0).map_err(fail)?, r.get(1).map_err(fail)?, r.get(2).map_err(fail)?);
            out.push(build_record(time, revision, version, vec![status]).map_err(|e| e.at(&location))?);
        }
        out.reverse();
        Ok(out)
    }
}

const UPSERT_ENFORCEMENT: &str = "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
     VALUES (?1, ?2, 0, ?3, ?4) \
     ON CONFLICT (client_key, update_key) DO UPDATE SET enforcement = excluded.enforcement, time = excluded.time \
     WHERE excluded.time >= compliance.time";

/// Rows valid at `to` that started after `from`: new or changed updates.
const DELTA_UPSERTS_SQLITE: &str = "SELECT cu.body FROM catalog_updates cu \
     WHERE cu.valid_from > ?1 AND cu.valid_from <= ?2 AND (cu.valid_to IS NULL OR cu.valid_to > ?2)";
/// Ids valid at `from` with no row valid at `to`.
const DELTA_REMOVED_SQLITE: &str = "SELECT u.id FROM catalog_updates cu JOIN updates u ON u.key = cu.key \
     WHERE cu.valid_from <= ?1 AND cu.valid_to IS NOT NULL AND cu.valid_to > ?1 AND cu.valid_to <= ?2 \
     AND NOT EXISTS (SELECT 1 FROM catalog_updates c2 WHERE c2.key = cu.key AND c2.valid_from <= ?2 \
     AND (c2.valid_to IS NULL OR c2.valid_to > ?2))";

/// One write transaction, as the shared decisions ([`catalog::save`], [`batch::apply`],
/// [`reconcile::save`]) see it: only SQL here.
struct Tx<'a> {
    conn: &'a Connection,
    location: &'a str,
    /// What the transaction does, for messages ("cannot save the catalog: …").
    what: &'a str,
}

impl Tx<'_> {
    fn fail(&self) -> impl Fn(rusqlite::Error) -> Error + '_ {
        move |e| sql_err(self.location, self.what, e)
    }

    fn keys_of(&self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        let mut stmt = self.conn.prepare_cached("SELECT key FROM updates WHERE id = ?1").map_err(self.fail())?;
        let mut keys = HashMap::with_capacity(ids.len());
        for id in ids {
            if let Some(key) = stmt.query_row([id], |r| r.get::<_, i64>(0)).optional().map_err(self.fail())? {
                keys.insert(id.to_string(), key);
            }
        }
        Ok(keys)
    }
}

impl CatalogWriter for Tx<'_> {
    fn current_version(&mut self) -> Result<Option<(i64, String)>> {
        self.conn
            .query_row("SELECT version, digest FROM catalog_versions ORDER BY version DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(self.fail())
    }

    fn current_rows(&mut self) -> Result<HashMap<String, CurrentRow>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT u.id, cu.key, cu.superseded, cu.body FROM catalog_updates cu \
                 JOIN updates u ON u.key = cu.key WHERE cu.valid_to IS NULL",
            )
            .map_err(self.fail())?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, CurrentRow { key: r.get(1)?, superseded: r.get(2)?, body: r.get(3)? })))
            .map_err(self.fail())?;
        rows.collect::<rusqlite::Result<_>>().map_err(self.fail())
    }

    fn known_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, i64>> {
        self.keys_of(ids)
    }

    fn max_key(&mut self) -> Result<i64> {
        self.conn.query_row("SELECT COALESCE(MAX(key), 0) FROM updates", [], |r| r.get(0)).map_err(self.fail())
    }

    fn write_version(&mut self, v: &NewVersion<'_>) -> Result<()> {
        let fail = self.fail();
        let mut close = self
            .conn
            .prepare_cached("UPDATE catalog_updates SET valid_to = ?2 WHERE key = ?1 AND valid_to IS NULL")
            .map_err(&fail)?;
        for key in &v.close {
            close.execute(params![key, v.version]).map_err(&fail)?;
        }
        let mut new_key = self
            .conn
            .prepare_cached("INSERT INTO updates (key, id, first_version) VALUES (?1, ?2, ?3)")
            .map_err(&fail)?;
        for (key, id) in &v.new_keys {
            new_key.execute(params![key, id, v.version]).map_err(&fail)?;
        }
        let mut insert = self
            .conn
            .prepare_cached(
                "INSERT INTO catalog_updates (key, valid_from, kb, title, classification, severity, released, \
                 superseded, expired, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )
            .map_err(&fail)?;
        for (key, row) in &v.rows {
            insert
                .execute(params![
                    key,
                    v.version,
                    row.kb,
                    row.title,
                    row.classification,
                    row.severity,
                    row.released,
                    row.superseded,
                    row.expired,
                    row.body
                ])
                .map_err(&fail)?;
        }
        self.conn
            .execute(
                "INSERT INTO catalog_versions (version, digest, created_at, update_count) VALUES (?1, ?2, ?3, ?4)",
                params![v.version, v.digest, v.created_at, v.update_count],
            )
            .map_err(&fail)?;
        Ok(())
    }
}

/// A batch's transaction, with the store's update keys already read.
struct BatchTx<'a> {
    tx: Tx<'a>,
    known: &'a mut UpdateKeys,
}

impl BatchWriter for BatchTx<'_> {
    fn client(&mut self, name: &str) -> Result<Option<BatchClient>> {
        self.tx
            .conn
            .prepare_cached(
                "SELECT key, last_sequence, scan_time, failure_time, token_generation FROM clients WHERE name = ?1",
            )
            .and_then(|mut s| {
                s.query_row([name], |r| {
                    Ok(BatchClient {
                        key: r.get(0)?,
                        last_sequence: r.get(1)?,
                        scan_time: r.get(2)?,
                        failure_time: r.get(3)?,
                        token_generation: r.get(4)?,
                    })
                })
            })
            .optional()
            .map_err(self.tx.fail())
    }

    fn update_keys(&mut self, ids: &[&str]) -> Result<Vec<Option<i64>>> {
        let mut keys: Vec<Option<i64>> = ids.iter().map(|id| self.known.get(*id).copied()).collect();
        let unknown: Vec<&str> = ids.iter().zip(&keys).filter(|(_, key)| key.is_none()).map(|(id, _)| *id).collect();
        if !unknown.is_empty() {
            let found = self.tx.keys_of(&unknown)?;
            for (id, key) in ids.iter().zip(keys.iter_mut()) {
                if key.is_none() {
                    *key = found.get(*id).copied();
                }
            }
            self.known.extend(found);
        }
        Ok(keys)
    }

    fn record_scan(&mut self, client: i64, states: &ScanStates, scan: &ScanRecorded<'_>) -> Result<()> {
        let fail = self.tx.fail();
        // A rescan mostly reports the updates the last one did: their rows are rewritten
        // in place, rows of updates it no longer reports deleted, new ones inserted (half
        // the b-tree work of deleting every row and inserting them again).
        let stored: Vec<i64> = self
            .tx
            .conn
            .prepare_cached("SELECT update_key FROM compliance WHERE client_key = ?1")
            .and_then(|mut s| s.query_map([client], |r| r.get(0))?.collect())
            .map_err(&fail)?;
        let conn = self.tx.conn;
        let gone: Vec<i64> =
            stored.iter().copied().filter(|k| states.binary_search_by_key(k, |&(key, _)| key).is_err()).collect();
        if !gone.is_empty() && gone.len() == stored.len() {
            // Nothing kept: one range delete of the client's rows.
            conn.prepare_cached("DELETE FROM compliance WHERE client_key = ?1")
                .and_then(|mut s| s.execute([client]))
                .map_err(&fail)?;
        } else if !gone.is_empty() {
            let mut delete = conn
                .prepare_cached("DELETE FROM compliance WHERE client_key = ?1 AND update_key = ?2")
                .map_err(&fail)?;
            for key in gone {
                delete.execute(params![client, key]).map_err(&fail)?;
            }
        }
        let packed: Vec<rusqlite::types::Value> = states
            .iter()
            .map(|&(key, (result, enforcement))| {
                rusqlite::types::Value::Integer(key << 16 | (result as i64) << 8 | enforcement as i64)
            })
            .collect();
        conn.prepare_cached(UPSERT_PACKED_STATES)
            .and_then(|mut s| s.execute(params![client, std::rc::Rc::new(packed), scan.time]))
            .map_err(&fail)?;
        self.tx
            .conn
            .prepare_cached(
                "UPDATE clients SET scan_time = ?2, scan_catalog_version = ?3, \
                 agent_version = COALESCE(?4, agent_version) WHERE key = ?1",
            )
            .and_then(|mut s| s.execute(params![client, scan.time, scan.catalog_version, scan.agent_version]))
            .map_err(&fail)?;
        Ok(())
    }

    fn record_failure(&mut self, client: i64, time: i64, catalog_version: i64, error: &str) -> Result<()> {
        self.tx
            .conn
            .prepare_cached(
                "UPDATE clients SET failure_time = ?2, failure_catalog_version = ?3, failure_error = ?4 WHERE key = ?1",
            )
            .and_then(|mut s| s.execute(params![client, time, catalog_version, error]))
            .map_err(self.tx.fail())?;
        Ok(())
    }

    fn record_enforcement(&mut self, client: i64, update: i64, state: u8, time: i64) -> Result<()> {
        self.tx
            .conn
            .prepare_cached(UPSERT_ENFORCEMENT)
            .and_then(|mut s| s.execute(params![client, update, state, time]))
            .map_err(self.tx.fail())?;
        Ok(())
    }

    fn finish(&mut self, client: i64, sequence: i64, now: i64) -> Result<()> {
        self.tx
            .conn
            .prepare_cached("UPDATE clients SET last_sequence = ?2, last_seen = ?3 WHERE key = ?1")
            .and_then(|mut s| s.execute(params![client, sequence, now]))
            .map_err(self.tx.fail())?;
        self.tx
            .conn
            .prepare_cached("INSERT INTO feed (client, at) SELECT name, ?2 FROM clients WHERE key = ?1")
            .and_then(|mut s| s.execute(params![client, now]))
            .map_err(self.tx.fail())?;
        Ok(())
    }
}

impl ReconcileWriter for Tx<'_> {
    fn stored_statuses(&mut self) -> Result<StoredStatuses> {
        let fail = self.fail();
        let mut stored = StoredStatuses::default();
        let mut stmt = self.conn.prepare("SELECT kind, namespace, name, status FROM resource_status").map_err(&fail)?;
        let mut rows = stmt.query([]).map_err(&fail)?;
        while let Some(r) = rows.next().map_err(&fail)? {
            stored.add(
                r.get(0).map_err(&fail)?,
                r.get(1).map_err(&fail)?,
                r.get(2).map_err(&fail)?,
                &r.get::<_, String>(3).map_err(&fail)?,
            );
        }
        Ok(stored)
    }

    fn write_reconcile(&mut self, w: &ReconcileWrite<'_>) -> Result<()> {
        let fail = self.fail();
        let run = |sql: &str, each: &mut dyn FnMut(&mut rusqlite::CachedStatement<'_>) -> rusqlite::Result<()>| {
            let mut stmt = self.conn.prepare_cached(sql)?;
            each(&mut stmt)
        };
        run(
            "INSERT INTO policy_docs (etag, body) VALUES (?1, ?2) ON CONFLICT (etag) DO UPDATE SET body = excluded.body",
            &mut |s| w.policies.iter().try_for_each(|(etag, body)| s.execute(params![etag, body]).map(drop)),
        )
        .map_err(&fail)?;
        run(
            "INSERT INTO client_policies (client, etag) VALUES (?1, ?2) \
             ON CONFLICT (client) DO UPDATE SET etag = excluded.etag",
            &mut |s| w.assignments.iter().try_for_each(|(client, etag)| s.execute(params![client, etag]).map(drop)),
        )
        .map_err(&fail)?;
        run(
            "INSERT INTO resource_status (kind, namespace, name, revision, catalog_version, status, updated_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (kind, namespace, name) DO UPDATE SET \
             revision = excluded.revision, catalog_version = excluded.catalog_version, \
             status = excluded.status, updated_at = excluded.updated_at",
            &mut |s| {
                w.statuses.iter().try_for_each(|((kind, namespace, name), status)| {
                    s.execute(params![kind, namespace, name, w.revision, w.catalog_version, status, w.time]).map(drop)
                })
            },
        )
        .map_err(&fail)?;
        run("DELETE FROM resource_status WHERE kind = ?1 AND namespace = ?2 AND name = ?3", &mut |s| {
            w.removed.iter().try_for_each(|(kind, namespace, name)| s.execute(params![kind, namespace, name]).map(drop))
        })
        .map_err(&fail)?;
        run(
            "INSERT INTO status_history (time, revision, catalog_version, kind, namespace, name, status) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            &mut |s| {
                w.history.iter().try_for_each(|(kind, namespace, name, status)| {
                    s.execute(params![w.time, w.revision, w.catalog_version, kind, namespace, name, status]).map(drop)
                })
            },
        )
        .map_err(&fail)?;
        self.conn
            .execute(
                "INSERT INTO reconciles (time, revision, catalog_version) VALUES (?1, ?2, ?3)",
                params![w.time, w.revision, w.catalog_version],
            )
            .map_err(&fail)?;
        Ok(())
    }
}
