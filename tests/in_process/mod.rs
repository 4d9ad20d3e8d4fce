//! A server with test-written services, in this process on its own thread.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

use actix_web::App;
use sockjs_gateway::{http_server, SockJs};

use crate::support::{parse_frame, Conn, Frame, Request, Response};

const WAIT: Duration = Duration::from_secs(10);

/// An actix server on an ephemeral loopback port, on its own thread; stopped on drop.
pub struct InProcess {
    pub port: u16,
    handle: actix_web::dev::ServerHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    pub fn start(services: Vec<SockJs>) -> InProcess {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            actix_rt::System::new().block_on(async move {
                // The library's one-call server: a dropped long-poll is
                // interrupted at once only with its settings.
                let server = http_server(move || {
                    services
                        .iter()
                        .fold(App::new(), |app, service| app.service(service.clone()))
                })
                .workers(1)
                .bind("127.0.0.1:0")
                .expect("bind");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).unwrap();
                server.await.expect("server");
            })
        });
        let (port, handle) = rx.recv_timeout(WAIT).expect("server started");
        InProcess {
            port,
            handle,
            thread: Some(thread),
        }
    }

    pub fn post(&self, path: &str, body: &[u8]) -> Response {
        Conn::open(self.port).request(&Request::post(path, body))
    }

    pub fn poll(&self, path: &str) -> Frame {
        let response = self.post(path, b"");
        assert_eq!(response.status, 200, "{path}");
        parse_frame(response.text().trim_end())
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        actix_rt::System::new().block_on(self.handle.stop(false));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
