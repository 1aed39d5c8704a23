//! Notifications, as Flux's notification controller sends them: `NotificationProvider`s
//! (a generic webhook signed with HMAC-SHA256, Slack, Microsoft Teams, Alertmanager) and
//! `Alert`s routing events to them, filtered by collection and severity.
//!
//! After each reconcile [`after_reconcile`] derives the events users are alerted on from
//! what the reconcile produced and recorded ([`notices`], pure), renders one payload per
//! matching alert ([`payload`]) and hands it to a background sender through a bounded
//! queue ([`delivery`]): it never waits for a receiver — a full queue drops the
//! notification with a warning and a metric; the sender retries failures with exponential
//! backoff and counts them in metrics.

pub mod delivery;
pub mod payload;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::{Catalog, Severity};
use crate::desired::DesiredState;
use crate::reconcile::Event;
use crate::resources::{
    AlertEvent, AlertSpec, CompliancePolicyStatus, Condition, DeploymentRuleStatus, NotificationProviderStatus,
    UpdateDeploymentStatus,
};
use crate::store::ReconcileRecord;

/// One event users can be alerted on.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    pub event: AlertEvent,
    /// The resource it concerns (`UpdateDeployment`, `Waiver`, `CompliancePolicy`,
    /// `UpdateCatalog`, `DeploymentRule`) and its name.
    pub kind: String,
    pub name: String,
    pub message: String,
    pub time: Timestamp,
    /// The collections it concerns (none: not about a collection).
    pub collections: Vec<String>,
    /// The severity of the update it concerns, if about one severity.
    pub severity: Option<Severity>,
    /// The revision (`branch@sha1:<hex>`) the reconcile applied.
    pub revision: String,
}

/// A URL patchops can POST to: http or https with a host.
pub fn check_address(address: &str) -> Result<(), String> {
    let uri: ureq::http::Uri =
        address.parse().map_err(|e| format!("{address:?} is not a URL ({e}); give http(s)://host/path"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(h)) if !h.is_empty() => Ok(()),
        (Some(other), _) if other != "http" && other != "https" => {
            Err(format!("{address:?}: scheme {other:?} is not supported; use http or https"))
        }
        _ => Err(format!("{address:?} has no scheme or host; give http(s)://host/path")),
    }
}

/// The collections a deployment targets: its collection (or its template's), or its
/// phases'.
fn deployment_collections(desired: &DesiredState, name: &str) -> Vec<String> {
    crate::governance::sla::targets(desired, name).into_iter().map(|(c, _)| c).filter(|c| c != "-").collect()
}

