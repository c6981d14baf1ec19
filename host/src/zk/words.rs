//! ZooKeeper's four-letter words (`ruok`, `srvr`, `stat`, `mntr`, `conf`), answered from the
//! gateway's own counters in the formats ZooKeeper 3.8 uses.

use super::Gateway;
use std::sync::atomic::Ordering;

/// The version string reported, ZooKeeper-style.
const VERSION: &str = concat!("3.8.0-faaskeeper-", env!("CARGO_PKG_VERSION"));

pub(crate) fn answer(gw: &Gateway, word: &str) -> String {
    let received = gw.stats.received.load(Ordering::Relaxed);
    let sent = gw.stats.sent.load(Ordering::Relaxed);
    let connections = gw.stats.connections.load(Ordering::Relaxed);
    let sessions = gw.session_count();
    match word {
        "ruok" => "imok".to_string(),
        "srvr" => format!(
            "Zookeeper version: {VERSION}\nLatency min/avg/max: 0/0.0/0\nReceived: {received}\nSent: {sent}\nConnections: {sessions}\nOutstanding: 0\nZxid: 0x0\nMode: standalone\nNode count: 0\n"
        ),
        "stat" => format!(
            "Zookeeper version: {VERSION}\nClients:\n\nLatency min/avg/max: 0/0.0/0\nReceived: {received}\nSent: {sent}\nConnections: {sessions}\nOutstanding: 0\nZxid: 0x0\nMode: standalone\nNode count: 0\n"
        ),
        "mntr" => format!(
            "zk_version\t{VERSION}\nzk_server_state\tstandalone\nzk_packets_received\t{received}\nzk_packets_sent\t{sent}\nzk_num_alive_connections\t{sessions}\nzk_outstanding_requests\t0\nzk_connections_accepted\t{connections}\nzk_uptime\t{}\n",
            gw.started.elapsed().as_millis()
        ),
        "conf" => format!(
            "clientPort={}\nclientPortAddress=127.0.0.1\ntickTime=2000\nminSessionTimeout={}\nmaxSessionTimeout={}\nserverId=0\nbackend=faaskeeper\napi={}\n",
            gw.port,
            faaskeeper_core::MIN_SESSION_TIMEOUT_MS,
            faaskeeper_core::MAX_SESSION_TIMEOUT_MS,
            gw.api_url
        ),
        other => format!("{other} is not executed because it is not in the whitelist.\n"),
    }
}
