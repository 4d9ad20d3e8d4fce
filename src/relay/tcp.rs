//! A TCP upstream speaking newline-delimited UTF-8 text: each SockJS message
//! goes out as one line, each line that comes back is one message.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::rules::{encode_line, LineDecoder, LineError};
use super::Ending;
use crate::Session;

const READ_CHUNK: usize = 8 * 1024;
const CLOSE_GRACE: Duration = Duration::from_secs(2);

pub(super) async fn connect(address: &str, timeout: Duration) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| e.to_string())?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Moves messages both ways until one side ends; then ends the other.
pub(super) async fn relay(mut stream: TcpStream, session: &Session, max_line: usize) -> Ending {
    let (mut reader, mut writer) = stream.split();
    let ending = {
        let to_upstream = async {
            while let Some(message) = session.recv().await {
                if let Err(error) = writer.write_all(&encode_line(&message)).await {
                    return Ending::UpstreamFailed("Upstream connection lost", error.to_string());
                }
            }
            Ending::SessionClosed
        };
        let to_client = async {
            let mut decoder = LineDecoder::new(max_line);
            let mut buffer = vec![0; READ_CHUNK];
            let mut lines = Vec::new();
            loop {
                let read = match reader.read(&mut buffer).await {
                    Ok(read) => read,
                    Err(error) => {
                        return Ending::UpstreamFailed(
                            "Upstream connection lost",
                            error.to_string(),
                        )
                    }
                };
                let decoded = if read == 0 {
                    decoder.finish().map(|last| lines.extend(last))
                } else {
                    decoder.push(&buffer[..read], &mut lines)
                };
                if let Err(error) = decoded {
                    return line_failure(error);
                }
                for line in lines.drain(..) {
                    if session.send(line).await.is_err() {
                        return Ending::SessionClosed;
                    }
                }
                if read == 0 {
                    return Ending::UpstreamClosed(None, String::new());
                }
            }
        };
        futures::pin_mut!(to_upstream, to_client);
        match futures::future::select(to_upstream, to_client).await {
            futures::future::Either::Left((ending, _)) => ending,
            futures::future::Either::Right((ending, _)) => ending,
        }
    };
    if matches!(ending, Ending::SessionClosed) {
        let _ = tokio::time::timeout(CLOSE_GRACE, writer.shutdown()).await;
    }
    ending
}

fn line_failure(error: LineError) -> Ending {
    let reason = match error {
        LineError::TooLong => "Upstream line too long",
        LineError::NotUtf8 => "Upstream sent invalid UTF-8",
    };
    Ending::UpstreamFailed(reason, error.to_string())
}
