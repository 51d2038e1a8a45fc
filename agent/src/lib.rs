//! wbhealth agent: probes gather facts on the Entra Connect sync server, checks turn them
//! into results, and the client delivers them to the server through a durable spool.
//!
//! `probe` → `facts` → `checks` → `result` is the whole diagnosis and needs no server;
//! `runner` ties it together, `render` prints it, and `client`, `spool`, `state` and `wire`
//! deliver it.

pub mod ad;
pub mod checks;
pub mod client;
pub mod config;
pub mod facts;
pub mod host;
pub mod probe;
pub mod render;
pub mod result;
pub mod runner;
pub mod spool;
pub mod state;
pub mod wire;
