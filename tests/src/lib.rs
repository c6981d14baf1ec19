//! Shared set-up of the end-to-end suites: one real host (embedded store in a temp dir, the
//! real `.wasm` stages) per test binary, kept on its own runtime thread so that every
//! `#[tokio::test]` can talk to it.
#![allow(clippy::unwrap_used)]

use std::sync::OnceLock;

pub mod linearizability;
pub mod runner;
pub use faaskeeper_bench::zookeeper;

struct Shared {
    url: String,
    zk: String,
    _dir: tempfile::TempDir,
}

static HOST: OnceLock<Shared> = OnceLock::new();

/// Run `start` on a runtime thread of its own that lives as long as the test process (so
/// every `#[tokio::test]` can talk to the host it starts), and return what it reports once
/// the host is up. The host is never stopped: it serves until the process exits.
fn on_own_runtime<T, F, Fut>(start: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = (faaskeeper_host::RunningHost, T)>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let (host, out) = start().await;
            tx.send(out).expect("report the started host");
            std::future::pending::<()>().await;
            drop(host);
        });
    });
    rx.recv().expect("host started")
}

fn shared() -> &'static Shared {
    HOST.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let (url, zk) = on_own_runtime(move || async move {
            let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
                data_dir,
                listen: "127.0.0.1:0".parse().expect("addr"),
                zk_listen: Some("127.0.0.1:0".parse().expect("addr")),
                ..Default::default()
            })
            .await
            .expect("host starts");
            let zk = host.zk_addr().expect("gateway on").to_string();
            let url = host.url();
            (host, (url, zk))
        });
        Shared { url, zk, _dir: dir }
    })
}

/// Base URL of the shared host's HTTP API, starting it on first use.
pub fn host_url() -> String {
    shared().url.clone()
}

/// `host:port` of the shared host's ZooKeeper-protocol gateway.
pub fn zk_addr() -> String {
    shared().zk.clone()
}

struct AwsShared {
    url: String,
    opts: faaskeeper_backend_aws::AwsOptions,
    backend: std::sync::Arc<faaskeeper_backend_aws::AwsBackend>,
    moto: faaskeeper_backend_aws::moto::MotoServer,
    _dir: tempfile::TempDir,
}

static AWS_HOST: OnceLock<AwsShared> = OnceLock::new();
static AWS_DYNAMODB_HOST: OnceLock<AwsShared> = OnceLock::new();

/// The shared AWS-backed host whose user bucket is on `user_storage`, started on first use.
fn aws_shared_on(
    cell: &'static OnceLock<AwsShared>,
    user_storage: faaskeeper_backend_aws::UserStorage,
) -> &'static AwsShared {
    cell.get_or_init(|| {
        // Never stopped by drop (a static): moto exits when this process does, as its stdin
        // closes.
        let moto = faaskeeper_backend_aws::moto::MotoServer::start()
            .expect("moto starts (pip install 'moto[server]')");
        let opts = faaskeeper_backend_aws::AwsOptions {
            user_storage,
            ..moto.options(&format!("e2e-{}", std::process::id()))
        };
        let shared_opts = opts.clone();
        let dir = tempfile::tempdir().expect("temp dir");
        let data_dir = dir.path().to_path_buf();
        let (url, backend) = on_own_runtime(move || async move {
            let (host, backend) = start_aws_host(&opts, data_dir).await;
            let url = host.url();
            (host, (url, backend))
        });
        AwsShared {
            url,
            opts: shared_opts,
            backend,
            moto,
            _dir: dir,
        }
    })
}

fn aws_shared() -> &'static AwsShared {
    aws_shared_on(&AWS_HOST, faaskeeper_backend_aws::UserStorage::S3)
}

fn aws_dynamodb_shared() -> &'static AwsShared {
    aws_shared_on(
        &AWS_DYNAMODB_HOST,
        faaskeeper_backend_aws::UserStorage::DynamoDb,
    )
}

/// Base URL of the AWS-backed shared host whose user bucket is a DynamoDB table.
pub fn aws_dynamodb_host_url() -> String {
    aws_dynamodb_shared().url.clone()
}

/// Options of that host's deployment (for clients on the AWS transport).
pub fn aws_dynamodb_host_options() -> faaskeeper_backend_aws::AwsOptions {
    aws_dynamodb_shared().opts.clone()
}

