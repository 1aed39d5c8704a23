//! Catalog synchronization (seed step 1): fetch every `UpdateCatalog` source, import it
//! in its format, apply its product and classification filters, merge the sources and
//! save the result as a new catalog version — only when the content changed. All or
//! nothing: if any source fails, the current version stays and nothing is written.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::time::Duration;

use jiff::Timestamp;
use tracing::{info, warn};

use super::source::{Fetched, Fetcher};
use super::{Catalog, Update, debian, msrc_cvrf, native, osv, rpm_updateinfo};
use crate::desired::DesiredState;
use crate::git::GitSource;
use crate::resources::{
    CatalogFormat, Condition, DEFAULT_MAX_SHRINK_PERCENT, UpdateCatalog, UpdateCatalogSpec, UpdateCatalogStatus,
};
use crate::store::Store;
use crate::{Error, Result};

/// Every fetched source goes through the one bounded decompression.
pub use super::compression::decompress;

/// Import one fetched source in its format. `previous` is the current catalog: updates
/// whose source carries no date (a `Packages` index) keep the date they were first seen.
pub fn import(spec: &UpdateCatalogSpec, fetched: &Fetched, previous: &Catalog, now: Timestamp) -> Result<Vec<Update>> {
    let name = fetched.name.as_str();
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let updates = match spec.format {
        CatalogFormat::Native => {
            let bytes = decompress(name, &fetched.bytes)?;
            let text = std::str::from_utf8(&bytes).map_err(|e| Error::Catalog {
                source_name: name.into(),
                message: format!("not UTF-8 text at byte {}", e.valid_up_to()),
            })?;
            native::parse(name, text).map_err(|p| Error::Catalog {
                source_name: name.into(),
                message: format!("\n{}", crate::desired::render_problems(&p)),
            })?
        }
        CatalogFormat::MsrcCvrf => msrc_cvrf::parse(name, &decompress(name, &fetched.bytes)?)?,
        CatalogFormat::DebianPackages => {
            let options =
                debian::PackagesOptions { product: spec.product.clone(), architectures: vec![], released: Some(today) };
            let mut updates = debian::parse_packages(name, &decompress(name, &fetched.bytes)?, &options)?;
            for u in &mut updates {
                if let Some(i) = previous.index_of(&u.id) {
                    u.released = previous.updates[i as usize].released;
                }
            }
            updates
        }
        CatalogFormat::DebianDsa => {
            debian::parse_dsa(name, &decompress(name, &fetched.bytes)?, &debian::DsaOptions::default())?
        }
        CatalogFormat::Osv => osv::parse(name, &fetched.bytes, &osv::OsvOptions::default())?,
        CatalogFormat::RpmUpdateinfo => rpm_updateinfo::parse(name, &fetched.bytes)?,
    };
    Ok(filter(spec, updates))
}

/// Fetch a source: an `rpm-updateinfo` source may be a repository, read through its
/// `repodata/repomd.xml`.
pub fn fetch(fetcher: &Fetcher, spec: &UpdateCatalogSpec, git: Option<(&GitSource, &str)>) -> Result<Fetched> {
    match spec.format {
        CatalogFormat::RpmUpdateinfo => rpm_updateinfo::fetch(fetcher, &spec.source, git),
        _ => fetcher.fetch(&spec.source, git),
    }
}

/// The SUP-style product and classification filters of a catalog.
pub fn filter(spec: &UpdateCatalogSpec, updates: Vec<Update>) -> Vec<Update> {
    let any = |wanted: &[String], v: &str| wanted.is_empty() || wanted.iter().any(|w| w.eq_ignore_ascii_case(v));
    updates
        .into_iter()
        .filter(|u| {
            (spec.products.is_empty() || u.products.iter().any(|p| any(&spec.products, p)))
                && any(&spec.classifications, &u.classification)
        })
        .collect()
}

/// Merge the updates of several sources: one update per id; when several sources carry
/// the same id, [`Update::merge`] keeps what each says, whatever the order of the sources.
pub fn merge(sources: Vec<Vec<Update>>) -> Vec<Update> {
    let mut by_id: BTreeMap<String, Update> = BTreeMap::new();
    let mut merged = 0usize;
    for updates in sources {
        for u in updates {
            match by_id.remove(&u.id) {
                Some(existing) => {
                    merged += 1;
                    by_id.insert(u.id.clone(), Update::merge(existing, u));
                }
                None => {
                    by_id.insert(u.id.clone(), u);
                }
            }
        }
    }
    if merged > 0 {
        info!(merged, "updates listed by several sources were merged (products, CVEs and supersedence combined)");
    }
    by_id.into_values().collect()
}

