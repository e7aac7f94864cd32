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

/// A duration for a message, in seconds: as given when it is a whole number of milliseconds
/// (`0.25`, `1.5`, `10`), else rounded to a tenth of a second (a third of a TTL of 10 s is
/// `3.3`, not `3.333333333`), or to a millisecond below one second.
pub fn seconds(duration: Duration) -> String {
    let text = if duration.subsec_nanos() % 1_000_000 == 0 || duration < Duration::from_secs(1) {
        format!("{:.3}", duration.as_secs_f64())
    } else {
        format!("{:.1}", duration.as_secs_f64())
    };
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() {
        "0".to_owned()
    } else {
        text.to_owned()
    }
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
    fn durations_are_shown_as_given_or_rounded() {
        let shown = |secs: f64| seconds(Duration::from_secs_f64(secs));
        assert_eq!(shown(0.25), "0.25");
        assert_eq!(shown(1.5), "1.5");
        assert_eq!(shown(10.0), "10");
        assert_eq!(shown(0.0), "0");
        assert_eq!(seconds(Duration::from_secs(10) / 3), "3.3");
        assert_eq!(seconds(Duration::from_nanos(1_500_000)), "0.002");
    }

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
