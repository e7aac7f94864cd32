//! Templates (docs/reference.md §9): `-t SRC:DEST` renders SRC with Jinja syntax (the `minijinja`
//! crate) to DEST. The context is the final environment: every variable as a top-level name, and
//! all of them in the map `env`.
//!
//! Invariants:
//! - Rendering is strict (an undefined name is an error naming the template, its line and the
//!   name; `default` and `is defined` still work), nothing is auto-escaped whatever the file
//!   name, and the template's final newline is kept: the output is what Jinja2 would write.
//! - Every template is rendered into memory (each output at most [`OUTPUT_LIMIT`] bytes)
//!   before any file is written; then every changed output is staged as a temporary file in
//!   its DEST's directory before any is renamed over its DEST. So one failure writes nothing,
//!   and a reader of DEST sees the old file or the new one, never a part. An output equal to
//!   DEST's content leaves DEST untouched (its mtime stays).
//! - Values never reach a message. Errors are built from minijinja's error kind, the
//!   template's name and line and the variable names involved; never from the detail of a
//!   failed operation (which may quote a value) nor from minijinja's debug display (the
//!   `debug` feature, not enabled, would print the context).
//!
//! Every failure is an [`Error`] naming SRC or DEST and the reason: exit 125 at start, a
//! warning and no file written under `--watch` (see `watch.rs`).

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Value;
use minijinja::{AutoEscape, ErrorKind, UndefinedBehavior};

mod context;
mod registry;
mod write;

pub use registry::{KvReads, KvSource, SharedReads};
pub use write::{Owner, Rendered, Staged};

use context::{Root, Vars};
use write::{same_content, Output};

use super::entries::{self, Kind};
use crate::error::Error;
use crate::os::read_at_most;
use crate::variables::Environment;

/// The largest template source and the largest output, in bytes. Config files are kilobytes;
/// a render past this is a runaway loop, and all outputs are held in memory until written.
pub const OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

/// The work one render may do, in minijinja's fuel (about one unit per instruction, one per 64
/// bytes of data): about 25 ms here, and at most about 64 MB of data. A config file of 100
/// upstream lines takes under 1,000; a template that needs a thousand times that is a loop
/// that would hold up the start (or a re-run) for good.
pub const FUEL: u64 = 1_000_000;

/// Suffixes a directory SRC's entries lose in DEST (`nginx.conf.j2` -> `nginx.conf`).
const SUFFIXES: [&str; 2] = [".template", ".j2"];

/// One `-t SRC:DEST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pub src: PathBuf,
    pub dest: PathBuf,
}

impl Template {
    /// `SRC:DEST`, split at the first `:` (so DEST may hold one, SRC may not).
    pub fn parse(text: &OsStr) -> Result<Template, Error> {
        let bytes = text.as_bytes();
        let shown = text.to_string_lossy();
        let Some(colon) = bytes.iter().position(|byte| *byte == b':') else {
            return Err(Error::Usage(format!(
                "--template {shown:?}: no ':' between SRC and DEST (use SRC:DEST)"
            )));
        };
        let (src, dest) = (&bytes[..colon], &bytes[colon + 1..]);
        if src.is_empty() || dest.is_empty() {
            return Err(Error::Usage(format!(
                "--template {shown:?}: SRC and DEST must both be given (use SRC:DEST)"
            )));
        }
        Ok(Template {
            src: OsStr::from_bytes(src).into(),
            dest: OsStr::from_bytes(dest).into(),
        })
    }
}

/// One file to render: a file SRC, or one entry of a directory SRC.
struct Source {
    src: PathBuf,
    /// SRC as minijinja's template name (what its errors carry).
    name: String,
    text: String,
    dest: PathBuf,
    mode: u32,
    /// DEST's directory may be created (a directory SRC's DEST).
    create_dir: bool,
}

