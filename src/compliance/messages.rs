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

/// One state message. Read through [`WireMessage`], in one pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields, try_from = "WireMessage")]
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

/// A state message as it arrives: the fields of every kind, checked against its `type`
/// once read. (serde reads an internally tagged enum by first copying the whole message
/// into a buffer, which for a scan is hundreds of update reports; this reads them once.)
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct WireMessage {
    #[serde(rename = "type")]
    kind: MessageKind,
    time: Timestamp,
    catalog_version: Option<u64>,
    agent_version: Option<String>,
    updates: Option<Vec<UpdateReport>>,
    error: Option<String>,
    update: Option<String>,
    state: Option<Enforcement>,
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "camelCase")]
enum MessageKind {
    ScanCompleted,
    ScanFailed,
    Enforcement,
}

impl TryFrom<WireMessage> for StateMessage {
    type Error = String;

    fn try_from(m: WireMessage) -> Result<StateMessage, String> {
        let kind = m.kind;
        let name = match kind {
            MessageKind::ScanCompleted => "scanCompleted",
            MessageKind::ScanFailed => "scanFailed",
            MessageKind::Enforcement => "enforcement",
        };
        let missing = |field: &str| format!("missing field `{field}` (a {name} message needs it)");
        let present = [
            ("catalogVersion", m.catalog_version.is_some()),
            ("agentVersion", m.agent_version.is_some()),
            ("updates", m.updates.is_some()),
            ("error", m.error.is_some()),
            ("update", m.update.is_some()),
            ("state", m.state.is_some()),
        ];
        let allowed: &[&str] = match kind {
            MessageKind::ScanCompleted => &["catalogVersion", "agentVersion", "updates"],
            MessageKind::ScanFailed => &["catalogVersion", "error"],
            MessageKind::Enforcement => &["update", "state"],
        };
        if let Some((field, _)) = present.iter().find(|(field, here)| *here && !allowed.contains(field)) {
            return Err(format!("unknown field `{field}` in a {name} message (expected {})", allowed.join(", ")));
        }
        Ok(match kind {
            MessageKind::ScanCompleted => StateMessage::ScanCompleted {
                time: m.time,
                catalog_version: m.catalog_version.ok_or_else(|| missing("catalogVersion"))?,
                agent_version: m.agent_version,
                updates: m.updates.ok_or_else(|| missing("updates"))?,
            },
            MessageKind::ScanFailed => StateMessage::ScanFailed {
                time: m.time,
                catalog_version: m.catalog_version.ok_or_else(|| missing("catalogVersion"))?,
                error: m.error.ok_or_else(|| missing("error"))?,
            },
            MessageKind::Enforcement => StateMessage::Enforcement {
                time: m.time,
                update: m.update.ok_or_else(|| missing("update"))?,
                state: m.state.ok_or_else(|| missing("state"))?,
            },
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn parse(json: &str) -> Result<StateMessage, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn s6_every_kind_of_state_message_reads_back_what_was_written() {
        let time: Timestamp = "2026-11-24T07:00:00Z".parse().unwrap();
        let report = |id: &str, result| UpdateReport { id: id.into(), result, enforcement: Enforcement::Installing };
        for message in [
            StateMessage::ScanCompleted {
                time,
                catalog_version: 7,
                agent_version: Some("2.1.0".into()),
                updates: vec![report("KB1", ScanResult::Missing), report("KB2", ScanResult::Installed)],
            },
            StateMessage::ScanCompleted { time, catalog_version: 0, agent_version: None, updates: vec![] },
            StateMessage::ScanFailed { time, catalog_version: 3, error: "the catalog is unreadable".into() },
            StateMessage::Enforcement { time, update: "KB1".into(), state: Enforcement::PendingReboot },
        ] {
            let json = serde_json::to_string(&message).unwrap();
            assert_eq!(parse(&json).as_ref(), Ok(&message), "{json}");
        }
        // Fields in any order, the type last.
        let late = r#"{"updates": [], "time": "2026-11-24T07:00:00Z", "catalogVersion": 1, "type": "scanCompleted"}"#;
        assert!(matches!(parse(late), Ok(StateMessage::ScanCompleted { catalog_version: 1, .. })));
    }

    #[test]
    fn a_state_message_missing_a_field_or_carrying_another_kinds_is_refused_by_name() {
        let t = r#""time": "2026-11-24T07:00:00Z""#;
        for (json, expected) in [
            (format!(r#"{{"type": "scanCompleted", {t}, "updates": []}}"#), "missing field `catalogVersion`"),
            (format!(r#"{{"type": "scanFailed", {t}, "catalogVersion": 1}}"#), "missing field `error`"),
            (format!(r#"{{"type": "enforcement", {t}, "update": "KB1"}}"#), "missing field `state`"),
            (r#"{"type": "scanCompleted", "catalogVersion": 1, "updates": []}"#.to_string(), "missing field `time`"),
            (
                format!(r#"{{"type": "scanFailed", {t}, "catalogVersion": 1, "error": "x", "updates": []}}"#),
                "unknown field `updates` in a scanFailed message",
            ),
            (
                format!(r#"{{"type": "enforcement", {t}, "update": "KB1", "state": "Installing", "extra": 1}}"#),
                "unknown field `extra`",
            ),
            (format!(r#"{{"type": "rebooted", {t}}}"#), "unknown variant `rebooted`"),
        ] {
            let error = parse(&json).unwrap_err();
            assert!(error.contains(expected), "{json}: {error}");
            // As it arrives, in a batch: the position is named.
            let batch = format!(r#"{{"client": "web-01", "sequence": 1, "messages": [{json}]}}"#);
            let error = serde_json::from_str::<StateBatch>(&batch).unwrap_err().to_string();
            assert!(error.contains(expected) && error.contains("line 1 column"), "{batch}: {error}");
        }
    }
}
