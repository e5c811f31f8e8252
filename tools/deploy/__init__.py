"""Deployment generator: Helm values per product profile, the values schema and the Grafana dashboard.

Everything is derived from svc/catalog.yaml (services, ports, edges, profiles) and from
gen/descriptors/finmesh.binpb (which RPCs are read-only), so the dependency graph exists once.
The Istio resources are templates of charts/finmesh fed by these values.
"""
