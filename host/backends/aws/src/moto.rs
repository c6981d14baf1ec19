//! A local [moto](https://github.com/getmoto/moto) server, for tests and local trials of the
//! AWS backend without an AWS account.
//!
//! [`MotoServer::start`] runs `moto/serve.py` (embedded in this crate) with `python3` (or
//! `$FAASKEEPER_PYTHON`) on a free port of 127.0.0.1 and waits until it answers. The script
//! serialises the requests moto cannot run concurrently (see its docstring). Dropping the
//! server sends SIGINT (moto ignores SIGTERM); if the test process dies instead, the server
//! sees its stdin close and exits by itself. Needs `pip install 'moto[server]'`.

use crate::{AwsOptions, StaticCredentials};
use std::io::{BufRead, BufReader, Read};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The launcher script (`moto/serve.py`).
pub const SERVE_PY: &str = include_str!("../moto/serve.py");

/// A running moto server; stopped on drop.
pub struct MotoServer {
    child: Child,
    endpoint: String,
}

impl MotoServer {
    /// Start a server on a free port and wait until it accepts connections.
    pub fn start() -> std::io::Result<MotoServer> {
        let python = std::env::var("FAASKEEPER_PYTHON").unwrap_or_else(|_| "python3".into());
        let mut child = Command::new(&python)
            .arg("-c")
            .arg(SERVE_PY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("running {python}: {e}")))?;
        let stdout = child.stdout.take().ok_or_else(|| other("no stdout"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the server never blocks on a full pipe.
            let _ = std::io::copy(&mut reader.take(u64::MAX), &mut std::io::sink());
        });
        let mut server = MotoServer {
            child,
            endpoint: String::new(),
        };
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| other("moto did not start within 60 s"))?;
        let port: u16 = line.trim().parse().map_err(|_| {
            other(&format!(
                "moto did not start (is `moto[server]` installed for {python}? \
                 pip install 'moto[server]'); first line: {line:?}"
            ))
        })?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(other("moto does not accept connections"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.endpoint = format!("http://127.0.0.1:{port}");
        Ok(server)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Options for a backend on this server with fixed fake credentials; `prefix` names the
    /// table and bucket, so tests sharing a server use different prefixes.
    pub fn options(&self, prefix: &str) -> AwsOptions {
        AwsOptions {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            prefix: prefix.into(),
            credentials: Some(StaticCredentials {
                access_key_id: "test".into(),
                secret_access_key: "test".into(),
            }),
            user_storage: Default::default(),
        }
    }
}

fn other(msg: &str) -> std::io::Error {
    std::io::Error::other(msg.to_string())
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        // moto stops on SIGINT, not SIGTERM. `kill` keeps this crate free of unsafe code.
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An endpoint in front of `to` (a moto endpoint) that passes every request on but SQS's
/// `action` (`"SendMessage"`, `"DeleteMessageBatch"`, …), which it refuses with 403: for
/// tests of what a failed request leaves behind. Its address, served until the runtime ends.
pub async fn refusing(to: &str, action: &str) -> std::io::Result<String> {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::{TokioExecutor, TokioIo};
    type Failure = Box<dyn std::error::Error + Send + Sync>;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let (to, target) = (to.to_string(), format!(".{action}"));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (client, to, target) = (client.clone(), to.clone(), target.clone());
            let pass =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (client, to, target) = (client.clone(), to.clone(), target.clone());
                    async move {
                        let refused = req
                            .headers()
                            .get("x-amz-target")
                            .is_some_and(|t| t.as_bytes().ends_with(target.as_bytes()));
                        if refused {
                            let body = r#"{"__type":"AccessDenied","message":"refused"}"#;
                            return Ok::<_, Failure>(
                                http::Response::builder()
                                    .status(403)
                                    .header("content-type", "application/x-amz-json-1.0")
                                    .body(Full::new(Bytes::from_static(body.as_bytes())))?,
                            );
                        }
                        let (head, body) = req.into_parts();
                        let body = body.collect().await?.to_bytes();
                        let path = head.uri.path_and_query().map_or("/", |p| p.as_str());
                        let mut out = http::Request::builder()
                            .method(head.method)
                            .uri(format!("{to}{path}"));
                        for (name, value) in &head.headers {
                            out = out.header(name, value);
                        }
                        let answer = client.request(out.body(Full::new(body))?).await?;
                        let (head, body) = answer.into_parts();
                        let body = body.collect().await?.to_bytes();
                        Ok(http::Response::from_parts(head, Full::new(body)))
                    }
                });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), pass),
            );
        }
    });
    Ok(format!("http://{addr}"))
}
