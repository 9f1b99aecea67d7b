//! The detector: per-task state (refusal times, call counts per window,
//! the first address each token came from, the tools its chain asked
//! for, when each rule last fired) and the rules over it.

use crate::config::{Config, MAX_BASELINE_WINDOWS};
use crate::signal::{self, Call, Signal};
use mandate_audit::Event;
use mandate_core::AnomalyRule;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Tokens whose first address is remembered per task.
const MAX_TOKENS_PER_TASK: usize = 32;

/// One finding: which rule, on what, and why (never a token or secret).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    pub rule: AnomalyRule,
    pub task: String,
    pub agent: Option<String>,
    pub tool: Option<String>,
    /// The facts the rule saw; always names the event (`seq`) that tripped it.
    pub evidence: Value,
    /// The tripping event's time, Unix milliseconds.
    pub seen_at: i64,
}

#[derive(Debug, Default)]
struct Track {
    last_seen_ms: i64,
    /// Refusal times within the burst window, oldest first.
    denials: VecDeque<i64>,
    /// Calls per rate window: the current one and those before it.
    window: i64,
    in_window: u32,
    earlier: VecDeque<u32>,
    windows_seen: usize,
    /// The first client address of each token (by `jti`).
    first_address: Vec<(String, String)>,
    /// The tools of the root task's scope (a child's lies inside it, so
    /// these are all its chain ever asked for).
    chain_tools: Option<Arc<[String]>>,
    /// When each rule last fired for this task (ms), by rule index.
    fired: [Option<i64>; 6],
}

/// The rules and the state they need. Feed it every chained event in
/// `seq` order with [`Detector::observe`].
#[derive(Debug)]
pub struct Detector {
    cfg: Config,
    tasks: HashMap<String, Track>,
    last_sweep_ms: i64,
}

fn index(rule: AnomalyRule) -> usize {
    AnomalyRule::ALL
        .iter()
        .position(|r| *r == rule)
        .unwrap_or(0)
}

