//! Client policies: what each client must know — catalog version, agent settings,
//! maintenance windows and its deployment assignments. Clients with the same inputs share
//! one policy document, named by the sha256 of its content (its ETag).

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::resources::{ClientSettingsSpec, MaintenanceWindow, RestartSuppression, StateMessageDetail};

/// The policy document an agent fetches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientPolicy {
    /// Catalog version to scan against (a newer one than the client's triggers a
    /// randomised scan: S2).
    pub catalog_version: u64,
    /// Git revision the policy was derived from.
    pub revision: String,
    pub settings: ClientSettingsSpec,
    /// Windows of every collection the client is a member of.
    pub maintenance_windows: Vec<MaintenanceWindow>,
    pub deployments: Vec<DeploymentAssignment>,
}

/// One deployment as a client sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentAssignment {
    pub name: String,
    /// Rollout phase the client is targeted by, when phased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Catalog ids of the deployed updates; the client installs those its scan finds Required.
    pub updates: Vec<String>,
    pub available_time: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Timestamp>,
    pub mandatory: bool,
    pub suppress_restart: RestartSuppression,
    pub honor_maintenance_windows_at_deadline: bool,
    pub state_message_detail: StateMessageDetail,
    /// The failure budget was exceeded: start no new installations.
    pub halted: bool,
}

impl ClientPolicy {
    /// The ETag: sha256 of the canonical JSON, first 16 bytes in hex.
    pub fn etag(&self) -> String {
        let body = serde_json::to_vec(self).expect("policies serialize");
        hex::encode(&Sha256::digest(&body)[..16])
    }
}
