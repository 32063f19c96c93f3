//! Request secrets, and the files the CLI writes about a person.
//!
//! A secret on the command line (`--secret S`) is visible to every local user in `ps` and stays
//! in the shell's history, so it may also come from a file (`--secret-file FILE`) or from the
//! environment (`OUBLI_REQUEST_SECRET`). Reports and receipts describe a person: they are
//! written readable by their owner only (0600, in directories created 0700), and never
//! through a symbolic link someone left in the way.
use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result, bail};

/// The longest secret file read (a request secret is 64 hex digits).
const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// A request's secret: `--secret-file`, else `--secret` or `OUBLI_REQUEST_SECRET`.
#[derive(clap::Args, Debug, Clone)]
pub struct RequestSecret {
    /// The request secret. Other users can read it in `ps` and it stays in your shell
    /// history: prefer --secret-file or OUBLI_REQUEST_SECRET.
    #[arg(long = "secret", env = "OUBLI_REQUEST_SECRET", hide_env_values = true)]
    value: Option<String>,
    /// A file holding the request secret (surrounding whitespace ignored); used instead of
    /// --secret and OUBLI_REQUEST_SECRET.
    #[arg(long = "secret-file", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl RequestSecret {
    /// The secret, or "" if none was given (a privacy-desk token needs none).
    pub fn or_empty(&self) -> Result<String> {
        Ok(resolve(self.value.as_deref(), self.file.as_deref())?.unwrap_or_default())
    }

    /// The secret, which the call needs.
    pub fn required(&self) -> Result<String> {
        resolve(self.value.as_deref(), self.file.as_deref())?
            .context("give the request secret: --secret-file FILE, OUBLI_REQUEST_SECRET, or --secret")
    }
}

/// The secret of the access request an erasure names: `--access-secret-file`, else
/// `--access-secret` or `OUBLI_ACCESS_SECRET`.
#[derive(clap::Args, Debug, Clone)]
pub struct AccessSecret {
    /// ...its secret (other users can read it in `ps`: prefer --access-secret-file or
    /// OUBLI_ACCESS_SECRET)...
    #[arg(long = "access-secret", env = "OUBLI_ACCESS_SECRET", hide_env_values = true)]
    value: Option<String>,
    /// ...or a file holding it...
    #[arg(long = "access-secret-file", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl AccessSecret {
    /// The secret, or "" if none was given.
    pub fn or_empty(&self) -> Result<String> {
        Ok(resolve(self.value.as_deref(), self.file.as_deref())?.unwrap_or_default())
    }
}

/// The secret in `file` if one is named, else `value`; `None` if neither holds one.
fn resolve(value: Option<&str>, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(file) = file {
        let context = || format!("cannot read {}", file.display());
        let mut text = String::new();
        fs::File::open(file)
            .with_context(context)?
            .take(MAX_SECRET_FILE_BYTES)
            .read_to_string(&mut text)
            .with_context(context)?;
        let secret = text.trim();
        if secret.is_empty() {
            bail!("{} holds no secret", file.display());
        }
        return Ok(Some(secret.to_string()));
    }
    Ok(value.map(str::trim).filter(|v| !v.is_empty()).map(str::to_string))
}

/// Creates `dir` (and its parents) readable by its owner only, if missing.
pub fn create_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))
}

/// Writes `bytes` to `path`, readable by its owner only (0600, also if the file was there
/// before), refusing to write through a symbolic link.
pub fn write_private(path: &Path, bytes: impl AsRef<[u8]>) -> Result<()> {
    let context = || format!("cannot write {}", path.display());
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow::anyhow!("{} is a symbolic link: not written through it", path.display()),
            _ => anyhow::Error::new(e).context(context()),
        })?;
    file.set_permissions(fs::Permissions::from_mode(0o600)).with_context(context)?;
    file.write_all(bytes.as_ref()).with_context(context)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_secret_file_wins_and_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("secret");
        fs::write(&file, "  abc123\n").unwrap();
        assert_eq!(resolve(Some("flag"), Some(&file)).unwrap().as_deref(), Some("abc123"));
        assert_eq!(resolve(Some("flag"), None).unwrap().as_deref(), Some("flag"));
        assert_eq!(resolve(Some(""), None).unwrap(), None);
        fs::write(&file, "\n").unwrap();
        assert!(resolve(None, Some(&file)).unwrap_err().to_string().contains("holds no secret"));
        assert!(resolve(None, Some(&dir.path().join("absent"))).is_err());
    }

    #[test]
    fn reports_are_written_owner_only_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("report");
        create_dir(&out).unwrap();
        assert_eq!(fs::metadata(&out).unwrap().mode() & 0o777, 0o700);
        let path = out.join("report.json");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "{}").unwrap();
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o777, 0o600, "tightened, though it existed");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}");
        let target = dir.path().join("elsewhere");
        fs::write(&target, "theirs").unwrap();
        let link = out.join("receipt.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(write_private(&link, "mine").unwrap_err().to_string().contains("symbolic link"));
        assert_eq!(fs::read_to_string(&target).unwrap(), "theirs");
    }
}
