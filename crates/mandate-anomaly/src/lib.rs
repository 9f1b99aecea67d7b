//! Mandate's anomaly rules: a detector that reads the broker's own audit
//! events (decisions, proxy tool calls, misuse reports, task changes) and
//! says which of them are findings — a token used after its end, a burst
//! of refusals, a call rate far above the task's own, a relayed token, a
//! request outside the task's scope, a delegated token at a tool its
//! chain never asked for.
//!
//! [`Detector::observe`] is a pure function of its state, one event and
//! the time: no I/O, no clock, no async. What a finding does (alert,
//! suspend, ask a person) is configured per rule and environment
//! ([`Config::action`]) and carried out by the server. The state kept
//! per task is small and bounded ([`Config::max_tasks`], idle tasks
//! forgotten after [`Config::idle_secs`]).

#![forbid(unsafe_code)]

mod config;
mod detector;
mod signal;

pub use config::{Config, DenialBurst, Plain, RateSpike, Relay, Rules};
pub use detector::{Detector, Finding};
pub use mandate_core::{AnomalyAction, AnomalyRule};
