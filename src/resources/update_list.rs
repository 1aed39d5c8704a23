//! `UpdateList`: a named set of updates (ConfigMgr's Update List / software update group),
//! by explicit id and/or by search criteria.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, UpdateCriteria};

/// A set of updates chosen by id and/or by criteria. Its status says, for every update,
/// how many systems require it — the figure an admin decides deployments on.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "UpdateList",
    doc = "A set of updates chosen by id and/or by criteria (ConfigMgr's software update group). Its status gives, for every update, how many machines require it.",
    namespaced,
    status = "UpdateListStatus",
    shortname = "ulist",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Updates","type":"integer","jsonPath":".status.updateCount"}"#,
    printcolumn = r#"{"name":"Required","type":"integer","jsonPath":".status.totals.required"}"#,
    printcolumn = r#"{"name":"Unknown","type":"integer","jsonPath":".status.totals.unknown"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UpdateListSpec {
    /// Human description shown in plans and reports.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Updates by catalog id or KB number (e.g. "KB5032189").
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
    /// Updates matching these criteria are added to the explicit ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criteria: Option<UpdateCriteria>,
    /// Leave out updates that a newer update supersedes. Default true.
    #[serde(default = "yes")]
    pub exclude_superseded: bool,
    /// Leave out expired updates. Default true.
    #[serde(default = "yes")]
    pub exclude_expired: bool,
}

fn yes() -> bool {
    true
}

/// Compliance counts over the fleet: machines per Table 1 state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StateCounts {
    /// Applicable and not installed (any of Table 1's four reasons).
    pub required: u64,
    /// Applicable and installed.
    pub installed: u64,
    /// Not applicable.
    pub not_required: u64,
    /// No usable state: not scanned, scan failed, state expired or rejected.
    pub unknown: u64,
}

/// One resolved update with its fleet counts.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCounts {
    /// Catalog id.
    pub id: String,
    /// KB or advisory number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb: Option<String>,
    /// Title from the catalog.
    pub title: String,
    /// Machines per compliance state.
    #[serde(flatten)]
    pub counts: StateCounts,
}

/// The resolved list and "how many systems are requesting each patch".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateListStatus {
    /// Catalog version the list was resolved against.
    #[serde(default)]
    pub catalog_version: u64,
    /// Number of resolved updates.
    #[serde(default)]
    pub update_count: u64,
    /// Per-update fleet counts, in catalog order.
    #[serde(default)]
    pub updates: Vec<UpdateCounts>,
    /// Sum over the resolved updates (a machine counts once per update).
    #[serde(default)]
    pub totals: StateCounts,
    /// Ids the list names but the catalog lacks or that were excluded, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded: Vec<ExcludedUpdate>,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// An update the list names or matches but does not contain, and why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExcludedUpdate {
    /// The id as written or matched.
    pub id: String,
    /// Superseded, Expired or NotInCatalog.
    pub reason: String,
    /// Details, e.g. the superseding update.
    pub message: String,
}
