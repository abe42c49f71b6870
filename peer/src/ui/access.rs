//! Who may do what on the page's server. Looking (GET, HEAD) is for anyone who can
//! reach it: the server binds loopback unless `--ui-listen` says otherwise. Anything
//! else from another host is refused unless `--ui-listen` opened the page; pausing
//! the volunteer and starting jobs (uploads included) are for this machine only.
//! Every request that changes something must also carry the header
//! [`ACTION_HEADER`]: a web page from elsewhere open in this machine's browser cannot
//! add it without a CORS preflight, which this server never grants. And while the
//! page is not opened to the network, a request from this machine must name a
//! loopback host (`localhost`, `127.0.0.1`, `[::1]`): a foreign site that points its
//! own name at 127.0.0.1 (DNS rebinding) gets nothing, not even the GET pages.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The header every non-GET request must carry (any value).
pub const ACTION_HEADER: &str = "x-idlegrid";

/// The server's rules.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// Opened to the network by `--ui-listen`.
    pub open: bool,
}

/// Paths only this machine may use with a method other than GET.
fn owner_only(path: &str) -> bool {
    path == "/api/pause"
        || path == "/api/resume"
        || path == "/api/jobs"
        || path.starts_with("/api/uploads/")
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// Why a request is refused, or None if it may go on.
pub fn refusal(rules: Rules, method: &Method, path: &str, from: IpAddr) -> Option<&'static str> {
    if method == Method::GET || method == Method::HEAD {
        return None;
    }
    if is_loopback(from) {
        return None;
    }
    if owner_only(path) {
        return Some("only this machine may do that (from 127.0.0.1)");
    }
    if !rules.open {
        return Some("this page takes only GET requests from other hosts (see --ui-listen)");
    }
    None
}

/// Whether a `Host` header names this machine's loopback (port aside).
pub fn loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.split(':').next().unwrap_or(""),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The middleware applying [`refusal`], the [`ACTION_HEADER`] check and, on a page
/// not opened to the network, the loopback `Host` check.
pub async fn check(
    State(rules): State<Rules>,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    if !rules.open && is_loopback(from.ip()) {
        let host = request
            .headers()
            .get(axum::http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !loopback_host(host) {
            tracing::warn!("web page: refused a request for host {host:?} (DNS rebinding?)");
            return (
                StatusCode::FORBIDDEN,
                "this page answers only to localhost or 127.0.0.1",
            )
                .into_response();
        }
    }
    if let Some(why) = refusal(rules, &method, request.uri().path(), from.ip()) {
        tracing::warn!(
            "web page: refused {method} {} from {from}: {why}",
            request.uri().path()
        );
        return (StatusCode::FORBIDDEN, why).into_response();
    }
    if method != Method::GET
        && method != Method::HEAD
        && !request.headers().contains_key(ACTION_HEADER)
    {
        return (
            StatusCode::FORBIDDEN,
            "requests that change something must carry the X-Idlegrid header",
        )
            .into_response();
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules() {
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        let me: IpAddr = "127.0.0.1".parse().unwrap();
        let closed = Rules { open: false };
        let open = Rules { open: true };
        assert!(refusal(closed, &Method::GET, "/api/state", lan).is_none());
        assert!(refusal(closed, &Method::POST, "/api/pause", me).is_none());
        assert!(refusal(closed, &Method::POST, "/api/jobs", me).is_none());
        assert!(refusal(closed, &Method::POST, "/api/other", lan).is_some());
        assert!(refusal(open, &Method::POST, "/api/other", lan).is_none());
        for rules in [closed, open] {
            assert!(refusal(rules, &Method::POST, "/api/pause", lan).is_some());
            assert!(refusal(rules, &Method::POST, "/api/resume", lan).is_some());
            assert!(refusal(rules, &Method::POST, "/api/jobs", lan).is_some());
            assert!(refusal(rules, &Method::PUT, "/api/uploads/before", lan).is_some());
        }
        assert!(loopback_host("127.0.0.1:7878"));
        assert!(loopback_host("localhost:7878"));
        assert!(loopback_host("LOCALHOST"));
        assert!(loopback_host("[::1]:7878"));
        assert!(loopback_host("127.1.2.3"));
        assert!(!loopback_host("evil.example:7878"));
        assert!(!loopback_host("192.0.2.7:7878"));
        assert!(!loopback_host(""));
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(refusal(closed, &Method::POST, "/api/pause", mapped).is_none());
    }
}
