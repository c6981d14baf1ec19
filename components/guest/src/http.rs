//! `wasi:http@0.2.6` glue: read a request, write a response, call another stage.

use crate::Stage;
use crate::bindings::wasi::http::outgoing_handler;
use crate::bindings::wasi::http::types::{
    Fields, FutureIncomingResponse, IncomingBody, IncomingRequest, Method, OutgoingBody,
    OutgoingRequest, OutgoingResponse, ResponseOutparam, Scheme,
};
use crate::bindings::wasi::io::streams::{InputStream, OutputStream, StreamError};

/// Largest body a stage reads: a batch of requests at the 1 MiB data limit, base64'd.
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// A stage's answer.
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json<T: serde::Serialize>(value: &T) -> Reply {
        match serde_json::to_vec(value) {
            Ok(body) => Reply { status: 200, body },
            Err(e) => Reply::error(500, &format!("cannot encode reply: {e}")),
        }
    }

    /// An error status with `{"error": msg}`.
    pub fn error(status: u16, msg: &str) -> Reply {
        Reply {
            status,
            body: serde_json::json!({ "error": msg }).to_string().into_bytes(),
        }
    }
}

fn read_stream(stream: &InputStream, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if out.len() + chunk.len() > limit {
                    return Err(format!("body larger than {limit} bytes"));
                }
                out.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(out),
            Err(StreamError::LastOperationFailed(e)) => {
                return Err(format!("read failed: {}", e.to_debug_string()));
            }
        }
    }
}

fn write_stream(stream: &OutputStream, mut data: &[u8]) -> Result<(), String> {
    while !data.is_empty() {
        // blocking-write-and-flush takes at most 4096 bytes per call.
        let n = data.len().min(4096);
        stream
            .blocking_write_and_flush(&data[..n])
            .map_err(|e| format!("write failed: {e:?}"))?;
        data = &data[n..];
    }
    Ok(())
}

fn read_incoming(body: IncomingBody) -> Result<Vec<u8>, String> {
    let stream = body
        .stream()
        .map_err(|()| "body stream taken".to_string())?;
    let data = read_stream(&stream, MAX_BODY)?;
    drop(stream);
    let _ = IncomingBody::finish(body);
    Ok(data)
}

pub(crate) fn serve<S: Stage>(request: IncomingRequest, out: ResponseOutparam) {
    let path = request.path_with_query().unwrap_or_else(|| "/".to_string());
    let reply = match request.consume() {
        Ok(body) => match read_incoming(body) {
            Ok(bytes) => S::handle(&path, bytes),
            Err(e) => Reply::error(400, &e),
        },
        Err(()) => Reply::error(400, "request body unavailable"),
    };
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(reply.status);
    let Ok(body) = response.body() else {
        return;
    };
    ResponseOutparam::set(out, Ok(response));
    if let Ok(stream) = body.write() {
        if let Err(e) = write_stream(&stream, &reply.body) {
            crate::log(&format!("reply not sent: {e}"));
        }
        drop(stream);
    }
    let _ = OutgoingBody::finish(body, None);
}

/// POST `body` to `url` (`http://authority/path`) and return the status and whole body.
pub fn post(url: &str, body: &[u8]) -> Result<(u16, Vec<u8>), String> {
    send(url, body)?.wait()
}

/// A POST whose body is sent and whose answer has not been read yet: the platform carries
/// it out while the caller goes on (the distributor decides its next batch meanwhile).
/// Dropped without [`Sent::wait`], the request may be cancelled.
pub struct Sent {
    url: String,
    future: FutureIncomingResponse,
}

/// Start a POST of `body` to `url` (`http://authority/path`): the request and its whole body
/// are handed to the platform, and the answer is read later with [`Sent::wait`].
pub fn send(url: &str, body: &[u8]) -> Result<Sent, String> {
    let (scheme, rest) = if let Some(r) = url.strip_prefix("http://") {
        (Scheme::Http, r)
    } else if let Some(r) = url.strip_prefix("https://") {
        (Scheme::Https, r)
    } else {
        return Err(format!("unsupported url {url}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"application/json".to_vec()]);
    let request = OutgoingRequest::new(headers);
    request
        .set_method(&Method::Post)
        .map_err(|()| "bad method")?;
    request
        .set_scheme(Some(&scheme))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| format!("bad authority {authority}"))?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| format!("bad path {path}"))?;
    let out_body = request.body().map_err(|()| "request body taken")?;
    let future = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    {
        let stream = out_body.write().map_err(|()| "request stream taken")?;
        write_stream(&stream, body)?;
    }
    OutgoingBody::finish(out_body, None).map_err(|e| format!("{e:?}"))?;
    Ok(Sent {
        url: url.to_string(),
        future,
    })
}

impl Sent {
    /// Wait for the answer: its status and whole body.
    pub fn wait(self) -> Result<(u16, Vec<u8>), String> {
        let response = loop {
            if let Some(r) = self.future.get() {
                break r
                    .map_err(|()| "response taken twice".to_string())?
                    .map_err(|e| format!("{}: {e:?}", self.url))?;
            }
            self.future.subscribe().block();
        };
        let status = response.status();
        let body = response.consume().map_err(|()| "response body taken")?;
        let data = read_incoming(body)?;
        Ok((status, data))
    }
}
