//! The controller against a scripted API server (`tower_test::mock`): each test plays the
//! requests the API server receives, in order, and asserts their method, URI and body.
//! The store is a real SQLite file.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, store::Writer};
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde_json::{Value, json};

use super::context::{Caches, Context, Pipeline};
use super::reconciler::{FINALIZER, error_policy, reconcile};
use super::{Error, rbac};
use crate::resources::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NS: &str = "site";

fn object<K: serde::de::DeserializeOwned>(kind: &str, name: &str, spec: Value, extra: Value) -> K {
    let mut o = json!({
        "apiVersion": "patchops.dev/v1alpha1", "kind": kind,
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"), "generation": 2, "resourceVersion": "7"},
        "spec": spec,
    });
    if let (Some(o), Some(extra)) = (o.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            if k == "metadata" {
                for (mk, mv) in v.as_object().unwrap() {
                    o.get_mut("metadata").unwrap()[mk] = mv.clone();
                }
            } else {
                o.insert(k.clone(), v.clone());
            }
        }
    }
    serde_json::from_value(o).unwrap()
}

fn filled<K: kube::Resource<DynamicType = ()> + Clone>(objects: &[K]) -> reflector::Store<K> {
    let mut w = Writer::<K>::default();
    let reader = w.as_reader();
    w.apply_watcher_event(&watcher::Event::Init);
    for o in objects {
        w.apply_watcher_event(&watcher::Event::InitApply(o.clone()));
    }
    w.apply_watcher_event(&watcher::Event::InitDone);
    reader
}

/// A site: one collection, one list, one template, and the given deployments.
struct Site {
    collections: Vec<Collection>,
    lists: Vec<UpdateList>,
    deployments: Vec<UpdateDeployment>,
    waivers: Vec<Waiver>,
}

impl Site {
    fn new() -> Self {
        let collection = object(
            "Collection",
            "servers",
            json!({"selector": {"matchFacts": {"role": "server"}},
                   "maintenanceWindows": [{"name": "sat", "start": "02:00", "duration": "4h", "timeZone": "Europe/Berlin",
                                           "recurrence": "Weekly", "daysOfWeek": ["Saturday"]}]}),
            json!({}),
        );
        let list = object("UpdateList", "dec-sec", json!({"updates": ["KB1"]}), json!({}));
        Site { collections: vec![collection], lists: vec![list], deployments: vec![], waivers: vec![] }
    }

    fn deployment(mut self, spec: Value, extra: Value) -> Self {
        self.deployments.push(object("UpdateDeployment", "pilot", spec, extra));
        self
    }

    fn context(&self, dir: &tempfile::TempDir) -> (Arc<Context>, Handle) {
        let store = crate::store::open(dir.path().join("patchops.db").to_str().unwrap()).unwrap();
        self.context_on(store, dir)
    }

    fn context_on(&self, store: Box<dyn crate::store::Store>, dir: &tempfile::TempDir) -> (Arc<Context>, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = Client::new(service, NS);
        let caches = Caches {
            catalogs: filled(&[]),
            collections: filled(&self.collections),
            client_settings: filled(&[]),
            update_lists: filled(&self.lists),
            templates: filled(&[]),
            deployments: filled(&self.deployments),
            packages: filled(&[]),
            rules: filled(&[]),
            waivers: filled(&self.waivers),
            compliance_policies: filled(&[]),
            notification_providers: filled(&[]),
            alerts: filled(&[]),
        };
        let pipeline = Pipeline::new(store, &dir.path().join("cache"));
        (Arc::new(Context::new(client, NS, caches, pipeline, Default::default())), handle)
    }
}

/// Started yesterday, due in a month (the controller reads the clock).
fn valid_spec() -> Value {
    let now = jiff::Timestamp::now();
    let day = jiff::SignedDuration::from_hours(24);
    json!({"updateList": "dec-sec", "collection": "servers", "startTime": (now - day).to_string(),
           "deadline": (now + day * 30).to_string()})
}

