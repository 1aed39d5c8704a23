//! One reconciler for every kind with a status: build the namespace's desired state from
//! the caches, stall an object whose spec is wrong (and wait for a change), otherwise run
//! the shared pipeline, apply this object's status, publish the events, and re-queue the
//! other objects whose status the run changed. UpdateDeployment alone has a finalizer:
//! deleting it must withdraw it from the client policies before it is gone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};
use tracing::{info, warn};

use super::Error;
use super::context::{Applied, Cached, Context, FIELD_MANAGER, Key};
use super::rbac::{self, Call};
use crate::desired::Problem;
use crate::resources::Condition;

/// The finalizer UpdateDeployments carry.
pub const FINALIZER: &str = "patchops.dev/withdraw-policies";

/// How long a healthy object waits for its next reconcile at most (catalog sync
/// intervals and scan expiries come sooner through `valid_until`).
const RESYNC: Duration = Duration::from_secs(300);

/// First and largest retry delay of an object whose reconcile failed.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(750);
pub const BACKOFF_MAX: Duration = Duration::from_secs(15 * 60);

/// A kind the controller writes status for.
pub trait Managed: Cached {
    /// Whether deleting it needs cleanup (a finalizer).
    const FINALIZER: Option<&'static str> = None;
}
impl Managed for crate::resources::UpdateCatalog {}
impl Managed for crate::resources::Collection {}
impl Managed for crate::resources::UpdateList {}
impl Managed for crate::resources::DeploymentPackage {}
impl Managed for crate::resources::Waiver {}
impl Managed for crate::resources::CompliancePolicy {}
impl Managed for crate::resources::NotificationProvider {}
impl Managed for crate::resources::UpdateDeployment {
    const FINALIZER: Option<&'static str> = Some(FINALIZER);
}

fn kind<K: Resource<DynamicType = ()>>() -> String {
    K::kind(&()).to_string()
}

/// Map an API error to what the user must do: a 403 names the verb and resource the
/// Role lacks, a 409 is a conflict retried with the current object.
pub async fn call<T>(
    call: Call,
    namespace: &str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Error> {
    fut.await.map_err(|source| match &source {
        kube::Error::Api(s) if s.code == 403 => Error::Forbidden {
            verb: call.verb,
            resource: call.resource,
            group: call.group,
            namespace: namespace.to_string(),
            message: s.message.clone(),
        },
        kube::Error::Api(s) if s.code == 409 => Error::Conflict { resource: call.resource, message: s.message.clone() },
        _ => Error::Api { verb: call.verb, resource: call.resource, source },
    })
}

/// Entry point of every controller.
#[tracing::instrument(skip_all, fields(kind = %K::kind(&()), name = %obj.name_any()))]
pub async fn reconcile<K: Managed>(obj: Arc<K>, ctx: Arc<Context>) -> Result<Action, Error> {
    let started = Instant::now();
    ctx.caches.wait_ready().await;
    let result = match K::FINALIZER {
        Some(name) => {
            let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
            let ns = ctx.namespace.clone();
            finalizer(&api, name, obj, |event| async {
                match event {
                    Finalized::Apply(o) => apply(o.as_ref(), &ctx).await,
                    Finalized::Cleanup(o) => cleanup(o.as_ref(), &ctx).await,
                }
            })
            .await
            .map_err(|e| Error::from_finalizer(e, &ns))
        }
        None => apply(obj.as_ref(), &ctx).await,
    };
    ctx.metrics.observe(&kind::<K>(), started.elapsed().as_secs_f64());
    result
}

/// Transient errors back off per object, 750 ms doubling up to 15 min; a success resets it.
pub fn error_policy<K: Managed>(obj: Arc<K>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = (kind::<K>(), obj.name_any());
    ctx.metrics.error(&key.0, error.metric_label());
    let mut failures = ctx.failures.lock().unwrap_or_else(|e| e.into_inner());
    let n = failures.entry(key.clone()).or_default();
    *n += 1;
    let delay = backoff(*n);
    warn!(kind = %key.0, name = %key.1, retry_in_ms = delay.as_millis() as u64, "{error}");
    Action::requeue(delay)
}

/// The delay before retry number `failures` (1-based).
pub fn backoff(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(20));
    BACKOFF_FIRST.saturating_mul(factor).min(BACKOFF_MAX)
}

