//! `CompliancePolicy`: the targets a security team declares for the fleet — how soon after
//! the vendor's release matching updates must be due on a collection, that deployments
//! carry a failure budget, how long a waiver may run. `plan` and `validate` check branches
//! against them; the status lists current breaches.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Condition, UpdateCriteria};
use crate::time::Duration;

/// Patch targets checked on every branch and reported as breaches in status.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "CompliancePolicy",
    doc = "Patch targets a security team declares for the fleet: how soon after the vendor's release matching updates must have a deadline on a collection, that every deployment carries a failure budget, and how long a waiver may run. validate and plan check branches against it; its status lists the current breaches.",
    namespaced,
    status = "CompliancePolicyStatus",
    shortname = "cpol",
    category = "patchops",
    printcolumn = r#"{"name":"Breaches","type":"integer","jsonPath":".status.breachCount"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CompliancePolicySpec {
    /// Deadline targets: updates matching the criteria must be deployed to the collection
    /// with a deadline at most `within` after their release.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deadlines: Vec<DeadlineTarget>,
    /// Every UpdateDeployment must declare a failure budget.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_failure_budget: bool,
    /// A Waiver may not expire later than this after the commit that declares it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_waiver_duration: Option<Duration>,
}

/// "Critical security updates deployed to `servers` with a deadline ≤ 7 days after release".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadlineTarget {
    /// The collection the updates must be deployed to (as a deployment's collection or one
    /// of its phases').
    pub collection: String,
    /// Which updates the target covers (superseded and expired updates never count);
    /// `releasedAfter` bounds it to recent releases.
    pub criteria: UpdateCriteria,
    /// Longest time from the vendor's release (midnight UTC of the release date) to the
    /// deployment's deadline.
    pub within: Duration,
}

/// Current breaches of the policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CompliancePolicyStatus {
    /// How many breaches there are now.
    #[serde(default)]
    pub breach_count: u64,
    /// The breaches, most overdue first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breaches: Vec<PolicyBreach>,
    /// Ready (no breach) or not.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}

/// One update not due on a collection in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyBreach {
    /// The catalog id of the update.
    pub update: String,
    /// The collection it is not deployed to in time.
    pub collection: String,
    /// When it had to be due (release + `within`).
    #[schemars(schema_with = "crate::time::timestamp_schema")]
    pub due: jiff::Timestamp,
    /// What is wrong: no deployment, or the deployment and its later deadline.
    pub message: String,
}
