//! The byte scan that ends each purge: every file of the data dir read once, looking for any
//! surviving piece of the erased values (wrapped data keys after phase 1; sealed records, old
//! request rows and probe copies after phase 2).
//!
//! The values themselves cannot be kept to search for: a copy of a wrapped key kept until the
//! scan would be one more copy to erase. What the erasure keeps instead is a set of
//! [`Prints`]: for each value, a keyed 64-bit fingerprint of each of its 16-byte windows at
//! offsets 0, 16, 32, ... (and one ending at its last byte). Any surviving run of 31 or more
//! contiguous bytes of a value contains one whole window, so the scan finds it. A fingerprint
//! is a polynomial hash of the window with a secret base derived from the store's keys: it
//! gives 64 bits about 128, so the values cannot be rebuilt from it, and without the keys no
//! one can aim a collision at it.
//!
//! The scan rolls the same hash over every byte of every file (one multiply and add per byte,
//! and a 64 Kibit filter before the set lookup): its cost is the data dir's size, timed by
//! `make bench-erase`.
use std::{
    collections::HashSet,
    io::Read,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{Error, Store};

/// Window length in bytes.
pub const WINDOW: usize = 16;

/// The fingerprints of the windows of some erased values.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prints {
    /// How many values they are the windows of.
    pub values: usize,
    pub prints: Vec<u64>,
}

impl Prints {
    pub fn extend(&mut self, other: &Prints) {
        self.values += other.values;
        self.prints.extend_from_slice(&other.prints);
    }

    pub fn is_empty(&self) -> bool {
        self.prints.is_empty()
    }
}

/// What a scan read and found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    pub files: usize,
    pub bytes: u64,
    /// Files holding a window of an erased value, with the number of windows found.
    pub found: Vec<(PathBuf, usize)>,
}

impl Scan {
    /// The scan as a check of `values` erased values (`what`) under `root` (`place` names it):
    /// what it found nowhere, or the first file holding a window of them.
    pub(super) fn verdict(&self, root: &Path, place: &str, values: usize, what: &str) -> Result<String, String> {
        if let Some((path, hits)) = self.found.first() {
            let name = path.strip_prefix(root).unwrap_or(path).display();
            return Err(format!(
                "the byte scan found {hits} window(s) of {what} in {name} ({} file(s) with some)",
                self.found.len()
            ));
        }
        Ok(format!(
            "a byte scan of {place} ({} file(s), {} bytes) found no run of {} or more bytes of the {values} {what}",
            self.files,
            self.bytes,
            2 * WINDOW - 1
        ))
    }
}

/// The keyed polynomial hash: `Σ b[i]·base^(WINDOW-1-i)` mod 2^64.
#[derive(Clone, Copy)]
pub(super) struct Hasher {
    base: u64,
    /// `base^WINDOW`, to drop the byte leaving the window.
    top: u64,
}

impl Hasher {
    pub(super) fn new(secret: [u8; 32]) -> Hasher {
        let mut b = [0u8; 8];
        b.copy_from_slice(&secret[..8]);
        // Odd, so that multiplication by it is a bijection mod 2^64.
        let base = u64::from_le_bytes(b) | 1;
        let top = (0..WINDOW).fold(1u64, |acc, _| acc.wrapping_mul(base));
        Hasher { base, top }
    }

    fn window(&self, bytes: &[u8]) -> u64 {
        bytes.iter().fold(0u64, |h, &b| h.wrapping_mul(self.base).wrapping_add(u64::from(b) + 1))
    }

    /// The fingerprints of the windows of each of `values`.
    pub(super) fn prints_of<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Prints {
        let mut out = Prints::default();
        for v in values {
            out.values += 1;
            out.prints.extend(self.prints(v));
        }
        out
    }

    /// The fingerprints of `value`'s windows (none for a value shorter than a window).
    pub(super) fn prints(&self, value: &[u8]) -> Vec<u64> {
        if value.len() < WINDOW {
            return Vec::new();
        }
        let mut offsets: Vec<usize> = (0..=value.len() - WINDOW).step_by(WINDOW).collect();
        if offsets.last() != Some(&(value.len() - WINDOW)) {
            offsets.push(value.len() - WINDOW);
        }
        offsets.into_iter().map(|at| self.window(&value[at..at + WINDOW])).collect()
    }
}

