//! Secrets given to patchops: the enrollment secret and passwords in store URLs. A
//! command-line argument shows in `ps` to every user of the machine, so files and
//! environment variables are preferred and an argument draws a warning.

use std::path::Path;

use crate::{Error, Result};

/// The secret from `--<flag>-file` (its first line) or from the argument / environment
/// value clap filled in; a warning when it came from the command line itself.
pub fn secret(what: &str, value: Option<&str>, flag: &str, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io { path: path.into(), source })?;
        let line = text.lines().next().unwrap_or("").trim().to_string();
        if line.is_empty() {
            return Err(Error::Usage(format!("{}: the file is empty; write {what} on its first line", path.display())));
        }
        warn_if_readable_by_others(path, what);
        return Ok(Some(line));
    }
    if value.is_some() && in_argv(std::env::args(), flag) {
        tracing::warn!(
            "{what} is passed as the argument {flag} and shows in `ps` to every user of this machine; \
             use {flag}-file FILE or the environment variable instead"
        );
    }
    Ok(value.map(str::to_string))
}

/// Whether the flag appears in the arguments (`--flag value` or `--flag=value`).
fn in_argv(args: impl Iterator<Item = String>, flag: &str) -> bool {
    let with_value = format!("{flag}=");
    args.skip(1).any(|a| a == flag || a.starts_with(&with_value))
}

/// Warn once per argument that holds a URL with a password (`postgres://user:pw@host`).
pub fn warn_about_passwords_in_argv() {
    for arg in std::env::args().skip(1) {
        if url_has_password(&arg) {
            tracing::warn!(
                "a store URL with a password is passed on the command line and shows in `ps`; \
                 put it in PATCHOPS_STORE, or leave the password out and use PGPASSWORD or ~/.pgpass"
            );
        }
    }
}

/// `scheme://user:password@host…` (the value may be `--store=…`).
fn url_has_password(arg: &str) -> bool {
    let Some((_, rest)) = arg.split_once("://") else { return false };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.split_once(':').is_some_and(|(_, pw)| !pw.is_empty()))
}

#[cfg(unix)]
fn warn_if_readable_by_others(path: &Path, what: &str) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            mode = format!("{:o}", meta.permissions().mode() & 0o777),
            "the file holding {what} can be read by other users; chmod 600 it"
        );
    }
}

#[cfg(not(unix))]
fn warn_if_readable_by_others(_: &Path, _: &str) {}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_password_in_a_store_url_is_noticed_and_a_url_without_one_is_not() {
        assert!(url_has_password("postgres://patchops:s3cret@db:5432/patchops"));
        assert!(url_has_password("--store=postgresql://u:p@localhost/db"));
        assert!(!url_has_password("postgres://patchops@db/patchops"));
        assert!(!url_has_password("postgres://db:5432/patchops"), "a port is not a password");
        assert!(!url_has_password("/var/lib/patchops/patchops.db"));
    }

    #[test]
    fn a_secret_flag_is_found_in_argv_in_both_spellings() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>().into_iter();
        assert!(in_argv(argv(&["patchops", "agent", "--enroll-secret", "x"]), "--enroll-secret"));
        assert!(in_argv(argv(&["patchops", "agent", "--enroll-secret=x"]), "--enroll-secret"));
        assert!(!in_argv(argv(&["patchops", "agent", "--enroll-secret-file", "f"]), "--enroll-secret"));
    }

    #[test]
    fn a_secret_file_gives_its_first_line_and_an_empty_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "let-me-in\nignored\n").unwrap();
        assert_eq!(
            secret("the enrollment secret", None, "--enroll-secret", Some(&path)).unwrap().as_deref(),
            Some("let-me-in")
        );
        std::fs::write(&path, "\n").unwrap();
        let e = secret("the enrollment secret", None, "--enroll-secret", Some(&path)).unwrap_err().to_string();
        assert!(e.contains("the file is empty"), "{e}");
    }
}
