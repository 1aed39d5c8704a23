//! The store: catalog versions, clients and their compliance, client policies, resource
//! status and its history — one trait, typed failures ([`StoreError`]), the decisions
//! once (`catalog`, `batch`, `reconcile`), and two backends holding only SQL: SQLite
//! (a file, the default) and PostgreSQL (a `postgres://` URL), same schema and behaviour.

mod batch;
mod catalog;
mod error;
pub mod postgres;
mod reconcile;
mod rows;
pub mod sqlite;

pub use error::StoreError;

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
    /// The token the batch came with was replaced, revoked or released since the
    /// management point checked it: nothing changed.
    TokenReplaced,
}

/// Who a bearer token belongs to: the client, and the generation of its token (bumped
/// at every change of the client's token, so a cached check can be confirmed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenOwner {
    pub client: String,
    pub generation: u64,
}

/// What a registration did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// The name was free (or the caller presented its current token): the new token holds.
    Enrolled,
    /// Another host holds the name: nothing changed.
    NameTaken,
    /// The operator revoked the name; it stays refused until released.
    Revoked { at: Timestamp },
}

/// Largest prefix of a rejected batch's body the store keeps (T1.U4 needs the error and
/// enough of the body to see what the client sent, not the whole of it).
pub const REJECTED_PREFIX_BYTES: usize = 4096;
/// Most rejected batches kept per client; older ones are dropped.
pub const REJECTED_PER_CLIENT: i64 = 20;
/// Most rejected batches kept in all; older ones are dropped.
pub const REJECTED_TOTAL: i64 = 5000;

