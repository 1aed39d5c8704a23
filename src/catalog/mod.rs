//! The update catalog (seed step 1): every available update and, for each, how to
//! detect whether it applies to a system (C1). A [`Catalog`] is one immutable snapshot
//! at a catalog version; the reconcile core and scanners read it, the store versions it.

pub mod applicability;
pub mod compression;
pub mod debian;
pub mod delta;
pub mod msrc_cvrf;
pub mod native;
pub mod osv;
pub mod patch_level;
pub mod rpm;
pub mod rpm_updateinfo;
pub mod source;
pub mod sync;

use std::collections::HashMap;

use jiff::civil::Date;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use applicability::{Applicability, FactTest, Facts, PackageTest, RpmPackageTest, Rule, ScanVerdict};

/// MSRC severity rating (the maximum over an update's vulnerabilities).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Severity {
    #[default]
    Unspecified,
    Low,
    Moderate,
    Important,
    Critical,
}

/// One content file of an update; clients download it only when the update is Required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateFile {
    /// File name.
    pub name: String,
    /// Download URL (a distribution point may serve it instead).
    pub url: String,
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// One update as the catalog describes it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Update {
    /// Unique, stable catalog id (e.g. `KB5032189-win11-23h2-x64`, `DSA-5380-1-bookworm`).
    pub id: String,
    /// KB, advisory or package-version number admins search by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    /// Title as the vendor publishes it.
    pub title: String,
    /// Classification, e.g. "Security Updates", "Critical Updates", "Update Rollups".
    pub classification: String,
    /// Severity rating.
    #[serde(default)]
    pub severity: Severity,
    /// Products the update is for, e.g. "Windows Server 2022".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    /// Release date.
    #[schemars(with = "String")]
    pub released: Date,
    /// Ids or KB numbers of the updates this one supersedes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<String>,
    /// Expired updates stay visible but are never deployed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub expired: bool,
    /// Installation needs a restart.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reboot_required: bool,
    /// Longest expected installation time; a maintenance window must leave this much.
    /// Default 10m (ConfigMgr's default for updates).
    #[serde(default = "default_max_run_time")]
    pub max_run_time: crate::time::Duration,
    /// CVE ids the update fixes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// How a scanner decides whether the update applies and is installed (C1).
    pub applicability: Applicability,
    /// Content files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<UpdateFile>,
}

fn default_max_run_time() -> crate::time::Duration {
    crate::time::Duration::from_mins(10)
}

impl Update {
    /// The same update as two sources (or two vendor documents) describe it, merged so
    /// that nothing either says is lost and the result does not depend on which came
    /// first: products, CVEs, supersedence and files are unions, the severity the highest,
    /// the release date the first, restart and expiry when either says so. What cannot be
    /// unioned (title, classification, a non-list applicability rule) comes from the copy
    /// released last (ties broken by content, never by order).
    pub fn merge(a: Update, b: Update) -> Update {
        if a == b {
            return a;
        }
        let key = |u: &Update| {
            (u.released, u.title.clone(), u.classification.clone(), serde_json::to_string(u).unwrap_or_default())
        };
        let (mut primary, other) = if key(&a) >= key(&b) { (a, b) } else { (b, a) };
        let union = |mine: &mut Vec<String>, theirs: Vec<String>| {
            mine.extend(theirs);
            mine.sort();
            mine.dedup();
        };
        union(&mut primary.products, other.products);
        union(&mut primary.cves, other.cves);
        union(&mut primary.supersedes, other.supersedes);
        let own = [Some(primary.id.clone()), primary.kb.clone()];
        primary.supersedes.retain(|s| !own.iter().flatten().any(|o| o.eq_ignore_ascii_case(s)));
        primary.severity = primary.severity.max(other.severity);
        primary.released = primary.released.min(other.released);
        primary.reboot_required |= other.reboot_required;
        primary.expired |= other.expired;
        primary.max_run_time = primary.max_run_time.max(other.max_run_time);
        primary.files.extend(other.files);
        primary.files.sort_by(|x, y| (&x.sha256, &x.name).cmp(&(&y.sha256, &y.name)));
        primary.files.dedup();
        // A product list (`os in [...]`, as MSRC updates have) is the union of both lists.
        if let (Rule::Fact(mine), Rule::Fact(theirs)) =
            (&mut primary.applicability.is_installable, &other.applicability.is_installable)
        {
            let values = |t: &FactTest| t.in_.clone().or_else(|| t.equals.clone().map(|v| vec![v]));
            let bare = |t: &FactTest| FactTest { in_: None, equals: None, ..t.clone() };
            if bare(mine) == bare(theirs)
                && let (Some(mut list), Some(more)) = (values(mine), values(theirs))
            {
                list.extend(more);
                list.sort();
                list.dedup();
                if list.len() > 1 {
                    mine.equals = None;
                    mine.in_ = Some(list);
                }
            }
        }
        primary
    }
}

/// One catalog snapshot: the updates, which update supersedes which, the version.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    /// Monotonic catalog version (0: no catalog synchronized yet).
    pub version: u64,
    /// sha256 over the normalised updates.
    pub digest: String,
    /// Updates sorted by id.
    pub updates: Vec<Update>,
    /// For each update (same index), the catalog version that first contained it.
    pub since_version: Vec<u64>,
    /// For each update (same index), the indices of the updates superseding it.
    pub superseded_by: Vec<Vec<u32>>,
    /// For each update (same index), its stable key: the store assigns one per update id
    /// and never reuses it, so compliance states survive catalog versions. Default: index.
    pub keys: Vec<u32>,
    by_id: HashMap<String, u32>,
    by_kb: HashMap<String, Vec<u32>>,
}

