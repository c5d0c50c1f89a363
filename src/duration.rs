//! Human durations (`30s`, `10m`, `6h`, `7d`, `1y`) as they appear in configuration and flags.
//!
//! Every duration is at most [`HumanDuration::MAX`] (100 years) from the moment it is parsed, so
//! adding one to `Instant::now()`, `SystemTime::now()` or a `chrono` timestamp, or handing it to
//! PostgreSQL as an interval, cannot overflow anywhere in the program.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The longest duration accepted: 100 years (of 365.25 days, as humantime counts `1y`).
    pub const MAX: Duration = Duration::from_secs(100 * 31_557_600);

    pub const fn secs(s: u64) -> Self {
        HumanDuration(Duration::from_secs(s))
    }
    pub fn as_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.0).unwrap_or(chrono::Duration::MAX)
    }
}

/// Why a duration was refused; each names the text as written (trimmed).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DurationError {
    #[error("empty duration; write it like 30s, 10m, 6h, 7d or 1y")]
    Empty,
    /// A bare number is ambiguous (seconds? minutes?).
    #[error("{text:?} has no unit; write it like {text}s, {text}m, {text}h or {text}d")]
    NoUnit { text: String },
    #[error("{text:?} is not a duration ({source}); write it like 30s, 10m, 6h, 7d or 1y")]
    Invalid {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("{text:?} is longer than 100 years, the longest duration housekeep accepts")]
    TooLong { text: String },
}

impl FromStr for HumanDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, DurationError> {
        let t = s.trim();
        if t.is_empty() {
            return Err(DurationError::Empty);
        }
        // A bare number is ambiguous (seconds? minutes?), so it is refused.
        if t.chars().all(|c| c.is_ascii_digit()) && t != "0" {
            return Err(DurationError::NoUnit { text: t.into() });
        }
        if t == "0" {
            return Ok(HumanDuration(Duration::ZERO));
        }
        let d = humantime::parse_duration(t).map_err(|source| DurationError::Invalid {
            text: t.into(),
            source,
        })?;
        if d > Self::MAX {
            return Err(DurationError::TooLong { text: t.into() });
        }
        Ok(HumanDuration(d))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_zero() {
            return f.write_str("0s");
        }
        write!(f, "{}", humantime::format_duration(self.0)).map(|_| ())
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_units_of_the_spec() {
        for (s, secs) in [("30s", 30), ("10m", 600), ("6h", 21600), ("7d", 604800), ("0", 0)] {
            assert_eq!(s.parse::<HumanDuration>().unwrap().0.as_secs(), secs, "{s}");
        }
        assert!("1y".parse::<HumanDuration>().unwrap().0.as_secs() >= 365 * 86400);
    }

    #[test]
    fn refuses_garbage_and_bare_numbers() {
        for s in ["", "10", "ten minutes", "5 minutez", "-1h"] {
            assert!(s.parse::<HumanDuration>().is_err(), "{s}");
        }
    }

    #[test]
    fn bounded_at_one_hundred_years() {
        assert_eq!("100y".parse::<HumanDuration>().unwrap().0, HumanDuration::MAX);
        for s in ["101y", "1000000y", "400000000000y", "36525d 1s", "99999999999999999999s"] {
            let e = s.parse::<HumanDuration>().unwrap_err().to_string();
            assert!(e.contains(s), "{s}: {e}");
        }
        // The largest accepted duration can be added to and subtracted from any clock we use.
        let max = HumanDuration::MAX;
        let _ = std::time::Instant::now() + max;
        let _ = std::time::SystemTime::now() - max;
        let _ = chrono::Utc::now() - HumanDuration(max).as_chrono();
        let _ = chrono::Utc::now() + HumanDuration(max).as_chrono();
    }

    #[test]
    fn round_trips_through_display() {
        for s in ["30s", "10m", "6h", "7days"] {
            let d: HumanDuration = s.parse().unwrap();
            assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }
    }
}
