//! Types several kinds share: kstatus conditions and update criteria (the search-folder
//! criteria of ConfigMgr's Update Repository, reused by update lists and deployment rules).

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::catalog::Severity;

/// A kstatus condition: `Ready`, `Reconciling` or `Stalled`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type: Ready, Reconciling or Stalled.
    #[serde(rename = "type")]
    pub type_: String,
    /// "True", "False" or "Unknown".
    pub status: String,
    /// CamelCase reason a program can match on, e.g. `UpdateListNotFound`.
    pub reason: String,
    /// What happened, for a human, including what to do about it.
    pub message: String,
    /// The resource generation this condition was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the condition last changed status.
    #[schemars(schema_with = "crate::time::timestamp_schema")]
    pub last_transition_time: Timestamp,
}

impl Condition {
    pub fn new(type_: &str, status: bool, reason: &str, message: impl Into<String>, now: Timestamp) -> Self {
        Condition {
            type_: type_.to_string(),
            status: if status { "True" } else { "False" }.to_string(),
            reason: reason.to_string(),
            message: message.into(),
            observed_generation: None,
            last_transition_time: now,
        }
    }

    /// Keep the previous transition time when the status did not change, as kstatus
    /// consumers expect `lastTransitionTime` to move only on a real transition.
    pub fn carry_transition(mut self, previous: &[Condition]) -> Self {
        if let Some(p) = previous.iter().find(|p| p.type_ == self.type_)
            && p.status == self.status
        {
            self.last_transition_time = p.last_transition_time;
        }
        self
    }
}

/// Criteria that select updates from the catalog, like a ConfigMgr search folder.
/// Every given criterion must match (AND); values within one criterion are alternatives (OR).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCriteria {
    /// Update classifications, e.g. "Security Updates", "Critical Updates", "Update Rollups".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<String>,
    /// Severities (MSRC ratings): Critical, Important, Moderate, Low, Unspecified.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severities: Vec<Severity>,
    /// Products the update applies to, e.g. "Windows Server 2022".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    /// Only updates released on or after this date (YYYY-MM-DD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_date_schema")]
    pub released_after: Option<jiff::civil::Date>,
    /// Only updates released before this date (YYYY-MM-DD).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_date_schema")]
    pub released_before: Option<jiff::civil::Date>,
    /// Case-insensitive substring the update title must contain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_contains: Option<String>,
}

impl UpdateCriteria {
    pub fn is_empty(&self) -> bool {
        self == &UpdateCriteria::default()
    }
}
