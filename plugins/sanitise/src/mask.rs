//! The masks: pure functions of a value and its keyed hash, written into
//! the value's own buffer (no allocation per value when it has room).
//!
//! Every mask of a value is a function of `keyed(value)` alone, so the same
//! value gives the same mask in every table and every run with the same
//! salt: joins and foreign keys on masked columns survive. On a column under
//! a unique constraint, masks that could collide (`fake_name`, `fake_phone`,
//! `fake_address`, `lorem`, `fixed`, `truncate`) carry a 64-bit token of the
//! hash (16 letters `a`–`p`), so distinct values stay distinct. `fake_email` (48 bits) and `hash`
//! (256 bits) are unique with high probability as they are.

use crate::rules::Action;
use envsync_plugin_sdk::rows::RowBatchBuilder;
use std::fmt::Write;

/// The keyed hash: HMAC-SHA-256 under the task's salt in the host
/// (`keyed.hash`), any 32-byte keyed function in tests.
pub trait Keyed {
    /// The 32-byte keyed hash of `data`.
    fn hash(&self, data: &[u8]) -> [u8; 32];
}

impl<F: Fn(&[u8]) -> [u8; 32]> Keyed for F {
    fn hash(&self, data: &[u8]) -> [u8; 32] {
        self(data)
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Appends the lower-case hex of `bytes`.
pub fn push_hex(out: &mut String, bytes: &[u8]) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 15)] as char);
    }
}

/// 16 letters `a`–`p` (64 bits) of the hash, from bytes the fake pickers
/// do not use: the token that keeps masks of unique columns unique. Letters,
/// not hex digits, so a token never looks like a phone or card number to
/// the host's residual-PII scan.
fn push_token(out: &mut String, h: &[u8; 32]) {
    out.reserve(TOKEN_LEN);
    for b in &h[16..24] {
        out.push((b'a' + (b >> 4)) as char);
        out.push((b'a' + (b & 15)) as char);
    }
}

const TOKEN_LEN: usize = 16;

fn pick<'a>(list: &[&'a str], bytes: &[u8]) -> &'a str {
    let n = bytes.iter().fold(0usize, |n, b| (n << 8) | usize::from(*b));
    list[n % list.len()]
}

const FIRST_NAMES: &[&str] = &[
    "Alice", "Amara", "Arjun", "Beatrice", "Ben", "Carla", "Chen", "Chloe", "Daniel", "Dara",
    "Eleanor", "Emeka", "Farah", "Finn", "Freya", "George", "Grace", "Hamza", "Harriet", "Isla",
    "Ivan", "Jack", "Jade", "Kai", "Leila", "Liam", "Lucy", "Mateo", "Maya", "Mohammed", "Nadia",
    "Noah", "Olivia", "Oscar", "Priya", "Quinn", "Rosa", "Ruben", "Saoirse", "Sam", "Sofia",
    "Tariq", "Theo", "Uma", "Victor", "Wei", "Yara", "Zoe",
];

const LAST_NAMES: &[&str] = &[
    "Adeyemi", "Bailey", "Brown", "Campbell", "Chen", "Clarke", "Davies", "Dubois", "Evans",
    "Fischer", "Garcia", "Green", "Hall", "Hughes", "Ivanova", "Jones", "Kaur", "Kelly", "Khan",
    "Lewis", "Martin", "Moreau", "Murphy", "Nowak", "O'Brien", "Okafor", "Patel", "Price", "Quinn",
    "Roberts", "Rossi", "Santos", "Schmidt", "Singh", "Smith", "Taylor", "Thomas", "Walker",
    "Ward", "Williams", "Wilson", "Wright", "Young",
];

const STREETS: &[&str] = &[
    "Acacia Avenue",
    "Albert Road",
    "Bridge Street",
    "Castle Lane",
    "Chapel Road",
    "Church Street",
    "Elm Grove",
    "High Street",
    "Kings Road",
    "Lime Walk",
    "Mill Lane",
    "New Road",
    "Orchard Way",
    "Park Avenue",
    "Queens Drive",
    "Riverside",
    "Station Road",
    "The Crescent",
    "Victoria Street",
    "West End",
    "Willow Close",
    "York Terrace",
];

