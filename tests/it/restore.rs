//! Restores that cannot resurrect: a copy of the data dir taken before three erasures is refused;
//! restored with `restore_from_backup`, the three people's records are NOT_FOUND again, their
//! sources cannot be enrolled again, each re-application is in the log, and the auditor's
//! witness sees the log grow from the checkpoint it saved before the restore, not roll back.
use std::collections::BTreeMap;

use oubli::{
    grpc::pb::{
        self, admin_service_client::AdminServiceClient, rights_service_client::RightsServiceClient,
        templates_service_client::TemplatesServiceClient,
    },
    transparency::event::Event,
};
use tonic::Code;

use crate::{
    erasure::submit_erasure,
    harness::{Dirs, Server, assert_log_extends, copy_dir, events, oubli},
    rights::{enrol, tokens, wait, with_tokens},
};

const STRICT: f32 = 0.602;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_backup_is_refused_then_reapplies_every_erasure_and_continues_the_log() {
    let dirs = Dirs::new();
    let (path, t) = tokens(&dirs);
    let server = Server::start_with(dirs, with_tokens(path.clone(), |_| {})).await;
    let world = enrol(&server, &t.operator).await;
    let first = world.clear_cut(0);
    let second = world.clear_cut(first + 1);
    let third = world.clear_cut(second + 1);
    let people = [first, second, third];
    let erased: Vec<Vec<String>> =
        people.iter().map(|&p| world.scored(p, STRICT, 2.0).into_iter().map(|(id, _)| id).collect()).collect();

    // The first person's access report names their records (and is in the backup).
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (access, access_secret) = crate::rights::submit(&mut rights, world.population.probe(first)).await;
    assert_eq!(wait(&mut rights, &access, &access_secret).await.state, "completed");
    let (before, _) = crate::rights::report(&mut rights, &access, &access_secret).await;
    assert!(!before.records.is_empty(), "the report names the person's records");
    drop(rights);

    // The operator copies the data dir (a backup), then three people have their records erased.
    let dirs = server.stop().await;
    let backup = dirs.keys.parent().expect("a parent").join("backup");
    copy_dir(&dirs.data, &backup);
    let server = Server::start_with(dirs, with_tokens(path.clone(), |_| {})).await;
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let mut admin = AdminServiceClient::new(server.channel_as(Some(&t.admin)).await);
    for &p in &people {
        let (id, secret) = submit_erasure(&mut rights, world.population.probe(p)).await;
        assert_eq!(wait(&mut rights, &id, &secret).await.erasure_step, "keys_purged");
        admin.run_purge(pb::RunPurgeRequest {}).await.expect("purge");
        assert_eq!(wait(&mut rights, &id, &secret).await.state, "completed");
    }
    // The auditor's witness saves the checkpoint it has seen.
    let work = tempfile::tempdir().expect("tmp");
    let (state, key_file) = (work.path().join("witness.note"), work.path().join("log.vkey"));
    let addr = server.addr.to_string();
    let (ok, key) = oubli(&["--server", &addr, "log", "verifier-key"]);
    assert!(ok, "{key}");
    std::fs::write(&key_file, key.trim()).expect("write key");
    let witness = |addr: &str| {
        let (state, key) = (state.to_str().expect("path"), key_file.to_str().expect("path"));
        oubli(&["--server", addr, "witness", "check", "--state", state, "--verifier-key", key])
    };
    let (ok, out) = witness(&addr);
    assert!(ok && out.contains("first checkpoint"), "{out}");
    let saved = std::fs::read_to_string(&state).expect("saved checkpoint");
    let planned: BTreeMap<[u8; 32], u32> = events(server.channel().await)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::ErasurePlanned { commitment, records, .. } => Some((commitment, records)),
            _ => None,
        })
        .collect();
    assert_eq!(planned.len(), 3);
    let dirs = server.stop().await;

    // The backup is restored in place of the data dir: refused, with the reason and the way on.
    std::fs::remove_dir_all(&dirs.data).expect("remove");
    copy_dir(&backup, &dirs.data);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("an older copy is refused");
    let message = err.to_string();
    assert!(
        message.contains("refusing to serve an older copy")
            && message.contains("3 erasure(s)")
            && message.contains("--restore-from-backup"),
        "{message}"
    );

    // With the flag: every erased record is NOT_FOUND again and its source stays refused.
    let server = Server::start_with(dirs, with_tokens(path.clone(), |c| c.restore_from_backup = true)).await;
    let mut templates = TemplatesServiceClient::new(server.channel_as(Some(&t.operator)).await);
    for id in erased.iter().flatten() {
        let got = templates.get(pb::GetRequest { record_id: id.clone(), include_embedding: false }).await;
        assert_eq!(got.expect_err("erased again").code(), Code::NotFound);
    }
    let kept = world.ids.iter().find(|i| !erased.iter().flatten().any(|e| e == *i)).expect("a record kept");
    templates.get(pb::GetRequest { record_id: kept.clone(), include_embedding: false }).await.expect("kept");
    let (requests, _) = crate::harness::requests(&world.population);
    let index = world.ids.iter().position(|i| *i == erased[0][0]).expect("an erased record");
    let again = templates.enroll(requests[index].clone()).await;
    assert!(again.is_err(), "an erased source is suppressed again: {again:?}");
    // The restored copy's access report no longer names the erased records.
    let mut rights = RightsServiceClient::new(server.channel_as(None).await);
    let (after, _) = crate::rights::report(&mut rights, &access, &access_secret).await;
    assert!(after.records.is_empty(), "the restored report names no erased record: {:?}", after.records.len());
    assert_eq!(after.erased_since, before.records.len());
    drop(rights);

    // Each re-application is logged with its erasure's commitment and count.
    let reapplied: BTreeMap<[u8; 32], u32> = events(server.channel().await)
        .await
        .into_iter()
        .filter_map(|e| match e {
            Event::ErasureReapplied { commitment, records } => Some((commitment, records)),
            _ => None,
        })
        .collect();
    assert_eq!(reapplied, planned, "one re-application per erasure, each of its whole plan");
    // Its receipt is read by `oubli verify` and by the Python check, from the docs alone.
    let leaf = events(server.channel().await)
        .await
        .iter()
        .position(|e| matches!(e, Event::ErasureReapplied { .. }))
        .expect("a re-application");
    let (ok, receipt) = oubli(&["--server", &server.addr.to_string(), "log", "receipt", "--leaf", &leaf.to_string()]);
    assert!(ok && receipt.contains("erasure-reapplied"), "{receipt}");
    let receipt_file = work.path().join("reapplied.json");
    std::fs::write(&receipt_file, &receipt).expect("write receipt");
    let (receipt_path, key_path) = (receipt_file.to_str().expect("path"), key_file.to_str().expect("path"));
    let (ok, out) = oubli(&["verify", receipt_path, "--verifier-key", key_path]);
    assert!(ok && out.contains("every check passed"), "{out}");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python/check_receipt.py");
    let out = std::process::Command::new("python3").arg(script).arg(&receipt_file).arg(key.trim()).output();
    let out = out.expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && text.contains("ok  statement digest in the leaf"), "{text}");
    // The witness's saved checkpoint is consistent with the new one: growth, not a rollback.
    let grown = assert_log_extends(server.channel().await, &saved).await;
    let (ok, out) = witness(&server.addr.to_string());
    assert!(ok && out.contains(&format!("to {grown} leaves")), "{out}");

    // Once restored, it opens without the flag and re-applies nothing twice.
    let server = server.restart_with(with_tokens(path, |_| {})).await;
    let again = events(server.channel().await).await;
    assert_eq!(again.iter().filter(|e| matches!(e, Event::ErasureReapplied { .. })).count(), 3);
    server.stop().await;
}
