//! `Collection`: a set of machines chosen by their facts, and its maintenance windows.

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::Condition;
use crate::time::Duration;

/// Machines selected by label selector over client facts (os, site, role, hostname…),
/// explicit names, and other collections; with the maintenance windows in which
/// updates may install.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "Collection",
    doc = "A set of machines (a ConfigMgr device collection) chosen by a selector over client facts, explicit names and other collections, with the maintenance windows in which updates may install. Its status gives the member count and the next window.",
    namespaced,
    status = "CollectionStatus",
    shortname = "coll",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.memberCount"}"#,
    printcolumn = r#"{"name":"Next Window","type":"string","jsonPath":".status.nextWindow"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct CollectionSpec {
    /// Machines whose facts match this selector (all given terms must match).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<FactSelector>,
    /// Machines by name, in addition to the selector.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Members of these collections are members of this one too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include_collections: Vec<String>,
    /// Members of these collections are never members of this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_collections: Vec<String>,
    /// When updates may install on members. No window: install at once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub maintenance_windows: Vec<MaintenanceWindow>,
}

/// A label selector over client facts, as Kubernetes label selectors work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactSelector {
    /// Facts that must have exactly these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub match_facts: BTreeMap<String, String>,
    /// Set-based requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<FactRequirement>,
}

/// One set-based requirement on a fact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FactRequirement {
    /// Fact name, e.g. `os`, `site`, `role`, `hostname`.
    pub key: String,
    /// In, NotIn, Exists, DoesNotExist, or Prefix (any value starting with one of `values`).
    pub operator: FactOperator,
    /// Values for In, NotIn and Prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

/// Selector operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum FactOperator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Prefix,
}

/// A recurring maintenance window in a time zone.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MaintenanceWindow {
    /// Window name.
    pub name: String,
    /// Local start time, `HH:MM`.
    pub start: String,
    /// How long the window stays open.
    pub duration: Duration,
    /// IANA time zone the start time is in, e.g. `Europe/Berlin`. Default UTC.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// How the window recurs.
    pub recurrence: Recurrence,
    /// Days of week for `Weekly` and `MonthlyByWeekday` (Monday … Sunday).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days_of_week: Vec<Weekday>,
    /// Week of the month for `MonthlyByWeekday`: 1–4, or -1 for the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub week_of_month: Option<i8>,
    /// Days added after the weekday for `MonthlyByWeekday` (e.g. Patch Tuesday + 4).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset_days: Option<i16>,
    /// Day of the month for `MonthlyByDate`: 1–31 (clamped to the month's length), or 0 for the last day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day_of_month: Option<i8>,
    /// Date (YYYY-MM-DD) for `Once`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_date_schema")]
    pub date: Option<jiff::civil::Date>,
}

fn utc() -> String {
    "UTC".to_string()
}

/// Recurrence patterns, as ConfigMgr's schedules offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Recurrence {
    Once,
    Daily,
    Weekly,
    MonthlyByWeekday,
    MonthlyByDate,
}

/// Day of the week.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

impl From<Weekday> for jiff::civil::Weekday {
    fn from(w: Weekday) -> Self {
        use jiff::civil::Weekday as J;
        match w {
            Weekday::Monday => J::Monday,
            Weekday::Tuesday => J::Tuesday,
            Weekday::Wednesday => J::Wednesday,
            Weekday::Thursday => J::Thursday,
            Weekday::Friday => J::Friday,
            Weekday::Saturday => J::Saturday,
            Weekday::Sunday => J::Sunday,
        }
    }
}

/// Membership and the next window.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CollectionStatus {
    /// Number of member machines.
    #[serde(default)]
    pub member_count: u64,
    /// Start of the next (or current) maintenance window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub next_window: Option<Timestamp>,
    /// End of that window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub next_window_end: Option<Timestamp>,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
