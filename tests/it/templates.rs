//! The Templates API end to end: enrolment, search, restart, idempotency, bad input, health,
//! reflection, and what reaches the disk.
use oubli::grpc::pb;
use tonic::Code;

use crate::harness::{Dirs, Server, files_under, record_count, request, seeded, stream_of};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrolled_records_are_found_and_survive_restart() {
    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let (requests, vectors) = seeded(1000, 42);
    let response = client.enroll_stream(stream_of(requests)).await.expect("enrol").into_inner();
    assert_eq!(response.record_ids.len(), 1000);
    assert_eq!(response.created, 1000);
    let ids = response.record_ids;
    assert_eq!(record_count(&mut client).await, 1000);

    let mut before = Vec::with_capacity(ids.len());
    for (id, v) in ids.iter().zip(&vectors) {
        let hits = client
            .search(pb::SearchRequest {
                probe: Some(pb::Embedding { values: v.clone() }),
                k: 5,
                min_score: None,
                exact: false,
            })
            .await
            .expect("search")
            .into_inner();
        assert_eq!(hits.candidates, 1000);
        assert_eq!(&hits.hits[0].record_id, id, "a record's own vector finds it first");
        assert!((hits.hits[0].score - 1.0).abs() < 1e-5, "self-similarity {}", hits.hits[0].score);
        assert!(hits.hits.windows(2).all(|w| w[0].score >= w[1].score), "hits sorted by score");
        let record = client
            .get(pb::GetRequest { record_id: id.clone(), include_embedding: true })
            .await
            .expect("get")
            .into_inner()
            .record
            .expect("record");
        before.push((hits.hits, record));
    }

    let server = server.restart().await;
    let mut client = server.client().await;
    assert_eq!(record_count(&mut client).await, 1000);
    for ((id, v), (hits_before, record_before)) in ids.iter().zip(&vectors).zip(&before) {
        let hits = client
            .search(pb::SearchRequest {
                probe: Some(pb::Embedding { values: v.clone() }),
                k: 5,
                min_score: None,
                exact: false,
            })
            .await
            .expect("search")
            .into_inner();
        assert_eq!(&hits.hits, hits_before, "same search results after restart");
        let record = client
            .get(pb::GetRequest { record_id: id.clone(), include_embedding: true })
            .await
            .expect("get")
            .into_inner()
            .record
            .expect("record");
        assert_eq!(&record, record_before, "same record after restart");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_return_the_same_record() {
    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let (mut requests, _) = seeded(2, 7);
    let mut second = requests.pop().expect("two");
    let mut first = requests.pop().expect("two");
    first.idempotency_key = "upload-7f3a".into();

    let a = client.enroll(first.clone()).await.expect("enrol").into_inner();
    assert!(a.created);
    let b = client.enroll(first.clone()).await.expect("retry").into_inner();
    assert_eq!(b.record_id, a.record_id);
    assert!(!b.created);
    assert_eq!(record_count(&mut client).await, 1);

    // Within a stream, and across a restart.
    let server = server.restart().await;
    let mut client = server.client().await;
    let stream = client.enroll_stream(stream_of(vec![first.clone(), first.clone()])).await.expect("stream");
    let stream = stream.into_inner();
    assert_eq!(stream.record_ids, vec![a.record_id.clone(), a.record_id.clone()]);
    assert_eq!(stream.created, 0);
    assert_eq!(record_count(&mut client).await, 1);

    // The same key for different content is refused, and nothing is stored.
    second.idempotency_key = "upload-7f3a".into();
    let err = client.enroll(second.clone()).await.expect_err("conflict");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("already used for a different enrolment"), "{}", err.message());
    assert_eq!(record_count(&mut client).await, 1);
    second.idempotency_key = "upload-other".into();
    let c = client.enroll(second).await.expect("new key").into_inner();
    assert_ne!(c.record_id, a.record_id);
    assert_eq!(record_count(&mut client).await, 2);
    server.stop().await;
}

/// Each bad input gets the right code and a message naming the problem; nothing is stored and
/// the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_clearly_and_changes_nothing() {
    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let (good, vectors) = seeded(1, 1);
    let good = good.into_iter().next().expect("one");
    let id = client.enroll(good.clone()).await.expect("enrol").into_inner().record_id;

    let with_values = |values: Vec<f32>| {
        let mut r = good.clone();
        r.embedding = Some(pb::Embedding { values });
        r
    };
    let with_provenance = |edit: &dyn Fn(&mut pb::Provenance)| {
        let mut r = good.clone();
        edit(r.provenance.as_mut().expect("provenance"));
        r
    };
    let mut nan = vectors[0].clone();
    nan[3] = f32::NAN;
    let mut inf = vectors[0].clone();
    inf[9] = f32::INFINITY;
    let future = jiff::Timestamp::now().as_second() + 86_400;

    let enrol_cases: Vec<(&str, pb::EnrollRequest, Code, &str)> = vec![
        (
            "wrong dimension",
            with_values(vec![0.1; 511]),
            Code::InvalidArgument,
            "embedding has 511 values, expected 512",
        ),
        ("NaN", with_values(nan), Code::InvalidArgument, "embedding value 3 is NaN"),
        ("infinity", with_values(inf), Code::InvalidArgument, "embedding value 9 is inf"),
        ("zero vector", with_values(vec![0.0; 512]), Code::InvalidArgument, "zero vector"),
        ("no embedding", pb::EnrollRequest { embedding: None, ..good.clone() }, Code::InvalidArgument, "has 0 values"),
        (
            "no provenance",
            pb::EnrollRequest { provenance: None, ..good.clone() },
            Code::InvalidArgument,
            "provenance is required",
        ),
        ("empty source", with_provenance(&|p| p.source_uri.clear()), Code::InvalidArgument, "source_uri is empty"),
        (
            "long source",
            with_provenance(&|p| p.source_uri = "a".repeat(3000)),
            Code::InvalidArgument,
            "source_uri is 3000 bytes, at most 2048",
        ),
        (
            "no collection time",
            with_provenance(&|p| p.collected_at = None),
            Code::InvalidArgument,
            "collected_at is required",
        ),
        (
            "future collection time",
            with_provenance(&|p| p.collected_at = Some(prost_types::Timestamp { seconds: future, nanos: 0 })),
            Code::InvalidArgument,
            "is in the future",
        ),
        (
            "bad nanos",
            with_provenance(&|p| p.collected_at = Some(prost_types::Timestamp { seconds: 0, nanos: -5 })),
            Code::InvalidArgument,
            "collected_at is not a valid time",
        ),
        (
            "unspecified source kind",
            with_provenance(&|p| p.source_kind = 0),
            Code::InvalidArgument,
            "source_kind is unspecified",
        ),
        (
            "unknown source kind",
            with_provenance(&|p| p.source_kind = 99),
            Code::InvalidArgument,
            "unknown provenance.source_kind value 99",
        ),
        (
            "unspecified legal basis",
            with_provenance(&|p| p.legal_basis = 0),
            Code::InvalidArgument,
            "legal_basis is unspecified",
        ),
        (
            "no jurisdiction",
            with_provenance(&|p| p.jurisdiction.clear()),
            Code::InvalidArgument,
            "jurisdiction \"\" is not",
        ),
        (
            "bad jurisdiction",
            with_provenance(&|p| p.jurisdiction = "XX".into()),
            Code::InvalidArgument,
            "\"XX\" is not an ISO 3166-1",
        ),
        (
            "long idempotency key",
            pb::EnrollRequest { idempotency_key: "k".repeat(129), ..good.clone() },
            Code::InvalidArgument,
            "idempotency_key is 129 bytes",
        ),
        (
            "oversize message",
            with_provenance(&|p| p.source_uri = "a".repeat(5 * 1024 * 1024)),
            Code::OutOfRange,
            "message length too large",
        ),
    ];
    for (name, req, code, message) in enrol_cases {
        let err = client.enroll(req).await.expect_err(name);
        assert_eq!(err.code(), code, "{name}: {err:?}");
        assert!(err.message().contains(message), "{name}: {:?} lacks {message:?}", err.message());
        assert_eq!(record_count(&mut client).await, 1, "{name} stored something");
    }

    // A stream with one bad item in the middle stores nothing at all.
    let (mut items, _) = seeded(5, 2);
    items[2].provenance.as_mut().expect("provenance").legal_basis = 0;
    let err = client.enroll_stream(stream_of(items)).await.expect_err("bad stream");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("item 2: "), "{}", err.message());
    assert_eq!(record_count(&mut client).await, 1);

    let probe = |values: Vec<f32>, k: u32, min_score: Option<f32>| pb::SearchRequest {
        probe: Some(pb::Embedding { values }),
        k,
        min_score,
        exact: false,
    };
    let search_cases: Vec<(&str, pb::SearchRequest, &str)> = vec![
        ("k = 0", probe(vectors[0].clone(), 0, None), "k is 0; ask for 1 to 1000 hits"),
        ("k = 1001", probe(vectors[0].clone(), 1001, None), "k is 1001"),
        ("min_score 2", probe(vectors[0].clone(), 5, Some(2.0)), "min_score is 2"),
        ("min_score NaN", probe(vectors[0].clone(), 5, Some(f32::NAN)), "min_score is NaN"),
        ("probe dimension", probe(vec![1.0; 3], 5, None), "probe: embedding has 3 values, expected 512"),
    ];
    for (name, req, message) in search_cases {
        let err = client.search(req).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(message), "{name}: {:?} lacks {message:?}", err.message());
    }

    let err = client.get(pb::GetRequest { record_id: "not-an-id".into(), include_embedding: false }).await;
    let err = err.expect_err("malformed id");
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("is not 32 hex digits"), "{}", err.message());
    let unknown = "0".repeat(32);
    let err = client.get(pb::GetRequest { record_id: unknown.clone(), include_embedding: false }).await;
    let err = err.expect_err("unknown id");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), format!("no record with id {unknown}"));

    // Still serving, still holding exactly the one good record.
    let record = client.get(pb::GetRequest { record_id: id, include_embedding: false }).await.expect("get");
    let record = record.into_inner().record.expect("record");
    assert!(record.embedding.is_none(), "the template is only returned when asked for");
    assert_eq!(record_count(&mut client).await, 1);
    server.stop().await;
}

