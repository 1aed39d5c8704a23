//! Every Kubernetes API call the controller makes, as (API group, resource, verb). The
//! calls go through [`Call`], so this table is the code's own list; `patchops controller
//! --print-rbac` prints it as the Role the Helm chart must grant (a test compares them).

use std::collections::BTreeMap;

/// One kind of API call: a verb on a resource of an API group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub group: &'static str,
    pub resource: &'static str,
    pub verb: &'static str,
}

const fn call(group: &'static str, resource: &'static str, verb: &'static str) -> Call {
    Call { group, resource, verb }
}

/// Watching a kind: its reflector lists, then watches.
pub const fn list(resource: &'static str) -> Call {
    call("patchops.dev", resource, "list")
}
pub const fn watch(resource: &'static str) -> Call {
    call("patchops.dev", resource, "watch")
}

/// Status is written by server-side apply on the status subresource.
pub const PATCH_STATUS: [Call; 5] = [
    call("patchops.dev", "updatecatalogs/status", "patch"),
    call("patchops.dev", "collections/status", "patch"),
    call("patchops.dev", "updatelists/status", "patch"),
    call("patchops.dev", "updatedeployments/status", "patch"),
    call("patchops.dev", "deploymentpackages/status", "patch"),
];
/// The finalizer of UpdateDeployment is added and removed by a JSON patch.
pub const PATCH_FINALIZER: Call = call("patchops.dev", "updatedeployments", "patch");
/// Events are created, and a repeated one is patched (its series count).
pub const CREATE_EVENT: Call = call("events.k8s.io", "events", "create");
pub const PATCH_EVENT: Call = call("events.k8s.io", "events", "patch");
/// The leader Lease (kube-lease-manager reads, creates and renews it).
pub const LEASE: [Call; 3] = [
    call("coordination.k8s.io", "leases", "get"),
    call("coordination.k8s.io", "leases", "create"),
    call("coordination.k8s.io", "leases", "patch"),
];

/// The resources of every kind the controller watches.
pub const WATCHED: [&str; 8] = [
    "updatecatalogs",
    "collections",
    "clientsettings",
    "updatelists",
    "deploymenttemplates",
    "updatedeployments",
    "deploymentpackages",
    "deploymentrules",
];

/// Every call, deduplicated and sorted.
pub fn calls() -> Vec<Call> {
    let mut all: Vec<Call> = WATCHED.iter().flat_map(|r| [list(r), watch(r)]).collect();
    all.extend(PATCH_STATUS);
    all.extend([PATCH_FINALIZER, CREATE_EVENT, PATCH_EVENT]);
    all.extend(LEASE);
    all.sort();
    all.dedup();
    all
}

/// The Role rules the calls need: per API group, resources with the same verbs together.
pub fn role_rules() -> serde_json::Value {
    let mut by_resource: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for c in calls() {
        by_resource.entry((c.group, c.resource)).or_default().push(c.verb);
    }
    let mut rules: BTreeMap<(&str, Vec<&str>), Vec<&str>> = BTreeMap::new();
    for ((group, resource), mut verbs) in by_resource {
        verbs.sort();
        rules.entry((group, verbs)).or_default().push(resource);
    }
    rules
        .into_iter()
        .map(|((group, verbs), resources)| serde_json::json!({"apiGroups": [group], "resources": resources, "verbs": verbs}))
        .collect()
}

/// `--print-rbac`: the rules as YAML.
pub fn role_rules_yaml() -> String {
    serde_saphyr::to_string(&role_rules()).expect("rules serialize")
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_role_grants_status_patches_but_no_spec_writes_except_the_deployment_finalizer() {
        let rules = role_rules();
        let text = rules.to_string();
        assert!(text.contains("updatedeployments/status"), "{text}");
        let spec_patches: Vec<&serde_json::Value> = rules
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["apiGroups"][0] == "patchops.dev" && r["verbs"].as_array().unwrap().contains(&"patch".into()))
            .flat_map(|r| r["resources"].as_array().unwrap())
            .filter(|r| !r.as_str().unwrap().ends_with("/status"))
            .collect();
        assert_eq!(spec_patches, [&serde_json::json!("updatedeployments")]);
        assert!(!text.contains("delete") && !text.contains("update\""), "{text}");
    }
}
