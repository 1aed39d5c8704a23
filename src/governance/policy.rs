//! CompliancePolicy decisions: which declarations of a revision break a policy (a deadline
//! later than the target allows, a deployment without a failure budget, a waiver running
//! longer than allowed) and which updates are overdue now (a breach). Pure: the revision's
//! commit time and `now` are passed.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::Serialize;

use crate::catalog::Catalog;
use crate::desired::DesiredState;
use crate::reconcile::resolve::{matches, resolve};
use crate::reconcile::timing::{Timing, effective_settings};
use crate::resources::{CompliancePolicyStatus, Condition, PolicyBreach};

/// One declaration that breaks a policy, located where it is declared.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    pub file: String,
    pub line: usize,
    /// The resource at fault, e.g. `UpdateDeployment nov-servers`.
    pub resource: String,
    pub field: String,
    pub message: String,
    /// The CompliancePolicy it breaks.
    pub policy: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {}: {}: {} (CompliancePolicy {})",
            self.file, self.line, self.resource, self.field, self.message, self.policy
        )
    }
}

fn located(desired: &DesiredState, kind: &str, name: &str, field: &str, message: String, policy: &str) -> Violation {
    let origin = desired.origins.get(&(kind.to_string(), name.to_string()));
    Violation {
        file: origin.map_or_else(String::new, |o| o.file.clone()),
        line: origin.map_or(0, |o| o.line),
        resource: format!("{kind} {name}"),
        field: field.into(),
        message,
        policy: policy.into(),
    }
}

/// The midnight (UTC) starting a release date: the clock of a deadline target starts then.
pub(crate) fn released_at(date: jiff::civil::Date) -> Timestamp {
    date.to_zoned(jiff::tz::TimeZone::UTC).map(|z| z.timestamp()).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// Everything a revision declares that breaks one of its policies. `committed`: when the
/// revision was committed (a waiver's length counts from it, so a waiver accepted at merge
/// stays accepted as time passes).
pub fn violations(desired: &DesiredState, catalog: &Catalog, committed: Timestamp) -> Vec<Violation> {
    let mut out = Vec::new();
    for (policy, p) in &desired.compliance_policies {
        if p.spec.require_failure_budget {
            for name in desired.deployments.iter().filter(|(_, d)| d.spec.failure_budget.is_none()).map(|(n, _)| n) {
                out.push(located(
                    desired,
                    "UpdateDeployment",
                    name,
                    "spec.failureBudget",
                    "no failure budget: give maxFailed or maxFailedPercent so a failing rollout halts".into(),
                    policy,
                ));
            }
        }
        if let Some(max) = p.spec.max_waiver_duration {
            let latest = crate::time::add(committed, max.signed());
            for (name, w) in desired.waivers.iter().filter(|(_, w)| w.spec.expires > latest) {
                out.push(located(
                    desired,
                    "Waiver",
                    name,
                    "spec.expires",
                    format!(
                        "expires {}, more than {max} after the commit ({committed}); expire it by {latest} and renew it then",
                        w.spec.expires
                    ),
                    policy,
                ));
            }
        }
    }
    out.extend(deadlines(desired, catalog, None).0);
    out.sort();
    out.dedup();
    out
}

/// A deployment as deadline targets see it: name, deployed catalog indices (sorted), target
/// collections, deadline.
type Targeted<'a> = (&'a String, Vec<u32>, Vec<&'a str>, Option<Timestamp>);

/// Deadline targets: the deployments whose deadline is later than a target allows
/// (violations), and — with `now` — per policy the updates overdue now (breaches).
fn deadlines(
    desired: &DesiredState,
    catalog: &Catalog,
    now: Option<Timestamp>,
) -> (Vec<Violation>, BTreeMap<String, Vec<PolicyBreach>>) {
    let mut violations = Vec::new();
    let mut breaches: BTreeMap<String, Vec<PolicyBreach>> = BTreeMap::new();
    if desired.compliance_policies.values().all(|p| p.spec.deadlines.is_empty()) {
        return (violations, breaches);
    }
    // Per deployment: deployed catalog indices (sorted), target collections, deadline.
    let deployments: Vec<Targeted> = desired
        .deployments
        .iter()
        .map(|(name, d)| {
            let updates = desired
                .update_lists
                .get(&d.spec.update_list)
                .map(|l| resolve(&l.spec, catalog).deployed(catalog))
                .unwrap_or_default();
            let template = d.spec.template.as_ref().and_then(|t| desired.templates.get(t)).map(|t| t.spec.settings());
            let settings = effective_settings(&d.spec, template);
            let mut collections: Vec<&str> = d.spec.phases.iter().map(|p| p.collection.as_str()).collect();
            if d.spec.phases.is_empty()
                && let Some(c) = d.spec.collection.as_deref().or(template_collection(desired, d))
            {
                collections.push(c);
            }
            (name, updates, collections, Timing::of(&d.spec, &settings).deadline)
        })
        .collect();
    for (policy, p) in &desired.compliance_policies {
        for t in &p.spec.deadlines {
            for (i, u) in catalog.updates.iter().enumerate() {
                if u.expired || catalog.is_superseded(i as u32) || !matches(&t.criteria, u) {
                    continue;
                }
                let due = crate::time::add(released_at(u.released), t.within.signed());
                let covering: Vec<_> = deployments
                    .iter()
                    .filter(|(_, ups, cols, _)| {
                        cols.contains(&t.collection.as_str()) && ups.binary_search(&(i as u32)).is_ok()
                    })
                    .collect();
                if covering.iter().any(|(_, _, _, deadline)| deadline.is_some_and(|d| d <= due)) {
                    continue;
                }
                for (name, _, _, deadline) in &covering {
                    let when = deadline.map_or_else(|| "no deadline".to_string(), |d| format!("deadline {d}"));
                    violations.push(located(
                        desired,
                        "UpdateDeployment",
                        name,
                        "spec.deadline",
                        format!(
                            "deploys {} to {} with {when}, later than its release ({}) + {} = {due}",
                            u.id, t.collection, u.released, t.within
                        ),
                        policy,
                    ));
                }
                if now.is_some_and(|n| n >= due) {
                    let message = if covering.is_empty() {
                        format!("released {}, no deployment to {} yet; due {due}", u.released, t.collection)
                    } else {
                        let names: Vec<&str> = covering.iter().map(|c| c.0.as_str()).collect();
                        format!("released {}; {} set a deadline after {due}", u.released, names.join(", "))
                    };
                    breaches.entry(policy.clone()).or_default().push(PolicyBreach {
                        update: u.id.clone(),
                        collection: t.collection.clone(),
                        due,
                        message,
                    });
                }
            }
        }
    }
    for list in breaches.values_mut() {
        list.sort_by(|a, b| (a.due, &a.update, &a.collection).cmp(&(b.due, &b.update, &b.collection)));
    }
    (violations, breaches)
}

fn template_collection<'a>(desired: &'a DesiredState, d: &crate::resources::UpdateDeployment) -> Option<&'a str> {
    d.spec.template.as_ref().and_then(|t| desired.templates.get(t)).and_then(|t| t.spec.collection.as_deref())
}

