//! Envelope encryption for crypto-shredding: each record under its own data key, each data
//! key wrapped by the key-encryption key of an epoch: destroying a record's wrapped key makes
//! every live copy of its ciphertext unreadable, and destroying an epoch's key-encryption key
//! does the same for every backup wrapped under it.
//!
//! Each record is sealed under its own random data key (DEK) with XChaCha20-Poly1305 before its
//! first write, with the record id as associated data, so a ciphertext cannot be moved to another
//! record. The DEK is stored wrapped by the key-encryption key (KEK) of the current epoch, which
//! lives in the key directory, never in the data directory. Destroying a DEK makes every copy of
//! the record unreadable. Keyed hashes (HMAC-SHA-256 under a separate key) stand in for values
//! that must be matched but never stored, such as idempotency keys.
//!
//! Every key in memory is zeroed when dropped. On disk the key dir and its key files are the
//! server user's alone, checked at every load, and created so ([`super::private`]).
use std::{
    fs,
    io::{Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use chacha20poly1305::{
    KeyInit, XChaCha20Poly1305, XNonce,
    aead::{Aead, Payload},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::{Error, private};
use crate::record::RecordId;

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const MAC_KEY_FILE: &str = "mac.key";
const LOG_KEY_FILE: &str = "log.key";

/// A 256-bit secret, zeroed on drop.
pub type Secret = Zeroizing<[u8; KEY_LEN]>;

/// A fresh random secret from the operating system.
pub fn random_secret() -> Secret {
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    getrandom::fill(key.as_mut()).expect("the operating system's random number generator works");
    key
}

fn random_nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).expect("the operating system's random number generator works");
    nonce
}

/// `nonce ‖ ciphertext ‖ tag` of `msg` under `key`, bound to `aad`.
fn seal(key: &[u8; KEY_LEN], aad: &[u8], msg: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let nonce = random_nonce();
    let sealed = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg, aad })
        .expect("XChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
    let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&sealed);
    out
}

/// The plaintext of a `seal` output, or `None` if the key, the aad or the bytes are wrong.
fn open(key: &[u8; KEY_LEN], aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN + TAG_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad }).ok().map(Zeroizing::new)
}

fn record_aad(id: RecordId) -> Vec<u8> {
    [b"oubli/record/v1/".as_slice(), id.as_bytes()].concat()
}

fn dek_aad(id: RecordId, epoch: u32) -> Vec<u8> {
    [b"oubli/dek/v1/".as_slice(), id.as_bytes(), &epoch.to_be_bytes()].concat()
}

/// Seals a record's plaintext under its data key.
pub fn seal_record(dek: &Secret, id: RecordId, plaintext: &[u8]) -> Vec<u8> {
    seal(dek, &record_aad(id), plaintext)
}

/// Opens a record sealed by [`seal_record`].
pub fn open_record(dek: &Secret, id: RecordId, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    open(dek, &record_aad(id), sealed)
        .ok_or_else(|| Error::Corrupt(format!("record {id} does not decrypt under its data key")))
}

/// `u16 length ‖ wrapped DEK ‖ sealed plaintext`: data other than records (requests, recipients)
/// under a fresh data key of their own, wrapped by the current KEK. `domain` names the kind of
/// data and binds it, with `id`, to the ciphertext.
pub fn seal_blob(keys: &KeyRing, domain: &str, id: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let dek = random_secret();
    let wrapped = keys.wrap_aad(&blob_aad(domain, "dek", id), &dek);
    let sealed = seal(&dek, &blob_aad(domain, "data", id), plaintext);
    let mut out = Vec::with_capacity(2 + wrapped.len() + sealed.len());
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(&sealed);
    out
}

/// The wrapped data key and the sealed data of a [`seal_blob`] output.
fn split_blob<'a>(domain: &str, id: &[u8], blob: &'a [u8]) -> Result<(&'a [u8], &'a [u8]), Error> {
    let corrupt = || Error::Corrupt(format!("{domain} {} does not decrypt", hex::encode(id)));
    let (len, rest) = blob.split_first_chunk::<2>().ok_or_else(corrupt)?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return Err(corrupt());
    }
    Ok(rest.split_at(len))
}

/// Opens a [`seal_blob`] output.
pub fn open_blob(keys: &KeyRing, domain: &str, id: &[u8], blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    let corrupt = || Error::Corrupt(format!("{domain} {} does not decrypt", hex::encode(id)));
    let (wrapped, sealed) = split_blob(domain, id, blob)?;
    let dek = keys.unwrap_aad(&blob_aad(domain, "dek", id), wrapped).ok_or_else(corrupt)?;
    open(&dek, &blob_aad(domain, "data", id), sealed).ok_or_else(corrupt)
}

