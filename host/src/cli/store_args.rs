//! Store options shared by every command that opens a store.

use crate::store::StoreOptions;
use crate::store::s3::S3Options;
use clap::Args;

#[derive(Args, Debug, Clone)]
pub struct S3Args {
    /// S3 endpoint for S3-compatible servers (also AWS_ENDPOINT_URL).
    #[arg(long, env = "ENVSYNC_S3_ENDPOINT", global = true)]
    pub s3_endpoint: Option<String>,
    /// S3 region (also AWS_REGION) [default: from the AWS config, else us-east-1].
    #[arg(long, env = "ENVSYNC_S3_REGION", global = true)]
    pub s3_region: Option<String>,
    /// Path-style addressing (endpoint/bucket/key) [default: on when an endpoint is set].
    #[arg(long, env = "ENVSYNC_S3_PATH_STYLE", num_args = 0..=1, default_missing_value = "true", global = true)]
    pub s3_path_style: Option<bool>,
    /// Multipart part size in MiB (at least 5); memory per upload is part size × (parts in flight + 1) at most.
    #[arg(
        long,
        env = "ENVSYNC_S3_PART_SIZE_MIB",
        default_value_t = 16,
        global = true
    )]
    pub s3_part_size_mib: usize,
    /// Parts uploaded concurrently.
    #[arg(
        long,
        env = "ENVSYNC_S3_PARTS_IN_FLIGHT",
        default_value_t = 4,
        global = true
    )]
    pub s3_parts_in_flight: usize,
}

impl S3Args {
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            s3: S3Options {
                endpoint: self.s3_endpoint.clone(),
                region: self.s3_region.clone(),
                path_style: self.s3_path_style,
                part_size: self.s3_part_size_mib << 20,
                parts_in_flight: self.s3_parts_in_flight,
            },
            // For commands without a step (`backups`); a step's request
            // sets its own state folder (a config's `state_dir`).
            state_dir: crate::jobs::history::state_dir(None),
        }
    }
}
