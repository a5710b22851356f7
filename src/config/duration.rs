//! Durations in config and on the command line: `500ms`, `30s`, `10m`, `12h`, `14d`; and
//! durations in messages, written as people write them ("14 days", "1 hour 30 minutes"), not as
//! `humantime` prints them ("14days", "1h 30m").

use std::time::Duration;

/// `n` and the unit, with the unit in the plural unless `n` is 1: "1 rule", "3 rules".
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A duration for a message: the two largest non-zero units among days, hours, minutes and
/// seconds ("14 days", "1 day 12 hours", "90 seconds" is "1 minute 30 seconds"); under a second,
/// milliseconds.
pub fn format_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return plural(d.subsec_millis() as usize, "millisecond", "milliseconds");
    }
    let parts = [
        (secs / 86_400, "day", "days"),
        (secs % 86_400 / 3600, "hour", "hours"),
        (secs % 3600 / 60, "minute", "minutes"),
        (secs % 60, "second", "seconds"),
    ];
    let words: Vec<String> = parts
        .iter()
        .skip_while(|(n, _, _)| *n == 0)
        .take(2)
        .filter(|(n, _, _)| *n > 0)
        .map(|(n, one, many)| plural(*n as usize, one, many))
        .collect();
    words.join(" ")
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("{s:?} is not a duration; write a number and a unit, e.g. 30s, 10m, 12h, 14d")
    })?;
    let secs = match unit {
        "ms" => return Ok(Duration::from_millis(n)),
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?} has no known unit; write a number and one of ms, s, m, h, d, e.g. 30s"
            ));
        }
    };
    n.checked_mul(secs)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("{s:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("14d").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert!(parse_duration("14").is_err());
        assert!(parse_duration("d").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }

    #[test]
    fn written_as_people_write_them() {
        let f = |s: u64| format_duration(Duration::from_secs(s));
        assert_eq!(f(14 * 86_400), "14 days");
        assert_eq!(f(86_400), "1 day");
        assert_eq!(f(86_400 + 12 * 3600), "1 day 12 hours");
        assert_eq!(
            f(86_400 + 5),
            "1 day",
            "two units at most, the largest ones"
        );
        assert_eq!(f(90), "1 minute 30 seconds");
        assert_eq!(f(3600), "1 hour");
        assert_eq!(f(1), "1 second");
        assert_eq!(
            format_duration(Duration::from_millis(500)),
            "500 milliseconds"
        );
        assert_eq!(plural(1, "rule", "rules"), "1 rule");
        assert_eq!(plural(0, "rule", "rules"), "0 rules");
    }
}
