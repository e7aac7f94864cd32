//! `--require NAME[=REGEX]` (docs/reference.md §8): what the final environment must hold before the
//! command starts. NAME must be set and non-empty (in the variables the environment phase
//! set, or in the harness's own environment: `docker run -e` satisfies it); with a REGEX the
//! whole value must match it (regex-lite syntax, anchored at both ends; a value that is not
//! UTF-8 never matches). An invalid requirement is a usage error at start; an unmet one names
//! the variable and the rule, never the value.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;

use regex_lite::Regex;

use crate::error::Error;
use crate::os::io_reason;
use crate::phase::entries::is_variable_name;
use crate::variables::Variables;

#[derive(Debug, Clone)]
pub struct Requirement {
    pub name: String,
    /// The REGEX as written, and compiled anchored.
    pub rule: Option<(String, Regex)>,
}

impl PartialEq for Requirement {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
            && self.rule.as_ref().map(|(text, _)| text) == other.rule.as_ref().map(|(text, _)| text)
    }
}

impl Eq for Requirement {}

impl Requirement {
    /// `NAME` or `NAME=REGEX`, split at the first `=`.
    pub fn parse(text: &str) -> Result<Requirement, Error> {
        let (name, regex) = match text.split_once('=') {
            Some((name, regex)) => (name, Some(regex)),
            None => (text, None),
        };
        if !is_variable_name(name) {
            return Err(Error::Usage(format!(
                "--require {text:?}: {name:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
            )));
        }
        let rule = match regex {
            None => None,
            Some(regex) => {
                let invalid = |err: regex_lite::Error| {
                    Error::Usage(format!(
                        "--require {name}: invalid regex '{regex}': {}",
                        one_line(&err.to_string())
                    ))
                };
                // A regex on its own first: else an unbalanced ')' or a trailing '\\' would
                // undo the group the anchors are put around.
                Regex::new(regex).map_err(invalid)?;
                let anchored = Regex::new(&format!("^(?:{regex})$")).map_err(invalid)?;
                Some((regex.to_owned(), anchored))
            }
        };
        Ok(Requirement {
            name: name.to_owned(),
            rule,
        })
    }

    /// `--plan`'s description.
    pub fn describe(&self) -> String {
        match &self.rule {
            None => format!("require {} (set, not empty)", self.name),
            Some((regex, _)) => format!("require {} to match '{regex}'", self.name),
        }
    }

    pub(crate) fn is_met_by(&self, value: Option<&[u8]>) -> bool {
        let Some(value) = value.filter(|value| !value.is_empty()) else {
            return false;
        };
        match &self.rule {
            None => true,
            Some((_, regex)) => std::str::from_utf8(value).is_ok_and(|text| regex.is_match(text)),
        }
    }

    fn unmet(&self) -> Error {
        Error::Unmet {
            name: self.name.clone(),
            rule: self.rule.as_ref().map(|(regex, _)| regex.clone()),
        }
    }
}

/// The first requirement the final environment (`vars` over `harness_env`) does not meet.
pub fn check(
    requirements: &[Requirement],
    vars: &Variables,
    harness_env: &[(OsString, OsString)],
) -> Result<(), Error> {
    for requirement in requirements {
        let value = value_of(&requirement.name, vars, harness_env);
        if !requirement.is_met_by(value) {
            return Err(requirement.unmet());
        }
    }
    Ok(())
}

/// NAME's value in the final environment: set by the environment phase, else the harness's.
fn value_of<'v>(
    name: &str,
    vars: &'v Variables,
    harness_env: &'v [(OsString, OsString)],
) -> Option<&'v [u8]> {
    vars.get(name).or_else(|| {
        harness_env
            .iter()
            .find(|(found, _)| found == OsStr::new(name))
            .map(|(_, value)| value.as_bytes())
    })
}

/// regex-lite explains a syntax error over several lines; the message is one.
fn one_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &[u8])]) -> Variables {
        let mut vars = Variables::default();
        for (name, value) in pairs {
            vars.set(name, value.to_vec());
        }
        vars
    }

    #[test]
    fn a_regex_must_match_the_whole_value() {
        let req = Requirement::parse("PORT=\\d+").unwrap();
        assert!(check(std::slice::from_ref(&req), &vars(&[("PORT", b"8080")]), &[]).is_ok());
        assert!(check(
            std::slice::from_ref(&req),
            &vars(&[("PORT", b"8080x")]),
            &[]
        )
        .is_err());
        assert!(check(&[req], &vars(&[("PORT", b"\xff1")]), &[]).is_err());
    }

    #[test]
    fn empty_is_unset_and_the_harness_environment_counts() {
        let req = Requirement::parse("DB").unwrap();
        let err = check(std::slice::from_ref(&req), &vars(&[("DB", b"")]), &[]).unwrap_err();
        assert_eq!(err.to_string(), "DB: required but not set");
        let env: Vec<(OsString, OsString)> = vec![("DB".into(), "x".into())];
        assert!(check(&[req], &Variables::default(), &env).is_ok());
    }

    #[test]
    fn a_regex_cannot_undo_its_anchors() {
        // Found by fuzzing (tests/fuzz require): a REGEX was only compiled inside ^(?:...)$, so
        // an unbalanced ')' closed that group early: `a)|(b` matched every value starting
        // with a, `a)b\` (its '\' escaping the closing parenthesis) matched "ab)".
        for (text, value) in [("MODE=a)|(b", "anything"), ("MODE=a)b\\", "ab)")] {
            match Requirement::parse(text) {
                Ok(req) => panic!(
                    "{text} accepted; {value:?} meets it: {}",
                    req.is_met_by(Some(value.as_bytes()))
                ),
                Err(err) => assert!(err.to_string().contains("invalid regex"), "{err}"),
            }
        }
    }

    #[test]
    fn bad_names_and_regexes_are_usage_errors() {
        assert!(matches!(Requirement::parse("1X"), Err(Error::Usage(_))));
        let err = Requirement::parse("X=(").unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}

