//! `MANDATE_ANOMALY_*` overrides of the `[anomaly]` table (the table's
//! shape and defaults are `mandate_anomaly::Config`'s).

use super::{ConfigError, env_pairs, invalid, num};
use mandate_anomaly::{AnomalyRule, Config};

/// `MANDATE_ANOMALY_ENABLED`, `…_COOLDOWN_SECS`, the burst and spike
/// thresholds, and per rule `MANDATE_ANOMALY_<RULE>_ACTION` as
/// `production=suspend,staging=alert`.
pub(super) fn apply_env(
    cfg: &mut Config,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    if let Some(v) = env("MANDATE_ANOMALY_ENABLED") {
        cfg.enabled = match v.as_str() {
            "true" | "1" => true,
            "false" | "0" => false,
            _ => return Err(invalid("MANDATE_ANOMALY_ENABLED", "must be true or false")),
        };
    }
    if let Some(v) = env("MANDATE_ANOMALY_COOLDOWN_SECS") {
        cfg.cooldown_secs = num("MANDATE_ANOMALY_COOLDOWN_SECS", &v)?;
    }
    if let Some(v) = env("MANDATE_ANOMALY_DENIAL_BURST_COUNT") {
        cfg.rules.denial_burst.count = num("MANDATE_ANOMALY_DENIAL_BURST_COUNT", &v)?;
    }
    if let Some(v) = env("MANDATE_ANOMALY_DENIAL_BURST_WINDOW_SECS") {
        cfg.rules.denial_burst.window_secs = num("MANDATE_ANOMALY_DENIAL_BURST_WINDOW_SECS", &v)?;
    }
    if let Some(v) = env("MANDATE_ANOMALY_RATE_SPIKE_FACTOR") {
        cfg.rules.rate_spike.factor = num("MANDATE_ANOMALY_RATE_SPIKE_FACTOR", &v)?;
    }
    if let Some(v) = env("MANDATE_ANOMALY_RATE_SPIKE_MIN_CALLS") {
        cfg.rules.rate_spike.min_calls = num("MANDATE_ANOMALY_RATE_SPIKE_MIN_CALLS", &v)?;
    }
    for &rule in AnomalyRule::ALL {
        let key = format!("MANDATE_ANOMALY_{}_ACTION", rule.as_str().to_uppercase());
        if let Some(v) = env(&key) {
            *cfg.actions_mut(rule) = env_pairs(&key, &v)?;
        }
    }
    Ok(())
}

/// The `[anomaly]` table's own checks, named under `anomaly.`.
pub(super) fn validate(cfg: &Config) -> Result<(), ConfigError> {
    cfg.validate()
        .map_err(|(key, message)| invalid(&key, message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use mandate_anomaly::AnomalyAction;
    use mandate_core::Environment;

    #[test]
    fn env_sets_actions_per_rule_and_thresholds() {
        let mut cfg = Config::default();
        let env = |k: &str| match k {
            "MANDATE_ANOMALY_DENIAL_BURST_ACTION" => Some("staging=require_approval".to_owned()),
            "MANDATE_ANOMALY_DENIAL_BURST_COUNT" => Some("4".to_owned()),
            _ => None,
        };
        apply_env(&mut cfg, &env).unwrap();
        assert_eq!(
            cfg.action(AnomalyRule::DenialBurst, Environment::Staging),
            AnomalyAction::RequireApproval
        );
        assert_eq!(cfg.rules.denial_burst.count, 4);
        let bad =
            |k: &str| (k == "MANDATE_ANOMALY_RELAY_ACTION").then(|| "staging=block".to_owned());
        let e = apply_env(&mut cfg, &bad).unwrap_err();
        assert!(
            e.to_string().starts_with("MANDATE_ANOMALY_RELAY_ACTION"),
            "{e}"
        );
    }
}