/// Why a sync (or an import into a store) that would shrink a source is refused: it would
/// drop every update, or more than `max_percent` of them. None: allowed.
pub fn shrink_refused(before: u64, after: u64, max_percent: u8) -> Option<String> {
    if before == 0 || after >= before {
        return None;
    }
    let lost = before - after;
    let percent = lost * 100 / before;
    if after == 0 {
        Some(format!("it would go from {before} updates to none (an empty or truncated download?)"))
    } else if percent > max_percent as u64 {
        Some(format!(
            "it would go from {before} to {after} updates, losing {percent}% (more than the {max_percent}% allowed)"
        ))
    } else {
        None
    }
}

/// The store setting that remembers how many updates a source gave at its last sync.
fn count_key(name: &str) -> String {
    format!("catalog_source_updates/{name}")
}

/// What a sync did, per source and overall.
#[derive(Debug)]
pub struct SyncOutcome {
    /// The current catalog after the sync (the previous one when a source failed).
    pub catalog: Catalog,
    /// A new version was saved.
    pub changed: bool,
    /// Status of every UpdateCatalog, by name.
    pub statuses: BTreeMap<String, UpdateCatalogStatus>,
    /// Names of the sources that failed.
    pub failed: Vec<String>,
}

/// Keeps each source's last import, so a source whose interval has not elapsed is not
/// fetched again (path sources, which follow the git revision, are always read).
pub struct Syncer {
    pub fetcher: Fetcher,
    last: HashMap<String, (Timestamp, Vec<Update>, UpdateCatalogSpec)>,
    /// Accept syncs that shrink a source beyond its limit (`catalog sync --allow-shrink`).
    pub allow_shrink: bool,
}

impl Syncer {
    pub fn new(cache_dir: &std::path::Path) -> Self {
        Self::with_fetcher(Fetcher::new(cache_dir, Duration::from_secs(60)))
    }

    pub fn with_fetcher(fetcher: Fetcher) -> Self {
        Syncer { fetcher, last: HashMap::new(), allow_shrink: false }
    }

    /// Sync the catalogs of `desired`. `force`: fetch every source now. `git`: the
    /// desired-state repository and commit, for `path` sources.
    /// Whether a sync now would fetch anything: a catalog due by its interval, changed,
    /// new or gone, or read from a repository path (read every time).
    pub fn due(&self, desired: &DesiredState, now: Timestamp) -> bool {
        desired.catalogs.iter().any(|(name, c)| self.is_due(name, c, now))
            || self.last.keys().any(|name| !desired.catalogs.contains_key(name))
    }

    fn is_due(&self, name: &str, c: &crate::resources::UpdateCatalog, now: Timestamp) -> bool {
        c.spec.source.path.is_some()
            || match self.last.get(name) {
                Some((at, _, spec)) => spec != &c.spec || now.duration_since(*at) >= c.spec.sync_interval.signed(),
                None => true,
            }
    }

    pub fn sync(
        &mut self,
        store: &mut dyn Store,
        desired: &DesiredState,
        git: Option<(&GitSource, &str)>,
        now: Timestamp,
        force: bool,
    ) -> Result<SyncOutcome> {
        // A catalog no longer declared is not synced again, nor waited for.
        self.last.retain(|name, _| desired.catalogs.contains_key(name));
        let previous = store.load_catalog()?;
        let progress = std::io::stderr().is_terminal();
        let mut statuses = BTreeMap::new();
        let mut imported = Vec::new();
        let mut failed = Vec::new();
        for (name, c) in &desired.catalogs {
            let due = force || self.is_due(name, c, now);
            if !due {
                let (at, updates, _) = &self.last[name];
                statuses.insert(name.clone(), status(updates, *at, None));
                imported.push(updates.clone());
                continue;
            }
            let bar = progress.then(|| spinner(name));
            let result = fetch(&self.fetcher, &c.spec, git).and_then(|f| import(&c.spec, &f, &previous, now));
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            // An import that would wipe or halve the source is refused like a failed fetch.
            let (result, reason) = match result {
                Ok(updates) => match self.check_shrink(&*store, name, &c.spec, updates.len() as u64) {
                    Ok(()) => (Ok(updates), "SyncFailed"),
                    Err(e) => (Err(e), "ShrinkRefused"),
                },
                Err(e) => (Err(e), "SyncFailed"),
            };
            match result {
                Ok(updates) => {
                    tracing::debug!(catalog = %name, updates = updates.len(), "catalog source read");
                    statuses.insert(name.clone(), status(&updates, now, None));
                    self.last.insert(name.clone(), (now, updates.clone(), c.spec.clone()));
                    imported.push(updates);
                }
                Err(e) => {
                    warn!(catalog = %name, error = %e, "catalog sync failed; the current catalog version stays");
                    statuses.insert(name.clone(), status(&[], now, Some((reason, e.to_string()))));
                    failed.push(name.clone());
                }
            }
        }
        if !failed.is_empty() || desired.catalogs.is_empty() {
            return Ok(self.finish(previous, false, statuses, failed, now));
        }
        let merged = merge(imported);
        let saved = store.save_catalog(&merged, now)?;
        for (name, s) in &statuses {
            store.set_setting(&count_key(name), &s.update_count.to_string())?;
        }
        if saved.changed {
            info!(version = saved.version, updates = merged.len(), "new catalog version");
        }
        let catalog = if saved.changed { store.load_catalog()? } else { previous };
        Ok(self.finish(catalog, saved.changed, statuses, failed, now))
    }

