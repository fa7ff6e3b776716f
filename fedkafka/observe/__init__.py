"""What the services share to be observed: supervised background tasks, the admin HTTP listener
(/metrics, /healthz, /readyz) and structured logs. Nothing here knows the proxy, the name service or the controller."""
