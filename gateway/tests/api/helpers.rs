//! The shared test helpers live in the library (feature `test-support`).

pub use gateway::test_support::*;
