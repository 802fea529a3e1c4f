//! Who may place a seckill order: per-user sale tokens and the challenge an app passes to get
//! one (none, a proof-of-work puzzle, or an external verifier such as a captcha service).
//!
//! Bots fire the order endpoint in a loop from before the start. A sale that requires a
//! token accepts an order only with a short-lived token bound to the buyer, the sale and an
//! expiry, signed with a key every gateway shares (HMAC-SHA256): any gateway verifies it
//! without I/O. The challenge decides what an app must show before it gets one.
//!
//! Proof of work is stateless too: the puzzle is signed (so it cannot be made up or moved to
//! another buyer or sale) and carries its expiry; a solution is a nonce whose SHA-256 with the
//! puzzle starts with `difficulty` zero bits. Checking costs two hashes; finding one costs
//! about 2^difficulty.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// Puzzles harder than this would keep phones busy for minutes.
pub const MAX_DIFFICULTY: u8 = 28;
const MAX_URL: usize = 500;
/// Bytes of the MAC kept in a token or puzzle (128 bits).
const MAC_BYTES: usize = 16;

/// What an app must pass before it gets a sale token.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Challenge {
    #[default]
    None,
    /// Find a nonce: SHA-256(puzzle ":" nonce) starts with `difficulty` zero bits.
    ProofOfWork { difficulty: u8 },
    /// POST the app's answer (a captcha response) to this URL; it answers yes or no.
    Webhook { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("difficulty must be between 1 and {MAX_DIFFICULTY}")]
    InvalidDifficulty,
    #[error("url must be an http:// or https:// URL of at most {MAX_URL} characters")]
    InvalidUrl,
    #[error("challenge kind must be none, proof_of_work or webhook")]
    UnknownKind,
}

impl Challenge {
    /// The stored form: kind, difficulty, URL (see the `promotions` table).
    pub fn parse(kind: &str, difficulty: Option<i16>, url: Option<&str>) -> Result<Self, ChallengeError> {
        match kind {
            "none" => Ok(Challenge::None),
            "proof_of_work" => {
                let difficulty = difficulty
                    .and_then(|d| u8::try_from(d).ok())
                    .ok_or(ChallengeError::InvalidDifficulty)?;
                Challenge::proof_of_work(difficulty)
            }
            "webhook" => Challenge::webhook(url.unwrap_or_default()),
            _ => Err(ChallengeError::UnknownKind),
        }
    }

    pub fn proof_of_work(difficulty: u8) -> Result<Self, ChallengeError> {
        if (1..=MAX_DIFFICULTY).contains(&difficulty) {
            Ok(Challenge::ProofOfWork { difficulty })
        } else {
            Err(ChallengeError::InvalidDifficulty)
        }
    }

    pub fn webhook(url: &str) -> Result<Self, ChallengeError> {
        let url = url.trim();
        let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
        let host_ok = url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty());
        if scheme_ok && host_ok && url.len() <= MAX_URL && !url.chars().any(char::is_whitespace) {
            Ok(Challenge::Webhook { url: url.to_owned() })
        } else {
            Err(ChallengeError::InvalidUrl)
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Challenge::None => "none",
            Challenge::ProofOfWork { .. } => "proof_of_work",
            Challenge::Webhook { .. } => "webhook",
        }
    }

    pub fn difficulty(&self) -> Option<u8> {
        match self {
            Challenge::ProofOfWork { difficulty } => Some(*difficulty),
            _ => None,
        }
    }

    pub fn url(&self) -> Option<&str> {
        match self {
            Challenge::Webhook { url } => Some(url),
            _ => None,
        }
    }
}

/// A sale's anti-bot rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SaleAccess {
    /// Orders need a sale token (`false`: anyone with a user JWT may order, as before).
    pub requires_token: bool,
    pub challenge: Challenge,
}

/// Why a token or a puzzle answer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AccessRefusal {
    #[error("not a token this service issued for this buyer and sale")]
    Forged,
    #[error("expired")]
    Expired,
    #[error("the solution does not solve the puzzle")]
    Unsolved,
}

/// The shared signing key of sale tokens and puzzles.
#[derive(Clone)]
pub struct SaleKey(Vec<u8>);

impl std::fmt::Debug for SaleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SaleKey(..)")
    }
}

impl SaleKey {
    pub fn new(secret: &[u8]) -> Self {
        Self(secret.to_vec())
    }

    fn mac(
        &self,
        purpose: &str,
        promotion_id: i64,
        user_id: i64,
        expires_ms: i64,
        extra: &str,
    ) -> [u8; MAC_BYTES] {
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(format!("{purpose}|{promotion_id}|{user_id}|{expires_ms}|{extra}").as_bytes());
        let full = mac.finalize().into_bytes();
        let mut out = [0u8; MAC_BYTES];
        out.copy_from_slice(&full[..MAC_BYTES]);
        out
    }