/// Renders every template with `env` (the final environment); writes nothing.
pub fn render_all(
    templates: &[Template],
    env: &Environment,
    owner: Option<Owner>,
    reads: &SharedReads,
) -> Result<Rendered, Error> {
    if templates.is_empty() {
        return Ok(Rendered::default());
    }
    let mut sources = Vec::new();
    for template in templates {
        sources.extend(expand(template, true)?);
    }
    one_source_per_dest(&sources)?;
    let mut engine = engine();
    registry::add_functions(&mut engine, reads);
    let globals: HashSet<String> = engine.globals().map(|(name, _)| name.to_owned()).collect();
    let vars = Arc::new(Vars::new(env));
    let mut outputs = Vec::with_capacity(sources.len());
    for source in &sources {
        let content = render(&engine, &vars, &globals, reads, source)?;
        outputs.push(Output {
            changed: !same_content(&source.dest, &content),
            dest: source.dest.clone(),
            mode: source.mode,
            content,
            create_dir: source.create_dir,
        });
    }
    Ok(Rendered { outputs, owner })
}

/// `--plan`'s lines: `template SRC -> DEST`, once per `-t`, each with the first error found
/// (a missing SRC, a syntax error, a DEST that cannot be); nothing is rendered or written.
pub fn describe(templates: &[Template]) -> Vec<(String, Option<Error>)> {
    templates
        .iter()
        .map(|template| {
            let head = format!(
                "template {} -> {}",
                template.src.display(),
                template.dest.display()
            );
            match check(template) {
                Ok(()) => (head, None),
                Err(err) => (format!("{head}: error ({err})"), Some(err)),
            }
        })
        .collect()
}

fn check(template: &Template) -> Result<(), Error> {
    let engine = engine();
    for source in expand(template, false)? {
        engine
            .template_from_named_str(&source.name, &source.text)
            .map_err(|err| template_error(&source, &err, &[]))?;
    }
    Ok(())
}

/// minijinja configured as Jinja2 renders a config file: strict, no escaping, the final
/// newline kept.
fn engine<'source>() -> minijinja::Environment<'source> {
    let mut engine = minijinja::Environment::new();
    engine.set_undefined_behavior(UndefinedBehavior::Strict);
    // minijinja escapes by the template's extension (.html, .xml, .json...); Jinja2 does not.
    engine.set_auto_escape_callback(|_| AutoEscape::None);
    engine.set_syntax(
        SyntaxConfig::builder()
            .keep_trailing_newline(true)
            .build()
            .expect("the default delimiters are valid"),
    );
    engine.set_fuel(Some(FUEL));
    engine
}

/// The files one `-t` renders, read and checked: SRC exists; for a file SRC, DEST is not a
/// directory and its directory exists; for a directory SRC, DEST is not a file.
fn expand(template: &Template, warn: bool) -> Result<Vec<Source>, Error> {
    let Template { src, dest } = template;
    let meta = match fs::metadata(src) {
        Ok(meta) => meta,
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(Error::entry(src, "no such template (SRC of --template)"))
        }
        Err(err) => return Err(Error::io(src, "reading the template", err)),
    };
    if !meta.is_dir() {
        if dest.is_dir() {
            return Err(Error::entry(
                dest,
                format!(
                    "is a directory; the template {} is a file, so DEST must name a file",
                    src.display()
                ),
            ));
        }
        let dir = parent_dir(dest);
        if !dir.is_dir() {
            return Err(Error::entry(
                dest,
                format!(
                    "its directory {} does not exist (only a directory SRC creates DEST)",
                    dir.display()
                ),
            ));
        }
        return Ok(vec![read_source(src, dest.clone(), false)?]);
    }
    if dest.exists() && !dest.is_dir() {
        return Err(Error::entry(
            dest,
            format!(
                "not a directory; the template {} is a directory, so DEST must be one",
                src.display()
            ),
        ));
    }
    let mut sources = Vec::new();
    for entry in entries::template_entries(src)? {
        match entry.kind {
            Kind::Ignored(_) => {}
            Kind::Skipped(reason) => {
                if warn {
                    log::warn!("{}: {reason}, skipped", entry.path.display());
                }
            }
            Kind::Invalid(reason) => return Err(Error::entry(&entry.path, reason)),
            Kind::Run | Kind::Literal | Kind::Dotenv { .. } => {
                let name = rendered_name(&entry.name);
                sources.push(read_source(&entry.path, dest.join(name), true)?);
            }
        }
    }
    Ok(sources)
}

