//! Routing: method + path patterns with `:params`, answering 404 for
//! unknown paths and 405 (with `Allow`) for known paths with another method.

/// Captured `:params`, in pattern order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The parameter's value, when the route has it.
    pub fn find(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    }
}

pub struct Route<H> {
    pub method: &'static str,
    pub pattern: &'static str,
    pub handler: H,
}

pub enum Match<'r, H> {
    Found(&'r Route<H>, Params),
    /// The path exists with other methods (for `Allow`).
    MethodNotAllowed(Vec<&'static str>),
    NotFound,
}

pub struct Router<H> {
    routes: Vec<Route<H>>,
}

impl<H> Default for Router<H> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<H> Router<H> {
    pub fn add(&mut self, method: &'static str, pattern: &'static str, handler: H) {
        self.routes.push(Route {
            method,
            pattern,
            handler,
        });
    }

    /// Every route, in the order added.
    pub fn routes(&self) -> &[Route<H>] {
        &self.routes
    }

    pub fn find(&self, method: &str, path: &str) -> Match<'_, H> {
        let mut allowed = Vec::new();
        for route in &self.routes {
            if let Some(params) = match_pattern(route.pattern, path) {
                if route.method == method {
                    return Match::Found(route, params);
                }
                allowed.push(route.method);
            }
        }
        if allowed.is_empty() {
            Match::NotFound
        } else {
            Match::MethodNotAllowed(allowed)
        }
    }
}

/// Matches `/api/servers/:server` against a path; literal segments exactly,
/// `:name` any non-empty segment. A trailing slash is not a match, as in Wings.
fn match_pattern(pattern: &'static str, path: &str) -> Option<Params> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(Params(params)),
            (Some(p), Some(s)) => {
                if let Some(name) = p.strip_prefix(':') {
                    if s.is_empty() {
                        return None;
                    }
                    params.push((name, s.to_string()));
                } else if p != s {
                    return None;
                }
            }
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn router() -> Router<u32> {
        let mut r = Router::default();
        r.add("GET", "/api/servers", 1);
        r.add("GET", "/api/servers/:server", 2);
        r.add("DELETE", "/api/servers/:server", 3);
        r.add("POST", "/api/servers/:server/transfer", 4);
        r.add("POST", "/api/transfers/cancel", 5);
        r.add("DELETE", "/api/transfers/:server", 6);
        r
    }

    fn found(r: &Router<u32>, m: &str, p: &str) -> Option<(u32, Params)> {
        match r.find(m, p) {
            Match::Found(route, params) => Some((route.handler, params)),
            _ => None,
        }
    }

    #[test]
    fn matches_literals_and_params() {
        let r = router();
        assert_eq!(found(&r, "GET", "/api/servers").unwrap().0, 1);
        let (h, p) = found(&r, "GET", "/api/servers/abc").unwrap();
        assert_eq!((h, p.get("server")), (2, "abc"));
        assert_eq!(found(&r, "DELETE", "/api/servers/abc").unwrap().0, 3);
        assert_eq!(
            found(&r, "POST", "/api/servers/x/transfer")
                .unwrap()
                .1
                .get("server"),
            "x"
        );
        // The literal route wins because it is registered first.
        assert_eq!(found(&r, "POST", "/api/transfers/cancel").unwrap().0, 5);
        assert_eq!(found(&r, "DELETE", "/api/transfers/u1").unwrap().0, 6);
        assert_eq!(
            found(&r, "GET", "/api/servers/abc")
                .unwrap()
                .1
                .get("missing"),
            ""
        );
    }

    #[test]
    fn not_found_and_method_not_allowed() {
        let r = router();
        assert!(matches!(r.find("GET", "/nope"), Match::NotFound));
        assert!(matches!(r.find("GET", "/api/servers/"), Match::NotFound));
        assert!(matches!(
            r.find("GET", "/api/servers/a/b/c"),
            Match::NotFound
        ));
        assert!(matches!(
            r.find("GET", "/api/servers//transfer"),
            Match::NotFound
        ));
        match r.find("PUT", "/api/servers/a") {
            Match::MethodNotAllowed(m) => assert_eq!(m, vec!["GET", "DELETE"]),
            _ => panic!("expected 405"),
        }
    }
}
