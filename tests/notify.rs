//! Notifications against a loopback HTTP receiver: the payload of each provider type, the
//! HMAC signature of a generic webhook, the retry after a 500, and a receiver that never
//! answers not holding up a reconcile.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use patchops::desired::DesiredState;
use patchops::git::GitSource;
use patchops::notify::delivery::counters;
use patchops::notify::payload::signature;
use patchops::pipeline::Pipeline;
use patchops::reconcile::Event;
use patchops::store::ReconcileRecord;

/// A request the receiver got.
#[derive(Clone, Debug)]
struct Received {
    path: String,
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
}

/// A loopback receiver: `/fail-once…` answers 500 to its first request, `/hang…` never
/// answers, every other path 200. Every request is recorded on arrival.
struct Receiver {
    address: String,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    fn start() -> Self {
        let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
        let address = format!("http://{}", server.server_addr().to_ip().unwrap());
        let got: Arc<Mutex<Vec<Received>>> = Arc::default();
        let log = got.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for mut request in server.incoming_requests() {
                let mut body = Vec::new();
                request.as_reader().read_to_end(&mut body).unwrap();
                let headers = request
                    .headers()
                    .iter()
                    .map(|h| (h.field.as_str().as_str().to_ascii_lowercase(), h.value.as_str().to_string()))
                    .collect();
                let path = request.url().to_string();
                let seen = {
                    let mut got = log.lock().unwrap();
                    got.push(Received { path: path.clone(), headers, body });
                    got.iter().filter(|r| r.path == path).count()
                };
                if path.starts_with("/hang") {
                    held.push(request); // never answered
                } else if path.starts_with("/fail-once") && seen == 1 {
                    request.respond(tiny_http::Response::empty(500)).unwrap();
                } else {
                    request.respond(tiny_http::Response::empty(200)).unwrap();
                }
            }
        });
        Receiver { address, got }
    }

    /// The requests to `path` once there are `n` of them (waits for the background sender,
    /// at most a minute).
    fn wait_for(&self, path: &str, n: usize) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got: Vec<Received> = self.got.lock().unwrap().iter().filter(|r| r.path == path).cloned().collect();
            if got.len() >= n {
                return got;
            }
            assert!(Instant::now() < deadline, "{path}: {} of {n} request(s) arrived", got.len());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn json(r: &Received) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn desired(address: &str, secret_file: &Path) -> DesiredState {
    let provider = |name: &str, type_: &str, extra: &str| {
        format!(
            "---\napiVersion: patchops.dev/v1alpha1\nkind: NotificationProvider\nmetadata: {{name: {name}}}\nspec:\n  type: {type_}\n  address: {address}/{name}\n{extra}"
        )
    };
    let alert = |name: &str, provider: &str, extra: &str| {
        format!(
            "---\napiVersion: patchops.dev/v1alpha1\nkind: Alert\nmetadata: {{name: {name}}}\nspec:\n  providerRef: {{name: {provider}}}\n  events: [RolloutHalted, WaiverExpired]\n{extra}"
        )
    };
    let mut text = String::from(
        "apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {name: servers}\nspec:\n  selector: {matchFacts: {role: server}}\n\
         ---\napiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {name: desktops}\nspec:\n  selector: {matchFacts: {role: desktop}}\n\
         ---\napiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {name: nov}\nspec:\n  updates: [KB1]\n\
         ---\napiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {name: nov-servers}\nspec:\n  updateList: nov\n  collection: servers\n  startTime: 2026-11-09T00:00:00Z\n  deadline: 2026-11-14T00:00:00Z\n",
    );
    text += &provider("signed", "generic", &format!("  secretFile: {}\n", secret_file.display()));
    text += &provider("slack", "slack", "  channel: \"#patching\"\n");
    text += &provider("teams", "msteams", "");
    text += &provider("am", "alertmanager", "");
    text += &provider("fail-once", "generic", "");
    text += &provider("desktops-only", "generic", "");
    for p in ["signed", "slack", "teams", "am", "fail-once"] {
        text += &alert(&format!("to-{p}"), p, "  summary: production site\n");
    }
    text += &alert("desktops", "desktops-only", "  collections: [desktops]\n");
    DesiredState::load("main@sha1:abc", &[("n.yaml".into(), text)]).unwrap()
}

