use super::*;
use crate::{SigningAlg, SigningKey};

const URL: &str = "https://proxy.example/github/repos/acme/widgets/issues";
const NOW: i64 = 1_800_000_000;

fn key(alg: SigningAlg) -> SigningKey {
    SigningKey::generate(alg).unwrap().0
}

fn expect<'a>(token: Option<&'a str>) -> Expect<'a> {
    Expect {
        method: "GET",
        url: URL,
        access_token: token,
        now: NOW,
    }
}

/// A proof with its header and claims edited after the fact, re-signed by `k`.
fn edited(k: &SigningKey, edit: impl Fn(&mut serde_json::Value, &mut serde_json::Value)) -> String {
    let mut h = serde_json::json!({"typ": TYP_DPOP, "alg": k.alg.as_str(), "jwk": k.public_jwk()});
    let mut c = serde_json::json!({"jti": "p1", "htm": "GET", "htu": URL, "iat": NOW,
        "ath": token_hash("the-token")});
    edit(&mut h, &mut c);
    let mut out = b64(h.to_string().as_bytes());
    out.push('.');
    out.push_str(&b64(c.to_string().as_bytes()));
    let sig = k.sign(out.as_bytes()).unwrap();
    out.push('.');
    out.push_str(&b64(&sig));
    out
}

/// RFC 9864: a proof naming its Ed25519 key's algorithm `Ed25519` (what
/// current JOSE libraries emit) is as good as one naming it `EdDSA`.
#[test]
fn a_proof_signed_as_ed25519_verifies() {
    let k = key(SigningAlg::EdDsa);
    let p = edited(&k, |h, _| h["alg"] = "Ed25519".into());
    let got = verify_proof(&p, &expect(Some("the-token"))).unwrap();
    assert_eq!(got.jkt, k.public_jwk().thumbprint().unwrap());
    let ec = key(SigningAlg::Es256);
    let p = edited(&ec, |h, _| h["alg"] = "Ed25519".into());
    assert!(verify_proof(&p, &expect(Some("the-token"))).is_err());
}

#[test]
fn a_good_proof_yields_the_keys_thumbprint() {
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256] {
        let k = key(alg);
        let p = sign_proof(&k, "GET", URL, Some("the-token"), NOW).unwrap();
        let got = verify_proof(&p, &expect(Some("the-token"))).unwrap();
        assert_eq!(got.jkt, k.public_jwk().thumbprint().unwrap());
        // The token endpoint has no token to hash yet.
        let p = sign_proof(&k, "POST", "https://mandate.example/oauth/token", None, NOW).unwrap();
        let at_token_endpoint = Expect {
            method: "POST",
            url: "https://mandate.example/oauth/token",
            access_token: None,
            now: NOW,
        };
        assert!(verify_proof(&p, &at_token_endpoint).is_ok());
    }
}

#[test]
fn htu_is_compared_without_query_default_port_or_case() {
    let k = key(SigningAlg::EdDsa);
    let p = sign_proof(
        &k,
        "GET",
        "HTTPS://Proxy.Example:443/github/repos/acme/widgets/issues?page=2",
        Some("the-token"),
        NOW,
    )
    .unwrap();
    assert!(verify_proof(&p, &expect(Some("the-token"))).is_ok());
}

