//! `DeploymentRule`: an automatic deployment rule. After each catalog sync the updates
//! matching its criteria are proposed as a new update list and deployment on a branch;
//! nothing deploys until a human merges.

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, UpdateCriteria};

/// Criteria, template and collection for deployments proposed after catalog syncs.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "DeploymentRule",
    doc = "An automatic deployment rule: after each catalog sync, updates matching its criteria are proposed as a new UpdateList and UpdateDeployment on a branch of the desired-state repository, deployed only once merged.",
    namespaced,
    status = "DeploymentRuleStatus",
    shortname = "drule",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Matched","type":"integer","jsonPath":".status.updatesMatched"}"#,
    printcolumn = r#"{"name":"Last Run","type":"date","jsonPath":".status.lastRunTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRuleSpec {
    /// Which updates the rule picks.
    pub criteria: UpdateCriteria,
    /// DeploymentTemplate for the proposed deployment.
    pub template: String,
    /// Target collection (overrides the template's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Run after each catalog synchronization. Default true.
    #[serde(default = "yes")]
    pub run_after_sync: bool,
}

fn yes() -> bool {
    true
}

/// The rule's last run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRuleStatus {
    /// When the rule last ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub last_run_time: Option<Timestamp>,
    /// Updates matched and not yet deployed.
    #[serde(default)]
    pub updates_matched: u64,
    /// Branch holding the proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_proposed: Option<String>,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