/// An entry's name minus a trailing `.template` or `.j2` (kept when nothing would be left).
fn rendered_name(name: &OsStr) -> &OsStr {
    let bytes = name.as_bytes();
    for suffix in SUFFIXES {
        if let Some(stem) = bytes.strip_suffix(suffix.as_bytes()) {
            if !stem.is_empty() {
                return OsStr::from_bytes(stem);
            }
        }
    }
    name
}

/// A file's directory: `app.conf` is in `.`.
pub(super) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

fn read_source(src: &Path, dest: PathBuf, create_dir: bool) -> Result<Source, Error> {
    let reading = |err| Error::io(src, "reading the template", err);
    let file = File::open(src).map_err(reading)?;
    let meta = file.metadata().map_err(reading)?;
    let too_large = || {
        Error::entry(
            src,
            format!("larger than {OUTPUT_LIMIT} bytes, the limit for a template"),
        )
    };
    if meta.len() > OUTPUT_LIMIT as u64 {
        return Err(too_large());
    }
    let bytes = read_at_most(file, OUTPUT_LIMIT, meta.len())
        .map_err(reading)?
        .ok_or_else(too_large)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| Error::entry(src, "not UTF-8 text, so not a template"))?;
    Ok(Source {
        name: src.to_string_lossy().into_owned(),
        src: src.to_owned(),
        text,
        dest,
        mode: meta.permissions().mode() & 0o777,
        create_dir,
    })
}

/// Two templates rendering to one DEST would make the result depend on their order.
fn one_source_per_dest(sources: &[Source]) -> Result<(), Error> {
    let mut seen: BTreeMap<&Path, &Path> = BTreeMap::new();
    for source in sources {
        if let Some(first) = seen.insert(&source.dest, &source.src) {
            return Err(Error::entry(
                &source.dest,
                format!(
                    "rendered from both {} and {}; give each DEST once",
                    first.display(),
                    source.src.display()
                ),
            ));
        }
    }
    Ok(())
}

fn render(
    engine: &minijinja::Environment<'_>,
    vars: &Arc<Vars>,
    globals: &HashSet<String>,
    reads: &SharedReads,
    source: &Source,
) -> Result<Vec<u8>, Error> {
    let template = engine
        .template_from_named_str(&source.name, &source.text)
        .map_err(|err| template_error(source, &err, &[]))?;
    vars.start();
    let mut out = Bounded::default();
    let result = template.render_captured_to(Value::from_object(Root(vars.clone())), &mut out);
    let record = vars.finish();
    let mut reads = reads.lock().unwrap_or_else(PoisonError::into_inner);
    // A store that failed (its own error, naming its URL), or a call the template cannot
    // make (named with the template and line): that is the error.
    if let Some(failure) = reads.take_failure() {
        return Err(match failure {
            store @ Error::Store { .. } => store,
            other => {
                let line = result.as_ref().err().and_then(minijinja::Error::line);
                let at = line
                    .map(|line| format!("line {line}: "))
                    .unwrap_or_default();
                Error::entry(&source.src, format!("{at}{other}"))
            }
        });
    }
    if let Err(err) = &result {
        if let Some(key) = absent_key_on_error_line(&source.text, err, reads.absent()) {
            return Err(Error::KeyAbsent {
                path: source.src.clone(),
                line: err.line().unwrap_or_default(),
                key,
            });
        }
    }
    drop(reads);
    // Checked first: the template's output would hold bytes that are not the value.
    if let Some(name) = record.not_utf8 {
        return Err(Error::entry(
            &source.src,
            format!("uses {name}, whose value is not UTF-8"),
        ));
    }
    if out.over {
        return Err(Error::entry(
            &source.src,
            format!("renders to more than {OUTPUT_LIMIT} bytes, the limit"),
        ));
    }
    let missing: Vec<String> = record
        .missing
        .into_iter()
        .filter(|name| !globals.contains(name))
        .collect();
    match result {
        Ok(_) => Ok(out.bytes),
        Err(err) => Err(template_error(source, &err, &missing)),
    }
}

