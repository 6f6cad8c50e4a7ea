"""jhub-cloud: OIDC group policy, multi-backend spawner and hub configuration for JupyterHub."""
