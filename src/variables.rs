//! The variables the environment phase sets, in the order they were first set (which is the
//! order `--print` shows), and the final environment the command gets: the harness's own
//! environment with those variables laid over it.

use std::collections::HashMap;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::os::c_string;

/// The harness's environment as it started, in its order.
pub type Environment = Vec<(OsString, OsString)>;

/// NAME -> VALUE, remembering the order of first definition; a later definition overrides the
/// value but keeps the place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Variables {
    entries: Vec<(String, Vec<u8>)>,
    index: HashMap<String, usize>,
}

impl Variables {
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.index.get(name) {
            Some(&at) => self.entries[at].1 = value,
            None => {
                self.index.insert(name.to_owned(), self.entries.len());
                self.entries.push((name.to_owned(), value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.index
            .get(name)
            .map(|&at| self.entries[at].1.as_slice())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.entries
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_slice()))
    }

    /// `base` with these variables laid over it: overridden ones keep their place, new ones
    /// follow in the order they were set.
    pub fn over(&self, base: &[(OsString, OsString)]) -> Environment {
        let mut merged: Environment = base
            .iter()
            .map(
                |(name, value)| match name.to_str().and_then(|n| self.get(n)) {
                    Some(ours) => (name.clone(), OsString::from_vec(ours.to_vec())),
                    None => (name.clone(), value.clone()),
                },
            )
            .collect();
        let in_base = |name: &str| base.iter().any(|(b, _)| b == name);
        for (name, value) in self.iter().filter(|(name, _)| !in_base(name)) {
            merged.push((name.into(), OsString::from_vec(value.to_vec())));
        }
        merged
    }
}

/// execve's `NAME=VALUE` strings.
pub fn env_strings(env: &[(OsString, OsString)]) -> Vec<CString> {
    env.iter()
        .map(|(name, value)| c_string(&[name.as_bytes(), b"=", value.as_bytes()].concat()))
        .collect()
}

/// One trailing `\n` or `\r\n` goes; everything else stays.
pub fn strip_one_newline(mut value: Vec<u8>) -> Vec<u8> {
    if value.ends_with(b"\n") {
        value.pop();
        if value.ends_with(b"\r") {
            value.pop();
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_trailing_newline_goes() {
        assert_eq!(strip_one_newline(b"x\n\n".to_vec()), b"x\n");
        assert_eq!(strip_one_newline(b"x\r\n".to_vec()), b"x");
        assert_eq!(strip_one_newline(b"x\r".to_vec()), b"x\r");
        assert_eq!(strip_one_newline(b"x".to_vec()), b"x");
    }

    #[test]
    fn later_definitions_override_but_keep_their_place() {
        let mut vars = Variables::default();
        vars.set("A", b"1".to_vec());
        vars.set("B", b"2".to_vec());
        vars.set("A", b"3".to_vec());
        let seen: Vec<_> = vars.iter().collect();
        assert_eq!(seen, vec![("A", &b"3"[..]), ("B", &b"2"[..])]);
    }

    #[test]
    fn over_replaces_in_place_and_appends_new_names() {
        let base = vec![
            (OsString::from("PATH"), OsString::from("/bin")),
            (OsString::from("HOME"), OsString::from("/root")),
        ];
        let mut vars = Variables::default();
        vars.set("NEW", b"n".to_vec());
        vars.set("PATH", b"/opt/bin".to_vec());
        let merged = vars.over(&base);
        let pairs: Vec<(&str, &str)> = merged
            .iter()
            .map(|(k, v)| (k.to_str().unwrap(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            pairs,
            vec![("PATH", "/opt/bin"), ("HOME", "/root"), ("NEW", "n")]
        );
    }
}