/// The first `REJECTED_PREFIX_BYTES` of a rejected body, cut at a character boundary.
pub fn rejected_prefix(raw: &str) -> &str {
    if raw.len() <= REJECTED_PREFIX_BYTES {
        return raw;
    }
    let mut end = REJECTED_PREFIX_BYTES;
    while !raw.is_char_boundary(end) {
        end -= 1;
    }
    &raw[..end]
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
#[serde(rename_all = "camelCase")]
pub struct ReconcileRecord {
    pub time: Timestamp,
    /// Git revision applied (`main@sha1:<hex>`).
    pub revision: String,
    #[serde(alias = "catalog_version")]
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

/// One row of the change feed: `client` changed (a state batch applied, a registration,
/// new facts) in the transaction that wrote row `seq`. Sequence numbers only grow; on
/// PostgreSQL a lower one can commit after a higher one (concurrent transactions), which
/// the follower allows for (`site::feed`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub seq: u64,
    pub client: String,
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
    /// (client, sequence); any sequence number, 0 included, is applied once. Update ids
    /// unknown to the catalog make the whole batch fail with an error naming the client,
    /// sequence and id (nothing is applied).
    fn apply_batch(&mut self, batch: &StateBatch, now: Timestamp) -> Result<BatchOutcome> {
        self.apply_batch_checked(batch, None, now)
    }

    /// [`Store::apply_batch`], in the same transaction confirming that the client's token
    /// is still at `token_generation` (else [`BatchOutcome::TokenReplaced`], nothing applied).
    fn apply_batch_checked(
        &mut self,
        batch: &StateBatch,
        token_generation: Option<u64>,
        now: Timestamp,
    ) -> Result<BatchOutcome> {
        let mut answers = self.apply_batches_checked(&[(batch, token_generation)], now)?;
        answers.pop().expect("one answer per batch")
    }

    /// Group commit: several batches, each with the token generation it came with, in
    /// one transaction. Each is applied as [`Store::apply_batch_checked`] would, in its
    /// own savepoint, so a batch that fails (an unknown update, say) is rolled back alone
    /// and the others are kept. `Ok` holds one answer per batch, in order, and comes only
    /// after the commit; `Err` means the transaction failed and no batch was applied.
    /// Batches of one client are applied in the order given.
    fn apply_batches_checked(
        &mut self,
        batches: &[(&StateBatch, Option<u64>)],
        now: Timestamp,
    ) -> Result<Vec<Result<BatchOutcome>>>;

    fn record_rejected(&mut self, client: &str, raw: &str, error: &str, now: Timestamp) -> Result<()>;

    /// Every client with facts and compliance: the reconcile core's input.
    fn load_fleet(&self) -> Result<Fleet>;

    /// The named clients with facts and compliance, as [`Store::load_fleet`] reads them
    /// (names the store does not know are left out), in no particular order.
    fn load_clients(&self, names: &[String]) -> Result<Vec<crate::compliance::Client>>;

    /// The highest sequence number of the change feed (0: none yet).
    fn feed_head(&self) -> Result<u64>;

    /// Change-feed rows after sequence `after`, oldest first, at most `limit`.
    fn feed_since(&self, after: u64, limit: usize) -> Result<Vec<FeedEntry>>;

    /// Drop change-feed rows up to and including `through` (every follower is past
    /// them); returns how many went.
    fn prune_feed(&mut self, through: u64) -> Result<u64>;

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

    /// Register a client with the hash (sha256, hex) of the token it authenticates with.
    /// A name already holding a token is only re-registered by a caller presenting that
    /// token (`presented_sha256`); otherwise nothing changes and the answer is
    /// [`Enrollment::NameTaken`]. A revoked name stays refused until released.
    fn enroll_client(
        &mut self,
        client: &ClientInfo,
        token_sha256: &str,
        presented_sha256: Option<&str>,
        now: Timestamp,
    ) -> Result<Enrollment>;

    /// The client a token hash belongs to, with its token generation.
    fn client_for_token(&self, token_sha256: &str) -> Result<Option<TokenOwner>>;

    /// Replace a client's token `old_sha256` by `new_sha256`; false when `old_sha256` is
    /// no longer the client's token.
    fn rotate_token(&mut self, client: &str, old_sha256: &str, new_sha256: &str) -> Result<bool>;

    /// Revoke a client's token and keep its name from registering again until released;
    /// false when there is no such client.
    fn revoke_client(&mut self, client: &str, now: Timestamp) -> Result<bool>;

    /// Drop a client's token and revocation, so the name can register again (a
    /// reinstalled host); false when there is no such client.
    fn release_client(&mut self, client: &str) -> Result<bool>;

    /// A setting's value, if set.
    fn setting(&self, key: &str) -> Result<Option<String>>;

    /// The policy a client is assigned: its ETag and document.
    fn client_policy(&self, client: &str) -> Result<Option<(String, serde_json::Value)>>;

    /// A setting the reporting views read, e.g. `scan_ttl_seconds` (the default client
    /// settings' scan TTL, so `v_update_compliance` counts expired scans as Unknown).
    fn set_setting(&mut self, key: &str, value: &str) -> Result<()>;

    /// The recorded statuses of one resource (`kind`, `name`), oldest first: the last
    /// `limit` changes, each as a record of the reconcile that wrote it with that one status.
    fn status_history(&self, kind: &str, name: &str, limit: usize) -> Result<Vec<ReconcileRecord>>;
}

/// Open a store by URL: `postgres://…` / `postgresql://…`, or a SQLite file path
/// (`sqlite://path` or a plain path). The schema is created or migrated on open.
/// Open a store that must already exist: a SQLite file that is missing is a usage error
/// that says how to make one (commands that only read should never create an empty store).
pub fn open_existing(store: &str) -> Result<Box<dyn Store>> {
    let path = store.strip_prefix("sqlite://").unwrap_or(store);
    let is_file = !store.contains("://") || store.starts_with("sqlite://");
    if is_file && !std::path::Path::new(path).exists() {
        return Err(crate::Error::Usage(format!(
            "no store at {path}; run `patchops run --once` first, or pass --store"
        )));
    }
    open(store)
}

pub fn open(url: &str) -> Result<Box<dyn Store>> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(postgres::PostgresStore::open(url)?))
    } else {
        let path = url.strip_prefix("sqlite://").unwrap_or(url);
        Ok(Box::new(sqlite::SqliteStore::open(std::path::Path::new(path))?))
    }
}
