//! The key that seals page tokens: from a file or the environment, or (only when allowed) a
//! throw-away one for local development.

use anyhow::Context;

use crate::{config::Settings, page_token::PageTokens};

/// The page-token key from the settings, or (only when allowed) a throw-away one.
pub fn page_tokens(settings: &Settings) -> anyhow::Result<PageTokens> {
    match (&settings.page_token_key_file, &settings.page_token_key) {
        (Some(_), Some(_)) => {
            anyhow::bail!("set either --page-token-key-file or DYNAGATE_PAGE_TOKEN_KEY, not both")
        }
        (Some(path), None) => {
            let key = common::secrets::from_file(path)?;
            PageTokens::from_paserk(&key)
                .with_context(|| format!("the page-token key in {}", path.display()))
        }
        (None, Some(key)) => PageTokens::from_paserk(key).context("DYNAGATE_PAGE_TOKEN_KEY"),
        (None, None) if settings.dev_ephemeral_page_token_key => {
            tracing::warn!(
                "NO PAGE-TOKEN KEY CONFIGURED: generated a throw-away key for local development. \
                 Page tokens will not survive a restart or work across replicas."
            );
            PageTokens::generate()
        }
        (None, None) => anyhow::bail!(
            "no page-token key: set --page-token-key-file or DYNAGATE_PAGE_TOKEN_KEY \
             (`data-service generate-page-token-key` makes one), or --dev-ephemeral-page-token-key locally"
        ),
    }
}
