//! `faaskeeper serve --backend aws` consuming the SQS writer queue on moto: requests sent to
//! the writer FIFO queue are appended, applied and answered on the session's own FIFO queue
//! in order (Guarantees 2 and 4); a refused request is answered there too, and one that comes
//! again is applied once; a request over
//! SQS's size limit travels through S3; handled messages are deleted, and so is one that can
//! never decode, while one whose spilled body could not be read comes again.
use faaskeeper_backend_aws::moto::MotoServer;
use faaskeeper_backend_aws::{AwsBackend, INLINE_BODY_MAX, QueueKind, Queues};
use faaskeeper_core::apply::SessionRecord;
use faaskeeper_core::keys::{self, SYSTEM_BUCKET, USER_BUCKET};
use faaskeeper_core::queue::WriterMessage;
use faaskeeper_core::wire::{Delivery, NodeView, Op, OpResult, Request, SessionEvent, WriteBatch};
use faaskeeper_core::{CreateMode, ZkError};
use std::time::{Duration, Instant};

/// A host in this process over `aws`'s stores, with its data dir `dir`.
async fn host_over(aws: &AwsBackend, dir: &std::path::Path) -> faaskeeper_host::RunningHost {
    faaskeeper_host::start(faaskeeper_host::ServeOptions {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse().expect("addr"),
        zk_listen: None,
        stores: Some(aws.store_manager(SYSTEM_BUCKET, USER_BUCKET)),
        ..Default::default()
    })
    .await
    .expect("host")
}

async fn send(q: &Queues, session: i64, seq: i64, op: Op) {
    send_as(q, session, seq, op, &format!("{session}-{seq}")).await
}

/// [`send`] with the FIFO queue's deduplication id `dedup`.
async fn send_as(q: &Queues, session: i64, seq: i64, op: Op, dedup: &str) {
    let body = serde_json::to_vec(&WriterMessage::Write(WriteBatch {
        requests: vec![Request { session, seq, op }],
    }))
    .expect("encode");
    q.send(
        &q.names().writer(),
        &body,
        Some(&session.to_string()),
        Some(dedup),
    )
    .await
    .expect("send to the writer queue");
}

