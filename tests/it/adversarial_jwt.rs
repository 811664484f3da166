//! Hostile transfer tokens against a real node's `POST /api/transfers`
//! (SPEC §4): each is refused with the table's status and message before
//! the body is read, and the tokens that must pass do pass (they then fail
//! on the JSON content type, 400, which proves the token was accepted).
//! Ends with a replay: a token used for a finished transfer is refused.

use crate::support::adv;
use crate::support::fake_panel;
use crate::support::node;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use adv::{new_uuid, post_transfer, Answer};
use fake_panel::{base64url, mint_transfer_jwt, sign_hs256};
use node::TestNode;
use serde_json::{json, Value};
use sha2::{Digest, Sha512};

const MISSING: &str = "The required authorization heads were not present in the request.";
const INVALID: &str = "Invalid or expired transfer token.";
const NOT_MULTIPART: &str = "invalid content type";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Panel-shaped claims for `sub`, valid now.
fn claims(sub: &str) -> Value {
    let now = now();
    json!({
        "iss": "http://panel.test", "aud": ["http://node.test"], "jti": "j",
        "iat": now, "nbf": now - 300, "exp": now + 900, "sub": sub,
        "unique_id": new_uuid(),
    })
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

fn without(mut claims: Value, key: &str) -> Value {
    claims.as_object_mut().unwrap().remove(key);
    claims
}

fn hs256(node: &TestNode, claims: &Value) -> String {
    sign_hs256(
        node.token.as_bytes(),
        &json!({"typ": "JWT", "alg": "HS256"}),
        claims,
    )
}

/// A JSON-bodied attempt: a token that passes gets 400 `invalid content
/// type`, one that fails its own error.
fn attempt(node: &TestNode, token: &str) -> Answer {
    post_transfer(
        node,
        Some(&format!("Bearer {token}")),
        "application/json",
        b"{}",
    )
}

fn hmac_sha512(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut block = [0u8; 128];
    block[..key.len()].copy_from_slice(key);
    let mut inner = Sha512::new();
    inner.update(block.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha512::new();
    outer.update(block.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

#[test]
fn hostile_tokens_get_the_spec_status_and_message() {
    let node = TestNode::start();
    let uuid = new_uuid();
    let good = claims(&uuid);
    let header = |alg: &str| base64url(json!({"typ": "JWT", "alg": alg}).to_string().as_bytes());
    let body = base64url(good.to_string().as_bytes());

    let alg_none = format!("{}.{body}.", header("none"));
    let hs512 = {
        let input = format!("{}.{body}", header("HS512"));
        let mac = hmac_sha512(node.token.as_bytes(), input.as_bytes());
        format!("{input}.{}", base64url(&mac))
    };
    let websocket = hs256(
        &node,
        &json!({"iat": now(), "exp": now() + 600, "jti": "w", "server_uuid": uuid,
                "permissions": ["*", "admin.websocket.transfer"], "user_uuid": new_uuid()}),
    );
    let refused: Vec<(&str, String)> = vec![
        (
            "wrong key",
            sign_hs256(
                b"not-the-node-token-at-all",
                &json!({"alg": "HS256"}),
                &good,
            ),
        ),
        ("alg none", alg_none),
        ("HS512", hs512),
        ("missing exp", hs256(&node, &without(good.clone(), "exp"))),
        (
            "exp past the leeway",
            hs256(&node, &with(good.clone(), "exp", json!(now() - 120))),
        ),
        (
            "float exp past the leeway",
            hs256(
                &node,
                &with(good.clone(), "exp", json!(now() as f64 - 90.5)),
            ),
        ),
        (
            "future nbf",
            hs256(&node, &with(good.clone(), "nbf", json!(now() + 300))),
        ),
        (
            "sub not a uuid",
            hs256(&node, &with(good.clone(), "sub", json!("../../etc"))),
        ),
        ("no sub", hs256(&node, &without(good.clone(), "sub"))),
        ("websocket token", websocket),
        ("tampered claims", {
            let t = hs256(&node, &good);
            let forged = base64url(
                with(good.clone(), "sub", json!(new_uuid()))
                    .to_string()
                    .as_bytes(),
            );
            let parts: Vec<&str> = t.split('.').collect();
            format!("{}.{forged}.{}", parts[0], parts[2])
        }),
        ("not a jwt", "abc.def".to_string()),
    ];
    for (case, token) in &refused {
        let a = attempt(&node, token);
        assert_eq!(
            (a.status, a.error()),
            (401, INVALID),
            "{case}: {:?}",
            a.body
        );
        assert!(a.body["request_id"].is_string(), "{case}: no request id");
    }

    for (case, auth) in [
        ("no header", None),
        ("blank", Some("")),
        ("basic", Some("Basic dXNlcjpwYXNz")),
        ("bearer without token", Some("Bearer ")),
    ] {
        let a = post_transfer(&node, auth, "application/json", b"{}");
        assert_eq!((a.status, a.error()), (401, MISSING), "{case}");
        assert_eq!(a.header("www-authenticate"), Some("Bearer"), "{case}");
    }

    let a = attempt(
        &node,
        &hs256(
            &node,
            &with(good.clone(), "scope", json!("websocket files")),
        ),
    );
    assert_eq!(
        (a.status, a.error()),
        (403, "Forbidden."),
        "scope without transfer"
    );

    let accepted: Vec<(&str, String)> = vec![
        (
            "exp within the leeway",
            hs256(&node, &with(claims(&uuid), "exp", json!(now() - 30))),
        ),
        (
            "nbf within the leeway",
            hs256(&node, &with(claims(&uuid), "nbf", json!(now() + 30))),
        ),
        (
            "float dates",
            hs256(
                &node,
                &with(
                    with(claims(&uuid), "exp", json!(now() as f64 + 600.25)),
                    "iat",
                    json!(now() as f64 - 0.5),
                ),
            ),
        ),
        (
            "comma scope with transfer",
            hs256(&node, &with(claims(&uuid), "scope", json!("read,transfer"))),
        ),
        ("panel-minted", mint_transfer_jwt(&node.token, &uuid)),
    ];
    for (case, token) in &accepted {
        let a = attempt(&node, token);
        assert_eq!(
            (a.status, a.error()),
            (400, NOT_MULTIPART),
            "{case}: {:?}",
            a.body
        );
    }

    // The log names each refusal's reason, the answer never does. Lines
    // reach the log through the node's writer thread: wait for them.
    for needle in ["transfer token refused", "lacks the transfer scope"] {
        assert!(
            node.wait_log(needle, Duration::from_secs(5)),
            "{needle}: {}",
            node.log_text()
        );
    }
    adv::assert_nothing_installed(&node, &uuid);
}

#[test]
fn a_finished_transfers_token_is_not_accepted_again() {
    let node = TestNode::start();
    let archive = adv::tiny_archive();

    // Completed transfer, then the same token again.
    let uuid = new_uuid();
    let token = format!("Bearer {}", mint_transfer_jwt(&node.token, &uuid));
    let a = post_transfer(
        &node,
        Some(&token),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!(a.status, 200, "{:?}\n{}", a.body, node.log_text());
    assert_eq!(a.body["status"], "completed");
    adv::assert_tiny_installed(&node.server_dir(&uuid));
    let again = post_transfer(
        &node,
        Some(&token),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!((again.status, again.error()), (401, INVALID));
    assert!(
        node.wait_log("replay", std::time::Duration::from_secs(5)),
        "the log should say it was a replay"
    );
    adv::assert_tiny_installed(&node.server_dir(&uuid));

    // A failed transfer (bad checksum) consumes its token too: the retry
    // with the same token is a replay, not a second chance.
    let uuid = new_uuid();
    let token = format!("Bearer {}", mint_transfer_jwt(&node.token, &uuid));
    let mut bad = adv::part("archive", Some("archive.tar.gz"), &archive);
    bad.extend(adv::part("checksum", None, "00".repeat(32).as_bytes()));
    bad.extend(adv::closing());
    let a = post_transfer(&node, Some(&token), &adv::form_data(), &bad);
    assert_eq!((a.status, a.error()), (400, "checksums don't match"));
    adv::wait_staging_empty(&node, std::time::Duration::from_secs(10));
    adv::assert_nothing_installed(&node, &uuid);
    let again = post_transfer(
        &node,
        Some(&token),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!((again.status, again.error()), (401, INVALID));
    adv::assert_nothing_installed(&node, &uuid);

    // A fresh token for that server still works.
    let token = format!("Bearer {}", mint_transfer_jwt(&node.token, &uuid));
    let a = post_transfer(
        &node,
        Some(&token),
        &adv::form_data(),
        &adv::transfer_body(&archive),
    );
    assert_eq!(a.status, 200, "{:?}", a.body);
    adv::assert_tiny_installed(&node.server_dir(&uuid));
}
