//! The registry in templates (docs/reference.md §14): `kv("KEY")`, `kv_list("PREFIX")` and
//! `instances("NAME")`.
//!
//! A render reaches the store through a connection of its own, opened on the render's thread
//! (never the supervisor's) at its first read and kept between renders, so a re-run pays no new
//! connection ([`KvSource`]). One render sees one view: each distinct key or prefix is read
//! once, a second call gets the same answer, and all of a render's reads together are bounded
//! by the 5 s a store may take. What a render read is recorded with what it saw, as the
//! scripts' reads are, so that under `--watch` a change to it re-runs discovery.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use minijinja::value::Value;
use minijinja::ErrorKind;

use crate::error::Error;
use crate::registry::{self, Access, Key, Lookup, Seen, Store, REACH_TIMEOUT};

/// The names of the functions: they win over variables of the same name (a variable `kv` is
/// still `env["kv"]`).
pub const FUNCTIONS: [&str; 3] = ["kv", "kv_list", "instances"];

/// Where templates read the registry: its URL and access, and the store once a render
/// opened it.
pub struct KvSource {
    url: String,
    access: Access,
    store: Option<Box<dyn Store>>,
}

impl KvSource {
    pub fn new(url: String, access: Access) -> KvSource {
        KvSource {
            url,
            access,
            store: None,
        }
    }

    /// The store, opened now if no render opened it yet.
    fn store(&mut self) -> Result<&mut dyn Store, Error> {
        if self.store.is_none() {
            self.store = Some(registry::open(&self.url, self.access.clone())?);
        }
        Ok(self.store.as_deref_mut().expect("opened above"))
    }
}

/// What one render (of every template) read of the registry, and the source it reads from.
pub struct KvReads {
    source: Option<KvSource>,
    /// Each distinct lookup, and what it saw: a second call gets the same answer.
    seen: BTreeMap<Lookup, Seen>,
    /// Keys `kv()` found absent (a bare use of one is an error a `--wait` waits out).
    absent: Vec<String>,
    /// When the render's reads started: all of them together are bounded.
    started: Option<Instant>,
    /// A failure of the store or of a key: the render's error, whatever minijinja makes of it.
    failure: Option<Error>,
}

impl KvReads {
    /// Reads from `source`; None when no registry is configured (each call is then an error).
    pub fn new(source: Option<KvSource>) -> KvReads {
        KvReads {
            source,
            seen: BTreeMap::new(),
            absent: Vec::new(),
            started: None,
            failure: None,
        }
    }

    /// The source back (for the next render), and each lookup with the digest of what it saw.
    pub fn finish(self) -> (Option<KvSource>, Vec<(Lookup, String)>) {
        let reads = self
            .seen
            .iter()
            .map(|(lookup, seen)| (lookup.clone(), seen.digest()))
            .collect();
        (self.source, reads)
    }

    /// The failure to report instead of minijinja's error, if a read failed.
    pub fn take_failure(&mut self) -> Option<Error> {
        self.failure.take()
    }

    /// Whether `kv(key)` found the key absent.
    pub fn found_absent(&self, key: &str) -> bool {
        self.absent.iter().any(|absent| absent == key)
    }

    pub fn absent(&self) -> &[String] {
        &self.absent
    }

    /// What `lookup` sees, read now or earlier in this render; `call` is the template's call
    /// that asks, for a message.
    fn look(&mut self, lookup: Lookup, call: impl FnOnce() -> String) -> Result<Seen, Error> {
        if let Some(seen) = self.seen.get(&lookup) {
            return Ok(seen.clone());
        }
        let Some(source) = self.source.as_mut() else {
            return Err(Error::Usage(format!(
                "{}: no registry is configured (--kv or ENVHARNESS_KV)",
                call()
            )));
        };
        let started = *self.started.get_or_insert_with(Instant::now);
        let url = source.url.clone();
        if started.elapsed() > REACH_TIMEOUT {
            return Err(Error::Store {
                url,
                reason: format!(
                    "a template's reads took more than {} s",
                    REACH_TIMEOUT.as_secs()
                ),
            });
        }
        let store = source.store()?;
        store.limit_calls(REACH_TIMEOUT.saturating_sub(started.elapsed()));
        let seen = registry::look_up(store, &lookup)?;
        self.seen.insert(lookup, seen.clone());
        Ok(seen)
    }

    /// Keeps `err` as the render's failure and gives minijinja an error that stops it.
    fn fail(&mut self, err: Error) -> minijinja::Error {
        let shown = err.to_string();
        self.failure.get_or_insert(err);
        minijinja::Error::new(ErrorKind::InvalidOperation, shown)
    }
}

/// The reads of a render, shared with its functions.
pub type SharedReads = Arc<Mutex<KvReads>>;

/// Adds the functions to `engine`, reading through `reads`.
pub fn add_functions(engine: &mut minijinja::Environment<'_>, reads: &SharedReads) {
    let shared = reads.clone();
    engine.add_function("kv", move |key: String| {
        with(&shared, |reads| value_of(reads, &key))
    });
    let shared = reads.clone();
    engine.add_function("kv_list", move |prefix: String| {
        with(&shared, |reads| list(reads, &prefix))
    });
    let shared = reads.clone();
    engine.add_function("instances", move |name: String| {
        with(&shared, |reads| instances(reads, &name))
    });
}

fn with(
    shared: &SharedReads,
    call: impl FnOnce(&mut KvReads) -> Result<Value, Error>,
) -> Result<Value, minijinja::Error> {
    let mut reads = shared.lock().unwrap_or_else(PoisonError::into_inner);
    call(&mut reads).map_err(|err| reads.fail(err))
}

