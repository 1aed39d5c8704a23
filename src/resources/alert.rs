//! `Alert`: which patchops events go to which `NotificationProvider`, filtered by
//! collection and severity, as Flux's Alert routes events to a Provider.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::catalog::Severity;

/// A route from events to a provider.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "Alert",
    doc = "Sends patchops events of the chosen kinds (RolloutHalted, DeadlineMissed, SlaBreached, WaiverExpired, NewCriticalUpdates, RuleProposed) to a NotificationProvider, optionally only those concerning some collections or update severities.",
    namespaced,
    status = "AlertStatus",
    shortname = "palert",
    category = "patchops",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".spec.providerRef.name"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct AlertSpec {
    /// The NotificationProvider that receives the events.
    pub provider_ref: ProviderRef,
    /// Which events to send (at least one).
    pub events: Vec<AlertEvent>,
    /// Only events concerning these collections (a deployment's collection or phases', a
    /// waiver's or breach's collection). Events that concern no collection, such as
    /// NewCriticalUpdates, always pass. Empty: every collection.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub collections: Vec<String>,
    /// Only events about updates of these severities (NewCriticalUpdates, SlaBreached).
    /// Events that concern no single update always pass. Empty: every severity.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<Severity>,
    /// A line added to every notification, e.g. the environment or the team to call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Send nothing while true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// The NotificationProvider an alert sends to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ProviderRef {
    /// Its name (same namespace).
    pub name: String,
}

/// The events an alert can route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum AlertEvent {
    /// A deployment's failure budget was exceeded and its rollout halted.
    RolloutHalted,
    /// A deployment reached its deadline with machines not compliant.
    DeadlineMissed,
    /// An update became overdue on a collection against a CompliancePolicy target.
    SlaBreached,
    /// A waiver expired: its machines count as required again.
    WaiverExpired,
    /// A catalog synchronization brought Critical updates.
    NewCriticalUpdates,
    /// A DeploymentRule proposed a change (a branch or pull request) after a catalog sync.
    RuleProposed,
}

/// Whether the alert's provider exists.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AlertStatus {
    /// Ready or not.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
