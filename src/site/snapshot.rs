//! The desired state a site engine derived from, saved in the store with its publishes so
//! that the management points sharing the store (`patchops serve`) can follow the site
//! without reading git or the cluster: they derive the same policies and statuses from the
//! same inputs. Only the engine that owns the site writes it.

use std::collections::BTreeMap;

use crate::desired::{DesiredState, Origin};
use crate::resources::UpdateCatalogStatus;
use crate::store::Store;
use crate::{Error, Result};

/// The setting holding the whole snapshot (JSON).
const KEY: &str = "site.desired";
/// The setting naming it (revision, catalog version, catalog status digest): read each
/// poll, so a follower reads the whole snapshot only when it changed.
const STAMP: &str = "site.desired.stamp";

/// What one derivation was made of: the resources of a revision (as documents a
/// repository could hold), the catalog version and the catalogs' sync status.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Snapshot {
    pub revision: String,
    pub catalog_version: u64,
    pub catalog_status: BTreeMap<String, UpdateCatalogStatus>,
    /// One resource document per entry, without status.
    pub documents: Vec<serde_json::Value>,
    /// Where each document was declared (its file and line), in the same order.
    pub origins: Vec<Origin>,
}

impl Snapshot {
    pub fn of(
        desired: &DesiredState,
        catalog_version: u64,
        catalog_status: &BTreeMap<String, UpdateCatalogStatus>,
    ) -> Snapshot {
        let mut documents = Vec::new();
        let mut origins = Vec::new();
        let mut add = |kind: &str, name: &str, mut doc: serde_json::Value| {
            if let Some(o) = doc.as_object_mut() {
                o.remove("status");
            }
            documents.push(doc);
            let key = (kind.to_string(), name.to_string());
            origins.push(desired.origins.get(&key).cloned().unwrap_or_else(|| Origin { file: String::new(), line: 0 }));
        };
        macro_rules! each {
            ($($field:ident => $kind:literal),* $(,)?) => {$(
                for (name, r) in &desired.$field {
                    add($kind, name, serde_json::to_value(r).expect("resources serialize"));
                }
            )*};
        }
        each!(
            catalogs => "UpdateCatalog",
            collections => "Collection",
            client_settings => "ClientSettings",
            update_lists => "UpdateList",
            templates => "DeploymentTemplate",
            deployments => "UpdateDeployment",
            packages => "DeploymentPackage",
            rules => "DeploymentRule",
            waivers => "Waiver",
            compliance_policies => "CompliancePolicy",
            notification_providers => "NotificationProvider",
            alerts => "Alert",
        );
        Snapshot {
            revision: desired.revision.clone(),
            catalog_version,
            catalog_status: catalog_status.clone(),
            documents,
            origins,
        }
    }

    /// Names this snapshot: equal stamps, equal snapshots.
    pub fn stamp(&self) -> String {
        use sha2::Digest;
        let body = serde_json::to_vec(&(&self.documents, &self.catalog_status)).expect("snapshots serialize");
        let digest = hex::encode(&sha2::Sha256::digest(&body)[..8]);
        format!("{}#{}#{digest}", self.revision, self.catalog_version)
    }

    /// Save it (the whole snapshot first, then its stamp, so a follower that reads the new
    /// stamp finds the new snapshot).
    pub fn save(&self, store: &mut dyn Store) -> Result<String> {
        let stamp = self.stamp();
        let body = serde_json::to_string(self).expect("snapshots serialize");
        store.set_setting(KEY, &body)?;
        store.set_setting(STAMP, &stamp)?;
        Ok(stamp)
    }

    /// The stamp of the snapshot in the store (None: no engine published one yet).
    pub fn stamp_in(store: &dyn Store) -> Result<Option<String>> {
        store.setting(STAMP)
    }

    /// The snapshot in the store, with its stamp.
    pub fn load(store: &dyn Store) -> Result<Option<(String, Snapshot)>> {
        let Some(body) = store.setting(KEY)? else { return Ok(None) };
        let snapshot: Snapshot = serde_json::from_str(&body).map_err(|e| {
            Error::Runtime(format!(
                "{}: the site's desired state saved in the store cannot be read ({e}); the engine that owns the site \
                 (`patchops run` or the controller) saves it again at its next publish — is it a newer version?",
                store.location()
            ))
        })?;
        // Named by what was read (a stamp read before it may name an older body).
        Ok(Some((snapshot.stamp(), snapshot)))
    }

    /// The desired state again, checked by the rules a repository is checked by.
    pub fn desired(&self) -> Result<DesiredState> {
        let files: Vec<(String, String)> = self
            .documents
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("site snapshot document {i}"), serde_json::to_string(d).expect("JSON serializes")))
            .collect();
        let mut state = DesiredState::load(&self.revision, &files).map_err(|problems| {
            Error::Runtime(format!(
                "the site's desired state saved in the store (revision {}) does not load: {}; the engine that owns \
                 the site saves a new one with its next revision",
                self.revision,
                crate::desired::render_problems(&problems)
            ))
        })?;
        let kinds = self.documents.iter().map(|d| {
            let text = |k: &str| d.pointer(k).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            (text("/kind"), text("/metadata/name"))
        });
        state.origins = kinds.zip(self.origins.iter().cloned()).collect();
        Ok(state)
    }
}
