//! `NotificationProvider`: where patchops sends notifications, as Flux's notification
//! controller names it — a generic webhook (JSON, signed with HMAC-SHA256 when a secret
//! is given), Slack, Microsoft Teams, or Alertmanager's webhook API. `Alert`s choose which
//! events go to it.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Condition;
use crate::time::Duration;

/// A notification endpoint and how to talk to it.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "patchops.dev",
    version = "v1alpha1",
    kind = "NotificationProvider",
    doc = "A notification endpoint: a generic JSON webhook (signed with HMAC-SHA256 in the X-Signature header when a secret is given), a Slack or Microsoft Teams incoming webhook, or an Alertmanager. Alerts name it to say which events it receives; delivery is retried with backoff and never holds up a reconcile.",
    namespaced,
    status = "NotificationProviderStatus",
    shortname = "nprov",
    category = "patchops",
    printcolumn = r#"{"name":"Type","type":"string","jsonPath":".spec.type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct NotificationProviderSpec {
    /// generic (JSON event, HMAC-signed when a secret is given), slack, msteams or
    /// alertmanager.
    #[serde(rename = "type")]
    pub type_: ProviderType,
    /// The URL events are POSTed to (http or https): the webhook URL, or Alertmanager's
    /// `/api/v2/alerts` endpoint.
    pub address: String,
    /// A Kubernetes Secret mounted into patchops' pod (read from
    /// `$PATCHOPS_SECRETS_DIR/<name>/<key>`, default directory /var/run/secrets/patchops)
    /// holding the HMAC key of a generic webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,
    /// A file on the machine running patchops whose first line is the HMAC key (instead of
    /// secretRef).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_file: Option<String>,
    /// Slack: the channel to post to, when the webhook allows overriding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// How long one delivery attempt may take before it counts as failed (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// The wire formats patchops speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ProviderType {
    /// The event as JSON; `X-Signature: sha256=<hex HMAC-SHA256 of the body>` with a secret.
    Generic,
    /// A Slack incoming webhook (text and an attachment).
    Slack,
    /// A Microsoft Teams incoming webhook (a MessageCard).
    Msteams,
    /// Alertmanager's API v2: a list of alerts with labels and annotations.
    Alertmanager,
}

/// A key of a Kubernetes Secret.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key within the Secret (default `token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// Whether deliveries to the provider succeed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationProviderStatus {
    /// Ready (the last delivery succeeded) or not, with the last error.
    #[serde(default)]
    pub conditions: Vec<Condition>,
}