async fn apply<K: Managed>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let key: Key = (kind::<K>(), obj.name_any());
    let generation = obj.meta().generation;
    let current = status_json(obj);
    let desired = ctx.desired();
    if let Some(problems) = desired.problems.get(&key) {
        let status = stalled(&key.0, problems, generation, &current);
        if status != current {
            patch_status::<K>(ctx, &key.1, &status).await?;
            let (reason, message) = reason_and_message(problems);
            publish(ctx, obj.object_ref(&()), EventType::Warning, reason.as_str(), &message).await?;
        }
        forget_failures(ctx, &key);
        return Ok(Action::await_change());
    }
    let applied = ctx.apply(desired.clone()).await?;
    // First, before anything here can fail: the other objects whose status this publish
    // moved (an answer that only repeats the last publish moved none).
    if applied.fresh {
        fan_out(ctx, &applied, &desired.problems, &desired.objects, Some(&key));
    }
    let mut status = applied.status_of(&key.0, &key.1).cloned().unwrap_or_else(|| json!({}));
    stamp(&mut status, generation, &current);
    if status != current {
        patch_status::<K>(ctx, &key.1, &status).await?;
    }
    publish_outcome(ctx, &applied, &desired.objects).await?;
    forget_failures(ctx, &key);
    Ok(Action::requeue(requeue_after(&applied, Timestamp::now())))
}

/// Deleting an UpdateDeployment: reconcile without it, so its policies are withdrawn
/// from the clients, before the finalizer lets it go.
async fn cleanup<K: Managed>(obj: &K, ctx: &Context) -> Result<Action, Error> {
    let name = obj.name_any();
    let desired = ctx.desired();
    let applied = ctx.apply(desired.clone()).await?;
    fan_out(ctx, &applied, &desired.problems, &desired.objects, None);
    info!(kind = %kind::<K>(), %name, "deleted: policies withdrawn");
    ctx.metrics.forget_deployment(&ctx.namespace, &name);
    publish(
        ctx,
        obj.object_ref(&()),
        EventType::Normal,
        "PoliciesWithdrawn",
        "deleted: no client is assigned its updates any more",
    )
    .await?;
    publish_outcome(ctx, &applied, &desired.objects).await?;
    Ok(Action::await_change())
}

fn forget_failures(ctx: &Context, key: &Key) {
    ctx.failures.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
}

fn requeue_after(applied: &Applied, now: Timestamp) -> Duration {
    match applied.valid_until {
        Some(t) if t > now => {
            Duration::try_from(t.duration_since(now)).unwrap_or(RESYNC).clamp(Duration::from_secs(1), RESYNC)
        }
        Some(_) => Duration::from_secs(1),
        None => RESYNC,
    }
}

/// The status the object has now, as JSON (`{}` when it has none yet).
fn status_json<K: Cached>(obj: &K) -> Value {
    serde_json::to_value(obj)
        .ok()
        .and_then(|v| v.get("status").cloned())
        .filter(|s| !s.is_null())
        .unwrap_or_else(|| json!({}))
}

/// Set observedGeneration on each condition, and keep the transition time of a
/// condition whose status did not change.
fn stamp(status: &mut Value, generation: Option<i64>, current: &Value) {
    let previous: Vec<Condition> =
        current.get("conditions").cloned().and_then(|c| serde_json::from_value(c).ok()).unwrap_or_default();
    let Some(conditions) =
        status.get("conditions").cloned().and_then(|c| serde_json::from_value::<Vec<Condition>>(c).ok())
    else {
        return;
    };
    let conditions: Vec<Condition> = conditions
        .into_iter()
        .map(|mut c| {
            c.observed_generation = generation;
            c.carry_transition(&previous)
        })
        .collect();
    status["conditions"] = serde_json::to_value(conditions).expect("conditions serialize");
}

/// Why an object stalls: the reason of its Ready and Stalled conditions and of its
/// Warning event (the CamelCase names below are what the CRD docs and users match on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionReason {
    UpdateListNotFound,
    DeploymentTemplateNotFound,
    CollectionNotFound,
    UnknownTimeZone,
    InvalidDeadline,
    InvalidSpec,
}