/// `kv("KEY")`: as `kv get` finds it; undefined when absent.
fn value_of(reads: &mut KvReads, key: &str) -> Result<Value, Error> {
    let parsed = Key::parse(key)?;
    match reads.look(Lookup::Get(parsed), || format!("kv(\"{key}\")"))? {
        Seen::Value(Some(value)) => text(key, value),
        Seen::Value(None) | Seen::Pairs(_) => {
            if !reads.found_absent(key) {
                reads.absent.push(key.to_owned());
            }
            Ok(Value::UNDEFINED)
        }
    }
}

/// `kv_list("PREFIX")`: each live key under PREFIX (a string prefix), in byte order, with its
/// value.
fn list(reads: &mut KvReads, prefix: &str) -> Result<Value, Error> {
    let pairs = live_pairs(reads, prefix, || format!("kv_list(\"{prefix}\")"))?;
    let mut map = Vec::with_capacity(pairs.len());
    for (key, value) in pairs {
        let value = text(&key, value)?;
        map.push((Value::from(key), value));
    }
    Ok(Value::from_pairs(map))
}

/// `instances("NAME")`: the values of the live keys `NAME/INSTANCE` (one level), ordered by
/// INSTANCE: the published instances of a service.
fn instances(reads: &mut KvReads, name: &str) -> Result<Value, Error> {
    Key::parse(name)?;
    let prefix = format!("{name}/");
    let mut values = Vec::new();
    for (key, value) in live_pairs(reads, &prefix, || format!("instances(\"{name}\")"))? {
        if !key[prefix.len()..].contains('/') {
            values.push(text(&key, value)?);
        }
    }
    Ok(Value::from(values))
}

fn live_pairs(
    reads: &mut KvReads,
    prefix: &str,
    call: impl FnOnce() -> String,
) -> Result<Vec<(String, Vec<u8>)>, Error> {
    match reads.look(Lookup::List(prefix.to_owned()), call)? {
        Seen::Pairs(pairs) => Ok(pairs),
        Seen::Value(_) => Ok(Vec::new()),
    }
}

/// A value as template text; one that is not UTF-8 is an error naming the key.
fn text(key: &str, value: Vec<u8>) -> Result<Value, Error> {
    String::from_utf8(value)
        .map(Value::from)
        .map_err(|_| Error::Key {
            key: key.to_owned(),
            reason: "the value is not UTF-8, so a template cannot use it".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{LeaseId, Watch};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A store of fixed keys that counts the reads made of it.
    struct Counting {
        keys: Vec<(String, Vec<u8>)>,
        reads: Arc<AtomicUsize>,
    }

    impl Store for Counting {
        fn url(&self) -> &str {
            "test://counting"
        }
        fn get(&mut self, key: &Key) -> Result<Option<Vec<u8>>, Error> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .keys
                .iter()
                .find(|(k, _)| k == key.as_str())
                .map(|(_, v)| v.clone()))
        }
        fn list(&mut self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, Error> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok(self
                .keys
                .iter()
                .filter(|(k, _)| k.starts_with(prefix))
                .cloned()
                .collect())
        }
        fn put(&mut self, _: &Key, _: &[u8], _: Option<LeaseId>) -> Result<(), Error> {
            unreachable!("templates only read")
        }
        fn delete(&mut self, _: &Key) -> Result<(), Error> {
            unreachable!("templates only read")
        }
        fn grant(&mut self, _: Duration) -> Result<LeaseId, Error> {
            unreachable!("templates only read")
        }
        fn keep_alive(&mut self, _: LeaseId) -> Result<bool, Error> {
            unreachable!("templates only read")
        }
        fn revoke(&mut self, _: LeaseId) -> Result<(), Error> {
            unreachable!("templates only read")
        }
        fn watch(&mut self, _: &str) -> Result<Box<dyn Watch>, Error> {
            unreachable!("templates only read")
        }
    }

    fn reads_of(keys: &[(&str, &str)]) -> (KvReads, Arc<AtomicUsize>) {
        let count = Arc::new(AtomicUsize::new(0));
        let store = Counting {
            keys: keys
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            reads: count.clone(),
        };
        let source = KvSource {
            url: "test://counting".into(),
            access: Access::default(),
            store: Some(Box::new(store)),
        };
        (KvReads::new(Some(source)), count)
    }

    #[test]
    fn one_render_reads_each_key_and_prefix_once() {
        let (mut reads, count) = reads_of(&[("db/main", "x"), ("web/a", "1"), ("web/b", "2")]);
        let first = value_of(&mut reads, "db").unwrap();
        let reads_after_one = count.load(Ordering::SeqCst);
        assert_eq!(value_of(&mut reads, "db").unwrap(), first);
        instances(&mut reads, "web").unwrap();
        list(&mut reads, "web/").unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            reads_after_one + 1,
            "the second kv() and the second web/ read reached the store"
        );
        let (_, recorded) = reads.finish();
        assert_eq!(recorded.len(), 2, "{recorded:?}");
    }

    #[test]
    fn absent_keys_are_undefined_and_remembered() {
        let (mut reads, _) = reads_of(&[]);
        assert!(value_of(&mut reads, "nope").unwrap().is_undefined());
        assert!(reads.found_absent("nope"));
        assert!(value_of(&mut reads, "a b").is_err());
    }

    #[test]
    fn instances_are_one_level_deep_in_instance_order() {
        let (mut reads, _) = reads_of(&[
            ("web/a", "1"),
            ("web/a/x", "no"),
            ("web/b", "2"),
            ("webby", "no"),
        ]);
        let found = instances(&mut reads, "web").unwrap();
        assert_eq!(found.to_string(), "['1', '2']");
    }
}
