//! A stand-in SMS gateway for seeding: identity-svc posts every code to this webhook
//! (`--sms-webhook-url`, the production path), and the bench reads the latest code per phone.
//! Plain HTTP/1.1 on 127.0.0.1, one request per connection.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Largest request accepted (an SMS webhook body is a few hundred bytes).
const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// The gateway; stops when dropped.
pub struct SmsGateway {
    addr: SocketAddr,
    codes: Arc<Mutex<HashMap<String, String>>>,
    task: JoinHandle<()>,
}

impl SmsGateway {
    /// Listens on `addr` (127.0.0.1:0 for a free port).
    pub async fn start(addr: SocketAddr) -> anyhow::Result<SmsGateway> {
        let listener = TcpListener::bind(addr).await.with_context(|| format!("binding the SMS webhook on {addr}"))?;
        let addr = listener.local_addr()?;
        let codes = Arc::new(Mutex::new(HashMap::new()));
        let stored = codes.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let stored = stored.clone();
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, &stored)).await;
                });
            }
        });
        Ok(SmsGateway { addr, codes, task })
    }

    /// The URL to give identity-svc as `--sms-webhook-url`.
    pub fn url(&self) -> String {
        format!("http://{}/sms", self.addr)
    }

    /// The latest code sent to `phone`.
    pub fn last_code(&self, phone: &str) -> Option<String> {
        self.codes.lock().expect("sms codes lock").get(phone).cloned()
    }
}

impl Drop for SmsGateway {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(mut stream: TcpStream, codes: &Mutex<HashMap<String, String>>) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..at]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (at + 4, length);
        }
        let read = stream.read(&mut chunk).await?;
        if read == 0 || buffer.len() > MAX_REQUEST_BYTES {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    };
    while buffer.len() < head_end + length && buffer.len() <= MAX_REQUEST_BYTES {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            return Ok(());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    let body = &buffer[head_end..(head_end + length).min(buffer.len())];
    let status = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(json) => match (json["phone"].as_str(), json["code"].as_str()) {
            (Some(phone), Some(code)) => {
                codes.lock().expect("sms codes lock").insert(phone.to_owned(), code.to_owned());
                "200 OK"
            }
            _ => "400 Bad Request",
        },
        Err(_) => "400 Bad Request",
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{{}}"
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_latest_code_per_phone() {
        let gateway = SmsGateway::start("127.0.0.1:0".parse().unwrap()).await.unwrap();
        for code in ["111111", "222222"] {
            let body = format!(r#"{{"phone":"13900000001","code":"{code}","message":"m","purpose":"REAL_NAME"}}"#);
            let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
            let request = format!(
                "POST /sms HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut answer = String::new();
            stream.read_to_string(&mut answer).await.unwrap();
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        assert_eq!(gateway.last_code("13900000001").as_deref(), Some("222222"));
        assert_eq!(gateway.last_code("13900000002"), None);
    }
}
