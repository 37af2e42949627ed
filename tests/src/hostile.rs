//! `HostileServer`: a small HTTP/1.1 server on a loopback port that plays a host a registry
//! names but the operator does not control: object storage behind a blob redirect, an upload
//! `Location`, a `Link` page, a token realm, or a whole registry that answers what a test
//! scripts (endless listings, oversized answers, silence). It records every request it
//! receives, headers included, so a test can show what regferry sent it (credentials, above
//! all). It is not a registry: tests that need one use [`crate::TestRegistry`], with this
//! server only where the real registry cannot be made to misbehave.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;

use crate::server::{Handler, ServerThread, path_and_query, respond};

/// One request the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Every header, names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    /// How many body bytes arrived.
    pub body_len: usize,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Authorization` header, if the request carried one.
    pub fn authorization(&self) -> Option<&str> {
        self.header("authorization")
    }
}

/// What the server answers to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A status, headers and a body.
    Answer {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Say nothing for this long, then answer 504 (a silent upstream).
    Silence(Duration),
}

impl Reply {
    /// `status` with these headers and body.
    pub fn new(status: u16, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Self {
        Reply::Answer {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.into(),
        }
    }

    /// 200 with a JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Reply::new(
            200,
            &[("Content-Type", "application/json")],
            value.to_string(),
        )
    }
}

/// The script: a reply for each request, from the request and how many came before it.
pub type Script = dyn Fn(&Received, usize) -> Reply + Send + Sync;

/// A running hostile server; stops on drop.
pub struct HostileServer {
    server: ServerThread,
    log: Arc<Mutex<Vec<Received>>>,
}

impl std::fmt::Debug for HostileServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileServer")
            .field("addr", &self.server.addr())
            .finish()
    }
}

impl HostileServer {
    /// Starts a server that answers each request by `script`.
    pub fn start(script: impl Fn(&Received, usize) -> Reply + Send + Sync + 'static) -> Self {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script: Arc<Script> = Arc::new(script);
        let handler: Handler = {
            let log = log.clone();
            Arc::new(move |req, _conn| {
                let log = log.clone();
                let script = script.clone();
                Box::pin(async move {
                    let method = req.method().as_str().to_owned();
                    let path = path_and_query(&req);
                    let headers = req
                        .headers()
                        .iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().to_ascii_lowercase(),
                                String::from_utf8_lossy(v.as_bytes()).into_owned(),
                            )
                        })
                        .collect();
                    let body_len = match req.into_body().collect().await {
                        Ok(b) => b.to_bytes().len(),
                        Err(_) => 0,
                    };
                    let received = Received {
                        method,
                        path,
                        headers,
                        body_len,
                    };
                    let n = {
                        let mut l = log.lock().expect("hostile log");
                        l.push(received.clone());
                        l.len() - 1
                    };
                    match script(&received, n) {
                        Reply::Answer {
                            status,
                            headers,
                            body,
                        } => {
                            let h: Vec<(&str, &str)> = headers
                                .iter()
                                .map(|(k, v)| (k.as_str(), v.as_str()))
                                .collect();
                            respond(status, &h, body)
                        }
                        Reply::Silence(d) => {
                            tokio::time::sleep(d).await;
                            respond(504, &[], "silent")
                        }
                    }
                })
            })
        };
        HostileServer {
            server: ServerThread::spawn("hostile-server", handler),
            log,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        self.server.addr().to_string()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.host())
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.log.lock().expect("hostile log").clone()
    }
}
