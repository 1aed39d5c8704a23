//! DeploymentRule proposals: a real repository with history, a bare repository as the
//! remote, a SQLite store with a catalog and clients, and a loopback HTTP server that
//! plays GitHub or GitLab and checks every request.

mod gitfix;

use std::sync::mpsc;

use git2::{BranchType, Repository};
use gitfix::*;
use patchops::git::rules::{Forge, Proposer, RuleRun};
use patchops::reconcile::Previous;

struct Setup {
    h: History,
    remote: Repository,
}

/// The shared history plus the rule on main, and a bare `origin`.
fn setup() -> Setup {
    let mut h = history();
    h.main = commit(&h.repo, "main", &[h.main], &[("desired/rules.yaml", Some(RULE))], "Erin", T0 + 600, "Add a rule");
    let remote = Repository::init_bare(h.dir.path().join("remote.git")).unwrap();
    h.repo.remote("origin", remote.path().to_str().unwrap()).unwrap();
    drop(seed_store(&h.dir.path().join("p.db")));
    Setup { h, remote }
}

fn proposer(s: &Setup, forge: Option<Forge>) -> Proposer {
    Proposer {
        repo: s.h.repo.path().parent().unwrap().display().to_string(),
        base: Some("main".into()),
        path: Some("desired".into()),
        push: Some("origin".into()),
        forge,
    }
}

fn run(s: &Setup, forge: Option<Forge>) -> Vec<RuleRun> {
    let store = patchops::store::open(&s.h.dir.path().join("p.db").display().to_string()).unwrap();
    let (catalog, fleet) = (store.load_catalog().unwrap(), store.load_fleet().unwrap());
    proposer(s, forge).run(&catalog, &fleet, &Previous::default(), now(), false).unwrap()
}

const BRANCH: &str = "patchops/rule-server-security-1";

fn file_at(repo: &Repository, branch: &str, path: &str) -> Option<String> {
    let commit = repo.find_branch(branch, BranchType::Local).ok()?.get().peel_to_commit().ok()?;
    let entry = commit.tree().ok()?.get_path(std::path::Path::new(path)).ok()?;
    Some(String::from_utf8(repo.find_blob(entry.id()).ok()?.content().to_vec()).unwrap())
}

#[test]
fn a_rule_proposes_its_undeployed_updates_on_a_new_branch_with_the_plan_as_description() {
    let s = setup();
    let runs = run(&s, None);
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    // KB200 is deployed already, KB100 superseded, KB050 expired: only KB400 is left.
    assert_eq!(r.matched, vec!["KB400-srv"]);
    assert!(r.created);
    assert_eq!((r.status.updates_matched, r.status.branch_proposed.as_deref()), (1, Some(BRANCH)));
    assert_eq!(r.status.last_run_time, Some(now()));

    // One commit on top of main; main and the work tree are untouched.
    let branch = s.h.repo.find_branch(BRANCH, BranchType::Local).unwrap().get().peel_to_commit().unwrap();
    assert_eq!(branch.parent_ids().collect::<Vec<_>>(), vec![s.h.main]);
    assert!(
        branch.message().unwrap().starts_with("DeploymentRule server-security: 1 update(s) from catalog version 1")
    );
    assert_eq!(s.h.repo.find_branch("main", BranchType::Local).unwrap().get().target(), Some(s.h.main));
    assert!(!s.h.repo.workdir().unwrap().join("desired/proposals").exists());

    let yaml = file_at(&s.h.repo, BRANCH, "desired/proposals/rule-server-security-1.yaml").unwrap();
    assert!(yaml.contains("- \"KB400-srv\""), "{yaml}");
    let pr = file_at(&s.h.repo, BRANCH, ".patchops/pr/rule-server-security-1.md").unwrap();
    assert!(pr.contains("### UpdateDeployment `rule-server-security-1` (added)"), "{pr}");
    assert!(pr.contains("| KB400-srv | servers | 6 | 5 |"), "{pr}");

    // The branch is a valid revision whose plan against main adds exactly that deployment.
    let (_, head) = patchops::pipeline::load_desired(&source(&s.h, BRANCH)).unwrap();
    let d = &head.deployments["rule-server-security-1"].spec;
    assert_eq!((d.template.as_deref(), d.collection.as_deref()), (Some("servers-standard"), Some("servers")));
    assert_eq!(d.start_time, now());

    // Pushed to the remote.
    let pushed = s.remote.find_reference(&format!("refs/heads/{BRANCH}")).unwrap().target();
    assert_eq!(pushed, Some(branch.id()));
}

#[test]
fn a_second_run_for_the_same_catalog_version_leaves_the_proposal_alone() {
    let s = setup();
    run(&s, None);
    let first = s.h.repo.find_branch(BRANCH, BranchType::Local).unwrap().get().target();
    let again = run(&s, None);
    assert!(!again[0].created);
    assert_eq!(again[0].status.conditions[0].reason, "AlreadyProposed");
    assert_eq!(again[0].status.branch_proposed.as_deref(), Some(BRANCH));
    assert_eq!(s.h.repo.find_branch(BRANCH, BranchType::Local).unwrap().get().target(), first);
}

#[test]
fn nothing_is_proposed_when_every_matching_update_is_deployed() {
    let mut s = setup();
    s.h.main = commit(
        &s.h.repo,
        "main",
        &[s.h.main],
        &[("desired/deployments/dec-servers.yaml", Some(DEC_SERVERS))],
        "Bob",
        T0 + 700,
        "December",
    );
    let runs = run(&s, None);
    assert!(runs[0].matched.is_empty());
    assert_eq!(runs[0].status.conditions[0].reason, "NothingToPropose");
    assert!(s.h.repo.find_branch(BRANCH, BranchType::Local).is_err());
}

