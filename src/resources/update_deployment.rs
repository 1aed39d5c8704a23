//! `UpdateDeployment`: what must be installed where and by when (ConfigMgr's Deployment
//! Management), optionally rolled out in phases with a failure budget.

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, RestartSuppression, StateCounts, StateMessageDetail};
use crate::time::Duration;

super::with_deployment_settings! {
/// Deploys an update list to a collection using a template's settings.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "UpdateDeployment",
    doc = "Deploys an UpdateList's updates to a collection, or to ordered rollout phases, with the settings of a DeploymentTemplate: when they become available, the installation deadline, restart and maintenance-window behaviour, and a failure budget. Its status gives the rollout phase and the compliance of the targeted machines.",
    namespaced,
    status = "UpdateDeploymentStatus",
    shortname = "udep",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Compliant %","type":"number","jsonPath":".status.compliancePercent"}"#,
    printcolumn = r#"{"name":"Required","type":"integer","jsonPath":".status.machines.required"}"#,
    printcolumn = r#"{"name":"Unknown","type":"integer","jsonPath":".status.machines.unknown"}"#,
    printcolumn = r#"{"name":"Deadline","type":"string","jsonPath":".status.deadline"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDeploymentSpec {
    /// Name of the UpdateList whose updates are deployed.
    pub update_list: String,
    /// Name of the DeploymentTemplate supplying defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// When the deployment starts; availability and deadline offsets count from here.
    #[schemars(schema_with = "crate::time::timestamp_schema")]
    pub start_time: Timestamp,
    /// Exact installation deadline; overrides the template's `deadlineAfter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub deadline: Option<Timestamp>,
    /// Ordered rollout phases. When given, they replace the single target collection: a
    /// phase starts once the previous one met its success criteria and its delay passed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<Phase>,
    /// Halt the rollout (no further phases, no new installations) when this many
    /// machines fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_budget: Option<FailureBudget>,
}
}

impl UpdateDeploymentSpec {
    /// A deployment of `update_list` starting at `start_time`; every other setting unset
    /// (taken from the template, or the defaults).
    pub fn new(update_list: impl Into<String>, start_time: Timestamp) -> Self {
        UpdateDeploymentSpec {
            update_list: update_list.into(),
            template: None,
            start_time,
            deadline: None,
            collection: None,
            available_after: None,
            deadline_after: None,
            mandatory: None,
            suppress_restart: None,
            honor_maintenance_windows_at_deadline: None,
            state_message_detail: None,
            phases: vec![],
            failure_budget: None,
        }
    }
}

/// One rollout phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Phase {
    /// Phase name, unique within the deployment.
    pub name: String,
    /// Collection targeted by this phase.
    pub collection: String,
    /// When the phase counts as successful. Default: 100 % compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_criteria: Option<SuccessCriteria>,
    /// Wait this long after the previous phase succeeded before starting. Default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
}

/// Success criteria of a phase: a compliance percentage or a count of compliant machines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessCriteria {
    /// Percentage (0–100) of the phase's machines that must be compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant_percent: Option<f64>,
    /// Number of the phase's machines that must be compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compliant_count: Option<u64>,
}

/// How many failed machines the rollout tolerates.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailureBudget {
    /// Halt when more than this many targeted machines failed to install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed: Option<u64>,
    /// Halt when more than this percentage of targeted machines failed to install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_failed_percent: Option<f64>,
}

/// Where the deployment stands.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateDeploymentStatus {
    /// Pending (before available time), Available, PastDeadline, Halted or Invalid.
    #[serde(default)]
    pub phase: String,
    /// Name of the newest active rollout phase, when phased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout_phase: Option<String>,
    /// Per rollout phase: when it started and succeeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub phases: Vec<PhaseStatus>,
    /// When the updates become available.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub available_time: Option<Timestamp>,
    /// Installation deadline (mandatory deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub deadline: Option<Timestamp>,
    /// Machines targeted now.
    #[serde(default)]
    pub targeted: u64,
    /// Machine level: compliant, required, unknown (a machine counts once).
    #[serde(default)]
    pub machines: MachineCounts,
    /// Update level: (machine, update) pairs per Table 1 state.
    #[serde(default)]
    pub updates: StateCounts,
    /// Required (machine, update) pairs a Waiver in force keeps out of the counts above.
    #[serde(default)]
    pub waived_pairs: u64,
    /// Compliant machines as a percentage of targeted machines, waived machines left out.
    #[serde(default)]
    pub compliance_percent: f64,
    /// Number of updates deployed (after supersedence and expiry).
    #[serde(default)]
    pub update_count: u64,
    /// The next maintenance window of the target collection(s) that fits the longest
    /// update's max run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub next_maintenance_window: Option<Timestamp>,
    /// The git revision the status was computed from (`branch@sha1:<hex>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_applied_revision: Option<String>,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// Machine-level counts for a deployment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MachineCounts {
    /// No deployed update is Required or Unknown.
    pub compliant: u64,
    /// At least one deployed update is Required.
    pub required: u64,
    /// No usable state for at least one deployed update, none Required.
    pub unknown: u64,
    /// At least one deployed update failed to download or install.
    pub failed: u64,
    /// At least one deployed update is installed but waits for a restart.
    pub pending_reboot: u64,
    /// Every deployed update it requires is waived by a Waiver in force: out of the
    /// compliance percentage (neither compliant nor counted).
    #[serde(default)]
    pub waived: u64,
}

/// Progress of one rollout phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseStatus {
    /// Phase name.
    pub name: String,
    /// Pending, Active or Succeeded.
    pub state: String,
    /// When the phase started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub started_time: Option<Timestamp>,
    /// When the phase first met its success criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub succeeded_time: Option<Timestamp>,
    /// Machines in the phase's collection.
    #[serde(default)]
    pub targeted: u64,
    /// Compliant machines in the phase's collection.
    #[serde(default)]
    pub compliant: u64,
}
