//! The check catalogue and the result vocabulary that the agent and the server share.
//!
//! Every check that wbhealth knows has one [`CheckDef`] here, with a stable id that never
//! changes once published. The agent and the server both read this catalogue, so a check's
//! title, severity, documentation link and remediation template are written once.

mod catalogue;
mod checks;
mod reference;
mod remediation;
mod vocabulary;

pub use catalogue::{CATALOGUE, CheckDef, DataSource, find};
pub use reference::reference_markdown;
pub use remediation::render;
pub use vocabulary::{Category, RunsOn, Severity, Status, UnknownValue};
