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

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

impl Schedule {
    /// The next time strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.parts.iter().filter_map(|s| s.after(after).next()).min()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.starts_with('@') {
            let s = cron::Schedule::from_str(trimmed).map_err(|e| format!("\"{trimmed}\": {e}"))?;
            return Ok(Schedule { text: trimmed.to_string(), parts: vec![s] });
        }
        let fields: Vec<&str> = trimmed.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => {
                return Err(format!(
                    "\"{trimmed}\" has {n} fields; write 5 (minute hour day-of-month month day-of-week) or 6 (with leading seconds)"
                ));
            }
        };
        let (min, hour, dom, mon, dow) = (rest[0], rest[1], rest[2], rest[3], rest[4]);
        let days = expand_day_of_week(dow).map_err(|e| format!("\"{trimmed}\": day-of-week {e}"))?;
        let build = |dom: &str, dow: &str| {
            cron::Schedule::from_str(&format!("{sec} {min} {hour} {dom} {mon} {dow}"))
                .map_err(|e| format!("\"{trimmed}\": {e}"))
        };
        let parts = if !dom.starts_with('*') && !dow.starts_with('*') {
            vec![build(dom, "*")?, build("*", &days)?]
        } else {
            vec![build(dom, &days)?]
        };
        Ok(Schedule { text: trimmed.to_string(), parts })
    }
}

fn day_number(s: &str) -> Result<u32, String> {
    if let Ok(n) = s.parse::<u32>() {
        return if n <= 7 { Ok(n % 7) } else { Err(format!("{n} is out of range 0-7")) };
    }
    DAY_NAMES
        .iter()
        .position(|d| d.eq_ignore_ascii_case(s))
        .map(|p| p as u32)
        .ok_or_else(|| format!("\"{s}\" is not a day"))
}

/// Crontab day-of-week field → `*` or a list of day names.
fn expand_day_of_week(field: &str) -> Result<String, String> {
    let mut set = [false; 7];
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, s.parse::<u32>().map_err(|_| format!("step \"{s}\" is not a number"))?),
            None => (item, 1),
        };
        if step == 0 {
            return Err("step 0".into());
        }
        let (lo, hi) = if base == "*" {
            (0, 6)
        } else if let Some((a, b)) = base.split_once('-') {
            // 7 is Sunday at the end of a range (5-7 = Fri..Sun).
            let lo = day_number(a)?;
            let hi = if b == "7" { 7 } else { day_number(b)? };
            if hi < lo {
                return Err(format!("range \"{base}\" runs backwards"));
            }
            (lo, hi)
        } else {
            let d = day_number(base)?;
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
}
