//! The end-to-end cases of `e2e.rs` on the AWS backend: the `system` bucket on DynamoDB and
//! the `user` bucket on S3, both served by a local moto that the shared host starts
//! (`faaskeeper_tests::aws_host_url`; needs `pip install 'moto[server]'`). The same guarantees
//! (2, 5, 6 and 7 of DESIGN.md) must hold whatever the backend.

use faaskeeper_tests::aws_host_url as host_url;

include!("e2e/cases.rs");

/// The AWS transport: a client with no host in between (writes to the SQS writer queue, reads
/// from S3, results and events on its own SQS queue) against the poller of the shared host,
/// next to a client on the HTTP API of the same deployment. Guarantees 2, 3 and 4 over SQS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_transport_round_trip_and_watch() {
    let opts = faaskeeper_tests::aws_host_options();
    let c = Client::connect_aws(&opts, Options::default())
        .await
        .expect("session over SQS opens");
    let other = client().await;
    let p = unique("sqs");
    let (path, stat) = c
        .create2(&p, b"over sqs", CreateMode::Persistent)
        .await
        .expect("create");
    assert_eq!((path.as_str(), stat.version), (p.as_str(), 0));
    let (data, s) = c.get_data(&p).await.expect("read from S3");
    assert_eq!((data.as_slice(), s), (&b"over sqs"[..], stat));
    // Pipelined: FIFO order through the writer queue's message group.
    let (a, b) = tokio::join!(c.set_data(&p, b"1", 0), c.set_data(&p, b"2", 1));
    assert_eq!(
        (a.expect("first").version, b.expect("second").version),
        (1, 2)
    );
    assert_eq!(
        code(c.create(&p, b"", CreateMode::Persistent).await),
        ZkError::NodeExists
    );
    assert_eq!(
        code(c.create("no-slash", b"", CreateMode::Persistent).await),
        ZkError::BadArguments
    );
    // A watch set over SQS fires for another session's change.
    let (_, _, watch) = c.get_data_w(&p).await.expect("get_data_w");
    other
        .set_data(&p, b"changed", -1)
        .await
        .expect("other client's set");
    let event = tokio::time::timeout(Duration::from_secs(60), watch.wait())
        .await
        .expect("event within a minute")
        .expect("event");
    assert_eq!(
        (event.kind, event.path.as_str()),
        (EventType::NodeDataChanged, p.as_str())
    );
    assert_eq!(c.get_data(&p).await.expect("get").0, b"changed");
    c.delete(&p, -1).await.expect("delete");
    assert_eq!(other.exists(&p).await.expect("exists"), None);
    let usage = c.aws_usage().expect("AWS transport");
    assert!(usage.sqs_requests >= 8 && usage.s3_get >= 2, "{usage:?}");
    c.close().await.expect("close");
    other.close().await.expect("close");
}

/// Billable AWS requests per client operation (issue 5's cost table), counted by the same
/// code as `faaskeeper cost --measure` on a backend and host of its own, so the other tests'
/// traffic does not count. Its idle background traffic is measured first and subtracted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billable_requests_per_operation() {
    let opts = faaskeeper_tests::aws_options(&format!("cost-{}", std::process::id()));
    let table = faaskeeper_host::cost::measure::measure(&opts, &[100, 4096], 10, "e2e_aws")
        .await
        .expect("counted");
    println!("{}", serde_json::to_string_pretty(&table).expect("json"));
    let [small, large] = [&table.sizes[0], &table.sizes[1]];
    for row in [small, large] {
        assert!(
            row.create.dynamo_write_units >= 1.0,
            "a create writes to DynamoDB"
        );
        assert!(
            row.create.s3_put >= 1.0,
            "a create writes its node object to S3"
        );
        assert!(row.set_data.s3_put >= 1.0, "a set rewrites the node object");
        assert!(row.get_data.s3_get >= 1.0, "a read is an S3 GET");
        assert!(
            row.get_data.dynamo_write_units < 0.5,
            "a read writes nothing: {:?}",
            row.get_data
        );
    }
    assert!(
        large.set_data.dynamo_write_units >= small.set_data.dynamo_write_units + 3.0,
        "4 KiB of data costs DynamoDB write units by the KiB"
    );
}

/// SQS requests per client operation on the AWS transport (issue 5's cost table): the
/// client's own (send, receive, delete on its session queue) and the service side's (the
/// poller's receives and deletes, the deliveries), counted by the meters on a host of its
/// own. Idle traffic (long polls, pings) is measured first and subtracted pro rata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqs_requests_per_operation() {
    use faaskeeper_backend_aws::Usage;
    use std::time::Instant;
    const N: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = faaskeeper_tests::aws_options(&format!("sqs-cost-{}", std::process::id()));
    let (_host, aws) = faaskeeper_tests::start_aws_host(&opts, dir.path().to_path_buf()).await;
    let c = Client::connect_aws(&opts, Options::default())
        .await
        .expect("session opens");
    let both = |c: &Client| -> (Usage, Usage) { (c.aws_usage().expect("aws"), aws.usage().queues) };
    let t = Instant::now();
    let (c0, s0) = both(&c);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (c1, s1) = both(&c);
    let idle = (c1.since(&c0), s1.since(&s0), t.elapsed().as_secs_f64());
    let root = unique("sqscost");
    c.create(&root, b"", CreateMode::Persistent)
        .await
        .expect("root");
    let paths: Vec<String> = (0..N).map(|i| format!("{root}/n{i}")).collect();
    let data = vec![7u8; 100];
    let mut rows: Vec<(&str, [f64; 4])> = Vec::new();
    macro_rules! measure {
        ($name:expr, |$p:ident| $body:expr) => {{
            let t = Instant::now();
            let (c0, s0) = both(&c);
            for $p in &paths {
                $body;
            }
            let (c1, s1) = both(&c);
            let scale = t.elapsed().as_secs_f64() / idle.2;
            let per = |now: u64, bg: u64| ((now as f64 - bg as f64 * scale) / N as f64).max(0.0);
            let (cu, su) = (c1.since(&c0), s1.since(&s0));
            rows.push((
                $name,
                [
                    per(cu.sqs_requests, idle.0.sqs_requests),
                    per(cu.sqs_billed, idle.0.sqs_billed),
                    per(su.sqs_requests, idle.1.sqs_requests),
                    per(su.sqs_billed, idle.1.sqs_billed),
                ],
            ));
        }};
    }
    measure!("create (100 B)", |p| c
        .create(p, &data, CreateMode::Persistent)
        .await
        .expect("create"));
    measure!("set_data (100 B)", |p| c
        .set_data(p, &data, -1)
        .await
        .expect("set"));
    measure!("get_data", |p| c.get_data(p).await.expect("get"));
    measure!("delete", |p| c.delete(p, -1).await.expect("delete"));
    println!(
        "SQS requests per operation (mean of {N}, idle subtracted):\n{:<18} {:>10} {:>10} {:>10} {:>10}",
        "op", "client", "client$", "service", "service$"
    );
    for (name, v) in &rows {
        println!(
            "{name:<18} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
            v[0], v[1], v[2], v[3]
        );
    }
    let (_, create) = &rows[0];
    assert!(create[0] >= 1.0, "a create sends at least one message");
    assert!(create[2] >= 1.0, "the service receives it");
    let (_, get) = &rows[2];
    assert!(get[0] < 0.5, "a read needs no queue");
    c.close().await.ok();
}
