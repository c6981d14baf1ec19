//! `bootstrap`: the Lambda custom runtime of FaaSKeeper (see the crate docs).

use anyhow::Context;
use faaskeeper_lambda::{Function, Role};
use lambda_runtime::{LambdaEvent, service_fn};
use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let role_name = std::env::var("FAASKEEPER_FUNCTION").unwrap_or_default();
    let role = Role::parse(&role_name).with_context(|| {
        format!("FAASKEEPER_FUNCTION is {role_name:?}: use writer, distributor or heartbeat")
    })?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let opts = faaskeeper_lambda::options_from_env()?;
            // /tmp is the only writable place on Lambda; compiled stages survive warm starts.
            let cache = std::env::temp_dir().join("faaskeeper-compiled");
            let function = Arc::new(
                Function::start(
                    role,
                    &opts,
                    faaskeeper_lambda::function_options_from_env(cache),
                )
                .await
                .context("starting the function")?,
            );
            lambda_runtime::run(service_fn(move |event: LambdaEvent<serde_json::Value>| {
                let function = function.clone();
                async move {
                    function
                        .handle(event.payload)
                        .await
                        .map_err(lambda_runtime::Error::from)
                }
            }))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))
        })
}