fn statuses<'a, T: serde::de::DeserializeOwned>(
    record: Option<&'a ReconcileRecord>,
    kind: &'a str,
) -> impl Iterator<Item = (&'a str, T)> + 'a {
    record
        .into_iter()
        .flat_map(|r| &r.statuses)
        .filter(move |s| s.kind == kind)
        .filter_map(|s| serde_json::from_value(s.status.clone()).ok().map(|t| (s.name.as_str(), t)))
}

/// The events of one reconcile: from the core's events (RolloutHalted, a deadline passed
/// with machines not compliant, WaiverExpired) and from what changed between the previous
/// record and this one (new CompliancePolicy breaches, Critical updates new in the catalog,
/// a DeploymentRule's new proposal). Nothing is derived from a first record but the
/// core's events: everything would be new.
pub fn notices(
    desired: &DesiredState,
    catalog: &Catalog,
    previous: Option<&ReconcileRecord>,
    record: &ReconcileRecord,
    events: &[Event],
) -> Vec<Notice> {
    let now = record.time;
    let notice = |event, kind: &str, name: &str, message: String, collections: Vec<String>, severity| Notice {
        event,
        kind: kind.into(),
        name: name.into(),
        message,
        time: now,
        collections,
        severity,
        revision: record.revision.clone(),
    };
    let mut out = Vec::new();
    let deployments: BTreeMap<&str, UpdateDeploymentStatus> = statuses(Some(record), "UpdateDeployment").collect();
    for e in events {
        match e.reason.as_str() {
            "RolloutHalted" => out.push(notice(
                AlertEvent::RolloutHalted,
                &e.kind,
                &e.name,
                e.message.clone(),
                deployment_collections(desired, &e.name),
                None,
            )),
            "DeadlinePassed" => {
                let Some(s) = deployments.get(e.name.as_str()) else { continue };
                if s.targeted == 0 || s.compliance_percent >= 100.0 {
                    continue;
                }
                let deadline = s.deadline.map_or_else(|| "its deadline".to_string(), |d| d.to_string());
                out.push(notice(
                    AlertEvent::DeadlineMissed,
                    &e.kind,
                    &e.name,
                    format!(
                        "deadline {deadline} passed with {:.1} % of {} machines compliant ({} required, {} unknown)",
                        s.compliance_percent, s.targeted, s.machines.required, s.machines.unknown
                    ),
                    deployment_collections(desired, &e.name),
                    None,
                ));
            }
            "WaiverExpired" => {
                let collections = desired.waivers.get(&e.name).and_then(|w| w.spec.collection.clone());
                out.push(notice(
                    AlertEvent::WaiverExpired,
                    &e.kind,
                    &e.name,
                    e.message.clone(),
                    collections.into_iter().collect(),
                    None,
                ));
            }
            _ => {}
        }
    }
    let Some(previous) = previous else { return out };
    // New breaches of CompliancePolicy targets.
    let before: BTreeMap<&str, CompliancePolicyStatus> = statuses(Some(previous), "CompliancePolicy").collect();
    for (policy, status) in statuses::<CompliancePolicyStatus>(Some(record), "CompliancePolicy") {
        let known: BTreeSet<(&str, &str)> = before
            .get(policy)
            .map(|s| s.breaches.iter().map(|b| (b.update.as_str(), b.collection.as_str())).collect())
            .unwrap_or_default();
        for b in status.breaches.iter().filter(|b| !known.contains(&(b.update.as_str(), b.collection.as_str()))) {
            let severity = catalog.find(&b.update).first().map(|&i| catalog.updates[i as usize].severity);
            out.push(notice(
                AlertEvent::SlaBreached,
                "CompliancePolicy",
                policy,
                format!("{} on {} was due {}: {}", b.update, b.collection, b.due, b.message),
                vec![b.collection.clone()],
                severity,
            ));
        }
    }
    // Critical updates new in the catalog since the previous reconcile.
    if record.catalog_version > previous.catalog_version {
        let new: Vec<&str> = (0..catalog.len())
            .filter(|&i| {
                catalog.since_version[i] > previous.catalog_version
                    && catalog.updates[i].severity == Severity::Critical
                    && !catalog.updates[i].expired
            })
            .map(|i| catalog.updates[i].id.as_str())
            .collect();
        if !new.is_empty() {
            let shown: Vec<&str> = new.iter().take(20).copied().collect();
            let more =
                if new.len() > shown.len() { format!(" and {} more", new.len() - shown.len()) } else { String::new() };
            out.push(notice(
                AlertEvent::NewCriticalUpdates,
                "UpdateCatalog",
                "",
                format!(
                    "catalog version {} brought {} Critical update(s): {}{more}",
                    record.catalog_version,
                    new.len(),
                    shown.join(", ")
                ),
                Vec::new(),
                Some(Severity::Critical),
            ));
        }
    }
    // DeploymentRules that proposed something new.
    let proposal =
        |s: &DeploymentRuleStatus| s.conditions.iter().find(|c| c.reason == "Proposed").map(|c| c.message.clone());
    let before: BTreeMap<&str, DeploymentRuleStatus> = statuses(Some(previous), "DeploymentRule").collect();
    for (rule, status) in statuses::<DeploymentRuleStatus>(Some(record), "DeploymentRule") {
        let Some(message) = proposal(&status) else { continue };
        if before.get(rule).and_then(proposal).as_deref() == Some(message.as_str()) {
            continue;
        }
        let collections = desired.rules.get(rule).and_then(|r| r.spec.collection.clone());
        out.push(notice(
            AlertEvent::RuleProposed,
            "DeploymentRule",
            rule,
            message,
            collections.into_iter().collect(),
            None,
        ));
    }
    out
}

/// Whether an alert passes a notice.
pub fn routes(alert: &AlertSpec, n: &Notice) -> bool {
    !alert.suspend
        && alert.events.contains(&n.event)
        && (alert.collections.is_empty()
            || n.collections.is_empty()
            || n.collections.iter().any(|c| alert.collections.contains(c)))
        && (alert.severities.is_empty() || n.severity.is_none_or(|s| alert.severities.contains(&s)))
}

/// After a reconcile was saved: derive its notices and queue one delivery per notice and
/// matching alert on the process's sender. Returns at once; nothing here waits for a
/// receiver.
pub fn after_reconcile(
    desired: &DesiredState,
    catalog: &Catalog,
    previous: Option<&ReconcileRecord>,
    record: &ReconcileRecord,
    events: &[Event],
) {
    if desired.alerts.is_empty() {
        return;
    }
    let notices = notices(desired, catalog, previous, record, events);
    if notices.is_empty() {
        return;
    }
    let sender = delivery::Sender::global();
    for (alert_name, alert) in &desired.alerts {
        let Some(provider) = desired.notification_providers.get(&alert.spec.provider_ref.name) else { continue };
        for n in notices.iter().filter(|n| routes(&alert.spec, n)) {
            match payload::render(&alert.spec.provider_ref.name, &provider.spec, alert_name, &alert.spec, n) {
                Ok(d) => sender.send(d),
                Err(e) => {
                    tracing::warn!(provider = %alert.spec.provider_ref.name, alert = %alert_name, "notification not sent: {e}");
                    delivery::counters().failed(&alert.spec.provider_ref.name);
                    delivery::record_attempt(&alert.spec.provider_ref.name, Some(e.to_string()));
                }
            }
        }
    }
}

/// Each provider's status, from this process's deliveries: Ready while its last delivery
/// was accepted (or before the first), not Ready with the error while its last attempt
/// failed, so `status` and `kubectl get notificationproviders` show a broken receiver.
pub fn provider_statuses(desired: &DesiredState, now: Timestamp) -> BTreeMap<String, NotificationProviderStatus> {
    let status = |name: &str| {
        let ready = match delivery::last_attempt(name) {
            None => Condition::new("Ready", true, "NoDeliveryYet", "no notification sent yet", now),
            Some(delivery::LastAttempt { time, error: None }) => {
                Condition::new("Ready", true, "Delivered", format!("last notification delivered at {time}"), time)
            }
            Some(delivery::LastAttempt { time, error: Some(e) }) => Condition::new(
                "Ready",
                false,
                "DeliveryFailed",
                format!(
                    "last delivery failed at {time}: {e}; check spec.address and the receiver (retried with backoff)"
                ),
                time,
            ),
        };
        NotificationProviderStatus { conditions: vec![ready] }
    };
    desired.notification_providers.keys().map(|name| (name.clone(), status(name))).collect()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;
    use crate::store::ResourceStatus;
    use serde_json::json;
    use std::collections::HashMap;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const DESIRED: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov}
spec:
  updates: [KB1-srv]
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateDeployment
metadata: {name: nov-servers}
spec:
  updateList: nov
  collection: servers
  startTime: 2026-11-09T00:00:00Z
  deadline: 2026-11-14T00:00:00Z
"#;

    fn record(time: &str, catalog_version: u64, statuses: Vec<(&str, &str, serde_json::Value)>) -> ReconcileRecord {
        ReconcileRecord {
            time: at(time),
            revision: "main@sha1:abc".into(),
            catalog_version,
            statuses: statuses
                .into_iter()
                .map(|(kind, name, status)| ResourceStatus {
                    kind: kind.into(),
                    namespace: "default".into(),
                    name: name.into(),
                    status,
                })
                .collect(),
        }
    }

    #[test]
    fn a_provider_whose_last_delivery_failed_is_not_ready_and_says_why() {
        let desired = DesiredState::load_in(
            "main@sha1:0",
            None,
            &[(
                "p.yaml".into(),
                "apiVersion: patchops.dev/v1alpha1\nkind: NotificationProvider\nmetadata: {name: status-test-hook}\n\
                 spec: {type: generic, address: \"http://127.0.0.1:9/hook\"}\n---\n\
                 apiVersion: patchops.dev/v1alpha1\nkind: NotificationProvider\nmetadata: {name: status-test-other}\n\
                 spec: {type: slack, address: \"http://127.0.0.1:9/slack\"}\n"
                    .into(),
            )],
        )
        .unwrap();
        let now = at("2026-11-20T12:00:00Z");
        let ready = |name: &str| provider_statuses(&desired, now)[name].conditions[0].clone();
        assert_eq!(
            (ready("status-test-hook").status.as_str(), ready("status-test-hook").reason.as_str()),
            ("True", "NoDeliveryYet")
        );
        delivery::record_attempt("status-test-hook", Some("http://127.0.0.1:9/hook answered 500".into()));
        let failed = ready("status-test-hook");
        assert_eq!((failed.status.as_str(), failed.reason.as_str()), ("False", "DeliveryFailed"));
        assert!(failed.message.contains("answered 500") && failed.message.contains("spec.address"), "{failed:?}");
        assert_eq!(ready("status-test-other").status, "True", "another provider is not affected");
        delivery::record_attempt("status-test-hook", None);
        assert_eq!(ready("status-test-hook").reason, "Delivered");
    }

    fn deadline_event() -> Event {
        Event {
            kind: "UpdateDeployment".into(),
            name: "nov-servers".into(),
            reason: "DeadlinePassed".into(),
            message: "deadline reached".into(),
            time: at("2026-11-14T00:00:00Z"),
            severity: crate::reconcile::Severity::Normal,
        }
    }

    fn breach(update: &str) -> serde_json::Value {
        json!({"update": update, "collection": "servers", "due": "2026-11-17T00:00:00Z", "message": "no deployment"})
    }

    fn proposed(message: &str) -> serde_json::Value {
        json!({"conditions": [{"type": "Ready", "status": "True", "reason": "Proposed", "message": message, "lastTransitionTime": "2026-11-20T00:00:00Z"}]})
    }

    #[test]
    fn notices_come_from_the_core_events_and_from_what_changed_since_the_previous_record() {
        let desired = DesiredState::load("main@sha1:0", &[("d.yaml".into(), DESIRED.into())]).unwrap();
        let mut low = update("KB3-srv", "P", "2026-11-10");
        low.severity = Severity::Low;
        let since = HashMap::from([("KB1-srv".to_string(), 1), ("KB2-srv".to_string(), 2), ("KB3-srv".to_string(), 2)]);
        let catalog = Catalog::new(
            2,
            vec![update("KB1-srv", "P", "2026-11-10"), update("KB2-srv", "P", "2026-11-12"), low],
            &since,
        );
        let deployment = |percent: f64| json!({"phase": "PastDeadline", "targeted": 10, "compliancePercent": percent, "deadline": "2026-11-14T00:00:00Z", "machines": {"compliant": 0, "required": 4, "unknown": 1, "failed": 0, "pendingReboot": 0}});
        let before = record(
            "2026-11-19T00:00:00Z",
            1,
            vec![
                ("CompliancePolicy", "baseline", json!({"breachCount": 1, "breaches": [breach("KB1-srv")]})),
                ("DeploymentRule", "monthly", proposed("proposed branch patchops/rule-monthly-1")),
            ],
        );
        // (case, previous record, this record, events, expected "event kind/name collections severity")
        type Case = (&'static str, Option<ReconcileRecord>, ReconcileRecord, Vec<Event>, Vec<&'static str>);
        let cases: Vec<Case> = vec![
            (
                "a deadline passed with machines not compliant",
                None,
                record("2026-11-20T00:00:00Z", 1, vec![("UpdateDeployment", "nov-servers", deployment(60.0))]),
                vec![deadline_event()],
                vec!["DeadlineMissed UpdateDeployment/nov-servers [servers] None"],
            ),
            (
                "a deadline passed with every machine compliant",
                None,
                record("2026-11-20T00:00:00Z", 1, vec![("UpdateDeployment", "nov-servers", deployment(100.0))]),
                vec![deadline_event()],
                vec![],
            ),
            (
                "a first record: only the core's events",
                None,
                record(
                    "2026-11-20T00:00:00Z",
                    2,
                    vec![("CompliancePolicy", "baseline", json!({"breaches": [breach("KB2-srv")]}))],
                ),
                vec![],
                vec![],
            ),
            (
                "a new breach, a new Critical update, a new proposal",
                Some(before.clone()),
                record(
                    "2026-11-20T00:00:00Z",
                    2,
                    vec![
                        ("CompliancePolicy", "baseline", json!({"breaches": [breach("KB1-srv"), breach("KB2-srv")]})),
                        ("DeploymentRule", "monthly", proposed("proposed branch patchops/rule-monthly-2")),
                    ],
                ),
                vec![],
                vec![
                    "SlaBreached CompliancePolicy/baseline [servers] Some(Critical)",
                    "NewCriticalUpdates UpdateCatalog/ [] Some(Critical)",
                    "RuleProposed DeploymentRule/monthly [] None",
                ],
            ),
            (
                "nothing new",
                Some(before.clone()),
                record(
                    "2026-11-20T00:00:00Z",
                    1,
                    before.statuses.iter().map(|s| (s.kind.as_str(), s.name.as_str(), s.status.clone())).collect(),
                ),
                vec![],
                vec![],
            ),
        ];
        for (name, previous, now, events, expected) in cases {
            let got: Vec<String> = notices(&desired, &catalog, previous.as_ref(), &now, &events)
                .iter()
                .map(|n| format!("{:?} {}/{} [{}] {:?}", n.event, n.kind, n.name, n.collections.join(","), n.severity))
                .collect();
            assert_eq!(got, expected, "{name}");
        }
        let critical = notices(&desired, &catalog, Some(&before), &record("2026-11-20T00:00:00Z", 2, vec![]), &[]);
        assert_eq!(critical[0].message, "catalog version 2 brought 1 Critical update(s): KB2-srv");
    }

    #[test]
    fn alerts_route_by_event_collection_and_severity() {
        let alert = |collections: &[&str], severities: Vec<Severity>, suspend| AlertSpec {
            provider_ref: crate::resources::ProviderRef { name: "p".into() },
            events: vec![AlertEvent::SlaBreached, AlertEvent::NewCriticalUpdates],
            collections: collections.iter().map(|c| c.to_string()).collect(),
            severities,
            summary: None,
            suspend,
        };
        let notice = |event, collections: &[&str], severity| Notice {
            event,
            kind: "CompliancePolicy".into(),
            name: "baseline".into(),
            message: String::new(),
            time: at("2026-11-20T00:00:00Z"),
            collections: collections.iter().map(|c| c.to_string()).collect(),
            severity,
            revision: String::new(),
        };
        use AlertEvent::*;
        let c = Some(Severity::Critical);
        // (alert, notice, routed)
        let cases = [
            (alert(&[], vec![], false), notice(SlaBreached, &["servers"], c), true),
            (alert(&[], vec![], true), notice(SlaBreached, &["servers"], c), false),
            (alert(&[], vec![], false), notice(RolloutHalted, &["servers"], None), false),
            (alert(&["servers"], vec![], false), notice(SlaBreached, &["servers"], c), true),
            (alert(&["desktops"], vec![], false), notice(SlaBreached, &["servers"], c), false),
            (alert(&["desktops"], vec![], false), notice(NewCriticalUpdates, &[], c), true),
            (alert(&[], vec![Severity::Important], false), notice(SlaBreached, &["servers"], c), false),
            (alert(&[], vec![Severity::Critical], false), notice(SlaBreached, &["servers"], c), true),
            (alert(&[], vec![Severity::Important], false), notice(SlaBreached, &["servers"], None), true),
        ];
        for (i, (a, n, expected)) in cases.into_iter().enumerate() {
            assert_eq!(routes(&a, &n), expected, "case {i}");
        }
    }
}