/// A [`seal_blob`] output with its data key re-wrapped under the current KEK (the sealed data
/// is unchanged), or `None` if it already is.
pub fn rewrap_blob(keys: &KeyRing, domain: &str, id: &[u8], blob: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    let corrupt = || Error::Corrupt(format!("{domain} {} does not decrypt", hex::encode(id)));
    let (wrapped, sealed) = split_blob(domain, id, blob)?;
    if wrapped_epoch(wrapped) == Some(keys.current_epoch()) {
        return Ok(None);
    }
    let aad = blob_aad(domain, "dek", id);
    let dek = keys.unwrap_aad(&aad, wrapped).ok_or_else(corrupt)?;
    let wrapped = keys.wrap_aad(&aad, &dek);
    let mut out = Vec::with_capacity(2 + wrapped.len() + sealed.len());
    out.extend_from_slice(&(wrapped.len() as u16).to_be_bytes());
    out.extend_from_slice(&wrapped);
    out.extend_from_slice(sealed);
    Ok(Some(out))
}

fn blob_aad(domain: &str, part: &str, id: &[u8]) -> Vec<u8> {
    [b"oubli/".as_slice(), domain.as_bytes(), b"/", part.as_bytes(), b"/v1/", id].concat()
}

/// Seals `plaintext` under a record's data key for data derived from the record (recipients
/// rows): shredding the record's key makes them unreadable too.
pub fn seal_derived(dek: &Secret, domain: &str, key: &[u8], plaintext: &[u8]) -> Vec<u8> {
    seal(dek, &blob_aad(domain, "derived", key), plaintext)
}

