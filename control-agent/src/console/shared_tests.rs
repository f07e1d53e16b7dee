//! Console sessions shared by two agents on one real PostgreSQL: a login
//! on one is a login on the other, a logout on either ends it on both, a
//! message left on one is read once on the other, a user's budget holds
//! across agents, and a database that does not answer is no session.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::session::{Role, Sessions, User, MAX_PER_USER};
use super::shared::SharedSessions;
use crate::pg::testing::PgServer;

fn shared(url: &str) -> Sessions {
    let mut s = Sessions::default();
    s.share(SharedSessions::connect(url).unwrap());
    s
}

fn ann() -> User {
    User {
        name: "ann".into(),
        role: Role::Approver,
        tenants: vec!["finance".into()],
        actor: None,
        oidc: None,
        cli: false,
    }
}

#[test]
fn a_login_on_one_agent_is_a_login_on_every_agent_and_a_logout_ends_it_on_all() {
    let mut pg = PgServer::start();
    let url = pg.database("console");
    crate::pg::migrate(&url).unwrap();
    let (a, b) = (shared(&url), shared(&url));
    let (id, s) = a.open(ann()).unwrap();
    let on_b = b.get(&id).expect("B knows the session");
    assert_eq!(on_b.csrf, s.csrf);
    assert_eq!(on_b.user.name, "ann");
    assert_eq!(on_b.user.tenants, vec!["finance".to_owned()]);
    assert_eq!(on_b.user.role, Role::Approver);
    assert!(b.get("not-a-session").is_none());
    // A message left by one agent's action is shown once, by the other.
    a.flash(&id, "approved".into());
    assert_eq!(b.take_flash(&id).as_deref(), Some("approved"));
    assert_eq!(a.take_flash(&id), None);
    // Logged out through B: A no longer knows it.
    b.close(&id);
    assert!(a.get(&id).is_none(), "a logout on B ends the session on A");
    // The user's budget counts the sessions of every agent.
    let ids: Vec<String> = (0..MAX_PER_USER + 2)
        .map(|i| if i % 2 == 0 { &a } else { &b }.open(ann()).unwrap().0)
        .collect();
    assert!(a.get(&ids[0]).is_none(), "the oldest went");
    assert!(b.get(&ids[ids.len() - 1]).is_some());
    assert_eq!(a.count(), MAX_PER_USER);
    // The table holds digests, never a cookie.
    let rows = pg
        .psql(
            "console",
            "SELECT encode(digest, 'hex') FROM warden_console_sessions",
        )
        .unwrap();
    assert!(!rows.contains(&ids[ids.len() - 1]));
    // No database: no session, and no login.
    pg.stop();
    assert!(a.get(&ids[ids.len() - 1]).is_none());
    assert!(a.open(ann()).is_err());
    pg.run();
    assert!(
        a.get(&ids[ids.len() - 1]).is_some(),
        "back with the database"
    );
}
