//! Durations as people type them: `90s`, `30m`, `1h`, `1h30m`, or bare
//! seconds. Never negative, never zero, never past a day: anything else
//! is refused with what was wrong.

/// The longest duration any verb takes (the server caps lower).
const MAX_SECS: u64 = 86_400;

/// A clap value parser: seconds.
pub fn parse(text: &str) -> Result<u32, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("a duration is required, e.g. 30m or 1h".into());
    }
    if t.starts_with('-') {
        return Err(format!(
            "`{t}` is negative; durations are like 90s, 30m or 1h"
        ));
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for ch in t.chars() {
        match ch {
            '0'..='9' => digits.push(ch),
            's' | 'm' | 'h' => {
                let n: u64 = digits
                    .parse()
                    .map_err(|_| format!("`{t}`: a unit needs a number before it"))?;
                let unit = match ch {
                    's' => 1,
                    'm' => 60,
                    _ => 3600,
                };
                total = total.saturating_add(n.saturating_mul(unit));
                digits.clear();
            }
            other => {
                return Err(format!(
                    "`{t}`: `{other}` is not a unit (s, m or h; at most {} h)",
                    MAX_SECS / 3600
                ));
            }
        }
    }
    if !digits.is_empty() {
        total = total.saturating_add(
            digits
                .parse::<u64>()
                .map_err(|_| format!("`{t}` is too large"))?,
        );
    }
    if total == 0 {
        return Err(format!("`{t}` is zero; a duration must be at least 1s"));
    }
    if total > MAX_SECS {
        return Err(format!("`{t}` is longer than {} h", MAX_SECS / 3600));
    }
    Ok(total as u32)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_units_and_bare_seconds() {
        for (text, secs) in [
            ("90s", 90),
            ("30m", 1800),
            ("1h", 3600),
            ("1h30m", 5400),
            ("45", 45),
            (" 2m ", 120),
        ] {
            assert_eq!(parse(text), Ok(secs), "{text}");
        }
    }

    #[test]
    fn refuses_negative_zero_huge_and_unknown_units() {
        for text in [
            "-5m",
            "0",
            "0s",
            "99y",
            "25h",
            "",
            "m",
            "1d",
            "99999999999999999999999",
        ] {
            let err = parse(text).unwrap_err();
            assert!(!err.is_empty(), "{text}");
        }
        assert!(parse("-5m").unwrap_err().contains("negative"));
        assert!(parse("99y").unwrap_err().contains("`y` is not a unit"));
    }
}
