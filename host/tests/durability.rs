//! Guarantee 1: a write acknowledged to a client survives SIGKILL of the host process at any
//! moment. Several sessions write as fast as they can; the process is killed mid-stream and
//! restarted on the same data directory; every acknowledged write must be there.

mod support;

use faaskeeper_client::{Client, Options};
use faaskeeper_core::CreateMode;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::Server;

/// (path, acknowledged value, value of an unacknowledged later write that may have landed)
type Acked = (String, Vec<u8>, Option<Vec<u8>>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    for round in 0..3 {
        let server = Server::start(dir.path());
        let setup = Client::connect(&server.url, Options::default())
            .await
            .expect("connect");
        let base = format!("/r{round}");
        setup
            .create(&base, b"", CreateMode::Persistent)
            .await
            .expect("base");
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let mut writers = Vec::new();
        for w in 0..4 {
            let url = server.url.clone();
            let acked = acked.clone();
            let base = base.clone();
            writers.push(tokio::spawn(async move {
                let Ok(c) = Client::connect(&url, Options::default()).await else {
                    return;
                };
                for i in 0.. {
                    let path = format!("{base}/w{w}-{i}");
                    let data = format!("{w}:{i}").into_bytes();
                    match c.create(&path, &data, CreateMode::Persistent).await {
                        Ok(_) => {}
                        Err(_) => return,
                    }
                    // Overwrite half of them so sets are checked too.
                    let data = if i % 2 == 0 {
                        let d = format!("{w}:{i}:set").into_bytes();
                        match c.set_data(&path, &d, 0).await {
                            Ok(_) => d,
                            Err(_) => {
                                acked.lock().expect("lock").push((path, data, Some(d)));
                                return;
                            }
                        }
                    } else {
                        data
                    };
                    acked.lock().expect("lock").push((path, data, None));
                }
            }));
        }
        // Let writes flow, then kill without warning.
        tokio::time::sleep(Duration::from_millis(1500 + 400 * round)).await;
        server.kill();
        for w in writers {
            let _ = w.await;
        }
        let acked = acked.lock().expect("lock").clone();
        assert!(
            acked.len() > 10,
            "round {round}: only {} writes acknowledged",
            acked.len()
        );

        let server = Server::start(dir.path());
        let c = Client::connect(&server.url, Options::default())
            .await
            .expect("reconnect");
        for (path, data, maybe) in &acked {
            let (got, _) = c
                .get_data(path)
                .await
                .unwrap_or_else(|e| panic!("round {round}: acknowledged {path} lost: {e}"));
            assert!(
                &got == data || Some(&got) == maybe.as_ref(),
                "round {round}: {path} holds {:?}, acknowledged {:?}",
                String::from_utf8_lossy(&got),
                String::from_utf8_lossy(data)
            );
        }
        // And the service goes on working on the recovered store.
        c.create(&format!("{base}/after"), b"ok", CreateMode::Persistent)
            .await
            .expect("write after restart");
        println!(
            "round {round}: {} acknowledged writes all present after SIGKILL",
            acked.len()
        );
        drop(c);
        server.kill();
    }
}
