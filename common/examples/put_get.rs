//! Logs in to Dynagate, puts an item and gets it back, through `common::client`.
//!
//! ```sh
//! scripts/stack up
//! DYNAGATE_PASSWORD='correct horse battery' \
//!   cargo run -p common --example put_get -- --register --username alice-rust
//! ```
//!
//! The flow itself is `common::client::put_get`, which `tests/tests/rust_client.rs` runs.

use clap::Parser;
use common::client::{PutGet, put_get};
use secrecy::SecretString;
use tonic::transport::Channel;

#[derive(Parser)]
#[command(about = "Log in, put an item and get it back")]
struct Args {
    /// The auth-service.
    #[arg(
        long,
        env = "DYNAGATE_AUTH_URL",
        default_value = "http://127.0.0.1:50051"
    )]
    auth_url: String,
    /// The data-service.
    #[arg(
        long,
        env = "DYNAGATE_DATA_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    data_url: String,
    /// The user to log in as.
    #[arg(long, env = "DYNAGATE_USERNAME")]
    username: String,
    /// Their password.
    #[arg(long, env = "DYNAGATE_PASSWORD", hide_env_values = true)]
    password: SecretString,
    /// Register the user first.
    #[arg(long)]
    register: bool,
    /// The item's key.
    #[arg(long, default_value = "examples/hello")]
    key: String,
    /// The item's `text` attribute.
    #[arg(long, default_value = "hello from Rust")]
    text: String,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let auth = Channel::from_shared(args.auth_url)?.connect().await?;
    let data = Channel::from_shared(args.data_url)?.connect().await?;
    let run = PutGet {
        username: args.username,
        password: args.password,
        register: args.register,
        key: args.key,
        text: args.text,
    };
    let item = put_get(auth, data, &run).await?;
    println!("{item:#?}");
    Ok(())
}
