//! Following the store's change feed. Sequence numbers only grow, but on PostgreSQL a
//! transaction holding a lower one can commit after one holding a higher one: a missing
//! number is waited for (a while) before it is passed, and rows already seen above it are
//! not applied twice. Applying a row reloads its client's whole current state from the
//! store, so a row applied late or twice still leaves the engine equal to the store.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::Result;
use crate::store::Store;

/// How long a missing sequence number is waited for before it is taken for a rolled-back
/// transaction (which never commits its number).
pub const GAP_WAIT: Duration = Duration::from_secs(10);
/// Most feed rows read per call.
const PAGE: usize = 20_000;

/// Where a follower is in the feed.
#[derive(Clone, Debug)]
pub struct Cursor {
    /// Every row up to here was applied (or given up as never committed).
    pub through: u64,
    /// Rows above `through` already applied.
    seen: BTreeSet<u64>,
    /// Since when `through + 1` has been missing while higher rows arrived.
    gap_since: Option<Instant>,
}

impl Cursor {
    pub fn at(through: u64) -> Self {
        Cursor { through, seen: BTreeSet::new(), gap_since: None }
    }

    /// The clients named by rows not applied yet (each name once, in feed order), and
    /// the cursor moved past them.
    pub fn next(&mut self, store: &dyn Store, now: Instant) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let mut named = std::collections::HashSet::new();
        loop {
            let rows = store.feed_since(self.through, PAGE)?;
            let full = rows.len() == PAGE;
            for row in rows {
                if self.seen.insert(row.seq) && named.insert(row.client.clone()) {
                    names.push(row.client);
                }
            }
            let before = self.through;
            self.advance(now);
            if !full || self.through == before {
                return Ok(names);
            }
        }
    }

    fn advance(&mut self, now: Instant) {
        loop {
            while self.seen.remove(&(self.through + 1)) {
                self.through += 1;
            }
            if self.seen.is_empty() {
                self.gap_since = None;
                return;
            }
            // A gap below rows already seen: wait for it, then pass it.
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < GAP_WAIT {
                return;
            }
            tracing::debug!(seq = self.through + 1, "change-feed row never committed; passing it");
            self.through += 1;
            self.gap_since = None;
        }
    }
}

/// Wake the site engine whenever a change-feed row commits on the PostgreSQL database at
/// `url` (`LISTEN`), from a thread of its own, until `stop` is set. A dropped connection
/// is reopened with backoff, and the engine is woken after each (re)connection: it reads
/// the feed from its cursor, so what committed while nobody listened is applied too.
pub fn listen_postgres(
    url: String,
    handle: super::SiteHandle,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    use postgres::fallible_iterator::FallibleIterator;
    use std::sync::atomic::Ordering;
    std::thread::spawn(move || {
        let mut backoff = Duration::from_millis(250);
        while !stop.load(Ordering::Relaxed) {
            let mut client = match crate::store::postgres::PostgresStore::listen(&url) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "cannot listen for the change feed; the engine polls meanwhile");
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(15));
                    continue;
                }
            };
            backoff = Duration::from_millis(250);
            handle.wake();
            while !stop.load(Ordering::Relaxed) {
                let next = {
                    let mut notifications = client.notifications();
                    let next = notifications.timeout_iter(Duration::from_millis(250)).next().map(|n| n.is_some());
                    // Several commits announced at once need one read of the feed.
                    while let Ok(Some(_)) = notifications.iter().next() {}
                    next
                };
                match next {
                    Ok(true) => handle.wake(),
                    Err(e) => {
                        tracing::warn!(error = %e, "the change-feed listener lost its connection; reconnecting");
                        break;
                    }
                    Ok(false) if client.is_closed() => break,
                    Ok(false) => {}
                }
            }
        }
    })
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_gap_holds_the_cursor_until_it_fills_or_times_out_and_no_row_counts_twice() {
        let mut c = Cursor::at(0);
        let t0 = Instant::now();
        for seq in [1, 2, 4, 5] {
            c.seen.insert(seq);
        }
        c.advance(t0);
        assert_eq!(c.through, 2, "3 is missing");
        assert!(!c.seen.insert(4), "4 stays seen: it is not applied again");
        c.seen.insert(3);
        c.advance(t0 + Duration::from_secs(1));
        assert_eq!(c.through, 5);
        c.seen.insert(7);
        c.advance(t0 + Duration::from_secs(2));
        assert_eq!(c.through, 5, "6 may still commit");
        c.advance(t0 + Duration::from_secs(2) + GAP_WAIT);
        assert_eq!(c.through, 7, "6 never committed: passed");
    }
}
