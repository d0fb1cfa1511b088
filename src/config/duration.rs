//! Human-friendly durations in the config file: `"500ms"`, `"30s"`, `"5m"`, `"2h"`, `"1d"`,
//! or a bare non-negative integer meaning seconds. Operators write `interval = "30s"`;
//! a negative or unitless-garbage value is rejected with the allowed forms named.

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};
use std::fmt;
use std::time::Duration;

/// A config duration. Serialises back to the shortest exact unit so that
/// `config default` output round-trips.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub(crate) const fn secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub(crate) const fn millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
    pub(crate) fn get(self) -> Duration {
        self.0
    }
}

pub(crate) const ALLOWED_FORMS: &str =
    "a non-negative integer (seconds) or a string like \"500ms\", \"30s\", \"5m\", \"2h\", \"1d\"";

/// Parses `"30s"` style text. Returns a message fit for the operator on failure.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{text}\" has no unit; expected {ALLOWED_FORMS}"))?;
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(format!(
            "\"{text}\" is not a duration; expected {ALLOWED_FORMS}"
        ));
    }
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{text}\" is too large a duration"))?;
    let ms_per_unit: u64 = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "\"{text}\" has unknown unit \"{other}\"; expected {ALLOWED_FORMS}"
            ));
        }
    };
    n.checked_mul(ms_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("\"{text}\" is too large a duration"))
}

impl fmt::Display for ConfigDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms != 0 && ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = ConfigDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(ALLOWED_FORMS)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(ConfigDuration::secs)
                    .map_err(|_| E::custom(format!("{v} is negative; expected {ALLOWED_FORMS}")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ConfigDuration::secs(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                parse_duration(v).map(ConfigDuration).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_parse_to_exact_durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86400));
    }

    #[test]
    fn garbage_and_negative_and_missing_units_are_rejected_with_the_allowed_forms() {
        for bad in [
            "",
            "s",
            "-5s",
            "5",
            "5 weeks",
            "1.5s",
            "99999999999999999999s",
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(bad.trim()) || bad.is_empty(), "{bad}: {err}");
        }
        assert!(parse_duration("5x").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn display_round_trips_through_parse() {
        for ms in [
            1u64,
            999,
            1000,
            1500,
            60_000,
            90_000,
            3_600_000,
            86_400_000,
            172_800_000,
        ] {
            let d = ConfigDuration::millis(ms);
            assert_eq!(parse_duration(&d.to_string()).unwrap(), d.0, "{d}");
        }
    }
}