#[test]
fn each_provider_type_gets_its_payload_signed_generic_webhooks_and_a_500_is_retried() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("hmac");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let desired = desired(&receiver.address, &secret);
    let now: Timestamp = "2026-11-20T12:00:00Z".parse().unwrap();
    let record = ReconcileRecord { time: now, revision: "main@sha1:abc".into(), catalog_version: 1, statuses: vec![] };
    let halted = Event {
        kind: "UpdateDeployment".into(),
        name: "nov-servers".into(),
        reason: "RolloutHalted".into(),
        message: "failure budget exceeded: 3 machines failed".into(),
        time: now,
        severity: patchops::reconcile::Severity::Warning,
    };
    let activated = Event { reason: "DeploymentActivated".into(), ..halted.clone() };
    let catalog = patchops::catalog::Catalog::default();
    patchops::notify::after_reconcile(&desired, &catalog, None, &record, &[halted, activated]);

    let signed = &receiver.wait_for("/signed", 1)[0];
    let v = json(signed);
    assert_eq!(v["event"], "RolloutHalted");
    assert_eq!(v["involvedObject"], serde_json::json!({"kind": "UpdateDeployment", "name": "nov-servers"}));
    assert_eq!(v["message"], "failure budget exceeded: 3 machines failed");
    assert_eq!((v["summary"].as_str(), v["revision"].as_str()), (Some("production site"), Some("main@sha1:abc")));
    assert_eq!(v["collections"], serde_json::json!(["servers"]));
    assert_eq!(signed.headers["x-signature"], signature(b"s3cret", &signed.body));
    assert!(signed.headers["x-signature"].starts_with("sha256=") && signed.headers["x-signature"].len() == 71);
    assert_eq!(signed.headers["content-type"], "application/json");

    let slack = json(&receiver.wait_for("/slack", 1)[0]);
    assert_eq!(slack["channel"], "#patching");
    assert_eq!(slack["attachments"][0]["title"], "RolloutHalted: UpdateDeployment/nov-servers");
    assert_eq!(slack["attachments"][0]["color"], "danger");
    assert_eq!(slack["attachments"][0]["text"], "failure budget exceeded: 3 machines failed\nproduction site");

    let teams = json(&receiver.wait_for("/teams", 1)[0]);
    assert_eq!((teams["@type"].as_str(), teams["themeColor"].as_str()), (Some("MessageCard"), Some("FF0000")));
    assert_eq!(teams["title"], "RolloutHalted: UpdateDeployment/nov-servers");
    assert_eq!(teams["sections"][0]["facts"][1], serde_json::json!({"name": "collections", "value": "servers"}));

    let am = json(&receiver.wait_for("/am", 1)[0]);
    let alert = &am.as_array().unwrap()[0];
    assert_eq!(alert["labels"]["alertname"], "RolloutHalted");
    assert_eq!(alert["labels"]["collection"], "servers");
    assert_eq!(alert["labels"]["severity"], "error");
    assert_eq!(alert["annotations"]["message"], "failure budget exceeded: 3 machines failed");
    assert_eq!(alert["startsAt"], "2026-11-20T12:00:00Z");

    // The 500 is retried with backoff, and the attempts show in the metrics.
    let tries = receiver.wait_for("/fail-once", 2);
    assert_eq!(tries[0].body, tries[1].body);
    let deadline = Instant::now() + Duration::from_secs(60);
    while counters().get("fail-once").0 == 0 {
        assert!(Instant::now() < deadline, "the retry was not counted as sent");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(counters().get("fail-once"), (1, 1, 0, 0));
    let metrics = patchops::metrics::Metrics::default().encode();
    assert!(metrics.contains("patchops_notification_failures_total{provider=\"fail-once\"} 1"), "{metrics}");

    // Only the events asked for (not DeploymentActivated), and not to an alert filtering
    // on another collection.
    let got = receiver.got.lock().unwrap().clone();
    assert_eq!(got.iter().filter(|r| r.path == "/signed").count(), 1);
    assert!(got.iter().all(|r| r.path != "/desktops-only"), "{got:?}");
}

const REPO_FILES: &str = r#"apiVersion: patchops.dev/v1alpha1
kind: Collection
metadata: {name: servers}
spec:
  selector: {matchFacts: {role: server}}
---
apiVersion: patchops.dev/v1alpha1
kind: Waiver
metadata: {name: lab}
spec:
  updates: [KB1]
  collection: servers
  reason: lab machines
  expires: 2026-11-21T00:00:00Z