const TOWNS: &[&str] = &[
    "Aberdeen",
    "Bath",
    "Belfast",
    "Brighton",
    "Bristol",
    "Cambridge",
    "Cardiff",
    "Chester",
    "Derby",
    "Dundee",
    "Exeter",
    "Glasgow",
    "Harrogate",
    "Inverness",
    "Kendal",
    "Leeds",
    "Lincoln",
    "Norwich",
    "Oxford",
    "Plymouth",
    "Swansea",
    "Truro",
    "Whitby",
    "York",
];

/// Classic lorem ipsum; it ends with a space so it can repeat.
const LOREM: &str = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod \
tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud \
exercitation ullamco laboris nisi ut aliquip ex ea commodo consequat. Duis aute irure dolor in \
reprehenderit in voluptate velit esse cillum dolore eu fugiat nulla pariatur. Excepteur sint \
occaecat cupidatat non proident, sunt in culpa qui officia deserunt mollit anim id est laborum. ";

/// `n` characters of lorem ipsum, in pieces.
fn lorem(mut n: usize) -> impl Iterator<Item = &'static str> {
    std::iter::from_fn(move || {
        let take = n.min(LOREM.len());
        n -= take;
        (take > 0).then(|| &LOREM[..take])
    })
}

/// Appends `n` characters of lorem ipsum.
pub fn push_lorem(out: &mut String, n: usize) {
    out.reserve(n);
    lorem(n).for_each(|piece| out.push_str(piece));
}

fn char_len(s: &str) -> usize {
    if s.is_ascii() {
        s.len()
    } else {
        s.chars().count()
    }
}

/// Truncates `s` to its first `n` characters.
fn truncate_chars(s: &mut String, n: usize) {
    if s.len() <= n {
        return;
    }
    if let Some((i, _)) = s.char_indices().nth(n) {
        s.truncate(i);
    }
}

/// The hash `fake_email` and `hash` agree on for `value`: of the value as it
/// is (`hash`) or lower-cased (`fake_email`, so `Ann@X.org` and `ann@x.org`
/// are one person).
fn hash_lowercase<K: Keyed + ?Sized>(keyed: &K, value: &str) -> [u8; 32] {
    if value.bytes().any(|b| b.is_ascii_uppercase()) || !value.is_ascii() {
        keyed.hash(value.to_lowercase().as_bytes())
    } else {
        keyed.hash(value.as_bytes())
    }
}

/// Appends what [`apply`] makes of `input` to `out` as its next value.
/// The actions that need only the value's length or nothing of it (`null`,
/// `fixed`, `lorem`, not unique) write straight into the batch; the others
/// work on a copy in `scratch`.
pub fn mask_into<K: Keyed + ?Sized>(
    action: &Action,
    unique: bool,
    input: &str,
    out: &mut RowBatchBuilder,
    scratch: &mut String,
    keyed: &K,
) {
    match action {
        Action::Null => out.push(None),
        Action::Fixed(text) if !unique => out.push(Some(text)),
        Action::Lorem if !unique => out.push_with(|buf| {
            let n = char_len(input);
            buf.reserve(n);
            lorem(n).for_each(|piece| buf.extend_from_slice(piece.as_bytes()));
        }),
        _ => {
            scratch.clear();
            scratch.push_str(input);
            let kept = apply(action, unique, scratch, keyed);
            out.push(kept.then_some(scratch.as_str()));
        }
    }
}

