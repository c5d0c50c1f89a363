//! Crontab schedules with crontab meaning.
//!
//! The `cron` crate wants 6 or 7 fields (leading seconds), counts day-of-week from 1 = Sunday, and
//! ANDs day-of-month with day-of-week. Crontab has 5 fields, 0 or 7 = Sunday and 1 = Monday, and
//! when both day fields are restricted a time matches either of them. This module translates: the
//! day-of-week field is expanded into day names (which both agree on), and a schedule with both day
//! fields restricted becomes two `cron` schedules whose next times are merged.

use std::str::FromStr;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct Schedule {
    text: String,
    parts: Vec<cron::Schedule>,
}

/// Why a schedule was refused: the field, the value as written and the schedule as written, in
/// crontab's terms (never the 6-field form the `cron` crate reads).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("{field} {value} is out of range {min}-{max} in {schedule:?}")]
    OutOfRange {
        field: &'static str,
        value: String,
        min: u32,
        max: u32,
        schedule: String,
    },
    /// `expected` is "a number" or "a number or a name".
    #[error("{field} {value:?} is not {expected} in {schedule:?}")]
    NotANumber {
        field: &'static str,
        value: String,
        expected: &'static str,
        schedule: String,
    },
    #[error("{field} field {text:?} has an empty item in {schedule:?}")]
    EmptyItem {
        field: &'static str,
        text: String,
        schedule: String,
    },
    #[error("{field} range {range:?} runs backwards in {schedule:?}")]
    Backwards {
        field: &'static str,
        range: String,
        schedule: String,
    },
    #[error("{field} step {step:?} is not a number from 1 to {top} in {schedule:?}")]
    BadStep {
        field: &'static str,
        step: String,
        top: u32,
        schedule: String,
    },
    #[error(
        "@reboot is not supported: housekeep schedules are times, not events; to run every task when the machine \
         starts, run `housekeep worker --once` from a systemd unit (or a Kubernetes Job) at boot"
    )]
    Reboot,
    #[error(
        "{text:?} is not one of @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly"
    )]
    UnknownShorthand { text: String },
    #[error(
        "{schedule:?} has {count} fields; write 5 (minute hour day-of-month month day-of-week) or 6 (with leading seconds)"
    )]
    FieldCount { schedule: String, count: usize },
    /// Every field passed its check and the `cron` crate still refused the translation; its own
    /// message is not kept, as it names the 6-field form and counts days differently.
    #[error("{schedule:?} is not a schedule housekeep can run")]
    Unsupported { schedule: String },
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One crontab field: its name in messages, its numbers and the names it takes.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [(&'static str, u32)],
    /// `?` (any), which the `cron` crate takes in the day fields, means `*` here.
    any: bool,
}

const SECOND: Field = Field { name: "second", min: 0, max: 59, names: &[], any: false };
const MINUTE: Field = Field { name: "minute", min: 0, max: 59, names: &[], any: false };
const HOUR: Field = Field { name: "hour", min: 0, max: 23, names: &[], any: false };
const DAY_OF_MONTH: Field = Field { name: "day-of-month", min: 1, max: 31, names: &[], any: true };
const MONTH: Field = Field {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        ("JAN", 1), ("FEB", 2), ("MAR", 3), ("APR", 4), ("MAY", 5), ("JUN", 6), ("JUL", 7), ("AUG", 8), ("SEP", 9),
        ("OCT", 10), ("NOV", 11), ("DEC", 12), ("JANUARY", 1), ("FEBRUARY", 2), ("MARCH", 3), ("APRIL", 4),
        ("JUNE", 6), ("JULY", 7), ("AUGUST", 8), ("SEPTEMBER", 9), ("OCTOBER", 10), ("NOVEMBER", 11), ("DECEMBER", 12),
    ],
    any: false,
};
const DAY_OF_WEEK: Field = Field {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &[
        ("SUN", 0), ("MON", 1), ("TUE", 2), ("WED", 3), ("THU", 4), ("FRI", 5), ("SAT", 6), ("SUNDAY", 0),
        ("MONDAY", 1), ("TUESDAY", 2), ("WEDNESDAY", 3), ("THURSDAY", 4), ("FRIDAY", 5), ("SATURDAY", 6),
    ],
    any: true,
};

