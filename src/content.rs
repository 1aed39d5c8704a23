//! The content library a management point serves (ConfigMgr: the distribution point's
//! package content): update files stored under their sha256, so a client asks for exactly
//! the file its catalog names and can check what it got. Files enter the library only
//! through `add`, which hashes while copying and renames into place, so a reader never
//! sees a half-written file.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// A folder of content files named by their sha256 (lower-case hex).
#[derive(Clone, Debug)]
pub struct ContentLibrary {
    dir: PathBuf,
}

/// One file added to the library.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Added {
    pub sha256: String,
    pub size: u64,
    pub source: PathBuf,
}

/// Whether `s` is a sha256 as the catalog writes it: 64 lower-case hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// sha256 and length of everything `reader` yields.
pub fn hash_reader(mut reader: impl Read) -> std::io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

impl ContentLibrary {
    /// The library in `dir` (created when missing).
    pub fn open(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.into(), source })?;
        Ok(ContentLibrary { dir: dir.to_path_buf() })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the file with this sha256 is (or would be).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub fn contains(&self, sha256: &str) -> bool {
        is_sha256(sha256) && self.path(sha256).is_file()
    }

    /// Copy a file into the library under its sha256.
    pub fn add_file(&self, source: &Path) -> Result<Added> {
        let io = |e| Error::Io { path: source.into(), source: e };
        let input = File::open(source).map_err(io)?;
        self.add_reader(BufReader::new(input), source)
    }

    /// Store bytes (tests, generated content).
    pub fn add_bytes(&self, bytes: &[u8], name: &Path) -> Result<Added> {
        self.add_reader(bytes, name)
    }

    fn add_reader(&self, mut input: impl Read, source: &Path) -> Result<Added> {
        let tmp = self.dir.join(format!(".incoming-{}-{}", std::process::id(), fastrand::u64(..)));
        let io_tmp = |e| Error::Io { path: tmp.clone(), source: e };
        let mut out = File::create(&tmp).map_err(io_tmp)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let n = input.read(&mut buf).map_err(|e| Error::Io { path: source.into(), source: e })?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(io_tmp)?;
            size += n as u64;
        }
        out.sync_all().map_err(io_tmp)?;
        drop(out);
        let sha256 = hex::encode(hasher.finalize());
        let target = self.path(&sha256);
        std::fs::rename(&tmp, &target).map_err(|e| Error::Io { path: target.clone(), source: e })?;
        Ok(Added { sha256, size, source: source.to_path_buf() })
    }
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn a_file_is_stored_under_its_sha256_and_only_lower_case_hex_names_are_looked_up() {
        let dir = tempfile::tempdir().unwrap();
        let lib = ContentLibrary::open(&dir.path().join("content")).unwrap();
        let added = lib.add_bytes(b"abc", Path::new("abc.txt")).unwrap();
        // sha256("abc"), as every implementation computes it.
        assert_eq!(added.sha256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(added.size, 3);
        assert!(lib.contains(&added.sha256));
        assert!(!lib.contains(&added.sha256.to_uppercase()));
        assert!(!lib.contains("../etc/passwd"));
        assert_eq!(std::fs::read(lib.path(&added.sha256)).unwrap(), b"abc");
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(lib.dir()).unwrap().count(), 1);
    }
}
