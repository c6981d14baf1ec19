//! End-to-end semantics through the real host, the real `.wasm` stages and the client
//! (Guarantees 2, 5, 6 and 7 of DESIGN.md, at the scope of the foundation issue).
//! The cases are in `e2e/cases.rs`; `e2e_aws.rs` runs the same ones on the AWS backend.

use faaskeeper_tests::host_url;

include!("e2e/cases.rs");
