//! The sockjs-client browser bundles the gateway carries, one per release
//! from 1.0.0 to 1.6.1 (MIT; licences and sources in `assets/sockjs-client/`),
//! and the iframe loader that picks among them.

use std::collections::HashSet;

use actix_web::{web, HttpRequest, HttpResponse};
use parking_lot::Mutex;

/// One sockjs-client release and its minified browser bundle.
#[derive(Debug, Clone, Copy)]
pub struct ClientRelease {
    /// The release, as its `SockJS.version` says it.
    pub version: &'static str,
    /// `sockjs.min.js` of that release, unchanged.
    pub bundle: &'static str,
}

macro_rules! release {
    ($version:literal) => {
        ClientRelease {
            version: $version,
            bundle: include_str!(concat!(
                "../assets/sockjs-client/sockjs-",
                $version,
                ".min.js"
            )),
        }
    };
}

/// Every release the gateway serves at `/lib/sockjs-VERSION.min.js`, oldest first.
pub static CLIENT_RELEASES: &[ClientRelease] = &[
    release!("1.0.0"),
    release!("1.0.1"),
    release!("1.0.2"),
    release!("1.0.3"),
    release!("1.1.0"),
    release!("1.1.1"),
    release!("1.1.2"),
    release!("1.1.4"),
    release!("1.1.5"),
    release!("1.2.0"),
    release!("1.3.0"),
    release!("1.4.0"),
    release!("1.5.0"),
    release!("1.5.1"),
    release!("1.5.2"),
    release!("1.6.0"),
    ClientRelease {
        version: LATEST_CLIENT_RELEASE,
        bundle: SOCKJS_CLIENT_JS,
    },
];

/// The release served at `/lib/sockjs.min.js`.
pub const LATEST_CLIENT_RELEASE: &str = "1.6.1";

/// sockjs-client 1.6.1's browser bundle, so pages need no CDN.
pub const SOCKJS_CLIENT_JS: &str = include_str!("../assets/sockjs-client/sockjs-1.6.1.min.js");

/// The iframe page's default client library: a stand-in for sockjs-client
/// that, once the parent page has named its release, loads that release's
/// bundle from beside itself and runs its `bootstrap_iframe()`.
pub const IFRAME_LOADER_JS: &str = include_str!("../assets/sockjs-iframe-loader.js");

fn latest() -> &'static ClientRelease {
    &CLIENT_RELEASES[CLIENT_RELEASES.len() - 1]
}

/// The bundle of `version`, if the gateway carries it.
pub fn client_release(version: &str) -> Option<&'static ClientRelease> {
    CLIENT_RELEASES.iter().find(|r| r.version == version)
}

/// Serves, under `/lib/`: `sockjs.min.js` (1.6.1), `sockjs-VERSION.min.js`
/// for every release in [`CLIENT_RELEASES`], and `sockjs-iframe-loader.js`,
/// which the iframe page of every service loads by default.
///
/// ```no_run
/// # use actix_web::App;
/// let app = App::new().service(sockjs_gateway::client_library());
/// ```
pub fn client_library() -> actix_web::Scope {
    // A scope: every request the router tries against it costs a prefix
    // comparison, where a bare `/lib/{file}` resource ran a regex on each.
    web::scope("/lib").service(
        web::resource("/{file}")
            .route(web::get().to(serve))
            .route(web::head().to(serve)),
    )
}

const YEAR: &str = "public, max-age=31536000, immutable";
// The loader's path is not versioned: a day's cache lets an upgrade reach
// browsers that cached it.
const DAY: &str = "public, max-age=86400";

async fn serve(req: HttpRequest) -> HttpResponse {
    let file = req.match_info().get("file").unwrap_or_default();
    let (body, cache) = match file {
        "sockjs.min.js" => (latest().bundle, YEAR),
        "sockjs-iframe-loader.js" => (IFRAME_LOADER_JS, DAY),
        _ => match file
            .strip_prefix("sockjs-")
            .and_then(|rest| rest.strip_suffix(".min.js"))
        {
            Some(version) => match client_release(version) {
                Some(release) => (release.bundle, YEAR),
                None => return not_carried(version),
            },
            None => return HttpResponse::NotFound().body("Not found"),
        },
    };
    HttpResponse::Ok()
        .content_type("application/javascript; charset=UTF-8")
        .insert_header(("Cache-Control", cache))
        .body(body)
}

/// A release the gateway does not carry (a future one, a fork's): `404`, so
/// the iframe loader falls back to 1.6.1 and the client reports the mismatch
/// itself. Logged once per version, for the first 64 versions asked for.
fn not_carried(version: &str) -> HttpResponse {
    static LOGGED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let first_time = {
        let mut logged = LOGGED.lock();
        let logged = logged.get_or_insert_with(HashSet::new);
        logged.len() < 64 && logged.insert(version.to_owned())
    };
    if first_time {
        log::info!(
            "a page asked for sockjs-client {version:?}, which is not bundled here \
             (bundled: {} to {LATEST_CLIENT_RELEASE}); its iframe falls back to {LATEST_CLIENT_RELEASE}",
            CLIENT_RELEASES[0].version
        );
    }
    HttpResponse::NotFound()
        .content_type("text/plain; charset=UTF-8")
        .body(format!(
            "sockjs-client {version} is not bundled here; bundled: {}\n",
            CLIENT_RELEASES
                .iter()
                .map(|r| r.version)
                .collect::<Vec<_>>()
                .join(", ")
        ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bundle_reports_its_own_version() {
        for release in CLIENT_RELEASES {
            let header = format!("/* sockjs-client v{} |", release.version);
            assert!(
                release.bundle.starts_with(&header),
                "{}: header",
                release.version
            );
            assert_eq!(
                release
                    .bundle
                    .matches(&format!("\"{}\"", release.version))
                    .count(),
                1,
                "{}: the bundle's version string",
                release.version
            );
            assert!(
                release.bundle.contains("bootstrap_iframe"),
                "{}",
                release.version
            );
        }
    }

    #[test]
    fn releases_are_oldest_first_and_end_with_the_latest() {
        let versions: Vec<Vec<u32>> = CLIENT_RELEASES
            .iter()
            .map(|r| r.version.split('.').map(|n| n.parse().unwrap()).collect())
            .collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(
            CLIENT_RELEASES.last().unwrap().version,
            LATEST_CLIENT_RELEASE
        );
        assert_eq!(CLIENT_RELEASES.len(), 17);
        assert_eq!(
            client_release(LATEST_CLIENT_RELEASE).unwrap().bundle,
            SOCKJS_CLIENT_JS
        );
    }
}
