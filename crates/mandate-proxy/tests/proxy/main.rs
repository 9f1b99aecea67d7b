//! The proxy end to end with a real broker and a real upstream: one test
//! binary, each module the rules of one area.

mod anomalies;
mod approvals;
mod audit;
mod delegation;
mod egress;
mod end_to_end;
mod logs;
mod misuse;
mod one_decision;
mod support;
