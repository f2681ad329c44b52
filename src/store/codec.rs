//! The one layer between a [`StoredRecord`] and the text a durable store writes: the record's
//! JSON ([`encode_record`]), sealed in an encrypted envelope when the store was given an
//! [`Encryption`](super::Encryption) (feature `encryption`).
//!
//! The file, SQLite and PostgreSQL stores each hold a [`RecordCodec`] and call only
//! [`RecordCodec::encode`] and [`RecordCodec::decode`]; none of them knows whether a record
//! is encrypted. A codec without a key still recognizes an envelope and refuses it with
//! [`StoreError::Encrypted`] ([`EncryptionProblem::KeyRequired`]), so a session without the
//! key never reads, and so never overwrites, an encrypted record. (A build older than the
//! envelope finds no record `version` in it and refuses it as corrupt, which also keeps it.)
//!
//! [`EncryptionProblem::KeyRequired`]: crate::error::EncryptionProblem::KeyRequired

use zeroize::Zeroizing;

use super::{decode_record, encode_record, StoreKey, StoredRecord};
use crate::error::{EncryptionProblem, StoreError};

/// The name of the field that marks an envelope (a record never has it).
pub(super) const ENVELOPE_FIELD: &str = "chatappEnvelope";

/// How a store turns records into stored text and back. Cheap to clone.
#[derive(Clone, Default)]
pub(crate) struct RecordCodec {
    #[cfg(feature = "encryption")]
    encryption: Option<std::sync::Arc<super::Encryption>>,
}

impl RecordCodec {
    /// A codec that seals every record it writes with `encryption`, and reads both envelopes
    /// and plaintext records.
    #[cfg(feature = "encryption")]
    pub(crate) fn encrypted(encryption: super::Encryption) -> Self {
        RecordCodec {
            encryption: Some(std::sync::Arc::new(encryption)),
        }
    }

    /// Whether records are written encrypted.
    pub(crate) fn is_encrypting(&self) -> bool {
        #[cfg(feature = "encryption")]
        return self.encryption.is_some();
        #[cfg(not(feature = "encryption"))]
        false
    }

    /// The text to store for `record` under `key`: JSON in both cases (an envelope or the
    /// record itself). Zeroized when dropped.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when the operating system gives no random nonce, or when the
    /// record cannot be encoded ([`encode_record`]).
    pub(crate) fn encode(
        &self,
        key: &StoreKey,
        record: &StoredRecord,
        store: &'static str,
        location: &str,
    ) -> Result<Zeroizing<String>, StoreError> {
        let plain = encode_record(record, store, location)?;
        #[cfg(feature = "encryption")]
        if let Some(encryption) = &self.encryption {
            return encryption.seal(plain.as_bytes(), key, store, location);
        }
        let _ = key;
        Ok(plain)
    }

    /// The record in the stored text `bytes` under `key`.
    ///
    /// # Errors
    /// [`StoreError::Encrypted`] when the text is an envelope that this codec cannot open
    /// (no key, another key, altered or cut bytes); the errors of [`decode_record`] otherwise.
    pub(crate) fn decode(
        &self,
        bytes: &[u8],
        key: &StoreKey,
        store: &'static str,
        location: &str,
    ) -> Result<StoredRecord, StoreError> {
        if !is_envelope(bytes) {
            return decode_record(bytes, store, location);
        }
        #[cfg(feature = "encryption")]
        if let Some(encryption) = &self.encryption {
            let plain = encryption.open(bytes, key, store, location)?;
            return decode_record(&plain, store, location);
        }
        let _ = key;
        Err(StoreError::Encrypted {
            store,
            location: location.to_owned(),
            problem: EncryptionProblem::KeyRequired,
        })
    }
}

/// Whether `bytes` look like an envelope: a JSON object whose first field is the marker.
/// Cheap, and never parses the (possibly secret) rest.
pub(super) fn is_envelope(bytes: &[u8]) -> bool {
    let text = bytes.trim_ascii_start();
    let Some(rest) = text.strip_prefix(b"{") else {
        return false;
    };
    let rest = rest.trim_ascii_start();
    rest.strip_prefix(b"\"")
        .and_then(|r| r.strip_prefix(ENVELOPE_FIELD.as_bytes()))
        .is_some_and(|r| r.starts_with(b"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_codec_without_a_key_refuses_an_envelope_and_reads_plaintext() {
        let codec = RecordCodec::default();
        let key = StoreKey::new("k");
        let env = br#"{"chatappEnvelope":1,"cipher":"xchacha20poly1305","keyCheck":"00","nonce":"","sealed":""}"#;
        assert!(matches!(
            codec.decode(env, &key, "t", "here"),
            Err(StoreError::Encrypted {
                problem: EncryptionProblem::KeyRequired,
                ..
            })
        ));
        // What a build from before the envelope does with one: it finds no record version
        // and refuses it as corrupt, so it never overwrites it either.
        assert!(matches!(
            decode_record(env, "t", "here"),
            Err(StoreError::Corrupt { .. })
        ));
        let plain = encode_record(&StoredRecord::default(), "test", "here").unwrap();
        assert!(!is_envelope(plain.as_bytes()));
        assert_eq!(
            codec.decode(plain.as_bytes(), &key, "t", "here").ok(),
            Some(StoredRecord::default())
        );
    }
}
