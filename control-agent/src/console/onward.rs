//! Answers that move the browser on: a page that goes on to another
//! place by itself (after a form's POST, the console's `form-action
//! 'self'` would stop a redirect to another site), the page that sends it
//! to sign in again, and a cookie set on an answer. The sign-in pages and
//! the consent pages both use them.

use http::{HeaderValue, StatusCode};

use super::{html, Resp};

/// `s` as HTML text or an attribute's value.
pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// A page that moves on to `to` by itself (`what` says where). After a
/// form's POST this is how the browser reaches the provider: the console's
/// `form-action 'self'` would stop a redirect there.
pub(crate) fn onward_to(to: &str, what: &str) -> Resp {
    let (to, what) = (escape(to), escape(what));
    html(
        StatusCode::OK,
        format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"0;url={to}\">\
             <title>{what}</title><link rel=\"stylesheet\" href=\"/console/static/console.css\"></head>\
             <body><main><p id=\"onward\">{what}: <a href=\"{to}\">continue</a>.</p></main></body></html>"
        ),
    )
}

/// The page that sends the browser to sign in again (`mode`), back to
/// `next` after.
pub(crate) fn again(mode: &str, next: &str) -> Resp {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("mode", mode).append_pair("next", next);
    onward_to(
        &format!("/console/oidc/start?{}", q.finish()),
        "Signing in again at the identity provider",
    )
}

pub(crate) fn with_cookie(mut r: Resp, cookie: &str) -> Resp {
    if let Ok(v) = HeaderValue::from_str(cookie) {
        r.headers_mut().append("set-cookie", v);
    }
    r
}