/// `--wait-for ADDRESS` (docs/reference.md §13.2): a TCP address that must accept a connection
/// before the command starts. As given: an address, or the name of a variable of the final
/// environment that holds one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WaitFor {
    Address(Target),
    Variable(String),
}

/// Where to connect: HOST and PORT, and how to name them in a message (never with a password:
/// only `HOST:PORT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// The ports of the schemes a URL may leave without one.
const DEFAULT_PORTS: [(&str, u16); 9] = [
    ("http", 80),
    ("https", 443),
    ("postgres", 5432),
    ("postgresql", 5432),
    ("mysql", 3306),
    ("redis", 6379),
    ("amqp", 5672),
    ("mongodb", 27017),
    ("nats", 4222),
];

impl WaitFor {
    /// `NAME`, `$NAME`, `HOST:PORT` or a URL; a bad one is a usage error naming it (a URL's
    /// password is never repeated: only what follows the `@`).
    pub fn parse(text: &str) -> Result<WaitFor, Error> {
        let name = text.strip_prefix('$').unwrap_or(text);
        if is_variable_name(name) {
            return Ok(WaitFor::Variable(name.to_owned()));
        }
        parse_target(text).map(WaitFor::Address).map_err(|reason| {
            Error::Usage(format!("--wait-for {}: {reason}", without_password(text)))
        })
    }

    /// `--plan`'s description.
    pub fn describe(&self) -> String {
        match self {
            WaitFor::Address(target) => format!("wait for {target} to accept a connection"),
            WaitFor::Variable(name) => {
                format!("wait for the address in {name} to accept a connection")
            }
        }
    }
}

/// HOST:PORT, `[IPv6]:PORT`, or `SCHEME://[USER[:PASS]@]HOST[:PORT][/...]`.
pub fn parse_target(text: &str) -> Result<Target, String> {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (Some(scheme.to_ascii_lowercase()), rest),
        None => (None, text),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = split_host_port(authority)?;
    if host.is_empty() {
        return Err("no host (HOST:PORT, or a URL)".into());
    }
    // Brackets only enclose an IPv6 address: a host with one inside could not be shown.
    if host.contains(['[', ']']) {
        return Err("a '[' or ']' in the host (an IPv6 address is written [ADDRESS]:PORT)".into());
    }
    // The port is not quoted back: in a URL with a password that holds a '/', what stands
    // where the port should is part of the password.
    let port = match (port, &scheme) {
        (Some(port), _) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or("what follows the host is not a port (1-65535); percent-encode a password's '/', '?' or '#'")?,
        (None, Some(scheme)) => DEFAULT_PORTS
            .iter()
            .find(|(known, _)| known == scheme)
            .map(|(_, port)| *port)
            .ok_or_else(|| format!("no port, and the scheme {scheme} has no default one"))?,
        (None, None) => return Err("no port (HOST:PORT)".into()),
    };
    Ok(Target {
        host: host.to_owned(),
        port,
    })
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_host_port(authority: &str) -> Result<(&str, Option<&str>), String> {
    if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or("an IPv6 address without its closing ']'")?;
        return match after.strip_prefix(':') {
            Some(port) => Ok((host, Some(port))),
            None if after.is_empty() => Ok((host, None)),
            None => Err("junk after the IPv6 address".into()),
        };
    }
    Ok(match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    })
}

/// An address shown without what precedes its `@` (a user and password), with a scheme or
/// without one (parse_target drops it from both).
fn without_password(text: &str) -> String {
    let (scheme, rest) = match text.split_once("://") {
        Some((scheme, rest)) => (&text[..scheme.len() + 3], rest),
        None => ("", text),
    };
    match rest.rsplit_once('@') {
        Some((_, after)) => format!("{scheme}…@{after}"),
        None => text.to_owned(),
    }
}

