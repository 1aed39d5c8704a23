//! A management point following the site (`patchops serve`). The engine that owns the
//! site (`patchops run`, the controller) saves the desired state it derives from with its
//! publishes ([`Snapshot`]); a following management point starts from the store like the
//! owner does, follows the same change feed and derives the same policies and statuses in
//! memory. It answers policies at registration, tokens, the read API and the console from
//! there, and saves nothing: status, history and policy assignments are the owner's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use tracing::{error, info, warn};

use super::snapshot::Snapshot;
use super::{Site, SiteHandle, SiteOptions};
use crate::Result;
use crate::store::Store;

/// How often the store is asked whether the owner saved another desired state, or pruned
/// feed rows this follower has not read.
pub const SNAPSHOT_POLL: Duration = Duration::from_secs(1);
/// How often the change feed is read when nothing woke the follower (another management
/// point took the batch; a PostgreSQL notification lost with its connection).
const FEED_POLL: Duration = Duration::from_millis(250);

/// Follow the site of the store at `url` from a thread of its own until `stop` is set,
/// publishing what it derives through `handle`. On PostgreSQL it also listens for feed
/// notifications.
pub fn spawn(url: String, handle: SiteHandle, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::Builder::new()
        .name("site-follower".into())
        .spawn(move || {
            let listener = (url.starts_with("postgres://") || url.starts_with("postgresql://"))
                .then(|| super::feed::listen_postgres(url.clone(), handle.clone(), stop.clone()));
            follow(&url, &handle, &stop);
            if let Some(l) = listener {
                let _ = l.join();
            }
        })
        .expect("a thread can be started")
}

fn follow(url: &str, handle: &SiteHandle, stop: &AtomicBool) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(rt) => rt,
        Err(e) => {
            error!(error = %e, "cannot start the site follower's timer; this management point answers from the store");
            return;
        }
    };
    // Wait (at most `d`, less when woken); true when stopping.
    let wait = |d: Duration| {
        rt.block_on(handle.woken(d));
        stop.load(Ordering::Relaxed)
    };
    let Some((mut site, mut stamp)) = start(url, handle, &wait) else { return };
    handle.set_waiting(None);
    let mut next_check = Instant::now() + SNAPSHOT_POLL;
    loop {
        let now = Timestamp::now();
        if let Err(e) = site.follow(now) {
            warn!(error = %e, "cannot follow the store's change feed; retrying");
        }
        site.settle();
        if Instant::now() >= next_check {
            next_check = Instant::now() + SNAPSHOT_POLL;
            if let Err(e) = catch_up(&mut site, &mut stamp, now) {
                warn!(error = %e, "cannot read the site's desired state from the store; keeping the last one");
            }
        }
        if wait(FEED_POLL) {
            return;
        }
    }
}

/// Cold start once the owner has saved a desired state (the engine, and the stamp of what
/// it derives from); None when stopped first.
fn start(url: &str, handle: &SiteHandle, wait: &dyn Fn(Duration) -> bool) -> Option<(Site, String)> {
    let mut announced = None::<String>;
    let mut say = |message: String, loud: bool| {
        if announced.as_deref() != Some(message.as_str()) {
            if loud {
                error!("{message}");
            } else {
                info!("{message}");
            }
            handle.set_waiting(Some(message.clone()));
            announced = Some(message);
        }
    };
    let mut kept = None;
    loop {
        match try_start(url, handle, &mut kept) {
            Ok(Some(site)) => return Some(site),
            Ok(None) => say(
                "no site engine has published to this store yet: registered clients get their policy, and the read \
                 API its answers, once `patchops run` or the controller publishes"
                    .into(),
                false,
            ),
            Err(e) => say(format!("cannot start following the site: {e}; retrying"), true),
        }
        if wait(SNAPSHOT_POLL) {
            return None;
        }
    }
}

/// The engine, once the owner saved a desired state. The store connection is kept in
/// `kept` between tries (a registration wakes the follower; it must not dial each time).
fn try_start(url: &str, handle: &SiteHandle, kept: &mut Option<Box<dyn Store>>) -> Result<Option<(Site, String)>> {
    let store = match kept.take() {
        Some(s) => s,
        None => crate::store::open(url)?,
    };
    let prepared = (|| -> Result<Option<_>> {
        let Some((stamp, snapshot)) = Snapshot::load(store.as_ref())? else { return Ok(None) };
        let desired = snapshot.desired()?;
        let catalog = store.load_catalog_version(snapshot.catalog_version)?;
        Ok(Some((stamp, desired, catalog, snapshot.catalog_status)))
    })();
    let (stamp, desired, catalog, catalog_status) = match prepared {
        Ok(Some(p)) => p,
        other => {
            *kept = Some(store);
            return other.map(|_| None);
        }
    };
    let site =
        Site::start(handle.clone(), store, desired, catalog, catalog_status, Timestamp::now(), SiteOptions::default())?;
    Ok(Some((site, stamp)))
}

/// Take what the owner saved since: another desired state or catalog (re-derived, from
/// the owner's last statuses), or a pruned feed this follower had not read (reloaded).
fn catch_up(site: &mut Site, stamp: &mut String, now: Timestamp) -> Result<()> {
    if site.fell_behind()? {
        warn!("the change feed was pruned past what this management point had read; reloading the fleet");
        site.reload(now)?;
    }
    match Snapshot::stamp_in(site.store())? {
        Some(saved) if saved != *stamp => {}
        _ => return Ok(()),
    }
    let Some((saved, snapshot)) = Snapshot::load(site.store())? else { return Ok(()) };
    let desired = snapshot.desired()?;
    let held = site.handle().read(|s| (s.catalog.version == snapshot.catalog_version).then(|| (*s.catalog).clone()));
    let catalog = match held.flatten() {
        Some(c) => c,
        None => site.store().load_catalog_version(snapshot.catalog_version)?,
    };
    let last = site.store().last_reconcile()?;
    site.set_previous(last.as_ref());
    if site.set_desired(desired, catalog, snapshot.catalog_status, now) {
        info!(revision = %snapshot.revision, catalog_version = snapshot.catalog_version, "following the site's new desired state");
    }
    *stamp = saved;
    Ok(())
}
