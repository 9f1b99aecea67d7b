//! Break-glass: an emergency task an operator opens for an agent, which
//! skips approval but nothing else (registered tools only, the agent's
//! environment, audience-bound tokens), lives at most a hard cap, carries
//! its justification, and is flagged on every token and record.

use crate::{Invalid, UnixTime};
use serde::{Deserialize, Serialize};

/// What makes a task break-glass: why, by whom, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakGlass {
    pub justification: String,
    /// The operator as the audit log names it (`admin:<token id>`).
    pub opened_by: String,
    pub opened_at: UnixTime,
}

/// A justification as given (trimmed): required, 1 to 2048 characters.
pub fn justification(raw: &str) -> Result<String, Invalid> {
    let j = raw.trim();
    if j.is_empty() {
        return Err(Invalid::new(
            "justification",
            "is required: say why the glass is broken",
        ));
    }
    if j.chars().count() > 2048 {
        return Err(Invalid::new(
            "justification",
            "must be at most 2048 characters",
        ));
    }
    Ok(j.to_owned())
}

/// A break-glass duration: 1 second up to `cap` (the broker's
/// `breakglass_max_secs`); above it is refused, never shortened.
pub fn duration(secs: i64, cap: u32) -> Result<u32, Invalid> {
    if secs < 1 {
        return Err(Invalid::new("duration_secs", "must be at least 1 second"));
    }
    if secs > i64::from(cap) {
        return Err(Invalid::new(
            "duration_secs",
            format!("{secs} s is above the break-glass cap of {cap} s (breakglass_max_secs)"),
        ));
    }
    Ok(secs as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_justification_is_required_and_bounded() {
        for bad in ["", "   ", &"x".repeat(2049)] {
            let e = justification(bad).unwrap_err();
            assert_eq!(e.field, "justification", "{bad:?}");
        }
        assert_eq!(
            justification("  prod down, INC-7 ").unwrap(),
            "prod down, INC-7"
        );
    }

    #[test]
    fn durations_above_the_cap_or_below_one_second_are_refused() {
        for bad in [0, -300, 3601, i64::MAX] {
            assert_eq!(
                duration(bad, 3600).unwrap_err().field,
                "duration_secs",
                "{bad}"
            );
        }
        assert_eq!(duration(1800, 3600), Ok(1800));
        assert_eq!(duration(3600, 3600), Ok(3600));
    }
}
