//! Records stored deflated where the store bills writes by size.
//!
//! DynamoDB bills a write (and a delete, by the item it removes) per started KiB. The
//! records stages write in bulk, the distributor's progress record with its redo record and
//! the writer's log records of several txns, are mostly JSON names repeated per txn, and
//! deflate to a fraction. Elsewhere deflating costs time (the compressor's tables alone touch
//! a quarter MiB of a fresh instance's memory) and saves nothing, so it happens only where
//! the platform says writes are billed by size (`FAASKEEPER_WRITE_UNIT`, set by the bundled
//! host over DynamoDB), for records over one unit, and when the result is smaller.

/// Prefix of a value stored deflated (raw DEFLATE follows). It cannot start JSON.
pub const DEFLATED: &[u8] = b"\0fk-deflate\0";

/// Largest record inflated (far above what any record can need within a stage's memory
/// limit): a corrupt or hostile value cannot make a stage allocate without bound.
const INFLATED_MAX: usize = 1 << 30;

/// Room for the key and attribute names of an item within a write unit.
const ITEM_OVERHEAD: usize = 24;

/// The size by which the system bucket bills a write, if it does (the platform tells:
/// `FAASKEEPER_WRITE_UNIT`).
pub fn write_unit() -> Option<usize> {
    std::env::var("FAASKEEPER_WRITE_UNIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n > ITEM_OVERHEAD)
}

/// The bytes to store for `json`: deflated where writes are billed by size, `json` takes more
/// than one unit, and deflating makes it smaller; `json` itself otherwise. The fastest level:
/// on these records it packs within a few percent of the default level.
pub fn pack(json: Vec<u8>) -> Vec<u8> {
    if write_unit().is_some_and(|unit| json.len() + ITEM_OVERHEAD > unit) {
        let packed = miniz_oxide::deflate::compress_to_vec(&json, 1);
        if packed.len() + DEFLATED.len() < json.len() {
            let mut bytes = Vec::with_capacity(DEFLATED.len() + packed.len());
            bytes.extend_from_slice(DEFLATED);
            bytes.extend_from_slice(&packed);
            return bytes;
        }
    }
    json
}

/// The JSON of a stored value, deflated or not.
pub fn unpack(bytes: Vec<u8>) -> Result<Vec<u8>, String> {
    match bytes.strip_prefix(DEFLATED) {
        Some(packed) => miniz_oxide::inflate::decompress_to_vec_with_limit(packed, INFLATED_MAX)
            .map_err(|e| format!("does not inflate: {e}")),
        None => Ok(bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_values_unpack_and_plain_ones_pass_through() {
        let json = br#"{"a":1}"#.to_vec();
        assert_eq!(unpack(json.clone()), Ok(json));
        let long = serde_json::to_vec(&vec!["the same name again"; 200]).expect("json");
        let mut packed = DEFLATED.to_vec();
        packed.extend(miniz_oxide::deflate::compress_to_vec(&long, 1));
        assert_eq!(unpack(packed), Ok(long));
        let mut garbage = DEFLATED.to_vec();
        garbage.extend_from_slice(b"\xff\xfe not deflate");
        assert!(unpack(garbage).is_err());
    }
}
