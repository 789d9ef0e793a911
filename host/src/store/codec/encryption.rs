//! age encryption: recipients for backups, identities for restores.

use crate::failure::{Failure, Kind};
use anyhow::Result;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// Encryption to age X25519 recipients (`age1…`). On restore, read from a
/// manifest, `recipients` is empty: decryption needs identities, not them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encryption {
    pub recipients: Vec<String>,
}

impl Encryption {
    /// Checks every recipient up front; at least one is needed.
    pub fn new(recipients: impl IntoIterator<Item = impl AsRef<str>>) -> Result<Self> {
        let recipients: Vec<String> = recipients
            .into_iter()
            .map(|r| r.as_ref().trim().to_string())
            .collect();
        if recipients.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                "encryption needs at least one age recipient (age1…): pass --recipient or a recipients file",
            )
            .into());
        }
        for recipient in &recipients {
            parse_recipient(recipient)?;
        }
        Ok(Encryption { recipients })
    }

    /// Recipients given one by one plus those listed in recipients files.
    pub fn from_args(recipients: &[String], recipients_files: &[PathBuf]) -> Result<Self> {
        let mut all = recipients.to_vec();
        for path in recipients_files {
            all.extend(read_recipients_file(path)?);
        }
        Encryption::new(all)
    }

    /// The recipients (`age1…`); empty when read back from a manifest.
    pub fn recipients(&self) -> &[String] {
        &self.recipients
    }

    /// The name the manifest records.
    pub fn manifest_name(&self) -> &'static str {
        "age"
    }

    /// Reads a manifest's encryption name back.
    pub fn from_manifest(name: &str) -> Result<Self> {
        match name {
            "age" => Ok(Encryption { recipients: vec![] }),
            other => Err(Failure::new(
                Kind::ArtifactRejected,
                format!(
                    "the manifest says the artifact is encrypted with {other:?}, which this \
                     envsync-host does not know (it reads age); use a newer envsync-host"
                ),
            )
            .into()),
        }
    }

    pub(super) fn parsed_recipients(&self) -> Result<Vec<age::x25519::Recipient>> {
        if self.recipients.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                "encryption needs at least one age recipient (age1…)",
            )
            .into());
        }
        self.recipients.iter().map(|r| parse_recipient(r)).collect()
    }
}

/// Parses one X25519 recipient, `age1…` as `age-keygen` prints it.
pub fn parse_recipient(text: &str) -> Result<age::x25519::Recipient> {
    let text = text.trim();
    if text.to_ascii_uppercase().starts_with("AGE-SECRET-KEY-") {
        // Never echo a secret key back.
        return Err(Failure::new(
            Kind::Usage,
            "not an age recipient: that is an age identity (a secret key); pass its public key \
             instead (`age-keygen -y FILE` prints it)",
        )
        .into());
    }
    age::x25519::Recipient::from_str(text).map_err(|why| {
        Failure::new(
            Kind::Usage,
            format!("not an age recipient: {text:?} ({why}; expected an X25519 recipient age1…)"),
        )
        .into()
    })
}

/// Reads a recipients file: one recipient per line; blank lines and lines
/// starting with `#` are skipped. Every recipient is checked.
pub fn read_recipients_file(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Kind::Usage,
            format!("cannot read recipients file {}: {e}", path.display()),
        )
    })?;
    let mut recipients = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Err(e) = parse_recipient(line) {
            return Err(Failure::new(
                Kind::Usage,
                format!("{}, line {}: {e}", path.display(), number + 1),
            )
            .into());
        }
        recipients.push(line.to_string());
    }
    if recipients.is_empty() {
        return Err(Failure::new(
            Kind::Usage,
            format!(
                "recipients file {} lists no age recipient (age1…)",
                path.display()
            ),
        )
        .into());
    }
    Ok(recipients)
}

/// age identities for restore, with the files they came from (for messages).
#[derive(Default)]
pub struct Identities {
    pub(super) files: Vec<PathBuf>,
    pub(super) keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// No identities: restoring an encrypted artifact will say to pass one.
    pub fn none() -> Self {
        Identities::default()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The files the identities were read from.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    pub(super) fn describe_files(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Debug for Identities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identities")
            .field("files", &self.files)
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Loads age identity files as `age-keygen` writes them: `AGE-SECRET-KEY-1…`
/// lines; blank lines and `#` comments are skipped. Each file must hold at
/// least one identity.
pub fn load_identities(paths: &[PathBuf]) -> Result<Identities> {
    let mut identities = Identities::default();
    for path in paths {
        let file = std::fs::File::open(path).map_err(|e| {
            let why = if e.kind() == io::ErrorKind::NotFound {
                "it does not exist".to_string()
            } else {
                e.to_string()
            };
            Failure::new(
                Kind::Usage,
                format!("cannot read identity file {}: {why}", path.display()),
            )
        })?;
        let parsed = age::IdentityFile::from_buffer(io::BufReader::new(file)).map_err(|e| {
            let hint = if e.kind() == io::ErrorKind::InvalidData {
                "; an identity file holds AGE-SECRET-KEY-1… lines as age-keygen writes them \
                     (age1… recipients are public keys, not identities)"
            } else {
                ""
            };
            Failure::new(
                Kind::Usage,
                format!("cannot read identity file {}: {e}{hint}", path.display()),
            )
        })?;
        let keys = parsed.into_identities().map_err(|e| {
            Failure::new(
                Kind::Usage,
                format!("cannot use identity file {}: {e}", path.display()),
            )
        })?;
        if keys.is_empty() {
            return Err(Failure::new(
                Kind::Usage,
                format!(
                    "identity file {} holds no age identity (an AGE-SECRET-KEY-1… line as \
                     age-keygen writes it)",
                    path.display()
                ),
            )
            .into());
        }
        identities.files.push(path.clone());
        identities.keys.extend(keys);
    }
    Ok(identities)
}
