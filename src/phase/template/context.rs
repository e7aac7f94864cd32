//! The final environment as a template's context: every variable as a top-level name, and all
//! of them in the map `env`; and what a render looked up (the names it did not find, for the
//! undefined-name message; the first whose value is not UTF-8, an error).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use minijinja::value::{Enumerator, Object, Value};

use crate::variables::Environment;

/// The final environment as template values, recording what a render looks up: the names it
/// did not find (for the undefined-name message) and the first one used whose value is not
/// UTF-8 (an error, since a template's output is text).
pub(super) struct Vars {
    values: HashMap<String, Value>,
    not_utf8: HashSet<String>,
    /// Every name, in byte order: `env`'s keys.
    names: Vec<Value>,
    record: Mutex<Record>,
}

#[derive(Default)]
pub(super) struct Record {
    pub(super) missing: Vec<String>,
    pub(super) not_utf8: Option<String>,
}

impl Vars {
    pub(super) fn new(env: &Environment) -> Vars {
        let mut values = HashMap::with_capacity(env.len());
        let mut not_utf8 = HashSet::new();
        for (name, value) in env {
            // A name that is not UTF-8 cannot be written in a template.
            let Some(name) = name.to_str() else { continue };
            let text = match value.to_str() {
                Some(text) => text.to_owned(),
                None => {
                    not_utf8.insert(name.to_owned());
                    value.to_string_lossy().into_owned()
                }
            };
            values.insert(name.to_owned(), Value::from(text));
        }
        let mut names: Vec<&String> = values.keys().collect();
        names.sort();
        let names = names
            .into_iter()
            .map(|name| Value::from(name.as_str()))
            .collect();
        Vars {
            values,
            not_utf8,
            names,
            record: Mutex::default(),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn start(&self) {
        *self.record() = Record::default();
    }

    pub(super) fn finish(&self) -> Record {
        std::mem::take(&mut *self.record())
    }

    fn lookup(&self, name: &str) -> Option<Value> {
        match self.values.get(name) {
            Some(value) => {
                if self.not_utf8.contains(name) {
                    self.record()
                        .not_utf8
                        .get_or_insert_with(|| name.to_owned());
                }
                Some(value.clone())
            }
            None => {
                let mut record = self.record();
                if !record.missing.iter().any(|seen| seen == name) {
                    record.missing.push(name.to_owned());
                }
                None
            }
        }
    }
}

// Written by hand: minijinja may format an object, and this one holds values.
impl fmt::Debug for Vars {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{} variables>", self.values.len())
    }
}

/// The template's top level: every variable by name, and `env`.
#[derive(Debug)]
pub(super) struct Root(pub(super) Arc<Vars>);

impl Object for Root {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.get_value_by_str(key.as_str()?)
    }

    fn get_value_by_str(self: &Arc<Self>, name: &str) -> Option<Value> {
        // `env` is the map even if a variable is named `env`: templates can rely on it.
        if name == "env" {
            return Some(Value::from_object(EnvMap(self.0.clone())));
        }
        // The registry's functions win over variables of the same name (`env["kv"]` stays).
        if super::registry::FUNCTIONS.contains(&name) {
            return None;
        }
        self.0.lookup(name)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::NonEnumerable
    }
}

/// `env`: a map of every variable, iterated in byte order of the names.
#[derive(Debug)]
struct EnvMap(Arc<Vars>);

impl Object for EnvMap {
    fn get_value(self: &Arc<Self>, key: &Value) -> Option<Value> {
        self.0.lookup(key.as_str()?)
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        Enumerator::Values(self.0.names.clone())
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        Some(self.0.names.len())
    }
}
