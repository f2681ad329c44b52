//! Token strings: opaque, bcrypt-looking (`$2y$10$` and 53 characters of `[./A-Za-z0-9]`,
//! 60 in all), like the ones ChatApp hands out. Made without a random-number crate: a hasher
//! with std's randomly keyed [`RandomState`] over a counter and the time.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// The bcrypt alphabet: 64 characters, so 6 bits each.
const ALPHABET: &[u8; 64] = b"./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// What every token starts with.
const PREFIX: &str = "$2y$10$";
/// The length of a whole token.
pub(crate) const TOKEN_LEN: usize = 60;

/// Makes unpredictable token strings and message ids.
#[derive(Debug)]
pub(crate) struct TokenGen {
    keys: RandomState,
    counter: u64,
}

impl TokenGen {
    /// A generator with fresh random keys.
    pub(crate) fn new() -> Self {
        TokenGen {
            keys: RandomState::new(),
            counter: 0,
        }
    }

    /// 64 bits nobody can guess without the keys.
    fn word(&mut self) -> u64 {
        self.counter = self.counter.wrapping_add(1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut hasher = self.keys.build_hasher();
        hasher.write_u64(self.counter);
        hasher.write_u128(nanos);
        hasher.finish()
    }

    /// A new token: `$2y$10$` and 53 characters of `[./A-Za-z0-9]`.
    pub(crate) fn token(&mut self) -> String {
        let mut token = String::with_capacity(TOKEN_LEN);
        token.push_str(PREFIX);
        while token.len() < TOKEN_LEN {
            let mut word = self.word();
            // 10 characters of 6 bits each out of one 64-bit word.
            for _ in 0..10 {
                if token.len() == TOKEN_LEN {
                    break;
                }
                token.push(char::from(ALPHABET[(word & 63) as usize]));
                word >>= 6;
            }
        }
        token
    }

    /// A message id: 16 upper-case hex digits, like `BAE50969AD3BEA0F`.
    pub(crate) fn hex16(&mut self) -> String {
        format!("{:016X}", self.word())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_look_like_chatapp_tokens_and_never_repeat() {
        let mut gen = TokenGen::new();
        let mut seen = HashSet::new();
        for _ in 0..2000 {
            let t = gen.token();
            assert_eq!(t.len(), TOKEN_LEN);
            assert!(t.starts_with("$2y$10$"), "{t}");
            assert!(t[7..].bytes().all(|b| ALPHABET.contains(&b)), "{t}");
            assert!(seen.insert(t));
        }
        // Every character of the alphabet shows up: the bits are spread.
        let all: HashSet<u8> = seen.iter().flat_map(|t| t[7..].bytes()).collect();
        assert_eq!(all.len(), 64);
    }

    #[test]
    fn two_generators_differ() {
        assert_ne!(TokenGen::new().token(), TokenGen::new().token());
    }

    #[test]
    fn message_ids_are_16_hex_digits() {
        let mut gen = TokenGen::new();
        let id = gen.hex16();
        assert_eq!(id.len(), 16);
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase()));
        assert_ne!(id, gen.hex16());
    }
}
