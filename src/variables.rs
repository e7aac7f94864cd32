//! The variables the environment phase sets, in the order they were first set (which is the
//! order `--print` shows), and the final environment the command gets: the harness's own
//! environment with those variables laid over it.

use std::collections::HashMap;
use std::ffi::{c_char, CStr, OsString};
use std::hash::BuildHasherDefault;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

use crate::os::Fnv;

/// The harness's environment as it started, in its order.
pub type Environment = Vec<(OsString, OsString)>;

/// NAME -> VALUE, remembering the order of first definition; a later definition overrides the
/// value but keeps the place.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Variables {
    entries: Vec<(String, Vec<u8>)>,
    /// Where each name is in `entries`.
    index: HashMap<Vec<u8>, usize, BuildHasherDefault<Fnv>>,
}

impl Variables {
    pub fn set(&mut self, name: &str, value: Vec<u8>) {
        match self.index.get(name.as_bytes()) {
            Some(&at) => self.entries[at].1 = value,
            None => {
                self.index
                    .insert(name.as_bytes().to_vec(), self.entries.len());
                self.entries.push((name.to_owned(), value));
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.index
            .get(name.as_bytes())
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
        // One rule, over_block's; this runs once per discovery.
        let block = self.over_block(base);
        let pair = |string: &CStr| {
            let bytes = string.to_bytes();
            let at = bytes
                .iter()
                .position(|byte| *byte == b'=')
                .unwrap_or(bytes.len());
            let value = bytes.get(at + 1..).unwrap_or_default();
            (
                OsString::from_vec(bytes[..at].to_vec()),
                OsString::from_vec(value.to_vec()),
            )
        };
        block.strings().into_iter().map(pair).collect()
    }

    /// [`Variables::over`] as execve takes it, built in one buffer (as pairs, then as strings,
    /// it took three allocations per variable). The environment phase keeps its scripts' block
    /// up to date with [`EnvBlock::set`] instead, by the same rule.
    pub fn over_block(&self, base: &[(OsString, OsString)]) -> EnvBlock {
        let bytes = base
            .iter()
            .map(|(name, value)| EnvBlock::string_size(name.as_bytes(), value.as_bytes()))
            .chain(
                self.entries
                    .iter()
                    .map(|(name, value)| EnvBlock::string_size(name.as_bytes(), value)),
            )
            .sum();
        let mut block = EnvBlock::with_capacity(base.len() + self.entries.len(), bytes);
        let mut in_base = vec![false; self.entries.len()];
        for (name, value) in base {
            match self.index.get(name.as_bytes()) {
                Some(&at) => {
                    in_base[at] = true;
                    block.push(name.as_bytes(), &self.entries[at].1);
                }
                None => block.push(name.as_bytes(), value.as_bytes()),
            }
        }
        for ((name, value), _) in self.entries.iter().zip(in_base).filter(|(_, seen)| !seen) {
            block.push(name.as_bytes(), value);
        }
        block
    }
}

/// An environment as execve takes it: each `NAME=VALUE` with its NUL, one after the other in
/// one buffer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvBlock {
    bytes: Vec<u8>,
    /// Where each string starts in `bytes`.
    starts: Vec<usize>,
}

impl EnvBlock {
    fn with_capacity(strings: usize, bytes: usize) -> EnvBlock {
        EnvBlock {
            bytes: Vec::with_capacity(bytes),
            starts: Vec::with_capacity(strings),
        }
    }

    /// Sets NAME as [`Variables::over_block`] lays a variable over its base: each string of
    /// NAME takes VALUE in its place; without one, `NAME=VALUE` goes at the end.
    pub fn set(&mut self, name: &[u8], value: &[u8]) {
        let mut found = false;
        for i in 0..self.starts.len() {
            let start = self.starts[i];
            if self.bytes[start..].starts_with(name)
                && self.bytes.get(start + name.len()) == Some(&b'=')
            {
                self.replace(i, start + name.len() + 1, value);
                found = true;
            }
        }
        if !found {
            self.push(name, value);
        }
    }

