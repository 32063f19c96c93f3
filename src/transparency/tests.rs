//! Known answers from ../shared/testdata/merkle (transparency-dev/merkle) and properties.
use std::path::{Path, PathBuf};

use base64::{Engine, engine::general_purpose::STANDARD};
use proptest::prelude::*;
use serde_json::Value;

use super::merkle::*;

fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata/merkle")
}

fn json_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("testdata dir (../shared/testdata beside the repo)") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            json_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "json") {
            out.push(path);
        }
    }
}

/// A base64 field as a hash; `None` when it is not 32 bytes (such a case must fail).
fn hash(v: &Value) -> Option<Hash> {
    STANDARD.decode(v.as_str().unwrap_or_default()).ok()?.try_into().ok()
}

fn proof(v: &Value) -> Option<Vec<Hash>> {
    match v {
        Value::Null => Some(Vec::new()),
        Value::Array(items) => items.iter().map(hash).collect(),
        _ => None,
    }
}

fn cases(kind: &str) -> Vec<(PathBuf, Value)> {
    let mut files = Vec::new();
    json_files(&testdata().join(kind), &mut files);
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let v = serde_json::from_slice(&std::fs::read(&f).expect("read")).expect("json");
            (f, v)
        })
        .collect()
}

#[test]
fn inclusion_vectors() {
    let cases = cases("inclusion");
    assert_eq!(cases.len(), 98, "the README promises 98 inclusion cases");
    let mut verified = 0;
    for (file, c) in cases {
        let outcome = (|| {
            let (leaf, root, proof) = (hash(&c["leafHash"])?, hash(&c["root"])?, proof(&c["proof"])?);
            let (index, size) = (c["leafIdx"].as_u64()?, c["treeSize"].as_u64()?);
            Some(verify_inclusion(&leaf, LeafIndex(index), TreeSize(size), &proof, &root))
        })();
        let ok = matches!(outcome, Some(Ok(())));
        assert_eq!(ok, !c["wantErr"].as_bool().expect("wantErr"), "{}: {outcome:?}", file.display());
        verified += usize::from(ok);
    }
    assert_eq!(verified, 6);
}

#[test]
fn consistency_vectors() {
    let cases = cases("consistency");
    assert_eq!(cases.len(), 98, "the README promises 98 consistency cases");
    let mut verified = 0;
    for (file, c) in cases {
        let outcome = (|| {
            let root1 = STANDARD.decode(c["root1"].as_str()?).ok()?;
            let root2 = STANDARD.decode(c["root2"].as_str()?).ok()?;
            let proof = proof(&c["proof"])?;
            let (size1, size2) = (c["size1"].as_u64()?, c["size2"].as_u64()?);
            Some(verify_consistency(TreeSize(size1), TreeSize(size2), &root1, &root2, &proof))
        })();
        let ok = matches!(outcome, Some(Ok(())));
        assert_eq!(ok, !c["wantErr"].as_bool().expect("wantErr"), "{}: {outcome:?}", file.display());
        verified += usize::from(ok);
    }
    assert_eq!(verified, 6);
}

#[test]
fn roots_of_the_reference_tree() {
    let v: Value = serde_json::from_slice(&std::fs::read(testdata().join("roots.json")).expect("roots")).expect("json");
    let leaves: Vec<Hash> = v["leaf_inputs_hex"]
        .as_array()
        .expect("leaves")
        .iter()
        .map(|l| leaf_hash(&hex::decode(l.as_str().expect("hex")).expect("hex")))
        .collect();
    let roots = v["root_hashes_by_size_hex"].as_array().expect("roots");
    assert_eq!(roots.len(), 9);
    for (size, want) in roots.iter().enumerate() {
        assert_eq!(
            hex::encode(root(leaves.as_slice(), TreeSize(size as u64))),
            want.as_str().expect("hex"),
            "size {size}"
        );
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| leaf_hash(&i.to_be_bytes())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn every_inclusion_proof_verifies_and_any_flip_fails(size in 1usize..2500, pick in any::<u64>(), bit in 0usize..256) {
        let tree = leaves(size);
        let size_ = TreeSize(size as u64);
        let r = root(tree.as_slice(), size_);
        let index = LeafIndex(pick % size as u64);
        let proof = inclusion_proof(tree.as_slice(), index, size_).expect("in range");
        prop_assert_eq!(verify_inclusion(&tree[index.0 as usize], index, size_, &proof, &r), Ok(()));

        let flip = |h: &mut Hash| h[bit / 8] ^= 1 << (bit % 8);
        let mut bad_root = r;
        flip(&mut bad_root);
        prop_assert!(verify_inclusion(&tree[index.0 as usize], index, size_, &proof, &bad_root).is_err());
        let mut bad_leaf = tree[index.0 as usize];
        flip(&mut bad_leaf);
        prop_assert!(verify_inclusion(&bad_leaf, index, size_, &proof, &r).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = bit % bad.len();
            flip(&mut bad[at]);
            prop_assert!(verify_inclusion(&tree[index.0 as usize], index, size_, &bad, &r).is_err());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_any_flip_fails(size2 in 1usize..2500, pick in any::<u64>(), bit in 0usize..256) {
        let tree = leaves(size2);
        let size1 = TreeSize(pick % (size2 as u64 + 1));
        let size2 = TreeSize(size2 as u64);
        let (r1, r2) = (root(tree.as_slice(), size1), root(tree.as_slice(), size2));
        let proof = consistency_proof(tree.as_slice(), size1, size2).expect("ordered");
        let want = if size1.0 == 0 { Err(ProofError::FromEmptyTree) } else { Ok(()) };
        prop_assert_eq!(verify_consistency(size1, size2, &r1, &r2, &proof), want);

        let flip = |h: &mut Hash| h[bit / 8] ^= 1 << (bit % 8);
        if size1.0 > 0 {
            let mut bad = r1;
            flip(&mut bad);
            prop_assert!(verify_consistency(size1, size2, &bad, &r2, &proof).is_err());
        }
        let mut bad = r2;
        flip(&mut bad);
        prop_assert!(size1.0 == 0 || verify_consistency(size1, size2, &r1, &bad, &proof).is_err());
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let at = bit % bad.len();
            flip(&mut bad[at]);
            prop_assert!(verify_consistency(size1, size2, &r1, &r2, &bad).is_err());
        }
    }
}
