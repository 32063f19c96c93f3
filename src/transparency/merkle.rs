//! RFC 6962 / RFC 9162 §2.1 Merkle tree math: hashes, roots, inclusion and consistency proofs
//! and their verification. Pure: no I/O. Proof generation reads perfect subtrees through
//! [`NodeSource`], so a store that keeps each perfect subtree's hash answers in O(log n).
use sha2::{Digest, Sha256};

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

/// The position of a leaf in the log (0-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeafIndex(pub u64);

/// The number of leaves in a tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TreeSize(pub u64);

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size1} is larger than tree size {size2}")]
    SizesReversed { size1: u64, size2: u64 },
    #[error("proof has {got} hashes, expected {expected}")]
    WrongLength { got: usize, expected: usize },
    #[error("the proof leads to root {computed}, not the expected {expected}")]
    RootMismatch { computed: String, expected: String },
    #[error("a proof between two trees of the same size must be empty")]
    NonEmptyForEqualSizes,
    #[error("a consistency proof from the empty tree proves nothing")]
    FromEmptyTree,
    #[error("a root hash is 32 bytes")]
    MalformedRoot,
}

/// SHA-256 of the empty string: the root of the empty tree.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The largest power of two smaller than `n` (n ≥ 2): where RFC 6962 splits a tree.
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

/// Hashes of perfect subtrees: `2^level` leaves from `start`, which is a multiple of `2^level`.
pub trait NodeSource {
    fn perfect(&self, start: u64, level: u32) -> Hash;
}

/// Leaf hashes in memory: perfect subtrees computed on demand (O(size) per call).
impl NodeSource for [Hash] {
    fn perfect(&self, start: u64, level: u32) -> Hash {
        if level == 0 {
            return self[start as usize];
        }
        let half = 1u64 << (level - 1);
        node_hash(&self.perfect(start, level - 1), &self.perfect(start + half, level - 1))
    }
}

/// MTH(D[start..end]) for a range that the RFC recursion from 0 produces.
fn subtree(src: &(impl NodeSource + ?Sized), start: u64, end: u64) -> Hash {
    let n = end - start;
    if n.is_power_of_two() {
        return src.perfect(start, n.trailing_zeros());
    }
    let k = split(n);
    node_hash(&subtree(src, start, start + k), &subtree(src, start + k, end))
}

/// The root of the first `size` leaves.
pub fn root(src: &(impl NodeSource + ?Sized), size: TreeSize) -> Hash {
    if size.0 == 0 { empty_root() } else { subtree(src, 0, size.0) }
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1), from
/// the leaf's sibling up.
pub fn inclusion_proof(
    src: &(impl NodeSource + ?Sized),
    index: LeafIndex,
    size: TreeSize,
) -> Result<Vec<Hash>, ProofError> {
    if index.0 >= size.0 {
        return Err(ProofError::IndexOutOfRange { index: index.0, size: size.0 });
    }
    let mut proof = Vec::new();
    path(src, index.0, 0, size.0, &mut proof);
    Ok(proof)
}

fn path(src: &(impl NodeSource + ?Sized), m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
    let n = end - start;
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(src, m, start, start + k, out);
        out.push(subtree(src, start + k, end));
    } else {
        path(src, m - k, start + k, end, out);
        out.push(subtree(src, start, start + k));
    }
}

/// The consistency proof between the trees of `size1` and `size2` leaves (RFC 9162 §2.1.4.1).
pub fn consistency_proof(
    src: &(impl NodeSource + ?Sized),
    size1: TreeSize,
    size2: TreeSize,
) -> Result<Vec<Hash>, ProofError> {
    if size1 > size2 {
        return Err(ProofError::SizesReversed { size1: size1.0, size2: size2.0 });
    }
    let mut proof = Vec::new();
    if size1.0 > 0 && size1 < size2 {
        subproof(src, size1.0, 0, size2.0, true, &mut proof);
    }
    Ok(proof)
}