pub fn open_derived(dek: &Secret, domain: &str, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, Error> {
    open(dek, &blob_aad(domain, "derived", key), sealed)
        .ok_or_else(|| Error::Corrupt(format!("{domain} row does not decrypt under its record's key")))
}

/// The key directory: key-encryption keys by epoch, and the MAC key.
pub struct KeyRing {
    dir: PathBuf,
    /// (epoch, KEK), ascending by epoch; the last is current. More than one only during a
    /// rotation.
    keks: parking_lot::RwLock<Vec<(u32, Secret)>>,
    mac: Secret,
    /// Seed of the transparency log's Ed25519 signing key.
    log: Secret,
}

impl KeyRing {
    /// Loads the keys in `dir`. With `create` and an empty or absent directory, makes the
    /// epoch-1 KEK and the MAC key first (files readable by the owner only, synced). A key dir
    /// or key file that is not the server user's alone, or a key file that is a link, is
    /// refused ([`private`]).
    pub fn load(dir: &Path, create: bool) -> Result<Self, Error> {
        let io = |source| Error::Io { path: dir.to_path_buf(), source };
        if create {
            private::create_dir(dir).map_err(io)?;
        }
        match private::check_dir(dir) {
            Err(e) if e.is_not_found() => {}
            checked => checked?,
        }
        let mut keks = Vec::new();
        let mut mac = None;
        let mut log = None;
        let entries = match fs::read_dir(dir) {
            Ok(entries) => Some(entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io(e)),
        };
        for entry in entries.into_iter().flatten() {
            let entry = entry.map_err(io)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name == MAC_KEY_FILE {
                mac = Some(read_key(&entry.path())?);
            } else if name == LOG_KEY_FILE {
                log = Some(read_key(&entry.path())?);
            } else if let Some(epoch) = name.strip_prefix("kek-").and_then(|s| s.strip_suffix(".key")) {
                let epoch = epoch
                    .parse::<u32>()
                    .map_err(|_| Error::KeyFile { path: entry.path(), reason: "name is not kek-<epoch>.key".into() })?;
                keks.push((epoch, read_key(&entry.path())?));
            }
        }
        keks.sort_by_key(|(epoch, _)| *epoch);
        match (keks.is_empty(), mac, log) {
            (false, Some(mac), Some(log)) => Ok(KeyRing { dir: dir.to_path_buf(), keks: keks.into(), mac, log }),
            // Creating for a new data dir: make whatever a crash during an earlier creation left
            // missing (no data depends on these keys yet).
            (_, mac, log) if create => {
                let made = |file: &str, existing: Option<Secret>| match existing {
                    Some(key) => Ok(key),
                    None => {
                        let key = random_secret();
                        write_key(&dir.join(file), &key)?;
                        Ok::<_, Error>(key)
                    }
                };
                let mac = made(MAC_KEY_FILE, mac)?;
                let log = made(LOG_KEY_FILE, log)?;
                if keks.is_empty() {
                    let kek = random_secret();
                    write_key(&dir.join(kek_file(1)), &kek)?;
                    keks.push((1, kek));
                }
                sync_dir(dir)?;
                Ok(KeyRing { dir: dir.to_path_buf(), keks: keks.into(), mac, log })
            }
            _ => Err(Error::MissingKeys { key_dir: dir.to_path_buf() }),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The transparency log's signing key, named after the log's origin.
    pub fn log_signer(&self, origin: &str) -> Result<crate::transparency::note::SignerKey, Error> {
        crate::transparency::note::SignerKey::from_seed(origin, &self.log)
            .map_err(|e| Error::Corrupt(format!("log origin {origin:?}: {e}")))
    }

    fn keks(&self) -> parking_lot::RwLockReadGuard<'_, Vec<(u32, Secret)>> {
        self.keks.read()
    }

    pub fn current_epoch(&self) -> u32 {
        self.keks().last().expect("a key ring holds at least one KEK").0
    }

    /// Every epoch whose KEK the key dir holds, ascending (more than one during a rotation).
    pub fn epochs(&self) -> Vec<u32> {
        self.keks().iter().map(|(e, _)| *e).collect()
    }

    /// Seals `dek` under the current KEK, bound to `aad` and the epoch: `epoch ‖ sealed DEK`.
    fn wrap_bound(&self, aad: impl Fn(u32) -> Vec<u8>, dek: &Secret) -> Vec<u8> {
        let keks = self.keks();
        let (epoch, kek) = keks.last().expect("a key ring holds at least one KEK");
        let mut out = epoch.to_be_bytes().to_vec();
        out.extend_from_slice(&seal(kek, &aad(*epoch), dek.as_ref()));
        out
    }

    /// Opens a [`KeyRing::wrap_bound`] output with the KEK of its epoch.
    fn unwrap_bound(&self, aad: impl Fn(u32) -> Vec<u8>, wrapped: &[u8]) -> Result<Secret, &'static str> {
        let (epoch, sealed) = wrapped.split_first_chunk::<4>().ok_or("truncated")?;
        let epoch = u32::from_be_bytes(*epoch);
        let keks = self.keks();
        let kek = keks.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k).ok_or("its key epoch was destroyed")?;
        let plain = open(kek, &aad(epoch), sealed).ok_or("does not decrypt")?;
        let mut dek = Zeroizing::new([0u8; KEY_LEN]);
        if plain.len() != KEY_LEN {
            return Err("wrong length");
        }
        dek.copy_from_slice(&plain);
        Ok(dek)
    }

    /// `epoch ‖ sealed DEK` under the current KEK.
    pub fn wrap(&self, id: RecordId, dek: &Secret) -> Vec<u8> {
        self.wrap_bound(|epoch| dek_aad(id, epoch), dek)
    }

    /// `epoch ‖ sealed DEK` under the current KEK, bound to `aad` (with the epoch).
    fn wrap_aad(&self, aad: &[u8], dek: &Secret) -> Vec<u8> {
        self.wrap_bound(|epoch| [aad, &epoch.to_be_bytes()].concat(), dek)
    }

    fn unwrap_aad(&self, aad: &[u8], wrapped: &[u8]) -> Option<Secret> {
        self.unwrap_bound(|epoch| [aad, &epoch.to_be_bytes()].concat(), wrapped).ok()
    }

    /// A record's wrapped DEK re-wrapped under the current KEK, or `None` if it already is.
    pub fn rewrap(&self, id: RecordId, wrapped: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if wrapped_epoch(wrapped) == Some(self.current_epoch()) {
            return Ok(None);
        }
        Ok(Some(self.wrap(id, &self.unwrap(id, wrapped)?)))
    }

    /// Starts a rotation: a new KEK for the next epoch, written and synced before any use.
    /// Returns the new epoch.
    pub fn add_epoch(&self) -> Result<u32, Error> {
        let mut keks = self.keks.write();
        let epoch = keks.last().map_or(1, |(e, _)| e + 1);
        let kek = random_secret();
        write_key(&self.dir.join(kek_file(epoch)), &kek)?;
        sync_dir(&self.dir)?;
        keks.push((epoch, kek));
        Ok(epoch)
    }

    /// Ends a rotation: destroys every KEK older than the current one. Each key file is
    /// overwritten with zeros and synced, then removed, then the directory is synced; the key
    /// in memory is zeroed. Returns the destroyed epochs.
    pub fn destroy_old_epochs(&self) -> Result<Vec<u32>, Error> {
        let mut keks = self.keks.write();
        let current = keks.last().expect("a key ring holds at least one KEK").0;
        let mut destroyed = Vec::new();
        for (epoch, _) in keks.iter().filter(|(e, _)| *e < current) {
            let path = self.dir.join(kek_file(*epoch));
            let io = |source| Error::Io { path: path.clone(), source };
            let mut file = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&path).map_err(io)?;
            file.write_all(&[0u8; KEY_LEN]).map_err(io)?;
            file.sync_all().map_err(io)?;
            fs::remove_file(&path).map_err(io)?;
            destroyed.push(*epoch);
        }
        sync_dir(&self.dir)?;
        keks.retain(|(e, _)| *e == current);
        Ok(destroyed)
    }

    /// The DEK in a [`KeyRing::wrap`] output.
    pub fn unwrap(&self, id: RecordId, wrapped: &[u8]) -> Result<Secret, Error> {
        self.unwrap_bound(|epoch| dek_aad(id, epoch), wrapped)
            .map_err(|why| Error::Corrupt(format!("data key of record {id}: {why}")))
    }

    /// A value that proves, without revealing them, which KEK and MAC key wrote a data dir.
    pub fn check_value(&self) -> Vec<u8> {
        let epoch = self.current_epoch();
        let mut out = epoch.to_be_bytes().to_vec();
        out.extend_from_slice(&self.mac(b"oubli/key-check/v1", &self.kek_fingerprint(epoch)));
        out
    }

    /// Whether `value` (from [`KeyRing::check_value`]) was made by these keys.
    pub fn matches_check_value(&self, value: &[u8]) -> bool {
        let Some((epoch, mac)) = value.split_first_chunk::<4>() else { return false };
        let epoch = u32::from_be_bytes(*epoch);
        self.epochs().contains(&epoch)
            && constant_time_eq(mac, &self.mac(b"oubli/key-check/v1", &self.kek_fingerprint(epoch)))
    }

    fn kek_fingerprint(&self, epoch: u32) -> [u8; 32] {
        let keks = self.keks();
        let kek = keks.iter().find(|(e, _)| *e == epoch).map(|(_, k)| k).expect("fingerprint of a KEK the ring holds");
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(kek.as_ref()).expect("HMAC takes any key length");
        m.update(b"oubli/kek-fingerprint/v1");
        m.finalize().into_bytes().into()
    }

    /// HMAC-SHA-256 of `data` under the MAC key, separated by `domain`.
    pub fn mac(&self, domain: &[u8], data: &[u8]) -> [u8; 32] {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(self.mac.as_ref()).expect("HMAC takes any key length");
        m.update(&(domain.len() as u32).to_be_bytes());
        m.update(domain);
        m.update(data);
        m.finalize().into_bytes().into()
    }
}