/// For an undefined value: a key `kv()` found absent whose call is on the error's line (a bare
/// use of an absent key, which `--wait` waits out).
fn absent_key_on_error_line(
    text: &str,
    err: &minijinja::Error,
    absent: &[String],
) -> Option<String> {
    if err.kind() != ErrorKind::UndefinedError {
        return None;
    }
    let line = text.lines().nth(err.line()?.checked_sub(1)?)?;
    absent
        .iter()
        .find(|key| {
            let compact: String = line.chars().filter(|c| !c.is_whitespace()).collect();
            compact.contains(&format!("kv(\"{key}\")")) || compact.contains(&format!("kv('{key}')"))
        })
        .cloned()
}

/// The one-line reason for a minijinja error: its kind, line and the names involved. Only
/// the details that come from the template's source (a syntax error, an unknown filter,
/// test or function) are shown; a failed operation's detail may quote a value.
fn template_error(source: &Source, err: &minijinja::Error, missing: &[String]) -> Error {
    let kind = err.kind();
    let what = match (kind, err.detail()) {
        (ErrorKind::UndefinedError, _) => undefined(&source.text, err.line(), missing),
        (ErrorKind::OutOfFuel, _) => {
            format!("exceeded its budget of {FUEL} units of work (an endless loop?)")
        }
        (
            ErrorKind::SyntaxError
            | ErrorKind::UnknownFilter
            | ErrorKind::UnknownTest
            | ErrorKind::UnknownFunction,
            Some(detail),
        ) => format!("{kind}: {detail}"),
        _ => kind.to_string(),
    };
    let reason = match err.line() {
        Some(line) => format!("line {line}: {what}"),
        None => what,
    };
    Error::entry(&source.src, reason)
}

