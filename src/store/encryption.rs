//! Encrypted records (feature `encryption`): the envelope, the keys and where they come from.
//!
//! A sealed record is stored as this JSON, in place of the record's own JSON:
//! ```json
//! {"chatappEnvelope":1,"cipher":"xchacha20poly1305","keyCheck":"<16 hex>",
//!  "nonce":"<base64 of 24 random bytes>","sealed":"<base64 of the ciphertext and its tag>"}
//! ```
//! - The cipher is XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`), with a fresh random
//!   192-bit nonce from the operating system for every save.
//! - The associated data is `chatapp-session envelope 1`, a newline and the store key, so a
//!   sealed record copied under another key (another account) does not open.
//! - `keyCheck` names the key (the first 8 bytes of the cipher's tag over nothing, under an
//!   all-zero nonce): it tells "another key" from "altered bytes", and picks the key during a
//!   rotation. It reveals nothing about the key.
//! - The plaintext is exactly what [`encode_record`](super::encode_record) writes, whatever
//!   its version.

use std::fmt;
use std::io::Read;
use std::path::Path;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::StoreKey;
use crate::error::{EncryptionProblem, StoreError};

/// The envelope version this build writes and the newest it reads.
const ENVELOPE_VERSION: u64 = 1;
const CIPHER: &str = "xchacha20poly1305";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;
const TAG_LEN: usize = 16;
const AAD_PREFIX: &[u8] = b"chatapp-session envelope 1\n";
/// The domain of the key fingerprint: SHA-256 of this and the key, its first 8 bytes.
const KEY_CHECK_AAD: &[u8] = b"chatapp-session key check";
/// The keyring account under which [`EncryptionKey::from_keyring`] keeps its key.
pub const KEYRING_KEY_ACCOUNT: &str = "chatapp-session store encryption key";

/// A 256-bit key for store encryption. Zeroized when dropped; `Debug` prints
/// `EncryptionKey([redacted])`, and no error ever quotes it.
#[derive(Clone)]
pub struct EncryptionKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    check: [u8; 8],
}

impl fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EncryptionKey([redacted])")
    }
}

impl EncryptionKey {
    /// A key of the given bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let bytes = Zeroizing::new(bytes);
        let check = key_check(&bytes);
        EncryptionKey { bytes, check }
    }

    /// 32 new random bytes from the operating system.
    ///
    /// # Errors
    /// [`StoreError::Key`] when the operating system gives no random bytes.
    pub fn generate() -> Result<Self, StoreError> {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(|e| key_error("the OS random source", e))?;
        Ok(Self::from_bytes(*bytes))
    }

    /// The key in `text`: standard base64 of exactly 32 bytes (surrounding white space is
    /// ignored). Make one with `head -c 32 /dev/urandom | base64`.
    ///
    /// # Errors
    /// [`StoreError::Key`] when `text` is not base64 of 32 bytes (the message never quotes it).
    pub fn from_base64(text: &str) -> Result<Self, StoreError> {
        Self::parse_base64(text, "base64 text")
    }

    /// The key in the environment variable `name`, as for [`from_base64`](Self::from_base64).
    ///
    /// # Errors
    /// [`StoreError::Key`] when the variable is unset, not UTF-8 or not base64 of 32 bytes.
    pub fn from_env(name: &str) -> Result<Self, StoreError> {
        let origin = format!("environment variable {name}");
        let text = Zeroizing::new(
            std::env::var(name).map_err(|e| key_error(&origin, format!("cannot be read: {e}")))?,
        );
        Self::parse_base64(&text, &origin)
    }

    /// The key in the file at `path`: exactly 32 raw bytes, or base64 of 32 bytes. The file
    /// must be readable by its owner only (`0600` on Unix).
    ///
    /// # Errors
    /// [`StoreError::InsecurePermissions`] when group or others may access the file;
    /// [`StoreError::Key`] when it cannot be read or holds no key.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let origin = format!("key file {}", path.display());
        let mut file =
            std::fs::File::open(path).map_err(|e| key_error(&origin, format!("open: {e}")))?;
        let meta = file
            .metadata()
            .map_err(|e| key_error(&origin, format!("stat: {e}")))?;
        super::fs::check_private(&meta, path)?;
        let mut bytes = Zeroizing::new(Vec::with_capacity(128));
        file.by_ref()
            .take(128)
            .read_to_end(&mut bytes)
            .map_err(|e| key_error(&origin, format!("read: {e}")))?;
        if let Ok(raw) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
            let raw = Zeroizing::new(raw);
            return Ok(Self::from_bytes(*raw));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| key_error(&origin, "holds neither 32 bytes nor base64 of 32 bytes"))?;
        Self::parse_base64(text, &origin)
    }

    /// The key kept in the OS keyring by `store`, under the account
    /// [`KEYRING_KEY_ACCOUNT`]; when there is none yet, 32 new random bytes are made and kept
    /// there (under the keyring store's lock, so that two processes never make two keys).
    ///
    /// # Errors
    /// The keyring store's errors ([`StoreError::Unavailable`] when there is no keyring);
    /// [`StoreError::Key`] when the kept key is not base64 of 32 bytes.
    #[cfg(feature = "keyring")]
    pub fn from_keyring(store: &super::KeyringStore) -> Result<Self, StoreError> {
        let origin = format!("keyring service {:?}", store.service());
        let text = store.secret_or_create(KEYRING_KEY_ACCOUNT, || {
            let key = Self::generate()?;
            Ok(Zeroizing::new(BASE64.encode(&key.bytes[..])))
        })?;
        Self::parse_base64(&text, &origin)
    }

    /// The key a specification names, as the `CHATAPP_STORE_KEY` variable of the command-line
    /// example does: `keyring:SERVICE` (needs the `keyring` feature), `file:PATH`, or base64
    /// of 32 bytes.
    ///
    /// # Errors
    /// The errors of [`from_keyring`](Self::from_keyring), [`from_file`](Self::from_file) or
    /// [`from_base64`](Self::from_base64).
    pub fn from_spec(spec: &str) -> Result<Self, StoreError> {
        if let Some(service) = spec.strip_prefix("keyring:") {
            if service.is_empty() {
                return Err(key_error("keyring:", "names no service (keyring:SERVICE)"));
            }
            #[cfg(feature = "keyring")]
            return Self::from_keyring(&super::KeyringStore::new(service));
            #[cfg(not(feature = "keyring"))]
            return Err(key_error(
                &format!("keyring service {service:?}"),
                "this build has no `keyring` feature",
            ));
        }
        if let Some(path) = spec.strip_prefix("file:") {
            return Self::from_file(path);
        }
        Self::from_base64(spec)
    }

    fn parse_base64(text: &str, origin: &str) -> Result<Self, StoreError> {
        let decoded = Zeroizing::new(
            BASE64
                .decode(text.trim())
                .map_err(|_| key_error(origin, "is not base64 of 32 bytes"))?,
        );
        let raw = <[u8; KEY_LEN]>::try_from(decoded.as_slice())
            .map_err(|_| key_error(origin, "is not base64 of 32 bytes"))?;
        let raw = Zeroizing::new(raw);
        Ok(Self::from_bytes(*raw))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.bytes[..]))
    }
}

