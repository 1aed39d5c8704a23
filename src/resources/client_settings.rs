//! `ClientSettings`: the Software Updates Client Agent properties. Every default is the
//! seed's: 60 min policy poll, 2 h scan randomisation, 24 h scan TTL, 5 min batches.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::time::Duration;

/// Agent timing. Settings without `collection` apply to every client; settings with a
/// collection apply to its members, the highest `priority` winning.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "ClientSettings",
    doc = "Agent timing for the clients of a site (policy poll, scan schedule and TTL, state-message batching): ConfigMgr's Client Settings. Settings without a collection apply to every client; with one, to its members, the highest priority winning.",
    plural = "clientsettings",
    namespaced,
    shortname = "cset",
    category = "patchops",
    printcolumn = r#"{"name":"Collection","type":"string","jsonPath":".spec.collection"}"#,
    printcolumn = r#"{"name":"Policy Poll","type":"string","jsonPath":".spec.policyPollInterval"}"#,
    printcolumn = r#"{"name":"Scan TTL","type":"string","jsonPath":".spec.scanTtl"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClientSettingsSpec {
    /// Apply only to members of this collection. Default: every client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collection: Option<String>,
    /// Higher wins when several settings apply to a client. Default 0.
    #[serde(default)]
    pub priority: i32,
    /// How often clients fetch policy from the management point. Default 60m.
    #[serde(default = "d_policy_poll")]
    pub policy_poll_interval: Duration,
    /// General scan schedule: forced, online scans this often. Default 1d.
    #[serde(default = "d_scan_schedule")]
    pub scan_schedule: Duration,
    /// Deployment re-evaluation schedule: unforced scans by catalog version. Default 7d.
    #[serde(default = "d_reevaluation")]
    pub deployment_reevaluation: Duration,
    /// A new catalog is scanned at a uniformly random time within this window. Default 2h.
    #[serde(default = "d_randomization")]
    pub scan_randomization: Duration,
    /// Unforced scans are skipped while the last scan is younger than this; states older
    /// than this (with no newer scan) count as Unknown. Default 24h.
    #[serde(default = "d_ttl")]
    pub scan_ttl: Duration,
    /// Cached state messages are sent in batches this often. Default 5m.
    #[serde(default = "d_batch")]
    pub state_message_batch_interval: Duration,
    /// After an installation the re-scan's state is sent within this time. Default 2m.
    #[serde(default = "d_after_install")]
    pub state_message_after_install: Duration,
    /// Clients whose agent is older than this version cannot scan reliably: their states
    /// are Unknown. Default: no minimum.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimum_agent_version: Option<String>,
}

fn d_policy_poll() -> Duration {
    Duration::from_mins(60)
}
fn d_scan_schedule() -> Duration {
    Duration::from_days(1)
}
fn d_reevaluation() -> Duration {
    Duration::from_days(7)
}
fn d_randomization() -> Duration {
    Duration::from_hours(2)
}
fn d_ttl() -> Duration {
    Duration::from_hours(24)
}
fn d_batch() -> Duration {
    Duration::from_mins(5)
}
fn d_after_install() -> Duration {
    Duration::from_mins(2)
}

impl Default for ClientSettingsSpec {
    fn default() -> Self {
        ClientSettingsSpec {
            collection: None,
            priority: 0,
            policy_poll_interval: d_policy_poll(),
            scan_schedule: d_scan_schedule(),
            deployment_reevaluation: d_reevaluation(),
            scan_randomization: d_randomization(),
            scan_ttl: d_ttl(),
            state_message_batch_interval: d_batch(),
            state_message_after_install: d_after_install(),
            minimum_agent_version: None,
        }
    }
}
