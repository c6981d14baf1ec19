//! The end-to-end cases of `e2e.rs` on the AWS backend: the `system` bucket on DynamoDB and
//! the `user` bucket on S3, both served by a local moto that the shared host starts
//! (`faaskeeper_tests::aws_host_url`; needs `pip install 'moto[server]'`). The same guarantees
//! (2, 5, 6 and 7 of DESIGN.md) must hold whatever the backend.

use faaskeeper_tests::aws_host_url as host_url;

include!("e2e/cases.rs");

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
