//! The end-to-end cases of `e2e.rs` on the AWS backend with the `user` bucket on DynamoDB
//! (`--user-storage dynamodb`: one item per node in `<prefix>-nodes`, S3 only for node
//! objects over `USER_INLINE_MAX`), and a client on the AWS transport reading that table
//! directly. Needs `pip install 'moto[server]'`.

use faaskeeper_tests::aws_dynamodb_host_url as host_url;

include!("e2e/cases.rs");

/// A client on the AWS transport reads small nodes with one DynamoDB `GetItem` and no S3
/// request, and nodes too large for an item from S3 through the item's pointer; both read
/// back byte for byte, after sets that grow and shrink a node across the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_transport_reads_nodes_from_dynamodb() {
    use faaskeeper_backend_aws::USER_INLINE_MAX;
    let opts = faaskeeper_tests::aws_dynamodb_host_options();
    let c = Client::connect_aws(&opts, Options::default())
        .await
        .expect("session over SQS opens");
    let other = client().await;
    let p = unique("ddb");
    c.create(&p, b"small", CreateMode::Persistent)
        .await
        .expect("create");
    // The node is kept once, as its item in the user table: no copy in the system table.
    faaskeeper_tests::assert_node_kept_once(&faaskeeper_tests::aws_dynamodb_backend(), &p).await;
    let before = c.aws_usage().expect("AWS transport");
    let (data, stat) = c.get_data(&p).await.expect("read from DynamoDB");
    let read = c.aws_usage().expect("AWS transport").since(&before);
    assert_eq!((data.as_slice(), stat.version), (&b"small"[..], 0));
    assert_eq!(
        (read.dynamo_read_units, read.s3_get),
        (1, 0),
        "a small node is one strongly consistent read unit, no S3: {read:?}"
    );
    // Across the limit and back: the item points to S3, then holds the data again.
    let large: Vec<u8> = (0..USER_INLINE_MAX + 4096)
        .map(|i| (i % 251) as u8)
        .collect();
    c.set_data(&p, &large, 0).await.expect("large set");
    let before = c.aws_usage().expect("AWS transport");
    let (data, stat) = c.get_data(&p).await.expect("large read");
    let read = c.aws_usage().expect("AWS transport").since(&before);
    assert_eq!((data.len(), stat.version), (large.len(), 1));
    assert!(data == large, "the large node reads back byte for byte");
    assert_eq!(read.s3_get, 1, "a large node is read from S3: {read:?}");
    assert_eq!(
        other.get_data(&p).await.expect("read through the host").0,
        large,
        "the host reads the same object"
    );
    c.set_data(&p, b"small again", 1).await.expect("shrink");
    assert_eq!(c.get_data(&p).await.expect("read").0, b"small again");
    // A watch set over SQS fires for another session's change, and a deleted node is gone
    // for both readers.
    faaskeeper_tests::watch_fires_for_another_session(&c, &other, &p).await;
    c.delete(&p, -1).await.expect("delete");
    assert_eq!(code(c.get_data(&p).await), ZkError::NoNode);
    assert_eq!(other.exists(&p).await.expect("exists"), None);
    c.close().await.expect("close");
    other.close().await.expect("close");
}
