//! Tokens minted like the panel's NodeJWTService (by the fake panel, with
//! its own HMAC and base64) are accepted by `ferry::jwt`, and the shapes the
//! panel may produce (float dates, long keys) too.

use crate::support::fake_panel;

use ferry::jwt::{verify_transfer_token, TokenError};
use serde_json::json;

const UUID: &str = "5f2e0c1a-9b8d-4e7f-a6c5-0123456789ab";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

#[test]
fn panel_minted_token_is_accepted() {
    // Panel node tokens are 64 random characters.
    let node_token = "k".repeat(32) + &"Z9".repeat(16);
    let panel = fake_panel::FakePanel::start("id", "x");
    let token = panel.mint_transfer_jwt(&node_token, UUID);
    let claims = verify_transfer_token(Some(&bearer(&token)), node_token.as_bytes()).unwrap();
    assert_eq!(claims.server, UUID);
    assert_eq!(claims.replay_key.len(), 16);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(claims.expires_at >= now + 890 && claims.expires_at <= now + 900);

    // Another token for the same server has another replay key.
    let again = fake_panel::mint_transfer_jwt(&node_token, UUID);
    let other = verify_transfer_token(Some(&bearer(&again)), node_token.as_bytes()).unwrap();
    assert_ne!(other.replay_key, claims.replay_key);

    // The destination's token is the key: another node's is refused.
    assert!(matches!(
        verify_transfer_token(Some(&bearer(&token)), b"another-node-token-0123456789"),
        Err(TokenError::Invalid(_))
    ));
}

#[test]
fn keys_longer_than_a_hmac_block_and_float_dates() {
    let key = "long-key-".repeat(12);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let claims = json!({
        "iss": "https://panel", "aud": ["https://node:8080"], "jti": "x",
        "iat": now, "nbf": now - 300.0, "exp": now + 900.5, "sub": UUID, "unique_id": "u1",
    });
    let token = fake_panel::sign_hs256(
        key.as_bytes(),
        &json!({"typ": "JWT", "alg": "HS256"}),
        &claims,
    );
    let got = verify_transfer_token(Some(&bearer(&token)), key.as_bytes()).unwrap();
    assert_eq!(got.replay_key, "u1");

    // The fake's signing agrees with ferry's minting byte for byte.
    let header = json!({"typ": "JWT", "alg": "HS256"});
    let ours = ferry::jwt::mint_token_from_claims(key.as_bytes(), json!({}), claims.clone());
    assert_eq!(
        ours,
        fake_panel::sign_hs256(key.as_bytes(), &header, &claims)
    );
}
