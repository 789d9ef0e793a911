//! The residual-PII scan: counts values that still look personal after a
//! sanitiser ran — e-mail addresses outside the allowed domains, phone
//! numbers, UK National Insurance numbers and card numbers that pass the
//! Luhn check. Only counts are kept: the scan must not itself leak what it
//! finds into logs.

use regex::Regex;
use serde::Serialize;
use std::sync::LazyLock;

static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)[a-z0-9._%+\-]+@([a-z0-9\-]+(?:\.[a-z0-9\-]+)+)").expect("email pattern")
});
/// International (`+44 20 7946 0958`) or national with a trunk 0
/// (`020 7946 0958`, `07700-900123`): 10 to 13 digits, not inside a longer
/// run of letters and digits (a hex hash is not a phone number).
static PHONE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^0-9A-Za-z])((?:\+\d{1,3}|0)[\s.\-]?\(?\d{2,5}\)?[\s.\-]?\d{3,4}[\s.\-]?\d{3,4})(?:$|[^0-9A-Za-z])")
        .expect("phone pattern")
});
/// Two prefix letters (not D F I Q U V; second not O), six digits, suffix A-D.
static NI_NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")
        .expect("NI pattern")
});
static CARD: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b\d(?:[ \-]?\d){12,18}\b").expect("card pattern"));

/// Nothing the patterns find is shorter than an e-mail address `a@b.c`
/// or, without an '@', an NI number `AB123456C` (phone and card numbers
/// need ten digits).
const SHORTEST_EMAIL: usize = 5;
const SHORTEST_NUMBER: usize = 9;

/// Counts of values that look personal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Findings {
    pub emails: u64,
    pub phone_numbers: u64,
    pub ni_numbers: u64,
    pub card_numbers: u64,
}

impl Findings {
    pub fn total(&self) -> u64 {
        self.emails + self.phone_numbers + self.ni_numbers + self.card_numbers
    }

    pub fn add(&mut self, other: &Findings) {
        self.emails += other.emails;
        self.phone_numbers += other.phone_numbers;
        self.ni_numbers += other.ni_numbers;
        self.card_numbers += other.card_numbers;
    }

    /// `2 e-mail addresses, 1 phone number`, or `none`.
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            (self.emails, "e-mail address", "e-mail addresses"),
            (self.phone_numbers, "phone number", "phone numbers"),
            (
                self.ni_numbers,
                "National Insurance number",
                "National Insurance numbers",
            ),
            (self.card_numbers, "card number", "card numbers"),
        ]
        .iter()
        .filter(|(n, ..)| *n > 0)
        .map(|(n, one, many)| format!("{n} {}", if *n == 1 { one } else { many }))
        .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(", ")
        }
    }
}

/// Scans values; e-mails in `allowed_domains` (or their subdomains) pass.
#[derive(Clone, Debug, Default)]
pub struct Scanner {
    allowed_domains: Vec<String>,
    pub findings: Findings,
}

impl Scanner {
    pub fn new(allowed_domains: &[String]) -> Scanner {
        Scanner {
            allowed_domains: allowed_domains
                .iter()
                .map(|d| d.trim_start_matches('@').to_ascii_lowercase())
                .collect(),
            findings: Findings::default(),
        }
    }

    /// Counts what `value` holds (each kind at most once per value).
    pub fn scan(&mut self, value: &str) {
        self.scan_value(value, true);
    }

    /// Scans the values of a batch whose text, all values together, is
    /// `text`. One search for '@' serves them all, and decides the shortest
    /// value worth looking at: `values(min_len)` gives the non-NULL values
    /// of at least `min_len` bytes (a batch skips the rest by length alone).
    pub fn scan_batch<'a, I: Iterator<Item = &'a str>>(
        &mut self,
        text: &str,
        values: impl FnOnce(usize) -> I,
    ) {
        let any_at = text.contains('@');
        let min_len = if any_at {
            SHORTEST_EMAIL
        } else {
            SHORTEST_NUMBER
        };
        for value in values(min_len) {
            self.scan_value(value, any_at);
        }
    }

    fn scan_value(&mut self, value: &str, may_have_at: bool) {
        // Cheap filters first: lengths (see the constants), then one pass.
        if value.len() < SHORTEST_EMAIL {
            return;
        }
        // Digits inside an e-mail address (a hash in a mask) are not a phone
        // or card number: look at the rest of the value for those.
        let blanked;
        let value = if may_have_at && value.contains('@') {
            if self.has_foreign_email(value) {
                self.findings.emails += 1;
            }
            blanked = EMAIL.replace_all(value, " ");
            blanked.as_ref()
        } else if value.len() < SHORTEST_NUMBER {
            return;
        } else {
            value
        };
        // Every pattern below needs six digits or more (an NI number six
        // and two capitals, the others ten): count them first, in one
        // vectorised pass, so ordinary text costs nothing more.
        let digits = count(value, u8::is_ascii_digit);
        if digits < 6 {
            return;
        }
        let capitals = count(value, u8::is_ascii_uppercase);
        if capitals >= 2 && NI_NUMBER.is_match(value) {
            self.findings.ni_numbers += 1;
        }
        if digits < 10 {
            return;
        }
        // A card number also looks like a phone number; count it once.
        if CARD.find_iter(value).any(|m| luhn(m.as_str())) {
            self.findings.card_numbers += 1;
        } else if PHONE.captures_iter(value).any(|c| !fictional_phone(&c[1])) {
            self.findings.phone_numbers += 1;
        }
    }

