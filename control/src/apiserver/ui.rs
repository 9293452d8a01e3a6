//! The dashboard's page (`/ui/`): static files built into the binary (`control/ui/`: plain
//! HTML, CSS and ES modules, no build step). They carry no data and need no credentials;
//! everything the page shows it asks the API for with the signed-in bearer token, so the API's
//! authentication and RBAC decide what it sees and may do.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

/// (path under /ui/, content type, contents)
const FILES: &[(&str, &str, &str)] = &[
    ("", "text/html; charset=utf-8", include_str!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("logic.js", "text/javascript; charset=utf-8", include_str!("../../ui/logic.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
];

/// The bytes the dashboard adds to the binary.
pub fn size() -> usize {
    FILES.iter().map(|(_, _, body)| body.len()).sum()
}

pub async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

pub async fn index() -> Response {
    file("")
}

pub async fn asset(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    file(&name)
}

fn file(name: &str) -> Response {
    let Some((_, ty, body)) = FILES.iter().find(|(n, _, _)| *n == name) else {
        return (StatusCode::NOT_FOUND, "no such file in the dashboard\n").into_response();
    };
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    // Always the binary's own version (an upgrade must not leave a stale page behind).
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
        ),
    );
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_names_only_files_that_are_served() {
        let index = super::FILES[0].2;
        for (name, _, _) in &super::FILES[1..] {
            if *name != "logic.js" {
                assert!(index.contains(&format!("/ui/{name}")), "{name}");
            }
        }
        assert!(super::FILES[1].2.contains("from \"./logic.js\""));
        assert!(super::size() < 100_000, "{}", super::size());
    }
}
