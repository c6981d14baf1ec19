//! Length-prefixed framing: every packet after the TCP connect is a 4-byte big-endian
//! length followed by that many bytes.

use crate::error::{ProtoError, Result};

/// Largest frame payload accepted or produced: ZooKeeper's default `jute.maxbuffer`
/// (0xfffff = 1048575 bytes) plus 1 KiB of slack.
///
/// `jute.maxbuffer` bounds a znode's data, but a reply also carries a header, a path and
/// a `Stat`, so a frame holding the largest legal node is slightly longer than the limit;
/// the slack lets those through while still refusing anything absurd.
pub const MAX_FRAME: usize = 0xfffff + 1024;

/// Largest request frame a server reads: exactly ZooKeeper's default `jute.maxbuffer`
/// (`NIOServerCnxn` closes the connection of a client whose length prefix is larger;
/// measured against ZooKeeper 3.8.0 in `tests/zk_wire.rs`).
pub const MAX_REQUEST_FRAME: usize = 0xfffff;

/// Once the buffer drains, capacity above this is given back, so a connection that once
/// received a large frame does not hold on to it forever.
const IDLE_CAPACITY: usize = 64 * 1024;

/// Prefixes `payload` with its length.
///
/// Does not check [`MAX_FRAME`]; use [`try_frame`] where the payload size is not known
/// to be small.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 4);
    // Saturation can only happen far above MAX_FRAME, where try_frame refuses instead.
    let len = i32::try_from(payload.len()).unwrap_or(i32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Like [`frame`], but refuses payloads longer than [`MAX_FRAME`], which ZooKeeper
/// clients would refuse to read.
pub fn try_frame(payload: &[u8]) -> Result<Vec<u8>> {
    if payload.len() > MAX_FRAME {
        return Err(ProtoError::FrameTooLarge(payload.len()));
    }
    Ok(frame(payload))
}

fn check_frame_len(len: i32, max: usize) -> Result<usize> {
    let n = usize::try_from(len).map_err(|_| ProtoError::InvalidLength(len))?;
    if n > max {
        return Err(ProtoError::FrameTooLarge(n));
    }
    Ok(n)
}

/// Splits a byte stream into frame payloads.
///
/// Feed it whatever the socket returns with [`push`](Self::push) and drain it with
/// [`next_frame`](Self::next_frame) until that returns `Ok(None)`. Used that way, it
/// never holds more than `MAX_FRAME + 4` bytes plus the last chunk pushed.
///
/// A bad length prefix poisons the decoder: the stream cannot be resynchronised, so
/// every later call returns the same error and pushed bytes are dropped. The caller
/// should close the connection, as ZooKeeper does.
#[derive(Debug)]
pub struct FrameDecoder {
    /// Longest payload accepted.
    max: usize,
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out; compacted lazily to avoid a memmove per frame.
    start: usize,
    failed: Option<ProtoError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        FrameDecoder::new()
    }
}

impl FrameDecoder {
    /// An empty decoder for any frame up to [`MAX_FRAME`] (what a client reads).
    pub fn new() -> Self {
        FrameDecoder::with_limit(MAX_FRAME)
    }

    /// An empty decoder for request frames, up to [`MAX_REQUEST_FRAME`] (what a server
    /// reads).
    pub fn for_requests() -> Self {
        FrameDecoder::with_limit(MAX_REQUEST_FRAME)
    }

    fn with_limit(max: usize) -> Self {
        FrameDecoder {
            max,
            buf: Vec::new(),
            start: 0,
            failed: None,
        }
    }

