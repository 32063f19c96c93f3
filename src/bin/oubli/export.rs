//! `oubli log export DIR`: the published log as the static files of C2SP tlog-tiles
//! (`checkpoint`, `tile/<L>/<N>[.p/<W>]`, `tile/entries/<N>[.p/<W>]`), which any web server can
//! serve. The tree is rebuilt here from the entries fetched over gRPC and checked against the
//! checkpoint's signature and root before anything is written: the files are the same bytes
//! `--tiles-listen` serves, computed on another path.
use std::{fs, path::Path};

use anyhow::{Context, Result, bail};
use oubli::grpc::{AuthChannel, pb, pb::transparency_service_client::TransparencyServiceClient};
use oubli::transparency::{
    merkle::TreeSize,
    note::VerifierKey,
    receipt::open_checkpoint,
    tiles::{self, TilePath},
    tree::Tree,
};

use super::status_error;

/// Entries per `GetEntries` call (the server's limit).
const PAGE: u64 = 1000;

pub async fn export(log: &mut TransparencyServiceClient<AuthChannel>, dir: &Path) -> Result<()> {
    let note = log.get_checkpoint(pb::GetCheckpointRequest {}).await.map_err(status_error)?.into_inner().checkpoint;
    let key = log.get_verifier_key(pb::GetVerifierKeyRequest {}).await.map_err(status_error)?.into_inner().verifier_key;
    let key = VerifierKey::parse(&key).context("the server's verifier key")?;
    let signed = open_checkpoint(&note, &key).map_err(|e| anyhow::anyhow!("the served checkpoint: {e}"))?;
    let mut entries: Vec<Vec<u8>> = Vec::with_capacity(signed.size as usize);
    while (entries.len() as u64) < signed.size {
        let start = entries.len() as u64;
        let end = (start + PAGE).min(signed.size);
        let page = log.get_entries(pb::GetEntriesRequest { start, end }).await.map_err(status_error)?.into_inner();
        if page.entries.is_empty() {
            bail!("the server returned no entries from {start}, below its checkpoint's size {}", signed.size);
        }
        for e in page.entries {
            if e.index != entries.len() as u64 {
                bail!("the server skipped entry {}", entries.len());
            }
            entries.push(e.data);
        }
    }
    let mut tree = Tree::new();
    for e in &entries {
        tree.append(e);
    }
    if tree.root(TreeSize(signed.size))? != signed.root {
        bail!(
            "the entries served do not give the checkpoint's root: not exporting a tree the checkpoint does not sign"
        );
    }
    let mut written = 0usize;
    for path in tiles::all_paths(signed.size) {
        let bytes = match path {
            TilePath::Hashes { level, index, width } => tiles::hash_tile(&tree, level, index, width),
            TilePath::Entries { index, width } => {
                let start = (index * tiles::WIDTH) as usize;
                tiles::entry_bundle(entries[start..start + width as usize].iter().map(Vec::as_slice))
            }
        };
        write(&dir.join(path.path()), &bytes)?;
        written += 1;
    }
    write(&dir.join("checkpoint"), note.as_bytes())?;
    outln!(
        "exported the log of {} entries as {written} tiles and bundles and its checkpoint to {}",
        signed.size,
        dir.display()
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
    }
    fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
