//! Building an S3 client: one place for the SDK settings every S3 user of
//! the host shares (the artifact store and the `objects` capability).

use super::s3::S3Options;
use super::s3_errors;
use crate::connection::Secret;
use anyhow::Result;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};

/// An access key the operator configured for one location. Without one the
/// standard AWS chain (environment, profile, web identity) applies.
#[derive(Clone, Debug)]
pub struct AccessKey {
    pub id: String,
    pub secret: Secret,
}

/// A client for `options`, signing with `key` (or the AWS chain), and the
/// endpoint it talks to when one is set (for messages). `location` names
/// the store or location in errors.
pub async fn build(
    options: &S3Options,
    key: Option<&AccessKey>,
    location: &str,
) -> Result<(Client, Option<String>)> {
    let mut loader = aws_config::from_env();
    if let Some(region) = &options.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(endpoint) = &options.endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(key) = key {
        loader = loader.credentials_provider(Credentials::new(
            &key.id,
            key.secret.expose(),
            None,
            None,
            "envsync-config",
        ));
    }
    let shared = loader.load().await;
    // Asked once up front, so a missing credential is named as such
    // instead of surfacing as a failed request. (The client asks its
    // provider again: one more fetch for role-based credentials.)
    if let Some(provider) = shared.credentials_provider()
        && let Err(e) = provider.provide_credentials().await
    {
        return Err(s3_errors::no_credentials(location, &e).into());
    }
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
    let mut config = aws_sdk_s3::config::Builder::from(&shared)
        // S3-compatible servers reject the newer default checksums.
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .force_path_style(options.path_style.unwrap_or(endpoint.is_some()));
    if shared.region().is_none() {
        config = config.region(Region::new("us-east-1"));
    }
    Ok((Client::from_conf(config.build()), endpoint))
}
