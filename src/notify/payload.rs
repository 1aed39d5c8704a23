//! The wire format of each provider type, and the HMAC signature of generic webhooks.

use std::path::PathBuf;

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};

use super::Notice;
use super::delivery::Delivery;
use crate::resources::{AlertEvent, AlertSpec, NotificationProviderSpec, ProviderType};

/// The header a generic webhook's signature travels in, as Flux's `generic-hmac`.
pub const SIGNATURE_HEADER: &str = "X-Signature";

/// `sha256=<hex HMAC-SHA256 of body under key>`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2_11::Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Where a mounted Kubernetes Secret's keys are read from.
pub fn secrets_dir() -> PathBuf {
    std::env::var_os("PATCHOPS_SECRETS_DIR").map_or_else(|| PathBuf::from("/var/run/secrets/patchops"), PathBuf::from)
}

/// The provider's HMAC key: the first line of its secret file or mounted Secret key.
fn secret(spec: &NotificationProviderSpec) -> Result<Option<Vec<u8>>, String> {
    let path = match (&spec.secret_file, &spec.secret_ref) {
        (Some(f), _) => PathBuf::from(f),
        (None, Some(r)) => secrets_dir().join(&r.name).join(r.key.as_deref().unwrap_or("token")),
        (None, None) => return Ok(None),
    };
    let text =
        std::fs::read_to_string(&path).map_err(|e| format!("cannot read the HMAC key from {}: {e}", path.display()))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(format!("{}: the file is empty; write the HMAC key on its first line", path.display()));
    }
    Ok(Some(key.as_bytes().to_vec()))
}

fn event_name(e: AlertEvent) -> String {
    format!("{e:?}")
}

fn is_error(e: AlertEvent) -> bool {
    matches!(e, AlertEvent::RolloutHalted | AlertEvent::DeadlineMissed | AlertEvent::SlaBreached)
}

fn title(n: &Notice) -> String {
    let object = if n.name.is_empty() { n.kind.clone() } else { format!("{}/{}", n.kind, n.name) };
    format!("{}: {object}", event_name(n.event))
}

/// The body (JSON) each provider type expects.
pub fn body(type_: ProviderType, spec: &NotificationProviderSpec, alert: &str, a: &AlertSpec, n: &Notice) -> Value {
    let mut facts: Vec<(&str, String)> = vec![("revision", n.revision.clone())];
    if !n.collections.is_empty() {
        facts.push(("collections", n.collections.join(", ")));
    }
    if let Some(s) = n.severity {
        facts.push(("severity", format!("{s:?}")));
    }
    let text = match &a.summary {
        Some(s) => format!("{}\n{s}", n.message),
        None => n.message.clone(),
    };
    match type_ {
        ProviderType::Generic => json!({
            "event": event_name(n.event),
            "involvedObject": {"kind": n.kind, "name": n.name},
            "message": n.message,
            "summary": a.summary,
            "timestamp": n.time,
            "collections": n.collections,
            "severity": n.severity,
            "revision": n.revision,
            "alert": alert,
        }),
        ProviderType::Slack => {
            let mut v = json!({
                "username": "patchops",
                "text": title(n),
                "attachments": [{
                    "color": if is_error(n.event) { "danger" } else { "good" },
                    "title": title(n),
                    "text": text,
                    "fields": facts.iter().map(|(k, v)| json!({"title": k, "value": v, "short": true})).collect::<Vec<_>>(),
                    "ts": n.time.as_second(),
                }],
            });
            if let Some(c) = &spec.channel {
                v["channel"] = json!(c);
            }
            v
        }
        ProviderType::Msteams => json!({
            "@type": "MessageCard",
            "@context": "https://schema.org/extensions",
            "themeColor": if is_error(n.event) { "FF0000" } else { "0076D7" },
            "summary": title(n),
            "title": title(n),
            "text": text,
            "sections": [{
                "facts": facts.iter().map(|(k, v)| json!({"name": k, "value": v})).collect::<Vec<_>>(),
            }],
        }),
        ProviderType::Alertmanager => {
            let mut labels = serde_json::Map::new();
            labels.insert("alertname".into(), json!(event_name(n.event)));
            labels.insert("kind".into(), json!(n.kind));
            if !n.name.is_empty() {
                labels.insert("name".into(), json!(n.name));
            }
            if !n.collections.is_empty() {
                labels.insert("collection".into(), json!(n.collections.join(",")));
            }
            labels.insert(
                "severity".into(),
                json!(n.severity.map_or_else(
                    || if is_error(n.event) { "error".to_string() } else { "info".to_string() },
                    |s| format!("{s:?}").to_ascii_lowercase()
                )),
            );
            labels.insert("alert".into(), json!(alert));
            json!([{
                "labels": labels,
                "annotations": {"message": n.message, "summary": a.summary.clone().unwrap_or_else(|| title(n)), "revision": n.revision},
                "startsAt": n.time,
            }])
        }
    }
}

/// One delivery of a notice to a provider: the body and headers, signed when the provider
/// has a secret.
pub fn render(
    provider: &str,
    spec: &NotificationProviderSpec,
    alert: &str,
    a: &AlertSpec,
    n: &Notice,
) -> Result<Delivery, String> {
    let body = serde_json::to_vec(&body(spec.type_, spec, alert, a, n)).expect("JSON values serialize");
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    if spec.type_ == ProviderType::Generic
        && let Some(key) = secret(spec)?
    {
        headers.push((SIGNATURE_HEADER.to_string(), signature(&key, &body)));
    }
    Ok(Delivery {
        provider: provider.to_string(),
        address: spec.address.clone(),
        headers,
        body,
        timeout: spec
            .timeout
            .map_or(std::time::Duration::from_secs(10), |t| std::time::Duration::from_secs(t.as_secs().max(1) as u64)),
    })
}

#[cfg(test)]
mod test {
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn the_signature_is_hmac_sha256_of_the_body() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