fn with_finalizer() -> Value {
    json!({"metadata": {"finalizers": [FINALIZER]}})
}

/// Answer the next request after checking its method and path; returns its query and body.
async fn next(handle: &mut Handle, method: &str, path: &str, status: u16, reply: Value) -> (String, Value) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no request came; expected {method} {path}"))
        .expect("the client is alive");
    assert_eq!(request.method().as_str(), method, "{}", request.uri());
    assert_eq!(request.uri().path(), path);
    let query = request.uri().query().unwrap_or_default().to_string();
    let bytes = request.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
    let reply = if status < 400 && reply == json!({}) {
        // What the API server answers: the created event, or the patched object.
        if method == "POST" {
            body.clone()
        } else {
            serde_json::to_value(object::<UpdateDeployment>("UpdateDeployment", "pilot", valid_spec(), json!({})))
                .unwrap()
        }
    } else if status >= 400 {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": reply.as_str().unwrap_or("no"),
               "reason": "Failure", "code": status})
    } else {
        reply
    };
    send.send_response(
        Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
    );
    (query, body)
}

const STATUS_PATH: &str = "/apis/patchops.dev/v1alpha1/namespaces/site/updatedeployments/pilot/status";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/site/events";

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap_or(&Value::Null)
}

#[tokio::test]
async fn a_valid_deployment_gets_its_status_by_server_side_apply_and_an_activation_event() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), with_finalizer());
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let server = tokio::spawn(async move {
        let (query, body) = next(&mut handle, "PATCH", STATUS_PATH, 200, json!({})).await;
        assert!(query.contains("fieldManager=patchops-controller") && query.contains("force=true"), "{query}");
        assert_eq!(body["apiVersion"], "patchops.dev/v1alpha1");
        assert_eq!(body["kind"], "UpdateDeployment");
        let ready = condition(&body["status"], "Ready");
        assert_eq!(ready["status"], "True", "{body:#}");
        assert_eq!(ready["observedGeneration"], 2);
        let (_, event) = next(&mut handle, "POST", EVENTS_PATH, 201, json!({})).await;
        assert_eq!(event["reason"], "DeploymentActivated", "{event:#}");
        assert_eq!(event["regarding"]["name"], "pilot");
        assert_eq!(event["reportingController"], "patchops-controller");
    });
    let action = reconcile(obj, ctx).await.unwrap();
    server.await.unwrap();
    assert_ne!(action, Action::await_change(), "a healthy deployment is looked at again");
}

