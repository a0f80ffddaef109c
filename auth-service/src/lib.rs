//! Dynagate auth-service: registers users (argon2id), logs them in, and issues PASETO
//! v4.public access tokens and rotating refresh tokens. `main.rs` is a thin wrapper; tests
//! drive everything through [`startup::Application`].

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod config;
pub mod credentials;
pub mod end_user;
pub mod erasure;
pub mod error;
#[cfg(all(feature = "failpoints", debug_assertions))]
pub mod failpoints;
pub mod family;
pub mod key_reload;
pub mod keys;
pub mod lockout;
pub mod metrics;
pub mod mfa;
pub mod password;
pub mod policy;
pub mod recovery;
pub mod refresh_token;
pub mod revocations;
pub mod service;
pub mod sessions;
pub mod startup;
pub mod throttle;
pub mod tokens;
pub mod users;
pub mod validation;
