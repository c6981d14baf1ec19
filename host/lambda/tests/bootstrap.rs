//! The `bootstrap` binary against a local Lambda Runtime API (written here: the endpoints
//! and headers the real one has) and moto: SQS events in the exact shape Lambda sends carry
//! client write requests to the writer function, which appends them, drops a malformed
//! record and reports in `batchItemFailures` the one whose spilled body S3 does not have;
//! the distributor function, fed the wake-up the writer put on the distributor queue,
//! applies them, so the nodes are in S3 and the results on the session's queue, in order. A
//! payload that is not an SQS event is an invocation error (`/error`).
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use faaskeeper_backend_aws::moto::MotoServer;
use faaskeeper_backend_aws::{AwsBackend, QueueKind, Received, SPILL_ATTRIBUTE, SPILL_PREFIX};
use faaskeeper_core::CreateMode;
use faaskeeper_core::keys::{SYSTEM_BUCKET, USER_BUCKET};
use faaskeeper_core::queue::WriterMessage;
use faaskeeper_core::wire::{Delivery, NodeView, Op, OpResult, Request, SessionEvent, WriteBatch};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// What the function posted for one invocation.
#[derive(Debug, Clone)]
enum Outcome {
    Response(serde_json::Value),
    Error(serde_json::Value),
}

/// A local Lambda Runtime API: hands out queued events on `/invocation/next` and records
/// `/response` and `/error` posts.
#[derive(Default)]
struct RuntimeApi {
    events: Mutex<VecDeque<(String, serde_json::Value)>>,
    outcomes: Mutex<HashMap<String, Outcome>>,
    changed: Notify,
}