/// Applies a scalar action to a non-NULL value in place. Returns false when
/// the value must become NULL (`null`). `template` and `json` are applied by
/// the caller and leave the value unchanged here.
pub fn apply<K: Keyed + ?Sized>(
    action: &Action,
    unique: bool,
    value: &mut String,
    keyed: &K,
) -> bool {
    match action {
        Action::Keep | Action::Template(_) | Action::Json(_) => {}
        Action::Null => return false,
        Action::Hash => {
            let h = keyed.hash(value.as_bytes());
            value.clear();
            push_hex(value, &h);
        }
        Action::FakeEmail => {
            let h = hash_lowercase(keyed, value);
            value.clear();
            value.push_str("user-");
            push_hex(value, &h[..6]);
            value.push_str("@example.com");
        }
        Action::FakeName => {
            let h = keyed.hash(value.as_bytes());
            value.clear();
            value.push_str(pick(FIRST_NAMES, &h[0..2]));
            value.push(' ');
            value.push_str(pick(LAST_NAMES, &h[2..4]));
            if unique {
                value.push(' ');
                push_token(value, &h);
            }
        }
        Action::FakePhone => {
            let h = keyed.hash(value.as_bytes());
            // 07700 900000–900999: Ofcom's range for drama, never a real line.
            let n = u16::from_be_bytes([h[4], h[5]]) % 1_000;
            value.clear();
            let _ = write!(value, "+44 7700 900{n:03}");
            if unique {
                value.push_str(" ext ");
                push_token(value, &h);
            }
        }
        Action::FakeAddress => {
            let h = keyed.hash(value.as_bytes());
            let n = 1 + u16::from_be_bytes([h[8], h[9]]) % 250;
            value.clear();
            let _ = write!(
                value,
                "{n} {} {}",
                pick(STREETS, &h[10..12]),
                pick(TOWNS, &h[12..14])
            );
            if unique {
                value.push_str(" #");
                push_token(value, &h);
            }
        }
        Action::Lorem => {
            let n = char_len(value);
            if unique {
                let h = keyed.hash(value.as_bytes());
                value.clear();
                if n > TOKEN_LEN {
                    push_lorem(value, n - TOKEN_LEN - 1);
                    value.push(' ');
                    push_token(value, &h);
                } else {
                    push_token(value, &h);
                    value.truncate(n);
                }
            } else {
                value.clear();
                push_lorem(value, n);
            }
        }
        Action::Fixed(text) => {
            if unique {
                let h = keyed.hash(value.as_bytes());
                value.clear();
                value.push_str(text);
                value.push('-');
                push_token(value, &h);
            } else {
                value.clear();
                value.push_str(text);
            }
        }
        Action::Truncate(n) => {
            let n = *n;
            if unique && char_len(value) > n {
                let h = keyed.hash(value.as_bytes());
                if n > TOKEN_LEN {
                    truncate_chars(value, n - TOKEN_LEN - 1);
                    value.push('~');
                    push_token(value, &h);
                } else {
                    value.clear();
                    push_token(value, &h);
                    value.truncate(n);
                }
            } else {
                truncate_chars(value, n);
            }
        }
    }
    true
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use envsync_plugin_sdk::rows::unpack;
    use hmac::{Hmac, Mac};
    use sha2::Sha256;

    /// The host's keyed hash (HMAC-SHA-256) under a test salt.
    pub fn test_keyed(data: &[u8]) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"test salt").expect("any key length");
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// `apply`, checked against `mask_into` on every call.
    fn masked(action: &Action, unique: bool, value: &str) -> Option<String> {
        let mut v = value.to_string();
        let in_place = apply(action, unique, &mut v, &test_keyed).then_some(v);
        let mut out = RowBatchBuilder::new(1);
        mask_into(
            action,
            unique,
            value,
            &mut out,
            &mut String::new(),
            &test_keyed,
        );
        let copied = unpack(&out.finish(), 1).unwrap().remove(0).remove(0);
        assert_eq!(in_place, copied, "{action:?} unique={unique} on {value:?}");
        in_place
    }

    fn hex(bytes: &[u8]) -> String {
        let mut s = String::new();
        push_hex(&mut s, bytes);
        s
    }

    #[test]
    fn fake_email_is_keyed_on_the_lower_cased_value() {
        let a = masked(&Action::FakeEmail, false, "Ann.Smith@Corp.example").unwrap();
        let b = masked(&Action::FakeEmail, true, "ann.smith@corp.example").unwrap();
        assert_eq!(a, b, "case and uniqueness do not change an email mask");
        assert_eq!(
            a,
            format!(
                "user-{}@example.com",
                &hex(&test_keyed(b"ann.smith@corp.example"))[..12]
            )
        );
        assert_ne!(
            a,
            masked(&Action::FakeEmail, false, "bob@corp.example").unwrap()
        );
    }

    #[test]
    fn hash_is_the_hex_of_the_keyed_hash() {
        assert_eq!(
            masked(&Action::Hash, false, "tok-1").unwrap(),
            hex(&test_keyed(b"tok-1"))
        );
    }

    #[test]
    fn fakes_look_right_and_are_deterministic() {
        let name = masked(&Action::FakeName, false, "Jane Doe").unwrap();
        assert_eq!(name, masked(&Action::FakeName, false, "Jane Doe").unwrap());
        let (first, last) = name.split_once(' ').unwrap();
        assert!(
            FIRST_NAMES.contains(&first) && LAST_NAMES.contains(&last),
            "{name}"
        );

        let phone = masked(&Action::FakePhone, false, "+44 20 7946 0000").unwrap();
        assert!(
            phone.starts_with("+44 7700 900") && phone.len() == 15,
            "{phone}"
        );
        assert!(phone[10..].bytes().all(|b| b.is_ascii_digit()), "{phone}");

        let address = masked(&Action::FakeAddress, false, "10 Downing Street").unwrap();
        let (n, rest) = address.split_once(' ').unwrap();
        assert!(
            n.parse::<u16>().is_ok_and(|n| (1..=250).contains(&n)),
            "{address}"
        );
        assert!(STREETS.iter().any(|s| rest.starts_with(s)), "{address}");
        assert!(TOWNS.iter().any(|t| rest.ends_with(t)), "{address}");
    }

    #[test]
    fn unique_columns_get_a_token() {
        let a = masked(&Action::FakeName, true, "Jane Doe").unwrap();
        let plain = masked(&Action::FakeName, false, "Jane Doe").unwrap();
        assert!(a.starts_with(&plain) && a.len() == plain.len() + 17, "{a}");
        let phone = masked(&Action::FakePhone, true, "1").unwrap();
        assert!(
            phone.contains(" ext ") && phone.len() == 15 + 5 + 16,
            "{phone}"
        );
        assert_eq!(
            phone.bytes().filter(u8::is_ascii_digit).count(),
            12,
            "{phone}"
        );
        assert!(
            masked(&Action::FakeAddress, true, "1")
                .unwrap()
                .contains(" #")
        );
        let fixed = masked(&Action::Fixed("GB".into()), true, "FR").unwrap();
        assert!(fixed.starts_with("GB-") && fixed.len() == 19, "{fixed}");
        assert_ne!(
            fixed,
            masked(&Action::Fixed("GB".into()), true, "DE").unwrap()
        );
        // Lorem keeps the length, unique or not.
        for len in [0, 5, 16, 17, 18, 84, 1000] {
            let v = "x".repeat(len);
            assert_eq!(masked(&Action::Lorem, true, &v).unwrap().len(), len);
            assert_eq!(masked(&Action::Lorem, false, &v).unwrap().len(), len);
        }
        let t = masked(
            &Action::Truncate(20),
            true,
            "a very long value that goes on",
        )
        .unwrap();
        assert_eq!(t.chars().count(), 20);
        assert!(t.starts_with("a v~"), "{t}");
        assert_eq!(
            masked(&Action::Truncate(20), true, "short").unwrap(),
            "short"
        );
    }

    #[test]
    fn lorem_counts_characters_and_repeats() {
        let v = masked(&Action::Lorem, false, "Zoë Ångström").unwrap();
        assert_eq!(v, "Lorem ipsum ");
        assert_eq!(v.chars().count(), "Zoë Ångström".chars().count());
        let long = masked(&Action::Lorem, false, &"y".repeat(LOREM.len() + 5)).unwrap();
        assert!(long.ends_with(" Lorem"), "{long}");
    }

    #[test]
    fn truncate_counts_characters() {
        assert_eq!(masked(&Action::Truncate(3), false, "Zoë Å").unwrap(), "Zoë");
        assert_eq!(masked(&Action::Truncate(10), false, "abc").unwrap(), "abc");
        assert_eq!(masked(&Action::Truncate(0), false, "abc").unwrap(), "");
    }

    #[test]
    fn keep_fixed_and_null() {
        assert_eq!(masked(&Action::Keep, true, "v").unwrap(), "v");
        assert_eq!(
            masked(&Action::Fixed("GB".into()), false, "FR").unwrap(),
            "GB"
        );
        assert_eq!(masked(&Action::Null, false, "secret"), None);
    }
}
