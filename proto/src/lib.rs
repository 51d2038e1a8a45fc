//! The gRPC wire contract between wbhealth agents and the server (`wbhealth.v1`).
//!
//! Generated from `proto/wbhealth/v1/*.proto` at build time. Both sides depend on this crate;
//! conversions to and from domain types live with each side, not here.

/// Version 1 of the agent protocol.
#[allow(missing_docs, clippy::doc_markdown, clippy::large_enum_variant)]
pub mod v1 {
    tonic::include_proto!("wbhealth.v1");
}
