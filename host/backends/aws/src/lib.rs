//! # faaskeeper-backend-aws
//!
//! The AWS backend of the bundled host (`faaskeeper serve --backend aws`): the `system` bucket
//! on one DynamoDB table ([`DynamoSystemStore`]), the `user` bucket, one entry per node so that
//! clients read nodes directly, on one of two stores ([`UserStorage`]): an S3 bucket
//! ([`S3UserStore`], one object per node), or a second DynamoDB table whose items hold nodes
//! up to [`USER_INLINE_MAX`] bytes and point to S3 objects for larger ones (the same
//! [`DynamoSystemStore`] type; FaaSKeeper offers the same two choices).
//! Both implement [`faaskeeper_storage::Store`] and pass its conformance suite against moto.
//! Every request is counted per bucket in a [`Meter`] (DynamoDB request units by item size,
//! S3 requests by kind) for the cost model. `docs/aws.md` describes the mapping.
//!
//! This is the only crate of the workspace that depends on the AWS SDK.
//!
//! ## Example
//!
//! ```no_run
//! use faaskeeper_backend_aws::{AwsBackend, AwsOptions, UserStorage};
//! # async fn run() -> Result<(), faaskeeper_storage::StoreError> {
//! let aws = AwsBackend::connect(&AwsOptions {
//!     endpoint: Some("http://127.0.0.1:5000".into()), // moto; None: the real AWS endpoints
//!     region: "us-east-1".into(),
//!     prefix: "faaskeeper".into(), // table faaskeeper-system, bucket faaskeeper-user
//!     credentials: None,           // the default AWS credential chain
//!     user_storage: UserStorage::S3, // nodes as S3 objects; DynamoDb: table faaskeeper-nodes
//! })
//! .await?;
//! let system = aws.system();
//! system.set("k", b"v".to_vec()).await?;
//! assert_eq!(system.get("k").await?, Some(b"v".to_vec()));
//! println!("{:?}", aws.usage().system);
//! # Ok(()) }
//! ```
#![deny(missing_docs)]

mod dynamo;
mod meter;
pub mod moto;
mod s3;
mod sqs;

pub use dynamo::{DynamoSystemStore, INLINE_MAX};

/// Largest node object kept inside an item of the user-node table; larger ones go to S3.
/// Up to here DynamoDB is the cheaper store for both writes and reads: a write of 8 KiB is 8
/// write units ($5.00 per million at the prices of `docs/cost.md`) against an S3 PUT plus
/// the pointer item ($5.63), and a strongly consistent read of 8 KiB is 2 read units ($0.25)
/// against a pointer read plus an S3 GET ($0.53).
pub const USER_INLINE_MAX: usize = 8 * 1024;
pub use meter::{Meter, Usage};
pub use s3::{OBJECT_PREFIX, S3UserStore};
pub use sqs::{
    INLINE_BODY_MAX, MAX_RECEIVES, NOTIFY_AUTHORITY, QueueError, QueueKind, QueueNames, Queues,
    Received, SPILL_ATTRIBUTE, SPILL_PREFIX,
};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use faaskeeper_storage::{Store, StoreError, StoreManager};
use std::sync::Arc;
use std::time::Duration;

/// Where and how to reach AWS (or moto).
#[derive(Debug, Clone)]
pub struct AwsOptions {
    /// Endpoint override for every service (e.g. moto on `http://127.0.0.1:5000`); `None`: AWS.
    pub endpoint: Option<String>,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Names the resources: table `<prefix>-system`, bucket `<prefix>-user`. Lowercase
    /// letters, digits and `-` (S3's bucket-name rules).
    pub prefix: String,
    /// Fixed credentials (tests against moto); `None`: the default AWS credential chain
    /// (environment, profile, web identity, container, instance metadata).
    pub credentials: Option<StaticCredentials>,
    /// Where the `user` bucket (the node objects clients read) lives.
    pub user_storage: UserStorage,
}

