//! # faaskeeper-lambda
//!
//! The bundled host as an AWS Lambda custom runtime: the `bootstrap` binary (runtime
//! `provided.al2023`, handler `bootstrap`) runs the handler of
//! [`faaskeeper_host::aws::lambda`] (the same stage components as `faaskeeper serve`, on the
//! AWS backend, one function per role) under the `lambda_runtime` crate. This crate is only
//! that glue and the configuration the functions take from their environment:
//! `FAASKEEPER_FUNCTION` (`writer`, `distributor` or `heartbeat`), `FAASKEEPER_PREFIX` (names
//! the table, bucket and queues), `AWS_REGION`, `FAASKEEPER_AWS_ENDPOINT` (an endpoint
//! override, e.g. a local moto), `FAASKEEPER_USER_STORAGE`, `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`
//! (set by Lambda) and `FAASKEEPER_DIRECT_RESULTS=1` (the watch stage also delivers to
//! clients' own listeners, `docs/aws.md`).
//!
//! Every invocation prints one JSON line `{"faaskeeper_usage": {...}}` with what it counted:
//! the invocation and its MB-milliseconds, and the DynamoDB, S3 and SQS requests it made.
#![deny(missing_docs)]

use faaskeeper_backend_aws::AwsOptions;
pub use faaskeeper_host::aws::lambda::{
    BatchItemFailure, BatchResponse, Function, FunctionOptions, HandlerError, Role, SqsEvent,
    SqsMessageAttribute, SqsRecord, usage_json,
};

/// The function's settings from the environment; compiled stages are cached in `cache_dir`.
pub fn function_options_from_env(cache_dir: std::path::PathBuf) -> FunctionOptions {
    FunctionOptions {
        memory_mb: std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
            .ok()
            .and_then(|m| m.parse().ok())
            .unwrap_or(128),
        cache_dir: Some(cache_dir),
        direct_results: std::env::var("FAASKEEPER_DIRECT_RESULTS").is_ok_and(|v| v == "1"),
        log_usage: true,
    }
}

/// The deployment's options from the environment (`FAASKEEPER_PREFIX`, `AWS_REGION`,
/// `FAASKEEPER_AWS_ENDPOINT`, `FAASKEEPER_USER_STORAGE` = `s3` or `dynamodb`); credentials
/// from the default chain (the function's role).
pub fn options_from_env() -> anyhow::Result<AwsOptions> {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let user_storage = match var("FAASKEEPER_USER_STORAGE") {
        Some(v) => v
            .parse()
            .map_err(|e: String| anyhow::anyhow!("FAASKEEPER_USER_STORAGE: {e}"))?,
        None => Default::default(),
    };
    Ok(AwsOptions {
        endpoint: var("FAASKEEPER_AWS_ENDPOINT"),
        region: var("AWS_REGION").unwrap_or_else(|| "us-east-1".into()),
        prefix: var("FAASKEEPER_PREFIX").unwrap_or_else(|| "faaskeeper".into()),
        credentials: None,
        user_storage,
    })
}
