//! What the store keeps outside the data dir, in the key dir, so that a copy of the data dir (a
//! backup, restored) can neither bring back what was erased nor rewind the public log:
//! - `data-dir.id`: the id of the one data dir this key dir serves, written at creation into
//!   both (the data dir keeps it in `meta`). A restored copy of that data dir has the same id.
//! - `log.mirror`: every log leaf with its stored statements, then the checkpoint that covers
//!   them, appended and synced after each synced RocksDB log write and before that checkpoint is
//!   served. The last checkpoint in it is the **anchor**: the latest tree size and root this
//!   store signed and may have published.
//! - `erasure.journal`: per erasure, the request's log commitment and keyed hashes of the
//!   erased record ids and of the suppressed sources (never the ids or the sources), and the
//!   client names its Art. 19 notices went to, appended and synced before the erasure's delete
//!   is written. The names are in the clear: they name the service's own clients (the tokens
//!   file's `police-a`), not the person, and say nothing of who the person is; the journal is
//!   in the owner-only key dir.
//!
//! The key dir is already the one directory the server needs apart from the data dir and keeps
//! owner-only; the binding, the anchor, the mirror and the journal must travel together and be
//! missing from every backup of the data dir, so they live there rather than in a log dir of
//! their own (a second directory an operator could restore, lose or point elsewhere separately).
//! The price: the key dir grows with the log (a leaf is 42 to 98 bytes, with statements a few
//! hundred), and a backup of the key dir holds the mirror too (it is public data).
//!
//! Both append-only files are a sequence of frames `u32 BE payload length ‖ the first 8 bytes
//! of SHA-256(payload) ‖ payload`. A crash during an append leaves a torn tail (a frame cut
//! short or failing its checksum): it is truncated at open, and what it held is either caught up
//! from the data dir (the mirror) or was never acted on (a journal entry is written before its
//! delete).
use std::{
    fs::File,
    io::{Read, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::{Error, private};
use crate::transparency::tree::Tree;

pub(super) const BINDING_FILE: &str = "data-dir.id";
pub(super) const MIRROR_FILE: &str = "log.mirror";
pub(super) const JOURNAL_FILE: &str = "erasure.journal";
/// The HMAC domain of a journaled record id.
pub(super) const JOURNAL_ID_DOMAIN: &[u8] = b"oubli/erasure-journal-record/v1";

const LEAF: u8 = 1;
const CHECKPOINT: u8 = 2;
const JOURNAL_V1: u8 = 1;
/// With the recipients of each record's notice.
const JOURNAL_V2: u8 = 2;
const HEADER: usize = 12;

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Io { path: path.to_path_buf(), source }
}

fn frame(payload: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(payload.len()).expect("a frame is far below 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&Sha256::digest(payload)[..8]);
    out.extend_from_slice(payload);
}

/// An append-only file of checksummed frames, owner-only.
struct Frames {
    file: File,
    path: PathBuf,
}

impl Frames {
    /// Opens `path` (created owner-only if absent), calls `each` with every whole frame's
    /// payload in order, and truncates a torn tail. Returns the file and the bytes dropped.
    fn open(path: &Path, mut each: impl FnMut(&[u8]) -> Result<(), Error>) -> Result<(Frames, u64), Error> {
        let file = private::open_append(path)?;
        let mut bytes = Vec::new();
        (&file).read_to_end(&mut bytes).map_err(io(path))?;
        let mut at = 0usize;
        while let Some((head, body)) = bytes[at..].split_first_chunk::<HEADER>() {
            let (len, sum) = head.split_at(4);
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            let Some(payload) = body.get(..len) else { break };
            if Sha256::digest(payload)[..8] != *sum {
                break;
            }
            each(payload)?;
            at += HEADER + len;
        }
        let dropped = (bytes.len() - at) as u64;
        if dropped > 0 {
            file.set_len(at as u64).and_then(|()| file.sync_all()).map_err(io(path))?;
        }
        Ok((Frames { file, path: path.to_path_buf() }, dropped))
    }

    /// Appends `payloads` in one write and syncs the file.
    fn append(&mut self, payloads: &[Vec<u8>]) -> Result<(), Error> {
        let mut buf = Vec::with_capacity(payloads.iter().map(|p| p.len() + HEADER).sum());
        for p in payloads {
            frame(p, &mut buf);
        }
        self.file.write_all(&buf).and_then(|()| self.file.sync_data()).map_err(io(&self.path))
    }
}

/// A leaf as mirrored: its entry bytes and the canonical statements stored with it, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct MirrorLeaf {
    pub bytes: Vec<u8>,
    pub statements: Option<String>,
}

/// What the mirror held at open.
pub(super) struct Scan {
    /// The tree over every mirrored leaf.
    pub tree: Tree,
    /// The leaves from the index asked for on (those a restore copies back).
    pub tail: Vec<MirrorLeaf>,
    /// The last checkpoint mirrored: the anchor.
    pub anchor: Option<String>,
    /// Bytes of a torn tail, truncated.
    pub dropped: u64,
}

/// The log's mirror in the key dir (see the module documentation).
pub(super) struct Mirror {
    frames: Frames,
    size: u64,
    /// The checkpoint served: the last one mirrored.
    published: String,
    /// An append failed: every later logged write is refused until a restart catches up.
    broken: bool,
}

impl Mirror {
    /// Reads the mirror at `path` (created if absent), keeping the leaves from `keep_from` on.
    pub fn open(path: &Path, keep_from: u64) -> Result<(Mirror, Scan), Error> {
        let mut tree = Tree::new();
        let (mut tail, mut anchor) = (Vec::new(), None);
        let corrupt = |why: &str| Error::Corrupt(format!("{}: {why}", path.display()));
        let (frames, dropped) = Frames::open(path, |payload| {
            match payload.split_first() {
                Some((&LEAF, rest)) => {
                    let (index, rest) = rest.split_first_chunk::<8>().ok_or_else(|| corrupt("short leaf"))?;
                    let (len, rest) = rest.split_first_chunk::<4>().ok_or_else(|| corrupt("short leaf"))?;
                    let len = u32::from_be_bytes(*len) as usize;
                    let (bytes, rest) = (rest.get(..len), rest.get(len..));
                    let (Some(bytes), Some(rest)) = (bytes, rest) else { return Err(corrupt("short leaf")) };
                    let statements = match rest.split_first() {
                        Some((0, [])) => None,
                        Some((1, text)) => {
                            Some(String::from_utf8(text.to_vec()).map_err(|_| corrupt("statements are not UTF-8"))?)
                        }
                        _ => return Err(corrupt("bad statements marker")),
                    };
                    if u64::from_be_bytes(*index) != tree.size().0 {
                        return Err(corrupt("leaves out of order"));
                    }
                    let (index, _) = tree.append(bytes);
                    if index.0 >= keep_from {
                        tail.push(MirrorLeaf { bytes: bytes.to_vec(), statements });
                    }
                }
                Some((&CHECKPOINT, note)) => {
                    anchor = Some(String::from_utf8(note.to_vec()).map_err(|_| corrupt("checkpoint is not UTF-8"))?);
                }
                _ => return Err(corrupt("unknown record")),
            }
            Ok(())
        })?;
        let size = tree.size().0;
        let mirror = Mirror { frames, size, published: anchor.clone().unwrap_or_default(), broken: false };
        Ok((mirror, Scan { tree, tail, anchor, dropped }))
    }

    /// How many leaves the mirror holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The checkpoint to serve.
    pub fn published(&self) -> &str {
        &self.published
    }

    /// Refuses a write while an earlier append failed.
    pub fn usable(&self) -> Result<(), Error> {
        if self.broken {
            return Err(Error::Io {
                path: self.frames.path.clone(),
                source: std::io::Error::other(
                    "an earlier append to the log mirror failed; restart the server to catch it up",
                ),
            });
        }
        Ok(())
    }

    /// Appends `leaves` (from leaf index `first`, which must be the mirror's size) and then
    /// `checkpoint` if there is one (a log signing at a cadence mirrors its leaves first),
    /// synced; `checkpoint` is then the one served.
    pub fn append(&mut self, first: u64, leaves: &[MirrorLeaf], checkpoint: Option<&str>) -> Result<(), Error> {
        let result = self.try_append(first, leaves, checkpoint);
        self.broken = result.is_err();
        result
    }

    fn try_append(&mut self, first: u64, leaves: &[MirrorLeaf], checkpoint: Option<&str>) -> Result<(), Error> {
        if first != self.size {
            return Err(Error::Corrupt(format!(
                "the log mirror holds {} leaves; an append from leaf {first} would leave a gap",
                self.size
            )));
        }
        let mut payloads = Vec::with_capacity(leaves.len() + 1);
        for (i, leaf) in leaves.iter().enumerate() {
            let mut p = Vec::with_capacity(14 + leaf.bytes.len() + leaf.statements.as_ref().map_or(0, String::len));
            p.push(LEAF);
            p.extend_from_slice(&(first + i as u64).to_be_bytes());
            p.extend_from_slice(&(leaf.bytes.len() as u32).to_be_bytes());
            p.extend_from_slice(&leaf.bytes);
            match &leaf.statements {
                None => p.push(0),
                Some(text) => {
                    p.push(1);
                    p.extend_from_slice(text.as_bytes());
                }
            }
            payloads.push(p);
        }
        if let Some(checkpoint) = checkpoint {
            let mut p = vec![CHECKPOINT];
            p.extend_from_slice(checkpoint.as_bytes());
            payloads.push(p);
        }
        if payloads.is_empty() {
            return Ok(());
        }
        self.frames.append(&payloads)?;
        self.size += leaves.len() as u64;
        if let Some(checkpoint) = checkpoint {
            self.published = checkpoint.to_string();
        }
        Ok(())
    }
}

/// One erasure, as journaled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct JournalEntry {
    /// The request's commitment in the log (its leaves' commitment).
    pub commitment: [u8; 32],
    /// Keyed hashes ([`JOURNAL_ID_DOMAIN`]) of the erased record ids.
    pub records: Vec<[u8; 32]>,
    /// The suppression keys added (keyed hashes of the erased sources).
    pub suppressed: Vec<[u8; 32]>,
    /// Who was sent a notice (Art. 19) of which record: its place in `records`, and the
    /// recipient's client name. A restored backup may lack the recipients rows written after
    /// it, and with keys in etcd cannot read any (their key is deleted), so the re-applied
    /// erasure notifies these.
    pub recipients: Vec<(u32, String)>,
}