/// A Waiver declared as a custom resource is part of the site's desired state: it gets
/// its status (in force, until when) on its status subresource like the other kinds.
#[tokio::test]
async fn a_waiver_resource_is_read_by_the_operator_and_gets_its_status() {
    let dir = tempfile::tempdir().unwrap();
    let expires = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * 30)).to_string();
    let spec = json!({"updates": ["KB1"], "collection": "servers", "reason": "vendor certification pending",
                      "expires": expires});
    let mut site = Site::new();
    site.waivers.push(object("Waiver", "cert", spec.clone(), json!({})));
    let (ctx, mut handle) = site.context(&dir);
    assert!(ctx.desired().state.waivers.contains_key("cert"), "the waiver is in the desired state");
    let obj = Arc::new(site.waivers[0].clone());
    let reply = serde_json::to_value(object::<Waiver>("Waiver", "cert", spec, json!({}))).unwrap();
    let server = tokio::spawn(async move {
        let path = "/apis/patchops.dev/v1alpha1/namespaces/site/waivers/cert/status";
        let (_, body) = next(&mut handle, "PATCH", path, 200, reply).await;
        assert_eq!(body["kind"], "Waiver");
        let ready = condition(&body["status"], "Ready");
        assert_eq!(ready["status"], "True", "{body:#}");
        assert!(ready["message"].as_str().unwrap().contains("in force until"), "{body:#}");
    });
    reconcile(obj, ctx).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn a_new_deployment_first_gets_the_finalizer_that_withdraws_its_policies() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), json!({}));
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let server = tokio::spawn(async move {
        let path = "/apis/patchops.dev/v1alpha1/namespaces/site/updatedeployments/pilot";
        let (_, patch) = next(&mut handle, "PATCH", path, 200, json!({})).await;
        let ops = patch.as_array().unwrap();
        assert!(ops.iter().any(|op| op["op"] == "add" && op["path"] == "/metadata/finalizers"), "{patch:#}");
        assert!(patch.to_string().contains(FINALIZER));
    });
    // The finalizer patch makes a watch event; that next reconcile applies the status.
    assert_eq!(reconcile(obj, ctx).await.unwrap(), Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn a_deleted_deployment_is_withdrawn_then_its_finalizer_removed() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(
        valid_spec(),
        json!({"metadata": {"finalizers": [FINALIZER], "deletionTimestamp": "2026-02-01T00:00:00Z"}}),
    );
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let server = tokio::spawn(async move {
        let (_, event) = next(&mut handle, "POST", EVENTS_PATH, 201, json!({})).await;
        assert_eq!(event["reason"], "PoliciesWithdrawn");
        let path = "/apis/patchops.dev/v1alpha1/namespaces/site/updatedeployments/pilot";
        let (_, patch) = next(&mut handle, "PATCH", path, 200, json!({})).await;
        assert!(patch.as_array().unwrap().iter().any(|op| op["op"] == "remove"), "{patch:#}");
    });
    reconcile(obj, ctx.clone()).await.unwrap();
    server.await.unwrap();
    // The reconcile without it was saved: the store's last status has no such deployment.
    let last = ctx.pipeline.lock().unwrap().store().last_reconcile().unwrap().unwrap();
    assert!(!last.statuses.iter().any(|s| s.kind == "UpdateDeployment"), "{last:?}");
}

#[tokio::test]
async fn a_conflict_on_the_status_is_retried_with_a_growing_per_object_backoff() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), with_finalizer());
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let server = tokio::spawn(async move {
        next(&mut handle, "PATCH", STATUS_PATH, 409, json!("the object has been modified")).await;
    });
    let err = reconcile(obj.clone(), ctx.clone()).await.unwrap_err();
    server.await.unwrap();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert_eq!(error_policy(obj.clone(), &err, ctx.clone()), Action::requeue(Duration::from_millis(750)));
    assert_eq!(error_policy(obj.clone(), &err, ctx.clone()), Action::requeue(Duration::from_millis(1500)));
    assert!(ctx.metrics.encode().contains(r#"error="conflict"} 2"#));
    assert_eq!(super::reconciler::backoff(30), Duration::from_secs(15 * 60));
}

#[tokio::test]
async fn a_forbidden_status_patch_names_the_missing_rbac_verb() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), with_finalizer());
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let server = tokio::spawn(async move {
        next(&mut handle, "PATCH", STATUS_PATH, 403, json!("cannot patch resource")).await;
    });
    let err = reconcile(obj, ctx).await.unwrap_err();
    server.await.unwrap();
    let text = err.to_string();
    assert!(
        text.contains("may not patch updatedeployments/status (API group patchops.dev) in namespace site"),
        "{text}"
    );
    assert!(text.contains("--print-rbac"), "{text}");
    assert!(rbac::calls().contains(&rbac::PATCH_STATUS[3]));
}