impl Default for AwsOptions {
    fn default() -> Self {
        AwsOptions {
            endpoint: None,
            region: "us-east-1".into(),
            prefix: "faaskeeper".into(),
            credentials: None,
            user_storage: UserStorage::default(),
        }
    }
}

/// The store of the `user` bucket. The stages do not know which one it is; clients do,
/// because they read it directly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UserStorage {
    /// One S3 object per node in `<prefix>-user` (every write one PUT, every read one GET).
    #[default]
    S3,
    /// One item per node in the DynamoDB table `<prefix>-nodes`; node objects over
    /// [`USER_INLINE_MAX`] bytes go to S3 (`<prefix>-user`, under `blob/`) with the item
    /// pointing to them.
    DynamoDb,
}

impl std::str::FromStr for UserStorage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "s3" => Ok(UserStorage::S3),
            "dynamodb" => Ok(UserStorage::DynamoDb),
            other => Err(format!("user storage {other:?}: use s3 or dynamodb")),
        }
    }
}

impl std::fmt::Display for UserStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UserStorage::S3 => "s3",
            UserStorage::DynamoDb => "dynamodb",
        })
    }
}

/// An access key pair given directly instead of through the credential chain.
#[derive(Clone)]
pub struct StaticCredentials {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentials")
            .field("access_key_id", &self.access_key_id)
            .finish_non_exhaustive()
    }
}

impl AwsOptions {
    /// The DynamoDB table of the `system` bucket.
    pub fn table_name(&self) -> String {
        format!("{}-system", self.prefix)
    }

    /// The S3 bucket of the `user` bucket (and of `system` values too large for DynamoDB).
    pub fn bucket_name(&self) -> String {
        format!("{}-user", self.prefix)
    }

    /// The DynamoDB table of the `user` bucket under [`UserStorage::DynamoDb`].
    pub fn nodes_table_name(&self) -> String {
        format!("{}-nodes", self.prefix)
    }
}

/// Both buckets on AWS and the queues, with their meters.
pub struct AwsBackend {
    system: Arc<DynamoSystemStore>,
    user: UserStore,
    queues: Queues,
}

/// The `user` bucket's store, as [`UserStorage`] chose it.
#[derive(Clone)]
pub(crate) enum UserStore {
    S3(Arc<S3UserStore>),
    DynamoDb(Arc<DynamoSystemStore>),
}

impl UserStore {
    fn store(&self) -> Arc<dyn Store> {
        match self {
            UserStore::S3(s) => s.clone(),
            UserStore::DynamoDb(d) => d.clone(),
        }
    }

    fn meter(&self) -> Arc<Meter> {
        match self {
            UserStore::S3(s) => s.meter.clone(),
            UserStore::DynamoDb(d) => d.meter.clone(),
        }
    }

    /// The object of the node at `path`, as a client reads it (the user bucket's key of a
    /// node is its path: `faaskeeper_core::keys::user_node`).
    pub(crate) async fn read_node(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store().get(path).await
    }
}

/// A DynamoDB table with values over `inline_max` in S3 under `blob/`, counted by `meter`.
fn dynamo_store(
    sdk: &aws_config::SdkConfig,
    opts: &AwsOptions,
    table: String,
    inline_max: usize,
    meter: Arc<Meter>,
) -> DynamoSystemStore {
    DynamoSystemStore {
        ddb: aws_sdk_dynamodb::Client::new(sdk),
        s3: s3_client(sdk, opts),
        table,
        bucket: opts.bucket_name(),
        meter,
        inline_max,
        sizes: Default::default(),
    }
}

/// The `user` bucket's store `opts` name, counted by `meter`; creates nothing.
fn user_store(sdk: &aws_config::SdkConfig, opts: &AwsOptions, meter: Arc<Meter>) -> UserStore {
    match opts.user_storage {
        UserStorage::S3 => UserStore::S3(Arc::new(S3UserStore {
            s3: s3_client(sdk, opts),
            bucket: opts.bucket_name(),
            meter,
        })),
        UserStorage::DynamoDb => UserStore::DynamoDb(Arc::new(dynamo_store(
            sdk,
            opts,
            opts.nodes_table_name(),
            USER_INLINE_MAX,
            meter,
        ))),
    }
}

