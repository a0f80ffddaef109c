//! Dynagate's measuring programs (`loadgen`, `revbench`, `scaleout`) and what only they need.
//! They drive the services through the test harness (`tests`), but measure, not assert: none
//! of them runs in `cargo test`. See `scripts/bench` and `scripts/replicas`.

pub mod cpu;
