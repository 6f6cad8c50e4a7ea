"""Pure translators: (Resources, SpawnTarget, backend config, cmd, env) -> child spawner settings."""
