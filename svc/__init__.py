"""finmesh services: one package per service, plus the shared service kit in svc.kit."""
