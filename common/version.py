"""The protocol version both sides speak; the coordinator may refuse clients older than its minimum."""

__version__ = "0.5.0"

#: Request header a client uses to announce its version.
CLIENT_VERSION_HEADER = "Fetchfleet-Client-Version"
