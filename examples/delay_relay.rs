//! A TCP relay that delays every byte by a fixed time in each direction: a
//! network between the app's pod and the database, for `bench/hotrow.sh`
//! (this kernel has no netem). Not part of thaw.
//!
//!   cargo run --release --example delay_relay -- LISTEN TARGET DELAY_US
//!
//! Each chunk read is written to the other side DELAY_US after it arrived,
//! in order, so the round trip grows by 2 x DELAY_US and bandwidth is not
//! limited. Plain threads and `thread::sleep` (nanosleep): tokio's timer
//! has a 1 ms resolution, too coarse for a data-centre round trip. Prints
//! "ready" once it listens.
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, listen, target, delay] = args.as_slice() else {
        eprintln!("usage: delay_relay LISTEN TARGET DELAY_US");
        std::process::exit(2);
    };
    let delay = Duration::from_micros(delay.parse().expect("DELAY_US: microseconds"));
    let listener = TcpListener::bind(listen)?;
    println!("ready");
    for client in listener.incoming() {
        let Ok(client) = client else { continue };
        let Ok(server) = TcpStream::connect(target) else { continue };
        let _ = (client.set_nodelay(true), server.set_nodelay(true));
        let (c2, s2) = (client.try_clone()?, server.try_clone()?);
        pipe(client, s2, delay);
        pipe(server, c2, delay);
    }
    Ok(())
}

/// One direction: a reader thread stamps each chunk, a writer thread sends
/// it when it is due.
fn pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
                break;
            }
        }
    });
    thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