#[tokio::test]
async fn a_watch_that_expired_with_410_gone_lists_again() {
    use futures::StreamExt;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let api: kube::Api<UpdateList> = kube::Api::namespaced(client, NS);
    let list = |rv: &str, items: Value| {
        json!({"apiVersion": "patchops.dev/v1alpha1", "kind": "UpdateListList",
                                               "metadata": {"resourceVersion": rv}, "items": items})
    };
    let item =
        serde_json::to_value(object::<UpdateList>("UpdateList", "dec-sec", json!({"updates": ["KB1"]}), json!({})))
            .unwrap();
    let server = tokio::spawn(async move {
        let path = "/apis/patchops.dev/v1alpha1/namespaces/site/updatelists";
        next(&mut handle, "GET", path, 200, list("10", json!([]))).await;
        let (request, send) = handle.next_request().await.unwrap();
        assert!(request.uri().query().unwrap().contains("watch=true"), "{}", request.uri());
        let gone = json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                          "message": "too old resource version", "reason": "Expired", "code": 410}});
        send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&gone).unwrap())).unwrap());
        // The relist: the object created meanwhile arrives.
        let (query, _) = next(&mut handle, "GET", path, 200, list("12", json!([item]))).await;
        assert!(!query.contains("watch=true"), "{query}");
    });
    let mut stream = Box::pin(
        kube::runtime::WatchStreamExt::applied_objects(watcher::watcher(api, watcher::Config::default()))
            .filter_map(|r| futures::future::ready(r.ok())),
    );
    let got = tokio::time::timeout(Duration::from_secs(20), stream.next()).await.unwrap().unwrap();
    assert_eq!(got.meta().name.as_deref(), Some("dec-sec"));
    server.await.unwrap();
}

/// Bad input: the spec passes the schema but cannot be applied → Stalled with a reason
/// and a message saying what to fix, a Warning event, and no retry until it changes.
async fn stalls(site: Site, reason: &str, message: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (ctx, mut handle) = site.context(&dir);
    let obj = Arc::new(site.deployments[0].clone());
    let (reason_, message_) = (reason.to_string(), message.to_string());
    let server = tokio::spawn(async move {
        let (_, body) = next(&mut handle, "PATCH", STATUS_PATH, 200, json!({})).await;
        let stalled = condition(&body["status"], "Stalled");
        assert_eq!(stalled["status"], "True", "{body:#}");
        assert_eq!(stalled["reason"], reason_.as_str());
        assert!(stalled["message"].as_str().unwrap().contains(&message_), "{body:#}");
        assert_eq!(condition(&body["status"], "Ready")["status"], "False");
        assert_eq!(body["status"]["phase"], "Invalid");
        let (_, event) = next(&mut handle, "POST", EVENTS_PATH, 201, json!({})).await;
        assert_eq!((event["type"].as_str(), event["reason"].as_str()), (Some("Warning"), Some(reason_.as_str())));
    });
    assert_eq!(reconcile(obj, ctx).await.unwrap(), Action::await_change());
    server.await.unwrap();
}

#[tokio::test]
async fn a_deployment_naming_a_missing_update_list_is_stalled_saying_which_lists_exist() {
    let mut spec = valid_spec();
    spec["updateList"] = "nov-sec".into();
    let site = Site::new().deployment(spec, with_finalizer());
    stalls(
        site,
        "UpdateListNotFound",
        "spec.updateList: UpdateDeployment \"pilot\": updateList \"nov-sec\" not found; known lists: dec-sec",
    )
    .await;
}

#[tokio::test]
async fn a_deadline_before_the_available_time_is_stalled_asking_to_move_it() {
    let mut spec = valid_spec();
    spec["deadline"] = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48)).to_string().into();
    let site = Site::new().deployment(spec, with_finalizer());
    stalls(site, "InvalidDeadline", "move the deadline later").await;
}

