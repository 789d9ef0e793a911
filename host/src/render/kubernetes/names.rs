//! What Kubernetes accepts as names, quantities and schedules, checked here
//! so that a mistake is reported against the config file instead of by the
//! API server at `kubectl apply`.

use sha2::{Digest, Sha256};

/// Longest CronJob name: the Jobs it creates add an 11-character suffix and
/// must stay a 63-character DNS label.
pub const CRONJOB_NAME_MAX: usize = 52;
/// Longest DNS-1123 label (names of most objects, label values).
pub const LABEL_MAX: usize = 63;

/// Six hex digits of the SHA-256 of `text`.
fn short_hash(text: &str) -> String {
    hex::encode(&Sha256::digest(text.as_bytes())[..3])
}

/// `text` as a DNS-1123 label of at most `max` characters: lower case, each
/// run of other characters one `-`, no `-` at either end. A longer result is
/// cut and ends in a hash of `text`, so different long texts stay apart.
pub fn dns_label(text: &str, max: usize) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        return format!("x{}", short_hash(text));
    }
    if out.len() > max {
        let hash = short_hash(text);
        let mut cut = out[..max - hash.len() - 1].to_string();
        while cut.ends_with('-') {
            cut.pop();
        }
        out = format!("{cut}-{hash}");
    }
    out
}

/// Whether `text` is a DNS-1123 label of at most `max` characters.
pub fn is_dns_label(text: &str, max: usize) -> bool {
    !text.is_empty()
        && text.len() <= max
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Whether `text` is a DNS-1123 subdomain (Secret, ConfigMap, claim names).
pub fn is_dns_subdomain(text: &str) -> bool {
    text.len() <= 253 && text.split('.').all(|l| is_dns_label(l, LABEL_MAX))
}

/// Whether `text` is a qualified name (`[prefix/]name`), as label and
/// annotation keys are.
pub fn is_qualified_name(text: &str) -> bool {
    let (prefix, name) = match text.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, text),
    };
    let name_ok = !name.is_empty()
        && name.len() <= LABEL_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// Whether `text` may be a key of a ConfigMap or Secret.