/// Results on the session queue until `n` have arrived (seq, result), in arrival order.
async fn results(q: &Queues, session: i64, n: usize) -> Vec<(i64, OpResult)> {
    let queue = q.names().session(session);
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(40);
    while out.len() < n {
        assert!(Instant::now() < deadline, "only {out:?} arrived");
        let got = q.receive(&queue, 10, 2).await.expect("receive");
        for m in &got {
            let body = m.body.as_deref().expect("a readable body");
            let d: Delivery = serde_json::from_slice(body).expect("a delivery");
            assert_eq!(d.session, session);
            for e in d.events {
                if let SessionEvent::Result { seq, result, .. } = e {
                    out.push((seq, result));
                }
            }
        }
        q.delete(&queue, &got).await.expect("delete");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_appends_from_the_writer_queue_and_answers_on_the_session_queue() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .try_init();
    let moto = MotoServer::start().expect("moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let aws = AwsBackend::connect(&moto.options("poller"))
        .await
        .expect("connect");
    let host = host_over(&aws, dir.path()).await;
    let _pollers = faaskeeper_host::aws::start_pollers(host.runtime(), aws.queues(), 2, false);
    let q = aws.queues();
    let session = 4242;
    q.ensure(&q.names().session(session), QueueKind::Fifo, None)
        .await
        .expect("session queue");
    send(
        q,
        session,
        0,
        Op::OpenSession {
            timeout_ms: 30_000,
            notify: q.names().notify_url(session),
            fallback: None,
        },
    )
    .await;
    // The open is applied in a batch of its own: a batch that opens a session writes its
    // record whole, with the last request of the session in that batch (checked below).
    let opened = results(q, session, 1).await;
    let big = vec![b'z'; 300 * 1024];
    let ops = vec![
        Op::Create {
            path: "/q".into(),
            data: b"one".to_vec(),
            mode: CreateMode::Persistent,
            acl: None,
        },
        Op::SetData {
            path: "/q".into(),
            data: b"two".to_vec(),
            version: 0,
        },
        // Refused by the writer's precheck: answered on the session queue, never logged.
        Op::Create {
            path: "no-slash".into(),
            data: Vec::new(),
            mode: CreateMode::Persistent,
            acl: None,
        },
        // Over SQS's 256 KiB once base64'd: the body goes through S3.
        Op::Create {
            path: "/big".into(),
            data: big.clone(),
            mode: CreateMode::Persistent,
            acl: None,
        },
    ];
    // Sent back to back, not waiting for results: the FIFO group keeps their order.
    for (i, op) in ops.into_iter().enumerate() {
        send(q, session, i as i64 + 1, op).await;
    }
    let mut got = opened;
    got.extend(results(q, session, 4).await);
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    let mut in_log: Vec<i64> = seqs.iter().copied().filter(|s| *s != 3).collect();
    in_log.dedup();
    assert_eq!(
        in_log,
        vec![0, 1, 2, 4],
        "logged requests answered in order: {got:?}"
    );
    let by_seq = |s: i64| got.iter().find(|(q, _)| *q == s).map(|(_, r)| r.clone());
    assert!(matches!(by_seq(0), Some(OpResult::SessionOpened { .. })));
    assert!(matches!(by_seq(1), Some(OpResult::Created { .. })));
    match by_seq(2) {
        Some(OpResult::Stat { stat }) => assert_eq!(stat.version, 1, "applied after the create"),
        other => panic!("set_data: {other:?}"),
    }
    match by_seq(3) {
        Some(OpResult::Error { error, .. }) => assert_eq!(error, ZkError::BadArguments),
        other => panic!("refused create: {other:?}"),
    }
    assert!(matches!(by_seq(4), Some(OpResult::Created { .. })));
    let read = |key: &'static str| {
        let user = aws.user();
        async move {
            let bytes = user.get(key).await.expect("read").expect("present");
            serde_json::from_slice::<NodeView>(&bytes).expect("node object")
        }
    };
    assert_eq!(read("/q").await.data, b"two");
    assert_eq!(read("/big").await.data, big);
    // A request that comes again after its result was sent (here with other data, past the
    // writer queue's own deduplication) is not applied again; a new one after it is. (Its
    // first result is sent again too, but the session queue drops it: the same body within
    // five minutes.) The session's record is as its open left it: the last result is kept in
    // the distributor's progress record, which it writes for each batch anyway.
    let set = |data: &[u8]| Op::SetData {
        path: "/q".into(),
        data: data.to_vec(),
        version: -1,
    };
    send_as(q, session, 2, set(b"again"), "again").await;
    send(q, session, 5, set(b"three")).await;
    let next = loop {
        // Earlier results may come again too (the queues deliver at least once).
        let got = results(q, session, 1).await;
        if let Some(r) = got.into_iter().find(|(s, _)| *s == 5) {
            break r.1;
        }
    };
    match next {
        OpResult::Stat { stat } => assert_eq!(stat.version, 2, "seq 2 was not applied again"),
        other => panic!("set_data after: {other:?}"),
    }
    assert_eq!(read("/q").await.data, b"three");
    let record = aws
        .system()
        .get(&keys::session(session))
        .await
        .expect("read")
        .expect("session record");
    let record: SessionRecord = serde_json::from_slice(&record).expect("session record");
    assert_eq!(
        record.last_seq, 0,
        "only the open wrote the session's record: {record:?}"
    );
    // Everything handled was deleted: nothing comes back after the visibility timeout
    // (checked without waiting for it: nothing is left visible or in flight).
    let attrs = q
        .queue_depth(&q.names().writer())
        .await
        .expect("queue attributes");
    assert_eq!(attrs, (0, 0), "(visible, in flight) on the writer queue");
    let usage = aws.usage().queues;
    assert!(
        usage.s3_put >= 1 && usage.s3_delete >= 1,
        "the large body went through S3 and was deleted once handled: {usage:?}"
    );
}

/// Sends a body spilled into another deployment's bucket to `q`'s writer queue in `group`:
/// a message whose body cannot be read (S3 has nothing at its key in `q`'s bucket).
async fn send_unreadable(moto: &MotoServer, q: &Queues, group: &str) {
    let other = AwsBackend::connect(&moto.options(&format!("elsewhere-{group}")))
        .await
        .expect("connect the other deployment");
    other
        .queues()
        .send(
            &q.names().writer(),
            &vec![b' '; INLINE_BODY_MAX + 1],
            Some(group),
            Some("unreadable"),
        )
        .await
        .expect("send");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poller_drops_an_undecodable_message_and_leaves_an_unreadable_one() {
    let moto = MotoServer::start().expect("moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let aws = AwsBackend::connect(&moto.options("undecodable"))
        .await
        .expect("connect");
    let host = host_over(&aws, dir.path()).await;
    let _pollers = faaskeeper_host::aws::start_pollers(host.runtime(), aws.queues(), 1, false);
    let q = aws.queues();
    let session = 4343;
    q.ensure(&q.names().session(session), QueueKind::Fifo, None)
        .await
        .expect("session queue");
    send(
        q,
        session,
        0,
        Op::OpenSession {
            timeout_ms: 30_000,
            notify: q.names().notify_url(session),
            fallback: None,
        },
    )
    .await;
    results(q, session, 1).await;
    // Garbage in the session's own group, ahead of its next request: the request is not held
    // up behind it (failed, it would hold the group for a visibility timeout per receive).
    q.send(
        &q.names().writer(),
        b"{\"requests\": 42",
        Some(&session.to_string()),
        Some("garbage"),
    )
    .await
    .expect("send");
    send_unreadable(&moto, q, "777").await;
    send(
        q,
        session,
        1,
        Op::Create {
            path: "/after".into(),
            data: Vec::new(),
            mode: CreateMode::Persistent,
            acl: None,
        },
    )
    .await;
    let got = results(q, session, 1).await;
    assert!(
        matches!(got.as_slice(), [(1, OpResult::Created { .. })]),
        "the request behind the garbage is answered (a jammed group starves the session of \
         its pings too, and it expires): {got:?}"
    );
    assert_eq!(
        q.queue_depth(&q.names().writer())
            .await
            .expect("queue attributes"),
        (0, 1),
        "(visible, in flight): the garbage deleted, the unreadable message to come again"
    );
}

/// The Lambda functions of `deploy/aws` behind the event source mappings done in this
/// process (what `faaskeeper cost --measure --lambda` runs): the writer function takes the
/// writer queue's batches as Lambda's SQS events, including a body spilled to S3, and the
/// mapping deletes what it handled (garbage included) and leaves the message it named as
/// failed (one whose spilled body could not be read); the
/// distributor function, fed the writer's wake-ups through the distributor queue's mapping,
/// applies the writes, whose results arrive in order. Every invocation is counted with its
/// billed duration, and the mappings' own receives and deletes are counted too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lambda_functions_behind_event_sources() {
    use faaskeeper_host::aws::event_source::{DISTRIBUTOR_MAPPING, EventSource, WRITER_MAPPING};
    use faaskeeper_host::aws::lambda::{Function, FunctionOptions, Role};
    use std::sync::Arc;
    let moto = MotoServer::start().expect("moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = moto.options("esm");
    let aws = AwsBackend::connect(&opts).await.expect("connect");
    let options = FunctionOptions {
        memory_mb: 512,
        cache_dir: Some(dir.path().to_path_buf()),
        direct_results: false,
        log_usage: false,
    };
    let distributor = Arc::new(
        Function::start(Role::Distributor, &opts, options.clone())
            .await
            .expect("distributor function"),
    );
    let writer = Function::start(Role::Writer, &opts, options)
        .await
        .expect("writer function");
    let q = aws.queues();
    let names = q.names();
    let writer_source = EventSource::new(q.clone(), names.writer(), WRITER_MAPPING, "us-east-1");
    let _distributor_source = Arc::new(EventSource::new(
        q.clone(),
        names.distributor(),
        DISTRIBUTOR_MAPPING,
        "us-east-1",
    ))
    .spawn(distributor.clone());
    let session = 5151;
    q.ensure(&names.session(session), QueueKind::Fifo, None)
        .await
        .expect("session queue");
    let big = vec![b'y'; 300 * 1024];
    let ops = vec![
        Op::OpenSession {
            timeout_ms: 30_000,
            notify: names.notify_url(session),
            fallback: None,
        },
        // Over SQS's limit: the body is in S3, the event carries its key.
        Op::Create {
            path: "/esm".into(),
            data: big.clone(),
            mode: CreateMode::Persistent,
            acl: None,
        },
        Op::SetData {
            path: "/esm".into(),
            data: b"small".to_vec(),
            version: 0,
        },
    ];
    for (i, op) in ops.into_iter().enumerate() {
        send(q, session, i as i64, op).await;
    }
    // Another client's garbage, in its own message group: dropped.
    q.send(
        &names.writer(),
        b"{\"requests\": 42",
        Some("999"),
        Some("bad"),
    )
    .await
    .expect("send");
    // A body that cannot be read, in a group of its own: named as failed.
    send_unreadable(&moto, q, "998").await;
    let before = aws.usage().queues;
    let mut handed = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while handed < 5 {
        assert!(
            Instant::now() < deadline,
            "only {handed} messages handed over"
        );
        handed += writer_source.poll_once(&writer).await.expect("poll");
    }
    let got = results(q, session, 3).await;
    let seqs: Vec<i64> = got.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![0, 1, 2], "{got:?}");
    match &got[2].1 {
        OpResult::Stat { stat } => assert_eq!(stat.version, 1),
        other => panic!("set_data: {other:?}"),
    }
    let node = aws.user().get("/esm").await.expect("read").expect("node");
    let node: NodeView = serde_json::from_slice(&node).expect("node object");
    assert_eq!(node.data, b"small");
    // The handled messages are gone; the one the function named stays in flight until its
    // visibility timeout (then the queue's redrive policy counts it).
    assert_eq!(
        q.queue_depth(&names.writer()).await.expect("depth"),
        (0, 1),
        "(visible, in flight) on the writer queue"
    );
    let w = writer.usage().queues;
    // Results go out before the distributor's run ends, and the run is counted when it ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let d = loop {
        let d = distributor.usage().queues;
        if d.lambda_invocations >= 1 || Instant::now() > deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        w.lambda_invocations >= 1 && d.lambda_invocations >= 1,
        "{w:?} {d:?}"
    );
    assert!(
        w.lambda_mb_ms >= 512 * w.lambda_invocations
            && d.lambda_mb_ms >= 512 * d.lambda_invocations,
        "each invocation billed at least 1 ms at 512 MB: {w:?} {d:?}"
    );
    assert!(
        w.s3_get >= 1 && w.s3_delete >= 1,
        "the writer read and removed the spilled body: {w:?}"
    );
    let mapping = aws.usage().queues.since(&before);
    assert!(
        // At least a receive and a delete on the writer queue and a receive on the
        // distributor's.
        mapping.sqs_requests > 2,
        "the mappings' receives and deletes are counted: {mapping:?}"
    );
    assert_eq!(
        mapping.s3_get, 0,
        "the mapping hands spilled bodies on unread: {mapping:?}"
    );
}

/// A refused request whose rejection cannot be sent to its session's queue fails its writer
/// message, which comes again (else the client waits for an answer that never comes); one
/// whose session queue is gone is dropped, as nobody waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_that_cannot_be_sent_fails_its_message() {
    use faaskeeper_host::aws::{QueueRecord, WriterQueue};
    let moto = MotoServer::start().expect("moto");
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = moto.options("unsent");
    let aws = AwsBackend::connect(&opts).await.expect("connect");
    let host = host_over(&aws, dir.path()).await;
    let q = aws.queues();
    let (session, gone) = (5151, 5252);
    q.ensure(&q.names().session(session), QueueKind::Fifo, None)
        .await
        .expect("session queue");
    let refusing = Queues::connect(&faaskeeper_backend_aws::AwsOptions {
        endpoint: Some(
            faaskeeper_backend_aws::moto::refusing(moto.endpoint(), "SendMessage")
                .await
                .expect("proxy"),
        ),
        ..opts
    })
    .await
    .expect("queues");
    let writer = WriterQueue::new(host.runtime().clone(), refusing);
    let refused = |session: i64, id: &str| QueueRecord {
        id: id.to_string(),
        body: Ok(serde_json::to_vec(&WriterMessage::Write(WriteBatch {
            requests: vec![Request {
                session,
                seq: 1,
                op: Op::Create {
                    path: "no-slash".into(),
                    data: Vec::new(),
                    mode: CreateMode::Persistent,
                    acl: None,
                },
            }],
        }))
        .expect("encode")),
        group: Some(session.to_string()),
    };
    let failed = writer
        .process(&[refused(session, "m1"), refused(gone, "m2")])
        .await;
    assert_eq!(failed, vec!["m1".to_string()]);
}
