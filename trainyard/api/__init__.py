"""The FastAPI control plane: routes (one module per resource), schemas and auth."""
