//! A WebSocket test client for `/ws/translate` (tungstenite, blocking, short read
//! timeouts so a test can interleave paced audio with reading results).

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::Server;

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// A test client: connects, and reads messages with a short timeout so it can interleave
/// sending paced audio with receiving results.
pub struct Client {
    pub ws: Socket,
    pub received: Vec<(Instant, Value)>,
    pub closed: bool,
    /// The close code the server sent, once it has.
    pub close_code: Option<u16>,
    /// The `connected` message the session opened with.
    pub connected: Value,
}

impl Client {
    pub fn connect(server: &Server) -> Self {
        Self::connect_to(&format!("ws://{}/ws/translate", server.addr), &[])
            .expect("WebSocket connect")
    }

    /// Connect to `url` with extra request headers; the handshake's error when refused.
    pub fn connect_to(url: &str, headers: &[(&str, &str)]) -> Result<Self, tungstenite::Error> {
        use tungstenite::client::IntoClientRequest;
        let mut request = url.into_client_request()?;
        for (name, value) in headers {
            request.headers_mut().insert(
                tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                tungstenite::http::HeaderValue::from_str(value).unwrap(),
            );
        }
        let (ws, _) = tungstenite::connect(request)?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
        }
        let mut client = Client {
            ws,
            received: Vec::new(),
            closed: false,
            close_code: None,
            connected: Value::Null,
        };
        let connected = client.wait_for("connected", Duration::from_secs(5));
        assert_eq!(connected["protocol_version"], 1);
        client.connected = connected;
        Ok(client)
    }

    pub fn send(&mut self, message: Value) {
        self.ws
            .send(Message::text(message.to_string()))
            .expect("send text");
    }

    pub fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).expect("send binary");
    }

    /// Read whatever has arrived.
    pub fn drain(&mut self) {
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => self
                    .received
                    .push((Instant::now(), serde_json::from_str(&t).unwrap())),
                Ok(Message::Close(frame)) => {
                    self.closed = true;
                    self.close_code = frame.map(|f| u16::from(f.code));
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    return
                }
                Err(_) => {
                    self.closed = true;
                    return;
                }
            }
        }
    }

    /// Wait for the next message of `kind` not yet taken; returns it.
    pub fn wait_for(&mut self, kind: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.received.iter().position(|(_, m)| m["type"] == kind) {
                return self.received.remove(i).1;
            }
            assert!(
                Instant::now() < deadline,
                "no {kind} within {timeout:?}; got {:?}",
                self.received
            );
            assert!(
                !self.closed,
                "connection closed while waiting for {kind}; got {:?}",
                self.received
            );
            self.drain();
        }
    }

    pub fn start_stream(&mut self, source_lang: &str) -> Value {
        self.send(json!({
            "type": "start_stream",
            "source_lang": source_lang,
            "audio_format": {"encoding": "pcm_s16le", "sample_rate": 16000, "channels": 1}
        }));
        self.wait_for("stream_ready", Duration::from_secs(5))
    }

    /// Stream 16 kHz samples as s16le in 100 ms frames, paced at real time.
    pub fn stream_realtime(&mut self, samples: &[f32]) {
        let start = Instant::now();
        for (i, frame) in samples.chunks(1600).enumerate() {
            let due = start + Duration::from_millis(100 * i as u64);
            while Instant::now() < due {
                self.drain();
                thread::sleep(Duration::from_millis(2));
            }
            self.send_binary(pcm16(frame));
        }
    }

    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.received
            .iter()
            .filter(|(_, m)| m["type"] == kind)
            .map(|(_, m)| m)
            .collect()
    }
}

pub fn pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|s| ((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes())
        .collect()
}
