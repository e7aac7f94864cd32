//! Integration tests: the built binary, run against temporary directories of real scripts.
//! One module per concern; `support` is the builder they share.

mod support;

mod cli;
mod environment;
mod exec;
mod export;
mod misbehaving;
mod print;
mod scripts;
