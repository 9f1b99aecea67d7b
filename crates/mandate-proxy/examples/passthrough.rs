//! A bare pass-through proxy for the benchmarks: the floor of the stack the
//! Mandate proxy is built on (tokio, hyper, hyper-util's pooled client;
//! one single-threaded runtime per thread, `SO_REUSEPORT` listeners), doing
//! none of Mandate's work. It adds a static `Authorization` header and
//! forwards, as the nginx static-header proxy in `bench/run_proxy.py` does.
//! Not a product: no timeouts, no header hygiene, no limits.
//!
//!     cargo run --release -p mandate-proxy --example passthrough -- \
//!         127.0.0.1:8500 http://127.0.0.1:18081 [THREADS]

use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use std::net::SocketAddr;
use std::sync::Arc;

type Upstream = Client<HttpConnector, Incoming>;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(listen), Some(upstream)) = (args.first(), args.get(1)) else {
        eprintln!("usage: passthrough LISTEN_ADDR UPSTREAM_BASE_URL [THREADS]");
        std::process::exit(2);
    };
    let listen: SocketAddr = listen.parse().map_err(std::io::Error::other)?;
    let base: Arc<str> = upstream.trim_end_matches('/').into();
    let threads = match args.get(2) {
        Some(n) => n.parse().map_err(std::io::Error::other)?,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let listener = reuse_port_listener(listen)?;
            let base = base.clone();
            Ok(std::thread::spawn(move || serve(listener, base)))
        })
        .collect::<std::io::Result<_>>()?;
    eprintln!("passthrough on {listen} -> {base}, {threads} threads");
    for h in handles {
        h.join().expect("serving thread")?;
    }
    Ok(())
}

fn reuse_port_listener(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn serve(listener: std::net::TcpListener, base: Arc<str>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        let mut http = HttpConnector::new();
        http.set_nodelay(true);
        let client: Upstream = Client::builder(TokioExecutor::new()).build(http);
        let server = Arc::new(auto::Builder::new(TokioExecutor::new()));
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (client, base, server) = (client.clone(), base.clone(), server.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    forward(client.clone(), base.clone(), req)
                });
                let _ = server.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}

async fn forward(
    client: Upstream,
    base: Arc<str>,
    mut req: Request<Incoming>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    *req.uri_mut() = format!("{base}{path}").parse().expect("a valid URI");
    req.headers_mut().remove(hyper::header::HOST);
    req.headers_mut().insert(
        hyper::header::AUTHORIZATION,
        hyper::header::HeaderValue::from_static("Bearer static-upstream-key"),
    );
    client.request(req).await
}
