//! Catalog versions in the store, decided once for both backends: when a save makes a
//! new version, which rows it closes, which ids get new stable keys, and which versions
//! may be read or diffed. Backends supply the reads and writes through [`CatalogWriter`].

use std::collections::HashMap;

use jiff::Timestamp;

use super::rows::secs;
use super::{CatalogSaved, StoreError};
use crate::Result;
use crate::catalog::{Catalog, Update};

/// The reads and writes of one catalog save, inside one transaction that the backend
/// opens (holding off other catalog writers) and commits.
pub trait CatalogWriter {
    /// The newest version and its content digest, if any version was saved.
    fn current_version(&mut self) -> Result<Option<(i64, String)>>;
    /// The rows valid now, by update id.
    fn current_rows(&mut self) -> Result<HashMap<String, CurrentRow>>;
    /// The stable keys of those ids that were in an earlier version.
    fn known_keys(&mut self, ids: &[&str]) -> Result<HashMap<String, i64>>;
    /// The largest stable key given so far (0 when none).
    fn max_key(&mut self) -> Result<i64>;
    /// Write a new version: close its `close` rows, give `new_keys` their ids, insert
    /// `rows` and record the version. Closing comes first: a row inserted for a key is
    /// then the only one of that key left open.
    fn write_version(&mut self, version: &NewVersion<'_>) -> Result<()>;
}

/// A catalog version about to be written.
pub struct NewVersion<'a> {
    pub version: i64,
    pub digest: &'a str,
    pub created_at: i64,
    pub update_count: i64,
    /// Keys whose open row the new version ends (changed or removed updates).
    pub close: Vec<i64>,
    /// Ids seen for the first time, with the key each is given.
    pub new_keys: Vec<(i64, &'a str)>,
    /// The rows that start at this version (new or changed updates), with their keys.
    pub rows: Vec<(i64, &'a CatalogRow)>,
}

/// Save a catalog: a new version only when the content digest differs from the newest
/// one's; unchanged updates keep their rows, an id that comes back keeps its key.
pub fn save(w: &mut impl CatalogWriter, updates: &[Update], now: Timestamp) -> Result<CatalogSaved> {
    let plan = CatalogRows::new(updates);
    let current = w.current_version()?;
    if let Some((version, digest)) = &current
        && *digest == plan.digest
    {
        return Ok(CatalogSaved { version: *version as u64, changed: false });
    }
    let version = current.as_ref().map_or(0, |c| c.0) + 1;
    let mut existing = w.current_rows()?;
    let unseen: Vec<&str> = plan.rows.iter().filter(|r| !existing.contains_key(&r.id)).map(|r| r.id.as_str()).collect();
    let known = w.known_keys(&unseen)?;
    let mut next_key = w.max_key()?;
    let mut new = NewVersion {
        version,
        digest: &plan.digest,
        created_at: secs(now),
        update_count: plan.rows.len() as i64,
        close: Vec::new(),
        new_keys: Vec::new(),
        rows: Vec::new(),
    };
    for row in &plan.rows {
        let key = match existing.remove(&row.id) {
            Some(cur) if cur.body == row.body && cur.superseded == row.superseded => continue,
            Some(cur) => {
                new.close.push(cur.key);
                cur.key
            }
            None => match known.get(&row.id) {
                Some(&key) => key,
                None => {
                    next_key += 1;
                    new.new_keys.push((next_key, &row.id));
                    next_key
                }
            },
        };
        new.rows.push((key, row));
    }
    let mut removed: Vec<i64> = existing.values().map(|c| c.key).collect();
    removed.sort_unstable();
    new.close.extend(removed);
    w.write_version(&new)?;
    Ok(CatalogSaved { version: version as u64, changed: true })
}

/// A version that can be read: at most the newest one.
pub fn check_version(version: u64, newest: i64) -> Result<(), StoreError> {
    if version as i64 > newest {
        return Err(StoreError::UnknownVersion { version, newest: newest.max(0) as u64 });
    }
    Ok(())
}

/// A delta that can be computed: both versions exist and `from` is not after `to`.
pub fn check_delta(from: u64, to: u64, newest: i64) -> Result<(), StoreError> {
    check_version(from, newest)?;
    check_version(to, newest)?;
    if from > to {
        return Err(StoreError::ReversedDelta { from, to });
    }
    Ok(())
}

/// A stored update body read back.
pub fn parse_update(body: &str) -> Result<Update, StoreError> {
    serde_json::from_str(body).map_err(|e| {
        StoreError::Corrupt(format!("a stored update does not parse ({e}); the store was written by another version"))
    })
}

/// One current catalog row as stored.
pub struct CurrentRow {
    pub key: i64,
    pub superseded: bool,
    pub body: String,
}

/// One update as a catalog_updates row.
pub struct CatalogRow {
    pub id: String,
    pub kb: Option<String>,
    pub title: String,
    pub classification: String,
    pub severity: String,
    pub released: String,
    pub superseded: bool,
    pub expired: bool,
    pub body: String,
}

/// The rows of a catalog about to be saved: sorted by id, deduplicated, with the
/// digest and supersedence of the whole set. A row whose body or `superseded` flag
/// differs from the current one gets a new row version.
pub struct CatalogRows {
    pub digest: String,
    pub rows: Vec<CatalogRow>,
}

impl CatalogRows {
    pub fn new(updates: &[Update]) -> Self {
        let catalog = Catalog::new(0, updates.to_vec(), &HashMap::new());
        let rows = catalog
            .updates
            .iter()
            .enumerate()
            .map(|(i, u)| CatalogRow {
                id: u.id.clone(),
                kb: u.kb.clone(),
                title: u.title.clone(),
                classification: u.classification.clone(),
                severity: format!("{:?}", u.severity),
                released: u.released.to_string(),
                superseded: catalog.is_superseded(i as u32),
                expired: u.expired,
                body: serde_json::to_string(u).expect("updates serialize"),
            })
            .collect();
        CatalogRows { digest: catalog.digest, rows }
    }
}

/// The current catalog rows as read back.
#[derive(Default)]
pub struct LoadedCatalog {
    updates: Vec<Update>,
    since: HashMap<String, u64>,
    keys: HashMap<String, u32>,
}

impl LoadedCatalog {
    pub fn add(&mut self, id: String, key: i64, first_version: i64, body: &str) -> Result<(), StoreError> {
        let update: Update = serde_json::from_str(body).map_err(|e| {
            StoreError::Corrupt(format!("stored catalog update {id:?} cannot be read: {e}; save the catalog again"))
        })?;
        self.since.insert(id.clone(), first_version as u64);
        self.keys.insert(id, key as u32);
        self.updates.push(update);
        Ok(())
    }

    pub fn into_catalog(self, version: i64) -> Catalog {
        let mut catalog = Catalog::new(version as u64, self.updates, &self.since);
        catalog.assign_keys(&self.keys);
        catalog
    }
}
