"""Client-side security: SASL mechanisms (PLAIN, SCRAM), the per-connection session, TLS contexts.

Pure except `tls` (reads certificate files): the proxy's SASL handler and the controller's user commands
share the SCRAM arithmetic here, so a credential made by one is verified by the other.
"""
