//! The `mandate` binary as users run it, against real servers: one test
//! binary, each module the rules of one area.

mod common;
mod crash;
mod governance;
mod interop;
mod interop_support;
mod lease_crash;
mod postgres;
mod run;
mod run_db;
mod scan;
mod verbs;
