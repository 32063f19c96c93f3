//! RocksDB's live-file metadata with the sequence numbers the `rocksdb` crate leaves out: the
//! purge checks need each table file's smallest and largest sequence number, which the C API
//! (`rocksdb_livefiles_smallest_seqno`) has. The one `unsafe` block of the store.
use std::ffi::CStr;

use librocksdb_sys as ffi;
use rocksdb::{AsRawPtr, DB};

use super::Error;

/// One live table file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveTable {
    pub cf: String,
    /// As RocksDB names it: `/000123.sst`.
    pub name: String,
    /// The file number (`123`): file numbers only grow, so a larger one was made later.
    pub number: u64,
    pub level: i32,
    pub smallest_key: Vec<u8>,
    pub largest_key: Vec<u8>,
    pub smallest_seqno: u64,
    pub largest_seqno: u64,
    pub entries: u64,
    pub deletions: u64,
}

impl LiveTable {
    /// Whether its key range meets `[start, end]`.
    pub fn overlaps(&self, start: &[u8], end: &[u8]) -> bool {
        self.smallest_key.as_slice() <= end && self.largest_key.as_slice() >= start
    }
}

/// The number of a RocksDB file name (`/000123.sst`, `000045.log`, `MANIFEST-000007`).
pub fn file_number(name: &str) -> Option<u64> {
    let name = name.trim_start_matches('/');
    let digits = name.strip_prefix("MANIFEST-").unwrap_or(name);
    let digits = digits.split('.').next()?;
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse().ok()).flatten()
}

/// Every live table file of `db`, from one call to `rocksdb_livefiles`.
pub fn live_tables(db: &DB) -> Result<Vec<LiveTable>, Error> {
    let text = |p: *const std::ffi::c_char| -> String {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: RocksDB returns NUL-terminated strings owned by `files`, alive until
            // `rocksdb_livefiles_destroy` below.
            unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
        }
    };
    // SAFETY: `db` outlives this call, so its raw pointer is valid; `files` is checked for
    // null, read only at indexes below its count, and destroyed exactly once; every pointer
    // it hands out is copied before that.
    unsafe {
        let files = ffi::rocksdb_livefiles(db.as_raw_ptr());
        if files.is_null() {
            return Err(Error::Corrupt("RocksDB returned no live-file metadata".into()));
        }
        let n = ffi::rocksdb_livefiles_count(files);
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..n {
            let key = |f: unsafe extern "C" fn(*const ffi::rocksdb_livefiles_t, i32, *mut usize) -> *const i8| {
                let mut len = 0usize;
                let p = f(files, i, &mut len);
                if p.is_null() { Vec::new() } else { std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec() }
            };
            let name = text(ffi::rocksdb_livefiles_name(files, i));
            out.push(LiveTable {
                cf: text(ffi::rocksdb_livefiles_column_family_name(files, i)),
                number: file_number(&name).unwrap_or(u64::MAX),
                name,
                level: ffi::rocksdb_livefiles_level(files, i),
                smallest_key: key(ffi::rocksdb_livefiles_smallestkey),
                largest_key: key(ffi::rocksdb_livefiles_largestkey),
                smallest_seqno: ffi::rocksdb_livefiles_smallest_seqno(files, i),
                largest_seqno: ffi::rocksdb_livefiles_largest_seqno(files, i),
                entries: ffi::rocksdb_livefiles_entries(files, i),
                deletions: ffi::rocksdb_livefiles_deletions(files, i),
            });
        }
        ffi::rocksdb_livefiles_destroy(files);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_numbers_parse_from_rocksdb_names() {
        assert_eq!(file_number("/000123.sst"), Some(123));
        assert_eq!(file_number("000045.log"), Some(45));
        assert_eq!(file_number("MANIFEST-000007"), Some(7));
        assert_eq!(file_number("OPTIONS-000009"), None);
        assert_eq!(file_number("LOG"), None);
    }
}