/// The backend of that host (to look at what its stores hold).
pub fn aws_dynamodb_backend() -> std::sync::Arc<faaskeeper_backend_aws::AwsBackend> {
    aws_dynamodb_shared().backend.clone()
}

/// Start a host whose `system` bucket is DynamoDB and `user` bucket S3 or DynamoDB, as `opts` say, and
/// which also consumes the SQS writer queue (for clients on the AWS transport).
pub async fn start_aws_host(
    opts: &faaskeeper_backend_aws::AwsOptions,
    data_dir: std::path::PathBuf,
) -> (
    faaskeeper_host::RunningHost,
    std::sync::Arc<faaskeeper_backend_aws::AwsBackend>,
) {
    use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
    let backend = std::sync::Arc::new(
        faaskeeper_backend_aws::AwsBackend::connect(opts)
            .await
            .expect("AWS backend on moto"),
    );
    let host = faaskeeper_host::start(faaskeeper_host::ServeOptions {
        data_dir,
        listen: "127.0.0.1:0".parse().expect("addr"),
        zk_listen: None,
        stores: Some(backend.store_manager(SYSTEM_BUCKET, USER_BUCKET)),
        ..Default::default()
    })
    .await
    .expect("host starts on AWS");
    // The pollers run as long as the runtime that started them.
    drop(faaskeeper_host::aws::start_pollers(
        host.runtime(),
        backend.queues(),
        2,
        true,
    ));
    (host, backend)
}

/// Base URL of the AWS-backed shared host (DynamoDB + S3 on a local moto), starting moto and
/// the host on first use.
pub fn aws_host_url() -> String {
    aws_shared().url.clone()
}

/// What the AWS-backed shared host's buckets have counted so far.
pub fn aws_usage() -> faaskeeper_backend_aws::AwsUsage {
    aws_shared().backend.usage()
}

/// Check that `backend` keeps the node at `path` once, as its user object, with no copy in
/// the system bucket (the layout where the user bucket bills every write).
pub async fn assert_node_kept_once(backend: &faaskeeper_backend_aws::AwsBackend, path: &str) {
    use faaskeeper_core::keys::{self, SYSTEM_BUCKET, USER_BUCKET};
    let stores = backend.store_manager(SYSTEM_BUCKET, USER_BUCKET);
    let system = stores.open(SYSTEM_BUCKET).expect("system");
    let user = stores.open(USER_BUCKET).expect("user");
    assert!(
        user.get(&keys::user_node(path))
            .await
            .expect("read")
            .is_some(),
        "{path} has its user object"
    );
    assert_eq!(
        system.get(&keys::node(path)).await.expect("read"),
        None,
        "{path} has no system record"
    );
}

/// The backend of the AWS-backed shared host (to look at what its stores hold).
pub fn aws_backend() -> std::sync::Arc<faaskeeper_backend_aws::AwsBackend> {
    aws_shared().backend.clone()
}

/// Options of the AWS-backed shared host's own deployment (for clients on the AWS transport).
pub fn aws_host_options() -> faaskeeper_backend_aws::AwsOptions {
    aws_shared().opts.clone()
}

/// Options for another backend on the shared moto (`prefix` names its table and bucket).
pub fn aws_options(prefix: &str) -> faaskeeper_backend_aws::AwsOptions {
    aws_shared().moto.options(prefix)
}

/// A fresh unique path prefix so tests sharing the host do not collide.
pub fn unique(name: &str) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("/{name}-{}-{n}", std::process::id())
}

/// A data watch that `watcher` leaves on `path` fires for `other`'s set, within a minute
/// (the AWS transport's events come through its session queue).
pub async fn watch_fires_for_another_session(
    watcher: &faaskeeper_client::Client,
    other: &faaskeeper_client::Client,
    path: &str,
) {
    let (_, _, watch) = watcher.get_data_w(path).await.expect("get_data_w");
    other
        .set_data(path, b"changed", -1)
        .await
        .expect("other client's set");
    let event = tokio::time::timeout(std::time::Duration::from_secs(60), watch.wait())
        .await
        .expect("event within a minute")
        .expect("event");
    assert_eq!(
        (event.kind, event.path.as_str()),
        (faaskeeper_client::EventType::NodeDataChanged, path)
    );
}
