//! The governance pages' and actions' handlers (their routes are in
//! [`crate::server::routes`], behind [`ConsoleAccess::Governor`]): each
//! takes the administrator ([`Governing`]) and the path's tenant or server
//! as the path spells it, checks the name (404 when it is none) and, for
//! an action, that the administrator may change it (403, recorded), then
//! calls the page or action of [`super::governance`].
//!
//! [`ConsoleAccess::Governor`]: crate::console::gate::ConsoleAccess::Governor

use std::sync::Arc;

use axum::extract;
use http::{StatusCode, Uri};

use super::gate::{Flash, Form, Governing, LoggedIn, PathServer, PathTenant, Query};
use super::{plain, Resp};
use crate::admins::{tenant_name, Actor};
use crate::registry::valid_server;
use crate::server::Api;

/// The agent's state, as the console's handlers take it.
type Agent = extract::State<Arc<Api>>;

/// `GET /console/tenants`: each tenant's layer the administrator reads.
pub(crate) async fn tenants(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    Flash(flash): Flash,
) -> Resp {
    api.tenants_page(&who.session, &actor, flash)
}

/// `GET /console/tenants/{t}/diff?a=…&b=…`: two revisions of a layer.
pub(crate) async fn layer_diff(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    Flash(flash): Flash,
    PathTenant(t): PathTenant,
    Query(q): Query,
) -> Resp {
    let (a, b) = (
        q.get("a").cloned().unwrap_or_default(),
        q.get("b").cloned().unwrap_or_default(),
    );
    api.layer_diff_page(&who.session, &actor, flash, &t, &a, &b)
        .await
}

/// `POST /console/tenants/{t}/publish`: a layer typed in the console.
pub(crate) async fn tenant_publish(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathTenant(raw): PathTenant,
    uri: Uri,
    Form(form): Form,
) -> Resp {
    match api.writable(&who, &actor, &raw, uri.path()) {
        Ok(t) => api.layer_publish(&who.session, &who.sid, &t, &form).await,
        Err(r) => r,
    }
}

/// `POST /console/tenants/{t}/rollback`: a layer to an earlier revision.
pub(crate) async fn tenant_rollback(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathTenant(raw): PathTenant,
    uri: Uri,
    form: Form,
) -> Resp {
    match api.writable(&who, &actor, &raw, uri.path()) {
        Ok(t) => {
            let field = |k: &str| form.field(k);
            api.layer_action(&who.session, &who.sid, &t, "rollback", field)
                .await
        }
        Err(r) => r,
    }
}

/// `POST /console/tenants/{t}/canary`: a layer's canary promoted or rolled back.
pub(crate) async fn tenant_canary(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathTenant(raw): PathTenant,
    uri: Uri,
    form: Form,
) -> Resp {
    match api.writable(&who, &actor, &raw, uri.path()) {
        Ok(t) => {
            let field = |k: &str| form.field(k);
            api.layer_action(&who.session, &who.sid, &t, "canary", field)
                .await
        }
        Err(r) => r,
    }
}

/// `GET /console/registry`: the servers the administrator reads.
pub(crate) async fn registry(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    Flash(flash): Flash,
) -> Resp {
    api.registry_page(&who.session, &actor, flash)
}

/// `GET /console/registry/{s}`: one server, its tools and its life.
pub(crate) async fn server(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    Flash(flash): Flash,
    PathServer(server): PathServer,
) -> Resp {
    if !valid_server(&server) {
        return plain(StatusCode::NOT_FOUND, "no such page");
    }
    api.server_page(&who.session, &actor, flash, &server)
}

/// `POST /console/registry/{s}/move`: a step of the server's lifecycle.
pub(crate) async fn server_move(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathServer(server): PathServer,
    uri: Uri,
    form: Form,
) -> Resp {
    api.server_action(&who, &actor, &server, uri.path(), "move", &form)
        .await
}

/// `POST /console/registry/{s}/share`: sharing asked for.
pub(crate) async fn server_share(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathServer(server): PathServer,
    uri: Uri,
    form: Form,
) -> Resp {
    api.server_action(&who, &actor, &server, uri.path(), "share", &form)
        .await
}

/// `POST /console/registry/{s}/approve-share`: sharing approved.
pub(crate) async fn server_approve_share(
    extract::State(api): Agent,
    who: LoggedIn,
    Governing(actor): Governing,
    PathServer(server): PathServer,
    uri: Uri,
    form: Form,
) -> Resp {
    api.server_action(&who, &actor, &server, uri.path(), "approve-share", &form)
        .await
}

impl Api {
    /// The tenant a `/console/tenants/{t}/…` action names, when `actor`
    /// may change its layer: 404 for no tenant name, 403 (recorded) for
    /// another tenant's.
    fn writable(
        &self,
        who: &LoggedIn,
        actor: &Actor,
        raw: &str,
        path: &str,
    ) -> Result<String, Resp> {
        let Ok(t) = tenant_name(raw) else {
            return Err(plain(StatusCode::NOT_FOUND, "no such tenant"));
        };
        if !actor.writes(&t) {
            return Err(self.forbidden(
                &who.session.user,
                path,
                &format!("tenant `{t}`'s layer is not {}'s to change", actor.name),
            ));
        }
        Ok(t)
    }

    /// A registry action on `server`: 404 for no server name, refused
    /// (403, recorded) for another tenant's server before anything is
    /// asked of the registry.
    async fn server_action(
        &self,
        who: &LoggedIn,
        actor: &Actor,
        server: &str,
        path: &str,
        op: &str,
        form: &Form,
    ) -> Resp {
        if !valid_server(server) {
            return plain(StatusCode::NOT_FOUND, "no such action");
        }
        if let Err(r) = self.readable_server(&who.session, actor, path, server) {
            return r;
        }
        let field = |k: &str| form.field(k);
        self.registry_action(&who.session, &who.sid, actor, server, op, field)
            .await
    }
}
