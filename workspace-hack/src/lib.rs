//! Nothing to use: this crate exists for its `Cargo.toml`, which turns on the dependency
//! features that only dev-dependencies would, so that `cargo build --workspace --bins` and
//! `cargo test --workspace` build the same artifacts (one build of the AWS SDK, not two).
//! The production image (`-p auth-service -p data-service`) does not include it.
