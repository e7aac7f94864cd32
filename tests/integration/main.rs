//! Integration tests: the built binary, run against temporary directories of real scripts.
//! One module per concern; `support` is the builder they share.

mod etcd_faults;
mod etcd_server;
mod pki;
mod support;

mod aarch64;
mod cli;
mod compose;
mod containers;
mod discovery;
mod environment;
mod etcd;
mod etcd_bounds;
mod etcd_tls;
mod examples;
mod exec;
mod export;
mod hosts;
mod idle;
mod jobs;
mod kv;
mod kv_stores;
mod loadbalancer;
mod misbehaving;
mod packaging;
mod partition;
mod plan;
mod print;
mod publish;
mod require;
mod scratch;
mod scripts;
mod stopping;
mod store_safety;
mod supervise;
mod template_kv;
mod templates;
mod user;
mod watch;
