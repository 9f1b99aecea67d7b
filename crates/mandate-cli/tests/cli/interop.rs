//! Independent, widely used OAuth/JOSE clients against the real broker and
//! proxy: oauth4webapi + jose (Node) and Authlib + joserfc (Python), pinned
//! in `interop/*/` lock files and installed by this suite into a cache
//! outside the source tree (`MANDATE_INTEROP_CACHE`, by default
//! `~/.cache/mandate/interop`). The clients log in with the key files
//! `mandate agent enroll` wrote (Ed25519 and ES256) and know Mandate only by
//! configuration; what they check is listed in `EXPECTED`.
//!
//! Without Node or Python the tests skip loudly; under
//! `MANDATE_REQUIRE_INTEROP=1` (CI) they fail instead.

use crate::interop_support;

use interop_support::{Clients, World};

/// Every check each client must report, per agent key file: a client
/// that stops early or skips one fails here, not silently.
const EXPECTED: &[&str] = &[
    "login",
    "exchange",
    "rfc9068",
    "tampered token",
    "other audience",
    "session as access token",
    "dpop exchange",
    "dpop request at the proxy",
    "dpop token without its proof",
    "introspection",
    "introspection of a tampered token",
    "revocation then inactive",
    "unenrolled assertion key",
    "garbage assertion with another client_id",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth4webapi_and_jose_work_unchanged() {
    let Some(clients) = Clients::node() else {
        return;
    };
    let world = World::new("EdDSA").await;
    let checks = world.run(&clients).await;
    world
        .assert_checks(&checks, EXPECTED, &["jose jwtVerify"])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authlib_and_joserfc_work_unchanged() {
    let Some(clients) = Clients::python() else {
        return;
    };
    // joserfc, under Authlib's RFC 9068 validator, refuses `EdDSA` (RFC 9864
    // deprecates the name) and offers no way to allow it: a broker whose
    // resource servers use it signs with ES256.
    let world = World::new("ES256").await;
    let checks = world.run(&clients).await;
    world.assert_checks(&checks, EXPECTED, &[]).await;
}
