//! The single error type of the crate.

/// Why bytes could not be decoded (or a frame could not be built).
///
/// Every decoding failure is reported through this type; no input makes the crate panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The record needs more bytes than the payload holds.
    #[error("record truncated")]
    Truncated,
    /// A length or element count that cannot be valid (negative and not the null marker -1).
    #[error("invalid length {0}")]
    InvalidLength(i32),
    /// A string that is not UTF-8.
    #[error("string is not valid UTF-8")]
    InvalidUtf8,
    /// A request header names an op code this crate does not decode.
    #[error("unknown op code {0}")]
    UnknownOpCode(i32),
    /// A frame longer than [`MAX_FRAME`](crate::MAX_FRAME).
    #[error("frame of {0} bytes exceeds the limit")]
    FrameTooLarge(usize),
    /// Bytes left over after a record that must fill its payload exactly.
    #[error("trailing bytes after the record")]
    Trailing,
    /// A null string where ZooKeeper requires a value (a `ustring` field).
    #[error("unexpected null string")]
    UnexpectedNull,
    /// Structurally wrong input that the other variants do not describe.
    #[error("invalid record: {0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T, E = ProtoError> = std::result::Result<T, E>;
