//! The SQS queues against moto: a FIFO group comes out in the order it went in (what keeps a
//! session's requests in issue order, Guarantee 2, and its events in zxid order, Guarantee 4);
//! bodies over SQS's limit travel through S3 and their objects go with the message (not with
//! a message whose delete failed, nor does one that cannot be read fail the others); the meter
//! counts SQS requests in 64 KiB chunks.
use faaskeeper_backend_aws::moto::MotoServer;
use faaskeeper_backend_aws::{
    AwsBackend, INLINE_BODY_MAX, QueueError, QueueKind, Received, SPILL_PREFIX,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_groups_keep_order_and_large_bodies_spill_to_s3() {
    let moto = MotoServer::start().expect("moto");
    let aws = AwsBackend::connect(&moto.options("sqs-test"))
        .await
        .expect("connect");
    let q = aws.queues();
    let writer = q.names().writer();
    // connect created the stage queues
    q.url(&q.names().distributor())
        .await
        .expect("distributor queue");
    q.url(&q.names().writer_dlq())
        .await
        .expect("dead-letter queue");
    let before = q.meter().snapshot();
    for i in 0..25 {
        let group = if i % 2 == 0 { "a" } else { "b" };
        q.send(
            &writer,
            format!("{group}{i}").as_bytes(),
            Some(group),
            Some(&format!("m{i}")),
        )
        .await
        .expect("send");
    }
    // The same dedup id within five minutes is dropped.
    q.send(&writer, b"a0", Some("a"), Some("m0"))
        .await
        .expect("send");
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 25 {
        let got = q.receive(&writer, 10, 1).await.expect("receive");
        assert!(!got.is_empty(), "messages left after {seen:?}");
        for r in &got {
            let body = String::from_utf8(r.body.clone().expect("a body")).expect("text");
            assert_eq!(r.group.as_deref(), Some(&body[..1]));
            seen.push(body);
        }
        q.delete(&writer, &got).await.expect("delete");
    }
    let order =
        |g: &str| -> Vec<String> { seen.iter().filter(|b| b.starts_with(g)).cloned().collect() };
    let want = |g: &str, first: usize| -> Vec<String> {
        (first..25).step_by(2).map(|i| format!("{g}{i}")).collect()
    };
    assert_eq!(order("a"), want("a", 0), "group a in order, no duplicate");
    assert_eq!(order("b"), want("b", 1), "group b in order");
    assert!(q.receive(&writer, 10, 0).await.expect("receive").is_empty());
    let u = q.meter().snapshot().since(&before);
    assert_eq!(
        u.sqs_billed, u.sqs_requests,
        "small bodies: one chunk per call"
    );
    assert!(
        u.sqs_requests >= 26 + 3 + 3,
        "26 sends, receives and deletes counted"
    );

    // A body over the inline limit goes to S3; the message carries its key.
    let session_queue = q.names().session(77);
    q.ensure(&session_queue, QueueKind::Fifo, None)
        .await
        .expect("session queue");
    let big: Vec<u8> = (0..INLINE_BODY_MAX + 10_000)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let before = q.meter().snapshot();
    q.send(&session_queue, &big, Some("77"), None)
        .await
        .expect("send big");
    q.send(&session_queue, b"small", Some("77"), None)
        .await
        .expect("send small");
    let got = q.receive(&session_queue, 10, 1).await.expect("receive");
    assert_eq!(got.len(), 2);
    assert_eq!(
        got[0].body.as_deref().ok(),
        Some(&big[..]),
        "the spilled body is read back"
    );
    assert_eq!(got[1].body.as_deref().ok(), Some(&b"small"[..]));
    let key = got[0].spill_key.clone().expect("spilled");
    assert!(key.starts_with(SPILL_PREFIX));
    let u = q.meter().snapshot().since(&before);
    assert_eq!((u.s3_put, u.s3_get), (1, 1));
    q.delete(&session_queue, &got).await.expect("delete");
    assert!(
        matches!(q.read_spilled(&key).await, Err(QueueError::Unavailable(_))),
        "the spilled object goes with its message"
    );

    // A deleted queue is reported as such.
    q.delete_queue(&session_queue).await.expect("delete queue");
    assert!(matches!(
        q.send(&session_queue, b"x", Some("77"), None).await,
        Err(QueueError::NoSuchQueue(_))
    ));
    q.delete_queue(&session_queue)
        .await
        .expect("deleting twice is fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_delete_failed_keeps_its_spilled_body() {
    let moto = MotoServer::start().expect("moto");
    let aws = AwsBackend::connect(&moto.options("sqs-keep"))
        .await
        .expect("connect");
    let q = aws.queues();
    let queue = q.names().session(5);
    q.ensure(&queue, QueueKind::Fifo, None)
        .await
        .expect("session queue");
    let big = |c: u8| vec![c; INLINE_BODY_MAX + 1];
    for c in [b'a', b'b'] {
        q.send(&queue, &big(c), Some("5"), None)
            .await
            .expect("send");
    }
    let got = q.receive(&queue, 10, 1).await.expect("receive");
    assert_eq!(got.len(), 2);
    let keys: Vec<String> = got
        .iter()
        .map(|r| r.spill_key.clone().expect("spilled"))
        .collect();
    // SQS refuses the second delete, as it does once a receipt handle has expired: that
    // message comes again.
    let expired = Received {
        receipt_handle: "expired".into(),
        ..got[1].clone()
    };
    q.delete(&queue, &[got[0].clone(), expired])
        .await
        .expect("delete");
    assert!(
        matches!(
            q.read_spilled(&keys[0]).await,
            Err(QueueError::Unavailable(_))
        ),
        "the deleted message's body goes with it"
    );
    assert_eq!(
        q.read_spilled(&keys[1]).await.expect("the body is kept"),
        big(b'b')
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_spilled_body_fails_only_its_message() {
    let moto = MotoServer::start().expect("moto");
    let aws = AwsBackend::connect(&moto.options("sqs-unreadable"))
        .await
        .expect("connect");
    // Another deployment spills into its own bucket: this one finds no body at the key.
    let other = AwsBackend::connect(&moto.options("sqs-elsewhere"))
        .await
        .expect("connect");
    let q = aws.queues();
    let queue = q.names().session(6);
    q.ensure(&queue, QueueKind::Fifo, None)
        .await
        .expect("session queue");
    let big = vec![b'b'; INLINE_BODY_MAX + 1];
    q.send(&queue, b"before", Some("6"), None)
        .await
        .expect("send");
    other
        .queues()
        .send(&queue, &big, Some("6"), None)
        .await
        .expect("send spilled elsewhere");
    q.send(&queue, &big, Some("6"), None)
        .await
        .expect("send spilled");
    let got = q.receive(&queue, 10, 1).await.expect("receive");
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].body.as_deref().ok(), Some(&b"before"[..]));
    assert!(
        matches!(got[1].body, Err(QueueError::Unavailable(_))) && got[1].spill_key.is_some(),
        "the unreadable body is its message's error"
    );
    assert_eq!(got[2].body.as_deref().ok(), Some(&big[..]));
}
