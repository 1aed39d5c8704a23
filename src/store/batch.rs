//! Applying a state batch, decided once for both backends: who may send it, which
//! sequence numbers apply (each once, replays are duplicates), which scans are older
//! than the stored one, and which update ids are unknown (the whole batch fails).

use jiff::Timestamp;

use super::rows::{secs, without_nul};
use super::{BatchOutcome, StoreError};
use crate::Result;
use crate::compliance::messages::{StateBatch, StateMessage};

/// The client's row as a batch reads it.
pub struct BatchClient {
    pub key: i64,
    /// The last applied sequence number (none before the first batch).
    pub last_sequence: Option<i64>,
    pub scan_time: Option<i64>,
    pub failure_time: Option<i64>,
    pub token_generation: i64,
}

/// One update's state from a scan: (scan result, enforcement) as stored.
pub type ScanState = (u8, u8);

/// A scan's states by update key: sorted by key, each key once.
pub type ScanStates = [(i64, ScanState)];

/// The reads and writes of one batch, inside one transaction the backend opens and
/// commits only when [`apply`] answers [`BatchOutcome::Applied`].
pub trait BatchWriter {
    /// The client's row, locked against other batches of the same client.
    fn client(&mut self, name: &str) -> Result<Option<BatchClient>>;
    /// The stable key of each id, in order (None: the catalog does not know it).
    fn update_keys(&mut self, ids: &[&str]) -> Result<Vec<Option<i64>>>;
    /// Replace every compliance row of the client by `states` (by update key), all at
    /// `time`, and record the scan.
    fn record_scan(&mut self, client: i64, states: &ScanStates, scan: &ScanRecorded<'_>) -> Result<()>;
    /// Record a failed scan.
    fn record_failure(&mut self, client: i64, time: i64, catalog_version: i64, error: &str) -> Result<()>;
    /// One update's enforcement state, unless the stored row is newer.
    fn record_enforcement(&mut self, client: i64, update: i64, state: u8, time: i64) -> Result<()>;
    /// The batch is applied: its sequence number and when the client was last seen.
    fn finish(&mut self, client: i64, sequence: i64, now: i64) -> Result<()>;
}

/// A completed scan as recorded on the client.
pub struct ScanRecorded<'a> {
    pub time: i64,
    pub catalog_version: i64,
    pub agent_version: Option<&'a str>,
}

/// Apply a batch (see [`super::Store::apply_batch_checked`]). Errors name the client,
/// the sequence and the update; the caller then rolls the transaction back.
pub fn apply(
    w: &mut impl BatchWriter,
    location: &str,
    batch: &StateBatch,
    token_generation: Option<u64>,
    now: Timestamp,
) -> Result<BatchOutcome> {
    let refused = |e: StoreError| e.at(location);
    let sequence = i64::try_from(batch.sequence).map_err(|_| {
        refused(StoreError::SequenceTooLarge { client: batch.client.clone(), sequence: batch.sequence })
    })?;
    let Some(client) = w.client(&batch.client)? else {
        return Err(refused(StoreError::NotRegistered { client: batch.client.clone() }));
    };
    if token_generation.is_some_and(|g| g != client.token_generation as u64) {
        return Ok(BatchOutcome::TokenReplaced);
    }
    if client.last_sequence.is_some_and(|last| sequence <= last) {
        return Ok(BatchOutcome::Duplicate);
    }
    let unknown = |id: &str| {
        refused(StoreError::UnknownUpdate {
            client: batch.client.clone(),
            sequence: batch.sequence,
            id: id.to_string(),
        })
    };
    let (mut scan_time, mut failure_time) = (client.scan_time, client.failure_time);
    for message in &batch.messages {
        match message {
            StateMessage::ScanCompleted { time, catalog_version, agent_version, updates } => {
                let t = secs(*time);
                if scan_time.is_some_and(|s| t < s) {
                    continue; // out of order: a newer scan is already stored
                }
                let ids: Vec<&str> = updates.iter().map(|u| u.id.as_str()).collect();
                let keys = w.update_keys(&ids)?;
                // Reversed, so that after a stable sort the last report of an update
                // repeated in the scan comes first in its run and is the one kept.
                let mut states = Vec::with_capacity(updates.len());
                for (u, key) in updates.iter().zip(keys).rev() {
                    let key = key.ok_or_else(|| unknown(&u.id))?;
                    states.push((key, (u.result as u8, u.enforcement as u8)));
                }
                states.sort_by_key(|&(key, _)| key);
                states.dedup_by_key(|&mut (key, _)| key);
                let scan = ScanRecorded {
                    time: t,
                    catalog_version: *catalog_version as i64,
                    agent_version: agent_version.as_deref(),
                };
                w.record_scan(client.key, &states, &scan)?;
                scan_time = Some(t);
            }
            StateMessage::ScanFailed { time, catalog_version, error } => {
                let t = secs(*time);
                if failure_time.is_some_and(|f| t < f) {
                    continue; // an older failure than the one stored
                }
                w.record_failure(client.key, t, *catalog_version as i64, &without_nul(error))?;
                failure_time = Some(t);
            }
            StateMessage::Enforcement { time, update, state } => {
                let key = w.update_keys(&[update.as_str()])?[0].ok_or_else(|| unknown(update))?;
                w.record_enforcement(client.key, key, *state as u8, secs(*time))?;
            }
        }
    }
    w.finish(client.key, sequence, secs(now))?;
    Ok(BatchOutcome::Applied)
}
