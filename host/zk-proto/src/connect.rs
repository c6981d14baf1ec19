//! The session handshake, and the four-letter words that may replace it.

use crate::error::Result;
use crate::jute::{Reader, Writer};

/// The first frame a client sends; unlike every later frame it has no request header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectRequest {
    /// Protocol version, 0 for every released client.
    pub protocol_version: i32,
    /// Largest zxid the client has seen; a server behind it must refuse the session.
    pub last_zxid_seen: i64,
    /// Requested session timeout.
    pub timeout_ms: i32,
    /// 0 for a new session, otherwise the session to resume.
    pub session_id: i64,
    /// The session's password when resuming (a null buffer reads as empty).
    pub passwd: Vec<u8>,
    /// Whether the client accepts a read-only server.
    pub read_only: bool,
}

impl ConnectRequest {
    /// Decodes a connect frame's payload.
    ///
    /// The read-only flag is a trailing byte that clients before 3.4 do not send, so its
    /// absence means false. Bytes after it are ignored, as ZooKeeper does.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        Ok(ConnectRequest {
            protocol_version: r.read_i32()?,
            last_zxid_seen: r.read_i64()?,
            timeout_ms: r.read_i32()?,
            session_id: r.read_i64()?,
            passwd: r.read_buffer()?.unwrap_or_default(),
            read_only: if r.is_empty() { false } else { r.read_bool()? },
        })
    }

    /// Encodes the payload (without length prefix), always with the read-only byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(45 + self.passwd.len());
        w.write_i32(self.protocol_version);
        w.write_i64(self.last_zxid_seen);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(&self.passwd);
        w.write_bool(self.read_only);
        w.into_inner()
    }
}

/// The server's answer to a [`ConnectRequest`].
///
/// To refuse a session (unknown or expired), ZooKeeper answers with `timeout_ms` 0 and
/// `session_id` 0 and then closes the connection; clients report that as expiry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectResponse {
    /// Protocol version, 0.
    pub protocol_version: i32,
    /// Negotiated session timeout.
    pub timeout_ms: i32,
    /// The session's id.
    pub session_id: i64,
    /// The session's password, which the client presents to resume it (16 bytes in
    /// ZooKeeper).
    pub passwd: Vec<u8>,
    /// Whether this server is read-only.
    pub read_only: bool,
}

impl ConnectResponse {
    /// Encodes the payload (without length prefix). The read-only byte is always
    /// written: 3.4+ servers always send it and older clients ignore it.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(25 + self.passwd.len());
        w.write_i32(self.protocol_version);
        w.write_i32(self.timeout_ms);
        w.write_i64(self.session_id);
        w.write_buffer(&self.passwd);
        w.write_bool(self.read_only);
        w.into_inner()
    }

    /// Decodes a connect response payload; the read-only byte is optional.
    pub fn decode(payload: &[u8]) -> Result<Self> {
        let mut r = Reader::new(payload);
        Ok(ConnectResponse {
            protocol_version: r.read_i32()?,
            timeout_ms: r.read_i32()?,
            session_id: r.read_i64()?,
            passwd: r.read_buffer()?.unwrap_or_default(),
            read_only: if r.is_empty() { false } else { r.read_bool()? },
        })
    }
}

/// The four-letter admin words recognised at the start of a connection.
const FOUR_LETTER_WORDS: [&str; 5] = ["ruok", "srvr", "stat", "mntr", "conf"];

/// Recognises a four-letter admin command from the first 4 bytes of a connection.
///
/// Those commands arrive raw, with no length prefix; read as a length they would all
/// exceed [`MAX_FRAME`](crate::MAX_FRAME), so checking them first never misreads a
/// connect frame. Only the first 4 bytes of `first4` are looked at; fewer gives `None`.
pub fn four_letter_word(first4: &[u8]) -> Option<&'static str> {
    let word = first4.first_chunk::<4>()?;
    FOUR_LETTER_WORDS
        .into_iter()
        .find(|w| w.as_bytes() == word.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ProtoError;
    use crate::frame::MAX_FRAME;

    fn sample() -> ConnectRequest {
        ConnectRequest {
            protocol_version: 0,
            last_zxid_seen: 0x42,
            timeout_ms: 30_000,
            session_id: 0x1234_5678_9abc_def0,
            passwd: vec![9; 16],
            read_only: true,
        }
    }

    #[test]
    fn request_with_read_only_byte() {
        let req = sample();
        let bytes = req.encode();
        assert_eq!(bytes.len(), 4 + 8 + 4 + 8 + 4 + 16 + 1);
        assert_eq!(ConnectRequest::decode(&bytes).unwrap(), req);
    }

    #[test]
    fn request_without_read_only_byte() {
        let req = sample();
        let mut bytes = req.encode();
        bytes.pop();
        let decoded = ConnectRequest::decode(&bytes).unwrap();
        assert!(!decoded.read_only);
        assert_eq!(
            decoded,
            ConnectRequest {
                read_only: false,
                ..req
            }
        );
    }

    #[test]
    fn request_null_password_and_truncation() {
        let mut w = Writer::new();
        w.write_i32(0);
        w.write_i64(0);
        w.write_i32(4000);
        w.write_i64(0);
        w.write_opt_buffer(None);
        let bytes = w.into_inner();
        let req = ConnectRequest::decode(&bytes).unwrap();
        assert!(req.passwd.is_empty());
        assert_eq!(req.timeout_ms, 4000);
        for cut in 0..bytes.len() {
            assert_eq!(
                ConnectRequest::decode(&bytes[..cut]),
                Err(ProtoError::Truncated),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn response_known_bytes() {
        let resp = ConnectResponse {
            protocol_version: 0,
            timeout_ms: 30_000,
            session_id: 0x0102_0304_0506_0708,
            passwd: vec![0xaa, 0xbb, 0xcc],
            read_only: false,
        };
        let expected: Vec<u8> = vec![
            0x00, 0x00, 0x00, 0x00, // protocolVersion
            0x00, 0x00, 0x75, 0x30, // timeOut 30000
            0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, // sessionId
            0x00, 0x00, 0x00, 0x03, 0xaa, 0xbb, 0xcc, // passwd
            0x00, // readOnly
        ];
        assert_eq!(resp.encode(), expected);
        assert_eq!(ConnectResponse::decode(&expected).unwrap(), resp);
        assert_eq!(
            ConnectResponse::decode(&expected[..expected.len() - 1]).unwrap(),
            resp
        );
    }

    #[test]
    fn four_letter_words() {
        for w in ["ruok", "srvr", "stat", "mntr", "conf"] {
            assert_eq!(four_letter_word(w.as_bytes()), Some(w));
            // Never a plausible frame length.
            let as_len = u32::from_be_bytes(*w.as_bytes().first_chunk::<4>().unwrap());
            assert!(as_len as usize > MAX_FRAME);
        }
        assert_eq!(four_letter_word(b"ruokay"), Some("ruok"));
        assert_eq!(four_letter_word(b"ruo"), None);
        assert_eq!(four_letter_word(b"dump"), None);
        assert_eq!(four_letter_word(&[0, 0, 0, 44]), None);
    }
}
