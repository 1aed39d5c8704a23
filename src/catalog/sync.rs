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
use crate::resources::{CatalogFormat, Condition, UpdateCatalog, UpdateCatalogSpec, UpdateCatalogStatus};
use crate::store::Store;
use crate::{Error, Result};

/// Decompress by magic bytes: gzip, xz, an lz4 frame (as apt stores lists), or plain.
pub fn decompress(name: &str, bytes: &[u8]) -> Result<Vec<u8>> {
    debian::decompress(name, bytes)
}

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

/// Merge the updates of several sources: one update per id; when two sources carry the
/// same id the later release wins (a re-released update), then the later source by name.
pub fn merge(sources: Vec<Vec<Update>>) -> Vec<Update> {
    let mut by_id: BTreeMap<String, Update> = BTreeMap::new();
    for updates in sources {
        for u in updates {
            match by_id.get(&u.id) {
                Some(existing) if existing.released > u.released => {}
                _ => {
                    by_id.insert(u.id.clone(), u);
                }
            }
        }
    }
    by_id.into_values().collect()
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
}

impl Syncer {
    pub fn new(cache_dir: &std::path::Path) -> Self {
        Self::with_fetcher(Fetcher::new(cache_dir, Duration::from_secs(60)))
    }

    pub fn with_fetcher(fetcher: Fetcher) -> Self {
        Syncer { fetcher, last: HashMap::new() }
    }

    /// Sync the catalogs of `desired`. `force`: fetch every source now. `git`: the
    /// desired-state repository and commit, for `path` sources.
    pub fn sync(
        &mut self,
        store: &mut dyn Store,
        desired: &DesiredState,
        git: Option<(&GitSource, &str)>,
        now: Timestamp,
        force: bool,
    ) -> Result<SyncOutcome> {
        let previous = store.load_catalog()?;
        let progress = std::io::stderr().is_terminal();
        let mut statuses = BTreeMap::new();
        let mut imported = Vec::new();
        let mut failed = Vec::new();
        for (name, c) in &desired.catalogs {
            let due = force
                || c.spec.source.path.is_some()
                || match self.last.get(name) {
                    Some((at, _, spec)) => spec != &c.spec || now.duration_since(*at) >= c.spec.sync_interval.signed(),
                    None => true,
                };
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
            match result {
                Ok(updates) => {
                    tracing::debug!(catalog = %name, updates = updates.len(), "catalog source read");
                    statuses.insert(name.clone(), status(&updates, now, None));
                    self.last.insert(name.clone(), (now, updates.clone(), c.spec.clone()));
                    imported.push(updates);
                }
                Err(e) => {
                    warn!(catalog = %name, error = %e, "catalog sync failed; the current catalog version stays");
                    statuses.insert(name.clone(), status(&[], now, Some(e.to_string())));
                    failed.push(name.clone());
                }
            }
        }
        if !failed.is_empty() || desired.catalogs.is_empty() {
            return Ok(self.finish(previous, false, statuses, failed, now));
        }
        let merged = merge(imported);
        let saved = store.save_catalog(&merged, now)?;
        if saved.changed {
            info!(version = saved.version, updates = merged.len(), "new catalog version");
        }
        let catalog = if saved.changed { store.load_catalog()? } else { previous };
        Ok(self.finish(catalog, saved.changed, statuses, failed, now))
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

fn status(updates: &[Update], at: Timestamp, error: Option<String>) -> UpdateCatalogStatus {
    match error {
        Some(message) => UpdateCatalogStatus {
            last_sync_time: Some(at),
            conditions: vec![Condition::new("Ready", false, "SyncFailed", message, at)],
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
