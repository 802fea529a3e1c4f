//! What a process needs around the domain and the adapters: its command line, layered settings, logging,
//! metrics, readiness probes, graceful shutdown, supervised tasks, the transient/bug split
//! of failures, and the order writer's adaptive pace.

pub mod cli;
pub mod metrics;
pub mod pacing;
pub mod readiness;
pub mod settings;
pub mod shutdown;
pub mod supervisor;
pub mod telemetry;
pub mod transient;
