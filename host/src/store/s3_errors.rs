//! What an operator is told when an S3 store cannot be used: which of
//! credentials, endpoint or bucket is wrong and how to fix it, in plain
//! sentences. The SDK's own `DisplayErrorContext` appends its errors' Debug
//! form (nested structs, raw responses); nothing here prints that.

use crate::failure::{Failure, Kind};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::error::Error;

/// Where credentials come from, for the messages that ask for them.
const CREDENTIAL_SOURCES: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and \
     AWS_SESSION_TOKEN for temporary keys), or AWS_PROFILE with a profile in ~/.aws/credentials, \
     or run where a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE) or an instance role \
     provides them";

/// `e` and each of its sources, by their `Display`, joined with `: `; a
/// source whose text the message already holds is left out.
pub fn describe(e: &(dyn Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// No credentials could be loaded for the store at `location`.
pub fn no_credentials(location: &str, e: &(dyn Error + 'static)) -> Failure {
    Failure::new(
        Kind::StepFailed,
        format!(
            "no AWS credentials for the S3 store {location}: {CREDENTIAL_SOURCES} (the last \
             source tried said: {})",
            describe(e)
        ),
    )
}

/// The first request to `bucket` (`at`: ` at <endpoint>` or empty) failed.
pub fn bucket_unusable<E>(
    e: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    bucket: &str,
    at: &str,
) -> Failure
where
    E: ProvideErrorMetadata + Error + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    let hint = match (e, status) {
        (SdkError::DispatchFailure(d), _) if d.is_io() || d.is_timeout() => format!(
            "the S3 endpoint cannot be reached ({}); check --s3-endpoint / AWS_ENDPOINT_URL \
             (scheme, host and port) and that the server is up",
            describe(e)
        ),
        (SdkError::TimeoutError(_), _) => "the S3 endpoint did not answer in time; check \
             --s3-endpoint / AWS_ENDPOINT_URL and the network"
            .to_string(),
        (_, Some(404)) => "the bucket does not exist; create it or fix the store URL".to_string(),
        (_, Some(401 | 403)) => format!(
            "the server refused the credentials ({}): the access key is unknown, the secret key \
             is wrong, or the key may not use this bucket; check AWS_ACCESS_KEY_ID / \
             AWS_SECRET_ACCESS_KEY (or the profile) and the region",
            e.code().unwrap_or("access denied")
        ),
        (_, Some(301 | 400)) => "the region or endpoint is wrong for this bucket (set \
             --s3-region / AWS_REGION, or --s3-endpoint)"
            .to_string(),
        _ => describe(e),
    };
    Failure::new(
        Kind::StepFailed,
        format!("cannot use S3 bucket {bucket}{at}: {hint}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl std::fmt::Display for Outer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("dispatch failure")
        }
    }

    impl Error for Outer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn describe_joins_the_display_of_each_source_and_no_debug() {
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        let text = describe(&e);
        assert_eq!(text, "dispatch failure: connection refused");
        assert!(!text.contains("Outer") && !text.contains("kind:"));
    }
}