fn subproof(src: &(impl NodeSource + ?Sized), m: u64, start: u64, end: u64, complete: bool, out: &mut Vec<Hash>) {
    let n = end - start;
    if m == n {
        if !complete {
            out.push(subtree(src, start, end));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(src, m, start, start + k, complete, out);
        out.push(subtree(src, start + k, end));
    } else {
        subproof(src, m - k, start + k, end, false, out);
        out.push(subtree(src, start, start + k));
    }
}

fn mismatch(computed: &Hash, expected: &Hash) -> ProofError {
    ProofError::RootMismatch { computed: hex::encode(computed), expected: hex::encode(expected) }
}

/// Verifies that `leaf` (a leaf hash) is at `index` in the tree of `size` leaves with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(
    leaf: &Hash,
    index: LeafIndex,
    size: TreeSize,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index.0 >= size.0 {
        return Err(ProofError::IndexOutOfRange { index: index.0, size: size.0 });
    }
    let expected = inclusion_len(index.0, size.0);
    if proof.len() != expected {
        return Err(ProofError::WrongLength { got: proof.len(), expected });
    }
    let r =
        walk(index.0, size.0 - 1, *leaf, proof, None).ok_or(ProofError::WrongLength { got: proof.len(), expected })?;
    if &r == root { Ok(()) } else { Err(mismatch(&r, root)) }
}

/// The walk both verifications share (RFC 9162 §2.1.3.2 and §2.1.4.2): from `seed` at node
/// `fn_` of a level whose last node is `sn`, fold in `path` towards the root. Returns the full
/// hash (`sr`), or `None` when the path has the wrong length. With `first`, it also folds the
/// left merges alone into it (`fr`, the older tree's root in a consistency proof).
fn walk(mut fn_: u64, mut sn: u64, seed: Hash, path: &[Hash], mut first: Option<&mut Hash>) -> Option<Hash> {
    let mut sr = seed;
    for c in path {
        if sn == 0 {
            return None;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            if let Some(fr) = first.as_deref_mut() {
                *fr = node_hash(c, fr);
            }
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    (sn == 0).then_some(sr)
}

/// The length of an inclusion proof: the path's inner part plus its border part.
fn inclusion_len(index: u64, size: u64) -> usize {
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    // `inner` reaches 64 for trees of more than 2^63 leaves: a shift by 64 is 0 here, not a panic
    // (found by the `proof` fuzz target).
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// Verifies that the tree of `size1` leaves with `root1` is a prefix of the tree of `size2`
/// leaves with `root2` (RFC 9162 §2.1.4.2). Roots are taken as bytes, as they arrive: equal
/// sizes need equal roots and an empty proof; otherwise a root that is not 32 bytes fails.
/// A proof from the empty tree proves nothing and is refused.
pub fn verify_consistency(
    size1: TreeSize,
    size2: TreeSize,
    root1: &[u8],
    root2: &[u8],
    proof: &[Hash],
) -> Result<(), ProofError> {
    let (size1, size2) = (size1.0, size2.0);
    if size1 > size2 {
        return Err(ProofError::SizesReversed { size1, size2 });
    }
    if size1 == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::NonEmptyForEqualSizes);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch { computed: hex::encode(root1), expected: hex::encode(root2) })
        };
    }
    let (Ok(root1), Ok(root2)) = (<&Hash>::try_from(root1), <&Hash>::try_from(root2)) else {
        return Err(ProofError::MalformedRoot);
    };
    let expected = consistency_len(size1, size2);
    if proof.len() != expected {
        return Err(ProofError::WrongLength { got: proof.len(), expected });
    }
    // When size1 is a power of two, root1 is the first node of the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut fn_, mut sn) = (size1 - 1, size2 - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let mut fr = path[0];
    let sr = walk(fn_, sn, path[0], &path[1..], Some(&mut fr))
        .ok_or(ProofError::WrongLength { got: proof.len(), expected })?;
    if &fr != root1 {
        return Err(mismatch(&fr, root1));
    }
    if &sr != root2 {
        return Err(mismatch(&sr, root2));
    }
    Ok(())
}

/// The length of a consistency proof between sizes `0 < m < n`: the inclusion path of leaf
/// `m - 1` above the largest perfect subtree ending there, plus that subtree's root unless it is
/// the whole first tree (then the verifier already has it as `root1`).
fn consistency_len(m: u64, n: u64) -> usize {
    let inner = 64 - ((m - 1) ^ (n - 1)).leading_zeros();
    let border = (m - 1).checked_shr(inner).unwrap_or(0).count_ones();
    let shift = m.trailing_zeros();
    usize::from(!m.is_power_of_two()) + (inner - shift + border) as usize
}