impl Field {
    /// One number or name of the field.
    fn value(&self, s: &str, whole: &str) -> Result<u32, ScheduleError> {
        let (field, min, max) = (self.name, self.min, self.max);
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return match s.parse::<u32>() {
                Ok(n) if (min..=max).contains(&n) => Ok(n),
                _ => Err(ScheduleError::OutOfRange {
                    field,
                    value: s.into(),
                    min,
                    max,
                    schedule: whole.into(),
                }),
            };
        }
        if let Some((_, n)) = self.names.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)) {
            return Ok(*n);
        }
        let expected = if self.names.is_empty() {
            "a number"
        } else {
            "a number or a name"
        };
        Err(ScheduleError::NotANumber {
            field,
            value: s.into(),
            expected,
            schedule: whole.into(),
        })
    }

    /// Check every number, name, range and step of the field; the field as `cron` reads it
    /// (names as numbers, `?` as `*`).
    fn check(&self, field: &str, whole: &str) -> Result<String, ScheduleError> {
        let name = self.name;
        let mut out = Vec::new();
        for item in field.split(',') {
            let (base, step) = match item.split_once('/') {
                Some((b, s)) => (b, Some(s)),
                None => (item, None),
            };
            let base = if self.any && base == "?" { "*" } else { base };
            let base_out = if base == "*" {
                "*".to_string()
            } else if base.is_empty() {
                return Err(ScheduleError::EmptyItem {
                    field: name,
                    text: field.into(),
                    schedule: whole.into(),
                });
            } else if let Some((a, b)) = base.split_once('-') {
                let (lo, hi) = (self.value(a, whole)?, self.value(b, whole)?);
                if hi < lo {
                    return Err(ScheduleError::Backwards {
                        field: name,
                        range: base.into(),
                        schedule: whole.into(),
                    });
                }
                format!("{lo}-{hi}")
            } else {
                self.value(base, whole)?.to_string()
            };
            let step_out = match step {
                None => String::new(),
                Some(s) => {
                    let top = self.max.max(1);
                    match s.parse::<u32>() {
                        Ok(n) if s.bytes().all(|b| b.is_ascii_digit()) && (1..=top).contains(&n) => format!("/{n}"),
                        _ => {
                            return Err(ScheduleError::BadStep {
                                field: name,
                                step: s.into(),
                                top,
                                schedule: whole.into(),
                            });
                        }
                    }
                }
            };
            out.push(base_out + &step_out);
        }
        Ok(out.join(","))
    }
}

impl Schedule {
    /// The next time strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parts.iter().filter_map(|s| s.after(after).next()).min()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Crontab's `@` forms as the 5 fields they stand for.
fn shorthand(s: &str) -> Result<&'static str, ScheduleError> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => "0 0 1 1 *",
        "@monthly" => "0 0 1 * *",
        "@weekly" => "0 0 * * 0",
        "@daily" | "@midnight" => "0 0 * * *",
        "@hourly" => "0 * * * *",
        "@reboot" => return Err(ScheduleError::Reboot),
        _ => return Err(ScheduleError::UnknownShorthand { text: s.into() }),
    })
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, ScheduleError> {
        let trimmed = text.trim();
        let fields_text = if trimmed.starts_with('@') { shorthand(trimmed)? } else { trimmed };
        let fields: Vec<&str> = fields_text.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0".to_string(), &fields[..]),
            6 => (SECOND.check(fields[0], trimmed)?, &fields[1..]),
            n => {
                return Err(ScheduleError::FieldCount {
                    schedule: trimmed.into(),
                    count: n,
                });
            }
        };
        // Every number is checked here, in crontab's terms, so that the `cron` crate (whose
        // messages name its own 6-field form and are off by one) never sees a bad one.
        let min = MINUTE.check(rest[0], trimmed)?;
        let hour = HOUR.check(rest[1], trimmed)?;
        let dom = DAY_OF_MONTH.check(rest[2], trimmed)?;
        let mon = MONTH.check(rest[3], trimmed)?;
        let dow = DAY_OF_WEEK.check(rest[4], trimmed)?;
        let days = expand_day_of_week(&dow, trimmed)?;
        let build = |dom: &str, dow: &str| {
            cron::Schedule::from_str(&format!("{sec} {min} {hour} {dom} {mon} {dow}")).map_err(
                |_| ScheduleError::Unsupported {
                    schedule: trimmed.into(),
                },
            )
        };
        let parts = if !dom.starts_with('*') && !dow.starts_with('*') {
            vec![build(&dom, "*")?, build("*", &days)?]
        } else {
            vec![build(&dom, &days)?]
        };
        Ok(Schedule { text: trimmed.to_string(), parts })
    }
}

