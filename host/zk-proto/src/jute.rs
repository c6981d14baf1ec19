//! Jute's binary encoding: big-endian integers, one-byte booleans and length-prefixed
//! buffers, strings and vectors where a length of -1 stands for null.

use faaskeeper_core::Stat;

use crate::error::{ProtoError, Result};
use crate::request::Acl;

/// Smallest encoding of a string or buffer (its length), used to bound vector counts.
const MIN_STRING_LEN: usize = 4;
/// Smallest encoding of an ACL: perms plus two empty strings.
const MIN_ACL_LEN: usize = 12;

/// Reads jute fields from a byte slice, front to back.
///
/// Every length read from the input is compared with the bytes that remain before
/// anything is allocated, so a hostile length costs nothing.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.buf
    }

    /// Succeeds only if every byte has been read.
    pub fn finish(&self) -> Result<()> {
        if self.is_empty() {
            Ok(())
        } else {
            Err(ProtoError::Trailing)
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let (head, tail) = self
            .buf
            .split_first_chunk::<N>()
            .ok_or(ProtoError::Truncated)?;
        self.buf = tail;
        Ok(*head)
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.buf.len() {
            return Err(ProtoError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    /// A big-endian `int`.
    pub fn read_i32(&mut self) -> Result<i32> {
        self.array().map(i32::from_be_bytes)
    }

    /// A big-endian `long`.
    pub fn read_i64(&mut self) -> Result<i64> {
        self.array().map(i64::from_be_bytes)
    }

    /// A `boolean`: one byte, any nonzero value is true (as Java's `readBoolean`).
    pub fn read_bool(&mut self) -> Result<bool> {
        self.array::<1>().map(|[b]| b != 0)
    }

    /// A length prefix: `None` for the null marker -1, checked against the bytes left.
    fn read_len(&mut self) -> Result<Option<usize>> {
        let len = self.read_i32()?;
        if len == -1 {
            return Ok(None);
        }
        let n = usize::try_from(len).map_err(|_| ProtoError::InvalidLength(len))?;
        if n > self.buf.len() {
            return Err(ProtoError::Truncated);
        }
        Ok(Some(n))
    }

    /// A `buffer` borrowed from the input; `None` when null.
    pub fn read_buffer_ref(&mut self) -> Result<Option<&'a [u8]>> {
        match self.read_len()? {
            None => Ok(None),
            Some(n) => self.take(n).map(Some),
        }
    }

    /// A `buffer`; `None` when null.
    pub fn read_buffer(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(self.read_buffer_ref()?.map(<[u8]>::to_vec))
    }

    /// A `ustring` borrowed from the input; `None` when null.
    pub fn read_str_ref(&mut self) -> Result<Option<&'a str>> {
        match self.read_buffer_ref()? {
            None => Ok(None),
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| ProtoError::InvalidUtf8),
        }
    }

    /// A `ustring`; `None` when null.
    pub fn read_string(&mut self) -> Result<Option<String>> {
        Ok(self.read_str_ref()?.map(str::to_owned))
    }

    /// A `ustring` that must not be null (paths, schemes, ids).
    pub fn read_ustring(&mut self) -> Result<String> {
        self.read_string()?.ok_or(ProtoError::UnexpectedNull)
    }

    /// A `vector` whose elements each take at least `min_elem` bytes.
    ///
    /// A null vector reads as empty: ZooKeeper's server treats the two alike, and
    /// callers have nothing useful to do with the difference.
    pub fn read_vec<T>(
        &mut self,
        min_elem: usize,
        mut elem: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let count = self.read_i32()?;
        if count == -1 {
            return Ok(Vec::new());
        }
        let n = usize::try_from(count).map_err(|_| ProtoError::InvalidLength(count))?;
        // Bounds the allocation below (and the loop) by the input actually present.
        if n > self.buf.len() / min_elem.max(1) {
            return Err(ProtoError::Truncated);
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(elem(self)?);
        }
        Ok(out)
    }

    /// A `vector<ustring>`; null reads as empty and null elements are errors.
    pub fn read_vec_string(&mut self) -> Result<Vec<String>> {
        self.read_vec(MIN_STRING_LEN, Self::read_ustring)
    }

    /// A `Stat` record.
    pub fn read_stat(&mut self) -> Result<Stat> {
        Ok(Stat {
            czxid: self.read_i64()?,
            mzxid: self.read_i64()?,
            ctime: self.read_i64()?,
            mtime: self.read_i64()?,
            version: self.read_i32()?,
            cversion: self.read_i32()?,
            aversion: self.read_i32()?,
            ephemeral_owner: self.read_i64()?,
            data_length: self.read_i32()?,
            num_children: self.read_i32()?,
            pzxid: self.read_i64()?,
        })
    }

    /// An `ACL` record: perms, then the `Id` (scheme, id).
    pub fn read_acl(&mut self) -> Result<Acl> {
        Ok(Acl {
            perms: self.read_i32()?,
            scheme: self.read_ustring()?,
            id: self.read_ustring()?,
        })
    }

    /// A `vector<ACL>`; null reads as empty.
    pub fn read_vec_acl(&mut self) -> Result<Vec<Acl>> {
        self.read_vec(MIN_ACL_LEN, Self::read_acl)
    }
}