/// The KEK epoch a wrapped key names.
pub fn wrapped_epoch(wrapped: &[u8]) -> Option<u32> {
    wrapped.split_first_chunk::<4>().map(|(e, _)| u32::from_be_bytes(*e))
}

/// Gives a read replica's new key dir `to` the key-encryption keys of its shard's primary
/// (the key dir `from`): the replica opens the keys the primary wrapped. Only those files: the
/// replica makes its own log, fingerprint and binding keys. Refuses a `to` that already holds
/// key files. Returns how many were copied.
pub fn copy_key_encryption_keys(from: &Path, to: &Path) -> Result<usize, Error> {
    let source = KeyRing::load(from, false)?;
    let io = |source| Error::Io { path: to.to_path_buf(), source };
    private::create_dir(to).map_err(io)?;
    private::check_dir(to)?;
    if fs::read_dir(to).map_err(io)?.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".key")) {
        return Err(Error::KeyFile {
            path: to.to_path_buf(),
            reason: "already holds key files: a replica's key dir must be new".into(),
        });
    }
    let keks = source.keks();
    for (epoch, kek) in keks.iter() {
        write_key(&to.join(kek_file(*epoch)), kek)?;
    }
    sync_dir(to)?;
    Ok(keks.len())
}

fn kek_file(epoch: u32) -> String {
    format!("kek-{epoch:08}.key")
}