impl JournalEntry {
    fn encode(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(45 + 32 * (self.records.len() + self.suppressed.len()));
        p.push(JOURNAL_V2);
        p.extend_from_slice(&self.commitment);
        for list in [&self.records, &self.suppressed] {
            p.extend_from_slice(&(list.len() as u32).to_be_bytes());
            for h in list {
                p.extend_from_slice(h);
            }
        }
        p.extend_from_slice(&(self.recipients.len() as u32).to_be_bytes());
        for (record, client) in &self.recipients {
            p.extend_from_slice(&record.to_be_bytes());
            // Client names are short (the tokens file's); a longer one is cut at a character.
            let mut end = client.len().min(u16::MAX as usize);
            while !client.is_char_boundary(end) {
                end -= 1;
            }
            let name = &client.as_bytes()[..end];
            p.extend_from_slice(&(name.len() as u16).to_be_bytes());
            p.extend_from_slice(name);
        }
        p
    }

    fn decode(payload: &[u8]) -> Option<JournalEntry> {
        let (&version, rest) = payload.split_first()?;
        if version != JOURNAL_V1 && version != JOURNAL_V2 {
            return None;
        }
        let (commitment, mut rest) = rest.split_first_chunk::<32>()?;
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let (n, after) = rest.split_first_chunk::<4>()?;
            rest = after;
            for _ in 0..u32::from_be_bytes(*n) {
                let (h, after) = rest.split_first_chunk::<32>()?;
                list.push(*h);
                rest = after;
            }
        }
        let [records, suppressed] = lists;
        let mut recipients = Vec::new();
        if version == JOURNAL_V2 {
            let (n, after) = rest.split_first_chunk::<4>()?;
            rest = after;
            for _ in 0..u32::from_be_bytes(*n) {
                let (record, after) = rest.split_first_chunk::<4>()?;
                let (len, after) = after.split_first_chunk::<2>()?;
                let len = u16::from_be_bytes(*len) as usize;
                let name = after.get(..len)?;
                recipients.push((u32::from_be_bytes(*record), String::from_utf8(name.to_vec()).ok()?));
                rest = &after[len..];
            }
        }
        rest.is_empty().then_some(JournalEntry { commitment: *commitment, records, suppressed, recipients })
    }
}

