//! `WWW-Authenticate` challenges (RFC 7235) and `Link` headers (RFC 8288), the two header
//! grammars the distribution protocol relies on.
use std::collections::BTreeMap;

/// One authentication challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Challenge {
    /// Lower-cased scheme: `bearer` or `basic`.
    pub(crate) scheme: String,
    /// Parameters with lower-cased names (`realm`, `service`, `scope`, `error`).
    pub(crate) params: BTreeMap<String, String>,
}

/// Parses a `WWW-Authenticate` value, which may hold several challenges.
pub(crate) fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut p = Parser {
        s: header.as_bytes(),
        i: 0,
    };
    loop {
        p.skip_ws_and_commas();
        let Some(token) = p.token() else { break };
        p.skip_ws();
        // `token=` starts a parameter of the current challenge; a bare token starts a new one.
        if p.peek() == Some(b'=') {
            p.i += 1;
            p.skip_ws();
            let value = p.value();
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
            continue;
        }
        out.push(Challenge {
            scheme: token.to_ascii_lowercase(),
            params: BTreeMap::new(),
        });
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn skip_ws_and_commas(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
    }

    fn token(&mut self) -> Option<String> {
        let is_tchar = |c: u8| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/".contains(&c);
        // Skip bytes that cannot start a token, so that garbage cannot stall the parser.
        while let Some(c) = self.peek() {
            if is_tchar(c) {
                break;
            }
            self.i += 1;
        }
        let start = self.i;
        while self.peek().is_some_and(is_tchar) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    fn value(&mut self) -> String {
        if self.peek() == Some(b'"') {
            self.i += 1;
            let mut out = Vec::new();
            while let Some(c) = self.peek() {
                self.i += 1;
                match c {
                    b'\\' => {
                        if let Some(n) = self.peek() {
                            out.push(n);
                            self.i += 1;
                        }
                    }
                    b'"' => break,
                    c => out.push(c),
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        } else {
            let start = self.i;
            while let Some(c) = self.peek() {
                if c == b',' || c == b' ' || c == b'\t' {
                    break;
                }
                self.i += 1;
            }
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
        }
    }
}

/// The target of `rel="next"` in a `Link` header, if any.
pub(crate) fn next_link(header: &str) -> Option<String> {
    for part in split_links(header) {
        let part = part.trim();
        let Some(rest) = part.strip_prefix('<') else {
            continue;
        };
        let Some((target, params)) = rest.split_once('>') else {
            continue;
        };
        let is_next = params.split(';').any(|p| {
            let p = p.trim();
            match p.split_once('=') {
                Some((k, v)) if k.trim().eq_ignore_ascii_case("rel") => v
                    .trim()
                    .trim_matches('"')
                    .split_whitespace()
                    .any(|r| r.eq_ignore_ascii_case("next")),
                _ => false,
            }
        });
        if is_next {
            return Some(target.to_owned());
        }
    }
    None
}

// Links are comma-separated, but a URL may contain commas inside <...>.
fn split_links(header: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in header.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            ',' if depth <= 0 => {
                parts.push(&header[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&header[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bearer_and_basic_challenges() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:samalba/my-app:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.docker.io/token");
        assert_eq!(c[0].params["scope"], "repository:samalba/my-app:pull,push");
        let c = parse_challenges(
            r#"Basic realm="Registry Realm", Bearer realm="https://x/t", error="insufficient_scope""#,
        );
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[1].params["error"], "insufficient_scope");
        let c = parse_challenges(r#"Bearer realm="a\"b",service=plain"#);
        assert_eq!(c[0].params["realm"], "a\"b");
        assert_eq!(c[0].params["service"], "plain");
    }

    #[test]
    fn next_links() {
        assert_eq!(
            next_link(r#"</v2/_catalog?last=b&n=2>; rel="next""#).as_deref(),
            Some("/v2/_catalog?last=b&n=2")
        );
        assert_eq!(
            next_link(r#"<https://r/v2/x/tags/list?n=1,2>; rel="prev", </v2/x/tags/list?last=9>; rel=next"#).as_deref(),
            Some("/v2/x/tags/list?last=9")
        );
        assert_eq!(next_link(r#"</a>; rel="last""#), None);
        assert_eq!(next_link("garbage"), None);
    }

    proptest! {
        #[test]
        fn never_panic(s in "\\PC{0,120}") {
            let _ = parse_challenges(&s);
            let _ = next_link(&s);
        }

        #[test]
        fn quoted_values_round_trip(v in "[ -~]{0,40}") {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            let c = parse_challenges(&format!("Bearer realm=\"{escaped}\",service=s"));
            prop_assert_eq!(&c[0].params["realm"], &v);
            prop_assert_eq!(&c[0].params["service"], "s");
        }
    }
}
