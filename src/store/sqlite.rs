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

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    BatchOutcome, CatalogSaved, CatalogVersionInfo, ClientInfo, Enrollment, PolicyAssignment, REJECTED_PER_CLIENT,
    REJECTED_TOTAL, ReconcileRecord, ResourceStatus, Store, TokenOwner, rejected_prefix,
};
use crate::catalog::delta::CatalogDelta;
use crate::catalog::{Catalog, Update};
use crate::compliance::messages::{StateBatch, StateMessage};
use crate::compliance::{Client, Fleet, PackedState};
use crate::{Error, Result};

use common::*;

/// Schema migrations, applied in order; each runs once, in its own transaction, and is
/// recorded in `schema_version`. Version 1 is the whole schema file.
const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("schema_sqlite.sql")),
    (2, include_str!("schema_sqlite_2.sql")),
    (3, include_str!("schema_sqlite_3.sql")),
];

/// How long a writer waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A store in one SQLite file.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
}

impl SqliteStore {
    /// Open (creating the file and its parent directory when missing) and create or
    /// migrate the schema. WAL journal, `synchronous=NORMAL`, foreign keys on.
    pub fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let cannot_open = |reason: String| Error::Store {
            location: location.clone(),
            message: format!("cannot open the store: {reason}; check the path or remove the file to start fresh"),
            source: None,
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
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")?;
            conn.query_row("SELECT COUNT(*) FROM sqlite_schema", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        };
        configure(&conn).map_err(|e| cannot_open(e.to_string()))?;
        let mut store = SqliteStore { conn, path: path.to_path_buf() };
        store.migrate()?;
        Ok(store)
    }

    fn migrate(&mut self) -> Result<()> {
        let location = self.location();
        let fail = |e: rusqlite::Error| Error::Store {
            location: location.clone(),
            message: format!("cannot create or migrate the schema: {e}"),
            source: Some(Box::new(e)),
        };
        let newest = MIGRATIONS.last().map(|m| m.0).unwrap_or(0);
        for &(version, sql) in MIGRATIONS {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
            tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL PRIMARY KEY, applied_at INTEGER NOT NULL)")
                .map_err(fail)?;
            let current: i64 =
                tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0)).map_err(fail)?;
            if current > newest {
                return Err(schema_too_new(&location, current, newest));
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

    fn err(&self, message: String, e: rusqlite::Error) -> Error {
        Error::store(self.location(), message, e)
    }

    fn fleet(&self, only: Option<&[u32]>) -> Result<Fleet> {
        self.read_fleet(only)
            .map_err(|e| sql_err(&self.location(), "cannot load the fleet", e))?
            .map(Fleet::new)
            .map_err(|message| Error::Store { location: self.location(), message, source: None })
    }

    /// Clients and their states; with `only`, just the states of those update keys.
    fn read_fleet(&self, only: Option<&[u32]>) -> rusqlite::Result<std::result::Result<Vec<Client>, String>> {
        // One read transaction: clients and their states from the same snapshot.
        let tx = self.conn.unchecked_transaction()?;
        let mut keys: Vec<i64> = Vec::new();
        let mut clients: Vec<Client> = Vec::new();
        {
            let mut stmt = tx.prepare(
                "SELECT key, name, facts, agent_version, scan_time, scan_catalog_version, failure_time, \
                 failure_catalog_version, failure_error, pending_messages, rejected_at FROM clients ORDER BY key",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let row = ClientRow {
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
                };
                match row.into_client() {
                    Ok(c) => clients.push(c),
                    Err(e) => return Ok(Err(e)),
                }
                keys.push(r.get(0)?);
            }
        }
        // Every state in one scan of the primary key (no sort): rows arrive grouped by
        // client in key order, so a merge with the clients (also in key order) maps
        // them; each client's states are copied once into an exactly sized vector.
        // Keys are integers: inlined, they let SQLite test each row against an in-memory
        // set without returning the rows a plan does not need.
        let filter = only.map(|keys| {
            let list: Vec<String> = keys.iter().map(u32::to_string).collect();
            format!("WHERE update_key IN ({})", if list.is_empty() { "NULL".to_string() } else { list.join(",") })
        });
        let mut stmt = tx.prepare(&format!(
            "SELECT client_key, update_key, scan_result, enforcement FROM compliance {} ORDER BY client_key, update_key",
            filter.unwrap_or_default()
        ))?;
        let mut rows = stmt.query([])?;
        let mut group = StateGrouper::new(keys);
        while let Some(r) = rows.next()? {
            let state = match pack(r.get(1)?, r.get(2)?, r.get(3)?) {
                Ok(s) => s,
                Err(e) => return Ok(Err(e)),
            };
            group.push(r.get(0)?, state, &mut clients);
        }
        group.finish(&mut clients);
        Ok(Ok(clients))
    }
}

