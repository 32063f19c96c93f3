//! Files only their owner may read: the key dir, the key files in it, the tokens file.
//!
//! Whoever reads the key dir can read every template; whoever can write the tokens file can
//! give themselves every role. So at
//! start-up each of them is refused, with the command that fixes it, if it is not owned by the
//! user the server runs as, if its group or others may access it (mode & 0o077), or, for a
//! file, if it is a symbolic link (someone else's link would decide which file is the key).
//! The files this module writes are created owner-only (0600, directories 0700) under a
//! temporary name that must not exist yet (`create_new`, `O_NOFOLLOW`), synced, then moved into
//! place: a key file by a hard link, which fails if the name is taken (a key is never
//! overwritten), a tokens file by a rename, which replaces a link rather than following it.
use std::{
    fs::{self, File},
    io::Write,
    os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

/// Why an owner-only file or directory was refused.
#[derive(Debug, thiserror::Error)]
pub enum PrivateError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} {problem}: {fix}", path.display())]
    Exposed { path: PathBuf, problem: String, fix: String },
}

impl PrivateError {
    /// Whether the file is simply absent.
    pub fn is_not_found(&self) -> bool {
        matches!(self, PrivateError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// The effective user id of this process.
fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Refuses `meta` (of `path`) unless this user owns it and its group and others have no access.
fn check(path: &Path, meta: &fs::Metadata, dir: bool) -> Result<(), PrivateError> {
    let exposed = |problem: String, fix: String| PrivateError::Exposed { path: path.to_path_buf(), problem, fix };
    let shown = path.display();
    if dir && !meta.is_dir() {
        return Err(exposed(
            "is not a directory".into(),
            "give a directory that only the server's user can read".into(),
        ));
    }
    if !dir && !meta.is_file() {
        return Err(exposed("is not a regular file".into(), "put the file itself there".into()));
    }
    let (uid, me) = (meta.uid(), euid());
    if uid != me {
        return Err(exposed(
            format!("is owned by uid {uid}, not by uid {me} that the server runs as"),
            format!("run the server as its owner, or `chown {me} {shown}`"),
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o077 != 0 {
        let (wanted, what) = if dir { ("700", "directory") } else { ("600", "file") };
        return Err(exposed(
            format!("is accessible to its group or others (mode {mode:04o}); this {what} holds secrets"),
            format!("run `chmod {wanted} {shown}`"),
        ));
    }
    Ok(())
}

/// Refuses the directory `path` unless it is this user's and closed to group and others.
pub fn check_dir(path: &Path) -> Result<(), PrivateError> {
    let meta = fs::metadata(path).map_err(|source| PrivateError::Io { path: path.to_path_buf(), source })?;
    check(path, &meta, true)
}

/// Opens the owner-only file `path` for reading: refused if it is a symbolic link, someone
/// else's, or open to group or others (checked on the opened file, so it cannot be swapped
/// between the check and the read).
pub fn open(path: &Path) -> Result<File, PrivateError> {
    let io = |source| PrivateError::Io { path: path.to_path_buf(), source };
    let file =
        fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC).open(path).map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                PrivateError::Exposed {
                    path: path.to_path_buf(),
                    problem: "is a symbolic link".into(),
                    fix: format!(
                        "replace it with the file it points to (`cp --remove-destination \"$(readlink -f {0})\" {0}`)",
                        path.display()
                    ),
                }
            } else {
                io(e)
            }
        })?;
    check(path, &file.metadata().map_err(io)?, false)?;
    Ok(file)
}

/// Opens the owner-only file `path` for reading and appending, creating it (0600, its
/// directory synced) if it is absent: refused like [`open`] if it is a symbolic link, someone
/// else's, or open to group or others.
pub fn open_append(path: &Path) -> Result<File, PrivateError> {
    let io = |source| PrivateError::Io { path: path.to_path_buf(), source };
    let new = match fs::symlink_metadata(path) {
        Ok(_) => false,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(io(e)),
    };
    let file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(new)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => PrivateError::Exposed {
                path: path.to_path_buf(),
                problem: "is a symbolic link".into(),
                fix: "replace it with the file it points to".into(),
            },
            _ => io(e),
        })?;
    check(path, &file.metadata().map_err(io)?, false)?;
    if new {
        let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(file)
}

/// Creates the directory `path` (and its parents) owner-only, if missing.
pub fn create_dir(path: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(path)
}

/// A new file at `path` for writing, owner-only: it must not exist, not even as a link.
pub fn create_new(path: &Path) -> std::io::Result<File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// Writes `bytes` to `path`'s temporary sibling, new and synced, and returns its name.
fn write_temporary(path: &Path, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let tmp = path.with_extension("tmp");
    // A crash may have left one; removing a link removes the link, not its target.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = create_new(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    Ok(tmp)
}

/// Creates `path` holding `bytes`, owner-only, whole or not at all; fails if `path` exists.
/// The caller syncs the directory.
pub fn create(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_temporary(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    fs::remove_file(&tmp)?;
    linked
}

/// Writes `bytes` to `path`, owner-only, whole or not at all, replacing what is there (a link
/// there is replaced, not followed).
pub fn replace(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = write_temporary(path, bytes)?;
    fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn exposed(result: Result<impl std::fmt::Debug, PrivateError>) -> String {
        match result {
            Err(e @ PrivateError::Exposed { .. }) => e.to_string(),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn files_are_created_owner_only_and_never_over_an_existing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.key");
        create(&path, b"secret").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        assert_eq!(fs::read(&path).unwrap(), b"secret");
        assert_eq!(create(&path, b"other").unwrap_err().kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"secret", "a key is never overwritten");
        assert!(!path.with_extension("tmp").exists());
        replace(&path, b"new").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let sub = dir.path().join("x/y");
        create_dir(&sub).unwrap();
        assert_eq!(fs::metadata(&sub).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn writing_never_follows_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"theirs").unwrap();
        let path = dir.path().join("a.key");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        assert!(create(&path, b"secret").is_err(), "the name is taken by the link");
        assert!(create_new(&path).is_err());
        // A planted temporary link is removed, not written through.
        std::os::unix::fs::symlink(&target, path.with_extension("tmp")).unwrap();
        replace(&path, b"mine").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"theirs");
        assert!(!fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
        assert_eq!(fs::read(&path).unwrap(), b"mine");
    }

    #[test]
    fn exposed_files_and_dirs_are_refused_with_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        create_dir(&dir).unwrap();
        check_dir(&dir).unwrap();
        let path = dir.join("a.key");
        create(&path, b"secret").unwrap();
        open(&path).unwrap();

        chmod(&path, 0o640);
        let why = exposed(open(&path));
        assert!(why.contains("mode 0640") && why.contains(&format!("chmod 600 {}", path.display())), "{why}");
        chmod(&path, 0o604);
        assert!(exposed(open(&path)).contains("chmod 600"));
        chmod(&path, 0o600);

        chmod(&dir, 0o750);
        let why = exposed(check_dir(&dir));
        assert!(why.contains(&format!("chmod 700 {}", dir.display())), "{why}");
        chmod(&dir, 0o701);
        assert!(exposed(check_dir(&dir)).contains("chmod 700"));
        chmod(&dir, 0o700);

        let link = dir.join("link.key");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(exposed(open(&link)).contains("is a symbolic link"));
        assert!(exposed(check_dir(&path)).contains("not a directory"));
        assert!(exposed(open_append(&link)).contains("is a symbolic link"));
        chmod(&path, 0o644);
        assert!(exposed(open_append(&path)).contains("chmod 600"));
        let appended = dir.join("new.log");
        open_append(&appended).unwrap();
        assert_eq!(fs::metadata(&appended).unwrap().mode() & 0o777, 0o600);
        assert!(open(&dir.join("absent")).unwrap_err().is_not_found());
    }

    #[test]
    fn someone_elses_file_is_refused() {
        // Root makes a file another user's; anyone else finds one: /etc/passwd is root's.
        let dir = tempfile::tempdir().unwrap();
        let path = if euid() == 0 {
            let path = dir.path().join("theirs.key");
            create(&path, b"secret").unwrap();
            std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
            path
        } else {
            PathBuf::from("/etc/passwd")
        };
        let why = exposed(open(&path));
        assert!(why.contains("is owned by uid") && why.contains(&format!("chown {} ", euid())), "{why}");
    }
}
