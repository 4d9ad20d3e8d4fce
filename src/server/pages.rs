//! The requests that involve no session: greeting, `/info`, preflights and
//! the iframe page (PROTOCOL.md sections 1, 5, 6 and 7).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse};

use super::headers;
use crate::options::Options;
use crate::protocol::origin::OriginPolicy;

pub fn greeting() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(headers::TEXT_PLAIN.clone())
        .body("Welcome to SockJS!\n")
}

pub fn info(req: &HttpRequest, options: &Options) -> HttpResponse {
    let origins = serde_json::to_string(&options.origins.info_origins()).unwrap_or_default();
    let body = format!(
        r#"{{"websocket":{},"cookie_needed":{},"origins":{origins},"entropy":{}}}"#,
        options.transports.websocket,
        options.cookie_needed,
        entropy()
    );
    let mut builder = HttpResponse::Ok();
    builder.content_type("application/json; charset=UTF-8");
    headers::no_cache(&mut builder);
    headers::cors(&mut builder, req);
    builder.body(body)
}

/// A fresh, unpredictable integer in 0..2^32: a counter hashed with
/// randomly keyed SipHash (std seeds `RandomState` from the OS).
fn entropy() -> u32 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed)) as u32
}

pub fn preflight(req: &HttpRequest, allow: &'static str) -> HttpResponse {
    let mut builder = HttpResponse::NoContent();
    headers::cache_for_a_year(&mut builder);
    headers::cors(&mut builder, req);
    builder
        .insert_header((
            header::ACCESS_CONTROL_MAX_AGE,
            headers::ONE_YEAR_SECS.to_string(),
        ))
        .insert_header((header::ACCESS_CONTROL_ALLOW_METHODS, allow));
    if let Some(requested) = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .filter(|v| !v.is_empty())
    {
        builder.insert_header((header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone()));
    }
    builder.finish()
}

/// The iframe page, built once per service with its stable `ETag`.
pub struct IframePage {
    body: String,
    etag: String,
    frame_ancestors: Option<String>,
}

impl IframePage {
    pub fn new(sockjs_url: &str, origins: &OriginPolicy) -> Self {
        let body = IFRAME_TEMPLATE.replace("SOCKJS_URL", &escape_html_attribute(sockjs_url));
        // FNV-1a: the same body gives the same tag in every process and build.
        let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        IframePage {
            body,
            etag: format!("\"{hash:016x}\""),
            frame_ancestors: origins.frame_ancestors(),
        }
    }

    pub fn respond(&self, req: &HttpRequest) -> HttpResponse {
        let matches = req
            .headers()
            .get(header::IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|tag| tag.trim() == self.etag || tag.trim() == "*")
            });
        if matches {
            return HttpResponse::NotModified()
                .insert_header((header::ETAG, self.etag.clone()))
                .finish();
        }
        let mut builder = HttpResponse::Ok();
        builder.content_type(headers::HTML.clone());
        headers::cache_for_a_year(&mut builder);
        if let Some(policy) = &self.frame_ancestors {
            builder.insert_header((header::CONTENT_SECURITY_POLICY, policy.clone()));
        }
        builder
            .insert_header((header::ETAG, self.etag.clone()))
            .body(self.body.clone())
    }
}

const IFRAME_TEMPLATE: &str = r#"<!DOCTYPE html>
<html>
<head>
  <meta http-equiv="X-UA-Compatible" content="IE=edge" />
  <meta http-equiv="Content-Type" content="text/html; charset=UTF-8" />
  <script src="SOCKJS_URL"></script>
  <script>
    document.domain = document.domain;
    SockJS.bootstrap_iframe();
  </script>
</head>
<body>
  <h2>Don't panic!</h2>
  <p>This is a SockJS hidden iframe. It's used for cross domain magic.</p>
</body>
</html>"#;

fn escape_html_attribute(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iframe_url_is_attribute_escaped_and_etag_is_stable() {
        let page = IframePage::new(r#"/x.js?a=1&b="2"<>"#, &OriginPolicy::default());
        assert!(page
            .body
            .contains(r#"<script src="/x.js?a=1&amp;b=&quot;2&quot;&lt;&gt;"></script>"#));
        assert_eq!(
            page.etag,
            IframePage::new(r#"/x.js?a=1&b="2"<>"#, &OriginPolicy::default()).etag
        );
        assert_ne!(
            page.etag,
            IframePage::new("/y.js", &OriginPolicy::default()).etag
        );
    }

    #[test]
    fn entropy_changes() {
        let values: std::collections::HashSet<u32> = (0..100).map(|_| entropy()).collect();
        assert!(values.len() > 95);
    }
}