#[test]
fn proofs_for_another_request_token_or_time_are_refused() {
    let k = key(SigningAlg::EdDsa);
    let cases: Vec<(&str, String)> = vec![
        ("method", edited(&k, |_, c| c["htm"] = "POST".into())),
        (
            "url",
            edited(&k, |_, c| {
                c["htu"] = "https://proxy.example/github/other".into()
            }),
        ),
        (
            "host",
            edited(&k, |_, c| {
                c["htu"] = URL.replace("proxy.example", "evil.example").into()
            }),
        ),
        (
            "ath",
            edited(&k, |_, c| c["ath"] = token_hash("another-token").into()),
        ),
        (
            "no ath",
            edited(&k, |_, c| {
                c.as_object_mut().unwrap().remove("ath");
            }),
        ),
        ("old", edited(&k, |_, c| c["iat"] = (NOW - 61).into())),
        ("future", edited(&k, |_, c| c["iat"] = (NOW + 61).into())),
        (
            "iat i64::MIN",
            edited(&k, |_, c| c["iat"] = i64::MIN.into()),
        ),
        (
            "iat i64::MAX",
            edited(&k, |_, c| c["iat"] = i64::MAX.into()),
        ),
        ("typ", edited(&k, |h, _| h["typ"] = "JWT".into())),
        (
            "no jwk",
            edited(&k, |h, _| {
                h.as_object_mut().unwrap().remove("jwk");
            }),
        ),
        ("alg none", edited(&k, |h, _| h["alg"] = "none".into())),
        ("alg mismatch", edited(&k, |h, _| h["alg"] = "ES256".into())),
        ("empty jti", edited(&k, |_, c| c["jti"] = "".into())),
    ];
    for (name, proof) in cases {
        let e = verify_proof(&proof, &expect(Some("the-token"))).unwrap_err();
        assert!(matches!(e, TokenError::BadProof(_)), "{name}: {e:?}");
    }
    // Signed by another key than the one in its header.
    let other = key(SigningAlg::EdDsa);
    let good = edited(&k, |_, _| {});
    let forged_sig = sign_proof(&other, "GET", URL, Some("the-token"), NOW).unwrap();
    let spliced = format!(
        "{}.{}",
        good.rsplit_once('.').unwrap().0,
        forged_sig.rsplit_once('.').unwrap().1
    );
    assert!(verify_proof(&spliced, &expect(Some("the-token"))).is_err());
    assert!(verify_proof(&good, &expect(Some("the-token"))).is_ok());
}

#[test]
fn a_proof_carrying_a_private_key_is_refused() {
    let k = key(SigningAlg::EdDsa);
    let p = edited(&k, |h, _| h["jwk"]["d"] = "c2VjcmV0".into());
    assert!(verify_proof(&p, &expect(Some("the-token"))).is_err());
}

#[test]
fn replays_are_caught_and_the_guard_stays_bounded() {
    let g = ReplayGuard::with_capacity(2);
    let p = |jti: &str| Proof {
        jkt: "k".into(),
        jti: jti.into(),
    };
    g.first_use(&p("a"), NOW).unwrap();
    assert!(g.first_use(&p("a"), NOW + 1).is_err(), "replay accepted");
    g.first_use(&p("b"), NOW).unwrap();
    // Full of live entries: refuse rather than forget.
    assert!(g.first_use(&p("c"), NOW + 1).is_err());
    // Once the old ones are past the window there is room again, and a
    // replay of an expired proof is still refused by its iat check.
    g.first_use(&p("c"), NOW + 2 * PROOF_WINDOW_SECS + 1)
        .unwrap();
}

/// A good proof (as `edited` makes it) padded to exactly `len` bytes.
fn proof_of_len(k: &SigningKey, len: usize) -> String {
    for header_pad in 0..4 {
        for pad in (len * 3 / 4).saturating_sub(1000)..len {
            let p = edited(k, |h, c| {
                h["pad"] = "h".repeat(header_pad).into();
                c["pad"] = "c".repeat(pad).into();
            });
            match p.len().cmp(&len) {
                std::cmp::Ordering::Equal => return p,
                std::cmp::Ordering::Greater => break,
                std::cmp::Ordering::Less => {}
            }
        }
    }
    panic!("no proof of length {len}")
}

#[test]
fn proofs_up_to_8_kib_are_accepted_and_longer_ones_refused() {
    const LIMIT: usize = 8 * 1024;
    let k = key(SigningAlg::EdDsa);
    let at_limit = proof_of_len(&k, LIMIT);
    assert!(verify_proof(&at_limit, &expect(Some("the-token"))).is_ok());
    let over = proof_of_len(&k, LIMIT + 1);
    assert_eq!(
        verify_proof(&over, &expect(Some("the-token"))).unwrap_err(),
        bad("proof is too large")
    );
}

