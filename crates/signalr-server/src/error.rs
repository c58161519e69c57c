//! Errors a hub method returns, and how they reach the client.

use std::fmt;

/// An error from a hub method (or a hub lifecycle hook).
///
/// It reaches the client as the `error` of the invocation's Completion:
///
/// - [`HubError::new`] is a *client-facing* error (ASP.NET Core's `HubException`): its message
///   is always sent, as `An unexpected error occurred invoking 'Method' on the server.
///   HubException: <message>`.
/// - Any other error converted with `?` (every `std::error::Error` converts) is *internal*:
///   the client only learns that the method failed, unless the hub's `detailed_errors`
///   option is on, which appends the error text.
///
/// ```
/// use signalr_server::HubError;
///
/// async fn join(room: String) -> Result<(), HubError> {
///     if room.is_empty() {
///         return Err(HubError::new("Room names cannot be empty"));
///     }
///     let _port: u16 = "80".parse()?; // internal errors convert with `?`
///     Ok(())
/// }
/// # let _ = join;
/// ```
pub struct HubError {
    message: String,
    public: bool,
}

impl HubError {
    /// A client-facing error: the message is sent to the caller.
    pub fn new(message: impl Into<String>) -> HubError {
        HubError {
            message: message.into(),
            public: true,
        }
    }

    /// An internal error: the message is only sent with `detailed_errors`.
    pub fn internal(message: impl Into<String>) -> HubError {
        HubError {
            message: message.into(),
            public: false,
        }
    }

    /// The error text.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Whether the message is meant for the client.
    pub fn is_public(&self) -> bool {
        self.public
    }

    /// The text the client receives when a stream ended with this error.
    pub(crate) fn stream_error(&self, detailed: bool) -> String {
        let generic = "An error occurred on the server while streaming results.";
        if self.public {
            format!("{generic} HubException: {}", self.message)
        } else if detailed {
            format!("{generic} {}", self.message)
        } else {
            generic.to_owned()
        }
    }

    /// The text the client receives when invoking `method` failed with this error.
    pub(crate) fn invocation_error(&self, method: &str, detailed: bool) -> String {
        let generic = format!("An unexpected error occurred invoking '{method}' on the server.");
        if self.public {
            format!("{generic} HubException: {}", self.message)
        } else if detailed {
            format!("{generic} {}", self.message)
        } else {
            generic
        }
    }
}

impl<E: std::error::Error + Send + Sync + 'static> From<E> for HubError {
    fn from(error: E) -> HubError {
        HubError::internal(error.to_string())
    }
}

impl fmt::Debug for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubError")
            .field("message", &self.message)
            .field("public", &self.public)
            .finish()
    }
}

impl fmt::Display for HubError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why the arguments of an invocation could not be turned into a method's parameters.
/// The client receives `Failed to invoke 'Method' due to an error on the server. <reason>`
/// (the reason is about the client's own input, so it is always included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    reason: String,
}

impl Rejection {
    /// A rejection with a reason for the caller.
    pub fn new(reason: impl Into<String>) -> Rejection {
        Rejection {
            reason: reason.into(),
        }
    }

    /// The reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}
