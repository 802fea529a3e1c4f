//! A bearer token from an untrusted client: verified or refused, never a panic, and never
//! accepted unless it was signed with our key (the fuzzer does not know it).
#![no_main]

use std::sync::OnceLock;

use gateway::auth::Authenticator;
use gateway::settings::AuthSettings;
use libfuzzer_sys::fuzz_target;
use secrecy::SecretString;

fn authenticator() -> &'static Authenticator {
    static AUTH: OnceLock<Authenticator> = OnceLock::new();
    AUTH.get_or_init(|| {
        Authenticator::new(&AuthSettings {
            jwt_secret: SecretString::from("fuzzing-secret-that-the-fuzzer-does-not-know-0123456789"),
            admin_key: SecretString::from("fuzzing-admin-key-0123456789"),
            jwt_issuer: None,
        })
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(authenticator().user_id(token).is_err(), "a token we never signed was accepted");
    }
});
