//! An independent RFC 6238 code generator (SHA1, 6 digits, 30 s) for the TOTP tests, written
//! here from the RFCs rather than taken from the service's code.

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

/// The bytes of a base32 (RFC 4648, no padding needed) text; panics on a non-base32 letter.
pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut bits, mut value, mut out) = (0u32, 0u64, Vec::new());
    for c in text.trim_end_matches('=').bytes() {
        let index = ALPHABET.iter().position(|&a| a == c).expect("base32") as u64;
        value = (value << 5) | index;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((value >> bits) as u8);
        }
    }
    out
}

/// The code of `secret` (base32) for time step `step` (RFC 4226 dynamic truncation).
pub fn code(secret: &str, step: i64) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(&base32_decode(secret)).expect("any key length");
    mac.update(&(step as u64).to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let value =
        u32::from_be_bytes(digest[offset..offset + 4].try_into().expect("4 bytes")) & 0x7fff_ffff;
    format!("{:06}", value % 1_000_000)
}
