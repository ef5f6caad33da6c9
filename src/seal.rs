//! Sealing: authenticated encryption of the few secrets the server must keep readable
//! (the answer of an idempotent `POST /v1/api-keys`, which contains the new key and is
//! replayed to a retry), so that someone who reads the database learns nothing from them.
//!
//! XChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) with a 256-bit server key from
//! configuration (`[secrets] seal_key`, or `LEADLEX_SEAL_KEY`): a random 192-bit nonce
//! per message (no counter to keep across replicas), and associated data that binds a
//! sealed value to the row it belongs to, so that it cannot be moved to another row. A
//! sealed value is `v1:` followed by base64url(nonce ‖ ciphertext ‖ tag).
//!
//! The same key also keys the hashes of suppressed subjects ([`Sealer::keyed_hash`]:
//! HMAC-SHA256 under a subkey derived from it), so that replicas agree on them and a
//! database dump alone cannot be tested against guessed addresses.
//!
//! Invariants: the key never leaves this module (no `Debug`, no accessor); opening with
//! a wrong key, a wrong row or a changed byte fails.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use chacha20poly1305::{
    aead::{Aead, AeadCore, KeyInit, OsRng, Payload},
    XChaCha20Poly1305, XNonce,
};
use hmac::{Hmac, Mac};
use sha2::Sha256;

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 24;

/// Seals and opens values with the server's key.
pub struct Sealer {
    cipher: XChaCha20Poly1305,
    /// A key derived for keyed hashes (HMAC-SHA256 of the seal key and a label): it
    /// tells nothing of the seal key.
    hash_key: [u8; 32],
}

/// A sealed value could not be opened (wrong key, wrong row, or tampered with).
#[derive(Debug, thiserror::Error)]
#[error("a sealed value could not be opened (wrong seal key, or altered)")]
pub struct OpenError;

impl Sealer {
    /// From the configured key: 32 bytes as base64url (43 characters, no padding).
    pub fn from_encoded(encoded: &str) -> anyhow::Result<Self> {
        let bytes = URL_SAFE_NO_PAD.decode(encoded.trim()).context("the seal key is not base64url")?;
        if bytes.len() != 32 {
            bail!("the seal key must be 32 bytes (43 base64url characters), not {}", bytes.len());
        }
        let hash_key = <Hmac<Sha256> as Mac>::new_from_slice(&bytes)
            .expect("HMAC takes any key length")
            .chain_update(b"leadlex keyed hash v1")
            .finalize()
            .into_bytes()
            .into();
        Ok(Self { cipher: XChaCha20Poly1305::new_from_slice(&bytes).expect("32-byte key"), hash_key })
    }

    /// The keyed hash of `text` (HMAC-SHA256 under a key derived from the seal key), hex:
    /// the same on every replica that shares the seal key; without the key, a hash
    /// cannot be tested against guesses.
    pub fn keyed_hash(&self, text: &str) -> String {
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key).expect("HMAC takes any key length");
        crate::hex::hex(&mac.chain_update(text.as_bytes()).finalize().into_bytes())
    }

    /// A fresh random key, encoded as [`Sealer::from_encoded`] reads it.
    pub fn generate_encoded() -> String {
        URL_SAFE_NO_PAD.encode(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    /// The key stored in `path`, created there (readable by its owner only) when the file
    /// does not exist yet. Returns the sealer and whether the file was created.
    pub fn from_file_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok((Self::from_encoded(&text).with_context(|| format!("reading the seal key in {}", path.display()))?, false)),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                let encoded = Self::generate_encoded();
                write_private(path, &encoded).with_context(|| format!("writing a new seal key to {}", path.display()))?;
                Ok((Self::from_encoded(&encoded)?, true))
            }
            Err(err) => Err(err).with_context(|| format!("reading the seal key in {}", path.display())),
        }
    }

    /// Seals `plaintext` for the row named by `context`.
    pub fn seal(&self, plaintext: &[u8], context: &[u8]) -> String {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = self.cipher.encrypt(&nonce, Payload { msg: plaintext, aad: context }).expect("encryption cannot fail");
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Opens a value sealed for the row named by `context`.
    pub fn open(&self, sealed: &str, context: &[u8]) -> Result<Vec<u8>, OpenError> {
        let bytes = sealed.strip_prefix(VERSION).and_then(|b| URL_SAFE_NO_PAD.decode(b).ok()).ok_or(OpenError)?;
        if bytes.len() < NONCE_LEN {
            return Err(OpenError);
        }
        let (nonce, body) = bytes.split_at(NONCE_LEN);
        self.cipher.decrypt(XNonce::from_slice(nonce), Payload { msg: body, aad: context }).map_err(|_| OpenError)
    }
}

/// Where the embedded default keeps its generated key: next to the SQLite file.
pub fn default_key_path(sqlite_file: &Path) -> PathBuf {
    let mut name = sqlite_file.as_os_str().to_owned();
    name.push(".seal-key");
    PathBuf::from(name)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_row() {
        let a = Sealer::from_encoded(&Sealer::generate_encoded()).unwrap();
        let b = Sealer::from_encoded(&Sealer::generate_encoded()).unwrap();
        let sealed = a.seal(b"wbk_secret", b"ws_1/idem");
        assert!(!sealed.contains("wbk_secret"));
        assert_eq!(a.open(&sealed, b"ws_1/idem").unwrap(), b"wbk_secret");
        assert!(a.open(&sealed, b"ws_2/idem").is_err(), "bound to its row");
        assert!(b.open(&sealed, b"ws_1/idem").is_err(), "another key cannot open it");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(a.open(std::str::from_utf8(&tampered).unwrap(), b"ws_1/idem").is_err());
        assert_ne!(a.seal(b"x", b"c"), a.seal(b"x", b"c"), "a fresh nonce every time");
    }

    #[test]
    fn keys_are_checked_and_a_key_file_is_created_once() {
        assert!(Sealer::from_encoded("short").is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = default_key_path(&dir.path().join("leadlex.db"));
        let (first, created) = Sealer::from_file_or_create(&path).unwrap();
        assert!(created);
        let (second, created) = Sealer::from_file_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(second.open(&first.seal(b"x", b"c"), b"c").unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