    /// The value of string `i`, which starts at `value_start`, becomes `value`; the strings
    /// after it move.
    fn replace(&mut self, i: usize, value_start: usize, value: &[u8]) {
        let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
        let old_len = end - 1 - value_start;
        self.bytes
            .splice(value_start..end - 1, value.iter().copied());
        for later in &mut self.starts[i + 1..] {
            *later = *later + value.len() - old_len;
        }
    }

    /// The bytes `NAME=VALUE` takes in the block, its NUL included.
    fn string_size(name: &[u8], value: &[u8]) -> usize {
        name.len() + value.len() + 2
    }

    fn push(&mut self, name: &[u8], value: &[u8]) {
        debug_assert!(!name.contains(&0) && !value.contains(&0), "checked before");
        self.starts.push(self.bytes.len());
        self.bytes.extend_from_slice(name);
        self.bytes.push(b'=');
        self.bytes.extend_from_slice(value);
        self.bytes.push(0);
    }

    /// The strings as execve takes them: a pointer to each, then a null one.
    pub fn pointers(&self) -> Vec<*const c_char> {
        let mut pointers = Vec::with_capacity(self.starts.len() + 1);
        pointers.extend(
            self.starts
                .iter()
                .map(|&start| self.bytes[start..].as_ptr().cast()),
        );
        pointers.push(std::ptr::null());
        pointers
    }

    /// The strings.
    pub fn strings(&self) -> Vec<&CStr> {
        self.starts
            .iter()
            .map(|&start| {
                CStr::from_bytes_until_nul(&self.bytes[start..]).expect("each string ends in NUL")
            })
            .collect()
    }
}

impl From<&[(OsString, OsString)]> for EnvBlock {
    fn from(env: &[(OsString, OsString)]) -> EnvBlock {
        let bytes = env
            .iter()
            .map(|(name, value)| EnvBlock::string_size(name.as_bytes(), value.as_bytes()))
            .sum();
        let mut block = EnvBlock::with_capacity(env.len(), bytes);
        for (name, value) in env {
            block.push(name.as_bytes(), value.as_bytes());
        }
        block
    }
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
    fn a_block_set_variable_by_variable_is_the_block_built_at_once() {
        let base: Vec<(OsString, OsString)> = [
            ("PATH", "/bin"),
            ("HOME", "/root"),
            ("DUP", "first"),
            ("PATHS", "/x"),
            ("DUP", "second"),
        ]
        .iter()
        .map(|(n, v)| (OsString::from(n), OsString::from(v)))
        .collect();
        let mut vars = Variables::default();
        let mut block = EnvBlock::from(base.as_slice());
        let sets = [
            ("NEW", "1"),
            ("PATH", "/opt/bin:/usr/bin"),
            ("DUP", ""),
            ("NEW", "a longer value than before"),
            ("OTHER", "x"),
            ("HOME", "/h"),
            ("NEW", ""),
            ("PATH", "/p"),
        ];
        for (name, value) in sets {
            vars.set(name, value.as_bytes().to_vec());
            block.set(name.as_bytes(), value.as_bytes());
            assert_eq!(block, vars.over_block(&base), "after setting {name}");
        }
        let strings: Vec<&str> = block
            .strings()
            .iter()
            .map(|s| s.to_str().unwrap())
            .collect();
        assert_eq!(
            strings,
            ["PATH=/p", "HOME=/h", "DUP=", "PATHS=/x", "DUP=", "NEW=", "OTHER=x"]
        );
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
        let block = vars.over_block(&base);
        let strings: Vec<&str> = block
            .strings()
            .iter()
            .map(|s| s.to_str().unwrap())
            .collect();
        assert_eq!(strings, vec!["PATH=/opt/bin", "HOME=/root", "NEW=n"]);
        assert_eq!(block, EnvBlock::from(merged.as_slice()));
    }
}
