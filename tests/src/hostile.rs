//! A hostile MCP upstream for the adversarial suite: a raw HTTP/1.1 server
//! on a real socket that answers each request with the next scripted reply,
//! byte for byte as the test wrote it (broken JSON, odd content types, SSE
//! events split anywhere, replies held until another request arrives), and
//! records every request it received, so a test can assert what reached
//! the upstream as well as what the client saw.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One piece of a reply body.
#[derive(Clone, Debug)]
pub enum Piece {
    Bytes(Vec<u8>),
    /// Hold the rest until the server has received this many requests in all.
    AfterRequests(usize),
    /// Stay quiet this long, unless the peer closes the connection first.
    Wait(Duration),
    /// Close the connection here, without ending the body.
    Cut,
}

/// One scripted reply.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<Piece>,
    /// Chunked framing (each piece one chunk); otherwise Content-Length.
    pub chunked: bool,
    /// The status line's reason phrase (`X` when unset).
    pub reason: Option<String>,
    /// Interim (1xx) responses sent before this one: status and headers.
    pub interim: Vec<(u16, Vec<(String, String)>)>,
}

impl Reply {
    /// A JSON body with `content_type` (`None`: no Content-Type at all).
    pub fn typed(status: u16, content_type: Option<&str>, body: &str) -> Reply {
        Reply {
            status,
            headers: content_type
                .map(|c| vec![("content-type".to_owned(), c.to_owned())])
                .unwrap_or_default(),
            body: vec![Piece::Bytes(body.as_bytes().to_vec())],
            chunked: false,
            reason: None,
            interim: Vec::new(),
        }
    }
    pub fn json(body: &str) -> Reply {
        Reply::typed(200, Some("application/json"), body)
    }
    /// An SSE reply; each string is sent as its own chunk.
    pub fn sse(chunks: &[&str]) -> Reply {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: chunks
                .iter()
                .map(|c| Piece::Bytes(c.as_bytes().to_vec()))
                .collect(),
            chunked: true,
            reason: None,
            interim: Vec::new(),
        }
    }
    pub fn accepted() -> Reply {
        Reply::typed(202, None, "")
    }
    /// Appends pieces (e.g. an event held until the client's POST arrived).
    pub fn with_more(mut self, more: Vec<Piece>) -> Reply {
        self.body.extend(more);
        self
    }
    /// The status line says `reason` after the code.
    pub fn reason(mut self, reason: &str) -> Reply {
        self.reason = Some(reason.to_owned());
        self
    }
    /// An interim (1xx) response with `headers` goes out first.
    pub fn after_interim(mut self, status: u16, headers: &[(&str, &str)]) -> Reply {
        self.interim.push((
            status,
            headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ));
        self
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.to_owned(), v.to_owned()));
        self
    }
}

/// A request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

#[derive(Default)]
struct State {
    script: VecDeque<Reply>,
    received: Vec<Received>,
    /// Replies being written right now (open streams).
    open: usize,
}

pub struct Hostile {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn start() -> Hostile {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                tokio::spawn(serve(sock, st.clone()));
            }
        });
        Hostile { addr, state, task }
    }

    /// Queues replies, answered in order to the requests that come next.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        let mut s = self.state.lock().expect("state");
        s.script.extend(replies);
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }

    /// How many replies are being written right now (streams still open).
    pub fn open_streams(&self) -> usize {
        self.state.lock().expect("state").open
    }

    /// Forgets what was received and what is still scripted.
    pub fn reset(&self) {
        let mut s = self.state.lock().expect("state");
        s.received.clear();
        s.script.clear();
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut sock: TcpStream, st: Arc<Mutex<State>>) {
    let mut buf: Vec<u8> = Vec::new();
    loop {
        // Head.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 4096];
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let reply = {
            let mut s = st.lock().expect("state");
            s.received.push(Received {
                method,
                path,
                headers,
                body,
            });
            s.script.pop_front()
        };
        let reply = reply.unwrap_or_else(|| {
            Reply::typed(
                500,
                Some("application/json"),
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"no scripted reply"}}"#,
            )
        });
        st.lock().expect("state").open += 1;
        let written = write_reply(&mut sock, &reply, &st).await;
        st.lock().expect("state").open -= 1;
        if written.is_err() {
            return;
        }
    }
}

async fn write_reply(
    sock: &mut TcpStream,
    r: &Reply,
    st: &Arc<Mutex<State>>,
) -> std::io::Result<()> {
    let mut head = String::new();
    for (status, headers) in &r.interim {
        head.push_str(&format!("HTTP/1.1 {status} Interim\r\n"));
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
    }
    head.push_str(&format!(
        "HTTP/1.1 {} {}\r\n",
        r.status,
        r.reason.as_deref().unwrap_or("X")
    ));
    for (k, v) in &r.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if r.chunked {
        head.push_str("transfer-encoding: chunked\r\n\r\n");
    } else {
        let len: usize = r
            .body
            .iter()
            .map(|p| match p {
                Piece::Bytes(b) => b.len(),
                Piece::AfterRequests(_) | Piece::Wait(_) | Piece::Cut => 0,
            })
            .sum();
        head.push_str(&format!("content-length: {len}\r\n\r\n"));
    }
    sock.write_all(head.as_bytes()).await?;
    for p in &r.body {
        match p {
            Piece::Bytes(b) if r.chunked => {
                if b.is_empty() {
                    continue;
                }
                sock.write_all(format!("{:x}\r\n", b.len()).as_bytes())
                    .await?;
                sock.write_all(b).await?;
                sock.write_all(b"\r\n").await?;
            }
            Piece::Bytes(b) => sock.write_all(b).await?,
            Piece::Cut => {
                sock.flush().await?;
                return Err(std::io::ErrorKind::ConnectionAborted.into());
            }
            Piece::Wait(d) => {
                sock.flush().await?;
                let mut probe = [0u8; 1];
                tokio::select! {
                    _ = tokio::time::sleep(*d) => {}
                    r = sock.read(&mut probe) => {
                        if matches!(r, Ok(0) | Err(_)) {
                            return Err(std::io::ErrorKind::ConnectionReset.into());
                        }
                    }
                }
            }
            Piece::AfterRequests(n) => {
                sock.flush().await?;
                for _ in 0..500 {
                    if st.lock().expect("state").received.len() >= *n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        sock.flush().await?;
    }
    if r.chunked {
        sock.write_all(b"0\r\n\r\n").await?;
    }
    sock.flush().await
}
