//! Group commit of state batches. A batch that arrives while the store is applying
//! others waits in a queue; when the store is free, every waiting batch (up to a bound)
//! is applied in one transaction ([`Store::apply_batches_checked`]), each in its own
//! savepoint, and each request is answered only after that transaction committed. One
//! commit then carries many batches, so what a commit costs (the pages shared by every
//! batch, the write-ahead log frames, an fsync on PostgreSQL) is paid once per group,
//! not once per batch. A lone batch is applied at once, as before: nothing waits for a
//! timer.

use std::sync::{Arc, Mutex};

use jiff::Timestamp;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::oneshot;

use super::{ApiError, SharedStore};
use crate::compliance::messages::{StateBatch, StateMessage};
use crate::store::{BatchOutcome, StoreError};

/// Most state messages and update reports one group carries (a larger batch is applied
/// alone): bounds how long one transaction holds the store, and so the latency of a
/// batch that arrives during it.
const MAX_GROUP_WEIGHT: usize = 64_000;

/// A batch waiting to be applied, and where its answer goes.
struct Job {
    batch: StateBatch,
    generation: Option<u64>,
    answer: oneshot::Sender<crate::Result<BatchOutcome>>,
}

#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// A blocking task is applying groups (and will take what is queued next).
    draining: bool,
}

/// The queue of batches waiting for the store, shared by every request.
#[derive(Clone)]
pub(super) struct GroupCommit {
    queue: Arc<Mutex<Queue>>,
    /// Transactions committed, and batches not yet answered (the server's metrics).
    commits: Counter,
    pending: Gauge,
}

impl GroupCommit {
    pub(super) fn new(commits: Counter, pending: Gauge) -> Self {
        GroupCommit { queue: Arc::default(), commits, pending }
    }

    /// Apply `batch` (as [`crate::store::Store::apply_batch_checked`] does) together with
    /// the batches waiting beside it; answers after the commit. Err: the request's task
    /// was lost (the store call panicked).
    pub(super) async fn apply(
        &self,
        store: &SharedStore,
        batch: StateBatch,
        generation: Option<u64>,
    ) -> Result<crate::Result<BatchOutcome>, ApiError> {
        let (answer, answered) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.jobs.push(Job { batch, generation, answer });
            !std::mem::replace(&mut queue.draining, true)
        };
        let _pending = Pending::count(&self.pending);
        if start {
            let (this, store) = (self.clone(), store.clone());
            tokio::task::spawn_blocking(move || this.drain(&store));
        }
        answered.await.map_err(|_| {
            tracing::error!("cannot apply the batch: the store call panicked");
            ApiError::internal("cannot apply the batch")
        })
    }

    /// Apply groups until the queue is empty.
    fn drain(&self, store: &SharedStore) {
        loop {
            let group = {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if queue.jobs.is_empty() {
                    queue.draining = false;
                    return;
                }
                take_group(&mut queue.jobs)
            };
            if apply_group(store, group) {
                self.commits.inc();
            }
        }
    }
}

/// A batch counted as pending until it is answered, or until its client went away.
struct Pending(Gauge);

impl Pending {
    fn count(gauge: &Gauge) -> Pending {
        gauge.inc();
        Pending(gauge.clone())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The oldest jobs whose weight stays within [`MAX_GROUP_WEIGHT`] (at least one).
fn take_group(jobs: &mut Vec<Job>) -> Vec<Job> {
    let mut weight = 0;
    let mut n = 0;
    for job in jobs.iter() {
        weight += weight_of(&job.batch);
        if n > 0 && weight > MAX_GROUP_WEIGHT {
            break;
        }
        n += 1;
    }
    let rest = jobs.split_off(n);
    std::mem::replace(jobs, rest)
}

/// What a batch costs to apply: its messages and the update reports they carry.
fn weight_of(batch: &StateBatch) -> usize {
    batch
        .messages
        .iter()
        .map(|m| match m {
            StateMessage::ScanCompleted { updates, .. } => 1 + updates.len(),
            _ => 1,
        })
        .sum()
}

/// One transaction for the group; every job gets its answer; true when it committed. A
/// panic in the store is caught, so the jobs queued behind it still get a drainer.
fn apply_group(store: &SharedStore, group: Vec<Job>) -> bool {
    let batches: Vec<(&StateBatch, Option<u64>)> = group.iter().map(|j| (&j.batch, j.generation)).collect();
    let applied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut store = store.lock().unwrap_or_else(|p| p.into_inner());
        let location = store.location();
        (store.apply_batches_checked(&batches, Timestamp::now()), location)
    }));
    drop(batches);
    match applied {
        Ok((Ok(answers), _)) => {
            for (job, answer) in group.into_iter().zip(answers) {
                let _ = job.answer.send(answer);
            }
            true
        }
        Ok((Err(e), location)) => {
            tracing::warn!(error = %e, batches = group.len(), "cannot commit the state batches; none was applied, the clients keep them and retry");
            let message = super::store_message(&e);
            for job in group {
                let failed = StoreError::Unavailable { message: message.clone(), source: None }.at(&location);
                let _ = job.answer.send(Err(failed));
            }
            false
        }
        // The jobs' senders are dropped: each request answers that the server failed.
        Err(_) => false,
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::compliance::messages::UpdateReport;
    use crate::compliance::{Enforcement, ScanResult};

    fn job(client: &str, reports: usize) -> Job {
        let updates = (0..reports)
            .map(|u| UpdateReport { id: format!("KB{u}"), result: ScanResult::Missing, enforcement: Enforcement::None })
            .collect();
        let messages = vec![StateMessage::ScanCompleted {
            time: Timestamp::UNIX_EPOCH,
            catalog_version: 1,
            agent_version: None,
            updates,
        }];
        let (answer, _) = oneshot::channel();
        Job { batch: StateBatch { client: client.into(), sequence: 1, messages }, generation: None, answer }
    }

    fn clients(jobs: &[Job]) -> Vec<&str> {
        jobs.iter().map(|j| j.batch.client.as_str()).collect()
    }

    #[test]
    fn a_group_takes_the_oldest_batches_within_its_weight_and_a_heavy_batch_goes_alone() {
        let mut jobs = vec![job("a", 30_000), job("b", 30_000), job("c", 30_000), job("d", 10)];
        let group = take_group(&mut jobs);
        assert_eq!(clients(&group), ["a", "b"], "2 × 30,001 fit in 64,000; a third does not");
        assert_eq!(clients(&jobs), ["c", "d"], "the rest wait, in order");
        assert_eq!(clients(&take_group(&mut jobs)), ["c", "d"]);
        assert!(jobs.is_empty());

        let mut jobs = vec![job("huge", 100_000), job("small", 1)];
        assert_eq!(clients(&take_group(&mut jobs)), ["huge"], "a batch heavier than a group still goes");
        assert_eq!(clients(&take_group(&mut jobs)), ["small"]);
    }
}