---
apiVersion: patchops.dev/v1alpha1
kind: NotificationProvider
metadata: {name: hang}
spec:
  type: generic
  address: ADDRESS/hang
  timeout: 1h
---
apiVersion: patchops.dev/v1alpha1
kind: Alert
metadata: {name: waivers}
spec:
  providerRef: {name: hang}
  events: [WaiverExpired]
"#;

#[test]
fn a_receiver_that_never_answers_does_not_hold_up_the_reconcile() {
    let receiver = Receiver::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("repo");
    let repo = git2::Repository::init(&root).unwrap();
    std::fs::create_dir_all(root.join("desired")).unwrap();
    std::fs::write(root.join("desired/all.yaml"), REPO_FILES.replace("ADDRESS", &receiver.address)).unwrap();
    let mut index = repo.index().unwrap();
    index.add_path(Path::new("desired/all.yaml")).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Admin", "admin@example.com").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "waiver and alert", &tree, &[]).unwrap();
    let source = GitSource {
        repo: root.display().to_string(),
        revision: None,
        path: Some("desired".into()),
        cache_dir: dir.path().join("cache"),
    };
    let store = dir.path().join("n.db").display().to_string();
    let mut runner = Pipeline::new(source, patchops::store::open(&store).unwrap(), None);
    runner.reconcile_once("2026-11-20T12:00:00Z".parse().unwrap()).unwrap();
    // The waiver expires between the two reconciles: a WaiverExpired notification to a
    // receiver that holds every request open (for the provider's timeout of an hour).
    for hour in ["2026-11-21T12:00:00Z", "2026-11-21T13:00:00Z", "2026-11-21T14:00:00Z"] {
        let (record, outcome) = runner.reconcile_once(hour.parse().unwrap()).unwrap();
        assert!(record.statuses.iter().any(|s| s.kind == "Waiver" && s.status["state"] == "Expired"));
        let _ = outcome;
    }
    // The request arrived and is still unanswered, yet every reconcile returned and saved.
    let got = receiver.wait_for("/hang", 1);
    assert_eq!(json(&got[0])["event"], "WaiverExpired");
    assert_eq!(json(&got[0])["collections"], serde_json::json!(["servers"]));
    assert_eq!(counters().get("hang"), (0, 0, 0, 0), "no answer yet, so no outcome either");
    let last = runner.store.last_reconcile().unwrap().unwrap();
    assert_eq!(last.time, "2026-11-21T14:00:00Z".parse::<Timestamp>().unwrap());
}

#[test]
fn bad_providers_and_alerts_are_rejected_naming_file_line_and_field() {
    let base = "apiVersion: patchops.dev/v1alpha1\nkind: NotificationProvider\nmetadata: {name: p}\nspec:\n  type: generic\n  address: https://hooks.example.com/x\n---\napiVersion: patchops.dev/v1alpha1\nkind: Alert\nmetadata: {name: a}\nspec:\n  providerRef: {name: p}\n  events: [RolloutHalted]\n";
    // (replace, with, expected line, expected text)
    let cases = [
        ("type: generic", "type: pager", 5, "spec.type"),
        ("https://hooks.example.com/x", "ftp://hooks.example.com/x", 6, "scheme \"ftp\""),
        ("https://hooks.example.com/x", "not a url", 6, "spec.address"),
        (
            "providerRef: {name: p}",
            "providerRef: {name: q}",
            12,
            "NotificationProvider \"q\" not found; known providers: p",
        ),
        ("events: [RolloutHalted]", "events: []", 13, "spec.events"),
        ("events: [RolloutHalted]", "events: [Halted]", 13, "spec.events"),
        ("type: generic", "type: slack\n  secretFile: /etc/k", 5, "only a generic webhook is signed"),
    ];
    for (from, to, line, expected) in cases {
        let text = base.replacen(from, to, 1);
        let problems = DesiredState::load("main@sha1:0", &[("n.yaml".into(), text)]).unwrap_err();
        let shown = patchops::desired::render_problems(&problems);
        assert!(shown.contains(&format!("n.yaml:{line}")) && shown.contains(expected), "{to}: {shown}");
    }
    assert!(DesiredState::load("main@sha1:0", &[("n.yaml".into(), base.to_string())]).is_ok());
}
