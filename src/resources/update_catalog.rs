//! `UpdateCatalog`: where updates come from (ConfigMgr's SUP synchronization settings).

use jiff::Timestamp;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::time::Duration;

/// A source of update metadata, synchronized into the catalog on an interval.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "UpdateCatalog",
    doc = "A source of update metadata (MSRC CVRF, Debian, OSV or the native format; from a file, a URL, a git repository or the desired-state repository) synchronized into the site's catalog on an interval. Its status gives the catalog version, update count and last sync.",
    namespaced,
    status = "UpdateCatalogStatus",
    shortname = "ucat",
    category = "patchops",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Version","type":"integer","jsonPath":".status.catalogVersion"}"#,
    printcolumn = r#"{"name":"Updates","type":"integer","jsonPath":".status.updateCount"}"#,
    printcolumn = r#"{"name":"Last Sync","type":"date","jsonPath":".status.lastSyncTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCatalogSpec {
    /// Where to read the update metadata from.
    pub source: CatalogSource,
    /// The format of the source.
    #[serde(default)]
    pub format: CatalogFormat,
    /// How often to synchronize the source. Default 1h.
    #[serde(default = "default_sync_interval")]
    pub sync_interval: Duration,
    /// Product name given to updates of a source that names none (a `debian-packages`
    /// index), e.g. "Debian 12 (bookworm)".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    /// Keep only updates for these products (empty: all), as the SUP's product filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub products: Vec<String>,
    /// Keep only updates of these classifications (empty: all), as the SUP's classification filter.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classifications: Vec<String>,
    /// Largest share (percent) of this source's updates one sync may drop; default 50.
    /// A source going from some updates to none is always refused (an empty or truncated
    /// download must not wipe the catalog) unless `allowShrink` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_shrink_percent: Option<u8>,
    /// Accept a sync that shrinks this source beyond `maxShrinkPercent` (or to no
    /// updates): set it to confirm an intended shrink, then remove it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_shrink: bool,
}

/// The share of a source's updates a sync may drop unless confirmed.
pub const DEFAULT_MAX_SHRINK_PERCENT: u8 = 50;

fn default_sync_interval() -> Duration {
    Duration::from_hours(1)
}

/// Exactly one of `path`, `file`, `url` or `git`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CatalogSource {
    /// A path inside the desired-state repository, read at the same revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A file on the reconciler's machine.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// An http(s) URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A file in another git repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitCatalogSource>,
}

/// A file inside a git repository at a revision.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitCatalogSource {
    /// Repository URL or local path.
    pub url: String,
    /// Branch, tag or commit. Default: the remote's HEAD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Path of the file inside the repository.
    pub path: String,
}

/// Formats a catalog source can be written in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum CatalogFormat {
    /// patchops's own YAML/JSON format (schemas/native-catalog.schema.json).
    #[default]
    #[serde(rename = "native")]
    Native,
    /// Microsoft MSRC CVRF documents.
    #[serde(rename = "msrc-cvrf")]
    MsrcCvrf,
    /// A Debian repository `Packages` index.
    #[serde(rename = "debian-packages")]
    DebianPackages,
    /// The Debian security tracker's DSA list.
    #[serde(rename = "debian-dsa")]
    DebianDsa,
    /// OSV JSON advisories.
    #[serde(rename = "osv")]
    Osv,
    /// An RPM repository's `updateinfo.xml` (Fedora, EPEL, RHEL, Rocky, AlmaLinux, Oracle
    /// Linux, SUSE errata), or the repository itself (URL or directory with `repodata/`).
    #[serde(rename = "rpm-updateinfo")]
    RpmUpdateinfo,
}

/// What the last synchronization produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateCatalogStatus {
    /// The catalog version this source contributed to (monotonic across syncs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_version: Option<u64>,
    /// sha256 of the source's normalised content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Number of updates this source contributed.
    #[serde(default)]
    pub update_count: u64,
    /// When the source was last synchronized.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::time::opt_timestamp_schema")]
    pub last_sync_time: Option<Timestamp>,
    /// Ready / Reconciling / Stalled.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