/// How a store encrypts its records: the key it writes with, and optionally the previous key,
/// which it still reads (key rotation: records move to the new key as they are saved).
#[derive(Clone, Debug)]
pub struct Encryption {
    current: EncryptionKey,
    previous: Option<EncryptionKey>,
}

impl Encryption {
    /// Encrypts with `key` and reads records sealed with it (and plaintext records, which are
    /// sealed at their next save).
    pub fn new(key: EncryptionKey) -> Self {
        Encryption {
            current: key,
            previous: None,
        }
    }

    /// Also reads records sealed with `previous`; saves always use the current key.
    pub fn with_previous(mut self, previous: EncryptionKey) -> Self {
        self.previous = Some(previous);
        self
    }

    /// `plain` sealed for `key`, as envelope JSON.
    pub(super) fn seal(
        &self,
        plain: &[u8],
        key: &StoreKey,
        store: &'static str,
        location: &str,
    ) -> Result<Zeroizing<String>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|e| StoreError::Backend {
            store,
            location: location.to_owned(),
            source: format!("no random nonce from the operating system: {e}").into(),
        })?;
        let aad = aad(key);
        let sealed = self
            .current
            .cipher()
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: &aad,
                },
            )
            .map_err(|_| StoreError::Backend {
                store,
                location: location.to_owned(),
                source: "the record could not be encrypted".into(),
            })?;
        let envelope = EnvelopeOut {
            chatapp_envelope: ENVELOPE_VERSION,
            cipher: CIPHER,
            key_check: &hex(&self.current.check),
            nonce: &BASE64.encode(nonce),
            sealed: &BASE64.encode(&sealed),
        };
        // Strings and integers always serialize.
        serde_json::to_string(&envelope)
            .map(Zeroizing::new)
            .map_err(|e| StoreError::Backend {
                store,
                location: location.to_owned(),
                source: e.into(),
            })
    }

    /// The plaintext of the envelope `bytes` stored under `key`.
    pub(super) fn open(
        &self,
        bytes: &[u8],
        key: &StoreKey,
        store: &'static str,
        location: &str,
    ) -> Result<Zeroizing<Vec<u8>>, StoreError> {
        let problem = |problem| StoreError::Encrypted {
            store,
            location: location.to_owned(),
            problem,
        };
        let envelope: EnvelopeIn =
            serde_json::from_slice(bytes).map_err(|_| problem(EncryptionProblem::Malformed))?;
        if envelope.chatapp_envelope == 0 || envelope.chatapp_envelope > ENVELOPE_VERSION {
            return Err(StoreError::UnsupportedVersion {
                store,
                location: location.to_owned(),
                found: envelope.chatapp_envelope,
                supported: ENVELOPE_VERSION,
            });
        }
        if envelope.cipher != CIPHER {
            return Err(problem(EncryptionProblem::Malformed));
        }
        let check = envelope.key_check.to_ascii_lowercase();
        let Some(held) = [Some(&self.current), self.previous.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| hex(&k.check) == check)
        else {
            return Err(problem(EncryptionProblem::WrongKey));
        };
        let nonce = BASE64
            .decode(&envelope.nonce)
            .ok()
            .filter(|n| n.len() == NONCE_LEN)
            .ok_or_else(|| problem(EncryptionProblem::Malformed))?;
        let sealed = BASE64
            .decode(&envelope.sealed)
            .map_err(|_| problem(EncryptionProblem::Malformed))?;
        if sealed.len() < TAG_LEN {
            return Err(problem(EncryptionProblem::Tampered));
        }
        let aad = aad(key);
        held.cipher()
            .decrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &sealed,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| problem(EncryptionProblem::Tampered))
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeOut<'a> {
    // Must stay the first field, named `codec::ENVELOPE_FIELD`: `codec::is_envelope` looks
    // for it there.
    chatapp_envelope: u64,
    cipher: &'a str,
    key_check: &'a str,
    nonce: &'a str,
    sealed: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeIn {
    chatapp_envelope: u64,
    cipher: String,
    key_check: String,
    nonce: String,
    sealed: String,
}

