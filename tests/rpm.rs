//! The RPM path end to end with the real tools (Debian's rpm, createrepo-c, dnf and zypper
//! packages; `scripts/ensure-rpm-tools` installs them): small RPMs built with rpmbuild, a
//! repository published with createrepo_c and an updateinfo.xml added with modifyrepo_c,
//! old versions installed into a private root, scanned with the agent's rpm scanner,
//! patched with the dnf and zypper installers and scanned again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use patchops::agent::installers::dnf::Dnf;
use patchops::agent::installers::zypper::Zypper;
use patchops::agent::installers::{InstallOutcome, Installer};
use patchops::agent::machine::{Machine, RpmMachine};
use patchops::agent::scanners::rpm::{RpmDb, facts};
use patchops::agent::scanners::scan;
use patchops::catalog::rpm_updateinfo;
use patchops::catalog::source::Fetcher;
use patchops::catalog::{Catalog, ScanVerdict};
use patchops::resources::CatalogSource;

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}; run scripts/ensure-rpm-tools"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

const SPEC: &str = r#"Name: %{pname}
Version: %{pver}
Release: %{prel}
Summary: patchops test package %{pname}
License: MIT
%if "%{parch}" == "noarch"
BuildArch: noarch
%endif
%description
A package for the patchops RPM tests.
%if "%{ppre}" != "none"
%pre -p <lua>
%{ppre}
%endif
%install
mkdir -p %{buildroot}/usr/share/%{pname}
echo %{pver}-%{prel} > %{buildroot}/usr/share/%{pname}/version.%{parch}
%files
/usr/share/%{pname}
"#;

/// (name, version, release, arch, Lua %pre scriptlet or `none`: a private root has no shell)
const PACKAGES: [(&str, &str, &str, &str, &str); 10] = [
    ("hello", "1.0", "1", "noarch", "none"),
    ("hello", "1.1", "1", "noarch", "none"),
    ("libfoo", "2.0", "1", "x86_64", "none"),
    ("libfoo", "2.0", "2", "x86_64", "none"),
    ("libfoo", "2.0", "1", "i686", "none"),
    ("libfoo", "2.0", "2", "i686", "none"),
    ("other", "1", "1", "noarch", "none"),
    ("other", "2", "1", "noarch", "none"),
    ("broken", "1.0", "1", "noarch", "none"),
    ("broken", "1.0", "2", "noarch", "error('refusing to upgrade')"),
];

const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.org" status="final" type="security" version="2">
    <id>TEST-2026:0001</id>
    <title>Important: hello and libfoo security update</title>
    <issued date="2026-11-20 00:00:00"/>
    <severity>Important</severity>
    <references><reference href="https://example.org/CVE-2026-0001" id="CVE-2026-0001" type="cve"/></references>
    <pkglist><collection short="test9"><name>Test Linux 9</name>
      <package name="hello" version="1.1" release="1" epoch="0" arch="noarch"><filename>hello-1.1-1.noarch.rpm</filename></package>
      <package name="libfoo" version="2.0" release="2" epoch="0" arch="x86_64"><filename>libfoo-2.0-2.x86_64.rpm</filename></package>
      <package name="libfoo" version="2.0" release="2" epoch="0" arch="i686"><filename>libfoo-2.0-2.i686.rpm</filename></package>
      <package name="hello" version="1.1" release="1" epoch="0" arch="src"><filename>hello-1.1-1.src.rpm</filename></package>
    </collection></pkglist>
  </update>
  <update from="security@example.org" status="final" type="bugfix" version="2">
    <id>TEST-2026:0002</id>
    <title>broken bug fix update</title>
    <issued date="2026-11-21"/>
    <pkglist><collection short="test9"><name>Test Linux 9</name>
      <package name="broken" version="1.0" release="2" epoch="0" arch="noarch"><filename>broken-1.0-2.noarch.rpm</filename></package>
    </collection></pkglist>
  </update>
</updates>
"#;

