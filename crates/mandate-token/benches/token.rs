//! Sign and verify costs of an RFC 9068 access token, per algorithm.
use criterion::{Criterion, criterion_group, criterion_main};
use mandate_token::claims::{AccessClaims, AuthorizationDetail};
use mandate_token::{SigningAlg, SigningKey, jwt};
use std::hint::black_box;

fn claims() -> AccessClaims {
    AccessClaims {
        iss: "https://mandate.example.com".into(),
        sub: "spiffe://example.com/agent/triage".into(),
        aud: "https://api.github.com".into(),
        exp: 2_000_000_000,
        iat: 1_900_000_000,
        nbf: 1_900_000_000,
        jti: "jti_0123456789abcdef0123456789abcdef".into(),
        client_id: "spiffe://example.com/agent/triage".into(),
        txn: "task_0123456789abcdef0123456789abcdef".into(),
        scope: "issues:read".into(),
        authorization_details: vec![AuthorizationDetail {
            type_: "mandate".into(),
            tool: "github".into(),
            actions: vec!["issues:read".into()],
            resources: vec!["repo:acme/*".into()],
            environment: Some("staging".into()),
            sensitivity: Some("internal".into()),
        }],
        cnf: None,
        act: None,
        root_txn: None,
        breakglass: false,
    }
}

fn bench(c: &mut Criterion) {
    let claims = claims();
    for alg in [SigningAlg::EdDsa, SigningAlg::Es256, SigningAlg::Rs256] {
        let (key, _) = SigningKey::generate(alg).unwrap();
        let token = jwt::encode(&key, jwt::TYP_ACCESS, &claims).unwrap();
        c.bench_function(&format!("sign/{alg}"), |b| {
            b.iter(|| jwt::encode(&key, jwt::TYP_ACCESS, black_box(&claims)).unwrap())
        });
        c.bench_function(&format!("verify/{alg}"), |b| {
            b.iter(|| {
                let t = jwt::parse(black_box(&token)).unwrap();
                t.expect_typ(jwt::TYP_ACCESS).unwrap();
                t.into_claims::<AccessClaims>(key.verifier()).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
