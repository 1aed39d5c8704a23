//! Preparation: a desired state resolved against a catalog before any client is counted —
//! what each deployment deploys, to which collections, with which settings and timing.
//! Pure and shared: the reconcile engine and `patchops plan` both start from it.

use std::collections::HashMap;

use jiff::SignedDuration;

use super::resolve::{self, ResolvedList};
use super::targeting::Collections;
use super::timing::{Timing, effective_settings};
use crate::catalog::Catalog;
use crate::desired::DesiredState;
use crate::resources::{DeploymentSettings, UpdateDeploymentSpec};

/// A desired state resolved against a catalog.
pub struct Prepared {
    pub collections: Collections,
    /// Every update list, resolved (by name).
    pub lists: Vec<(String, ResolvedList)>,
    /// Every deployment (by name).
    pub deployments: Vec<PreparedDeployment>,
}

/// One deployment, resolved against the catalog.
pub struct PreparedDeployment {
    pub name: String,
    /// Its update list in [`Prepared::lists`]; None when the list is not declared.
    pub list: Option<usize>,
    /// The deployment's settings over its template's.
    pub settings: DeploymentSettings,
    pub timing: Timing,
    /// Catalog indices of the deployed updates.
    pub updates: Vec<u32>,
    /// Collection index per slot: one slot per phase, or one for the single target.
    pub slots: Vec<Option<usize>>,
    /// Highest `since_version` among the updates: clients scanned before it have unknowns.
    pub max_since: u64,
    /// Longest max run time of the updates, for maintenance-window fit.
    pub max_run_time: SignedDuration,
    /// Updates the deployment names but will not deploy as written (superseded or
    /// expired), as (reason, message).
    pub warnings: Vec<(&'static str, String)>,
}

impl Prepared {
    pub fn new(desired: &DesiredState, catalog: &Catalog) -> Self {
        let collections = Collections::new(&desired.collections);
        let lists: Vec<(String, ResolvedList)> =
            desired.update_lists.iter().map(|(n, l)| (n.clone(), resolve::resolve(&l.spec, catalog))).collect();
        let list_index: HashMap<&str, usize> = lists.iter().enumerate().map(|(i, (n, _))| (n.as_str(), i)).collect();
        let deployments = desired
            .deployments
            .iter()
            .map(|(name, d)| {
                let list = list_index.get(d.spec.update_list.as_str()).map(|&l| (l, &lists[l].1));
                PreparedDeployment::new(name, &d.spec, desired, list, &collections, catalog)
            })
            .collect();
        Prepared { collections, lists, deployments }
    }

    /// A deployment's position by name.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.deployments.iter().position(|d| d.name == name)
    }

    /// The resolved list a deployment deploys from.
    pub fn list_of(&self, deployment: &PreparedDeployment) -> Option<&ResolvedList> {
        deployment.list.map(|l| &self.lists[l].1)
    }
}

impl PreparedDeployment {
    fn new(
        name: &str,
        spec: &UpdateDeploymentSpec,
        desired: &DesiredState,
        list: Option<(usize, &ResolvedList)>,
        collections: &Collections,
        catalog: &Catalog,
    ) -> Self {
        let template = spec.template.as_ref().and_then(|t| desired.templates.get(t)).map(|t| t.spec.settings());
        let settings = effective_settings(spec, template);
        let updates: Vec<u32> = list.map(|(_, l)| l.deployed(catalog)).unwrap_or_default();
        let slots = if spec.phases.is_empty() {
            vec![settings.collection.as_deref().and_then(|c| collections.index_of(c))]
        } else {
            spec.phases.iter().map(|p| collections.index_of(&p.collection)).collect()
        };
        PreparedDeployment {
            name: name.to_string(),
            list: list.map(|(l, _)| l),
            timing: Timing::of(spec, &settings),
            settings,
            max_since: updates.iter().map(|&i| catalog.since_version[i as usize]).max().unwrap_or(0),
            max_run_time: updates
                .iter()
                .map(|&i| catalog.updates[i as usize].max_run_time.signed())
                .max()
                .unwrap_or(SignedDuration::ZERO),
            warnings: list.map(|(_, l)| supersedence_warnings(l, catalog)).unwrap_or_default(),
            updates,
            slots,
        }
    }
}

/// What a list names that a deployment of it will not install as written: updates the
/// list left out as superseded or expired, superseded updates it keeps on purpose, and
/// expired updates (never deployed).
pub fn supersedence_warnings(list: &ResolvedList, catalog: &Catalog) -> Vec<(&'static str, String)> {
    let mut out: Vec<(&'static str, String)> = list
        .excluded
        .iter()
        .filter_map(|e| match e.reason.as_str() {
            "Superseded" => Some(("UpdateSuperseded", e.message.clone())),
            "Expired" => Some(("UpdateExpired", e.message.clone())),
            _ => None,
        })
        .collect();
    for &i in &list.updates {
        let u = &catalog.updates[i as usize];
        if u.expired {
            out.push(("UpdateExpired", format!("{} is expired and is never deployed", u.id)));
        } else if catalog.is_superseded(i) {
            let by: Vec<&str> =
                catalog.superseded_by[i as usize].iter().map(|&j| catalog.updates[j as usize].id.as_str()).collect();
            out.push((
                "UpdateSuperseded",
                format!("{} is superseded by {} and deployed anyway (excludeSuperseded: false)", u.id, by.join(", ")),
            ));
        }
    }
    out
}