/// Packages built once per test run, and the repository made of them.
struct Fixture {
    _dir: tempfile::TempDir,
    rpms: PathBuf,
    repo: PathBuf,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("pkg.spec");
        std::fs::write(&spec, SPEC).unwrap();
        let top = dir.path().join("top");
        for (name, version, release, arch, pre) in PACKAGES {
            let define = |k: &str, v: &str| ["--define".to_string(), format!("{k} {v}")];
            run(Command::new("rpmbuild")
                .args(["-bb", "--quiet", "--target", arch])
                .args(define("_topdir", &top.display().to_string()))
                .args(define("_build_id_links", "none"))
                .args(define("pname", name))
                .args(define("pver", version))
                .args(define("prel", release))
                .args(define("parch", arch))
                .args(define("ppre", pre))
                .arg(&spec));
        }
        let rpms = dir.path().join("rpms");
        let repo = dir.path().join("repo");
        std::fs::create_dir_all(&rpms).unwrap();
        std::fs::create_dir_all(&repo).unwrap();
        for arch in ["noarch", "x86_64", "i686"] {
            for entry in std::fs::read_dir(top.join("RPMS").join(arch)).unwrap() {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_owned();
                std::fs::copy(&path, rpms.join(&name)).unwrap();
                std::fs::copy(&path, repo.join(&name)).unwrap();
            }
        }
        run(Command::new("createrepo_c").arg("-q").arg(&repo));
        let updateinfo = dir.path().join("updateinfo.xml");
        std::fs::write(&updateinfo, UPDATEINFO).unwrap();
        run(Command::new("modifyrepo_c").arg("--mdtype=updateinfo").arg(&updateinfo).arg(repo.join("repodata")));
        Fixture { _dir: dir, rpms, repo }
    })
}

/// A private root with an rpm database holding these package files.
fn root_with(dir: &Path, files: &[&str]) -> RpmDb {
    let rpmdb = RpmDb::new(dir, None);
    run(rpmdb.command().arg("--initdb"));
    let paths: Vec<PathBuf> = files.iter().map(|f| fixture().rpms.join(f)).collect();
    run(rpmdb.command().args(["-i", "--nodeps"]).args(&paths));
    std::fs::create_dir_all(dir.join("etc")).unwrap();
    std::fs::write(
        dir.join("etc/os-release"),
        "NAME=\"Test Linux\"\nID=\"testlinux\"\nID_LIKE=\"rhel centos fedora\"\nVERSION_ID=\"9.4\"\n",
    )
    .unwrap();
    rpmdb
}

const OLD: [&str; 5] = [
    "hello-1.0-1.noarch.rpm",
    "libfoo-2.0-1.x86_64.rpm",
    "libfoo-2.0-1.i686.rpm",
    "other-1-1.noarch.rpm",
    "broken-1.0-1.noarch.rpm",
];

/// `rpm -qa` of the root, sorted: what changed is compared with the reference tool.
fn rpm_qa(rpmdb: &RpmDb) -> Vec<String> {
    let text = run(rpmdb.command().args(["-qa", "--qf", "%{NAME}-%{EPOCHNUM}:%{VERSION}-%{RELEASE}.%{ARCH}\\n"]));
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    lines.sort();
    lines
}

fn catalog() -> Catalog {
    let fetcher = Fetcher::new(&fixture().repo, std::time::Duration::from_secs(5));
    let source = CatalogSource { file: Some(fixture().repo.display().to_string()), ..Default::default() };
    let fetched = rpm_updateinfo::fetch(&fetcher, &source, None).unwrap();
    Catalog::new(1, rpm_updateinfo::parse(&fetched.name, &fetched.bytes).unwrap(), &Default::default())
}

fn dnf(rpmdb: &RpmDb, dir: &Path, dry_run: bool) -> Dnf {
    let config = dir.join("dnf.conf");
    std::fs::write(
        &config,
        format!(
            "[main]\ngpgcheck=0\nreposdir=/dev/null\ncachedir=/var/cache/dnf\ninstall_weak_deps=0\n\
             [test]\nname=test\nbaseurl=file://{}\nenabled=1\ngpgcheck=0\n",
            fixture().repo.display()
        ),
    )
    .unwrap();
    let mut dnf = Dnf::new(dry_run, rpmdb.clone());
    dnf.config = Some(config);
    dnf.releasever = Some("9".into());
    dnf
}

fn verdicts(machine: &mut RpmMachine, catalog: &Catalog) -> Vec<(String, ScanVerdict)> {
    let facts = machine.facts(catalog).unwrap();
    scan(catalog, &facts).into_iter().map(|(i, v)| (catalog.updates[i as usize].id.clone(), v)).collect()
}

