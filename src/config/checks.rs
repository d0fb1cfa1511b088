//! Range checks shared by every section's `validate`: each problem names the key, the bad
//! value and what is allowed.

use super::duration::ConfigDuration;

pub(crate) fn range(v: &mut Vec<String>, key: &str, value: u64, min: u64, max: u64) {
    if value < min || value > max {
        v.push(format!(
            "key `{key}` = {value} is out of range; allowed {min} to {max}"
        ));
    }
}

pub(crate) fn dur_range(
    v: &mut Vec<String>,
    key: &str,
    value: ConfigDuration,
    min_ms: u64,
    max_ms: u64,
) {
    let ms = value.0.as_millis();
    if ms < min_ms as u128 || ms > max_ms as u128 {
        v.push(format!(
            "key `{key}` = \"{value}\" is out of range; allowed {} to {}",
            ConfigDuration::millis(min_ms),
            ConfigDuration::millis(max_ms)
        ));
    }
}
