//! The token itself, kept apart so that its one public path is the crate
//! root: hosts hold it, and nothing else of this module concerns them.

use std::fmt;

use zeroize::Zeroizing;

use super::{
    TOKEN_LEN, TOKEN_PREFIX, TokenHash, TokenParseError, encode_base62_256, push_base62_u32,
    validate,
};

/// A bearer token for one session.
///
/// It exists only by [`generate`](Self::generate) or a successful
/// [`parse`](Self::parse). `Debug` and `Display` print a redaction; the text is
/// reachable only through [`expose_secret`](Self::expose_secret), and the
/// memory holding it is wiped on drop.
pub struct SessionToken(Zeroizing<String>);

impl SessionToken {
    /// Generates a new token from 256 bits of the operating system's CSPRNG.
    ///
    /// # Panics
    ///
    /// If the operating system cannot provide randomness, since no safe token
    /// can be made without it.
    #[must_use]
    pub fn generate() -> Self {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut_slice()).expect("the OS CSPRNG is unavailable");
        let mut text = Zeroizing::new(String::with_capacity(TOKEN_LEN));
        text.push_str(TOKEN_PREFIX);
        encode_base62_256(&secret, &mut text);
        push_base62_u32(crc32fast::hash(text.as_bytes()), &mut text);
        debug_assert_eq!(text.len(), TOKEN_LEN);
        Self(text)
    }

    /// Parses a token's text form, checking prefix, length, alphabet and checksum.
    ///
    /// # Errors
    ///
    /// [`TokenParseError`] if the text is not a well-formed token. The error
    /// never contains the input.
    pub fn parse(text: &str) -> Result<Self, TokenParseError> {
        validate(text)?;
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// The token's text, for handing it to the client once at creation.
    ///
    /// Anything that calls this takes over the duty of never logging or storing it.
    #[must_use]
    pub fn expose_secret(&self) -> &str {
        &self.0
    }

    /// The SHA-256 of this token, the only form that is stored.
    #[must_use]
    pub fn hash(&self) -> TokenHash {
        TokenHash::digest(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(TOKEN_PREFIX)?;
        f.write_str("<redacted>")
    }
}
