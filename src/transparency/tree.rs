//! An append-only Merkle tree that keeps the hash of every perfect subtree, so appends cost
//! O(1) amortised hashes and proofs O(log n) lookups. Its node layout, `(level, index)` for the
//! subtree of `2^level` leaves starting at `index · 2^level`, is the one the store persists.
use super::merkle::{self, Hash, LeafIndex, NodeSource, ProofError, TreeSize};

#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[l][i]`: hash of perfect subtree `i` at level `l`; level 0 holds leaf hashes.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new() -> Self {
        Tree::default()
    }

    pub fn size(&self) -> TreeSize {
        TreeSize(self.levels.first().map_or(0, |l| l.len() as u64))
    }

    /// Appends a leaf (its entry bytes) and returns its index and the new nodes it completed,
    /// as `(level, index, hash)`, leaf hash first: exactly what a store must write.
    pub fn append(&mut self, entry: &[u8]) -> (LeafIndex, Vec<(u32, u64, Hash)>) {
        self.append_hash(merkle::leaf_hash(entry))
    }

    pub fn append_hash(&mut self, leaf: Hash) -> (LeafIndex, Vec<(u32, u64, Hash)>) {
        let index = self.size().0;
        let mut written = vec![(0, index, leaf)];
        self.push(0, leaf);
        let mut level = 0usize;
        // A node completes at each level where the new size is a multiple of 2^(level+1).
        while self.levels[level].len().is_multiple_of(2) {
            let row = &self.levels[level];
            let hash = merkle::node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
            let i = self.levels.get(level).map_or(0, Vec::len) as u64;
            self.push(level, hash);
            written.push((level as u32, i, hash));
        }
        (LeafIndex(index), written)
    }

    /// Forgets every leaf from `size` on (to undo appends whose write failed).
    pub fn truncate(&mut self, size: TreeSize) {
        for (level, row) in self.levels.iter_mut().enumerate() {
            row.truncate((size.0 >> level) as usize);
        }
        while self.levels.last().is_some_and(Vec::is_empty) {
            self.levels.pop();
        }
    }

    fn push(&mut self, level: usize, hash: Hash) {
        if self.levels.len() == level {
            self.levels.push(Vec::new());
        }
        self.levels[level].push(hash);
    }

    pub fn root(&self, size: TreeSize) -> Result<Hash, ProofError> {
        self.check(size)?;
        Ok(merkle::root(self, size))
    }

    pub fn inclusion_proof(&self, index: LeafIndex, size: TreeSize) -> Result<Vec<Hash>, ProofError> {
        self.check(size)?;
        merkle::inclusion_proof(self, index, size)
    }

    pub fn consistency_proof(&self, size1: TreeSize, size2: TreeSize) -> Result<Vec<Hash>, ProofError> {
        self.check(size2)?;
        merkle::consistency_proof(self, size1, size2)
    }

    pub fn leaf_hash(&self, index: LeafIndex) -> Option<Hash> {
        self.levels.first()?.get(index.0 as usize).copied()
    }

    fn check(&self, size: TreeSize) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizesReversed { size1: size.0, size2: self.size().0 });
        }
        Ok(())
    }
}

impl NodeSource for Tree {
    fn perfect(&self, start: u64, level: u32) -> Hash {
        self.levels[level as usize][(start >> level) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_reference_recursion_and_verifies() {
        let mut tree = Tree::new();
        let mut leaves = Vec::new();
        for n in 0..300u64 {
            let entry = n.to_be_bytes();
            let (index, written) = tree.append(&entry);
            assert_eq!(index, LeafIndex(n));
            assert_eq!(written.len(), 1 + (n + 1).trailing_zeros() as usize, "nodes completed by leaf {n}");
            leaves.push(merkle::leaf_hash(&entry));
            let size = TreeSize(n + 1);
            let root = tree.root(size).expect("size");
            assert_eq!(root, merkle::root(leaves.as_slice(), size));
            for i in [0, n / 2, n] {
                let proof = tree.inclusion_proof(LeafIndex(i), size).expect("proof");
                assert_eq!(proof, merkle::inclusion_proof(leaves.as_slice(), LeafIndex(i), size).expect("proof"));
                merkle::verify_inclusion(&leaves[i as usize], LeafIndex(i), size, &proof, &root).expect("verifies");
            }
            for m in [1, n / 3 + 1, n + 1] {
                let proof = tree.consistency_proof(TreeSize(m), size).expect("proof");
                let old = tree.root(TreeSize(m)).expect("size");
                merkle::verify_consistency(TreeSize(m), size, &old, &root, &proof).expect("consistent");
            }
        }
        assert!(tree.root(TreeSize(301)).is_err());
        let before = tree.root(TreeSize(123)).expect("size");
        tree.truncate(TreeSize(123));
        assert_eq!(tree.size(), TreeSize(123));
        assert_eq!(tree.root(TreeSize(123)).expect("size"), before);
        tree.append(b"again");
        assert_eq!(tree.size(), TreeSize(124));
    }
}
