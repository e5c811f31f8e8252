"""Deployment generator: Helm values per product profile, the values schema and the Grafana dashboard.

Everything is derived from svc/catalog.yaml (services, ports, edges, profiles), from
gen/descriptors/finmesh.binpb (which RPCs are read-only) and from the services' settings classes
(what `serviceSettings` may set, tools.deploy.settings), so none of it is written twice.
The Istio resources are templates of charts/finmesh fed by these values.
"""