/// The erasure journal in the key dir (see the module documentation).
pub(super) struct Journal {
    frames: Frames,
    entries: Vec<JournalEntry>,
}

impl Journal {
    pub fn open(path: &Path) -> Result<(Journal, u64), Error> {
        let mut entries = Vec::new();
        let (frames, dropped) = Frames::open(path, |payload| {
            let entry = JournalEntry::decode(payload)
                .ok_or_else(|| Error::Corrupt(format!("{}: an entry does not decode", path.display())))?;
            entries.push(entry);
            Ok(())
        })?;
        Ok((Journal { frames, entries }, dropped))
    }

    /// Appends `entry`, synced, unless the journal holds it already (an erasure resumed after a
    /// crash, or re-applied). Whether it was appended.
    /// Journals `entry` unless the same erasure is journaled already with every recipient it
    /// names (a resumed erasure; one that found new recipients is journaled again, and the
    /// entries of one commitment are merged when read back: [`Self::merged`]).
    pub fn record(&mut self, entry: JournalEntry) -> Result<bool, Error> {
        let known = self.entries.iter().any(|e| {
            e.commitment == entry.commitment
                && e.records == entry.records
                && e.suppressed == entry.suppressed
                && entry.recipients.iter().all(|r| e.recipients.contains(r))
        });
        if known {
            return Ok(false);
        }
        self.frames.append(&[entry.encode()])?;
        self.entries.push(entry);
        Ok(true)
    }

