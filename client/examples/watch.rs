//! Create a node, leave a data watch on it, change it, and print the event.
//!
//! `cargo run --release -p faaskeeper-client --example watch` against a running service.

use faaskeeper_client::{Client, Options};
use faaskeeper_core::CreateMode;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FAASKEEPER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8181".into());
    let client = Client::connect(&url, Options::default()).await?;
    let path = format!("/examples-watch-{}", std::process::id());
    client.create(&path, b"v0", CreateMode::Ephemeral).await?;
    let (data, stat, watch) = client.get_data_w(&path).await?;
    println!(
        "{path} = {:?} (version {})",
        String::from_utf8_lossy(&data),
        stat.version
    );
    client.set_data(&path, b"v1", stat.version).await?;
    let event = watch.wait().await?;
    println!(
        "event {:?} on {} at zxid {}",
        event.kind, event.path, event.zxid
    );
    client.close().await?;
    Ok(())
}