    /// `st1.<expires_ms>.<mac>`: the buyer and the sale are not in it, they are what it is
    /// checked against.
    pub fn mint_token(&self, promotion_id: i64, user_id: i64, expires_ms: i64) -> String {
        let mac = self.mac("sale-token", promotion_id, user_id, expires_ms, "");
        format!("st1.{expires_ms}.{}", hex::encode(mac))
    }

    pub fn verify_token(
        &self,
        token: &str,
        promotion_id: i64,
        user_id: i64,
        now_ms: i64,
    ) -> Result<(), AccessRefusal> {
        let (expires_ms, mac) = split_signed(token, "st1").ok_or(AccessRefusal::Forged)?;
        let want = self.mac("sale-token", promotion_id, user_id, expires_ms, "");
        if !bool::from(want.ct_eq(&mac)) {
            return Err(AccessRefusal::Forged);
        }
        if now_ms >= expires_ms {
            return Err(AccessRefusal::Expired);
        }
        Ok(())
    }

    /// `pw1.<expires_ms>.<difficulty>.<mac>`: a puzzle for one buyer and sale.
    pub fn issue_puzzle(&self, promotion_id: i64, user_id: i64, expires_ms: i64, difficulty: u8) -> String {
        let mac = self.mac("pow", promotion_id, user_id, expires_ms, &difficulty.to_string());
        format!("pw1.{expires_ms}.{difficulty}.{}", hex::encode(mac))
    }

    /// Whether `nonce` solves `puzzle`, which this key issued to this buyer for this sale at
    /// a difficulty of at least `min_difficulty` (the sale's, now) and which has not expired.
    pub fn verify_solution(
        &self,
        puzzle: &str,
        nonce: u64,
        promotion_id: i64,
        user_id: i64,
        min_difficulty: u8,
        now_ms: i64,
    ) -> Result<(), AccessRefusal> {
        let rest = puzzle.strip_prefix("pw1.").ok_or(AccessRefusal::Forged)?;
        let mut parts = rest.splitn(3, '.');
        let (Some(expires), Some(difficulty), Some(mac_hex)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AccessRefusal::Forged);
        };
        let expires_ms: i64 = canonical_number(expires).ok_or(AccessRefusal::Forged)?;
        let difficulty: u8 = canonical_number(difficulty).ok_or(AccessRefusal::Forged)?;
        let mac = decode_mac(mac_hex).ok_or(AccessRefusal::Forged)?;
        let want = self.mac("pow", promotion_id, user_id, expires_ms, &difficulty.to_string());
        if !bool::from(want.ct_eq(&mac)) || difficulty < min_difficulty {
            return Err(AccessRefusal::Forged);
        }
        if now_ms >= expires_ms {
            return Err(AccessRefusal::Expired);
        }
        if leading_zero_bits(puzzle, nonce) < u32::from(difficulty) {
            return Err(AccessRefusal::Unsolved);
        }
        Ok(())
    }
}

/// `<prefix>.<expires_ms>.<mac hex>`
fn split_signed(text: &str, prefix: &str) -> Option<(i64, [u8; MAC_BYTES])> {
    let rest = text.strip_prefix(prefix)?.strip_prefix('.')?;
    let (expires, mac_hex) = rest.split_once('.')?;
    Some((canonical_number(expires)?, decode_mac(mac_hex)?))
}

/// A decimal number written the one way this module writes it (no sign, no leading zero),
/// so each token and puzzle has exactly one spelling.
fn canonical_number<T: std::str::FromStr>(text: &str) -> Option<T> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    let leading_zero = text.len() > 1 && text.starts_with('0');
    (digits && !leading_zero).then(|| text.parse().ok()).flatten()
}

/// Lower-case hex of exactly `MAC_BYTES` bytes.
fn decode_mac(mac_hex: &str) -> Option<[u8; MAC_BYTES]> {
    if !mac_hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    let bytes = hex::decode(mac_hex).ok()?;
    bytes.try_into().ok()
}

/// Leading zero bits of SHA-256(puzzle ":" nonce).
fn leading_zero_bits(puzzle: &str, nonce: u64) -> u32 {
    let digest = Sha256::new()
        .chain_update(puzzle.as_bytes())
        .chain_update(b":")
        .chain_update(nonce.to_string().as_bytes())
        .finalize();
    let mut bits = 0;
    for byte in digest {
        if byte == 0 {
            bits += 8;
        } else {
            return bits + byte.leading_zeros();
        }
    }
    bits
}