/// Appends jute fields to a growing buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Self {
        Writer::default()
    }

    /// An empty writer with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Writer {
            buf: Vec::with_capacity(capacity),
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The bytes written so far.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }

    /// The bytes written.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }

    /// A big-endian `int`.
    pub fn write_i32(&mut self, v: i32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A big-endian `long`.
    pub fn write_i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// A `boolean` as 0 or 1.
    pub fn write_bool(&mut self, v: bool) {
        self.buf.push(u8::from(v));
    }

    /// Jute cannot express lengths past `i32::MAX`; saturating keeps the encoders
    /// infallible, and such a payload is far beyond [`MAX_FRAME`](crate::MAX_FRAME),
    /// so [`try_frame`](crate::try_frame) rejects it before it can reach a peer.
    fn write_len(&mut self, len: usize) {
        self.write_i32(i32::try_from(len).unwrap_or(i32::MAX));
    }

    /// A non-null `buffer`.
    pub fn write_buffer(&mut self, b: &[u8]) {
        self.write_len(b.len());
        self.buf.extend_from_slice(b);
    }

    /// A `buffer`, -1 for `None`.
    pub fn write_opt_buffer(&mut self, b: Option<&[u8]>) {
        match b {
            Some(b) => self.write_buffer(b),
            None => self.write_i32(-1),
        }
    }

    /// A non-null `ustring`.
    pub fn write_string(&mut self, s: &str) {
        self.write_buffer(s.as_bytes());
    }

    /// A `ustring`, -1 for `None`.
    pub fn write_opt_string(&mut self, s: Option<&str>) {
        self.write_opt_buffer(s.map(str::as_bytes));
    }

    /// A non-null `vector<ustring>`.
    pub fn write_vec_string<S: AsRef<str>>(&mut self, v: &[S]) {
        self.write_len(v.len());
        for s in v {
            self.write_string(s.as_ref());
        }
    }

    /// A `Stat` record.
    pub fn write_stat(&mut self, s: &Stat) {
        self.write_i64(s.czxid);
        self.write_i64(s.mzxid);
        self.write_i64(s.ctime);
        self.write_i64(s.mtime);
        self.write_i32(s.version);
        self.write_i32(s.cversion);
        self.write_i32(s.aversion);
        self.write_i64(s.ephemeral_owner);
        self.write_i32(s.data_length);
        self.write_i32(s.num_children);
        self.write_i64(s.pzxid);
    }

    /// An `ACL` record.
    pub fn write_acl(&mut self, acl: &Acl) {
        self.write_i32(acl.perms);
        self.write_string(&acl.scheme);
        self.write_string(&acl.id);
    }

    /// A non-null `vector<ACL>`.
    pub fn write_vec_acl(&mut self, acl: &[Acl]) {
        self.write_len(acl.len());
        for a in acl {
            self.write_acl(a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primitives_round_trip() {
        let mut w = Writer::new();
        w.write_i32(-7);
        w.write_i64(0x0102_0304_0506_0708);
        w.write_bool(true);
        w.write_bool(false);
        w.write_buffer(b"abc");
        w.write_opt_buffer(None);
        w.write_string("h\u{e9}llo");
        w.write_opt_string(None);
        w.write_vec_string(&["a", "bc"]);
        let bytes = w.into_inner();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.read_i32().unwrap(), -7);
        assert_eq!(r.read_i64().unwrap(), 0x0102_0304_0506_0708);
        assert!(r.read_bool().unwrap());
        assert!(!r.read_bool().unwrap());
        assert_eq!(r.read_buffer().unwrap(), Some(b"abc".to_vec()));
        assert_eq!(r.read_buffer().unwrap(), None);
        assert_eq!(r.read_string().unwrap().as_deref(), Some("h\u{e9}llo"));
        assert_eq!(r.read_string().unwrap(), None);
        assert_eq!(r.read_vec_string().unwrap(), vec!["a", "bc"]);
        assert!(r.is_empty());
        r.finish().unwrap();
    }

    #[test]
    fn big_endian_layout() {
        let mut w = Writer::new();
        w.write_i32(0x0102_0304);
        w.write_string("ab");
        assert_eq!(w.as_slice(), &[1, 2, 3, 4, 0, 0, 0, 2, b'a', b'b']);
    }

    #[test]
    fn nonzero_bool_is_true() {
        assert!(Reader::new(&[0x80]).read_bool().unwrap());
    }

    #[test]
    fn huge_lengths_fail_without_allocating() {
        let mut bytes = i32::MAX.to_be_bytes().to_vec();
        bytes.extend_from_slice(b"tiny");
        assert_eq!(
            Reader::new(&bytes).read_string(),
            Err(ProtoError::Truncated)
        );
        assert_eq!(
            Reader::new(&bytes).read_buffer(),
            Err(ProtoError::Truncated)
        );
        // A vector count is bounded by the smallest possible element, too.
        assert_eq!(
            Reader::new(&bytes).read_vec_string(),
            Err(ProtoError::Truncated)
        );
        assert_eq!(
            Reader::new(&bytes).read_vec_acl(),
            Err(ProtoError::Truncated)
        );
    }

    #[test]
    fn negative_lengths() {
        let bytes = (-2i32).to_be_bytes();
        assert_eq!(
            Reader::new(&bytes).read_buffer(),
            Err(ProtoError::InvalidLength(-2))
        );
        assert_eq!(
            Reader::new(&bytes).read_vec_string(),
            Err(ProtoError::InvalidLength(-2))
        );
        let null = (-1i32).to_be_bytes();
        assert_eq!(Reader::new(&null).read_vec_string(), Ok(vec![]));
        assert_eq!(
            Reader::new(&null).read_ustring(),
            Err(ProtoError::UnexpectedNull)
        );
    }

    #[test]
    fn invalid_utf8() {
        let bytes = [0, 0, 0, 2, 0xff, 0xfe];
        assert_eq!(
            Reader::new(&bytes).read_string(),
            Err(ProtoError::InvalidUtf8)
        );
    }

    #[test]
    fn truncated_primitives() {
        assert_eq!(
            Reader::new(&[1, 2, 3]).read_i32(),
            Err(ProtoError::Truncated)
        );
        assert_eq!(Reader::new(&[0; 7]).read_i64(), Err(ProtoError::Truncated));
        assert_eq!(Reader::new(&[]).read_bool(), Err(ProtoError::Truncated));
        let mut r = Reader::new(&[9]);
        r.read_bool().unwrap();
        assert_eq!(r.read_i32(), Err(ProtoError::Truncated));
    }

    #[test]
    fn stat_layout() {
        let stat = Stat {
            czxid: 1,
            mzxid: 2,
            ctime: 3,
            mtime: 4,
            version: 5,
            cversion: 6,
            aversion: 7,
            ephemeral_owner: 8,
            data_length: 9,
            num_children: 10,
            pzxid: 11,
        };
        let mut w = Writer::new();
        w.write_stat(&stat);
        let bytes = w.into_inner();
        // 6 longs and 5 ints.
        assert_eq!(bytes.len(), 6 * 8 + 5 * 4);
        assert_eq!(&bytes[32..36], &5i32.to_be_bytes());
        assert_eq!(&bytes[bytes.len() - 8..], &11i64.to_be_bytes());
        assert_eq!(Reader::new(&bytes).read_stat().unwrap(), stat);
    }
}
