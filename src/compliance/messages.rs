//! State messages: what a client reports after a scan or an installation step. Batches
//! carry the client's name and a sequence number so a retried batch is applied once.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::{Enforcement, ScanResult};

/// A batch of state messages from one client (seed S6: cached, sent every 5 minutes).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StateBatch {
    pub client: String,
    /// Increases by one per batch; a batch at or below the last applied one is a replay.
    pub sequence: u64,
    pub messages: Vec<StateMessage>,
}

/// One state message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum StateMessage {
    /// A scan finished: the applicable updates with their result. Replaces every earlier
    /// scan state of the client (updates not listed are NotRequired).
    #[serde(rename_all = "camelCase")]
    ScanCompleted {
        time: Timestamp,
        catalog_version: u64,
        #[serde(default)]
        agent_version: Option<String>,
        updates: Vec<UpdateReport>,
    },
    /// A scan failed.
    #[serde(rename_all = "camelCase")]
    ScanFailed { time: Timestamp, catalog_version: u64, error: String },
    /// An installation step of one update (download, install, reboot…).
    #[serde(rename_all = "camelCase")]
    Enforcement { time: Timestamp, update: String, state: Enforcement },
}

/// One applicable update in a scan result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateReport {
    /// Catalog id.
    pub id: String,
    pub result: ScanResult,
    #[serde(default)]
    pub enforcement: Enforcement,
}
