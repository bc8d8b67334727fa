//! WhatsApp framing over the WebSocket: the client opens with the 4-byte
//! `WA_CONN_HEADER`, then sends frames of a 3-byte big-endian length and
//! that many bytes; several frames may share a WebSocket message and one
//! frame may span several. Server frames carry no header.
//!
//! This layer knows bytes only: no Noise, no nodes. It bounds what a peer
//! can make it buffer.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{self, Message, protocol::WebSocketConfig};
use wacore_binary::consts::WA_CONN_HEADER;
use wacore_noise::framing::{FrameDecoder, encode_frame};

/// Largest frame or WebSocket message accepted from a client. A prekey
/// upload (812 keys) is about 60 KB; nothing a login sends comes close.
pub(crate) const MAX_INBOUND: usize = 1 << 20;

/// A frame at least this big makes the decoder start over with a small buffer.
const SHRINK_AFTER: usize = 16 * 1024;

/// Buffers sized for small stanzas: a sandbox connection is also a load-test
/// peer, so tungstenite's 128 KiB defaults would dominate its memory.
pub(crate) fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(Some(MAX_INBOUND))
        .max_frame_size(Some(MAX_INBOUND))
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("websocket: {0}")]
    WebSocket(Box<tungstenite::Error>),
    #[error("the client closed the connection")]
    Closed,
    #[error("the client did not open with the WhatsApp connection header")]
    BadHeader,
    #[error("text message on a binary protocol")]
    Text,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("frame encoding: {0}")]
    Encode(String),
}

impl From<tungstenite::Error> for FrameError {
    fn from(e: tungstenite::Error) -> Self {
        FrameError::WebSocket(Box::new(e))
    }
}

/// One client's WebSocket, read and written as WhatsApp frames.
pub(crate) struct FrameStream<S> {
    ws: WebSocketStream<S>,
    decoder: FrameDecoder,
    /// Bytes of the connection header still expected.
    header_left: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> FrameStream<S> {
    pub fn new(ws: WebSocketStream<S>) -> Self {
        Self {
            ws,
            decoder: FrameDecoder::new(),
            header_left: WA_CONN_HEADER.len(),
        }
    }

    /// The next complete frame from the client.
    pub async fn recv(&mut self) -> Result<Vec<u8>, FrameError> {
        loop {
            if let Some(frame) = self.decoder.decode_frame() {
                let frame = frame.to_vec();
                if frame.len() >= SHRINK_AFTER && self.decoder.buffered_len() == 0 {
                    // The decoder keeps up to 64 KiB it once grew to; a
                    // prekey upload would pin that for the connection's life.
                    self.decoder = FrameDecoder::new();
                }
                return Ok(frame);
            }
            if self.decoder.buffered_len() > MAX_INBOUND + 3 {
                return Err(FrameError::TooLarge(self.decoder.buffered_len()));
            }
            let data = match self.ws.next().await {
                Some(Ok(Message::Binary(data))) => data,
                Some(Ok(Message::Text(_))) => return Err(FrameError::Text),
                Some(Ok(Message::Close(_))) | None => return Err(FrameError::Closed),
                Some(Ok(_)) => continue, // ping, pong: tungstenite answers pings itself
                Some(Err(e)) => return Err(e.into()),
            };
            let body = self.strip_header(&data)?;
            self.decoder.feed(body);
        }
    }

    fn strip_header<'a>(&mut self, data: &'a [u8]) -> Result<&'a [u8], FrameError> {
        if self.header_left == 0 {
            return Ok(data);
        }
        let seen = WA_CONN_HEADER.len() - self.header_left;
        let take = self.header_left.min(data.len());
        if data[..take] != WA_CONN_HEADER[seen..seen + take] {
            return Err(FrameError::BadHeader);
        }
        self.header_left -= take;
        Ok(&data[take..])
    }

    /// Sends one frame (length prefix added here).
    pub async fn send(&mut self, payload: &[u8]) -> Result<(), FrameError> {
        let framed = encode_frame(payload, None).map_err(|e| FrameError::Encode(e.to_string()))?;
        self.ws.send(Message::Binary(framed.into())).await?;
        Ok(())
    }

    /// Closes the WebSocket politely; errors are moot at this point.
    pub async fn close(&mut self) {
        let _ = self.ws.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_tungstenite::tungstenite::protocol::Role;

    async fn pair() -> (
        FrameStream<tokio::io::DuplexStream>,
        WebSocketStream<tokio::io::DuplexStream>,
    ) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        (FrameStream::new(server), client)
    }

    #[tokio::test]
    async fn frames_split_and_joined_across_messages() {
        let (mut server, mut client) = pair().await;
        // header in two pieces, then two frames in one message, then a split frame
        let mut bytes = WA_CONN_HEADER.to_vec();
        bytes.extend_from_slice(&[0, 0, 2, b'h', b'i', 0, 0, 1, b'!', 0, 0, 3, b'a']);
        let parts: [&[u8]; 4] = [&bytes[..2], &bytes[2..7], &bytes[7..15], &bytes[15..]];
        for part in parts {
            client
                .send(Message::Binary(part.to_vec().into()))
                .await
                .unwrap();
        }
        client
            .send(Message::Binary(vec![b'b', b'c'].into()))
            .await
            .unwrap();
        assert_eq!(server.recv().await.unwrap(), b"hi");
        assert_eq!(server.recv().await.unwrap(), b"!");
        assert_eq!(server.recv().await.unwrap(), b"abc");
    }

    #[tokio::test]
    async fn a_wrong_header_is_refused() {
        let (mut server, mut client) = pair().await;
        client
            .send(Message::Binary(b"GET /".to_vec().into()))
            .await
            .unwrap();
        assert!(matches!(server.recv().await, Err(FrameError::BadHeader)));
    }
}