#[test]
fn a_push_that_fails_leaves_no_branch_so_the_next_run_tries_again() {
    let s = setup();
    s.h.repo.remote_set_url("origin", s.h.dir.path().join("gone.git").to_str().unwrap()).unwrap();
    let runs = run(&s, None);
    let c = &runs[0].status.conditions[0];
    assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "ProposalFailed"));
    assert!(c.message.contains("cannot push to origin"), "{}", c.message);
    assert!(s.h.repo.find_branch(BRANCH, BranchType::Local).is_err());
}

/// What the fake forge saw.
struct Seen {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: serde_json::Value,
}

/// A loopback server answering one request with `status` and `reply`.
fn forge_server(status: u16, reply: &'static str) -> (String, mpsc::Receiver<Seen>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}", server.server_addr().to_ip().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut request = server.recv().unwrap();
        let mut body = String::new();
        request.as_reader().read_to_string(&mut body).unwrap();
        tx.send(Seen {
            method: request.method().to_string(),
            url: request.url().to_string(),
            headers: request.headers().iter().map(|h| (h.field.to_string(), h.value.to_string())).collect(),
            body: serde_json::from_str(&body).unwrap_or_default(),
        })
        .unwrap();
        request.respond(tiny_http::Response::from_string(reply).with_status_code(status)).unwrap();
    });
    (base, rx)
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

#[test]
fn a_github_pull_request_is_opened_with_the_token_and_the_plan_as_its_body() {
    let s = setup();
    let (api, seen) = forge_server(201, r#"{"number": 7, "html_url": "https://github.example/acme/desired/pull/7"}"#);
    let forge = Forge::GitHub { api_url: api, repo: "acme/desired".into(), token: "t0ken".into() };
    let runs = run(&s, Some(forge));
    assert_eq!(runs[0].pull_request.as_deref(), Some("https://github.example/acme/desired/pull/7"));
    assert!(runs[0].status.conditions[0].message.contains("pull/7"));
    let seen = seen.recv().unwrap();
    assert_eq!((seen.method.as_str(), seen.url.as_str()), ("POST", "/repos/acme/desired/pulls"));
    assert_eq!(header(&seen, "Authorization"), Some("Bearer t0ken"));
    assert_eq!(header(&seen, "Accept"), Some("application/vnd.github+json"));
    assert_eq!((seen.body["head"].as_str(), seen.body["base"].as_str()), (Some(BRANCH), Some("main")));
    assert!(seen.body["title"].as_str().unwrap().starts_with("DeploymentRule server-security"));
    let body = seen.body["body"].as_str().unwrap();
    assert_eq!(Some(body), file_at(&s.h.repo, BRANCH, ".patchops/pr/rule-server-security-1.md").as_deref());
}

#[test]
fn a_gitlab_merge_request_is_opened_with_the_private_token_for_an_encoded_project_path() {
    let s = setup();
    let (api, seen) =
        forge_server(201, r#"{"iid": 3, "web_url": "https://gitlab.example/acme/desired/-/merge_requests/3"}"#);
    let forge =
        Forge::GitLab { api_url: format!("{api}/api/v4"), project: "acme/desired".into(), token: "glpat".into() };
    let runs = run(&s, Some(forge));
    assert_eq!(runs[0].pull_request.as_deref(), Some("https://gitlab.example/acme/desired/-/merge_requests/3"));
    let seen = seen.recv().unwrap();
    assert_eq!((seen.method.as_str(), seen.url.as_str()), ("POST", "/api/v4/projects/acme%2Fdesired/merge_requests"));
    assert_eq!(header(&seen, "PRIVATE-TOKEN"), Some("glpat"));
    assert_eq!(
        (seen.body["source_branch"].as_str(), seen.body["target_branch"].as_str()),
        (Some(BRANCH), Some("main"))
    );
    assert!(seen.body["description"].as_str().unwrap().contains("## patchops plan"));
}

#[test]
fn a_forge_that_refuses_the_pull_request_fails_the_rule_with_its_answer() {
    let s = setup();
    let (api, _seen) = forge_server(401, r#"{"message": "Bad credentials"}"#);
    let forge = Forge::GitHub { api_url: api, repo: "acme/desired".into(), token: "expired".into() };
    let runs = run(&s, Some(forge));
    let c = &runs[0].status.conditions[0];
    assert_eq!(c.status, "False");
    assert!(c.message.contains("HTTP 401") && c.message.contains("Bad credentials"), "{}", c.message);
    assert!(c.message.contains("check the token"), "{}", c.message);
}

#[test]
fn the_reconciler_runs_rules_after_a_catalog_sync_and_records_their_status() {
    let s = setup();
    let store = patchops::store::open(&s.h.dir.path().join("p.db").display().to_string()).unwrap();
    let mut runner = patchops::pipeline::Pipeline::new(source(&s.h, "main"), store, None);
    runner.propose_rules(proposer(&s, None));
    let (record, _) = runner.reconcile_once(now()).unwrap();
    let status = record.statuses.iter().find(|x| x.kind == "DeploymentRule" && x.name == "server-security").unwrap();
    assert_eq!(status.status["updatesMatched"], 1);
    assert_eq!(status.status["branchProposed"], BRANCH);
    assert!(s.h.repo.find_branch(BRANCH, BranchType::Local).is_ok());
    // The status stays on later reconciles of the same catalog version.
    let (record, _) = runner.reconcile_once(now()).unwrap();
    assert!(record.statuses.iter().any(|x| x.kind == "DeploymentRule" && x.status["branchProposed"] == BRANCH));
}
