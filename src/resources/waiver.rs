//! `Waiver`: an approved exception — these updates (or the updates fixing these CVEs) need
//! not be installed on these machines, for a reason, until an expiry date. Compliance
//! tools know it as a waiver (InSpec) or an exemption of category Waiver (Azure Policy).
//! It is approved by the pull request that adds it, and it always expires.

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;

/// Updates or CVEs × a collection or named machines, with a reason and an expiry.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "Waiver",
    doc = "An approved exception: these updates, or the updates fixing these CVEs, need not be installed on a collection or on named machines, for a stated reason, until an expiry date. While it is in force the waived pairs are reported as Waived and left out of compliance; when it expires they count again. The pull request that adds it is its approval.",
    namespaced,
    status = "WaiverStatus",
    shortname = "waiver",
    category = "patchops",
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Expires","type":"string","jsonPath":".spec.expires"}"#,
    printcolumn = r#"{"name":"Waived","type":"integer","jsonPath":".status.waivedPairs"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct WaiverSpec {
    /// Update ids or KB numbers waived (a KB covers every update carrying it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
    /// CVE ids: every update fixing one of them is waived.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cves: Vec<String>,
    /// The collection whose machines are waived. Give this or `machines`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Client names waived. Give this or `collection`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<String>,
    /// Why the updates are not installed (e.g. the vendor's support statement, the
    /// compensating control); shown wherever the waived machines are listed.
    pub reason: String,
    /// When the waiver ends (RFC 3339). Required: from then on the machines count as
    /// exposed or non-compliant again and a WaiverExpired event says so.
    #[schemars(schema_with = "crate::time::timestamp_schema")]
    pub expires: Timestamp,
    /// A ticket or risk-acceptance reference, for auditors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
}

/// Whether the waiver is in force and what it covers.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WaiverStatus {
    /// Active (before its expiry) or Expired.
    #[serde(default)]
    pub state: String,
    /// Catalog ids of the updates it covers in the current catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub updates: Vec<String>,
    /// Machines it covers now.
    #[serde(default)]
    pub machines: u64,
    /// Applicable (machine, update) pairs it keeps out of compliance counts now.
    #[serde(default)]
    pub waived_pairs: u64,
    /// Ready / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
