//! Every Kubernetes API call the controller makes, as (API group, resource, verb). The
//! calls go through [`Call`], so this table is the code's own list; `patchops controller
//! --print-rbac` prints it as the Roles the Helm chart must grant in each namespace (a
//! test compares them, in single- and multi-namespace mode).

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
pub const PATCH_STATUS: [Call; 8] = [
    call("patchops.dev", "updatecatalogs/status", "patch"),
    call("patchops.dev", "collections/status", "patch"),
    call("patchops.dev", "updatelists/status", "patch"),
    call("patchops.dev", "updatedeployments/status", "patch"),
    call("patchops.dev", "deploymentpackages/status", "patch"),
    call("patchops.dev", "waivers/status", "patch"),
    call("patchops.dev", "compliancepolicies/status", "patch"),
    call("patchops.dev", "notificationproviders/status", "patch"),
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
pub const WATCHED: [&str; 12] = [
    "updatecatalogs",
    "collections",
    "clientsettings",
    "updatelists",
    "deploymenttemplates",
    "updatedeployments",
    "deploymentpackages",
    "deploymentrules",
    "waivers",
    "compliancepolicies",
    "notificationproviders",
    "alerts",
];

/// The calls in each managed namespace (the Lease is in one namespace only).
pub fn site_calls() -> Vec<Call> {
    let mut all: Vec<Call> = WATCHED.iter().flat_map(|r| [list(r), watch(r)]).collect();
    all.extend(PATCH_STATUS);
    all.extend([PATCH_FINALIZER, CREATE_EVENT, PATCH_EVENT]);
    all.sort();
    all.dedup();
    all
}

/// Every call, deduplicated and sorted.
pub fn calls() -> Vec<Call> {
    let mut all = site_calls();
    all.extend(LEASE);
    all.sort();
    all.dedup();
    all
}

/// `--remove-finalizers`: list the UpdateDeployments and patch each.
pub fn remove_finalizer_calls() -> Vec<Call> {
    vec![list("updatedeployments"), PATCH_FINALIZER]
}

/// A Role: its namespace and rules.
#[derive(Clone, Debug, PartialEq)]
pub struct Role {
    pub name: &'static str,
    pub namespace: String,
    pub rules: serde_json::Value,
}

/// The controller's Roles: in each managed namespace the site's calls, and the Lease's
/// calls in the lease namespace (in the same Role when it is a managed one).
pub fn controller_roles(namespaces: &[String], lease_namespace: &str) -> Vec<Role> {
    let mut roles: Vec<Role> = namespaces
        .iter()
        .map(|ns| {
            let mut calls = site_calls();
            if ns == lease_namespace {
                calls.extend(LEASE);
            }
            Role { name: "patchops-controller", namespace: ns.clone(), rules: rules_of(calls) }
        })
        .collect();
    if !namespaces.iter().any(|ns| ns == lease_namespace) {
        roles.push(Role {
            name: "patchops-controller",
            namespace: lease_namespace.to_string(),
            rules: rules_of(LEASE.to_vec()),
        });
    }
    roles
}

/// The Roles `--remove-finalizers` needs, one per namespace.
pub fn remove_finalizer_roles(namespaces: &[String]) -> Vec<Role> {
    namespaces
        .iter()
        .map(|ns| Role {
            name: "patchops-remove-finalizers",
            namespace: ns.clone(),
            rules: rules_of(remove_finalizer_calls()),
        })
        .collect()
}

/// `--print-rbac`: the Roles as a multi-document YAML stream.
pub fn roles_yaml(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|r| {
            let doc = serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "Role",
                "metadata": {"name": r.name, "namespace": r.namespace},
                "rules": r.rules,
            });
            serde_saphyr::to_string(&doc).expect("roles serialize")
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

/// The Role rules of every call (one namespace managed, the Lease beside it).
pub fn role_rules() -> serde_json::Value {
    rules_of(calls())
}

/// Role rules for calls: per API group, resources with the same verbs together.
fn rules_of(calls: Vec<Call>) -> serde_json::Value {
    let mut by_resource: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    for c in calls {
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

    #[test]
    fn several_namespaces_get_a_role_each_and_the_lease_only_where_it_lives() {
        let ns = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let single = controller_roles(&ns(&["site"]), "site");
        assert_eq!(single.len(), 1);
        assert_eq!(single[0].rules, role_rules());

        let roles = controller_roles(&ns(&["berlin", "paris"]), "patchops");
        let names: Vec<&str> = roles.iter().map(|r| r.namespace.as_str()).collect();
        assert_eq!(names, ["berlin", "paris", "patchops"]);
        let leases = |r: &Role| r.rules.to_string().contains("leases");
        assert!(!leases(&roles[0]) && !leases(&roles[1]) && leases(&roles[2]));
        assert_eq!(roles[0].rules, rules_of(site_calls()));
        assert!(!roles[2].rules.to_string().contains("patchops.dev"), "{}", roles[2].rules);

        let text = roles_yaml(&roles);
        assert_eq!(text.matches("kind: Role").count(), 3, "{text}");
        let removal = remove_finalizer_roles(&ns(&["berlin"]));
        assert_eq!(
            removal[0].rules,
            serde_json::json!([{"apiGroups": ["patchops.dev"], "resources": ["updatedeployments"], "verbs": ["list", "patch"]}])
        );
    }
}