#[tokio::test]
async fn a_window_with_an_unknown_time_zone_stalls_its_collection_and_the_deployment_on_it() {
    let mut site = Site::new().deployment(valid_spec(), with_finalizer());
    let mut c = serde_json::to_value(&site.collections[0]).unwrap();
    c["spec"]["maintenanceWindows"][0]["timeZone"] = "Europe/Atlantis".into();
    site.collections[0] = serde_json::from_value(c).unwrap();
    // The collection itself says which field to fix.
    let (ctx, _handle) = site.context(&tempfile::tempdir().unwrap());
    let problems = &ctx.desired().problems[&("Collection".to_string(), "servers".to_string())];
    let (reason, message) = super::reconciler::reason_and_message(problems);
    assert_eq!(reason, "UnknownTimeZone");
    assert!(message.starts_with("spec.maintenanceWindows[0].timeZone: "), "{message}");
    stalls(site, "CollectionNotFound", "collection \"servers\" not found").await;
}

#[tokio::test]
async fn an_unchanged_stalled_object_is_not_written_again() {
    let mut spec = valid_spec();
    spec["updateList"] = "nov-sec".into();
    let site = Site::new().deployment(spec.clone(), with_finalizer());
    let dir = tempfile::tempdir().unwrap();
    let (ctx, _handle) = site.context(&dir);
    let problems = ctx.desired().problems[&("UpdateDeployment".to_string(), "pilot".to_string())].clone();
    let status = super::reconciler::stalled("UpdateDeployment", &problems, Some(2), &json!({}));
    let mut extra = with_finalizer();
    extra["status"] = status;
    let site = Site::new().deployment(spec, extra);
    let (ctx, _handle) = site.context(&dir);
    // No request may come: the mock handle would otherwise be awaited forever.
    let action = tokio::time::timeout(Duration::from_secs(10), reconcile(Arc::new(site.deployments[0].clone()), ctx))
        .await
        .expect("no API call made")
        .unwrap();
    assert_eq!(action, Action::await_change());
}

#[test]
fn the_controller_saves_status_and_policies_in_postgresql_for_the_management_point() {
    let url = std::env::var("PATCHOPS_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let schema = format!("patchops_operator_{:016x}", fastrand::u64(..));
    let store = crate::store::postgres::PostgresStore::open_in_schema(&url, &schema)
        .unwrap_or_else(|e| panic!("PostgreSQL at {url} (scripts/test starts it): {e}"));
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), with_finalizer());
    let obj = Arc::new(site.deployments[0].clone());
    // The PostgreSQL client is synchronous: it is opened and dropped outside the runtime.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = rt.block_on(async {
        let (ctx, mut handle) = site.context_on(Box::new(store), &dir);
        let server = tokio::spawn(async move {
            next(&mut handle, "PATCH", STATUS_PATH, 200, json!({})).await;
            next(&mut handle, "POST", EVENTS_PATH, 201, json!({})).await;
        });
        reconcile(obj, ctx.clone()).await.unwrap();
        server.await.unwrap();
        ctx
    });
    drop(rt);
    let pipeline = ctx.pipeline.lock().unwrap();
    let last = pipeline.store().last_reconcile().unwrap().expect("a reconcile was saved");
    let pilot = last.statuses.iter().find(|s| s.kind == "UpdateDeployment" && s.name == "pilot").unwrap();
    assert_eq!(pilot.namespace, NS);
    assert_eq!(pilot.status["phase"], "Available");
    assert!(last.revision.starts_with("kubernetes/site@"), "{}", last.revision);
    drop(pipeline);
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")).unwrap();
}

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape.samples.iter().find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(v))).map(
        |s| match s.value {
            prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        },
    )
}

