//! Maintenance windows: when a collection's members may install updates. A window is a
//! local start time in an IANA time zone, a duration and a recurrence; DST is handled by
//! the time zone database (a start time that does not exist moves forward).

use jiff::civil::{Date, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, ToSpan};

use crate::resources::{MaintenanceWindow, Recurrence};

/// An open interval of time in which installation may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Window {
    pub start: Timestamp,
    pub end: Timestamp,
}

/// What is wrong with a window, as (field, message) pairs.
pub fn problems(w: &MaintenanceWindow) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if parse_start(&w.start).is_none() {
        out.push(("start", format!("{:?} is not a local time HH:MM (00:00–23:59)", w.start)));
    }
    if let Err(e) = TimeZone::get(&w.time_zone) {
        out.push((
            "timeZone",
            format!("unknown time zone {:?} ({e}); use an IANA name such as Europe/Berlin or UTC", w.time_zone),
        ));
    }
    let secs = w.duration.as_secs();
    if secs <= 0 || secs > 86_400 {
        out.push(("duration", format!("{} must be more than 0s and at most 24h", w.duration)));
    }
    match w.recurrence {
        Recurrence::Once if w.date.is_none() => out.push(("date", "a Once window needs a date (YYYY-MM-DD)".into())),
        Recurrence::Weekly if w.days_of_week.is_empty() => {
            out.push(("daysOfWeek", "a Weekly window needs daysOfWeek".into()))
        }
        Recurrence::MonthlyByWeekday => {
            if w.days_of_week.len() != 1 {
                out.push(("daysOfWeek", "a MonthlyByWeekday window needs exactly one day, e.g. [Tuesday]".into()));
            }
            if !matches!(w.week_of_month, Some(1..=4) | Some(-1)) {
                out.push(("weekOfMonth", "a MonthlyByWeekday window needs weekOfMonth 1–4, or -1 for the last".into()));
            }
        }
        Recurrence::MonthlyByDate if !matches!(w.day_of_month, Some(0..=31)) => {
            out.push(("dayOfMonth", "a MonthlyByDate window needs dayOfMonth 1–31, or 0 for the last day".into()))
        }
        _ => {}
    }
    out
}

fn parse_start(s: &str) -> Option<Time> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    Time::new(h.parse().ok()?, m.parse().ok()?, 0, 0).ok()
}

/// Does the window recur on this local date?
fn occurs_on(w: &MaintenanceWindow, d: Date) -> bool {
    match w.recurrence {
        Recurrence::Once => w.date == Some(d),
        Recurrence::Daily => true,
        Recurrence::Weekly => w.days_of_week.iter().any(|wd| jiff::civil::Weekday::from(*wd) == d.weekday()),
        Recurrence::MonthlyByDate => {
            let last = d.last_of_month().day();
            let want = match w.day_of_month.unwrap_or(1) {
                0 => last,
                n => n.min(last),
            };
            d.day() == want
        }
        Recurrence::MonthlyByWeekday => {
            let (Some(wd), Some(nth)) = (w.days_of_week.first(), w.week_of_month) else { return false };
            let offset = w.offset_days.unwrap_or(0) as i64;
            // The base weekday may sit in this month or, with an offset, the month before.
            let Ok(back) = d.checked_sub(offset.days()) else { return false };
            match back.nth_weekday_of_month(nth, (*wd).into()) {
                Ok(base) => base == back,
                Err(_) => false,
            }
        }
    }
}

/// The occurrences of `w` that may overlap `[from, from + horizon_days]`.
fn occurrences(w: &MaintenanceWindow, from: Timestamp, horizon_days: i64) -> impl Iterator<Item = Window> + '_ {
    let tz = TimeZone::get(&w.time_zone).unwrap_or(TimeZone::UTC);
    let start = parse_start(&w.start).unwrap_or(Time::midnight());
    let first = from.to_zoned(tz.clone()).date().yesterday().unwrap_or(Date::MIN);
    let dur = w.duration.signed();
    (0..=horizon_days).filter_map(move |i| {
        let d = first.checked_add(i.days()).ok()?;
        if !occurs_on(w, d) {
            return None;
        }
        let s = d.to_datetime(start).to_zoned(tz.clone()).ok()?.timestamp();
        Some(Window { start: s, end: crate::time::add(s, dur) })
    })
}

/// The next window (possibly the one open now) among `windows` that leaves at least
/// `needed` for installation, searching a little over a year ahead.
pub fn next_window(windows: &[MaintenanceWindow], now: Timestamp, needed: SignedDuration) -> Option<Window> {
    windows
        .iter()
        .filter_map(|w| {
            occurrences(w, now, 400).find(|o| {
                let usable_from = o.start.max(now);
                o.end > now && o.end.duration_since(usable_from) >= needed
            })
        })
        .min()
}

