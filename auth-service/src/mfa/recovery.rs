//! One-time recovery codes, for when the authenticator is lost: ten per confirmation, each 80
//! random bits written as 16 Crockford base32 characters in groups of four (`7k2m-q9xa-…`), so
//! they survive being read aloud or copied by hand. Only a hash of each is stored: at 80 bits a
//! fast hash is enough, no guess list can cover the space.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// Codes handed out per confirmation.
pub const COUNT: usize = 10;
/// Random bytes per code: 80 bits.
const CODE_BYTES: usize = 10;
/// Characters per code: 5 bits each.
const CODE_CHARS: usize = CODE_BYTES * 8 / 5;
/// Crockford's base32: no i, l, o, u, so nothing reads as another character.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
/// Separates these hashes from any other SHA-256 use.
const PURPOSE: &[u8] = b"dynagate.auth.recovery-code\0";

/// Fresh codes: what the user is shown once, and what is stored.
#[derive(Debug)]
pub struct RecoveryCodes {
    /// The codes, formatted for humans.
    pub codes: Vec<SecretString>,
    /// Their hashes, for the store.
    pub hashes: Vec<String>,
}

/// Ten new codes for `user_id`.
pub fn generate(user_id: &str) -> RecoveryCodes {
    let codes: Vec<SecretString> = (0..COUNT).map(|_| new_code()).collect();
    let hashes = codes
        .iter()
        .map(|code| {
            hash(
                user_id,
                &normalise(code.expose_secret()).unwrap_or_default(),
            )
        })
        .collect();
    RecoveryCodes { codes, hashes }
}

/// The stored form of a presented code, if it is shaped like one of ours. Case, dashes and
/// spaces do not matter, and the letters Crockford maps (o → 0, i and l → 1) are read as the
/// digits they look like.
pub fn stored_form(user_id: &str, presented: &str) -> Option<String> {
    normalise(presented).map(|code| hash(user_id, &code))
}

fn new_code() -> SecretString {
    let bytes: [u8; CODE_BYTES] = rand::random();
    let mut value = bytes
        .iter()
        .fold(0u128, |acc, &byte| (acc << 8) | u128::from(byte));
    let mut chars = [0u8; CODE_CHARS];
    for slot in chars.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    let groups: Vec<&str> = chars
        .chunks(4)
        .map(|group| std::str::from_utf8(group).unwrap_or_default())
        .collect();
    SecretString::from(groups.join("-"))
}

/// The code's 16 characters in canonical form, or `None` if it cannot be one of ours.
fn normalise(presented: &str) -> Option<String> {
    let mut code = String::with_capacity(CODE_CHARS);
    for c in presented.chars() {
        let c = match c.to_ascii_lowercase() {
            '-' | ' ' | '\t' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c if c.is_ascii() && ALPHABET.contains(&(c as u8)) => c,
            _ => return None,
        };
        if code.len() == CODE_CHARS {
            return None;
        }
        code.push(c);
    }
    (code.len() == CODE_CHARS).then_some(code)
}

/// Bound to the user, so equal codes of two users (never expected) hash apart.
fn hash(user_id: &str, code: &str) -> String {
    let digest = Sha256::new()
        .chain_update(PURPOSE)
        .chain_update(user_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(code.as_bytes())
        .finalize();
    URL_SAFE_NO_PAD.encode(digest)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn ten_distinct_codes_of_80_bits_in_groups_of_four() {
        let fresh = generate("alice");
        assert_eq!(fresh.codes.len(), COUNT);
        let distinct: HashSet<&str> = fresh.codes.iter().map(|c| c.expose_secret()).collect();
        assert_eq!(distinct.len(), COUNT);
        for code in &fresh.codes {
            let code = code.expose_secret();
            assert_eq!(code.len(), 19, "{code}");
            assert!(code.split('-').all(|group| group.len() == 4), "{code}");
        }
    }

    #[test]
    fn a_code_hashes_to_its_stored_form_however_it_is_typed() {
        let fresh = generate("alice");
        let code = fresh.codes[0].expose_secret();
        let stored = &fresh.hashes[0];
        let typed_loosely = code.to_uppercase().replace('-', " ").replace('0', "O");
        assert_eq!(stored_form("alice", code).as_ref(), Some(stored));
        assert_eq!(stored_form("alice", &typed_loosely).as_ref(), Some(stored));
        assert_ne!(stored_form("bob", code).as_ref(), Some(stored));
    }

    #[test]
    fn text_that_cannot_be_a_code_has_no_stored_form() {
        for bad in [
            "",
            "abcd",
            "abcd-efgh-jkmn-pqrs-t",
            "abcd-efgh-jkmn-pqru",
            "ab€d-efgh-jkmn-pqrs",
        ] {
            assert_eq!(stored_form("alice", bad), None, "{bad:?}");
        }
        assert!(stored_form("alice", "abcd-efgh-jkmn-pqrs").is_some());
    }
}