impl ConditionReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionReason::UpdateListNotFound => "UpdateListNotFound",
            ConditionReason::DeploymentTemplateNotFound => "DeploymentTemplateNotFound",
            ConditionReason::CollectionNotFound => "CollectionNotFound",
            ConditionReason::UnknownTimeZone => "UnknownTimeZone",
            ConditionReason::InvalidDeadline => "InvalidDeadline",
            ConditionReason::InvalidSpec => "InvalidSpec",
        }
    }

    /// The reason for one problem, from the field it is about.
    pub fn of(problem: &Problem) -> Self {
        let last = problem.field.rsplit('.').next().unwrap_or(&problem.field);
        let last = last.split('[').next().unwrap_or(last);
        let missing = match last {
            "updateList" | "updateLists" => Some(ConditionReason::UpdateListNotFound),
            "template" => Some(ConditionReason::DeploymentTemplateNotFound),
            "collection" | "includeCollections" | "excludeCollections" => Some(ConditionReason::CollectionNotFound),
            _ => None,
        };
        // A reference field has other problems too ("no target: set collection"); only
        // a missing object is NotFound.
        match missing {
            Some(reason) if problem.missing_reference => reason,
            _ if problem.field.ends_with("timeZone") => ConditionReason::UnknownTimeZone,
            _ if problem.field == "spec.deadline" => ConditionReason::InvalidDeadline,
            _ => ConditionReason::InvalidSpec,
        }
    }
}

impl std::fmt::Display for ConditionReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for ConditionReason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// The reason of the first problem and a message listing every problem with its field,
/// saying what to fix.
pub fn reason_and_message(problems: &[Problem]) -> (ConditionReason, String) {
    let reason = ConditionReason::of(&problems[0]);
    let message = problems
        .iter()
        .map(|p| if p.field.is_empty() { p.message.clone() } else { format!("{}: {}", p.field, p.message) })
        .collect::<Vec<_>>()
        .join("; ");
    (reason, message)
}

/// The status of an object whose spec cannot be applied: Ready False and Stalled True
/// with the reason and what to fix; the rest of its status is kept.
pub fn stalled(kind: &str, problems: &[Problem], generation: Option<i64>, current: &Value) -> Value {
    let (reason, message) = reason_and_message(problems);
    let now = Timestamp::now();
    let conditions = vec![
        Condition::new("Ready", false, reason.as_str(), message.clone(), now),
        Condition::new("Stalled", true, reason.as_str(), message, now),
    ];
    let mut status = current.clone();
    if !status.is_object() {
        status = json!({});
    }
    status["conditions"] = serde_json::to_value(conditions).expect("conditions serialize");
    if kind == "UpdateDeployment" {
        status["phase"] = "Invalid".into();
    }
    stamp(&mut status, generation, current);
    status
}

