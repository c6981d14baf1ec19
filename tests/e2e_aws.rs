//! The end-to-end cases of `e2e.rs` on the AWS backend: the `system` bucket on DynamoDB and
//! the `user` bucket on S3, both served by a local moto that the shared host starts
//! (`faaskeeper_tests::aws_host_url`; needs `pip install 'moto[server]'`). The same guarantees
//! (2, 5, 6 and 7 of DESIGN.md) must hold whatever the backend.

use faaskeeper_tests::aws_host_url as host_url;

include!("e2e/cases.rs");

/// Billable AWS requests per client operation (issue 5's cost table), counted by the
/// backend's meters on a host of its own so the other tests' traffic does not count. The host's
/// periodic distributor and heartbeat runs are measured idle first and subtracted pro rata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn billable_requests_per_operation() {
    use faaskeeper_backend_aws::{AwsUsage, Usage};
    use std::time::Instant;
    const N: usize = 20;
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = faaskeeper_tests::aws_options(&format!("cost-{}", std::process::id()));
    let (host, aws) = faaskeeper_tests::start_aws_host(&opts, dir.path().to_path_buf()).await;
    let c = Client::connect(&host.url(), Options::default())
        .await
        .expect("session opens");
    let t = Instant::now();
    let u = aws.usage();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = aws.usage().since(&u);
    let idle_secs = t.elapsed().as_secs_f64();
    let flat = |u: &Usage| {
        [
            u.dynamo_read_units,
            u.dynamo_write_units,
            u.dynamo_requests,
            u.s3_get,
            u.s3_put,
            u.s3_list,
            u.s3_delete,
        ]
    };
    let per_op = |d: AwsUsage, secs: f64| -> Vec<f64> {
        let scale = secs / idle_secs;
        let one = |now: &Usage, bg: &Usage| -> Vec<f64> {
            flat(now)
                .iter()
                .zip(flat(bg))
                .map(|(&n, b)| ((n as f64 - b as f64 * scale) / N as f64).max(0.0))
                .collect()
        };
        let mut v = one(&d.system, &idle.system);
        v.extend(one(&d.user, &idle.user));
        v
    };
    let root = unique("cost");
    c.create(&root, b"", CreateMode::Persistent)
        .await
        .expect("root");
    let paths: Vec<String> = (0..N).map(|i| format!("{root}/n{i}")).collect();
    let data = vec![7u8; 100];
    let mut rows = Vec::new();
    macro_rules! measure {
        ($name:expr, |$p:ident| $body:expr) => {{
            let t = Instant::now();
            let u = aws.usage();
            for $p in &paths {
                $body;
            }
            rows.push((
                $name,
                per_op(aws.usage().since(&u), t.elapsed().as_secs_f64()),
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
        "per operation (mean of {N}, idle background subtracted):\n\
         {:<18} {:>8} {:>8} {:>8} | {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6}",
        "op",
        "ddb RRU",
        "ddb WRU",
        "ddb req",
        "sGET",
        "sPUT",
        "sLIST",
        "sDEL",
        "uGET",
        "uPUT",
        "uLIST",
        "uDEL"
    );
    for (name, v) in &rows {
        println!(
            "{name:<18} {:>8.1} {:>8.1} {:>8.1} | {:>6.1} {:>6.1} {:>6.1} {:>6.1} | {:>6.1} {:>6.1} {:>6.1} {:>6.1}",
            v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[10], v[11], v[12], v[13]
        );
    }
    let (_, create) = &rows[0];
    assert!(create[1] >= 1.0, "a create writes to DynamoDB");
    assert!(create[11] >= 1.0, "a create writes its node object to S3");
    let (_, get) = &rows[2];
    assert!(get[10] >= 1.0, "a read is an S3 GET");
    c.close().await.ok();
}
