//! Thresholds and actions, as the server's `[anomaly]` TOML table holds
//! them. Every key has a default; an action left out for an environment
//! is [`AnomalyRule::default_action`].

use mandate_core::{AnomalyAction, AnomalyRule, Environment};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Actions per environment for one rule (`{production = "suspend"}`).
pub type Actions = BTreeMap<Environment, AnomalyAction>;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Run the detector at all (it never sits on the request path).
    pub enabled: bool,
    /// A rule fires at most once per task in this many seconds.
    pub cooldown_secs: u64,
    /// Tasks with state held at once; past it the longest idle are dropped.
    pub max_tasks: usize,
    /// A task with no event for this long is forgotten.
    pub idle_secs: u64,
    pub rules: Rules,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Rules {
    pub post_revocation_use: Plain,
    pub denial_burst: DenialBurst,
    pub rate_spike: RateSpike,
    pub relay: Relay,
    pub out_of_scope: Plain,
    pub unrequested_tool: Plain,
}

/// A rule with no threshold: it fires on the first sighting.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Plain {
    pub action: Actions,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DenialBurst {
    pub action: Actions,
    /// This many refusals for one task…
    pub count: u32,
    /// …within this many seconds.
    pub window_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateSpike {
    pub action: Actions,
    /// Calls are counted in windows of this many seconds.
    pub window_secs: u64,
    /// The task's own rate is the mean over this many earlier windows…
    pub baseline_windows: usize,
    /// …of which at least this many must have passed (a new task has no
    /// rate of its own to be far above).
    pub min_history: usize,
    /// The current window's calls must exceed this many times the mean…
    pub factor: f64,
    /// …and be at least this many.
    pub min_calls: u32,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Relay {
    pub action: Actions,
    /// Also flag one token seen from two client addresses (off for
    /// agents behind addresses that change, such as some NAT pools).
    pub address_change: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            enabled: true,
            cooldown_secs: 60,
            max_tasks: 100_000,
            idle_secs: 3600,
            rules: Rules::default(),
        }
    }
}

impl Default for DenialBurst {
    fn default() -> Self {
        DenialBurst {
            action: Actions::new(),
            count: 10,
            window_secs: 60,
        }
    }
}

impl Default for RateSpike {
    fn default() -> Self {
        RateSpike {
            action: Actions::new(),
            window_secs: 10,
            baseline_windows: 30,
            min_history: 3,
            factor: 10.0,
            min_calls: 50,
        }
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            action: Actions::new(),
            address_change: true,
        }
    }
}

/// The longest baseline kept per task (windows).
pub const MAX_BASELINE_WINDOWS: usize = 120;

impl Config {
    /// What a finding of `rule` does to a task in `env`.
    pub fn action(&self, rule: AnomalyRule, env: Environment) -> AnomalyAction {
        self.actions(rule)
            .get(&env)
            .copied()
            .unwrap_or_else(|| rule.default_action(env))
    }

    pub fn actions(&self, rule: AnomalyRule) -> &Actions {
        let r = &self.rules;
        match rule {
            AnomalyRule::PostRevocationUse => &r.post_revocation_use.action,
            AnomalyRule::DenialBurst => &r.denial_burst.action,
            AnomalyRule::RateSpike => &r.rate_spike.action,
            AnomalyRule::Relay => &r.relay.action,
            AnomalyRule::OutOfScope => &r.out_of_scope.action,
            AnomalyRule::UnrequestedTool => &r.unrequested_tool.action,
        }
    }

    pub fn actions_mut(&mut self, rule: AnomalyRule) -> &mut Actions {
        let r = &mut self.rules;
        match rule {
            AnomalyRule::PostRevocationUse => &mut r.post_revocation_use.action,
            AnomalyRule::DenialBurst => &mut r.denial_burst.action,
            AnomalyRule::RateSpike => &mut r.rate_spike.action,
            AnomalyRule::Relay => &mut r.relay.action,
            AnomalyRule::OutOfScope => &mut r.out_of_scope.action,
            AnomalyRule::UnrequestedTool => &mut r.unrequested_tool.action,
        }
    }

    /// Check the thresholds; the error names the key (under `anomaly.`).
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: &str| Err((format!("anomaly.{k}"), m.to_owned()));
        let (b, s) = (&self.rules.denial_burst, &self.rules.rate_spike);
        if self.max_tasks == 0 {
            return bad("max_tasks", "must be at least 1");
        }
        if self.idle_secs == 0 {
            return bad("idle_secs", "must be at least 1");
        }
        if b.count == 0 {
            return bad("rules.denial_burst.count", "must be at least 1");
        }
        if b.window_secs == 0 {
            return bad("rules.denial_burst.window_secs", "must be at least 1");
        }
        if s.window_secs == 0 {
            return bad("rules.rate_spike.window_secs", "must be at least 1");
        }
        if s.baseline_windows == 0 || s.baseline_windows > MAX_BASELINE_WINDOWS {
            return bad(
                "rules.rate_spike.baseline_windows",
                &format!("must be between 1 and {MAX_BASELINE_WINDOWS}"),
            );
        }
        if s.min_history == 0 || s.min_history > s.baseline_windows {
            return bad(
                "rules.rate_spike.min_history",
                "must be between 1 and baseline_windows",
            );
        }
        if !(s.factor.is_finite() && s.factor >= 1.0) {
            return bad("rules.rate_spike.factor", "must be a number of at least 1");
        }
        if s.min_calls == 0 {
            return bad("rules.rate_spike.min_calls", "must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_come_from_the_table_then_the_rule_default() {
        let cfg: Config = serde_json::from_value(serde_json::json!({
            "rules": {"denial_burst": {"action": {"staging": "require_approval"}, "count": 3}}
        }))
        .unwrap();
        assert_eq!(
            cfg.action(AnomalyRule::DenialBurst, Environment::Staging),
            AnomalyAction::RequireApproval
        );
        assert_eq!(
            cfg.action(AnomalyRule::DenialBurst, Environment::Production),
            AnomalyAction::Alert
        );
        assert_eq!(
            cfg.action(AnomalyRule::Relay, Environment::Production),
            AnomalyAction::Suspend
        );
        assert_eq!(cfg.rules.denial_burst.count, 3);
        assert_eq!(cfg.rules.denial_burst.window_secs, 60);
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn unknown_keys_and_bad_thresholds_are_refused_by_name() {
        assert!(
            serde_json::from_value::<Config>(serde_json::json!({"rules": {"burst": {}}})).is_err()
        );
        let mut cfg = Config::default();
        cfg.rules.rate_spike.min_history = 0;
        assert_eq!(
            cfg.validate().unwrap_err().0,
            "anomaly.rules.rate_spike.min_history"
        );
    }
}
