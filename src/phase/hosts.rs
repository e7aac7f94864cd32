//! Per-host environments (docs/reference.md §10): `--environment-root DIR` holds one subdirectory
//! per deployment, named by a hostname pattern, and the one that matches the hostname becomes the
//! first environment directory, in place of the default `/environment`.
//!
//! The choice: the subdirectory named exactly the hostname; else the pattern that matches
//! with the most characters that are not `*` (a tie: the first in byte order); else
//! `default`. In a pattern `*` matches any run of characters, possibly empty, and the whole
//! name must match. Dot-names and entries that are not directories (a README) are passed
//! over. No choice is exit 125 naming DIR and the hostname.
//!
//! The choice is made once, when the plan is made ([`choose`] reads DIR's listing and nothing
//! else), so `--plan` can show it and `--watch` re-runs read the same directory. The hostname
//! is [`crate::config::plan::hostname`], also the default `--instance`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::os;
use crate::phase::entries::directory_exists;

/// The subdirectory used when no pattern matches.
pub const DEFAULT: &str = "default";

/// `--environment-root` and what it chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentRoot {
    pub dir: PathBuf,
    pub hostname: String,
    /// The chosen subdirectory's name; None when no subdirectory matches and there is no
    /// `default` (an error, which `--plan` shows among the rest rather than stopping at it).
    pub chosen: Option<OsString>,
}

impl EnvironmentRoot {
    /// The chosen environment directory.
    pub fn path(&self) -> Option<PathBuf> {
        self.chosen.as_ref().map(|chosen| self.dir.join(chosen))
    }

    /// The error when nothing was chosen (docs/reference.md §10).
    pub fn unmatched(&self) -> Option<Error> {
        self.chosen.is_none().then(|| {
            Error::entry(
                &self.dir,
                format!(
                    "no subdirectory matches {}, and there is no {DEFAULT}",
                    self.hostname
                ),
            )
        })
    }

    /// `--plan`'s line.
    pub fn describe(&self) -> String {
        let chosen = match &self.chosen {
            Some(chosen) => chosen.to_string_lossy().into_owned(),
            None => format!("error (no subdirectory matches, and there is no {DEFAULT})"),
        };
        format!(
            "environment-root {}: {} -> {chosen}",
            self.dir.display(),
            self.hostname
        )
    }
}

/// Chooses DIR's subdirectory for `hostname`.
pub fn choose(dir: &Path, hostname: &str) -> Result<EnvironmentRoot, Error> {
    if !directory_exists(dir)? {
        return Err(Error::MissingDirectory {
            path: dir.to_owned(),
            variable: None,
        });
    }
    let reading = |err| Error::io(dir, "reading the directory", err);
    // Only the names that could be chosen are kept, and only those are looked at, best
    // first, until one is a directory (symlinks followed, as everywhere).
    let mut candidates: Vec<(Rank, OsString)> = Vec::new();
    for name in os::dir::names(dir).map_err(reading)? {
        if let Some(rank) = rank(name.as_encoded_bytes(), hostname.as_bytes()) {
            candidates.push((rank, name));
        }
    }
    candidates.sort_unstable();
    let chosen = candidates
        .into_iter()
        .find(|(_, name)| dir.join(name).is_dir())
        .map(|(_, name)| name);
    Ok(EnvironmentRoot {
        dir: dir.to_owned(),
        hostname: hostname.to_owned(),
        chosen,
    })
}

/// How good a name is for a hostname, best first: the exact name, then the matching patterns
/// by most characters that are not `*`, then `default`. Equal ranks are ordered by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rank {
    Exact,
    Pattern(std::cmp::Reverse<usize>),
    Default,
}

/// `name`'s rank for `host`; None when it cannot be chosen (no match, a dot-name).
fn rank(name: &[u8], host: &[u8]) -> Option<Rank> {
    if name.starts_with(b".") {
        None
    } else if name == host {
        Some(Rank::Exact)
    } else if name.contains(&b'*') && matches(name, host) {
        let literal = name.iter().filter(|byte| **byte != b'*').count();
        Some(Rank::Pattern(std::cmp::Reverse(literal)))
    } else if name == DEFAULT.as_bytes() {
        Some(Rank::Default)
    } else {
        None
    }
}

/// Whether `pattern` (in which `*` matches any run of bytes) matches all of `name`.
fn matches(pattern: &[u8], name: &[u8]) -> bool {
    // Greedy with backtracking to the last `*`: linear in practice, no recursion.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|byte| *byte == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(list: &[&str], host: &str) -> Option<String> {
        let mut ranked: Vec<(Rank, &str)> = list
            .iter()
            .filter_map(|name| Some((rank(name.as_bytes(), host.as_bytes())?, *name)))
            .collect();
        ranked.sort_unstable();
        ranked.first().map(|(_, name)| name.to_string())
    }

    #[test]
    fn star_matches_any_run_and_the_whole_name_must_match() {
        assert!(matches(b"web-*", b"web-1"));
        assert!(matches(b"web-*", b"web-"));
        assert!(matches(b"*.prod.example.com", b"a.b.prod.example.com"));
        assert!(matches(b"*-*-1", b"db-eu-1"));
        assert!(matches(b"*", b""));
        assert!(!matches(b"web-*", b"xweb-1"));
        assert!(!matches(b"web", b"web-1"));
        assert!(!matches(b"*.com", b"example.org"));
        assert!(matches(b"a*b*c", b"aXbYbZc"));
        assert!(!matches(b"a*b*c", b"aXbYbZ"));
    }

    #[test]
    fn exact_then_most_literal_then_byte_order_then_default() {
        let list = ["default", "web-*", "web-1*", "*", "db-1"];
        assert_eq!(pick(&list, "db-1").as_deref(), Some("db-1"));
        assert_eq!(pick(&list, "web-10").as_deref(), Some("web-1*"));
        assert_eq!(pick(&list, "web-2").as_deref(), Some("web-*"));
        assert_eq!(pick(&list, "mail").as_deref(), Some("*"));
        assert_eq!(
            pick(&["default", "web-*"], "mail").as_deref(),
            Some("default")
        );
        assert_eq!(pick(&["web-*"], "mail"), None);
        // A tie, 4 characters each: "*-eu1" sorts before "db-e*".
        assert_eq!(
            pick(&["db-e*", "*-eu1"], "db-eu1").as_deref(),
            Some("*-eu1")
        );
        // An exact name beats a pattern with as many literal characters.
        assert_eq!(
            pick(&["web-1*", "web-1"], "web-1").as_deref(),
            Some("web-1")
        );
    }
}