/// Which name was undefined. minijinja (without its `debug` feature) does not say, so: of the
/// names the render looked up and did not find, those on the error's line, preferring those
/// not guarded there by `default` or `is defined`.
fn undefined(text: &str, line: Option<usize>, missing: &[String]) -> String {
    let line_text = line
        .and_then(|line| text.lines().nth(line.saturating_sub(1)))
        .unwrap_or("");
    let on_line: Vec<&String> = missing
        .iter()
        .filter(|name| !occurrences(line_text, name).is_empty())
        .collect();
    let unguarded: Vec<&String> = on_line
        .iter()
        .copied()
        .filter(|name| {
            occurrences(line_text, name)
                .into_iter()
                .any(|at| !guarded(&line_text[at + name.len()..]))
        })
        .collect();
    let names: Vec<&String> = [unguarded, on_line, missing.iter().collect()]
        .into_iter()
        .find(|names| !names.is_empty())
        .unwrap_or_default();
    match names.as_slice() {
        [] => "undefined value".into(),
        [name] => format!("{name} is undefined"),
        names => format!(
            "undefined: one of {}",
            names
                .iter()
                .map(|name| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// Where `name` occurs in `line` as a whole word.
fn occurrences(line: &str, name: &str) -> Vec<usize> {
    let word = |byte: u8| byte.is_ascii_alphanumeric() || byte == b'_';
    let bytes = line.as_bytes();
    line.match_indices(name)
        .map(|(at, _)| at)
        .filter(|&at| {
            let before = at.checked_sub(1).map(|i| bytes[i]);
            let after = bytes.get(at + name.len()).copied();
            !before.is_some_and(word) && !after.is_some_and(word)
        })
        .collect()
}

/// Whether the text after a name makes it safe to be undefined (`X | default(...)`,
/// `env["X"] is defined`, ...).
fn guarded(after: &str) -> bool {
    let rest = after.trim_start_matches(['"', '\'', ']', ' ']);
    let filtered = rest.strip_prefix('|').map(str::trim_start);
    if let Some(filter) = filtered {
        return filter.starts_with("default") || filter.starts_with("d(");
    }
    let Some(test) = rest.strip_prefix("is ") else {
        return false;
    };
    let test = test.trim_start();
    let test = test
        .strip_prefix("not ")
        .map(str::trim_start)
        .unwrap_or(test);
    test.starts_with("defined") || test.starts_with("undefined")
}

/// Collects a render's output up to [`OUTPUT_LIMIT`]; past it, the write fails and the render
/// stops.
#[derive(Default)]
struct Bounded {
    bytes: Vec<u8>,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.bytes.len() + buf.len() > OUTPUT_LIMIT {
            self.over = true;
            return Err(io::Error::other("output limit"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    fn env(pairs: &[(&str, &str)]) -> Environment {
        pairs
            .iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn source(text: &str) -> Source {
        Source {
            src: "t.j2".into(),
            name: "t.j2".into(),
            text: text.into(),
            dest: "out".into(),
            mode: 0o644,
            create_dir: false,
        }
    }

    fn render_text(text: &str, pairs: &[(&str, &str)]) -> Result<String, Error> {
        let engine = engine();
        let globals = engine.globals().map(|(n, _)| n.to_owned()).collect();
        let vars = Arc::new(Vars::new(&env(pairs)));
        let reads = Arc::new(std::sync::Mutex::new(KvReads::new(None)));
        render(&engine, &vars, &globals, &reads, &source(text))
            .map(|b| String::from_utf8(b).unwrap())
    }

    #[test]
    fn split_at_the_first_colon() {
        let t = Template::parse(OsStr::new("a.j2:/etc/x:y")).unwrap();
        assert_eq!(t.src, PathBuf::from("a.j2"));
        assert_eq!(t.dest, PathBuf::from("/etc/x:y"));
        for bad in ["a.j2", ":b", "a:"] {
            assert!(matches!(
                Template::parse(OsStr::new(bad)),
                Err(Error::Usage(_))
            ));
        }
    }

    #[test]
    fn names_env_final_newline_and_no_escaping() {
        let out = render_text(
            "{{ A }} {{ env['B'] }} {{ A | upper }}\n",
            &[("A", "<a&>"), ("B", "b")],
        );
        assert_eq!(out.unwrap(), "<a&> b <A&>\n");
    }

    #[test]
    fn default_and_is_defined_work_under_strict() {
        let out = render_text(
            "{{ X | default('x') }}{% if Y is defined %}y{% else %}n{% endif %}",
            &[],
        );
        assert_eq!(out.unwrap(), "xn");
    }

    #[test]
    fn the_undefined_name_is_the_unguarded_one_on_the_line() {
        let err = render_text("ok\n{{ A | default('a') }} {{ B }}\n", &[]).unwrap_err();
        assert_eq!(err.to_string(), "t.j2: line 2: B is undefined");
        let err = render_text("{{ env['C'] }}", &[]).unwrap_err();
        assert_eq!(err.to_string(), "t.j2: line 1: C is undefined");
    }

    #[test]
    fn a_failed_operation_shows_no_value() {
        let err = render_text("{{ A + 1 }}", &[("A", "s3cret")]).unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
        assert!(err.to_string().starts_with("t.j2: line 1: "), "{err}");
    }

    #[test]
    fn directory_entries_lose_one_suffix() {
        assert_eq!(rendered_name(OsStr::new("a.conf.j2")), "a.conf");
        assert_eq!(rendered_name(OsStr::new("a.template")), "a");
        assert_eq!(rendered_name(OsStr::new("a.conf")), "a.conf");
        assert_eq!(rendered_name(OsStr::new("x.j2.template")), "x.j2");
    }

    #[test]
    fn guards() {
        assert!(guarded(" | default('x') }}"));
        assert!(guarded("|d('x')"));
        assert!(guarded("\"] is not defined %}"));
        assert!(guarded(" is undefined"));
        assert!(!guarded(" }}"));
        assert!(!guarded(" | upper }}"));
    }
}