#[test]
fn jti_is_1_to_256_characters() {
    let k = key(SigningAlg::EdDsa);
    let with_jti = |n: usize| {
        let p = edited(&k, |_, c| c["jti"] = "j".repeat(n).into());
        verify_proof(&p, &expect(Some("the-token")))
    };
    assert_eq!(with_jti(256).unwrap().jti, "j".repeat(256));
    assert!(with_jti(257).is_err());
}

#[test]
fn iat_may_be_up_to_the_window_away_either_way() {
    let k = key(SigningAlg::EdDsa);
    for iat in [NOW - PROOF_WINDOW_SECS, NOW + PROOF_WINDOW_SECS] {
        let p = edited(&k, |_, c| c["iat"] = iat.into());
        assert!(
            verify_proof(&p, &expect(Some("the-token"))).is_ok(),
            "{iat}"
        );
    }
}

#[test]
fn urls_with_userinfo_or_no_host_never_match() {
    assert_eq!(normalize_url("https://user@proxy.example/x"), None);
    assert_eq!(normalize_url("https:///x"), None);
    assert_eq!(normalize_url("ftp://proxy.example/x"), None);
    assert_eq!(
        normalize_url("HTTP://Proxy.Example:80").as_deref(),
        Some("http://proxy.example/")
    );
}

#[test]
fn a_bound_token_needs_a_fresh_proof_from_its_own_key() {
    let k = key(SigningAlg::EdDsa);
    let jkt = k.public_jwk().thumbprint().unwrap();
    let guard = ReplayGuard::default();
    let e = expect(Some("the-token"));
    let p = sign_proof(&k, "GET", URL, Some("the-token"), NOW).unwrap();
    let first = verify_bound(&jkt, &p, &e, &guard).unwrap();
    assert_eq!(first.jkt, jkt);
    // A replay is told apart from a bad proof: it is evidence of relay.
    assert_eq!(
        verify_bound(&jkt, &p, &e, &guard),
        Err(BoundError::Replayed(first))
    );
    // A valid proof, but from a key the token is not bound to.
    let thief = key(SigningAlg::EdDsa);
    let p = sign_proof(&thief, "GET", URL, Some("the-token"), NOW).unwrap();
    let theirs = verify_proof(&p, &e).unwrap();
    assert_ne!(theirs.jkt, jkt);
    assert_eq!(
        verify_bound(&jkt, &p, &e, &guard),
        Err(BoundError::OtherKey(theirs))
    );
    // The bound key, but a proof for another request.
    let p = sign_proof(&k, "POST", URL, Some("the-token"), NOW).unwrap();
    assert!(matches!(
        verify_bound(&jkt, &p, &e, &guard),
        Err(BoundError::Proof(_))
    ));
}

#[test]
fn a_full_guard_keeps_a_proof_through_the_last_second_it_could_be_replayed() {
    // A proof whose iat is a window ahead of our clock verifies until
    // 2 × PROOF_WINDOW_SECS after its first use, that second included; a
    // full guard must not forget it before then.
    let k = key(SigningAlg::EdDsa);
    let jkt = k.public_jwk().thumbprint().unwrap();
    let guard = ReplayGuard::with_capacity(2);
    let at = |now| Expect {
        now,
        ..expect(Some("the-token"))
    };
    let ahead = edited(&k, |_, c| c["iat"] = (NOW + PROOF_WINDOW_SECS).into());
    verify_bound(&jkt, &ahead, &at(NOW), &guard).unwrap();
    let filler = sign_proof(&k, "GET", URL, Some("the-token"), NOW).unwrap();
    verify_bound(&jkt, &filler, &at(NOW), &guard).unwrap();
    // Full. Were both entries forgotten here, `other` would take one place
    // and a replay of `ahead` the other.
    let last = NOW + 2 * PROOF_WINDOW_SECS;
    let other = sign_proof(&k, "GET", URL, Some("the-token"), last).unwrap();
    assert!(verify_bound(&jkt, &other, &at(last), &guard).is_err());
    assert!(
        verify_bound(&jkt, &ahead, &at(last), &guard).is_err(),
        "replay accepted"
    );
    // A second later the first proof is stale, so its place can be reused.
    verify_bound(&jkt, &other, &at(last + 1), &guard).unwrap();
}