const UPSERT_CLIENT: &str = "INSERT INTO clients (name, facts, agent_version, registered_at, last_seen) \
     VALUES (?1, ?2, ?3, ?4, ?4) \
     ON CONFLICT (name) DO UPDATE SET facts = excluded.facts, \
     agent_version = COALESCE(excluded.agent_version, clients.agent_version), last_seen = excluded.last_seen";

const UPSERT_STATE: &str = "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
     VALUES (?1, ?2, ?3, ?4, ?5) \
     ON CONFLICT (client_key, update_key) DO UPDATE SET scan_result = excluded.scan_result, \
     enforcement = excluded.enforcement, time = excluded.time";

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
        if let Some(refused) = enrollment_refused(&location, held, presented_sha256)? {
            return Ok(refused);
        }
        tx.execute(UPSERT_CLIENT, params![client.name, facts_json(&client.facts), client.agent_version, secs(now)])
            .map_err(fail)?;
        tx.execute(
            "UPDATE clients SET token_sha256 = ?2, token_generation = token_generation + 1 WHERE name = ?1",
            params![client.name, token_sha256],
        )
        .map_err(fail)?;
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
            let doc = parse_json(&body, "policy").map_err(|m| Error::Store {
                location: location.clone(),
                message: m,
                source: None,
            })?;
            Ok((etag, doc))
        })
        .transpose()
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn save_catalog(&mut self, updates: &[Update], now: Timestamp) -> Result<CatalogSaved> {
        let location = self.location();
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot save the catalog", e);
        let plan = CatalogRows::new(updates);
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        let current: Option<(i64, String)> = tx
            .query_row("SELECT version, digest FROM catalog_versions ORDER BY version DESC LIMIT 1", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
            .map_err(fail)?;
        let current_version = current.as_ref().map_or(0, |c| c.0);
        if let Some((version, digest)) = &current
            && *digest == plan.digest
        {
            return Ok(CatalogSaved { version: *version as u64, changed: false });
        }
        let version = current_version + 1;
        let mut existing: HashMap<String, CurrentRow> = HashMap::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT u.id, cu.key, cu.superseded, cu.body FROM catalog_updates cu \
                     JOIN updates u ON u.key = cu.key WHERE cu.valid_to IS NULL",
                )
                .map_err(fail)?;
            let mut rows = stmt.query([]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                existing.insert(
                    r.get(0).map_err(fail)?,
                    CurrentRow {
                        key: r.get(1).map_err(fail)?,
                        superseded: r.get(2).map_err(fail)?,
                        body: r.get(3).map_err(fail)?,
                    },
                );
            }
        }
        let mut next_key: i64 =
            tx.query_row("SELECT COALESCE(MAX(key), 0) FROM updates", [], |r| r.get(0)).map_err(fail)?;
        {
            let mut close = tx
                .prepare_cached("UPDATE catalog_updates SET valid_to = ?2 WHERE key = ?1 AND valid_to IS NULL")
                .map_err(fail)?;
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO catalog_updates (key, valid_from, kb, title, classification, severity, released, \
                     superseded, expired, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                )
                .map_err(fail)?;
            let mut find_key = tx.prepare_cached("SELECT key FROM updates WHERE id = ?1").map_err(fail)?;
            let mut new_key =
                tx.prepare_cached("INSERT INTO updates (key, id, first_version) VALUES (?1, ?2, ?3)").map_err(fail)?;
            for row in &plan.rows {
                let key = match existing.remove(&row.id) {
                    Some(cur) if cur.body == row.body && cur.superseded == row.superseded => {
                        continue;
                    }
                    Some(cur) => {
                        close.execute(params![cur.key, version]).map_err(fail)?;
                        cur.key
                    }
                    None => match find_key.query_row([&row.id], |r| r.get::<_, i64>(0)).optional().map_err(fail)? {
                        Some(key) => key,
                        None => {
                            next_key += 1;
                            new_key.execute(params![next_key, row.id, version]).map_err(fail)?;
                            next_key
                        }
                    },
                };
                insert
                    .execute(params![
                        key,
                        version,
                        row.kb,
                        row.title,
                        row.classification,
                        row.severity,
                        row.released,
                        row.superseded,
                        row.expired,
                        row.body
                    ])
                    .map_err(fail)?;
            }
            for removed in existing.values() {
                close.execute(params![removed.key, version]).map_err(fail)?;
            }
        }
        tx.execute(
            "INSERT INTO catalog_versions (version, digest, created_at, update_count) VALUES (?1, ?2, ?3, ?4)",
            params![version, plan.digest, secs(now), plan.rows.len() as i64],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(CatalogSaved { version: version as u64, changed: true })
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
        if version as i64 > newest {
            return Err(unknown_version(&location, version, newest));
        }
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
                loaded.add(id, r.get(1).map_err(fail)?, r.get(2).map_err(fail)?, &body).map_err(|m| Error::Store {
                    location: location.clone(),
                    message: m,
                    source: None,
                })?;
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
        for v in [from, to] {
            if v as i64 > newest {
                return Err(unknown_version(&location, v, newest));
            }
        }
        if from > to {
            return Err(Error::Store {
                location,
                message: format!("a delta runs from an older version to a newer one; {from} is newer than {to}"),
                source: None,
            });
        }
        let mut delta = CatalogDelta { from, to, ..Default::default() };
        {
            let mut stmt = tx.prepare(DELTA_UPSERTS_SQLITE).map_err(fail)?;
            let mut rows = stmt.query([from as i64, to as i64]).map_err(fail)?;
            while let Some(r) = rows.next().map_err(fail)? {
                let body: String = r.get(0).map_err(fail)?;
                delta.upserts.push(parse_update(&location, &body)?);
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
                created_at: from_secs(created).map_err(|m| Error::Store {
                    location: location.clone(),
                    message: m,
                    source: None,
                })?,
                update_count: count as u64,
            })
        })
        .collect()
    }

    fn upsert_client(&mut self, client: &ClientInfo, now: Timestamp) -> Result<()> {
        self.conn
            .prepare_cached(UPSERT_CLIENT)
            .and_then(|mut s| {
                s.execute(params![client.name, facts_json(&client.facts), client.agent_version, secs(now)])
            })
            .map_err(|e| self.err(format!("cannot save client {:?}: {e}", client.name), e))?;
        Ok(())
    }

    fn apply_batch_checked(
        &mut self,
        batch: &StateBatch,
        token_generation: Option<u64>,
        now: Timestamp,
    ) -> Result<BatchOutcome> {
        let location = self.location();
        let fail = |e: rusqlite::Error| {
            sql_err(&location, &format!("cannot apply batch {} of client {:?}", batch.sequence, batch.client), e)
        };
        let sequence = sequence_i64(&location, batch)?;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        type Row = (i64, Option<i64>, Option<i64>, Option<i64>, i64);
        let client: Option<Row> = tx
            .query_row(
                "SELECT key, last_sequence, scan_time, failure_time, token_generation FROM clients WHERE name = ?1",
                [&batch.client],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()
            .map_err(fail)?;
        let Some((client_key, last_sequence, mut scan_time, mut failure_time, generation)) = client else {
            return Err(not_registered(&location, &batch.client));
        };
        if token_generation.is_some_and(|g| g != generation as u64) {
            return Ok(BatchOutcome::TokenReplaced);
        }
        if last_sequence.is_some_and(|last| sequence <= last) {
            return Ok(BatchOutcome::Duplicate);
        }
        {
            let mut find_key = tx.prepare_cached("SELECT key FROM updates WHERE id = ?1").map_err(fail)?;
            let mut key_of = |id: &str| -> Result<i64> {
                find_key
                    .query_row([id], |r| r.get::<_, i64>(0))
                    .optional()
                    .map_err(fail)?
                    .ok_or_else(|| unknown_update(&location, batch, id))
            };
            for message in &batch.messages {
                match message {
                    StateMessage::ScanCompleted { time, catalog_version, agent_version, updates } => {
                        let t = secs(*time);
                        if scan_time.is_some_and(|s| t < s) {
                            continue; // out of order: a newer scan is already stored
                        }
                        let mut states = BTreeMap::new();
                        for u in updates {
                            states.insert(key_of(&u.id)?, (u.result as u8, u.enforcement as u8));
                        }
                        tx.execute("DELETE FROM compliance WHERE client_key = ?1", [client_key]).map_err(fail)?;
                        let mut insert = tx.prepare_cached(UPSERT_STATE).map_err(fail)?;
                        for (key, (scan, enforcement)) in states {
                            insert.execute(params![client_key, key, scan, enforcement, t]).map_err(fail)?;
                        }
                        tx.execute(
                            "UPDATE clients SET scan_time = ?2, scan_catalog_version = ?3, \
                             agent_version = COALESCE(?4, agent_version) WHERE key = ?1",
                            params![client_key, t, *catalog_version as i64, agent_version],
                        )
                        .map_err(fail)?;
                        scan_time = Some(t);
                    }
                    StateMessage::ScanFailed { time, catalog_version, error } => {
                        let t = secs(*time);
                        if failure_time.is_some_and(|f| t < f) {
                            continue;
                        }
                        tx.execute(
                            "UPDATE clients SET failure_time = ?2, failure_catalog_version = ?3, failure_error = ?4 \
                             WHERE key = ?1",
                            params![client_key, t, *catalog_version as i64, without_nul(error)],
                        )
                        .map_err(fail)?;
                        failure_time = Some(t);
                    }
                    StateMessage::Enforcement { time, update, state } => {
                        let key = key_of(update)?;
                        tx.prepare_cached(UPSERT_ENFORCEMENT)
                            .and_then(|mut s| s.execute(params![client_key, key, *state as u8, secs(*time)]))
                            .map_err(fail)?;
                    }
                }
            }
        }
        tx.execute(
            "UPDATE clients SET last_sequence = ?2, last_seen = ?3 WHERE key = ?1",
            params![client_key, sequence, secs(now)],
        )
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
        Ok(BatchOutcome::Applied)
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
        let fail = |e: rusqlite::Error| sql_err(&location, "cannot save the reconcile", e);
        let time = secs(record.time);
        let catalog_version = record.catalog_version as i64;
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(fail)?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO policy_docs (etag, body) VALUES (?1, ?2) ON CONFLICT (etag) DO UPDATE SET body = excluded.body",
                )
                .map_err(fail)?;
            for (etag, body) in policies {
                stmt.execute(params![etag, body.to_string()]).map_err(fail)?;
            }
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO client_policies (client, etag) VALUES (?1, ?2) ON CONFLICT (client) DO UPDATE SET etag = excluded.etag",
                )
                .map_err(fail)?;
            for a in assignments {
                stmt.execute(params![a.client, a.etag]).map_err(fail)?;
            }
            let mut stored = StoredStatuses::default();
            {
                let mut stmt = tx.prepare("SELECT kind, namespace, name, status FROM resource_status").map_err(fail)?;
                let mut rows = stmt.query([]).map_err(fail)?;
                while let Some(r) = rows.next().map_err(fail)? {
                    stored.add(
                        r.get(0).map_err(fail)?,
                        r.get(1).map_err(fail)?,
                        r.get(2).map_err(fail)?,
                        &r.get::<_, String>(3).map_err(fail)?,
                    );
                }
            }
            let changes = stored.changes(&record.statuses);
            let mut upsert = tx
                .prepare_cached(
                    "INSERT INTO resource_status (kind, namespace, name, revision, catalog_version, status, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (kind, namespace, name) DO UPDATE SET \
                     revision = excluded.revision, catalog_version = excluded.catalog_version, \
                     status = excluded.status, updated_at = excluded.updated_at",
                )
                .map_err(fail)?;
            for s in &record.statuses {
                upsert
                    .execute(params![
                        s.kind,
                        s.namespace,
                        s.name,
                        record.revision,
                        catalog_version,
                        s.status.to_string(),
                        time
                    ])
                    .map_err(fail)?;
            }
            let mut delete = tx
                .prepare_cached("DELETE FROM resource_status WHERE kind = ?1 AND namespace = ?2 AND name = ?3")
                .map_err(fail)?;
            for (kind, namespace, name) in &changes.removed {
                delete.execute(params![kind, namespace, name]).map_err(fail)?;
            }
            let mut history = tx
                .prepare_cached(
                    "INSERT INTO status_history (time, revision, catalog_version, kind, namespace, name, status) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )
                .map_err(fail)?;
            for (kind, namespace, name, status) in &changes.history {
                history
                    .execute(params![time, record.revision, catalog_version, kind, namespace, name, status])
                    .map_err(fail)?;
            }
        }
        tx.execute(
            "INSERT INTO reconciles (time, revision, catalog_version) VALUES (?1, ?2, ?3)",
            params![time, record.revision, catalog_version],
        )
        .map_err(fail)?;
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
                    status: parse_json(&text, "resource status").map_err(|m| Error::Store {
                        location: location.clone(),
                        message: m,
                        source: None,
                    })?,
                });
            }
        }
        Ok(Some(build_record(time, revision, catalog_version, statuses).map_err(|m| Error::Store {
            location: location.clone(),
            message: m,
            source: None,
        })?))
    }
}

