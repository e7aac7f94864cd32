//! Integration tests: the built binary, run against temporary directories of real scripts.
//! One module per concern; `support` is the builder they share.

mod etcd_server;
mod support;

mod cli;
mod environment;
mod etcd;
mod examples;
mod exec;
mod export;
mod jobs;
mod misbehaving;
mod plan;
mod print;
mod scratch;
mod scripts;
mod supervise;