pub fn is_data_key(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && text != "."
        && text != ".."
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// `text` as a ConfigMap key: other characters become `_`.
pub fn data_key(text: &str) -> String {
    let key: String = text
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if is_data_key(&key) {
        key
    } else {
        "file".to_string()
    }
}

/// Splits a quantity into its number and suffix.
fn split_quantity(text: &str) -> Option<(f64, &str)> {
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    if number.is_empty() || number.matches('.').count() > 1 || number.ends_with('.') {
        return None;
    }
    Some((number.parse().ok()?, suffix))
}

/// Bytes of a memory quantity (`512Mi`, `2Gi`, `1G`, `1000000`).
pub fn memory_bytes(text: &str) -> Option<u64> {
    let (number, suffix) = split_quantity(text)?;
    let unit: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return None,
    };
    let bytes = number * unit as f64;
    (bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

/// Thousandths of a CPU of a CPU quantity (`250m`, `1`, `1.5`).
pub fn cpu_millis(text: &str) -> Option<u64> {
    let (number, suffix) = split_quantity(text)?;
    let millis = match suffix {
        "" => number * 1000.0,
        "m" if !text.contains('.') => number,
        _ => return None,
    };
    (millis >= 1.0 && millis.fract() == 0.0 && millis < 1e12).then_some(millis as u64)
}

/// Schedule nicknames a CronJob accepts.
const NICKNAMES: [&str; 7] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@midnight",
    "@hourly",
];
const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Checks that a schedule `config check` accepted is one a CronJob accepts
/// too: five fields of numbers, `*`, ranges, lists and steps (month and
/// weekday names allowed), weekdays 0-6, or a nickname such as `@daily`.
pub fn check_schedule(text: &str) -> Result<(), String> {
    let text = text.trim();
    if text.starts_with('@') {
        return if NICKNAMES.contains(&text.to_ascii_lowercase().as_str()) {
            Ok(())
        } else {
            Err(format!(
                "schedule {text:?}: Kubernetes CronJobs accept only the nicknames {}",
                NICKNAMES.join(", ")
            ))
        };
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() == 6 {
        return Err(format!(
            "schedule {text:?} has a seconds field, which Kubernetes CronJobs do not have: use 5 fields \
             (minute hour day-of-month month day-of-week)"
        ));
    }
    if fields.len() != 5 {
        return Err(format!("schedule {text:?} does not have 5 fields"));
    }
    for (i, field) in fields.iter().enumerate() {
        let names: &[&str] = match i {
            3 => &MONTHS,
            4 => &WEEKDAYS,
            _ => &[],
        };
        for part in field.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((r, s)) => (r, Some(s)),
                None => (part, None),
            };
            if step.is_some_and(|s| s.is_empty() || !s.chars().all(|c| c.is_ascii_digit())) {
                return Err(format!(
                    "schedule {text:?}: step {part:?} is not a number Kubernetes CronJobs accept"
                ));
            }
            if range == "*" {
                continue;
            }
            for value in range.split('-') {
                let known_name = names.contains(&value.to_ascii_lowercase().as_str());
                let number = value.parse::<u32>().ok();
                if !known_name && number.is_none() {
                    return Err(format!(
                        "schedule {text:?}: {value:?} is not something Kubernetes CronJobs accept \
                         (numbers, *, a-b, a,b, */n, month and weekday names; no L, W, # or ?)"
                    ));
                }
                if i == 4 && number.is_some_and(|n| n > 6) {
                    return Err(format!(
                        "schedule {text:?}: Kubernetes counts weekdays 0-6 (0 is Sunday); use 0 for Sunday"
                    ));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_lower_case_dashed_and_short() {
        assert_eq!(dns_label("staging-shop", 52), "staging-shop");
        assert_eq!(dns_label("Production_EU.shop", 52), "production-eu-shop");
        assert_eq!(dns_label("--a__b--", 52), "a-b");
        let long = dns_label(&"x".repeat(80), CRONJOB_NAME_MAX);
        assert_eq!(long.len(), CRONJOB_NAME_MAX);
        assert!(is_dns_label(&long, CRONJOB_NAME_MAX), "{long}");
        assert_ne!(long, dns_label(&format!("{}y", "x".repeat(80)), 52));
        assert!(is_dns_label(&dns_label("___", 52), 52));
        assert!(!is_dns_label("Shop", 63));
        assert!(!is_dns_label("-shop", 63));
        assert!(is_dns_subdomain("envsync.staging-db"));
        assert!(is_qualified_name("eks.amazonaws.com/role-arn"));
        assert!(is_qualified_name("safe-to-evict"));
        assert!(!is_qualified_name("Bad_Prefix/x"));
        assert_eq!(data_key("my script.sql"), "my_script.sql");
        assert_eq!(data_key(".."), "file");
    }

    #[test]
    fn quantities_parse() {
        assert_eq!(memory_bytes("512Mi"), Some(512 << 20));
        assert_eq!(memory_bytes("1.5Gi"), Some(3 << 29));
        assert_eq!(memory_bytes("1G"), Some(1_000_000_000));
        assert_eq!(memory_bytes("2048"), Some(2048));
        assert_eq!(memory_bytes("1gb"), None);
        assert_eq!(memory_bytes("Mi"), None);
        assert_eq!(cpu_millis("250m"), Some(250));
        assert_eq!(cpu_millis("1.5"), Some(1500));
        assert_eq!(cpu_millis("2"), Some(2000));
        assert_eq!(cpu_millis("0.5m"), None);
        assert_eq!(cpu_millis("1 core"), None);
    }

    #[test]
    fn schedules_kubernetes_rejects_are_found() {
        for ok in [
            "30 2 * * *",
            "0 3 * * 0",
            "*/15 8-18 * * mon-fri",
            "0 0 1 jan,jul *",
            "@daily",
        ] {
            assert_eq!(check_schedule(ok), Ok(()), "{ok}");
        }
        for bad in [
            "0 3 * * 7",
            "0 0 3 * * *",
            "0 3 L * *",
            "0 3 * * 5#3",
            "0 3 ? * *",
            "@every",
        ] {
            assert!(check_schedule(bad).is_err(), "{bad}");
        }
    }
}
