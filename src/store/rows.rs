//! Row shapes and conversions both backends share: times as unix seconds, facts as
//! JSON, compliance rows packed into states, client rows into clients, and the grouping
//! of streamed compliance rows by client. Pure code: no SQL, no connection.

use std::collections::BTreeMap;

use jiff::Timestamp;

use super::{Enrollment, StoreError};
use crate::compliance::{Client, ClientCompliance, Enforcement, PackedState, ScanRecord, ScanResult};

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

/// Whether a registration must be refused, from the name's row (token hash, revoked
/// at) and the token hash the caller presented.
pub fn enrollment_refused(
    held: Option<(Option<String>, Option<i64>)>,
    presented_sha256: Option<&str>,
) -> Result<Option<Enrollment>, StoreError> {
    match held {
        Some((_, Some(at))) => Ok(Some(Enrollment::Revoked { at: from_secs(at).map_err(StoreError::Corrupt)? })),
        Some((Some(current), None)) if presented_sha256 != Some(current.as_str()) => Ok(Some(Enrollment::NameTaken)),
        _ => Ok(None),
    }
}

/// Keep the newest rejected batches of one client ($1), at most $2.
pub const PRUNE_REJECTED_OF_CLIENT: &str = "DELETE FROM rejected_messages WHERE client = $1 AND id <= \
     COALESCE((SELECT id FROM rejected_messages WHERE client = $1 ORDER BY id DESC LIMIT 1 OFFSET $2), -1)";
/// Keep the newest rejected batches, at most $1 in all.
pub const PRUNE_REJECTED: &str = "DELETE FROM rejected_messages WHERE id <= \
     COALESCE((SELECT id FROM rejected_messages ORDER BY id DESC LIMIT 1 OFFSET $1), -1)";

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
