"""The controller's REST API, one FastAPI router per area; `controller.app.create_app` wires them together.

`common` holds the token check and the bounded number types; `status` (health, metrics, status), `views`
(the view the proxies follow, their registration, leases and producer-id blocks), `topology` (clusters,
topics, client rules), `security` (SCRAM users, ACLs), `workflows`, `moves` (listing moves, repairing a held
one) and `admin_topics` (the Kafka admin API's topic writes, forwarded by the proxies). docs/api-routes.txt
lists every route.
"""
