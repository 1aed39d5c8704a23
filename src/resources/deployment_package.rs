//! `DeploymentPackage`: the content files of a set of updates and where clients fetch them
//! (ConfigMgr's Deployment Package).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Content for updates, with a sha256 and size per file, served by distribution points.
/// Clients download only the files of updates their scan found Required.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "DeploymentPackage",
    doc = "Update content (files with sha256 and size) the management point serves as a distribution point. Clients download only the files of updates their scan found Required.",
    namespaced,
    status = "DeploymentPackageStatus",
    shortname = "dpkg",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Files","type":"integer","jsonPath":".status.files"}"#,
    printcolumn = r#"{"name":"Bytes","type":"integer","jsonPath":".status.bytes"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPackageSpec {
    /// Updates whose content the package carries, by catalog id or KB.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
    /// Or all updates of these update lists.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub update_lists: Vec<String>,
    /// Extra content files (the catalog already lists each update's files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<ContentFile>,
    /// Base URLs of the distribution points serving the content.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub distribution_points: Vec<String>,
}

/// One content file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContentFile {
    /// File name.
    pub name: String,
    /// Where the file is downloaded from.
    pub url: String,
    /// Expected sha256, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// Content the package holds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentPackageStatus {
    /// Number of content files.
    #[serde(default)]
    pub files: u64,
    /// Files whose sha256 has been verified on a distribution point.
    #[serde(default)]
    pub verified_files: u64,
    /// Total bytes.
    #[serde(default)]
    pub bytes: u64,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
