//! SIGTERM and SIGINT, the two stop signals: the first stops gracefully (the caller says
//! how), a second one quits at once. Shared by `server` and by `once`/`check`.
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Which stop signal arrived.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stop {
    Int,
    Term,
}

impl Stop {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Stop::Int => "SIGINT",
            Stop::Term => "SIGTERM",
        }
    }

    /// The shell's convention: 128 plus the signal's number.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            Stop::Int => 130,
            Stop::Term => 143,
        }
    }
}

/// The installed handlers for both stop signals.
pub(crate) struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Installs the handlers; `None` (logged) when the system refuses.
    pub(crate) fn install() -> Option<StopSignals> {
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some(StopSignals { term, int }),
            _ => {
                tracing::error!("Cannot install signal handlers");
                None
            }
        }
    }

    /// The next stop signal.
    pub(crate) async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.term.recv() => Stop::Term,
            _ = self.int.recv() => Stop::Int,
        }
    }
}