impl Catalog {
    /// Build a snapshot. Updates are sorted by id; `since` gives the version each update
    /// first appeared in (missing: `version`).
    pub fn new(version: u64, mut updates: Vec<Update>, since: &HashMap<String, u64>) -> Self {
        updates.sort_by(|a, b| a.id.cmp(&b.id));
        updates.dedup_by(|a, b| a.id == b.id);
        let digest = digest(&updates);
        let by_id: HashMap<String, u32> = updates.iter().enumerate().map(|(i, u)| (u.id.clone(), i as u32)).collect();
        let mut by_kb: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, u) in updates.iter().enumerate() {
            if let Some(kb) = &u.kb {
                by_kb.entry(kb.to_ascii_uppercase()).or_default().push(i as u32);
            }
        }
        let mut superseded_by = vec![Vec::new(); updates.len()];
        for (i, u) in updates.iter().enumerate() {
            for s in &u.supersedes {
                for old in lookup(&by_id, &by_kb, s) {
                    if old as usize != i {
                        superseded_by[old as usize].push(i as u32);
                    }
                }
            }
        }
        let since_version = updates.iter().map(|u| since.get(&u.id).copied().unwrap_or(version)).collect();
        let keys = (0..updates.len() as u32).collect();
        Catalog { version, digest, updates, since_version, superseded_by, keys, by_id, by_kb }
    }

    /// Set the stable keys from the store's id → key map. Every update must have one.
    pub fn assign_keys(&mut self, keys: &HashMap<String, u32>) {
        self.keys = self.updates.iter().map(|u| keys[&u.id]).collect();
    }

    pub fn len(&self) -> usize {
        self.updates.len()
    }

    pub fn is_empty(&self) -> bool {
        self.updates.is_empty()
    }

    /// Index of an update by catalog id or KB number (a KB may name several updates,
    /// one per product).
    pub fn find(&self, id_or_kb: &str) -> Vec<u32> {
        lookup(&self.by_id, &self.by_kb, id_or_kb)
    }

    pub fn index_of(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn is_superseded(&self, idx: u32) -> bool {
        !self.superseded_by[idx as usize].is_empty()
    }
}

fn lookup(by_id: &HashMap<String, u32>, by_kb: &HashMap<String, Vec<u32>>, key: &str) -> Vec<u32> {
    if let Some(i) = by_id.get(key) {
        return vec![*i];
    }
    by_kb.get(&key.to_ascii_uppercase()).cloned().unwrap_or_default()
}

/// sha256 over the canonical JSON of the sorted updates: equal content, equal digest.
pub fn digest(updates: &[Update]) -> String {
    let mut h = Sha256::new();
    for u in updates {
        h.update(serde_json::to_vec(u).expect("updates serialize"));
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A small update for tests: `os` must equal `product`, installed when the
    /// `installed` fact lists its KB.
    pub fn update(id: &str, product: &str, released: &str) -> Update {
        Update {
            id: id.to_string(),
            kb: Some(id.split('-').next().unwrap().to_string()),
            title: format!("{id} for {product}"),
            classification: "Security Updates".into(),
            severity: Severity::Critical,
            products: vec![product.into()],
            released: released.parse().unwrap(),
            supersedes: vec![],
            expired: false,
            reboot_required: false,
            max_run_time: crate::time::Duration::from_mins(10),
            cves: vec![],
            applicability: Applicability::for_product_kb(product, id.split('-').next().unwrap()),
            files: vec![],
        }
    }
}

#[cfg(test)]
mod test {
    use super::test_support::update;
    use super::*;

    #[test]
    fn c1_every_update_says_how_to_detect_whether_it_applies() {
        let u = update("KB1-srv", "Windows Server 2022", "2026-11-10");
        let catalog = Catalog::new(1, vec![u], &HashMap::new());
        let server = Facts::from_pairs(&[("os", "Windows Server 2022")], &[]);
        let patched = Facts::from_pairs(&[("os", "Windows Server 2022")], &["KB1"]);
        let desktop = Facts::from_pairs(&[("os", "Windows 11 23H2")], &[]);
        let a = &catalog.updates[0].applicability;
        assert_eq!(a.evaluate(&server), ScanVerdict::Missing);
        assert_eq!(a.evaluate(&patched), ScanVerdict::Installed);
        assert_eq!(a.evaluate(&desktop), ScanVerdict::NotApplicable);
    }

    #[test]
    fn supersedence_is_resolved_by_id_and_by_kb() {
        let old = update("KB1-a", "P", "2026-10-01");
        let mut new = update("KB2-a", "P", "2026-11-01");
        new.supersedes = vec!["KB1".into()];
        let c = Catalog::new(1, vec![new, old], &HashMap::new());
        let old_idx = c.index_of("KB1-a").unwrap();
        let new_idx = c.index_of("KB2-a").unwrap();
        assert!(c.is_superseded(old_idx));
        assert!(!c.is_superseded(new_idx));
        assert_eq!(c.superseded_by[old_idx as usize], vec![new_idx]);
        assert_eq!(c.find("kb2"), vec![new_idx]);
    }

    #[test]
    fn the_digest_depends_on_content_not_order() {
        let a = update("KB1-a", "P", "2026-10-01");
        let b = update("KB2-a", "P", "2026-11-01");
        let c1 = Catalog::new(1, vec![a.clone(), b.clone()], &HashMap::new());
        let c2 = Catalog::new(2, vec![b, a.clone()], &HashMap::new());
        assert_eq!(c1.digest, c2.digest);
        let mut changed = a;
        changed.title.push('!');
        let c3 = Catalog::new(3, vec![changed], &HashMap::new());
        assert_ne!(c1.digest, c3.digest);
    }
}
