//! An HTTP/1.1 echo upstream: answers every request with 200 and a body that
//! is the request's header block, so tests can see what a proxy forwarded.

use anyhow::{Context, Result};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;

/// A running echo server; it lives as long as the test process.
#[derive(Debug)]
pub struct EchoUpstream {
    addr: SocketAddr,
}

impl EchoUpstream {
    /// Binds `ip:0` and serves connections on background threads.
    pub fn start(ip: &str) -> Result<Self> {
        let listener = TcpListener::bind((ip, 0)).with_context(|| format!("binding echo upstream on {ip}"))?;
        let addr = listener.local_addr()?;
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                thread::spawn(move || {
                    // A connection that breaks mid-request only ends that connection.
                    let _ = serve(stream);
                });
            }
        });
        Ok(Self { addr })
    }

    /// Where the server listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut stream = stream;
    loop {
        let mut head = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if line == "\r\n" {
                break;
            }
            head.push_str(&line);
        }
        let response =
            format!("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n{head}", head.len());
        stream.write_all(response.as_bytes())?;
    }
}