/// The targets of `wait_for` in the final environment (`vars` over `harness_env`); a variable
/// that is unset or empty is "required but not set", one that holds no address says so
/// without its value.
pub fn targets(
    wait_for: &[WaitFor],
    vars: &Variables,
    harness_env: &[(OsString, OsString)],
) -> Result<Vec<(Option<String>, Target)>, Error> {
    let mut targets = Vec::with_capacity(wait_for.len());
    for address in wait_for {
        match address {
            WaitFor::Address(target) => targets.push((None, target.clone())),
            WaitFor::Variable(name) => {
                let value = value_of(name, vars, harness_env).filter(|value| !value.is_empty());
                let Some(value) = value else {
                    return Err(Error::Unmet {
                        name: name.clone(),
                        rule: None,
                    });
                };
                let target = std::str::from_utf8(value)
                    .map_err(|_| "not UTF-8".to_owned())
                    .and_then(parse_target)
                    .map_err(|reason| Error::Entry {
                        path: name.into(),
                        reason: format!("holds no address to wait for ({reason})"),
                    })?;
                targets.push((Some(name.clone()), target));
            }
        }
    }
    Ok(targets)
}

/// How long one connection attempt may take.
pub const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long [`accepts_at_once`] waits: no longer than a signal may wait for the loop.
const AT_ONCE: std::time::Duration = std::time::Duration::from_millis(1);

/// Whether `target`, an IP address, accepts a connection within a millisecond (a listening
/// port on this machine or next to it does). No name lookup and no thread: the common case of
/// a port that is already open costs one connect, where starting the probe's task costs a
/// thread (about 150 µs more). Anything else is left to [`probe_all`].
pub fn accepts_at_once(target: &Target) -> bool {
    let Ok(ip) = target.host.parse::<std::net::IpAddr>() else {
        return false;
    };
    let address = std::net::SocketAddr::new(ip, target.port);
    std::net::TcpStream::connect_timeout(&address, AT_ONCE).is_ok()
}

/// Connects to each target once, HOST resolved anew; the first that does not accept is the
/// error. Blocking (a name lookup can take seconds): run it off the loop's thread.
pub fn probe_all(targets: &[(Option<String>, Target)]) -> Result<(), Error> {
    for (name, target) in targets {
        probe(target).map_err(|reason| Error::Unreachable {
            name: name.clone(),
            address: target.to_string(),
            reason,
        })?;
    }
    Ok(())
}

fn probe(target: &Target) -> Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let addresses = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {}: {}", target.host, io_reason(&err)))?;
    let mut last = format!("{} has no address", target.host);
    for address in addresses {
        match TcpStream::connect_timeout(&address, CONNECT_LIMIT) {
            Ok(_) => return Ok(()),
            Err(err) => last = io_reason(&err),
        }
    }
    Err(last)
}

#[cfg(test)]
mod wait_for_tests {
    use super::*;

    fn target(text: &str) -> Result<(String, u16), String> {
        parse_target(text).map(|target| (target.host, target.port))
    }

    #[test]
    fn addresses_urls_and_default_ports() {
        assert_eq!(target("db:5432"), Ok(("db".into(), 5432)));
        assert_eq!(target("tcp://db:1"), Ok(("db".into(), 1)));
        assert_eq!(
            target("postgres://u:p@db.example/app?x=1"),
            Ok(("db.example".into(), 5432))
        );
        assert_eq!(target("http://web/"), Ok(("web".into(), 80)));
        assert_eq!(target("[::1]:8080"), Ok(("::1".into(), 8080)));
        assert_eq!(target("redis://[fe80::1]"), Ok(("fe80::1".into(), 6379)));
        assert!(target("db").is_err());
        assert!(target("db:0").is_err());
        assert!(target("db:x").is_err());
        let err = target("gopher://hole").unwrap_err();
        assert!(err.contains("gopher"), "{err}");
    }

    #[test]
    fn a_host_holds_no_bracket() {
        // Found by fuzzing (tests/fuzz options): `x:]:80` was host `x:]`, shown as `[x:]]:80`,
        // which is no address (it does not read back).
        for text in ["x:]:80", "tcp://a[b:80", ":[::1]5:31", "[::1]]:80"] {
            assert!(target(text).is_err(), "{text}: {:?}", target(text));
        }
        assert_eq!(target("[::1]:80"), Ok(("::1".into(), 80)));
    }

    #[test]
    fn a_password_without_a_scheme_is_never_shown_either() {
        // Found by fuzzing (tests/fuzz options): USER:PASS@HOST without SCHEME:// is read as
        // an address whose password is dropped, but a message repeated the password.
        let err = WaitFor::parse("user:secret@db").unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.starts_with("--wait-for …@db: no port"), "{err}");
    }

    #[test]
    fn names_are_variables_and_passwords_are_never_shown() {
        assert_eq!(
            WaitFor::parse("$DATABASE_URL").unwrap(),
            WaitFor::Variable("DATABASE_URL".into())
        );
        assert_eq!(
            WaitFor::parse("DB").unwrap(),
            WaitFor::Variable("DB".into())
        );
        let err = WaitFor::parse("weird://user:secret@host").unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
        let shown = Target {
            host: "::1".into(),
            port: 80,
        };
        assert_eq!(shown.to_string(), "[::1]:80");
    }
}
