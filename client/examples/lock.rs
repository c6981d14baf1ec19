//! Take a distributed lock, do some work, release it.
//!
//! Start the service (`cargo run --release -- serve`), then run this example several times
//! at once: `cargo run --release -p faaskeeper-client --example lock`.

use faaskeeper_client::recipes::Lock;
use faaskeeper_client::{Client, Options};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("FAASKEEPER_SERVER").unwrap_or_else(|_| "http://127.0.0.1:8181".into());
    let client = Client::connect(&url, Options::default()).await?;
    println!(
        "session {:#x} waiting for /examples/lock",
        client.session_id()
    );
    let guard = Lock::new(&client, "/examples/lock").acquire().await?;
    println!("holding the lock for 2 s");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    guard.release().await?;
    println!("released");
    client.close().await?;
    Ok(())
}
