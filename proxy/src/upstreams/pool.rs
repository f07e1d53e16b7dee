//! Idle HTTP/1.1 upstream connections for the judged POST path.
//!
//! Pingora's connector pool spawns an idle-watch task for every connection
//! it takes back and reads the peer address (`getpeername`) on every reuse:
//! two wake-ups and a system call per call on the hot path. Here a released
//! connection goes into a lock-free queue for its peer (the key is Pingora's
//! own `reuse_hash`, so only connections with the same address, TLS and
//! options are ever shared), and is checked when it is taken again: older
//! than the server's idle timeout, or readable while idle (the server
//! closed it or sent bytes nobody asked for), it is dropped instead. One
//! sweep task per pool closes what servers closed while nobody called.
//! HTTP/2 sessions stay with Pingora's connector, which multiplexes them.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::ArrayQueue;
use futures_util::FutureExt;
use pingora_core::protocols::Stream;
use tokio::io::AsyncReadExt;

/// Idle connections kept per peer (and per worker process).
const PER_PEER: usize = 256;
/// How often idle connections are checked when nobody takes them.
const SWEEP: Duration = Duration::from_secs(2);

struct Idle {
    stream: Stream,
    since: Instant,
    /// The server's idle timeout when the connection was released.
    idle: Duration,
}

impl Idle {
    /// Whether the connection may carry another request now.
    fn usable(&mut self, now: Instant) -> bool {
        if now.duration_since(self.since) >= self.idle {
            return false;
        }
        // Readable while idle: closed (0 bytes), broken, or unexpected data.
        let mut byte = [0u8; 1];
        tokio::task::unconstrained(self.stream.read(&mut byte))
            .now_or_never()
            .is_none()
    }
}

type Queues = HashMap<u64, Arc<ArrayQueue<Idle>>>;

#[derive(Default)]
struct Inner {
    queues: ArcSwap<Queues>,
    sweeping: std::sync::atomic::AtomicBool,
}

/// The idle HTTP/1.1 connections of one gateway process, by peer.
#[derive(Clone, Default)]
pub struct UpstreamPool {
    inner: Arc<Inner>,
}

impl UpstreamPool {
    /// A usable idle connection to the peer whose reuse hash is `key`.
    pub fn take(&self, key: u64) -> Option<Stream> {
        let queues = self.inner.queues.load();
        let q = queues.get(&key)?;
        let now = Instant::now();
        while let Some(mut idle) = q.pop() {
            if idle.usable(now) {
                return Some(idle.stream);
            }
        }
        None
    }

    /// Keeps `stream` (a completed HTTP/1.1 exchange with keep-alive) for
    /// the next call to the same peer, for at most `idle`.
    pub fn put(&self, key: u64, stream: Stream, idle: Duration) {
        let entry = Idle {
            stream,
            since: Instant::now(),
            idle,
        };
        let q = match self.inner.queues.load().get(&key) {
            Some(q) => Arc::clone(q),
            None => self.queue(key),
        };
        // Full: the connection is closed (dropped) instead.
        let _ = q.push(entry);
    }

    /// The queue for `key`, made on first use (read-copy-update: a
    /// concurrent first use of another key is never lost).
    fn queue(&self, key: u64) -> Arc<ArrayQueue<Idle>> {
        self.inner.queues.rcu(|m| {
            if m.contains_key(&key) {
                return Arc::clone(m);
            }
            let mut m = (**m).clone();
            m.insert(key, Arc::new(ArrayQueue::new(PER_PEER)));
            Arc::new(m)
        });
        self.start_sweeping();
        // Keys are never removed, so the queue is there now.
        self.inner
            .queues
            .load()
            .get(&key)
            .cloned()
            .unwrap_or_else(|| Arc::new(ArrayQueue::new(1)))
    }

    /// Starts the sweep task once, on the runtime of the first release.
    fn start_sweeping(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.sweeping.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            self.inner.sweeping.store(false, Ordering::Release);
            return;
        };
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        rt.spawn(async move {
            let mut tick = tokio::time::interval(SWEEP);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                sweep(&inner.queues.load());
            }
        });
    }

    /// How many idle connections are held.
    #[cfg(test)]
    fn idle(&self) -> usize {
        self.inner.queues.load().values().map(|q| q.len()).sum()
    }
}

/// Drops every idle connection that can no longer be used.
fn sweep(queues: &Queues) {
    let now = Instant::now();
    for q in queues.values() {
        for _ in 0..q.len() {
            let Some(mut idle) = q.pop() else { break };
            if idle.usable(now) {
                let _ = q.push(idle);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn pair() -> (Stream, tokio::net::TcpStream) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (c, s) = tokio::join!(tokio::net::TcpStream::connect(addr), l.accept());
        let c: pingora_core::protocols::l4::stream::Stream = c.expect("connect").into();
        (Box::new(c), s.expect("accept").0)
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_while_usable() {
        let pool = UpstreamPool::default();
        assert!(pool.take(1).is_none());
        // Live and within its idle time: taken back.
        let (c, _server) = pair().await;
        pool.put(1, c, Duration::from_secs(60));
        assert_eq!(pool.idle(), 1);
        assert!(pool.take(2).is_none(), "another peer's key");
        assert!(pool.take(1).is_some());
        assert_eq!(pool.idle(), 0);
        // Closed by the server while idle: dropped.
        let (c, server) = pair().await;
        pool.put(1, c, Duration::from_secs(60));
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1).is_none());
        // Unexpected bytes while idle: dropped.
        let (c, mut server) = pair().await;
        pool.put(1, c, Duration::from_secs(60));
        server
            .write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(1).is_none());
        // Past its idle timeout: dropped.
        let (c, _server) = pair().await;
        pool.put(1, c, Duration::from_millis(1));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(pool.take(1).is_none());
    }

    #[tokio::test]
    async fn the_sweep_drops_what_servers_closed() {
        let pool = UpstreamPool::default();
        let (a, server_a) = pair().await;
        let (b, _server_b) = pair().await;
        pool.put(7, a, Duration::from_secs(60));
        pool.put(7, b, Duration::from_secs(60));
        drop(server_a);
        tokio::time::sleep(Duration::from_millis(50)).await;
        sweep(&pool.inner.queues.load());
        assert_eq!(pool.idle(), 1);
    }
}
