"""The REST/JSON edge: every `google.api.http` binding of the contracts, transcoded to gRPC.

The gateway reads only the descriptor set in gen/: routes, path templates, query parameters and
the JSON mapping all come from the annotations, so a new annotated RPC is served after `make gen`
with no change here. Around each call: authentication at the edge, rate limits, a circuit breaker
per upstream service with stale responses for cacheable reads, deadlines, request ids, CORS,
request size limits and access logs. `python -m gateway` serves it.
"""

from gateway.app import create_app
from gateway.config import GatewaySettings

__all__ = ["GatewaySettings", "create_app"]