/// Whether `now` is inside a window of `windows` with at least `needed` left.
pub fn in_window(windows: &[MaintenanceWindow], now: Timestamp, needed: SignedDuration) -> bool {
    next_window(windows, now, needed).is_some_and(|w| w.start <= now)
}

#[cfg(test)]
mod test {
    use super::*;
    use crate::resources::Weekday;
    use crate::time::Duration;

    fn window(start: &str, dur: Duration, tz: &str, rec: Recurrence) -> MaintenanceWindow {
        MaintenanceWindow {
            name: "w".into(),
            start: start.into(),
            duration: dur,
            time_zone: tz.into(),
            recurrence: rec,
            days_of_week: vec![],
            week_of_month: None,
            offset_days: None,
            day_of_month: None,
            date: None,
        }
    }
    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn d3_a_daily_window_in_a_time_zone_opens_at_local_time() {
        let w = window("02:00", Duration::from_hours(3), "Europe/Berlin", Recurrence::Daily);
        // 2026-11-24 12:00 UTC: next Berlin 02:00 is 2026-11-25 01:00 UTC (CET, +01:00).
        let next = next_window(std::slice::from_ref(&w), at("2026-11-24T12:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(next.start, at("2026-11-25T01:00:00Z"));
        assert_eq!(next.end, at("2026-11-25T04:00:00Z"));
        // In summer the same local time is 00:00 UTC (CEST, +02:00).
        let summer = next_window(&[w], at("2026-07-01T12:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(summer.start, at("2026-07-02T00:00:00Z"));
    }

    #[test]
    fn d3_an_open_window_counts_only_if_the_update_still_fits() {
        let w = window("02:00", Duration::from_hours(1), "UTC", Recurrence::Daily);
        let now = at("2026-11-24T02:40:00Z");
        assert!(in_window(std::slice::from_ref(&w), now, SignedDuration::from_mins(10)));
        // 20 minutes left: a 30-minute update waits for tomorrow's window.
        let next = next_window(std::slice::from_ref(&w), now, SignedDuration::from_mins(30)).unwrap();
        assert_eq!(next.start, at("2026-11-25T02:00:00Z"));
        assert!(!in_window(&[w], now, SignedDuration::from_mins(30)));
    }

    #[test]
    fn d3_an_update_longer_than_every_window_never_fits() {
        let w = window("02:00", Duration::from_hours(1), "UTC", Recurrence::Daily);
        assert_eq!(next_window(&[w], at("2026-11-24T00:00:00Z"), SignedDuration::from_hours(2)), None);
    }

    #[test]
    fn d3_patch_tuesday_plus_offset_and_weekly_windows() {
        let mut w = window("22:00", Duration::from_hours(4), "America/New_York", Recurrence::MonthlyByWeekday);
        w.days_of_week = vec![Weekday::Tuesday];
        w.week_of_month = Some(2);
        w.offset_days = Some(4); // the Saturday after Patch Tuesday
        // December 2026: second Tuesday is the 8th → Saturday the 12th, 22:00 EST = 03:00Z on the 13th.
        let next = next_window(&[w], at("2026-11-30T00:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(next.start, at("2026-12-13T03:00:00Z"));

        let mut weekly = window("01:00", Duration::from_hours(2), "Asia/Tokyo", Recurrence::Weekly);
        weekly.days_of_week = vec![Weekday::Sunday];
        // Sunday 2026-11-29 01:00 JST = Saturday 16:00Z.
        let next = next_window(&[weekly], at("2026-11-24T00:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(next.start, at("2026-11-28T16:00:00Z"));
    }

    #[test]
    fn d3_the_earliest_of_several_windows_wins_and_last_day_of_month_works() {
        let mut a = window("23:00", Duration::from_hours(1), "UTC", Recurrence::MonthlyByDate);
        a.day_of_month = Some(0);
        let mut b = window("23:00", Duration::from_hours(1), "UTC", Recurrence::Once);
        b.date = Some("2027-03-01".parse().unwrap());
        let next = next_window(&[b.clone(), a.clone()], at("2027-02-01T00:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(next.start, at("2027-02-28T23:00:00Z"));
        let after = next_window(&[b, a], at("2027-03-01T00:00:00Z"), SignedDuration::ZERO).unwrap();
        assert_eq!(after.start, at("2027-03-01T23:00:00Z"));
    }

    #[test]
    fn window_problems_name_the_field() {
        let mut w = window("25:00", Duration::from_hours(30), "Mars/Olympus", Recurrence::MonthlyByWeekday);
        w.week_of_month = Some(5);
        let fields: Vec<_> = problems(&w).into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["start", "timeZone", "duration", "daysOfWeek", "weekOfMonth"]);
    }
}
