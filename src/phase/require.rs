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
                let anchored = Regex::new(&format!("^(?:{regex})$")).map_err(|err| {
                    Error::Usage(format!(
                        "--require {name}: invalid regex '{regex}': {}",
                        one_line(&err.to_string())
                    ))
                })?;
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

    fn is_met_by(&self, value: Option<&[u8]>) -> bool {
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
        let value = vars.get(&requirement.name).or_else(|| {
            harness_env
                .iter()
                .find(|(name, _)| name == OsStr::new(&requirement.name))
                .map(|(_, value)| value.as_bytes())
        });
        if !requirement.is_met_by(value) {
            return Err(requirement.unmet());
        }
    }
    Ok(())
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
    fn bad_names_and_regexes_are_usage_errors() {
        assert!(matches!(Requirement::parse("1X"), Err(Error::Usage(_))));
        let err = Requirement::parse("X=(").unwrap_err();
        assert!(err.to_string().contains("invalid regex"), "{err}");
        assert!(!err.to_string().contains('\n'));
    }
}