/// Neither a template's bytes nor its source URI reach any file of the data dir in clear:
/// not the write-ahead log, not the tables, not the manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_template_or_source_reaches_the_disk_in_clear() {
    let server = Server::start(Dirs::new()).await;
    let mut client = server.client().await;
    let (mut requests, vectors) = seeded(200, 99);
    let secret_uri = "https://very-distinctive-photo-host.example/alice/selfie-2019.jpg";
    requests[17].provenance.as_mut().expect("provenance").source_uri = secret_uri.into();
    client.enroll_stream(stream_of(requests)).await.expect("enrol");
    // A single enrolment too, so the log holds one write of each kind.
    client.enroll(request(vectors[17].iter().map(|v| -v).collect(), secret_uri)).await.expect("enrol");

    let raw: Vec<u8> = vectors[17].iter().flat_map(|v| v.to_le_bytes()).collect();
    let big_endian: Vec<u8> = vectors[17].iter().flat_map(|v| v.to_be_bytes()).collect();
    let needles: [(&str, &[u8]); 4] = [
        ("template (first 64 bytes)", &raw[..64]),
        ("template (bytes 1024..1088)", &raw[1024..1088]),
        ("template big-endian", &big_endian[..64]),
        ("source URI", secret_uri.as_bytes()),
    ];
    // Positive control: the scan finds each needle in a file that holds it in clear.
    let control = tempfile::tempdir().expect("tmp");
    for (what, needle) in &needles {
        std::fs::write(control.path().join("clear.bin"), [b"prefix".as_slice(), needle, b"suffix"].concat())
            .expect("write");
        let bytes = std::fs::read(control.path().join("clear.bin")).expect("read");
        assert!(bytes.windows(needle.len()).any(|w| w == *needle), "the scan cannot see {what}");
    }
    let check = |dir: &std::path::Path, when: &str| {
        let files = files_under(dir);
        assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "log")), "{when}: a WAL exists");
        for file in &files {
            let bytes = std::fs::read(file).expect("read");
            for (what, needle) in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == *needle),
                    "{when}: {what} found in {}",
                    file.display()
                );
            }
        }
        files
    };
    check(&server.dirs.data, "while running");
    let dirs = server.stop().await;
    let files = check(&dirs.data, "after shutdown");
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "sst")), "records were flushed to tables");
    assert!(files.iter().any(|f| f.file_name().is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let server = Server::start(Dirs::new()).await;
    let channel = server.channel().await;
    let mut health = HealthClient::new(channel.clone());
    for service in ["", "oubli.v1.TemplatesService"] {
        let status = health.check(HealthCheckRequest { service: service.into() }).await.expect("health");
        assert_eq!(status.into_inner().status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.expect("reflect");
    let response = responses.get_mut().message().await.expect("message").expect("a response");
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"oubli.v1.TemplatesService"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // The older v1alpha protocol, which many tools still speak, serves the same descriptors.
    use tonic_reflection::pb::v1alpha as alpha;
    let request = alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
            "oubli.v1.TemplatesService".into(),
        )),
    };
    let mut client = alpha::server_reflection_client::ServerReflectionClient::new(server.channel().await);
    let mut responses = client.server_reflection_info(tokio_stream::iter(vec![request])).await.expect("v1alpha");
    let response = responses.get_mut().message().await.expect("message").expect("a response");
    assert!(matches!(
        response.message_response,
        Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(_))
    ));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_keeps_its_dimension_and_its_keys() {
    let server = Server::start(Dirs::new()).await;
    let dirs = server.stop().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let mut config = oubli::Config::new(dirs.data.clone(), dirs.keys.clone());
    config.dimension = Some(128);
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("dimension mismatch");
    assert!(err.to_string().contains("created for 512-dimensional templates, not 128"), "{err}");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let other_keys = dirs.data.with_file_name("other-keys");
    let config = oubli::Config::new(dirs.data.clone(), other_keys);
    let err = oubli::run(listener, config, std::future::ready(())).await.expect_err("missing keys");
    assert!(err.to_string().contains("holds no keys"), "{err}");
}
