//! The entries of a directory and what each one is (docs/reference.md §3.1 and the table of §3.3).
//!
//! Entries are taken in byte-wise order of their names (`LC_ALL=C ls`). Dot-names, names
//! ending in `~` and `*.md` files are ignored silently (the dot rule is what makes a Kubernetes
//! ConfigMap volume work: its `..data` machinery is dot-named and its keys are symlinks into
//! it). Subdirectories are skipped with a warning. Symlinks are followed; a broken one is an
//! error. Classifying reads metadata and, for a file without exec bits, its first two bytes,
//! and runs nothing, so `--plan` uses the same rules as the phases.

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::os;

/// What an entry is, or why it is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// An executable: run it (its stdout is the value, for an environment `NAME`).
    Run,
    /// A file without exec bits whose content is the value.
    Literal,
    /// `PREFIX.env`: dotenv lines, from the file or (executable) from its stdout.
    Dotenv { executable: bool },
    /// Not used, nothing to say about it (dot-names, backups, documentation).
    Ignored(&'static str),
    /// Not used, and worth a warning (a subdirectory, a non-executable export entry).
    Skipped(&'static str),
    /// An error: the reason.
    Invalid(String),
}

#[derive(Debug, Clone)]
pub struct Entry {
    pub name: OsString,
    pub path: PathBuf,
    pub kind: Kind,
}

impl Entry {
    /// The name as a variable name; only called on entries classified as `Run` or `Literal`
    /// in an environment directory, whose names were checked.
    pub fn variable_name(&self) -> &str {
        self.name
            .to_str()
            .expect("environment NAME entries have ASCII names")
    }

    pub fn error(&self) -> Option<Error> {
        match &self.kind {
            Kind::Invalid(reason) => Some(Error::entry(&self.path, reason.clone())),
            _ => None,
        }
    }
}

/// Whether a directory is there: `Ok(false)` when it does not exist.
pub fn directory_exists(dir: &Path) -> Result<bool, Error> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(true),
        Ok(_) => Err(Error::entry(dir, "not a directory")),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(err) => Err(Error::io(dir, "reading the directory", err)),
    }
}

/// The names in `dir`, in byte-wise order.
fn sorted_names(dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut names =
        os::dir::names(dir).map_err(|err| Error::io(dir, "reading the directory", err))?;
    // On Unix an OsString compares as its bytes, which is `LC_ALL=C ls` order.
    names.sort_unstable();
    Ok(names)
}

/// The entries of an environment directory, classified.
pub fn environment_entries(dir: &Path) -> Result<Vec<Entry>, Error> {
    list(dir, classify_environment)
}

/// The entries of an export directory, classified.
pub fn export_entries(dir: &Path) -> Result<Vec<Entry>, Error> {
    list(dir, classify_export)
}

/// The entry `name` of an export directory, classified as [`export_entries`] would, without
/// listing the directory (`health`, `prestop` and `teardown` are looked up as they are when
/// they are needed); None when there is no such name.
pub fn export_entry(dir: &Path, name: &str) -> Result<Option<Entry>, Error> {
    let path = dir.join(name);
    match fs::symlink_metadata(&path) {
        Ok(_) => Ok(Some(Entry {
            name: name.into(),
            kind: classify_export(name, &path),
            path,
        })),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(Error::io(dir, "reading the directory", err)),
    }
}

/// The entries of a directory of templates (docs/reference.md §9), classified: files are
/// `Literal`s.
pub fn template_entries(dir: &Path) -> Result<Vec<Entry>, Error> {
    list(dir, |_, path| {
        common_kind(&inspect(path)).unwrap_or(Kind::Literal)
    })
}

fn list(dir: &Path, classify: fn(&str, &Path) -> Kind) -> Result<Vec<Entry>, Error> {
    Ok(sorted_names(dir)?
        .into_iter()
        .map(|name| {
            let path = dir.join(&name);
            let kind = match ignored(&name) {
                Some(reason) => Kind::Ignored(reason),
                None => classify(&name.to_string_lossy(), &path),
            };
            Entry { name, path, kind }
        })
        .collect())
}

