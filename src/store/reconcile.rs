//! Saving a reconcile, decided once for both backends: which policy documents and
//! assignments are written (the last assignment of a client wins), which statuses are
//! stored, and which get a history row (only new, changed or removed ones).

use std::collections::{BTreeMap, HashMap};

use super::rows::{from_secs, secs};
use super::{PolicyAssignment, ReconcileRecord, ResourceStatus, StoreError};
use crate::Result;

/// The reads and writes of one reconcile save, inside one transaction the backend opens
/// and commits.
pub trait ReconcileWriter {
    /// Every stored resource status.
    fn stored_statuses(&mut self) -> Result<StoredStatuses>;
    /// Write what [`save`] decided.
    fn write_reconcile(&mut self, w: &ReconcileWrite<'_>) -> Result<()>;
}

/// What one reconcile writes.
pub struct ReconcileWrite<'a> {
    pub time: i64,
    pub revision: &'a str,
    pub catalog_version: i64,
    /// Policy documents by ETag (an existing one is replaced).
    pub policies: Vec<(&'a str, String)>,
    /// (client, ETag), one per client.
    pub assignments: Vec<(&'a str, &'a str)>,
    /// (kind, namespace, name) → status JSON, one per resource: the rows to upsert.
    pub statuses: Vec<((&'a str, &'a str, &'a str), String)>,
    /// Resources no longer in the record: their rows are deleted.
    pub removed: Vec<(String, String, String)>,
    /// (kind, namespace, name, status JSON) in order, `null` for removed resources.
    pub history: Vec<(String, String, String, String)>,
}

/// Persist a reconcile: every resource's status, history rows for the changed ones, the
/// policy documents and the assignments.
pub fn save(
    w: &mut impl ReconcileWriter,
    record: &ReconcileRecord,
    policies: &HashMap<String, serde_json::Value>,
    assignments: &[PolicyAssignment],
) -> Result<()> {
    let mut assigned: BTreeMap<&str, &str> = BTreeMap::new();
    for a in assignments {
        assigned.insert(&a.client, &a.etag);
    }
    let mut latest: BTreeMap<(&str, &str, &str), &ResourceStatus> = BTreeMap::new();
    for s in &record.statuses {
        latest.insert((&s.kind, &s.namespace, &s.name), s);
    }
    let changes = w.stored_statuses()?.changes(&record.statuses);
    w.write_reconcile(&ReconcileWrite {
        time: secs(record.time),
        revision: &record.revision,
        catalog_version: record.catalog_version as i64,
        policies: policies.iter().map(|(etag, body)| (etag.as_str(), body.to_string())).collect(),
        assignments: assigned.into_iter().collect(),
        statuses: latest.into_iter().map(|(key, s)| (key, s.status.to_string())).collect(),
        removed: changes.removed,
        history: changes.history,
    })
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

/// The last reconcile as read back: its row and the stored statuses (sorted).
pub fn build_record(
    time: i64,
    revision: String,
    catalog_version: i64,
    mut statuses: Vec<ResourceStatus>,
) -> Result<ReconcileRecord, StoreError> {
    statuses.sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    let time = from_secs(time).map_err(StoreError::Corrupt)?;
    Ok(ReconcileRecord { time, revision, catalog_version: catalog_version as u64, statuses })
}