#[test]
fn d2_an_rpm_root_is_scanned_patched_with_dnf_and_rescanned() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let rpmdb = root_with(&root, &OLD);
    let catalog = catalog();
    assert_eq!(catalog.len(), 2);
    let security = catalog.updates.iter().find(|u| u.id == "TEST-2026:0001-test9").unwrap();

    // The scanner lists what rpm -qa lists.
    let installed = rpmdb.installed().unwrap();
    let mut ours: Vec<String> = installed
        .iter()
        .map(|p| {
            let evr = if p.evr.contains(':') { p.evr.clone() } else { format!("0:{}", p.evr) };
            format!("{}-{evr}.{}", p.name, p.arch)
        })
        .collect();
    ours.sort();
    let before = rpm_qa(&rpmdb);
    assert_eq!(ours, before);
    assert_eq!(facts(&installed).packages["libfoo.i686"], "2.0-1");

    let mut machine = RpmMachine::new(rpmdb.clone(), Box::new(dnf(&rpmdb, dir.path(), true)), Default::default());
    assert_eq!(machine.values["osFamily"], "rhel");
    assert_eq!(machine.values["osVersion"], "9.4");
    let required = vec![
        ("TEST-2026:0001-test9".to_string(), ScanVerdict::Missing),
        ("TEST-2026:0002-test9".to_string(), ScanVerdict::Missing),
    ];
    assert_eq!(verdicts(&mut machine, &catalog), required);

    // Dry run: dnf resolves the transaction and changes nothing.
    match machine.install(security, &[]) {
        InstallOutcome::Installed { reboot_required, .. } => assert!(!reboot_required),
        other => panic!("{other:?}"),
    }
    assert_eq!(rpm_qa(&rpmdb), before, "the dry run changed nothing");

    // Prefetch downloads into dnf's cache and installs nothing.
    let mut apply = dnf(&rpmdb, dir.path(), false);
    assert!(apply.fetches_own_content());
    apply.prefetch(security).unwrap();
    assert_eq!(rpm_qa(&rpmdb), before, "prefetch installs nothing");

    // Apply: exactly the advisory's three packages change (not `other`, which has a newer
    // version in the repository too, nor `broken`).
    let mut machine = RpmMachine::new(rpmdb.clone(), Box::new(apply), Default::default());
    assert!(machine.fetches_own_content(), "the machine passes on what its installer says");
    match machine.install(security, &[]) {
        InstallOutcome::Installed { .. } => {}
        other => panic!("{other:?}"),
    }
    let after = rpm_qa(&rpmdb);
    let removed: Vec<&String> = before.iter().filter(|p| !after.contains(p)).collect();
    let added: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(removed, ["hello-0:1.0-1.noarch", "libfoo-0:2.0-1.i686", "libfoo-0:2.0-1.x86_64"]);
    assert_eq!(added, ["hello-0:1.1-1.noarch", "libfoo-0:2.0-2.i686", "libfoo-0:2.0-2.x86_64"]);
    assert_eq!(
        verdicts(&mut machine, &catalog),
        [("TEST-2026:0001-test9".to_string(), ScanVerdict::Installed), required[1].clone()]
    );

    // Installing it again: nothing below the fix is left.
    match machine.install(security, &[]) {
        InstallOutcome::Failed { error, .. } => assert!(error.contains("no installed package"), "{error}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failing_rpm_scriptlet_fails_the_install_with_dnfs_message_and_keeps_the_old_version() {
    let dir = tempfile::tempdir().unwrap();
    let rpmdb = root_with(&dir.path().join("root"), &OLD);
    let catalog = catalog();
    let broken = catalog.updates.iter().find(|u| u.id == "TEST-2026:0002-test9").unwrap();
    let before = rpm_qa(&rpmdb);
    let mut dnf = dnf(&rpmdb, dir.path(), false);
    match dnf.install(broken, &[]) {
        InstallOutcome::Failed { error, .. } => {
            assert!(error.starts_with("dnf upgrade broken-1.0-2.noarch: "), "{error}");
            assert!(error.contains("Error"), "{error}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rpm_qa(&rpmdb), before, "the failed transaction left every package as it was");
    let facts = facts(&rpmdb.installed().unwrap());
    assert_eq!(broken.applicability.evaluate(&facts), ScanVerdict::Missing, "still Required");
}

#[test]
fn zypper_installs_exactly_the_advisorys_packages_and_dry_runs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // SUSE ships 32-bit libraries as separate `-32bit` packages, not as one name in two
    // architectures: zypper would switch libfoo.i686 to x86_64. A SUSE-like root has one.
    let suse: Vec<&str> = OLD.iter().copied().filter(|f| !f.ends_with(".i686.rpm")).collect();
    let rpmdb = root_with(&root, &suse);
    run(Command::new("zypper")
        .args(["--non-interactive", "--root"])
        .arg(&root)
        .args(["addrepo", "--no-gpgcheck"])
        .arg(format!("file://{}", fixture().repo.display()))
        .arg("test"));
    let catalog = catalog();
    let security = catalog.updates.iter().find(|u| u.id == "TEST-2026:0001-test9").unwrap();
    let before = rpm_qa(&rpmdb);
    let mut dry = Zypper::new(true, rpmdb.clone());
    match dry.install(security, &[]) {
        InstallOutcome::Installed { .. } => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(rpm_qa(&rpmdb), before);
    let mut zypper = Zypper::new(false, rpmdb.clone());
    match zypper.install(security, &[]) {
        InstallOutcome::Installed { .. } => {}
        other => panic!("{other:?}"),
    }
    let after = rpm_qa(&rpmdb);
    let added: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(added, ["hello-0:1.1-1.noarch", "libfoo-0:2.0-2.x86_64"]);
    assert_eq!(after.len(), before.len(), "upgraded in place: {after:?}");
    let facts = facts(&rpmdb.installed().unwrap());
    assert_eq!(security.applicability.evaluate(&facts), ScanVerdict::Installed);
}

#[test]
fn an_rpm_database_that_cannot_be_read_is_a_scan_failure_with_rpms_message() {
    let dir = tempfile::tempdir().unwrap();
    let missing = RpmDb::new(&dir.path().join("nowhere"), None).installed().unwrap_err().to_string();
    assert!(missing.contains("no rpm database in") && missing.contains("nowhere/var/lib/rpm"), "{missing}");

    let root = dir.path().join("root");
    let rpmdb = root_with(&root, &OLD[..1]);
    let db = root.join("var/lib/rpm/rpmdb.sqlite");
    for f in ["rpmdb.sqlite-wal", "rpmdb.sqlite-shm"] {
        let _ = std::fs::remove_file(root.join("var/lib/rpm").join(f));
    }
    std::fs::write(&db, b"this is not an sqlite database, it was overwritten").unwrap();
    let damaged = rpmdb.installed().unwrap_err().to_string();
    assert!(damaged.contains("rpm -qa on") && damaged.contains("var/lib/rpm failed: error:"), "{damaged}");
    assert!(damaged.contains("cannot open Packages database"), "rpm's own words: {damaged}");
}

#[test]
fn a_repository_url_is_read_through_repomd_xml() {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let base = format!("http://{}/", server.server_addr().to_ip().unwrap());
    let repo = fixture().repo.clone();
    let handle = std::thread::spawn(move || {
        for _ in 0..2 {
            let Ok(request) = server.recv() else { return };
            let path = repo.join(request.url().trim_start_matches('/'));
            let response = match std::fs::read(&path) {
                Ok(bytes) => tiny_http::Response::from_data(bytes),
                Err(_) => tiny_http::Response::from_data(Vec::new()).with_status_code(404),
            };
            let _ = request.respond(response);
        }
    });
    let cache = tempfile::tempdir().unwrap();
    let fetcher = Fetcher::new(cache.path(), std::time::Duration::from_secs(5));
    let source = CatalogSource { url: Some(base.clone()), ..Default::default() };
    let fetched = rpm_updateinfo::fetch(&fetcher, &source, None).unwrap();
    handle.join().unwrap();
    assert!(fetched.name.starts_with(&base) && fetched.name.ends_with("-updateinfo.xml.gz"), "{}", fetched.name);
    let updates = rpm_updateinfo::parse(&fetched.name, &fetched.bytes).unwrap();
    assert_eq!(updates, catalog().updates);
}

#[test]
fn catalog_import_of_the_almalinux_osv_dump_imports_and_an_unsupported_ecosystem_fails() {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/rpm");
    let state = tempfile::tempdir().unwrap();
    let import = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_patchops"))
            .env("PATCHOPS_STATE_DIR", state.path())
            .args(["catalog", "import"])
            .args(args)
            .output()
            .unwrap()
    };
    let out_file = state.path().join("alma.yaml");
    let out = import(&[
        "--format",
        "osv",
        data.join("almalinux9-osv.zip").to_str().unwrap(),
        "--out",
        out_file.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("imported 1826 updates"), "{stderr}");

    let pypi = state.path().join("pypi.json");
    std::fs::write(
        &pypi,
        r#"[{"id": "PYSEC-2024-1", "published": "2024-01-01T00:00:00Z", "affected": [{"package": {"ecosystem": "PyPI", "name": "requests"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "2.32.0"}]}]}]}]"#,
    )
    .unwrap();
    let out = import(&["--format", "osv", pypi.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("PyPI (1 advisory, 1 package)") && stderr.contains("Supported:"), "{stderr}");

    let out = import(&[
        "--format",
        "rpm-updateinfo",
        data.join("fedora-core-updates-5-x86_64-updateinfo.xml.gz").to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.contains("imported 131 updates"), "{stderr}");
}

/// The agent code end to end: an rpm agent registers with a real management point on
/// loopback, scans its private root (the rpm-updateinfo catalog read from the repository
/// folder), gets a mandatory deployment of the security advisory, installs it with dnf and
/// reports it Installed; the deployment ends compliant.
#[test]
fn d6_an_rpm_agent_is_patched_by_a_deployment_through_the_management_point() {
    use jiff::{SignedDuration, Timestamp};
    use patchops::agent::{Agent, AgentOptions, Download};

    let dir = tempfile::tempdir().unwrap();
    let rpmdb = root_with(&dir.path().join("root"), &OLD);
    let before = rpm_qa(&rpmdb);
    let resources = format!(
        "apiVersion: patchops.dev/v1alpha1\nkind: UpdateCatalog\nmetadata: {{name: test9}}\n\
         spec:\n  source: {{file: \"{repo}\"}}\n  format: rpm-updateinfo\n---\n\
         apiVersion: patchops.dev/v1alpha1\nkind: Collection\nmetadata: {{name: rhel}}\n\
         spec:\n  selector: {{matchFacts: {{osFamily: rhel}}}}\n---\n\
         apiVersion: patchops.dev/v1alpha1\nkind: UpdateList\nmetadata: {{name: security}}\n\
         spec:\n  criteria: {{classifications: [Security Updates]}}\n---\n\
         apiVersion: patchops.dev/v1alpha1\nkind: UpdateDeployment\nmetadata: {{name: security-rhel}}\n\
         spec:\n  updateList: security\n  collection: rhel\n  startTime: 2026-11-16T00:00:00Z\n  deadline: 2026-11-30T00:00:00Z\n",
        repo = fixture().repo.display()
    );
    let git_dir = dir.path().join("desired");
    let repo = git2::Repository::init(&git_dir).unwrap();
    std::fs::write(git_dir.join("resources.yaml"), resources).unwrap();
    let mut index = repo.index().unwrap();
    index.add_all(["*"], git2::IndexAddOption::DEFAULT, None).unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("Admin", "admin@example.org").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "rpm fleet", &tree, &[]).unwrap();

    let store = dir.path().join("patchops.db").display().to_string();
    let source = patchops::git::GitSource {
        repo: git_dir.display().to_string(),
        revision: None,
        path: None,
        cache_dir: dir.path().join("git-cache"),
    };
    let mut runner = patchops::pipeline::Pipeline::new(source, patchops::store::open(&store).unwrap(), None);
    let server =
        patchops::server::BackgroundServer::start("127.0.0.1:0".parse().unwrap(), &store, "enroll", None).unwrap();

    let machine = RpmMachine::new(rpmdb.clone(), Box::new(dnf(&rpmdb, dir.path(), false)), Default::default());
    let options = AgentOptions {
        name: "alma-1".into(),
        server: format!("http://{}", server.addr),
        enroll_secret: "enroll".into(),
        state_dir: Some(dir.path().join("agent")),
        download: Download::Http,
        agent_version: "2.1.0".into(),
        catalogs: None,
        seed: 3,
    };
    let mut agent = Agent::new(options, machine).unwrap();
    let t0: Timestamp = "2026-11-16T08:00:00Z".parse().unwrap();
    let mut record = runner.reconcile_once(t0).unwrap().0;
    for m in 0..=30 {
        let t = t0 + SignedDuration::from_mins(m);
        agent.tick(t).unwrap();
        if m % 10 == 9 {
            record = runner.reconcile_once(t).unwrap().0;
        }
    }
    assert_eq!(agent.stats.installs, 1, "{:?}", agent.state.enforcement);
    assert_eq!(agent.state.missing.iter().collect::<Vec<_>>(), ["TEST-2026:0002-test9"], "only the bug fix is left");
    let after = rpm_qa(&rpmdb);
    let added: Vec<&String> = after.iter().filter(|p| !before.contains(p)).collect();
    assert_eq!(added, ["hello-0:1.1-1.noarch", "libfoo-0:2.0-2.i686", "libfoo-0:2.0-2.x86_64"]);
    let status = &record.statuses.iter().find(|s| s.kind == "UpdateDeployment").unwrap().status;
    assert_eq!(status["compliancePercent"], 100.0, "{status}");
    let fleet = patchops::store::open(&store).unwrap().load_fleet().unwrap();
    let client = fleet.clients.iter().find(|c| c.name == "alma-1").unwrap();
    assert_eq!(client.facts["osFamily"], "rhel");
    server.stop().unwrap();
}
