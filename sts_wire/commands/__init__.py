"""One module per sts-wire command: mount, run, check, status."""
