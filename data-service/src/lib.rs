//! Dynagate data-service: stores each caller's items in DynamoDB under their own partition,
//! running every DynamoDB call with the caller's temporary credentials from the auth-service.
//! Input is validated before anything reaches DynamoDB. `main.rs` is a thin wrapper; tests
//! drive everything through [`startup::Application`].

pub mod auth_channel;
pub mod backoff;
pub mod config;
pub mod convert;
pub mod credentials;
pub mod error;
pub mod export;
pub mod interceptor;
pub mod keys;
pub mod metrics;
pub mod number;
pub mod page_token;
pub mod requests;
pub mod revocations;
pub mod service;
pub mod startup;
pub mod store;
pub mod token_cache;