const UPSERT_ENFORCEMENT: &str = "INSERT INTO compliance (client_key, update_key, scan_result, enforcement, time) \
     VALUES (?1, ?2, 0, ?3, ?4) \
     ON CONFLICT (client_key, update_key) DO UPDATE SET enforcement = excluded.enforcement, time = excluded.time \
     WHERE excluded.time >= compliance.time";

/// Pure helpers both backends share (the row shapes and rules are the same).
pub(super) mod common {
    use std::collections::{BTreeMap, HashMap};

    use jiff::Timestamp;

    use crate::Error;
    use crate::catalog::{Catalog, Update};
    use crate::compliance::messages::StateBatch;
    use crate::compliance::{Client, ClientCompliance, Enforcement, PackedState, ScanRecord, ScanResult};
    use crate::store::{Enrollment, ReconcileRecord, ResourceStatus};

    /// Unix seconds (the stored time resolution).
    pub fn secs(t: Timestamp) -> i64 {
        t.as_second()
    }

    pub fn from_secs(s: i64) -> std::result::Result<Timestamp, String> {
        Timestamp::from_second(s).map_err(|e| format!("stored time {s} is out of range: {e}"))
    }

    pub fn facts_json(facts: &BTreeMap<String, String>) -> String {
        serde_json::to_string(facts).expect("string maps serialize")
    }