/// Every policy's status at `now`: the updates overdue on their collection.
pub fn statuses(desired: &DesiredState, catalog: &Catalog, now: Timestamp) -> BTreeMap<String, CompliancePolicyStatus> {
    let (_, mut breaches) = deadlines(desired, catalog, Some(now));
    desired
        .compliance_policies
        .keys()
        .map(|name| {
            let list = breaches.remove(name).unwrap_or_default();
            let condition = if list.is_empty() {
                Condition::new("Ready", true, "NoBreach", "every target is met", now)
            } else {
                Condition::new(
                    "Ready",
                    false,
                    "TargetBreached",
                    format!(
                        "{} update(s) not due in time; the first: {} on {}",
                        list.len(),
                        list[0].update,
                        list[0].collection
                    ),
                    now,
                )
            };
            let status =
                CompliancePolicyStatus { breach_count: list.len() as u64, breaches: list, conditions: vec![condition] };
            (name.clone(), status)
        })
        .collect()
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::catalog::test_support::update;
    use std::collections::HashMap;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    const POLICY: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: CompliancePolicy
metadata: {name: baseline}
spec:
  deadlines:
    - collection: servers
      criteria: {severities: [Critical], releasedAfter: 2026-11-01}
      within: 7d
  requireFailureBudget: true
  maxWaiverDuration: 90d
---
apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: UpdateList
metadata: {name: nov}
spec:
  updates: [KB2-srv]
"#;

    fn deployment(deadline: &str, budget: bool) -> String {
        let budget = if budget { "  failureBudget: {maxFailed: 5}\n" } else { "" };
        format!(
            "apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: nov-servers}}\nspec:\n  updateList: nov\n  collection: servers\n  startTime: 2026-11-11T00:00:00Z\n  deadline: {deadline}\n{budget}"
        )
    }

    fn waiver(expires: &str) -> String {
        format!(
            "apiVersion: patchops.dev/v1alpha1\nkind: Waiver\nmetadata: {{name: w}}\nspec:\n  updates: [KB2]\n  collection: servers\n  reason: r\n  expires: {expires}\n"
        )
    }

    /// KB1 (October, before the target's releasedAfter), KB2 and KB3 (released 2026-11-10,
    /// Critical), KB4 (Low).
    fn catalog() -> Catalog {
        let mut low = update("KB4-srv", "P", "2026-11-10");
        low.severity = crate::catalog::Severity::Low;
        let updates = vec![
            update("KB1-srv", "P", "2026-10-10"),
            update("KB2-srv", "P", "2026-11-10"),
            update("KB3-srv", "P", "2026-11-10"),
            low,
        ];
        Catalog::new(1, updates, &HashMap::new())
    }

    fn desired(extra: &[String]) -> DesiredState {
        let mut files = vec![("policy.yaml".to_string(), POLICY.to_string())];
        files.extend(extra.iter().enumerate().map(|(i, t)| (format!("extra-{i}.yaml"), t.clone())));
        DesiredState::load("main@sha1:0", &files).unwrap()
    }

    #[test]
    fn violations_name_the_resource_field_and_policy() {
        let committed = at("2026-11-12T00:00:00Z");
        // (case, extra resources, expected violations as "resource field")
        let cases: Vec<(&str, Vec<String>, Vec<&str>)> = vec![
            ("on time with a budget", vec![deployment("2026-11-15T00:00:00Z", true)], vec![]),
            ("exactly at release + 7d", vec![deployment("2026-11-17T00:00:00Z", true)], vec![]),
            (
                "a day late",
                vec![deployment("2026-11-18T00:00:00Z", true)],
                vec!["UpdateDeployment nov-servers spec.deadline"],
            ),
            (
                "no failure budget",
                vec![deployment("2026-11-15T00:00:00Z", false)],
                vec!["UpdateDeployment nov-servers spec.failureBudget"],
            ),
            (
                "waiver of 90 days",
                vec![deployment("2026-11-15T00:00:00Z", true), waiver("2027-02-10T00:00:00Z")],
                vec![],
            ),
            (
                "waiver of 91 days",
                vec![deployment("2026-11-15T00:00:00Z", true), waiver("2027-02-11T00:00:00Z")],
                vec!["Waiver w spec.expires"],
            ),
        ];
        for (name, extra, expected) in cases {
            let got: Vec<String> = violations(&desired(&extra), &catalog(), committed)
                .iter()
                .map(|v| format!("{} {}", v.resource, v.field))
                .collect();
            assert_eq!(got, expected, "{name}");
        }
        let v = &violations(&desired(&[deployment("2026-11-18T00:00:00Z", false)]), &catalog(), committed)[0];
        assert_eq!((v.file.as_str(), v.line, v.policy.as_str()), ("extra-0.yaml", 1, "baseline"));
        assert!(v.to_string().contains("KB2-srv to servers with deadline 2026-11-18T00:00:00Z"), "{v}");
    }

    #[test]
    fn an_update_past_its_target_without_a_timely_deployment_is_a_breach() {
        let (catalog, on_time, late) = (
            catalog(),
            desired(&[deployment("2026-11-17T00:00:00Z", true)]),
            desired(&[deployment("2026-11-20T00:00:00Z", true)]),
        );
        let breaches = |d: &DesiredState, now: &str| -> Vec<(String, String)> {
            statuses(d, &catalog, at(now))["baseline"]
                .breaches
                .iter()
                .map(|b| (b.update.clone(), b.due.to_string()))
                .collect()
        };
        // KB3 has no deployment: a breach from release + 7d on; KB2's is on time.
        assert_eq!(breaches(&on_time, "2026-11-16T23:59:59Z"), []);
        let due = "2026-11-17T00:00:00Z".to_string();
        assert_eq!(breaches(&on_time, "2026-11-19T00:00:00Z"), [("KB3-srv".to_string(), due.clone())]);
        // A deployment whose deadline is later than the target breaches too.
        assert_eq!(
            breaches(&late, "2026-11-19T00:00:00Z"),
            [("KB2-srv".to_string(), due.clone()), ("KB3-srv".to_string(), due)]
        );
        let s = &statuses(&late, &catalog, at("2026-11-19T00:00:00Z"))["baseline"];
        assert_eq!((s.breach_count, s.conditions[0].reason.as_str()), (2, "TargetBreached"));
        assert!(s.breaches[0].message.contains("nov-servers set a deadline after"), "{}", s.breaches[0].message);
        assert!(s.breaches[1].message.contains("no deployment to servers yet"), "{}", s.breaches[1].message);
    }
}