    pub fn entries(&self) -> &[JournalEntry] {
        &self.entries
    }

    /// One entry per erasure (per commitment), in the order first journaled: the records,
    /// suppression keys and recipients of all its entries together, each once.
    pub fn merged(&self) -> Vec<JournalEntry> {
        let mut out: Vec<JournalEntry> = Vec::new();
        for entry in &self.entries {
            let Some(into) = out.iter_mut().find(|e| e.commitment == entry.commitment) else {
                out.push(entry.clone());
                continue;
            };
            for (at, client) in &entry.recipients {
                let Some(hash) = entry.records.get(*at as usize) else { continue };
                let place = match into.records.iter().position(|h| h == hash) {
                    Some(p) => p,
                    None => {
                        into.records.push(*hash);
                        into.records.len() - 1
                    }
                };
                let recipient = (place as u32, client.clone());
                if !into.recipients.contains(&recipient) {
                    into.recipients.push(recipient);
                }
            }
            for hash in &entry.records {
                if !into.records.contains(hash) {
                    into.records.push(*hash);
                }
            }
            for key in &entry.suppressed {
                if !into.suppressed.contains(key) {
                    into.suppressed.push(*key);
                }
            }
        }
        out
    }
}

/// The data dir id the key dir is bound to, if it is bound.
pub(super) fn bound_id(key_dir: &Path) -> Result<Option<[u8; 16]>, Error> {
    let path = key_dir.join(BINDING_FILE);
    let mut file = match private::open(&path) {
        Ok(file) => file,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io(&path))?;
    let id = hex::decode(text.trim()).ok().and_then(|b| <[u8; 16]>::try_from(b).ok());
    id.map(Some).ok_or_else(|| Error::KeyFile { path, reason: "does not hold a data dir id (32 hex digits)".into() })
}