impl RuntimeApi {
    async fn start() -> (Arc<RuntimeApi>, String) {
        let api = Arc::new(RuntimeApi::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let served = api.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let api = served.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let api = api.clone();
                        async move { Ok::<_, std::convert::Infallible>(api.serve(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (api, addr)
    }

    async fn serve(&self, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (method.as_str(), parts.as_slice()) {
            ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => loop {
                let notified = self.changed.notified();
                if let Some((id, event)) = self.events.lock().unwrap().pop_front() {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_millis()
                        + 300_000;
                    return hyper::Response::builder()
                        .status(200)
                        .header("Lambda-Runtime-Aws-Request-Id", id)
                        .header("Lambda-Runtime-Deadline-Ms", deadline.to_string())
                        .header(
                            "Lambda-Runtime-Invoked-Function-Arn",
                            "arn:aws:lambda:us-east-1:123456789012:function:faaskeeper-test",
                        )
                        .header(
                            "Lambda-Runtime-Trace-Id",
                            "Root=1-5759e988-bd862e3fe1be46a994272793",
                        )
                        .body(Full::new(Bytes::from(event.to_string())))
                        .unwrap();
                }
                notified.await;
            },
            ("POST", ["2018-06-01", "runtime", "invocation", id, kind]) => {
                let value: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                let outcome = match *kind {
                    "response" => Outcome::Response(value),
                    _ => Outcome::Error(value),
                };
                self.outcomes
                    .lock()
                    .unwrap()
                    .insert(id.to_string(), outcome);
                self.changed.notify_waiters();
                hyper::Response::builder()
                    .status(202)
                    .body(Full::new(Bytes::from_static(b"{\"status\":\"OK\"}")))
                    .unwrap()
            }
            ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
                panic!("init error: {}", String::from_utf8_lossy(&body))
            }
            _ => hyper::Response::builder()
                .status(404)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        }
    }

    fn invoke(&self, id: &str, event: serde_json::Value) {
        self.events
            .lock()
            .unwrap()
            .push_back((id.to_string(), event));
        self.changed.notify_waiters();
    }

    async fn outcome(&self, id: &str) -> Outcome {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let notified = self.changed.notified();
            if let Some(o) = self.outcomes.lock().unwrap().get(id) {
                return o.clone();
            }
            assert!(Instant::now() < deadline, "no outcome for invocation {id}");
            let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
        }
    }
}

/// A `bootstrap` process; killed on drop.
struct Bootstrap {
    child: Child,
    stdout: Arc<Mutex<String>>,
}

impl Bootstrap {
    fn start(role: &str, api: &str, moto: &MotoServer, prefix: &str) -> Bootstrap {
        let mut child = Command::new(env!("CARGO_BIN_EXE_bootstrap"))
            .env("AWS_LAMBDA_RUNTIME_API", api)
            .env("AWS_LAMBDA_FUNCTION_NAME", format!("{prefix}-{role}"))
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{prefix}-{role}"),
            )
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("FAASKEEPER_FUNCTION", role)
            .env("FAASKEEPER_PREFIX", prefix)
            .env("FAASKEEPER_AWS_ENDPOINT", moto.endpoint())
            .env("TMPDIR", std::env::temp_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = Arc::new(Mutex::new(String::new()));
        let mut pipe = child.stdout.take().unwrap();
        let sink = stdout.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Bootstrap { child, stdout }
    }

    /// The `faaskeeper_usage` lines printed so far.
    fn usage(&self) -> Vec<serde_json::Value> {
        self.stdout
            .lock()
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("faaskeeper_usage").cloned())
            .collect()
    }
}

impl Drop for Bootstrap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An SQS record exactly as Lambda's SQS event source delivers it.
fn record(queue: &str, id: &str, body: &str, group: Option<&str>) -> serde_json::Value {
    let mut attributes = serde_json::json!({
        "ApproximateReceiveCount": "1",
        "SentTimestamp": "1545082649183",
        "SenderId": "AIDAIENQZJOLO23YVJ4VO",
        "ApproximateFirstReceiveTimestamp": "1545082649185"
    });
    if let Some(g) = group {
        attributes["MessageGroupId"] = g.into();
        attributes["MessageDeduplicationId"] = id.into();
        attributes["SequenceNumber"] = "18849496460467696128".into();
    }
    serde_json::json!({
        "messageId": id,
        "receiptHandle": format!("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a{id}"),
        "body": body,
        "attributes": attributes,
        "messageAttributes": {},
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": format!("arn:aws:sqs:us-east-1:123456789012:{queue}"),
        "awsRegion": "us-east-1"
    })
}

fn write(session: i64, seq: i64, op: Op) -> String {
    serde_json::to_string(&WriterMessage::Write(WriteBatch {
        requests: vec![Request { session, seq, op }],
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_and_distributor_functions_on_sqs_events() {
    let moto = MotoServer::start().expect("moto (pip install 'moto[server]')");
    let prefix = "lambda-test";
    // The deployment: table, bucket and stage queues (the template's job on AWS), the
    // protocol's initial keys, and a client's session queue.
    let aws = AwsBackend::connect(&moto.options(prefix)).await.unwrap();
    let rt = faaskeeper_host::runtime::Runtime::new(
        &faaskeeper_host::embedded_stages(),
        aws.store_manager(SYSTEM_BUCKET, USER_BUCKET),
        Default::default(),
        Default::default(),
    )
    .unwrap();
    rt.init_store().await.unwrap();
    let q = aws.queues();
    let session = 31337;
    q.ensure(&q.names().session(session), QueueKind::Fifo, None)
        .await
        .unwrap();

    let (writer_api, writer_addr) = RuntimeApi::start().await;
    let writer = Bootstrap::start("writer", &writer_addr, &moto, prefix);
    let wq = q.names().writer();
    let group = session.to_string();
    // A record whose spilled body is not in S3, in its own group.
    let missing = format!("{SPILL_PREFIX}{wq}/missing");
    let mut unreadable = record(&wq, "m-unreadable", &missing, Some("998"));
    unreadable["messageAttributes"] = serde_json::json!({
        SPILL_ATTRIBUTE: { "stringValue": missing, "dataType": "String" }
    });
    let event = serde_json::json!({ "Records": [
        record(&wq, "m-open", &write(session, 0, Op::OpenSession {
            timeout_ms: 60_000,
            notify: q.names().notify_url(session),
            fallback: None,
        }), Some(&group)),
        record(&wq, "m-create", &write(session, 1, Op::Create {
            path: "/from-lambda".into(),
            data: b"hello".to_vec(),
            mode: CreateMode::Persistent,
            acl: None,
        }), Some(&group)),
        // Another client's garbage, in its own group.
        record(&wq, "m-bad", "{\"requests\": 42", Some("999")),
        unreadable,
        record(&wq, "m-set", &write(session, 2, Op::SetData {
            path: "/from-lambda".into(),
            data: b"again".to_vec(),
            version: 0,
        }), Some(&group)),
    ]});
    writer_api.invoke("req-1", event);
    match writer_api.outcome("req-1").await {
        Outcome::Response(v) => assert_eq!(
            v,
            serde_json::json!({ "batchItemFailures": [{ "itemIdentifier": "m-unreadable" }] })
        ),
        other => panic!("writer: {other:?}"),
    }
    // Not an SQS event: the invocation fails as a whole.
    writer_api.invoke("req-2", serde_json::json!({ "hello": "world" }));
    match writer_api.outcome("req-2").await {
        Outcome::Error(v) => assert!(
            v["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("Records"),
            "{v}"
        ),
        other => panic!("a payload without Records: {other:?}"),
    }

    // The writer woke the distributor through its queue: hand that message to the
    // distributor function as Lambda would.
    let dq = q.names().distributor();
    let wakeups: Vec<Received> = q.receive(&dq, 10, 5).await.unwrap();
    assert!(
        !wakeups.is_empty(),
        "the writer put a wake-up on the distributor queue"
    );
    let records: Vec<serde_json::Value> = wakeups
        .iter()
        .map(|m| {
            record(
                &dq,
                &m.message_id,
                std::str::from_utf8(m.body.as_deref().unwrap()).unwrap(),
                None,
            )
        })
        .collect();
    let (dist_api, dist_addr) = RuntimeApi::start().await;
    let distributor = Bootstrap::start("distributor", &dist_addr, &moto, prefix);
    dist_api.invoke("req-3", serde_json::json!({ "Records": records }));
    match dist_api.outcome("req-3").await {
        Outcome::Response(v) => assert_eq!(v, serde_json::json!({ "batchItemFailures": [] })),
        other => panic!("distributor: {other:?}"),
    }

    // The writes landed: the node object in S3 holds the second write.
    let object = aws
        .user()
        .get("/from-lambda")
        .await
        .unwrap()
        .expect("node object");
    let node: NodeView = serde_json::from_slice(&object).unwrap();
    assert_eq!(
        (node.data.as_slice(), node.stat.version),
        (&b"again"[..], 1)
    );
    // The results are on the session's queue, in order.
    let sq = q.names().session(session);
    let mut results = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while results.len() < 3 && Instant::now() < deadline {
        let got = q.receive(&sq, 10, 1).await.unwrap();
        for m in &got {
            let d: Delivery = serde_json::from_slice(m.body.as_deref().unwrap()).unwrap();
            for e in d.events {
                if let SessionEvent::Result { seq, result, .. } = e {
                    results.push((seq, result));
                }
            }
        }
        q.delete(&sq, &got).await.unwrap();
    }
    let seqs: Vec<i64> = results.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, vec![0, 1, 2], "{results:?}");
    assert!(matches!(results[1].1, OpResult::Created { .. }));
    assert!(matches!(results[2].1, OpResult::Stat { .. }));

    // Each invocation counted itself.
    let usage = writer.usage();
    assert_eq!(usage.len(), 2, "one usage line per invocation");
    assert_eq!(usage[0]["queues"]["lambda_invocations"], 1);
    assert!(usage[0]["queues"]["lambda_mb_ms"].as_u64().unwrap() >= 512);
    assert!(
        usage[0]["queues"]["sqs_requests"].as_u64().unwrap() >= 1,
        "the wake-up"
    );
    assert!(
        usage[0]["system"]["dynamo_write_units"].as_u64().unwrap() >= 1,
        "the append"
    );
    let usage = distributor.usage();
    assert_eq!(usage.len(), 1);
    assert!(
        usage[0]["user"]["s3_put"].as_u64().unwrap() >= 1,
        "the node object"
    );
    assert!(
        usage[0]["queues"]["sqs_requests"].as_u64().unwrap() >= 1,
        "the delivery"
    );
}
