//! The two phases that run before the command: export (announce the service) and environment
//! (discover its configuration).

pub mod environment;
pub mod export;
