//! From argv to a [`Plan`]: [`cli`] parses (and nothing else), [`plan`] decides what the options
//! and `ENVHARNESS_*` variables mean, once, and builds each layer's own settings. The layers
//! below never see the flags: they get their settings from the plan.

pub mod cli;
pub mod plain;
pub mod plan;

pub use plan::{Mode, Plan};
