//! How session tokens are made, checked and stored: the detail behind
//! [`SessionToken`](crate::SessionToken), for adapters (which store and look
//! up [`TokenHash`]es) and tests. A host needs only `SessionToken`.
//!
//! A token's text form is `sess_` + 43 base62 characters (256 bits from the OS
//! CSPRNG) + 6 base62 characters of CRC32 over everything before them. The
//! prefix lets secret scanners find leaked tokens; the checksum lets
//! [`SessionToken::parse`](crate::SessionToken::parse) reject typos and
//! garbage before any hashing or lookup. Only the SHA-256 of the text
//! ([`TokenHash`]) is ever stored.

use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher};

use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub(crate) mod session_token;

/// The prefix every token starts with.
pub const TOKEN_PREFIX: &str = "sess_";
/// The length of a token's text form, in bytes (all ASCII).
pub const TOKEN_LEN: usize = TOKEN_PREFIX.len() + BODY_LEN + CHECKSUM_LEN;

const BODY_LEN: usize = 43; // ceil(256 / log2(62))
const CHECKSUM_LEN: usize = 6; // ceil(32 / log2(62))
const CHECKED_LEN: usize = TOKEN_PREFIX.len() + BODY_LEN;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Why a text is not a session token. Carries no part of the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenParseError {
    /// The text does not have the fixed token length.
    #[error("session token has the wrong length")]
    Length,
    /// The text does not start with the token prefix.
    #[error("session token does not start with `{TOKEN_PREFIX}`")]
    Prefix,
    /// The text holds a character outside the token alphabet.
    #[error("session token contains a character outside [0-9A-Za-z]")]
    Alphabet,
    /// The checksum does not match: a typo, truncation or made-up token.
    #[error("session token checksum does not match")]
    Checksum,
}

/// Which bytes are base62 digits.
static IN_BASE62: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < BASE62.len() {
        table[BASE62[i] as usize] = true;
        i += 1;
    }
    table
};

/// Checks a token's text form without copying it.
fn validate(text: &str) -> Result<(), TokenParseError> {
    let bytes = text.as_bytes();
    if bytes.len() != TOKEN_LEN {
        return Err(TokenParseError::Length);
    }
    if !bytes.starts_with(TOKEN_PREFIX.as_bytes()) {
        return Err(TokenParseError::Prefix);
    }
    let (checked, checksum) = bytes.split_at(CHECKED_LEN);
    // One table load per byte, folded without branching: the outcome of a
    // per-byte branch on random base62 text cannot be predicted, and that
    // made rejecting garbage slower than hashing it.
    let in_alphabet = bytes[TOKEN_PREFIX.len()..]
        .iter()
        .fold(true, |all, &byte| all & IN_BASE62[usize::from(byte)]);
    if !in_alphabet {
        return Err(TokenParseError::Alphabet);
    }
    let mut expected = [0u8; CHECKSUM_LEN];
    base62_u32(crc32fast::hash(checked), &mut expected);
    if expected != checksum {
        return Err(TokenParseError::Checksum);
    }
    Ok(())
}

/// Writes a 256-bit big-endian number as exactly [`BODY_LEN`] base62 digits.
fn encode_base62_256(bytes: &[u8; 32], out: &mut String) {
    // Eight big-endian 32-bit limbs, divided by 62 once per output digit.
    let mut limbs = Zeroizing::new([0u32; 8]);
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(4)) {
        *limb = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    let mut digits = Zeroizing::new([0u8; BODY_LEN]);
    for digit in digits.iter_mut().rev() {
        let mut remainder = 0u64;
        for limb in limbs.iter_mut() {
            let acc = (remainder << 32) | u64::from(*limb);
            *limb = u32::try_from(acc / 62).unwrap_or(u32::MAX);
            remainder = acc % 62;
        }
        *digit = BASE62[usize::try_from(remainder).unwrap_or(0)];
    }
    out.extend(digits.iter().map(|&d| char::from(d)));
}

/// Writes `value` as exactly [`CHECKSUM_LEN`] base62 digits.
fn base62_u32(mut value: u32, out: &mut [u8; CHECKSUM_LEN]) {
    for digit in out.iter_mut().rev() {
        *digit = BASE62[(value % 62) as usize];
        value /= 62;
    }
}

