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

/// Distributes compliance rows to clients held in client key order, whatever order the
/// rows come in (one part of a parallel heap scan, or an ordered read). The rows of one
/// client that come together are a run: gathered in a scratch vector and copied once
/// into an exactly sized one, so there is no per-row allocation and a state costs ~4
/// bytes. A client whose rows came in several runs or parts is joined, and sorted by
/// update key, in [`StateRuns::finish`].
pub struct StateRuns<'k> {
    keys: &'k [i64],
    states: Vec<Vec<PackedState>>,
    current: Option<usize>,
    current_key: i64,
    scratch: Vec<PackedState>,
}

impl<'k> StateRuns<'k> {
    /// Runs for the clients whose store keys are `keys` (ascending).
    pub fn new(keys: &'k [i64]) -> Self {
        StateRuns {
            keys,
            states: vec![Vec::new(); keys.len()],
            current: None,
            current_key: i64::MIN,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// One row; a client key not in `keys` (a client the read did not ask for) is skipped.
    #[inline]
    pub fn push(&mut self, client_key: i64, state: PackedState) {
        if client_key != self.current_key {
            self.flush();
            self.current_key = client_key;
            self.current = self.keys.binary_search(&client_key).ok();
        }
        if self.current.is_some() {
            self.scratch.push(state);
        }
    }

    fn flush(&mut self) {
        if let Some(i) = self.current.take() {
            let held = &mut self.states[i];
            if held.is_empty() {
                *held = self.scratch.as_slice().to_vec();
            } else {
                held.reserve_exact(self.scratch.len());
                held.extend_from_slice(&self.scratch);
            }
        }
        self.current_key = i64::MIN;
        self.scratch.clear();
    }

    /// Every part's runs into `clients` (in the same order as the keys), each client's
    /// states in update key order.
    pub fn finish(parts: Vec<StateRuns<'_>>, clients: &mut [Client]) {
        let mut parts: Vec<Vec<Vec<PackedState>>> = parts
            .into_iter()
            .map(|mut p| {
                p.flush();
                p.states
            })
            .collect();
        for (i, client) in clients.iter_mut().enumerate() {
            let mut states = Vec::new();
            for part in &mut parts {
                let run = std::mem::take(&mut part[i]);
                if states.is_empty() {
                    states = run;
                } else if !run.is_empty() {
                    states.reserve_exact(run.len());
                    states.extend_from_slice(&run);
                }
            }
            if !states.is_sorted_by_key(|s| s.key()) {
                states.sort_unstable_by_key(|s| s.key());
            }
            client.compliance.states = states;
        }
    }

    /// [`StateRuns::finish`] of this one part.
    pub fn into_clients(self, clients: &mut [Client]) {
        StateRuns::finish(vec![self], clients);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compliance::ScanResult;

    fn client(name: &str) -> Client {
        ClientRow {
            name: name.into(),
            facts: "{}".into(),
            agent_version: None,
            scan_time: None,
            scan_catalog_version: None,
            failure_time: None,
            failure_catalog_version: None,
            failure_error: None,
            pending_messages: 0,
            rejected_at: None,
        }
        .into_client()
        .expect("a valid row")
    }

    fn state(key: u32) -> PackedState {
        PackedState::new(key, ScanResult::Missing, Enforcement::None)
    }

    fn keys_of(c: &Client) -> Vec<u32> {
        c.compliance.states.iter().map(|s| s.key()).collect()
    }

    #[test]
    fn rows_in_any_order_and_in_several_parts_end_up_with_their_client_in_update_key_order() {
        let keys = [3i64, 7, 9];
        let mut clients = vec![client("a"), client("b"), client("c")];
        let mut first = StateRuns::new(&keys);
        // Client 7 in two runs of one part, and again in the second part; an unknown client
        // key (5) between them is skipped; client 3 in order in one run.
        for (k, u) in [(7, 20), (7, 10), (5, 1), (3, 1), (3, 2), (7, 5)] {
            first.push(k, state(u));
        }
        let mut second = StateRuns::new(&keys);
        for (k, u) in [(7, 15), (5, 2)] {
            second.push(k, state(u));
        }
        StateRuns::finish(vec![first, second], &mut clients);
        assert_eq!(keys_of(&clients[0]), vec![1, 2]);
        assert_eq!(keys_of(&clients[1]), vec![5, 10, 15, 20]);
        assert!(keys_of(&clients[2]).is_empty(), "client 9 had no rows");
        // Sized exactly: a run is copied once, a joined client reserves what it adds.
        assert_eq!(clients[0].compliance.states.capacity(), 2);
        assert_eq!(clients[1].compliance.states.capacity(), 4);
    }
}
