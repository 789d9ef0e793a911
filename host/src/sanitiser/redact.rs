//! What the host repeats of a sanitiser's own words. Once a sanitiser has
//! been given rows, its error texts and whatever it printed to stderr may
//! carry row values (a message quoting the value it choked on, a panic
//! message), and the host's logs, history, status page and the engine
//! plugin must never see those. So the host keeps only what it can vouch
//! for: the error's kind and the length of what was withheld. Before the
//! first rows (describe, configure, uncovered) the sanitiser has seen only
//! the operator's rules and the schema, and its messages are shown whole.

use super::bindings::SanitiserError;

/// Said in place of the withheld text: why, and how to see more.
const WHY: &str = "withheld: it may contain row values; reproduce with the same rules on \
                   non-production data to see what the sanitiser says";

/// A sanitiser's typed error, reduced to its kind and length.
pub fn error(e: &SanitiserError) -> String {
    let (kind, message) = match e {
        SanitiserError::InvalidParam(m) => ("invalid-param", m),
        SanitiserError::BadArtifact(m) => ("bad-artifact", m),
        SanitiserError::Denied(m) => ("denied", m),
        SanitiserError::ProgramFailed(m) => ("program-failed", m),
        SanitiserError::Io(m) => ("io", m),
        SanitiserError::Integrity(m) => ("integrity", m),
        SanitiserError::Other(m) => ("other", m),
    };
    format!("error {kind} (its {}-byte message is {WHY})", message.len())
}

/// What a sanitiser printed to stderr, reduced to its length.
pub fn stderr(printed: &str) -> String {
    format!("it printed {} bytes to stderr ({WHY})", printed.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_values_are_never_repeated() {
        let canary = "CANARY-4711@example.com";
        let message = format!("cannot mask {canary}");
        let said = error(&SanitiserError::Other(message.clone()));
        assert!(!said.contains(canary), "{said}");
        let length = format!("{}-byte", message.len());
        assert!(
            said.contains("error other") && said.contains(&length),
            "{said}"
        );
        let said = stderr(&format!("panicked at src/lib.rs: {canary}"));
        assert!(!said.contains(canary), "{said}");
    }
}