fn push_base62_u32(value: u32, out: &mut String) {
    let mut digits = [0u8; CHECKSUM_LEN];
    base62_u32(value, &mut digits);
    out.extend(digits.iter().map(|&d| char::from(d)));
}

/// The SHA-256 of a token's text: how sessions are stored and looked up.
///
/// Not a secret (it cannot be turned back into a token), but `Debug` prints
/// only a short prefix to keep logs readable.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    /// The length of a hash in bytes.
    pub const LEN: usize = 32;

    /// Hashes a token's text after checking that it is a well-formed token,
    /// without copying the text: the resolve hot path.
    ///
    /// # Errors
    ///
    /// [`TokenParseError`] exactly when
    /// [`SessionToken::parse`](crate::SessionToken::parse) would fail.
    pub fn of_token_text(text: &str) -> Result<Self, TokenParseError> {
        validate(text)?;
        Ok(Self::digest(text))
    }

    fn digest(text: &str) -> Self {
        Self(Sha256::digest(text.as_bytes()).into())
    }

    /// Wraps 32 bytes read back from storage.
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The 32 hash bytes, for storage.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl TryFrom<&[u8]> for TokenHash {
    type Error = InvalidTokenHash;

    fn try_from(bytes: &[u8]) -> Result<Self, Self::Error> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| InvalidTokenHash { len: bytes.len() })
    }
}

/// Stored bytes that are not a 32-byte hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a token hash is 32 bytes, found {len}")]
pub struct InvalidTokenHash {
    /// How many bytes were found.
    pub len: usize,
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash(")?;
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "…)")
    }
}

/// Hashes as its first eight bytes: they are already uniformly distributed,
/// so maps keyed by `TokenHash` need no further mixing (see [`TokenHashState`]).
impl Hash for TokenHash {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_ne_bytes(head));
    }
}

/// A `BuildHasher` for maps keyed by [`TokenHash`] that uses the hash's own
/// bytes as the map hash instead of running SipHash over them.
///
/// Safe against hash flooding because keys are SHA-256 outputs of tokens the
/// service generated; lookups of attacker-chosen tokens never insert.
#[derive(Debug, Clone, Copy, Default)]
pub struct TokenHashState;

impl BuildHasher for TokenHashState {
    type Hasher = TokenHashHasher;

    fn build_hasher(&self) -> Self::Hasher {
        TokenHashHasher(0)
    }
}

/// The hasher made by [`TokenHashState`]; only meaningful for [`TokenHash`] keys.
#[derive(Debug, Clone, Copy)]
pub struct TokenHashHasher(u64);

impl Hasher for TokenHashHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached for non-`TokenHash` keys; fold bytes in so it stays a hash.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SessionToken;

    #[test]
    fn generated_tokens_have_the_documented_shape() {
        let token = SessionToken::generate();
        let text = token.expose_secret();
        assert_eq!(text.len(), TOKEN_LEN);
        assert_eq!(TOKEN_LEN, 54);
        assert!(text.starts_with("sess_"));
        assert!(text[5..].bytes().all(|b| b.is_ascii_alphanumeric()));
    }

    #[test]
    fn base62_encoding_of_extremes() {
        let mut zero = String::new();
        encode_base62_256(&[0; 32], &mut zero);
        assert_eq!(zero, "0".repeat(BODY_LEN));
        let mut max = String::new();
        encode_base62_256(&[0xff; 32], &mut max);
        // 2^256 - 1 in base62, computed independently.
        assert_eq!(max, "yhjskwdA6OZ1AL1YmHWZWm8LLG7HjnuCA2j5rOw8Xp1");
        let mut one = String::new();
        let mut bytes = [0u8; 32];
        bytes[31] = 61;
        encode_base62_256(&bytes, &mut one);
        assert_eq!(one, format!("{}z", "0".repeat(BODY_LEN - 1)));
    }

    #[test]
    fn debug_and_display_redact() {
        let token = SessionToken::generate();
        let secret = token.expose_secret().to_owned();
        let body = &secret[TOKEN_PREFIX.len()..];
        assert!(!format!("{token:?}").contains(body));
        assert!(!format!("{token}").contains(body));
        assert!(!format!("{token:#?}").contains(body));
    }
}
