//! MQTT test helpers: an `eddy serve` child with its MQTT listener, Eclipse
//! Mosquitto's `mosquitto_pub` / `mosquitto_sub` against it, and raw
//! packets for what no client can be made to send.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use eddy::client::{ClientOptions, ConsumedRecord};

use super::{wait_until, ChildServer};

pub const WAIT: Duration = Duration::from_secs(30);

/// A hub with its MQTT listener on a free loopback port.
pub struct Hub {
    pub server: ChildServer,
    pub mqtt: SocketAddr,
}

impl Hub {
    pub fn start(data: &Path, extra: &[&str]) -> Hub {
        let server = ChildServer::start(data, extra);
        let mut mqtt = None;
        wait_until(WAIT, "the MQTT listener's log line", || {
            mqtt = server
                .log_text()
                .lines()
                .find_map(|l| l.split("MQTT 3.1.1/5 on ").nth(1))
                .and_then(|rest| rest.split(' ').next())
                .and_then(|a| a.parse().ok());
            mqtt.is_some()
        });
        Hub {
            server,
            mqtt: mqtt.unwrap(),
        }
    }

    pub fn port(&self) -> String {
        self.mqtt.port().to_string()
    }

    /// `mosquitto_pub` with `args`; its exit status and output.
    pub fn publish(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port()])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("mosquitto_pub (Debian mosquitto-clients) must be installed");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    pub fn publish_ok(&self, args: &[&str]) {
        let (ok, text) = self.publish(args);
        assert!(ok, "mosquitto_pub {args:?} failed: {text}");
    }

    /// `mosquitto_sub -d -v` with `args`, waiting for its SUBACK.
    pub fn subscribe(&self, args: &[&str]) -> Sub {
        // Line-buffered: its debug lines (the SUBACK) are how the test
        // knows it subscribed.
        let mut child = Command::new("stdbuf")
            .args([
                "-oL",
                "mosquitto_sub",
                "-h",
                "127.0.0.1",
                "-p",
                &self.port(),
                "-d",
                "-v",
            ])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mosquitto_sub (Debian mosquitto-clients) must be installed");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stdout = child.stdout.take().unwrap();
        let writer = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                writer.lock().unwrap().push(line);
            }
        });
        let sub = Sub { child, lines };
        // A persistent session's deliveries may come before the SUBACK.
        wait_until(WAIT, "mosquitto_sub's SUBACK", || {
            let text = sub.text();
            text.contains("received SUBACK") || text.contains("received PUBLISH")
        });
        sub
    }

    pub fn options(&self) -> ClientOptions {
        self.server.options()
    }
}

/// A running `mosquitto_sub`.
pub struct Sub {
    pub child: Child,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl Sub {
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// The messages received (`topic payload` lines), without debug lines.
    pub fn messages(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| {
                !l.starts_with("Client ") && !l.starts_with("Subscribed (") && !l.starts_with('\t')
            })
            .cloned()
            .collect()
    }

    pub fn wait_messages(&self, n: usize) -> Vec<String> {
        wait_until(WAIT, &format!("{n} messages at mosquitto_sub"), || {
            self.messages().len() >= n
        });
        self.messages()
    }

    /// Waits for it to exit by itself (`-C`, `-E`); its success.
    pub fn wait_exit(mut self) -> bool {
        let mut status = None;
        wait_until(WAIT, "mosquitto_sub to exit", || {
            status = self.child.try_wait().unwrap();
            status.is_some()
        });
        status.unwrap().success()
    }
}

impl Drop for Sub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn stored(options: &ClientOptions, topic: &str) -> Vec<ConsumedRecord> {
    super::stored_records(options, topic)
}

pub fn header<'a>(record: &'a ConsumedRecord, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| std::str::from_utf8(v).unwrap())
}

/// An MQTT 3.1.1 CONNECT with `client_id`, clean session or not.
pub fn connect_v311(client_id: &str, clean: bool) -> Vec<u8> {
    let mut body = vec![
        0,
        4,
        b'M',
        b'Q',
        b'T',
        b'T',
        4,
        if clean { 2 } else { 0 },
        0,
        60,
    ];
    body.extend_from_slice(&u16::try_from(client_id.len()).unwrap().to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10, u8::try_from(body.len()).unwrap()];
    packet.extend(body);
    packet
}

/// A QoS 2 PUBLISH of `payload` to `topic` with packet id `pkid`.
pub fn publish_qos2(topic: &str, pkid: u16, payload: &[u8], dup: bool) -> Vec<u8> {
    let mut body = u16::try_from(topic.len()).unwrap().to_be_bytes().to_vec();
    body.extend_from_slice(topic.as_bytes());
    body.extend_from_slice(&pkid.to_be_bytes());
    body.extend_from_slice(payload);
    let mut packet = vec![
        0x34 | if dup { 0x08 } else { 0 },
        u8::try_from(body.len()).unwrap(),
    ];
    packet.extend(body);
    packet
}

pub fn read_exact_packet(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    stream.read_exact(&mut buf).unwrap();
    buf
}

pub fn raw_connect(hub: &Hub, client_id: &str, clean: bool) -> TcpStream {
    let mut s = TcpStream::connect(hub.mqtt).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&connect_v311(client_id, clean)).unwrap();
    let connack = read_exact_packet(&mut s, 4);
    assert_eq!((connack[0], connack[3]), (0x20, 0), "{connack:02x?}");
    s
}

/// The names of the hub's topics (read with eddy's own client).
pub fn topic_names(options: &ClientOptions) -> Vec<String> {
    smol::block_on(async {
        let client = eddy::client::Client::connect(options).await.unwrap();
        let topics = client.metadata(&[]).await.unwrap();
        topics.into_iter().map(|(t, _)| t).collect()
    })
}
