//! The store: catalog versions, clients and their facts, per (client, update) compliance
//! state with sub-reason and time, client policies, resource status and its history.
//! One trait, two backends with the same schema and behaviour: an embedded SQLite file
//! (the default) and PostgreSQL (selected by a `postgres://` URL).

pub mod postgres;
pub mod sqlite;

use std::collections::{BTreeMap, HashMap};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::Result;
use crate::catalog::delta::CatalogDelta;
use crate::catalog::{Catalog, Update};
use crate::compliance::Fleet;
use crate::compliance::messages::StateBatch;

/// What saving a catalog did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogSaved {
    /// The current catalog version after the call.
    pub version: u64,
    /// False when the content equalled the current version's (no new version made).
    pub changed: bool,
}

/// One catalog version as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogVersionInfo {
    pub version: u64,
    pub digest: String,
    pub created_at: Timestamp,
    pub update_count: u64,
}

/// A client registering or refreshing its facts.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientInfo {
    pub name: String,
    pub facts: BTreeMap<String, String>,
    pub agent_version: Option<String>,
}

/// What applying a batch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BatchOutcome {
    Applied,
    /// The sequence number was at or below the last applied one: nothing changed.
    Duplicate,
}

/// Status of one resource after a reconcile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ResourceStatus {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The status object as the resource's `.status` (JSON).
    pub status: serde_json::Value,
}

/// One reconcile as recorded in the store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReconcileRecord {
    pub time: Timestamp,
    /// Git revision applied (`main@sha1:<hex>`).
    pub revision: String,
    pub catalog_version: u64,
    pub statuses: Vec<ResourceStatus>,
}

/// A client's policy, as served to the agent: a document shared by every client with
/// the same assignments, named by its ETag.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyAssignment {
    pub client: String,
    pub etag: String,
}

/// The store. Every write is one transaction: it happens whole or not at all.
pub trait Store: Send {
    /// Where the store is (file path or URL without password), for messages.
    fn location(&self) -> String;

    /// Save the merged catalog. A new version is created only when the content digest
    /// differs from the current version's; stable update keys are assigned to new ids.
    fn save_catalog(&mut self, updates: &[Update], now: Timestamp) -> Result<CatalogSaved>;

    /// The current catalog (version 0 and empty when none was saved), with stable keys
    /// and the version each update first appeared in.
    fn load_catalog(&self) -> Result<Catalog>;

    /// The catalog as it was at `version` (0: empty). An unknown version is an error
    /// that names the newest one.
    fn load_catalog_version(&self, version: u64) -> Result<Catalog>;

    /// What changed from catalog version `from` to `to`, read from the versioned rows
    /// (only changed rows are read, so a month of updates costs a month of rows).
    fn catalog_delta(&self, from: u64, to: u64) -> Result<CatalogDelta>;

    /// Every catalog version, oldest first.
    fn catalog_versions(&self) -> Result<Vec<CatalogVersionInfo>>;

    /// Register a client or update its facts and agent version.
    fn upsert_client(&mut self, client: &ClientInfo, now: Timestamp) -> Result<()>;

    /// Apply a batch of state messages in one transaction: idempotent by
    /// (client, sequence). Update ids unknown to the catalog make the whole batch fail
    /// with an error naming the client, sequence and id (nothing is applied).
    fn apply_batch(&mut self, batch: &StateBatch, now: Timestamp) -> Result<BatchOutcome>;

    /// Keep a state message that could not be processed (T1.U4): it stays visible.
    fn record_rejected(&mut self, client: &str, raw: &str, error: &str, now: Timestamp) -> Result<()>;

    /// Every client with facts and compliance: the reconcile core's input.
    fn load_fleet(&self) -> Result<Fleet>;

    /// Every client, with only its states for these update keys (`plan` reads just the
    /// updates a change touches). The default filters a whole load.
    fn load_fleet_for(&self, update_keys: &[u32]) -> Result<Fleet> {
        let wanted: std::collections::HashSet<u32> = update_keys.iter().copied().collect();
        let mut fleet = self.load_fleet()?;
        for c in &mut fleet.clients {
            c.compliance.states.retain(|s| wanted.contains(&s.key()));
        }
        Ok(fleet)
    }

    /// Persist a reconcile: the status of every resource (history rows only for
    /// resources whose status changed) and the policy assignments that changed.
    fn save_reconcile(
        &mut self,
        record: &ReconcileRecord,
        policies: &HashMap<String, serde_json::Value>,
        assignments: &[PolicyAssignment],
    ) -> Result<()>;

    /// The last saved reconcile, if any.
    fn last_reconcile(&self) -> Result<Option<ReconcileRecord>>;

    /// Register a client with the hash (sha256, hex) of the token it authenticates with;
    /// registering again replaces the token and refreshes the facts.
    fn enroll_client(&mut self, client: &ClientInfo, token_sha256: &str, now: Timestamp) -> Result<()>;

    /// The client a token hash belongs to.
    fn client_for_token(&self, token_sha256: &str) -> Result<Option<String>>;

    /// The policy a client is assigned: its ETag and document.
    fn client_policy(&self, client: &str) -> Result<Option<(String, serde_json::Value)>>;

    /// A setting the reporting views read, e.g. `scan_ttl_seconds` (the default client
    /// settings' scan TTL, so `v_update_compliance` counts expired scans as Unknown).
    fn set_setting(&mut self, key: &str, value: &str) -> Result<()>;
}

/// Open a store by URL: `postgres://…` / `postgresql://…`, or a SQLite file path
/// (`sqlite://path` or a plain path). The schema is created or migrated on open.
pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PostgresStore::open(url)?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(path))?))
    }
}