/// Server-side apply of the status subresource, one field manager, forced.
async fn patch_status<K: Managed>(ctx: &Context, name: &str, status: &Value) -> Result<(), Error> {
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let body = json!({"apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status});
    let resource = format!("{}/status", K::plural(&()));
    let c = *rbac::PATCH_STATUS
        .iter()
        .find(|c| c.resource == resource)
        .expect("every managed kind's status is in the table");
    let params = PatchParams::apply(FIELD_MANAGER).force();
    call(c, &ctx.namespace, api.patch_status(name, &params, &Patch::Apply(&body))).await?;
    Ok(())
}

async fn publish(
    ctx: &Context,
    reference: k8s_openapi::api::core::v1::ObjectReference,
    type_: EventType,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let event = KubeEvent {
        type_,
        reason: reason.to_string(),
        note: Some(message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    // The recorder creates an event, or patches the series of a repeated one.
    call(rbac::CREATE_EVENT, &ctx.namespace, ctx.recorder.publish(&event, &reference)).await
}

/// The core's events (deployment activated, phase advanced, rollout halted, update
/// superseded) on their objects, and a CatalogSynced event on every UpdateCatalog when a
/// new catalog version was saved.
pub(super) async fn publish_outcome(
    ctx: &Context,
    applied: &Applied,
    objects: &std::collections::HashMap<Key, Value>,
) -> Result<(), Error> {
    for e in &applied.events {
        let Some(r) = reference(objects, &e.kind, &e.name) else { continue };
        let type_ = match e.severity {
            crate::reconcile::Severity::Warning => EventType::Warning,
            crate::reconcile::Severity::Normal => EventType::Normal,
        };
        publish(ctx, r, type_, &e.reason, &e.message).await?;
    }
    if applied.catalog_changed {
        let message = format!("new catalog version {}", applied.record.catalog_version);
        for ((k, name), _) in objects.iter().filter(|((k, _), _)| k == "UpdateCatalog") {
            if let Some(r) = reference(objects, k, name) {
                publish(ctx, r, EventType::Normal, "CatalogSynced", &message).await?;
            }
        }
    }
    Ok(())
}

fn reference(
    objects: &std::collections::HashMap<Key, Value>,
    kind: &str,
    name: &str,
) -> Option<k8s_openapi::api::core::v1::ObjectReference> {
    let o = objects.get(&(kind.to_string(), name.to_string()))?;
    let s = |p: &str| o.pointer(p).and_then(|v| v.as_str()).map(str::to_string);
    Some(k8s_openapi::api::core::v1::ObjectReference {
        api_version: s("/apiVersion"),
        kind: s("/kind"),
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        uid: s("/metadata/uid"),
        resource_version: s("/metadata/resourceVersion"),
        ..Default::default()
    })
}

/// Compare statuses without their transition times and generations, which `stamp` sets.
fn comparable(status: Option<&Value>) -> Value {
    let mut s = status.cloned().unwrap_or_else(|| json!({}));
    if let Some(cs) = s.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in cs {
            if let Some(m) = c.as_object_mut() {
                m.remove("lastTransitionTime");
                m.remove("observedGeneration");
            }
        }
    }
    s
}

/// Re-queue the objects whose status the run changed (a new catalog version, new
/// compliance, a list that resolves differently) or that became wrong — not everything.
pub fn fan_out(
    ctx: &Context,
    applied: &Applied,
    problems: &std::collections::BTreeMap<Key, Vec<Problem>>,
    objects: &std::collections::HashMap<Key, Value>,
    except: Option<&Key>,
) {
    for s in &applied.record.statuses {
        let key = (s.kind.clone(), s.name.clone());
        if Some(&key) == except {
            continue;
        }
        let current = objects.get(&key).and_then(|o| o.get("status"));
        if comparable(Some(&s.status)) != comparable(current) {
            ctx.trigger(&s.kind, &s.name);
        }
    }
    for key in problems.keys() {
        if Some(key) == except {
            continue;
        }
        let stalled = objects
            .get(key)
            .and_then(|o| o.pointer("/status/conditions"))
            .and_then(|c| c.as_array())
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Stalled" && c["status"] == "True"));
        if !stalled {
            ctx.trigger(&key.0, &key.1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ConditionReason;
    use crate::desired::Problem;

    fn problem(field: &str, message: &str) -> Problem {
        // As desired.rs marks them: the "… not found" problems are missing references.
        let missing_reference = message.contains(" not found;");
        Problem {
            file: "site.yaml".into(),
            line: 3,
            column: 5,
            field: field.into(),
            message: message.into(),
            missing_reference,
        }
    }

    #[test]
    fn a_missing_reference_is_not_found_and_other_problems_of_the_same_field_are_invalid_spec() {
        let cases = [
            ("spec.updateList", "updateList \"nov\" not found; known lists: dec", "UpdateListNotFound"),
            ("spec.updateLists[1]", "updateList \"nov\" not found; known lists: none declared", "UpdateListNotFound"),
            ("spec.template", "template \"t\" not found; known templates: a", "DeploymentTemplateNotFound"),
            ("spec.phases[0].collection", "collection \"c\" not found; known collections: a", "CollectionNotFound"),
            ("spec.collection", "no target: set collection (here or in the template) or phases", "InvalidSpec"),
            ("spec.maintenanceWindows[0].timeZone", "unknown time zone \"Europe/Atlantis\"", "UnknownTimeZone"),
            ("spec.deadline", "a mandatory deployment needs a deadline", "InvalidDeadline"),
            ("spec.phases[0].name", "duplicate phase \"pilot\"", "InvalidSpec"),
        ];
        for (field, message, reason) in cases {
            let got = ConditionReason::of(&problem(field, message));
            assert_eq!(got.to_string(), reason, "{field}: {message}");
        }
    }
}
