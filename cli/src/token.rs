//! `ferric token …`: bootstrap tokens for enrolling agents.

use super::Client;
use super::output::print_json;
use anyhow::Result;
use clap::Subcommand;
use std::time::Duration;

/// `ferric token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create a single-use bootstrap token.
    Create {
        /// Lifetime.
        #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
        ttl: Duration,
    },
}

/// `ferric token create`.
pub(super) async fn create(client: &Client, ttl: Duration, json: bool) -> Result<()> {
    let t = client.create_token(ttl).await?;
    if json {
        return print_json(&t);
    }
    println!("token:   {}", t.token);
    println!(
        "expires: in {}",
        humantime::format_duration(Duration::from_secs(ttl.as_secs()))
    );
    println!("ca-hash: {}", t.ca_hash);
    println!();
    println!("enroll an agent with:");
    println!(
        "  ferric-agent enroll --coordinator HOST:7443 --token {} --ca-hash {} --node NAME",
        t.token, t.ca_hash
    );
    Ok(())
}