/// Rolls the hash over `reader`, counting the positions whose window is in `set`. The last
/// `WINDOW - 1` bytes of each 1 MiB read are kept in front of the next, so a window across two
/// reads is seen.
fn scan_reader(hasher: Hasher, set: &Filter, mut reader: impl Read) -> std::io::Result<(u64, usize)> {
    const CHUNK: usize = 1 << 20;
    let carry = WINDOW - 1;
    let mut buf = vec![0u8; carry + CHUNK];
    let (mut kept, mut total, mut hits) = (0usize, 0u64, 0usize);
    loop {
        let n = match reader.read(&mut buf[kept..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        let len = kept + n;
        hits += scan_windows(hasher, set, &buf[..len]);
        kept = carry.min(len);
        buf.copy_within(len - kept..len, 0);
    }
    Ok((total, hits))
}

/// Counts the windows of `bytes` (each start from 0 to `len - WINDOW`) whose hash is in `set`.
/// The rolling hash is a serial chain of multiplies, so the starts are cut into four stretches
/// rolled side by side in four registers: each step of one waits only for its own.
fn scan_windows(hasher: Hasher, set: &Filter, bytes: &[u8]) -> usize {
    let Some(starts) = (bytes.len() + 1).checked_sub(WINDOW).filter(|&s| s > 0) else { return 0 };
    let per = starts / 4;
    let mut hits = 0;
    if per > 1 {
        // Lane l: starts l*per .. (l+1)*per; the step to start i adds byte i+W-1, drops i-1.
        let lane =
            |l: usize| (&bytes[l * per + WINDOW..(l + 1) * per + WINDOW - 1], &bytes[l * per..(l + 1) * per - 1]);
        let ((in0, out0), (in1, out1), (in2, out2), (in3, out3)) = (lane(0), lane(1), lane(2), lane(3));
        let mut h = [0, 1, 2, 3].map(|l| hasher.window(&bytes[l * per..l * per + WINDOW]));
        hits += h.iter().filter(|&&h| set.contains(h)).count();
        let n = per - 1;
        let (in0, in1, in2, in3) = (&in0[..n], &in1[..n], &in2[..n], &in3[..n]);
        let (out0, out1, out2, out3) = (&out0[..n], &out1[..n], &out2[..n], &out3[..n]);
        let (mut h0, mut h1, mut h2, mut h3) = (h[0], h[1], h[2], h[3]);
        let roll = |h: u64, add: u8, drop: u8| {
            h.wrapping_mul(hasher.base)
                .wrapping_add(u64::from(add) + 1)
                .wrapping_sub(hasher.top.wrapping_mul(u64::from(drop) + 1))
        };
        for i in 0..n {
            h0 = roll(h0, in0[i], out0[i]);
            h1 = roll(h1, in1[i], out1[i]);
            h2 = roll(h2, in2[i], out2[i]);
            h3 = roll(h3, in3[i], out3[i]);
            hits += usize::from(set.contains(h0))
                + usize::from(set.contains(h1))
                + usize::from(set.contains(h2))
                + usize::from(set.contains(h3));
        }
        h = [h0, h1, h2, h3];
        // The starts past the four stretches, rolled on from the last one.
        let mut last = h[3];
        for i in 4 * per..starts {
            last = roll(last, bytes[i + WINDOW - 1], bytes[i - 1]);
            hits += usize::from(set.contains(last));
        }
    } else {
        hits += (0..starts).filter(|&i| set.contains(hasher.window(&bytes[i..i + WINDOW]))).count();
    }
    hits
}

/// A set of fingerprints behind a 64 Kibit filter on their top 16 bits: nearly every position
/// of a file is rejected by one bit test in L1.
struct Filter {
    bits: Vec<u64>,
    set: HashSet<u64>,
}

impl Filter {
    fn new(prints: &[u64]) -> Filter {
        let mut bits = vec![0u64; 1024];
        for p in prints {
            let i = (p >> 48) as usize;
            bits[i / 64] |= 1 << (i % 64);
        }
        Filter { bits, set: prints.iter().copied().collect() }
    }

    #[inline]
    fn contains(&self, h: u64) -> bool {
        let i = (h >> 48) as usize;
        self.bits[i / 64] & (1 << (i % 64)) != 0 && self.set.contains(&h)
    }
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            files_under(&entry.path(), out)?;
        } else if kind.is_file() {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// Reads every file under `dir` once, looking for any window of `prints`. A file that
/// disappears during the scan (a compaction's input, a rotated log) is skipped: it is no longer
/// on disk.
pub(super) fn scan_dir(dir: &Path, hasher: Hasher, prints: &Prints) -> Result<Scan, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let mut files = Vec::new();
    files_under(dir, &mut files).map_err(io(dir))?;
    files.sort();
    let filter = Filter::new(&prints.prints);
    let mut scan = Scan { files: 0, bytes: 0, found: Vec::new() };
    for path in files {
        let file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&path)(e)),
        };
        let (bytes, hits) = scan_reader(hasher, &filter, file).map_err(io(&path))?;
        scan.files += 1;
        scan.bytes += bytes;
        if hits > 0 {
            scan.found.push((path, hits));
        }
    }
    Ok(scan)
}

