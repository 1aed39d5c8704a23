//! `DeploymentTemplate`: reusable deployment settings (ConfigMgr's Deployment Template).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// Settings a deployment inherits; a deployment may override any of them.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "DeploymentTemplate",
    namespaced,
    shortname = "dtmpl",
    category = "patchops",
    printcolumn = r#"{"name":"Collection","type":"string","jsonPath":".spec.collection"}"#,
    printcolumn = r#"{"name":"Mandatory","type":"boolean","jsonPath":".spec.mandatory"}"#,
    printcolumn = r#"{"name":"Deadline After","type":"string","jsonPath":".spec.deadlineAfter"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentTemplateSpec {
    #[serde(flatten)]
    pub settings: DeploymentSettings,
}

/// The settings shared by templates and deployments. In a deployment, a field that is
/// set overrides the template's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentSettings {
    /// Target collection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Offset from the deployment's start time to when updates become available. Default 0s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_after: Option<Duration>,
    /// Offset from the start time to the installation deadline (mandatory deployments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_after: Option<Duration>,
    /// Mandatory (clients download and install by themselves) or optional (only when a
    /// user starts it). Default true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandatory: Option<bool>,
    /// Suppress the restart after installation, per system role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress_restart: Option<RestartSuppression>,
    /// At the deadline, still wait for a maintenance window. Default false: at the deadline
    /// mandatory updates install even outside maintenance windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_maintenance_windows_at_deadline: Option<bool>,
    /// Which state messages clients send for this deployment. Default All.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_message_detail: Option<StateMessageDetail>,
}

/// Restart suppression per system role (ConfigMgr: servers / workstations).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestartSuppression {
    /// Do not restart servers (the `role` fact is "server").
    #[serde(default)]
    pub servers: bool,
    /// Do not restart workstations (any other role).
    #[serde(default)]
    pub workstations: bool,
}

/// State message detail level.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum StateMessageDetail {
    /// Every state change.
    #[default]
    All,
    /// Only success and error messages.
    SuccessAndErrors,
    /// Only errors.
    ErrorsOnly,
}