#[tokio::test]
async fn the_metrics_endpoint_serves_the_deployment_and_site_gauges_as_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let site = Site::new().deployment(valid_spec(), with_finalizer());
    let (ctx, mut handle) = site.context(&dir);
    let server = tokio::spawn(async move {
        next(&mut handle, "PATCH", STATUS_PATH, 200, json!({})).await;
        next(&mut handle, "POST", EVENTS_PATH, 201, json!({})).await;
    });
    reconcile(Arc::new(site.deployments[0].clone()), ctx.clone()).await.unwrap();
    server.await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(crate::metrics::serve(listener, ctx.metrics.clone(), async move {
        let _ = stopped.await;
    }));
    let text = tokio::task::spawn_blocking(move || {
        ureq::get(format!("http://{addr}/metrics")).call().unwrap().body_mut().read_to_string().unwrap()
    })
    .await
    .unwrap();
    let _ = stop.send(());
    serving.await.unwrap().unwrap();

    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).unwrap();
    let pilot = [("namespace", NS), ("deployment", "pilot")];
    let ratio = sample(&scrape, "patchops_deployment_compliance_ratio", &pilot).expect("the ratio gauge");
    assert!((0.0..=1.0).contains(&ratio), "{text}");
    assert_eq!(sample(&scrape, "patchops_deployment_machines_targeted", &pilot), Some(0.0), "no clients yet");
    let phase = [("deployment", "pilot"), ("phase", "Available")];
    assert_eq!(sample(&scrape, "patchops_deployment_phase", &phase), Some(1.0), "{text}");
    assert_eq!(sample(&scrape, "patchops_clients", &[("namespace", NS)]), Some(0.0), "{text}");
    assert_eq!(sample(&scrape, "patchops_build_info", &[("version", env!("CARGO_PKG_VERSION"))]), Some(1.0));
}

#[tokio::test]
async fn remove_finalizers_takes_only_the_patchops_finalizer_off_in_every_namespace() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let list = |items: Value| {
        json!({"apiVersion": "patchops.dev/v1alpha1", "kind": "UpdateDeploymentList",
               "metadata": {"resourceVersion": "9"}, "items": items})
    };
    let held = object::<UpdateDeployment>(
        "UpdateDeployment",
        "pilot",
        valid_spec(),
        json!({"metadata": {"finalizers": ["example.com/keep", FINALIZER], "deletionTimestamp": "2026-02-01T00:00:00Z"}}),
    );
    let free = object::<UpdateDeployment>("UpdateDeployment", "broad", valid_spec(), json!({}));
    let items = json!([held, free]);
    let server = tokio::spawn(async move {
        let berlin = "/apis/patchops.dev/v1alpha1/namespaces/berlin/updatedeployments";
        next(&mut handle, "GET", berlin, 200, list(items)).await;
        let (_, patch) = next(&mut handle, "PATCH", &format!("{berlin}/pilot"), 200, json!({})).await;
        // Other finalizers stay; the resourceVersion makes a concurrent change fail.
        assert_eq!(patch, json!({"metadata": {"finalizers": ["example.com/keep"], "resourceVersion": "7"}}));
        let paris = "/apis/patchops.dev/v1alpha1/namespaces/paris/updatedeployments";
        next(&mut handle, "GET", paris, 200, list(json!([]))).await;
    });
    let namespaces = ["berlin".to_string(), "paris".to_string()];
    let removed = super::remove_finalizers(client, &namespaces).await.unwrap();
    server.await.unwrap();
    assert_eq!(removed, [("berlin".to_string(), "pilot".to_string())]);
    for call in rbac::remove_finalizer_calls() {
        assert!(rbac::site_calls().contains(&call), "the controller's Role covers {call:?} too");
    }
}

#[tokio::test]
async fn a_forbidden_finalizer_removal_names_the_namespace_and_the_missing_verb() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let server = tokio::spawn(async move {
        let path = "/apis/patchops.dev/v1alpha1/namespaces/berlin/updatedeployments";
        next(&mut handle, "GET", path, 403, json!("cannot list resource")).await;
    });
    let err = super::remove_finalizers(client, &["berlin".to_string()]).await.unwrap_err();
    server.await.unwrap();
    assert!(
        err.to_string().contains("may not list updatedeployments (API group patchops.dev) in namespace berlin"),
        "{err}"
    );
}

