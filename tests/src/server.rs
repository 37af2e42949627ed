//! A small HTTP/1.1 server on a loopback port, running on its own thread and tokio runtime, so
//! the token issuer and the fault proxy work the same from `#[test]` and `#[tokio::test]` (even
//! with paused time: the caller's runtime is never used).

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::pin::Pin;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, oneshot};

/// Any error a body can end with.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The response body type of the harness servers.
pub(crate) type Body = UnsyncBoxBody<Bytes, BoxError>;
/// The boxed future a handler returns.
pub(crate) type HandlerFuture = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;
/// A request handler; gets the connection it arrived on so a fault can end that connection.
pub(crate) type Handler = Arc<dyn Fn(Request<Incoming>, Arc<Conn>) -> HandlerFuture + Send + Sync>;

/// A request's path and query (`/v2/app/tags/list?n=10`), `/` when it has none.
pub(crate) fn path_and_query<B>(req: &hyper::Request<B>) -> String {
    req.uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned())
}

/// A body with these bytes.
pub(crate) fn full(data: impl Into<Bytes>) -> Body {
    Full::new(data.into())
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// A response with a status, headers and a body.
pub(crate) fn respond(
    status: u16,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut builder = Response::builder().status(status);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    builder
        .body(full(body))
        .unwrap_or_else(|_| Response::new(full("bad injected response")))
}

/// One accepted connection, as seen by a handler: it can be closed or reset from inside a
/// response body.
#[derive(Debug)]
pub(crate) struct Conn {
    /// A duplicate of the accepted socket's descriptor: it keeps the socket open until the
    /// connection task has dropped hyper's copy, and lets `reset` set `SO_LINGER` 0 on it.
    socket: StdStream,
    end: Notify,
}

impl Conn {
    /// Ends the connection: with `rst`, by a TCP reset (`SO_LINGER` 0 before the last close),
    /// otherwise by an orderly close (FIN) without finishing the response.
    pub(crate) fn end(&self, rst: bool) {
        if rst {
            let _ = socket2::SockRef::from(&self.socket).set_linger(Some(Duration::ZERO));
        }
        self.end.notify_one();
    }
}

/// A running server; stops (and joins its thread) on drop.
#[derive(Debug)]
pub(crate) struct ServerThread {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Binds `127.0.0.1:0` now (so the address is known and taken before this returns) and
    /// serves `handler` on a new thread named `name`.
    pub(crate) fn spawn(name: &str, handler: Handler) -> Self {
        let listener = StdListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("set_nonblocking on listener");
        let addr = listener.local_addr().expect("listener address");
        let (tx, rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build server runtime");
                rt.block_on(accept_loop(listener, handler, rx));
                // Dropping the runtime cancels the connection tasks still running.
                rt.shutdown_timeout(Duration::from_secs(1));
            })
            .expect("spawn server thread");
        Self {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    /// `127.0.0.1:PORT`.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(listener: StdListener, handler: Handler, mut shutdown: oneshot::Receiver<()>) {
    let listener = tokio::net::TcpListener::from_std(listener).expect("register listener");
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                if let Ok((tcp, _)) = accepted {
                    tokio::spawn(serve_conn(tcp, handler.clone()));
                }
            }
        }
    }
}

async fn serve_conn(tcp: tokio::net::TcpStream, handler: Handler) {
    let _ = tcp.set_nodelay(true);
    let Ok(std) = tcp.into_std() else { return };
    let Ok(socket) = std.try_clone() else { return };
    let Ok(tcp) = tokio::net::TcpStream::from_std(std) else {
        return;
    };
    let conn = Arc::new(Conn {
        socket,
        end: Notify::new(),
    });
    let svc = {
        let conn = conn.clone();
        service_fn(move |req| {
            let fut = handler(req, conn.clone());
            async move { Ok::<_, Infallible>(fut.await) }
        })
    };
    let http = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tcp), svc);
    tokio::select! {
        _ = http => {}
        _ = conn.end.notified() => {}
    }
    // Both futures are gone here, so hyper's descriptor is closed; the last one closes with
    // `conn`, once any response body still holding it is dropped too.
}