/// A checked day-of-week number (0-7).
fn day_number(s: &str, whole: &str) -> Result<u32, ScheduleError> {
    match s.parse::<u32>() {
        Ok(n) if n <= 7 => Ok(n % 7),
        _ => Err(ScheduleError::OutOfRange {
            field: DAY_OF_WEEK.name,
            value: s.into(),
            min: 0,
            max: 7,
            schedule: whole.into(),
        }),
    }
}

/// Crontab day-of-week field (checked, names already numbers) → `*` or a list of day names.
/// The field was checked by [`Field::check`], so none of these errors is expected; they name
/// the schedule as written all the same.
fn expand_day_of_week(field: &str, whole: &str) -> Result<String, ScheduleError> {
    let bad_step = |s: &str| ScheduleError::BadStep {
        field: DAY_OF_WEEK.name,
        step: s.into(),
        top: 7,
        schedule: whole.into(),
    };
    let mut set = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, s.parse::<u32>().map_err(|_| bad_step(s))?),
            None => (item, 1),
        };
        if step == 0 {
            return Err(bad_step("0"));
        }
        let (lo, hi) = if base == "*" {
            (0, 6)
        } else if let Some((a, b)) = base.split_once('-') {
            // 7 is Sunday at the end of a range (5-7 = Fri..Sun).
            let lo = if a == "7" { 7 } else { day_number(a, whole)? };
            let hi = if b == "7" { 7 } else { day_number(b, whole)? };
            if hi < lo {
                return Err(ScheduleError::Backwards {
                    field: DAY_OF_WEEK.name,
                    range: base.into(),
                    schedule: whole.into(),
                });
            }
            (lo, hi)
        } else {
            let d = day_number(base, whole)?;
            (d, if step > 1 { 7 } else { d })
        };
        let mut d = lo;
        while d <= hi {
            set[(d % 7) as usize] = true;
            d += step;
        }
    }
    if set.iter().all(|b| *b) {
        return Ok("*".into());
    }
    Ok(DAY_NAMES.iter().zip(set).filter(|(_, on)| *on).map(|(n, _)| *n).collect::<Vec<_>>().join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Datelike, TimeZone, Weekday};

    fn next(s: &str, from: DateTime<Utc>) -> DateTime<Utc> {
        s.parse::<Schedule>().unwrap().next_after(&from).unwrap()
    }

    // 2026-11-22 is a Sunday.
    fn sunday_noon() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
    }

    #[test]
    fn day_of_week_one_is_monday() {
        let n = next("0 3 * * 1", sunday_noon());
        assert_eq!(n.weekday(), Weekday::Mon);
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 11, 23, 3, 0, 0).unwrap());
    }

    #[test]
    fn day_of_week_zero_and_seven_are_sunday() {
        for s in ["0 3 * * 0", "0 3 * * 7", "0 3 * * sun"] {
            let n = next(s, sunday_noon());
            assert_eq!(n.weekday(), Weekday::Sun, "{s}");
            assert_eq!(n.day(), 29, "{s}");
        }
    }

    #[test]
    fn ranges_and_steps_follow_crontab() {
        let n = next("0 0 * * 1-5", sunday_noon());
        assert_eq!(n.weekday(), Weekday::Mon);
        let n = next("0 0 * * 5-7", Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(n.weekday(), Weekday::Fri);
        // */2 = Sun, Tue, Thu, Sat
        let n = next("0 0 * * */2", sunday_noon());
        assert_eq!(n.weekday(), Weekday::Tue);
        let n = next("0 0 * * 7-7", Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(n.weekday(), Weekday::Sun);
        let n = next("0 0 * * mon-FRIDAY", sunday_noon());
        assert_eq!(n.weekday(), Weekday::Mon);
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(next("*/7 * * * *", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 22, 12, 7, 0).unwrap());
        assert_eq!(next("16 * * * *", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 22, 12, 16, 0).unwrap());
        assert_eq!(next("30 * * * * *", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 30).unwrap());
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 1st of the month or any Monday: from Sunday the 22nd, Monday the 23rd comes first.
        let n = next("0 0 1 * 1", sunday_noon());
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        let n = next("0 0 1 * 1", Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap());
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
    }

    #[test]
    fn refuses_bad_schedules() {
        for s in ["* * * *", "* * * * * * * *", "61 * * * *", "* * * * 8", "* * * * 5-1", "nonsense"] {
            assert!(s.parse::<Schedule>().is_err(), "{s}");
        }
    }

    fn error(s: &str) -> String {
        s.parse::<Schedule>().unwrap_err().to_string()
    }

    #[test]
    fn range_errors_name_the_field_its_range_and_the_schedule_as_written() {
        for (s, msg) in [
            ("61 * * * *", r#"minute 61 is out of range 0-59 in "61 * * * *""#),
            ("60 * * * *", r#"minute 60 is out of range 0-59 in "60 * * * *""#),
            ("0 24 * * *", r#"hour 24 is out of range 0-23 in "0 24 * * *""#),
            ("0 0 0 * *", r#"day-of-month 0 is out of range 1-31 in "0 0 0 * *""#),
            ("0 0 32 * *", r#"day-of-month 32 is out of range 1-31 in "0 0 32 * *""#),
            ("0 0 * 13 *", r#"month 13 is out of range 1-12 in "0 0 * 13 *""#),
            ("0 0 * 0 *", r#"month 0 is out of range 1-12 in "0 0 * 0 *""#),
            ("0 0 * * 8", r#"day-of-week 8 is out of range 0-7 in "0 0 * * 8""#),
            ("60 0 0 * * *", r#"second 60 is out of range 0-59 in "60 0 0 * * *""#),
            ("0 5-70 * * *", r#"hour 70 is out of range 0-23 in "0 5-70 * * *""#),
            ("1,2,99 * * * *", r#"minute 99 is out of range 0-59 in "1,2,99 * * * *""#),
            ("99999999999 * * * *", r#"minute 99999999999 is out of range 0-59 in "99999999999 * * * *""#),
            ("*/0 * * * *", r#"minute step "0" is not a number from 1 to 59 in "*/0 * * * *""#),
            ("0 */25 * * *", r#"hour step "25" is not a number from 1 to 23 in "0 */25 * * *""#),
            ("0 0 * FOO *", r#"month "FOO" is not a number or a name in "0 0 * FOO *""#),
            ("x * * * *", r#"minute "x" is not a number in "x * * * *""#),
            ("30-10 * * * *", r#"minute range "30-10" runs backwards in "30-10 * * * *""#),
            ("0 0 * * FRI-MON", r#"day-of-week range "FRI-MON" runs backwards in "0 0 * * FRI-MON""#),
            ("1,,2 * * * *", r#"minute field "1,,2" has an empty item in "1,,2 * * * *""#),
        ] {
            assert_eq!(error(s), msg, "{s}");
        }
        // Never the internal 6-field form the `cron` crate sees.
        assert!(!error("61 * * * *").contains("0 61"));
    }

    #[test]
    fn the_edges_of_every_range_are_accepted() {
        for s in ["59 23 31 12 7", "0 0 1 1 0", "59 59 23 31 12 7", "0-59 0-23 1-31 1-12 0-7", "*/59 */23 */31 */12 */7"] {
            assert!(s.parse::<Schedule>().is_ok(), "{s}: {}", error(s));
        }
        let n = next("0 3 1 jan-mar *", sunday_noon());
        assert_eq!(n, Utc.with_ymd_and_hms(2027, 1, 1, 3, 0, 0).unwrap());
        let n = next("0 3 1 DECEMBER *", sunday_noon());
        assert_eq!(n, Utc.with_ymd_and_hms(2026, 12, 1, 3, 0, 0).unwrap());
    }

    #[test]
    fn shorthands_keep_working_and_reboot_is_explained() {
        assert_eq!(next("@hourly", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 22, 13, 0, 0).unwrap());
        assert_eq!(next("@daily", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(next("@midnight", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 23, 0, 0, 0).unwrap());
        assert_eq!(next("@weekly", sunday_noon()), Utc.with_ymd_and_hms(2026, 11, 29, 0, 0, 0).unwrap());
        assert_eq!(next("@monthly", sunday_noon()), Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap());
        assert_eq!(next("@yearly", sunday_noon()), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!(next("@annually", sunday_noon()), Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap());
        assert_eq!("@hourly".parse::<Schedule>().unwrap().as_str(), "@hourly");
        let e = error("@reboot");
        assert!(e.contains("not supported") && e.contains("worker --once") && e.contains("systemd"), "{e}");
        assert!(error("@fortnightly").contains("@hourly"), "{}", error("@fortnightly"));
    }
}
