//! Closed-loop load against any ZooKeeper-protocol server, for profiling the server while it
//! runs: `cargo run --release -p faaskeeper-bench --example load -- 127.0.0.1:2181 32 10 writes`.

use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let addr = args.first().map_or("127.0.0.1:2181", |s| s.as_str());
    let sessions = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(32);
    let secs = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(10);
    let writes = args.get(3).is_none_or(|s| s == "writes");
    let c = faaskeeper_bench::workload::connect(addr).await?;
    faaskeeper_bench::workload::ensure(&c, "/load").await?;
    let ops = faaskeeper_bench::workload::throughput(
        addr,
        "/load",
        sessions,
        writes,
        Duration::from_secs(1),
        Duration::from_secs(secs),
    )
    .await?;
    println!("{ops:.0} ops/s with {sessions} sessions");
    Ok(())
}