    /// Appends bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.failed.is_some() {
            return;
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
        // Checking the prefix now, rather than in next_frame, means a hostile length is
        // refused before a caller that pushes without draining can pile up bytes.
        if let Some(len) = self.buf.first_chunk::<4>()
            && let Err(e) = check_frame_len(i32::from_be_bytes(*len), self.max)
        {
            self.fail(e);
        }
    }

    fn fail(&mut self, e: ProtoError) {
        self.failed = Some(e);
        self.buf = Vec::new();
        self.start = 0;
    }

    /// The next complete frame's payload, `Ok(None)` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let pending = self.buf.get(self.start..).unwrap_or_default();
        let Some((len, rest)) = pending.split_first_chunk::<4>() else {
            return Ok(None);
        };
        let n = match check_frame_len(i32::from_be_bytes(*len), self.max) {
            Ok(n) => n,
            Err(e) => {
                self.fail(e.clone());
                return Err(e);
            }
        };
        let Some(payload) = rest.get(..n) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.start += 4 + n;
        if self.start >= self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > IDLE_CAPACITY {
                self.buf = Vec::new();
            }
        }
        Ok(Some(payload))
    }

    /// Bytes held in the internal buffer, including ones already returned but not yet
    /// compacted away: the decoder's memory use.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes received but not yet returned as part of a frame.
    pub fn pending(&self) -> usize {
        self.buf.len().saturating_sub(self.start)
    }

    /// Whether a bad length prefix has poisoned the decoder.
    pub fn is_failed(&self) -> bool {
        self.failed.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_prefixes_length() {
        assert_eq!(frame(b"abc"), vec![0, 0, 0, 3, b'a', b'b', b'c']);
        assert_eq!(frame(b""), vec![0, 0, 0, 0]);
    }

    #[test]
    fn try_frame_limits() {
        assert!(try_frame(&vec![0; MAX_FRAME]).is_ok());
        assert_eq!(
            try_frame(&vec![0; MAX_FRAME + 1]),
            Err(ProtoError::FrameTooLarge(MAX_FRAME + 1))
        );
    }

    #[test]
    fn byte_by_byte() {
        let mut stream = frame(b"hello");
        stream.extend(frame(b""));
        stream.extend(frame(b"world!"));
        let mut d = FrameDecoder::new();
        let mut out = Vec::new();
        for b in stream {
            d.push(&[b]);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![b"hello".to_vec(), vec![], b"world!".to_vec()]);
        assert_eq!(d.pending(), 0);
    }

    #[test]
    fn many_frames_in_one_push() {
        let mut stream = Vec::new();
        for i in 0..100u8 {
            stream.extend(frame(&[i; 3]));
        }
        stream.extend_from_slice(&[0, 0, 0, 9, 1]);
        let mut d = FrameDecoder::new();
        d.push(&stream);
        for i in 0..100u8 {
            assert_eq!(d.next_frame().unwrap(), Some(vec![i; 3]));
        }
        assert_eq!(d.next_frame().unwrap(), None);
        assert_eq!(d.pending(), 5);
        d.push(&[2; 8]);
        assert_eq!(d.buffered(), 13);
        assert_eq!(
            d.next_frame().unwrap(),
            Some([1, 2, 2, 2, 2, 2, 2, 2, 2].to_vec())
        );
    }

    #[test]
    fn negative_length_poisons() {
        let mut d = FrameDecoder::new();
        d.push(&(-1i32).to_be_bytes());
        assert_eq!(d.next_frame(), Err(ProtoError::InvalidLength(-1)));
        d.push(&frame(b"ok"));
        assert_eq!(d.next_frame(), Err(ProtoError::InvalidLength(-1)));
        assert_eq!(d.buffered(), 0);
        assert!(d.is_failed());
    }

    #[test]
    fn oversized_length_refused_early() {
        let mut d = FrameDecoder::new();
        d.push(&0x7fff_ffffu32.to_be_bytes()[..2]);
        assert_eq!(d.next_frame(), Ok(None));
        d.push(&0x7fff_ffffu32.to_be_bytes()[2..]);
        assert_eq!(d.buffered(), 0);
        assert_eq!(d.next_frame(), Err(ProtoError::FrameTooLarge(0x7fff_ffff)));
    }

    #[test]
    fn largest_frame_accepted() {
        let payload = vec![7u8; MAX_FRAME];
        let mut d = FrameDecoder::new();
        d.push(&frame(&payload));
        assert_eq!(d.next_frame().unwrap().map(|f| f.len()), Some(MAX_FRAME));
        let mut d = FrameDecoder::new();
        d.push(&u32::try_from(MAX_FRAME + 1).unwrap().to_be_bytes());
        assert_eq!(
            d.next_frame(),
            Err(ProtoError::FrameTooLarge(MAX_FRAME + 1))
        );
    }
}
