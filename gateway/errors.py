"""The gateway's one error hierarchy.

Every error that can reach a client is a `GatewayError`: it carries the
VoiceNavigator error `code`, the HTTP `status` the API answers with, and a
message safe to show (never a secret, never a signature). Anything else that
escapes a handler is a bug and is answered as `InternalServerError`.

`ConfigError` is separate: it is raised at start-up only and names the file,
the key and what is wrong with it.
"""

from __future__ import annotations


class GatewayError(Exception):
    """An error with a documented VoiceNavigator code and HTTP status."""

    code: str = "InternalServerError"
    status: int = 500
    default_message: str = (
        "An error occurred while processing your request. Please try again later."
    )

    def __init__(self, message: str | None = None, *, code: str | None = None) -> None:
        self.message = message or self.default_message
        if code is not None:
            self.code = code
        super().__init__(self.message)

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code!r}, status={self.status}, message={self.message!r})"


class InternalServerError(GatewayError):
    pass


class InvalidParameter(GatewayError):
    code = "InvalidParameter"
    status = 400
    default_message = "The specified parameter is invalid."

    @classmethod
    def named(cls, name: str, why: str) -> InvalidParameter:
        return cls(f"The specified parameter {name} is invalid: {why}.")


class MissingParameter(InvalidParameter):
    """A required parameter is absent or empty (code `Missing<Name>`)."""

    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is mandatory for this action.", code=f"Missing{name}")
        self.parameter = name


class InvalidVersion(GatewayError):
    code = "InvalidVersion"
    status = 400
    default_message = "Specified parameter Version is not valid."


class InvalidAction(GatewayError):
    code = "InvalidAction.NotFound"
    status = 404
    default_message = "Specified api is not found, please check your url and method."


class InstanceNotFound(GatewayError):
    code = "InvalidInstanceId.NotFound"
    status = 404
    default_message = "The specified InstanceId does not exist."


class InstanceDisabled(GatewayError):
    code = "InvalidInstanceId.Disabled"
    status = 400
    default_message = "The specified instance is disabled and accepts no new conversations."


class StoreDisabled(GatewayError):
    code = "Forbidden.StoreDisabled"
    status = 400
    default_message = (
        "This action needs the gateway's database, which is off ([store] enabled = false)."
    )


class ConversationNotFound(GatewayError):
    code = "InvalidConversationId.NotFound"
    status = 404
    default_message = "The specified ConversationId does not exist in our record."


class ConversationDuplicated(GatewayError):
    code = "InvalidConversationId.Duplicated"
    status = 400
    default_message = "The specified ConversationId is already in a live conversation."


class ConcurrencyLimitExceeded(GatewayError):
    code = "InvalidConcurrency.LimitExceeded"
    status = 400
    default_message = "The instance has reached its Concurrency limit of live conversations."


class InvalidConcurrency(GatewayError):
    """CreateInstance or ModifyInstance with a Concurrency outside 1 .. MAX_CONCURRENCY."""

    code = "InvalidConcurrency.LimitExceeded"
    status = 400
    default_message = "The specified Concurrency exceeds the upper limit."


class InstanceNameDuplicated(GatewayError):
    code = "InvalidInstanceName.Duplicated"
    status = 400
    default_message = "The specified InstanceName already exists."


# -- backends (bots, remote navigators) ----------------------------------
# These never reach a caller as such: a dialogue service answers a failed
# backend with the instance's fallback. `kind` labels the metrics.


class BackendError(GatewayError):
    code = "ServiceUnavailable"
    status = 503
    default_message = "A dialogue backend failed."
    kind = "error"
    # True when the request may not have reached the server at all (no byte
    # of it was written), so a retry cannot run the operation twice.
    retry_safe = False


class BackendConnectError(BackendError):
    """DNS failure, connection refused, TLS handshake failure."""

    kind = "connect"
    retry_safe = True


class BackendTimeout(BackendError):
    kind = "timeout"
    code = "ServiceTimeout"
    status = 504


class PoolTimeout(BackendTimeout):
    """No connection became free within the pool's acquire timeout."""

    kind = "pool_timeout"
    retry_safe = True


class BackendClosed(BackendError):
    """The connection closed or was reset before the response was complete."""

    kind = "reset"


class BackendProtocolError(BackendError):
    """The server's bytes are not valid HTTP/1.1, or not the shape expected."""

    kind = "protocol"


class BackendBodyTooLarge(BackendProtocolError):
    kind = "too_large"


class BackendStatus(BackendError):
    """The server answered with an HTTP status the caller treats as failure."""

    kind = "status"


# -- authentication and authorisation -------------------------------------


class AuthError(GatewayError):
    status = 400


class IncompleteSignature(AuthError):
    code = "IncompleteSignature"
    default_message = "The request signature does not conform to Aliyun standards."


class SignatureDoesNotMatch(AuthError):
    code = "SignatureDoesNotMatch"
    default_message = "Specified signature is not matched with our calculation."


class AccessKeyNotFound(AuthError):
    code = "InvalidAccessKeyId.NotFound"
    status = 404
    default_message = "Specified access key is not found."


class TimestampExpired(AuthError):
    code = "InvalidTimeStamp.Expired"
    default_message = "Specified time stamp or date value is expired."


class TimestampFormat(AuthError):
    code = "InvalidTimeStamp.Format"
    default_message = "Specified time stamp or date value is not well formatted."


class NonceUsed(AuthError):
    code = "SignatureNonceUsed"
    default_message = "Specified signature nonce was used already."

    def __init__(self, message: str | None = None, *, key_id: str = "", nonce: str = "") -> None:
        super().__init__(message)
        # Which key's nonce: a retried turn is recognised by it (calls.idempotency).
        self.key_id = key_id
        self.nonce = nonce


class InvalidToken(AuthError):
    code = "InvalidToken"
    status = 401
    default_message = "The bearer token is not one this endpoint accepts."


class Forbidden(AuthError):
    code = "Forbidden.RAM"
    status = 403
    default_message = "User not authorized to operate on the specified resource."


class ConfigError(Exception):
    """Invalid configuration, found at start-up."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        super().__init__(f"{file}: {key}: {problem}")


# -- records, statistics and exports (docs/conversations.md) ---------------


class RecordingNotFound(GatewayError):
    code = "InvalidConversationId.NoRecording"
    status = 404
    default_message = "The specified conversation has no recording."


class ExportTaskNotFound(GatewayError):
    code = "InvalidExportTaskId.NotFound"
    status = 404
    default_message = "The specified ExportTaskId does not exist for this instance."
