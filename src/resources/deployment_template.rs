//! `DeploymentTemplate`: reusable deployment settings (ConfigMgr's Deployment Template).

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// Declares a struct with the deployment settings as its own fields (templates and
/// deployments both carry them at the top of `spec`). Plain fields rather than
/// `#[serde(flatten)]`, because flattening hides unknown fields and field paths from
/// validation.
macro_rules! with_deployment_settings {
    ($(#[$attr:meta])* pub struct $name:ident { $($body:tt)* }) => {
        $(#[$attr])*
        pub struct $name {
            $($body)*
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

        impl $name {
            /// The deployment settings this spec sets.
            pub fn settings(&self) -> $crate::resources::DeploymentSettings {
                $crate::resources::DeploymentSettings {
                    collection: self.collection.clone(),
                    available_after: self.available_after,
                    deadline_after: self.deadline_after,
                    mandatory: self.mandatory,
                    suppress_restart: self.suppress_restart,
                    honor_maintenance_windows_at_deadline: self.honor_maintenance_windows_at_deadline,
                    state_message_detail: self.state_message_detail,
                }
            }
        }
    };
}
pub(crate) use with_deployment_settings;

with_deployment_settings! {
    /// Settings a deployment inherits; a deployment may override any of them.
    #[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
    #[kube(
        group = "patchops.dev",
        version = "v1alpha1",
        kind = "DeploymentTemplate",
        doc = "Deployment settings (target collection, availability and deadline offsets, mandatory, restart suppression, maintenance windows at the deadline) an UpdateDeployment inherits and may override.",
        namespaced,
        shortname = "dtmpl",
        category = "patchops",
        printcolumn = r#"{"name":"Collection","type":"string","jsonPath":".spec.collection"}"#,
        printcolumn = r#"{"name":"Mandatory","type":"boolean","jsonPath":".spec.mandatory"}"#,
        printcolumn = r#"{"name":"Deadline After","type":"string","jsonPath":".spec.deadlineAfter"}"#,
        printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
    )]
    #[serde(rename_all = "camelCase")]
    pub struct DeploymentTemplateSpec {}
}

/// The settings shared by templates and deployments, merged (a deployment's own value
/// wins over its template's).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeploymentSettings {
    pub collection: Option<String>,
    pub available_after: Option<Duration>,
    pub deadline_after: Option<Duration>,
    pub mandatory: Option<bool>,
    pub suppress_restart: Option<RestartSuppression>,
    pub honor_maintenance_windows_at_deadline: Option<bool>,
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