    pub fn parse_json(text: &str, what: &str) -> std::result::Result<serde_json::Value, String> {
        serde_json::from_str(text).map_err(|e| format!("stored {what} is not valid JSON: {e}"))
    }

    /// PostgreSQL text cannot hold NUL; both backends replace it so they keep the same.
    pub fn without_nul(s: &str) -> std::borrow::Cow<'_, str> {
        if s.contains('\0') { s.replace('\0', "\u{FFFD}").into() } else { s.into() }
    }

    pub fn sequence_i64(location: &str, batch: &StateBatch) -> crate::Result<i64> {
        i64::try_from(batch.sequence).map_err(|_| Error::Store {
            location: location.to_string(),
            message: format!("client {:?} batch {}: the sequence number is too large", batch.client, batch.sequence),
            source: None,
        })
    }

    /// A store written by a newer patchops: refuse it rather than misread it.
    pub fn schema_too_new(location: &str, current: i64, newest: i64) -> Error {
        Error::Store {
            location: location.to_string(),
            message: format!(
                "the store's schema version {current} is newer than this patchops supports ({newest}); upgrade patchops"
            ),
            source: None,
        }
    }

    /// Whether a registration must be refused, from the name's row (token hash, revoked
    /// at) and the token hash the caller presented.
    pub fn enrollment_refused(
        location: &str,
        held: Option<(Option<String>, Option<i64>)>,
        presented_sha256: Option<&str>,
    ) -> crate::Result<Option<Enrollment>> {
        match held {
            Some((_, Some(at))) => {
                let at = from_secs(at).map_err(|m| Error::Store {
                    location: location.to_string(),
                    message: m,
                    source: None,
                })?;
                Ok(Some(Enrollment::Revoked { at }))
            }
            Some((Some(current), None)) if presented_sha256 != Some(current.as_str()) => {
                Ok(Some(Enrollment::NameTaken))
            }
            _ => Ok(None),
        }
    }

    /// Keep the newest rejected batches of one client ($1), at most $2.
    pub const PRUNE_REJECTED_OF_CLIENT: &str = "DELETE FROM rejected_messages WHERE client = $1 AND id <= \
         COALESCE((SELECT id FROM rejected_messages WHERE client = $1 ORDER BY id DESC LIMIT 1 OFFSET $2), -1)";
    /// Keep the newest rejected batches, at most $1 in all.
    pub const PRUNE_REJECTED: &str = "DELETE FROM rejected_messages WHERE id <= \
         COALESCE((SELECT id FROM rejected_messages ORDER BY id DESC LIMIT 1 OFFSET $1), -1)";

    pub fn not_registered(location: &str, client: &str) -> Error {
        Error::Store {
            location: location.to_string(),
            message: format!("client \"{client}\" is not registered; register it first"),
            source: None,
        }
    }

    pub fn unknown_update(location: &str, batch: &StateBatch, id: &str) -> Error {
        Error::Store {
            location: location.to_string(),
            message: format!(
                "client \"{}\" batch {}: update \"{id}\" is not in the catalog",
                batch.client, batch.sequence
            ),
            source: None,
        }
    }

    /// A stored compliance row as a packed state.
    pub fn pack(update_key: i64, scan: i64, enforcement: i64) -> std::result::Result<PackedState, String> {
        if !(0..=PackedState::MAX_KEY as i64).contains(&update_key) {
            return Err(format!("compliance row with update key {update_key} out of range"));
        }
        let scan = match scan {
            0 => ScanResult::Missing,
            1 => ScanResult::Installed,
            v => return Err(format!("compliance row with invalid scan_result {v}")),
        };
        let enforcement = u8::try_from(enforcement)
            .ok()
            .and_then(Enforcement::from_u8)
            .ok_or_else(|| format!("compliance row with invalid enforcement {enforcement}"))?;
        Ok(PackedState::new(update_key as u32, scan, enforcement))
    }

    /// One current catalog row as stored.
    pub struct CurrentRow {
        pub key: i64,
        pub superseded: bool,
        pub body: String,
    }

    /// One update as a catalog_updates row.
    pub struct CatalogRow {
        pub id: String,
        pub kb: Option<String>,
        pub title: String,
        pub classification: String,
        pub severity: String,
        pub released: String,
        pub superseded: bool,
        pub expired: bool,
        pub body: String,
    }

    /// The rows of a catalog about to be saved: sorted by id, deduplicated, with the
    /// digest and supersedence of the whole set. A row whose body or `superseded` flag
    /// differs from the current one gets a new row version.
    pub struct CatalogRows {
        pub digest: String,
        pub rows: Vec<CatalogRow>,
    }

    impl CatalogRows {
        pub fn new(updates: &[Update]) -> Self {
            let catalog = Catalog::new(0, updates.to_vec(), &HashMap::new());
            let rows = catalog
                .updates
                .iter()
                .enumerate()
                .map(|(i, u)| CatalogRow {
                    id: u.id.clone(),
                    kb: u.kb.clone(),
                    title: u.title.clone(),
                    classification: u.classification.clone(),
                    severity: format!("{:?}", u.severity),
                    released: u.released.to_string(),
                    superseded: catalog.is_superseded(i as u32),
                    expired: u.expired,
                    body: serde_json::to_string(u).expect("updates serialize"),
                })
                .collect();
            CatalogRows { digest: catalog.digest, rows }
        }
    }

    /// The current catalog rows as read back.
    #[derive(Default)]
    pub struct LoadedCatalog {
        updates: Vec<Update>,
        since: HashMap<String, u64>,
        keys: HashMap<String, u32>,
    }

    impl LoadedCatalog {
        pub fn add(&mut self, id: String, key: i64, first_version: i64, body: &str) -> std::result::Result<(), String> {
            let update: Update = serde_json::from_str(body)
                .map_err(|e| format!("stored catalog update {id:?} cannot be read: {e}; save the catalog again"))?;
            self.since.insert(id.clone(), first_version as u64);
            self.keys.insert(id, key as u32);
            self.updates.push(update);
            Ok(())
        }

        pub fn into_catalog(self, version: i64) -> Catalog {
            let mut catalog = Catalog::new(version as u64, self.updates, &self.since);
            catalog.assign_keys(&self.keys);
            catalog
        }
    }

    /// A clients row as read back.
    pub struct ClientRow {
        pub name: String,
        pub facts: String,
        pub agent_version: Option<String>,
        pub scan_time: Option<i64>,
        pub scan_catalog_version: Option<i64>,
        pub failure_time: Option<i64>,
        pub failure_catalog_version: Option<i64>,
        pub failure_error: Option<String>,
        pub pending_messages: i64,
        pub rejected_at: Option<i64>,
    }

    impl ClientRow {
        pub fn into_client(self) -> std::result::Result<Client, String> {
            let facts: BTreeMap<String, String> = serde_json::from_str(&self.facts)
                .map_err(|e| format!("stored facts of client {:?} cannot be read: {e}", self.name))?;
            let last_scan = match self.scan_time {
                Some(t) => Some(ScanRecord {
                    time: from_secs(t)?,
                    catalog_version: self.scan_catalog_version.unwrap_or(0) as u64,
                    error: None,
                }),
                None => None,
            };
            let last_failure = match self.failure_time {
                Some(t) => Some(ScanRecord {
                    time: from_secs(t)?,
                    catalog_version: self.failure_catalog_version.unwrap_or(0) as u64,
                    error: Some(self.failure_error.unwrap_or_default()),
                }),
                None => None,
            };
            Ok(Client {
                name: self.name,
                facts,
                compliance: ClientCompliance {
                    agent_version: self.agent_version,
                    last_scan,
                    last_failure,
                    pending_messages: self.pending_messages.clamp(0, u32::MAX as i64) as u32,
                    rejected_at: self.rejected_at.map(from_secs).transpose()?,
                    states: Vec::new(),
                },
            })
        }
    }

    /// Distributes compliance rows, read in (client key, update key) order, to clients
    /// held in client key order. States of one client are gathered in a scratch vector
    /// and copied once into an exactly sized one: no per-row allocation, ~4 bytes a
    /// state.
    pub struct StateGrouper {
        keys: Vec<i64>,
        next: usize,
        current: Option<usize>,
        current_key: i64,
        scratch: Vec<PackedState>,
    }

    impl StateGrouper {
        pub fn new(keys: Vec<i64>) -> Self {
            StateGrouper { keys, next: 0, current: None, current_key: i64::MIN, scratch: Vec::with_capacity(1024) }
        }

        #[inline]
        pub fn push(&mut self, client_key: i64, state: PackedState, clients: &mut [Client]) {
            if client_key != self.current_key {
                self.flush(clients);
                self.current_key = client_key;
                while self.next < self.keys.len() && self.keys[self.next] < client_key {
                    self.next += 1;
                }
                self.current = (self.next < self.keys.len() && self.keys[self.next] == client_key).then_some(self.next);
            }
            if self.current.is_some() {
                self.scratch.push(state);
            }
        }

        fn flush(&mut self, clients: &mut [Client]) {
            if let Some(i) = self.current.take() {
                clients[i].compliance.states = self.scratch.as_slice().to_vec();
            }
            self.scratch.clear();
        }

        pub fn finish(mut self, clients: &mut [Client]) {
            self.flush(clients);
        }
    }

    /// Resource statuses as stored, to find which changed.
    #[derive(Default)]
    pub struct StoredStatuses {
        by_key: HashMap<(String, String, String), Option<serde_json::Value>>,
    }

    /// What a reconcile changes in resource_status.
    pub struct StatusChanges {
        /// (kind, namespace, name, status JSON) for every new or changed status, and
        /// `null` for every resource no longer in the record.
        pub history: Vec<(String, String, String, String)>,
        /// Resources no longer in the record: their rows are deleted.
        pub removed: Vec<(String, String, String)>,
    }

    impl StoredStatuses {
        /// A stored status; one that is not valid JSON counts as changed.
        pub fn add(&mut self, kind: String, namespace: String, name: String, status: &str) {
            self.by_key.insert((kind, namespace, name), serde_json::from_str(status).ok());
        }

        pub fn changes(mut self, statuses: &[ResourceStatus]) -> StatusChanges {
            let mut history = Vec::new();
            for s in statuses {
                let key = (s.kind.clone(), s.namespace.clone(), s.name.clone());
                let unchanged = matches!(self.by_key.remove(&key), Some(Some(v)) if v == s.status);
                if !unchanged {
                    history.push((key.0, key.1, key.2, s.status.to_string()));
                }
            }
            let mut removed: Vec<_> = self.by_key.into_keys().collect();
            removed.sort();
            history.extend(removed.iter().map(|(k, ns, n)| (k.clone(), ns.clone(), n.clone(), "null".to_string())));
            StatusChanges { history, removed }
        }
    }

    pub fn build_record(
        time: i64,
        revision: String,
        catalog_version: i64,
        mut statuses: Vec<ResourceStatus>,
    ) -> std::result::Result<ReconcileRecord, String> {
        statuses.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
        Ok(ReconcileRecord { time: from_secs(time)?, revision, catalog_version: catalog_version as u64, statuses })
    }
}

