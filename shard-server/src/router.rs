//! Cross-core forwarding: a request for a stream another core owns travels
//! there as its (already verified) frame payload over a glommio shared
//! channel, and the response comes back on a oneshot channel.
//!
//! **Invariant:** no lock is shared across cores; the only cross-core
//! traffic is these bounded SPSC channels (one per ordered pair of cores).

use std::rc::Rc;

use futures::channel::oneshot;
use glommio::channels::shared_channel::{self, ConnectedReceiver, ConnectedSender, SharedReceiver, SharedSender};
use tracing::Instrument;

use ddc_formats::message::{decode_request_envelope, Response};
use ddc_formats::wire::ErrorCode;

use crate::dispatch::{error_response, serve_local, CoreState};

/// A request travelling to its owner core.
pub struct Forwarded {
    pub payload: Vec<u8>,
    pub reply: oneshot::Sender<Response>,
    /// The sender's current span (its connection and request), so the owner
    /// core's log lines about the request carry the same ids.
    pub span: tracing::Span,
}

/// One core's ends of the mesh, before its executor starts.
pub struct MeshEnds {
    pub senders: Vec<Option<SharedSender<Forwarded>>>,
    pub receivers: Vec<SharedReceiver<Forwarded>>,
}

/// Channels between every ordered pair of cores.
pub fn build_mesh(cores: usize, depth: usize) -> Vec<MeshEnds> {
    let mut ends: Vec<MeshEnds> =
        (0..cores).map(|_| MeshEnds { senders: (0..cores).map(|_| None).collect(), receivers: Vec::new() }).collect();
    for from in 0..cores {
        for to in 0..cores {
            if from != to {
                let (tx, rx) = shared_channel::new_bounded(depth);
                ends[from].senders[to] = Some(tx);
                ends[to].receivers.push(rx);
            }
        }
    }
    ends
}

/// Connected senders, indexed by destination core.
pub struct Router {
    pub core: usize,
    pub cores: usize,
    senders: Vec<Option<ConnectedSender<Forwarded>>>,
}

impl Router {
    /// Connect this core's ends of the mesh. Returns the router and the
    /// incoming channels, to be served with [`serve_incoming`] once the
    /// core's engine is open.
    pub async fn connect(core: usize, ends: MeshEnds) -> (Router, Vec<ConnectedReceiver<Forwarded>>) {
        let cores = ends.senders.len();
        // Each connect waits for the other side, so all of them run at once.
        let senders = futures::future::join_all(ends.senders.into_iter().map(|s| async move {
            match s {
                Some(s) => Some(s.connect().await),
                None => None,
            }
        }));
        let receivers = futures::future::join_all(ends.receivers.into_iter().map(|r| r.connect()));
        let (senders, receivers) = futures::join!(senders, receivers);
        (Router { core, cores, senders }, receivers)
    }

    /// Send a payload to `core` and wait for its response.
    pub async fn forward(&self, core: usize, payload: Vec<u8>) -> Response {
        let Some(sender) = self.senders.get(core).and_then(|s| s.as_ref()) else {
            return error_response(ErrorCode::Internal, format!("no route to core {core}"));
        };
        let (tx, rx) = oneshot::channel();
        if sender.send(Forwarded { payload, reply: tx, span: tracing::Span::current() }).await.is_err() {
            return error_response(ErrorCode::ShuttingDown, format!("core {core} is shutting down"));
        }
        rx.await.unwrap_or_else(|_| error_response(ErrorCode::ShuttingDown, format!("core {core} dropped the request")))
    }
}

/// Serve requests other cores forward here, one task per incoming channel.
pub fn serve_incoming(receivers: Vec<ConnectedReceiver<Forwarded>>, state: Rc<CoreState>) {
    for rx in receivers {
        glommio::spawn_local(serve_forwarded(rx, state.clone())).detach();
    }
}

async fn serve_forwarded(rx: ConnectedReceiver<Forwarded>, state: Rc<CoreState>) {
    while let Some(f) = rx.recv().await {
        let state = state.clone();
        let Forwarded { payload, reply, span } = f;
        glommio::spawn_local(
            async move {
                let response = match decode_request_envelope(&payload) {
                    Ok((_, forwarded, request)) => serve_local(&state, &request, forwarded).await,
                    Err(e) => error_response(ErrorCode::MalformedMessage, e.to_string()),
                };
                let _ = reply.send(response);
            }
            .instrument(span),
        )
        .detach();
    }
}
