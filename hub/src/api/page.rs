//! The operators' page (command centre): one self-contained HTML file compiled into the binary
//! and served at `/`. It holds no data and needs no token to load; it asks for a bearer token and
//! calls the JSON API with it, like any other client, and follows `/api/stream` for live updates.
//!
//! The Content-Security-Policy admits exactly the page's own inline script and style, by their
//! SHA-256 (computed once from the compiled-in file, so editing the page cannot forget to update
//! it), and network calls to this origin only: text that reaches the page from the API cannot
//! bring code or send data elsewhere even if a bug let it into the DOM as markup.

use axum::http::{header, HeaderValue};
use axum::response::IntoResponse;
use base64::Engine;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

const PAGE: &str = include_str!("../../assets/operators.html");

/// The text of the page's one `<tag>` element.
fn inline(tag: &str) -> &'static str {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = PAGE
        .find(&open)
        .unwrap_or_else(|| panic!("operators.html has no <{tag}> element"))
        + open.len();
    let len = PAGE[start..]
        .find(&close)
        .unwrap_or_else(|| panic!("operators.html: <{tag}> is not closed"));
    &PAGE[start..start + len]
}

fn sha256(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
}

static CSP: LazyLock<HeaderValue> = LazyLock::new(|| {
    let policy = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; connect-src 'self'; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        sha256(inline("script")),
        sha256(inline("style")),
    );
    HeaderValue::from_str(&policy).expect("the policy is ASCII")
});

pub async fn operators() -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, CSP.clone()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // The page changes with the binary; a browser must not keep an old one.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        PAGE,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_names_one_script_and_one_style() {
        assert_eq!(PAGE.matches("<script").count(), 1);
        assert_eq!(PAGE.matches("<style").count(), 1);
        assert!(inline("script").contains("sessionStorage"));
        let csp = CSP.to_str().unwrap();
        assert!(csp.contains("script-src 'sha256-"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
    }
}
