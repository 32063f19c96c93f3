//! Who may call what: bearer tokens from a tokens file, each with a client name and roles.
//!
//! The file holds only SHA-256 digests of the tokens (a token is 256 random bits, so a plain
//! digest cannot be reversed by guessing), and a presented token is compared with every entry
//! in constant time. The client name is what the recipients log and the audit trail record.
//!
//! Whoever can write the file can give themselves any role, so it is read only if it is the
//! server user's alone and not a link, and written owner-only ([`crate::store::private`]).
use std::{
    fmt,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::store::private::{self, PrivateError};

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The system's customers (a police agency, say): enrol and search. Its client name is the
    /// recipient on record for every result it receives.
    Operator,
    /// Handles rights requests: reads them, approves the review band, denies or extends.
    PrivacyDesk,
    /// Reads statistics, the requests overview and the audit trail.
    Auditor,
    /// Policy and keys.
    Admin,
    /// A read replica of the shard, at its primary: fetches ciphertexts and records its
    /// disclosures (`oubli-server --replica`).
    Replica,
}

impl Role {
    pub const ALL: [Role; 5] = [Role::Operator, Role::PrivacyDesk, Role::Auditor, Role::Admin, Role::Replica];

    pub fn name(self) -> &'static str {
        match self {
            Role::Operator => "operator",
            Role::PrivacyDesk => "privacy-desk",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
            Role::Replica => "replica",
        }
    }

    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An authenticated client, or the anonymous public.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub client: String,
    pub roles: Vec<Role>,
}

impl Caller {
    pub const ANONYMOUS: &'static str = "anonymous";

    pub fn anonymous() -> Caller {
        Caller { client: Caller::ANONYMOUS.into(), roles: Vec::new() }
    }

    pub fn is_anonymous(&self) -> bool {
        self.roles.is_empty() && self.client == Caller::ANONYMOUS
    }

