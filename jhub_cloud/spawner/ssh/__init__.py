"""Slurm from a hub outside the cluster: every Slurm command runs on the login node over SSH.

- settings.py (pure): the `backends.slurm.login_host` section checked and turned into the
  cluster account, the ssh client configuration and clear messages for ssh's failures;
- certs.py: a short-lived user certificate signed by the hub's CA (ssh-keygen) in a private
  folder that is deleted after the one command or tunnel start it served;
- login.py: LoginNode, what SlurmChild calls when `login_host` is set: run a command over SSH,
  open, supervise and close the tunnel to the server.
What the login node's administrator sets up: docs/slurm-over-ssh.md.
"""