/// The secret of a store's fingerprints, from its key ring (the same across processes, so a
/// purge resumed after a restart looks for the same prints).
pub(super) fn secret(keys: &super::crypto::KeyRing) -> [u8; 32] {
    keys.mac(b"oubli/scan-fingerprint/v1", b"")
}

impl Store {
    pub(super) fn hasher(&self) -> Hasher {
        Hasher::new(secret(&self.keys))
    }

    /// The fingerprints of `values` (what the scan after a purge looks for).
    pub(super) fn prints_of<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Prints {
        self.hasher().prints_of(values)
    }

    /// Reads every file of the data dir once, looking for any window of `prints`.
    pub fn scan_data_dir(&self, prints: &Prints) -> Result<Scan, Error> {
        scan_dir(&self.data_dir, self.hasher(), prints)
    }

    /// The scan after a purge, as a check: `what` names the values.
    pub(super) fn scan_check(&self, prints: &Prints, what: &str) -> Result<String, Error> {
        self.scan_data_dir(prints)?
            .verdict(&self.data_dir, "every file of the data dir", prints.values, what)
            .map_err(Error::Unverified)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rolling_hash_finds_any_long_enough_piece_of_a_value_and_nothing_else() {
        let hasher = Hasher::new([9; 32]);
        let value: Vec<u8> = (0..100u32).map(|i| (i * 37 % 251) as u8).collect();
        let filter = Filter::new(&hasher.prints(&value));
        let find = |haystack: &[u8]| scan_reader(hasher, &filter, haystack).unwrap().1;
        let mut haystack = vec![0xAAu8; 1000];
        assert_eq!(find(&haystack), 0);
        // Any 31-byte piece, anywhere, holds a whole window.
        for start in 0..=value.len() - 31 {
            haystack[500..531].copy_from_slice(&value[start..start + 31]);
            assert!(find(&haystack) >= 1, "piece at {start}");
        }
        // Across the reader's buffer boundary too.
        let mut big = vec![0u8; (1 << 20) + 40];
        big[(1 << 20) - 8..(1 << 20) + 8].copy_from_slice(&value[..16]);
        assert_eq!(find(&big), 1);
        // The rolling hash and the reads agree with hashing every window alone, on bytes with many
        // planted pieces.
        let mut rng = 0x9e3779b97f4a7c15u64;
        let mut noise: Vec<u8> = (0..5000)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng as u8
            })
            .collect();
        for at in [0usize, 17, 1249, 1265, 2500, 3751, 4984] {
            noise[at..at + 16].copy_from_slice(&value[32..48]);
        }
        let naive =
            (0..=noise.len() - WINDOW).filter(|&i| filter.contains(hasher.window(&noise[i..i + WINDOW]))).count();
        assert_eq!(naive, 7);
        assert_eq!(find(&noise), naive);
        for len in [15, 16, 17, 19, 31, 100] {
            let short = &noise[..len.min(noise.len())];
            let naive = if short.len() < WINDOW {
                0
            } else {
                (0..=short.len() - WINDOW).filter(|&i| filter.contains(hasher.window(&short[i..i + WINDOW]))).count()
            };
            assert_eq!(find(short), naive, "{len} bytes");
        }
        // Another key's fingerprints do not match.
        let other = Filter::new(&Hasher::new([8; 32]).prints(&value));
        assert_eq!(scan_reader(hasher, &other, value.as_slice()).unwrap().1, 0);
    }
}
