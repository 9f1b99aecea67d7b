//! Listings by name (or id) are in byte order on both backends, whatever
//! collation the PostgreSQL database sorts text by.

use crate::common::{Place, ev, seeded};
use crate::fixtures::{admin_token, agent, owner, sealed, secret, tamper, tool};
use crate::on_each_backend;
use mandate_audit::EventKind;
use mandate_core::*;

on_each_backend!(listings_are_in_byte_order_whatever_the_collation);

/// Under ICU's root collation, as under most locales, `_` sorts before
/// `-` and `.`, and punctuation before digits: not byte order.
const ICU: &str = r#"
    ALTER TABLE owners ALTER COLUMN name TYPE TEXT COLLATE "und-x-icu";
    ALTER TABLE agents ALTER COLUMN name TYPE TEXT COLLATE "und-x-icu";
    ALTER TABLE tools ALTER COLUMN name TYPE TEXT COLLATE "und-x-icu";
    ALTER TABLE secrets ALTER COLUMN name TYPE TEXT COLLATE "und-x-icu";
    ALTER TABLE admin_tokens ALTER COLUMN id TYPE TEXT COLLATE "und-x-icu";
"#;

async fn listings_are_in_byte_order_whatever_the_collation(place: Place) {
    let s = seeded(&place).await;
    // SQLite compares text as bytes; a PostgreSQL database as its locale says.
    tamper(&place, "", ICU);
    let names = ["a_b", "ab", "a1", "a.d", "a-c"];
    let in_byte_order = ["a-c", "a.d", "a1", "a_b", "ab"];
    for n in names {
        s.create_owner(owner(&format!("team{n}")), ev(EventKind::OwnerCreated))
            .await
            .unwrap();
        s.create_agent(agent(n), ev(EventKind::AgentCreated))
            .await
            .unwrap();
        s.create_tool(tool(n, &format!("urn:{n}")), ev(EventKind::ToolCreated))
            .await
            .unwrap();
        s.create_admin_token(
            admin_token(&format!("k{n}"), vec![AdminRight::Audit], 7),
            ev(EventKind::AdminTokenCreated),
        )
        .await
        .unwrap();
    }
    let (k, _) = s.data_key(b"w".to_vec(), 1).await.unwrap();
    for n in names {
        s.put_secret(
            secret(&format!("s{n}"), n),
            sealed(k, b"v"),
            ev(EventKind::SecretStored),
        )
        .await
        .unwrap();
    }
    let prefixed = |p: &str| {
        in_byte_order
            .iter()
            .map(|n| format!("{p}{n}"))
            .collect::<Vec<_>>()
    };
    let owners: Vec<_> = s.list_owners().await.unwrap();
    let mut expected = vec!["platform".to_owned()];
    expected.extend(prefixed("team"));
    assert_eq!(
        owners
            .iter()
            .map(|o| o.name.to_string())
            .collect::<Vec<_>>(),
        expected
    );
    let agents = s.list_agents().await.unwrap();
    assert_eq!(
        agents
            .iter()
            .map(|a| a.name.to_string())
            .collect::<Vec<_>>(),
        prefixed("")
    );
    let tools = s.list_tools().await.unwrap();
    assert_eq!(
        tools.iter().map(|t| t.name.to_string()).collect::<Vec<_>>(),
        prefixed("")
    );
    let secrets = s.list_secrets().await.unwrap();
    assert_eq!(
        secrets
            .iter()
            .map(|x| x.name.to_string())
            .collect::<Vec<_>>(),
        prefixed("s")
    );
    // Admin tokens: oldest first, a tie by id.
    let tokens = s.list_admin_tokens().await.unwrap();
    assert_eq!(
        tokens.iter().map(|t| t.id.clone()).collect::<Vec<_>>(),
        prefixed("k")
    );
}
