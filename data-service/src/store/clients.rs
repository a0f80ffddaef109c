//! One user's DynamoDB clients: the client their credentials were vended for, which keeps the
//! SDK's retries (reads), and its twin without them (writes, see [`UserDb::writes`]), both on the
//! same configuration, credentials and HTTP connection pool.

use std::sync::OnceLock;

use aws_sdk_dynamodb::{Client, config::retry::RetryConfig};

/// A user's clients, built when the user's credentials are loaded and cached with them.
#[derive(Debug)]
pub struct UserDb {
    reads: Client,
    /// Made from `reads` at the user's first write, then kept: a write costs no per-call
    /// merging of configuration, as a per-request override of the retry settings would.
    writes: OnceLock<Client>,
}

impl UserDb {
    /// The clients of `reads`, a client with the user's credentials.
    pub fn new(reads: Client) -> Self {
        Self {
            reads,
            writes: OnceLock::new(),
        }
    }

    /// The client for reads, with the SDK's retries.
    pub fn reads(&self) -> &Client {
        &self.reads
    }

    /// The client for writes: every request goes out once, without the SDK's retries. A retry
    /// resends a request whose answer was lost although it may have landed; the resent one then
    /// fails its own condition (a versioned write is refused because of itself) or,
    /// unconditional, bumps the version a second time. A lost answer is UNAVAILABLE instead:
    /// the client reads and decides.
    pub fn writes(&self) -> &Client {
        self.writes.get_or_init(|| {
            let config = (self.reads.config().to_builder())
                .retry_config(RetryConfig::disabled())
                .build();
            Client::from_conf(config)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_are_never_retried_and_reads_keep_their_retries() {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .build();
        let db = UserDb::new(Client::from_conf(config));
        let attempts = |client: &Client| {
            let retry = client.config().retry_config().cloned();
            retry.map(|retry| retry.max_attempts())
        };
        assert_eq!(attempts(db.reads()), Some(3));
        assert_eq!(attempts(db.writes()), Some(1));
        assert!(std::ptr::eq(db.writes(), db.writes()), "built once");
    }
}
