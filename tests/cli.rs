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
