"""sts-wire: OIDC token to STS keys to rclone POSIX mounts that renew themselves."""
