//! Update-list resolution: explicit ids plus criteria matches, minus superseded and
//! expired updates (by default), against one catalog snapshot.

use crate::catalog::{Catalog, Update};
use crate::resources::{ExcludedUpdate, UpdateCriteria, UpdateListSpec};

/// A list resolved against a catalog: catalog indices in catalog order, and what was left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResolvedList {
    pub updates: Vec<u32>,
    pub excluded: Vec<ExcludedUpdate>,
}

impl ResolvedList {
    /// What a deployment of this list installs: the resolved updates without expired
    /// ones, which are never deployed even when the list keeps them.
    pub fn deployed(&self, catalog: &Catalog) -> Vec<u32> {
        self.updates.iter().copied().filter(|&i| !catalog.updates[i as usize].expired).collect()
    }
}

/// Does an update match every given criterion?
pub fn matches(c: &UpdateCriteria, u: &Update) -> bool {
    let ieq = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
    (c.classifications.is_empty() || c.classifications.iter().any(|x| ieq(x, &u.classification)))
        && (c.severities.is_empty() || c.severities.contains(&u.severity))
        && (c.products.is_empty() || c.products.iter().any(|p| u.products.iter().any(|q| ieq(p, q))))
        && c.released_after.is_none_or(|d| u.released >= d)
        && c.released_before.is_none_or(|d| u.released < d)
        && c.title_contains.as_ref().is_none_or(|t| u.title.to_lowercase().contains(&t.to_lowercase()))
}

pub fn resolve(spec: &UpdateListSpec, catalog: &Catalog) -> ResolvedList {
    let mut chosen = vec![false; catalog.len()];
    let mut excluded = Vec::new();
    for id in &spec.updates {
        let found = catalog.find(id);
        if found.is_empty() {
            excluded.push(ExcludedUpdate {
                id: id.clone(),
                reason: "NotInCatalog".into(),
                message: format!(
                    "{id} is not in catalog version {}; check the id or sync the catalog",
                    catalog.version
                ),
            });
        }
        for i in found {
            chosen[i as usize] = true;
        }
    }
    if let Some(criteria) = &spec.criteria
        && !criteria.is_empty()
    {
        for (i, u) in catalog.updates.iter().enumerate() {
            if matches(criteria, u) {
                chosen[i] = true;
            }
        }
    }
    let explicit = |u: &Update| {
        spec.updates.iter().any(|id| id == &u.id || u.kb.as_deref().is_some_and(|kb| kb.eq_ignore_ascii_case(id)))
    };
    let mut updates = Vec::new();
    for (i, u) in catalog.updates.iter().enumerate() {
        if !chosen[i] {
            continue;
        }
        if spec.exclude_expired && u.expired {
            if explicit(u) {
                excluded.push(ExcludedUpdate {
                    id: u.id.clone(),
                    reason: "Expired".into(),
                    message: format!("{} is expired and is never deployed", u.id),
                });
            }
            continue;
        }
        if spec.exclude_superseded && catalog.is_superseded(i as u32) {
            if explicit(u) {
                let by: Vec<&str> =
                    catalog.superseded_by[i].iter().map(|&j| catalog.updates[j as usize].id.as_str()).collect();
                excluded.push(ExcludedUpdate {
                    id: u.id.clone(),
                    reason: "Superseded".into(),
                    message: format!(
                        "{} is superseded by {}; deploy that instead, or set excludeSuperseded: false",
                        u.id,
                        by.join(", ")
                    ),
                });
            }
            continue;
        }
        updates.push(i as u32);
    }
    ResolvedList { updates, excluded }
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::Severity;
    use crate::catalog::test_support::update;
    use std::collections::HashMap;

    fn catalog() -> Catalog {
        let mut oct = update("KB100-w11", "Windows 11", "2026-10-14");
        oct.title = "2026-10 Cumulative Update for Windows 11".into();
        let mut nov = update("KB200-w11", "Windows 11", "2026-11-11");
        nov.title = "2026-11 Cumulative Update for Windows 11".into();
        nov.supersedes = vec!["KB100".into()];
        let mut srv = update("KB300-srv", "Windows Server 2022", "2026-11-11");
        srv.severity = Severity::Important;
        let mut old = update("KB050-srv", "Windows Server 2022", "2025-01-14");
        old.expired = true;
        let mut tool = update("KB400-w11", "Windows 11", "2026-11-11");
        tool.classification = "Definition Updates".into();
        Catalog::new(1, vec![oct, nov, srv, old, tool], &HashMap::new())
    }

    fn ids(c: &Catalog, r: &ResolvedList) -> Vec<String> {
        r.updates.iter().map(|&i| c.updates[i as usize].id.clone()).collect()
    }

    fn spec(updates: &[&str], criteria: Option<UpdateCriteria>) -> UpdateListSpec {
        UpdateListSpec {
            description: None,
            updates: updates.iter().map(|s| s.to_string()).collect(),
            criteria,
            exclude_superseded: true,
            exclude_expired: true,
        }
    }

    #[test]
    fn o_list_criteria_select_by_classification_severity_product_date_and_title() {
        let c = catalog();
        let crit = UpdateCriteria {
            classifications: vec!["security updates".into()],
            severities: vec![Severity::Critical],
            released_after: Some("2026-11-01".parse().unwrap()),
            title_contains: Some("cumulative".into()),
            ..Default::default()
        };
        assert_eq!(ids(&c, &resolve(&spec(&[], Some(crit)), &c)), vec!["KB200-w11"]);
        let by_product = UpdateCriteria { products: vec!["Windows Server 2022".into()], ..Default::default() };
        assert_eq!(
            ids(&c, &resolve(&spec(&[], Some(by_product)), &c)),
            vec!["KB300-srv"],
            "the expired one is left out"
        );
    }

    #[test]
    fn o_list_superseded_and_expired_are_excluded_by_default_with_a_reason() {
        let c = catalog();
        let r = resolve(&spec(&["KB100", "KB050-srv", "KB999"], None), &c);
        assert!(r.updates.is_empty());
        let reasons: Vec<(&str, &str)> = r.excluded.iter().map(|e| (e.id.as_str(), e.reason.as_str())).collect();
        assert_eq!(reasons, vec![("KB999", "NotInCatalog"), ("KB050-srv", "Expired"), ("KB100-w11", "Superseded")]);
        assert!(r.excluded[2].message.contains("KB200-w11"), "names the superseding update");
        let mut keep = spec(&["KB100", "KB050-srv"], None);
        keep.exclude_superseded = false;
        keep.exclude_expired = false;
        assert_eq!(ids(&c, &resolve(&keep, &c)), vec!["KB050-srv", "KB100-w11"]);
    }

    #[test]
    fn o_dep_a_list_that_keeps_an_expired_update_never_deploys_it() {
        let c = catalog();
        let mut keep = spec(&["KB100", "KB050-srv"], None);
        keep.exclude_superseded = false;
        keep.exclude_expired = false;
        let deployed: Vec<&str> =
            resolve(&keep, &c).deployed(&c).iter().map(|&i| c.updates[i as usize].id.as_str()).collect();
        assert_eq!(deployed, vec!["KB100-w11"]);
    }
}
