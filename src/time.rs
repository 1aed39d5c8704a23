//! Durations as admins write them in YAML ("60m", "2h", "1d", "1h30m") and the
//! timestamp helpers the resources share. Parsing lives here so every resource accepts
//! the same spellings and rejects the same mistakes.

use std::fmt;
use std::str::FromStr;

use jiff::{SignedDuration, Timestamp};
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A non-negative duration written as a sequence of `<number><unit>` with units
/// `s`, `m`, `h`, `d` (24 h) and `w` (7 d), e.g. `60m`, `2h`, `1d12h`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub SignedDuration);

impl Duration {
    pub const fn from_secs(secs: i64) -> Self {
        Duration(SignedDuration::from_secs(secs))
    }
    pub const fn from_mins(mins: i64) -> Self {
        Duration(SignedDuration::from_secs(mins * 60))
    }
    pub const fn from_hours(hours: i64) -> Self {
        Duration(SignedDuration::from_secs(hours * 3600))
    }
    pub const fn from_days(days: i64) -> Self {
        Duration(SignedDuration::from_secs(days * 86_400))
    }
    pub fn as_secs(&self) -> i64 {
        self.0.as_secs()
    }
    pub fn signed(&self) -> SignedDuration {
        self.0
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hint = "write a duration such as 30s, 60m, 2h, 1d or 1h30m";
        let text = s.trim();
        if text.is_empty() {
            return Err(format!("empty duration: {hint}"));
        }
        let mut total: i64 = 0;
        let mut digits = String::new();
        for ch in text.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let unit = match ch {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(format!("invalid duration {s:?}: unexpected {ch:?}; {hint}")),
            };
            let n: i64 =
                digits.parse().map_err(|_| format!("invalid duration {s:?}: a number must precede {ch:?}; {hint}"))?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(|| format!("invalid duration {s:?}: too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(format!("invalid duration {s:?}: {digits} has no unit; {hint}"));
        }
        Ok(Duration(SignedDuration::from_secs(total)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut secs = self.0.as_secs();
        if secs == 0 {
            return f.write_str("0s");
        }
        for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
            if secs >= len {
                write!(f, "{}{unit}", secs / len)?;
                secs %= len;
            }
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+[smhdw])+$",
            "description": "A duration such as 30s, 60m, 2h, 1d or 1h30m."
        })
    }
}

/// Schema for `jiff::Timestamp` fields: an RFC 3339 date-time string.
pub fn timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "date-time" })
}

/// Schema for optional `jiff::Timestamp` fields.
pub fn opt_timestamp_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "date-time", "nullable": true })
}

/// Schema for `jiff::civil::Date` fields: `YYYY-MM-DD`.
pub fn opt_date_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "string", "format": "date", "nullable": true })
}

/// `now + d`, saturating at the far future rather than failing: timing decisions
/// only need "later than anything real".
pub fn add(t: Timestamp, d: SignedDuration) -> Timestamp {
    t.checked_add(d).unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn durations_parse_the_spellings_admins_use() {
        assert_eq!("60m".parse::<Duration>().unwrap(), Duration::from_hours(1));
        assert_eq!("2h".parse::<Duration>().unwrap(), Duration::from_hours(2));
        assert_eq!("1d".parse::<Duration>().unwrap(), Duration::from_hours(24));
        assert_eq!("1h30m".parse::<Duration>().unwrap(), Duration::from_mins(90));
        assert_eq!("5m".parse::<Duration>().unwrap().to_string(), "5m");
        assert_eq!(Duration::from_mins(90).to_string(), "1h30m");
    }

    #[test]
    fn durations_reject_mistakes_with_a_hint() {
        for bad in ["", "5", "h", "5x", "-5m", "1.5h"] {
            let err = bad.parse::<Duration>().unwrap_err();
            assert!(err.contains("duration"), "{bad}: {err}");
        }
    }
}