fn aad(key: &StoreKey) -> Vec<u8> {
    let mut aad = AAD_PREFIX.to_vec();
    aad.extend_from_slice(key.as_str().as_bytes());
    aad
}

/// The first 8 bytes of the tag over nothing under an all-zero nonce: names the key.
fn key_check(bytes: &[u8; KEY_LEN]) -> [u8; 8] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::new()
        .chain_update(KEY_CHECK_AAD)
        .chain_update(bytes)
        .finalize();
    let mut check = [0u8; 8];
    for (c, d) in check.iter_mut().zip(digest) {
        *c = d;
    }
    check
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn key_error(origin: &str, detail: impl fmt::Display) -> StoreError {
    StoreError::Key {
        origin: origin.to_owned(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> EncryptionKey {
        EncryptionKey::from_bytes([n; 32])
    }

    #[test]
    fn seals_opens_and_tells_the_failures_apart() {
        let enc = Encryption::new(key(1));
        let k = StoreKey::new("account");
        let sealed = enc.seal(b"{\"version\":1}", &k, "t", "here").unwrap();
        assert!(super::super::codec::is_envelope(sealed.as_bytes()));
        assert!(!sealed.contains("version"));
        let plain = enc.open(sealed.as_bytes(), &k, "t", "here").unwrap();
        assert_eq!(&plain[..], b"{\"version\":1}");
        // A fresh nonce every time.
        let again = enc.seal(b"{\"version\":1}", &k, "t", "here").unwrap();
        assert_ne!(*sealed, *again);
        let problem = |r: Result<Zeroizing<Vec<u8>>, StoreError>| match r {
            Err(StoreError::Encrypted { problem, .. }) => problem,
            other => panic!("{other:?}"),
        };
        // Another account's key (associated data).
        assert_eq!(
            problem(enc.open(sealed.as_bytes(), &StoreKey::new("other"), "t", "h")),
            EncryptionProblem::Tampered
        );
        assert_eq!(
            problem(Encryption::new(key(2)).open(sealed.as_bytes(), &k, "t", "h")),
            EncryptionProblem::WrongKey
        );
        let mut v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
        let s = v["sealed"].as_str().unwrap().to_owned();
        let mut raw = BASE64.decode(&s).unwrap();
        raw[3] ^= 1;
        v["sealed"] = BASE64.encode(&raw).into();
        assert_eq!(
            problem(enc.open(v.to_string().as_bytes(), &k, "t", "h")),
            EncryptionProblem::Tampered
        );
        v["sealed"] = BASE64.encode(&raw[..10]).into();
        assert_eq!(
            problem(enc.open(v.to_string().as_bytes(), &k, "t", "h")),
            EncryptionProblem::Tampered
        );
        assert_eq!(
            problem(enc.open(&sealed.as_bytes()[..40], &k, "t", "h")),
            EncryptionProblem::Malformed
        );
        // Rotation: the previous key still opens.
        let rotated = Encryption::new(key(3)).with_previous(key(1));
        assert!(rotated.open(sealed.as_bytes(), &k, "t", "h").is_ok());
    }

    #[test]
    fn keys_never_show() {
        let k = EncryptionKey::from_base64(&BASE64.encode([7u8; 32])).unwrap();
        assert_eq!(format!("{k:?}"), "EncryptionKey([redacted])");
        let e = EncryptionKey::from_base64("c2VjcmV0LXRleHQ=").unwrap_err();
        assert!(!e.to_string().contains("c2VjcmV0"), "{e}");
        assert!(matches!(e, StoreError::Key { .. }));
        assert!(!format!("{:?}", Encryption::new(k)).contains("7, 7"));
    }
}
