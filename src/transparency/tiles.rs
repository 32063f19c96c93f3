//! The log as C2SP tlog-tiles (<https://c2sp.org/tlog-tiles>): the tree cut into tiles of
//! height 8, and the entries into bundles of 256, addressed by the spec's paths. Pure: where the
//! hashes and entries come from is the caller's (the live tree for the HTTP server, a tree
//! rebuilt from fetched entries for `oubli log export`), so both give the same bytes.
//!
//! A tile at level `L`, index `N` and width `W` is the `W` hashes of the perfect subtrees of
//! `256^L` leaves numbered `256·N .. 256·N + W`, 32 bytes each, concatenated; it is full at
//! `W = 256`, partial below. An entry bundle holds entries `256·N .. 256·N + W`, each as a
//! big-endian `u16` length and its bytes.
use super::merkle::{Hash, NodeSource};

/// Hashes (or entries) per full tile: the spec's height 8.
pub const WIDTH: u64 = 256;
/// Tree levels per tile level.
pub const HEIGHT: u32 = 8;

/// What a tiles path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilePath {
    /// `tile/<L>/<N>[.p/<W>]`: hashes.
    Hashes { level: u32, index: u64, width: u64 },
    /// `tile/entries/<N>[.p/<W>]`: an entry bundle.
    Entries { index: u64, width: u64 },
}

/// Why a path names no tile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a tlog-tiles path: {0}")]
pub struct BadPath(pub &'static str);

impl TilePath {
    /// Parses the part of a path after `tile/`, strictly (no leading zeros, three digits per
    /// group, a width of 1 to 255 after `.p/`).
    pub fn parse(rest: &str) -> Result<TilePath, BadPath> {
        let (kind, rest) = rest.split_once('/').ok_or(BadPath("expected <L>/<N> or entries/<N>"))?;
        let (index, width) = match rest.split_once(".p/") {
            None => (rest, WIDTH),
            Some((index, width)) => {
                let w = decimal(width).ok_or(BadPath("the width is not a decimal number"))?;
                if w == 0 || w >= WIDTH {
                    return Err(BadPath("a partial tile's width is 1 to 255"));
                }
                (index, w)
            }
        };
        let index = parse_index(index)?;
        if kind == "entries" {
            return Ok(TilePath::Entries { index, width });
        }
        let level = decimal(kind).filter(|l| *l < 8).ok_or(BadPath("the level is a decimal number below 8"))?;
        Ok(TilePath::Hashes { level: level as u32, index, width })
    }

    /// The path, from `tile/` on.
    pub fn path(&self) -> String {
        let (head, index, width) = match *self {
            TilePath::Hashes { level, index, width } => (level.to_string(), index, width),
            TilePath::Entries { index, width } => ("entries".to_string(), index, width),
        };
        let mut path = format!("tile/{head}/{}", format_index(index));
        if width < WIDTH {
            path.push_str(&format!(".p/{width}"));
        }
        path
    }
}

/// A decimal number without leading zeros.
fn decimal(s: &str) -> Option<u64> {
    let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    (digits && (s == "0" || !s.starts_with('0'))).then(|| s.parse().ok()).flatten()
}

/// `N` as the spec writes it: groups of three digits, all but the last prefixed `x`.
pub fn format_index(mut n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    n /= 1000;
    while n > 0 {
        groups.push(format!("x{:03}", n % 1000));
        n /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

fn parse_index(s: &str) -> Result<u64, BadPath> {
    let groups: Vec<&str> = s.split('/').collect();
    let (last, head) = groups.split_last().ok_or(BadPath("no index"))?;
    let mut n: u64 = 0;
    for (i, group) in head.iter().enumerate() {
        let digits = group.strip_prefix('x').ok_or(BadPath("a leading index group starts with x"))?;
        if i == 0 && digits == "000" {
            return Err(BadPath("the index has a leading zero group"));
        }
        n = push_group(n, digits)?;
    }
    push_group(n, last)
}

fn push_group(n: u64, digits: &str) -> Result<u64, BadPath> {
    if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BadPath("each index group is three digits"));
    }
    let g: u64 = digits.parse().map_err(|_| BadPath("each index group is three digits"))?;
    n.checked_mul(1000).and_then(|n| n.checked_add(g)).ok_or(BadPath("the index does not fit in 64 bits"))
}

/// How many hashes (or entries, at `level` `None`) exist at a tile level in a tree of `size`
/// leaves: the perfect subtrees of `256^level` leaves.
fn count_at(level: Option<u32>, size: u64) -> u64 {
    match level {
        None => size,
        Some(level) => size.checked_shr(HEIGHT * level).unwrap_or(0),
    }
}

/// Whether a tree of `size` leaves holds the tile (or bundle) `path` at its width.
pub fn exists(path: &TilePath, size: u64) -> bool {
    let (level, index, width) = match *path {
        TilePath::Hashes { level, index, width } => (Some(level), index, width),
        TilePath::Entries { index, width } => (None, index, width),
    };
    index.checked_mul(WIDTH).and_then(|start| start.checked_add(width)).is_some_and(|end| end <= count_at(level, size))
}

/// The bytes of the hash tile `(level, index, width)` from `nodes` (which must hold it: see
/// [`exists`]).
pub fn hash_tile(nodes: &impl NodeSource, level: u32, index: u64, width: u64) -> Vec<u8> {
    let tree_level = HEIGHT * level;
    let mut out = Vec::with_capacity(32 * width as usize);
    for i in index * WIDTH..index * WIDTH + width {
        let hash: Hash = nodes.perfect(i << tree_level, tree_level);
        out.extend_from_slice(&hash);
    }
    out
}

/// An entry bundle: each entry as a big-endian `u16` length and its bytes.
pub fn entry_bundle<'a>(entries: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let len = u16::try_from(entry.len()).expect("a log entry is at most 110 bytes");
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(entry);
    }
    out
}