    fn has_foreign_email(&self, value: &str) -> bool {
        EMAIL.captures_iter(value).any(|c| {
            let domain = c[1].to_ascii_lowercase();
            !self
                .allowed_domains
                .iter()
                .any(|a| domain == *a || domain.ends_with(&format!(".{a}")))
        })
    }
}

/// How many bytes of `value` match `test`, counted 32 at a time in byte
/// lanes (a plain `filter().count()` adds one byte at a time).
fn count(value: &str, test: impl Fn(&u8) -> bool) -> usize {
    let mut chunks = value.as_bytes().chunks_exact(32);
    let mut n = 0;
    for chunk in &mut chunks {
        n += usize::from(chunk.iter().map(|b| u8::from(test(b))).sum::<u8>());
    }
    n + chunks.remainder().iter().filter(|b| test(b)).count()
}

/// Ofcom's ranges for drama and examples (what masks use): not personal.
const FICTIONAL_PHONE_PREFIXES: &[&str] = &[
    "07700900", "02079460", "01134960", "01144960", "01154960", "01164960", "01174960", "01184960",
    "01214960", "01314960", "01414960", "01514960", "01614960", "02890180", "02920180", "01632960",
    "03069990", "08081570", "09098790",
];

/// Whether `number` is in a fictional range (`+44` read as the trunk `0`).
fn fictional_phone(number: &str) -> bool {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    let national = match digits.strip_prefix("44") {
        Some(rest) if number.trim_start().starts_with('+') => format!("0{rest}"),
        _ => digits,
    };
    FICTIONAL_PHONE_PREFIXES
        .iter()
        .any(|p| national.starts_with(p))
}

/// The Luhn check over the digits of `text` (13 to 19 of them).
pub fn luhn(text: &str) -> bool {
    let digits: Vec<u32> = text.chars().filter_map(|c| c.to_digit(10)).collect();
    if !(13..=19).contains(&digits.len()) || digits.iter().all(|d| *d == 0) {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans one value at a time and as one batch; both must agree.
    fn scan(values: &[&str]) -> Findings {
        let allowed = ["example.com".to_string(), "example.invalid".to_string()];
        let mut s = Scanner::new(&allowed);
        for v in values {
            s.scan(v);
        }
        let mut batch = Scanner::new(&allowed);
        batch.scan_batch(&values.concat(), |min_len| {
            values.iter().copied().filter(move |v| v.len() >= min_len)
        });
        assert_eq!(s.findings, batch.findings, "{values:?}");
        s.findings
    }

    #[test]
    fn each_kind_is_found_and_counted_once_per_value() {
        let f = scan(&[
            "alice@gmail.com",
            "write to bob@corp.co.uk or carol@corp.co.uk",
            "+44 20 8123 4567",
            "07911 123456",
            "QQ 12 34 56 C",
            "AB123456C",
            "4111 1111 1111 1111",
            "5500-0000-0000-0004",
        ]);
        assert_eq!(
            f,
            Findings {
                emails: 2,
                phone_numbers: 2,
                ni_numbers: 1, // QQ is not a valid prefix
                card_numbers: 2,
            }
        );
        assert_eq!(
            f.describe(),
            "2 e-mail addresses, 2 phone numbers, 1 National Insurance number, 2 card numbers"
        );
    }

    #[test]
    fn masked_values_and_ordinary_data_pass() {
        let f = scan(&[
            "user-3f9a1c@example.com",
            "user-012345678901@example.com",
            "3fa0123456789b0c4111111111111111d2e9f0a1b2c3d4e5f6a7b8c9d0e1f2a3",
            "0123456789abcdef0123456789abcdef",
            "+44 7700 900390",
            "020 7946 0123",
            "x@mail.example.invalid",
            "4111 1111 1111 1112", // fails Luhn
            "12345",
            "2026-11-21 04:30:00+00",
            "order 1234567",
            "                                                                                    ",
            "-2147483648",
            "3.14159265358979",
        ]);
        assert_eq!(f, Findings::default(), "{f:?}");
        assert_eq!(f.describe(), "none");
    }

    #[test]
    fn counts_bytes_in_and_after_whole_chunks() {
        let text = "AB12 ".repeat(20); // 100 bytes: three chunks of 32 and four more
        assert_eq!(count(&text, u8::is_ascii_digit), 40);
        assert_eq!(count(&text, u8::is_ascii_uppercase), 40);
        assert_eq!(count("", u8::is_ascii_digit), 0);
        assert_eq!(count(&"9".repeat(255), u8::is_ascii_digit), 255);
    }

    #[test]
    fn luhn_accepts_valid_card_numbers() {
        assert!(luhn("4111111111111111"));
        assert!(luhn("378282246310005"));
        assert!(!luhn("4111111111111112"));
        assert!(!luhn("0000000000000000"));
        assert!(!luhn("411111"));
    }
}