impl Detector {
    pub fn new(cfg: Config) -> Detector {
        Detector {
            cfg,
            tasks: HashMap::new(),
            last_sweep_ms: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Tasks with state held now.
    pub fn tracked(&self) -> usize {
        self.tasks.len()
    }

    /// Read one event; return what it makes a finding of. `now_ms` only
    /// ages state out: windows are measured in the events' own times.
    pub fn observe(&mut self, ev: &Event, now_ms: i64) -> Vec<Finding> {
        let Some(task) = ev.task.as_deref() else {
            return Vec::new();
        };
        let sig = signal::read(ev);
        if matches!(sig, Signal::Other) {
            return Vec::new();
        }
        self.make_room(task, now_ms);
        let inherited = match &sig {
            Signal::Started {
                parent: Some(p), ..
            } => self
                .tasks
                .get(p.as_str())
                .and_then(|t| t.chain_tools.clone()),
            _ => None,
        };
        let cfg = &self.cfg;
        let t = self.tasks.entry(task.to_owned()).or_default();
        t.last_seen_ms = t.last_seen_ms.max(ev.time_ms);
        let mut hits: Vec<(AnomalyRule, Value)> = Vec::new();
        match sig {
            Signal::Started { tools, .. } => {
                t.chain_tools = Some(inherited.unwrap_or_else(|| tools.into()));
            }
            Signal::Misuse { check } => {
                let rule = if check.task_may_be_live() {
                    AnomalyRule::Relay
                } else {
                    AnomalyRule::PostRevocationUse
                };
                hits.push((rule, json!({"check": check.as_str()})));
            }
            Signal::Call(call) => calls(cfg, t, ev, &call, &mut hits),
            Signal::Other => {}
        }
        let cooldown_ms = (cfg.cooldown_secs as i64).saturating_mul(1000);
        hits.into_iter()
            .filter_map(|(rule, mut evidence)| {
                let last = &mut t.fired[index(rule)];
                if last.is_some_and(|at| ev.time_ms < at.saturating_add(cooldown_ms)) {
                    return None;
                }
                *last = Some(ev.time_ms);
                evidence["seq"] = json!(ev.seq);
                evidence["event"] = json!(ev.kind.as_str());
                if let Some(r) = &ev.request_id {
                    evidence["request_id"] = json!(r);
                }
                Some(Finding {
                    rule,
                    task: task.to_owned(),
                    agent: ev.agent.clone(),
                    tool: ev.tool.clone(),
                    evidence,
                    seen_at: ev.time_ms,
                })
            })
            .collect()
    }

    /// Keep the map bounded: forget idle tasks now and then, and when a
    /// new task would pass the cap, the longest idle tenth.
    fn make_room(&mut self, task: &str, now_ms: i64) {
        let idle_ms = (self.cfg.idle_secs as i64).saturating_mul(1000);
        let full = self.tasks.len() >= self.cfg.max_tasks && !self.tasks.contains_key(task);
        if full || now_ms.saturating_sub(self.last_sweep_ms) >= idle_ms / 4 {
            self.last_sweep_ms = now_ms;
            let cutoff = now_ms.saturating_sub(idle_ms);
            self.tasks.retain(|_, t| t.last_seen_ms >= cutoff);
        }
        if self.tasks.len() >= self.cfg.max_tasks && !self.tasks.contains_key(task) {
            let mut seen: Vec<i64> = self.tasks.values().map(|t| t.last_seen_ms).collect();
            let k = (seen.len() / 10).max(1).min(seen.len() - 1);
            let (_, kth, _) = seen.select_nth_unstable(k);
            let kth = *kth;
            self.tasks.retain(|_, t| t.last_seen_ms > kth);
        }
    }
}

/// The rules over one call (a decision or a proxy call) of a task.
fn calls(
    cfg: &Config,
    t: &mut Track,
    ev: &Event,
    call: &Call<'_>,
    hits: &mut Vec<(AnomalyRule, Value)>,
) {
    let at = ev.time_ms;
    rate(cfg, t, at, hits);
    if call.token_revoked {
        hits.push((
            AnomalyRule::PostRevocationUse,
            json!({"check": "revoked_token", "jti": ev.jti}),
        ));
    }
    if let (Some(jti), Some(client)) = (&ev.jti, &call.client)
        && cfg.rules.relay.address_change
    {
        match t.first_address.iter().find(|(j, _)| j == jti) {
            Some((_, first)) if first != client => hits.push((
                AnomalyRule::Relay,
                json!({"check": "address_change", "jti": jti, "first_client": first, "client": client}),
            )),
            Some(_) => {}
            None if t.first_address.len() < MAX_TOKENS_PER_TASK => {
                t.first_address.push((jti.clone(), client.clone()));
            }
            None => {}
        }
    }
    if !call.denied || call.code == Some("approval_pending") {
        return;
    }
    let b = &cfg.rules.denial_burst;
    let window_ms = (b.window_secs as i64).saturating_mul(1000);
    while t.denials.front().is_some_and(|&d| d <= at - window_ms) {
        t.denials.pop_front();
    }
    t.denials.push_back(at);
    if t.denials.len() >= b.count as usize {
        hits.push((
            AnomalyRule::DenialBurst,
            json!({"denials": t.denials.len(), "window_secs": b.window_secs, "code": call.code}),
        ));
        t.denials.clear();
    }
    let outside_chain = call.delegated
        && match (&ev.tool, &t.chain_tools) {
            (Some(tool), Some(tools)) => !tools.iter().any(|t| t == tool),
            _ => false,
        };
    if outside_chain {
        hits.push((
            AnomalyRule::UnrequestedTool,
            json!({"code": call.code, "chain_tools": t.chain_tools.as_deref()}),
        ));
    } else if let Some(part) = call.outside {
        hits.push((
            AnomalyRule::OutOfScope,
            json!({"code": call.code, "outside": part}),
        ));
    }
}

/// Calls counted per window; fires when the current window is far above
/// the mean of the task's earlier ones.
fn rate(cfg: &Config, t: &mut Track, at: i64, hits: &mut Vec<(AnomalyRule, Value)>) {
    let s = &cfg.rules.rate_spike;
    let width = (s.window_secs as i64).saturating_mul(1000).max(1);
    let keep = s.baseline_windows.min(MAX_BASELINE_WINDOWS);
    let w = at.div_euclid(width);
    if t.windows_seen == 0 && t.in_window == 0 {
        t.window = w;
    }
    if w > t.window {
        let passed = (w - t.window) as usize;
        t.earlier.push_back(t.in_window);
        for _ in 1..passed.min(keep + 1) {
            t.earlier.push_back(0);
        }
        while t.earlier.len() > keep {
            t.earlier.pop_front();
        }
        t.windows_seen = t.windows_seen.saturating_add(passed);
        t.window = w;
        t.in_window = 0;
    }
    t.in_window = t.in_window.saturating_add(1);
    if t.windows_seen < s.min_history || t.in_window < s.min_calls {
        return;
    }
    let n = t.earlier.len().max(1);
    let mean = t.earlier.iter().map(|&c| f64::from(c)).sum::<f64>() / n as f64;
    if f64::from(t.in_window) > s.factor * mean {
        hits.push((
            AnomalyRule::RateSpike,
            json!({"calls": t.in_window, "window_secs": s.window_secs,
                   "baseline_mean": (mean * 100.0).round() / 100.0, "baseline_windows": n,
                   "factor": s.factor}),
        ));
    }
}

#[cfg(test)]
#[path = "detector_tests.rs"]
mod tests;