/// The difficulty a puzzle states.
fn difficulty_of(puzzle: &str) -> Option<u32> {
    puzzle.strip_prefix("pw1.")?.split('.').nth(1)?.parse().ok()
}

/// Whether `nonce` solves `puzzle` (the hash only: not whether the puzzle is genuine).
pub fn solves(puzzle: &str, nonce: u64) -> bool {
    difficulty_of(puzzle).is_some_and(|d| leading_zero_bits(puzzle, nonce) >= d)
}

/// What an app does: try nonces from 0 until one solves the puzzle (about 2^difficulty
/// hashes).
pub fn solve_puzzle(puzzle: &str) -> Option<u64> {
    difficulty_of(puzzle)?;
    (0..u64::MAX).find(|nonce| solves(puzzle, *nonce))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SaleKey {
        SaleKey::new(b"test-sale-key-0123456789-0123456789")
    }

    #[test]
    fn a_token_is_good_only_for_its_buyer_and_sale_until_it_expires() {
        let token = key().mint_token(7, 42, 1_000);
        assert_eq!(key().verify_token(&token, 7, 42, 999), Ok(()));
        assert_eq!(
            key().verify_token(&token, 7, 42, 1_000),
            Err(AccessRefusal::Expired)
        );
        assert_eq!(key().verify_token(&token, 8, 42, 999), Err(AccessRefusal::Forged));
        assert_eq!(key().verify_token(&token, 7, 43, 999), Err(AccessRefusal::Forged));
        let other = SaleKey::new(b"another-key-0123456789-0123456789");
        assert_eq!(other.verify_token(&token, 7, 42, 999), Err(AccessRefusal::Forged));
        // A later expiry cannot be written over a valid token.
        let stretched = token.replacen("1000", "9000", 1);
        assert_eq!(
            key().verify_token(&stretched, 7, 42, 999),
            Err(AccessRefusal::Forged)
        );
        for junk in [
            "",
            "st1",
            "st1.",
            "st1.5.",
            "st1.x.00",
            "pw1.1000.00",
            &format!("{token}0"),
        ] {
            assert_eq!(
                key().verify_token(junk, 7, 42, 0),
                Err(AccessRefusal::Forged),
                "{junk}"
            );
        }
    }

    #[test]
    fn a_solved_puzzle_is_accepted_and_anything_else_refused() {
        let puzzle = key().issue_puzzle(7, 42, 5_000, 8);
        let nonce = solve_puzzle(&puzzle).expect("a solution exists");
        assert_eq!(key().verify_solution(&puzzle, nonce, 7, 42, 8, 0), Ok(()));
        // Someone else's puzzle, an easier made-up one, a stale one, a wrong nonce.
        assert_eq!(
            key().verify_solution(&puzzle, nonce, 7, 43, 8, 0),
            Err(AccessRefusal::Forged)
        );
        let easier = puzzle.replacen(".8.", ".1.", 1);
        assert_eq!(
            key().verify_solution(&easier, 0, 7, 42, 1, 0),
            Err(AccessRefusal::Forged)
        );
        assert_eq!(
            key().verify_solution(&puzzle, nonce, 7, 42, 9, 0),
            Err(AccessRefusal::Forged)
        );
        assert_eq!(
            key().verify_solution(&puzzle, nonce, 7, 42, 8, 5_000),
            Err(AccessRefusal::Expired)
        );
        let wrong = (0..)
            .find(|n| leading_zero_bits(&puzzle, *n) < 8)
            .expect("most nonces fail");
        assert_eq!(
            key().verify_solution(&puzzle, wrong, 7, 42, 8, 0),
            Err(AccessRefusal::Unsolved)
        );
    }

    #[test]
    fn challenges_parse_from_their_stored_form() {
        assert_eq!(Challenge::parse("none", None, None), Ok(Challenge::None));
        assert_eq!(
            Challenge::parse("proof_of_work", Some(20), None),
            Ok(Challenge::ProofOfWork { difficulty: 20 })
        );
        assert_eq!(
            Challenge::parse("proof_of_work", Some(0), None),
            Err(ChallengeError::InvalidDifficulty)
        );
        assert_eq!(
            Challenge::parse("proof_of_work", Some(i16::from(MAX_DIFFICULTY) + 1), None),
            Err(ChallengeError::InvalidDifficulty)
        );
        assert_eq!(
            Challenge::parse("webhook", None, Some("https://captcha.example/verify")).map(|c| c.kind()),
            Ok("webhook")
        );
        for bad in ["ftp://x", "https://", "http://a b", "captcha"] {
            assert_eq!(Challenge::webhook(bad), Err(ChallengeError::InvalidUrl), "{bad}");
        }
        assert_eq!(
            Challenge::parse("captcha", None, None),
            Err(ChallengeError::UnknownKind)
        );
    }
}
