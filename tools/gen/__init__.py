"""Code generation from proto/: the Python SDK, the descriptor set, the OpenAPI document and the
contracts page."""