fn ignored(name: &OsString) -> Option<&'static str> {
    let bytes = name.as_encoded_bytes();
    if bytes.starts_with(b".") {
        Some("dot-name")
    } else if bytes.ends_with(b"~") {
        Some("backup file")
    } else if bytes.ends_with(b".md") {
        Some("documentation")
    } else {
        None
    }
}

/// What a file is once symlinks are followed.
enum Target {
    Executable,
    File,
    Directory,
    Problem(String),
}

fn inspect(path: &Path) -> Target {
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Target::Directory,
        Ok(meta) if !meta.is_file() => Target::Problem("not a regular file".into()),
        Ok(meta) if meta.permissions().mode() & 0o111 != 0 => Target::Executable,
        Ok(_) => Target::File,
        Err(err) if err.kind() == io::ErrorKind::NotFound => match fs::read_link(path) {
            Ok(target) => Target::Problem(format!("broken symbolic link to {}", target.display())),
            Err(_) => Target::Problem("disappeared while being read".into()),
        },
        Err(err) => Target::Problem(err.to_string().to_lowercase()),
    }
}

fn classify_environment(name: &str, path: &Path) -> Kind {
    let target = inspect(path);
    if let Some(kind) = common_kind(&target) {
        return kind;
    }
    let executable = matches!(target, Target::Executable);
    if name.ends_with(".env") {
        return Kind::Dotenv { executable };
    }
    if !is_variable_name(name) {
        return Kind::Invalid(
            "not a valid variable name (use [A-Za-z_][A-Za-z0-9_]*, or end the name in .env)"
                .into(),
        );
    }
    if executable {
        Kind::Run
    } else {
        not_executable(path, Kind::Literal)
    }
}

fn classify_export(_name: &str, path: &Path) -> Kind {
    let target = inspect(path);
    if let Some(kind) = common_kind(&target) {
        return kind;
    }
    match target {
        Target::Executable => Kind::Run,
        _ => not_executable(path, Kind::Skipped("not executable")),
    }
}

fn common_kind(target: &Target) -> Option<Kind> {
    match target {
        Target::Directory => Some(Kind::Skipped("subdirectory")),
        Target::Problem(reason) => Some(Kind::Invalid(reason.clone())),
        Target::Executable | Target::File => None,
    }
}

/// A file without exec bits is `otherwise`, unless it is a script that lost them.
fn not_executable(path: &Path, otherwise: Kind) -> Kind {
    match starts_with_shebang(path) {
        Ok(true) => Kind::Invalid(
            "a script (#! line) without exec permission: chmod +x it, or remove the #! line".into(),
        ),
        Ok(false) => otherwise,
        Err(err) => Kind::Invalid(format!(
            "cannot read it: {}",
            err.to_string().to_lowercase()
        )),
    }
}

fn starts_with_shebang(path: &Path) -> io::Result<bool> {
    let mut head = [0u8; 2];
    let mut file = File::open(path)?;
    let mut len = 0;
    while len < 2 {
        match file.read(&mut head[len..])? {
            0 => break,
            n => len += n,
        }
    }
    Ok(&head[..len] == b"#!")
}

/// `[A-Za-z_][A-Za-z0-9_]*`
pub fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_names_follow_the_documented_pattern() {
        for good in ["A", "_", "DB_URL", "a1", "_9"] {
            assert!(is_variable_name(good), "{good}");
        }
        for bad in ["", "1A", "DB-URL", "DB.URL", "É", "A B"] {
            assert!(!is_variable_name(bad), "{bad}");
        }
    }

    #[test]
    fn ignore_rules() {
        assert_eq!(ignored(&"..data".into()), Some("dot-name"));
        assert_eq!(ignored(&"X~".into()), Some("backup file"));
        assert_eq!(ignored(&"README.md".into()), Some("documentation"));
        assert_eq!(ignored(&"X".into()), None);
    }
}
