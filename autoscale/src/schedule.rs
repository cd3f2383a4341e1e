//! Known peaks: a cron window (`start` to `end`, five-field cron in UTC,
//! as KEDA's cron scaler reads them) during which a region keeps at least
//! `replicas` replicas.
//!
//! A window is active when the next `end` comes before the next `start` —
//! KEDA's rule — so a window that started before the autoscaler did is
//! active at once, and a `start` equal to its `end` is never active.

use chrono::{DateTime, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use std::fmt;

/// A cron expression that failed to parse, with the parser's reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{expression}` is not a five-field cron expression: {reason}")]
pub struct CronError {
    /// The text.
    pub expression: String,
    /// Why.
    pub reason: String,
}

/// A parsed five-field cron expression (minute hour day-of-month month
/// day-of-week), evaluated in UTC.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: Cron,
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.text).finish()
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronExpr {
    /// Parses `text`: exactly five fields, no seconds or years (what KEDA's
    /// cron trigger and crontab accept).
    pub fn parse(text: &str) -> Result<Self, CronError> {
        let err = |reason: String| CronError { expression: text.to_string(), reason };
        let fields = text.split_whitespace().count();
        if !text.trim_start().starts_with('@') && fields != 5 {
            return Err(err(format!("it has {fields} fields, not 5 (minute hour day-of-month month day-of-week)")));
        }
        let parser = CronParser::builder().seconds(Seconds::Disallowed).year(Year::Disallowed).build();
        let cron = parser.parse(text).map_err(|e| err(e.to_string()))?;
        Ok(Self { text: text.trim().to_string(), cron })
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first time strictly after `after_secs` (Unix seconds) that
    /// matches, if any (a pattern like `0 0 31 2 *` never matches).
    pub fn next_after(&self, after_secs: i64) -> Option<i64> {
        let at: DateTime<Utc> = DateTime::from_timestamp(after_secs, 0)?;
        self.cron.find_next_occurrence(&at, false).ok().map(|t| t.timestamp())
    }
}

/// A window with a replica floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// A name for logs and decisions.
    pub name: String,
    /// When the window opens.
    pub start: CronExpr,
    /// When it closes.
    pub end: CronExpr,
    /// The replicas it asks for while open.
    pub replicas: u32,
}

impl Schedule {
    /// Whether the window is open at `now_secs` (Unix seconds, UTC): the
    /// next end comes before the next start.
    pub fn is_active(&self, now_secs: i64) -> bool {
        match (self.start.next_after(now_secs), self.end.next_after(now_secs)) {
            (Some(start), Some(end)) => end < start,
            (None, Some(_)) => true,
            _ => false,
        }
    }
}

/// The largest floor among the windows open at `now_secs`, with its
/// schedule's name.
pub fn active_floor(schedules: &[Schedule], now_secs: i64) -> Option<(u32, &str)> {
    schedules.iter().filter(|s| s.is_active(now_secs)).map(|s| (s.replicas, s.name.as_str())).max_by_key(|(r, _)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-12-03 is a Thursday.
    fn at(hh: i64, mm: i64) -> i64 {
        DateTime::parse_from_rfc3339("2026-12-03T00:00:00Z").map(|t| t.timestamp()).unwrap_or(0) + hh * 3600 + mm * 60
    }

    fn window(start: &str, end: &str) -> Schedule {
        Schedule {
            name: "w".into(),
            start: CronExpr::parse(start).expect("start"),
            end: CronExpr::parse(end).expect("end"),
            replicas: 5,
        }
    }

    #[test]
    fn a_daily_window_is_open_between_its_start_and_its_end() {
        let w = window("0 9 * * *", "30 11 * * *");
        assert!(!w.is_active(at(8, 59)));
        assert!(w.is_active(at(9, 0)), "open at its start minute");
        assert!(w.is_active(at(10, 15)));
        assert!(w.is_active(at(11, 29)));
        assert!(!w.is_active(at(11, 30)), "closed at its end minute");
        assert!(!w.is_active(at(23, 0)));
    }

    #[test]
    fn a_window_across_midnight_and_weekdays() {
        let w = window("0 22 * * *", "0 2 * * *");
        assert!(w.is_active(at(23, 0)));
        assert!(w.is_active(at(25, 0)), "01:00 the next day");
        assert!(!w.is_active(at(12, 0)));
        // Weekdays only: Thursday yes, Saturday (two days on) no.
        let weekdays = window("0 9 * * 1-5", "0 17 * * 1-5");
        assert!(weekdays.is_active(at(12, 0)));
        assert!(!weekdays.is_active(at(48 + 12, 0)));
    }

    #[test]
    fn equal_start_and_end_is_never_open() {
        let w = window("0 9 * * *", "0 9 * * *");
        assert!((0..48).all(|h| !w.is_active(at(h, 30))));
    }

    #[test]
    fn the_largest_open_floor_wins() {
        let mut big = window("0 9 * * *", "0 10 * * *");
        big.replicas = 8;
        big.name = "launch".into();
        let all_day = window("0 0 * * *", "59 23 * * *");
        assert_eq!(active_floor(&[all_day.clone(), big.clone()], at(9, 30)), Some((8, "launch")));
        assert_eq!(active_floor(&[all_day, big], at(12, 0)), Some((5, "w")));
    }

    #[test]
    fn bad_expressions_are_named() {
        let e = CronExpr::parse("0 9 * *").expect_err("four fields");
        assert!(e.to_string().contains("4 fields"), "{e}");
        let e = CronExpr::parse("0 0 9 * * *").expect_err("seconds");
        assert!(e.to_string().contains("6 fields"), "{e}");
        let e = CronExpr::parse("61 9 * * *").expect_err("minute 61");
        assert!(e.to_string().contains("61 9 * * *"), "{e}");
    }
}