/// Every tile and bundle a tree of `size` leaves holds at its own size: the full ones and, at
/// each level, the rightmost partial one. What `oubli log export` writes.
pub fn all_paths(size: u64) -> Vec<TilePath> {
    let mut out = Vec::new();
    let mut push_level = |level: Option<u32>, count: u64| {
        for index in 0..count / WIDTH {
            out.push(match level {
                Some(level) => TilePath::Hashes { level, index, width: WIDTH },
                None => TilePath::Entries { index, width: WIDTH },
            });
        }
        let rest = count % WIDTH;
        if rest > 0 {
            let index = count / WIDTH;
            out.push(match level {
                Some(level) => TilePath::Hashes { level, index, width: rest },
                None => TilePath::Entries { index, width: rest },
            });
        }
    };
    push_level(None, size);
    let mut level = 0;
    while count_at(Some(level), size) > 0 {
        push_level(Some(level), count_at(Some(level), size));
        level += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transparency::{merkle, tree::Tree};

    #[test]
    fn paths_follow_the_spec_both_ways() {
        let cases = [
            (TilePath::Hashes { level: 0, index: 0, width: 256 }, "tile/0/000"),
            (TilePath::Hashes { level: 1, index: 1234067, width: 256 }, "tile/1/x001/x234/067"),
            (TilePath::Hashes { level: 0, index: 1000, width: 7 }, "tile/0/x001/000.p/7"),
            (TilePath::Entries { index: 12, width: 255 }, "tile/entries/012.p/255"),
        ];
        for (tile, path) in cases {
            assert_eq!(tile.path(), path);
            assert_eq!(TilePath::parse(path.strip_prefix("tile/").unwrap()), Ok(tile), "{path}");
        }
        for bad in
            ["0/00", "0/0000", "0/x000/001", "0/001.p/0", "0/001.p/256", "0/001.p/07", "8/000", "01/000", "x/000", "0"]
        {
            assert!(TilePath::parse(bad).is_err(), "{bad}");
        }
    }

    fn leaf_hashes(entries: &[Vec<u8>]) -> Vec<Hash> {
        entries.iter().map(|e| merkle::leaf_hash(e)).collect()
    }

    #[test]
    fn tiles_hold_the_perfect_subtrees_and_the_tree_hashes_from_them() {
        let mut tree = Tree::new();
        let entries: Vec<Vec<u8>> = (0..70_000u32).map(|n| n.to_be_bytes().to_vec()).collect();
        for e in &entries {
            tree.append(e);
        }
        let size = entries.len() as u64;
        let paths = all_paths(size);
        // Bundles and level 0: 273 full + 1 partial (112); level 1: 273 hashes, 1 full + 1
        // partial (17); level 2: 1 hash.
        assert_eq!(paths.len(), 274 + 274 + 2 + 1);
        assert!(paths.iter().all(|p| exists(p, size)));
        assert!(!exists(&TilePath::Hashes { level: 1, index: 1, width: 256 }, size));
        assert!(!exists(&TilePath::Hashes { level: 0, index: 273, width: 113 }, size));
        assert!(exists(&TilePath::Hashes { level: 0, index: 273, width: 112 }, size));
        assert!(paths.contains(&TilePath::Hashes { level: 1, index: 1, width: 17 }));
        // A level-1 hash is the root of 256 leaves, a level-2 hash that of 65,536.
        let level1 = hash_tile(&tree, 1, 0, 256);
        assert_eq!(
            &level1[32..64],
            merkle::root(leaf_hashes(&entries[256..512]).as_slice(), merkle::TreeSize(256)).as_slice()
        );
        let level2 = hash_tile(&tree, 2, 0, 1);
        assert_eq!(level2.as_slice(), tree.root(merkle::TreeSize(65_536)).unwrap().as_slice());
        let bundle = entry_bundle(entries[256..512].iter().map(Vec::as_slice));
        assert_eq!(bundle.len(), 256 * 6);
        assert_eq!(&bundle[..6], &[0, 4, 0, 0, 1, 0]);
    }
}