/// Rows valid at `to` that started after `from`: new or changed updates.
const DELTA_UPSERTS_SQLITE: &str = "SELECT cu.body FROM catalog_updates cu \
     WHERE cu.valid_from > ?1 AND cu.valid_from <= ?2 AND (cu.valid_to IS NULL OR cu.valid_to > ?2)";
/// Ids valid at `from` with no row valid at `to`.
const DELTA_REMOVED_SQLITE: &str = "SELECT u.id FROM catalog_updates cu JOIN updates u ON u.key = cu.key \
     WHERE cu.valid_from <= ?1 AND cu.valid_to IS NOT NULL AND cu.valid_to > ?1 AND cu.valid_to <= ?2 \
     AND NOT EXISTS (SELECT 1 FROM catalog_updates c2 WHERE c2.key = cu.key AND c2.valid_from <= ?2 \
     AND (c2.valid_to IS NULL OR c2.valid_to > ?2))";

fn unknown_version(location: &str, version: u64, newest: i64) -> Error {
    Error::Store {
        location: location.to_string(),
        message: format!("catalog version {version} does not exist; the newest is {newest}"),
        source: None,
    }
}

fn parse_update(location: &str, body: &str) -> Result<crate::catalog::Update> {
    serde_json::from_str(body).map_err(|e| Error::Store {
        location: location.to_string(),
        message: format!("a stored update does not parse ({e}); the store was written by another version"),
        source: None,
    })
}
