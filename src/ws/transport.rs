//! The WebSocket connection of a session: frames in, frames out, nothing else.
//!
//! A [`Session`] (the state machine, its stream and its results) must outlive a dropped
//! connection so that the client can resume it, but an actor living in a WebSocket
//! response dies with the connection. So each connection is a `Transport` actor that
//! forwards what the client sends to its session and writes what the session sends, and
//! a session is attached to one transport at a time: the first, then each resume's.

use actix::prelude::*;
use actix_web_actors::ws;

use super::replay::Frame;
use super::session::Session;
use tolk_protocol::error::ErrorCode;
use tolk_protocol::ws::ServerMessage;

/// What a session writes to its client.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum Outgoing {
    Frame(Frame),
    Ping,
    Pong(actix_web::web::Bytes),
    /// Close the connection (and stop the transport).
    Close(Option<ws::CloseReason>),
}

/// A frame from the client of attachment `attachment`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Incoming {
    pub attachment: u64,
    pub message: Result<ws::Message, ws::ProtocolError>,
}

/// A transport is up: the session writes to it from now on. `last_seq` is the resuming
/// client's (`None` for a new session, or a resume that leaves it to the acks).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Attach {
    pub attachment: u64,
    pub transport: Recipient<Outgoing>,
    pub resume: Option<Option<u64>>,
}

/// The transport of `attachment` is gone without a close from the client.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Detach {
    pub attachment: u64,
}

pub struct Transport {
    session: Addr<Session>,
    attachment: u64,
    resume: Option<Option<u64>>,
    /// The client closed the connection (a close frame): the session ends with it.
    closed_by_client: bool,
    /// The session closed it (or stopped): nothing to tell it.
    closed_by_session: bool,
}

impl Transport {
    pub fn new(session: Addr<Session>, attachment: u64, resume: Option<Option<u64>>) -> Self {
        Self {
            session,
            attachment,
            resume,
            closed_by_client: false,
            closed_by_session: false,
        }
    }
}

impl Actor for Transport {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.session.do_send(Attach {
            attachment: self.attachment,
            transport: ctx.address().recipient(),
            resume: self.resume,
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if !self.closed_by_client && !self.closed_by_session {
            self.session.do_send(Detach {
                attachment: self.attachment,
            });
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Transport {
    fn handle(&mut self, message: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        if let Ok(ws::Message::Close(_)) = &message {
            self.closed_by_client = true;
        }
        // The session's mailbox is bounded: a client that outruns it loses the frame and
        // is told, rather than queueing without end.
        let forwarded = self.session.try_send(Incoming {
            attachment: self.attachment,
            message,
        });
        match forwarded {
            Ok(()) => {}
            Err(SendError::Full(_)) => {
                let error = ServerMessage::error(
                    ErrorCode::Overloaded,
                    "messages are arriving faster than the session can take them: one was discarded",
                );
                if let Ok(text) = serde_json::to_string(&error) {
                    ctx.text(text);
                }
            }
            // The session is gone (ended while this frame was in flight).
            Err(SendError::Closed(_)) => {
                self.closed_by_session = true;
                ctx.stop();
            }
        }
    }
}

impl Handler<Outgoing> for Transport {
    type Result = ();

    fn handle(&mut self, out: Outgoing, ctx: &mut Self::Context) {
        match out {
            Outgoing::Frame(Frame::Text(text)) => ctx.text(text),
            Outgoing::Frame(Frame::Binary(bytes)) => ctx.binary(bytes),
            Outgoing::Ping => ctx.ping(b"tolk"),
            Outgoing::Pong(payload) => ctx.pong(&payload),
            Outgoing::Close(reason) => {
                self.closed_by_session = true;
                ctx.close(reason);
                ctx.stop();
            }
        }
    }
}