/// What both buckets have counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AwsUsage {
    /// The `system` bucket: DynamoDB, and S3 for values too large for an item.
    pub system: Usage,
    /// The `user` bucket: S3.
    pub user: Usage,
    /// The queues: SQS, S3 for spilled bodies, and Lambda invocations counted by the
    /// Lambda handler.
    pub queues: Usage,
}

impl AwsUsage {
    /// What was counted between `earlier` and `self`.
    pub fn since(&self, earlier: &AwsUsage) -> AwsUsage {
        AwsUsage {
            system: self.system.since(&earlier.system),
            user: self.user.since(&earlier.user),
            queues: self.queues.since(&earlier.queues),
        }
    }

    /// Both counted together (e.g. several function instances' backends).
    pub fn plus(&self, other: &AwsUsage) -> AwsUsage {
        AwsUsage {
            system: self.system.plus(&other.system),
            user: self.user.plus(&other.user),
            queues: self.queues.plus(&other.queues),
        }
    }
}

pub(crate) fn unavailable<E: std::error::Error>(e: E) -> StoreError {
    StoreError::Unavailable(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
}

/// Exponential backoff for retrying unprocessed batch items: 10 ms doubling up to ~1 s.
pub(crate) async fn backoff(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(10u64 << attempt.min(7))).await;
}

/// The AWS SDK configuration `opts` describe (region, endpoint, credentials; TLS through
/// rustls + ring).
async fn sdk_config(opts: &AwsOptions) -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(opts.region.clone()))
        .http_client(http);
    if let Some(endpoint) = &opts.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(c) = &opts.credentials {
        loader = loader.credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            c.access_key_id.clone(),
            c.secret_access_key.clone(),
            None,
            None,
            "faaskeeper-static",
        ));
    }
    loader.load().await
}

fn s3_client(sdk: &aws_config::SdkConfig, opts: &AwsOptions) -> aws_sdk_s3::Client {
    let s3_config = aws_sdk_s3::config::Builder::from(sdk)
        // moto and other local endpoints serve buckets by path, not by host name.
        .force_path_style(opts.endpoint.is_some())
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

fn check_prefix(prefix: &str) -> Result<(), StoreError> {
    let valid = prefix.len() >= 3
        && prefix.len() <= 50
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !prefix.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidValue(format!(
            "AWS resource prefix {prefix:?}: use 3 to 50 lowercase letters, digits or '-'"
        )))
    }
}

impl Queues {
    /// The queues of the deployment `opts` name and its `user` bucket (what a client needs:
    /// the writer queue, its own session queue, S3 for spilled bodies, and the node store it
    /// reads directly). Creates nothing. One meter counts all of it.
    pub async fn connect(opts: &AwsOptions) -> Result<Queues, StoreError> {
        check_prefix(&opts.prefix)?;
        let sdk = sdk_config(opts).await;
        let meter = Arc::new(Meter::default());
        Ok(Queues {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            s3: s3_client(&sdk, opts),
            bucket: opts.bucket_name(),
            names: QueueNames::new(&opts.prefix),
            nodes: Some(user_store(&sdk, opts, meter.clone())),
            meter,
            urls: Default::default(),
        })
    }

    /// Read the object of the node at `path` from the user bucket (a client's direct read);
    /// `None` if there is none.
    pub async fn read_node(&self, path: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match &self.nodes {
            Some(nodes) => nodes.read_node(path).await,
            None => Err(StoreError::Unavailable(
                "these queues were opened without the user bucket".into(),
            )),
        }
    }
}