/// Binds the key dir to data dir `id` (a new file, owner-only, its directory synced).
pub(super) fn bind(key_dir: &Path, id: &[u8; 16]) -> Result<(), Error> {
    let path = key_dir.join(BINDING_FILE);
    private::create(&path, format!("{}\n", hex::encode(id)).as_bytes()).map_err(io(&path))?;
    File::open(key_dir).and_then(|d| d.sync_all()).map_err(io(key_dir))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn leaf(n: u8) -> MirrorLeaf {
        MirrorLeaf { bytes: vec![n; 42], statements: n.is_multiple_of(2).then(|| format!("{{\"done\":[\"{n}\"]}}")) }
    }

    #[test]
    fn the_mirror_reads_back_what_was_appended_and_drops_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MIRROR_FILE);
        let (mut mirror, scan) = Mirror::open(&path, 0).unwrap();
        assert_eq!((mirror.size(), scan.anchor, scan.dropped), (0, None, 0));
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        mirror.append(0, &[leaf(0), leaf(1)], Some("cp2")).unwrap();
        mirror.append(2, &[leaf(2)], Some("cp3")).unwrap();
        assert!(mirror.append(5, &[leaf(5)], Some("cp6")).is_err(), "a gap is refused");
        assert!(mirror.usable().is_err(), "and the mirror refuses writes until a restart");
        drop(mirror);
        let whole = std::fs::read(&path).unwrap();

        let (mirror, scan) = Mirror::open(&path, 1).unwrap();
        assert_eq!((mirror.size(), scan.anchor.as_deref(), mirror.published()), (3, Some("cp3"), "cp3"));
        assert_eq!(scan.tail, vec![leaf(1), leaf(2)]);
        let mut tree = Tree::new();
        for n in 0..3 {
            tree.append(&leaf(n).bytes);
        }
        assert_eq!(scan.tree.root(tree.size()).unwrap(), tree.root(tree.size()).unwrap());
        drop(mirror);

        // Every cut inside the last append (leaf 2 and "cp3") reads as the state before it.
        let before_last =
            whole.len() - (HEADER + 1 + 8 + 4 + 42 + 1 + leaf(2).statements.unwrap().len()) - (HEADER + 4);
        for cut in before_last + 1..whole.len() {
            std::fs::write(&path, &whole[..cut]).unwrap();
            let (mirror, scan) = Mirror::open(&path, 0).unwrap();
            let expected = if cut >= whole.len() - (HEADER + 4) { 3 } else { 2 };
            assert_eq!(mirror.size(), expected, "cut at {cut}");
            assert_eq!(scan.anchor.as_deref(), Some("cp2"), "cut at {cut}");
            let kept = std::fs::metadata(&path).unwrap().len();
            assert_eq!(kept + scan.dropped, cut as u64, "the torn tail is truncated: cut at {cut}");
        }
        // A flipped byte in the last frame fails its checksum and is dropped like a torn tail.
        let mut flipped = whole.clone();
        *flipped.last_mut().unwrap() ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let (_, scan) = Mirror::open(&path, 0).unwrap();
        assert_eq!((scan.anchor.as_deref(), scan.dropped), (Some("cp2"), (HEADER + 4) as u64));
    }

    #[test]
    fn the_journal_keeps_each_erasure_once_and_survives_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(JOURNAL_FILE);
        let entry = |n: u8| JournalEntry {
            commitment: [n; 32],
            records: vec![[n; 32], [n + 1; 32]],
            suppressed: vec![[9; 32]],
            recipients: vec![(0, "police-a".into()), (1, "police-b".into())],
        };
        let (mut journal, _) = Journal::open(&path).unwrap();
        assert!(journal.record(entry(1)).unwrap());
        assert!(!journal.record(entry(1)).unwrap(), "a resumed erasure is journaled once");
        assert!(journal.record(entry(2)).unwrap());
        drop(journal);
        let whole = std::fs::read(&path).unwrap();
        assert!(!whole.windows(32).any(|w| w == [0u8; 32]));
        std::fs::write(&path, &whole[..whole.len() - 5]).unwrap();
        let (journal, dropped) = Journal::open(&path).unwrap();
        assert_eq!(journal.entries(), &[entry(1)]);
        assert!(dropped > 0);
    }

    #[test]
    fn a_resumed_erasure_that_found_a_new_recipient_is_read_back_as_one_erasure() {
        let dir = tempfile::tempdir().unwrap();
        let (mut journal, _) = Journal::open(&dir.path().join(JOURNAL_FILE)).unwrap();
        let first = JournalEntry {
            commitment: [1; 32],
            records: vec![[2; 32], [3; 32]],
            suppressed: vec![[4; 32]],
            recipients: vec![(1, "police-a".into())],
        };
        let mut resumed = first.clone();
        resumed.recipients.push((0, "police-b".into()));
        assert!(journal.record(first.clone()).unwrap());
        assert!(journal.record(resumed).unwrap(), "a new recipient is journaled");
        let mut fewer = first.clone();
        fewer.recipients.clear();
        assert!(!journal.record(fewer).unwrap(), "nothing new: journaled once");
        let merged = journal.merged();
        assert_eq!(merged.len(), 1);
        assert_eq!(merged[0].records, first.records);
        assert_eq!(merged[0].recipients, vec![(1, "police-a".to_string()), (0, "police-b".to_string())]);
    }

    #[test]
    fn a_journal_entry_of_the_first_version_still_decodes_without_recipients() {
        let v2 = JournalEntry {
            commitment: [3; 32],
            records: vec![[4; 32]],
            suppressed: vec![],
            recipients: vec![(0, "police-a".into())],
        };
        assert_eq!(JournalEntry::decode(&v2.encode()), Some(v2.clone()));
        let mut v1 = v2.encode();
        v1.truncate(v1.len() - (4 + 4 + 2 + 8));
        v1[0] = JOURNAL_V1;
        let old = JournalEntry::decode(&v1).expect("a first-version entry");
        assert_eq!((old.records, old.recipients), (v2.records, vec![]));
        assert_eq!(JournalEntry::decode(&[9, 0, 0]), None, "an unknown version");
    }

    #[test]
    fn a_binding_is_written_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(bound_id(dir.path()).unwrap(), None);
        bind(dir.path(), &[7; 16]).unwrap();
        assert_eq!(bound_id(dir.path()).unwrap(), Some([7; 16]));
        assert!(bind(dir.path(), &[8; 16]).is_err(), "a binding is never overwritten");
        std::fs::remove_file(dir.path().join(BINDING_FILE)).unwrap();
        private::create(&dir.path().join(BINDING_FILE), b"not hex").unwrap();
        assert!(matches!(bound_id(dir.path()), Err(Error::KeyFile { .. })));
    }
}
