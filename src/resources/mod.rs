//! The resource kinds (group `patchops.dev`, version `v1alpha1`). The same Rust types
//! read YAML from git and custom resources from a cluster; `crds/` is generated from them.

mod alert;
mod client_settings;
mod collection;
mod common;
mod compliance_policy;
mod deployment_package;
mod deployment_rule;
mod deployment_template;
mod notification_provider;
mod update_catalog;
mod update_deployment;
mod update_list;
mod waiver;

pub use alert::*;
pub use client_settings::*;
pub use collection::*;
pub use common::*;
pub use compliance_policy::*;
pub use deployment_package::*;
pub use deployment_rule::*;
pub use deployment_template::*;
pub use notification_provider::*;
pub use update_catalog::*;
pub use update_deployment::*;
pub use update_list::*;
pub use waiver::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

pub const API_GROUP: &str = "patchops.dev";
pub const API_VERSION: &str = "patchops.dev/v1alpha1";

/// Every kind patchops reads, in the order dependencies usually flow.
pub const KINDS: [&str; 12] = [
    "UpdateCatalog",
    "Collection",
    "ClientSettings",
    "UpdateList",
    "DeploymentTemplate",
    "UpdateDeployment",
    "DeploymentPackage",
    "DeploymentRule",
    "Waiver",
    "CompliancePolicy",
    "NotificationProvider",
    "Alert",
];

/// The CRDs of all kinds, with the file name each is committed under in `crds/`.
pub fn crds() -> Vec<(String, CustomResourceDefinition)> {
    [
        UpdateCatalog::crd(),
        Collection::crd(),
        ClientSettings::crd(),
        UpdateList::crd(),
        DeploymentTemplate::crd(),
        UpdateDeployment::crd(),
        DeploymentPackage::crd(),
        DeploymentRule::crd(),
        Waiver::crd(),
        CompliancePolicy::crd(),
        NotificationProvider::crd(),
        Alert::crd(),
    ]
    .into_iter()
    .map(|crd| {
        let file = format!("{}.yaml", crd.metadata.name.clone().unwrap_or_default());
        (file, crd)
    })
    .collect()
}

/// All CRDs as one multi-document YAML stream (what `patchops crds` prints).
pub fn crds_yaml() -> String {
    crds().iter().map(|(_, crd)| crd_yaml(crd)).collect::<Vec<_>>().join("---\n")
}

/// One CRD as YAML, exactly as committed under `crds/`.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    serde_saphyr::to_string(crd).expect("a CRD always serializes")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn committed_crds_match_the_rust_types() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        for (file, crd) in crds() {
            let committed = std::fs::read_to_string(dir.join(&file))
                .unwrap_or_else(|e| panic!("crds/{file}: {e}; run `cargo run -- crds --dir crds`"));
            assert!(
                committed == crd_yaml(&crd),
                "crds/{file} drifted from the Rust types; run `cargo run -- crds --dir crds`"
            );
        }
    }

    /// `kubectl explain <kind>` and `kubectl explain <kind>.spec` show these texts.
    #[test]
    fn every_kind_spec_and_status_field_has_a_real_description() {
        fn walk(path: &str, v: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = v.get("properties").and_then(|p| p.as_object()) {
                for (name, schema) in props {
                    let p = format!("{path}.{name}");
                    let described = schema.get("description").is_some();
                    if !described && !p.ends_with(".metadata") && !p.ends_with(".apiVersion") && !p.ends_with(".kind") {
                        missing.push(p.clone());
                    }
                    walk(&p, schema, missing);
                }
            }
            if let Some(items) = v.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        let mut missing = Vec::new();
        for (_, crd) in crds() {
            for v in &crd.spec.versions {
                let schema = serde_json::to_value(&v.schema).unwrap();
                let root = &schema["openAPIV3Schema"];
                let kind = &crd.spec.names.kind;
                match root.get("description").and_then(|d| d.as_str()) {
                    Some(d) if !d.contains("Auto-generated") && d.len() > 40 => {}
                    other => missing.push(format!("{kind} (the kind itself, now {other:?}): add #[kube(doc = ...)]")),
                }
                walk(kind, root, &mut missing);
            }
        }
        assert!(missing.is_empty(), "fields without a doc comment (kubectl explain text): {missing:#?}");
    }

    /// kubectl prints `<invalid>` for a future time in a `date` column (it shows ages), so
    /// only times that are always past may be `date`; deadlines and windows are strings.
    #[test]
    fn only_past_times_are_date_columns() {
        let past = [".metadata.creationTimestamp", ".status.lastSyncTime", ".status.lastRunTime"];
        let mut future_dates = Vec::new();
        for (_, crd) in crds() {
            for v in &crd.spec.versions {
                for c in v.additional_printer_columns.iter().flatten() {
                    if c.type_ == "date" && !past.contains(&c.json_path.as_str()) {
                        future_dates.push(format!("{} {}", crd.spec.names.kind, c.name));
                    }
                }
            }
        }
        assert!(future_dates.is_empty(), "date columns that can be in the future: {future_dates:?}");
        let deployment = UpdateDeployment::crd();
        let columns = deployment.spec.versions[0].additional_printer_columns.clone().unwrap();
        let deadline = columns.iter().find(|c| c.name == "Deadline").unwrap();
        assert_eq!(deadline.type_, "string");
    }

    #[test]
    fn client_settings_defaults_are_the_seeds() {
        let s = ClientSettingsSpec::default();
        assert_eq!(s.policy_poll_interval, crate::time::Duration::from_mins(60));
        assert_eq!(s.scan_randomization, crate::time::Duration::from_hours(2));
        assert_eq!(s.scan_ttl, crate::time::Duration::from_hours(24));
        assert_eq!(s.state_message_batch_interval, crate::time::Duration::from_mins(5));
        // The same defaults apply when a YAML document leaves the fields out.
        let parsed: ClientSettingsSpec = serde_json::from_str("{}").unwrap();
        assert_eq!(parsed, s);
    }
}
