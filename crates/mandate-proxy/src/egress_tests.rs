use super::*;
use base64::Engine;

fn basic(pair: &str) -> Vec<u8> {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
    .into_bytes()
}

fn token_of(v: &[u8]) -> Result<String, Deny> {
    proxy_token(Ok(Some(v)))
}

#[test]
fn proxy_authorization_takes_bearer_or_basic_with_the_token_as_password() {
    assert_eq!(token_of(b"Bearer ey.J0.x").unwrap(), "ey.J0.x");
    assert_eq!(token_of(b"bearer  ey.J0.x ").unwrap(), "ey.J0.x");
    assert_eq!(token_of(&basic("mandate:ey.J0.x")).unwrap(), "ey.J0.x");
    // Whatever the user name, also none.
    assert_eq!(token_of(&basic(":ey.J0.x")).unwrap(), "ey.J0.x");
}

#[test]
fn missing_or_malformed_proxy_credentials_are_a_407() {
    let refused = |v: Result<Option<&[u8]>, ()>| {
        let d = proxy_token(v).unwrap_err();
        (d.status.as_u16(), d.code.as_str())
    };
    assert_eq!(refused(Ok(None)), (407, "missing_token"));
    assert_eq!(refused(Err(())), (407, "invalid_request"));
    for bad in [
        &b"Bearer"[..],
        b"Bearer ",
        b"DPoP ey.J0.x",
        b"Token ey.J0.x",
        b"Basic !!!",
        b"\xff\xfe",
        b"Bearer a b",
        b"Bearer a\"b",
    ] {
        assert_eq!(refused(Ok(Some(bad))), (407, "invalid_request"), "{bad:?}");
    }
    for pair in ["no-colon", "user:", "user:tok en"] {
        assert_eq!(
            refused(Ok(Some(&basic(pair)))),
            (407, "invalid_request"),
            "{pair}"
        );
    }
    // Never echoes what was sent.
    let d = proxy_token(Ok(Some(b"Basic c2VjcmV0"))).unwrap_err();
    assert!(!d.message.contains("c2VjcmV0"));
}

#[test]
fn a_head_is_read_whole_with_what_followed_it() {
    let raw = b"CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nProxy-Authorization: Bearer t\r\n\r\n\x16\x03\x01";
    let h = parse_head(raw).ok().unwrap().unwrap();
    assert_eq!(
        (h.method.as_str(), h.target.as_str()),
        ("CONNECT", "api.example.com:443")
    );
    assert_eq!(h.authorization, Ok(Some(b"Bearer t".to_vec())));
    assert_eq!(h.early, b"\x16\x03\x01");
    assert!(
        parse_head(b"CONNECT a:443 HTTP/1.1\r\nHost:")
            .ok()
            .unwrap()
            .is_none()
    );
    let twice = b"CONNECT a:443 HTTP/1.1\r\nProxy-Authorization: Bearer a\r\nproxy-authorization: Bearer b\r\n\r\n";
    assert_eq!(
        parse_head(twice).ok().unwrap().unwrap().authorization,
        Err(())
    );
    for bad in [
        &b"\x16\x03\x01\x02\x00\r\n\r\n"[..],
        b"CONNECT  HTTP/1.1\r\n\r\n",
    ] {
        assert!(matches!(parse_head(bad), Err(NoHead::Bad(_))), "{bad:?}");
    }
    let many: String = (0..70).map(|i| format!("X-{i}: v\r\n")).collect();
    let many = format!("CONNECT a:443 HTTP/1.1\r\n{many}\r\n");
    assert!(matches!(parse_head(many.as_bytes()), Err(NoHead::Bad(_))));
}

#[test]
fn a_refusal_is_json_with_the_challenge_on_a_407() {
    let d = unauthenticated(Code::MissingToken, "send a token");
    let text = String::from_utf8(answer(&d, "rid")).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 407 Proxy Authentication Required\r\n"),
        "{text}"
    );
    assert!(text.contains("proxy-authenticate: Bearer realm=\"mandate-egress\"\r\n"));
    assert!(text.contains("x-request-id: rid\r\n") && text.contains("connection: close\r\n"));
    let body = text.split("\r\n\r\n").nth(1).unwrap();
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"]["code"], "missing_token");
    let d = Deny::new(
        StatusCode::METHOD_NOT_ALLOWED,
        Code::NotConnect,
        "CONNECT only",
    );
    let text = String::from_utf8(answer(&d, "r")).unwrap();
    assert!(text.contains("allow: CONNECT\r\n") && !text.contains("proxy-authenticate"));
}

#[test]
fn long_targets_are_cut_in_messages() {
    let long = "a".repeat(5000);
    assert_eq!(shown(&long).chars().count(), SHOWN + 1);
    assert_eq!(shown("api.example.com:443"), "api.example.com:443");
}

#[test]
fn a_refused_token_is_a_403_on_this_listener() {
    let d = Deny::from(mandate_policy::Refused::revoked(
        mandate_core::RevocationKind::Task,
    ));
    let d = forbidden(d);
    assert_eq!((d.status.as_u16(), d.code.as_str()), (403, "revoked"));
    let busy = forbidden(Deny::unavailable(Code::NotReady, "later"));
    assert_eq!(busy.status.as_u16(), 503);
}
