//! Headers many responses share (PROTOCOL.md sections 7 and 8).

use std::time::{Duration, SystemTime};

use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue, HttpDate};
use actix_web::{HttpRequest, HttpResponseBuilder};

// Header values built once: a `&str` is checked and copied into a new
// buffer on every response.
pub static NO_CACHE: HeaderValue =
    HeaderValue::from_static("no-store, no-cache, no-transform, must-revalidate, max-age=0");
pub const ONE_YEAR_SECS: u64 = 31_536_000;
pub static TEXT_PLAIN: HeaderValue = HeaderValue::from_static("text/plain; charset=UTF-8");
pub static JAVASCRIPT: HeaderValue =
    HeaderValue::from_static("application/javascript; charset=UTF-8");
pub static HTML: HeaderValue = HeaderValue::from_static("text/html; charset=UTF-8");
pub static X_ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
static NO: HeaderValue = HeaderValue::from_static("no");
static NOSNIFF: HeaderValue = HeaderValue::from_static("nosniff");
static TRUE: HeaderValue = HeaderValue::from_static("true");
static ANY: HeaderValue = HeaderValue::from_static("*");
static ORIGIN: HeaderValue = HeaderValue::from_static("Origin");

/// `X-Accel-Buffering: no`, which tells nginx and similar proxies not to
/// buffer a streaming response.
pub fn no_proxy_buffering(builder: &mut HttpResponseBuilder) {
    builder.insert_header((X_ACCEL_BUFFERING.clone(), NO.clone()));
}

/// `X-Content-Type-Options: nosniff`.
pub fn nosniff(builder: &mut HttpResponseBuilder) {
    builder.insert_header((header::X_CONTENT_TYPE_OPTIONS, NOSNIFF.clone()));
}

/// Forbids every cache on the way.
pub fn no_cache(builder: &mut HttpResponseBuilder) {
    builder.insert_header((header::CACHE_CONTROL, NO_CACHE.clone()));
}

/// Lets every cache keep the response for a year.
pub fn cache_for_a_year(builder: &mut HttpResponseBuilder) {
    let expires = HttpDate::from(SystemTime::now() + Duration::from_secs(ONE_YEAR_SECS));
    builder
        .insert_header((
            header::CACHE_CONTROL,
            format!("public, max-age={ONE_YEAR_SECS}"),
        ))
        .insert_header((header::EXPIRES, expires.to_string()));
}

/// CORS for the XHR transports and `/info`: the request's origin echoed with
/// credentials (the string `null` too), or `*` without credentials.
pub fn cors(builder: &mut HttpResponseBuilder, req: &HttpRequest) {
    match req.headers().get(header::ORIGIN) {
        Some(origin) => {
            builder
                .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()))
                .insert_header((header::ACCESS_CONTROL_ALLOW_CREDENTIALS, TRUE.clone()));
        }
        None => {
            builder.insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, ANY.clone()));
        }
    }
    builder.insert_header((header::VARY, ORIGIN.clone()));
}

/// `JSESSIONID=VALUE; path=/`, with the request's own value or `dummy`.
/// Over TLS it also carries `SameSite=None; Secure`: the SockJS client may
/// run on another site (browsers send a cross-site cookie only when it says
/// `SameSite=None`, which they accept only with `Secure`). Whether the
/// request came over TLS is what actix served it with, never a header a
/// client or proxy could set.
pub fn set_jsessionid(headers: &mut HeaderMap, req: &HttpRequest) {
    let value = request_cookie(req, "JSESSIONID").unwrap_or_else(|| "dummy".to_owned());
    let cookie = jsessionid_cookie(&value, req.app_config().secure());
    if let Ok(cookie) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, cookie);
    }
}

fn jsessionid_cookie(value: &str, over_tls: bool) -> String {
    if over_tls {
        format!("JSESSIONID={value}; path=/; SameSite=None; Secure")
    } else {
        format!("JSESSIONID={value}; path=/")
    }
}

pub fn request_cookie(req: &HttpRequest, name: &str) -> Option<String> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty() && is_cookie_value(value))
        .map(|(_, value)| value.to_owned())
}

/// RFC 6265 cookie-octets, so an echoed value cannot inject attributes.
fn is_cookie_value(value: &str) -> bool {
    value.bytes().all(|b| {
        b == 0x21
            || (0x23..=0x2b).contains(&b)
            || (0x2d..=0x3a).contains(&b)
            || (0x3c..=0x5b).contains(&b)
            || (0x5d..=0x7e).contains(&b)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_jsessionid_cookie_is_cross_site_and_secure_over_tls_only() {
        assert_eq!(jsessionid_cookie("abc", false), "JSESSIONID=abc; path=/");
        assert_eq!(
            jsessionid_cookie("abc", true),
            "JSESSIONID=abc; path=/; SameSite=None; Secure"
        );
    }
}
