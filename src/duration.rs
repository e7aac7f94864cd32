//! Durations and deadlines, for everything that waits: `SECS` as the options write it, and
//! poll(2)'s timeout until a deadline. A leaf: it knows nothing of the modules that use it.

use std::time::{Duration, Instant};

use nix::poll::PollTimeout;

/// The longest duration an option accepts (about 31 years): enough for "never", and far
/// from overflowing a deadline computed from it.
const MAX_SECONDS: f64 = 1e9;

/// Seconds as a non-negative decimal number (`1`, `0.25`).
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    // `-0` parses as a float: refused like any other negative number.
    if text.trim_start().starts_with('-') {
        return Err(format!(
            "{text:?} is not a number of seconds: it is negative"
        ));
    }
    let seconds: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if seconds > MAX_SECONDS {
        return Err(format!(
            "{text:?} is too long (at most {MAX_SECONDS} seconds)"
        ));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is not a number of seconds"))
}

/// poll(2)'s timeout for waiting until `deadline` (None: no deadline), rounded up to the next
/// millisecond so that the deadline has passed when poll returns, rather than waking a moment
/// early and spinning.
pub fn poll_timeout_until(deadline: Option<Instant>) -> PollTimeout {
    let Some(at) = deadline else {
        return PollTimeout::NONE;
    };
    let wait = at.saturating_duration_since(Instant::now()) + Duration::from_micros(999);
    PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_accept_fractions_and_reject_garbage() {
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_seconds("3"), Ok(Duration::from_secs(3)));
        assert!(parse_seconds("-1").is_err());
        assert!(parse_seconds("-0").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("1e19").is_err());
        assert!(parse_seconds("1e9").is_ok());
    }
}