    /// Refuse a source that would shrink beyond its limit compared with its last sync
    /// (remembered in the store, so a restart does not forget it).
    fn check_shrink(&self, store: &dyn Store, name: &str, spec: &UpdateCatalogSpec, after: u64) -> Result<()> {
        if self.allow_shrink || spec.allow_shrink {
            return Ok(());
        }
        let before = match self.last.get(name) {
            Some((_, updates, _)) => Some(updates.len() as u64),
            None => store.setting(&count_key(name))?.and_then(|v| v.parse::<u64>().ok()),
        };
        let max = spec.max_shrink_percent.unwrap_or(DEFAULT_MAX_SHRINK_PERCENT);
        match before.and_then(|b| shrink_refused(b, after, max)) {
            None => Ok(()),
            Some(why) => Err(Error::Catalog {
                source_name: name.to_string(),
                message: format!(
                    "sync refused: {why}; the current catalog stays. If the shrink is intended, run \
                     `patchops catalog sync --allow-shrink` or set spec.allowShrink: true on UpdateCatalog {name} \
                     (spec.maxShrinkPercent changes the share allowed)"
                ),
            }),
        }
    }

    fn finish(
        &self,
        catalog: Catalog,
        changed: bool,
        mut statuses: BTreeMap<String, UpdateCatalogStatus>,
        failed: Vec<String>,
        now: Timestamp,
    ) -> SyncOutcome {
        for (name, s) in statuses.iter_mut() {
            if failed.contains(name) {
                continue;
            }
            s.catalog_version = Some(catalog.version);
            let message = match (failed.is_empty(), changed) {
                (true, true) => format!("{} updates; new catalog version {}", s.update_count, catalog.version),
                (true, false) => format!("{} updates; catalog version {} unchanged", s.update_count, catalog.version),
                (false, _) => format!(
                    "{} updates read, not applied: {} failed; catalog version {} stays",
                    s.update_count,
                    failed.join(", "),
                    catalog.version
                ),
            };
            s.conditions = vec![Condition::new(
                "Ready",
                failed.is_empty(),
                if failed.is_empty() { "Synced" } else { "WaitingForOtherSources" },
                message,
                now,
            )];
        }
        SyncOutcome { catalog, changed, statuses, failed }
    }
}

fn status(updates: &[Update], at: Timestamp, error: Option<(&str, String)>) -> UpdateCatalogStatus {
    match error {
        Some((reason, message)) => UpdateCatalogStatus {
            last_sync_time: Some(at),
            conditions: vec![Condition::new("Ready", false, reason, message, at)],
            ..Default::default()
        },
        None => UpdateCatalogStatus {
            digest: Some(super::digest(updates)),
            update_count: updates.len() as u64,
            last_sync_time: Some(at),
            ..Default::default()
        },
    }
}

fn spinner(name: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message(format!("syncing UpdateCatalog {name}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Check the sources `validate` can read without the network (path and file sources):
/// each must import cleanly. URL and git sources are left to the next sync.
pub fn check_local_sources(
    desired: &DesiredState,
    git: (&GitSource, &str),
    fetcher: &Fetcher,
) -> Vec<(String, Result<usize>)> {
    desired
        .catalogs
        .iter()
        .filter(|(_, c)| c.spec.source.path.is_some() || c.spec.source.file.is_some())
        .map(|(name, c): (&String, &UpdateCatalog)| {
            let result = fetch(fetcher, &c.spec, Some(git))
                .and_then(|f| import(&c.spec, &f, &Catalog::default(), Timestamp::UNIX_EPOCH))
                .map(|u| u.len());
            (name.clone(), result)
        })
        .collect()
}
