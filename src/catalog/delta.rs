//! Catalog deltas: what changed between two catalog versions. Online scans fetch a delta
//! instead of the whole catalog when the client already holds an older version (O2),
//! and `catalog diff` shows the same change to an admin.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::{Catalog, Update};

/// The updates added or changed from `from` to `to`, and the ids removed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogDelta {
    pub from: u64,
    pub to: u64,
    /// Updates new in `to` or whose content changed, sorted by id.
    pub upserts: Vec<Update>,
    /// Ids present in `from` and absent from `to`, sorted.
    pub removed: Vec<String>,
}

impl CatalogDelta {
    /// The delta between two snapshots, computed from their content.
    pub fn between(a: &Catalog, b: &Catalog) -> Self {
        let old: HashMap<&str, &Update> = a.updates.iter().map(|u| (u.id.as_str(), u)).collect();
        let new: HashMap<&str, &Update> = b.updates.iter().map(|u| (u.id.as_str(), u)).collect();
        let upserts = b.updates.iter().filter(|u| old.get(u.id.as_str()) != Some(u)).cloned().collect();
        let removed = a.updates.iter().filter(|u| !new.contains_key(u.id.as_str())).map(|u| u.id.clone()).collect();
        CatalogDelta { from: a.version, to: b.version, upserts, removed }
    }

    /// The updates of `to`, given those of `from`.
    pub fn apply(&self, base: &[Update]) -> Vec<Update> {
        let mut by_id: BTreeMap<&str, &Update> = base.iter().map(|u| (u.id.as_str(), u)).collect();
        for id in &self.removed {
            by_id.remove(id.as_str());
        }
        for u in &self.upserts {
            by_id.insert(u.id.as_str(), u);
        }
        by_id.into_values().cloned().collect()
    }
}

/// What `catalog diff` reports: the delta read the way an admin reads it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CatalogDiff {
    pub from: u64,
    pub to: u64,
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Updates that became expired.
    pub expired: Vec<String>,
    /// Updates newly superseded, with the updates superseding them.
    pub superseded: Vec<(String, Vec<String>)>,
}

impl CatalogDiff {
    /// Nothing was added, changed, removed, expired or newly superseded.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.expired.is_empty()
            && self.superseded.is_empty()
    }

    pub fn between(a: &Catalog, b: &Catalog) -> Self {
        let delta = CatalogDelta::between(a, b);
        let mut diff = CatalogDiff { from: a.version, to: b.version, removed: delta.removed, ..Default::default() };
        for u in &delta.upserts {
            match a.index_of(&u.id) {
                None => diff.added.push(u.id.clone()),
                Some(i) => {
                    diff.changed.push(u.id.clone());
                    if u.expired && !a.updates[i as usize].expired {
                        diff.expired.push(u.id.clone());
                    }
                }
            }
        }
        for (i, u) in b.updates.iter().enumerate() {
            let was = a.index_of(&u.id).is_some_and(|j| a.is_superseded(j));
            if b.is_superseded(i as u32) && !was {
                let by = b.superseded_by[i].iter().map(|&j| b.updates[j as usize].id.clone()).collect();
                diff.superseded.push((u.id.clone(), by));
            }
        }
        diff
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;

    #[test]
    fn o2_applying_the_delta_to_the_old_catalog_gives_the_new_one() {
        let a = Catalog::new(
            1,
            vec![update("KB1-a", "P", "2026-10-01"), update("KB2-a", "P", "2026-10-01")],
            &HashMap::new(),
        );
        let mut changed = update("KB2-a", "P", "2026-10-01");
        changed.title = "re-released".into();
        let mut new = update("KB3-a", "P", "2026-11-01");
        new.supersedes = vec!["KB2".into()];
        let b = Catalog::new(2, vec![changed, new], &HashMap::new());
        let delta = CatalogDelta::between(&a, &b);
        assert_eq!(delta.removed, vec!["KB1-a"]);
        assert_eq!(delta.upserts.len(), 2);
        assert_eq!(delta.apply(&a.updates), b.updates);
        let diff = CatalogDiff::between(&a, &b);
        assert_eq!(
            (diff.added, diff.changed, diff.removed),
            (vec!["KB3-a".to_string()], vec!["KB2-a".to_string()], vec!["KB1-a".to_string()])
        );
        assert_eq!(diff.superseded, vec![("KB2-a".to_string(), vec!["KB3-a".to_string()])]);
    }
}