#[tokio::test]
async fn two_namespaces_are_two_sites_each_watched_in_its_namespace_and_saved_in_its_store() {
    use futures::FutureExt;
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, NS);
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        let _ = stopped.await;
    }
    .boxed()
    .shared();
    let dir = tempfile::tempdir().unwrap();
    let mut contexts = Vec::new();
    let mut sites = Vec::new();
    for ns in ["berlin", "paris"] {
        let store = crate::store::open(dir.path().join(format!("{ns}.db")).to_str().unwrap()).unwrap();
        let pipeline = Pipeline::new(store, &dir.path().join("cache").join(ns));
        let (ctx, site) =
            super::run_site(client.clone(), ns, pipeline, metrics.clone(), Duration::from_secs(3600), shutdown.clone());
        contexts.push(ctx);
        sites.push(tokio::spawn(site));
    }
    // The API server: every list answered empty, every watch held open.
    let mut listed = std::collections::BTreeSet::new();
    let mut watches = Vec::new();
    let expected: std::collections::BTreeSet<String> = ["berlin", "paris"]
        .iter()
        .flat_map(|ns| rbac::WATCHED.iter().map(move |r| format!("/apis/patchops.dev/v1alpha1/namespaces/{ns}/{r}")))
        .collect();
    while listed != expected {
        let (request, send) = tokio::time::timeout(Duration::from_secs(10), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("lists so far: {listed:#?}"))
            .unwrap();
        assert_eq!(request.method(), "GET");
        let path = request.uri().path().to_string();
        assert!(expected.contains(&path), "a request outside the managed namespaces: {path}");
        if request.uri().query().unwrap_or_default().contains("watch=true") {
            watches.push(send);
            continue;
        }
        let kind = format!("{}List", path.rsplit('/').next().unwrap());
        let empty = json!({"apiVersion": "patchops.dev/v1alpha1", "kind": kind, "metadata": {"resourceVersion": "1"}, "items": []});
        send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&empty).unwrap())).unwrap());
        listed.insert(path);
    }
    // Each site's resync reconciled its namespace into its own store.
    for ctx in &contexts {
        let revision = format!("kubernetes/{}@", ctx.namespace);
        let saved = tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let last = ctx.pipeline.lock().unwrap().store().last_reconcile().unwrap();
                if let Some(r) = last {
                    return r.revision;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the site reconciled");
        assert!(saved.starts_with(&revision), "{saved} is a revision of {revision}<hash>");
    }
    let text = metrics.encode();
    assert!(text.contains(r#"patchops_clients{namespace="berlin"} 0"#), "{text}");
    assert!(text.contains(r#"patchops_clients{namespace="paris"} 0"#), "{text}");
    let _ = stop.send(());
    for s in sites {
        tokio::time::timeout(Duration::from_secs(10), s).await.expect("the site stops on shutdown").unwrap();
    }
    drop(watches);
}

#[test]
fn several_namespaces_need_a_namespace_placeholder_in_the_store_url() {
    let url = "postgres://patchops@db/patchops_{namespace}";
    assert_eq!(super::store_url(url, "berlin", true).unwrap(), "postgres://patchops@db/patchops_berlin");
    assert_eq!(super::store_url("/data/one.db", "berlin", false).unwrap(), "/data/one.db");
    let err = super::store_url("postgres://patchops@db/patchops", "berlin", true).unwrap_err().to_string();
    assert!(err.contains("write {namespace} in --store"), "{err}");
}

#[test]
fn a_resync_wave_over_many_objects_is_one_fleet_load_and_a_registration_reaches_status_through_the_feed() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::new();
    for n in 0..30 {
        site.deployments.push(object("UpdateDeployment", &format!("pilot-{n:02}"), valid_spec(), json!({})));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (ctx, _handle) = site.context(&dir);
        // A resync wave: every object's reconcile asks for the site as it is now.
        for _ in &site.deployments {
            let applied = ctx.apply(ctx.desired()).await.unwrap();
            assert_eq!(applied.status_of("Collection", "servers").unwrap()["memberCount"], 0);
        }
        {
            let p = ctx.pipeline.lock().unwrap();
            assert_eq!(p.fleet_loads, 1, "the fleet is loaded once, at the engine's cold start");
            let stats = p.site().expect("the engine runs").stats;
            assert_eq!(stats.derivations, 1, "thirty reconciles of one desired state are one derivation");
            assert_eq!(stats.publishes, 1, "and one publish");
        }
        // A management point (another connection) registers a server: the feed brings it.
        let mut mp = crate::store::open(dir.path().join("patchops.db").to_str().unwrap()).unwrap();
        let info = crate::store::ClientInfo {
            name: "srv-01".into(),
            facts: [("role".to_string(), "server".to_string())].into(),
            agent_version: Some("1.0.0".into()),
        };
        mp.upsert_client(&info, jiff::Timestamp::now()).unwrap();
        let applied = ctx.follow().await.unwrap().expect("the registration is a change");
        assert_eq!(applied.status_of("Collection", "servers").unwrap()["memberCount"], 1);
        assert_eq!(applied.status_of("UpdateDeployment", "pilot-07").unwrap()["targeted"], 1);
        assert!(ctx.follow().await.unwrap().is_none(), "nothing new: nothing published");
        let again = ctx.apply(ctx.desired()).await.unwrap();
        assert_eq!(again.status_of("Collection", "servers").unwrap()["memberCount"], 1, "a reconcile answers the same");
        let p = ctx.pipeline.lock().unwrap();
        assert_eq!(p.fleet_loads, 1, "no reload for the registration");
        let stats = p.site().unwrap().stats;
        assert_eq!((stats.derivations, stats.waves, stats.publishes), (1, 1, 2));
        assert_eq!(p.store().last_reconcile().unwrap().unwrap().statuses.len(), applied.record.statuses.len());
    });
}

#[test]
fn an_older_desired_state_never_replaces_a_newer_one_and_a_catalog_saved_elsewhere_is_followed() {
    let dir = tempfile::tempdir().unwrap();
    let mut site = Site::new();
    for n in 0..3 {
        site.deployments.push(object("UpdateDeployment", &format!("pilot-{n}"), valid_spec(), json!({})));
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (ctx, _handle) = site.context(&dir);
        let older = ctx.desired();
        assert_eq!(older.seq, 1);
        // A newer desired state (pilot-2 deleted) applied first, as when a reconcile that
        // read the caches earlier waited for the pipeline's lock.
        let mut state = older.state.clone();
        state.deployments.remove("pilot-2");
        state.revision = "kubernetes/site@newer".into();
        let newer = Arc::new(super::context::Desired {
            state,
            problems: older.problems.clone(),
            objects: older.objects.clone(),
            seq: 2,
        });
        let applied = ctx.apply(newer).await.unwrap();
        assert!(applied.status_of("UpdateDeployment", "pilot-2").is_none());
        let again = ctx.apply(older).await.unwrap();
        assert_eq!(again.record.revision, "kubernetes/site@newer", "the older state is not applied again");
        assert!(again.status_of("UpdateDeployment", "pilot-2").is_none(), "its policies stay withdrawn");

        // Another process (`patchops catalog import --store`) saves a new catalog version:
        // the feed tick picks it up without a restart.
        let mut other = crate::store::open(dir.path().join("patchops.db").to_str().unwrap()).unwrap();
        let before = again.record.catalog_version;
        let update = crate::catalog::test_support::update("KB1", "Windows Server 2022", "2026-12-01");
        other.save_catalog(&[update], jiff::Timestamp::now()).unwrap();
        let followed = ctx.follow().await.unwrap().expect("a new catalog version is a change");
        assert!(followed.record.catalog_version > before, "{} > {before}", followed.record.catalog_version);
        assert_eq!(followed.record.revision, "kubernetes/site@newer");
    });
}