fn read_key(path: &Path) -> Result<Secret, Error> {
    let mut bytes = Zeroizing::new(Vec::with_capacity(KEY_LEN));
    private::open(path)?.read_to_end(&mut bytes).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    if bytes.len() != KEY_LEN {
        return Err(Error::KeyFile {
            path: path.to_path_buf(),
            reason: format!("holds {} bytes, a key is {KEY_LEN}", bytes.len()),
        });
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Writes a new key file whole or not at all, owner-only; an existing file is never replaced.
fn write_key(path: &Path, key: &Secret) -> Result<(), Error> {
    private::create(path, key.as_ref()).map_err(|source| Error::Io { path: path.to_path_buf(), source })
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|source| Error::Io { path: dir.to_path_buf(), source })
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_open_only_under_their_key_and_id() {
        let dek = random_secret();
        let id = RecordId::random();
        let sealed = seal_record(&dek, id, b"template bytes");
        assert!(!sealed.windows(8).any(|w| w == b"template"));
        assert_eq!(open_record(&dek, id, &sealed).unwrap().as_slice(), b"template bytes");
        assert!(open_record(&dek, RecordId::random(), &sealed).is_err());
        assert!(open_record(&random_secret(), id, &sealed).is_err());
    }

    #[test]
    fn an_interrupted_creation_is_completed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        private::create_dir(&dir).unwrap();
        write_key(&dir.join(MAC_KEY_FILE), &random_secret()).unwrap();
        assert!(matches!(KeyRing::load(&dir, false), Err(Error::MissingKeys { .. })));
        let ring = KeyRing::load(&dir, true).unwrap();
        assert_eq!(ring.current_epoch(), 1);
        assert!(KeyRing::load(&dir, false).unwrap().matches_check_value(&ring.check_value()));
    }

    #[test]
    fn key_ring_is_created_once_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        assert!(matches!(KeyRing::load(&keys, false), Err(Error::MissingKeys { .. })));
        let ring = KeyRing::load(&keys, true).unwrap();
        let id = RecordId::random();
        let dek = random_secret();
        let wrapped = ring.wrap(id, &dek);
        let again = KeyRing::load(&keys, false).unwrap();
        assert_eq!(*again.unwrap(id, &wrapped).unwrap(), *dek);
        assert!(again.matches_check_value(&ring.check_value()));
        assert!(again.unwrap(RecordId::random(), &wrapped).is_err());
        let other = KeyRing::load(&dir.path().join("other"), true).unwrap();
        assert!(!other.matches_check_value(&ring.check_value()));
        let mode = fs::metadata(keys.join(MAC_KEY_FILE)).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o600);
        let mode = fs::metadata(&keys).unwrap();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777, 0o700);
    }

    #[test]
    fn an_exposed_key_dir_or_key_file_is_refused_at_load() {
        use std::os::unix::fs::PermissionsExt;
        let chmod = |p: &Path, mode| fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
        let refusal = |dir: &Path| match KeyRing::load(dir, false) {
            Err(Error::Private(e @ private::PrivateError::Exposed { .. })) => e.to_string(),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("an exposed key dir was loaded"),
        };
        let tmp = tempfile::tempdir().unwrap();
        let keys = tmp.path().join("keys");
        KeyRing::load(&keys, true).unwrap();

        chmod(&keys, 0o755);
        let why = refusal(&keys);
        assert!(why.contains(&format!("chmod 700 {}", keys.display())), "{why}");
        assert!(KeyRing::load(&keys, true).is_err(), "creating does not loosen or ignore it either");
        chmod(&keys, 0o700);

        for file in [MAC_KEY_FILE.to_string(), LOG_KEY_FILE.to_string(), kek_file(1)] {
            let path = keys.join(&file);
            chmod(&path, 0o644);
            let why = refusal(&keys);
            assert!(why.contains(&format!("chmod 600 {}", path.display())), "{file}: {why}");
            chmod(&path, 0o600);
        }

        // A key file replaced by a link to a file elsewhere (even one with the right mode).
        let kek = keys.join(kek_file(1));
        let elsewhere = tmp.path().join("elsewhere.key");
        fs::rename(&kek, &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &kek).unwrap();
        assert!(refusal(&keys).contains("is a symbolic link"));
        fs::remove_file(&kek).unwrap();
        fs::rename(&elsewhere, &kek).unwrap();
        KeyRing::load(&keys, false).unwrap();
    }
}