    pub fn has(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// The caller's roles, comma-separated ("" for the public).
    pub fn role_names(&self) -> String {
        self.roles.iter().map(|r| r.name()).collect::<Vec<_>>().join(",")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Private(#[from] PrivateError),
}

/// The text of the tokens file at `path`, if it is the server user's alone (`None`: absent).
fn read_file(path: &Path) -> Result<Option<String>, AuthError> {
    let mut file = match private::open(path) {
        Ok(file) => file,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(|source| AuthError::Io { path: path.into(), source })?;
    Ok(Some(text))
}

fn not_found(path: &Path) -> AuthError {
    AuthError::Io { path: path.into(), source: std::io::ErrorKind::NotFound.into() }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    client: String,
    roles: Vec<Role>,
    /// SHA-256 of the token, hex.
    sha256: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    token: Vec<Entry>,
}

/// The tokens a server accepts.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<(Caller, [u8; 32])>,
}

const TOKEN_PREFIX: &str = "oubli_";

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    /// Reads a tokens file (TOML: `[[token]]` tables with `client`, `roles`, `sha256`),
    /// refused if it is not the server user's alone.
    pub fn load(path: &Path) -> Result<Tokens, AuthError> {
        let text = read_file(path)?.ok_or_else(|| not_found(path))?;
        Tokens::parse(&text).map_err(|reason| AuthError::Invalid { path: path.into(), reason })
    }

    pub fn parse(text: &str) -> Result<Tokens, String> {
        let file: File = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut entries = Vec::with_capacity(file.token.len());
        for (n, e) in file.token.into_iter().enumerate() {
            let at = || format!("token {} ({:?})", n + 1, e.client);
            if e.client.is_empty() || e.client.len() > 64 || e.client == Caller::ANONYMOUS {
                return Err(format!("{}: client names are 1 to 64 bytes and not {:?}", at(), Caller::ANONYMOUS));
            }
            if e.roles.is_empty() {
                return Err(format!("{}: give at least one role", at()));
            }
            let hash: [u8; 32] = hex::decode(&e.sha256)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| format!("{}: sha256 must be 64 hex digits", at()))?;
            entries.push((Caller { client: e.client, roles: e.roles }, hash));
        }
        Ok(Tokens { entries })
    }

    /// The caller a token belongs to. Every entry is compared, in constant time, whatever
    /// matches first.
    pub fn authenticate(&self, token: &str) -> Option<Caller> {
        let presented = digest(token);
        let mut found = None;
        for (caller, hash) in &self.entries {
            if bool::from(hash.ct_eq(&presented)) && found.is_none() {
                found = Some(caller.clone());
            }
        }
        found
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds a new token for `client` with `roles` to the tokens file at `path` (created if
    /// missing, 0600) and returns the token: the only time it is ever shown.
    pub fn add(path: &Path, client: &str, roles: &[Role]) -> Result<String, AuthError> {
        let invalid = |reason: String| AuthError::Invalid { path: path.into(), reason };
        let mut file: File = match read_file(path)? {
            Some(text) => toml::from_str(&text).map_err(|e| invalid(e.to_string()))?,
            None => File::default(),
        };
        let token = new_token();
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        file.token.push(Entry { client: client.into(), roles, sha256: hex::encode(digest(&token)) });
        let text = toml::to_string(&file).map_err(|e| invalid(e.to_string()))?;
        Tokens::parse(&text).map_err(invalid)?;
        write_private(path, text.as_bytes()).map_err(|source| AuthError::Io { path: path.into(), source })?;
        Ok(token)
    }
}

/// A new random token: 256 bits, hex, with a recognisable prefix.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random number generator works");
    format!("{TOKEN_PREFIX}{}", hex::encode(bytes))
}

/// Writes `bytes` to `path` readable by the owner only, replacing it atomically through a new
/// temporary file, never following a link (creating its directory, 0700, if needed).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private::create_dir(dir)?;
    }
    private::replace(path, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_their_client_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let police = Tokens::add(&path, "police-a", &[Role::Operator]).unwrap();
        let desk = Tokens::add(&path, "desk", &[Role::PrivacyDesk, Role::Auditor]).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&police) && !text.contains(&desk), "the file holds digests only");
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(tokens.authenticate(&police).unwrap().client, "police-a");
        let d = tokens.authenticate(&desk).unwrap();
        assert!(d.has(Role::PrivacyDesk) && d.has(Role::Auditor) && !d.has(Role::Admin));
        assert!(tokens.authenticate("oubli_0000").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn a_tokens_file_others_may_write_or_that_is_a_link_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        Tokens::add(&path, "admin", &[Role::Admin]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "created owner-only");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).unwrap();
        let why = Tokens::load(&path).unwrap_err().to_string();
        assert!(why.contains("mode 0664") && why.contains(&format!("chmod 600 {}", path.display())), "{why}");
        assert!(Tokens::add(&path, "more", &[Role::Admin]).is_err(), "nor is it added to");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        let why = Tokens::load(&link).unwrap_err().to_string();
        assert!(why.contains("is a symbolic link"), "{why}");
        assert_eq!(Tokens::load(&path).unwrap().len(), 1);
    }

    #[test]
    fn bad_files_are_refused_with_the_reason() {
        for (text, why) in [
            ("[[token]]\nclient = \"a\"\nroles = [\"root\"]\nsha256 = \"00\"\n", "unknown variant"),
            ("[[token]]\nclient = \"a\"\nroles = []\nsha256 = \"00\"\n", "at least one role"),
            ("[[token]]\nclient = \"a\"\nroles = [\"admin\"]\nsha256 = \"00\"\n", "64 hex digits"),
            ("[[token]]\nclient = \"anonymous\"\nroles = [\"admin\"]\nsha256 = \"00\"\n", "client names"),
        ] {
            let err = Tokens::parse(text).unwrap_err();
            assert!(err.contains(why), "{err}");
        }
    }
}
