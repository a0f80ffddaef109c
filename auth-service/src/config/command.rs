//! The auth-service's subcommands.

use clap::Subcommand;

/// The auth-service commands.
#[derive(Clone, Debug, Subcommand)]
pub enum Command {
    /// Serve the gRPC API (the default).
    Serve,
    /// Create the users, sessions, login-attempts and revocations tables if they do not exist (for local stacks), then exit.
    CreateTables,
    /// Print a new Ed25519 signing key as a PASERK `k4.secret`, stamped `not-before=` now plus
    /// --signing-key-activation-secs (its kid goes to stderr): a line to append to the keys
    /// file.
    GenerateSigningKey,
    /// Print a new key for sealing TOTP secrets (`--totp-key-file`) as a PASERK `k4.local`.
    GenerateTotpKey,
    /// Exit 0 if the server on the listen address reports SERVING within 2 s, else 1 (the
    /// container health check).
    HealthCheck,
    /// Print the audit log's `username_hash` of each username read from standard input (one
    /// per line, folded as logins fold it), under the configured audit key: how an operator
    /// finds the lines about a name.
    HashUsername,
}
