//! Command-line conventions users of kubectl, flux and argocd rely on.

use std::io::Read;
use std::process::{Command, Stdio};

/// `patchops catalog import … | head -c 100` (6,726 rows): the reader goes away after a
/// few bytes; the command ends without a panic or an error message (as `cat` would, by
/// SIGPIPE).
#[test]
fn a_closed_pipe_ends_a_printing_command_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .args(["catalog", "import", "--format", "debian-dsa"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/debian/DSA-list.gz"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    stdout.read_exact(&mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_ne!(out.status.code(), Some(101), "not a panic");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        // The table is far longer than a pipe buffer, so a write after the reader left
        // ends the process by SIGPIPE.
        assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
    }
}

fn patchops(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_patchops")).args(args).env_remove("PATCHOPS_LOG").output().unwrap()
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn version_names_the_commit_and_build_date_and_prints_json_for_scripts() {
    let text = patchops(&["version"]);
    assert!(text.status.success());
    assert!(
        stdout(&text).starts_with(&format!("patchops {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{}",
        stdout(&text)
    );
    let json: serde_json::Value = serde_json::from_slice(&patchops(&["version", "-o", "json"]).stdout).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));
    let commit = json["gitCommit"].as_str().unwrap();
    assert!(commit == "unknown" || commit.chars().all(|c| c.is_ascii_hexdigit()), "{commit}");
    assert!(json["buildDate"].as_str().unwrap().parse::<jiff::Timestamp>().is_ok(), "{json}");
}

#[test]
fn completion_scripts_parse_in_their_shell_and_name_every_subcommand() {
    let bash = patchops(&["completion", "bash"]);
    assert!(bash.status.success());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("patchops.bash");
    std::fs::write(&script, &bash.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&script).output().unwrap();
    assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
    // Sourced, it registers a completion function for patchops.
    let sourced = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p patchops", script.display()))
        .output()
        .unwrap();
    assert!(stdout(&sourced).contains("patchops"), "{}", String::from_utf8_lossy(&sourced.stderr));
    for sub in ["validate", "plan", "catalog", "status", "version", "completion"] {
        assert!(stdout(&bash).contains(sub), "bash completion lacks {sub}");
    }
    for (shell, marker) in
        [("zsh", "#compdef patchops"), ("fish", "complete -c patchops"), ("powershell", "Register-ArgumentCompleter")]
    {
        let out = patchops(&["completion", shell]);
        assert!(out.status.success() && stdout(&out).contains(marker), "{shell}");
    }
}

#[test]
fn a_usage_error_exits_64_never_the_changes_found_code() {
    let out = patchops(&["plan", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(64), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = patchops(&["catalog", "diff", "one", "two"]);
    assert_eq!(out.status.code(), Some(64));
    // Help is not an error.
    assert_eq!(patchops(&["plan", "--help"]).status.code(), Some(0));
}

/// A store holding one reconcile of the example site.
fn example_store(dir: &std::path::Path) -> String {
    let store = dir.join("site.db").display().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_patchops"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "run",
            "--path",
            "examples/repo",
            "--simulate-fleet",
            "examples/fleet.yaml",
            "--once",
            "--store",
            &store,
        ])
        .env("PATCHOPS_STATE_DIR", dir.join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    store
}

#[test]
fn tables_fit_120_columns_wide_shows_every_column_and_no_headers_drops_the_header() {
    let dir = tempfile::tempdir().unwrap();
    let store = example_store(dir.path());
    let table = stdout(&patchops(&["status", "--store", &store]));
    let longest = table.lines().map(|l| l.chars().count()).max().unwrap();
    assert!(longest <= 120, "a line of {longest} characters:\n{table}");
    assert!(table.contains("DEPLOYMENT") && !table.contains("DEADLINE"), "{table}");
    let wide = stdout(&patchops(&["status", "--store", &store, "-o", "wide"]));
    for column in ["DEADLINE", "WAIVED", "REBOOT", "NEXT WINDOW"] {
        assert!(wide.contains(column), "-o wide lacks {column}:\n{wide}");
    }
    let bare = stdout(&patchops(&["status", "--store", &store, "--no-headers"]));
    assert!(!bare.contains("DEPLOYMENT") && bare.lines().count() == table.lines().count() - 2, "{bare}");
    // Scripts read camelCase keys.
    let json: serde_json::Value =
        serde_json::from_slice(&patchops(&["status", "--store", &store, "-o", "json"]).stdout).unwrap();
    assert!(json["catalogVersion"].as_u64().unwrap() >= 1, "{json}");
}

#[test]
fn catalog_diff_exits_0_for_equal_versions_and_2_when_they_differ() {
    let dir = tempfile::tempdir().unwrap();
    let store = example_store(dir.path());
    let same = patchops(&["catalog", "diff", "1", "1", "--store", &store]);
    assert_eq!(same.status.code(), Some(0), "{}", String::from_utf8_lossy(&same.stderr));
    let empty = patchops(&["catalog", "diff", "0", "1", "--store", &store]);
    assert_eq!(empty.status.code(), Some(2), "{}", String::from_utf8_lossy(&empty.stderr));
    assert!(stdout(&empty).contains("added ("));
}

#[test]
fn reading_a_work_tree_with_uncommitted_yaml_warns_that_the_commit_is_what_counts() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("repo");
    let git = |args: &[&str]| {
        let out = Command::new("git").arg("-C").arg(&repo).args(args).output().unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    std::fs::create_dir_all(&repo).unwrap();
    git(&["init", "-q", "-b", "main"]);
    let copied = Command::new("cp")
        .arg("-r")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/repo/."))
        .arg(&repo)
        .status()
        .unwrap();
    assert!(copied.success());
    git(&["add", "-A"]);
    git(&["-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-qm", "site"]);
    let validate = |dir: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_patchops"))
            .args(["validate", "--repo"])
            .arg(dir.join("repo"))
            .env("PATCHOPS_STATE_DIR", dir.join("state"))
            .env_remove("PATCHOPS_LOG")
            .output()
            .unwrap()
    };
    let clean = validate(dir.path());
    assert!(clean.status.success());
    assert!(!String::from_utf8_lossy(&clean.stderr).contains("uncommitted"));
    std::fs::write(repo.join("collections/broken.yaml"), "kind: [not closed\n").unwrap();
    let dirty = validate(dir.path());
    let stderr = String::from_utf8_lossy(&dirty.stderr);
    assert!(dirty.status.success(), "the commit is still valid: {stderr}");
    assert!(stderr.contains("uncommitted changes (first: collections/broken.yaml)"), "{stderr}");
}