impl AwsBackend {
    /// Connect, and create the table, the bucket and the stage queues if they do not exist
    /// yet.
    pub async fn connect(opts: &AwsOptions) -> Result<AwsBackend, StoreError> {
        let backend = AwsBackend::open(opts).await?;
        ensure_table(&backend.system.ddb, &backend.system.table).await?;
        let s3 = backend.queues.s3.clone();
        ensure_bucket(&s3, &opts.bucket_name(), &opts.region).await?;
        if let UserStore::DynamoDb(nodes) = &backend.user {
            ensure_table(&nodes.ddb, &nodes.table).await?;
        }
        backend
            .queues
            .ensure_stage_queues()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(backend)
    }

    /// Connect to resources that already exist (made by the deployment template), creating
    /// nothing: what a Lambda function does, whose role may not create tables or queues.
    pub async fn open(opts: &AwsOptions) -> Result<AwsBackend, StoreError> {
        check_prefix(&opts.prefix)?;
        let sdk = sdk_config(opts).await;
        let system = Arc::new(dynamo_store(
            &sdk,
            opts,
            opts.table_name(),
            INLINE_MAX,
            Arc::new(Meter::default()),
        ));
        let queues = Queues {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            s3: s3_client(&sdk, opts),
            bucket: opts.bucket_name(),
            names: QueueNames::new(&opts.prefix),
            nodes: None,
            meter: Arc::new(Meter::default()),
            urls: Default::default(),
        };
        let user = user_store(&sdk, opts, Arc::new(Meter::default()));
        Ok(AwsBackend {
            system,
            user,
            queues,
        })
    }

    /// The stage queues (and any session's delivery queue).
    pub fn queues(&self) -> &Queues {
        &self.queues
    }

    /// The `system` bucket.
    pub fn system(&self) -> Arc<dyn Store> {
        self.system.clone()
    }

    /// The `user` bucket.
    pub fn user(&self) -> Arc<dyn Store> {
        self.user.store()
    }

    /// The two buckets under the names the stages open (`system`, `user`).
    pub fn store_manager(&self, system_name: &str, user_name: &str) -> StoreManager {
        StoreManager::new()
            .with_bucket(system_name, self.system())
            .with_bucket(user_name, self.user())
    }

    /// What each bucket has counted since connecting.
    pub fn usage(&self) -> AwsUsage {
        AwsUsage {
            system: self.system.meter.snapshot(),
            user: self.user.meter().snapshot(),
            queues: self.queues.meter.snapshot(),
        }
    }

    /// The live counters of the `system` bucket.
    pub fn system_meter(&self) -> Arc<Meter> {
        self.system.meter.clone()
    }

    /// The live counters of the `user` bucket.
    pub fn user_meter(&self) -> Arc<Meter> {
        self.user.meter()
    }
}

async fn ensure_table(ddb: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), StoreError> {
    let created = ddb
        .create_table()
        .table_name(table)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(dynamo::KEY)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .map_err(unavailable)?,
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name(dynamo::KEY)
                .key_type(KeyType::Hash)
                .build()
                .map_err(unavailable)?,
        )
        .billing_mode(BillingMode::PayPerRequest)
        .send()
        .await;
    match created {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(unavailable(e)),
    }
    // A new table takes a while to become usable on AWS (moto: at once).
    for attempt in 0..120u32 {
        let d = ddb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(unavailable)?;
        if d.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(if attempt < 5 { 100 } else { 1000 })).await;
    }
    Err(StoreError::Unavailable(format!(
        "DynamoDB table {table} did not become active"
    )))
}

async fn ensure_bucket(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    region: &str,
) -> Result<(), StoreError> {
    if s3.head_bucket().bucket(bucket).send().await.is_ok() {
        return Ok(());
    }
    let mut req = s3.create_bucket().bucket(bucket);
    if region != "us-east-1" {
        req = req.create_bucket_configuration(
            aws_sdk_s3::types::CreateBucketConfiguration::builder()
                .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::from(region))
                .build(),
        );
    }
    match req.send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_bucket_already_owned_by_you()) =>
        {
            Ok(())
        }
        Err(e) => Err(unavailable(e)),
    }
}
